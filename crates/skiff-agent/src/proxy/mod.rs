//! The service proxy: every node forwards a Service's traffic to the Service's ready endpoints.
//!
//! skiff's proxy is a user-space proxy (as kube-proxy's first mode was): for every Service port
//! it listens on a local port, and the kernel sends it the traffic for the ClusterIP
//! ([`iptables`]: one REDIRECT rule per port). NodePorts and LoadBalancer ports are plain
//! listeners on every address of the node. Each new connection goes to an endpoint the
//! [`balancer`] picks; an endpoint that refuses is skipped for the next one.
//!
//! ```text
//! pod ──► 10.43.0.5:80 ──REDIRECT──► proxy :41003 ─┐
//! host ─► 10.43.0.5:80 ──REDIRECT──► proxy :41003 ─┼─► balancer ─► 10.42.0.7:8080 (ready pod)
//! outside ─► node:30080 ──────────► proxy :30080 ─┘             (refused? next endpoint)
//! ```
//!
//! Endpoints come from EndpointSlices: ready ones; when none is ready, those still serving
//! while terminating (as kube-proxy does, so a rollout's last old pod keeps answering).
//! Connections to an endpoint that leaves are drained: they go on for [`DRAIN`] and are then
//! closed; new connections never go to it.
//!
//! Each connection forwarded to an endpoint (and each new UDP session) is counted by Service
//! and by endpoint address ([`crate::stats::RequestCounter`]): the node's request rates.
//!
//! This costs a copy through user space per byte (measured in docs/benchmarks.md) and buys
//! what the kernel's DNAT cannot do: retrying a refused connection on another endpoint,
//! weighted and random choice, and a design a reader can follow in three files.
pub mod balancer;
pub mod iptables;
pub mod limits;
mod listeners;

use std::collections::{BTreeMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::service_view::Snapshot;
use crate::stats::{RequestCounter, ServiceTally};
use balancer::{Backend, Balancer, Policy, POLICY_ANNOTATION};
use iptables::Redirect;

/// How long connections to a removed endpoint may go on.
pub const DRAIN: Duration = Duration::from_secs(30);
/// How often the proxy retries what failed (a node port another program held).
const RESYNC: Duration = Duration::from_secs(10);

/// One port of one Service, the unit the proxy listens for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortKey {
    pub namespace: String,
    pub service: String,
    pub port_name: String,
    pub protocol: &'static str,
}

/// Where a service port is reachable, and how its traffic is spread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frontend {
    pub cluster_ip: Option<Ipv4Addr>,
    pub port: u16,
    pub node_port: Option<u16>,
    /// LoadBalancer services: the service port itself opens on every node (k3s's servicelb).
    pub load_balancer: bool,
}

/// What a service port should look like, computed from a snapshot (pure).
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredPort {
    pub key: PortKey,
    pub frontend: Frontend,
    pub policy: Policy,
    pub affinity: Option<Duration>,
    pub backends: Vec<Backend>,
}

/// The ports every service in `snapshot` needs, with their endpoints. Problems (an unknown
/// policy annotation) come back as messages for the log.
pub fn desired_ports(snapshot: &Snapshot) -> (Vec<DesiredPort>, Vec<String>) {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for svc in &snapshot.services {
        let Some(spec) = &svc.spec else { continue };
        let service_type = spec.type_.as_deref().unwrap_or("ClusterIP");
        if service_type == "ExternalName" {
            continue;
        }
        let cluster_ip = spec
            .cluster_ip
            .as_deref()
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok());
        let node_ports = matches!(service_type, "NodePort" | "LoadBalancer");
        // Headless services have no virtual IP: clients reach pods directly (via DNS).
        if cluster_ip.is_none() && !node_ports {
            continue;
        }
        let namespace = svc.metadata.namespace.clone().unwrap_or_default();
        let name = svc.metadata.name.clone().unwrap_or_default();
        let annotation = svc
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(POLICY_ANNOTATION))
            .map(String::as_str);
        let policy = Policy::from_annotation(annotation).unwrap_or_else(|e| {
            problems.push(format!(
                "service {namespace}/{name}: {e}; using round-robin"
            ));
            Policy::RoundRobin
        });
        let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            let seconds = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .unwrap_or(10800);
            Duration::from_secs(seconds.max(1) as u64)
        });
        for port in spec.ports.iter().flatten() {
            let protocol = match port.protocol.as_deref().unwrap_or("TCP") {
                "TCP" => "tcp",
                "UDP" => "udp",
                // SCTP is not proxied.
                _ => continue,
            };
            let port_name = port.name.clone().unwrap_or_default();
            out.push(DesiredPort {
                key: PortKey {
                    namespace: namespace.clone(),
                    service: name.clone(),
                    port_name: port_name.clone(),
                    protocol,
                },
                frontend: Frontend {
                    cluster_ip,
                    port: port.port as u16,
                    node_port: port
                        .node_port
                        .filter(|_| node_ports)
                        .and_then(|p| u16::try_from(p).ok()),
                    load_balancer: service_type == "LoadBalancer",
                },
                policy,
                affinity,
                backends: backends(
                    snapshot,
                    svc,
                    &port_name,
                    port.protocol.as_deref(),
                    &port.target_port,
                ),
            });
        }
    }
    (out, problems)
}

/// The endpoints of one service port: ready ones, or if there are none, those terminating but
/// still serving.
fn backends(
    snapshot: &Snapshot,
    svc: &Service,
    port_name: &str,
    protocol: Option<&str>,
    target_port: &Option<IntOrString>,
) -> Vec<Backend> {
    let namespace = svc.metadata.namespace.clone().unwrap_or_default();
    let mut ready = Vec::new();
    let mut serving = Vec::new();
    for slice in snapshot.slices_of(svc) {
        if slice.address_type != "IPv4" {
            continue;
        }
        let port = slice
            .ports
            .iter()
            .flatten()
            .find(|p| {
                p.name.as_deref().unwrap_or("") == port_name
                    && p.protocol.as_deref().unwrap_or("TCP") == protocol.unwrap_or("TCP")
            })
            .and_then(|p| p.port)
            .or(match target_port {
                Some(IntOrString::Int(n)) => Some(*n),
                _ => None,
            });
        let Some(port) = port.and_then(|p| u16::try_from(p).ok()) else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let Some(ip) = crate::service_view::endpoint_ipv4(endpoint) else {
                continue;
            };
            let conditions = endpoint.conditions.clone().unwrap_or_default();
            let weight = endpoint
                .target_ref
                .as_ref()
                .and_then(|r| r.name.clone())
                .and_then(|pod| snapshot.weights.get(&(namespace.clone(), pod)).copied())
                .unwrap_or(1);
            let backend = Backend {
                addr: SocketAddr::from((ip, port)),
                weight,
            };
            // An absent `ready` means ready (the API's rule for consumers).
            if conditions.ready.unwrap_or(true) {
                ready.push(backend);
            } else if conditions.serving.unwrap_or(false) && conditions.terminating.unwrap_or(false)
            {
                serving.push(backend);
            }
        }
    }
    let mut chosen = if ready.is_empty() { serving } else { ready };
    chosen.sort_by_key(|b| b.addr);
    chosen.dedup_by_key(|b| b.addr);
    chosen
}

/// What every listener of one service port shares.
pub(crate) struct Shared {
    pub(crate) balancer: Mutex<Balancer>,
    /// The endpoints as of now; connections to one that disappears are drained.
    pub(crate) live: watch::Sender<HashSet<SocketAddr>>,
    pub(crate) drain: Duration,
    /// Connections (or UDP sessions) held, bounded per port and per client.
    pub(crate) admission: Arc<limits::Admission>,
    /// Where forwarded connections are counted (the Service's tally, shared by its ports).
    pub(crate) requests: ServiceTally,
}

struct Running {
    frontend: Frontend,
    shared: Arc<Shared>,
    /// The local port the ClusterIP is redirected to.
    local_port: Option<u16>,
    cluster: Option<JoinHandle<()>>,
    node_port: Option<JoinHandle<()>>,
    load_balancer: Option<JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for task in [&self.cluster, &self.node_port, &self.load_balancer]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
    }
}

/// Keeps listeners and redirect rules in step with the snapshots until `shutdown`, counting
/// what it forwards in `requests`.
pub async fn run(
    chain: String,
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    requests: Arc<RequestCounter>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut running: BTreeMap<PortKey, Running> = BTreeMap::new();
    let mut installed: Option<Vec<Redirect>> = None;
    loop {
        let snapshot = snapshots.borrow_and_update().clone();
        if !snapshot.synced {
            // Not read yet: an empty list here would tear down every listener and rule.
            tokio::select! {
                changed = snapshots.changed() => if changed.is_err() { break },
                _ = crate::stopped(&mut shutdown) => break,
            }
            continue;
        }
        let (desired, problems) = desired_ports(&snapshot);
        for problem in problems {
            tracing::warn!("{problem}");
        }
        reconcile(&mut running, desired, &requests).await;
        let mut redirects: Vec<Redirect> = running
            .iter()
            .filter_map(|(key, r)| {
                Some(Redirect {
                    cluster_ip: r.frontend.cluster_ip?,
                    port: r.frontend.port,
                    protocol: key.protocol,
                    local_port: r.local_port?,
                })
            })
            .collect();
        redirects.sort();
        if installed.as_ref() != Some(&redirects) {
            match iptables::sync(&chain, &redirects).await {
                Ok(()) => installed = Some(redirects),
                Err(e) => tracing::warn!(error = %e, "installing service redirects"),
            }
        }
        tokio::select! {
            changed = snapshots.changed() => if changed.is_err() { break },
            _ = tokio::time::sleep(RESYNC) => {}
            _ = crate::stopped(&mut shutdown) => break,
        }
    }
    running.clear();
    iptables::remove(&chain).await;
}

/// Starts, updates and stops listeners so that `running` matches `desired`.
async fn reconcile(
    running: &mut BTreeMap<PortKey, Running>,
    desired: Vec<DesiredPort>,
    requests: &Arc<RequestCounter>,
) {
    let wanted: HashSet<PortKey> = desired.iter().map(|d| d.key.clone()).collect();
    running.retain(|key, _| wanted.contains(key));
    for port in desired {
        // A changed address or port means new listeners; endpoints alone change in place.
        if running
            .get(&port.key)
            .is_some_and(|r| r.frontend != port.frontend)
        {
            running.remove(&port.key);
        }
        let live: HashSet<SocketAddr> = port.backends.iter().map(|b| b.addr).collect();
        let entry = match running.get_mut(&port.key) {
            Some(entry) => entry,
            None => {
                let shared = Arc::new(Shared {
                    balancer: Mutex::new(Balancer::new(port.policy, port.affinity)),
                    live: watch::channel(HashSet::new()).0,
                    drain: DRAIN,
                    admission: limits::Admission::new(limits::DEFAULT),
                    requests: requests.tally(&port.key.namespace, &port.key.service),
                });
                running.insert(
                    port.key.clone(),
                    Running {
                        frontend: port.frontend.clone(),
                        shared,
                        local_port: None,
                        cluster: None,
                        node_port: None,
                        load_balancer: None,
                    },
                );
                running.get_mut(&port.key).expect("just inserted")
            }
        };
        if let Ok(mut balancer) = entry.shared.balancer.lock() {
            balancer.update(port.policy, port.affinity, port.backends.clone());
        }
        entry.shared.live.send_if_modified(|current| {
            let changed = *current != live;
            *current = live;
            changed
        });
        listen_where_missing(&port.key, entry).await;
    }
}

/// Opens the listeners a port still lacks (a node port may have been busy last time).
async fn listen_where_missing(key: &PortKey, entry: &mut Running) {
    let what = format!("{}/{}:{}", key.namespace, key.service, entry.frontend.port);
    if entry.frontend.cluster_ip.is_some() && entry.cluster.is_none() {
        match listeners::start(key.protocol, 0, entry.shared.clone()).await {
            Ok((port, task)) => {
                entry.local_port = Some(port);
                entry.cluster = Some(task);
            }
            Err(e) => tracing::warn!(service = %what, error = %e, "listening for the ClusterIP"),
        }
    }
    if let (Some(node_port), None) = (entry.frontend.node_port, &entry.node_port) {
        match listeners::start(key.protocol, node_port, entry.shared.clone()).await {
            Ok((_, task)) => entry.node_port = Some(task),
            Err(e) => {
                tracing::warn!(service = %what, node_port, error = %e, "opening the node port")
            }
        }
    }
    if entry.frontend.load_balancer && entry.load_balancer.is_none() {
        let port = entry.frontend.port;
        match listeners::start(key.protocol, port, entry.shared.clone()).await {
            Ok((_, task)) => entry.load_balancer = Some(task),
            Err(e) => {
                tracing::warn!(service = %what, port, error = %e, "opening the load balancer port")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn snapshot(services: serde_json::Value, slices: serde_json::Value) -> Snapshot {
        Snapshot {
            synced: true,
            services: serde_json::from_value(services).expect("services"),
            slices: serde_json::from_value(slices).expect("slices"),
            weights: [(("default".to_string(), "web-b".to_string()), 3)].into(),
        }
    }

    #[test]
    fn ports_and_endpoints_come_from_services_and_their_slices() {
        let snap = snapshot(
            json!([
                {"metadata": {"name": "web", "namespace": "default",
                              "annotations": {"skiff.io/load-balancer": "weighted"}},
                 "spec": {"type": "NodePort", "clusterIP": "10.43.0.5",
                          "ports": [{"name": "http", "port": 80, "targetPort": "http", "nodePort": 30080, "protocol": "TCP"}]}},
                {"metadata": {"name": "db", "namespace": "default"},
                 "spec": {"clusterIP": "None", "ports": [{"port": 5432}]}},
                {"metadata": {"name": "ext", "namespace": "default"},
                 "spec": {"type": "ExternalName", "externalName": "example.org"}}
            ]),
            json!([
                {"metadata": {"name": "web-abc", "namespace": "default",
                              "labels": {"kubernetes.io/service-name": "web"}},
                 "addressType": "IPv4",
                 "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                 "endpoints": [
                    {"addresses": ["10.42.0.7"], "conditions": {"ready": true}, "targetRef": {"kind": "Pod", "name": "web-a"}},
                    {"addresses": ["10.42.0.8"], "conditions": {"ready": true}, "targetRef": {"kind": "Pod", "name": "web-b"}},
                    {"addresses": ["10.42.0.9"], "conditions": {"ready": false, "serving": true, "terminating": true}}
                 ]}
            ]),
        );
        let (ports, problems) = desired_ports(&snap);
        assert!(problems.is_empty());
        assert_eq!(
            ports.len(),
            1,
            "headless and ExternalName services are not proxied"
        );
        let web = &ports[0];
        assert_eq!(web.frontend.cluster_ip, Some(Ipv4Addr::new(10, 43, 0, 5)));
        assert_eq!(web.frontend.node_port, Some(30080));
        assert_eq!(web.policy, Policy::Weighted);
        let backends: Vec<(String, u32)> = web
            .backends
            .iter()
            .map(|b| (b.addr.to_string(), b.weight))
            .collect();
        assert_eq!(
            backends,
            vec![
                ("10.42.0.7:8080".to_string(), 1),
                ("10.42.0.8:8080".to_string(), 3)
            ]
        );
    }

    #[test]
    fn terminating_endpoints_serve_only_when_nothing_is_ready() {
        let snap = snapshot(
            json!([{"metadata": {"name": "web", "namespace": "default"},
                    "spec": {"clusterIP": "10.43.0.5", "ports": [{"port": 80, "targetPort": 8080}]}}]),
            json!([{"metadata": {"name": "web-1", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4", "ports": [{"name": "", "port": 8080}],
            "endpoints": [
                {"addresses": ["10.42.0.9"], "conditions": {"ready": false, "serving": true, "terminating": true}},
                {"addresses": ["10.42.0.10"], "conditions": {"ready": false, "serving": false, "terminating": true}}
            ]}]),
        );
        let (ports, _) = desired_ports(&snap);
        let addrs: Vec<String> = ports[0]
            .backends
            .iter()
            .map(|b| b.addr.to_string())
            .collect();
        assert_eq!(addrs, vec!["10.42.0.9:8080"]);
    }

    #[test]
    fn an_unknown_policy_is_reported_and_round_robin_used() {
        let snap = snapshot(
            json!([{"metadata": {"name": "web", "namespace": "default",
                                 "annotations": {"skiff.io/load-balancer": "fastest"}},
                    "spec": {"clusterIP": "10.43.0.5", "ports": [{"port": 80}]}}]),
            json!([]),
        );
        let (ports, problems) = desired_ports(&snap);
        assert_eq!(ports[0].policy, Policy::RoundRobin);
        assert!(problems[0].contains("default/web") && problems[0].contains("fastest"));
    }
}
