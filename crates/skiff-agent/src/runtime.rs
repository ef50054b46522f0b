//! The runtime trait: what the pod workers need from "something that runs containers".
//!
//! Kubernetes calls this the CRI; skiff's version is smaller and speaks in the pod worker's
//! terms. Two implementations exist:
//! - [`crate::containerd::ContainerdRuntime`]: the real one, containerd over gRPC plus a network
//!   namespace and CNI per pod;
//! - [`crate::fake::FakeRuntime`]: a *fake* for unit tests and for simulating many ("hollow")
//!   nodes on one machine. It runs nothing; it only pretends containers start and keep running.
//!
//! A container is identified by the runtime's id; the labels on it ([`ContainerRecord`]) say which
//! pod and which container of the pod it belongs to, so an agent that restarts can find and adopt
//! what is already running instead of restarting it.
use std::future::Future;
use std::path::PathBuf;

use jiff::Timestamp;

/// Why a runtime call failed, in the terms pod status uses.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The image is neither present nor importable (becomes `ErrImagePull`).
    #[error("{0}")]
    ImageNotFound(String),
    /// The container cannot be run as its spec asks with this image (`runAsNonRoot` and a
    /// root image): kubelet's `CreateContainerConfigError`.
    #[error("{0}")]
    Config(String),
    /// Anything else (becomes `CreateContainerError` or a Warning event).
    #[error("{0}")]
    Failed(String),
}

/// Which pod a sandbox is for. The sandbox is the pod's shared context: its network namespace,
/// its IP and its cgroup parent.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub pod_uid: String,
    pub pod_name: String,
    pub namespace: String,
    pub host_network: bool,
    /// The most processes (threads included) all the pod's containers together may have
    /// (`--pod-max-pids`; `None`: no limit).
    pub pids_limit: Option<i64>,
}

/// The pod's network as the runtime set it up.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sandbox {
    /// The pod IP (the node's IP for hostNetwork pods is filled in by the agent).
    pub ip: Option<String>,
    /// The network namespace file all containers of the pod join (None for hostNetwork).
    pub netns: Option<PathBuf>,
}

/// A bind mount into the container.
#[derive(Debug, Clone, PartialEq)]
pub struct Mount {
    pub host_path: PathBuf,
    pub container_path: String,
    pub read_only: bool,
}

/// cgroup settings derived from `resources` (Kubernetes' arithmetic, see
/// [`crate::spec::resources`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    pub cpu_shares: Option<u64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub memory_limit: Option<i64>,
}

/// What `securityContext` asks of a container, the pod's values merged in (the container's win).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Security {
    /// Refuse to start as uid 0.
    pub run_as_non_root: bool,
    /// `capabilities.add` / `drop`, as `CAP_…` names (`ALL` kept as is).
    pub capabilities_add: Vec<String>,
    pub capabilities_drop: Vec<String>,
    /// `allowPrivilegeEscalation: false` sets `no_new_privs`; unset allows it, as in Kubernetes.
    pub allow_privilege_escalation: Option<bool>,
    pub seccomp: Seccomp,
    /// `procMount: Unmasked`: /proc without the masked and read-only paths.
    pub unmasked_proc: bool,
    /// The pod's sysctls, already checked against what the node allows.
    pub sysctls: Vec<(String, String)>,
    /// The pod's `supplementalGroups` (extra gids of the process).
    pub supplemental_groups: Vec<i64>,
}

/// The system-call filter of a container.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Seccomp {
    /// No filter (Kubernetes' default unless the node says `--seccomp-default`).
    #[default]
    Unconfined,
    /// The runtime's default filter ([`crate::seccomp`]).
    RuntimeDefault,
    /// A profile file on the node, read by the worker into [`Seccomp::Profile`].
    Localhost(PathBuf),
    /// An OCI `linux.seccomp` document.
    Profile(serde_json::Value),
}

/// Everything needed to create one container of a pod, already resolved from the pod spec.
#[derive(Debug, Clone, Default)]
pub struct ContainerConfig {
    pub pod_uid: String,
    pub pod_name: String,
    pub namespace: String,
    /// The container's name in the pod.
    pub name: String,
    /// How many times this container was started before (0 for the first run).
    pub attempt: u32,
    pub image: String,
    /// `command` and `args` as the pod gives them; empty means "use the image's".
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub mounts: Vec<Mount>,
    pub resources: Resources,
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub read_only_root: bool,
    pub privileged: bool,
    pub security: Security,
    pub hostname: String,
    pub netns: Option<PathBuf>,
    /// The file the container's output is written to (CRI log format).
    pub log_path: PathBuf,
    /// Exec-style init container or app container: only used in labels.
    pub init: bool,
}

/// What a container is doing now.
#[derive(Debug, Clone, PartialEq)]
pub enum ContainerState {
    Running {
        started_at: Timestamp,
    },
    Exited {
        exit_code: i32,
        started_at: Option<Timestamp>,
        finished_at: Timestamp,
        oom_killed: bool,
    },
    /// Created but not started, or the runtime cannot tell.
    Unknown,
}

/// A container the runtime has, with the labels that tie it to a pod.
#[derive(Debug, Clone)]
pub struct ContainerRecord {
    pub id: String,
    pub pod_uid: String,
    pub pod_namespace: String,
    pub pod_name: String,
    pub container_name: String,
    pub attempt: u32,
    pub state: ContainerState,
    pub image: String,
    pub image_id: String,
    pub log_path: PathBuf,
}

/// An image as the runtime holds it.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    /// The normalised reference (`docker.io/library/busybox:latest`).
    pub name: String,
    /// `name@sha256:...` — what `containerStatuses[].imageID` shows.
    pub id: String,
}

/// The labels skiff puts on containers it creates (also how `list` finds them again).
pub mod labels {
    pub const POD_UID: &str = "io.skiff.pod.uid";
    pub const POD_NAME: &str = "io.skiff.pod.name";
    pub const POD_NAMESPACE: &str = "io.skiff.pod.namespace";
    pub const CONTAINER: &str = "io.skiff.container.name";
    pub const ATTEMPT: &str = "io.skiff.container.attempt";
    pub const LOG_PATH: &str = "io.skiff.container.log";
    pub const IMAGE_ID: &str = "io.skiff.image.id";
}

/// What the agent needs from a container runtime. All methods are idempotent where they can
/// be: tearing down what is already gone succeeds.
pub trait Runtime: Send + Sync + 'static {
    /// Makes sure the image is present (`pull` says whether fetching it may be tried).
    fn ensure_image(
        &self,
        image: &str,
        pull: bool,
    ) -> impl Future<Output = Result<ImageInfo, RuntimeError>> + Send;

    /// Creates the pod's network (namespace, interface, IP), or finds the one that exists.
    fn setup_sandbox(
        &self,
        pod: &SandboxConfig,
    ) -> impl Future<Output = Result<Sandbox, RuntimeError>> + Send;

    /// Removes the pod's network and frees its IP.
    fn teardown_sandbox(
        &self,
        pod_uid: &str,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Creates and starts a container; returns its id.
    fn start_container(
        &self,
        config: &ContainerConfig,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send;

    /// Resolves when the container's process has exited (at once if it already has).
    fn wait(&self, id: &str) -> impl Future<Output = Result<ContainerState, RuntimeError>> + Send;

    /// Sends SIGTERM, waits up to `grace`, then SIGKILL; resolves once the process is gone.
    fn stop(
        &self,
        id: &str,
        grace: std::time::Duration,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Deletes the container and its writable layer (it must be stopped).
    fn remove(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Every container skiff created in this runtime, with its current state.
    fn list(&self) -> impl Future<Output = Result<Vec<ContainerRecord>, RuntimeError>> + Send;

    /// The pod sandboxes (by pod uid) the runtime still has, for cleaning up after deletes
    /// that happened while the agent was down.
    fn list_sandboxes(&self) -> impl Future<Output = Result<Vec<String>, RuntimeError>> + Send;

    /// Runs `command` inside a running container to completion (exec probes): the exit code
    /// and the start of its output. Still running after `timeout` is an error.
    fn exec_sync(
        &self,
        id: &str,
        command: &[String],
        timeout: std::time::Duration,
    ) -> impl Future<Output = Result<(i32, String), RuntimeError>> + Send;

    /// What the running container has used so far (CPU time, memory), read from its cgroup
    /// for the metrics sampler ([`crate::stats`]): a few small files, so not async. `None`
    /// when the runtime cannot say. The default says nothing: the fake runtime runs no
    /// processes, so simulated nodes report no pod metrics.
    fn usage(&self, container: &ContainerRecord) -> Option<crate::stats::ContainerUsage> {
        let _ = container;
        None
    }
}
