//! `skiff bench node-loss`: how long a Deployment runs short when a host dies.
//!
//! ## Expected flow
//! 1. A lab of four hosts (`skiff lab up --hosts 4`: three servers, one agent) with a busybox
//!    web image; a Deployment of four replicas (a TCP readiness probe every second), one per
//!    host, behind a Service.
//! 2. Each run SIGKILLs every process of one host (`skiff lab kill`): the agent host, or the
//!    server that leads (which also runs a replica, and whose loss also moves the leadership).
//!    Through a surviving server, every 250 ms: when the node turns NotReady, when its pod is
//!    evicted, and when four replicas are Ready again on the other hosts — the figure.
//! 3. The host is started again; its agent finishes the evicted pod; the Deployment is scaled
//!    to zero and back so the next run starts with one replica per host.
//!
//! The target (issue "proof under faults"): all replicas Ready again ≤ 30 s after the kill,
//! with the default timings (heartbeat 2 s, NotReady after 12 s, eviction 8 s later).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::{json, Value};
use skiff_client::{Client, ListParams, Method};

use skiff_lab as lab;

#[derive(Args, Debug, Clone)]
pub struct NodeLossBench {
    /// Kills per kind of host.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Which hosts to kill: `agent` (host-4), `leader` (the server that leads), or both.
    #[arg(long, value_delimiter = ',', default_value = "agent,leader")]
    lose: Vec<String>,
    /// The lab's directory (removed at the end unless --keep).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// Leave the lab up afterwards.
    #[arg(long)]
    keep: bool,
}

const IMAGE: &str = "skiff.local/web:1.0";
/// How often the benchmark looks (the figures are in seconds; a quarter is fine enough).
const POLL: Duration = Duration::from_millis(250);
const REPLICAS: usize = 4;
const SERVERS: [&str; 3] = ["host-1", "host-2", "host-3"];

/// One run's times since the kill.
struct Run {
    not_ready: Duration,
    evicted: Duration,
    recovered: Duration,
}

pub async fn run(args: NodeLossBench) -> anyhow::Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    if let Some(bad) = args
        .lose
        .iter()
        .find(|l| !["agent", "leader"].contains(&l.as_str()))
    {
        bail!("--lose {bad}: say agent or leader");
    }
    if !skiff_lab::is_root() {
        bail!("skiff bench node-loss builds a lab (network namespaces): run it as root");
    }
    let dir = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("skiff-bench-node-loss-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir)?;
    let images = tempfile::tempdir()?;
    pack_image(images.path()).await?;
    let plan = crate::LabPlan {
        name: "node-loss",
        hosts: 4,
        images: Some(images.path().to_path_buf()),
        dir: Some(dir),
        keep: args.keep,
    };
    let settings = &args;
    let measured = crate::on_lab(plan, |dir| async move { measure(&dir, settings).await }).await?;
    println!();
    println!(
        "host SIGKILL → its replica's replacement Ready ({} runs each; seconds after the kill)",
        args.runs
    );
    println!(
        "{:<8} {:>13} {:>13} {:>13}",
        "lost", "NotReady p50", "evicted p50", "Ready p50/max"
    );
    for (lose, runs) in &measured {
        let mut not_ready: Vec<Duration> = runs.iter().map(|r| r.not_ready).collect();
        let mut evicted: Vec<Duration> = runs.iter().map(|r| r.evicted).collect();
        let mut recovered: Vec<Duration> = runs.iter().map(|r| r.recovered).collect();
        for v in [&mut not_ready, &mut evicted, &mut recovered] {
            v.sort();
        }
        let p50 = |v: &[Duration]| v.get(v.len() / 2).map_or(0.0, Duration::as_secs_f64);
        let max = |v: &[Duration]| v.last().map_or(0.0, Duration::as_secs_f64);
        println!(
            "{lose:<8} {:>13.1} {:>13.1} {:>6.1} / {:<5.1}",
            p50(&not_ready),
            p50(&evicted),
            p50(&recovered),
            max(&recovered)
        );
    }
    Ok(())
}

/// The busybox web image every host imports (`skiff image pack --busybox`).
async fn pack_image(dir: &Path) -> anyhow::Result<()> {
    let rootfs = dir.join("rootfs");
    skiff_image::busybox_rootfs(&rootfs, skiff_image::DEFAULT_APPLETS)
        .context("building a busybox root filesystem (is busybox-static installed?)")?;
    let mut options = skiff_image::PackOptions::new(&rootfs, IMAGE, dir.join("web.tar"));
    options.entrypoint = vec!["/bin/httpd".into()];
    options.cmd = ["-f", "-p", "8080", "-h", "/var/www"]
        .map(String::from)
        .to_vec();
    tokio::task::spawn_blocking(move || skiff_image::pack(&options)).await??;
    std::fs::remove_dir_all(&rootfs)?;
    Ok(())
}

async fn measure(dir: &Path, args: &NodeLossBench) -> anyhow::Result<Vec<(String, Vec<Run>)>> {
    let clients: Vec<(String, Client)> = SERVERS
        .iter()
        .map(|host| {
            let config = dir.join(format!("kubeconfig-{host}.yaml"));
            Ok((host.to_string(), Client::from_kubeconfig(&config)?))
        })
        .collect::<anyhow::Result<_>>()?;
    let first = &clients[0].1;
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {
            "replicas": REPLICAS,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"terminationGracePeriodSeconds": 2, "containers": [{
                    "name": "web", "image": IMAGE, "imagePullPolicy": "Never",
                    "ports": [{"containerPort": 8080}],
                    "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                }]},
            },
        },
    });
    let deployment: Deployment = serde_json::from_value(deployment)?;
    first.create(Some("default"), &deployment).await?;
    let service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }))?;
    first
        .create::<k8s_openapi::api::core::v1::Service>(Some("default"), &service)
        .await?;

    let mut results = Vec::new();
    for lose in &args.lose {
        let mut runs = Vec::new();
        for n in 0..args.runs {
            let (any, _) = survivor(&clients, "").context("a server")?;
            spread(any).await?;
            let victim = match lose.as_str() {
                "leader" => {
                    crate::poll_until(Duration::from_secs(30), POLL, "a leader", || {
                        leader(&clients)
                    })
                    .await?
                }
                _ => "host-4".to_string(),
            };
            let run = lose_host(dir, &clients, &victim).await?;
            println!(
                "{lose} run {}: killed {victim}: NotReady {:.1} s, evicted {:.1} s, \
                 all replicas Ready {:.1} s",
                n + 1,
                run.not_ready.as_secs_f64(),
                run.evicted.as_secs_f64(),
                run.recovered.as_secs_f64()
            );
            runs.push(run);
        }
        results.push((lose.clone(), runs));
    }
    Ok(results)
}

/// Kills `victim`, times what follows, and brings it back with its evicted pod finished.
async fn lose_host(dir: &Path, clients: &[(String, Client)], victim: &str) -> anyhow::Result<Run> {
    let (client, _) = survivor(clients, victim).context("a surviving server")?;
    let killed = Instant::now();
    lab::faults::kill(dir, victim)?;
    let (mut not_ready, mut evicted) = (None, None);
    let recovered = loop {
        if killed.elapsed() > Duration::from_secs(180) {
            bail!("the replicas of {victim} were not replaced within 3 minutes");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        if not_ready.is_none() {
            if let Ok(node) = client.get::<Node>(None, victim).await {
                if ready_condition(&node).as_deref() == Some("Unknown") {
                    not_ready = Some(killed.elapsed());
                }
            }
        }
        let Ok(pods) = web_pods(client).await else {
            continue;
        };
        let on_victim = |p: &&Pod| node_of(p) == victim;
        if evicted.is_none() && pods.iter().filter(on_victim).any(terminating) {
            evicted = Some(killed.elapsed());
        }
        let live: Vec<&Pod> = pods.iter().filter(|p| !terminating(p)).collect();
        if live.len() == REPLICAS && live.iter().all(|p| is_ready(p) && node_of(p) != victim) {
            break killed.elapsed();
        }
    };
    lab::faults::restart(dir, victim)?;
    crate::poll_until(
        Duration::from_secs(120),
        POLL,
        "the host back and its evicted pod finished",
        || async move {
            let node = client.get::<Node>(None, victim).await.ok()?;
            let pods = web_pods(client).await.ok()?;
            let finished = !pods.iter().any(terminating);
            (ready_condition(&node).as_deref() == Some("True") && finished).then_some(())
        },
    )
    .await?;
    Ok(Run {
        not_ready: not_ready.unwrap_or(recovered),
        evicted: evicted.unwrap_or(recovered),
        recovered,
    })
}

/// Scales the Deployment to zero and back, so each host runs one replica.
async fn spread(client: &Client) -> anyhow::Result<()> {
    for replicas in [0, REPLICAS] {
        let scale = json!({"spec": {"replicas": replicas}});
        client
            .merge_patch::<Deployment>(Some("default"), "web", None, &scale)
            .await?;
        crate::poll_until(
            Duration::from_secs(120),
            POLL,
            "the replicas",
            || async move {
                let pods = web_pods(client).await.ok()?;
                let hosts: std::collections::BTreeSet<&str> = pods.iter().map(node_of).collect();
                let done = if replicas == 0 {
                    pods.is_empty()
                } else {
                    pods.len() == REPLICAS && pods.iter().all(is_ready) && hosts.len() == REPLICAS
                };
                done.then_some(())
            },
        )
        .await?;
    }
    Ok(())
}

async fn web_pods(client: &Client) -> skiff_client::Result<Vec<Pod>> {
    Ok(client
        .list::<Pod>(Some("default"), &ListParams::labels("app=web"))
        .await?
        .items)
}

/// A server other than `victim`.
fn survivor<'a>(clients: &'a [(String, Client)], victim: &str) -> Option<(&'a Client, &'a str)> {
    clients
        .iter()
        .find(|(host, _)| host != victim)
        .map(|(host, client)| (client, host.as_str()))
}

/// The server that names itself leader.
async fn leader(clients: &[(String, Client)]) -> Option<String> {
    for (host, client) in clients {
        let url = format!("{}/skiff/v1/members", client.server());
        let Ok(answer) = client.request::<Value>(Method::GET, &url, &[], None).await else {
            continue;
        };
        let named = answer["members"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["leader"] == true))
            .and_then(|m| m["name"].as_str());
        if named == Some(host.as_str()) {
            return Some(host.clone());
        }
    }
    None
}

fn ready_condition(node: &Node) -> Option<String> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.clone())
}

fn node_of(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

fn terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}
