//! `skiff bench`: the measurements in docs/benchmarks.md, each next to its peer in the same run.
//!
//! A crate of its own, so the `skiff` binary edge machines run carries none of it (no etcd
//! client, no load generators): the binary has it only when built with `--features bench`.
//!
//! ## Layout
//! - [`store`]: write throughput and latency of small objects, skiff's API and store against
//!   etcd, on loopback or on three lab hosts ([`placement`]).
//! - [`pods`]: pod startup with real containers, a rolling update, and ([`proxy`]) the service
//!   proxy's cost.
//! - [`scheduler`]: pods bound per second with simulated nodes.
//! - [`failover`]: leader loss on a lab, next to etcd.
//! - [`node_loss`]: host loss on a lab: how long until its replicas run elsewhere.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Args, Subcommand};
use skiff_client::{Client, Kubeconfig};

pub mod failover;
pub mod node_loss;
pub mod placement;
pub mod pods;
pub mod proxy;
pub mod scheduler;
pub mod store;

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: BenchWhat,
}

#[derive(Subcommand, Debug)]
enum BenchWhat {
    /// Create small objects as fast as N concurrent clients can.
    Store(store::StoreBench),
    /// Pod startup latency with real containers, and the agent's memory.
    Pods(pods::PodBench),
    /// Scheduler throughput with simulated nodes: pods bound per second.
    Scheduler(scheduler::SchedulerBench),
    /// Leader loss on a lab of three servers: how long until writes are acknowledged again
    /// (and the same for etcd).
    Failover(failover::FailoverBench),
    /// Host loss on a lab of four: how long until a killed host's replicas run elsewhere.
    NodeLoss(node_loss::NodeLossBench),
    /// (Used by `bench store`.) Run one bare store member serving Raft on `--listen`.
    #[command(hide = true)]
    StorePeer(store::StorePeer),
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.what {
        BenchWhat::Store(bench) => store::run(bench).await,
        BenchWhat::StorePeer(peer) => store::run_store_peer(peer).await,
        BenchWhat::Pods(bench) => pods::run(bench).await,
        BenchWhat::Scheduler(bench) => scheduler::run(bench).await,
        BenchWhat::Failover(bench) => failover::run(bench).await,
        BenchWhat::NodeLoss(bench) => node_loss::run(bench).await,
    }
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
}

/// Child processes killed when dropped.
pub struct Children(Vec<Child>);

impl Children {
    /// The children's process ids.
    pub fn pids(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().map(Child::id)
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits until the server at `url` answers with the credentials of `kubeconfig` (written by
/// the server itself once it has started).
pub async fn wait_ready(kubeconfig: &Path, url: &str) -> anyhow::Result<Client> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(config) = Kubeconfig::read(kubeconfig) {
            let client = Client::new(url, &config.ca_pem, &config.token)?;
            let ready = client
                .get_opt::<k8s_openapi::api::core::v1::Namespace>(None, "default")
                .await;
            if matches!(ready, Ok(Some(_))) {
                return Ok(client);
            }
        }
        if Instant::now() > deadline {
            bail!("skiff server at {url} did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The lab a benchmark runs on: how many hosts, images to import, where it lives.
pub struct LabPlan {
    /// Names the default directory (`skiff-bench-NAME-PID` in the temporary directory).
    pub name: &'static str,
    pub hosts: usize,
    pub images: Option<PathBuf>,
    pub dir: Option<PathBuf>,
    /// Leave the lab up afterwards.
    pub keep: bool,
}

/// Builds a lab of `plan.hosts` hosts (three of them servers), runs `work` on its directory,
/// and removes the lab afterwards (unless `plan.keep`), also when `work` failed.
pub async fn on_lab<F, Fut, T>(plan: LabPlan, work: F) -> anyhow::Result<T>
where
    F: FnOnce(PathBuf) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let dir = plan.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("skiff-bench-{}-{}", plan.name, std::process::id()))
    });
    skiff_lab::up::up(skiff_lab::up::UpArgs {
        hosts: plan.hosts,
        servers: Some(3),
        images: plan.images,
        pod_network: None,
        disk: Vec::new(),
        dir: dir.clone(),
        timeout: 180,
        keep_on_failure: false,
    })
    .await?;
    let dir = dir.canonicalize()?;
    let result = work(dir.clone()).await;
    if !plan.keep {
        if let Err(e) = skiff_lab::down::down(&dir) {
            eprintln!("removing the lab: {e:#}");
        }
    }
    result
}

/// Calls `probe` every `every` until it gives a value, for at most `timeout` (the benchmarks'
/// waits for a leader, a write, a Ready replica).
pub async fn poll_until<T, F, Fut>(
    timeout: Duration,
    every: Duration,
    what: &str,
    mut probe: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(every).await;
    }
}
