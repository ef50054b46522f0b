//! The pod garbage collector (Kubernetes' `podgc`, its orphan rule): a pod bound to a node
//! that no longer exists has nobody to stop it or to confirm its deletion, so it would stay
//! `Terminating` forever. Once its node has been missing for [`QUARANTINE`] (a node deleted
//! and registered again soon after keeps its pods), such a pod is deleted at once (grace
//! period 0), as Kubernetes does after its 40 s.
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Node, Pod};
use skiff_client::informer::Store;

use crate::controller::{Context, Controller, EVERYTHING};
use crate::workqueue::WorkQueue;
use crate::{reference_to, Action};

/// How long a node must have been missing before its pods are collected.
pub const QUARANTINE: SignedDuration = SignedDuration::from_secs(40);

/// The plan for pods of missing nodes (pure). `missing_since`: when each missing node was
/// first seen missing.
pub fn reconcile(
    pods: &[Pod],
    missing_since: &BTreeMap<String, Timestamp>,
    now: Timestamp,
) -> Vec<Action> {
    let mut plan = Vec::new();
    for pod in pods {
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .unwrap_or("");
        let Some(since) = missing_since.get(node) else {
            continue;
        };
        if now.duration_since(*since) >= QUARANTINE {
            plan.push(Action::force_delete(reference_to(pod)));
            plan.push(Action::normal_event(
                reference_to(pod),
                "PodGC",
                format!("Deleted pod of node {node:?}, which no longer exists"),
            ));
        }
    }
    plan
}

/// The controller: a sweep every 10 s.
pub struct PodGc {
    pods: Store<Pod>,
    nodes: Store<Node>,
    missing_since: BTreeMap<String, Timestamp>,
}

impl Controller for PodGc {
    const NAME: &'static str = "pod-garbage-collector";
    const EVERY: Option<Duration> = Some(Duration::from_secs(10));
    const KEEP_GOING: bool = true;

    fn new(ctx: &Context, _queue: &WorkQueue) -> Self {
        PodGc {
            pods: ctx.informers.store::<Pod>(),
            nodes: ctx.informers.store::<Node>(),
            missing_since: BTreeMap::new(),
        }
    }

    fn reconcile(&mut self, key: &str, now: Timestamp) -> Vec<Action> {
        if key != EVERYTHING {
            return Vec::new();
        }
        let nodes: BTreeSet<String> = self
            .nodes
            .list()
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect();
        let pods = self.pods.list();
        let missing: BTreeSet<String> = pods
            .iter()
            .filter_map(|p| p.spec.as_ref()?.node_name.clone())
            .filter(|n| !n.is_empty() && !nodes.contains(n))
            .collect();
        self.missing_since.retain(|n, _| missing.contains(n));
        for node in missing {
            self.missing_since.entry(node).or_insert(now);
        }
        reconcile(&pods, &self.missing_since, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pods_of_a_node_missing_past_the_quarantine_are_deleted_at_once() {
        let pod = |name: &str, node: &str| -> Pod {
            serde_json::from_value(
                json!({"metadata": {"name": name, "namespace": "ns", "uid": name},
                "spec": {"nodeName": node, "containers": []}}),
            )
            .expect("pod")
        };
        let pods = [pod("a", "gone"), pod("b", "here")];
        let now: Timestamp = "2026-12-04T12:00:00Z".parse().expect("time");
        let missing = BTreeMap::from([("gone".to_string(), now - SignedDuration::from_secs(10))]);
        assert!(
            reconcile(&pods, &missing, now).is_empty(),
            "still in quarantine"
        );
        let later = now + QUARANTINE;
        let plan = reconcile(&pods, &missing, later);
        assert!(matches!(
            &plan[0],
            Action::Delete { object, grace_period_seconds: Some(0), .. } if object.name.as_deref() == Some("a")
        ));
        assert_eq!(plan.len(), 2);
    }
}
