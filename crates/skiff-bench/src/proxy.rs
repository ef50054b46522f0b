//! The service proxy's cost: the same HTTP requests sent straight to a pod IP and through the
//! Service's ClusterIP (iptables REDIRECT + skiff's user-space proxy), from the node.
//!
//! Three figures per path: latency of one request on a new connection (p50/p99, one at a time,
//! which is also new connections per second), requests per second with 8 concurrent clients,
//! and bulk throughput (an 8 MiB download). Runs inside `skiff bench pods`' cluster.
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use serde_json::json;
use skiff_client::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIG: usize = 8 * 1024 * 1024;

/// One HTTP/1.0 GET on a new connection; the number of body bytes read.
async fn get(addr: &str, path: &str) -> anyhow::Result<usize> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: bench\r\n\r\n").as_bytes())
        .await?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        total += n;
    }
    if total == 0 {
        bail!("empty answer from {addr}");
    }
    Ok(total)
}

fn percentile(sorted: &[Duration], p: usize) -> f64 {
    let i = (sorted.len() * p / 100).min(sorted.len().saturating_sub(1));
    sorted
        .get(i)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

struct Figures {
    p50_ms: f64,
    p99_ms: f64,
    conns_per_s: f64,
    concurrent_rps: f64,
    bulk_mib_s: f64,
}

async fn measure_path(addr: &str, requests: usize, seconds: u64) -> anyhow::Result<Figures> {
    // Warm up (ARP, the proxy's first connect).
    for _ in 0..20 {
        get(addr, "/").await?;
    }
    let mut latencies = Vec::with_capacity(requests);
    let started = Instant::now();
    for _ in 0..requests {
        let t = Instant::now();
        get(addr, "/").await?;
        latencies.push(t.elapsed());
    }
    let sequential = started.elapsed();
    latencies.sort();

    let deadline = Instant::now() + Duration::from_secs(seconds);
    let workers = (0..8).map(|_| {
        let addr = addr.to_string();
        async move {
            let mut n = 0usize;
            while Instant::now() < deadline {
                get(&addr, "/").await?;
                n += 1;
            }
            Ok::<usize, anyhow::Error>(n)
        }
    });
    let t = Instant::now();
    let counts = futures::future::join_all(workers).await;
    let concurrent: usize = counts
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?
        .iter()
        .sum();
    let concurrent_rps = concurrent as f64 / t.elapsed().as_secs_f64();

    let t = Instant::now();
    let mut bytes = 0;
    for _ in 0..5 {
        bytes += get(addr, "/big").await?;
    }
    if bytes < 5 * BIG {
        bail!("short bulk reads from {addr}: {bytes} bytes");
    }
    Ok(Figures {
        p50_ms: percentile(&latencies, 50),
        p99_ms: percentile(&latencies, 99),
        conns_per_s: requests as f64 / sequential.as_secs_f64(),
        concurrent_rps,
        bulk_mib_s: bytes as f64 / 1024.0 / 1024.0 / t.elapsed().as_secs_f64(),
    })
}

/// Creates a web pod and a Service in front of it on node `node`, then measures both paths.
pub async fn run(client: &Client, node: &str, chain: &str, seconds: u64) -> anyhow::Result<()> {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "proxy-bench", "labels": {"app": "proxy-bench"}},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1, "containers": [{
            "name": "web", "image": "skiff.local/web:1.0",
            "command": ["sh", "-c", format!("mkdir -p /www && echo ok > /www/index.html && head -c {BIG} /dev/zero > /www/big && exec httpd -f -p 8080 -h /www")],
            "ports": [{"containerPort": 8080}],
            "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}
        }]}
    }))?;
    client.create(Some("default"), &pod).await?;
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "proxy-bench"},
        "spec": {"selector": {"app": "proxy-bench"}, "ports": [{"port": 80, "targetPort": 8080}]}
    }))?;
    let svc = client.create(Some("default"), &svc).await?;
    let cluster_ip = svc
        .spec
        .and_then(|s| s.cluster_ip)
        .context("the Service got no ClusterIP")?;

    // Ready endpoint, and the node's redirect for the ClusterIP installed.
    let deadline = Instant::now() + Duration::from_secs(60);
    let pod_ip = loop {
        let ep = client
            .get_opt::<Endpoints>(Some("default"), "proxy-bench")
            .await?;
        let ip = ep
            .and_then(|e| e.subsets)
            .and_then(|s| s.into_iter().next())
            .and_then(|s| s.addresses)
            .and_then(|a| a.into_iter().next())
            .map(|a| a.ip);
        let rules = std::process::Command::new("iptables")
            .args(["-w", "-t", "nat", "-S", chain])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        if let Some(ip) = ip {
            if rules.contains(&format!("-d {cluster_ip}/32")) {
                break ip;
            }
        }
        if Instant::now() > deadline {
            bail!("the proxy bench pod did not become a ready endpoint with a redirect");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let requests = 1000;
    let direct = measure_path(&format!("{pod_ip}:8080"), requests, seconds).await?;
    let proxied = measure_path(&format!("{cluster_ip}:80"), requests, seconds).await?;
    println!(
        "service proxy: HTTP/1.0 GETs from the node, each on a new connection (busybox httpd)"
    );
    println!(
        "{:<22} {:>9} {:>9} {:>10} {:>14} {:>10}",
        "path", "p50 ms", "p99 ms", "conn/s", "8 clients r/s", "bulk MiB/s"
    );
    for (name, f) in [
        ("pod IP (direct)", &direct),
        ("ClusterIP (proxy)", &proxied),
    ] {
        println!(
            "{name:<22} {:>9.3} {:>9.3} {:>10.0} {:>14.0} {:>10.0}",
            f.p50_ms, f.p99_ms, f.conns_per_s, f.concurrent_rps, f.bulk_mib_s
        );
    }
    println!(
        "proxy/direct: latency p50 x{:.2}, 8-client throughput x{:.2}, bulk x{:.2}",
        proxied.p50_ms / direct.p50_ms,
        proxied.concurrent_rps / direct.concurrent_rps,
        proxied.bulk_mib_s / direct.bulk_mib_s
    );
    Ok(())
}
