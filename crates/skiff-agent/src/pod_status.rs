//! Pod status as Kubernetes reports it, computed from what the pod worker knows. Pure.
//!
//! The rules follow kubelet's (`getPhase`, `generateAPIPodStatus`):
//! - **phase**: `Pending` while init containers run or any app container waits for its first
//!   start; `Running` once some container runs (or is restarting, with restartPolicy Always);
//!   `Succeeded` when all exited 0 and none will restart; `Failed` when all exited, some non-zero,
//!   and none will restart.
//! - **conditions**: `PodScheduled`, `Initialized` (every init container succeeded),
//!   `ContainersReady` (every app container ready), `Ready` (= ContainersReady; readiness gates
//!   are not supported). A condition keeps its `lastTransitionTime` until its status changes.
//! - **containerStatuses**: one per container in spec order, each `waiting`, `running` or
//!   `terminated`, with `lastState` holding the previous termination.
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    ContainerState as K8sState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::plan::RestartPolicy;

/// What the worker knows about one container of the pod.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerView {
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub container_id: Option<String>,
    pub restart_count: i32,
    pub current: Current,
    /// The previous run's end, if there was one.
    pub last: Option<Terminated>,
    /// Running, past its startup probe, and its readiness probe passing (if it has them).
    pub ready: bool,
    /// Running and past its startup probe.
    pub started: bool,
}

/// A container's present state.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Current {
    /// Not running: why (`ContainerCreating`, `ErrImagePull`, `CrashLoopBackOff`, ...).
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: Timestamp,
    },
    Terminated(Terminated),
    /// Not decided yet (before the first sync).
    #[default]
    Unknown,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Terminated {
    pub exit_code: i32,
    /// `Completed`, `Error`, `OOMKilled`, `ContainerCannotRun`.
    pub reason: String,
    pub message: Option<String>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Timestamp,
    pub container_id: Option<String>,
}

impl Terminated {
    /// The reason kubelet gives an exit.
    pub fn reason_for(exit_code: i32, oom_killed: bool) -> &'static str {
        if oom_killed {
            "OOMKilled"
        } else if exit_code == 0 {
            "Completed"
        } else {
            "Error"
        }
    }
}

/// The whole pod as the worker sees it.
#[derive(Debug, Clone, Default)]
pub struct PodView {
    pub init: Vec<ContainerView>,
    pub containers: Vec<ContainerView>,
    pub pod_ip: Option<String>,
    pub host_ip: Option<String>,
    pub start_time: Option<Timestamp>,
    /// Set when the pod cannot start at all (e.g. a bad volume) — shown as the pod's message.
    pub message: Option<(String, String)>,
}

/// A pod's phase, kubelet's `getPhase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }

    /// Succeeded or Failed: no container of the pod will run again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// The phase of a pod whose init containers are in `init` (their present states) and whose app
/// containers are in `containers` (present state, and whether it ran before: a container
/// waiting after a run is in a crash loop and counts as stopped, as in kubelet).
pub fn phase<'a>(
    policy: RestartPolicy,
    init: impl IntoIterator<Item = &'a Current>,
    containers: impl IntoIterator<Item = (&'a Current, bool)>,
) -> Phase {
    let (mut init_done, mut init_failed) = (true, false);
    for current in init {
        match current {
            Current::Terminated(t) if t.exit_code == 0 => {}
            Current::Terminated(_) => {
                init_done = false;
                init_failed |= policy == RestartPolicy::Never;
            }
            _ => init_done = false,
        }
    }
    if init_failed {
        Phase::Failed
    } else if !init_done {
        Phase::Pending
    } else {
        app_phase(policy, containers)
    }
}

/// The status to write, given the previous one (for transition times) and `now`.
pub fn pod_status(pod: &Pod, view: &PodView, now: Timestamp) -> PodStatus {
    let phase = phase(
        RestartPolicy::of(pod),
        view.init.iter().map(|c| &c.current),
        view.containers
            .iter()
            .map(|c| (&c.current, c.last.is_some())),
    );
    let init_done = view
        .init
        .iter()
        .all(|c| matches!(&c.current, Current::Terminated(t) if t.exit_code == 0));
    let containers_ready = init_done && view.containers.iter().all(|c| c.ready);

    let previous = pod.status.as_ref();
    let condition = |kind: &str, ok: bool, reason: Option<&str>| {
        let status = if ok { "True" } else { "False" };
        let earlier = previous
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == kind));
        let since = match earlier {
            Some(c) if c.status == status => c.last_transition_time.clone(),
            _ => Some(Time(now)),
        };
        PodCondition {
            type_: kind.to_string(),
            status: status.to_string(),
            last_transition_time: since,
            reason: if ok { None } else { reason.map(str::to_string) },
            ..PodCondition::default()
        }
    };
    let terminal = phase.is_terminal();
    let conditions = vec![
        condition(
            "PodReadyToStartContainers",
            view.pod_ip.is_some() || !terminal,
            None,
        ),
        condition("Initialized", init_done, Some("ContainersNotInitialized")),
        condition(
            "Ready",
            containers_ready && !terminal,
            Some(not_ready_reason(terminal)),
        ),
        condition(
            "ContainersReady",
            containers_ready && !terminal,
            Some(not_ready_reason(terminal)),
        ),
        condition("PodScheduled", true, None),
    ];

    PodStatus {
        phase: Some(phase.as_str().to_string()),
        conditions: Some(conditions),
        host_ip: view.host_ip.clone(),
        host_ips: view.host_ip.clone().map(|ip| vec![HostIP { ip }]),
        pod_ip: view.pod_ip.clone(),
        pod_ips: view.pod_ip.clone().map(|ip| vec![PodIP { ip }]),
        start_time: view.start_time.map(Time),
        init_container_statuses: (!view.init.is_empty())
            .then(|| view.init.iter().map(container_status).collect()),
        container_statuses: Some(view.containers.iter().map(container_status).collect()),
        qos_class: previous
            .and_then(|s| s.qos_class.clone())
            .or_else(|| Some(qos_class(pod))),
        reason: view.message.as_ref().map(|(r, _)| r.clone()),
        message: view.message.as_ref().map(|(_, m)| m.clone()),
        ..PodStatus::default()
    }
}

fn not_ready_reason(terminal: bool) -> &'static str {
    if terminal {
        "PodCompleted"
    } else {
        "ContainersNotReady"
    }
}

/// kubelet's `getPhase` over the app containers, once the init containers are done.
fn app_phase<'a>(
    policy: RestartPolicy,
    containers: impl IntoIterator<Item = (&'a Current, bool)>,
) -> Phase {
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for (current, ran_before) in containers {
        match current {
            Current::Running { .. } => running += 1,
            Current::Terminated(t) => {
                stopped += 1;
                if t.exit_code == 0 {
                    succeeded += 1;
                }
            }
            // Waiting after a run (CrashLoopBackOff) counts as stopped, as in kubelet.
            Current::Waiting { .. } if ran_before => stopped += 1,
            Current::Waiting { .. } | Current::Unknown => waiting += 1,
        }
    }
    if waiting > 0 {
        Phase::Pending
    } else if running > 0 {
        Phase::Running
    } else if stopped > 0 {
        match policy {
            RestartPolicy::Always => Phase::Running,
            RestartPolicy::OnFailure if stopped == succeeded => Phase::Succeeded,
            RestartPolicy::OnFailure => Phase::Running,
            RestartPolicy::Never if stopped == succeeded => Phase::Succeeded,
            RestartPolicy::Never => Phase::Failed,
        }
    } else {
        Phase::Pending
    }
}

fn container_status(c: &ContainerView) -> ContainerStatus {
    let state = |current: &Current| -> K8sState {
        match current {
            Current::Waiting { reason, message } => K8sState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.clone()),
                    message: message.clone(),
                }),
                ..K8sState::default()
            },
            Current::Running { started_at } => K8sState {
                running: Some(ContainerStateRunning {
                    started_at: Some(Time(*started_at)),
                }),
                ..K8sState::default()
            },
            Current::Terminated(t) => terminated(t),
            Current::Unknown => K8sState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some("ContainerCreating".into()),
                    message: None,
                }),
                ..K8sState::default()
            },
        }
    };
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone(),
        image_id: c.image_id.clone(),
        container_id: c.container_id.clone(),
        ready: c.ready,
        restart_count: c.restart_count,
        started: Some(c.started),
        state: Some(state(&c.current)),
        last_state: Some(c.last.as_ref().map(terminated).unwrap_or_default()),
        ..ContainerStatus::default()
    }
}

fn terminated(t: &Terminated) -> K8sState {
    K8sState {
        terminated: Some(ContainerStateTerminated {
            exit_code: t.exit_code,
            reason: Some(t.reason.clone()),
            message: t.message.clone(),
            started_at: t.started_at.map(Time),
            finished_at: Some(Time(t.finished_at)),
            container_id: t.container_id.clone(),
            signal: None,
        }),
        ..K8sState::default()
    }
}

/// Guaranteed when every container has cpu and memory limits equal to requests; BestEffort
/// when none has any; Burstable otherwise (Kubernetes' QoS classes).
pub fn qos_class(pod: &Pod) -> String {
    let Some(spec) = &pod.spec else {
        return "BestEffort".into();
    };
    let all = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    let (mut any, mut guaranteed) = (false, true);
    for c in all {
        let r = c.resources.as_ref();
        let req = r.and_then(|r| r.requests.as_ref());
        let lim = r.and_then(|r| r.limits.as_ref());
        if req.is_some_and(|m| !m.is_empty()) || lim.is_some_and(|m| !m.is_empty()) {
            any = true;
        }
        for key in ["cpu", "memory"] {
            let l = lim.and_then(|m| m.get(key));
            let q = req.and_then(|m| m.get(key)).or(l);
            if l.is_none() || q != l {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort".into()
    } else if guaranteed {
        "Guaranteed".into()
    } else {
        "Burstable".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(policy: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"restartPolicy": policy, "containers": [{"name": "a"}, {"name": "b"}]}
        }))
        .expect("pod")
    }

    fn view(states: [Current; 2]) -> PodView {
        PodView {
            containers: states
                .into_iter()
                .enumerate()
                .map(|(i, current)| ContainerView {
                    name: ["a", "b"][i].into(),
                    ready: matches!(current, Current::Running { .. }),
                    current,
                    ..ContainerView::default()
                })
                .collect(),
            pod_ip: Some("10.42.0.2".into()),
            ..PodView::default()
        }
    }

    fn exited(code: i32) -> Current {
        Current::Terminated(Terminated {
            exit_code: code,
            reason: Terminated::reason_for(code, false).into(),
            message: None,
            started_at: None,
            finished_at: Timestamp::UNIX_EPOCH,
            container_id: None,
        })
    }

    fn running() -> Current {
        Current::Running {
            started_at: Timestamp::UNIX_EPOCH,
        }
    }

    fn waiting() -> Current {
        Current::Waiting {
            reason: "ContainerCreating".into(),
            message: None,
        }
    }

    #[test]
    fn phases_follow_kubelet() {
        let now = Timestamp::UNIX_EPOCH;
        let cases = [
            ("Always", [waiting(), running()], "Pending"),
            ("Always", [running(), running()], "Running"),
            ("Always", [running(), exited(1)], "Running"),
            ("Always", [exited(0), exited(0)], "Running"),
            ("OnFailure", [exited(0), exited(0)], "Succeeded"),
            ("OnFailure", [exited(0), exited(1)], "Running"),
            ("Never", [exited(0), exited(0)], "Succeeded"),
            ("Never", [exited(0), exited(2)], "Failed"),
        ];
        for (policy, states, want) in cases {
            let status = pod_status(&pod(policy), &view(states.clone()), now);
            assert_eq!(status.phase.as_deref(), Some(want), "{policy} {states:?}");
        }
    }

    #[test]
    fn ready_needs_every_container_and_keeps_transition_times() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().expect("t");
        let t1: Timestamp = "2026-01-01T00:01:00Z".parse().expect("t");
        let mut p = pod("Always");
        let status = pod_status(&p, &view([running(), waiting()]), t0);
        let ready = |s: &PodStatus| {
            s.conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "Ready")
                .cloned()
                .expect("Ready")
        };
        assert_eq!(ready(&status).status, "False");
        assert_eq!(ready(&status).reason.as_deref(), Some("ContainersNotReady"));
        p.status = Some(status);
        // Still not ready a minute later: the transition time stays.
        let later = pod_status(&p, &view([running(), waiting()]), t1);
        assert_eq!(ready(&later).last_transition_time, Some(Time(t0)));
        let now_ready = pod_status(&p, &view([running(), running()]), t1);
        assert_eq!(ready(&now_ready).status, "True");
        assert_eq!(ready(&now_ready).last_transition_time, Some(Time(t1)));
    }

    #[test]
    fn qos_classes() {
        let with = |resources: serde_json::Value| -> Pod {
            serde_json::from_value(json!({
                "metadata": {"name": "p"},
                "spec": {"containers": [{"name": "a", "resources": resources}]}
            }))
            .expect("pod")
        };
        assert_eq!(qos_class(&with(json!({}))), "BestEffort");
        assert_eq!(
            qos_class(&with(json!({"limits": {"cpu": "1", "memory": "1Gi"}}))),
            "Guaranteed"
        );
        assert_eq!(
            qos_class(&with(json!({"requests": {"cpu": "100m"}}))),
            "Burstable"
        );
    }
}
