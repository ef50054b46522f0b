//! skiff-agent: the node agent. It makes the pods bound to its node real and reports back.
//!
//! ## Layout
//! - [`runtime`]: the [`runtime::Runtime`] trait; [`containerd`] is the real implementation
//!   (containerd over gRPC, its own supervised containerd process), [`fake`] a fake for tests
//!   and simulated nodes. [`images`]: OCI image tarballs imported into containerd (the airgap
//!   directory).
//! - [`network`]: pod network namespaces and the CNI plugins.
//! - [`podnet`]: routes to the other nodes' pods (host-gw or VXLAN, over netlink).
//! - [`plan`]: the pod plan (pure): what a pod's worker does next — deletion, kills for failed
//!   probes, init order, starts, restarts by restartPolicy, back-off.
//! - [`worker`]: one task per pod carrying its plan out: sandbox, containers, probers,
//!   teardown, the final DELETE.
//! - [`adoption`]: what the agent finds in the runtime at start: adopted or removed.
//! - [`spec`]: a pod's container → its config → an OCI runtime spec (pure); [`env`] its
//!   environment variables and [`resolv`] the pod's resolv.conf (both pure).
//! - [`pod_status`]: pod status as Kubernetes computes it (pure).
//! - [`logs`]: container log files (CRI format, rotation) and reading them back.
//! - [`node`]: registering the Node, heartbeats.
//! - [`server`]: the agent's HTTPS endpoint for the API server: logs, exec, and the
//!   measurements ([`stats`]: containers' CPU and memory from their cgroups, the node's from
//!   `/proc`, the proxy's request rates; sampled every `--metrics-interval`, served as kubelet's
//!   `/stats/summary` and as Prometheus text).
//! - [`claims`]: one skiff per machine (the bridge and the pod range are ours).
//! - [`service_view`], [`proxy`], [`dns`], [`probe`]: the Service snapshot, the service proxy, the
//!   node's DNS server, and container probes.
//! - [`error`]: [`AgentError`], what can fail in the agent's library.
//!
//! ## The agent loop
//! ```text
//! register Node ──► watch pods with spec.nodeName=<me> ──► one worker per pod
//!        │                                                  │ status patches, events
//!        └─ heartbeat every 2 s to the leader (memory only)  ▼
//!                                                       API server
//! ```
//! At start the agent lists what the runtime already runs: containers of pods that still exist
//! are adopted by their workers (no restart); everything else is removed.
pub mod adoption;
pub mod cgroup;
pub mod claims;
pub mod config_watch;
pub mod containerd;
pub mod dns;
pub mod env;
pub mod error;
pub mod fake;
pub mod images;
pub mod logs;
pub mod network;
pub mod node;
pub mod plan;
pub mod pod_status;
pub mod podnet;
pub mod probe;
pub mod proxy;
pub mod resolv;
pub mod runtime;
pub mod seccomp;
pub mod server;
pub mod service_view;
pub mod spec;
pub mod stats;
pub mod volumes;
pub mod worker;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use skiff_client::events::Recorder;
use skiff_client::informer::Informers;
use skiff_client::watcher::{self, Event};
use skiff_client::{Client, ListParams};
use tokio::sync::watch;

use crate::resolv::ClusterDns;
use crate::runtime::Runtime;
use crate::worker::{NodeContext, WorkerHandle};

pub use crate::error::AgentError;

/// How an agent is set up.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node_name: String,
    pub node_ip: String,
    pub data_dir: PathBuf,
    /// Labels added to the Node (e.g. the control-plane role for servers).
    pub labels: Vec<(String, String)>,
    /// How often the agent tells the leader it is alive.
    pub heartbeat: Duration,
    /// The container runtime's version string for `kubectl get nodes -o wide`.
    pub runtime_version: String,
    /// The port of the agent's HTTPS endpoint (logs, exec), published in the Node's status.
    pub endpoint_port: u16,
    /// The service proxy and cluster DNS; `None` on simulated nodes.
    pub services: Option<ServicesConfig>,
    /// Routes to the other nodes' pods; `None` on simulated nodes.
    pub pod_network: Option<podnet::PodNetConfig>,
    /// Pids limit, seccomp default and allowed sysctls for pods.
    pub pod_policy: spec::PodPolicy,
    /// How often running pods' API-backed volumes are refreshed (kubelet's `--sync-frequency`).
    pub sync_frequency: Duration,
    /// Where this node keeps the volumes of the `local-path` StorageClass.
    pub local_path_dir: PathBuf,
    /// How often containers' and the node's usage is measured ([`stats`]; 15 s by default,
    /// [`stats::DEFAULT_INTERVAL`]).
    pub metrics_interval: Duration,
}

/// How this node serves Services.
#[derive(Debug, Clone)]
pub struct ServicesConfig {
    /// The iptables chain of this node's ClusterIP redirects ([`proxy::iptables::chain_name`]).
    pub proxy_chain: String,
    /// The node's DNS server for pods.
    pub dns: Option<ClusterDns>,
}

/// Runs the agent (its Node registered with [`node::register`]) until `shutdown` turns true,
/// publishing its measurements on `stats` (the endpoint holds the receiver).
/// Containers keep running after it returns (an agent restart adopts them). It cannot fail:
/// what goes wrong is logged, and retried where retrying helps.
pub async fn run<R: Runtime>(
    config: AgentConfig,
    client: Client,
    runtime: Arc<R>,
    stats: stats::SampleSender,
    mut shutdown: watch::Receiver<bool>,
) {
    tokio::spawn(clean_local_path(
        client.clone(),
        config.local_path_dir.clone(),
        shutdown.clone(),
    ));
    let heartbeat = tokio::spawn(node::heartbeat_loop(
        client.clone(),
        config.node_name.clone(),
        config.heartbeat,
        shutdown.clone(),
    ));

    // The agent's caches of the cluster: one watch and one store per kind (the pods bound to
    // this node are the exception: a watch of their own, filtered by the server).
    let informers = Informers::new(client.clone());
    if let Some(pod_network) = config.pod_network.clone() {
        tokio::spawn(podnet::run(
            pod_network,
            informers.clone(),
            shutdown.clone(),
        ));
    }

    // Services: one snapshot of Services/EndpointSlices for the proxy, DNS and pod env.
    // The proxy counts what it forwards into `requests`; the sampler reads the counts.
    let (services, requests) = match &config.services {
        Some(services_config) => {
            let snapshots = service_view::spawn(&informers, shutdown.clone());
            let requests = Arc::new(stats::RequestCounter::default());
            tokio::spawn(proxy::run(
                services_config.proxy_chain.clone(),
                snapshots.clone(),
                requests.clone(),
                shutdown.clone(),
            ));
            (snapshots, Some(requests))
        }
        // No services on this node: nothing to wait for.
        None => {
            let nothing = service_view::Snapshot {
                synced: true,
                ..service_view::Snapshot::default()
            };
            (watch::channel(Arc::new(nothing)).1, None)
        }
    };
    tokio::spawn(stats::run(
        runtime.clone(),
        stats::Sampler::new(&config.node_name, "/proc", requests),
        config.metrics_interval,
        stats,
        shutdown.clone(),
    ));
    let dns = match config.services.as_ref().and_then(|s| s.dns.clone()) {
        Some(dns) => start_dns(dns, services.clone()).await,
        None => None,
    };
    let (config_changes, _) = tokio::sync::broadcast::channel(256);
    let mut config_watches =
        config_watch::ConfigWatches::new(client.clone(), config_changes.clone());
    let ctx = Arc::new(NodeContext {
        config_changes,
        services,
        dns,
        runtime: runtime.clone(),
        client: client.clone(),
        recorder: Recorder::new(client.clone(), "kubelet", Some(&config.node_name)),
        node_name: config.node_name.clone(),
        node_ip: config.node_ip.clone(),
        data_dir: config.data_dir.clone(),
        policy: config.pod_policy.clone(),
        sync_frequency: config.sync_frequency,
    });

    // What the runtime already has, by pod uid: adopted by workers or removed.
    let mut leftovers = adoption::group_by_pod(runtime.list().await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "listing the containers of an earlier run");
        Vec::new()
    }));
    let mut leftover_sandboxes = runtime.list_sandboxes().await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "listing the pod networks of an earlier run");
        Vec::new()
    });
    let mut first_list = true;

    let mut pods = watcher::spawn::<Pod>(
        client.clone(),
        None,
        ListParams::fields(format!("spec.nodeName={}", config.node_name)),
    );
    let mut workers: HashMap<String, WorkerHandle> = HashMap::new();
    loop {
        let event = tokio::select! {
            event = pods.recv() => match event {
                Some(event) => event,
                None => break,
            },
            _ = crate::stopped(&mut shutdown) => break,
        };
        // Workers that finished (their pod was deleted) are forgotten.
        workers.retain(|_, w| !w.done.is_finished());
        match event {
            Event::Applied(pod) => dispatch(&ctx, &mut workers, &mut leftovers, pod),
            Event::Deleted(pod) => {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                if let Some(w) = workers.get(&uid) {
                    let _ = w.pod.send(None);
                }
            }
            Event::Restarted(list) => {
                let present: std::collections::HashSet<String> =
                    list.iter().filter_map(|p| p.metadata.uid.clone()).collect();
                for (uid, w) in &workers {
                    if !present.contains(uid) {
                        let _ = w.pod.send(None);
                    }
                }
                for pod in list {
                    dispatch(&ctx, &mut workers, &mut leftovers, pod);
                }
                if first_list {
                    first_list = false;
                    // Containers and networks of pods deleted while the agent was down.
                    let failures = adoption::remove_leftovers(
                        runtime.as_ref(),
                        std::mem::take(&mut leftovers),
                        std::mem::take(&mut leftover_sandboxes),
                        &present,
                    )
                    .await;
                    for failure in failures {
                        tracing::warn!(error = %failure, "a deleted pod's leftovers");
                    }
                    // Their files and in-memory volumes too.
                    let pods_dir = ctx.data_dir.join("pods");
                    for (uid, error) in adoption::remove_pod_dirs(&pods_dir, &present) {
                        tracing::warn!(pod_uid = %uid, %error, "a deleted pod's files");
                    }
                }
            }
        }
        // Watch what the pods' volumes are filled from, and nothing else.
        let wanted: std::collections::BTreeSet<config_watch::Ref> = workers
            .values()
            .filter_map(|w| w.pod.borrow().as_ref().map(config_watch::refs_of))
            .flatten()
            .collect();
        config_watches.set(&wanted);
    }
    heartbeat.abort();
}

/// Starts the node's DNS server on the cluster DNS address; `None` (pods use the node's
/// resolver) when it cannot listen there.
async fn start_dns(
    dns: ClusterDns,
    snapshots: watch::Receiver<Arc<service_view::Snapshot>>,
) -> Option<ClusterDns> {
    let ip: std::net::IpAddr = dns.nameserver.parse().ok()?;
    let server = match dns::DnsServer::bind(std::net::SocketAddr::new(ip, 53)).await {
        Ok(server) => server,
        Err(e) => {
            tracing::error!(address = %ip, error = %e, "the node DNS server cannot listen; pods get the node's resolv.conf");
            return None;
        }
    };
    let (tx, rx) = watch::channel(Arc::new(dns::DnsTable::default()));
    tokio::spawn(dns::follow(snapshots, tx, dns.domain.clone()));
    let upstreams = dns::upstreams_from_resolv_conf(
        &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    );
    tokio::spawn(server.run(rx, upstreams));
    tracing::info!(address = %ip, domain = %dns.domain, "node DNS server listening");
    Some(dns)
}

/// Resolves once `shutdown` turns true (or its sender is gone).
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Hands the pod to its worker, starting one if needed.
fn dispatch<R: Runtime>(
    ctx: &Arc<NodeContext<R>>,
    workers: &mut HashMap<String, WorkerHandle>,
    leftovers: &mut HashMap<String, Vec<runtime::ContainerRecord>>,
    pod: Pod,
) {
    let Some(uid) = pod.metadata.uid.clone() else {
        return;
    };
    if let Some(w) = workers.get(&uid) {
        let _ = w.pod.send(Some(pod));
        return;
    }
    let adopted = leftovers.remove(&uid).unwrap_or_default();
    workers.insert(uid, worker::spawn(ctx.clone(), pod, adopted));
}

/// Every 10 s, removes the directories of released `local-path` volumes on this node
/// ([`volumes::claims::clean_released`]), until shutdown.
async fn clean_local_path(client: Client, dir: PathBuf, mut shutdown: watch::Receiver<bool>) {
    loop {
        volumes::claims::clean_released(&client, &dir).await;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
            _ = crate::stopped(&mut shutdown) => return,
        }
    }
}
