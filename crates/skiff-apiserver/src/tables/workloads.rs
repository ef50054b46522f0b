//! Deployments, ReplicaSets, StatefulSets and ControllerRevisions. Deployments and ReplicaSets: desired against current and ready replicas, and with `-o wide`
//! the pod template's containers and images and the selector.

use jiff::Timestamp;
use serde_json::Value;

use super::{age, array_at, column, docs, int_at, name, or_none, str_at, strings_at, wide};
use super::{Column, Printer, AGE, NAME};

const CONTAINERS: Column = wide("Containers", "string", docs::CONTAINERS);
const IMAGES: Column = wide("Images", "string", docs::IMAGES);

pub(super) const DEPLOYMENTS: Printer = Printer::new(
    &[
        NAME,
        column("Ready", "string", docs::READY_PODS),
        column("Up-to-date", "string", docs::DEPLOY_UPDATED),
        column("Available", "string", docs::DEPLOY_AVAILABLE),
        AGE,
        CONTAINERS,
        IMAGES,
        wide("Selector", "string", docs::DEPLOY_SELECTOR),
    ],
    deployment_cells,
);

fn deployment_cells(d: &Value, now: Timestamp) -> Vec<Value> {
    let ready = format!("{}/{}", int_at(d, "/status/readyReplicas"), replicas(d));
    let counts = [
        ready.into(),
        int_at(d, "/status/updatedReplicas").into(),
        int_at(d, "/status/availableReplicas").into(),
    ];
    // Deployments print their selector as is: an empty one stays empty.
    workload_cells(d, counts, selector_string(d.pointer("/spec/selector")), now)
}

pub(super) const REPLICASETS: Printer = Printer::new(
    &[
        NAME,
        column("Desired", "integer", docs::RS_REPLICAS),
        column("Current", "integer", docs::RS_CURRENT),
        column("Ready", "integer", docs::RS_READY),
        AGE,
        CONTAINERS,
        IMAGES,
        wide("Selector", "string", docs::RS_SELECTOR),
    ],
    replicaset_cells,
);

fn replicaset_cells(rs: &Value, now: Timestamp) -> Vec<Value> {
    let counts = [
        replicas(rs).into(),
        int_at(rs, "/status/replicas").into(),
        int_at(rs, "/status/readyReplicas").into(),
    ];
    let selector = or_none(selector_string(rs.pointer("/spec/selector")));
    workload_cells(rs, counts, selector, now)
}

/// A workload's row: its name, three replica counts, its age, then (for `-o wide`) the
/// containers and images of its pod template and its selector.
fn workload_cells(
    workload: &Value,
    counts: [Value; 3],
    selector: String,
    now: Timestamp,
) -> Vec<Value> {
    let (containers, images) = container_cells(workload);
    let mut cells = vec![name(workload)];
    cells.extend(counts);
    cells.extend([
        age(workload, now).into(),
        containers.into(),
        images.into(),
        selector.into(),
    ]);
    cells
}

pub(super) const STATEFULSETS: Printer = Printer::new(
    &[
        NAME,
        column("Ready", "string", docs::READY_PODS),
        AGE,
        CONTAINERS,
        IMAGES,
    ],
    statefulset_cells,
);

fn statefulset_cells(sts: &Value, now: Timestamp) -> Vec<Value> {
    let (containers, images) = container_cells(sts);
    vec![
        name(sts),
        format!("{}/{}", int_at(sts, "/status/readyReplicas"), replicas(sts)).into(),
        age(sts, now).into(),
        containers.into(),
        images.into(),
    ]
}

pub(super) const DAEMONSETS: Printer = Printer::new(
    &[
        NAME,
        column("Desired", "integer", docs::DS_DESIRED),
        column("Current", "integer", docs::DS_CURRENT),
        column("Ready", "integer", docs::DS_READY),
        column("Up-to-date", "integer", docs::DS_UPDATED),
        column("Available", "integer", docs::DS_AVAILABLE),
        column("Node Selector", "string", docs::DS_NODE_SELECTOR),
        AGE,
        CONTAINERS,
        IMAGES,
        wide("Selector", "string", docs::DEPLOY_SELECTOR),
    ],
    daemonset_cells,
);

fn daemonset_cells(ds: &Value, now: Timestamp) -> Vec<Value> {
    let (containers, images) = container_cells(ds);
    let node_selector = ds
        .pointer("/spec/template/spec/nodeSelector")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    vec![
        name(ds),
        int_at(ds, "/status/desiredNumberScheduled").into(),
        int_at(ds, "/status/currentNumberScheduled").into(),
        int_at(ds, "/status/numberReady").into(),
        int_at(ds, "/status/updatedNumberScheduled").into(),
        int_at(ds, "/status/numberAvailable").into(),
        or_none(node_selector).into(),
        age(ds, now).into(),
        containers.into(),
        images.into(),
        selector_string(ds.pointer("/spec/selector")).into(),
    ]
}

pub(super) const JOBS: Printer = Printer::new(
    &[
        NAME,
        column("Status", "string", docs::JOB_STATUS),
        column("Completions", "string", docs::JOB_COMPLETIONS),
        column("Duration", "string", docs::JOB_DURATION),
        AGE,
        CONTAINERS,
        IMAGES,
        wide("Selector", "string", docs::JOB_SELECTOR),
    ],
    job_cells,
);

/// kubectl's Job row: its state from the conditions, `succeeded/completions` (or
/// `succeeded/1 of parallelism` for a work queue), how long it ran.
fn job_cells(job: &Value, now: Timestamp) -> Vec<Value> {
    let (containers, images) = container_cells(job);
    let condition = |kind: &str| {
        array_at(job, "/status/conditions")
            .iter()
            .any(|c| str_at(c, "/type") == kind && str_at(c, "/status") == "True")
    };
    let status = if condition("Failed") {
        "Failed"
    } else if condition("Complete") {
        "Complete"
    } else if condition("Suspended") {
        "Suspended"
    } else if condition("FailureTarget") {
        "FailureTarget"
    } else if condition("SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else {
        "Running"
    };
    let succeeded = int_at(job, "/status/succeeded");
    let completions = match job.pointer("/spec/completions").and_then(Value::as_i64) {
        Some(n) => format!("{succeeded}/{n}"),
        None => format!(
            "{succeeded}/1 of {}",
            job.pointer("/spec/parallelism")
                .and_then(Value::as_i64)
                .unwrap_or(1)
        ),
    };
    let started = str_at(job, "/status/startTime");
    let finished = str_at(job, "/status/completionTime")
        .parse::<Timestamp>()
        .ok();
    let duration = if started.is_empty() {
        String::new()
    } else {
        super::since(started, finished.unwrap_or(now))
    };
    vec![
        name(job),
        status.into(),
        completions.into(),
        duration.into(),
        age(job, now).into(),
        containers.into(),
        images.into(),
        selector_string(job.pointer("/spec/selector")).into(),
    ]
}

pub(super) const CRONJOBS: Printer = Printer::new(
    &[
        NAME,
        column("Schedule", "string", docs::CJ_SCHEDULE),
        column("TimeZone", "string", docs::CJ_TIME_ZONE),
        column("Suspend", "boolean", docs::CJ_SUSPEND),
        column("Active", "integer", docs::CJ_ACTIVE),
        column("Last Schedule", "date", docs::CJ_LAST_SCHEDULE),
        AGE,
        CONTAINERS,
        IMAGES,
        wide("Selector", "string", docs::JOB_SELECTOR),
    ],
    cronjob_cells,
);

fn cronjob_cells(cj: &Value, now: Timestamp) -> Vec<Value> {
    let (containers, images) = containers_at(cj, "/spec/jobTemplate/spec/template/spec/containers");
    let last = str_at(cj, "/status/lastScheduleTime");
    vec![
        name(cj),
        str_at(cj, "/spec/schedule").into(),
        or_none(str_at(cj, "/spec/timeZone").to_string()).into(),
        // kube-apiserver's printBoolPtr: `True`, `False`, or `<unset>`.
        match cj.pointer("/spec/suspend").and_then(Value::as_bool) {
            Some(true) => "True",
            Some(false) => "False",
            None => "<unset>",
        }
        .into(),
        (array_at(cj, "/status/active").len() as i64).into(),
        if last.is_empty() {
            "<none>".to_string()
        } else {
            super::since(last, now)
        }
        .into(),
        age(cj, now).into(),
        containers.into(),
        images.into(),
        or_none(selector_string(
            cj.pointer("/spec/jobTemplate/spec/selector"),
        ))
        .into(),
    ]
}

pub(super) const HORIZONTAL_POD_AUTOSCALERS: Printer = Printer::new(
    &[
        NAME,
        column("Reference", "string", docs::HPA_REFERENCE),
        column("Targets", "string", docs::HPA_TARGETS),
        column("MinPods", "string", docs::HPA_MIN_PODS),
        column("MaxPods", "integer", docs::HPA_MAX_PODS),
        column("Replicas", "integer", docs::HPA_REPLICAS),
        AGE,
    ],
    hpa_cells,
);

fn hpa_cells(hpa: &Value, now: Timestamp) -> Vec<Value> {
    let target = hpa.pointer("/spec/scaleTargetRef");
    let field = |f: &str| {
        target
            .and_then(|t| t.get(f))
            .and_then(Value::as_str)
            .unwrap_or("")
    };
    vec![
        name(hpa),
        format!("{}/{}", field("kind"), field("name")).into(),
        hpa_targets(
            array_at(hpa, "/spec/metrics"),
            array_at(hpa, "/status/currentMetrics"),
        )
        .into(),
        hpa.pointer("/spec/minReplicas")
            .and_then(Value::as_i64)
            .map_or_else(|| "<unset>".to_string(), |n| n.to_string())
            .into(),
        hpa.pointer("/spec/maxReplicas")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            .into(),
        hpa.pointer("/status/currentReplicas")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            .into(),
        age(hpa, now).into(),
    ]
}

/// The TARGETS cell as kube-apiserver prints it: `current/target` per metric, `<unknown>` for a
/// current value not yet measured, the first two metrics and `+ N more...`.
fn hpa_targets(specs: &[Value], statuses: &[Value]) -> String {
    const SHOWN: usize = 2;
    if specs.is_empty() {
        return "<none>".into();
    }
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    let unknown = || "<unknown>".to_string();
    let mut cells = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let status = statuses.get(i);
        let current = |source: &str, field: &str| {
            text(status.and_then(|s| s.pointer(&format!("/{source}/current/{field}"))))
                .unwrap_or_else(unknown)
        };
        let target = |source: &str, field: &str| {
            text(spec.pointer(&format!("/{source}/target/{field}"))).unwrap_or_default()
        };
        let cell = match spec.get("type").and_then(Value::as_str).unwrap_or("") {
            source @ ("External" | "Object") => {
                let source = if source == "External" {
                    "external"
                } else {
                    "object"
                };
                if spec
                    .pointer(&format!("/{source}/target/averageValue"))
                    .is_some()
                {
                    format!(
                        "{}/{} (avg)",
                        current(source, "averageValue"),
                        target(source, "averageValue")
                    )
                } else {
                    format!("{}/{}", current(source, "value"), target(source, "value"))
                }
            }
            "Pods" => format!(
                "{}/{}",
                current("pods", "averageValue"),
                target("pods", "averageValue")
            ),
            kind @ ("Resource" | "ContainerResource") => {
                let source = if kind == "Resource" {
                    "resource"
                } else {
                    "containerResource"
                };
                let resource = text(spec.pointer(&format!("/{source}/name"))).unwrap_or_default();
                if spec
                    .pointer(&format!("/{source}/target/averageValue"))
                    .is_some()
                {
                    format!(
                        "{resource}: {}/{}",
                        current(source, "averageValue"),
                        target(source, "averageValue")
                    )
                } else {
                    let percent =
                        |v: Option<&Value>| v.and_then(Value::as_i64).map(|p| format!("{p}%"));
                    let now =
                        percent(status.and_then(|s| {
                            s.pointer(&format!("/{source}/current/averageUtilization"))
                        }))
                        .unwrap_or_else(unknown);
                    let wanted =
                        percent(spec.pointer(&format!("/{source}/target/averageUtilization")))
                            .unwrap_or_else(|| "<auto>".into());
                    format!("{resource}: {now}/{wanted}")
                }
            }
            _ => "<unknown type>".into(),
        };
        cells.push(cell);
    }
    let more = cells.len().saturating_sub(SHOWN);
    cells.truncate(SHOWN);
    let shown = cells.join(", ");
    if more > 0 {
        format!("{shown} + {more} more...")
    } else {
        shown
    }
}

pub(super) const CONTROLLER_REVISIONS: Printer = Printer::new(
    &[
        NAME,
        column("Controller", "string", docs::REVISION_CONTROLLER),
        column("Revision", "integer", docs::REVISION),
        AGE,
    ],
    revision_cells,
);

fn revision_cells(revision: &Value, now: Timestamp) -> Vec<Value> {
    let controller = array_at(revision, "/metadata/ownerReferences")
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        .map(|r| {
            let group = str_at(r, "/apiVersion")
                .split_once('/')
                .map_or("", |(g, _)| g)
                .to_string();
            let kind = str_at(r, "/kind").to_lowercase();
            let kind = if group.is_empty() {
                kind
            } else {
                format!("{kind}.{group}")
            };
            format!("{kind}/{}", str_at(r, "/name"))
        })
        .unwrap_or_else(|| "<none>".into());
    vec![
        name(revision),
        controller.into(),
        int_at(revision, "/revision").into(),
        age(revision, now).into(),
    ]
}

/// `spec.replicas`, which defaults to 1.
fn replicas(object: &Value) -> i64 {
    object
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

/// The names and the images of a workload's pod template, each joined with commas.
pub(super) fn container_cells(workload: &Value) -> (String, String) {
    containers_at(workload, "/spec/template/spec/containers")
}

/// The names and the images of the containers at `pointer`, each joined with commas.
fn containers_at(object: &Value, pointer: &str) -> (String, String) {
    let containers = array_at(object, pointer);
    let join = |field: &str| {
        containers
            .iter()
            .map(|c| c.get(field).and_then(Value::as_str).unwrap_or(""))
            .collect::<Vec<_>>()
            .join(",")
    };
    (join("name"), join("image"))
}

/// A `LabelSelector` in selector syntax (`app=web,tier in (a,b),!legacy`), requirements sorted
/// by key as Kubernetes prints them; empty for an empty selector.
fn selector_string(selector: Option<&Value>) -> String {
    let Some(selector) = selector else {
        return String::new();
    };
    let mut requirements: Vec<(String, String)> = selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), format!("{k}={}", v.as_str().unwrap_or(""))))
        .collect();
    for expression in array_at(selector, "/matchExpressions") {
        let key = str_at(expression, "/key");
        let mut values = strings_at(expression, "/values");
        values.sort_unstable();
        let values = values.join(",");
        let text = match str_at(expression, "/operator") {
            "In" => format!("{key} in ({values})"),
            "NotIn" => format!("{key} notin ({values})"),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            other => format!("{key} {other} ({values})"),
        };
        requirements.push((key.to_string(), text));
    }
    requirements.sort_by(|a, b| a.0.cmp(&b.0));
    requirements
        .into_iter()
        .map(|(_, text)| text)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::super::tests::{ago, now};
    use super::*;
    use serde_json::json;

    fn workload(kind: &str, status: Value) -> Value {
        json!({
            "kind": kind,
            "metadata": {"name": "web", "creationTimestamp": ago(200)},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"},
                             "matchExpressions": [{"key": "tier", "operator": "In", "values": ["fe", "api"]},
                                                  {"key": "legacy", "operator": "DoesNotExist"}]},
                "template": {"spec": {"containers": [{"name": "app", "image": "web:1"},
                                                     {"name": "proxy", "image": "envoy:1"}]}},
            },
            "status": status,
        })
    }

    #[test]
    fn deployments_show_ready_against_desired() {
        let d = workload(
            "Deployment",
            json!({"replicas": 3, "readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}),
        );
        assert_eq!(
            deployment_cells(&d, now()),
            [
                json!("web"),
                json!("2/3"),
                json!(3),
                json!(2),
                json!("3m20s"),
                json!("app,proxy"),
                json!("web:1,envoy:1"),
                json!("app=web,!legacy,tier in (api,fe)"),
            ]
        );
        let fresh = workload("Deployment", json!({}));
        assert_eq!(
            deployment_cells(&fresh, now())[1..4],
            [json!("0/3"), json!(0), json!(0)]
        );
    }

    #[test]
    fn replicasets_show_desired_current_and_ready() {
        let rs = workload("ReplicaSet", json!({"replicas": 3, "readyReplicas": 1}));
        let cells = replicaset_cells(&rs, now());
        assert_eq!(cells[1..4], [json!(3), json!(3), json!(1)]);
        let mut no_selector = rs.clone();
        no_selector["spec"]["selector"] = json!({});
        assert_eq!(replicaset_cells(&no_selector, now())[7], "<none>");
    }
}
