//! The pod plan: what a pod's worker should do next, decided from the pod's spec, what its
//! containers are doing and `now` — with no I/O and no clock. It is kubelet's
//! `computePodActions`; [`crate::worker`] only carries the plan out.
//!
//! ```text
//! deleting? ── containers not yet removed ─► Delete(StopAll { grace })
//!    │         removed, an earlier DELETE failed and is backing off ─► Delete(RetryIn(wait))
//!    │         removed ─► Delete(DeleteObject)
//! phase Succeeded or Failed? ─► Finished { release_network }     (containers stay, for logs)
//! otherwise Run:
//!    kill     running containers whose liveness or startup probe gave up
//!    sandbox  create it if there is none yet
//!    init     the first init container that has not exited 0: start it (or wait out its back-off)
//!    app      once every init container exited 0: start those that never ran, and those that
//!             exited and restartPolicy restarts (Always: any exit; OnFailure: non-zero)
//! ```
//! A start that is backing off becomes a [`BackOff`] instead: the worker waits it out and shows
//! `CrashLoopBackOff` when the container ran before.
//!
//! Back-off is kubelet's: the first restart is immediate, then 10 s, 20 s, 40 s … up to 5 min;
//! a run of 10 minutes forgives the earlier crashes ([`Backoff`], [`CRASH_LOOP`]).
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use tokio::time::Instant;

use crate::pod_status::{self as status, Current};
use crate::probe;

/// `spec.restartPolicy`: which exits start a container again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Every exit (the default).
    #[default]
    Always,
    /// Non-zero exits only.
    OnFailure,
    /// None.
    Never,
}

impl RestartPolicy {
    /// The pod's policy; absent (or a value admission would have refused) is `Always`.
    pub fn of(pod: &Pod) -> RestartPolicy {
        match pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) {
            Some("OnFailure") => RestartPolicy::OnFailure,
            Some("Never") => RestartPolicy::Never,
            _ => RestartPolicy::Always,
        }
    }

    /// Whether a container that exited with `exit_code` is started again.
    pub fn restarts(self, exit_code: i32) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => exit_code != 0,
            RestartPolicy::Never => false,
        }
    }
}

/// How a back-off grows: the first retry is immediate, then `initial`, doubling up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffSteps {
    pub initial: Duration,
    pub max: Duration,
    /// A run at least this long forgives earlier failures (`None`: never).
    pub reset_after: Option<Duration>,
}

/// Kubernetes' CrashLoopBackOff: 10 s doubling to 5 min; a container that ran 10 minutes
/// without failing starts over.
pub const CRASH_LOOP: BackoffSteps = BackoffSteps {
    initial: Duration::from_secs(10),
    max: Duration::from_secs(300),
    reset_after: Some(Duration::from_secs(600)),
};

/// Retrying the final DELETE of a pod whose containers are gone: 1 s doubling to 30 s.
pub const DELETE_RETRY: BackoffSteps = BackoffSteps {
    initial: Duration::from_secs(1),
    max: Duration::from_secs(30),
    reset_after: None,
};

/// One thing's back-off (a container's restarts, a pod's final DELETE): lives as long as the
/// worker, reset only by a long enough run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backoff {
    /// The wait the last failure imposed (what `CrashLoopBackOff` messages show).
    delay: Duration,
    /// The wait the next failure imposes; `None` until the first failure.
    next: Option<Duration>,
    /// No new try before this instant.
    not_before: Option<Instant>,
}

impl Backoff {
    /// Records a failure at `now` and returns how long the next try must wait:
    /// with [`CRASH_LOOP`], 0, 10 s, 20 s, 40 s, … 5 min, 5 min.
    pub fn fail(&mut self, now: Instant, steps: BackoffSteps) -> Duration {
        self.delay = self.next.unwrap_or(Duration::ZERO);
        self.next = Some(match self.next {
            None => steps.initial,
            Some(d) => (d * 2).min(steps.max),
        });
        self.not_before = Some(now + self.delay);
        self.delay
    }

    /// A run of `ran` ended: long enough, and the earlier failures are forgiven.
    pub fn ran_for(&mut self, ran: Duration, steps: BackoffSteps) {
        if steps.reset_after.is_some_and(|reset| ran >= reset) {
            *self = Backoff::default();
        }
    }

    /// How long a try must still wait at `now` (`None`: it may go ahead).
    pub fn remaining(&self, now: Instant) -> Option<Duration> {
        self.not_before
            .filter(|at| *at > now)
            .map(|at| at.duration_since(now))
    }
}

/// One container of the pod as its worker last saw it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// An init container (they run one at a time, before the app containers).
    pub init: bool,
    pub current: Current,
    /// The exit code of its previous run, if it ran before.
    pub last_exit: Option<i32>,
    pub backoff: Backoff,
    /// A liveness or startup probe gave up on the running container, which is not yet killed.
    pub failed_probe: Option<probe::Kind>,
}

/// The pod as its worker last saw it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObservedPod {
    /// Init containers first, then app containers, each in spec order (the plan's indexes).
    pub containers: Vec<Observed>,
    /// Its network namespace and IP exist.
    pub sandbox_ready: bool,
    /// A finished pod's IP was given back.
    pub network_released: bool,
    /// Deleting: the containers and the network were removed.
    pub cleaned_up: bool,
    /// Deleting: the back-off of the final DELETE, after one failed.
    pub delete_retry: Backoff,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq)]
pub enum PodActions {
    /// The pod is being deleted.
    Delete(DeleteStep),
    /// Succeeded or Failed: nothing starts again; the containers stay (for logs).
    Finished {
        /// Free the pod's IP (not yet done).
        release_network: bool,
    },
    /// The pod should run.
    Run(RunActions),
}

/// The step a deletion is at.
#[derive(Debug, Clone, PartialEq)]
pub enum DeleteStep {
    /// preStop hooks, SIGTERM, up to `grace`, SIGKILL; then remove the containers, their
    /// files and the network. Followed by [`DeleteStep::DeleteObject`].
    StopAll { grace: Duration },
    /// Delete the pod object (grace 0): the last step.
    DeleteObject,
    /// The last DELETE failed; try again after this.
    RetryIn(Duration),
}

/// What a running pod needs, in the order the worker does it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunActions {
    pub kill: Vec<Kill>,
    pub create_sandbox: bool,
    pub start: Vec<Start>,
    pub back_off: Vec<BackOff>,
}

/// Stop a container (its exit then goes through restartPolicy like any other).
#[derive(Debug, Clone, PartialEq)]
pub struct Kill {
    pub index: usize,
    pub reason: probe::Kind,
    /// The probe's own terminationGracePeriodSeconds, else the pod's (default 30 s).
    pub grace: Duration,
}

/// Start a container now.
#[derive(Debug, Clone, PartialEq)]
pub struct Start {
    pub index: usize,
    pub reason: StartReason,
}

/// Why a container starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartReason {
    /// It never ran (or its start failed: no image, no config).
    FirstRun,
    /// Its last run exited with this code and restartPolicy restarts it.
    Restart { exit_code: i32 },
}

/// A container that should start but is backing off.
#[derive(Debug, Clone, PartialEq)]
pub struct BackOff {
    pub index: usize,
    /// How long until it may start.
    pub remaining: Duration,
    /// The back-off it is in (for the message).
    pub delay: Duration,
    /// It ran before: the container is in `CrashLoopBackOff` (otherwise its start failed, and
    /// it keeps the reason it has, `ErrImagePull` or `CreateContainerError`).
    pub crash_loop: bool,
}

/// The pod's next actions, given its containers as last observed and `now`.
pub fn plan(pod: &Pod, observed: &ObservedPod, now: Instant) -> PodActions {
    if pod.metadata.deletion_timestamp.is_some() {
        return PodActions::Delete(if !observed.cleaned_up {
            DeleteStep::StopAll {
                grace: termination_grace(pod),
            }
        } else if let Some(wait) = observed.delete_retry.remaining(now) {
            DeleteStep::RetryIn(wait)
        } else {
            DeleteStep::DeleteObject
        });
    }
    let policy = RestartPolicy::of(pod);
    let containers = &observed.containers;
    let phase = status::phase(
        policy,
        containers.iter().filter(|c| c.init).map(|c| &c.current),
        containers
            .iter()
            .filter(|c| !c.init)
            .map(|c| (&c.current, c.last_exit.is_some())),
    );
    if phase.is_terminal() {
        return PodActions::Finished {
            release_network: !observed.network_released,
        };
    }

    let mut actions = RunActions {
        create_sandbox: !observed.sandbox_ready,
        ..RunActions::default()
    };
    let specs = container_specs(pod);
    for (index, c) in containers.iter().enumerate() {
        if let (Current::Running { .. }, Some(kind)) = (&c.current, c.failed_probe) {
            let grace = specs
                .get(index)
                .map_or(pod_grace(pod), |spec| probe_grace(pod, spec, kind));
            actions.kill.push(Kill {
                index,
                reason: kind,
                grace,
            });
        }
    }

    // Init containers: in order, each must exit 0 before the next starts.
    let next_init = containers
        .iter()
        .enumerate()
        .filter(|(_, c)| c.init)
        .find(|(_, c)| !matches!(&c.current, Current::Terminated(t) if t.exit_code == 0));
    if let Some((index, c)) = next_init {
        match &c.current {
            Current::Running { .. } => {}
            Current::Terminated(t) if !policy.restarts(t.exit_code) => {}
            _ => start_or_back_off(&mut actions, index, c, now),
        }
        return PodActions::Run(actions);
    }
    for (index, c) in containers.iter().enumerate().filter(|(_, c)| !c.init) {
        let wanted = match &c.current {
            Current::Running { .. } => false,
            Current::Terminated(t) => policy.restarts(t.exit_code),
            Current::Waiting { .. } | Current::Unknown => true,
        };
        if wanted {
            start_or_back_off(&mut actions, index, c, now);
        }
    }
    PodActions::Run(actions)
}

fn start_or_back_off(actions: &mut RunActions, index: usize, c: &Observed, now: Instant) {
    if let Some(remaining) = c.backoff.remaining(now) {
        actions.back_off.push(BackOff {
            index,
            remaining,
            delay: c.backoff.delay,
            crash_loop: c.last_exit.is_some(),
        });
        return;
    }
    let exit_code = match &c.current {
        Current::Terminated(t) => Some(t.exit_code),
        _ => c.last_exit,
    };
    let reason = match exit_code {
        Some(exit_code) => StartReason::Restart { exit_code },
        None => StartReason::FirstRun,
    };
    actions.start.push(Start { index, reason });
}

/// Whether the exit of a container (`init` or not, with `exit_code`) is followed by a restart,
/// so that it counts as a failure for the back-off. An init container that exited 0 is done;
/// nothing of a pod being deleted restarts.
pub fn restart_follows(pod: &Pod, init: bool, exit_code: i32) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && RestartPolicy::of(pod).restarts(exit_code)
        && (!init || exit_code != 0)
}

/// The pod's containers in the plan's order: init containers, then app containers.
pub fn container_specs(pod: &Pod) -> Vec<&Container> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    spec.init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .collect()
}

/// How long a deleted pod's containers get to stop: the grace period the delete asked for,
/// else the pod's terminationGracePeriodSeconds, else 30 s.
pub fn termination_grace(pod: &Pod) -> Duration {
    let seconds = pod
        .metadata
        .deletion_grace_period_seconds
        .or(pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds))
        .unwrap_or(30);
    Duration::from_secs(seconds.max(0) as u64)
}

fn pod_grace(pod: &Pod) -> Duration {
    let seconds = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30);
    Duration::from_secs(seconds.max(0) as u64)
}

/// The failed probe's own terminationGracePeriodSeconds, else the pod's (default 30 s).
fn probe_grace(pod: &Pod, container: &Container, kind: probe::Kind) -> Duration {
    let probe = match kind {
        probe::Kind::Liveness => container.liveness_probe.as_ref(),
        probe::Kind::Startup => container.startup_probe.as_ref(),
        probe::Kind::Readiness => None,
    };
    match probe.and_then(|p| p.termination_grace_period_seconds) {
        Some(seconds) => Duration::from_secs(seconds.max(0) as u64),
        None => pod_grace(pod),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod_status::Terminated;
    use jiff::Timestamp;
    use serde_json::json;

    /// A pod with `restartPolicy: policy`, these init and app containers (`app+probe` has a
    /// liveness probe with its own 5 s grace period), and a 20 s grace period.
    fn pod(policy: &str, init: &[&str], apps: &[&str]) -> Pod {
        let container = |name: &&str| match name.strip_suffix("+probe") {
            Some(name) => json!({"name": name, "livenessProbe": {
                "exec": {"command": ["true"]}, "terminationGracePeriodSeconds": 5}}),
            None => json!({"name": name}),
        };
        serde_json::from_value(json!({
            "metadata": {"name": "p", "uid": "u"},
            "spec": {
                "restartPolicy": policy,
                "terminationGracePeriodSeconds": 20,
                "initContainers": init.iter().map(container).collect::<Vec<_>>(),
                "containers": apps.iter().map(container).collect::<Vec<_>>(),
            }
        }))
        .expect("pod")
    }

    fn deleting(mut pod: Pod, grace: Option<i64>) -> Pod {
        pod.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::UNIX_EPOCH),
        );
        pod.metadata.deletion_grace_period_seconds = grace;
        pod
    }

    fn app(current: Current) -> Observed {
        Observed {
            current,
            ..Observed::default()
        }
    }

    fn init(current: Current) -> Observed {
        Observed {
            init: true,
            ..app(current)
        }
    }

    impl Observed {
        fn ran_before(mut self, exit_code: i32) -> Observed {
            self.last_exit = Some(exit_code);
            self
        }

        /// In a back-off of `delay`, `remaining` of it left at the tests' `now`.
        fn backing_off(mut self, now: Instant, delay: u64, remaining: u64) -> Observed {
            self.backoff = Backoff {
                delay: secs(delay),
                next: Some(secs(delay * 2)),
                not_before: Some(now + secs(remaining)),
            };
            self
        }

        fn probe_failed(mut self, kind: probe::Kind) -> Observed {
            self.failed_probe = Some(kind);
            self
        }
    }

    fn running() -> Current {
        Current::Running {
            started_at: Timestamp::UNIX_EPOCH,
        }
    }

    fn exited(exit_code: i32) -> Current {
        Current::Terminated(Terminated {
            exit_code,
            reason: Terminated::reason_for(exit_code, false).into(),
            message: None,
            started_at: None,
            finished_at: Timestamp::UNIX_EPOCH,
            container_id: None,
        })
    }

    fn waiting(reason: &str) -> Current {
        Current::Waiting {
            reason: reason.into(),
            message: None,
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// A pod whose sandbox exists.
    fn with(containers: Vec<Observed>) -> ObservedPod {
        ObservedPod {
            containers,
            sandbox_ready: true,
            ..ObservedPod::default()
        }
    }

    fn run(start: &[(usize, StartReason)], back_off: &[(usize, u64, u64, bool)]) -> PodActions {
        PodActions::Run(RunActions {
            start: start
                .iter()
                .map(|&(index, reason)| Start { index, reason })
                .collect(),
            back_off: back_off
                .iter()
                .map(|&(index, remaining, delay, crash_loop)| BackOff {
                    index,
                    remaining: secs(remaining),
                    delay: secs(delay),
                    crash_loop,
                })
                .collect(),
            ..RunActions::default()
        })
    }

    const FIRST: StartReason = StartReason::FirstRun;

    fn restart(exit_code: i32) -> StartReason {
        StartReason::Restart { exit_code }
    }

    /// The plan as a specification of the agent: one row per situation.
    #[test]
    fn plans_follow_kubelet() {
        let now = Instant::now();
        let rows: Vec<(&str, Pod, ObservedPod, PodActions)> = vec![
            // --- a pod's first pass, and a pod that runs
            (
                "a new pod gets its sandbox and every app container",
                pod("Always", &[], &["a", "b"]),
                ObservedPod {
                    containers: vec![app(Current::Unknown), app(waiting("ContainerCreating"))],
                    ..ObservedPod::default()
                },
                PodActions::Run(RunActions {
                    create_sandbox: true,
                    start: vec![
                        Start {
                            index: 0,
                            reason: FIRST,
                        },
                        Start {
                            index: 1,
                            reason: FIRST,
                        },
                    ],
                    ..RunActions::default()
                }),
            ),
            (
                "running containers need nothing",
                pod("Always", &[], &["a", "b"]),
                with(vec![app(running()), app(running())]),
                run(&[], &[]),
            ),
            // --- restart policies
            (
                "Always restarts a container that exited 0",
                pod("Always", &[], &["a", "b"]),
                with(vec![app(running()), app(exited(0))]),
                run(&[(1, restart(0))], &[]),
            ),
            (
                "OnFailure leaves a container that exited 0",
                pod("OnFailure", &[], &["a", "b"]),
                with(vec![app(running()), app(exited(0))]),
                run(&[], &[]),
            ),
            (
                "OnFailure restarts a container that exited 1",
                pod("OnFailure", &[], &["a", "b"]),
                with(vec![app(running()), app(exited(1))]),
                run(&[(1, restart(1))], &[]),
            ),
            (
                "Never leaves a container that exited 1",
                pod("Never", &[], &["a", "b"]),
                with(vec![app(running()), app(exited(1))]),
                run(&[], &[]),
            ),
            (
                "Never: every container exited, the pod is finished and frees its IP",
                pod("Never", &[], &["a", "b"]),
                with(vec![app(exited(0)), app(exited(1))]),
                PodActions::Finished {
                    release_network: true,
                },
            ),
            (
                "OnFailure: all exited 0, finished; its IP is already free",
                pod("OnFailure", &[], &["a"]),
                ObservedPod {
                    network_released: true,
                    ..with(vec![app(exited(0))])
                },
                PodActions::Finished {
                    release_network: false,
                },
            ),
            (
                "Always never finishes: every exit restarts",
                pod("Always", &[], &["a"]),
                with(vec![app(exited(0))]),
                run(&[(0, restart(0))], &[]),
            ),
            // --- crash loops and failed starts
            (
                "a crash-looping container waits out its back-off",
                pod("Always", &[], &["a"]),
                with(vec![app(exited(1)).ran_before(1).backing_off(now, 10, 7)]),
                run(&[], &[(0, 7, 10, true)]),
            ),
            (
                "once the back-off is over, it restarts",
                pod("Always", &[], &["a"]),
                with(vec![app(waiting("CrashLoopBackOff"))
                    .ran_before(1)
                    .backing_off(now, 10, 0)]),
                run(&[(0, restart(1))], &[]),
            ),
            (
                "a failed image pull backs off without a crash loop",
                pod("Always", &[], &["a"]),
                with(vec![app(waiting("ErrImagePull")).backing_off(now, 10, 10)]),
                run(&[], &[(0, 10, 10, false)]),
            ),
            // --- init containers
            (
                "only the first init container starts, with the sandbox",
                pod("Always", &["i1", "i2"], &["a"]),
                ObservedPod {
                    containers: vec![
                        init(Current::Unknown),
                        init(Current::Unknown),
                        app(Current::Unknown),
                    ],
                    ..ObservedPod::default()
                },
                PodActions::Run(RunActions {
                    create_sandbox: true,
                    start: vec![Start {
                        index: 0,
                        reason: FIRST,
                    }],
                    ..RunActions::default()
                }),
            ),
            (
                "a running init container holds back the ones after it",
                pod("Always", &["i1", "i2"], &["a"]),
                with(vec![
                    init(exited(0)),
                    init(running()),
                    app(Current::Unknown),
                ]),
                run(&[], &[]),
            ),
            (
                "the next init container starts once the previous exited 0",
                pod("Always", &["i1", "i2"], &["a"]),
                with(vec![
                    init(exited(0)),
                    init(Current::Unknown),
                    app(Current::Unknown),
                ]),
                run(&[(1, FIRST)], &[]),
            ),
            (
                "app containers start once every init container exited 0",
                pod("Never", &["i1", "i2"], &["a", "b"]),
                with(vec![
                    init(exited(0)),
                    init(exited(0)),
                    app(Current::Unknown),
                    app(Current::Unknown),
                ]),
                run(&[(2, FIRST), (3, FIRST)], &[]),
            ),
            (
                "OnFailure restarts a failed init container",
                pod("OnFailure", &["i"], &["a"]),
                with(vec![init(exited(1)), app(Current::Unknown)]),
                run(&[(0, restart(1))], &[]),
            ),
            (
                "a failed init container backs off like any other",
                pod("Always", &["i"], &["a"]),
                with(vec![
                    init(waiting("CrashLoopBackOff"))
                        .ran_before(1)
                        .backing_off(now, 20, 15),
                    app(Current::Unknown),
                ]),
                run(&[], &[(0, 15, 20, true)]),
            ),
            (
                "Never: a failed init container fails the pod",
                pod("Never", &["i"], &["a"]),
                with(vec![init(exited(1)), app(Current::Unknown)]),
                PodActions::Finished {
                    release_network: true,
                },
            ),
            // --- probes
            (
                "a failed liveness probe kills, with the probe's grace period",
                pod("Always", &[], &["a+probe", "b"]),
                with(vec![
                    app(running()).probe_failed(probe::Kind::Liveness),
                    app(running()).probe_failed(probe::Kind::Startup),
                ]),
                PodActions::Run(RunActions {
                    kill: vec![
                        Kill {
                            index: 0,
                            reason: probe::Kind::Liveness,
                            grace: secs(5),
                        },
                        // No startup probe grace of its own: the pod's.
                        Kill {
                            index: 1,
                            reason: probe::Kind::Startup,
                            grace: secs(20),
                        },
                    ],
                    ..RunActions::default()
                }),
            ),
            (
                "a probe failure of a container that already exited kills nothing",
                pod("Always", &[], &["a+probe"]),
                with(vec![app(exited(137))
                    .ran_before(137)
                    .probe_failed(probe::Kind::Liveness)
                    .backing_off(now, 10, 10)]),
                run(&[], &[(0, 10, 10, true)]),
            ),
            // --- deletion
            (
                "deleting: stop everything within the delete's grace period",
                deleting(pod("Always", &[], &["a"]), Some(3)),
                with(vec![app(running())]),
                PodActions::Delete(DeleteStep::StopAll { grace: secs(3) }),
            ),
            (
                "deleting without a grace period of its own: the pod's",
                deleting(pod("Never", &[], &["a"]), None),
                with(vec![app(exited(0))]),
                PodActions::Delete(DeleteStep::StopAll { grace: secs(20) }),
            ),
            (
                "deleting, containers gone: delete the object",
                deleting(pod("Always", &[], &["a"]), Some(3)),
                ObservedPod {
                    cleaned_up: true,
                    ..with(vec![app(exited(0))])
                },
                PodActions::Delete(DeleteStep::DeleteObject),
            ),
            (
                "deleting, the last DELETE failed: retry after its back-off",
                deleting(pod("Always", &[], &["a"]), Some(3)),
                ObservedPod {
                    cleaned_up: true,
                    delete_retry: Backoff {
                        delay: secs(2),
                        next: Some(secs(4)),
                        not_before: Some(now + secs(2)),
                    },
                    ..with(vec![app(exited(0))])
                },
                PodActions::Delete(DeleteStep::RetryIn(secs(2))),
            ),
        ];
        for (name, pod, observed, want) in rows {
            assert_eq!(plan(&pod, &observed, now), want, "{name}");
        }
    }

    #[test]
    fn crash_loop_back_off_doubles_to_five_minutes_and_a_long_run_forgives() {
        let now = Instant::now();
        let mut backoff = Backoff::default();
        let delays: Vec<u64> = (0..8)
            .map(|_| backoff.fail(now, CRASH_LOOP).as_secs())
            .collect();
        assert_eq!(delays, [0, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(backoff.remaining(now), Some(secs(300)));
        assert_eq!(backoff.remaining(now + secs(300)), None);

        backoff.ran_for(secs(599), CRASH_LOOP);
        assert_eq!(
            backoff.fail(now, CRASH_LOOP),
            secs(300),
            "9m59s forgives nothing"
        );
        backoff.ran_for(secs(600), CRASH_LOOP);
        assert_eq!(
            backoff.fail(now, CRASH_LOOP),
            Duration::ZERO,
            "10 min forgives"
        );
    }

    /// The bug this fixes: a failed final DELETE was never tried again, and the pod stayed
    /// Terminating. Now each failure backs off and the plan asks for the DELETE again.
    #[test]
    fn a_failed_delete_is_tried_again_with_back_off() {
        let pod = deleting(pod("Always", &[], &["a"]), Some(0));
        let t0 = Instant::now();
        let mut observed = ObservedPod {
            cleaned_up: true,
            ..with(vec![app(exited(0))])
        };
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..7 {
            assert_eq!(
                plan(&pod, &observed, now),
                PodActions::Delete(DeleteStep::DeleteObject)
            );
            // The DELETE fails.
            let wait = observed.delete_retry.fail(now, DELETE_RETRY);
            if wait > Duration::ZERO {
                assert_eq!(
                    plan(&pod, &observed, now),
                    PodActions::Delete(DeleteStep::RetryIn(wait))
                );
            }
            waits.push(wait.as_secs());
            now += wait;
        }
        assert_eq!(waits, [0, 1, 2, 4, 8, 16, 30]);
    }

    #[test]
    fn which_exits_count_as_failures_for_the_back_off() {
        let rows = [
            ("Always", false, 0, true),
            ("Always", true, 0, false),
            ("Always", true, 1, true),
            ("OnFailure", false, 0, false),
            ("OnFailure", false, 2, true),
            ("Never", false, 2, false),
            ("Never", true, 2, false),
        ];
        for (policy, is_init, exit_code, want) in rows {
            let p = pod(policy, &[], &["a"]);
            assert_eq!(
                restart_follows(&p, is_init, exit_code),
                want,
                "{policy} init={is_init} exit {exit_code}"
            );
        }
        let p = deleting(pod("Always", &[], &["a"]), Some(1));
        assert!(
            !restart_follows(&p, false, 1),
            "nothing restarts while deleting"
        );
    }
}
