//! `skiff bench pods`: pod startup latency with real containers, and the agent's memory.
//!
//! It starts its own cluster in a temp dir — a `skiff server --disable-agent` and a separate
//! `skiff agent` process (so the agent's RSS is the agent's alone) with its own containerd,
//! bridge and subnet — packs a busybox web image into the agent's airgap directory, and then:
//! 1. single pods: N times, create a pod (bound to the node) and time until a watcher sees it
//!    Running and Ready; p50 and p99;
//! 2. a burst: M pods created at once; the time until the last is Running;
//! 3. RSS of the agent (and of its containerd and shims) idle and with the burst running;
//!    then the agent's CPU over a steady spell with the burst's pods running, while the API's
//!    `metrics.k8s.io` pod list is read every 15 s, as the HPA controller does (the cost of
//!    measuring: the agent samples its cgroups and answers the API server's summary fetch);
//! 4. a rolling update, and the service proxy's cost ([`crate::proxy`]).
use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;
use skiff_client::watcher::{self, Event};
use skiff_client::{Client, DeleteOptions, ListParams};
use tokio::sync::oneshot;

#[derive(Args, Debug, Clone)]
pub struct PodBench {
    /// Single pods, one after another.
    #[arg(long, default_value_t = 50)]
    singles: usize,
    /// Pods created at once.
    #[arg(long, default_value_t = 100)]
    burst: usize,
    /// Replicas of the rolling-update run (0: skip it): a Deployment of this many replicas
    /// changes image with maxSurge 5 / maxUnavailable 0 ("5 at a time").
    #[arg(long, default_value_t = 50)]
    rollout: usize,
    /// Passed to the agent: pods share this many shims (0: one shim per pod).
    #[arg(long, default_value_t = 0)]
    shim_groups: u32,
    /// Seconds of the steady spell after the burst, with its pods running, over which the
    /// agent's CPU time is measured (0: skip it).
    #[arg(long, default_value_t = 60)]
    steady_seconds: u64,
    /// Seconds of each concurrent phase of the service proxy benchmark (0: skip it).
    #[arg(long, default_value_t = 5)]
    proxy_seconds: u64,
}

/// Processes killed (SIGTERM, then SIGKILL) when dropped.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            for _ in 0..50 {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Packs the busybox httpd image `tag` into `out` with `skiff image pack`.
fn pack_web_image(exe: &Path, tag: &str, out: &Path) -> anyhow::Result<()> {
    let status = Command::new(exe)
        .args(["image", "pack", "--busybox", "--tag", tag, "-o"])
        .arg(out)
        .args([
            "--entrypoint",
            "/bin/httpd",
            "--cmd",
            "-f",
            "--cmd",
            "-p",
            "--cmd",
            "8080",
        ])
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("skiff image pack {tag} failed");
    }
    Ok(())
}

/// Resident memory of a process in MiB (VmRSS).
fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// CPU time (user and system) a process has used so far.
fn cpu_time(pid: u32) -> Duration {
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // Fields after the command (which may hold spaces) in parentheses: utime and
            // stime are the 12th and 13th of them.
            let rest = &stat[stat.rfind(')')? + 2..];
            let mut fields = rest.split(' ').skip(11);
            let user: u64 = fields.next()?.parse().ok()?;
            let system: u64 = fields.next()?.parse().ok()?;
            Some(user + system)
        })
        .unwrap_or(0);
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// Total RSS of the containerd shims whose command line mentions `namespace`.
fn shims_mib(namespace: &str) -> (usize, f64) {
    let mut count = 0;
    let mut total = 0.0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.contains("containerd-shim") && cmdline.contains(namespace) {
            count += 1;
            total += rss_mib(pid);
        }
    }
    (count, total)
}

fn percentile(sorted: &[Duration], p: usize) -> f64 {
    let i = (sorted.len() * p / 100).min(sorted.len().saturating_sub(1));
    sorted.get(i).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Tracks when pods are first seen Running and Ready.
type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<Instant>>>>;

fn is_running(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub async fn run(bench: PodBench) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let exe = std::env::current_exe()?;
    let server_dir = dir.path().join("server");
    let agent_dir = dir.path().join("agent");
    std::fs::create_dir_all(agent_dir.join("images"))?;
    for (tag, file) in [
        ("skiff.local/web:1.0", "web.tar"),
        ("skiff.local/web:2.0", "web2.tar"),
    ] {
        pack_web_image(&exe, tag, &agent_dir.join("images").join(file))?;
    }
    let port = crate::free_port()?;
    let url = format!("https://127.0.0.1:{port}");
    let mut procs = Procs(Vec::new());
    procs.0.push(
        Command::new(&exe)
            .args(["server", "--disable-agent", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(&server_dir)
            .args([
                "--cluster-cidr",
                "10.77.0.0/16",
                "--service-cidr",
                "10.177.0.0/16",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let kubeconfig = server_dir.join("kubeconfig.yaml");
    crate::wait_ready(&kubeconfig, &url).await?;
    let client = Client::from_kubeconfig(&kubeconfig)?;
    let token = std::fs::read_to_string(server_dir.join("node-token"))?;
    let bridge = "skbench0";
    let namespace = "skiff-bench";
    // The agent's log stays after the run, for looking into where the time went.
    let agent_log = std::fs::File::create("/tmp/skiff-bench-agent.log")?;
    procs.0.push(
        Command::new(&exe)
            .args(["agent", "--server", &url, "--token", token.trim()])
            .arg("--data-dir")
            .arg(&agent_dir)
            .args(["--node-name", "bench", "--bridge", bridge])
            .args(["--containerd-namespace", namespace, "--kubelet-port", "0"])
            .args(["--shim-groups", &bench.shim_groups.to_string()])
            .stdout(Stdio::null())
            .stderr(agent_log)
            .spawn()?,
    );
    let agent_pid = procs.0[1].id();
    let result = measure(&bench, &client, &agent_dir, agent_pid, namespace).await;

    // Clean up: pods (their containers, IPs), the agent and its containerd, the host bits.
    let _ = delete_all(&client).await;
    drop(procs);
    if let Ok(pid) = std::fs::read_to_string(agent_dir.join("containerd/containerd.pid")) {
        let _ = Command::new("kill").arg(pid.trim()).status();
    }
    skiff_agent::proxy::iptables::remove(&skiff_agent::proxy::iptables::chain_name(bridge)).await;
    skiff_agent::network::delete_bridge(bridge).await;
    skiff_agent::network::remove_forwarding(bridge, "10.77.0.0/24").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    result
}

async fn measure(
    bench: &PodBench,
    client: &Client,
    agent_dir: &Path,
    agent_pid: u32,
    namespace: &str,
) -> anyhow::Result<()> {
    // Wait for the node, and let the agent settle before measuring idle memory.
    let deadline = Instant::now() + Duration::from_secs(60);
    while client
        .get_opt::<k8s_openapi::api::core::v1::Node>(None, "bench")
        .await?
        .is_none()
    {
        if Instant::now() > deadline {
            bail!("the agent did not register");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let containerd_pid: u32 = std::fs::read_to_string(agent_dir.join("containerd/containerd.pid"))
        .context("containerd pid")?
        .trim()
        .parse()?;
    let idle_agent = rss_mib(agent_pid);
    let idle_containerd = rss_mib(containerd_pid);

    let waiters: Waiters = Arc::new(Mutex::new(HashMap::new()));
    let mut events = watcher::spawn::<Pod>(
        client.clone(),
        Some("default".into()),
        ListParams::default(),
    );
    let seen = waiters.clone();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            let pods = match event {
                Event::Applied(pod) => vec![pod],
                Event::Restarted(pods) => pods,
                Event::Deleted(_) => continue,
            };
            for pod in pods {
                if is_running(&pod) {
                    let name = pod.metadata.name.clone().unwrap_or_default();
                    let waiter = seen.lock().unwrap_or_else(|e| e.into_inner()).remove(&name);
                    if let Some(tx) = waiter {
                        let _ = tx.send(Instant::now());
                    }
                }
            }
        }
    });
    // The watch must be established before the first create.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let start_pod = |name: String| {
        let client = client.clone();
        let waiters = waiters.clone();
        async move {
            let (tx, rx) = oneshot::channel();
            waiters
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(name.clone(), tx);
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {"name": name},
                "spec": {"nodeName": "bench", "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "web", "image": "skiff.local/web:1.0"}]}
            }))?;
            let started = Instant::now();
            client.create(Some("default"), &pod).await?;
            let running = tokio::time::timeout(Duration::from_secs(120), rx)
                .await
                .context("pod did not start within 120 s")??;
            Ok::<Duration, anyhow::Error>(running - started)
        }
    };

    let mut singles = Vec::with_capacity(bench.singles);
    for i in 0..bench.singles {
        singles.push(start_pod(format!("single-{i}")).await?);
    }
    singles.sort();
    delete_all(client).await?;

    let burst_started = Instant::now();
    let burst =
        futures::future::join_all((0..bench.burst).map(|i| start_pod(format!("burst-{i}")))).await;
    let burst_elapsed = burst_started.elapsed();
    let mut burst: Vec<Duration> = burst.into_iter().collect::<Result<_, _>>()?;
    burst.sort();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let busy_agent = rss_mib(agent_pid);
    let busy_containerd = rss_mib(containerd_pid);
    let (shims, shims_rss) = shims_mib(namespace);

    println!("pod startup, API create -> Running+Ready seen by a watcher (image present, real containerd)");
    println!(
        "single pods  n={:<4} p50 {:.3} s  p99 {:.3} s  max {:.3} s",
        singles.len(),
        percentile(&singles, 50),
        percentile(&singles, 99),
        singles.last().map(|d| d.as_secs_f64()).unwrap_or(0.0)
    );
    println!(
        "burst        n={:<4} all Running in {:.2} s  (p50 {:.2} s, p99 {:.2} s per pod)",
        burst.len(),
        burst_elapsed.as_secs_f64(),
        percentile(&burst, 50),
        percentile(&burst, 99)
    );
    println!(
        "RSS idle: agent {idle_agent:.1} MiB, containerd {idle_containerd:.1} MiB; with {} pods: agent {busy_agent:.1} MiB, containerd {busy_containerd:.1} MiB, {shims} shims {shims_rss:.0} MiB",
        burst.len()
    );
    if bench.steady_seconds > 0 {
        let spell = Duration::from_secs(bench.steady_seconds);
        let (cpu_before, started) = (cpu_time(agent_pid), Instant::now());
        // (reads, answered, pods in the last answer)
        let mut reads = (0, 0, 0);
        while started.elapsed() < spell {
            let read: Result<serde_json::Value, _> = client
                .request(
                    skiff_client::Method::GET,
                    &format!("{}/apis/metrics.k8s.io/v1beta1/pods", client.server()),
                    &[],
                    None,
                )
                .await;
            reads.0 += 1;
            if let Ok(list) = read {
                reads.1 += 1;
                reads.2 = list["items"].as_array().map_or(0, Vec::len);
            }
            tokio::time::sleep(
                Duration::from_secs(15).min(spell.saturating_sub(started.elapsed())),
            )
            .await;
        }
        let used = cpu_time(agent_pid).saturating_sub(cpu_before);
        println!(
            "steady {} s with {} pods: agent CPU {:.1} ms/s ({:.2} % of a core), RSS {:.1} MiB; metrics.k8s.io read {} times, {} answered, {} pods in the last",
            bench.steady_seconds,
            burst.len(),
            used.as_secs_f64() * 1000.0 / started.elapsed().as_secs_f64(),
            used.as_secs_f64() * 100.0 / started.elapsed().as_secs_f64(),
            rss_mib(agent_pid),
            reads.0,
            reads.1,
            reads.2,
        );
    }
    if bench.rollout > 0 {
        delete_all(client).await?;
        rolling_update(client, bench.rollout).await?;
    }
    if bench.proxy_seconds > 0 {
        delete_all(client).await?;
        let chain = skiff_agent::proxy::iptables::chain_name("skbench0");
        crate::proxy::run(client, "bench", &chain, bench.proxy_seconds).await?;
    }
    Ok(())
}

/// Deletes every pod in `default` and waits until they are gone.
async fn delete_all(client: &Client) -> anyhow::Result<()> {
    let pods = client
        .list::<Pod>(Some("default"), &ListParams::default())
        .await?;
    let deletes = pods
        .items
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .map(|name| {
            let client = client.clone();
            async move {
                let options = DeleteOptions {
                    grace_period_seconds: Some(1),
                    ..DeleteOptions::default()
                };
                let _ = client.delete::<Pod>(Some("default"), &name, &options).await;
            }
        });
    futures::future::join_all(deletes).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = client
            .list::<Pod>(Some("default"), &ListParams::default())
            .await?;
        if left.items.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{} pods were not deleted within 120 s", left.items.len());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A Deployment of `replicas` pods changes image, 5 at a time (maxSurge 5, maxUnavailable 0),
/// through the scheduler and controllers; timed from the update to `kubectl rollout status`'s
/// "successfully rolled out" condition.
async fn rolling_update(client: &Client, replicas: usize) -> anyhow::Result<()> {
    use k8s_openapi::api::apps::v1::Deployment;
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "roll"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "roll"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 5, "maxUnavailable": 0}},
            "template": {"metadata": {"labels": {"app": "roll"}}, "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "web", "image": "skiff.local/web:1.0"}]}}
        }
    }))?;
    client.create(Some("default"), &deployment).await?;
    let done = |d: &Deployment| {
        let spec = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let st = d.status.clone().unwrap_or_default();
        d.metadata.generation.unwrap_or(0) <= st.observed_generation.unwrap_or(0)
            && st.updated_replicas.unwrap_or(0) == spec
            && st.replicas.unwrap_or(0) == spec
            && st.available_replicas.unwrap_or(0) == spec
    };
    let wait = |what: &'static str| async move {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let d: Deployment = client.get(Some("default"), "roll").await?;
            if done(&d) {
                return Ok::<(), anyhow::Error>(());
            }
            if Instant::now() > deadline {
                bail!("{what}: the rollout did not finish within 300 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let started = Instant::now();
    wait("creating").await?;
    let created = started.elapsed();
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "skiff.local/web:2.0"}]}}}});
    // A JSON merge patch replaces the containers list: name and image are all it needs.
    let updated = Instant::now();
    client
        .merge_patch::<Deployment>(Some("default"), "roll", None, &patch)
        .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    wait("updating").await?;
    println!(
        "rolling update: {replicas} replicas, 5 at a time: created in {:.1} s; new image rolled out in {:.1} s",
        created.as_secs_f64(),
        updated.elapsed().as_secs_f64()
    );
    let _ = client
        .delete::<Deployment>(Some("default"), "roll", &DeleteOptions::default())
        .await;
    delete_all(client).await
}
