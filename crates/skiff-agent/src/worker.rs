//! The pod worker: one task per pod bound to this node, turning the pod's spec into running
//! containers and its containers' lives into the pod's status.
//!
//! A worker wakes up when the pod object changes, when one of its containers exits or a probe
//! reports, or when a timer it set fires (a back-off ending), and then runs [`Worker::sync`]:
//! it asks [`plan::plan`] what to do — every decision (restart policy, back-off, init order,
//! probes' kills, deletion) is made there, purely — and carries the plan out:
//!
//! ```text
//! Delete:   StopAll ─► preStop hooks, SIGTERM, grace, SIGKILL ─► remove containers, files,
//!           network ─► DeleteObject (grace 0; a failure is retried with back-off)
//! Finished: free the pod's IP once ─► write status
//! Run:      kill (failed probes) ─► sandbox (netns + IP) ─► start (image, env, config, the
//!           runtime) ─► back-offs set CrashLoopBackOff and a timer ─► probers ─► write status
//! ```
//! What a worker keeps between passes is what the plan observes: each container's state, its
//! last exit, its back-off and its probes' verdicts.
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, Pod};
use skiff_client::events::{object_ref, EventType, Recorder};
use skiff_client::{Client, DeleteOptions};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::plan::{
    self, BackOff, Backoff, DeleteStep, Kill, Observed, ObservedPod, PodActions, CRASH_LOOP,
    DELETE_RETRY,
};
use crate::probe;
use crate::runtime::{
    ContainerRecord, ContainerState, Runtime, RuntimeError, Sandbox, SandboxConfig,
};
use crate::spec::{self, Downward, PodDirs};
use crate::status::{self, ContainerView, Current, PodView, Terminated};

/// How long a starting container waits for the agent's first read of the services (its
/// service variables depend on them) before it fails with CreateContainerConfigError.
const SERVICES_SYNC_WAIT: Duration = Duration::from_secs(5);

/// What every worker on a node shares.
pub struct NodeContext<R> {
    pub runtime: Arc<R>,
    pub client: Client,
    pub recorder: Recorder,
    pub node_name: String,
    pub node_ip: String,
    pub data_dir: PathBuf,
    /// Services as the agent last saw them (for containers' `*_SERVICE_HOST` variables).
    pub services: watch::Receiver<Arc<crate::services::Snapshot>>,
    /// The node's DNS server for pods (`None`: pods use the node's resolver).
    pub dns: Option<spec::ClusterDns>,
}

impl<R> NodeContext<R> {
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.data_dir.join("pods").join(uid)
    }

    pub fn log_dir(&self, namespace: &str, name: &str, uid: &str) -> PathBuf {
        self.data_dir
            .join("logs")
            .join(format!("{namespace}_{name}_{uid}"))
    }
}

/// One container slot of the pod (an init or app container) and its history.
#[derive(Debug, Clone)]
struct Slot {
    spec: Container,
    init: bool,
    /// The runtime id of the current (or last) container.
    id: Option<String>,
    /// The attempt number the next start uses.
    next_attempt: u32,
    restart_count: i32,
    current: Current,
    last: Option<Terminated>,
    image_id: String,
    /// Restarts and failed starts back off ([`CRASH_LOOP`]); lives as long as the worker.
    backoff: Backoff,
    image_reported: bool,
    /// The startup probe passed (or there is none) for the current container.
    started: bool,
    /// The readiness probe's verdict; `None` when the container has no readiness probe.
    probe_ready: Option<bool>,
    /// A liveness or startup probe gave up on the current container; cleared once killed.
    failed_probe: Option<probe::Kind>,
    /// The prober of the current container (by container id).
    prober: Option<(String, Arc<tokio::task::JoinHandle<()>>)>,
}

impl Slot {
    fn new(spec: Container, init: bool) -> Slot {
        Slot {
            spec,
            init,
            id: None,
            next_attempt: 0,
            restart_count: 0,
            current: Current::Waiting {
                reason: if init {
                    "PodInitializing"
                } else {
                    "ContainerCreating"
                }
                .into(),
                message: None,
            },
            last: None,
            image_id: String::new(),
            backoff: Backoff::default(),
            image_reported: false,
            started: false,
            probe_ready: None,
            failed_probe: None,
            prober: None,
        }
    }

    /// Forgets the probe results of the previous container (a new one starts unproven).
    fn reset_probes(&mut self) {
        self.stop_prober();
        self.failed_probe = None;
        self.started = self.spec.startup_probe.is_none();
        self.probe_ready = self.spec.readiness_probe.as_ref().map(|_| false);
    }

    fn stop_prober(&mut self) {
        if let Some((_, task)) = self.prober.take() {
            task.abort();
        }
    }

    /// What the plan needs to know of this container.
    fn observed(&self) -> Observed {
        Observed {
            init: self.init,
            current: self.current.clone(),
            last_exit: self.last.as_ref().map(|t| t.exit_code),
            backoff: self.backoff,
            failed_probe: self.failed_probe,
        }
    }

    fn view(&self) -> ContainerView {
        ContainerView {
            name: self.spec.name.clone(),
            image: self.spec.image.clone().unwrap_or_default(),
            image_id: self.image_id.clone(),
            container_id: self.id.as_ref().map(|id| format!("containerd://{id}")),
            restart_count: self.restart_count,
            ready: matches!(self.current, Current::Running { .. })
                && !self.init
                && self.started
                && self.probe_ready.unwrap_or(true),
            started: matches!(self.current, Current::Running { .. }) && self.started,
            current: self.current.clone(),
            last: self.last.clone(),
        }
    }
}

/// A container (by runtime id) that exited, and how.
type Exit = (String, ContainerState);
/// What a container's prober (by the container's runtime id) reports.
type ProbeNews = (String, probe::Update);

/// A handle the agent keeps per pod.
pub struct WorkerHandle {
    pub pod: watch::Sender<Option<Pod>>,
    pub done: tokio::task::JoinHandle<()>,
}

/// Starts the worker of `pod`, adopting `adopted` containers found in the runtime.
pub fn spawn<R: Runtime>(
    ctx: Arc<NodeContext<R>>,
    pod: Pod,
    adopted: Vec<ContainerRecord>,
) -> WorkerHandle {
    let (tx, rx) = watch::channel(Some(pod.clone()));
    let done = tokio::spawn(async move {
        let mut worker = Worker::new(ctx, pod, adopted);
        worker.run(rx).await;
    });
    WorkerHandle { pod: tx, done }
}

struct Worker<R> {
    ctx: Arc<NodeContext<R>>,
    pod: Pod,
    uid: String,
    sandbox: Option<Sandbox>,
    start_time: Option<Timestamp>,
    slots: Vec<Slot>,
    exits: (mpsc::Sender<Exit>, mpsc::Receiver<Exit>),
    /// What the containers' probers report.
    probes: (mpsc::Sender<ProbeNews>, mpsc::Receiver<ProbeNews>),
    reported: Option<serde_json::Value>,
    message: Option<(String, String)>,
    wake_at: Option<Instant>,
    /// A finished pod gave its IP back.
    network_released: bool,
    /// Deleting: the containers, their files and the network are gone.
    cleaned_up: bool,
    /// Deleting: the back-off of the final DELETE after a failure.
    delete_retry: Backoff,
}

enum Next {
    Continue,
    Finished,
}

impl<R: Runtime> Worker<R> {
    fn new(ctx: Arc<NodeContext<R>>, pod: Pod, adopted: Vec<ContainerRecord>) -> Worker<R> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let mut slots: Vec<Slot> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| Slot::new(c.clone(), true))
            .chain(spec.containers.iter().map(|c| Slot::new(c.clone(), false)))
            .collect();
        let exits = mpsc::channel(64);
        // Adopt: the newest container of each slot becomes its current one; its restart
        // count is its attempt number (each restart is a new attempt).
        let start_time = pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0);
        for slot in &mut slots {
            slot.reset_probes();
            let newest = adopted
                .iter()
                .filter(|r| r.container_name == slot.spec.name)
                .max_by_key(|r| r.attempt);
            if let Some(record) = newest {
                slot.id = Some(record.id.clone());
                slot.next_attempt = record.attempt + 1;
                slot.restart_count = record.attempt as i32;
                slot.image_id = record.image_id.clone();
                slot.image_reported = true;
                slot.current = match &record.state {
                    ContainerState::Running { started_at } => {
                        let tx = exits.0.clone();
                        let runtime = ctx.runtime.clone();
                        let id = record.id.clone();
                        tokio::spawn(async move {
                            if let Ok(state) = runtime.wait(&id).await {
                                let _ = tx.send((id, state)).await;
                            }
                        });
                        Current::Running {
                            started_at: *started_at,
                        }
                    }
                    ContainerState::Exited {
                        exit_code,
                        started_at,
                        finished_at,
                        oom_killed,
                    } => Current::Terminated(Terminated {
                        exit_code: *exit_code,
                        reason: Terminated::reason_for(*exit_code, *oom_killed).into(),
                        message: None,
                        started_at: *started_at,
                        finished_at: *finished_at,
                        container_id: Some(format!("containerd://{}", record.id)),
                    }),
                    ContainerState::Unknown => slot.current.clone(),
                };
            }
        }
        Worker {
            ctx,
            pod,
            uid,
            sandbox: None,
            start_time,
            slots,
            exits,
            probes: mpsc::channel(64),
            reported: None,
            message: None,
            wake_at: None,
            network_released: false,
            cleaned_up: false,
            delete_retry: Backoff::default(),
        }
    }

    async fn run(&mut self, mut updates: watch::Receiver<Option<Pod>>) {
        loop {
            match self.sync().await {
                Next::Finished => return,
                Next::Continue => {}
            }
            let wake = self.wake_at.take();
            tokio::select! {
                changed = updates.changed() => {
                    let latest = updates.borrow_and_update().clone();
                    match (changed, latest) {
                        (Ok(()), Some(pod)) => self.pod = pod,
                        // The pod is gone from the store (force-deleted): clean up and stop.
                        (Ok(()), None) => {
                            self.terminate(Duration::ZERO).await;
                            return;
                        }
                        // The agent is stopping (it dropped its handle): the containers and
                        // their network outlive it by design, and a restart adopts them.
                        (Err(_), _) => return,
                    }
                }
                Some((id, state)) = self.exits.1.recv() => self.on_exit(&id, state),
                Some((id, update)) = self.probes.1.recv() => self.on_probe(&id, update),
                _ = sleep_until(wake) => {}
            }
        }
    }

    /// One pass towards the spec: the plan, carried out.
    async fn sync(&mut self) -> Next {
        let actions = plan::plan(&self.pod, &self.observe(), Instant::now());
        let run = match actions {
            PodActions::Delete(step) => return self.delete(step).await,
            PodActions::Finished { release_network } => {
                self.start_time.get_or_insert_with(Timestamp::now);
                if release_network {
                    self.release_network().await;
                }
                self.report().await;
                return Next::Continue;
            }
            PodActions::Run(run) => run,
        };
        self.start_time.get_or_insert_with(Timestamp::now);
        for kill in run.kill {
            self.kill(kill);
        }
        if run.create_sandbox {
            match self.setup_sandbox().await {
                Ok(sandbox) => {
                    self.sandbox = Some(sandbox);
                    self.message = None;
                }
                Err(e) => {
                    self.warn(
                        "FailedCreatePodSandBox",
                        &format!("Failed to create pod sandbox: {e}"),
                    );
                    self.message = Some(("ContainerCreating".into(), e.to_string()));
                    self.wake_in(Duration::from_secs(2));
                    self.report().await;
                    return Next::Continue;
                }
            }
        }
        for start in run.start {
            self.start(start.index).await;
        }
        for back_off in run.back_off {
            self.back_off(back_off);
        }
        self.ensure_probers();
        self.report().await;
        Next::Continue
    }

    /// The pod as the plan sees it.
    fn observe(&self) -> ObservedPod {
        ObservedPod {
            containers: self.slots.iter().map(Slot::observed).collect(),
            sandbox_ready: self.sandbox.is_some(),
            network_released: self.network_released,
            cleaned_up: self.cleaned_up,
            delete_retry: self.delete_retry,
        }
    }

    /// A step of the pod's deletion; `Finished` once the object is gone.
    async fn delete(&mut self, step: DeleteStep) -> Next {
        match step {
            DeleteStep::StopAll { grace } => {
                self.terminate(grace).await;
                self.cleaned_up = true;
                self.delete_object().await
            }
            DeleteStep::DeleteObject => self.delete_object().await,
            DeleteStep::RetryIn(wait) => {
                self.wake_in(wait);
                Next::Continue
            }
        }
    }

    /// A finished pod keeps its containers (for logs) but gives its IP back.
    async fn release_network(&mut self) {
        match self.ctx.runtime.teardown_sandbox(&self.uid).await {
            Ok(()) => self.network_released = true,
            Err(e) => {
                tracing::warn!(pod = %self.pod_key(), error = %e, "freeing a finished pod's network; will retry");
                self.wake_in(Duration::from_secs(10));
            }
        }
    }

    /// Stops a container a probe gave up on; its exit comes back through the wait task, and
    /// restartPolicy and back-off decide what follows.
    fn kill(&mut self, kill: Kill) {
        let slot = &mut self.slots[kill.index];
        slot.failed_probe = None;
        let Some(id) = slot.id.clone() else { return };
        let name = slot.spec.name.clone();
        self.normal(
            "Killing",
            &format!(
                "Container {name} failed {} probe, will be restarted",
                kill.reason.lower()
            ),
        );
        let runtime = self.ctx.runtime.clone();
        tokio::spawn(async move {
            if let Err(e) = runtime.stop(&id, kill.grace).await {
                tracing::warn!(container = %id, error = %e, "stopping an unhealthy container");
            }
        });
    }

    /// A container waits out its back-off; one that ran before shows `CrashLoopBackOff`.
    fn back_off(&mut self, back_off: BackOff) {
        if back_off.crash_loop {
            let key = self.pod_key();
            let slot = &mut self.slots[back_off.index];
            slot.current = Current::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: Some(format!(
                    "back-off {} restarting failed container={} pod={key}",
                    human(back_off.delay),
                    slot.spec.name
                )),
            };
        }
        self.wake_in(back_off.remaining);
    }

    /// Every running container with probes has its prober (containers adopted after an agent
    /// restart included).
    fn ensure_probers(&mut self) {
        let pod_ip = self.sandbox.as_ref().and_then(|s| s.ip.clone());
        for slot in &mut self.slots {
            let Some(id) = slot.id.clone() else { continue };
            let running = matches!(slot.current, Current::Running { .. });
            if !running || slot.init || slot.prober.as_ref().is_some_and(|(p, _)| *p == id) {
                continue;
            }
            let target = probe::Target {
                runtime: self.ctx.runtime.clone(),
                container_id: id.clone(),
                container: slot.spec.clone(),
                pod_ip: pod_ip.clone(),
            };
            if let Some(task) = probe::spawn(target, self.probes.0.clone()) {
                slot.prober = Some((id, Arc::new(task)));
            }
        }
    }

    /// A prober's news: start/readiness changes, failures as events, restarts.
    fn on_probe(&mut self, id: &str, update: probe::Update) {
        let Some(i) = self.slots.iter().position(|s| s.id.as_deref() == Some(id)) else {
            return;
        };
        if !matches!(self.slots[i].current, Current::Running { .. }) {
            return;
        }
        match update {
            probe::Update::Started => self.slots[i].started = true,
            probe::Update::Ready(ready) => self.slots[i].probe_ready = Some(ready),
            probe::Update::Unhealthy { kind, message } => {
                self.warn(
                    "Unhealthy",
                    &format!("{} probe failed: {message}", kind.title()),
                );
            }
            // The plan kills it at the next pass (which follows at once).
            probe::Update::Failed { kind } => self.slots[i].failed_probe = Some(kind),
        }
    }

    async fn setup_sandbox(&self) -> Result<Sandbox, RuntimeError> {
        let spec = self.pod.spec.as_ref();
        let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
        let config = SandboxConfig {
            pod_uid: self.uid.clone(),
            pod_name: self.pod.metadata.name.clone().unwrap_or_default(),
            namespace: self.pod.metadata.namespace.clone().unwrap_or_default(),
            host_network,
        };
        let started = std::time::Instant::now();
        let mut sandbox = self.ctx.runtime.setup_sandbox(&config).await?;
        tracing::debug!(pod = %self.pod_key(), elapsed_ms = started.elapsed().as_millis() as u64, "sandbox ready");
        if host_network {
            sandbox.ip = Some(self.ctx.node_ip.clone());
        }
        self.write_pod_files(&sandbox, host_network)
            .map_err(|e| RuntimeError::Failed(format!("writing pod files: {e}")))?;
        Ok(sandbox)
    }

    /// /etc/hosts and /etc/resolv.conf for the pod's containers, and emptyDir volumes.
    fn write_pod_files(&self, sandbox: &Sandbox, host_network: bool) -> std::io::Result<()> {
        let dir = self.ctx.pod_dir(&self.uid);
        std::fs::create_dir_all(dir.join("volumes"))?;
        for volume in self
            .pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
        {
            if volume.empty_dir.is_some() {
                std::fs::create_dir_all(dir.join("volumes").join(&volume.name))?;
            }
        }
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        let hostname = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.hostname.clone())
            .unwrap_or(name);
        if !host_network {
            let ip = sandbox.ip.clone().unwrap_or_default();
            std::fs::write(
                dir.join("hosts"),
                format!("# Kubernetes-managed hosts file (skiff).\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{ip}\t{hostname}\n"),
            )?;
        }
        let node_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let resolv = spec::resolv_conf(&self.pod, &node_resolv, self.ctx.dns.as_ref());
        std::fs::write(dir.join("resolv.conf"), resolv)?;
        Ok(())
    }

    /// Starts the container of slot `i`: its image, its environment, then the runtime. A
    /// failure sets the container's waiting reason and backs off.
    async fn start(&mut self, i: usize) {
        let slot = self.slots[i].clone();
        let image = slot.spec.image.clone().unwrap_or_default();
        let pull = slot.spec.image_pull_policy.as_deref() != Some("Never");
        let image_info = match self.ctx.runtime.ensure_image(&image, pull).await {
            Ok(info) => info,
            Err(e) if !pull => {
                // imagePullPolicy: Never and the image is not here: kubelet's ErrImageNeverPull.
                let message =
                    format!("Container image \"{image}\" is not present with pull policy of Never");
                if !matches!(self.slots[i].current, Current::Waiting { ref reason, .. } if reason == "ErrImageNeverPull")
                {
                    self.warn("ErrImageNeverPull", &message);
                }
                tracing::debug!(error = %e, "image not present");
                self.slots[i].current = Current::Waiting {
                    reason: "ErrImageNeverPull".into(),
                    message: Some(message),
                };
                // It may be imported later (the airgap directory is watched).
                self.wake_in(Duration::from_secs(5));
                return;
            }
            Err(e) => {
                let again = matches!(self.slots[i].current, Current::Waiting { ref reason, .. } if reason == "ErrImagePull" || reason == "ImagePullBackOff");
                let reason = if again {
                    "ImagePullBackOff"
                } else {
                    "ErrImagePull"
                };
                if again {
                    self.normal_or_warn(
                        EventType::Normal,
                        "BackOff",
                        &format!("Back-off pulling image \"{image}\""),
                    );
                } else {
                    self.warn("Failed", &format!("Failed to pull image \"{image}\": {e}"));
                    self.warn("Failed", "Error: ErrImagePull");
                }
                self.slots[i].current = Current::Waiting {
                    reason: reason.into(),
                    message: Some(if again {
                        format!("Back-off pulling image \"{image}\": {e}")
                    } else {
                        e.to_string()
                    }),
                };
                let delay = self.slots[i].backoff.fail(Instant::now(), CRASH_LOOP);
                self.wake_in(delay);
                return;
            }
        };
        if !self.slots[i].image_reported {
            self.normal(
                "Pulled",
                &format!("Container image \"{image}\" already present on machine"),
            );
            self.slots[i].image_reported = true;
        }
        self.slots[i].image_id = image_info.id.clone();

        // The previous container of this slot goes (its log file stays for --previous).
        if let Some(old) = slot.id.clone() {
            if let Err(e) = self.ctx.runtime.remove(&old).await {
                tracing::warn!(pod = %self.pod_key(), container = %old, error = %e, "removing the previous container");
            }
        }
        let config = match self.env_sources(&slot.spec).await {
            Ok(downward) => self.container_config(&slot, downward),
            Err(e) => Err(e),
        };
        let config = match config {
            Ok(config) => config,
            Err(e) => {
                self.warn("Failed", &format!("Error: {e}"));
                self.slots[i].current = Current::Waiting {
                    reason: "CreateContainerConfigError".into(),
                    message: Some(e),
                };
                self.wake_in(Duration::from_secs(10));
                return;
            }
        };
        match self.ctx.runtime.start_container(&config).await {
            Ok(id) => {
                let name = &slot.spec.name;
                self.normal("Created", &format!("Created container: {name}"));
                self.normal("Started", &format!("Started container {name}"));
                let s = &mut self.slots[i];
                s.reset_probes();
                if s.last.is_some() || s.next_attempt > 0 {
                    s.restart_count += 1;
                }
                s.id = Some(id.clone());
                s.next_attempt = config.attempt + 1;
                s.current = Current::Running {
                    started_at: Timestamp::now(),
                };
                let tx = self.exits.0.clone();
                let runtime = self.ctx.runtime.clone();
                tokio::spawn(async move {
                    if let Ok(state) = runtime.wait(&id).await {
                        let _ = tx.send((id, state)).await;
                    }
                });
            }
            Err(e) => {
                self.warn("Failed", &format!("Error: {e}"));
                self.slots[i].current = Current::Waiting {
                    reason: "CreateContainerError".into(),
                    message: Some(e.to_string()),
                };
                self.slots[i].next_attempt += 1;
                let delay = self.slots[i].backoff.fail(Instant::now(), CRASH_LOOP);
                self.wake_in(delay);
            }
        }
    }

    /// Reads the ConfigMaps and Secrets the container's environment refers to.
    async fn env_sources(
        &self,
        container: &k8s_openapi::api::core::v1::Container,
    ) -> Result<Downward, String> {
        use k8s_openapi::api::core::v1::{ConfigMap, Secret};
        // Service variables come from the services as they are, not from an empty list before
        // the agent's first read (kubelet refuses the same way).
        let links = self.pod.spec.as_ref().and_then(|s| s.enable_service_links) != Some(false);
        if links {
            let mut services = self.ctx.services.clone();
            let synced = tokio::time::timeout(
                SERVICES_SYNC_WAIT,
                services.wait_for(|snapshot| snapshot.synced),
            )
            .await;
            if !matches!(synced, Ok(Ok(_))) {
                return Err(
                    "services have not yet been read at least once, cannot construct envvars"
                        .into(),
                );
            }
        }
        let namespace = self.pod.metadata.namespace.clone();
        let (maps, secrets) = spec::env_references(container);
        let mut downward = Downward::default();
        for name in maps {
            match self
                .ctx
                .client
                .get_opt::<ConfigMap>(namespace.as_deref(), &name)
                .await
            {
                Ok(Some(cm)) => {
                    downward
                        .config_maps
                        .insert(name, cm.data.unwrap_or_default());
                }
                Ok(None) => {}
                Err(e) => return Err(format!("reading configmap {name}: {e}")),
            }
        }
        for name in secrets {
            match self
                .ctx
                .client
                .get_opt::<Secret>(namespace.as_deref(), &name)
                .await
            {
                Ok(Some(secret)) => {
                    let mut data: std::collections::BTreeMap<String, String> = secret
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                        .collect();
                    data.extend(secret.string_data.unwrap_or_default());
                    downward.secrets.insert(name, data);
                }
                Ok(None) => {}
                Err(e) => return Err(format!("reading secret {name}: {e}")),
            }
        }
        Ok(downward)
    }

    fn container_config(
        &self,
        slot: &Slot,
        sources: Downward,
    ) -> Result<crate::runtime::ContainerConfig, String> {
        let namespace = self.pod.metadata.namespace.clone().unwrap_or_default();
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        let pod_dir = self.ctx.pod_dir(&self.uid);
        let log_dir = self.ctx.log_dir(&namespace, &name, &self.uid);
        let dirs = PodDirs {
            pod_dir: &pod_dir,
            log_dir: &log_dir,
        };
        let sandbox = self.sandbox.clone().unwrap_or_default();
        let service_env = crate::services::service_env(&self.ctx.services.borrow(), &namespace);
        let downward = Downward {
            service_env,
            pod_ip: sandbox.ip.clone(),
            host_ip: Some(self.ctx.node_ip.clone()),
            node_name: self.ctx.node_name.clone(),
            ..sources
        };
        let mut config = spec::container_config(
            &self.pod,
            &slot.spec,
            slot.init,
            slot.next_attempt,
            &dirs,
            &downward,
        )?;
        config.netns = sandbox.netns.clone();
        Ok(config)
    }

    /// Records an exit and schedules the restart the policy allows.
    fn on_exit(&mut self, id: &str, state: ContainerState) {
        let Some(i) = self.slots.iter().position(|s| s.id.as_deref() == Some(id)) else {
            return;
        };
        let ContainerState::Exited {
            exit_code,
            finished_at,
            oom_killed,
            ..
        } = state
        else {
            return;
        };
        let started_at = match self.slots[i].current {
            Current::Running { started_at } => Some(started_at),
            _ => None,
        };
        let terminated = Terminated {
            exit_code,
            reason: Terminated::reason_for(exit_code, oom_killed).into(),
            message: None,
            started_at,
            finished_at,
            container_id: Some(format!("containerd://{id}")),
        };
        let slot = &mut self.slots[i];
        slot.reset_probes();
        let ran = started_at
            .and_then(|s| Duration::try_from(finished_at.duration_since(s)).ok())
            .unwrap_or_default();
        slot.backoff.ran_for(ran, CRASH_LOOP);
        slot.last = Some(terminated.clone());
        slot.current = Current::Terminated(terminated);
        if plan::restart_follows(&self.pod, slot.init, exit_code) {
            let delay = slot.backoff.fail(Instant::now(), CRASH_LOOP);
            if delay > Duration::ZERO {
                let name = slot.spec.name.clone();
                self.warn(
                    "BackOff",
                    &format!(
                        "Back-off restarting failed container {name} in pod {}",
                        self.pod_key()
                    ),
                );
            }
        }
    }

    fn view(&self) -> PodView {
        PodView {
            init: self
                .slots
                .iter()
                .filter(|s| s.init)
                .map(Slot::view)
                .collect(),
            containers: self
                .slots
                .iter()
                .filter(|s| !s.init)
                .map(Slot::view)
                .collect(),
            pod_ip: self.sandbox.as_ref().and_then(|s| s.ip.clone()),
            host_ip: Some(self.ctx.node_ip.clone()),
            start_time: self.start_time,
            message: self.message.clone(),
        }
    }

    /// Writes the status if it differs from what was last written.
    async fn report(&mut self) {
        let status = status::pod_status(&self.pod, &self.view(), Timestamp::now());
        let Ok(value) = serde_json::to_value(&status) else {
            return;
        };
        if self.reported.as_ref() == Some(&value) {
            return;
        }
        let namespace = self.pod.metadata.namespace.clone();
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        let patch = serde_json::json!({ "status": value });
        match self
            .ctx
            .client
            .merge_patch::<Pod>(namespace.as_deref(), &name, Some("status"), &patch)
            .await
        {
            Ok(pod) => {
                // Keep our own view of the pod in step (for transition times).
                self.pod.status = pod.status;
                self.reported = Some(value);
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                tracing::warn!(pod = %self.pod_key(), error = %e, "writing pod status");
                self.wake_in(Duration::from_secs(1));
            }
        }
    }

    /// Stops everything of the pod and removes its containers, files and network. Failures are
    /// logged and the rest goes on: containers and networks that cannot be removed now are
    /// removed as leftovers at the agent's next start.
    async fn terminate(&mut self, grace: Duration) {
        let running: Vec<(String, String)> = self
            .slots
            .iter()
            .filter(|s| matches!(s.current, Current::Running { .. }))
            .filter_map(|s| s.id.clone().map(|id| (id, s.spec.name.clone())))
            .collect();
        for (_, name) in &running {
            self.normal("Killing", &format!("Stopping container {name}"));
        }
        let runtime = self.ctx.runtime.clone();
        // preStop hooks first, within the grace period (a `sleep 5` here is how applications
        // let load balancers stop sending them traffic before they exit).
        let started = Instant::now();
        let hooks = running.iter().filter_map(|(id, name)| {
            let slot = self.slots.iter().find(|s| &s.spec.name == name)?;
            let hook = slot.spec.lifecycle.as_ref()?.pre_stop.clone()?;
            let target = probe::Target {
                runtime: runtime.clone(),
                container_id: id.clone(),
                container: slot.spec.clone(),
                pod_ip: self.sandbox.as_ref().and_then(|s| s.ip.clone()),
            };
            Some(async move { (name.clone(), probe::run_hook(&target, &hook, grace).await) })
        });
        for (name, result) in futures::future::join_all(hooks).await {
            if let Err(message) = result {
                self.warn(
                    "FailedPreStopHook",
                    &format!("PreStopHook failed for container {name}: {message}"),
                );
            }
        }
        let grace = grace.saturating_sub(started.elapsed());
        let stops = running.iter().map(|(id, _)| runtime.stop(id, grace));
        for result in futures::future::join_all(stops).await {
            if let Err(e) = result {
                tracing::warn!(pod = %self.pod_key(), error = %e, "stopping a container");
            }
        }
        for slot in &mut self.slots {
            slot.stop_prober();
        }
        // Every container this pod ever had on this node, not only the current ones.
        let mut ids: Vec<String> = self.slots.iter().filter_map(|s| s.id.clone()).collect();
        match runtime.list().await {
            Ok(records) => ids.extend(
                records
                    .into_iter()
                    .filter(|r| r.pod_uid == self.uid)
                    .map(|r| r.id),
            ),
            Err(e) => {
                tracing::warn!(pod = %self.pod_key(), error = %e, "listing the pod's earlier containers")
            }
        }
        ids.sort();
        ids.dedup();
        for id in ids {
            if let Err(e) = runtime.remove(&id).await {
                tracing::warn!(pod = %self.pod_key(), error = %e, "removing a container");
            }
        }
        if let Err(e) = runtime.teardown_sandbox(&self.uid).await {
            tracing::warn!(pod = %self.pod_key(), error = %e, "removing the pod network");
        }
        let namespace = self.pod.metadata.namespace.clone().unwrap_or_default();
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        for dir in [
            self.ctx.pod_dir(&self.uid),
            self.ctx.log_dir(&namespace, &name, &self.uid),
        ] {
            if let Err(e) = remove_dir(&dir) {
                tracing::warn!(pod = %self.pod_key(), dir = %dir.display(), error = %e, "removing the pod's files");
            }
        }
    }

    /// Deletes the pod object (grace 0: its containers are gone), the last step of a graceful
    /// delete. A failure is retried with back-off (the plan asks again), so the pod does not
    /// stay Terminating.
    async fn delete_object(&mut self) -> Next {
        let namespace = self.pod.metadata.namespace.clone();
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        let options = DeleteOptions {
            uid: Some(self.uid.clone()),
            grace_period_seconds: Some(0),
            ..DeleteOptions::default()
        };
        match self
            .ctx
            .client
            .delete::<Pod>(namespace.as_deref(), &name, &options)
            .await
        {
            Ok(_) => Next::Finished,
            // Gone already, or a new pod of that name: either way ours is gone.
            Err(e) if e.is_not_found() || e.is_conflict() => Next::Finished,
            Err(e) => {
                let wait = self.delete_retry.fail(Instant::now(), DELETE_RETRY);
                tracing::warn!(pod = %self.pod_key(), error = %e, retry_in = ?wait, "deleting the pod");
                self.wake_in(wait);
                Next::Continue
            }
        }
    }

    fn pod_key(&self) -> String {
        format!(
            "{}_{}({})",
            self.pod.metadata.name.as_deref().unwrap_or(""),
            self.pod.metadata.namespace.as_deref().unwrap_or(""),
            self.uid
        )
    }

    fn wake_in(&mut self, delay: Duration) {
        let at = Instant::now() + delay;
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }

    fn normal(&self, reason: &str, message: &str) {
        self.normal_or_warn(EventType::Normal, reason, message);
    }

    fn warn(&self, reason: &str, message: &str) {
        self.normal_or_warn(EventType::Warning, reason, message);
    }

    fn normal_or_warn(&self, kind: EventType, reason: &str, message: &str) {
        self.ctx
            .recorder
            .emit(object_ref(&self.pod), kind, reason, message);
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Removes a directory tree; one already gone is fine.
fn remove_dir(dir: &std::path::Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// `10s`, `5m0s` — Go's duration format, as kubelet's messages print back-offs.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// Which adopted containers belong to which pod.
pub fn group_by_pod(records: Vec<ContainerRecord>) -> HashMap<String, Vec<ContainerRecord>> {
    let mut map: HashMap<String, Vec<ContainerRecord>> = HashMap::new();
    for record in records {
        map.entry(record.pod_uid.clone()).or_default().push(record);
    }
    map
}
