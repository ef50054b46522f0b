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
mod slot;
mod start;
mod stop;
mod volumes;

use slot::Slot;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use skiff_client::events::{object_ref, EventType, Recorder};
use skiff_client::Client;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::plan::{self, BackOff, Backoff, DeleteStep, Kill, ObservedPod, PodActions, CRASH_LOOP};
use crate::pod_status::{self as status, Current, PodView, Terminated};
use crate::probe;
use crate::resolv::ClusterDns;
use crate::runtime::{ContainerRecord, ContainerState, Runtime, Sandbox};

/// What every worker on a node shares.
pub struct NodeContext<R> {
    pub runtime: Arc<R>,
    pub client: Client,
    pub recorder: Recorder,
    pub node_name: String,
    pub node_ip: String,
    pub data_dir: PathBuf,
    /// Services as the agent last saw them (for containers' `*_SERVICE_HOST` variables).
    pub services: watch::Receiver<Arc<crate::service_view::Snapshot>>,
    /// The node's DNS server for pods (`None`: pods use the node's resolver).
    pub dns: Option<ClusterDns>,
    /// What the node allows and defaults for pods' security contexts and limits.
    pub policy: crate::spec::PodPolicy,
    /// How often running pods' API-backed volumes are refreshed.
    pub sync_frequency: Duration,
    /// Changes of the ConfigMaps and Secrets the node's pods use ([`crate::config_watch`]).
    pub config_changes: tokio::sync::broadcast::Sender<crate::config_watch::Ref>,
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
    /// The pod's volumes are made (their API-backed files last written at the instant).
    volumes_synced: Option<Instant>,
    /// Changes of ConfigMaps and Secrets on this node; those of this pod's volumes make them
    /// be written again at once.
    config_changes: tokio::sync::broadcast::Receiver<crate::config_watch::Ref>,
    /// Failed tries to make the volumes in a row (their retry backs off).
    mount_failures: u32,
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
        // Adopt: the newest container of each slot becomes its current one.
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
                slot.adopt(record);
                if matches!(slot.current, Current::Running { .. }) {
                    watch_exit(ctx.runtime.clone(), record.id.clone(), exits.0.clone());
                }
            }
        }
        Worker {
            config_changes: ctx.config_changes.subscribe(),
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
            volumes_synced: None,
            mount_failures: 0,
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
                        (Ok(()), Some(pod)) => {
                            // New labels or annotations reach downward API files at once, as
                            // kubelet renders them again on every pod update.
                            let meta_changed = pod.metadata.labels != self.pod.metadata.labels
                                || pod.metadata.annotations != self.pod.metadata.annotations;
                            if meta_changed && self.volumes_synced.is_some() {
                                self.volumes_synced = None;
                            }
                            self.pod = pod;
                        }
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
                change = self.config_changes.recv() => {
                    use tokio::sync::broadcast::error::RecvError;
                    let ours = match change {
                        Ok(r) => crate::config_watch::refs_of(&self.pod).contains(&r),
                        // Missed some: assume one was ours.
                        Err(RecvError::Lagged(_)) => true,
                        Err(RecvError::Closed) => false,
                    };
                    if ours && self.volumes_synced.is_some() {
                        self.volumes_synced = None;
                    }
                }
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
        if !self.volumes_ready().await {
            self.report().await;
            return Next::Continue;
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

/// Reports the exit of container `id` to its worker.
fn watch_exit<R: Runtime>(runtime: Arc<R>, id: String, exits: mpsc::Sender<Exit>) {
    tokio::spawn(async move {
        match runtime.wait(&id).await {
            // The worker may be gone (its pod deleted): then nobody needs to know.
            Ok(state) => drop(exits.send((id, state)).await),
            Err(e) => tracing::warn!(container = %id, error = %e, "waiting for a container's exit"),
        }
    });
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
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
