//! The real runtime: containerd over gRPC (`containerd-client`), CNI for the network.
//!
//! Life of a container (the call sequence `reference/containerd.md` measured):
//! ```text
//! Containers.Create {id, spec, snapshot_key}     the record first: it owns the snapshot
//! Snapshots.Prepare {key: id, parent: chain id}  a writable layer over the image → mounts
//! mkfifo stdout/stderr, open the read ends       the shim writes there; we copy to the log
//! Tasks.Create {rootfs: mounts, stdout, stderr}  starts the shim and runc create (~50 ms)
//! Tasks.Start                                    the process runs
//! ...
//! Tasks.Kill SIGTERM → (grace) → SIGKILL, Tasks.Wait, Tasks.Delete,
//! Snapshots.Remove, Containers.Delete            teardown, tolerating NotFound at each step
//! ```
pub mod exec;
pub mod process;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use containerd_client::services::v1::container::Runtime as ContainerRuntimeInfo;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{PrepareSnapshotRequest, RemoveSnapshotRequest};
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteTaskRequest, GetRequest, KillRequest, ListContainersRequest, StartRequest, WaitRequest,
};
use containerd_client::tonic::metadata::{Ascii, MetadataValue};
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{Code, Request, Status};
use jiff::Timestamp;
use tokio::sync::Mutex;

use crate::cgroup::PodCgroups;
use crate::error::AgentError;
use crate::logs::{self, LogWriter};
use crate::network::NetworkConfig;
use crate::runtime::{
    labels, ContainerConfig, ContainerRecord, ContainerState, ImageInfo, Runtime, RuntimeError,
    Sandbox, SandboxConfig,
};
use crate::spec::{self, ImageConfig};

const RUNC: &str = "io.containerd.runc.v2";
const SPEC_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
const SIGTERM: u32 = 15;
/// The spec annotation the runc v2 shim groups containers by: containers with the same value
/// share one shim process.
const SHIM_GROUP: &str = "io.containerd.runc.v2.group";

/// Which shim a pod's containers run under. By default (`groups` 0) one shim per pod, as
/// Kubernetes does. With `groups` N > 0, pods share N shims per node: each shim is a Go process
/// of ~12 MiB, so 100 pods need ~1.3 GiB of shims one per pod but ~60 MiB in 4 groups
/// (measured, docs/benchmarks.md) — at the price that a shim crash takes all of its pods'
/// containers with it.
pub fn shim_group(pod_uid: &str, groups: u32) -> String {
    if groups == 0 {
        return format!("skiff-pod-{pod_uid}");
    }
    // FNV-1a: stable across restarts and machines, unlike the std hasher.
    let hash = pod_uid.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("skiff-shared-{}", hash % u64::from(groups))
}
const SIGKILL: u32 = 9;

/// An image resolved for running: what to report and what to build the rootfs from.
#[derive(Debug, Clone)]
struct ResolvedImage {
    info: ImageInfo,
    config: ImageConfig,
    /// The snapshot of the image's top layer: the parent of every container's rootfs.
    chain_id: String,
}

/// containerd + CNI.
pub struct ContainerdRuntime {
    channel: Channel,
    namespace: String,
    namespace_header: MetadataValue<Ascii>,
    snapshotter: String,
    network: NetworkConfig,
    /// FIFOs live here, one dir per container.
    fifo_dir: PathBuf,
    images: Mutex<HashMap<String, ResolvedImage>>,
    /// Containers whose output is being copied to their log file (attach once only).
    attached: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Every pod's cgroup is `/skiff-<namespace>/pod<uid>`, its containers' below it.
    cgroups: PodCgroups,
    /// 0: one shim per pod; N: pods share N shims (see [`shim_group`]).
    shim_groups: u32,
}

impl ContainerdRuntime {
    /// Connects to containerd at `socket` and uses containerd namespace `namespace`.
    pub async fn connect(
        socket: &Path,
        namespace: &str,
        network: NetworkConfig,
        data_dir: &Path,
    ) -> Result<ContainerdRuntime, AgentError> {
        let channel = containerd_client::connect(socket).await?;
        Ok(ContainerdRuntime {
            channel,
            namespace: namespace.to_string(),
            namespace_header: namespace
                .parse()
                .map_err(|_| AgentError::ContainerdNamespace(namespace.to_string()))?,
            snapshotter: "overlayfs".into(),
            network,
            fifo_dir: data_dir.join("fifo"),
            images: Mutex::new(HashMap::new()),
            attached: std::sync::Mutex::new(std::collections::HashSet::new()),
            cgroups: PodCgroups::new("/sys/fs/cgroup", &format!("skiff-{namespace}")),
            shim_groups: 0,
        })
    }

    /// Pods share `groups` shim processes instead of one each (0: one per pod).
    pub fn with_shim_groups(mut self, groups: u32) -> ContainerdRuntime {
        self.shim_groups = groups;
        self
    }

    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn snapshotter(&self) -> &str {
        &self.snapshotter
    }

    pub fn network(&self) -> &NetworkConfig {
        &self.network
    }

    /// Every request carries the containerd namespace (containerd refuses requests without).
    fn req<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert("containerd-namespace", self.namespace_header.clone());
        request
    }

    fn containers(&self) -> ContainersClient<Channel> {
        ContainersClient::new(self.channel.clone())
    }

    fn tasks(&self) -> TasksClient<Channel> {
        TasksClient::new(self.channel.clone())
    }

    fn snapshots(&self) -> SnapshotsClient<Channel> {
        SnapshotsClient::new(self.channel.clone())
    }

    /// Forgets cached image resolutions (after an import replaced a tag).
    pub async fn forget_images(&self) {
        self.images.lock().await.clear();
    }

    async fn resolve(&self, image: &str) -> Result<ResolvedImage, RuntimeError> {
        let name = skiff_image::normalize(image)
            .map_err(|e| RuntimeError::ImageNotFound(format!("invalid image reference: {e}")))?;
        if let Some(found) = self.images.lock().await.get(&name) {
            return Ok(found.clone());
        }
        let resolved = match skiff_image::resolve(&self.channel, &self.namespace, &name).await {
            Ok(resolved) => resolved,
            Err(skiff_image::Error::ImageNotFound { .. }) => {
                return Err(RuntimeError::ImageNotFound(format!(
                    "image \"{image}\" is not present on the node and skiff cannot pull from registries: import it with `skiff image import` or drop its tarball into the agent's images directory"
                )))
            }
            Err(e) => return Err(RuntimeError::Failed(format!("resolving image {image}: {e}"))),
        };
        let found = ResolvedImage {
            info: ImageInfo {
                name: name.clone(),
                id: format!("{}@{}", name, resolved.manifest_digest),
            },
            config: resolved.config.clone(),
            chain_id: resolved.chain_id.clone(),
        };
        self.images.lock().await.insert(name, found.clone());
        Ok(found)
    }

    /// The container id: short enough for containerd's 76-character limit, unique per pod,
    /// container and attempt, and readable in `ctr c ls`.
    fn container_id(config: &ContainerConfig) -> String {
        let uid: String = config
            .pod_uid
            .chars()
            .filter(|c| *c != '-')
            .take(12)
            .collect();
        let name: String = config.name.chars().take(40).collect();
        format!("{uid}-{name}-{}", config.attempt)
    }

    async fn create_and_start(
        &self,
        id: &str,
        config: &ContainerConfig,
        image: &ResolvedImage,
    ) -> Result<(), RuntimeError> {
        let t0 = std::time::Instant::now();
        let cgroups_path = self.cgroups.container_path(&config.pod_uid, id);
        let mut spec =
            spec::oci_spec(config, &image.config, &cgroups_path).map_err(RuntimeError::Config)?;
        spec["annotations"] =
            serde_json::json!({ SHIM_GROUP: shim_group(&config.pod_uid, self.shim_groups) });
        let mut container_labels: HashMap<String, String> = HashMap::from([
            (labels::POD_UID.into(), config.pod_uid.clone()),
            (labels::POD_NAME.into(), config.pod_name.clone()),
            (labels::POD_NAMESPACE.into(), config.namespace.clone()),
            (labels::CONTAINER.into(), config.name.clone()),
            (labels::ATTEMPT.into(), config.attempt.to_string()),
            (labels::IMAGE_ID.into(), image.info.id.clone()),
        ]);
        container_labels.insert(
            labels::LOG_PATH.into(),
            config.log_path.display().to_string(),
        );
        let container = Container {
            id: id.to_string(),
            labels: container_labels,
            image: image.info.name.clone(),
            runtime: Some(ContainerRuntimeInfo {
                name: RUNC.into(),
                options: None,
            }),
            spec: Some(prost_types::Any {
                type_url: SPEC_TYPE.into(),
                value: serde_json::to_vec(&spec).map_err(failed)?,
            }),
            snapshotter: self.snapshotter.clone(),
            snapshot_key: id.to_string(),
            ..Container::default()
        };
        self.containers()
            .create(self.req(CreateContainerRequest {
                container: Some(container),
            }))
            .await
            .map_err(grpc("Containers.Create"))?;
        let t_record = t0.elapsed();

        let mounts = self
            .snapshots()
            .prepare(self.req(PrepareSnapshotRequest {
                snapshotter: self.snapshotter.clone(),
                key: id.to_string(),
                parent: image.chain_id.clone(),
                labels: HashMap::new(),
            }))
            .await
            .map_err(grpc("Snapshots.Prepare"))?
            .into_inner()
            .mounts;

        let (stdout, stderr) = self.attach_logs(id, &config.log_path, true).await?;
        self.tasks()
            .create(self.req(CreateTaskRequest {
                container_id: id.to_string(),
                rootfs: mounts,
                stdout: stdout.display().to_string(),
                stderr: stderr.display().to_string(),
                ..CreateTaskRequest::default()
            }))
            .await
            .map_err(grpc("Tasks.Create"))?;
        let t_task = t0.elapsed();
        self.tasks()
            .start(self.req(StartRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            }))
            .await
            .map_err(grpc("Tasks.Start"))?;
        tracing::debug!(
            container = id,
            record_ms = t_record.as_millis() as u64,
            task_create_ms = (t_task - t_record).as_millis() as u64,
            total_ms = t0.elapsed().as_millis() as u64,
            "container started"
        );
        Ok(())
    }

    /// Makes the container's stdout/stderr FIFOs (when `create`) and starts copying them into
    /// its log file. Reopening after an agent restart re-attaches to a running container.
    async fn attach_logs(
        &self,
        id: &str,
        log_path: &Path,
        create: bool,
    ) -> Result<(PathBuf, PathBuf), RuntimeError> {
        let dir = self.fifo_dir.join(id);
        let stdout = dir.join("stdout");
        let stderr = dir.join("stderr");
        {
            let mut attached = self.attached.lock().unwrap_or_else(|e| e.into_inner());
            if !attached.insert(id.to_string()) && !create {
                return Ok((stdout, stderr));
            }
        }
        if create {
            std::fs::create_dir_all(&dir).map_err(failed)?;
            for fifo in [&stdout, &stderr] {
                match nix::unistd::mkfifo(
                    fifo.as_path(),
                    nix::sys::stat::Mode::from_bits_truncate(0o600),
                ) {
                    Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                    Err(e) => return Err(RuntimeError::Failed(format!("mkfifo: {e}"))),
                }
            }
        }
        let writer = Arc::new(Mutex::new(
            LogWriter::open(log_path, logs::DEFAULT_MAX_SIZE)
                .await
                .map_err(failed)?,
        ));
        for (fifo, stream) in [(&stdout, "stdout"), (&stderr, "stderr")] {
            // The read end must be open before the shim opens the write end (it would block);
            // read_write keeps it from seeing EOF between writers.
            let reader = tokio::net::unix::pipe::OpenOptions::new()
                .read_write(true)
                .open_receiver(fifo)
                .map_err(failed)?;
            logs::spawn_copier(reader, stream, writer.clone());
        }
        Ok((stdout, stderr))
    }

    /// Signals every process of the container.
    async fn kill(&self, id: &str, signal: u32) -> Result<(), Status> {
        self.tasks()
            .kill(self.req(KillRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
                signal,
                all: true,
            }))
            .await
            .map(|_| ())
    }

    async fn task_state(&self, id: &str, created: Option<Timestamp>) -> ContainerState {
        let got = self
            .tasks()
            .get(self.req(GetRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            }))
            .await;
        let Ok(got) = got else {
            return ContainerState::Unknown;
        };
        let Some(process) = got.into_inner().process else {
            return ContainerState::Unknown;
        };
        // Status: 1 created, 2 running, 3 stopped (containerd.v1.types.Status).
        match process.status {
            2 => ContainerState::Running {
                started_at: created.unwrap_or_else(Timestamp::now),
            },
            3 => ContainerState::Exited {
                exit_code: process.exit_status as i32,
                started_at: created,
                finished_at: process
                    .exited_at
                    .as_ref()
                    .map(timestamp)
                    .unwrap_or_else(Timestamp::now),
                oom_killed: self.cgroups.oom_killed(id),
            },
            _ => ContainerState::Unknown,
        }
    }
}

impl Runtime for ContainerdRuntime {
    async fn ensure_image(&self, image: &str, _pull: bool) -> Result<ImageInfo, RuntimeError> {
        // No registry access: an image is either imported already or not available. (A pull
        // through containerd's transfer service is where `pull` would be honoured.)
        self.resolve(image).await.map(|r| r.info)
    }

    async fn setup_sandbox(&self, pod: &SandboxConfig) -> Result<Sandbox, RuntimeError> {
        self.cgroups
            .create(&pod.pod_uid, pod.pids_limit)
            .map_err(|e| RuntimeError::Failed(format!("the pod's cgroup: {e}")))?;
        if pod.host_network {
            return Ok(Sandbox::default());
        }
        let (netns, ip) = self.network.setup(&pod.pod_uid).await?;
        Ok(Sandbox {
            ip: Some(ip),
            netns: Some(netns),
        })
    }

    async fn teardown_sandbox(&self, pod_uid: &str) -> Result<(), RuntimeError> {
        self.network.teardown(pod_uid).await?;
        // A finished pod's containers are kept (for logs) with their cgroups gone; one that
        // still holds a process keeps the pod's cgroup until the pod's last teardown.
        if let Err(e) = self.cgroups.remove(pod_uid) {
            tracing::debug!(pod_uid, error = %e, "the pod's cgroup stays for now");
        }
        Ok(())
    }

    async fn start_container(&self, config: &ContainerConfig) -> Result<String, RuntimeError> {
        let image = self.resolve(&config.image).await?;
        let id = Self::container_id(config);
        // A leftover of an earlier try with the same id (agent crashed mid-start) goes first.
        let _ = self.remove(&id).await;
        if let Err(e) = self.create_and_start(&id, config, &image).await {
            let _ = self.remove(&id).await;
            return Err(e);
        }
        Ok(id)
    }

    async fn wait(&self, id: &str) -> Result<ContainerState, RuntimeError> {
        let waited = self
            .tasks()
            .wait(self.req(WaitRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            }))
            .await;
        match waited {
            Ok(response) => {
                let response = response.into_inner();
                Ok(ContainerState::Exited {
                    exit_code: response.exit_status as i32,
                    started_at: None,
                    finished_at: response
                        .exited_at
                        .as_ref()
                        .map(timestamp)
                        .unwrap_or_else(Timestamp::now),
                    oom_killed: self.cgroups.oom_killed(id),
                })
            }
            Err(status) if status.code() == Code::NotFound => Ok(ContainerState::Exited {
                exit_code: 255,
                started_at: None,
                finished_at: Timestamp::now(),
                oom_killed: false,
            }),
            Err(status) => Err(grpc("Tasks.Wait")(status)),
        }
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        match self.kill(id, SIGTERM).await {
            Ok(_) => {}
            // No task, or already stopped: nothing to stop.
            Err(s) if matches!(s.code(), Code::NotFound | Code::FailedPrecondition) => {
                return Ok(())
            }
            Err(s) => return Err(grpc("Tasks.Kill")(s)),
        }
        if tokio::time::timeout(grace, self.wait(id)).await.is_err() {
            match self.kill(id, SIGKILL).await {
                Ok(_) => {}
                Err(s) if matches!(s.code(), Code::NotFound | Code::FailedPrecondition) => {}
                Err(s) => return Err(grpc("Tasks.Kill")(s)),
            }
            self.wait(id).await?;
        }
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let deleted = self
            .tasks()
            .delete(self.req(DeleteTaskRequest {
                container_id: id.to_string(),
            }))
            .await;
        match deleted {
            Ok(_) => {}
            Err(s) if s.code() == Code::NotFound => {}
            Err(s) if s.code() == Code::FailedPrecondition => {
                // Still running: kill it outright (callers stop gracefully first).
                self.stop(id, Duration::ZERO).await?;
                let _ = self
                    .tasks()
                    .delete(self.req(DeleteTaskRequest {
                        container_id: id.to_string(),
                    }))
                    .await;
            }
            Err(s) => return Err(grpc("Tasks.Delete")(s)),
        }
        // The snapshot before the container record: removing the record first lets garbage
        // collection race us to the snapshot.
        match self
            .snapshots()
            .remove(self.req(RemoveSnapshotRequest {
                snapshotter: self.snapshotter.clone(),
                key: id.to_string(),
            }))
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == Code::NotFound => {}
            Err(s) => return Err(grpc("Snapshots.Remove")(s)),
        }
        match self
            .containers()
            .delete(self.req(DeleteContainerRequest { id: id.to_string() }))
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == Code::NotFound => {}
            Err(s) => return Err(grpc("Containers.Delete")(s)),
        }
        let _ = std::fs::remove_dir_all(self.fifo_dir.join(id));
        self.attached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        Ok(())
    }

    async fn list(&self) -> Result<Vec<ContainerRecord>, RuntimeError> {
        let listed = self
            .containers()
            .list(self.req(ListContainersRequest {
                filters: vec![format!("labels.\"{}\"", labels::POD_UID)],
            }))
            .await
            .map_err(grpc("Containers.List"))?
            .into_inner()
            .containers;
        let mut records = Vec::with_capacity(listed.len());
        for c in listed {
            let label = |key: &str| c.labels.get(key).cloned().unwrap_or_default();
            let created = c.created_at.as_ref().map(timestamp);
            let state = self.task_state(&c.id, created).await;
            let log_path = PathBuf::from(label(labels::LOG_PATH));
            // A running container found after an agent restart needs its log copier again.
            if matches!(state, ContainerState::Running { .. }) && !log_path.as_os_str().is_empty() {
                let _ = self.attach_logs(&c.id, &log_path, false).await;
            }
            records.push(ContainerRecord {
                id: c.id.clone(),
                pod_uid: label(labels::POD_UID),
                pod_namespace: label(labels::POD_NAMESPACE),
                pod_name: label(labels::POD_NAME),
                container_name: label(labels::CONTAINER),
                attempt: label(labels::ATTEMPT).parse().unwrap_or(0),
                state,
                image: c.image.clone(),
                image_id: label(labels::IMAGE_ID),
                log_path,
            });
        }
        Ok(records)
    }

    async fn list_sandboxes(&self) -> Result<Vec<String>, RuntimeError> {
        let mut uids = self.network.list();
        uids.extend(self.cgroups.list());
        uids.sort();
        uids.dedup();
        Ok(uids)
    }

    async fn exec_sync(
        &self,
        id: &str,
        command: &[String],
        timeout: std::time::Duration,
    ) -> Result<(i32, String), RuntimeError> {
        self.exec_to_end(id, command, timeout).await
    }

    fn usage(&self, container: &ContainerRecord) -> Option<crate::stats::ContainerUsage> {
        let usage = self.cgroups.usage(&container.pod_uid, &container.id)?;
        Some(crate::stats::ContainerUsage {
            cgroup: self
                .cgroups
                .container_path(&container.pod_uid, &container.id),
            usage,
        })
    }
}

fn timestamp(t: &prost_types::Timestamp) -> Timestamp {
    Timestamp::new(t.seconds, t.nanos).unwrap_or_else(|_| Timestamp::now())
}

fn failed(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Failed(e.to_string())
}

fn grpc(call: &'static str) -> impl Fn(Status) -> RuntimeError {
    move |status| RuntimeError::Failed(format!("{call}: {}", status.message()))
}
