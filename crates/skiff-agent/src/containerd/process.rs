//! The agent's own containerd: a child process with its config, root, state and socket under
//! the agent's data dir, restarted if it dies (k3s does the same). Running our own keeps skiff
//! independent of whatever containerd (or Docker) the machine already has.
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;

use crate::error::AgentError;

/// Where the child containerd keeps its files.
pub struct ContainerdPaths {
    pub config: PathBuf,
    pub root: PathBuf,
    pub state: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
    /// The running containerd's pid, so a restarted agent adopts it instead of starting a
    /// second one on the same root (and so tests can stop it).
    pub pid: PathBuf,
}

impl ContainerdPaths {
    pub fn under(data_dir: &Path) -> ContainerdPaths {
        let dir = data_dir.join("containerd");
        ContainerdPaths {
            config: dir.join("config.toml"),
            root: dir.join("root"),
            // The state dir holds sockets of shims; keep its path short (unix socket paths are
            // limited to 108 bytes), so it goes under /run when the data dir is deep.
            state: dir.join("state"),
            socket: dir.join("containerd.sock"),
            log: dir.join("containerd.log"),
            pid: dir.join("containerd.pid"),
        }
    }

    /// A version-2 config: own paths, the CRI plugin disabled (skiff is the kubelet here).
    pub fn config_toml(&self) -> String {
        format!(
            "version = 2\nroot = {root:?}\nstate = {state:?}\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\n[grpc]\n  address = {socket:?}\n\n[ttrpc]\n  address = {ttrpc:?}\n",
            root = self.root,
            state = self.state,
            socket = self.socket,
            ttrpc = self.socket.with_extension("sock.ttrpc"),
        )
    }
}

/// Starts containerd and keeps it running until `shutdown` turns true. Resolves once the
/// socket answers the first time.
pub async fn supervise(
    data_dir: &Path,
    mut shutdown: watch::Receiver<bool>,
) -> Result<PathBuf, AgentError> {
    let paths = ContainerdPaths::under(data_dir);
    let files = |path: &Path| {
        let path = path.to_path_buf();
        move |error| AgentError::ContainerdFiles { path, error }
    };
    std::fs::create_dir_all(&paths.root).map_err(files(&paths.root))?;
    std::fs::create_dir_all(&paths.state).map_err(files(&paths.state))?;
    std::fs::write(&paths.config, paths.config_toml()).map_err(files(&paths.config))?;
    let socket = paths.socket.clone();
    let (ready_tx, mut ready_rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut restarts = 0u32;
        loop {
            // An agent that was killed left its containerd running: adopt it while it lives.
            if let Some(pid) = live_pid(&paths.pid) {
                if containerd_client::connect(&paths.socket).await.is_ok() {
                    tracing::info!(pid, "adopting the running containerd");
                    let _ = ready_tx.send(true);
                    loop {
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                            _ = crate::stopped(&mut shutdown) => {
                                terminate(pid).await;
                                return;
                            }
                        }
                        if live_pid(&paths.pid).is_none() {
                            break;
                        }
                    }
                    tracing::warn!(pid, "the adopted containerd exited; starting a new one");
                    continue;
                }
            }
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&paths.log);
            let mut command = tokio::process::Command::new("containerd");
            command.arg("--config").arg(&paths.config);
            if let Ok(log) = log {
                if let Ok(copy) = log.try_clone() {
                    command.stdout(copy);
                }
                command.stderr(log);
            }
            // Ending the agent must not take containerd (and so every container) down with a
            // signal meant for the agent's process group: containers outlive agent restarts.
            command.process_group(0);
            let mut child = match command.spawn() {
                Ok(child) => child,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start containerd");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    continue;
                }
            };
            tracing::info!(pid = child.id(), "containerd started");
            if let Some(pid) = child.id() {
                let _ = std::fs::write(&paths.pid, pid.to_string());
            }
            let socket = paths.socket.clone();
            let ready_tx = ready_tx.clone();
            tokio::spawn(async move {
                for _ in 0..200 {
                    if containerd_client::connect(&socket).await.is_ok() {
                        let _ = ready_tx.send(true);
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            });
            tokio::select! {
                status = child.wait() => {
                    restarts += 1;
                    tracing::warn!(?status, restarts, "containerd exited; restarting");
                    tokio::time::sleep(Duration::from_millis(500 * u64::from(restarts.min(10)))).await;
                }
                _ = crate::stopped(&mut shutdown) => {
                    // SIGTERM lets containerd close cleanly; running containers keep running
                    // under their shims.
                    if let Some(pid) = child.id() {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid as i32),
                            nix::sys::signal::Signal::SIGTERM,
                        );
                    }
                    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                    let _ = child.kill().await;
                    return;
                }
            }
        }
    });
    let ready =
        tokio::time::timeout(Duration::from_secs(30), ready_rx.wait_for(|ready| *ready)).await;
    // A timeout, or the supervisor gone without ever seeing containerd answer.
    if !matches!(ready, Ok(Ok(_))) {
        return Err(AgentError::ContainerdNotReady { socket });
    }
    Ok(socket)
}

/// The pid in `file` if that process is alive and is a containerd.
fn live_pid(file: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(file).ok()?.trim().parse().ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (comm.trim() == "containerd").then_some(pid)
}

/// SIGTERM, then up to 5 s for the process to go.
async fn terminate(pid: i32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    );
    for _ in 0..50 {
        if std::fs::metadata(format!("/proc/{pid}")).is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
