//! `skiff bench failover`: how long writes stop when the leader's machine dies.
//!
//! ## Expected flow
//! 1. A lab of three servers (`skiff lab up --hosts 3`), each on its own host.
//! 2. Each run: find the leader; start a write every 20 ms through a survivor (each its own
//!    request, so one stuck write does not hold up the next); SIGKILL every process of the
//!    leader's host (`skiff lab kill`). The figure is the time from the kill to the first
//!    acknowledged write that was *sent after* the kill. Then the host is started again and
//!    allowed to catch up before the next run.
//! 3. Every acknowledged write must be there at the end (read through a survivor).
//! 4. The peer, in the same run: three etcd members on loopback, the leader SIGKILLed the same
//!    way, writes through a survivor (etcd's JSON gateway, `/v3/kv/put`).
//!
//! The target (issue: first acknowledged write ≤ 1 s after the kill) is etcd's default election
//! time; skiff's Raft runs 50 ms heartbeats and a 300–400 ms election timeout.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::Value;
use skiff_client::{Client, ListParams, Method};

use skiff_lab as lab;

/// How often the benchmark looks (for a leader, an acknowledged write, a ready server).
const POLL: Duration = Duration::from_millis(20);

#[derive(Args, Debug, Clone)]
pub struct FailoverBench {
    /// How many leader kills.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// The lab's directory (removed at the end unless --keep).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Leave the lab up afterwards.
    #[arg(long)]
    keep: bool,
    /// Measure skiff only (no etcd runs).
    #[arg(long)]
    skip_etcd: bool,
}

/// One write: its name, when it was sent, when it was acknowledged.
type Sent = (String, Instant, Option<Instant>);

/// A write every 20 ms while a run lasts, each on its own task (so one stuck write does not hold
/// up the next): when each was sent, and when (if) it was acknowledged.
struct WriteLoad {
    sent: Arc<Mutex<Vec<Sent>>>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl WriteLoad {
    /// Starts writing `failover-RUN-I` for I = 0, 1, … with `write`, which says whether the
    /// write was acknowledged.
    fn start<F, Fut>(run: usize, write: F) -> WriteLoad
    where
        F: Fn(String) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = bool> + Send + 'static,
    {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let log = sent.clone();
        let task = tokio::spawn(async move {
            for i in 0.. {
                let name = format!("failover-{run}-{i}");
                let index = match log.lock() {
                    Ok(mut sent) => {
                        sent.push((name.clone(), Instant::now(), None));
                        sent.len() - 1
                    }
                    Err(_) => return,
                };
                let (acked, log) = (write(name), log.clone());
                tokio::spawn(async move {
                    if acked.await {
                        if let Ok(mut sent) = log.lock() {
                            sent[index].2 = Some(Instant::now());
                        }
                    }
                });
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                    _ = stopped.wait_for(|s| *s) => return,
                }
            }
        });
        WriteLoad { sent, stop, task }
    }

    /// Waits for the first acknowledged write sent at or after `killed`; the time from the kill
    /// to its acknowledgement.
    async fn gap_after(&self, killed: Instant, what: &str) -> anyhow::Result<Duration> {
        crate::poll_until(Duration::from_secs(30), POLL, what, || async {
            let sent = self.sent.lock().ok()?;
            sent.iter()
                .filter(|(_, at, _)| *at >= killed)
                .filter_map(|(_, _, acked)| *acked)
                .min()
                .map(|acked| acked - killed)
        })
        .await
    }

    /// Stops writing; the names of the acknowledged writes.
    async fn stop(self) -> Vec<String> {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        self.sent
            .lock()
            .map(|sent| {
                sent.iter()
                    .filter(|(_, _, acked)| acked.is_some())
                    .map(|(name, _, _)| name.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

pub async fn run(args: FailoverBench) -> anyhow::Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    if !skiff_lab::is_root() {
        bail!("skiff bench failover builds a lab (network namespaces): run it as root");
    }
    let plan = crate::LabPlan {
        name: "failover",
        hosts: 3,
        images: None,
        dir: args.dir.clone(),
        keep: args.keep,
    };
    let runs = args.runs;
    let skiff = crate::on_lab(plan, |dir| async move { measure_skiff(&dir, runs).await }).await?;
    let etcd = if args.skip_etcd {
        None
    } else {
        Some(measure_etcd(args.runs).await?)
    };
    println!();
    println!(
        "leader SIGKILL → first acknowledged write sent after the kill ({} runs)",
        args.runs
    );
    println!("{:<8} {:>8} {:>8} {:>8}", "", "p50 ms", "max ms", "min ms");
    print_row("skiff", &skiff);
    if let Some(etcd) = &etcd {
        print_row("etcd", etcd);
    }
    Ok(())
}

fn print_row(name: &str, gaps: &[Duration]) {
    let mut sorted = gaps.to_vec();
    sorted.sort();
    let ms = |d: Option<&Duration>| d.map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0);
    println!(
        "{name:<8} {:>8.0} {:>8.0} {:>8.0}",
        ms(sorted.get(sorted.len() / 2)),
        ms(sorted.last()),
        ms(sorted.first())
    );
}

/// A client for each server of the lab, by host name.
fn server_clients(dir: &Path) -> anyhow::Result<Vec<(String, Client)>> {
    (1..=3)
        .map(|k| {
            let host = format!("host-{k}");
            let config = dir.join(format!("kubeconfig-{host}.yaml"));
            Ok((host, Client::from_kubeconfig(&config)?))
        })
        .collect()
}

/// The server that names itself leader (a server names itself only while it hears from a
/// quorum, so a stale view elsewhere cannot point the benchmark at a follower).
async fn leader(clients: &[(String, Client)]) -> Option<String> {
    for (host, client) in clients {
        let url = format!("{}/skiff/v1/members", client.server());
        let Ok(answer) = client.request::<Value>(Method::GET, &url, &[], None).await else {
            continue;
        };
        let found = answer["members"].as_array().and_then(|members| {
            members
                .iter()
                .find(|m| m["leader"] == true)
                .and_then(|m| m["name"].as_str())
                .map(str::to_string)
        });
        if found.as_deref() == Some(host.as_str()) {
            return found;
        }
    }
    None
}

async fn measure_skiff(dir: &Path, runs: usize) -> anyhow::Result<Vec<Duration>> {
    let clients = server_clients(dir)?;
    let mut gaps = Vec::new();
    let mut acknowledged = Vec::new();
    for run in 0..runs {
        let victim = crate::poll_until(Duration::from_secs(30), POLL, "a leader", || {
            leader(&clients)
        })
        .await?;
        let (_, survivor) = clients
            .iter()
            .find(|(host, _)| *host != victim)
            .context("a survivor")?;
        let client = survivor.clone();
        let load = WriteLoad::start(run, move |name| {
            let client = client.clone();
            async move {
                let mut cm = ConfigMap::default();
                cm.metadata.name = Some(name);
                let created = client.create(Some("default"), &cm);
                matches!(
                    tokio::time::timeout(Duration::from_secs(2), created).await,
                    Ok(Ok(_))
                )
            }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        let killed = Instant::now();
        lab::faults::kill(dir, &victim)?;
        let gap = load.gap_after(killed, "a write after the kill").await?;
        acknowledged.extend(load.stop().await);
        println!(
            "run {:>2}: killed {victim}, writes resumed after {:>4} ms",
            run + 1,
            gap.as_millis()
        );
        gaps.push(gap);
        // The host comes back and catches up before the next kill.
        lab::faults::restart(dir, &victim)?;
        let (_, back) = clients
            .iter()
            .find(|(host, _)| *host == victim)
            .context("the restarted host")?;
        crate::poll_until(
            Duration::from_secs(60),
            POLL,
            "the restarted server to be ready",
            || is_ready(back),
        )
        .await?;
    }
    // Nothing acknowledged is lost.
    let (_, reader) = &clients[0];
    let stored: std::collections::BTreeSet<String> = reader
        .list::<ConfigMap>(Some("default"), &ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|cm| cm.metadata.name)
        .collect();
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|n| !stored.contains(*n))
        .collect();
    if !lost.is_empty() {
        bail!("{} acknowledged writes are missing: {lost:?}", lost.len());
    }
    println!("all {} acknowledged writes are stored", acknowledged.len());
    Ok(gaps)
}

/// `Some` once `/readyz` answers 200. Its body is text ("ok"), not JSON: a 2xx that fails to
/// decode is the ready answer, a 503 is an API error.
async fn is_ready(client: &Client) -> Option<()> {
    let url = format!("{}/readyz", client.server());
    match client.request::<Value>(Method::GET, &url, &[], None).await {
        Err(skiff_client::Error::Decode(_)) => Some(()),
        _ => None,
    }
}

/// Three etcd members on loopback; each run SIGKILLs the leader and measures the same gap.
async fn measure_etcd(runs: usize) -> anyhow::Result<Vec<Duration>> {
    let dir = tempfile::tempdir()?;
    let mut members = Vec::new();
    for n in 0..3 {
        members.push(EtcdMember {
            name: format!("e{n}"),
            client: crate::free_port()?,
            peer: crate::free_port()?,
            child: None,
        });
    }
    let cluster: Vec<String> = members
        .iter()
        .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
        .collect();
    let cluster = cluster.join(",");
    for member in &mut members {
        member.start(dir.path(), &cluster, "new")?;
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let mut gaps = Vec::new();
    for run in 0..runs {
        let leader = crate::poll_until(Duration::from_secs(30), POLL, "an etcd leader", || {
            etcd_leader(&http, &members)
        })
        .await?;
        let survivor = (leader + 1) % members.len();
        let url = format!("http://127.0.0.1:{}/v3/kv/put", members[survivor].client);
        let load = WriteLoad::start(run, {
            let http = http.clone();
            move |key| {
                let (http, url) = (http.clone(), url.clone());
                async move {
                    use base64::Engine as _;
                    let b64 = base64::engine::general_purpose::STANDARD;
                    let body =
                        serde_json::json!({"key": b64.encode(&key), "value": b64.encode("1")});
                    http.post(&url)
                        .json(&body)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success())
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        let killed = Instant::now();
        members[leader].kill();
        let gap = load
            .gap_after(killed, "an etcd write after the kill")
            .await?;
        load.stop().await;
        println!(
            "etcd run {:>2}: writes resumed after {:>4} ms",
            run + 1,
            gap.as_millis()
        );
        gaps.push(gap);
        members[leader].start(dir.path(), &cluster, "existing")?;
    }
    Ok(gaps)
}

struct EtcdMember {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

impl EtcdMember {
    fn start(&mut self, dir: &Path, cluster: &str, state: &str) -> anyhow::Result<()> {
        let child = Command::new("etcd")
            .args(["--name", &self.name, "--data-dir"])
            .arg(dir.join(&self.name))
            .args([
                "--listen-client-urls",
                &format!("http://127.0.0.1:{}", self.client),
            ])
            .args([
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{}", self.client),
            ])
            .args([
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{}", self.peer),
            ])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{}", self.peer),
            ])
            .args([
                "--initial-cluster",
                cluster,
                "--initial-cluster-state",
                state,
            ])
            .args(["--initial-cluster-token", "skiff-bench-failover"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting etcd (apt-get install etcd-server)")?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL, as `skiff lab kill` does to a host.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for EtcdMember {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Which member leads, as etcd's maintenance status (JSON gateway) reports it.
async fn etcd_leader(http: &reqwest::Client, members: &[EtcdMember]) -> Option<usize> {
    for member in members.iter().filter(|m| m.child.is_some()) {
        let url = format!("http://127.0.0.1:{}/v3/maintenance/status", member.client);
        let Ok(response) = http.post(&url).body("{}").send().await else {
            continue;
        };
        let Ok(status) = response.json::<Value>().await else {
            continue;
        };
        let leader = status["leader"].as_str()?.to_string();
        for (i, other) in members.iter().enumerate() {
            if other.child.is_none() {
                continue;
            }
            let url = format!("http://127.0.0.1:{}/v3/maintenance/status", other.client);
            let Ok(answer) = http.post(&url).body("{}").send().await else {
                continue;
            };
            let Ok(answer) = answer.json::<Value>().await else {
                continue;
            };
            if answer["header"]["member_id"].as_str() == Some(leader.as_str()) {
                return Some(i);
            }
        }
    }
    None
}
