//! Expectations: what a controller waits to see in its caches before it runs again for a key.
//!
//! A controller plans from its caches, and the caches learn of its own writes only when the
//! watch delivers them. A ReplicaSet that created three pods and is woken again before the
//! watch shows them would count too few pods and create three more. Kubernetes' answer, and
//! skiff's: after applying a plan, the loop remembers the writes it expects to see
//! ([`Expected`]) for the key, and does not reconcile the key again until the caches show
//! every one of them — or until [`TIMEOUT`] has passed (a watch that lost an event must not
//! stop the controller for good).
//!
//! Expected flow: `reconcile` → apply → [`Expectations::expect`]; on the next wake-up
//! [`Expectations::ready`] says whether to reconcile now or look again shortly.
use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tokio::time::Instant;

use crate::{Action, Object};

/// How long a key waits for its writes to show before it is reconciled anyway.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// One write a controller made, as the caches will show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub api_version: String,
    pub kind: String,
    /// `namespace/name` (`/name` for cluster-scoped objects).
    pub key: String,
    pub change: Change,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The object exists (any incarnation: a name taken is a name taken).
    Created,
    /// The object was at this resourceVersion when it was updated; it has moved on (or is gone).
    Updated { from: String },
    /// This incarnation is gone or being deleted.
    Deleted { uid: String },
}

impl Expected {
    /// Whether the caches show this write, given the cached metadata of its object (if any).
    pub fn seen_in(&self, cached: Option<&ObjectMeta>) -> bool {
        match (&self.change, cached) {
            (Change::Created, cached) => cached.is_some(),
            (Change::Updated { .. }, None) => true,
            (Change::Updated { from }, Some(meta)) => {
                meta.resource_version.as_deref() != Some(from.as_str())
            }
            (Change::Deleted { .. }, None) => true,
            (Change::Deleted { uid }, Some(meta)) => {
                meta.uid.as_deref() != Some(uid.as_str()) || meta.deletion_timestamp.is_some()
            }
        }
    }

    /// The creations, updates and deletions of `plan` that `pick` selects, as expectations.
    pub fn of_plan(plan: &[Action], pick: impl Fn(&Action) -> bool) -> Vec<Expected> {
        plan.iter()
            .filter(|a| pick(a))
            .filter_map(|action| {
                let (object, change) = match action {
                    Action::Create(o) => (o.reference(), Change::Created),
                    Action::Update(o) | Action::UpdateStatus(o) => {
                        let r = o.reference();
                        let from = r.resource_version.clone().unwrap_or_default();
                        (r, Change::Updated { from })
                    }
                    Action::Delete { object, uid, .. } => {
                        (object.clone(), Change::Deleted { uid: uid.clone() })
                    }
                    Action::Event(_) | Action::RequeueAfter { .. } => return None,
                };
                Some(Expected {
                    api_version: object.api_version.unwrap_or_default(),
                    kind: object.kind.unwrap_or_default(),
                    key: format!(
                        "{}/{}",
                        object.namespace.unwrap_or_default(),
                        object.name.unwrap_or_default()
                    ),
                    change,
                })
            })
            .collect()
    }
}

/// Pod creations and deletions: what a ReplicaSet waits for.
pub fn pod_churn(action: &Action) -> bool {
    matches!(
        action,
        Action::Create(Object::Pod(_)) | Action::Delete { .. }
    )
}

struct Waiting {
    writes: Vec<Expected>,
    until: Instant,
}

/// The writes each key of one controller waits to see.
#[derive(Default)]
pub struct Expectations {
    waiting: HashMap<String, Waiting>,
}

impl Expectations {
    /// `key` waits, from `now` on, until every one of `writes` shows (nothing to wait for
    /// when `writes` is empty).
    pub fn expect(&mut self, key: &str, writes: Vec<Expected>, now: Instant) {
        if writes.is_empty() {
            self.waiting.remove(key);
        } else {
            let until = now + TIMEOUT;
            self.waiting
                .insert(key.to_string(), Waiting { writes, until });
        }
    }

    /// Whether `key` may be reconciled at `now`: nothing awaited, everything awaited seen
    /// (`cached` gives the cached metadata of an expected write's object), or timed out. A
    /// key found ready stops waiting.
    pub fn ready(
        &mut self,
        key: &str,
        now: Instant,
        cached: impl Fn(&Expected) -> Option<ObjectMeta>,
    ) -> bool {
        let Some(waiting) = self.waiting.get(key) else {
            return true;
        };
        let ready =
            now >= waiting.until || waiting.writes.iter().all(|w| w.seen_in(cached(w).as_ref()));
        if ready {
            self.waiting.remove(key);
        }
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference_to;
    use k8s_openapi::api::core::v1::Pod;

    fn pod(name: &str, uid: &str, version: &str) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.namespace = Some("ns".into());
        pod.metadata.name = Some(name.into());
        pod.metadata.uid = Some(uid.into());
        pod.metadata.resource_version = Some(version.into());
        pod
    }

    fn meta(uid: &str, version: &str, deleting: bool) -> Option<ObjectMeta> {
        let mut meta = pod("x", uid, version).metadata;
        if deleting {
            meta.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                jiff::Timestamp::UNIX_EPOCH,
            ));
        }
        Some(meta)
    }

    #[test]
    fn what_counts_as_seen() {
        let created = Expected::of_plan(
            &[Action::Create(Object::Pod(Box::new(pod("a", "", ""))))],
            |_| true,
        );
        let updated = Expected::of_plan(
            &[Action::Update(Object::Pod(Box::new(pod("a", "u1", "7"))))],
            |_| true,
        );
        let deleted = Expected::of_plan(
            &[Action::delete(reference_to(&pod("a", "u1", "7")), None)],
            |_| true,
        );
        let (created, updated, deleted) = (&created[0], &updated[0], &deleted[0]);
        assert_eq!(
            (created.kind.as_str(), created.key.as_str()),
            ("Pod", "ns/a")
        );
        // (expectation, what the cache holds for its key, seen?)
        let table = [
            (created, None, false),
            (created, meta("u9", "1", false), true),
            (updated, meta("u1", "7", false), false),
            (updated, meta("u1", "8", false), true),
            (updated, None, true),
            (deleted, meta("u1", "7", false), false),
            (deleted, meta("u1", "8", true), true),
            (deleted, meta("u2", "9", false), true),
            (deleted, None, true),
        ];
        for (i, (expected, cached, seen)) in table.into_iter().enumerate() {
            assert_eq!(
                expected.seen_in(cached.as_ref()),
                seen,
                "row {i}: {expected:?}"
            );
        }
    }

    #[test]
    fn a_replicaset_waits_for_its_pods_only() {
        let plan = [
            Action::Create(Object::Pod(Box::new(pod("a", "", "")))),
            Action::UpdateStatus(Object::Pod(Box::new(pod("b", "u2", "3")))),
            Action::delete(reference_to(&pod("c", "u3", "4")), None),
            Action::RequeueAfter {
                after: Duration::from_secs(1),
                why: "x".into(),
            },
        ];
        let keys: Vec<String> = Expected::of_plan(&plan, pod_churn)
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(keys, ["ns/a", "ns/c"]);
    }

    #[test]
    fn a_key_waits_until_its_writes_show_or_time_runs_out() {
        let start = Instant::now();
        let writes = Expected::of_plan(
            &[Action::Create(Object::Pod(Box::new(pod("a", "", ""))))],
            |_| true,
        );
        let mut expectations = Expectations::default();
        let nothing = |_: &Expected| None;
        let there = |_: &Expected| meta("u1", "1", false);

        assert!(
            expectations.ready("ns/rs", start, nothing),
            "nothing awaited"
        );
        expectations.expect("ns/rs", writes.clone(), start);
        assert!(!expectations.ready("ns/rs", start + Duration::from_secs(1), nothing));
        assert!(expectations.ready("ns/rs", start + Duration::from_secs(1), there));
        // Once ready, the key no longer waits.
        assert!(expectations.ready("ns/rs", start + Duration::from_secs(1), nothing));

        expectations.expect("ns/rs", writes, start);
        assert!(!expectations.ready("ns/rs", start + TIMEOUT - Duration::from_millis(1), nothing));
        assert!(
            expectations.ready("ns/rs", start + TIMEOUT, nothing),
            "timed out"
        );

        // A plan without writes clears the wait.
        expectations.expect("ns/rs", Vec::new(), start);
        assert!(expectations.ready("ns/rs", start, nothing));
    }
}
