//! Node IPAM: gives every Node a pod CIDR (`spec.podCIDR`) from the cluster CIDR.
//!
//! Each node's agent hands out pod IPs from its own range (CNI host-local), so ranges must never
//! overlap. Deciding them in one place — this controller, on the Raft leader only — makes that
//! simple: [`assign`] picks the lowest free /24 of `10.42.0.0/16` (k3s' default cluster CIDR),
//! and the write is a compare-and-swap on the Node, so a concurrent change just retries.
use std::borrow::Borrow;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use skiff_client::informer::Store;

use crate::controller::{Context, Controller, EVERYTHING};
use crate::expectations::Expected;
use crate::workqueue::WorkQueue;
use crate::{reference_to, Action, Object};

/// A cluster CIDR split into equal node ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterCidr {
    pub base: Ipv4Addr,
    pub prefix: u8,
    /// The size of each node's range (24: 254 pods per node).
    pub node_prefix: u8,
}

impl ClusterCidr {
    /// Parses `10.42.0.0/16`; node ranges are /24.
    pub fn parse(cidr: &str) -> Result<ClusterCidr, String> {
        let (ip, prefix) = cidr
            .split_once('/')
            .ok_or_else(|| format!("cluster CIDR {cidr:?}: expected ADDRESS/PREFIX"))?;
        let base: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("cluster CIDR {cidr:?}: {ip:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 24)
            .ok_or_else(|| format!("cluster CIDR {cidr:?}: the prefix must be 0–24"))?;
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        Ok(ClusterCidr {
            base: Ipv4Addr::from(u32::from(base) & mask),
            prefix,
            node_prefix: 24,
        })
    }

    /// How many node ranges fit.
    pub fn capacity(&self) -> u32 {
        1 << (self.node_prefix - self.prefix)
    }

    /// The `i`th node range as text.
    pub fn range(&self, i: u32) -> String {
        let start = u32::from(self.base) + (i << (32 - self.node_prefix));
        format!("{}/{}", Ipv4Addr::from(start), self.node_prefix)
    }
}

/// The pod CIDR for the next node that needs one: the lowest range no node holds. `None`
/// when the cluster CIDR is exhausted.
pub fn assign<N: Borrow<Node>>(cidr: &ClusterCidr, nodes: &[N]) -> Option<String> {
    next_free(cidr, &taken(nodes))
}

/// The ranges the nodes hold.
fn taken<N: Borrow<Node>>(nodes: &[N]) -> BTreeSet<String> {
    nodes
        .iter()
        .filter_map(|n| n.borrow().spec.as_ref()?.pod_cidr.clone())
        .collect()
}

/// The lowest range not in `taken`.
fn next_free(cidr: &ClusterCidr, taken: &BTreeSet<String>) -> Option<String> {
    (0..cidr.capacity())
        .map(|i| cidr.range(i))
        .find(|r| !taken.contains(r))
}

fn lacks_cidr(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.pod_cidr.as_ref())
        .is_none_or(|c| c.is_empty())
}

/// Nodes without a pod CIDR, in name order (so assignment is deterministic).
pub fn needing_cidr<N: Borrow<Node>>(nodes: &[N]) -> Vec<String> {
    let mut names: Vec<String> = nodes
        .iter()
        .map(Borrow::borrow)
        .filter(|n: &&Node| lacks_cidr(n))
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    names.sort();
    names
}

/// Plans a pod CIDR for every node without one, in name order, each a different range
/// (pure). A node left without one because the cluster CIDR is exhausted gets a warning event.
pub fn reconcile<N: Borrow<Node>>(cidr: &ClusterCidr, nodes: &[N]) -> Vec<Action> {
    let mut taken = taken(nodes);
    let mut plan = Vec::new();
    let mut needing: Vec<&Node> = nodes
        .iter()
        .map(Borrow::borrow)
        .filter(|n: &&Node| lacks_cidr(n))
        .collect();
    needing.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for node in needing {
        let Some(range) = next_free(cidr, &taken) else {
            plan.push(Action::warning_event(
                reference_to(node),
                "CIDRNotAvailable",
                format!(
                    "Node {} status is now: CIDRNotAvailable",
                    node.metadata.name.as_deref().unwrap_or("")
                ),
            ));
            break;
        };
        // The node as it was read, so the update is a compare-and-swap: a node changed
        // meanwhile is planned again from its new state.
        let mut node = node.clone();
        let spec = node.spec.get_or_insert_with(Default::default);
        spec.pod_cidr = Some(range.clone());
        spec.pod_cidrs = Some(vec![range.clone()]);
        taken.insert(range);
        plan.push(Action::Update(Object::Node(Box::new(node))));
    }
    plan
}

/// Node IPAM in the loop's shape: one key for all nodes (a range is chosen knowing every
/// other node's), woken by any Node change. It waits for its assignments to show in the node
/// store before it plans again, so a range it just gave is never given twice.
pub struct NodeIpamController {
    nodes: Store<Node>,
    cidr: ClusterCidr,
}

impl Controller for NodeIpamController {
    const NAME: &'static str = "node-ipam-controller";

    fn new(ctx: &Context, queue: &WorkQueue) -> Self {
        let nodes = ctx.informers.store::<Node>();
        let q = queue.clone();
        nodes.on_change(move |_: &Node| q.add(EVERYTHING));
        NodeIpamController {
            nodes,
            cidr: ctx.config.cluster_cidr,
        }
    }

    fn reconcile(&mut self, _key: &str, _now: Timestamp) -> Vec<Action> {
        // Borrowed, not cloned: cloning every node for every node that needed a range was
        // quadratic when 1,000 nodes registered.
        let nodes = self.nodes.read();
        let all: Vec<&Node> = nodes.values().collect();
        reconcile(&self.cidr, &all)
    }

    fn expectations(&self, plan: &[Action]) -> Vec<Expected> {
        Expected::of_plan(plan, |a| matches!(a, Action::Update(_)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, cidr: Option<&str>) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"podCIDR": cidr}}))
            .expect("node")
    }

    #[test]
    fn lowest_free_range_first() {
        let c = ClusterCidr::parse("10.42.0.0/16").expect("cidr");
        assert_eq!(c.capacity(), 256);
        assert_eq!(assign::<Node>(&c, &[]).as_deref(), Some("10.42.0.0/24"));
        let nodes = [
            node("a", Some("10.42.0.0/24")),
            node("b", Some("10.42.2.0/24")),
            node("c", None),
        ];
        assert_eq!(assign(&c, &nodes).as_deref(), Some("10.42.1.0/24"));
        assert_eq!(needing_cidr(&nodes), ["c"]);
    }

    #[test]
    fn exhaustion_and_bad_input() {
        let c = ClusterCidr::parse("10.9.8.7/24").expect("cidr");
        assert_eq!(c.range(0), "10.9.8.0/24");
        assert_eq!(assign(&c, &[node("a", Some("10.9.8.0/24"))]), None);
        assert!(ClusterCidr::parse("10.42.0.0").is_err());
        assert!(ClusterCidr::parse("10.42.0.0/28").is_err());
        assert!(ClusterCidr::parse("x/16").is_err());
    }

    /// The ranges a plan gives, by node, and its warnings.
    fn given(plan: &[Action]) -> Vec<String> {
        plan.iter()
            .map(|a| match a {
                Action::Update(Object::Node(n)) => format!(
                    "{} {}",
                    n.metadata.name.as_deref().unwrap_or(""),
                    n.spec
                        .as_ref()
                        .and_then(|s| s.pod_cidr.as_deref())
                        .unwrap_or("")
                ),
                Action::Event(e) => format!("{} {}", e.reason, e.message),
                other => panic!("unexpected {other}"),
            })
            .collect()
    }

    #[test]
    fn every_node_without_a_range_gets_a_different_one() {
        let c = ClusterCidr::parse("10.42.0.0/23").expect("cidr");
        // (nodes, what the plan gives)
        let table: [(Vec<Node>, Vec<&str>); 4] = [
            (vec![], vec![]),
            (
                vec![node("b", None), node("a", None)],
                vec!["a 10.42.0.0/24", "b 10.42.1.0/24"],
            ),
            (
                vec![node("a", Some("10.42.0.0/24")), node("b", None)],
                vec!["b 10.42.1.0/24"],
            ),
            (
                vec![
                    node("a", Some("10.42.1.0/24")),
                    node("b", None),
                    node("c", None),
                ],
                vec![
                    "b 10.42.0.0/24",
                    "CIDRNotAvailable Node c status is now: CIDRNotAvailable",
                ],
            ),
        ];
        for (nodes, want) in table {
            assert_eq!(given(&reconcile(&c, &nodes)), want);
        }
    }
}
