//! `skiff agent`: run a node agent against a cluster; also the agent `skiff server` runs itself.
//!
//! ## Expected flow
//! 1. Credentials: a server's own agent uses the server's admin client; `skiff agent` trusts the
//!    CA its node token pins (`K10<sha256 of CA>::node:<secret>`), and with the token's secret
//!    gets the node's own credential (`system:node:NAME`, kept in `DATA_DIR/node-credential`,
//!    mode 0600), which the Node authorizer limits to this node's objects. The join token itself
//!    opens nothing else.
//! 2. The Node is registered and gets a pod CIDR from the leader.
//! 3. The runtime: the agent's own containerd (or `--containerd-socket`), CNI on a bridge, and
//!    the image tarballs in `DATA_DIR/images/` imported.
//! 4. The agent loop runs until shutdown; containers keep running after it (an agent restart
//!    adopts them).
use std::net::{IpAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use skiff_agent::containerd::ContainerdRuntime;
use skiff_agent::fake::FakeRuntime;
use skiff_agent::network::NetworkConfig;
use skiff_agent::{AgentConfig, ServicesConfig};
use skiff_apiserver::pki::JoinToken;
use skiff_client::Client;
use tokio::sync::watch;

use skiff_client::bootstrap::fetch_ca_unverified;

/// Which runtime runs the pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RuntimeKind {
    /// Real containers: containerd, runc, CNI.
    Containerd,
    /// A FAKE runtime that runs nothing (for simulating many nodes in tests and benchmarks).
    Fake,
}

/// How a node reaches the pods of other nodes (`--pod-network`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PodNetworkKind {
    /// A route per peer via its node IP: no overhead; peers must share this node's subnet.
    HostGw,
    /// A VXLAN overlay (UDP 8472): works across routers, 50 bytes per packet.
    Vxlan,
    /// Per peer: host-gw on this node's subnet, VXLAN beyond it.
    Auto,
}

impl From<PodNetworkKind> for skiff_agent::podnet::Mode {
    fn from(kind: PodNetworkKind) -> Self {
        match kind {
            PodNetworkKind::HostGw => skiff_agent::podnet::Mode::HostGw,
            PodNetworkKind::Vxlan => skiff_agent::podnet::Mode::Vxlan,
            PodNetworkKind::Auto => skiff_agent::podnet::Mode::Auto,
        }
    }
}

/// Options every agent has (also accepted by `skiff server` for its own agent).
#[derive(Args, Debug, Clone)]
pub struct AgentOptions {
    /// The node's name (default: the host name).
    #[arg(long)]
    pub node_name: Option<String>,
    /// The node's address as other nodes and the API server see it (default: the address
    /// used to reach the server, or this machine's primary address).
    #[arg(long)]
    pub node_ip: Option<IpAddr>,
    /// Use this containerd instead of starting one under the data dir.
    #[arg(long)]
    pub containerd_socket: Option<PathBuf>,
    /// The containerd namespace skiff's containers live in.
    #[arg(long, default_value = "skiff")]
    pub containerd_namespace: String,
    /// The Linux bridge pods are attached to.
    #[arg(long, default_value = "skiff0")]
    pub bridge: String,
    /// Where the CNI plugins are.
    #[arg(long, default_value = skiff_agent::network::DEFAULT_CNI_BIN)]
    pub cni_bin_dir: PathBuf,
    /// Share N containerd shims among all pods instead of one shim per pod (saves ~12 MiB per
    /// pod; a shim crash then affects every pod in its group). 0: one per pod.
    #[arg(long, default_value_t = 0)]
    pub shim_groups: u32,
    /// The port of the agent's HTTPS endpoint (logs, exec); 0 picks a free one.
    #[arg(long, default_value_t = 10250)]
    pub kubelet_port: u16,
    /// `containerd` (real containers) or `fake` (runs nothing; for simulated nodes).
    #[arg(long, value_enum, default_value_t = RuntimeKind::Containerd)]
    pub runtime: RuntimeKind,
    /// How pods reach pods on other nodes: `host-gw` (routes via the peers' node IPs; peers on
    /// this node's subnet), `vxlan` (an overlay), or `auto` (per peer: host-gw on this node's
    /// subnet, VXLAN beyond it).
    #[arg(long, value_enum, default_value_t = PodNetworkKind::Auto)]
    pub pod_network: PodNetworkKind,
    /// The most processes (threads included) each pod may have, all its containers together;
    /// -1: no limit. kubelet's default is no limit; skiff's is a bound, so a fork bomb in a pod
    /// cannot take the node.
    #[arg(long, default_value_t = 4096, allow_negative_numbers = true)]
    pub pod_max_pids: i64,
    /// How often a running pod's ConfigMap, Secret, downward API and projected volumes are
    /// brought up to date (kubelet's `--sync-frequency`), e.g. `60s`, `1m`.
    #[arg(long, default_value = "1m", value_parser = skiff_controllers::nodelifecycle::parse_duration)]
    pub sync_frequency: std::time::Duration,
    /// How often the agent measures its containers' and the node's CPU and memory (served at
    /// `/stats/summary` and `/metrics/cadvisor`), e.g. `15s` (metrics-server's resolution).
    #[arg(long, default_value = "15s", value_parser = skiff_controllers::nodelifecycle::parse_duration)]
    pub metrics_interval: std::time::Duration,
    /// Where this node keeps the volumes of the built-in `local-path` StorageClass (default:
    /// `storage` in the data dir, as k3s's `/var/lib/rancher/k3s/storage`).
    #[arg(long)]
    pub local_path_dir: Option<PathBuf>,
    /// Give containers that name no seccomp profile the runtime's default filter (kubelet's
    /// `--seccomp-default`); without it they run unconfined, as in Kubernetes.
    #[arg(long)]
    pub seccomp_default: bool,
    /// Sysctls pods may set beyond the safe set (names, or `prefix.*`; comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub allowed_unsafe_sysctls: Vec<String>,
}

impl AgentOptions {
    /// The node's pod policy; `Localhost` seccomp profiles are read from `DATA_DIR/seccomp`.
    pub fn pod_policy(&self, data_dir: &std::path::Path) -> skiff_agent::spec::PodPolicy {
        skiff_agent::spec::PodPolicy {
            max_pids: (self.pod_max_pids > 0).then_some(self.pod_max_pids),
            seccomp_default: self.seccomp_default,
            allowed_unsafe_sysctls: self.allowed_unsafe_sysctls.clone(),
            seccomp_dir: data_dir.join("seccomp"),
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct AgentArgs {
    /// The API server URL (`https://HOST:6443`).
    #[arg(long)]
    pub server: String,
    /// The node token (`skiff token --node` on a server).
    #[arg(long, env = "SKIFF_NODE_TOKEN")]
    pub token: String,
    /// Where the agent keeps its state (default: /var/lib/skiff/agent as root).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub options: AgentOptions,
}

/// `skiff agent`.
pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let token = JoinToken::parse_node(&args.token).context("reading --token")?;
    let ca = fetch_ca_unverified(&args.server).await?;
    token.verify_ca(&ca).with_context(|| {
        format!(
            "the server at {} does not hold the CA this token was issued for",
            args.server
        )
    })?;
    let joining = Client::new(&args.server, &ca, &token.secret)?;
    let data_dir = args
        .data_dir
        .unwrap_or_else(|| super::default_data_dir().join("agent"));
    let node_name = args
        .options
        .node_name
        .clone()
        .unwrap_or_else(super::server::hostname);
    let credential = node_credential(&joining, &data_dir, &node_name).await?;
    let client = Client::new(&args.server, &ca, &credential)?;
    let listener = bind_endpoint(args.options.kubelet_port)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut agent = tokio::spawn(run_agent(
        args.options,
        client,
        EndpointTrust {
            node_secret: token.secret.clone(),
            cluster_ca: ca.clone(),
        },
        data_dir,
        Vec::new(),
        listener,
        stop_rx,
    ));
    tokio::select! {
        _ = super::server::shutdown_signal() => {
            let _ = stop_tx.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(10), agent).await;
            Ok(())
        }
        result = &mut agent => result.context("agent task")?,
    }
}

/// The node's own token: from `DATA_DIR/node-credential` if this machine joined before,
/// otherwise asked for with the join token and kept there (0600).
async fn node_credential(
    joining: &Client,
    data_dir: &std::path::Path,
    node_name: &str,
) -> anyhow::Result<String> {
    let path = data_dir.join("node-credential");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        if !existing.trim().is_empty() {
            return Ok(existing.trim().to_string());
        }
    }
    let answer: serde_json::Value = joining
        .request_leader(
            skiff_client::Method::POST,
            &format!("/skiff/v1/nodes/{node_name}/credential"),
            None,
        )
        .await
        .with_context(|| format!("getting node {node_name}'s credential with the join token"))?;
    let token = answer["token"]
        .as_str()
        .filter(|t| !t.is_empty())
        .context("the server answered without a credential")?
        .to_string();
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    skiff_apiserver::pki::write_secret(&path, token.as_bytes())
        .with_context(|| format!("keeping the node credential in {}", path.display()))?;
    Ok(token)
}

/// Takes the port of the agent's HTTPS endpoint (logs, exec), before anything else starts: a
/// port in use is an error that says who usually holds it.
pub fn bind_endpoint(port: u16) -> anyhow::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(("0.0.0.0", port)).with_context(|| {
        format!(
            "port {port} for the node agent's endpoint is in use (another skiff, or a kubelet, \
             on this machine?): give this one --kubelet-port PORT (0 picks a free one), or \
             --disable-agent on a server that should run no pods"
        )
    })?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Who the agent's endpoint (logs, exec) lets in: callers with a certificate from the cluster
/// CA (servers) that also present the node secret.
pub struct EndpointTrust {
    pub node_secret: String,
    pub cluster_ca: String,
}

/// Runs an agent with `client` until `stop` turns true; `listener` is its endpoint's port
/// (from [`bind_endpoint`]).
pub async fn run_agent(
    options: AgentOptions,
    client: Client,
    trust: EndpointTrust,
    data_dir: PathBuf,
    labels: Vec<(String, String)>,
    listener: std::net::TcpListener,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    // containerd and its shims run with other working directories: every path handed to
    // them must be absolute.
    let data_dir = std::path::absolute(&data_dir)
        .with_context(|| format!("resolving {}", data_dir.display()))?;
    tokio::spawn(learn_servers(client.clone(), stop.clone()));
    let node_name = options
        .node_name
        .clone()
        .unwrap_or_else(super::server::hostname);
    let node_ip = options
        .node_ip
        .unwrap_or_else(|| local_ip_towards(&client.server()))
        .to_string();
    let runtime_version = match options.runtime {
        RuntimeKind::Containerd => containerd_version(),
        RuntimeKind::Fake => "fake://0.0.0".into(),
    };
    // The HTTPS endpoint the API server proxies logs and exec to, with a certificate from
    // the cluster CA for the node's name and address.
    let endpoint_port = listener.local_addr()?.port();
    let (cert, key, not_after) = serving_certificate(&client, &node_name, &node_ip)
        .await
        .context("getting the agent's serving certificate")?;
    let tls = skiff_agent::server::tls(&cert, &key, &trust.cluster_ca)?;
    tokio::spawn(renew_serving_certificate(
        client.clone(),
        node_name.clone(),
        node_ip.clone(),
        not_after,
        tls.clone(),
        trust.cluster_ca.clone(),
        stop.clone(),
    ));
    // The agent's sampler publishes its measurements here; the endpoint serves the latest.
    let (stats_tx, stats_rx) = skiff_agent::stats::channel();
    let serve_endpoint = |containerd: Option<Arc<ContainerdRuntime>>| {
        let endpoint = Arc::new(skiff_agent::server::AgentEndpoint {
            secret: trust.node_secret.clone(),
            data_dir: data_dir.clone(),
            containerd,
            stats: stats_rx.clone(),
        });
        let stop = stop.clone();
        let tls = tls.clone();
        let listener = listener.try_clone();
        tokio::spawn(async move {
            let result = match listener {
                Ok(listener) => skiff_agent::server::serve(endpoint, listener, tls, stop).await,
                Err(e) => Err(skiff_agent::AgentError::Endpoint(e)),
            };
            if let Err(e) = result {
                tracing::error!(error = %e, "the agent endpoint stopped");
            }
        });
    };

    let mut config = AgentConfig {
        services: None,
        pod_network: None,
        node_name: node_name.clone(),
        node_ip,
        data_dir: data_dir.clone(),
        labels,
        heartbeat: skiff_agent::node::HEARTBEAT_INTERVAL,
        runtime_version,
        endpoint_port,
        pod_policy: options.pod_policy(&data_dir),
        sync_frequency: options.sync_frequency,
        metrics_interval: options.metrics_interval,
        local_path_dir: options
            .local_path_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("storage")),
    };
    let node = skiff_agent::node::register(&client, &config).await;
    let pod_cidr = node
        .spec
        .as_ref()
        .and_then(|s| s.pod_cidr.clone())
        .unwrap_or_default();
    tracing::info!(node = %node_name, %pod_cidr, "node registered");

    match options.runtime {
        RuntimeKind::Fake => {
            // Made-up pod IPs from the node's range (10.42.N.x → prefix 10.42.N).
            let prefix = pod_cidr
                .rsplit_once('.')
                .map(|(p, _)| p)
                .unwrap_or("10.99.0");
            let prefix = prefix.rsplit_once('.').map(|(p, _)| p).unwrap_or(prefix);
            let runtime = Arc::new(FakeRuntime::new(prefix));
            serve_endpoint(None);
            skiff_agent::run(config, client, runtime, stats_tx, stop).await;
            Ok(())
        }
        RuntimeKind::Containerd => {
            let socket = match &options.containerd_socket {
                Some(socket) => socket.clone(),
                None => {
                    skiff_agent::containerd::process::supervise(&data_dir, stop.clone()).await?
                }
            };
            // Pods on other nodes: routes to their pod CIDRs, and masquerading only for traffic
            // that leaves the cluster CIDR.
            let mode = skiff_agent::podnet::Mode::from(options.pod_network);
            let cluster = skiff_agent::podnet::cluster_network(&client).await?;
            let node_ipv4: std::net::Ipv4Addr = config.node_ip.parse().with_context(|| {
                format!(
                    "the pod network needs an IPv4 node address, not {}",
                    config.node_ip
                )
            })?;
            config.pod_network = Some(skiff_agent::podnet::PodNetConfig {
                mode,
                node_name: node_name.clone(),
                node_ip: node_ipv4,
                pod_cidr: skiff_agent::podnet::Ipv4Net::parse(&pod_cidr)
                    .with_context(|| format!("the node's pod CIDR {pod_cidr:?}"))?,
            });
            let network = NetworkConfig {
                pod_cidr,
                bridge: options.bridge.clone(),
                cni_bin: options.cni_bin_dir.clone(),
                data_dir: data_dir.clone(),
                mtu: skiff_agent::podnet::pod_mtu(mode, node_ipv4).await,
            };
            skiff_agent::network::allow_forwarding(
                &network.bridge,
                &network.pod_cidr,
                &cluster.cluster_cidr,
            )
            .await?;
            // Another skiff on this machine must not be joined silently on its bridge or range.
            skiff_agent::claims::check_bridge_owner(&network.bridge, &data_dir)?;
            skiff_agent::claims::check_pod_cidr_free(&network.bridge, &network.pod_cidr)?;
            // The bridge exists (with its gateway address) before the first pod, so the node's
            // DNS server can listen there.
            skiff_agent::network::ensure_bridge(&network.bridge, &network.pod_cidr).await?;
            skiff_agent::claims::mark_bridge_owner(&network.bridge, &data_dir);
            let gateway = skiff_agent::network::gateway(&network.pod_cidr);
            let runtime = Arc::new(
                ContainerdRuntime::connect(
                    &socket,
                    &options.containerd_namespace,
                    network,
                    &data_dir,
                )
                .await
                .with_context(|| format!("connecting to containerd at {}", socket.display()))?
                .with_shim_groups(options.shim_groups),
            );
            // Image tarballs in DATA/images: imported now, and when new ones appear.
            let mut airgap = skiff_agent::images::AirgapDir::new(&data_dir.join("images"));
            airgap.scan(&runtime, false).await;
            let (watched, mut airgap_stop) = (runtime.clone(), stop.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(3)) => airgap.scan(&watched, true).await,
                        _ = async { let _ = airgap_stop.wait_for(|s| *s).await; } => return,
                    }
                }
            });
            serve_endpoint(Some(runtime.clone()));
            config.services = Some(ServicesConfig {
                proxy_chain: skiff_agent::proxy::iptables::chain_name(&options.bridge),
                dns: gateway.map(|ip| skiff_agent::resolv::ClusterDns {
                    nameserver: ip.to_string(),
                    domain: "cluster.local".into(),
                }),
            });
            skiff_agent::run(config, client, runtime, stats_tx, stop).await;
            Ok(())
        }
    }
}

/// A serving certificate for the agent's endpoint from the node CA: certificate, key, and
/// its end in Unix seconds.
async fn serving_certificate(
    client: &Client,
    node_name: &str,
    node_ip: &str,
) -> anyhow::Result<(String, String, i64)> {
    let issued: serde_json::Value = client
        .request_leader(
            skiff_client::Method::POST,
            &format!("/skiff/v1/nodes/{node_name}/certificate"),
            Some(&serde_json::json!({"addresses": [node_ip]})),
        )
        .await?;
    let field = |name: &str| issued[name].as_str().unwrap_or_default().to_string();
    let not_after = issued["notAfter"].as_i64().unwrap_or(i64::MAX);
    Ok((field("cert"), field("key"), not_after))
}

/// When a certificate ending at `not_after` is renewed: two thirds of the way through what
/// is left (kubelet renews between 70 % and 90 % of a certificate's life), at the earliest in
/// a second.
fn renew_in(not_after: i64, now: i64) -> Duration {
    let left = u64::try_from(not_after.saturating_sub(now)).unwrap_or(0);
    Duration::from_secs(left * 2 / 3).max(Duration::from_secs(1))
}

/// Renews the endpoint's serving certificate before it ends, for as long as the agent runs,
/// without a restart: the endpoint takes the new one for new connections. A failed renewal
/// is tried again in 10 s.
async fn renew_serving_certificate(
    client: Client,
    node_name: String,
    node_ip: String,
    mut not_after: i64,
    tls: skiff_agent::server::RustlsConfig,
    cluster_ca: String,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let pause = renew_in(not_after, jiff::Timestamp::now().as_second());
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        match serving_certificate(&client, &node_name, &node_ip).await {
            Ok((cert, key, end)) => {
                match skiff_agent::server::renew(&tls, &cert, &key, &cluster_ca) {
                    Ok(()) => {
                        tracing::info!(not_after = end, "serving certificate renewed");
                        not_after = end;
                    }
                    Err(e) => tracing::warn!(error = %e, "the renewed certificate"),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "renewing the serving certificate; again in 10 s");
                not_after = jiff::Timestamp::now().as_second() + 15;
            }
        }
    }
}

/// Keeps the client's list of servers current, so the agent fails over when the server it
/// talks to dies: every 30 s, but every 2 s in its first two minutes while it knows only one
/// server (automation starts the servers and agents together: the others are joining now).
async fn learn_servers(client: Client, mut stop: watch::Receiver<bool>) {
    let mut known = Vec::new();
    let started = tokio::time::Instant::now();
    loop {
        let pause = match client.refresh_servers().await {
            Ok(_) => {
                let servers = client.servers();
                if servers != known {
                    tracing::info!(?servers, "API servers this agent may use");
                    known = servers;
                }
                if known.len() == 1 && started.elapsed() < Duration::from_secs(120) {
                    Duration::from_secs(2)
                } else {
                    Duration::from_secs(30)
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "learning the API servers");
                Duration::from_secs(2)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// The address this machine uses to reach `server` (a UDP "connect" sends nothing; it only
/// asks the kernel which source address it would use).
fn local_ip_towards(server: &str) -> IpAddr {
    let host = server
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let fallback = IpAddr::from([127, 0, 0, 1]);
    let Ok(socket) = UdpSocket::bind("0.0.0.0:0") else {
        return fallback;
    };
    if socket.connect(host).is_err() {
        return fallback;
    }
    socket.local_addr().map(|a| a.ip()).unwrap_or(fallback)
}

/// `containerd://1.6.20` as `kubectl get nodes -o wide` shows it.
fn containerd_version() -> String {
    std::process::Command::new("containerd")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8(o.stdout)
                .ok()?
                .split_whitespace()
                .nth(2)
                .map(|v| format!("containerd://{}", v.trim_start_matches('v')))
        })
        .unwrap_or_else(|| "containerd://unknown".into())
}
