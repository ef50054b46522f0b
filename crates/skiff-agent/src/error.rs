//! [`AgentError`]: what can go wrong in the agent's library, one variant per thing that failed.
//! The binary wraps these in `anyhow`. Inside the agent, what a runtime call reports stays a
//! [`RuntimeError`] (pod status turns it into `ErrImagePull` or `CreateContainerError`), and
//! three results are messages by design, kept as `String`s: a probe's failure (the text of its
//! `Unhealthy` event), why the pod network skips a peer, and why a heartbeat failed (log lines).
use std::path::PathBuf;

use crate::runtime::RuntimeError;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Something the agent removes (a container, a pod's network or files) could not be removed.
    #[error("removing {what}: {error}")]
    Cleanup { what: String, error: RuntimeError },

    /// A container's spec cannot be turned into its config (a missing ConfigMap, an unsupported
    /// volume, services not read yet): kubelet's `CreateContainerConfigError`, whose message
    /// this is, word for word.
    #[error("{0}")]
    ContainerConfig(String),

    /// Something this agent needs on the machine is already someone else's (its bridge, its
    /// pod range): another skiff, or another network.
    #[error("{0}")]
    Claimed(String),

    /// The files or directories of containerd's own setup could not be written.
    #[error("preparing containerd's directory {path}: {error}")]
    ContainerdFiles {
        path: PathBuf,
        error: std::io::Error,
    },

    /// containerd was started but its socket did not answer in time.
    #[error("containerd did not answer on {} within 30 s", socket.display())]
    ContainerdNotReady { socket: PathBuf },

    /// No gRPC channel to containerd's socket.
    #[error("connecting to containerd: {0}")]
    ContainerdConnect(#[from] containerd_client::tonic::transport::Error),

    /// The containerd namespace cannot be sent as a gRPC header.
    #[error("containerd namespace {0:?} is not a valid header value")]
    ContainerdNamespace(String),

    /// An image tarball could not be imported into containerd.
    #[error("importing images: {0}")]
    ImageImport(#[from] skiff_image::Error),

    /// A command the agent runs on the machine (`iptables-restore`, `iptables`) could not be
    /// run or refused what it was given.
    #[error("{command}: {message}")]
    Command { command: String, message: String },

    /// A Service asks for a load-balancing policy skiff does not have.
    #[error("unknown {annotation} {value:?} (round-robin, random or weighted)")]
    UnknownPolicy {
        annotation: &'static str,
        value: String,
    },

    /// The agent's HTTPS endpoint (logs, exec) could not be set up or stopped with an error.
    #[error("the agent endpoint: {0}")]
    Endpoint(#[from] std::io::Error),
}
