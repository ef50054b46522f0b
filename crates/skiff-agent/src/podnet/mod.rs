//! Pod networking across nodes: every node routes to every other node's pod CIDR.
//!
//! CNI wires each pod to its own node's bridge ([`crate::network`]); this module makes the
//! other nodes' pods reachable, with flannel's two backends as the model:
//!
//! ```text
//!  watch Nodes ──► peers (spec.podCIDR, InternalIP) ──► plan::plan(me, peers, mode) ──► Plan
//!                                                        (pure: routes, ARP, FDB, device)
//!                                                                       │
//!                                   netlink::Dataplane::apply ◄─────────┘  (rtnetlink; removes
//!                                                                          what is not planned)
//! ```
//! - `host-gw`: a route `PEER_POD_CIDR via PEER_NODE_IP` — no encapsulation, but the peer must
//!   be on this node's subnet.
//! - `vxlan`: one device, `skiff.vxlan` (VNI 1, UDP 8472, no learning), and per peer a route
//!   into it, a permanent ARP entry for the peer's VTEP and an FDB entry saying where the
//!   peer's VTEP is.
//! - `auto` (the default) decides per peer: host-gw when the peer's node IP is on this node's
//!   subnet (one hop, nothing to pay), VXLAN otherwise (the only one that crosses a router).
//!
//! ## Expected flow
//! 1. At start: IPv4 forwarding on; the Node watch lists every node.
//! 2. Only after that first list is the plan applied — including the removal of routes an
//!    earlier run made for nodes that are gone (skiff's routes carry route protocol 83).
//! 3. Every Node change re-plans and, if the plan changed, applies it; every 30 s it is
//!    applied anyway (a link that went down takes its routes with it).
//!
//! ## Guarantees and caveats
//! - Nothing skiff did not make is removed; a route of someone else's to the same CIDR is
//!   replaced.
//! - Routes, the device and its entries stay when the agent stops: pods keep running and keep
//!   talking; the next start reconciles.
//! - Pods keep their source address between nodes; only traffic leaving the cluster CIDR is
//!   masqueraded ([`crate::network::allow_forwarding`]).
pub mod netlink;
pub mod plan;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use serde::Deserialize;
use skiff_client::informer::Informers;
use skiff_client::watcher::Event;
use skiff_client::{Client, Method};
use tokio::sync::watch;
use tokio::time::Instant;

pub use plan::{Ipv4Net, Mode, Peer, Plan, VXLAN_DEVICE};

use crate::runtime::RuntimeError;

/// How often the plan is applied even when no Node changed.
const RESYNC: Duration = Duration::from_secs(30);
/// How soon a failed apply is tried again.
const RETRY: Duration = Duration::from_secs(5);

/// What the pod network loop needs to know about this node.
#[derive(Debug, Clone)]
pub struct PodNetConfig {
    pub mode: Mode,
    pub node_name: String,
    pub node_ip: Ipv4Addr,
    pub pod_cidr: Ipv4Net,
}

/// The cluster's address ranges, from `GET /skiff/v1/cluster`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ClusterNetwork {
    #[serde(rename = "clusterCIDR")]
    pub cluster_cidr: String,
    #[serde(rename = "serviceCIDR")]
    pub service_cidr: String,
}

/// Asks the API server for the cluster's ranges.
pub async fn cluster_network(client: &Client) -> Result<ClusterNetwork, RuntimeError> {
    let url = format!("{}/skiff/v1/cluster", client.server());
    client
        .request(Method::GET, &url, &[], None)
        .await
        .map_err(|e| RuntimeError::Failed(format!("asking the server for the cluster CIDR: {e}")))
}

/// The MTU pods should get with `mode`: the node IP's interface's, less VXLAN's 50 bytes when a
/// peer may be reached through VXLAN (`vxlan` and `auto`, as flannel's VXLAN backend does:
/// without it, full-size packets to a VXLAN peer would depend on path MTU discovery). `None`:
/// leave it to CNI (host-gw, or the interface is not found).
pub async fn pod_mtu(mode: Mode, node_ip: Ipv4Addr) -> Option<u32> {
    if mode == Mode::HostGw {
        return None;
    }
    let dataplane = netlink::Dataplane::connect().ok()?;
    let underlay = dataplane.underlay(node_ip).await.ok()??;
    Some(underlay.mtu.saturating_sub(plan::VXLAN_OVERHEAD))
}

/// Keeps this node's routes to its peers' pods until `shutdown` turns true.
pub async fn run(config: PodNetConfig, informers: Informers, mut shutdown: watch::Receiver<bool>) {
    if let Err(e) = netlink::enable_ip_forwarding() {
        tracing::error!(error = %e, "pods on other nodes will be unreachable");
    }
    let dataplane = match netlink::Dataplane::connect() {
        Ok(dataplane) => dataplane,
        Err(e) => {
            tracing::error!(error = %e, "no pod network across nodes");
            return;
        }
    };
    tracing::info!(mode = config.mode.name(), node_ip = %config.node_ip, pod_cidr = %config.pod_cidr, "pod network across nodes");
    let mut nodes = informers.store::<Node>().subscribe();
    let mut peers: BTreeMap<String, Peer> = BTreeMap::new();
    let mut listed = false;
    let mut applied: Option<Plan> = None;
    let mut next_sync = Instant::now() + RESYNC;
    loop {
        let event = tokio::select! {
            event = nodes.recv() => match event {
                Some(event) => Some(event),
                None => return,
            },
            _ = tokio::time::sleep_until(next_sync) => None,
            _ = crate::stopped(&mut shutdown) => return,
        };
        let resync = event.is_none();
        let mut pending = event;
        // Take every event already queued (nodes registering together) before planning.
        loop {
            match pending.take() {
                Some(Event::Restarted(list)) => {
                    listed = true;
                    peers = list
                        .iter()
                        .filter_map(|n| Some((n.metadata.name.clone()?, Peer::from_node(n)?)))
                        .collect();
                }
                Some(Event::Applied(node)) => {
                    let name = node.metadata.name.clone().unwrap_or_default();
                    match Peer::from_node(&node) {
                        Some(peer) => peers.insert(name, peer),
                        None => peers.remove(&name),
                    };
                }
                Some(Event::Deleted(node)) => {
                    peers.remove(node.metadata.name.as_deref().unwrap_or_default());
                }
                None => {}
            }
            match nodes.try_recv() {
                Ok(event) => pending = Some(event),
                Err(_) => break,
            }
        }
        if !listed {
            // Without the list, "no peers" would mean "remove every route": wait for it.
            next_sync = Instant::now() + RETRY;
            continue;
        }
        let underlay = match dataplane.underlay(config.node_ip).await {
            Ok(underlay) => underlay,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the node's interfaces");
                None
            }
        };
        let local = plan::Local {
            node_name: config.node_name.clone(),
            node_ip: config.node_ip,
            pod_cidr: config.pod_cidr,
            subnet: underlay.map(|u| u.subnet),
        };
        let peer_list: Vec<Peer> = peers.values().cloned().collect();
        let plan = plan::plan(&local, &peer_list, config.mode);
        let changed = applied.as_ref() != Some(&plan);
        if !changed && !resync {
            continue;
        }
        if changed {
            for (peer, reason) in &plan.skipped {
                tracing::warn!(%peer, %reason, "pod network: peer not routed");
            }
        }
        match dataplane.apply(&plan, underlay).await {
            Ok(()) => {
                if changed {
                    tracing::info!(
                        routes = plan.routes.len(),
                        vxlan = plan.vxlan.is_some(),
                        peers = peer_list
                            .iter()
                            .filter(|p| p.name != config.node_name)
                            .count(),
                        "pod network: routes to peers in place"
                    );
                }
                applied = Some(plan);
                next_sync = Instant::now() + RESYNC;
            }
            Err(e) => {
                tracing::error!(error = %e, "pod network: applying the plan failed; retrying");
                applied = None;
                next_sync = Instant::now() + RETRY;
            }
        }
    }
}
