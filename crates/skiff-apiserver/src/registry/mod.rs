//! Per-resource behaviour: what makes a Pod, a Service or a Namespace more than a stored object.
//!
//! The generic verbs in [`crate::objects`] know no resource by name. At the few points where a
//! resource may differ, they ask its [`Strategy`], as Kubernetes' generic registry asks a
//! resource's `RESTCreateStrategy` / `RESTDeleteStrategy`:
//!
//! | hook | when the verbs call it | who differs |
//! |---|---|---|
//! | [`Strategy::prepare_for_create`] | a new object, after admission | status: pods `Pending`, namespaces `Active`; Services, Deployments, ReplicaSets start without one |
//! | [`Strategy::allocation_lock`], [`Strategy::allocate`], [`Strategy::claims`] | create and update of the object itself | Services: ClusterIP and node ports |
//! | [`Strategy::mutate_on_create`] | create, after admission | pods: the ServiceAccount and its `kube-api-access-*` volume; quotas: their status, counted |
//! | [`Strategy::authorize_write`] | create, update and patch, with the writer | roles and bindings: no escalation; a node writes only its own Node; pods and workloads: Pod Security; namespaces: their Pod Security labels |
//! | [`Strategy::validate_delete`] | before a delete | the system namespaces may not be deleted |
//! | [`Strategy::before_delete`] | a delete of an object without finalizers | pods on a node: graceful deletion |
//! | [`Strategy::delete_along`] | the delete itself, in one atomic write | a namespace takes its contents |
//! | [`Strategy::made_up`], [`Strategy::made_up_list`] | get and list | node leases, from the heartbeat table |
//!
//! Every hook has a default that does nothing special, so a resource that behaves like a plain
//! stored object (ConfigMaps, Secrets, Endpoints, ...) has no strategy file: [`strategy_for`]
//! gives it [`Plain`].
//!
//! Strategies read the cluster only through a [`View`] and never write: the verbs do every
//! store write, with the strategy's extra operations in the same atomic proposal. That keeps each
//! strategy a pure function of its inputs, tested with a map for a store.
//!
//! ## Layout
//! - `pods`: the initial status, Pod Security, and graceful deletion.
//! - `pod_security`: Pod Security admission, for pods and workloads' templates.
//! - `services`: the Service's addresses, allocated (see [`crate::service_ips`]) and claimed.
//! - `namespaces`: the initial status, the system namespaces, and the cascade on delete.
//! - `leases`: the node leases made up from heartbeats.
//! - `workloads`: Deployments and ReplicaSets start without a status.
//! - `rbac`: roles and bindings grant nothing their writer does not hold.
//! - `nodes`: a node writes only its own Node.
//! - `quotas`: a new ResourceQuota's status, counted.
//! - `storage`: volumes and claims start Pending with their protection finalizers; claims get
//!   the default StorageClass; a node lets go only of its own volumes.
use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use skiff_api::resources::ResourceInfo;
use skiff_api::status::ApiError;
use skiff_store::Op;
use tokio::sync::Mutex;

use crate::app::App;
use crate::auth::user::UserInfo;
use crate::service_ips::ServiceNetwork;

pub mod leases;
pub mod namespaces;
pub mod nodes;
pub mod pod_security;
pub mod pods;
pub mod quotas;
pub mod rbac;
pub mod services;
pub mod storage;
pub mod workloads;

pub type Result<T> = std::result::Result<T, ApiError>;

/// Another write holds something this one took (a Service address claimed through another
/// member): nothing was written, and the write allocates again from a fresh read.
#[derive(Debug, PartialEq, Eq)]
pub struct ClaimLost;

/// What strategies may read: the objects this member has applied, the heartbeat table and the
/// service network. [`App`] is the real one; tests use a map.
pub trait View: Sync {
    /// The object stored at `key`, as this member has it.
    fn get(&self, key: &str) -> Option<Arc<Value>>;
    /// Every object whose key starts with `prefix`, in key order.
    fn list(&self, prefix: &str) -> Vec<Arc<Value>>;
    /// When each node last sent a heartbeat. Only the leader hears heartbeats, so elsewhere this
    /// is empty.
    fn heartbeats(&self) -> BTreeMap<String, jiff::Timestamp>;
    /// The service CIDR addresses come from, and the lock their allocation holds.
    fn service_network(&self) -> &ServiceNetwork;
    /// The Pod Security level of namespaces without an `enforce` label (`--pod-security`).
    fn pod_security_default(&self) -> skiff_api::pod_security::Level {
        skiff_api::pod_security::Level::Baseline
    }
}

impl View for App {
    fn get(&self, key: &str) -> Option<Arc<Value>> {
        self.store.get(key)
    }

    fn list(&self, prefix: &str) -> Vec<Arc<Value>> {
        self.store.list(prefix).0
    }

    fn heartbeats(&self) -> BTreeMap<String, jiff::Timestamp> {
        let leader = matches!(self.store.leader(), Some((id, _)) if id == self.store.id());
        if leader {
            self.leases.as_timestamps()
        } else {
            BTreeMap::new()
        }
    }

    fn service_network(&self) -> &ServiceNetwork {
        &self.services
    }

    fn pod_security_default(&self) -> skiff_api::pod_security::Level {
        self.pod_security
    }
}

/// What is special about one resource. Every hook defaults to "nothing special".
pub trait Strategy: Sync {
    /// PrepareForCreate: what a new object's status starts as. The client does not get to claim
    /// observed state (a Deployment created from `-o yaml` output must not say its replicas are
    /// available). By default the object is kept as admitted: Nodes keep theirs, as in
    /// Kubernetes, since the agent registering a node reports its capacity.
    fn prepare_for_create(&self, _object: &mut Value) {}

    /// For a resource whose objects take something shared (a Service's addresses): the lock held
    /// from reading what is in use until the write that takes it is committed. The verbs read
    /// after a read index while holding it.
    fn allocation_lock<'a>(&self, _view: &'a dyn View) -> Option<&'a Mutex<()>> {
        None
    }

    /// Fills in what the server allocates and checks what the client chose, on create (`old`
    /// is `None`) and update of the object itself (not its status). `scatter`: a previous try
    /// lost what it took to a concurrent write, so search from somewhere else.
    fn allocate(
        &self,
        _view: &dyn View,
        _info: &ResourceInfo,
        _object: &mut Value,
        _old: Option<&Value>,
        _scatter: bool,
    ) -> Result<()> {
        Ok(())
    }

    /// Store operations that claim what [`Strategy::allocate`] took, written in the same atomic
    /// proposal as the object, so that of two members taking one address only one succeeds.
    fn claims(
        &self,
        _view: &dyn View,
        _object: &Value,
        _old: Option<&Value>,
    ) -> std::result::Result<Vec<Op>, ClaimLost> {
        Ok(Vec::new())
    }

    /// Mutating admission on create, with the cluster in view: what the server adds to a new
    /// object from other objects (a pod's ServiceAccount and its token volume).
    fn mutate_on_create(&self, _view: &dyn View, _object: &mut Value) {}

    /// Admission that needs the writer or the cluster: whether `user` may write `object` (in
    /// `namespace`; replacing `old` on an update) beyond what RBAC allowed the request, and
    /// the warnings the write earns. Roles and bindings may not grant what their writer does
    /// not hold; pods must meet their namespace's Pod Security level.
    fn authorize_write(
        &self,
        _view: &dyn View,
        _user: &UserInfo,
        _namespace: Option<&str>,
        _object: &Value,
        _old: Option<&Value>,
    ) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    /// Whether the object called `name` may be deleted at all.
    fn validate_delete(&self, _name: &str) -> Result<()> {
        Ok(())
    }

    /// BeforeDelete, for graceful deletion: the object marked for deletion (kept, with a
    /// `deletionTimestamp`) instead of removed, or `None` to remove it now. `options` is the
    /// request's DeleteOptions (`Null` when it sent none). Finalizers are handled before this,
    /// the same for every resource.
    fn before_delete(
        &self,
        _current: &Value,
        _options: &Value,
        _now: jiff::Timestamp,
    ) -> Option<Value> {
        None
    }

    /// Deletes that go with the delete of the object called `name`, in the same atomic write.
    fn delete_along(&self, _view: &dyn View, _name: &str) -> Vec<Op> {
        Vec::new()
    }

    /// An object served though not stored, for a GET of `namespace`/`name` that found nothing.
    fn made_up(&self, _view: &dyn View, _namespace: Option<&str>, _name: &str) -> Option<Value> {
        None
    }

    /// The objects served though not stored that a list of `namespace` (`None`: every
    /// namespace) includes besides the `stored` ones.
    fn made_up_list(
        &self,
        _view: &dyn View,
        _namespace: Option<&str>,
        _stored: &[Arc<Value>],
    ) -> Vec<Value> {
        Vec::new()
    }
}

/// The strategy of every resource with nothing special about it.
pub struct Plain;

impl Strategy for Plain {}

/// The resources that behave differently, by qualified resource name.
static STRATEGIES: &[(&str, &dyn Strategy)] = &[
    ("pods", &pods::Pods),
    ("services", &services::Services),
    ("namespaces", &namespaces::Namespaces),
    ("leases.coordination.k8s.io", &leases::Leases),
    ("deployments.apps", &workloads::Workloads),
    ("replicasets.apps", &workloads::Workloads),
    ("statefulsets.apps", &workloads::Workloads),
    ("daemonsets.apps", &workloads::Workloads),
    ("jobs.batch", &workloads::Workloads),
    ("cronjobs.batch", &workloads::Workloads),
    ("nodes", &nodes::Nodes),
    ("resourcequotas", &quotas::Quotas),
    ("persistentvolumes", &storage::Volumes),
    ("persistentvolumeclaims", &storage::Claims),
    ("roles.rbac.authorization.k8s.io", &rbac::ROLES),
    ("clusterroles.rbac.authorization.k8s.io", &rbac::ROLES),
    ("rolebindings.rbac.authorization.k8s.io", &rbac::BINDINGS),
    (
        "clusterrolebindings.rbac.authorization.k8s.io",
        &rbac::BINDINGS,
    ),
];

/// The strategy of `info`'s resource: its own if it has one, [`Plain`] otherwise.
pub fn strategy_for(info: &ResourceInfo) -> &'static dyn Strategy {
    let resource = info.qualified_resource();
    STRATEGIES
        .iter()
        .find(|(name, _)| *name == resource)
        .map_or(&Plain, |(_, strategy)| *strategy)
}

/// Sets `object`'s status to `status`, or removes it for `None`.
fn set_status(object: &mut Value, status: Option<Value>) {
    if let Some(root) = object.as_object_mut() {
        match status {
            Some(status) => {
                root.insert("status".into(), status);
            }
            None => {
                root.remove("status");
            }
        }
    }
}

/// A map for a store, for the strategies' tests.
#[cfg(test)]
pub(crate) mod fake {
    use super::*;

    #[derive(Default)]
    pub struct FakeView {
        pub objects: BTreeMap<String, Arc<Value>>,
        pub heartbeats: BTreeMap<String, jiff::Timestamp>,
        pub network: ServiceNetwork,
    }

    impl FakeView {
        /// Stores `object` under its key, as the store would for `resource`.
        pub fn with(mut self, resource: &str, object: Value) -> FakeView {
            let meta = |f: &str| {
                object
                    .pointer(&format!("/metadata/{f}"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            let key = skiff_store::object_key(resource, &meta("namespace"), &meta("name"));
            self.objects.insert(key, Arc::new(object));
            self
        }
    }

    impl View for FakeView {
        fn get(&self, key: &str) -> Option<Arc<Value>> {
            self.objects.get(key).cloned()
        }

        fn list(&self, prefix: &str) -> Vec<Arc<Value>> {
            self.objects
                .range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(_, v)| v.clone())
                .collect()
        }

        fn heartbeats(&self) -> BTreeMap<String, jiff::Timestamp> {
            self.heartbeats.clone()
        }

        fn service_network(&self) -> &ServiceNetwork {
            &self.network
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use skiff_api::resources::{find, RESOURCES};

    #[test]
    fn every_strategy_names_a_served_resource() {
        for (name, _) in STRATEGIES {
            assert!(
                RESOURCES.iter().any(|r| r.qualified_resource() == *name),
                "{name} has a strategy but is not served"
            );
        }
    }

    /// What each resource's new objects start as: the table of PrepareForCreate.
    #[test]
    fn status_on_create_per_resource() {
        let cases = [
            ("", "pods", Some(json!({"phase": "Pending"}))),
            ("", "namespaces", Some(json!({"phase": "Active"}))),
            ("", "services", None),
            ("apps", "deployments", None),
            ("apps", "replicasets", None),
            // Nodes report their own capacity when they register; everything else is kept.
            ("", "nodes", Some(json!({"claimed": true}))),
            ("", "configmaps", Some(json!({"claimed": true}))),
        ];
        for (group, resource, expected) in cases {
            let info = find(group, "v1", resource).expect("served");
            let mut object = json!({"metadata": {"name": "x"}, "status": {"claimed": true}});
            strategy_for(info).prepare_for_create(&mut object);
            assert_eq!(object.get("status").cloned(), expected, "{resource}");
        }
    }

    #[test]
    fn plain_resources_change_nothing() {
        let info = find("", "v1", "configmaps").expect("served");
        let strategy = strategy_for(info);
        let view = fake::FakeView::default();
        let cm = json!({"metadata": {"name": "c", "namespace": "default"}, "data": {"a": "b"}});
        let mut allocated = cm.clone();
        strategy
            .allocate(&view, info, &mut allocated, None, false)
            .expect("nothing to allocate");
        assert_eq!(allocated, cm);
        assert!(matches!(strategy.claims(&view, &cm, None), Ok(ops) if ops.is_empty()));
        assert!(strategy.allocation_lock(&view).is_none());
        assert!(strategy.validate_delete("c").is_ok());
        assert_eq!(
            strategy.before_delete(&cm, &Value::Null, jiff::Timestamp::now()),
            None
        );
        assert!(strategy.delete_along(&view, "c").is_empty());
        assert_eq!(strategy.made_up(&view, Some("default"), "c"), None);
    }
}
