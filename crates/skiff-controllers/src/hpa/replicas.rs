//! How many replicas one metric asks for (pure): Kubernetes' replica calculator
//! (`pkg/controller/podautoscaler/replica_calculator.go`).
//!
//! The core is one line — desired = ⌈ready pods × current / target⌉ — and the rest is about not
//! being fooled:
//! - **Tolerance**: within 10 % of the target nothing changes, so noise does not flap.
//! - **Pods that cannot be measured fairly** are grouped apart: deleted and failed pods are
//!   ignored; pending pods are *unready*; pods without a sample are *missing*; for CPU, pods
//!   still starting (not Ready, or Ready so recently that the sample may include start-up
//!   work) are *unready* too.
//! - **Then the ratio is recomputed conservatively**: on a scale-up, missing and unready pods
//!   count as using nothing; on a scale-down, missing pods count as using their whole request
//!   (or the target). If that flips the direction, or brings the ratio within tolerance,
//!   nothing changes.
//!
//! Values are in thousandths of their unit (millicores, milli-bytes, milli-requests per
//! second), as Kubernetes' `MilliValue`.
use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Pod;

use crate::pods;

/// Whether `ratio` is close enough to 1 to leave the count alone (Kubernetes 1.33's form:
/// `1 - tolerance <= ratio <= 1 + tolerance`).
fn within_tolerance(ratio: f64) -> bool {
    (1.0 - TOLERANCE..=1.0 + TOLERANCE).contains(&ratio)
}

/// How far from the target the ratio may be before anything changes (kube-controller-manager's
/// `--horizontal-pod-autoscaler-tolerance`).
pub const TOLERANCE: f64 = 0.1;
/// For this long after a pod starts, its CPU samples are taken only once it is Ready and a
/// whole window has passed since (`--horizontal-pod-autoscaler-cpu-initialization-period`).
pub const CPU_INITIALIZATION_PERIOD: SignedDuration = SignedDuration::from_secs(300);
/// The samples the ratio is computed from: of the target's pods, neither ignored nor unready.
fn counted(
    pods: &[Pod],
    samples: &BTreeMap<String, Sample>,
    groups: &Groups,
) -> Result<BTreeMap<String, Sample>, String> {
    let counted: BTreeMap<String, Sample> = samples
        .iter()
        .filter(|(pod, _)| {
            pods.iter().any(|p| &name(p) == *pod)
                && !groups.ignored.contains(*pod)
                && !groups.unready.contains(*pod)
        })
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    if counted.is_empty() {
        return Err("did not receive metrics for targeted pods (pods might be unready)".into());
    }
    Ok(counted)
}

/// A pod that turned unready within this long of starting is taken as never having been ready
/// (`--horizontal-pod-autoscaler-initial-readiness-delay`).
pub const INITIAL_READINESS_DELAY: SignedDuration = SignedDuration::from_secs(30);

/// One pod's measured value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// In thousandths of the unit.
    pub value: i64,
    /// When it was measured, and over how long.
    pub timestamp: Timestamp,
    pub window: SignedDuration,
}

/// What a resource metric computed: the replicas, the utilization (percent of requests, for a
/// utilization target) and the average value per pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Computed {
    pub replicas: i32,
    pub utilization: Option<i32>,
    pub average: i64,
}

/// The pods by how their samples may be used.
#[derive(Debug, Default)]
struct Groups {
    ready: usize,
    unready: BTreeSet<String>,
    missing: BTreeSet<String>,
    ignored: BTreeSet<String>,
}

fn name(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

/// Kubernetes' `groupPods`. `cpu`: whether the CPU start-up rules apply.
fn group(pods: &[Pod], samples: &BTreeMap<String, Sample>, cpu: bool, now: Timestamp) -> Groups {
    let mut groups = Groups::default();
    for pod in pods {
        let name = name(pod);
        if pod.metadata.deletion_timestamp.is_some() || pods::phase(pod) == "Failed" {
            groups.ignored.insert(name);
            continue;
        }
        if pods::phase(pod) == "Pending" {
            groups.unready.insert(name);
            continue;
        }
        let Some(sample) = samples.get(&name) else {
            groups.missing.insert(name);
            continue;
        };
        if cpu && unready_for_cpu(pod, sample, now) {
            groups.unready.insert(name);
            continue;
        }
        groups.ready += 1;
    }
    groups
}

fn unready_for_cpu(pod: &Pod, sample: &Sample, now: Timestamp) -> bool {
    let status = pod.status.as_ref();
    let condition = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
    let started = status.and_then(|s| s.start_time.as_ref()).map(|t| t.0);
    let (Some(condition), Some(started)) = (condition, started) else {
        return true;
    };
    let transition = condition
        .last_transition_time
        .as_ref()
        .map_or(started, |t| t.0);
    if started + CPU_INITIALIZATION_PERIOD > now {
        // Still possibly starting: only a Ready pod measured for a whole window since.
        condition.status == "False" || sample.timestamp < transition + sample.window
    } else {
        // Past start-up: ignored only if it is unready and never was ready.
        condition.status == "False" && started + INITIAL_READINESS_DELAY > transition
    }
}

/// Each pod's request of `resource` (thousandths), summed over its containers (or only
/// `container`). A container without a request makes utilization meaningless: an error that
/// names it, as Kubernetes words it.
pub fn requests(
    pods: &[Pod],
    resource: &str,
    container: Option<&str>,
) -> Result<BTreeMap<String, i64>, String> {
    let mut out = BTreeMap::new();
    for pod in pods {
        let mut total = 0;
        let containers = pod
            .spec
            .as_ref()
            .map(|s| s.containers.as_slice())
            .unwrap_or_default();
        for c in containers {
            if container.is_some_and(|wanted| wanted != c.name) {
                continue;
            }
            let request = c
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get(resource))
                .and_then(|q| skiff_api::quantity::cpu_millis(&q.0).ok());
            match request {
                Some(milli) => total += milli,
                None => {
                    return Err(format!(
                        "missing request for {resource} in container {} of Pod {}",
                        c.name,
                        name(pod)
                    ))
                }
            }
        }
        out.insert(name(pod), total);
    }
    Ok(out)
}

/// (usage ratio, utilization %, average value) of the samples against the requests
/// (`GetResourceUtilizationRatio`): only pods with both count.
fn utilization_ratio(
    samples: &BTreeMap<String, Sample>,
    requests: &BTreeMap<String, i64>,
    target: i32,
) -> Result<(f64, i32, i64), String> {
    let (mut used, mut requested, mut count) = (0i64, 0i64, 0i64);
    for (pod, sample) in samples {
        if let Some(request) = requests.get(pod) {
            used += sample.value;
            requested += request;
            count += 1;
        }
    }
    if requested == 0 {
        return Err("no metrics returned matched known pods".into());
    }
    let utilization = (used * 100 / requested) as i32;
    Ok((
        f64::from(utilization) / f64::from(target),
        utilization,
        used / count.max(1),
    ))
}

/// A Resource metric against a utilization target (`GetResourceReplicas`).
pub fn resource_utilization(
    current: i32,
    target: i32,
    resource: &str,
    container: Option<&str>,
    pods: &[Pod],
    samples: &BTreeMap<String, Sample>,
    now: Timestamp,
) -> Result<Computed, String> {
    if pods.is_empty() {
        return Err("no pods returned by selector while calculating replica count".into());
    }
    let groups = group(pods, samples, resource == "cpu", now);
    let mut samples = counted(pods, samples, &groups)?;
    let requests = requests(pods, resource, container)?;
    let (ratio, utilization, average) = utilization_ratio(&samples, &requests, target)?;
    let computed = |replicas| Computed {
        replicas,
        utilization: Some(utilization),
        average,
    };
    let scale_up_with_unready = !groups.unready.is_empty() && ratio > 1.0;
    if !scale_up_with_unready && groups.missing.is_empty() {
        if within_tolerance(ratio) {
            return Ok(computed(current));
        }
        return Ok(computed((ratio * groups.ready as f64).ceil() as i32));
    }
    let filler = |value: i64| Sample {
        value,
        timestamp: now,
        window: SignedDuration::ZERO,
    };
    if !groups.missing.is_empty() {
        if ratio < 1.0 {
            // Scaling down: a pod not measured is taken to use its request (or the target).
            let fallback = i64::from(target.max(100));
            for pod in &groups.missing {
                let request = requests.get(pod).copied().unwrap_or(0);
                samples.insert(pod.clone(), filler(request * fallback / 100));
            }
        } else if ratio > 1.0 {
            for pod in &groups.missing {
                samples.insert(pod.clone(), filler(0));
            }
        }
    }
    if scale_up_with_unready {
        for pod in &groups.unready {
            samples.insert(pod.clone(), filler(0));
        }
    }
    let (new_ratio, _, _) = utilization_ratio(&samples, &requests, target)?;
    Ok(computed(settle(current, ratio, new_ratio, samples.len())))
}

/// The conservative second look shared by every pod metric: nothing changes if the ratio is
/// now within tolerance or points the other way, or if the count would move against it.
fn settle(current: i32, ratio: f64, new_ratio: f64, pods: usize) -> i32 {
    if within_tolerance(new_ratio)
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
    {
        return current;
    }
    let replicas = (new_ratio * pods as f64).ceil() as i32;
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return current;
    }
    replicas
}

/// A per-pod value against an average target: Resource `AverageValue` and Pods metrics
/// (`calcPlainMetricReplicas`). `cpu`: whether the CPU start-up rules apply. Returns the
/// replicas and the average value.
pub fn average_value(
    current: i32,
    target: i64,
    cpu: bool,
    pods: &[Pod],
    samples: &BTreeMap<String, Sample>,
    now: Timestamp,
) -> Result<(i32, i64), String> {
    if pods.is_empty() {
        return Err("no pods returned by selector while calculating replica count".into());
    }
    if target <= 0 {
        return Err("the target value must be positive".into());
    }
    let groups = group(pods, samples, cpu, now);
    let mut samples = counted(pods, samples, &groups)?;
    let ratio_of = |samples: &BTreeMap<String, Sample>| {
        let total: i64 = samples.values().map(|s| s.value).sum();
        let average = total / samples.len() as i64;
        (
            total as f64 / (target as f64 * samples.len() as f64),
            average,
        )
    };
    let (ratio, average) = ratio_of(&samples);
    let scale_up_with_unready = !groups.unready.is_empty() && ratio > 1.0;
    if !scale_up_with_unready && groups.missing.is_empty() {
        if within_tolerance(ratio) {
            return Ok((current, average));
        }
        return Ok(((ratio * groups.ready as f64).ceil() as i32, average));
    }
    let filler = |value: i64| Sample {
        value,
        timestamp: now,
        window: SignedDuration::ZERO,
    };
    if !groups.missing.is_empty() {
        let value = if ratio < 1.0 { target } else { 0 };
        if ratio != 1.0 {
            for pod in &groups.missing {
                samples.insert(pod.clone(), filler(value));
            }
        }
    }
    if scale_up_with_unready {
        for pod in &groups.unready {
            samples.insert(pod.clone(), filler(0));
        }
    }
    let (new_ratio, _) = ratio_of(&samples);
    Ok((settle(current, ratio, new_ratio, samples.len()), average))
}

/// An Object metric against a `Value` target (`GetObjectMetricReplicas`): the ratio times the
/// ready pods.
pub fn object_value(current: i32, usage: i64, target: i64, ready_pods: usize) -> i32 {
    let ratio = usage as f64 / target.max(1) as f64;
    if current == 0 {
        return ratio.ceil() as i32;
    }
    if within_tolerance(ratio) {
        return current;
    }
    (ratio * ready_pods as f64).ceil() as i32
}

/// An Object metric against an `AverageValue` target (`GetObjectPerPodMetricReplicas`): the
/// value spread over as many pods as keep each at the target.
pub fn object_average(current: i32, usage: i64, target: i64) -> i32 {
    let target = target.max(1);
    let ratio = usage as f64 / (target as f64 * f64::from(current.max(1)));
    if !within_tolerance(ratio) {
        (usage as f64 / target as f64).ceil() as i32
    } else {
        current
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("time")
    }

    /// A running pod that started long ago and has been Ready since, asking for `request` of
    /// CPU.
    fn pod(name: &str, request: &str) -> Pod {
        pod_with(name, request, "Running", "True", "2026-12-04T10:00:00Z")
    }

    fn pod_with(name: &str, request: &str, phase: &str, ready: &str, since: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "app", "image": "x",
                "resources": {"requests": {"cpu": request, "memory": "100Mi"}}}]},
            "status": {"phase": phase, "startTime": "2026-12-04T10:00:00Z",
                "conditions": [{"type": "Ready", "status": ready, "lastTransitionTime": since}]},
        }))
        .expect("pod")
    }

    const NOW: &str = "2026-12-04T12:00:00Z";

    fn samples(values: &[(&str, i64)]) -> BTreeMap<String, Sample> {
        values
            .iter()
            .map(|(pod, value)| {
                (
                    pod.to_string(),
                    Sample {
                        value: *value,
                        timestamp: at("2026-12-04T11:59:50Z"),
                        window: SignedDuration::from_secs(15),
                    },
                )
            })
            .collect()
    }

    fn cpu(current: i32, target: i32, pods: &[Pod], used: &[(&str, i64)]) -> Computed {
        resource_utilization(current, target, "cpu", None, pods, &samples(used), at(NOW))
            .expect("computes")
    }

    #[test]
    fn the_documented_examples() {
        // kubernetes.io, "Horizontal Pod Autoscaling": current 200m against a 100m target
        // doubles the replicas; 50m halves them.
        let pods = [pod("a", "1"), pod("b", "1")];
        assert_eq!(cpu(2, 10, &pods, &[("a", 200), ("b", 200)]).replicas, 4);
        assert_eq!(cpu(2, 10, &pods, &[("a", 50), ("b", 50)]).replicas, 1);
        // desired = ceil(current × ratio): 3 pods at 90 % against 50 % → ceil(3 × 1.8) = 6.
        let three = [pod("a", "1"), pod("b", "1"), pod("c", "1")];
        let c = cpu(3, 50, &three, &[("a", 900), ("b", 900), ("c", 900)]);
        assert_eq!(
            c,
            Computed {
                replicas: 6,
                utilization: Some(90),
                average: 900
            }
        );
        // Within the 10 % tolerance: 85 % against 80 % stays.
        assert_eq!(
            cpu(3, 80, &three, &[("a", 850), ("b", 850), ("c", 850)]).replicas,
            3
        );
    }

    #[test]
    fn replica_calculator_cases() {
        // From replica_calculator_test.go: TestReplicaCalcScaleUp (3 pods, requests 1 core,
        // usage 300m/500m/700m against 30 %: 50 % average → 5).
        let three = [pod("a", "1"), pod("b", "1"), pod("c", "1")];
        let c = cpu(3, 30, &three, &[("a", 300), ("b", 500), ("c", 700)]);
        assert_eq!((c.replicas, c.utilization), (5, Some(50)));
        // TestReplicaCalcScaleDown (5 pods, 100m..500m of 1 core against 50 %: 28 % → 3).
        let five: Vec<Pod> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|n| pod(n, "1"))
            .collect();
        let c = cpu(
            5,
            50,
            &five,
            &[("a", 100), ("b", 300), ("c", 500), ("d", 250), ("e", 250)],
        );
        assert_eq!((c.replicas, c.utilization), (3, Some(28)));
    }

    #[test]
    fn missing_and_unready_pods_are_counted_conservatively() {
        // Scale-up with a pod not measured: it counts as 0, so 3 pods at (90+90+0)/3 = 60 %
        // against 50 % → ceil(3 × 1.2) = 4, not 6.
        let three = [pod("a", "1"), pod("b", "1"), pod("c", "1")];
        assert_eq!(cpu(3, 50, &three, &[("a", 900), ("b", 900)]).replicas, 4);
        // Scale-down with a pod not measured: it counts as its whole request, so 3 pods at
        // (10+10+100)/3 = 40 % against 50 % → ceil(3 × 0.8) = 3: no change.
        assert_eq!(cpu(3, 50, &three, &[("a", 100), ("b", 100)]).replicas, 3);
        // A starting pod (Ready only since 5 s ago, within the CPU start-up period) is unready:
        // on a scale-up it counts as 0.
        let starting = pod_with("c", "1", "Running", "True", "2026-12-04T11:59:55Z");
        let mut just_started = starting.clone();
        just_started.status.as_mut().expect("status").start_time = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at("2026-12-04T11:58:00Z")),
        );
        let pods = [pod("a", "1"), pod("b", "1"), just_started];
        assert_eq!(
            cpu(3, 50, &pods, &[("a", 900), ("b", 900), ("c", 900)]).replicas,
            4
        );
        // A pending pod counts as unready: 0 on a scale-up, so (100+100+0)/3 = 66 % against
        // 50 % → ceil(3 × 1.33) = 4.
        let pending = pod_with("c", "1", "Pending", "False", NOW);
        let pods = [pod("a", "1"), pod("b", "1"), pending];
        assert_eq!(cpu(2, 50, &pods, &[("a", 1000), ("b", 1000)]).replicas, 4);
    }

    #[test]
    fn what_cannot_be_computed_says_why() {
        let no_request: Pod = serde_json::from_value(json!({
            "metadata": {"name": "bare"},
            "spec": {"containers": [{"name": "app", "image": "x"}]},
            "status": {"phase": "Running", "startTime": "2026-12-04T10:00:00Z",
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-12-04T10:00:00Z"}]},
        }))
        .expect("pod");
        let e = resource_utilization(
            1,
            50,
            "cpu",
            None,
            &[no_request],
            &samples(&[("bare", 5)]),
            at(NOW),
        )
        .expect_err("no request");
        assert_eq!(e, "missing request for cpu in container app of Pod bare");
        let e = resource_utilization(1, 50, "cpu", None, &[], &samples(&[]), at(NOW))
            .expect_err("no pods");
        assert!(e.contains("no pods returned by selector"), "{e}");
        let e = resource_utilization(1, 50, "cpu", None, &[pod("a", "1")], &samples(&[]), at(NOW))
            .expect_err("no metrics");
        assert!(e.contains("did not receive metrics"), "{e}");
    }

    #[test]
    fn average_values_and_object_metrics() {
        // Pods metric: 3 pods at 15 requests/s against 10 → ceil(3 × 1.5) = 5.
        let three = [pod("a", "1"), pod("b", "1"), pod("c", "1")];
        let used = samples(&[("a", 15_000), ("b", 15_000), ("c", 15_000)]);
        assert_eq!(
            average_value(3, 10_000, false, &three, &used, at(NOW)),
            Ok((5, 15_000))
        );
        // Object Value: 30 against 10 with 2 ready pods → 6; within tolerance → unchanged.
        assert_eq!(object_value(2, 30_000, 10_000, 2), 6);
        assert_eq!(object_value(2, 10_500, 10_000, 2), 2);
        // Object AverageValue: 45 spread at 10 per pod → 5.
        assert_eq!(object_average(2, 45_000, 10_000), 5);
        assert_eq!(object_average(2, 20_000, 10_000), 2);
    }
}
