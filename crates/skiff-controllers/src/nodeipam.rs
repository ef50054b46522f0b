//! Node IPAM: gives every Node a pod CIDR (`spec.podCIDR`) from the cluster CIDR.
//!
//! Each node's agent hands out pod IPs from its own range (CNI host-local), so ranges must never
//! overlap. Deciding them in one place — this controller, on the Raft leader only — makes that
//! simple: [`assign`] picks the lowest free /24 of `10.42.0.0/16` (k3s' default cluster CIDR),
//! and the write is a compare-and-swap on the Node, so a concurrent change just retries.
use std::borrow::Borrow;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Node;

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

/// Nodes without a pod CIDR, in name order (so assignment is deterministic).
pub fn needing_cidr<N: Borrow<Node>>(nodes: &[N]) -> Vec<String> {
    let mut names: Vec<String> = nodes
        .iter()
        .map(Borrow::borrow)
        .filter(|n: &&Node| {
            n.spec
                .as_ref()
                .and_then(|s| s.pod_cidr.as_ref())
                .is_none_or(|c| c.is_empty())
        })
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    names.sort();
    names
}

/// The loop: watch Nodes, give each one without a pod CIDR the next free range. Runs on the
/// leader until `stop` turns true.
pub async fn run(
    client: skiff_client::Client,
    cidr: ClusterCidr,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use skiff_client::watcher::{self, Event};
    use std::collections::BTreeMap;
    let mut events = watcher::spawn::<Node>(client.clone(), None, Default::default());
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    loop {
        let event = tokio::select! {
            e = events.recv() => match e { Some(e) => e, None => return },
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
        };
        match event {
            Event::Applied(n) => {
                nodes.insert(n.metadata.name.clone().unwrap_or_default(), n);
            }
            Event::Deleted(n) => {
                nodes.remove(n.metadata.name.as_deref().unwrap_or_default());
            }
            Event::Restarted(list) => {
                nodes = list
                    .into_iter()
                    .map(|n| (n.metadata.name.clone().unwrap_or_default(), n))
                    .collect();
            }
        }
        // Borrowed, not cloned, and the taken ranges computed once per event: cloning every
        // node for every node that needed a range was quadratic when 1,000 nodes registered.
        let (needing, mut taken) = {
            let all: Vec<&Node> = nodes.values().collect();
            (needing_cidr(&all), taken(&all))
        };
        for name in needing {
            let Some(range) = next_free(&cidr, &taken) else {
                tracing::error!(node = %name, "the cluster CIDR has no free node range left");
                break;
            };
            let version = nodes[&name].metadata.resource_version.clone();
            // The resourceVersion makes the patch a compare-and-swap.
            let patch = serde_json::json!({
                "metadata": {"resourceVersion": version},
                "spec": {"podCIDR": range, "podCIDRs": [range]},
            });
            match client.merge_patch::<Node>(None, &name, None, &patch).await {
                Ok(updated) => {
                    tracing::info!(node = %name, pod_cidr = %range, "assigned a pod CIDR");
                    taken.insert(range);
                    nodes.insert(name, updated);
                }
                Err(e) => {
                    tracing::debug!(node = %name, error = %e, "assigning a pod CIDR; will retry")
                }
            }
        }
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
}
