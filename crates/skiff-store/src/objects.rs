//! The replicated object map and the deterministic rules that change it.
//!
//! [`Objects`] is the state every member holds in memory (sled holds the durable copy). Its one
//! job is [`Objects::apply_proposal`]: given the same state and the same proposal, every member
//! computes the same result, the same revisions and the same events. That is what makes
//! optimistic concurrency safe under Raft: the compare-and-set is decided here, in log order.
//!
//! ## Revisions
//! `revision` counts operations, not log entries: one Raft entry may carry hundreds of coalesced
//! operations and each gets its own `resourceVersion`, as etcd's revision does. It only grows.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use serde_json::Value;

use crate::command::{key_resource, revision_of, Op, OpError, Proposal, ProposalResult};

/// An ADDED/MODIFIED/DELETED change, as watchers see it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeEvent {
    pub kind: EventKind,
    /// The revision this change was assigned; equals the object's resourceVersion.
    pub revision: u64,
    /// The store key of the object (`pods/default/web-1`).
    pub key: String,
    /// The object after the change (for DELETED: as it was, stamped with the delete's revision).
    pub object: Arc<Value>,
    /// The object before the change, so filtered watches can turn a MODIFIED that leaves the
    /// filter into a DELETED, as Kubernetes does.
    pub previous: Option<Arc<Value>>,
    /// `object` as JSON, encoded once by the first watcher that needs it and shared by every
    /// other (each watcher gets its own clone of the event; this cell is common to all).
    pub encoded: Arc<OnceLock<Vec<u8>>>,
}

impl ChangeEvent {
    /// The object as JSON bytes, encoded at most once however many watchers send it.
    pub fn object_json(&self) -> &[u8] {
        self.encoded
            .get_or_init(|| serde_json::to_vec(&*self.object).unwrap_or_default())
    }

    /// The qualified resource of the changed object (`deployments.apps`).
    pub fn resource(&self) -> &str {
        key_resource(&self.key)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Added,
    Modified,
    Deleted,
}

impl EventKind {
    /// The `type` field of a Kubernetes watch event.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Added => "ADDED",
            EventKind::Modified => "MODIFIED",
            EventKind::Deleted => "DELETED",
        }
    }
}

/// The objects and the revision counter.
#[derive(Debug, Clone, Default)]
pub struct Objects {
    map: BTreeMap<String, Arc<Value>>,
    revision: u64,
}

/// What applying one proposal changed: keys to write or remove durably, and events to publish.
#[derive(Debug, Default)]
pub struct Changes {
    pub events: Vec<ChangeEvent>,
}

impl Objects {
    pub fn from_parts(map: BTreeMap<String, Arc<Value>>, revision: u64) -> Self {
        Objects { map, revision }
    }

    /// The revision of the last applied operation (0 for an empty store).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn get(&self, key: &str) -> Option<&Arc<Value>> {
        self.map.get(key)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Every object whose key starts with `prefix`, in key order.
    pub fn scan<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a Arc<Value>)> + 'a {
        self.map
            .range(prefix.to_string()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Arc<Value>)> {
        self.map.iter()
    }

    /// Applies one proposal. On success the map, the revision and `changes` are updated; on
    /// failure nothing is (an atomic group is all or nothing).
    pub fn apply_proposal(&mut self, proposal: &Proposal, changes: &mut Changes) -> ProposalResult {
        match proposal {
            Proposal::One(op) => {
                let (object, event) = self.plan(op, self.revision + 1, &BTreeMap::new())?;
                self.commit(event.clone());
                changes.events.push(event);
                Ok(vec![object])
            }
            Proposal::Atomic(ops) => {
                // Plan every op against the state as the earlier ops of the group left it
                // (`overlay`), and only commit when all of them hold.
                let mut overlay: BTreeMap<String, Option<Arc<Value>>> = BTreeMap::new();
                let mut planned = Vec::with_capacity(ops.len());
                for (index, op) in ops.iter().enumerate() {
                    let revision = self.revision + 1 + index as u64;
                    match self.plan(op, revision, &overlay) {
                        Ok((object, event)) => {
                            let after = match event.kind {
                                EventKind::Deleted => None,
                                _ => Some(event.object.clone()),
                            };
                            overlay.insert(event.key.clone(), after);
                            planned.push((object, event));
                        }
                        Err(cause) => {
                            return Err(OpError::AtomicAborted {
                                index,
                                cause: Box::new(cause),
                            })
                        }
                    }
                }
                let mut objects = Vec::with_capacity(planned.len());
                for (object, event) in planned {
                    self.commit(event.clone());
                    changes.events.push(event);
                    objects.push(object);
                }
                Ok(objects)
            }
        }
    }

    /// Decides the outcome of one op at `revision` without changing anything.
    fn plan(
        &self,
        op: &Op,
        revision: u64,
        overlay: &BTreeMap<String, Option<Arc<Value>>>,
    ) -> Result<(Value, ChangeEvent), OpError> {
        let key = op.key();
        let current: Option<Arc<Value>> = match overlay.get(key) {
            Some(staged) => staged.clone(),
            None => self.map.get(key).cloned(),
        };
        match op {
            Op::Create { object, .. } => {
                if current.is_some() {
                    return Err(OpError::AlreadyExists { key: key.into() });
                }
                let mut object = object.clone();
                metadata_mut(&mut object, key)?;
                if object_has_spec(&object) {
                    set_meta(&mut object, "generation", Value::from(1));
                }
                stamp_revision(&mut object, revision);
                Ok(self.event(EventKind::Added, revision, key, object, None))
            }
            Op::Update {
                object,
                expected_revision,
                ..
            } => {
                let current = current.ok_or_else(|| OpError::NotFound { key: key.into() })?;
                check_revision(key, &current, *expected_revision)?;
                let mut object = object.clone();
                metadata_mut(&mut object, key)?;
                // Identity and creation time are fixed at create; no update may change them.
                for field in ["uid", "creationTimestamp"] {
                    if let Some(v) = current.pointer(&format!("/metadata/{field}")) {
                        set_meta(&mut object, field, v.clone());
                    }
                }
                if object_has_spec(&object) {
                    // generation counts changes of desired state, so controllers can tell whether
                    // they have observed the latest spec (status.observedGeneration).
                    let old_generation = current
                        .pointer("/metadata/generation")
                        .and_then(Value::as_i64)
                        .unwrap_or(0);
                    let generation = if current.get("spec") != object.get("spec") {
                        old_generation + 1
                    } else {
                        old_generation.max(1)
                    };
                    set_meta(&mut object, "generation", Value::from(generation));
                }
                stamp_revision(&mut object, revision);
                Ok(self.event(EventKind::Modified, revision, key, object, Some(current)))
            }
            Op::Delete {
                expected_uid,
                expected_revision,
                ..
            } => {
                let current = current.ok_or_else(|| OpError::NotFound { key: key.into() })?;
                if let Some(expected) = expected_uid {
                    let uid = current
                        .pointer("/metadata/uid")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    if uid != expected {
                        return Err(OpError::UidMismatch {
                            key: key.into(),
                            expected: expected.clone(),
                            current: uid.into(),
                        });
                    }
                }
                check_revision(key, &current, *expected_revision)?;
                let mut object = (*current).clone();
                stamp_revision(&mut object, revision);
                Ok(self.event(EventKind::Deleted, revision, key, object, Some(current)))
            }
        }
    }

    fn event(
        &self,
        kind: EventKind,
        revision: u64,
        key: &str,
        object: Value,
        previous: Option<Arc<Value>>,
    ) -> (Value, ChangeEvent) {
        let event = ChangeEvent {
            kind,
            revision,
            key: key.to_string(),
            object: Arc::new(object.clone()),
            previous,
            encoded: Arc::default(),
        };
        (object, event)
    }

    fn commit(&mut self, event: ChangeEvent) {
        self.revision = event.revision;
        match event.kind {
            EventKind::Deleted => {
                self.map.remove(&event.key);
            }
            _ => {
                self.map.insert(event.key, event.object);
            }
        }
    }
}

fn check_revision(key: &str, current: &Value, expected: Option<u64>) -> Result<(), OpError> {
    if let Some(expected) = expected {
        let current = revision_of(current).unwrap_or(0);
        if current != expected {
            return Err(OpError::Conflict {
                key: key.into(),
                expected,
                current,
            });
        }
    }
    Ok(())
}

fn metadata_mut<'a>(
    object: &'a mut Value,
    key: &str,
) -> Result<&'a mut serde_json::Map<String, Value>, OpError> {
    let malformed = |reason: &str| OpError::Malformed {
        key: key.into(),
        reason: reason.into(),
    };
    let root = object
        .as_object_mut()
        .ok_or_else(|| malformed("object is not a JSON object"))?;
    root.entry("metadata")
        .or_insert_with(|| Value::Object(Default::default()))
        .as_object_mut()
        .ok_or_else(|| malformed("metadata is not a JSON object"))
}

fn set_meta(object: &mut Value, field: &str, value: Value) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert(field.to_string(), value);
    }
}

fn stamp_revision(object: &mut Value, revision: u64) {
    set_meta(object, "resourceVersion", Value::from(revision.to_string()));
}

/// Whether the object has a desired state whose changes `generation` counts.
fn object_has_spec(object: &Value) -> bool {
    object.get("spec").is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn create(key: &str, object: Value) -> Proposal {
        Proposal::One(Op::Create {
            key: key.into(),
            object,
        })
    }

    fn update(key: &str, object: Value, expected: Option<u64>) -> Proposal {
        Proposal::One(Op::Update {
            key: key.into(),
            object,
            expected_revision: expected,
        })
    }

    fn cm(name: &str, data: &str) -> Value {
        json!({"metadata": {"name": name, "uid": format!("uid-{name}")}, "data": {"k": data}})
    }

    #[test]
    fn revisions_count_operations_not_entries() {
        let mut objects = Objects::default();
        let mut changes = Changes::default();
        let a = objects.apply_proposal(&create("configmaps/default/a", cm("a", "1")), &mut changes);
        let b = objects.apply_proposal(&create("configmaps/default/b", cm("b", "1")), &mut changes);
        assert_eq!(revision_of(&a.expect("create a")[0]), Some(1));
        assert_eq!(revision_of(&b.expect("create b")[0]), Some(2));
        assert_eq!(objects.revision(), 2);
        let kinds: Vec<_> = changes
            .events
            .iter()
            .map(|e| (e.kind, e.revision))
            .collect();
        assert_eq!(kinds, vec![(EventKind::Added, 1), (EventKind::Added, 2)]);
    }

    #[test]
    fn update_with_stale_revision_conflicts_and_changes_nothing() {
        let mut objects = Objects::default();
        let mut changes = Changes::default();
        let key = "configmaps/default/a";
        objects
            .apply_proposal(&create(key, cm("a", "1")), &mut changes)
            .expect("create");
        objects
            .apply_proposal(&update(key, cm("a", "2"), Some(1)), &mut changes)
            .expect("update at the current revision");
        let stale = objects.apply_proposal(&update(key, cm("a", "3"), Some(1)), &mut changes);
        assert_eq!(
            stale,
            Err(OpError::Conflict {
                key: key.into(),
                expected: 1,
                current: 2
            })
        );
        assert_eq!(objects.get(key).expect("stored")["data"]["k"], "2");
        assert_eq!(objects.revision(), 2, "a refused op takes no revision");
    }

    #[test]
    fn create_twice_is_already_exists_and_missing_update_is_not_found() {
        let mut objects = Objects::default();
        let mut changes = Changes::default();
        let key = "configmaps/default/a";
        objects
            .apply_proposal(&create(key, cm("a", "1")), &mut changes)
            .expect("create");
        assert!(matches!(
            objects.apply_proposal(&create(key, cm("a", "1")), &mut changes),
            Err(OpError::AlreadyExists { .. })
        ));
        assert!(matches!(
            objects.apply_proposal(
                &update("configmaps/default/zz", cm("zz", "1"), None),
                &mut changes
            ),
            Err(OpError::NotFound { .. })
        ));
    }

    #[test]
    fn generation_moves_only_when_spec_changes() {
        let mut objects = Objects::default();
        let mut changes = Changes::default();
        let key = "deployments.apps/default/web";
        let v1 = json!({"metadata": {"name": "web"}, "spec": {"replicas": 1}});
        let created = objects
            .apply_proposal(&create(key, v1), &mut changes)
            .expect("create");
        assert_eq!(created[0]["metadata"]["generation"], 1);

        let status_only = json!({"metadata": {"name": "web"}, "spec": {"replicas": 1}, "status": {"replicas": 1}});
        let same = objects
            .apply_proposal(&update(key, status_only, None), &mut changes)
            .expect("status update");
        assert_eq!(same[0]["metadata"]["generation"], 1);

        let scaled = json!({"metadata": {"name": "web"}, "spec": {"replicas": 3}});
        let scaled = objects
            .apply_proposal(&update(key, scaled, None), &mut changes)
            .expect("scale");
        assert_eq!(scaled[0]["metadata"]["generation"], 2);
    }

    #[test]
    fn update_cannot_change_uid_or_creation_time() {
        let mut objects = Objects::default();
        let mut changes = Changes::default();
        let key = "configmaps/default/a";
        let mut original = cm("a", "1");
        original["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        objects
            .apply_proposal(&create(key, original), &mut changes)
            .expect("create");
        let mut forged = cm("a", "2");
        forged["metadata"]["uid"] = json!("other");
        forged["metadata"]["creationTimestamp"] = json!("2000-01-01T00:00:00Z");
        let stored = objects
            .apply_proposal(&update(key, forged, None), &mut changes)
            .expect("update");
        assert_eq!(stored[0]["metadata"]["uid"], "uid-a");
        assert_eq!(
            stored[0]["metadata"]["creationTimestamp"],
            "2026-01-01T00:00:00Z"
        );
    }

    #[test]
    fn atomic_group_is_all_or_nothing_with_distinct_revisions() {
        let mut objects = Objects::default();
        let mut changes = Changes::default();
        objects
            .apply_proposal(
                &create("configmaps/default/taken", cm("taken", "1")),
                &mut changes,
            )
            .expect("create");
        let failing = Proposal::Atomic(vec![
            Op::Create {
                key: "configmaps/default/x".into(),
                object: cm("x", "1"),
            },
            Op::Create {
                key: "configmaps/default/taken".into(),
                object: cm("taken", "2"),
            },
        ]);
        let result = objects.apply_proposal(&failing, &mut changes);
        assert!(matches!(
            result,
            Err(OpError::AtomicAborted { index: 1, .. })
        ));
        assert!(
            objects.get("configmaps/default/x").is_none(),
            "first op rolled back"
        );
        assert_eq!(objects.revision(), 1);

        // Later ops see earlier ones: create then update the same key inside one group.
        let chained = Proposal::Atomic(vec![
            Op::Create {
                key: "configmaps/default/y".into(),
                object: cm("y", "1"),
            },
            Op::Update {
                key: "configmaps/default/y".into(),
                object: cm("y", "2"),
                expected_revision: Some(2),
            },
        ]);
        let stored = objects
            .apply_proposal(&chained, &mut changes)
            .expect("chained group");
        assert_eq!(revision_of(&stored[0]), Some(2));
        assert_eq!(revision_of(&stored[1]), Some(3));
        assert_eq!(
            objects.get("configmaps/default/y").expect("y")["data"]["k"],
            "2"
        );
    }

    #[test]
    fn delete_checks_uid_and_revision_preconditions() {
        let mut objects = Objects::default();
        let mut changes = Changes::default();
        let key = "configmaps/default/a";
        objects
            .apply_proposal(&create(key, cm("a", "1")), &mut changes)
            .expect("create");
        let wrong_uid = Proposal::One(Op::Delete {
            key: key.into(),
            expected_uid: Some("nope".into()),
            expected_revision: None,
        });
        assert!(matches!(
            objects.apply_proposal(&wrong_uid, &mut changes),
            Err(OpError::UidMismatch { .. })
        ));
        let ok = Proposal::One(Op::Delete {
            key: key.into(),
            expected_uid: Some("uid-a".into()),
            expected_revision: Some(1),
        });
        let deleted = objects.apply_proposal(&ok, &mut changes).expect("delete");
        assert_eq!(
            revision_of(&deleted[0]),
            Some(2),
            "the deleted object carries the delete's revision"
        );
        assert!(objects.get(key).is_none());
        assert_eq!(
            changes.events.last().map(|e| e.kind),
            Some(EventKind::Deleted)
        );
    }

    #[test]
    fn same_proposals_give_same_state_on_every_member() {
        let proposals = [
            create("configmaps/default/a", cm("a", "1")),
            create("configmaps/default/b", cm("b", "1")),
            update("configmaps/default/a", cm("a", "2"), Some(1)),
            update("configmaps/default/b", cm("b", "2"), Some(1)), // stale: b is at 2
            Proposal::One(Op::Delete {
                key: "configmaps/default/a".into(),
                expected_uid: None,
                expected_revision: None,
            }),
        ];
        let run = || {
            let mut objects = Objects::default();
            let mut changes = Changes::default();
            let results: Vec<_> = proposals
                .iter()
                .map(|p| objects.apply_proposal(p, &mut changes))
                .collect();
            let state: Vec<_> = objects
                .iter()
                .map(|(k, v)| (k.clone(), (**v).clone()))
                .collect();
            (results, state, objects.revision())
        };
        assert_eq!(run(), run());
    }
}
