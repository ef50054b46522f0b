//! Tests of the scheduler state machine: batches, assumptions, parking, spreading, ties.

use super::*;
use crate::filter::Rejection;
use crate::testing::{container, node, pod, PodBuilder};

fn scheduler() -> Scheduler {
    Scheduler::new(Weights::default())
}

/// A scheduler with these nodes.
fn with_nodes(nodes: Vec<crate::testing::NodeBuilder>) -> Scheduler {
    let mut s = scheduler();
    for n in nodes {
        s.upsert_node(&n.build());
    }
    s
}

fn add(s: &mut Scheduler, pods: Vec<PodBuilder>) {
    for p in pods {
        s.upsert_pod(p.build());
    }
}

/// Decides everything queued and returns `(pod name, chosen node)`.
fn decide_all(s: &mut Scheduler) -> Vec<(String, Option<String>)> {
    s.schedule_pending(usize::MAX)
        .into_iter()
        .map(|(key, d)| (key.name, d.node().map(str::to_string)))
        .collect()
}

fn placed(name: &str, node: &str) -> (String, Option<String>) {
    (name.to_string(), Some(node.to_string()))
}

#[test]
fn a_batch_assumes_each_binding() {
    // 1. Two nodes with 1 cpu each; two pods of 800m fit each node only once.
    let mut s = with_nodes(vec![node("a").cpu("1"), node("b").cpu("1")]);
    add(&mut s, vec![pod("p1").cpu("800m"), pod("p2").cpu("800m")]);
    // 2. One batch: p2 sees p1's assumed 800m on a and goes to b.
    assert_eq!(decide_all(&mut s), [placed("p1", "a"), placed("p2", "b")]);
    // 3. The bindings come back through the watch: nothing changes, nothing is queued.
    s.upsert_pod(pod("p1").cpu("800m").on("a").build());
    s.upsert_pod(pod("p2").cpu("800m").on("b").build());
    assert!(!s.has_work());
    // 4. A third does not fit anywhere.
    add(&mut s, vec![pod("p3").cpu("800m")]);
    let batch = s.schedule_pending(10);
    assert_eq!(
        batch[0].1.message(),
        Some("0/2 nodes are available: 2 Insufficient cpu.")
    );
}

#[test]
fn an_update_of_an_assumed_pod_keeps_the_assumption() {
    let mut s = with_nodes(vec![node("a").cpu("1")]);
    add(&mut s, vec![pod("p1").cpu("800m")]);
    assert_eq!(decide_all(&mut s), [placed("p1", "a")]);
    // A status update of p1 arrives before its binding does.
    s.upsert_pod(pod("p1").cpu("800m").phase("Pending").build());
    assert!(!s.has_work(), "p1 is not queued again");
    add(&mut s, vec![pod("p2").cpu("800m")]);
    assert_eq!(decide_all(&mut s), [("p2".to_string(), None)]);
}

#[test]
fn unschedulable_pods_park_until_something_changes() {
    let mut s = with_nodes(vec![node("a").cpu("1")]);
    add(&mut s, vec![pod("big").cpu("2")]);
    assert_eq!(decide_all(&mut s), [("big".to_string(), None)]);
    assert!(!s.has_work(), "parked, not retried in a loop");
    assert_eq!(s.parked_count(), 1);

    // A status update (the loop recording PodScheduled=False) does not wake it.
    s.upsert_pod(pod("big").cpu("2").phase("Pending").build());
    assert!(!s.has_work());
    // Neither does another pending pod arriving, nor a node update that changes nothing.
    add(&mut s, vec![pod("small").cpu("100m")]);
    s.upsert_node(&node("a").cpu("1").build());
    assert_eq!(decide_all(&mut s), [placed("small", "a")]);
    assert!(!s.has_work());

    // A bigger node joins: the parked pod is retried and fits.
    s.upsert_node(&node("b").cpu("4").build());
    assert!(s.has_work());
    assert_eq!(decide_all(&mut s), [placed("big", "b")]);
}

#[test]
fn freed_room_wakes_parked_pods() {
    let mut s = with_nodes(vec![node("a").cpu("1")]);
    add(
        &mut s,
        vec![pod("old").cpu("1").on("a"), pod("new").cpu("1")],
    );
    assert_eq!(decide_all(&mut s), [("new".to_string(), None)]);
    // The old pod finishes: its requests stop counting.
    s.upsert_pod(pod("old").cpu("1").on("a").phase("Succeeded").build());
    assert_eq!(decide_all(&mut s), [placed("new", "a")]);
}

#[test]
fn a_parked_pod_whose_spec_changes_is_retried() {
    let mut s = with_nodes(vec![node("a").label("disk", "ssd")]);
    add(&mut s, vec![pod("p").node_selector("disk", "hdd")]);
    assert_eq!(decide_all(&mut s), [("p".to_string(), None)]);
    s.upsert_pod(pod("p").node_selector("disk", "ssd").build());
    assert_eq!(decide_all(&mut s), [placed("p", "a")]);
}

#[test]
fn forgetting_a_failed_binding_gives_the_room_back() {
    let mut s = with_nodes(vec![node("a").cpu("1")]);
    add(&mut s, vec![pod("p1").cpu("800m"), pod("p2").cpu("800m")]);
    assert_eq!(
        decide_all(&mut s),
        [placed("p1", "a"), ("p2".to_string(), None)]
    );
    // p1's binding fails: p1 is queued again and p2, parked, is woken by the freed room.
    s.forget(&PodKey::new("default", "p1"));
    assert_eq!(s.pending_count(), 2);
    // Queue order is arrival order, so p1 gets the room again.
    assert_eq!(
        decide_all(&mut s),
        [placed("p1", "a"), ("p2".to_string(), None)]
    );
    // Forgetting a pod that is not assumed does nothing.
    s.forget(&PodKey::new("default", "p2"));
    assert!(!s.has_work());
}

#[test]
fn replicas_of_one_owner_spread_across_nodes() {
    let mut s = with_nodes(vec![node("a"), node("b"), node("c")]);
    add(
        &mut s,
        (0..4)
            .map(|i| pod(&format!("r{i}")).cpu("100m").owner("rs-1"))
            .collect(),
    );
    // One replica per node, then the fourth goes where bin-packing prefers among the equally
    // spread nodes (every node has one: spreading 0 for all; the first by name wins the tie
    // on equal packing).
    assert_eq!(
        decide_all(&mut s),
        [
            placed("r0", "a"),
            placed("r1", "b"),
            placed("r2", "c"),
            placed("r3", "a")
        ]
    );
}

#[test]
fn pods_without_a_controller_spread_by_labels() {
    let mut s = with_nodes(vec![node("a"), node("b")]);
    add(
        &mut s,
        vec![
            pod("web-1").label("app", "web"),
            pod("web-2").label("app", "web"),
            // Different labels: not a sibling of the web pods; both nodes tie, so "a".
            pod("db").label("app", "db"),
        ],
    );
    let decided = decide_all(&mut s);
    assert_eq!(decided[0], placed("web-1", "a"));
    assert_eq!(decided[1], placed("web-2", "b"));
    assert_eq!(decided[2], placed("db", "a"));
}

#[test]
fn spreading_scores_are_recorded() {
    let mut s = with_nodes(vec![node("a"), node("b")]);
    let best_effort = |name: &str| pod(name).container(container("c")).owner("rs");
    add(&mut s, vec![best_effort("r0").on("a"), best_effort("r1")]);
    let (_, decision) = s.schedule_pending(1).remove(0);
    // Counts a=1, b=0 → spreading a 0, b 100. Bin-packing (best-effort pod, scored as
    // 100m / 200Mi on a 4 cpu / 8Gi node): cpu 100×100/4000 = 2, memory 200Mi×100/8Gi = 2 → 2;
    // node a also holds r0's 100m / 200Mi: cpu 5, memory 4 → 4.
    let scores: Vec<Scores> = decision
        .nodes
        .iter()
        .map(|v| match v.verdict {
            Verdict::Feasible(s) => s,
            Verdict::Rejected(_) => panic!("every node fits"),
        })
        .collect();
    assert_eq!(scores[0], Scores::new(Weights::default(), 4, 0));
    assert_eq!(scores[1], Scores::new(Weights::default(), 2, 100));
    assert_eq!(decision.node(), Some("b"));
}

#[test]
fn ties_go_to_the_first_node_by_name() {
    // Added in reverse order; identical nodes; the answer is still "a".
    let mut s = with_nodes(vec![node("c"), node("b"), node("a")]);
    add(&mut s, vec![pod("p")]);
    let (_, decision) = s.schedule_pending(1).remove(0);
    assert_eq!(decision.node(), Some("a"));
    let names: Vec<&str> = decision.nodes.iter().map(|v| &*v.node).collect();
    assert_eq!(names, ["a", "b", "c"], "verdicts are listed by name");
}

#[test]
fn bin_packing_fills_the_fuller_node() {
    let mut s = with_nodes(vec![node("a"), node("b")]);
    add(
        &mut s,
        vec![pod("busy").cpu("2").on("b"), pod("p").cpu("1")],
    );
    assert_eq!(decide_all(&mut s), [placed("p", "b")]);
}

#[test]
fn which_pods_are_ours() {
    let mut s = with_nodes(vec![node("a")]);
    add(
        &mut s,
        vec![
            pod("default").scheduler("default-scheduler"),
            pod("skiff").scheduler("skiff"),
            pod("other").scheduler("volcano"),
            pod("deleting").deleting(),
            pod("done").phase("Succeeded"),
        ],
    );
    let names: Vec<String> = decide_all(&mut s).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["default", "skiff"]);
}

#[test]
fn higher_priority_goes_first() {
    let mut s = with_nodes(vec![node("a").cpu("1")]);
    add(
        &mut s,
        vec![pod("low").cpu("1"), pod("high").cpu("1").priority(1000)],
    );
    assert_eq!(
        decide_all(&mut s),
        [placed("high", "a"), ("low".to_string(), None)]
    );
}

#[test]
fn pods_bound_before_their_node_arrives_still_count() {
    let mut s = scheduler();
    add(
        &mut s,
        vec![pod("early").cpu("1").on("a"), pod("p").cpu("1")],
    );
    assert_eq!(
        s.schedule_pending(1)[0].1.message(),
        Some("no nodes available to schedule pods")
    );
    s.upsert_node(&node("a").cpu("1").build());
    let (_, decision) = s.schedule_pending(1).remove(0);
    assert!(matches!(
        &decision.nodes[0].verdict,
        Verdict::Rejected(r) if matches!(r[0], Rejection::Insufficient { used: 1000, .. })
    ));
}

#[test]
fn deleting_pods_and_nodes() {
    let mut s = with_nodes(vec![node("a").cpu("1"), node("b").cpu("1")]);
    add(
        &mut s,
        vec![pod("x").cpu("1").on("a"), pod("y").cpu("1").on("b")],
    );
    add(&mut s, vec![pod("p").cpu("1")]);
    assert_eq!(decide_all(&mut s), [("p".to_string(), None)]);
    s.remove_node("b");
    s.remove_pod(&PodKey::new("default", "y"));
    s.remove_pod(&PodKey::new("default", "x"));
    assert_eq!(decide_all(&mut s), [placed("p", "a")]);
}

#[test]
fn a_relist_replaces_everything() {
    let mut s = with_nodes(vec![node("a").cpu("1"), node("b").cpu("1")]);
    add(&mut s, vec![pod("x").cpu("1").on("a")]);
    // The relist no longer has x, nor node b.
    s.restart_nodes(&[node("a").cpu("1").build()]);
    s.restart_pods(vec![pod("p").cpu("1").build()]);
    let (_, decision) = s.schedule_pending(1).remove(0);
    assert_eq!(decision.node(), Some("a"));
    assert_eq!(decision.nodes.len(), 1);
}

#[test]
fn the_decision_explains_a_mixed_failure() {
    let mut s = with_nodes(vec![
        node("a").taint("node.kubernetes.io/unreachable", "", "NoExecute"),
        node("b").cpu("1"),
        node("c").cpu("1"),
    ]);
    add(&mut s, vec![pod("p").cpu("2")]);
    let (_, decision) = s.schedule_pending(1).remove(0);
    assert_eq!(
        decision.message(),
        Some(
            "0/3 nodes are available: 1 node(s) had untolerated taint \
             {node.kubernetes.io/unreachable: }, 2 Insufficient cpu."
        )
    );
    let table = decision.render();
    assert!(table.contains("untolerated taint node.kubernetes.io/unreachable=:NoExecute"));
    assert!(table.contains("Insufficient cpu: requested 2, used 0, allocatable 1"));
}

#[test]
fn same_labels_in_another_namespace_are_not_siblings() {
    let mut s = with_nodes(vec![node("a"), node("b")]);
    add(
        &mut s,
        vec![
            pod("web").label("app", "web").on("a"),
            pod("web").label("app", "web").namespace("staging"),
        ],
    );
    // No sibling anywhere, so spreading ties; bin-packing prefers the node already in use.
    assert_eq!(decide_all(&mut s), [placed("web", "a")]);
}

#[test]
fn claims_keep_pods_to_their_volumes_node_and_exclusive_claims_to_one_user() {
    use crate::claims::{Claim, ClaimState, Claims};
    let mut s = with_nodes(vec![node("a"), node("b")]);
    let claim = |nodes: Option<Vec<String>>, mode: &str| Claim {
        state: ClaimState::Bound {
            volume: "pv".into(),
            nodes,
        },
        modes: vec![mode.to_string()],
    };
    let mut claims = Claims::new();
    claims.insert(
        ("default".into(), "pinned".into()),
        claim(Some(vec!["b".into()]), "ReadWriteMany"),
    );
    claims.insert(
        ("default".into(), "rwo".into()),
        claim(None, "ReadWriteOnce"),
    );
    claims.insert(
        ("default".into(), "rwop".into()),
        claim(None, "ReadWriteOncePod"),
    );
    s.set_claims(claims);
    // 1. A volume pinned to b takes the pod to b; a missing claim keeps it everywhere.
    add(
        &mut s,
        vec![pod("p1").claim("pinned"), pod("p2").claim("gone")],
    );
    let batch = s.schedule_pending(10);
    assert_eq!(batch[0].1.node(), Some("b"));
    assert_eq!(
        batch[1].1.message(),
        Some("0/2 nodes are available: 2 persistentvolumeclaim \"gone\" not found.")
    );
    // 2. A ReadWriteOnce claim used on a keeps its next user on a.
    s.upsert_pod(pod("w1").claim("rwo").on("a").build());
    add(&mut s, vec![pod("w2").claim("rwo")]);
    let batch = s.schedule_pending(10);
    assert_eq!(batch[0].1.node(), Some("a"));
    let refused = batch[0]
        .1
        .nodes
        .iter()
        .find(|n| &*n.node == "b")
        .expect("b judged");
    assert!(
        matches!(&refused.verdict, Verdict::Rejected(r) if matches!(&r[0], Rejection::VolumeInUse { pod, node, .. } if pod == "w1" && node == "a")),
        "{refused:?}"
    );
    // 3. A ReadWriteOncePod claim in use keeps a second pod off every node.
    s.upsert_pod(pod("o1").claim("rwop").on("a").build());
    add(&mut s, vec![pod("o2").claim("rwop")]);
    let batch = s.schedule_pending(10);
    assert_eq!(
        batch[0].1.message(),
        Some("0/2 nodes are available: 2 node has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod access mode.")
    );
}
