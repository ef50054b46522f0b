//! `skiff bench scheduler`: pods bound per second, end to end through the store, with
//! SIMULATED nodes.
//!
//! It starts a `skiff server --disable-agent` in a temp dir and registers N Node objects
//! directly (Ready, 32 cpu, 64 GiB, 110 pods — "hollow" nodes: no agent, no containers; the
//! bench sends their heartbeats so the node lifecycle controller keeps them Ready). First it
//! creates P pods (100m cpu, 128 MiB each) while there is no node, so all of them are pending;
//! then it registers the nodes and watches the pods get bound. Reported: bindings per second
//! from the first node's registration to the last binding, and each pod's wait from the
//! moment nodes appear to its binding (p50, p99).
use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::json;
use skiff_client::watcher::{self, Event};
use skiff_client::{Client, ListParams, Method};

#[derive(Args, Debug, Clone)]
pub struct SchedulerBench {
    /// Simulated nodes.
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    nodes: Vec<usize>,
    /// Pods created per run.
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Concurrent creating clients.
    #[arg(long, default_value_t = 32)]
    clients: usize,
}

pub async fn run(bench: SchedulerBench) -> anyhow::Result<()> {
    println!(
        "scheduler: pods bound per second through the store, simulated nodes, {} pods",
        bench.pods
    );
    println!(
        "{:>6} {:>7} {:>10} {:>12} {:>9} {:>9}",
        "nodes", "pods", "seconds", "bound/s", "p50 ms", "p99 ms"
    );
    for &nodes in &bench.nodes {
        one_run(&bench, nodes).await?;
    }
    Ok(())
}

async fn one_run(bench: &SchedulerBench, node_count: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let exe = std::env::current_exe()?;
    let port = crate::free_port()?;
    let url = format!("https://127.0.0.1:{port}");
    let mut server = Command::new(&exe)
        .args(["server", "--disable-agent", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let result = async {
        crate::wait_ready(&dir.path().join("kubeconfig.yaml"), &url).await?;
        let client = Client::from_kubeconfig(&dir.path().join("kubeconfig.yaml"))?;
        measure(bench, &client, node_count).await
    }
    .await;
    let _ = server.kill();
    let _ = server.wait();
    result
}

async fn measure(bench: &SchedulerBench, client: &Client, node_count: usize) -> anyhow::Result<()> {
    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let bound: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut events = watcher::spawn::<Pod>(
        client.clone(),
        Some("default".into()),
        ListParams::default(),
    );
    let watcher_bound = bound.clone();
    let total = bench.pods;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut done = Some(done_tx);
        while let Some(event) = events.recv().await {
            let pods = match event {
                Event::Applied(p) => vec![p],
                Event::Restarted(ps) => ps,
                Event::Deleted(_) => continue,
            };
            let now = Instant::now();
            let mut map = watcher_bound.lock().unwrap_or_else(|e| e.into_inner());
            for p in pods {
                if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
                    map.entry(p.metadata.name.unwrap_or_default())
                        .or_insert(now);
                }
            }
            if map.len() >= total {
                if let Some(tx) = done.take() {
                    let _ = tx.send(());
                }
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let creating = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers = (0..bench.clients).map(|_| {
        let (client, next, created) = (client.clone(), next.clone(), created.clone());
        async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return Ok::<(), anyhow::Error>(());
                }
                let name = format!("p-{i:05}");
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": name},
                    "spec": {"containers": [{"name": "c", "image": "fake",
                        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}
                }))?;
                let at = Instant::now();
                client.create(Some("default"), &pod).await?;
                created
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(name, at);
            }
        }
    });
    for result in futures::future::join_all(workers).await {
        result?;
    }
    let create_time = creating.elapsed();
    // Every pod is pending now (no node yet). The clock starts when the nodes appear.
    let started = Instant::now();
    // Hollow nodes, created 32 at a time.
    let names: Vec<String> = (0..node_count).map(|i| format!("hollow-{i:04}")).collect();
    for chunk in names.chunks(32) {
        let creates = chunk.iter().map(|name| {
            let node: Node = serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "skiff.io/hollow": "true"}},
                "spec": {"podCIDR": "10.99.0.0/24"},
                "status": {
                    "capacity": {"cpu": "32", "memory": "64Gi", "pods": "110"},
                    "allocatable": {"cpu": "32", "memory": "64Gi", "pods": "110"},
                    "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]
                }
            }))
            .expect("node");
            let client = client.clone();
            async move { client.create(None, &node).await }
        });
        for result in futures::future::join_all(creates).await {
            result?;
        }
    }
    // Their heartbeats, so the node lifecycle controller leaves them Ready.
    let beating = {
        let (client, names) = (client.clone(), names.clone());
        tokio::spawn(async move {
            loop {
                for chunk in names.chunks(64) {
                    let beats = chunk.iter().map(|n| {
                        let path = format!("/skiff/v1/nodes/{n}/heartbeat");
                        let client = client.clone();
                        async move {
                            let _ = client
                                .request_leader::<serde_json::Value>(Method::POST, &path, None)
                                .await;
                        }
                    });
                    futures::future::join_all(beats).await;
                }
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
        })
    };

    if tokio::time::timeout(Duration::from_secs(600), done_rx)
        .await
        .is_err()
    {
        bail!("not every pod was bound within 10 minutes");
    }
    let elapsed = started.elapsed();
    beating.abort();
    let created = created.lock().unwrap_or_else(|e| e.into_inner());
    let bound = bound.lock().unwrap_or_else(|e| e.into_inner());
    let mut latencies: Vec<Duration> = created
        .iter()
        .filter_map(|(name, at)| {
            bound
                .get(name)
                .map(|b| b.saturating_duration_since((*at).max(started)))
        })
        .collect();
    latencies.sort();
    let pct = |p: usize| {
        let i = (latencies.len() * p / 100).min(latencies.len().saturating_sub(1));
        latencies
            .get(i)
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0)
    };
    println!(
        "{:>6} {:>7} {:>10.2} {:>12.0} {:>9.1} {:>9.1}   (creating the pending pods took {:.2} s)",
        node_count,
        total,
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        pct(50),
        pct(99),
        create_time.as_secs_f64()
    );
    Ok(())
}
