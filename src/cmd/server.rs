//! `skiff server`: start (or join) a control-plane server.
//!
//! ## Expected flow
//! 1. Secrets: the first server creates a CA, a cluster secret and an admin token in its data
//!    dir; a joining server gets them from the cluster (see skiff_apiserver::cluster).
//! 2. A serving certificate for every address the server is reached at.
//! 3. The store opens; the HTTPS listener (API + Raft) starts.
//! 4. The first server initialises a one-member cluster; a joining one asks the leader to add it.
//! 5. `kubeconfig.yaml` and the join token are written; the leader creates the system namespaces.
//! 6. On SIGINT/SIGTERM: stop accepting, finish in-flight requests, stop Raft.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use skiff_apiserver::app::{self, App, ClusterSecrets};
use skiff_apiserver::cluster::{AddMember, JoinGrant, JoinRequest};
use skiff_apiserver::pki::{self, ClusterCa, JoinToken};
use skiff_apiserver::service_ips::ServiceNetwork;
use skiff_client::Method;
use skiff_controllers::nodeipam::ClusterCidr;
use skiff_store::{PeerTransport, Store, StoreConfig};

use skiff_client::bootstrap::fetch_ca_unverified;

#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    /// Where this server keeps its state (default: /var/lib/skiff as root, ./.skiff otherwise).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The address to serve HTTPS (Kubernetes API and Raft) on.
    #[arg(long, default_value = "0.0.0.0:6443")]
    pub listen: SocketAddr,
    /// The address other servers and agents reach this one at (default: the listen address,
    /// or this machine's primary address when listening on all interfaces).
    #[arg(long)]
    pub advertise_address: Option<IpAddr>,
    /// Extra names or addresses for the serving certificate.
    #[arg(long = "tls-san")]
    pub tls_san: Vec<String>,
    /// Join the cluster served at this URL instead of starting a new one.
    #[arg(long, requires = "token")]
    pub join: Option<String>,
    /// The join token printed by the first server (`skiff token`).
    #[arg(long, env = "SKIFF_TOKEN")]
    pub token: Option<String>,
    /// This server's name in `skiff members` (default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    /// Snapshot the store and compact the Raft log every this many entries.
    #[arg(long, default_value_t = 5000)]
    pub snapshot_every: u64,
    /// Do not run a node agent in this server (a control-plane-only machine).
    #[arg(long)]
    pub disable_agent: bool,
    /// The range pod IPs come from; each node gets a /24 of it.
    #[arg(long, default_value = "10.42.0.0/16")]
    pub cluster_cidr: String,
    /// The range ClusterIPs of Services come from (k3s's default).
    #[arg(long, default_value = skiff_apiserver::service_ips::DEFAULT_SERVICE_CIDR)]
    pub service_cidr: String,
    /// The Pod Security level (privileged, baseline, restricted) enforced in namespaces that
    /// set none with a `pod-security.kubernetes.io/enforce` label. kube-system is exempt.
    #[arg(long, default_value = "baseline", value_parser = parse_pod_security)]
    pub pod_security: skiff_api::pod_security::Level,
    /// Requests (other than watches and streams) served at once before more get 429, as
    /// kube-apiserver's flag; a fifth is kept for the system. 0: no limit.
    #[arg(long, default_value_t = 400)]
    pub max_requests_inflight: usize,
    /// The same for writes.
    #[arg(long, default_value_t = 200)]
    pub max_mutating_requests_inflight: usize,
    /// Watches one user may have open at once (0: no cap); `system:masters` is not counted.
    #[arg(long, default_value_t = skiff_apiserver::app::DEFAULT_WATCHES_PER_USER)]
    pub max_watches_per_user: usize,
    /// Write an audit log (Kubernetes' audit.k8s.io/v1 Events, one JSON line per request, at
    /// Metadata level unless --audit-policy-file says otherwise) to this file. Off by default.
    #[arg(long)]
    pub audit_log_path: Option<PathBuf>,
    /// Which requests the audit log keeps and how much of each: a Kubernetes audit.k8s.io/v1
    /// Policy (levels None, Metadata, Request, RequestResponse). Without it, every request at
    /// Metadata.
    #[arg(long, requires = "audit_log_path")]
    pub audit_policy_file: Option<PathBuf>,
    /// Rotate the audit log when it reaches this many megabytes.
    #[arg(long, default_value_t = 100)]
    pub audit_log_maxsize: u64,
    /// How many rotated audit logs to keep.
    #[arg(long, default_value_t = 3)]
    pub audit_log_maxbackup: usize,
    /// The scheduler's weight for bin-packing (fill the fullest node that fits).
    #[arg(long, default_value_t = 1)]
    pub bin_packing_weight: i64,
    /// The scheduler's weight for spreading replicas of one owner across nodes.
    #[arg(long, default_value_t = 2)]
    pub spreading_weight: i64,
    /// How long node agents' serving certificates (logs, exec) last, e.g. `8760h` (the
    /// default, a year); each agent renews its own at about two thirds of that, without a
    /// restart.
    #[arg(long, value_parser = skiff_controllers::nodelifecycle::parse_duration)]
    pub node_cert_validity: Option<Duration>,
    /// How long a node may send no heartbeat before it is NotReady, e.g. `12s` (the default;
    /// Kubernetes' kube-controller-manager flag of the same name, 50s there).
    #[arg(long, value_parser = skiff_controllers::nodelifecycle::parse_duration)]
    pub node_monitor_grace_period: Option<Duration>,
    /// How long pods without their own toleration stay on a node that went silent, in seconds
    /// (default 8; kube-apiserver's flag of the same name, 300 there).
    #[arg(long)]
    pub default_unreachable_toleration_seconds: Option<u64>,
    /// The same for a node whose agent reports NotReady (default 8; Kubernetes: 300).
    #[arg(long)]
    pub default_not_ready_toleration_seconds: Option<u64>,
    #[command(flatten)]
    pub agent: super::agent::AgentOptions,
}

/// Files inside the data dir.
struct Layout {
    root: PathBuf,
}

impl Layout {
    fn tls(&self) -> PathBuf {
        self.root.join("tls")
    }
    fn secret(&self) -> PathBuf {
        self.root.join("server").join("cluster-secret")
    }
    fn admin_token(&self) -> PathBuf {
        self.root.join("server").join("admin-token")
    }
    fn member_id(&self) -> PathBuf {
        self.root.join("server").join("member-id")
    }
    fn store(&self) -> PathBuf {
        self.root.join("store")
    }
    fn kubeconfig(&self) -> PathBuf {
        self.root.join("kubeconfig.yaml")
    }
    fn join_token(&self) -> PathBuf {
        self.root.join("token")
    }
}

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let layout = Layout {
        root: args
            .data_dir
            .clone()
            .unwrap_or_else(super::default_data_dir),
    };
    std::fs::create_dir_all(layout.root.join("server"))
        .with_context(|| format!("creating {}", layout.root.display()))?;
    let listener =
        app::bind(args.listen).with_context(|| format!("listening on {}", args.listen))?;
    // The node agent's port is taken now, so a server whose agent could not start fails here
    // (rather than serving on with no agent, leaving deleted pods Terminating for ever).
    let agent_listener = if args.disable_agent {
        None
    } else {
        Some(super::agent::bind_endpoint(args.agent.kubelet_port)?)
    };
    let port = listener.local_addr()?.port();
    let advertise = args
        .advertise_address
        .unwrap_or_else(|| advertise_default(args.listen.ip()));
    let url = format!("https://{}", SocketAddr::new(advertise, port));
    let name = args.name.clone().unwrap_or_else(hostname);

    // 1. Secrets, and the member id.
    let joining = args.join.is_some() && !layout.member_id().exists();
    let (ca, secret, admin_token, member_id) = match (&args.join, joining) {
        (Some(join_url), true) => {
            join_secrets(
                &layout,
                join_url,
                args.token.as_deref().unwrap_or(""),
                &name,
                &url,
            )
            .await?
        }
        _ => local_secrets(&layout, args.join.is_some())?,
    };

    // The node CA (agents' serving certificates) and the key ServiceAccount tokens are signed
    // with: made with the cluster CA, or received at join.
    let node_ca = ClusterCa::load_or_create_node_ca(&layout.tls())?;
    let service_account_key = service_account_key(&layout.tls().join("service-account.key"))?;
    // Secrets are sealed at rest with this (in the log, the state on disk and snapshots).
    let (encryption_config, providers) =
        pki::encryption::load_or_create(&layout.tls().join("encryption-config.yaml"))?;

    // 2. A serving certificate for every address we are reached at.
    let services = ServiceNetwork::parse(&args.service_cidr).map_err(anyhow::Error::msg)?;
    let sans = subject_alt_names(&args, advertise, &name, services.kubernetes_ip());
    let (cert, key) = pki::ensure_server_cert(&layout.tls(), &ca, &sans)?;
    // Agents let in only callers with a cluster-CA certificate: this server shows its own.
    let agent_identity = format!("{cert}\n{key}");
    let tls = Arc::new(pki::server_tls_config(&cert, &key)?);

    // 3. The store and the HTTPS listener.
    let mut config = StoreConfig::new(member_id, &name, &url, layout.store());
    config.snapshot_every = args.snapshot_every;
    config.sealer = skiff_store::seal::Sealer::new(providers);
    let store = Store::open(config, PeerTransport::new(Some(&ca.cert_pem), &secret)).await?;
    let mut app = App::new(
        store.clone(),
        admin_token.clone(),
        ClusterSecrets {
            secret: secret.clone(),
            ca_cert_pem: ca.cert_pem.clone(),
            ca_key_pem: ca.key_pem.clone(),
            node_ca_cert_pem: node_ca.cert_pem.clone(),
            node_ca_key_pem: node_ca.key_pem.clone(),
            service_account_key_pem: service_account_key.clone(),
            encryption_config: encryption_config.into(),
        },
    );
    app.encryption_config_path = Some(layout.tls().join("encryption-config.yaml"));
    app.service_account_key = Some(
        skiff_apiserver::auth::service_accounts::SigningKey::from_pem(&service_account_key)
            .map_err(anyhow::Error::msg)?,
    );
    app.services = services;
    app.pod_security = args.pod_security;
    if let Some(validity) = args.node_cert_validity {
        app.node_cert_validity = validity.max(Duration::from_secs(1));
    }
    app.watch_caps = skiff_apiserver::inflight::WatchCaps::new(args.max_watches_per_user);
    app.inflight = skiff_apiserver::inflight::Inflight::new(
        args.max_requests_inflight,
        args.max_mutating_requests_inflight,
    );
    app.agent_identity_pem = Some(agent_identity);
    if let Some(path) = &args.audit_log_path {
        let policy = match &args.audit_policy_file {
            Some(file) => {
                let text = std::fs::read_to_string(file)
                    .with_context(|| format!("reading the audit policy {}", file.display()))?;
                skiff_apiserver::audit::Policy::parse(&text)
                    .map_err(|e| anyhow::anyhow!("the audit policy {}: {e}", file.display()))?
            }
            None => skiff_apiserver::audit::Policy::default(),
        };
        app.audit = Some(
            skiff_apiserver::audit::AuditLog::start(skiff_apiserver::audit::AuditConfig {
                path: path.clone(),
                max_size_bytes: args.audit_log_maxsize.max(1) * 1024 * 1024,
                max_backups: args.audit_log_maxbackup,
            })
            .with_context(|| format!("opening the audit log {}", path.display()))?
            .with_policy(policy),
        );
    }
    app.cluster_cidr = ClusterCidr::parse(&args.cluster_cidr)
        .map(|c| format!("{}/{}", c.base, c.prefix))
        .map_err(anyhow::Error::msg)?;
    let app = Arc::new(app);
    let server = tokio::spawn(app::serve(
        app.clone(),
        listener,
        tls,
        Duration::from_secs(5),
    ));
    tracing::info!(%url, member = member_id, "serving HTTPS (Kubernetes API and Raft)");

    // 4. Become a cluster: initialise, or be added by the leader.
    if store.is_pristine() {
        match &args.join {
            None => store.initialize().await?,
            Some(join_url) => {
                let request = AddMember {
                    id: member_id,
                    name: name.clone(),
                    addr: url.clone(),
                };
                ask_to_be_added(&ca.cert_pem, &secret, join_url, &request).await?;
                tracing::info!("joined the cluster");
            }
        }
    }

    // 5. Credentials for people and for more servers; system namespaces on the leader.
    let local_url = format!(
        "https://{}",
        SocketAddr::new(kubeconfig_host(args.listen.ip()), port)
    );
    pki::write_kubeconfig(
        &layout.kubeconfig(),
        &local_url,
        &ca.cert_pem,
        &admin_token,
        "skiff",
    )?;
    let join_token = JoinToken::new(&ca.cert_pem, secret.clone()).format();
    pki::write_secret(&layout.join_token(), join_token.as_bytes())?;
    tokio::spawn(keep_system_namespaces(app.clone()));
    tokio::spawn(keep_kubernetes_service(app.clone()));
    tokio::spawn(keep_quota_status(app.clone()));
    let node_token = JoinToken::new(&ca.cert_pem, app.node_secret.clone()).format_node();
    pki::write_secret(&layout.root.join("node-token"), node_token.as_bytes())?;

    // The loops only the leader runs (node IPAM, scheduler, controllers), and this machine's
    // own agent. Both talk to the API like any client, through this server.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let local = skiff_client::Client::new(&local_url, &ca.cert_pem, &admin_token)?;
    let cidr = ClusterCidr::parse(&args.cluster_cidr).map_err(anyhow::Error::msg)?;
    let weights = skiff_scheduler::Weights {
        bin_packing: args.bin_packing_weight,
        spreading: args.spreading_weight,
    };
    tokio::spawn(promote_learners(app.clone(), stop_rx.clone()));
    let node_lifecycle = skiff_controllers::nodelifecycle::Config::with(
        args.node_monitor_grace_period,
        args.default_unreachable_toleration_seconds,
        args.default_not_ready_toleration_seconds,
    );
    tokio::spawn(leader_loops(
        app.clone(),
        local.clone(),
        cidr,
        weights,
        node_lifecycle,
        stop_rx.clone(),
    ));
    let agent = if args.disable_agent {
        None
    } else {
        let mut options = args.agent.clone();
        options.node_name.get_or_insert_with(|| name.clone());
        let labels = vec![
            (
                "node-role.kubernetes.io/control-plane".to_string(),
                "true".to_string(),
            ),
            (
                "node-role.kubernetes.io/master".to_string(),
                "true".to_string(),
            ),
        ];
        let dir = layout.root.join("agent");
        let stop = stop_rx.clone();
        let secret = app.node_secret.clone();
        let ca = app.cluster.ca_cert_pem.clone();
        let listener = agent_listener.context("the agent's port was bound above")?;
        let trust = super::agent::EndpointTrust {
            node_secret: secret,
            cluster_ca: ca,
        };
        Some(tokio::spawn(super::agent::run_agent(
            options, local, trust, dir, labels, listener, stop,
        )))
    };
    tracing::info!(
        kubeconfig = %layout.kubeconfig().display(),
        token_file = %layout.join_token().display(),
        "skiff server ready; use: kubectl --kubeconfig {}",
        layout.kubeconfig().display()
    );

    // 6. Run until told to stop, or until serving fails. Raft stops first: a leader that keeps
    //    heartbeating while its listener drains would hold off the election its followers need.
    let mut server = server;
    let mut agent = agent;
    let agent_failed = async {
        match agent.as_mut() {
            Some(handle) => handle.await,
            None => std::future::pending().await,
        }
    };
    let served_early = tokio::select! {
        _ = shutdown_signal() => None,
        result = &mut server => Some(result),
        // A server whose agent cannot run (its bridge or pod range taken by another skiff on
        // this machine, containerd failing) stops too, saying why: serving on without an
        // agent would leave this node's pods Terminating for as long as it runs.
        result = agent_failed => {
            let why = match result {
                Ok(Ok(())) => "the node agent stopped".to_string(),
                Ok(Err(e)) => format!("{e:#}"),
                Err(e) => format!("the node agent task failed: {e}"),
            };
            tracing::error!(error = %why, "the node agent stopped; stopping the server (use --disable-agent for a server that runs no pods)");
            let _ = stop_tx.send(true);
            let _ = store.shutdown().await;
            app.shutdown.cancel();
            bail!("the node agent stopped: {why}");
        }
        fault = store.stopped_by_fault() => {
            // openraft stops its core for good on a storage error (a full disk): the server
            // would answer nothing useful again. Exit, so its supervisor restarts it once the
            // cause is fixed; the other members go on without it. Containers keep running.
            tracing::error!(error = %fault, "the Raft core stopped; exiting so a supervisor can restart this server");
            let _ = stop_tx.send(true);
            app.shutdown.cancel();
            bail!("the Raft core stopped: {fault}");
        }
    };
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    if let Some(agent) = agent {
        if !agent.is_finished() {
            let _ = tokio::time::timeout(Duration::from_secs(10), agent).await;
        }
    }
    store.shutdown().await?;
    app.shutdown.cancel();
    let result = match served_early {
        Some(result) => result,
        None => server.await,
    };
    match result {
        Ok(result) => result.context("serving HTTPS")?,
        Err(e) => bail!("server task failed: {e}"),
    }
    Ok(())
}

/// Asks the leader (through `join_url`) to add this server, until it has. A conflict (another
/// server joining at the same moment) or a missing leader is temporary: asking again is safe,
/// since adding a member that already votes changes nothing.
async fn ask_to_be_added(
    ca_pem: &str,
    secret: &str,
    join_url: &str,
    request: &AddMember,
) -> anyhow::Result<()> {
    let client = skiff_client::Client::new(join_url, ca_pem, secret)?;
    let request = serde_json::to_value(request)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    let mut pause = Duration::from_millis(250);
    loop {
        let answer: Result<serde_json::Value, _> = client
            .request_leader(Method::POST, "/skiff/v1/members", Some(&request))
            .await;
        match answer {
            Ok(_) => return Ok(()),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "asking the leader to add this server; asking again"
                );
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context("asking the leader to add this server"))
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// On the leader, every second: learners that have caught up become voters. A join cut short
/// (the joiner or the leader died between its two steps) is finished here.
async fn promote_learners(app: Arc<App>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        if app.store.status().is_leader {
            match app.store.promote_caught_up_learners().await {
                Ok(ids) if !ids.is_empty() => tracing::info!(?ids, "promoted learners to voters"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "promoting learners"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Secrets kept in the data dir: created by the first server, or left by an earlier join.
fn local_secrets(
    layout: &Layout,
    joined: bool,
) -> anyhow::Result<(ClusterCa, String, String, u64)> {
    if joined {
        let ca = ClusterCa::from_pem(
            std::fs::read_to_string(layout.tls().join("ca.crt"))?,
            std::fs::read_to_string(layout.tls().join("ca.key"))?,
        )?;
        let secret = std::fs::read_to_string(layout.secret())?.trim().to_string();
        let admin = std::fs::read_to_string(layout.admin_token())?
            .trim()
            .to_string();
        let id = std::fs::read_to_string(layout.member_id())?
            .trim()
            .parse()?;
        return Ok((ca, secret, admin, id));
    }
    std::fs::create_dir_all(layout.tls())?;
    let ca = ClusterCa::load_or_create(&layout.tls())?;
    let secret = pki::load_or_create_token(&layout.secret())?;
    let admin = pki::load_or_create_token(&layout.admin_token())?;
    let id = match std::fs::read_to_string(layout.member_id()) {
        Ok(text) => text.trim().parse().context("reading the member id")?,
        Err(_) => {
            pki::write_secret(&layout.member_id(), b"1")?;
            1
        }
    };
    Ok((ca, secret, admin, id))
}

/// Steps 1–2 of a join (see skiff_apiserver::cluster): trust the CA the token pins, then
/// receive the cluster's secrets and a member id.
async fn join_secrets(
    layout: &Layout,
    join_url: &str,
    token: &str,
    name: &str,
    url: &str,
) -> anyhow::Result<(ClusterCa, String, String, u64)> {
    let token = JoinToken::parse(token).context("reading --token")?;
    let ca_pem = fetch_ca_unverified(join_url).await?;
    token.verify_ca(&ca_pem).with_context(|| {
        format!("the server at {join_url} does not hold the CA this token was issued for")
    })?;
    let client = skiff_client::Client::new(join_url, &ca_pem, &token.secret)?;
    let request = JoinRequest {
        name: name.to_string(),
        addr: url.to_string(),
    };
    let grant: JoinGrant = client
        .request_leader(
            Method::POST,
            "/skiff/v1/join",
            Some(&serde_json::to_value(&request)?),
        )
        .await
        .context("asking to join")?;
    if grant.ca_cert != ca_pem {
        bail!("the leader's CA differs from the one the join token pins");
    }
    let ca = ClusterCa::from_pem(grant.ca_cert, grant.ca_key)?;
    let node_ca = ClusterCa::from_pem(grant.node_ca_cert, grant.node_ca_key)?;
    std::fs::create_dir_all(layout.tls())?;
    pki::write_secret(&layout.tls().join("ca.key"), ca.key_pem.as_bytes())?;
    pki::write_secret(&layout.tls().join("ca.crt"), ca.cert_pem.as_bytes())?;
    pki::write_secret(
        &layout.tls().join("node-ca.key"),
        node_ca.key_pem.as_bytes(),
    )?;
    pki::write_secret(
        &layout.tls().join("node-ca.crt"),
        node_ca.cert_pem.as_bytes(),
    )?;
    // Every member signs and checks ServiceAccount tokens with one key, and seals and opens
    // Secrets with one encryption configuration.
    pki::write_secret(
        &layout.tls().join("service-account.key"),
        grant.service_account_key.as_bytes(),
    )?;
    pki::encryption::write(
        &layout.tls().join("encryption-config.yaml"),
        &grant.encryption_config,
    )?;
    pki::write_secret(&layout.secret(), token.secret.as_bytes())?;
    pki::write_secret(&layout.admin_token(), grant.admin_token.as_bytes())?;
    // Written last: its presence means "joined", and a restart skips the join.
    pki::write_secret(&layout.member_id(), grant.id.to_string().as_bytes())?;
    Ok((ca, token.secret, grant.admin_token, grant.id))
}

/// Every name the server is reached by: loopback, its name and addresses, `--tls-san`, and the
/// `kubernetes` Service's address and names (for clients inside pods).
fn subject_alt_names(
    args: &ServerArgs,
    advertise: IpAddr,
    name: &str,
    service_ip: Ipv4Addr,
) -> Vec<String> {
    let mut sans = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        name.to_string(),
        advertise.to_string(),
    ];
    sans.extend(skiff_apiserver::kubernetes_service::subject_alt_names(
        service_ip,
    ));
    if !args.listen.ip().is_unspecified() {
        sans.push(args.listen.ip().to_string());
    }
    sans.extend(args.tls_san.iter().cloned());
    sans.sort();
    sans.dedup();
    sans
}

/// The address to advertise when none is given: the listen address, or, for 0.0.0.0, the
/// address of the interface the default route leaves by. Connecting a UDP socket only selects
/// a route; it sends nothing.
fn advertise_default(listen: IpAddr) -> IpAddr {
    if !listen.is_unspecified() {
        return listen;
    }
    let routed = UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.1:9").map(|_| s))
        .and_then(|s| s.local_addr());
    match routed {
        Ok(addr) if !addr.ip().is_unspecified() => addr.ip(),
        _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
    }
}

/// The kubeconfig of this machine points at loopback when the server listens everywhere.
fn kubeconfig_host(listen: IpAddr) -> IpAddr {
    if listen.is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        listen
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "skiff".to_string())
}

/// Whichever server leads makes sure the system namespaces exist (retrying while there is no
/// leader yet). Followers leave it to the leader.
/// Starts the leader-only loops when this member becomes leader and stops them when it stops
/// being leader (another member's loops take over; two schedulers must never run at once for
/// long, and the store's compare-and-swap keeps even that brief overlap safe).
async fn leader_loops(
    app: Arc<App>,
    client: skiff_client::Client,
    cidr: ClusterCidr,
    weights: skiff_scheduler::Weights,
    node_lifecycle: skiff_controllers::nodelifecycle::Config,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut running: Option<tokio::sync::watch::Sender<bool>> = None;
    loop {
        let leading = app.store.status().is_leader;
        match (leading, running.is_some()) {
            (true, false) => {
                tracing::info!("leading: starting node IPAM, scheduler and controllers");
                app.leases.reset();
                let (tx, rx) = tokio::sync::watch::channel(false);
                // One watch per kind for all the leader loops: they share these stores.
                let informers = skiff_client::informer::Informers::new(client.clone());
                let leases = app.clone();
                let config = skiff_controllers::runner::Config {
                    heartbeats: Arc::new(move || leases.leases.as_timestamps()),
                    node_lifecycle,
                    cluster_cidr: cidr,
                    root_ca: app.cluster.ca_cert_pem.clone(),
                };
                tokio::spawn(skiff_controllers::runner::run(
                    client.clone(),
                    informers.clone(),
                    config,
                    rx.clone(),
                ));
                tokio::spawn(skiff_scheduler::runner::run(
                    client.clone(),
                    informers,
                    weights,
                    rx.clone(),
                ));
                running = Some(tx);
            }
            (false, true) => {
                tracing::info!("no longer leading: stopping the leader loops");
                if let Some(tx) = running.take() {
                    let _ = tx.send(true);
                }
            }
            _ => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => {
                if let Some(tx) = running.take() {
                    let _ = tx.send(true);
                }
                return;
            }
        }
    }
}

/// The service-account signing key's PEM at `path`, made (0600) on first start.
fn service_account_key(path: &std::path::Path) -> anyhow::Result<String> {
    if let Ok(pem) = std::fs::read_to_string(path) {
        return Ok(pem);
    }
    let pem = skiff_apiserver::auth::service_accounts::SigningKey::generate_pem()
        .map_err(anyhow::Error::msg)?;
    pki::write_secret(path, pem.as_bytes())?;
    Ok(pem)
}

fn parse_pod_security(value: &str) -> Result<skiff_api::pod_security::Level, String> {
    skiff_api::pod_security::Level::parse(value)
        .ok_or_else(|| format!("{value:?}: one of privileged, baseline, restricted"))
}

/// Makes the system namespaces and Kubernetes' default roles and bindings, on whichever member
/// leads; returns once they exist.
async fn keep_system_namespaces(app: Arc<App>) {
    loop {
        if app.shutdown.is_cancelled() {
            return;
        }
        if app.store.status().is_leader {
            let made = match app::ensure_system_namespaces(&app).await {
                Ok(()) => skiff_apiserver::auth::bootstrap::ensure_default_policy(&app).await,
                Err(e) => Err(e),
            };
            let made = match made {
                Ok(()) => app::ensure_default_storage_class(&app).await,
                Err(e) => Err(e),
            };
            match made {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "creating system namespaces and default roles")
                }
            }
        } else if app.store.status().leader.is_some()
            && app
                .store
                .get(&skiff_store::object_key("namespaces", "", "default"))
                .is_some()
            && app
                .store
                .get(&skiff_store::object_key(
                    skiff_apiserver::auth::rbac::CLUSTER_ROLE_BINDINGS,
                    "",
                    "cluster-admin",
                ))
                .is_some()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The leader keeps the `kubernetes` Service and its endpoints naming the current members
/// (checked every 10 s, as kube-apiserver's endpoint reconciler does).
async fn keep_kubernetes_service(app: Arc<App>) {
    // Quickly at first, so pods started right after the cluster see the Service.
    let mut every = Duration::from_millis(200);
    while !app.shutdown.is_cancelled() {
        if app.store.status().is_leader {
            match skiff_apiserver::kubernetes_service::reconcile(&app).await {
                Ok(true) => every = Duration::from_secs(10),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "updating the kubernetes service"),
            }
        }
        tokio::select! {
            _ = app.shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// The leader writes what deletes freed into ResourceQuotas' status (the quota controller).
async fn keep_quota_status(app: Arc<App>) {
    while !app.shutdown.is_cancelled() {
        if app.store.status().is_leader {
            skiff_apiserver::quota::refresh(&app).await;
        }
        tokio::select! {
            _ = app.shutdown.cancelled() => return,
            _ = tokio::time::sleep(skiff_apiserver::quota::REFRESH) => {}
        }
    }
}

pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
