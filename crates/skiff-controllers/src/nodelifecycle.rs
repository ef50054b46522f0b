//! Node lifecycle: what happens when a node goes silent, and when it comes back.
//!
//! Agents send a heartbeat every 2 s to the leader, which keeps the times in memory only
//! (writing them would wear edge devices' flash; see the API server's `nodes` module). This
//! controller turns those times into the few writes that matter:
//!
//! Expected flow for a node that goes silent (defaults in [`Config`]):
//! 1. no heartbeat for 12 s → its conditions become `Unknown` (`NodeStatusUnknown`, "Kubelet
//!    stopped posting node status.") and a `NodeNotReady` event is recorded;
//! 2. next pass → taints `node.kubernetes.io/unreachable:NoExecute` (with `timeAdded`) and
//!    `:NoSchedule` (so nothing new is scheduled there);
//! 3. each pod on it is deleted once it has tolerated the taint long enough: its own
//!    `tolerationSeconds` for that taint, or 8 s if it has no such toleration (skiff's
//!    stand-in for Kubernetes' DefaultTolerationSeconds admission, which adds 300 s);
//!    a toleration without seconds tolerates forever (DaemonSet pods).
//!
//! So a dead node's pods are deleted about 21 s after its last heartbeat (12 s + one pass +
//! 8 s), and their replacements run elsewhere a few seconds later. A link that drops for less
//! than 12 s changes nothing; one that drops for up to ~20 s makes the node NotReady for a
//! while but evicts nothing. docs/benchmarks.md has the measured figures and the reasoning.
//!
//! When heartbeats return, `Ready` becomes `True` again (`NodeReady` event) and, on the next
//! pass, the taints go. A node whose agent itself reports `Ready=False` gets the
//! `node.kubernetes.io/not-ready` taints instead, with the same eviction rule.
//!
//! Each node is written at most once per pass: status first, taints on a later pass (they
//! live in different parts of the object, written through different endpoints).
//!
//! **Leader changes.** The heartbeat table lives in the leader's memory, so a new leader
//! starts with an empty one; its start time is the table's entry [`TAKEOVER`]. A node the
//! new leader has not heard from yet gets a grace period from that moment (or from the node's
//! creation, if later) **only if its stored `Ready` is `True`** (or it has no `Ready` yet): a
//! healthy node must not look dead because the leader changed. A node that is already
//! `Unknown` or `False` stays so — with its taints and its eviction clock — until a real
//! heartbeat arrives: the old leader had good reason to think it gone, and the new one knows
//! nothing better. (Granting the grace to every node made a dead node `Ready` again at each
//! leader change, dropped its taints and restarted its pods' eviction clock.)
//!
//! A node missing from the table when there is no [`TAKEOVER`] entry is left alone.
use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use skiff_client::informer::Store;

use crate::controller::{Context, Controller, Heartbeats};
use crate::workqueue::WorkQueue;
use crate::{reference_to, seconds_between, wait_for, Action, Object};

/// The taint of a node whose agent went silent.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The taint of a node whose agent reports `Ready=False`.
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
/// The key of the heartbeat table's entry that says when this leader's table started (no node
/// has an empty name).
pub const TAKEOVER: &str = "";

/// Timings of the node lifecycle controller. Kubernetes' are in the comments; skiff's are
/// shorter because its nodes are edge machines that fail often and whose pods should move in
/// seconds, not minutes (the reasoning is in docs/benchmarks.md, "Node loss").
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// Silence after which a node is `Ready=Unknown`: kube-controller-manager's
    /// `--node-monitor-grace-period` (Kubernetes: 50 s since 1.32, 40 s before; skiff: 12 s,
    /// six of the agent's 2 s heartbeats and more than the 10 s its HTTP/2 pings take to find
    /// a dead connection).
    pub not_ready_after: Duration,
    /// How long pods without a toleration for the `unreachable` taint stay on a silent node:
    /// kube-apiserver's `--default-unreachable-toleration-seconds` (Kubernetes: 300 s; skiff:
    /// 8 s).
    pub unreachable_toleration: Duration,
    /// The same for the `not-ready` taint: `--default-not-ready-toleration-seconds`.
    pub not_ready_toleration: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            not_ready_after: Duration::from_secs(12),
            unreachable_toleration: Duration::from_secs(8),
            not_ready_toleration: Duration::from_secs(8),
        }
    }
}

impl Config {
    /// The defaults with whichever of the three settings were given (the server's flags).
    pub fn with(
        not_ready_after: Option<Duration>,
        unreachable_toleration_seconds: Option<u64>,
        not_ready_toleration_seconds: Option<u64>,
    ) -> Config {
        let defaults = Config::default();
        Config {
            not_ready_after: not_ready_after.unwrap_or(defaults.not_ready_after),
            unreachable_toleration: unreachable_toleration_seconds
                .map(Duration::from_secs)
                .unwrap_or(defaults.unreachable_toleration),
            not_ready_toleration: not_ready_toleration_seconds
                .map(Duration::from_secs)
                .unwrap_or(defaults.not_ready_toleration),
        }
    }
}

/// Parses a duration as Kubernetes' flags write them (Go's `time.ParseDuration`): numbers
/// with units, `12s`, `500ms`, `1m30s`, `1h`; a bare `0` is zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let bad = || format!("{text:?} is not a duration (examples: 12s, 500ms, 1m30s)");
    if text.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (number, tail) = rest.split_at(number_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let value: f64 = number.parse().map_err(|_| bad())?;
        let seconds = match unit {
            "ms" => value / 1000.0,
            "s" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            _ => return Err(bad()),
        };
        total += Duration::try_from_secs_f64(seconds).map_err(|_| bad())?;
        rest = tail;
    }
    Ok(total)
}

/// Plans one pass over all nodes. `last_heartbeat` maps node names to when each was last
/// heard from, and [`TAKEOVER`] to when this leader's table started (see the module's
/// "Leader changes"); `pods` are all pods (only those bound to tainted nodes are read).
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
        let ready = ready_status(node);
        let heard = match (last_heartbeat.get(&name), last_heartbeat.get(TAKEOVER)) {
            (Some(at), _) => Some(*at),
            // Not heard from since this leader took over: the takeover grace, for nodes the
            // old leader had Ready (or that never had a Ready condition) only.
            (None, Some(start)) if matches!(ready.as_deref(), None | Some("True")) => {
                let created = node.metadata.creation_timestamp.as_ref().map(|t| t.0);
                Some(created.map_or(*start, |c| c.max(*start)))
            }
            // Already NotReady: it stays so until a real heartbeat arrives.
            (None, Some(_)) => None,
            (None, None) => continue,
        };
        let limit = config.not_ready_after.as_secs_f64();

        // 1. Conditions follow the heartbeats.
        if let Some(silence) = heard.map(|at| seconds_between(at, now)) {
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
        let default = if taint.key == NOT_READY {
            config.not_ready_toleration
        } else {
            config.unreachable_toleration
        };
        return Some(default.as_secs_f64());
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

/// The node lifecycle controller in the loop's shape: a sweep over every node once a second
/// (heartbeats arrive without any write, so no watch event would wake it). Its own
/// "check again at" requests are covered by the sweep.
pub struct NodeLifecycleController {
    nodes: Store<Node>,
    pods: Store<Pod>,
    heartbeats: Heartbeats,
    config: Config,
}

impl Controller for NodeLifecycleController {
    const NAME: &'static str = "node-controller";
    const EVERY: Option<Duration> = Some(Duration::from_secs(1));

    fn new(ctx: &Context, _queue: &WorkQueue) -> Self {
        NodeLifecycleController {
            nodes: ctx.informers.store::<Node>(),
            pods: ctx.informers.store::<Pod>(),
            heartbeats: ctx.config.heartbeats.clone(),
            config: ctx.config.node_lifecycle,
        }
    }

    fn reconcile(&mut self, _key: &str, now: Timestamp) -> Vec<Action> {
        // Borrowed from the stores, not cloned: at 1,000 nodes and 10,000 pods a clone of
        // everything every second was most of the leader's CPU.
        let (nodes, pods) = (self.nodes.read(), self.pods.read());
        let all_nodes: Vec<&Node> = nodes.values().collect();
        let all_pods: Vec<&Pod> = pods.values().collect();
        // The table as it is, with its start (`TAKEOVER`): which nodes not heard from since
        // then get a grace period is the controller's decision (only those it finds Ready).
        let heartbeats = (self.heartbeats)();
        let mut plan = reconcile(&all_nodes, &heartbeats, &all_pods, now, &self.config);
        plan.retain(|a| !matches!(a, Action::RequeueAfter { .. }));
        plan
    }
}

#[cfg(test)]
mod tests;
