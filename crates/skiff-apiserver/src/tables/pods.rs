//! A pod's row. READY, STATUS and RESTARTS sum up the pod's containers the way kube-apiserver's
//! pod printer does, so `CrashLoopBackOff`, `Init:0/1` or `Terminating` mean what they mean on
//! any Kubernetes cluster.
//!
//! STATUS, in order of precedence (each later rule overrides the earlier ones):
//! 1. `status.reason` if set, else `status.phase` (`Pending`, `Running`, `Succeeded`, ...);
//!    `SchedulingGated` while scheduling gates hold the pod back.
//! 2. While init containers run: `Init:<reason>` of the first one that failed or is waiting
//!    (`Init:CrashLoopBackOff`, `Init:ExitCode:1`), else `Init:<done>/<all>`.
//! 3. Then the first container (in spec order) that is waiting or terminated gives its reason:
//!    `ContainerCreating`, `CrashLoopBackOff`, `Completed`, `Error`, `ExitCode:2`.
//!    `Completed` while another container still runs becomes `Running` (or `NotReady`).
//! 4. `Terminating` once the pod is being deleted (`Unknown` if its node was lost).

use jiff::Timestamp;
use serde_json::{json, Value};

use super::{age, array_at, column, docs, int_at, name, str_at, wide, Printer, AGE, NAME};

/// What `kubectl get pods` says about one pod's containers.
#[derive(Debug, PartialEq, Eq)]
pub struct Summary {
    /// Containers that are running and ready (sidecars count once started).
    pub ready: usize,
    /// Containers, plus sidecars (init containers with `restartPolicy: Always`).
    pub total: usize,
    pub status: String,
    pub restarts: i64,
    /// When a container last stopped (`lastState.terminated.finishedAt`), for `3 (2m ago)`.
    pub last_restart: Option<Timestamp>,
}

pub(super) const PODS: Printer = Printer {
    columns: &[
        NAME,
        column("Ready", "string", docs::POD_READY),
        column("Status", "string", docs::POD_STATUS),
        column("Restarts", "string", docs::POD_RESTARTS),
        AGE,
        wide("IP", "string", docs::POD_IP),
        wide("Node", "string", docs::NODE_NAME),
        wide("Nominated Node", "string", docs::NOMINATED_NODE),
        wide("Readiness Gates", "string", docs::READINESS_GATES),
    ],
    cells,
    conditions,
};

fn cells(pod: &Value, now: Timestamp) -> Vec<Value> {
    let summary = summarize(pod);
    let restarts = match summary.last_restart {
        Some(at) => format!(
            "{} ({} ago)",
            summary.restarts,
            super::human_duration(now.duration_since(at))
        ),
        None => summary.restarts.to_string(),
    };
    let ip = array_at(pod, "/status/podIPs")
        .first()
        .map(|ip| str_at(ip, "/ip"))
        .unwrap_or_else(|| str_at(pod, "/status/podIP"));
    let or_none = |s: &str| {
        if s.is_empty() {
            "<none>".to_string()
        } else {
            s.to_string()
        }
    };
    vec![
        name(pod),
        format!("{}/{}", summary.ready, summary.total).into(),
        summary.status.into(),
        restarts.into(),
        age(pod, now).into(),
        or_none(ip).into(),
        or_none(str_at(pod, "/spec/nodeName")).into(),
        or_none(str_at(pod, "/status/nominatedNodeName")).into(),
        readiness_gates(pod).into(),
    ]
}

/// A finished pod's row is marked `Completed`, as Kubernetes marks it.
fn conditions(pod: &Value) -> Option<Value> {
    let (reason, message) = match str_at(pod, "/status/phase") {
        "Succeeded" => ("Succeeded", "The pod has completed successfully."),
        "Failed" => ("Failed", "The pod failed."),
        _ => return None,
    };
    Some(json!([{"type": "Completed", "status": "True", "reason": reason, "message": message}]))
}

/// READINESS GATES: how many of the pod's readiness gates are met, `<none>` without gates.
fn readiness_gates(pod: &Value) -> String {
    let gates = array_at(pod, "/spec/readinessGates");
    if gates.is_empty() {
        return "<none>".into();
    }
    let met = gates
        .iter()
        .filter(|gate| condition_true(pod, str_at(gate, "/conditionType")))
        .count();
    format!("{met}/{}", gates.len())
}

/// READY, STATUS and RESTARTS of `pod` (see the module documentation for STATUS).
pub fn summarize(pod: &Value) -> Summary {
    let init_specs = array_at(pod, "/spec/initContainers");
    let is_sidecar = |container: &Value| str_at(container, "/restartPolicy") == "Always";
    let sidecar_named = |name: &str| {
        init_specs
            .iter()
            .any(|c| str_at(c, "/name") == name && is_sidecar(c))
    };
    let mut summary = Summary {
        ready: 0,
        total: array_at(pod, "/spec/containers").len()
            + init_specs.iter().filter(|c| is_sidecar(c)).count(),
        status: match str_at(pod, "/status/reason") {
            "" => str_at(pod, "/status/phase").to_string(),
            reason => reason.to_string(),
        },
        restarts: 0,
        last_restart: None,
    };
    let gated = array_at(pod, "/status/conditions")
        .iter()
        .any(|c| str_at(c, "/type") == "PodScheduled" && str_at(c, "/reason") == "SchedulingGated");
    if gated {
        summary.status = "SchedulingGated".into();
    }

    // Init containers run one after the other: the first one not done says where the pod is.
    let (mut sidecar_restarts, mut sidecar_last_restart) = (0, None);
    let mut initializing = false;
    for (i, status) in array_at(pod, "/status/initContainerStatuses")
        .iter()
        .enumerate()
    {
        let restarts = int_at(status, "/restartCount");
        summary.restarts += restarts;
        summary.last_restart = later(summary.last_restart, finished_at(status));
        let sidecar = sidecar_named(str_at(status, "/name"));
        if sidecar {
            sidecar_restarts += restarts;
            sidecar_last_restart = later(sidecar_last_restart, finished_at(status));
        }
        let terminated = status.pointer("/state/terminated");
        let waiting = str_at(status, "/state/waiting/reason");
        if terminated.is_some() && int_at(status, "/state/terminated/exitCode") == 0 {
            continue;
        }
        if sidecar && status.get("started") == Some(&Value::Bool(true)) {
            if status.get("ready") == Some(&Value::Bool(true)) {
                summary.ready += 1;
            }
            continue;
        }
        summary.status = match terminated {
            Some(terminated) => format!("Init:{}", terminated_reason(terminated)),
            None if !waiting.is_empty() && waiting != "PodInitializing" => {
                format!("Init:{waiting}")
            }
            None => format!("Init:{i}/{}", init_specs.len()),
        };
        initializing = true;
        break;
    }

    if !initializing || condition_true(pod, "Initialized") {
        // Restarts of init containers that ran to completion no longer count; sidecars' do.
        summary.restarts = sidecar_restarts;
        summary.last_restart = sidecar_last_restart;
        let mut has_running = false;
        // Backwards, so that the first container with something to say has the last word.
        for status in array_at(pod, "/status/containerStatuses").iter().rev() {
            summary.restarts += int_at(status, "/restartCount");
            summary.last_restart = later(summary.last_restart, finished_at(status));
            let waiting = str_at(status, "/state/waiting/reason");
            if !waiting.is_empty() {
                summary.status = waiting.to_string();
            } else if let Some(terminated) = status.pointer("/state/terminated") {
                summary.status = terminated_reason(terminated);
            } else if status.get("ready") == Some(&Value::Bool(true))
                && status.pointer("/state/running").is_some()
            {
                has_running = true;
                summary.ready += 1;
            }
        }
        if summary.status == "Completed" && has_running {
            summary.status = match condition_true(pod, "Ready") {
                true => "Running".into(),
                false => "NotReady".into(),
            };
        }
    }

    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        if str_at(pod, "/status/reason") == "NodeLost" {
            summary.status = "Unknown".into();
        } else if !matches!(str_at(pod, "/status/phase"), "Succeeded" | "Failed") {
            summary.status = "Terminating".into();
        }
    }
    summary
}

/// A terminated container's reason, or `Signal:9` / `ExitCode:1` when it gave none.
fn terminated_reason(terminated: &Value) -> String {
    match (
        str_at(terminated, "/reason"),
        int_at(terminated, "/signal"),
        int_at(terminated, "/exitCode"),
    ) {
        ("", 0, code) => format!("ExitCode:{code}"),
        ("", signal, _) => format!("Signal:{signal}"),
        (reason, _, _) => reason.to_string(),
    }
}

fn finished_at(status: &Value) -> Option<Timestamp> {
    str_at(status, "/lastState/terminated/finishedAt")
        .parse()
        .ok()
}

fn later(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    a.max(b)
}

fn condition_true(pod: &Value, kind: &str) -> bool {
    array_at(pod, "/status/conditions")
        .iter()
        .find(|c| str_at(c, "/type") == kind)
        .is_some_and(|c| str_at(c, "/status") == "True")
}

#[cfg(test)]
mod tests {
    use super::super::tests::{ago, now};
    use super::*;

    /// A pod with one container `app` (and the given init containers), in `phase`.
    fn pod(phase: &str) -> Value {
        json!({
            "metadata": {"name": "web", "creationTimestamp": ago(60)},
            "spec": {"containers": [{"name": "app", "image": "web:1"}]},
            "status": {"phase": phase},
        })
    }

    fn with_statuses(mut pod: Value, statuses: Vec<Value>) -> Value {
        pod["status"]["containerStatuses"] = statuses.into();
        pod
    }

    /// Init containers `init-0`, `init-1`, ... with these statuses; `sidecar` makes the first
    /// one a sidecar (`restartPolicy: Always`).
    fn with_init(mut pod: Value, statuses: Vec<Value>, sidecar: bool) -> Value {
        let specs: Vec<Value> = (0..statuses.len())
            .map(|i| match (i, sidecar) {
                (0, true) => json!({"name": "init-0", "restartPolicy": "Always"}),
                _ => json!({"name": format!("init-{i}")}),
            })
            .collect();
        let statuses: Vec<Value> = statuses
            .into_iter()
            .enumerate()
            .map(|(i, mut s)| {
                s["name"] = format!("init-{i}").into();
                s
            })
            .collect();
        pod["spec"]["initContainers"] = specs.into();
        pod["status"]["initContainerStatuses"] = statuses.into();
        pod
    }

    fn running(ready: bool) -> Value {
        json!({"name": "app", "ready": ready, "started": true, "restartCount": 0,
               "state": {"running": {"startedAt": ago(30)}}})
    }

    fn waiting(reason: &str) -> Value {
        json!({"name": "app", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": reason}}})
    }

    fn terminated(reason: &str, exit_code: i64, signal: i64) -> Value {
        let mut terminated = json!({"exitCode": exit_code, "finishedAt": ago(10)});
        if !reason.is_empty() {
            terminated["reason"] = reason.into();
        }
        if signal != 0 {
            terminated["signal"] = signal.into();
        }
        json!({"name": "app", "ready": false, "restartCount": 0, "state": {"terminated": terminated}})
    }

    /// `status` after `count` restarts, the last container having stopped `seconds` ago.
    fn restarted(mut status: Value, count: i64, seconds: i64) -> Value {
        status["restartCount"] = count.into();
        status["lastState"] = json!({"terminated": {"exitCode": 1, "finishedAt": ago(seconds)}});
        status
    }

    fn deleting(mut pod: Value) -> Value {
        pod["metadata"]["deletionTimestamp"] = ago(0).into();
        pod
    }

    fn condition(mut pod: Value, kind: &str, status: &str, reason: &str) -> Value {
        let conditions = pod["status"]["conditions"].as_array().cloned();
        let mut conditions = conditions.unwrap_or_default();
        conditions.push(json!({"type": kind, "status": status, "reason": reason}));
        pod["status"]["conditions"] = conditions.into();
        pod
    }

    #[test]
    fn ready_status_and_restarts_read_as_in_kubernetes() {
        let running_pod = |statuses| with_statuses(pod("Running"), statuses);
        let cases: Vec<(&str, Value, [&str; 3])> = vec![
            ("not scheduled yet", pod("Pending"), ["0/1", "Pending", "0"]),
            (
                "pulling the image",
                with_statuses(pod("Pending"), vec![waiting("ContainerCreating")]),
                ["0/1", "ContainerCreating", "0"],
            ),
            (
                "running",
                running_pod(vec![running(true)]),
                ["1/1", "Running", "0"],
            ),
            (
                "running, not ready",
                running_pod(vec![running(false)]),
                ["0/1", "Running", "0"],
            ),
            (
                "crash looping",
                running_pod(vec![restarted(waiting("CrashLoopBackOff"), 3, 120)]),
                ["0/1", "CrashLoopBackOff", "3 (2m ago)"],
            ),
            (
                "restarted, running again",
                running_pod(vec![restarted(running(true), 1, 3 * 86400)]),
                ["1/1", "Running", "1 (3d ago)"],
            ),
            (
                "finished",
                with_statuses(pod("Succeeded"), vec![terminated("Completed", 0, 0)]),
                ["0/1", "Completed", "0"],
            ),
            (
                "failed without a reason",
                with_statuses(pod("Failed"), vec![terminated("", 2, 0)]),
                ["0/1", "ExitCode:2", "0"],
            ),
            (
                "killed by a signal",
                with_statuses(pod("Failed"), vec![terminated("", 137, 9)]),
                ["0/1", "Signal:9", "0"],
            ),
            (
                "first init container running",
                with_init(pod("Pending"), vec![running(false)], false),
                ["0/1", "Init:0/1", "0"],
            ),
            (
                "second of two init containers",
                with_init(
                    pod("Pending"),
                    vec![terminated("Completed", 0, 0), waiting("PodInitializing")],
                    false,
                ),
                ["0/1", "Init:1/2", "0"],
            ),
            (
                "init container crash looping",
                with_init(
                    pod("Pending"),
                    vec![restarted(waiting("CrashLoopBackOff"), 4, 30)],
                    false,
                ),
                ["0/1", "Init:CrashLoopBackOff", "4 (30s ago)"],
            ),
            (
                "init container failed",
                with_init(pod("Pending"), vec![terminated("Error", 1, 0)], false),
                ["0/1", "Init:Error", "0"],
            ),
            (
                "init container failed without a reason",
                with_init(pod("Pending"), vec![terminated("", 3, 0)], false),
                ["0/1", "Init:ExitCode:3", "0"],
            ),
            (
                "sidecar started next to the app",
                with_init(running_pod(vec![running(true)]), vec![running(true)], true),
                ["2/2", "Running", "0"],
            ),
            (
                "being deleted",
                deleting(running_pod(vec![running(true)])),
                ["1/1", "Terminating", "0"],
            ),
            (
                "deleted after it finished",
                deleting(with_statuses(
                    pod("Succeeded"),
                    vec![terminated("Completed", 0, 0)],
                )),
                ["0/1", "Completed", "0"],
            ),
            (
                "its node was lost",
                deleting({
                    let mut p = running_pod(vec![running(true)]);
                    p["status"]["reason"] = "NodeLost".into();
                    p
                }),
                ["1/1", "Unknown", "0"],
            ),
            (
                "held back by scheduling gates",
                condition(pod("Pending"), "PodScheduled", "False", "SchedulingGated"),
                ["0/1", "SchedulingGated", "0"],
            ),
        ];
        for (case, pod, want) in cases {
            let cells = cells(&pod, now());
            assert_eq!([&cells[1], &cells[2], &cells[3]], want, "{case}");
        }
    }

    #[test]
    fn one_container_done_and_another_running_is_running() {
        let mut pod = pod("Running");
        pod["spec"]["containers"] = json!([{"name": "app"}, {"name": "job"}]);
        let pod = with_statuses(pod, vec![running(true), terminated("Completed", 0, 0)]);
        assert_eq!(
            summarize(&condition(pod.clone(), "Ready", "True", "")).status,
            "Running"
        );
        assert_eq!(summarize(&pod).status, "NotReady");
    }

    #[test]
    fn wide_columns_show_where_the_pod_runs() {
        let mut pod = with_statuses(pod("Running"), vec![running(true)]);
        let plain = cells(&pod, now());
        assert_eq!(plain[4], "60s");
        assert_eq!(plain[5..], ["<none>", "<none>", "<none>", "<none>"]);
        pod["spec"]["nodeName"] = "node-1".into();
        pod["status"]["podIPs"] = json!([{"ip": "10.244.0.9"}]);
        pod["spec"]["readinessGates"] = json!([{"conditionType": "example.com/lb"}]);
        let pod = condition(pod, "example.com/lb", "True", "");
        assert_eq!(
            cells(&pod, now())[5..],
            ["10.244.0.9", "node-1", "<none>", "1/1"]
        );
        assert_eq!(conditions(&pod), None);
    }
}
