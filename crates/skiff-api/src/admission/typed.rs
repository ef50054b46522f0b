//! The typed form of each served kind, and the per-kind dispatch of defaulting and validation.
//!
//! A request body is JSON of unknown shape; a `Typed` is that body read into k8s-openapi's
//! struct for its kind, which is where type errors surface (`spec.replicas: invalid type:
//! string "two", expected i32`) and what defaulting and validation work on.

use k8s_openapi::api::apps::v1::{
    ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet,
};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Event, Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod,
    ResourceQuota, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::validation::rbac;
use super::{defaults, validation};
use crate::names::NameRule;
use crate::resources::ResourceInfo;
use crate::status::{ApiError, Cause};

/// One object of a served kind.
#[derive(Debug, Clone)]
pub(super) enum Typed {
    Namespace(Namespace),
    Pod(Pod),
    Service(Service),
    Endpoints(Endpoints),
    EndpointSlice(EndpointSlice),
    Node(Node),
    ConfigMap(ConfigMap),
    Secret(Secret),
    ServiceAccount(ServiceAccount),
    Event(Event),
    Deployment(Deployment),
    ReplicaSet(ReplicaSet),
    Lease(Lease),
    Role(Role),
    ClusterRole(ClusterRole),
    RoleBinding(RoleBinding),
    ClusterRoleBinding(ClusterRoleBinding),
    ResourceQuota(ResourceQuota),
    PersistentVolume(Box<PersistentVolume>),
    PersistentVolumeClaim(PersistentVolumeClaim),
    StorageClass(StorageClass),
    StatefulSet(Box<StatefulSet>),
    ControllerRevision(ControllerRevision),
    DaemonSet(Box<DaemonSet>),
    Job(Box<Job>),
    CronJob(Box<CronJob>),
    HorizontalPodAutoscaler(Box<HorizontalPodAutoscaler>),
}

/// Calls `$body` with the inner object bound to `$obj`, whatever the kind.
macro_rules! each_kind {
    ($typed:expr, $obj:ident => $body:expr) => {
        match $typed {
            Typed::Namespace($obj) => $body,
            Typed::Pod($obj) => $body,
            Typed::Service($obj) => $body,
            Typed::Endpoints($obj) => $body,
            Typed::EndpointSlice($obj) => $body,
            Typed::Node($obj) => $body,
            Typed::ConfigMap($obj) => $body,
            Typed::Secret($obj) => $body,
            Typed::ServiceAccount($obj) => $body,
            Typed::Event($obj) => $body,
            Typed::Deployment($obj) => $body,
            Typed::ReplicaSet($obj) => $body,
            Typed::Lease($obj) => $body,
            Typed::Role($obj) => $body,
            Typed::ClusterRole($obj) => $body,
            Typed::RoleBinding($obj) => $body,
            Typed::ClusterRoleBinding($obj) => $body,
            Typed::ResourceQuota($obj) => $body,
            Typed::PersistentVolume($obj) => $body,
            Typed::PersistentVolumeClaim($obj) => $body,
            Typed::StorageClass($obj) => $body,
            Typed::StatefulSet($obj) => $body,
            Typed::ControllerRevision($obj) => $body,
            Typed::DaemonSet($obj) => $body,
            Typed::Job($obj) => $body,
            Typed::CronJob($obj) => $body,
            Typed::HorizontalPodAutoscaler($obj) => $body,
        }
    };
}

impl Typed {
    /// Reads a JSON body into the type for `info.kind`.
    pub(super) fn decode(info: &ResourceInfo, body: &Value) -> Result<Self, ApiError> {
        Ok(match info.kind {
            "Namespace" => Typed::Namespace(decode(info, body)?),
            "Pod" => Typed::Pod(decode(info, body)?),
            "Service" => Typed::Service(decode(info, body)?),
            "Endpoints" => Typed::Endpoints(decode(info, body)?),
            "EndpointSlice" => Typed::EndpointSlice(decode(info, body)?),
            "Node" => Typed::Node(decode(info, body)?),
            "ConfigMap" => Typed::ConfigMap(decode(info, body)?),
            "Secret" => Typed::Secret(decode(info, body)?),
            "ServiceAccount" => Typed::ServiceAccount(decode(info, body)?),
            "Event" => Typed::Event(decode(info, body)?),
            "Deployment" => Typed::Deployment(decode(info, body)?),
            "ReplicaSet" => Typed::ReplicaSet(decode(info, body)?),
            "Lease" => Typed::Lease(decode(info, body)?),
            "Role" => Typed::Role(decode(info, body)?),
            "ClusterRole" => Typed::ClusterRole(decode(info, body)?),
            "RoleBinding" => Typed::RoleBinding(decode(info, body)?),
            "ClusterRoleBinding" => Typed::ClusterRoleBinding(decode(info, body)?),
            "ResourceQuota" => Typed::ResourceQuota(decode(info, body)?),
            "PersistentVolume" => Typed::PersistentVolume(Box::new(decode(info, body)?)),
            "PersistentVolumeClaim" => Typed::PersistentVolumeClaim(decode(info, body)?),
            "StorageClass" => Typed::StorageClass(decode(info, body)?),
            "StatefulSet" => Typed::StatefulSet(Box::new(decode(info, body)?)),
            "ControllerRevision" => Typed::ControllerRevision(decode(info, body)?),
            "DaemonSet" => Typed::DaemonSet(Box::new(decode(info, body)?)),
            "Job" => Typed::Job(Box::new(decode(info, body)?)),
            "CronJob" => Typed::CronJob(Box::new(decode(info, body)?)),
            "HorizontalPodAutoscaler" => {
                Typed::HorizontalPodAutoscaler(Box::new(decode(info, body)?))
            }
            other => {
                return Err(ApiError::Internal(format!(
                    "skiff-api has no type for served kind {other}; add it to admission::typed"
                )))
            }
        })
    }

    /// The canonical JSON form: what k8s-openapi writes back, `apiVersion` and `kind` included.
    pub(super) fn to_json(&self) -> Result<Value, ApiError> {
        each_kind!(self, obj => to_json(obj))
    }

    pub(super) fn metadata(&self) -> &ObjectMeta {
        each_kind!(self, obj => &obj.metadata)
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        each_kind!(self, obj => &mut obj.metadata)
    }

    /// Fills in what Kubernetes fills in (see [`defaults`]).
    pub(super) fn apply_defaults(&mut self, info: &ResourceInfo) {
        // Kubernetes silently drops a namespace sent for a cluster-scoped object.
        if !info.namespaced {
            self.metadata_mut().namespace = None;
        }
        match self {
            Typed::Namespace(ns) => defaults::namespace(ns),
            Typed::Pod(pod) => defaults::pod(pod),
            Typed::Service(svc) => defaults::service(svc),
            Typed::Endpoints(eps) => defaults::endpoints(eps),
            Typed::EndpointSlice(slice) => defaults::endpoint_slice(slice),
            Typed::Node(node) => defaults::node(node),
            Typed::Secret(secret) => defaults::secret(secret),
            Typed::Deployment(d) => defaults::deployment(d),
            Typed::ReplicaSet(rs) => defaults::replica_set(rs),
            Typed::RoleBinding(b) => rbac::default_binding(&mut b.role_ref, b.subjects.as_mut()),
            Typed::ClusterRoleBinding(b) => {
                rbac::default_binding(&mut b.role_ref, b.subjects.as_mut())
            }
            Typed::PersistentVolume(pv) => defaults::persistent_volume(pv),
            Typed::PersistentVolumeClaim(pvc) => defaults::persistent_volume_claim(pvc),
            Typed::StorageClass(class) => defaults::storage_class(class),
            Typed::StatefulSet(sts) => defaults::stateful_set(sts),
            Typed::ControllerRevision(_) => {}
            Typed::DaemonSet(ds) => defaults::daemon_set(ds),
            Typed::Job(job) => defaults::job(job),
            Typed::CronJob(cj) => defaults::cron_job(cj),
            Typed::HorizontalPodAutoscaler(hpa) => defaults::horizontal_pod_autoscaler(hpa),
            Typed::ConfigMap(_)
            | Typed::ServiceAccount(_)
            | Typed::Event(_)
            | Typed::Lease(_)
            | Typed::Role(_)
            | Typed::ClusterRole(_)
            | Typed::ResourceQuota(_) => {}
        }
    }

    /// Every problem with the (defaulted) object. `selector_given`: whether the client sent
    /// `spec.selector`, which the typed form cannot tell (see [`validation::apps`]).
    pub(super) fn validate(&self, selector_given: bool) -> Vec<Cause> {
        let name_rule = match self {
            Typed::Namespace(_) => NameRule::Dns1123Label,
            // Service names become DNS labels and environment variable prefixes
            // (`MY_SVC_SERVICE_HOST`), so they must start with a letter.
            Typed::Service(_) => NameRule::Dns1035Label,
            Typed::Role(_)
            | Typed::ClusterRole(_)
            | Typed::RoleBinding(_)
            | Typed::ClusterRoleBinding(_) => NameRule::PathSegment,
            _ => NameRule::Dns1123Subdomain,
        };
        let mut causes = validation::object_meta(self.metadata(), name_rule);
        causes.extend(match self {
            Typed::Pod(pod) => {
                validation::pod::pod_spec(&pod.spec.clone().unwrap_or_default(), "spec")
            }
            Typed::Service(svc) => validation::service::service(svc),
            Typed::Endpoints(eps) => validation::service::endpoints(eps),
            Typed::EndpointSlice(slice) => validation::service::endpoint_slice(slice),
            Typed::ConfigMap(cm) => validation::config::config_map(cm),
            Typed::Secret(secret) => validation::config::secret(secret),
            Typed::Deployment(d) => validation::apps::deployment(d, selector_given),
            Typed::ReplicaSet(rs) => validation::apps::replica_set(rs, selector_given),
            Typed::Lease(lease) => validation::coordination::lease(lease),
            Typed::Role(role) => rbac::rules(role.rules.as_deref(), true),
            Typed::ClusterRole(role) => {
                let mut causes = rbac::rules(role.rules.as_deref(), false);
                causes.extend(rbac::aggregation_rule(role.aggregation_rule.as_ref()));
                causes
            }
            Typed::RoleBinding(b) => rbac::binding(&b.role_ref, b.subjects.as_deref(), true),
            Typed::ClusterRoleBinding(b) => {
                rbac::binding(&b.role_ref, b.subjects.as_deref(), false)
            }
            Typed::ResourceQuota(rq) => validation::quota::resource_quota(rq),
            Typed::PersistentVolume(pv) => validation::storage::volume(pv),
            Typed::PersistentVolumeClaim(pvc) => validation::storage::claim(pvc),
            Typed::StorageClass(class) => validation::storage::storage_class(class),
            Typed::StatefulSet(sts) => validation::apps::stateful_set(sts, selector_given),
            Typed::ControllerRevision(_) => Vec::new(),
            Typed::DaemonSet(ds) => validation::apps::daemon_set(ds, selector_given),
            // A Job's selector is the server's unless it says `manualSelector`.
            Typed::Job(job) => validation::batch::job(job),
            Typed::CronJob(cj) => validation::batch::cron_job(cj),
            Typed::HorizontalPodAutoscaler(hpa) => {
                validation::autoscaling::horizontal_pod_autoscaler(hpa)
            }
            Typed::Namespace(_) | Typed::Node(_) | Typed::Event(_) | Typed::ServiceAccount(_) => {
                Vec::new()
            }
        });
        causes
    }
}

/// Deserialises with the failing field's path in the error, worded as Kubernetes words a
/// decode failure.
fn decode<T: DeserializeOwned>(info: &ResourceInfo, body: &Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(body).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." {
            String::new()
        } else {
            format!("{path}: ")
        };
        ApiError::BadRequest(format!(
            "{kind} in version \"{version}\" cannot be handled as a {kind}: {at}{error}",
            kind = info.kind,
            version = info.version,
            error = e.inner(),
        ))
    })
}

fn to_json<T: Serialize>(object: &T) -> Result<Value, ApiError> {
    // k8s-openapi's types always serialise; failing here would be a bug in that crate.
    serde_json::to_value(object)
        .map_err(|e| ApiError::Internal(format!("serialising a typed object: {e}")))
}
