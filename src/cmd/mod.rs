//! The subcommands of `skiff`.

pub mod agent;
pub mod bench;
pub mod bench_failover;
pub mod bench_node_loss;
pub mod bench_pods;
pub mod bench_proxy;
pub mod bench_scheduler;
pub mod client;
pub mod explain;
pub mod image;
pub mod lab;
pub mod members;
pub mod server;

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// `/var/lib/skiff` for root (as k3s uses /var/lib/rancher/k3s), `./.skiff` otherwise.
pub fn default_data_dir() -> PathBuf {
    if is_root() {
        PathBuf::from("/var/lib/skiff")
    } else {
        PathBuf::from(".skiff")
    }
}

fn is_root() -> bool {
    // The effective uid is the owner of /proc/self; no libc call (and no unsafe) needed.
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
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
            anyhow::bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(every).await;
    }
}
