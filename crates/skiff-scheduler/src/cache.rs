//! The scheduler's view of the cluster, and decisions. Pure and synchronous: the loop feeds it
//! watch events and asks for decisions; it never does I/O.
//!
//! Each node keeps running totals (requested resources, host ports, pods per owner), updated
//! as pods come and go, so a decision costs one pass over the nodes, not over all pods. A batch
//! of decisions **assumes** each binding before placing the next pod (kube-scheduler's assume
//! cache): two pods that each fit a node only once go to different nodes even before either
//! binding is seen in a watch. A binding that fails is [`Scheduler::forget`]ten.
//!
//! Unschedulable pods are parked and come back only when something changes that could make
//! room (a node added or changed, a pod removed or finished) — no busy retry loop.
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use serde::{Deserialize, Serialize};

use crate::filter;
use crate::resources::{self, Resources};
use crate::score::{self, Weights};

/// What the scheduler knows about a node.
#[derive(Debug, Clone, Default)]
pub struct NodeState {
    pub name: String,
    pub ready: bool,
    pub unschedulable: bool,
    pub taints: Vec<Taint>,
    pub labels: BTreeMap<String, String>,
    pub allocatable: Resources,
    /// The sum of the requests of the pods bound here (and assumed).
    pub requested: Resources,
    pub host_ports: HashSet<(String, i32)>,
    /// Pods here per controller owner uid (for spreading).
    pub owners: HashMap<String, usize>,
}

impl NodeState {
    /// A node's static facts; pod totals start at zero.
    pub fn from_node(node: &Node) -> NodeState {
        let status = node.status.as_ref();
        let alloc = status.and_then(|s| s.allocatable.as_ref());
        let get = |key: &str| alloc.and_then(|a| a.get(key)).map(|q| q.0.clone());
        let spec = node.spec.as_ref();
        NodeState {
            name: node.metadata.name.clone().unwrap_or_default(),
            ready: status
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
            unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
            taints: spec.and_then(|s| s.taints.clone()).unwrap_or_default(),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            allocatable: Resources {
                cpu_milli: get("cpu")
                    .and_then(|q| resources::cpu_milli(&q))
                    .unwrap_or(0),
                memory: get("memory")
                    .and_then(|q| resources::bytes(&q))
                    .unwrap_or(0),
                pods: get("pods").and_then(|q| q.parse().ok()).unwrap_or(110),
            },
            ..NodeState::default()
        }
    }

    fn add(&mut self, facts: &PodFacts) {
        self.requested.add(&facts.requests);
        for port in &facts.host_ports {
            self.host_ports.insert(port.clone());
        }
        if let Some(owner) = &facts.owner {
            *self.owners.entry(owner.clone()).or_default() += 1;
        }
    }

    fn remove(&mut self, facts: &PodFacts) {
        self.requested.sub(&facts.requests);
        for port in &facts.host_ports {
            self.host_ports.remove(port);
        }
        if let Some(owner) = &facts.owner {
            if let Some(n) = self.owners.get_mut(owner) {
                *n = n.saturating_sub(1);
            }
        }
    }
}

/// What the scheduler needs from a pod, computed once.
#[derive(Debug, Clone, Default)]
pub struct PodFacts {
    pub requests: Resources,
    pub host_ports: Vec<(String, i32)>,
    /// The controller owner's uid.
    pub owner: Option<String>,
    pub tolerations: Vec<Toleration>,
}

impl PodFacts {
    pub fn of(pod: &Pod) -> PodFacts {
        let spec = pod.spec.as_ref();
        PodFacts {
            requests: resources::pod_requests(pod),
            host_ports: spec
                .iter()
                .flat_map(|s| s.containers.iter())
                .flat_map(|c| c.ports.iter().flatten())
                .filter_map(|p| {
                    p.host_port
                        .filter(|h| *h > 0)
                        .map(|h| (p.protocol.clone().unwrap_or_else(|| "TCP".into()), h))
                })
                .collect(),
            owner: pod
                .metadata
                .owner_references
                .iter()
                .flatten()
                .find(|r| r.controller == Some(true))
                .map(|r| r.uid.clone()),
            tolerations: spec.and_then(|s| s.tolerations.clone()).unwrap_or_default(),
        }
    }
}

/// One node's part in a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeVerdict {
    pub node: String,
    /// Why the node cannot take the pod (empty: it can).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filtered: Vec<String>,
    #[serde(default)]
    pub bin_packing: i64,
    #[serde(default)]
    pub spreading: i64,
    #[serde(default)]
    pub total: i64,
}

/// Where a pod goes, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    /// `namespace/name`.
    pub pod: String,
    /// The chosen node, or None when no node fits.
    pub node: Option<String>,
    /// The unschedulable message (`0/3 nodes are available: ...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub weights: Weights,
    /// Every node's verdict, best first.
    pub verdicts: Vec<NodeVerdict>,
}

impl Decision {
    /// The decision as a table a person reads (`skiff explain pod`).
    pub fn render(&self) -> String {
        let mut out = format!(
            "pod {}: {}\nweights: bin-packing {}, spreading {}\n\n{:<24} {:>11} {:>9} {:>6}  FILTERED BECAUSE\n",
            self.pod,
            match (&self.node, &self.message) {
                (Some(n), _) => format!("scheduled to {n}"),
                (None, Some(m)) => format!("unschedulable: {m}"),
                (None, None) => "pending".into(),
            },
            self.weights.bin_packing,
            self.weights.spreading,
            "NODE",
            "BIN-PACKING",
            "SPREADING",
            "TOTAL"
        );
        for v in &self.verdicts {
            if v.filtered.is_empty() {
                out.push_str(&format!(
                    "{:<24} {:>11} {:>9} {:>6}\n",
                    v.node, v.bin_packing, v.spreading, v.total
                ));
            } else {
                out.push_str(&format!(
                    "{:<24} {:>11} {:>9} {:>6}  {}\n",
                    v.node,
                    "-",
                    "-",
                    "-",
                    v.filtered.join("; ")
                ));
            }
        }
        out
    }
}

/// Whether this scheduler places `pod` at all.
fn ours(pod: &Pod) -> bool {
    let name = pod.spec.as_ref().and_then(|s| s.scheduler_name.as_deref());
    matches!(
        name,
        None | Some("") | Some("default-scheduler") | Some("skiff")
    )
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

fn key_of(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

/// The scheduler's state.
#[derive(Debug, Default)]
pub struct Scheduler {
    pub weights: Weights,
    nodes: BTreeMap<String, NodeState>,
    /// Pods counted on a node (bound or assumed): key → (node, facts).
    placed: HashMap<String, (String, PodFacts)>,
    /// Pods waiting for a decision, by key, in arrival order.
    pending: BTreeMap<String, (u64, Pod)>,
    /// Unschedulable pods, waiting for the cluster to change.
    parked: BTreeMap<String, Pod>,
    arrivals: u64,
}

impl Scheduler {
    pub fn new(weights: Weights) -> Scheduler {
        Scheduler {
            weights,
            ..Scheduler::default()
        }
    }

    /// Something that may make room happened: parked pods get another chance.
    fn unpark(&mut self) {
        for (key, pod) in std::mem::take(&mut self.parked) {
            self.arrivals += 1;
            self.pending.insert(key, (self.arrivals, pod));
        }
    }

    pub fn upsert_node(&mut self, node: &Node) {
        let fresh = NodeState::from_node(node);
        match self.nodes.get_mut(&fresh.name) {
            Some(existing) => {
                let (requested, ports, owners) = (
                    existing.requested,
                    std::mem::take(&mut existing.host_ports),
                    std::mem::take(&mut existing.owners),
                );
                *existing = NodeState {
                    requested,
                    host_ports: ports,
                    owners,
                    ..fresh
                };
            }
            None => {
                let name = fresh.name.clone();
                self.nodes.insert(name.clone(), fresh);
                // Pods already counted against this node (seen before the node) are added.
                let placed: Vec<PodFacts> = self
                    .placed
                    .values()
                    .filter(|(n, _)| *n == name)
                    .map(|(_, f)| f.clone())
                    .collect();
                if let Some(state) = self.nodes.get_mut(&name) {
                    for facts in &placed {
                        state.add(facts);
                    }
                }
            }
        }
        self.unpark();
    }

    pub fn remove_node(&mut self, name: &str) {
        self.nodes.remove(name);
        self.unpark();
    }

    /// A pod was added or changed.
    pub fn upsert_pod(&mut self, pod: &Pod) {
        let key = key_of(pod);
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty());
        let gone = pod.metadata.deletion_timestamp.is_some() || is_terminal(pod);
        match node {
            Some(node) if !gone => {
                self.pending.remove(&key);
                self.parked.remove(&key);
                if self.placed.get(&key).map(|(n, _)| n) != Some(&node) {
                    self.unplace(&key);
                    let facts = PodFacts::of(pod);
                    if let Some(state) = self.nodes.get_mut(&node) {
                        state.add(&facts);
                    }
                    self.placed.insert(key, (node, facts));
                }
            }
            Some(_) => {
                // Finished or being deleted: its resources are free again.
                if self.unplace(&key) {
                    self.unpark();
                }
            }
            None if gone || !ours(pod) => {
                self.pending.remove(&key);
                self.parked.remove(&key);
            }
            None => {
                if self.placed.contains_key(&key) {
                    // Assumed; the binding has not been seen yet.
                    return;
                }
                if let Some(parked) = self.parked.get_mut(&key) {
                    *parked = pod.clone();
                } else if let Some((_, waiting)) = self.pending.get_mut(&key) {
                    *waiting = pod.clone();
                } else {
                    self.arrivals += 1;
                    self.pending.insert(key, (self.arrivals, pod.clone()));
                }
            }
        }
    }

    /// A pod was deleted.
    pub fn remove_pod(&mut self, pod: &Pod) {
        let key = key_of(pod);
        self.pending.remove(&key);
        self.parked.remove(&key);
        if self.unplace(&key) {
            self.unpark();
        }
    }

    fn unplace(&mut self, key: &str) -> bool {
        match self.placed.remove(key) {
            Some((node, facts)) => {
                if let Some(state) = self.nodes.get_mut(&node) {
                    state.remove(&facts);
                }
                true
            }
            None => false,
        }
    }

    /// A binding failed: the assumed placement is undone and the pod waits again.
    pub fn forget(&mut self, pod: &Pod) {
        let key = key_of(pod);
        self.unplace(&key);
        self.arrivals += 1;
        self.pending.insert(key, (self.arrivals, pod.clone()));
    }

    pub fn has_work(&self) -> bool {
        !self.pending.is_empty()
    }

    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// Decides up to `max` pending pods, oldest first, assuming each binding.
    pub fn schedule_pending(&mut self, max: usize) -> Vec<(Pod, Decision)> {
        let mut order: Vec<(u64, String)> = self
            .pending
            .iter()
            .map(|(k, (n, _))| (*n, k.clone()))
            .collect();
        order.sort();
        order.truncate(max);
        let mut out = Vec::with_capacity(order.len());
        for (_, key) in order {
            let Some((_, pod)) = self.pending.remove(&key) else {
                continue;
            };
            let facts = PodFacts::of(&pod);
            let decision = self.decide(&key, &pod, &facts);
            match &decision.node {
                Some(node) => {
                    if let Some(state) = self.nodes.get_mut(node) {
                        state.add(&facts);
                    }
                    self.placed.insert(key, (node.clone(), facts));
                }
                None => {
                    self.parked.insert(key, pod.clone());
                }
            }
            out.push((pod, decision));
        }
        out
    }

    /// Filter, score, choose (ties: the first node by name).
    fn decide(&self, key: &str, pod: &Pod, facts: &PodFacts) -> Decision {
        let mut verdicts = Vec::with_capacity(self.nodes.len());
        let mut feasible: Vec<&NodeState> = Vec::new();
        let mut reasons = Vec::new();
        for node in self.nodes.values() {
            let why = filter::check(pod, facts, node);
            if why.is_empty() {
                feasible.push(node);
            } else {
                reasons.push(why.clone());
                verdicts.push(NodeVerdict {
                    node: node.name.clone(),
                    filtered: why,
                    bin_packing: 0,
                    spreading: 0,
                    total: 0,
                });
            }
        }
        let max_same_owner = facts
            .owner
            .as_ref()
            .map(|o| {
                feasible
                    .iter()
                    .map(|n| n.owners.get(o).copied().unwrap_or(0))
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        let mut scored: Vec<NodeVerdict> = feasible
            .iter()
            .map(|node| {
                let bin_packing = score::bin_packing(facts, node);
                let spreading = score::spreading(facts, node, max_same_owner);
                NodeVerdict {
                    node: node.name.clone(),
                    filtered: Vec::new(),
                    bin_packing,
                    spreading,
                    total: self.weights.bin_packing * bin_packing
                        + self.weights.spreading * spreading,
                }
            })
            .collect();
        // Best first; equal totals keep name order (the stable sort keeps it from the map).
        scored.sort_by_key(|v| std::cmp::Reverse(v.total));
        let node = scored.first().map(|v| v.node.clone());
        let message = node
            .is_none()
            .then(|| filter::unschedulable_message(self.nodes.len(), &reasons));
        scored.extend(verdicts);
        Decision {
            pod: key.to_string(),
            node,
            message,
            weights: self.weights,
            verdicts: scored,
        }
    }
}

/// Parked (unschedulable) pods, for tests and metrics.
impl Scheduler {
    pub fn parked(&self) -> BTreeSet<String> {
        self.parked.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, cpu: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "status": {"allocatable": {"cpu": cpu, "memory": "4Gi", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .expect("node")
    }

    fn pod(name: &str, cpu: &str, owner: Option<&str>) -> Pod {
        let mut p = json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}
        });
        if let Some(owner) = owner {
            p["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": owner, "controller": true}]);
        }
        serde_json::from_value(p).expect("pod")
    }

    #[test]
    fn a_batch_assumes_each_binding() {
        let mut s = Scheduler::new(Weights::default());
        s.upsert_node(&node("a", "1"));
        s.upsert_node(&node("b", "1"));
        s.upsert_pod(&pod("p1", "800m", None));
        s.upsert_pod(&pod("p2", "800m", None));
        let decisions = s.schedule_pending(10);
        let nodes: Vec<_> = decisions.iter().map(|(_, d)| d.node.clone()).collect();
        assert_eq!(nodes, [Some("a".to_string()), Some("b".to_string())]);
        // A third does not fit anywhere: parked with Kubernetes' message.
        s.upsert_pod(&pod("p3", "800m", None));
        let d = s.schedule_pending(10);
        assert_eq!(d[0].1.node, None);
        assert_eq!(
            d[0].1.message.as_deref(),
            Some("0/2 nodes are available: 2 Insufficient cpu.")
        );
        assert!(!s.has_work(), "parked, not retried in a loop");
        // Freeing room (p1 deleted) brings it back, and it fits.
        s.remove_pod(&pod("p1", "800m", None));
        assert!(s.has_work());
        assert_eq!(s.schedule_pending(10)[0].1.node.as_deref(), Some("a"));
    }

    #[test]
    fn replicas_spread_and_singles_pack() {
        let mut s = Scheduler::new(Weights::default());
        for n in ["a", "b", "c"] {
            s.upsert_node(&node(n, "4"));
        }
        for i in 0..3 {
            s.upsert_pod(&pod(&format!("r{i}"), "100m", Some("rs1")));
        }
        let mut nodes: Vec<_> = s
            .schedule_pending(10)
            .into_iter()
            .filter_map(|(_, d)| d.node)
            .collect();
        nodes.sort();
        assert_eq!(nodes, ["a", "b", "c"], "one replica per node");
        // Without an owner, bin-packing alone: the fullest node that fits.
        let mut s = Scheduler::new(Weights::default());
        s.upsert_node(&node("a", "4"));
        s.upsert_node(&node("b", "4"));
        s.upsert_pod(&pod("big", "2", None));
        s.upsert_pod(&pod("small", "500m", None));
        let d = s.schedule_pending(10);
        assert_eq!(d[0].1.node, d[1].1.node, "packed onto the same node");
    }

    #[test]
    fn failed_bindings_are_forgotten() {
        let mut s = Scheduler::new(Weights::default());
        s.upsert_node(&node("a", "1"));
        let p = pod("p", "800m", None);
        s.upsert_pod(&p);
        assert_eq!(s.schedule_pending(1)[0].1.node.as_deref(), Some("a"));
        s.forget(&p);
        assert_eq!(
            s.schedule_pending(1)[0].1.node.as_deref(),
            Some("a"),
            "room was given back"
        );
        let text = s.schedule_pending(1);
        assert!(text.is_empty());
    }
}
