//! The built-in load balancer, as k3s's servicelb: a `LoadBalancer` Service is served on its
//! port by every node's proxy, so its external addresses are the nodes' addresses. This
//! controller writes them into `status.loadBalancer.ingress` (which `kubectl get svc` shows as
//! EXTERNAL-IP) and keeps them in step as nodes come, go, or stop being Ready.
use std::borrow::Borrow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Service};
use serde_json::{json, Value};

/// The ingress list for LoadBalancer services: the Ready nodes' ExternalIP, or InternalIP when
/// they have none, sorted (pure).
pub fn ingress<N: Borrow<Node>>(nodes: &[N]) -> Vec<Value> {
    let mut ips: Vec<String> = nodes
        .iter()
        .map(Borrow::borrow)
        .filter(|n: &&Node| is_ready(n))
        .filter_map(|n| {
            let addresses = n.status.as_ref()?.addresses.as_ref()?;
            let pick = |kind: &str| {
                addresses
                    .iter()
                    .find(|a| a.type_ == kind)
                    .map(|a| a.address.clone())
            };
            pick("ExternalIP").or_else(|| pick("InternalIP"))
        })
        .collect();
    ips.sort();
    ips.dedup();
    ips.into_iter()
        .map(|ip| json!({"ip": ip, "ipMode": "VIP"}))
        .collect()
}

fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Watches Services and Nodes and patches the status of LoadBalancer services whose ingress
/// differs from what the nodes say, until `stop`.
pub async fn run(client: skiff_client::Client, mut stop: tokio::sync::watch::Receiver<bool>) {
    use skiff_client::watcher::{self, Event};
    let mut service_events = watcher::spawn::<Service>(client.clone(), None, Default::default());
    let mut node_events = watcher::spawn::<Node>(client.clone(), None, Default::default());
    let mut services: BTreeMap<(String, String), Service> = BTreeMap::new();
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    let key = |s: &Service| {
        (
            s.metadata.namespace.clone().unwrap_or_default(),
            s.metadata.name.clone().unwrap_or_default(),
        )
    };
    loop {
        tokio::select! {
            Some(e) = service_events.recv() => match e {
                Event::Applied(s) => { services.insert(key(&s), s); }
                Event::Deleted(s) => { services.remove(&key(&s)); }
                Event::Restarted(all) => services = all.into_iter().map(|s| (key(&s), s)).collect(),
            },
            Some(e) = node_events.recv() => match e {
                Event::Applied(n) => { nodes.insert(n.metadata.name.clone().unwrap_or_default(), n); }
                Event::Deleted(n) => { nodes.remove(n.metadata.name.as_deref().unwrap_or_default()); }
                Event::Restarted(all) => nodes = all.into_iter().map(|n| (n.metadata.name.clone().unwrap_or_default(), n)).collect(),
            },
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
            else => return,
        }
        // Nothing to keep in step without services (the common case at scale: a node event
        // then costs nothing here).
        if services.is_empty() {
            continue;
        }
        let all_nodes: Vec<&Node> = nodes.values().collect();
        let want = ingress(&all_nodes);
        for ((ns, name), svc) in &services {
            let is_lb = svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer");
            let have = svc
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .map(|i| serde_json::to_value(i).unwrap_or_default())
                .unwrap_or(json!([]));
            let want = if is_lb { json!(want) } else { json!([]) };
            if have == want || (!is_lb && have == json!([])) {
                continue;
            }
            let patch = json!({"status": {"loadBalancer": {"ingress": want}}});
            if let Err(e) = client
                .merge_patch::<Service>(Some(ns), name, Some("status"), &patch)
                .await
            {
                tracing::warn!(service = %format!("{ns}/{name}"), error = %e, "writing the load balancer status");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ready: bool, addresses: Value) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "status": {
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
                "addresses": addresses
            }
        }))
        .expect("node")
    }

    #[test]
    fn ready_nodes_external_addresses_first() {
        let nodes = [
            node(
                "b",
                true,
                json!([{"type": "InternalIP", "address": "192.168.1.20"}]),
            ),
            node(
                "a",
                true,
                json!([{"type": "InternalIP", "address": "192.168.1.10"}, {"type": "ExternalIP", "address": "203.0.113.5"}]),
            ),
            node(
                "c",
                false,
                json!([{"type": "InternalIP", "address": "192.168.1.30"}]),
            ),
        ];
        let list = ingress(&nodes);
        let ips: Vec<&str> = list.iter().filter_map(|i| i["ip"].as_str()).collect();
        assert_eq!(ips, vec!["192.168.1.20", "203.0.113.5"]);
    }
}
