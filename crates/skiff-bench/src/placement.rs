//! Where `skiff bench store`'s members run: on loopback, or one per host of a `skiff lab`.

use std::path::Path;
use std::process::Command;

use anyhow::Context;

use crate::free_port;

/// Where a target's members run.
pub enum Placement {
    /// Every member on 127.0.0.1 in this machine's namespace; ports picked free.
    Loopback,
    /// Member n on lab host n + 1, at that host's address and a fixed port.
    Lab(Box<skiff_lab::state::Lab>),
}

/// The ports members listen on inside lab hosts (each host has its own ports; the lab's
/// skiff servers hold 6443 and 10250).
pub const LAB_STORE_PORT: u16 = 7480;
pub const LAB_ETCD_CLIENT_PORT: u16 = 2379;
pub const LAB_ETCD_PEER_PORT: u16 = 2380;

impl Placement {
    /// Where member `n` listens: on loopback a free port, in a lab host `lab_port`.
    pub fn addr(&self, n: usize, lab_port: u16) -> anyhow::Result<std::net::SocketAddr> {
        match self {
            Placement::Loopback => Ok(([127, 0, 0, 1], free_port()?).into()),
            Placement::Lab(lab) => {
                let host = lab.hosts.get(n).context("more members than lab hosts")?;
                Ok((host.ip, lab_port).into())
            }
        }
    }

    /// A command that runs `program` where member `n` lives.
    pub fn command(&self, n: usize, program: &Path) -> Command {
        match self {
            Placement::Loopback => Command::new(program),
            Placement::Lab(lab) => {
                let mut command = Command::new("nsenter");
                if let Some(host) = lab.hosts.get(n) {
                    command.arg(format!("--net={}", host.netns_path().display()));
                }
                command.arg("--").arg(program);
                command
            }
        }
    }

    /// Runs `work` where member 0 lives: here, or on a thread of its own that entered host-1's
    /// network namespace, with a runtime whose threads (and so every socket they open) are all
    /// inside it.
    pub async fn on_first<F, Fut, T>(&self, work: F) -> anyhow::Result<T>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = anyhow::Result<T>>,
        T: Send + 'static,
    {
        let netns = match self {
            Placement::Loopback => return work().await,
            Placement::Lab(lab) => lab
                .hosts
                .first()
                .context("a lab with no host")?
                .netns_path(),
        };
        let (done, result) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("bench-host-1".into())
            .spawn(move || {
                let run = || -> anyhow::Result<T> {
                    let namespace = std::fs::File::open(&netns)
                        .with_context(|| format!("opening {}", netns.display()))?;
                    nix::sched::setns(&namespace, nix::sched::CloneFlags::CLONE_NEWNET)
                        .with_context(|| format!("entering {}", netns.display()))?;
                    tokio::runtime::Builder::new_multi_thread()
                        .enable_all()
                        .build()?
                        .block_on(work())
                };
                let _ = done.send(run());
            })?;
        result
            .await
            .context("the benchmark's thread on host-1 died")?
    }
}
