//! One container of a pod, as its worker keeps it between passes: the spec, the current (or
//! last) runtime container, its back-off and its probes' verdicts.
use std::sync::Arc;

use k8s_openapi::api::core::v1::Container;

use crate::plan::{Backoff, Observed};
use crate::pod_status::{ContainerView, Current, Terminated};
use crate::probe;
use crate::runtime::{ContainerRecord, ContainerState};

/// One container slot of the pod (an init or app container) and its history.
#[derive(Debug, Clone)]
pub(super) struct Slot {
    pub(super) spec: Container,
    pub(super) init: bool,
    /// The runtime id of the current (or last) container.
    pub(super) id: Option<String>,
    /// The attempt number the next start uses.
    pub(super) next_attempt: u32,
    pub(super) restart_count: i32,
    pub(super) current: Current,
    pub(super) last: Option<Terminated>,
    pub(super) image_id: String,
    /// Restarts and failed starts back off ([`CRASH_LOOP`]); lives as long as the worker.
    pub(super) backoff: Backoff,
    pub(super) image_reported: bool,
    /// The startup probe passed (or there is none) for the current container.
    pub(super) started: bool,
    /// The readiness probe's verdict; `None` when the container has no readiness probe.
    pub(super) probe_ready: Option<bool>,
    /// A liveness or startup probe gave up on the current container; cleared once killed.
    pub(super) failed_probe: Option<probe::Kind>,
    /// The prober of the current container (by container id).
    pub(super) prober: Option<(String, Arc<tokio::task::JoinHandle<()>>)>,
}

impl Slot {
    pub(super) fn new(spec: Container, init: bool) -> Slot {
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
    pub(super) fn reset_probes(&mut self) {
        self.stop_prober();
        self.failed_probe = None;
        self.started = self.spec.startup_probe.is_none();
        self.probe_ready = self.spec.readiness_probe.as_ref().map(|_| false);
    }

    /// Takes `record`, the newest container of this slot found in the runtime at the agent's
    /// start, as the current one; its restart count is its attempt number (each restart is a
    /// new attempt).
    pub(super) fn adopt(&mut self, record: &ContainerRecord) {
        self.id = Some(record.id.clone());
        self.next_attempt = record.attempt + 1;
        self.restart_count = record.attempt as i32;
        self.image_id = record.image_id.clone();
        self.image_reported = true;
        match &record.state {
            ContainerState::Running { started_at } => {
                self.current = Current::Running {
                    started_at: *started_at,
                }
            }
            ContainerState::Exited {
                exit_code,
                started_at,
                finished_at,
                oom_killed,
            } => {
                self.current = Current::Terminated(Terminated {
                    exit_code: *exit_code,
                    reason: Terminated::reason_for(*exit_code, *oom_killed).into(),
                    message: None,
                    started_at: *started_at,
                    finished_at: *finished_at,
                    container_id: Some(format!("containerd://{}", record.id)),
                })
            }
            ContainerState::Unknown => {}
        }
    }

    pub(super) fn stop_prober(&mut self) {
        if let Some((_, task)) = self.prober.take() {
            task.abort();
        }
    }

    /// What the plan needs to know of this container.
    pub(super) fn observed(&self) -> Observed {
        Observed {
            init: self.init,
            current: self.current.clone(),
            last_exit: self.last.as_ref().map(|t| t.exit_code),
            backoff: self.backoff,
            failed_probe: self.failed_probe,
        }
    }

    pub(super) fn view(&self) -> ContainerView {
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
