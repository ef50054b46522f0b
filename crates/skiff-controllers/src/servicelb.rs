//! The built-in load balancer, as k3s's servicelb: a `LoadBalancer` Service is served on its
//! port by every node's proxy, so its external addresses are the nodes' addresses. This
//! controller writes them into `status.loadBalancer.ingress` (which `kubectl get svc` shows as
//! EXTERNAL-IP) and keeps them in step as nodes come, go, or stop being Ready.
use std::borrow::Borrow;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{LoadBalancerIngress, Node, Service};
use serde_json::{json, Value};
use skiff_client::informer::{key_of, Store};

use crate::controller::{Context, Controller};
use crate::workqueue::WorkQueue;
use crate::{Action, Object};

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

/// The status `service` should have given `nodes`, if it differs from what it has (pure):
/// LoadBalancer services get the Ready nodes' addresses; others get none (a Service changed
/// from LoadBalancer to ClusterIP loses its ingress).
pub fn reconcile<N: Borrow<Node>>(service: &Service, nodes: &[N]) -> Vec<Action> {
    let is_lb = service.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer");
    let have = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.clone())
        .unwrap_or_default();
    let want: Vec<LoadBalancerIngress> = if is_lb {
        ingress(nodes)
            .into_iter()
            .filter_map(|i| serde_json::from_value(i).ok())
            .collect()
    } else {
        Vec::new()
    };
    if have == want {
        return Vec::new();
    }
    let mut service = service.clone();
    let status = service.status.get_or_insert_with(Default::default);
    status
        .load_balancer
        .get_or_insert_with(Default::default)
        .ingress = Some(want);
    vec![Action::UpdateStatus(Object::Service(Box::new(service)))]
}

/// The controller in the loop's shape: keyed by Service, woken by the Service's changes and,
/// for every LoadBalancer service (or one that still has an ingress), by any Node's.
pub struct ServiceLbController {
    services: Store<Service>,
    nodes: Store<Node>,
}

/// Whether the service's status depends on the nodes.
fn follows_nodes(service: &Service) -> bool {
    service.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
        || service
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .is_some_and(|i| !i.is_empty())
}

impl Controller for ServiceLbController {
    const NAME: &'static str = "service-lb-controller";

    fn new(ctx: &Context, queue: &WorkQueue) -> Self {
        let services = ctx.informers.store::<Service>();
        let nodes = ctx.informers.store::<Node>();
        let q = queue.clone();
        services.on_change(move |svc: &Service| {
            if follows_nodes(svc) {
                q.add(&key_of(&svc.metadata));
            }
        });
        let (q, svc_store) = (queue.clone(), services.clone());
        // Nothing to do for a node event without LoadBalancer services (the common case at
        // scale).
        nodes.on_change(move |_: &Node| {
            for (key, svc) in svc_store.read().iter() {
                if follows_nodes(svc) {
                    q.add(key);
                }
            }
        });
        ServiceLbController { services, nodes }
    }

    fn reconcile(&mut self, key: &str, _now: Timestamp) -> Vec<Action> {
        let Some(service) = self.services.get(key) else {
            return Vec::new();
        };
        let nodes = self.nodes.read();
        let all: Vec<&Node> = nodes.values().collect();
        reconcile(&service, &all)
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

    fn service(type_: &str, ingress: Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "resourceVersion": "4"},
            "spec": {"type": type_},
            "status": {"loadBalancer": {"ingress": ingress}}
        }))
        .expect("service")
    }

    /// The ingress IPs a plan writes, or `None` for an empty plan.
    fn writes(plan: &[Action]) -> Option<Vec<String>> {
        match plan {
            [] => None,
            [Action::UpdateStatus(Object::Service(s))] => Some(
                s.status
                    .as_ref()
                    .and_then(|s| s.load_balancer.as_ref())
                    .and_then(|lb| lb.ingress.as_ref())
                    .map(|i| i.iter().filter_map(|i| i.ip.clone()).collect())
                    .unwrap_or_default(),
            ),
            other => panic!("unexpected plan {other:?}"),
        }
    }

    #[test]
    fn load_balancer_status_follows_the_ready_nodes() {
        let nodes = [
            node(
                "a",
                true,
                json!([{"type": "InternalIP", "address": "10.0.0.1"}]),
            ),
            node(
                "b",
                false,
                json!([{"type": "InternalIP", "address": "10.0.0.2"}]),
            ),
        ];
        let up_to_date = json!([{"ip": "10.0.0.1", "ipMode": "VIP"}]);
        // (service type, its ingress now, what the plan writes)
        let table = [
            ("LoadBalancer", json!([]), Some(vec!["10.0.0.1"])),
            ("LoadBalancer", up_to_date.clone(), None),
            (
                "LoadBalancer",
                json!([{"ip": "10.0.0.9", "ipMode": "VIP"}]),
                Some(vec!["10.0.0.1"]),
            ),
            ("ClusterIP", json!([]), None),
            ("ClusterIP", up_to_date, Some(vec![])),
        ];
        for (type_, now, want) in table {
            let svc = service(type_, now.clone());
            let want = want.map(|w| w.into_iter().map(str::to_string).collect::<Vec<_>>());
            assert_eq!(writes(&reconcile(&svc, &nodes)), want, "{type_} with {now}");
        }
        // The write is a compare-and-swap on the version the plan was made from.
        let plan = reconcile(&service("LoadBalancer", json!([])), &nodes);
        assert_eq!(
            plan[0].to_string(),
            "update status of Service default/web at resourceVersion 4"
        );
    }
}
