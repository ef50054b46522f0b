//! What the scheduler keeps per node: the node's facts, read once per Node update, and running
//! totals of what the pods on it take, updated as pods come and go.
//!
//! Keeping totals is what makes a decision cheap: checking a node costs a few integer
//! comparisons, not a pass over every pod bound to it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Taint};

use crate::resources::{HostPort, PodDemand, Resources};

/// The facts of a Node that scheduling reads, copied out of the Node object once per update so
/// the Node itself need not be kept.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeInfo {
    /// Shared with every explain record that mentions the node.
    pub name: Arc<str>,
    /// The `Ready` condition is `True`.
    pub ready: bool,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
    /// Only the taints that keep pods off (`NoSchedule`, `NoExecute`); `PreferNoSchedule` only
    /// matters to a scorer skiff does not have.
    pub taints: Vec<Taint>,
    pub labels: BTreeMap<String, String>,
    /// The fields `matchFields` may name: only `metadata.name`.
    pub fields: BTreeMap<String, String>,
    /// `status.allocatable`: what pods may take in total.
    pub allocatable: Resources,
}

impl NodeInfo {
    pub fn of(node: &Node) -> NodeInfo {
        let name = node.metadata.name.clone().unwrap_or_default();
        let status = node.status.as_ref();
        let spec = node.spec.as_ref();
        NodeInfo {
            name: Arc::from(name.as_str()),
            ready: status
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
            unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
            taints: spec
                .and_then(|s| s.taints.as_ref())
                .into_iter()
                .flatten()
                .filter(|t| t.effect != "PreferNoSchedule")
                .cloned()
                .collect(),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            fields: BTreeMap::from([("metadata.name".to_string(), name)]),
            allocatable: Resources::from_list(status.and_then(|s| s.allocatable.as_ref())),
        }
    }
}

/// What the pods counted on a node (bound, or assumed by a decision) take, kept as running
/// totals. Lives as long as the node or any pod counted on it, whichever is longer: pods may be
/// seen bound to a node before the Node itself arrives.
#[derive(Debug, Clone, Default)]
pub struct NodeUsage {
    /// The sum of the pods' requests (`pods` = how many pods).
    pub requested: Resources,
    /// The sum of the pods' scoring requests (with the defaults for unrequested resources).
    pub scoring: Resources,
    /// The host ports in use, with how many pods use each (normally one).
    pub host_ports: HashMap<HostPort, u32>,
}

impl NodeUsage {
    pub fn add(&mut self, demand: &PodDemand) {
        self.requested += demand.requests;
        self.scoring += demand.scoring;
        for port in &demand.host_ports {
            *self.host_ports.entry(port.clone()).or_default() += 1;
        }
    }

    pub fn remove(&mut self, demand: &PodDemand) {
        self.requested -= demand.requests;
        self.scoring -= demand.scoring;
        for port in &demand.host_ports {
            if let Some(count) = self.host_ports.get_mut(port) {
                *count -= 1;
                if *count == 0 {
                    self.host_ports.remove(port);
                }
            }
        }
    }

    /// No pod is counted here any more.
    pub fn is_empty(&self) -> bool {
        self.requested.pods == 0 && self.host_ports.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{container, node, pod};

    #[test]
    fn node_facts_are_read_once() {
        let info = NodeInfo::of(
            &node("n1")
                .cpu("2")
                .memory("4Gi")
                .pods(110)
                .label("disk", "ssd")
                .taint("a", "1", "NoSchedule")
                .taint("b", "", "PreferNoSchedule")
                .cordoned()
                .build(),
        );
        assert_eq!(&*info.name, "n1");
        assert!(info.ready && info.unschedulable);
        assert_eq!(
            info.allocatable,
            Resources {
                cpu_millis: 2000,
                memory_bytes: 4 << 30,
                pods: 110
            }
        );
        assert_eq!(info.taints.len(), 1, "PreferNoSchedule is left out");
        assert_eq!(info.fields["metadata.name"], "n1");
        assert!(!NodeInfo::of(&node("n2").not_ready().build()).ready);
    }

    #[test]
    fn usage_adds_and_removes_pods() {
        let p = pod("p")
            .container(container("c").cpu("500m").host_port(80))
            .build();
        let demand = PodDemand::of(p.spec.as_ref().expect("builder sets a spec"));
        let mut usage = NodeUsage::default();
        usage.add(&demand);
        usage.add(&demand);
        assert_eq!(usage.requested.cpu_millis, 1000);
        assert_eq!(usage.requested.pods, 2);
        usage.remove(&demand);
        assert_eq!(
            usage.host_ports.len(),
            1,
            "the other pod still holds port 80"
        );
        usage.remove(&demand);
        assert!(usage.is_empty());
    }
}
