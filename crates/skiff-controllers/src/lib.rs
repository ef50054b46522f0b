//! skiff-controllers: the controllers that turn what users asked for into more desired state.
//!
//! A Deployment asks for ReplicaSets, a ReplicaSet asks for Pods, a silent Node asks for its
//! Pods to be evicted, a deleted owner asks for its dependents to go. Each controller here is
//! a **pure function**: it takes the current objects (as the loop's cache sees them) and `now`,
//! and returns a plan — a list of [`Action`]s. It does no I/O, keeps no state and never
//! sleeps, so tests call it directly and a learner can read it top to bottom like a script.
//! One generic loop ([`controller`]) does the rest: shared stores fed by one watch per kind,
//! a work queue of keys, `reconcile`, apply.
//!
//! ## Layout
//! - [`Action`], [`Object`], [`EventNote`] (this file): what a plan is made of.
//! - [`controller`]: the [`controller::Controller`] trait every controller implements, and
//!   the loop that runs it; [`workqueue`]: keys, de-duplicated, with back-off;
//!   [`expectations`]: writes a controller waits to see before it runs again for a key;
//!   [`apply`]: a plan carried out through the API; [`runner`]: the list of controllers.
//! - [`replicaset`]: keep `spec.replicas` pods alive; which pod goes first on scale-down
//!   ([`pod_rank`]).
//! - [`deployment`]: roll out a new ReplicaSet one move per pass (RollingUpdate, Recreate),
//!   the pod-template-hash, revisions, conditions and the status `kubectl rollout status` reads.
//! - [`nodelifecycle`]: silent nodes become `Ready=Unknown`, get the `unreachable` taint, and
//!   lose their pods once the pods' tolerations run out.
//! - [`gc`]: ownerReferences garbage collection (background, foreground, orphan), over every
//!   kind the API serves.
//! - [`nodeipam`]: a pod CIDR for every Node.
//! - [`podgc`]: pods of nodes that no longer exist are removed (after a 40 s quarantine).
//! - [`endpoints`]: a Service's Endpoints and EndpointSlices, from the pods it selects.
//! - [`servicelb`]: a LoadBalancer Service's addresses, from the Ready nodes.
//! - [`cronjob`]: a Job at each slot of the schedule (in its time zone), once per slot
//!   whoever leads, with `concurrencyPolicy`, `startingDeadlineSeconds` and history limits.
//! - [`job`]: pods run to completion (`completions`, `parallelism`, Indexed), retried with
//!   back-off up to `backoffLimit`, `activeDeadlineSeconds`, `podFailurePolicy`, TTL.
//! - [`daemonset`]: a pod on every node that should run one, following nodes as they come and
//!   go, rolled within `maxUnavailable` or `maxSurge`.
//! - [`statefulset`]: pods with stable names and claims, created and deleted in order, rolled
//!   from the top ordinal, with ControllerRevisions for history.
//! - [`volumes`]: PersistentVolumeClaims bound to PersistentVolumes, `local-path` volumes
//!   provisioned on the scheduler's node, released volumes reclaimed, protection finalizers.
//! - [`eventttl`]: Events expire after an hour.
//! - [`serviceaccounts`]: every namespace's `default` ServiceAccount and `kube-root-ca.crt`.
//! - [`clusterrole_aggregation`]: `admin`, `edit`, `view` and every ClusterRole with an
//!   `aggregationRule` hold the rules of the ClusterRoles their selectors pick.
//! - [`owners`], [`pods`], [`child_names`]: controller references and adoption, what a pod's status
//!   means to a controller, random-but-injectable name suffixes.
//!
//! Each controller module holds its pure planning function, its `Controller` impl (the stores
//! it reads, the keys their changes wake, one pass per key) and its table tests; adding one is
//! that file and one line in [`runner`].
//!
//! ## Applying a plan (the loop's contract)
//!
//! Expected flow: the loop hands `reconcile` a consistent snapshot from its caches, then
//! applies the returned actions **in order**:
//!
//! 1. `Create`, `Update`, `UpdateStatus`, `Delete` are API writes. An `Update`/`UpdateStatus`
//!    carries the full object *with the resourceVersion it was computed from*, so it is a
//!    compare-and-swap: a 409 means the snapshot was stale.
//! 2. On the first failed write the loop **stops applying that plan** and requeues the key
//!    (with back-off). The next pass recomputes from fresh state, so nothing is lost. (This also
//!    gives Kubernetes' "stop creating pods after the first error" behaviour for free.) A
//!    `Delete` answered with 404 Not Found counts as success: the object is already gone.
//! 3. An `Event` describes the write just before it; record it in the background and never
//!    let it fail the plan.
//! 4. `RequeueAfter` asks for another pass after a delay (minReadySeconds, progress deadlines,
//!    toleration timeouts): nothing changes in the store when time passes, so no watch event
//!    would wake the controller.
//!
//! Guarantees of every plan: it updates each object at most once (two compare-and-swap writes
//! from one snapshot would conflict with each other), and every `Delete` names the uid it
//! means, so a pod deleted and re-created under the same name in between is never hit by
//! mistake. (A delete is guarded by uid, not resourceVersion, so it may follow an update of
//! the same object, e.g. a pod adopted and then chosen for scale-down.)
//!
//! Caveats: a controller that creates children must not run again on a cache that has not yet
//! seen its last creations, or it will create them twice. Kubernetes calls this
//! "expectations": the loop remembers the writes it applied for a key and waits for the
//! watch to show them (or for a timeout) before reconciling it again ([`expectations`]).
pub mod apply;
pub mod child_names;
pub mod clusterrole_aggregation;
pub mod controller;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod endpoints;
pub mod eventttl;
pub mod expectations;
pub mod gc;
pub mod hpa;
pub mod job;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod owners;
pub mod pod_rank;
pub mod podgc;
pub mod pods;
pub mod replicaset;
pub mod revisions;
pub mod runner;
pub mod serviceaccounts;
pub mod servicelb;
pub mod statefulset;
pub mod volumes;
pub mod workqueue;

use std::fmt;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{
    ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet,
};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Node, ObjectReference, PersistentVolume, PersistentVolumeClaim, Pod,
    Service, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

pub use skiff_client::events::EventType;

/// One step of a plan. Each is small enough to explain in a sentence (see its `Display`).
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create this object (POST to its collection).
    Create(Object),
    /// Replace this object (PUT); its `metadata.resourceVersion` makes it a compare-and-swap.
    Update(Object),
    /// Replace this object's status (PUT to `/status`), again compare-and-swap.
    UpdateStatus(Object),
    /// Delete an object, but only the incarnation with this uid (a DeleteOptions
    /// precondition).
    Delete {
        /// apiVersion, kind, namespace and name of the object to delete.
        object: ObjectReference,
        /// The precondition: the uid the object must still have.
        uid: String,
        /// How dependents are treated; `None` leaves it to the server's default.
        propagation: Option<Propagation>,
        /// The garbage collector's check: delete only if none of these owners exists when
        /// asked for live (the stores may be behind the API). Empty for any other delete.
        unless_owner_exists: Vec<ObjectReference>,
        /// `gracePeriodSeconds`: `Some(0)` removes a pod at once, without its node (the pod
        /// garbage collector's for pods of nodes that are gone); `None` leaves it to the pod.
        grace_period_seconds: Option<i64>,
    },
    /// Record an Event (`kubectl describe` shows it).
    Event(EventNote),
    /// Run this controller again for the same key after `after`, because a decision depends
    /// on time passing.
    RequeueAfter { after: Duration, why: String },
}

/// The objects controllers write. Typed where skiff knows the kind, JSON for the generic
/// garbage collector.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Pod(Box<Pod>),
    ReplicaSet(Box<ReplicaSet>),
    Deployment(Box<Deployment>),
    Node(Box<Node>),
    Service(Box<Service>),
    Endpoints(Box<Endpoints>),
    EndpointSlice(Box<EndpointSlice>),
    ClusterRole(Box<ClusterRole>),
    ServiceAccount(Box<ServiceAccount>),
    ConfigMap(Box<ConfigMap>),
    PersistentVolume(Box<PersistentVolume>),
    PersistentVolumeClaim(Box<PersistentVolumeClaim>),
    StatefulSet(Box<StatefulSet>),
    ControllerRevision(Box<ControllerRevision>),
    DaemonSet(Box<DaemonSet>),
    Job(Box<Job>),
    CronJob(Box<CronJob>),
    HorizontalPodAutoscaler(Box<HorizontalPodAutoscaler>),
    /// Any kind, with `apiVersion`, `kind` and `metadata` (the garbage collector's view).
    Dynamic(Value),
}

/// `propagationPolicy` of a delete: what happens to the object's dependents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Delete the object now; the garbage collector deletes dependents afterwards.
    Background,
    /// Delete dependents that block owner deletion first, then the object.
    Foreground,
    /// Delete the object and leave its dependents, without the owner reference.
    Orphan,
}

/// An Event to record about `regarding`.
#[derive(Debug, Clone, PartialEq)]
pub struct EventNote {
    /// The object the event is about (`involvedObject`).
    pub regarding: ObjectReference,
    pub type_: EventType,
    /// Kubernetes' CamelCase reason, e.g. `ScalingReplicaSet`.
    pub reason: String,
    /// Kubernetes' message wording, e.g. `Scaled up replica set web-5d9c7 from 0 to 3`.
    pub message: String,
}

impl Action {
    /// A Normal event about `regarding`.
    pub fn normal_event(regarding: ObjectReference, reason: &str, message: String) -> Action {
        Action::Event(EventNote {
            regarding,
            type_: EventType::Normal,
            reason: reason.to_string(),
            message,
        })
    }

    /// A Warning event about `regarding`.
    pub fn warning_event(regarding: ObjectReference, reason: &str, message: String) -> Action {
        Action::Event(EventNote {
            regarding,
            type_: EventType::Warning,
            reason: reason.to_string(),
            message,
        })
    }

    /// Deletes the object `reference` names, guarded by its uid.
    pub fn delete(reference: ObjectReference, propagation: Option<Propagation>) -> Action {
        Action::Delete {
            uid: reference.uid.clone().unwrap_or_default(),
            object: reference,
            propagation,
            unless_owner_exists: Vec::new(),
            grace_period_seconds: None,
        }
    }

    /// Deletes the object `reference` names at once (grace period 0), guarded by its uid.
    pub fn force_delete(reference: ObjectReference) -> Action {
        Action::Delete {
            uid: reference.uid.clone().unwrap_or_default(),
            object: reference,
            propagation: None,
            unless_owner_exists: Vec::new(),
            grace_period_seconds: Some(0),
        }
    }
}

impl Object {
    /// The object as JSON, for the loop's generic write path.
    pub fn to_value(&self) -> Value {
        let value = match self {
            Object::Pod(o) => serde_json::to_value(o),
            Object::ReplicaSet(o) => serde_json::to_value(o),
            Object::Deployment(o) => serde_json::to_value(o),
            Object::Node(o) => serde_json::to_value(o),
            Object::Service(o) => serde_json::to_value(o),
            Object::Endpoints(o) => serde_json::to_value(o),
            Object::EndpointSlice(o) => serde_json::to_value(o),
            Object::ClusterRole(o) => serde_json::to_value(o),
            Object::ServiceAccount(o) => serde_json::to_value(o),
            Object::ConfigMap(o) => serde_json::to_value(o),
            Object::PersistentVolume(o) => serde_json::to_value(o),
            Object::PersistentVolumeClaim(o) => serde_json::to_value(o),
            Object::StatefulSet(o) => serde_json::to_value(o),
            Object::ControllerRevision(o) => serde_json::to_value(o),
            Object::DaemonSet(o) => serde_json::to_value(o),
            Object::Job(o) => serde_json::to_value(o),
            Object::CronJob(o) => serde_json::to_value(o),
            Object::HorizontalPodAutoscaler(o) => serde_json::to_value(o),
            Object::Dynamic(v) => return v.clone(),
        };
        // Serialising a k8s-openapi struct to a Value has no failure case (string keys, no
        // non-finite floats).
        value.unwrap_or(Value::Null)
    }

    /// apiVersion, kind, namespace, name, uid and resourceVersion of the object.
    pub fn reference(&self) -> ObjectReference {
        match self {
            Object::Pod(o) => reference_to(&**o),
            Object::ReplicaSet(o) => reference_to(&**o),
            Object::Deployment(o) => reference_to(&**o),
            Object::Node(o) => reference_to(&**o),
            Object::Service(o) => reference_to(&**o),
            Object::Endpoints(o) => reference_to(&**o),
            Object::EndpointSlice(o) => reference_to(&**o),
            Object::ClusterRole(o) => reference_to(&**o),
            Object::ServiceAccount(o) => reference_to(&**o),
            Object::ConfigMap(o) => reference_to(&**o),
            Object::PersistentVolume(o) => reference_to(&**o),
            Object::PersistentVolumeClaim(o) => reference_to(&**o),
            Object::StatefulSet(o) => reference_to(&**o),
            Object::ControllerRevision(o) => reference_to(&**o),
            Object::DaemonSet(o) => reference_to(&**o),
            Object::Job(o) => reference_to(&**o),
            Object::CronJob(o) => reference_to(&**o),
            Object::HorizontalPodAutoscaler(o) => reference_to(&**o),
            Object::Dynamic(v) => dynamic_reference(v),
        }
    }
}

/// An object's name (`""` when it has none yet).
pub(crate) fn name_of(meta: &ObjectMeta) -> String {
    meta.name.clone().unwrap_or_default()
}

/// A reference to a typed object, for events, deletes and owner links.
pub fn reference_to<K>(object: &K) -> ObjectReference
where
    K: k8s_openapi::Resource + k8s_openapi::Metadata<Ty = ObjectMeta>,
{
    skiff_client::events::object_ref(object)
}

/// A reference to an object known only as JSON.
pub fn dynamic_reference(object: &Value) -> ObjectReference {
    let text = |pointer: &str| {
        object
            .pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    ObjectReference {
        api_version: text("/apiVersion"),
        kind: text("/kind"),
        namespace: text("/metadata/namespace"),
        name: text("/metadata/name"),
        uid: text("/metadata/uid"),
        resource_version: text("/metadata/resourceVersion"),
        ..ObjectReference::default()
    }
}

/// `kind ns/name`, or `kind name` for cluster-scoped objects.
pub(crate) fn describe(reference: &ObjectReference) -> String {
    let kind = reference.kind.as_deref().unwrap_or("object");
    let name = reference.name.as_deref().unwrap_or("");
    match reference.namespace.as_deref() {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Create(o) => write!(f, "create {}", describe(&o.reference())),
            Action::Update(o) | Action::UpdateStatus(o) => {
                let r = o.reference();
                let what = match self {
                    Action::UpdateStatus(_) => "update status of",
                    _ => "update",
                };
                let version = r.resource_version.as_deref().unwrap_or("?");
                write!(f, "{what} {} at resourceVersion {version}", describe(&r))
            }
            Action::Delete {
                object,
                uid,
                propagation,
                ..
            } => {
                write!(f, "delete {} (uid {uid})", describe(object))?;
                match propagation {
                    Some(p) => write!(f, " with {p:?} propagation"),
                    None => Ok(()),
                }
            }
            Action::Event(e) => write!(
                f,
                "event {:?} {} on {}: {}",
                e.type_,
                e.reason,
                describe(&e.regarding),
                e.message
            ),
            Action::RequeueAfter { after, why } => {
                write!(f, "check again in {:.1}s: {why}", after.as_secs_f64())
            }
        }
    }
}

/// Seconds from `a` to `b` (negative when `b` is earlier), the unit Kubernetes' timers use.
pub(crate) fn seconds_between(a: jiff::Timestamp, b: jiff::Timestamp) -> f64 {
    b.duration_since(a).as_secs_f64()
}

/// A positive wait in seconds as a `Duration` (zero if already past).
pub(crate) fn wait_for(seconds: f64) -> Duration {
    Duration::try_from_secs_f64(seconds.max(0.0)).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_explain_themselves() {
        let mut pod = Pod::default();
        pod.metadata.name = Some("web-abc".into());
        pod.metadata.namespace = Some("default".into());
        pod.metadata.uid = Some("u1".into());
        pod.metadata.resource_version = Some("7".into());
        let create = Action::Create(Object::Pod(Box::new(pod.clone())));
        assert_eq!(create.to_string(), "create Pod default/web-abc");
        let update = Action::UpdateStatus(Object::Pod(Box::new(pod.clone())));
        assert_eq!(
            update.to_string(),
            "update status of Pod default/web-abc at resourceVersion 7"
        );
        let delete = Action::delete(reference_to(&pod), Some(Propagation::Background));
        assert_eq!(
            delete.to_string(),
            "delete Pod default/web-abc (uid u1) with Background propagation"
        );
        let event = Action::normal_event(
            reference_to(&pod),
            "SuccessfulDelete",
            "Deleted pod: web-abc".into(),
        );
        assert_eq!(
            event.to_string(),
            "event Normal SuccessfulDelete on Pod default/web-abc: Deleted pod: web-abc"
        );
    }
}

/// Helpers shared by the controllers' table tests.
#[cfg(test)]
pub(crate) mod test_support {
    use super::Action;

    /// Merges `patch` into `target`, objects key by key (a JSON merge patch without deletes).
    pub fn merge(target: &mut serde_json::Value, patch: serde_json::Value) {
        if let (Some(t), Some(p)) = (target.as_object_mut(), patch.as_object()) {
            for (k, v) in p {
                if v.is_object() && t.get(k).is_some_and(|x| x.is_object()) {
                    merge(t.get_mut(k).expect("present"), v.clone());
                } else {
                    t.insert(k.clone(), v.clone());
                }
            }
        }
    }

    /// A plan in words, without resource versions and uids.
    pub fn words(plan: &[Action]) -> Vec<String> {
        plan.iter()
            .map(|a| {
                let text = a.to_string();
                let text = text.split(" at resourceVersion").next().unwrap_or("");
                text.split(" (uid").next().unwrap_or("").to_string()
            })
            .collect()
    }
}
