//! The agent's Node: registered once with what the machine has, then kept alive by heartbeats.
//!
//! Heartbeats are not writes: the agent POSTs to `/skiff/v1/nodes/NAME/heartbeat` on the
//! leader every 2 s ([`HEARTBEAT_INTERVAL`]), which keeps the time in memory (a Raft write
//! every few seconds per node would wear out the flash storage of edge machines). Only
//! changes — Ready becoming NotReady — are written, by the node lifecycle controller, which
//! calls a node NotReady after 12 s without one (six beats).
//!
//! Heartbeats are HTTP over TCP, and TCP hides packet loss behind retransmits, so a beat can
//! hang for seconds on a bad link or a dead connection. Beats therefore never wait for each
//! other: every tick sends a new one while earlier ones may still be in flight (at most
//! [`BEATS_IN_FLIGHT`]), each given [`BEAT_DEADLINE`]. A slow beat still counts when it lands,
//! and one that cannot connect moves the client on to the next server, which a deadline
//! shorter than the client's 5 s connect timeout would prevent.
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use skiff_client::{Client, Method};
use tokio::sync::watch;

use crate::AgentConfig;

/// How often the agent tells the leader it is alive (kubelet renews its Lease every 10 s).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);

/// How long one heartbeat may take before it is given up: more than the client's 5 s connect
/// timeout (so a server that does not answer SYNs is failed over), less than the node
/// lifecycle controller's 12 s.
pub const BEAT_DEADLINE: Duration = Duration::from_secs(6);

/// Heartbeats that may be in flight at once; the tick after that waits for one to finish.
pub const BEATS_IN_FLIGHT: usize = 3;

/// Kubernetes' default pod limit per node.
pub const MAX_PODS: u32 = 110;

/// What this machine offers: cpu (cores), memory (bytes, from /proc/meminfo), pods.
pub fn capacity() -> (u32, u64) {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    let memory_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    (cpus, memory_kib * 1024)
}

/// The Node object this agent registers.
pub fn node_object(config: &AgentConfig, now: jiff::Timestamp) -> Node {
    let (cpus, memory) = capacity();
    let resources = [
        ("cpu".to_string(), Quantity(cpus.to_string())),
        (
            "memory".to_string(),
            Quantity(format!("{}Ki", memory / 1024)),
        ),
        ("pods".to_string(), Quantity(MAX_PODS.to_string())),
        ("ephemeral-storage".to_string(), Quantity("10Gi".into())),
    ]
    .into_iter()
    .collect::<std::collections::BTreeMap<_, _>>();
    let mut labels: std::collections::BTreeMap<String, String> = [
        ("kubernetes.io/hostname", config.node_name.as_str()),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", std::env::consts::ARCH),
        ("beta.kubernetes.io/os", "linux"),
    ]
    .into_iter()
    .map(|(k, v)| {
        (
            k.to_string(),
            v.replace("x86_64", "amd64").replace("aarch64", "arm64"),
        )
    })
    .collect();
    labels.extend(config.labels.iter().cloned());
    let uname = nix::sys::utsname::uname().ok();
    let kernel = uname
        .as_ref()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    Node {
        metadata: ObjectMeta {
            name: Some(config.node_name.clone()),
            labels: Some(labels),
            annotations: Some(
                [(
                    crate::volumes::claims::LOCAL_PATH_DIR_ANNOTATION.to_string(),
                    config.local_path_dir.display().to_string(),
                )]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec::default()),
        status: Some(NodeStatus {
            capacity: Some(resources.clone()),
            allocatable: Some(resources),
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: config.node_ip.clone(),
                },
                NodeAddress {
                    type_: "Hostname".into(),
                    address: config.node_name.clone(),
                },
            ]),
            conditions: Some(vec![ready_condition(now)]),
            daemon_endpoints: Some(NodeDaemonEndpoints {
                kubelet_endpoint: Some(DaemonEndpoint {
                    port: i32::from(config.endpoint_port),
                }),
            }),
            node_info: Some(NodeSystemInfo {
                architecture: std::env::consts::ARCH.replace("x86_64", "amd64"),
                container_runtime_version: config.runtime_version.clone(),
                kernel_version: kernel,
                kubelet_version: format!("v1.33.0-skiff-{}", env!("CARGO_PKG_VERSION")),
                kube_proxy_version: String::new(),
                operating_system: "linux".into(),
                os_image: os_image(),
                machine_id: std::fs::read_to_string("/etc/machine-id")
                    .map(|s| s.trim().to_string())
                    .unwrap_or_default(),
                system_uuid: String::new(),
                boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                    .map(|s| s.trim().to_string())
                    .unwrap_or_default(),
                ..NodeSystemInfo::default()
            }),
            ..NodeStatus::default()
        }),
    }
}

/// `Ready=True` as kubelet reports it.
pub fn ready_condition(now: jiff::Timestamp) -> NodeCondition {
    NodeCondition {
        type_: "Ready".into(),
        status: "True".into(),
        reason: Some("KubeletReady".into()),
        message: Some("kubelet is posting ready status".into()),
        last_heartbeat_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

fn os_image() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "Linux".into())
}

/// Creates the Node (or refreshes its status if it exists: an agent restart) and waits until
/// the server has given it a pod CIDR. It cannot fail: errors are logged and retried until the
/// servers answer.
pub async fn register(client: &Client, config: &AgentConfig) -> Node {
    let wanted = node_object(config, jiff::Timestamp::now());
    let name = config.node_name.as_str();
    let mut delay = Duration::from_millis(200);
    loop {
        let result = async {
            match client.get_opt::<Node>(None, name).await? {
                None => client.create(None, &wanted).await,
                // An agent restart: the Node exists (with its pod CIDR); refresh what the
                // machine reports.
                Some(_) => {
                    let labels = serde_json::json!({"metadata": {
                        "labels": wanted.metadata.labels,
                        "annotations": wanted.metadata.annotations,
                    }});
                    client
                        .merge_patch::<Node>(None, name, None, &labels)
                        .await?;
                    let status = serde_json::json!({"status": wanted.status});
                    client
                        .merge_patch::<Node>(None, name, Some("status"), &status)
                        .await
                }
            }
        }
        .await;
        match result {
            Ok(node) if has_pod_cidr(&node) => return node,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "registering the node"),
        }
        // The pod CIDR is assigned by the leader's node IPAM controller; poll for it.
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
        if let Ok(node) = client.get::<Node>(None, name).await {
            if has_pod_cidr(&node) {
                return node;
            }
        }
    }
}

fn has_pod_cidr(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.pod_cidr.as_ref())
        .is_some_and(|c| !c.is_empty())
}

/// Tells the leader every `period` that this node is alive, until shutdown. Beats do not
/// wait for each other (see the module's notes); the log says when they stop reaching the
/// leader and when they reach it again.
pub async fn heartbeat_loop(
    client: Client,
    node: String,
    period: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let path = format!("/skiff/v1/nodes/{node}/heartbeat");
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut beats = tokio::task::JoinSet::new();
    let mut failing: Option<(std::time::Instant, u32)> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if beats.len() >= BEATS_IN_FLIGHT {
                    tracing::debug!(in_flight = beats.len(), "heartbeat skipped: others in flight");
                    continue;
                }
                beats.spawn(beat(client.clone(), path.clone()));
            }
            Some(done) = beats.join_next() => {
                let outcome = done.unwrap_or_else(|e| Err(format!("the heartbeat task: {e}")));
                failing = note_outcome(failing, outcome);
            }
            _ = crate::stopped(&mut shutdown) => {
                beats.abort_all();
                return;
            }
        }
    }
}

/// One heartbeat, given [`BEAT_DEADLINE`].
async fn beat(client: Client, path: String) -> Result<(), String> {
    // A heartbeat twice is harmless, so a server that goes silent (a leader cut off by a
    // partition keeps its connections open) is given one interval, then the next is asked.
    let beat = client.request_leader_retrying::<serde_json::Value>(
        Method::POST,
        &path,
        None,
        HEARTBEAT_INTERVAL,
    );
    match tokio::time::timeout(BEAT_DEADLINE, beat).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {BEAT_DEADLINE:?}")),
    }
}

/// Logs when heartbeats start failing and when they reach the leader again; returns since
/// when, and how many, have failed.
fn note_outcome(
    failing: Option<(std::time::Instant, u32)>,
    outcome: Result<(), String>,
) -> Option<(std::time::Instant, u32)> {
    match (failing, outcome) {
        (None, Ok(())) => None,
        (Some((since, failed)), Ok(())) => {
            tracing::info!(
                failed,
                after = ?since.elapsed(),
                "heartbeats reach the leader again"
            );
            None
        }
        (None, Err(error)) => {
            tracing::warn!(%error, "a heartbeat did not reach the leader");
            Some((std::time::Instant::now(), 1))
        }
        (Some((since, failed)), Err(error)) => {
            tracing::debug!(%error, failed = failed + 1, "heartbeat");
            Some((since, failed + 1))
        }
    }
}
