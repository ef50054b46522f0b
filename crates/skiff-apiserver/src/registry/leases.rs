//! The Lease strategy: every Node has a Lease in `kube-node-lease`, made up on each read from
//! the leader's heartbeat table ([`crate::nodes`]) rather than stored.
//!
//! `kubectl describe node` reads `kube-node-lease/leases/NODE`, as kubelet renews one there every
//! 10 s. skiff does not write those renewals (they would wear edge devices' flash); it answers
//! with the Lease kubelet would keep: held by the node, owned by its Node, `renewTime` = the last
//! heartbeat. Only the leader hears heartbeats, so a follower leaves `renewTime` out.
//!
//! Leases that clients write are stored like any other object, and a stored Lease in
//! `kube-node-lease` shadows the made-up one of the same name.
use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{json, Value};
use skiff_store::{key_prefix, object_key};

use super::{Strategy, View};

/// The namespace of node leases, as in Kubernetes.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// How long a node lease lasts, as shown in the made-up Lease: skiff's default silence before
/// a node is NotReady (kubelet's `nodeLeaseDurationSeconds` is 40, its controller's grace 50 s).
/// The node lifecycle controller's own setting is what counts (skiff-controllers'
/// nodelifecycle, `--node-monitor-grace-period`).
const NODE_LEASE_SECONDS: i32 = 12;

pub struct Leases;

impl Strategy for Leases {
    fn made_up(&self, view: &dyn View, namespace: Option<&str>, name: &str) -> Option<Value> {
        if !has_node_leases(namespace) {
            return None;
        }
        let node = view.get(&object_key("nodes", "", name))?;
        Some(node_lease(&node, view.heartbeats().get(name).copied()))
    }

    fn made_up_list(
        &self,
        view: &dyn View,
        namespace: Option<&str>,
        stored: &[Arc<Value>],
    ) -> Vec<Value> {
        if !has_node_leases(namespace) {
            return Vec::new();
        }
        let shadowed: HashSet<&str> = stored
            .iter()
            .filter(|l| {
                l.pointer("/metadata/namespace").and_then(Value::as_str)
                    == Some(NODE_LEASE_NAMESPACE)
            })
            .filter_map(|l| l.pointer("/metadata/name")?.as_str())
            .collect();
        let heard = view.heartbeats();
        view.list(&key_prefix("nodes", None))
            .iter()
            .filter_map(|node| {
                let name = node.pointer("/metadata/name")?.as_str()?;
                if shadowed.contains(name) {
                    return None;
                }
                Some(node_lease(node, heard.get(name).copied()))
            })
            .collect()
    }
}

/// Whether a request in `namespace` (`None`: every namespace) sees node leases.
fn has_node_leases(namespace: Option<&str>) -> bool {
    namespace.is_none_or(|ns| ns == NODE_LEASE_NAMESPACE)
}

/// The Lease of `node`, as kubelet would keep it, renewed at `renewed` (left out when `None`).
pub fn node_lease(node: &Value, renewed: Option<jiff::Timestamp>) -> Value {
    let name = node.pointer("/metadata/name").cloned().unwrap_or_default();
    let mut spec = json!({
        "holderIdentity": name,
        "leaseDurationSeconds": NODE_LEASE_SECONDS,
    });
    if let Some(at) = renewed {
        // A MicroTime: RFC 3339 with exactly six fractional digits.
        spec["renewTime"] = json!(at.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string());
    }
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": name,
            "namespace": NODE_LEASE_NAMESPACE,
            "creationTimestamp": node.pointer("/metadata/creationTimestamp"),
            "ownerReferences": [{
                "apiVersion": "v1",
                "kind": "Node",
                "name": name,
                "uid": node.pointer("/metadata/uid"),
            }],
        },
        "spec": spec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::fake::FakeView;

    fn node(name: &str) -> Value {
        json!({"metadata": {"name": name, "uid": format!("u-{name}"),
                            "creationTimestamp": "2026-01-01T00:00:00Z"}})
    }

    fn view() -> FakeView {
        let mut view = FakeView::default()
            .with("nodes", node("n1"))
            .with("nodes", node("n2"));
        let at: jiff::Timestamp = "2026-01-01T00:01:00.5Z".parse().expect("a time");
        view.heartbeats.insert("n1".into(), at);
        view
    }

    fn names(leases: &[Value]) -> Vec<&str> {
        leases
            .iter()
            .filter_map(|l| l["metadata"]["name"].as_str())
            .collect()
    }

    #[test]
    fn a_node_lease_is_held_and_owned_by_its_node() {
        let lease = Leases
            .made_up(&view(), Some(NODE_LEASE_NAMESPACE), "n1")
            .expect("n1 is a node");
        assert_eq!(lease["spec"]["holderIdentity"], "n1");
        assert_eq!(lease["spec"]["renewTime"], "2026-01-01T00:01:00.500000Z");
        assert_eq!(lease["metadata"]["ownerReferences"][0]["uid"], "u-n1");
        // Not heard from (or asked on a follower): no renewTime.
        let silent = Leases
            .made_up(&view(), Some(NODE_LEASE_NAMESPACE), "n2")
            .expect("n2 is a node");
        assert!(silent["spec"].get("renewTime").is_none());
    }

    /// Which requests see made-up leases: (namespace, name) → whether one is made up.
    #[test]
    fn only_node_lease_requests_for_existing_nodes_see_them() {
        let cases = [
            (Some(NODE_LEASE_NAMESPACE), "n1", true),
            (Some(NODE_LEASE_NAMESPACE), "no-such-node", false),
            (Some("default"), "n1", false),
        ];
        for (ns, name, expected) in cases {
            assert_eq!(
                Leases.made_up(&view(), ns, name).is_some(),
                expected,
                "{ns:?}/{name}"
            );
        }
    }

    #[test]
    fn lists_add_node_leases_unless_a_stored_one_shadows_them() {
        let stored_n2 =
            Arc::new(json!({"metadata": {"name": "n2", "namespace": NODE_LEASE_NAMESPACE}}));
        let elsewhere_n1 = Arc::new(json!({"metadata": {"name": "n1", "namespace": "default"}}));
        let all = Leases.made_up_list(&view(), None, &[stored_n2.clone(), elsewhere_n1]);
        assert_eq!(names(&all), ["n1"]);
        let in_ns = Leases.made_up_list(&view(), Some(NODE_LEASE_NAMESPACE), &[]);
        assert_eq!(names(&in_ns), ["n1", "n2"]);
        assert!(Leases
            .made_up_list(&view(), Some("default"), &[])
            .is_empty());
    }
}
