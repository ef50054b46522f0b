//! Node lifecycle: what happens when a node goes silent, and when it comes back.
//!
//! Agents send a heartbeat every 5 s to the leader, which keeps the times in memory only
//! (writing them would wear edge devices' flash; see the API server's `nodes` module). This
//! controller turns those times into the few writes that matter:
//!
//! Expected flow for a node that goes silent (defaults in [`Config`]):
//! 1. no heartbeat for 20 s → its conditions become `Unknown` (`NodeStatusUnknown`, "Kubelet
//!    stopped posting node status.") and a `NodeNotReady` event is recorded;
//! 2. next pass → taints `node.kubernetes.io/unreachable:NoExecute` (with `timeAdded`) and
//!    `:NoSchedule` (so nothing new is scheduled there);
//! 3. each pod on it is deleted once it has tolerated the taint long enough: its own
//!    `tolerationSeconds` for that taint, or 30 s if it has no such toleration (skiff's
//!    stand-in for Kubernetes' DefaultTolerationSeconds admission, which adds 300 s);
//!    a toleration without seconds tolerates forever (DaemonSet pods).
//!
//! When heartbeats return, `Ready` becomes `True` again (`NodeReady` event) and, on the next
//! pass, the taints go. A node whose agent itself reports `Ready=False` gets the
//! `node.kubernetes.io/not-ready` taints instead, with the same eviction rule.
//!
//! Each node is written at most once per pass: status first, taints on a later pass (they
//! live in different parts of the object, written through different endpoints).
//!
//! Caveat: a node missing from the heartbeat table is left alone. The table the API server
//! keeps answers for every node (a new leader counts all nodes as seen when it took over), so
//! the loop should ask it for each node rather than pass only the nodes that sent one.
use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::{reference_to, seconds_between, wait_for, Action, Object};

/// The taint of a node whose agent went silent.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The taint of a node whose agent reports `Ready=False`.
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";

/// Timings of the node lifecycle controller.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// Silence after which a node is `Ready=Unknown` (Kubernetes: 40 s; skiff: 20 s).
    pub not_ready_after: Duration,
    /// How long pods without a toleration for the taint stay on a lost node.
    pub default_toleration: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            not_ready_after: Duration::from_secs(20),
            default_toleration: Duration::from_secs(30),
        }
    }
}

/// Plans one pass over all nodes. `last_heartbeat` maps node names to when each was last
/// heard from; `pods` are all pods (only those bound to tainted nodes are read).
///
/// Generic over [`Borrow`] so the controller can pass references into its caches (`&[&Node]`)
/// instead of cloning every node and pod each second, and tests can pass owned values.
pub fn reconcile<N: Borrow<Node>, P: Borrow<Pod>>(
    nodes: &[N],
    last_heartbeat: &BTreeMap<String, Timestamp>,
    pods: &[P],
    now: Timestamp,
    config: &Config,
) -> Vec<Action> {
    let mut actions = Vec::new();
    let mut next_check: Option<(f64, String)> = None;
    let mut check_in = |seconds: f64, why: String| {
        if next_check.as_ref().is_none_or(|(s, _)| seconds < *s) {
            next_check = Some((seconds, why));
        }
    };
    for node in nodes.iter().map(Borrow::borrow) {
        let name = node.metadata.name.clone().unwrap_or_default();
        let Some(heard) = last_heartbeat.get(&name) else {
            continue;
        };
        let silence = seconds_between(*heard, now);
        let limit = config.not_ready_after.as_secs_f64();
        let ready = ready_status(node);

        // 1. Conditions follow the heartbeats.
        if silence > limit && ready.as_deref() != Some("Unknown") {
            actions.push(Action::UpdateStatus(Object::Node(Box::new(mark_unknown(
                node, now,
            )))));
            actions.push(status_event(node, "NodeNotReady"));
            continue;
        }
        if silence <= limit {
            check_in(
                limit - silence,
                format!("node {name} goes NotReady if still silent"),
            );
            if ready.as_deref() == Some("Unknown") {
                actions.push(Action::UpdateStatus(Object::Node(Box::new(mark_ready(
                    node, now,
                )))));
                actions.push(status_event(node, "NodeReady"));
                continue;
            }
        }

        // 2. Taints follow the Ready condition.
        let wanted = match ready_status(node).as_deref() {
            Some("Unknown") => Some(UNREACHABLE),
            Some("False") => Some(NOT_READY),
            _ => None,
        };
        if let Some(tainted) = with_taints(node, wanted, now) {
            actions.push(Action::Update(Object::Node(Box::new(tainted))));
            continue;
        }

        // 3. Evict pods whose toleration ran out.
        let Some(taint) = no_execute_taint(node) else {
            continue;
        };
        let tainted_at = taint.time_added.as_ref().map(|t| t.0).unwrap_or(now);
        for pod in pods.iter().map(Borrow::borrow).filter(|p: &&Pod| {
            p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name.as_str())
                && p.metadata.deletion_timestamp.is_none()
        }) {
            let Some(tolerated) = tolerated_seconds(pod, taint, config) else {
                continue;
            };
            let left = tolerated - seconds_between(tainted_at, now);
            if left > 0.0 {
                let pod_name = pod.metadata.name.clone().unwrap_or_default();
                check_in(
                    left,
                    format!("pod {pod_name} stops tolerating {}", taint.key),
                );
                continue;
            }
            actions.push(Action::delete(reference_to(pod), None));
            actions.push(Action::normal_event(
                reference_to(pod),
                "TaintManagerEviction",
                format!(
                    "Marking for deletion Pod {}/{}",
                    pod.metadata.namespace.as_deref().unwrap_or("default"),
                    pod.metadata.name.as_deref().unwrap_or("")
                ),
            ));
        }
    }
    if let Some((seconds, why)) = next_check {
        actions.push(Action::RequeueAfter {
            after: wait_for(seconds),
            why,
        });
    }
    actions
}

/// How long `pod` tolerates `taint` from when it was added, in seconds; `None` for forever.
/// Among matching tolerations the shortest `tolerationSeconds` wins (`getMinTolerationTime`);
/// with no matching toleration the configured default applies.
pub fn tolerated_seconds(pod: &Pod, taint: &Taint, config: &Config) -> Option<f64> {
    let matching: Vec<&Toleration> = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| tolerates(t, taint))
        .collect();
    if matching.is_empty() {
        return Some(config.default_toleration.as_secs_f64());
    }
    matching
        .iter()
        .filter_map(|t| t.toleration_seconds)
        .min()
        .map(|s| s.max(0) as f64)
}

/// Whether a toleration matches a taint (`Toleration.ToleratesTaint`): same effect (or any),
/// same key (or, with `Exists` and no key, every key), and same value unless `Exists`.
fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect_ok = toleration
        .effect
        .as_deref()
        .is_none_or(|e| e.is_empty() || e == taint.effect);
    let key = toleration.key.as_deref().unwrap_or("");
    let exists = toleration.operator.as_deref() == Some("Exists");
    let key_ok = key == taint.key || (key.is_empty() && exists);
    let value_ok =
        exists || toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("");
    effect_ok && key_ok && value_ok
}

fn ready_status(node: &Node) -> Option<String> {
    conditions(node)
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.clone())
}

fn conditions(node: &Node) -> &[NodeCondition] {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default()
}

/// The node's lifecycle `NoExecute` taint, if it has one.
fn no_execute_taint(node: &Node) -> Option<&Taint> {
    node.spec
        .as_ref()?
        .taints
        .as_ref()?
        .iter()
        .find(|t| t.effect == "NoExecute" && (t.key == UNREACHABLE || t.key == NOT_READY))
}

/// The node with every condition `Unknown` ("we do not know any more"), keeping each
/// condition's last heartbeat (`tryUpdateNodeHealth`).
fn mark_unknown(node: &Node, now: Timestamp) -> Node {
    let mut node = node.clone();
    let status = node.status.get_or_insert_with(Default::default);
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    if !conditions.iter().any(|c| c.type_ == "Ready") {
        conditions.push(NodeCondition {
            type_: "Ready".into(),
            status: "Unknown".into(),
            reason: Some("NodeStatusNeverUpdated".into()),
            message: Some("Kubelet never posted node status.".into()),
            last_heartbeat_time: node.metadata.creation_timestamp.clone(),
            last_transition_time: Some(Time(now)),
        });
    }
    for c in conditions.iter_mut().filter(|c| c.status != "Unknown") {
        c.status = "Unknown".into();
        c.reason = Some("NodeStatusUnknown".into());
        c.message = Some("Kubelet stopped posting node status.".into());
        c.last_transition_time = Some(Time(now));
    }
    node
}

/// The node as its agent would report it when healthy: `Ready=True`, no pressure. Only the
/// conditions this controller turned `Unknown` are touched.
fn mark_ready(node: &Node, now: Timestamp) -> Node {
    let mut node = node.clone();
    let status = node.status.get_or_insert_with(Default::default);
    for c in status.conditions.iter_mut().flatten() {
        if c.status != "Unknown" {
            continue;
        }
        let (value, reason, message) = match c.type_.as_str() {
            "Ready" => ("True", "KubeletReady", "kubelet is posting ready status"),
            "MemoryPressure" => (
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            "DiskPressure" => (
                "False",
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
            ),
            "PIDPressure" => (
                "False",
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
            _ => continue,
        };
        c.status = value.into();
        c.reason = Some(reason.into());
        c.message = Some(message.into());
        c.last_heartbeat_time = Some(Time(now));
        c.last_transition_time = Some(Time(now));
    }
    node
}

/// The node with exactly the lifecycle taints `wanted` calls for (NoExecute and NoSchedule of
/// that key; none when healthy), or `None` if it already has them. Other taints are kept, and
/// a taint that stays keeps its `timeAdded`.
fn with_taints(node: &Node, wanted: Option<&str>, now: Timestamp) -> Option<Node> {
    let current: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let lifecycle = |t: &Taint| t.key == UNREACHABLE || t.key == NOT_READY;
    let mut taints: Vec<Taint> = current.iter().filter(|t| !lifecycle(t)).cloned().collect();
    if let Some(key) = wanted {
        for effect in ["NoSchedule", "NoExecute"] {
            let kept = current
                .iter()
                .find(|t| t.key == key && t.effect == effect)
                .cloned();
            taints.push(kept.unwrap_or_else(|| Taint {
                key: key.into(),
                effect: effect.into(),
                value: None,
                time_added: (effect == "NoExecute").then_some(Time(now)),
            }));
        }
    }
    if taints.len() == current.len() && taints.iter().all(|t| current.contains(t)) {
        return None;
    }
    let mut node = node.clone();
    node.spec.get_or_insert_with(Default::default).taints = (!taints.is_empty()).then_some(taints);
    Some(node)
}

/// `NodeNotReady` / `NodeReady` with Kubernetes' wording (`RecordNodeStatusChange`).
fn status_event(node: &Node, new_status: &str) -> Action {
    let name = node.metadata.name.as_deref().unwrap_or("");
    Action::normal_event(
        reference_to(node),
        new_status,
        format!("Node {name} status is now: {new_status}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NO_PODS: &[Pod] = &[];

    fn at(seconds: i64) -> Timestamp {
        let t0: Timestamp = "2024-01-01T00:00:00Z".parse().expect("time");
        t0 + jiff::SignedDuration::from_secs(seconds)
    }

    fn node(ready: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": "n1", "uid": "n1-uid", "resourceVersion": "5"},
            "spec": {"taints": [{"key": "dedicated", "value": "edge", "effect": "NoSchedule"}]},
            "status": {"conditions": [
                {"type": "Ready", "status": ready, "reason": "KubeletReady",
                 "lastHeartbeatTime": "2024-01-01T00:00:00Z"},
                {"type": "MemoryPressure", "status": "False"},
            ]},
        }))
        .expect("node")
    }

    fn heard_at(seconds: i64) -> BTreeMap<String, Timestamp> {
        [("n1".to_string(), at(seconds))].into()
    }

    fn pod(name: &str, tolerations: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
            "spec": {"nodeName": "n1", "containers": [], "tolerations": tolerations},
        }))
        .expect("pod")
    }

    /// `node` after the lifecycle controller tainted it at `seconds`.
    fn tainted_at(seconds: i64) -> Node {
        let mut n = node("Unknown");
        n.status
            .as_mut()
            .expect("status")
            .conditions
            .as_mut()
            .expect("c")[0]
            .reason = Some("NodeStatusUnknown".into());
        with_taints(&n, Some(UNREACHABLE), at(seconds)).expect("tainted")
    }

    fn written_node(actions: &[Action]) -> Option<&Node> {
        actions.iter().find_map(|a| match a {
            Action::Update(Object::Node(n)) | Action::UpdateStatus(Object::Node(n)) => Some(&**n),
            _ => None,
        })
    }

    fn evicted(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Delete { object, .. } => object.name.clone(),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn silence_timeline() {
        let config = Config::default();
        // (seconds since last heartbeat, writes the status?)
        for (silent_for, marks) in [
            (0, false),
            (19, false),
            (20, false),
            (21, true),
            (600, true),
        ] {
            let actions = reconcile(
                &[node("True")],
                &heard_at(0),
                NO_PODS,
                at(silent_for),
                &config,
            );
            assert_eq!(written_node(&actions).is_some(), marks, "{silent_for} s");
        }
        // A heartbeat 5 s ago: check again in 15 s.
        let actions = reconcile(&[node("True")], &heard_at(0), NO_PODS, at(5), &config);
        assert!(
            matches!(actions.as_slice(), [Action::RequeueAfter { after, .. }] if after.as_secs() == 15)
        );
    }

    #[test]
    fn a_silent_node_becomes_unknown_then_tainted() {
        let config = Config::default();
        let actions = reconcile(&[node("True")], &heard_at(0), NO_PODS, at(25), &config);
        let Some(Action::UpdateStatus(Object::Node(marked))) = actions.first() else {
            panic!("{actions:#?}");
        };
        let conditions = marked
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .expect("c");
        for c in &conditions {
            assert_eq!(c.status, "Unknown", "{}", c.type_);
            assert_eq!(c.reason.as_deref(), Some("NodeStatusUnknown"));
            assert_eq!(
                c.message.as_deref(),
                Some("Kubelet stopped posting node status.")
            );
            assert_eq!(c.last_transition_time, Some(Time(at(25))));
        }
        assert_eq!(conditions[0].last_heartbeat_time, Some(Time(at(0))), "kept");
        let Some(Action::Event(e)) = actions.get(1) else {
            panic!("{actions:#?}")
        };
        assert_eq!(
            (e.reason.as_str(), e.message.as_str()),
            ("NodeNotReady", "Node n1 status is now: NodeNotReady")
        );

        // Next pass: the taints, stamped with the time they were added.
        let actions = reconcile(
            &[(**marked).clone()],
            &heard_at(0),
            NO_PODS,
            at(26),
            &config,
        );
        let tainted = written_node(&actions).expect("taint update");
        let taints = tainted
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .expect("taints");
        let keys: Vec<(&str, &str)> = taints
            .iter()
            .map(|t| (t.key.as_str(), t.effect.as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                ("dedicated", "NoSchedule"),
                (UNREACHABLE, "NoSchedule"),
                (UNREACHABLE, "NoExecute")
            ]
        );
        assert_eq!(taints[2].time_added, Some(Time(at(26))));
        // And then nothing more to write for the node itself.
        let actions = reconcile(
            std::slice::from_ref(tainted),
            &heard_at(0),
            NO_PODS,
            at(27),
            &config,
        );
        assert!(written_node(&actions).is_none());
    }

    #[test]
    fn eviction_waits_for_each_pods_toleration() {
        let config = Config::default();
        let pods = [
            pod("plain", json!([])),
            pod(
                "patient",
                json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60}]),
            ),
            pod(
                "forever",
                json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}]),
            ),
            pod("everything", json!([{"operator": "Exists"}])),
            pod(
                "unrelated",
                json!([{"key": "gpu", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 999}]),
            ),
            pod(
                "shortest",
                json!([
                    {"key": UNREACHABLE, "operator": "Exists", "tolerationSeconds": 100},
                    {"key": UNREACHABLE, "operator": "Exists", "tolerationSeconds": 10},
                ]),
            ),
        ];
        // (seconds since the taint was added, pods deleted by then)
        let cases: [(i64, &[&str]); 4] = [
            (5, &[]),
            (10, &["shortest"]),
            (30, &["plain", "unrelated", "shortest"]),
            (60, &["plain", "patient", "unrelated", "shortest"]),
        ];
        for (after, want) in cases {
            let actions = reconcile(
                &[tainted_at(100)],
                &heard_at(0),
                &pods,
                at(100 + after),
                &config,
            );
            assert_eq!(evicted(&actions), want, "{after} s after the taint");
        }
        let actions = reconcile(&[tainted_at(100)], &heard_at(0), &pods, at(130), &config);
        assert!(actions.iter().any(|a| matches!(a, Action::Event(e)
            if e.reason == "TaintManagerEviction" && e.message == "Marking for deletion Pod default/plain")));
        assert!(actions
            .iter()
            .any(|a| matches!(a, Action::Delete { uid, .. } if uid == "uid-plain")));
        // The next pod to go ("patient") is 30 s away.
        assert!(actions
            .iter()
            .any(|a| matches!(a, Action::RequeueAfter { after, .. } if after.as_secs() == 30)));
    }

    #[test]
    fn returning_heartbeats_restore_ready_then_remove_the_taints() {
        let config = Config::default();
        let actions = reconcile(
            &[tainted_at(30)],
            &heard_at(200),
            &[pod("p", json!([]))],
            at(201),
            &config,
        );
        let Some(Action::UpdateStatus(Object::Node(ready))) = actions.first() else {
            panic!("{actions:#?}");
        };
        assert!(
            evicted(&actions).is_empty(),
            "a node that is back evicts nothing"
        );
        let conditions = ready
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .expect("c");
        assert_eq!(
            (
                conditions[0].status.as_str(),
                conditions[0].reason.as_deref()
            ),
            ("True", Some("KubeletReady"))
        );
        assert!(actions.iter().any(
            |a| matches!(a, Action::Event(e) if e.message == "Node n1 status is now: NodeReady")
        ));

        let actions = reconcile(
            &[(**ready).clone()],
            &heard_at(200),
            NO_PODS,
            at(202),
            &config,
        );
        let untainted = written_node(&actions).expect("taints removed");
        let taints = untainted
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .expect("taints");
        assert_eq!(taints.len(), 1, "only the user's own taint is left");
    }

    #[test]
    fn nodes_without_a_heartbeat_entry_are_left_alone() {
        let actions = reconcile(
            &[node("True")],
            &BTreeMap::new(),
            NO_PODS,
            at(1000),
            &Config::default(),
        );
        assert!(actions.is_empty());
    }

    #[test]
    fn an_agent_reporting_not_ready_gets_the_not_ready_taint() {
        let actions = reconcile(
            &[node("False")],
            &heard_at(0),
            NO_PODS,
            at(1),
            &Config::default(),
        );
        let tainted = written_node(&actions).expect("tainted");
        let keys: Vec<&str> = tainted
            .spec
            .iter()
            .flat_map(|s| s.taints.iter().flatten())
            .map(|t| t.key.as_str())
            .collect();
        assert_eq!(keys, ["dedicated", NOT_READY, NOT_READY]);
    }
}
