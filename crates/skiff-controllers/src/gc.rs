//! Garbage collection through ownerReferences, for any kind of object.
//!
//! An object whose `metadata.ownerReferences` all point at owners that no longer exist is
//! garbage: `kubectl delete deployment web` removes the Deployment, and this collector then
//! removes its ReplicaSets, and then their pods. Deleting an owner can also ask for something
//! else, through a finalizer the API server puts on it:
//!
//! - **background** (the default): the owner goes at once; dependents are collected after.
//! - **foreground** (`foregroundDeletion` finalizer): the owner stays, marked as being
//!   deleted, until every dependent with `blockOwnerDeletion: true` is gone. The collector
//!   deletes those dependents (foreground again if they have dependents of their own, so the
//!   whole tree goes bottom-up), then removes the finalizer, and the API server deletes the
//!   owner.
//! - **orphan** (`orphan` finalizer, `--cascade=orphan`): the collector removes the owner's
//!   reference from each dependent, then the finalizer. The dependents stay.
//!
//! Each dependent's references are classified (Kubernetes' `classifyReferences`):
//! *dangling* (owner gone), *waiting* (owner being deleted in the foreground), or *solid*
//! (owner alive, including one being orphan-deleted). No solid owner left → delete the
//! dependent. Some solid owner left → only drop the dangling and waiting references.
//!
//! Caveats:
//! - "Gone" is only as good as the snapshot. The loop must pass complete, caught-up lists of
//!   every kind in `complete_kinds` (skiff's resourceVersion is one global revision, so caches
//!   at the same revision agree); a reference to any other kind is never judged dangling.
//!   The loop ([`GarbageCollector`]) reads every kind the API serves, and looks a missing
//!   owner up again in the stores before deleting ([`still_dangling`]); Kubernetes re-reads
//!   it from the API.
//! - A reference whose uid exists with another kind, or in another namespace, is dangling:
//!   a namespaced object can only be owned from its own namespace or by a cluster-scoped owner.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;
use skiff_client::informer::{Informers, MetadataStore};

use crate::controller::{Context, Controller};
use crate::workqueue::WorkQueue;
use crate::{dynamic_reference, Action, Object, Propagation};

/// The finalizer of an owner deleted with `propagationPolicy: Foreground`.
pub const FOREGROUND: &str = "foregroundDeletion";
/// The finalizer of an owner deleted with `propagationPolicy: Orphan`.
pub const ORPHAN: &str = "orphan";

/// Plans one collection pass over `objects` (every object of the kinds in `complete_kinds`,
/// plus any others that may have owners), each with `apiVersion`, `kind` and `metadata`.
pub fn reconcile(objects: &[Value], complete_kinds: &[&str]) -> Vec<Action> {
    let graph = Graph::new(objects, complete_kinds);
    let mut deletes = Vec::new();
    let mut edits: BTreeMap<&str, Edit> = BTreeMap::new();

    // Orphaning owners: take their references off every dependent.
    for owner in objects
        .iter()
        .filter(|o| is_deleting(o) && has_finalizer(o, ORPHAN))
    {
        let owner_uid = uid(owner);
        for dependent in graph.dependents_of(owner_uid) {
            edits
                .entry(uid(dependent))
                .or_default()
                .drop_refs
                .insert(owner_uid);
        }
        edits
            .entry(owner_uid)
            .or_default()
            .drop_finalizers
            .insert(ORPHAN);
    }

    // Dependents: delete the ownerless, untangle the rest.
    for dependent in objects.iter().filter(|o| !is_deleting(o)) {
        let refs = owner_refs(dependent);
        if refs.is_empty() {
            continue;
        }
        let (mut solid, mut gone) = (0, Vec::new());
        let mut waiting = false;
        let mut dangling = Vec::new();
        for r in &refs {
            match graph.owner_state(dependent, r) {
                OwnerState::Solid => solid += 1,
                OwnerState::Dangling => {
                    gone.push(ref_uid(r));
                    dangling.push(*r);
                }
                OwnerState::Waiting => {
                    waiting = true;
                    gone.push(ref_uid(r));
                }
            }
        }
        if gone.is_empty() {
            continue;
        }
        if solid == 0 {
            // A dependent of a foreground deletion that has dependents itself is deleted in
            // the foreground too, so the tree goes bottom-up.
            let propagation = if waiting && !graph.dependents_of(uid(dependent)).is_empty() {
                Propagation::Foreground
            } else {
                Propagation::Background
            };
            let mut delete = Action::delete(dynamic_reference(dependent), Some(propagation));
            if let Action::Delete {
                unless_owner_exists,
                ..
            } = &mut delete
            {
                // The snapshot said these owners are gone; the API is asked again before the
                // delete, as Kubernetes' collector does, since a store may be behind. (Owners
                // being deleted in the foreground exist, and are waited for on purpose.)
                let ns = text(dependent, "/metadata/namespace");
                *unless_owner_exists = dangling.iter().map(|r| owner_reference(r, ns)).collect();
            }
            deletes.push(delete);
            edits.remove(uid(dependent));
        } else {
            edits
                .entry(uid(dependent))
                .or_default()
                .drop_refs
                .extend(gone);
        }
    }

    // Foreground owners: done once no dependent blocks them any more.
    for owner in objects
        .iter()
        .filter(|o| is_deleting(o) && has_finalizer(o, FOREGROUND))
    {
        let blocked = graph.dependents_of(uid(owner)).iter().any(|d| {
            owner_refs(d).iter().any(|r| {
                ref_uid(r) == uid(owner) && r.get("blockOwnerDeletion") == Some(&Value::Bool(true))
            })
        });
        if !blocked {
            edits
                .entry(uid(owner))
                .or_default()
                .drop_finalizers
                .insert(FOREGROUND);
        }
    }

    // Writes: deletes, then dependents' references, then owners' finalizers (an orphaning
    // owner must outlive the references to it, or its dependents would be collected).
    let mut actions = deletes;
    let mut finalizer_updates = Vec::new();
    for object in objects {
        let Some(edit) = edits.get(uid(object)) else {
            continue;
        };
        let update = Action::Update(Object::Dynamic(edit.apply(object)));
        if edit.drop_finalizers.is_empty() {
            actions.push(update);
        } else {
            finalizer_updates.push(update);
        }
    }
    actions.extend(finalizer_updates);
    actions
}

/// What to take off one object.
#[derive(Default)]
struct Edit<'a> {
    drop_refs: BTreeSet<&'a str>,
    drop_finalizers: BTreeSet<&'static str>,
}

impl Edit<'_> {
    /// The object without those references and finalizers; empty lists are removed. The
    /// resourceVersion stays, so the update is a compare-and-swap.
    fn apply(&self, object: &Value) -> Value {
        let mut object = object.clone();
        let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
            return object;
        };
        let mut prune = |field: &str, keep: &dyn Fn(&Value) -> bool| {
            if let Some(list) = meta.get_mut(field).and_then(Value::as_array_mut) {
                list.retain(|v| keep(v));
                if list.is_empty() {
                    meta.remove(field);
                }
            }
        };
        prune("ownerReferences", &|r| !self.drop_refs.contains(ref_uid(r)));
        prune("finalizers", &|f| {
            !f.as_str().is_some_and(|f| self.drop_finalizers.contains(f))
        });
        object
    }
}

/// Where an owner reference points.
enum OwnerState {
    /// A live owner (or one of a kind we cannot judge).
    Solid,
    /// No such owner.
    Dangling,
    /// The owner is being deleted in the foreground and waits for its dependents.
    Waiting,
}

/// Objects by uid, and who references whom.
struct Graph<'a> {
    by_uid: BTreeMap<&'a str, &'a Value>,
    dependents: BTreeMap<&'a str, Vec<&'a Value>>,
    complete_kinds: &'a [&'a str],
}

impl<'a> Graph<'a> {
    fn new(objects: &'a [Value], complete_kinds: &'a [&'a str]) -> Self {
        let mut dependents: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
        for object in objects {
            for r in owner_refs(object) {
                dependents.entry(ref_uid(r)).or_default().push(object);
            }
        }
        Graph {
            by_uid: objects.iter().map(|o| (uid(o), o)).collect(),
            dependents,
            complete_kinds,
        }
    }

    fn dependents_of(&self, owner_uid: &str) -> &[&'a Value] {
        self.dependents
            .get(owner_uid)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    fn owner_state(&self, dependent: &Value, r: &Value) -> OwnerState {
        let kind = text(r, "/kind");
        if !self.complete_kinds.contains(&kind) {
            return OwnerState::Solid;
        }
        // A cluster-scoped object (a Node, a Namespace) cannot be owned by a namespaced one:
        // the reference cannot be resolved, and as in Kubernetes that keeps the object rather
        // than deleting it (a Namespace deleted here would take everything in it along).
        let namespaced_owner = skiff_api::resources::RESOURCES
            .iter()
            .any(|info| info.kind == kind && info.namespaced);
        if text(dependent, "/metadata/namespace").is_empty() && namespaced_owner {
            return OwnerState::Solid;
        }
        let owner = self.by_uid.get(ref_uid(r)).filter(|owner| {
            let owner_ns = text(owner, "/metadata/namespace");
            text(owner, "/kind") == kind
                && (owner_ns.is_empty() || owner_ns == text(dependent, "/metadata/namespace"))
        });
        match owner {
            None => OwnerState::Dangling,
            Some(o) if is_deleting(o) && has_finalizer(o, FOREGROUND) => OwnerState::Waiting,
            Some(_) => OwnerState::Solid,
        }
    }
}

fn text<'v>(value: &'v Value, pointer: &str) -> &'v str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn uid(object: &Value) -> &str {
    text(object, "/metadata/uid")
}

fn ref_uid(reference: &Value) -> &str {
    text(reference, "/uid")
}

/// An ownerReference as an object reference in the dependent's namespace (`ns`; the URL
/// ignores it for a cluster-scoped kind).
fn owner_reference(reference: &Value, ns: &str) -> k8s_openapi::api::core::v1::ObjectReference {
    let field =
        |pointer: &str| Some(text(reference, pointer).to_string()).filter(|s| !s.is_empty());
    k8s_openapi::api::core::v1::ObjectReference {
        api_version: field("/apiVersion"),
        kind: field("/kind"),
        name: field("/name"),
        uid: field("/uid"),
        namespace: Some(ns.to_string()).filter(|s| !s.is_empty()),
        ..Default::default()
    }
}

fn owner_refs(object: &Value) -> Vec<&Value> {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| refs.iter().collect())
        .unwrap_or_default()
}

fn is_deleting(object: &Value) -> bool {
    object
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
}

fn has_finalizer(object: &Value, name: &str) -> bool {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| f.iter().any(|v| v.as_str() == Some(name)))
}

/// The garbage collector in the loop's shape: a sweep every 2 s over the metadata of every
/// kind the API serves (skiff's resource table), so a kind added to the table is collected
/// without a change here. Kinds another controller reads in full come from that
/// controller's store; the others get a metadata-only store.
/// Kinds the collector does not read, as Kubernetes' garbage collector ignores them by default
/// (`DefaultIgnoredResources`): Events are many, short-lived, never owners, and expire by
/// themselves (`eventttl`).
const IGNORED: &[&str] = &["events"];

pub struct GarbageCollector {
    informers: Informers,
    stores: Vec<Arc<dyn MetadataStore>>,
}

impl Controller for GarbageCollector {
    const NAME: &'static str = "garbage-collector";
    const EVERY: Option<Duration> = Some(Duration::from_secs(2));
    // Each action concerns another object: one that cannot be collected (a 403, a 422) must
    // not hold up every other.
    const KEEP_GOING: bool = true;

    fn new(ctx: &Context, _queue: &WorkQueue) -> Self {
        let stores = skiff_api::resources::RESOURCES
            .iter()
            .filter(|info| !IGNORED.contains(&info.resource))
            .map(|info| ctx.informers.metadata(info))
            .collect();
        GarbageCollector {
            informers: ctx.informers.clone(),
            stores,
        }
    }

    fn reconcile(&mut self, _key: &str, _now: Timestamp) -> Vec<Action> {
        let mut objects = Vec::new();
        for store in &self.stores {
            let (api_version, kind) = (store.kind().api_version(), &store.kind().kind);
            store.for_each_meta(&mut |meta| {
                // Objects without a uid are made up by the server on each read (node
                // leases): they are not stored, so nothing can own or delete them.
                if meta.uid.is_some() {
                    objects.push(gc_view(&api_version, kind, meta));
                }
            });
        }
        let kinds: Vec<&str> = self.stores.iter().map(|s| s.kind().kind.as_str()).collect();
        let plan = reconcile(&objects, &kinds);
        let informers = &self.informers;
        still_dangling(plan, &objects, |api_version, kind, key| {
            informers.find(api_version, kind)?.meta(key)?.uid
        })
    }
}

/// The object as the collector reads it: type and the metadata that links owners and
/// dependents (serialising whole pods every other second was a large part of the leader's
/// CPU at 10,000 pods).
pub fn gc_view(api_version: &str, kind: &str, meta: &ObjectMeta) -> Value {
    serde_json::json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {
            "name": meta.name,
            "namespace": meta.namespace,
            "uid": meta.uid,
            "resourceVersion": meta.resource_version,
            "ownerReferences": meta.owner_references,
            "deletionTimestamp": meta.deletion_timestamp,
            "finalizers": meta.finalizers,
        },
    })
}

/// Drops the deletes of dependents one of whose owners was missing from the snapshot but is
/// in the stores now (`uid_at(apiVersion, kind, key)` reads them): the stores are read one
/// kind after another, so an owner created after its kind was read would make a fresh
/// dependent look orphaned. (Kubernetes re-reads a missing owner from the API instead.)
pub fn still_dangling(
    plan: Vec<Action>,
    snapshot: &[Value],
    uid_at: impl Fn(&str, &str, &str) -> Option<String>,
) -> Vec<Action> {
    let known: BTreeSet<&str> = snapshot.iter().map(uid).collect();
    let by_uid: BTreeMap<&str, &Value> = snapshot.iter().map(|o| (uid(o), o)).collect();
    let appeared = |dependent: &Value| {
        let ns = text(dependent, "/metadata/namespace");
        owner_refs(dependent).iter().any(|r| {
            let (api_version, kind, name) =
                (text(r, "/apiVersion"), text(r, "/kind"), text(r, "/name"));
            !known.contains(ref_uid(r))
                && [format!("{ns}/{name}"), format!("/{name}")]
                    .iter()
                    .any(|key| uid_at(api_version, kind, key).as_deref() == Some(ref_uid(r)))
        })
    };
    plan.into_iter()
        .filter(|action| match action {
            Action::Delete { uid, .. } => !by_uid.get(uid.as_str()).is_some_and(|d| appeared(d)),
            _ => true,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KINDS: &[&str] = &["Deployment", "ReplicaSet", "Pod"];

    /// An object of `kind` named `name` (its uid is the name) in namespace `default`.
    fn object(kind: &str, name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": kind,
               "metadata": {"name": name, "namespace": "default", "uid": name, "resourceVersion": "3"}})
    }

    fn owned_by(mut object: Value, owners: &[(&str, &str, bool)]) -> Value {
        object["metadata"]["ownerReferences"] = owners
            .iter()
            .map(|(kind, uid, block)| {
                json!({"apiVersion": "v1", "kind": kind, "name": uid, "uid": uid,
                                              "controller": true, "blockOwnerDeletion": block})
            })
            .collect();
        object
    }

    fn deleting(mut object: Value, finalizers: &[&str]) -> Value {
        object["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
        object["metadata"]["finalizers"] = json!(finalizers);
        object
    }

    /// The plan as short strings: `delete rs (Background)`, `update rs refs=[..] finalizers=[..]`.
    fn summary(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .map(|a| match a {
                Action::Delete {
                    object,
                    propagation,
                    ..
                } => {
                    format!(
                        "delete {} ({:?})",
                        object.name.clone().unwrap_or_default(),
                        propagation.unwrap_or(Propagation::Background)
                    )
                }
                Action::Update(Object::Dynamic(v)) => format!(
                    "update {} refs={} finalizers={}",
                    text(v, "/metadata/name"),
                    v.pointer("/metadata/ownerReferences")
                        .map(|r| r.as_array().map(|a| a.len()).unwrap_or(0))
                        .unwrap_or(0),
                    v.pointer("/metadata/finalizers")
                        .cloned()
                        .unwrap_or(json!([]))
                ),
                other => other.to_string(),
            })
            .collect()
    }

    #[test]
    fn background_collection_table() {
        let cases: Vec<(&str, Vec<Value>, Vec<&str>)> = vec![
            (
                "owner alive",
                vec![
                    object("ReplicaSet", "rs"),
                    owned_by(object("Pod", "p"), &[("ReplicaSet", "rs", true)]),
                ],
                vec![],
            ),
            (
                "owner gone",
                vec![owned_by(
                    object("ReplicaSet", "rs"),
                    &[("Deployment", "web", true)],
                )],
                vec!["delete rs (Background)"],
            ),
            (
                "one of two owners gone: drop only that reference",
                vec![
                    object("Deployment", "a"),
                    owned_by(
                        object("ReplicaSet", "rs"),
                        &[("Deployment", "a", false), ("Deployment", "b", false)],
                    ),
                ],
                vec!["update rs refs=1 finalizers=[]"],
            ),
            (
                "owner of a kind we do not list",
                vec![owned_by(object("Pod", "p"), &[("Job", "j", true)])],
                vec![],
            ),
            (
                "uid exists but as another kind",
                vec![
                    object("Pod", "x"),
                    owned_by(object("Pod", "p"), &[("ReplicaSet", "x", true)]),
                ],
                vec!["delete p (Background)"],
            ),
            (
                "owner in another namespace",
                vec![
                    {
                        let mut rs = object("ReplicaSet", "rs");
                        rs["metadata"]["namespace"] = json!("other");
                        rs
                    },
                    owned_by(object("Pod", "p"), &[("ReplicaSet", "rs", true)]),
                ],
                vec!["delete p (Background)"],
            ),
            (
                "dependent already being deleted",
                vec![deleting(
                    owned_by(object("Pod", "p"), &[("ReplicaSet", "gone", true)]),
                    &[],
                )],
                vec![],
            ),
        ];
        for (name, objects, want) in cases {
            assert_eq!(summary(&reconcile(&objects, KINDS)), want, "{name}");
        }
    }

    #[test]
    fn a_dangling_delete_asks_the_api_about_its_gone_owners_only() {
        let deployment = deleting(object("Deployment", "web"), &[FOREGROUND]);
        // Owned by a Deployment being deleted in the foreground (it exists, and is waited
        // for) and by a ReplicaSet that is gone from the snapshot.
        let pod = owned_by(
            object("Pod", "p"),
            &[("Deployment", "web", true), ("ReplicaSet", "gone", false)],
        );
        let plan = reconcile(&[deployment, pod], KINDS);
        let owners: Vec<_> = plan
            .iter()
            .filter_map(|a| match a {
                Action::Delete {
                    uid,
                    unless_owner_exists,
                    ..
                } if uid == "p" => Some(unless_owner_exists.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(owners.len(), 1, "{plan:?}");
        let asked: Vec<_> = owners[0]
            .iter()
            .map(|o| (o.kind.clone(), o.name.clone(), o.namespace.clone()))
            .collect();
        assert_eq!(
            asked,
            vec![(
                Some("ReplicaSet".to_string()),
                Some("gone".to_string()),
                Some("default".to_string())
            )]
        );
    }

    #[test]
    fn a_cluster_scoped_object_with_a_namespaced_owner_is_kept() {
        let mut namespace = owned_by(object("Namespace", "team"), &[("ConfigMap", "cm", false)]);
        namespace["metadata"]["namespace"] = Value::Null;
        let plan = reconcile(&[namespace], &["Namespace", "ConfigMap"]);
        assert!(plan.is_empty(), "{plan:?}");
        // The same reference on a namespaced object is dangling.
        let secret = owned_by(object("Secret", "s"), &[("ConfigMap", "cm", false)]);
        let plan = reconcile(&[secret], &["Secret", "ConfigMap"]);
        assert_eq!(plan.len(), 1, "{plan:?}");
    }

    #[test]
    fn deletes_carry_the_dependents_uid() {
        let plan = reconcile(
            &[owned_by(
                object("ReplicaSet", "rs"),
                &[("Deployment", "web", true)],
            )],
            KINDS,
        );
        assert!(matches!(&plan[..], [Action::Delete { uid, .. }] if uid == "rs"));
    }

    #[test]
    fn foreground_deletion_goes_bottom_up() {
        let deployment = deleting(
            object("Deployment", "web"),
            &[FOREGROUND, "example.com/keep"],
        );
        let rs = owned_by(object("ReplicaSet", "rs"), &[("Deployment", "web", true)]);
        let pod = owned_by(object("Pod", "p"), &[("ReplicaSet", "rs", true)]);

        // 1. The ReplicaSet blocks its owner and has pods: delete it in the foreground too.
        let plan = reconcile(&[deployment.clone(), rs.clone(), pod.clone()], KINDS);
        assert_eq!(summary(&plan), ["delete rs (Foreground)"]);

        // 2. The ReplicaSet is now being deleted, waiting for its pod: delete the pod.
        let rs_deleting = deleting(rs, &[FOREGROUND]);
        let plan = reconcile(&[deployment.clone(), rs_deleting.clone(), pod], KINDS);
        assert_eq!(summary(&plan), ["delete p (Background)"]);

        // 3. The pod is gone: the ReplicaSet's finalizer goes; the Deployment still waits.
        let plan = reconcile(&[deployment.clone(), rs_deleting], KINDS);
        assert_eq!(summary(&plan), ["update rs refs=1 finalizers=[]"]);

        // 4. The ReplicaSet is gone: only our finalizer leaves the Deployment.
        let plan = reconcile(&[deployment], KINDS);
        assert_eq!(
            summary(&plan),
            ["update web refs=0 finalizers=[\"example.com/keep\"]"]
        );
    }

    #[test]
    fn foreground_does_not_wait_for_non_blocking_dependents() {
        let deployment = deleting(object("Deployment", "web"), &[FOREGROUND]);
        let rs = owned_by(object("ReplicaSet", "rs"), &[("Deployment", "web", false)]);
        let plan = reconcile(&[deployment, rs], KINDS);
        assert_eq!(
            summary(&plan),
            ["delete rs (Background)", "update web refs=0 finalizers=[]"]
        );
    }

    #[test]
    fn orphaning_unlinks_dependents_before_dropping_the_finalizer() {
        let deployment = deleting(object("Deployment", "web"), &[ORPHAN]);
        let rs1 = owned_by(object("ReplicaSet", "rs1"), &[("Deployment", "web", true)]);
        let rs2 = owned_by(object("ReplicaSet", "rs2"), &[("Deployment", "web", true)]);
        let plan = reconcile(&[deployment, rs1, rs2], KINDS);
        assert_eq!(
            summary(&plan),
            [
                "update rs1 refs=0 finalizers=[]",
                "update rs2 refs=0 finalizers=[]",
                "update web refs=0 finalizers=[]"
            ]
        );
        // The updates keep the resourceVersion they were computed from.
        let Action::Update(Object::Dynamic(v)) = &plan[0] else {
            panic!()
        };
        assert_eq!(text(v, "/metadata/resourceVersion"), "3");
    }

    #[test]
    fn any_kind_may_own_any_kind() {
        // The kinds the collector reads are those the API serves, so a ConfigMap owned by a
        // Deployment, or by another ConfigMap, goes with its owner.
        let kinds = ["Deployment", "ConfigMap"];
        let by_deployment = owned_by(
            object("ConfigMap", "settings"),
            &[("Deployment", "web", false)],
        );
        let by_configmap = owned_by(
            object("ConfigMap", "derived"),
            &[("ConfigMap", "base", false)],
        );
        let plan = reconcile(&[by_deployment.clone(), by_configmap.clone()], &kinds);
        assert_eq!(
            summary(&plan),
            [
                "delete settings (Background)",
                "delete derived (Background)"
            ]
        );
        let alive = [object("Deployment", "web"), object("ConfigMap", "base")];
        let all: Vec<Value> = alive
            .into_iter()
            .chain([by_deployment, by_configmap])
            .collect();
        assert!(reconcile(&all, &kinds).is_empty());
    }

    #[test]
    fn an_owner_that_appeared_after_the_snapshot_saves_its_dependent() {
        let pod = owned_by(object("Pod", "web-1"), &[("ReplicaSet", "web", false)]);
        let snapshot = [pod.clone()];
        let plan = reconcile(&snapshot, KINDS);
        assert_eq!(summary(&plan), ["delete web-1 (Background)"]);
        // (what the stores hold now for the owner, kept?)
        let table = [
            (None, true),
            (Some("web"), false),
            // Same name, another incarnation: still dangling.
            (Some("web-again"), true),
        ];
        for (now, kept) in table {
            let lookup = |api_version: &str, kind: &str, key: &str| {
                assert_eq!((api_version, kind), ("v1", "ReplicaSet"));
                (key == "default/web")
                    .then(|| now.map(str::to_string))
                    .flatten()
            };
            let left = still_dangling(plan.clone(), &snapshot, lookup);
            assert_eq!(left.len() == 1, kept, "owner now {now:?}");
        }
        // An owner that was in the snapshot (being deleted in the foreground) is not looked up
        // again: its dependents are deleted on purpose.
        let owner = deleting(object("ReplicaSet", "web"), &[FOREGROUND]);
        let pod = owned_by(object("Pod", "web-1"), &[("ReplicaSet", "web", true)]);
        let snapshot = [owner, pod];
        let plan = reconcile(&snapshot, KINDS);
        assert_eq!(summary(&plan), ["delete web-1 (Background)"]);
        let left = still_dangling(plan, &snapshot, |_, _, _| Some("web".into()));
        assert_eq!(left.len(), 1);
    }
}
