//! Which pod a ReplicaSet deletes first when it scales down.
//!
//! The rule is Kubernetes' (`controller.ActivePodsWithRanks`): delete the pod whose loss hurts
//! least. Criteria, in order; the first one that tells two pods apart decides:
//!
//! 1. not yet on a node < on a node (it is not serving anyone yet);
//! 2. `Pending` < `Unknown` < `Running`;
//! 3. not ready < ready;
//! 4. lower `controller.kubernetes.io/pod-deletion-cost` annotation < higher (users can mark
//!    pods as cheap to lose);
//! 5. more sibling pods on the same node < fewer (spreads what stays across nodes);
//! 6. both ready: ready for less time < longer (a pod that just came up has proven less);
//! 7. more container restarts < fewer (it is likely crash-looping);
//! 8. newer < older (missing times count as newest).
//!
//! Kubernetes compares the times of 6 and 8 on a logarithmic scale (`LogarithmicScaleDown`,
//! pods in the same power-of-two age bucket are then ordered by uid, to randomise); skiff
//! compares the exact times.
use std::cmp::Ordering;
use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;

use crate::pods;

/// The annotation that lets users say which pods are cheaper to delete.
pub const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// Sorts `pods` so that those to delete first come first. Stable: pods that compare equal keep
/// their input order.
pub fn deletion_order(mut candidates: Vec<&Pod>) -> Vec<&Pod> {
    // Criterion 5 counts active siblings per node; unassigned pods all share "".
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for pod in &candidates {
        if pods::is_active(pod) {
            *per_node.entry(node_of(pod)).or_default() += 1;
        }
    }
    candidates.sort_by(|a, b| {
        let rank = |p: &Pod| per_node.get(node_of(p)).copied().unwrap_or(0);
        delete_first(a, rank(a), b, rank(b))
    });
    candidates
}

/// `Less` when `a` should be deleted before `b`. `a_rank`/`b_rank` are how many active sibling
/// pods share each one's node.
pub fn delete_first(a: &Pod, a_rank: usize, b: &Pod, b_rank: usize) -> Ordering {
    let (a_node, b_node) = (node_of(a), node_of(b));
    if a_node != b_node && (a_node.is_empty() || b_node.is_empty()) {
        // Unassigned first: `""` must sort before any name.
        return b_node.is_empty().cmp(&a_node.is_empty());
    }
    phase_ordinal(a)
        .cmp(&phase_ordinal(b))
        .then_with(|| pods::is_ready(a).cmp(&pods::is_ready(b)))
        .then_with(|| deletion_cost(a).cmp(&deletion_cost(b)))
        .then_with(|| b_rank.cmp(&a_rank))
        .then_with(|| {
            if pods::is_ready(a) && pods::is_ready(b) {
                newer_first(pods::ready_since(a), pods::ready_since(b))
            } else {
                Ordering::Equal
            }
        })
        .then_with(|| pods::max_restarts(b).cmp(&pods::max_restarts(a)))
        .then_with(|| newer_first(created(a), created(b)))
}

fn node_of(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

/// Pending 0 < Unknown 1 < Running 2; phases the table does not list count as 0, as a
/// missing key of a Go map does.
fn phase_ordinal(pod: &Pod) -> u8 {
    match pods::phase(pod) {
        "Unknown" => 1,
        "Running" => 2,
        _ => 0,
    }
}

fn deletion_cost(pod: &Pod) -> i32 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DELETION_COST))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn created(pod: &Pod) -> Option<Timestamp> {
    pod.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

/// Kubernetes' `afterOrZero`: a missing time first, then the later time first.
fn newer_first(a: Option<Timestamp>, b: Option<Timestamp>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) => b.cmp(&a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A test pod builder: `pod("a").on("n1").phase("Running").ready_at(10)`.
    struct PodBuilder(serde_json::Value);

    fn pod(name: &str) -> PodBuilder {
        PodBuilder(json!({
            "metadata": {"name": name, "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"nodeName": "n1"},
            "status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": "2024-01-01T00:01:00Z"}
            ]},
        }))
    }

    impl PodBuilder {
        fn unassigned(mut self) -> Self {
            self.0["spec"]["nodeName"] = json!(null);
            self
        }
        fn on(mut self, node: &str) -> Self {
            self.0["spec"]["nodeName"] = json!(node);
            self
        }
        fn phase(mut self, phase: &str) -> Self {
            self.0["status"]["phase"] = json!(phase);
            self
        }
        fn not_ready(mut self) -> Self {
            self.0["status"]["conditions"][0]["status"] = json!("False");
            self
        }
        fn ready_at_minute(mut self, minute: u32) -> Self {
            self.0["status"]["conditions"][0]["lastTransitionTime"] =
                json!(format!("2024-01-01T00:{minute:02}:00Z"));
            self
        }
        fn restarts(mut self, n: i32) -> Self {
            self.0["status"]["containerStatuses"] = json!([{
                "name": "c", "image": "i", "imageID": "", "ready": true, "restartCount": n,
            }]);
            self
        }
        fn created_at_minute(mut self, minute: u32) -> Self {
            self.0["metadata"]["creationTimestamp"] =
                json!(format!("2024-01-01T00:{minute:02}:00Z"));
            self
        }
        fn cost(mut self, cost: i32) -> Self {
            self.0["metadata"]["annotations"] = json!({DELETION_COST: cost.to_string()});
            self
        }
        fn build(self) -> Pod {
            serde_json::from_value(self.0).expect("pod")
        }
    }

    #[test]
    fn each_criterion_decides_alone() {
        // (criterion, the pod deleted first, the pod kept)
        let cases = [
            ("unassigned < assigned", pod("a").unassigned(), pod("b")),
            (
                "Pending < Unknown",
                pod("a").phase("Pending"),
                pod("b").phase("Unknown"),
            ),
            ("Unknown < Running", pod("a").phase("Unknown"), pod("b")),
            ("not ready < ready", pod("a").not_ready(), pod("b")),
            ("lower deletion cost < higher", pod("a").cost(-5), pod("b")),
            (
                "ready for less time < longer",
                pod("a").ready_at_minute(30),
                pod("b").ready_at_minute(2),
            ),
            (
                "more restarts < fewer",
                pod("a").restarts(4),
                pod("b").restarts(1),
            ),
            (
                "newer < older",
                pod("a").created_at_minute(9),
                pod("b").created_at_minute(1),
            ),
        ];
        for (criterion, first, kept) in cases {
            let (first, kept) = (first.build(), kept.build());
            assert_eq!(
                delete_first(&first, 1, &kept, 1),
                Ordering::Less,
                "{criterion}"
            );
            assert_eq!(
                delete_first(&kept, 1, &first, 1),
                Ordering::Greater,
                "{criterion} (reversed)"
            );
            // Whatever order they come in, the same pod is chosen.
            for input in [vec![&first, &kept], vec![&kept, &first]] {
                let order = deletion_order(input);
                assert_eq!(order[0].metadata.name.as_deref(), Some("a"), "{criterion}");
            }
        }
    }

    #[test]
    fn earlier_criteria_win_over_later_ones() {
        // An unready pod that is old and never restarted still goes before a ready,
        // crash-looping new one: readiness (3) outranks restarts (7) and age (8).
        let unready_old = pod("a").not_ready().created_at_minute(0).build();
        let ready_crashy_new = pod("b").restarts(9).created_at_minute(50).build();
        assert_eq!(
            delete_first(&unready_old, 1, &ready_crashy_new, 1),
            Ordering::Less
        );
        // Two ready pods on a node are thinned before a lone one (rank 5).
        let doubled = [pod("x").on("n1").build(), pod("y").on("n1").build()];
        let alone = pod("z").on("n2").created_at_minute(30).build();
        let order = deletion_order(vec![&alone, &doubled[0], &doubled[1]]);
        assert_eq!(order[2].metadata.name.as_deref(), Some("z"));
    }
}
