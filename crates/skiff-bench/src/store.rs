//! `skiff bench store`: write throughput and latency of small objects, side by side.
//!
//! Three targets, each as a one-member and a three-member cluster on this machine:
//! - `api`: real `skiff server` processes; clients POST ~256-byte ConfigMaps over HTTPS with the
//!   admin token, round-robin across members (followers forward to the leader);
//! - `store`: the leader's store runs in this process and clients call `Store::propose` on it
//!   directly — no HTTP, JSON decoding or admission; the other members are `skiff bench
//!   store-peer` processes (Raft over plain-text gRPC on loopback). Members run in processes of
//!   their own because several sled databases in one process share sled's I/O threads, which
//!   measured 5× slower than the real deployment;
//! - `etcd`: when an `etcd` binary is on PATH, the same puts through etcd's gRPC KV API.
//!
//! Every write is acknowledged before the client sends its next one, so throughput comes from
//! concurrency, as with etcd's own benchmark tool.
//!
//! With `--lab`, the three members of each target run on three hosts of a `skiff lab` instead
//! of loopback, each host's link delayed by `--delay` (default 1 ms each way, through `skiff lab
//! netem`): `api` is the lab's own three servers, `store` has its leader in a thread that
//! entered host-1 and its peers on host-2 and host-3, and etcd's members run one per host. The
//! clients of `api` and `etcd` write from outside the hosts, over the lab's bridge.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use serde_json::json;
use skiff_client::{Client, Kubeconfig, Method};
use skiff_store::{object_key, Op, PeerTransport, Store, StoreConfig};

use crate::placement::{Placement, LAB_ETCD_CLIENT_PORT, LAB_ETCD_PEER_PORT, LAB_STORE_PORT};
use crate::{free_port, wait_ready, which, Children};

mod etcd_pb {
    tonic::include_proto!("etcdserverpb");
}

#[derive(Args, Debug, Clone)]
pub struct StorePeer {
    #[arg(long)]
    id: u64,
    #[arg(long)]
    listen: std::net::SocketAddr,
    #[arg(long)]
    data_dir: PathBuf,
}

/// The secret the benchmark's store members share (they only listen on loopback).
const BENCH_SECRET: &str = "skiff-bench";

#[derive(Args, Debug, Clone)]
pub struct StoreBench {
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Writes per run (split evenly between clients).
    #[arg(long, default_value_t = 10_000)]
    writes: usize,
    /// Cluster sizes to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    members: Vec<usize>,
    /// Targets to measure: api, store, etcd (etcd only when installed); and, on loopback, the
    /// cost of who-may-do-what: api-rbac (a user token granted `edit` by a RoleBinding, so
    /// every write is decided by RBAC, where the admin's `system:masters` is not),
    /// api-audit (the admin, with `--audit-log-path`), api-rbac-audit (both).
    #[arg(long, value_delimiter = ',', default_value = "api,store,etcd")]
    targets: Vec<String>,
    /// Also write every write's start (ms since the run began), latency (ms) and client number
    /// to `DIR/<target>-<members>.tsv`, to see whether slow writes come in clusters (stalls).
    #[arg(long)]
    timeline: Option<PathBuf>,
    /// Run the three members of every target on three lab hosts (network namespaces joined by
    /// a bridge, as `skiff lab up` makes them) rather than on loopback. Needs root.
    #[arg(long)]
    lab: bool,
    /// With --lab: the delay added to each host's link, each way (`skiff lab netem --delay`);
    /// `0` for none.
    #[arg(long, default_value = "1ms", requires = "lab")]
    delay: String,
    /// With --lab: the lab's directory (a new one in the temporary directory by default);
    /// removed at the end unless --keep.
    #[arg(long, requires = "lab")]
    lab_dir: Option<PathBuf>,
    /// With --lab: leave the lab up afterwards.
    #[arg(long, requires = "lab")]
    keep: bool,
}

/// One measured run.
struct Run {
    target: &'static str,
    members: usize,
    clients: usize,
    writes: usize,
    elapsed: Duration,
    /// Sorted.
    latencies: Vec<Duration>,
    /// (start since the run began, latency, client) of every write, in start order.
    timeline: Vec<(Duration, Duration, usize)>,
    /// CPU time the server processes spent during the writes (user and system), where the
    /// benchmark started them: a cost the machine's swings in speed hardly move.
    server_cpu: Option<Duration>,
}

impl Run {
    fn throughput(&self) -> f64 {
        self.writes as f64 / self.elapsed.as_secs_f64()
    }

    /// The `per_mille`/1000 quantile in milliseconds.
    fn quantile(&self, per_mille: usize) -> f64 {
        let index =
            (self.latencies.len() * per_mille / 1000).min(self.latencies.len().saturating_sub(1));
        self.latencies
            .get(index)
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0)
    }

    /// Microseconds of server CPU per write, where it was measured.
    fn cpu_per_write(&self) -> Option<f64> {
        let cpu = self.server_cpu?;
        Some(cpu.as_secs_f64() * 1e6 / self.writes.max(1) as f64)
    }

    fn percentile(&self, p: usize) -> f64 {
        self.quantile(p * 10)
    }

    fn print(&self) {
        println!(
            "{:<6} {:>7} {:>7} {:>7} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            self.target,
            self.members,
            self.clients,
            self.writes,
            self.throughput(),
            self.percentile(50),
            self.percentile(99),
            self.quantile(999),
            self.latencies
                .last()
                .map(|d| d.as_secs_f64() * 1000.0)
                .unwrap_or(0.0)
        );
    }

    fn write_timeline(&self, dir: &Path) -> anyhow::Result<()> {
        use std::fmt::Write;
        let mut text = String::from("start_ms\tlatency_ms\tclient\n");
        for (start, latency, client) in &self.timeline {
            let _ = writeln!(
                text,
                "{:.3}\t{:.3}\t{client}",
                start.as_secs_f64() * 1000.0,
                latency.as_secs_f64() * 1000.0
            );
        }
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{}-{}.tsv", self.target, self.members));
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    }
}

/// `skiff bench store`: on loopback, or with `--lab` on three lab hosts.
pub async fn run(bench: StoreBench) -> anyhow::Result<()> {
    if bench.lab {
        return run_on_lab(bench).await;
    }
    measure(&bench, &Placement::Loopback).await
}

/// `--lab`: a lab of three hosts, each link delayed, every target's members one per host.
async fn run_on_lab(mut bench: StoreBench) -> anyhow::Result<()> {
    if !skiff_lab::is_root() {
        bail!("skiff bench store --lab builds a lab (network namespaces): run it as root");
    }
    if bench.members != [1, 3] && bench.members != [3] {
        bail!("--members with --lab: the lab has three hosts, so only 3 is measured");
    }
    bench.members = vec![3];
    let delay = match bench.delay.trim() {
        "0" | "0ms" | "none" => None,
        text => {
            skiff_lab::delayer::parse_delay(text)?;
            Some(text.to_string())
        }
    };
    let plan = crate::LabPlan {
        name: "store",
        hosts: 3,
        images: None,
        dir: bench.lab_dir.clone(),
        keep: bench.keep,
    };
    let bench = &bench;
    crate::on_lab(plan, |dir| async move {
        if let Some(delay) = &delay {
            for host in ["host-1", "host-2", "host-3"] {
                skiff_lab::faults::netem(&dir, host, Some(delay), None)?;
            }
        }
        let lab = skiff_lab::state::Lab::load(&dir)?;
        let second = lab.host("host-2")?.clone();
        let placement = Placement::Lab(Box::new(lab));
        let rtt = placement
            .on_first(move || async move { connect_round_trip(&second) })
            .await?;
        println!(
            "# three lab hosts, {} each way on each host's link; host-1 → host-2 TCP connect: {:.2} ms (median of 20)",
            delay.as_deref().unwrap_or("no delay"),
            rtt.as_secs_f64() * 1000.0
        );
        measure(bench, &placement).await
    })
    .await
}

/// The median time of 20 TCP connects to the host's API port: one round trip.
fn connect_round_trip(host: &skiff_lab::state::Host) -> anyhow::Result<Duration> {
    let mut times = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        std::net::TcpStream::connect_timeout(&(host.ip, 6443).into(), Duration::from_secs(5))
            .with_context(|| format!("connecting to {}:6443", host.ip))?;
        times.push(started.elapsed());
        std::thread::sleep(Duration::from_millis(10));
    }
    times.sort();
    Ok(times[times.len() / 2])
}

/// Every target at every cluster size, then skiff against etcd.
async fn measure(bench: &StoreBench, placement: &Placement) -> anyhow::Result<()> {
    let etcd_installed = which("etcd").is_some();
    println!(
        "# skiff bench store: {} clients, {} writes of ~256 B per run",
        bench.clients, bench.writes
    );
    println!(
        "{:<6} {:>7} {:>7} {:>7} {:>10} {:>8} {:>8} {:>8} {:>8}",
        "target",
        "members",
        "clients",
        "writes",
        "writes/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms"
    );
    let mut runs = Vec::new();
    for &members in &bench.members {
        for target in &bench.targets {
            let run = match target.as_str() {
                "store" => bench_store(bench, members, placement).await?,
                "api" => match placement {
                    Placement::Loopback => bench_api(bench, members, ApiAuth::ADMIN).await?,
                    Placement::Lab(lab) => bench_lab_api(bench, members, lab).await?,
                },
                "api-rbac" | "api-audit" | "api-rbac-audit" => match placement {
                    Placement::Loopback => {
                        let auth = ApiAuth {
                            name: match target.as_str() {
                                "api-rbac" => "api-rbac",
                                "api-audit" => "api-audit",
                                _ => "api-rbac-audit",
                            },
                            rbac: target.contains("rbac"),
                            audit: target.contains("audit"),
                        };
                        bench_api(bench, members, auth).await?
                    }
                    Placement::Lab(_) => bail!("{target} runs on loopback only"),
                },
                "etcd" if etcd_installed => bench_etcd(bench, members, placement).await?,
                "etcd" => {
                    println!("etcd   (not installed: apt-get install etcd-server)");
                    continue;
                }
                other => bail!(
                    "unknown target {other}: use api, store, etcd, api-rbac, api-audit or api-rbac-audit"
                ),
            };
            run.print();
            if let Some(dir) = &bench.timeline {
                run.write_timeline(dir)?;
            }
            runs.push(run);
        }
    }
    for &members in &bench.members {
        let find = |t: &str| {
            runs.iter()
                .find(|r: &&Run| r.target == t && r.members == members)
        };
        if let Some(admin) = find("api") {
            for target in ["api-rbac", "api-audit", "api-rbac-audit"] {
                if let Some(run) = find(target) {
                    println!(
                        "{members} member(s): {target} / api = {:.2}x throughput, p99 {:.2} ms vs {:.2} ms{}",
                        run.throughput() / admin.throughput(),
                        run.percentile(99),
                        admin.percentile(99),
                        match (run.cpu_per_write(), admin.cpu_per_write()) {
                            (Some(run), Some(admin)) => format!(
                                ", server CPU {run:.0} vs {admin:.0} us/write ({:.2}x)",
                                run / admin
                            ),
                            _ => String::new(),
                        }
                    );
                }
            }
        }
        if let Some(etcd) = find("etcd") {
            for target in ["store", "api"] {
                if let Some(run) = find(target) {
                    println!(
                        "{members} member(s): skiff {target} / etcd = {:.2}x throughput, p99 {:.2} ms vs {:.2} ms",
                        run.throughput() / etcd.throughput(),
                        run.percentile(99),
                        etcd.percentile(99)
                    );
                }
            }
        }
    }
    Ok(())
}

/// A ConfigMap of about 256 bytes as JSON.
fn small_object(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default"},
        "data": {"value": "x".repeat(150)},
    })
}

/// Runs `clients` tasks that each perform `per_client` writes with `write(client, i)`.
async fn drive<F, Fut>(
    target: &'static str,
    members: usize,
    bench: &StoreBench,
    write: F,
) -> anyhow::Result<Run>
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let per_client = bench.writes / bench.clients.max(1);
    let write = Arc::new(write);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..bench.clients {
        let write = write.clone();
        tasks.push(tokio::spawn(async move {
            let mut timeline = Vec::with_capacity(per_client);
            for i in 0..per_client {
                let t = Instant::now();
                write(client, i).await?;
                timeline.push((t - started, t.elapsed(), client));
            }
            anyhow::Ok(timeline)
        }));
    }
    let mut timeline = Vec::new();
    for task in tasks {
        timeline.extend(task.await??);
    }
    let elapsed = started.elapsed();
    timeline.sort();
    let mut latencies: Vec<Duration> = timeline.iter().map(|(_, latency, _)| *latency).collect();
    latencies.sort();
    Ok(Run {
        target,
        members,
        clients: bench.clients,
        writes: latencies.len(),
        elapsed,
        latencies,
        timeline,
        server_cpu: None,
    })
}

/// Serves one store member until killed.
pub async fn run_store_peer(peer: StorePeer) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(peer.listen).await?;
    let addr = format!("http://{}", listener.local_addr()?);
    let config = StoreConfig::new(peer.id, &format!("bench-{}", peer.id), &addr, peer.data_dir);
    let store = Store::open(config, PeerTransport::new(None, BENCH_SECRET)).await?;
    serve_raft(&store, listener).await;
    Ok(())
}

async fn serve_raft(store: &Store, listener: tokio::net::TcpListener) {
    // Without TCP_NODELAY the followers' replies waited for delayed ACKs: that 40 ms stall was
    // the whole of the three-member p99 this benchmark used to report.
    let incoming = skiff_store::service::nodelay_incoming(listener);
    let _ = tonic::transport::Server::builder()
        .add_service(store.raft_service())
        .serve_with_incoming(incoming)
        .await;
}

async fn bench_store(
    bench: &StoreBench,
    members: usize,
    placement: &Placement,
) -> anyhow::Result<Run> {
    let dir = tempfile::tempdir()?;
    let exe = std::env::current_exe()?;
    let mut children = Children(Vec::new());
    let mut peers = Vec::new();
    for id in 2..=members as u64 {
        let listen = placement.addr(id as usize - 1, LAB_STORE_PORT)?;
        let child = placement
            .command(id as usize - 1, &exe)
            .args(["bench", "store-peer", "--id", &id.to_string()])
            .args(["--listen", &listen.to_string(), "--data-dir"])
            .arg(dir.path().join(id.to_string()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting a store peer")?;
        children.0.push(child);
        peers.push((id, format!("http://{listen}")));
    }
    let listen = placement.addr(0, LAB_STORE_PORT)?;
    let data = dir.path().join("1");
    let bench = bench.clone();
    let run = placement
        .on_first(move || async move {
            let listener = tokio::net::TcpListener::bind(listen).await?;
            let addr = format!("http://{}", listener.local_addr()?);
            let config = StoreConfig::new(1, "bench-1", &addr, data);
            let store = Store::open(config, PeerTransport::new(None, BENCH_SECRET)).await?;
            let serving = store.clone();
            let server = tokio::spawn(async move { serve_raft(&serving, listener).await });
            store.initialize().await?;
            store.wait_for_leader(Duration::from_secs(10)).await?;
            for (id, addr) in &peers {
                // The peer may still be starting: adding retries until it answers.
                let deadline = Instant::now() + Duration::from_secs(30);
                while let Err(e) = store.add_member(*id, &format!("bench-{id}"), addr).await {
                    if Instant::now() > deadline {
                        bail!("adding store peer {id}: {e}");
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            let leader = store.clone();
            let run = drive("store", members, &bench, move |client, i| {
                let store = leader.clone();
                async move {
                    let name = format!("bench-{client}-{i}");
                    let op = Op::Create {
                        key: object_key("configmaps", "default", &name),
                        object: small_object(&name),
                    };
                    store
                        .propose_one(op)
                        .await?
                        .map_err(|e| anyhow::anyhow!(e))?;
                    Ok(())
                }
            })
            .await?;
            store.shutdown().await?;
            server.abort();
            Ok(run)
        })
        .await?;
    drop(children);
    Ok(run)
}

/// Who writes in an `api` run, and whether the servers keep an audit log.
#[derive(Clone, Copy)]
struct ApiAuth {
    name: &'static str,
    rbac: bool,
    audit: bool,
}

impl ApiAuth {
    const ADMIN: ApiAuth = ApiAuth {
        name: "api",
        rbac: false,
        audit: false,
    };
}

async fn bench_api(bench: &StoreBench, members: usize, auth: ApiAuth) -> anyhow::Result<Run> {
    let dir = tempfile::tempdir()?;
    let exe = std::env::current_exe()?;
    let mut children = Children(Vec::new());
    let mut urls: Vec<String> = Vec::new();
    let mut token = String::new();
    let mut ca = String::new();
    for n in 0..members {
        let port = free_port()?;
        let url = format!("https://127.0.0.1:{port}");
        let data = dir.path().join(format!("s{n}"));
        let mut command = Command::new(&exe);
        command
            // The store benchmark runs no pods: no node agent (and no containerd) per member.
            .args([
                "server",
                "--disable-agent",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if auth.audit {
            command.arg("--audit-log-path").arg(data.join("audit.log"));
        }
        if n > 0 {
            let join = std::fs::read_to_string(dir.path().join("s0").join("token"))?;
            command.args(["--join", urls[0].as_str(), "--token", join.trim()]);
        }
        children
            .0
            .push(command.spawn().context("starting skiff server")?);
        wait_ready(&data.join("kubeconfig.yaml"), &url).await?;
        if n == 0 {
            let config = Kubeconfig::read(&data.join("kubeconfig.yaml"))?;
            token = config.token;
            ca = config.ca_pem;
        }
        urls.push(url);
    }
    if auth.rbac {
        token = rbac_writer(&exe, &dir.path().join("s0"), &urls[0], &ca, &token).await?;
    }
    let cpu_before = children_cpu(&children);
    let mut run = api_writes(bench, members, auth.name, urls, &ca, &token).await;
    if let (Ok(run), Some(before), Some(after)) = (&mut run, cpu_before, children_cpu(&children)) {
        run.server_cpu = after.checked_sub(before);
    }
    drop(children);
    run
}

/// The CPU time (user and system, from `/proc/PID/stat`) the children have used so far.
fn children_cpu(children: &Children) -> Option<Duration> {
    let ticks_per_second = 100.0; // USER_HZ, fixed at 100 by Linux's ABI
    let mut total = 0.0;
    for pid in children.pids() {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        total += (utime + stime) / ticks_per_second;
    }
    Some(Duration::from_secs_f64(total))
}

/// A user token that may write ConfigMaps in `default` through a RoleBinding to the default
/// `edit` role (made with `skiff token create`, as an operator would), once RBAC says so.
async fn rbac_writer(
    exe: &Path,
    data: &Path,
    url: &str,
    ca: &str,
    admin_token: &str,
) -> anyhow::Result<String> {
    let out = Command::new(exe)
        .args(["token", "create", "--user", "bench-writer", "--data-dir"])
        .arg(data)
        .output()
        .context("skiff token create")?;
    if !out.status.success() {
        bail!(
            "skiff token create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let admin = Client::new(url, ca, admin_token)?;
    let binding = serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "bench-writer", "namespace": "default"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"kind": "User", "name": "bench-writer"}],
    });
    admin
        .request::<serde_json::Value>(
            Method::POST,
            &format!("{url}/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings"),
            &[],
            Some(("application/json", serde_json::to_vec(&binding)?)),
        )
        .await
        .context("binding the writer to edit")?;
    // The default policy is made, and `edit` filled by the aggregation controller, shortly
    // after start: until then even the review may be refused.
    let writer = Client::new(url, ca, &token)?;
    let review = serde_json::json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"verb": "create", "resource": "configmaps", "namespace": "default"}},
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let answer: Result<serde_json::Value, _> = writer
            .request(
                Method::POST,
                &format!("{url}/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"),
                &[],
                Some(("application/json", serde_json::to_vec(&review)?)),
            )
            .await;
        if answer.is_ok_and(|a| a["status"]["allowed"] == true) {
            return Ok(token);
        }
        if std::time::Instant::now() > deadline {
            bail!("the writer was never allowed to create configmaps");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Each client POSTs ConfigMaps to member `client mod N` with `token`.
async fn api_writes(
    bench: &StoreBench,
    members: usize,
    target: &'static str,
    urls: Vec<String>,
    ca: &str,
    token: &str,
) -> anyhow::Result<Run> {
    // One client per benchmark client, as independent clients would have, each writing to
    // member `client mod N`.
    let clients: Vec<Client> = (0..bench.clients)
        .map(|client| Client::new(&urls[client % urls.len()], ca, token))
        .collect::<Result<_, _>>()?;
    let clients = Arc::new(clients);
    drive(target, members, bench, move |c, i| {
        let client = clients[c].clone();
        async move {
            let name = format!("bench-{c}-{i}");
            let url = format!("{}/api/v1/namespaces/default/configmaps", client.server());
            let body = serde_json::to_vec(&small_object(&name))?;
            client
                .request::<serde_json::Value>(
                    Method::POST,
                    &url,
                    &[],
                    Some(("application/json", body)),
                )
                .await
                .with_context(|| format!("create {name}"))?;
            Ok(())
        }
    })
    .await
}

/// `api` on a lab: its three servers (with their node agents, idle) are the members.
async fn bench_lab_api(
    bench: &StoreBench,
    members: usize,
    lab: &skiff_lab::state::Lab,
) -> anyhow::Result<Run> {
    let mut urls = Vec::new();
    let mut config = None;
    for k in 1..=members {
        let kubeconfig = Kubeconfig::read(&lab.dir.join(format!("kubeconfig-host-{k}.yaml")))?;
        urls.push(kubeconfig.server.clone());
        config = Some(kubeconfig);
    }
    let config = config.context("no lab server")?;
    api_writes(bench, members, "api", urls, &config.ca_pem, &config.token).await
}

async fn bench_etcd(
    bench: &StoreBench,
    members: usize,
    placement: &Placement,
) -> anyhow::Result<Run> {
    let dir = tempfile::tempdir()?;
    let mut addrs = Vec::new();
    for n in 0..members {
        addrs.push((
            placement.addr(n, LAB_ETCD_CLIENT_PORT)?,
            placement.addr(n, LAB_ETCD_PEER_PORT)?,
        ));
    }
    let cluster: Vec<String> = addrs
        .iter()
        .enumerate()
        .map(|(n, (_, peer))| format!("e{n}=http://{peer}"))
        .collect();
    let mut children = Children(Vec::new());
    for (n, (client, peer)) in addrs.iter().enumerate() {
        let child = placement
            .command(n, Path::new("etcd"))
            .args(["--name", &format!("e{n}"), "--data-dir"])
            .arg(dir.path().join(format!("e{n}")))
            .args(["--listen-client-urls", &format!("http://{client}")])
            .args(["--advertise-client-urls", &format!("http://{client}")])
            .args(["--listen-peer-urls", &format!("http://{peer}")])
            .args(["--initial-advertise-peer-urls", &format!("http://{peer}")])
            .args(["--initial-cluster", &cluster.join(",")])
            .args([
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                "skiff-bench",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting etcd")?;
        children.0.push(child);
    }
    let mut kv_clients = Vec::new();
    for (client, _) in &addrs {
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{client}"))?.connect_lazy();
        kv_clients.push(etcd_pb::kv_client::KvClient::new(channel));
    }
    // Wait until the cluster takes writes.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let put = etcd_pb::PutRequest {
            key: b"/bench/ready".to_vec(),
            value: b"1".to_vec(),
        };
        if kv_clients[0].clone().put(put).await.is_ok() {
            break;
        }
        if Instant::now() > deadline {
            bail!("etcd did not start");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kv_clients = Arc::new(kv_clients);
    let run = drive("etcd", members, bench, move |client, i| {
        let mut kv = kv_clients[client % kv_clients.len()].clone();
        async move {
            let name = format!("bench-{client}-{i}");
            let value = serde_json::to_vec(&small_object(&name))?;
            kv.put(etcd_pb::PutRequest {
                key: format!("/registry/configmaps/default/{name}").into_bytes(),
                value,
            })
            .await?;
            Ok(())
        }
    })
    .await?;
    drop(children);
    Ok(run)
}
