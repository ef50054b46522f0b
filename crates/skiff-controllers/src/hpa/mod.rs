//! The HorizontalPodAutoscaler controller: the replicas of a Deployment, ReplicaSet or
//! StatefulSet follow what its pods use.
//!
//! Every [`SYNC_PERIOD`] (kube-controller-manager's `--horizontal-pod-autoscaler-sync-period`)
//! the [`feed`] fetches what the HPAs need through the API — `metrics.k8s.io` for CPU and
//! memory, `custom.metrics.k8s.io` for Pods and Object metrics (the service proxies' request
//! rates) — keeps it as one [`feed::Snapshot`], and wakes every HPA. One pass for one HPA, as a
//! script (Kubernetes' `reconcileAutoscaler`), pure given the snapshot:
//! 1. **The target's scale** from the stores: its replicas and selector. A kind without a
//!    `/scale` here or a target that does not exist: `AbleToScale=False` (`FailedGetScale`).
//! 2. **The recommendation**: a count below `minReplicas` or above `maxReplicas` is brought
//!    back first; otherwise each metric proposes a count ([`replicas`]) and the highest wins.
//!    A metric that cannot be computed is `ScalingActive=False` with the reason, and the
//!    count is left alone unless another metric asks for more.
//! 3. **Normalised** by stabilisation windows, policies and bounds ([`behavior`]).
//! 4. **Scale** (the target's `spec.replicas`, compare-and-swap) with a `SuccessfulRescale`
//!    event that says why, and write the status: replicas, current metrics, conditions.
//!
//! The recommendations and scale events the windows and policies look back on are kept in
//! memory, as Kubernetes keeps them: a new leader starts with none.
pub mod behavior;
pub mod feed;
pub mod replicas;

use std::collections::{BTreeMap, HashMap};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::autoscaling::v2::ContainerResourceMetricStatus;
use k8s_openapi::api::autoscaling::v2::{
    HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition, HorizontalPodAutoscalerStatus,
    MetricIdentifier, MetricSpec, MetricStatus, MetricValueStatus, ObjectMetricStatus,
    PodsMetricStatus, ResourceMetricStatus,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use skiff_client::informer::{key_of, Store};

use crate::controller::{Context, Controller};
use crate::workqueue::WorkQueue;
use crate::{reference_to, Action, Object};
use behavior::History;
use feed::Snapshot;
use replicas::Sample;

/// How often every HPA is looked at (Kubernetes' default).
pub const SYNC_PERIOD: std::time::Duration = std::time::Duration::from_secs(15);

/// What the HPA scales, as its `/scale` subresource shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Scale {
    pub replicas: i32,
    pub selector: Option<LabelSelector>,
}

/// The target's scale, or why it cannot be had (worded as Kubernetes' errors are).
pub type Target = Result<(Scale, Object), String>;

/// Plans one pass for `hpa` (pure). `target` is what step 1 found; `pods` are the target's
/// namespace's; `history` is this HPA's memory, updated in place.
pub fn reconcile(
    hpa: &HorizontalPodAutoscaler,
    target: Target,
    pods: &[Pod],
    snapshot: &Snapshot,
    history: &mut History,
    now: Timestamp,
) -> Vec<Action> {
    let mut plan = Vec::new();
    if hpa.metadata.deletion_timestamp.is_some() {
        return plan;
    }
    let here = reference_to(hpa);
    let spec = hpa.spec.clone().unwrap_or_default();
    let old = hpa.status.clone().unwrap_or_default();
    let mut status = HorizontalPodAutoscalerStatus {
        // Kubernetes' controller rebuilds the status without it.
        observed_generation: None,
        last_scale_time: old.last_scale_time.clone(),
        current_replicas: old.current_replicas,
        desired_replicas: old.desired_replicas,
        current_metrics: old.current_metrics.clone(),
        conditions: old.conditions.clone(),
    };
    let mut set = |type_: &str, ok: bool, reason: &str, message: String| {
        set_condition(&mut status.conditions, type_, ok, reason, message, now)
    };

    // 1. The target's scale.
    let (scale, mut target_object) = match target {
        Ok(found) => found,
        Err(e) => {
            plan.push(Action::warning_event(here, "FailedGetScale", e.clone()));
            set(
                "AbleToScale",
                false,
                "FailedGetScale",
                format!("the HPA controller was unable to get the target's current scale: {e}"),
            );
            push_status(&mut plan, hpa, status);
            return plan;
        }
    };
    set(
        "AbleToScale",
        true,
        "SucceededGetScale",
        "the HPA controller was able to get the target's current scale".into(),
    );
    let current = scale.replicas;
    let min = spec.min_replicas.unwrap_or(1);
    let max = spec.max_replicas;

    // 2. The recommendation.
    let mut desired = current;
    let mut reason = String::new();
    let mut rescale = true;
    let mut metric_statuses = Vec::new();
    if current == 0 && min != 0 {
        rescale = false;
        set(
            "ScalingActive",
            false,
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero".into(),
        );
    } else if current > max {
        reason = "Current number of replicas above Spec.MaxReplicas".into();
        desired = max;
    } else if current < min {
        reason = "Current number of replicas below Spec.MinReplicas".into();
        desired = min;
    } else {
        let selected = match selected_pods(&scale, pods) {
            Ok(selected) => selected,
            Err(e) => {
                plan.push(Action::warning_event(
                    here.clone(),
                    "InvalidSelector",
                    e.clone(),
                ));
                set("ScalingActive", false, "InvalidSelector", e);
                status.current_replicas = Some(current);
                push_status(&mut plan, hpa, status);
                return plan;
            }
        };
        let namespace = hpa.metadata.namespace.as_deref().unwrap_or("");
        let mut best: Option<(i32, String)> = None;
        let mut first_failure: Option<(String, String)> = None;
        let mut failures = 0;
        let metrics = spec.metrics.clone().unwrap_or_default();
        for metric in &metrics {
            match propose(metric, current, namespace, &selected, snapshot, now) {
                Proposal::Computed {
                    replicas,
                    name,
                    status: metric_status,
                } => {
                    metric_statuses.push(*metric_status);
                    if best.as_ref().is_none_or(|(r, _)| replicas > *r) {
                        best = Some((replicas, name));
                    }
                }
                Proposal::Failed {
                    reason,
                    message,
                    wrapped,
                } => {
                    failures += 1;
                    plan.push(Action::warning_event(here.clone(), &reason, message));
                    first_failure.get_or_insert((reason, wrapped));
                    metric_statuses.push(MetricStatus {
                        type_: String::new(),
                        ..Default::default()
                    });
                }
                // Not measured yet (the HPA is newer than the last fetch): wait for it.
                Proposal::NotYet => return plan,
            }
        }
        metric_statuses.retain(|s| !s.type_.is_empty());
        let proposed = best.as_ref().map_or(current, |(r, _)| *r);
        if failures > 0 && (failures >= metrics.len() || proposed < current) {
            let (failure, message) = first_failure.unwrap_or_default();
            set(
                "ScalingActive",
                false,
                &failure,
                format!("the HPA was unable to compute the replica count: {message}"),
            );
            plan.push(Action::warning_event(
                here,
                "FailedComputeMetricsReplicas",
                format!(
                    "invalid metrics ({failures} invalid out of {}), first error is: {message}",
                    metrics.len()
                ),
            ));
            status.current_replicas = Some(current);
            status.current_metrics = (!metric_statuses.is_empty()).then_some(metric_statuses);
            push_status(&mut plan, hpa, status);
            return plan;
        }
        let metric_name = best.map(|(_, n)| n).unwrap_or_default();
        set(
            "ScalingActive",
            true,
            "ValidMetricFound",
            format!(
                "the HPA was able to successfully calculate a replica count from {metric_name}"
            ),
        );
        desired = proposed;
        if desired > current {
            reason = format!("{metric_name} above target");
        } else if desired < current {
            reason = "All metrics below target".into();
        }
        // 3. Normalised.
        let normalized = behavior::normalize(
            spec.behavior.as_ref(),
            history,
            current,
            desired,
            min,
            max,
            now,
        );
        desired = normalized.replicas;
        let (able_reason, able_message) = normalized.able_to_scale;
        set("AbleToScale", true, able_reason, able_message.into());
        let (limited, limit_reason, limit_message) = normalized.limited;
        set(
            "ScalingLimited",
            limited,
            limit_reason,
            limit_message.into(),
        );
        rescale = desired != current;
    }

    // 4. Scale and report.
    if rescale && desired != current && set_replicas(&mut target_object, desired) {
        plan.push(Action::Update(target_object));
        plan.push(Action::normal_event(
            here,
            "SuccessfulRescale",
            format!("New size: {desired}; reason: {reason}"),
        ));
        history.record_scale(current, desired, now);
        status.last_scale_time = Some(Time(now));
        set(
            "AbleToScale",
            true,
            "SucceededRescale",
            format!("the HPA controller was able to update the target scale to {desired}"),
        );
    }
    status.current_replicas = Some(current);
    status.desired_replicas = desired;
    status.current_metrics = (!metric_statuses.is_empty()).then_some(metric_statuses);
    push_status(&mut plan, hpa, status);
    plan
}

/// The status write, if anything changed (conditions keep their transition times).
fn push_status(
    plan: &mut Vec<Action>,
    hpa: &HorizontalPodAutoscaler,
    status: HorizontalPodAutoscalerStatus,
) {
    if hpa.status.as_ref() == Some(&status) {
        return;
    }
    let mut updated = hpa.clone();
    updated.status = Some(status);
    plan.push(Action::UpdateStatus(Object::HorizontalPodAutoscaler(
        Box::new(updated),
    )));
}

/// Sets a condition; its transition time moves only when its status does.
fn set_condition(
    conditions: &mut Option<Vec<HorizontalPodAutoscalerCondition>>,
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    now: Timestamp,
) {
    let status = if ok { "True" } else { "False" };
    let conditions = conditions.get_or_insert_with(Vec::new);
    let previous = conditions.iter().position(|c| c.type_ == type_);
    let transition = match previous {
        Some(i) if conditions[i].status == status => conditions[i].last_transition_time.clone(),
        _ => Some(Time(now)),
    };
    let condition = HorizontalPodAutoscalerCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: transition,
    };
    match previous {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
}

/// The target's pods: those its selector picks.
fn selected_pods(scale: &Scale, pods: &[Pod]) -> Result<Vec<Pod>, String> {
    let Some(selector) = &scale.selector else {
        return Err("the HPA target's scale is missing a selector".into());
    };
    let parsed = skiff_api::selector::LabelSelector::from_k8s(selector).map_err(|e| {
        format!("couldn't convert selector into a corresponding internal selector object: {e}")
    })?;
    Ok(pods
        .iter()
        .filter(|p| parsed.matches(&p.metadata.labels.clone().unwrap_or_default()))
        .cloned()
        .collect())
}

/// What one metric proposes.
enum Proposal {
    Computed {
        replicas: i32,
        /// How the event names it (`cpu resource utilization (percentage of request)`).
        name: String,
        status: Box<MetricStatus>,
    },
    /// `message` is the event's; `wrapped` names the metric, as the condition shows it.
    Failed {
        reason: String,
        message: String,
        wrapped: String,
    },
    NotYet,
}

/// Thousandths as a Quantity in Kubernetes' canonical decimal form (`NewMilliQuantity(v,
/// DecimalSI)`): `250m`, `1`, `1500m`, `2M`.
fn milli(value: i64) -> Quantity {
    if value % 1000 != 0 {
        return Quantity(format!("{value}m"));
    }
    let mut whole = value / 1000;
    let mut suffix = 0;
    const SUFFIXES: [&str; 7] = ["", "k", "M", "G", "T", "P", "E"];
    while whole != 0 && whole % 1000 == 0 && suffix + 1 < SUFFIXES.len() {
        whole /= 1000;
        suffix += 1;
    }
    Quantity(format!("{whole}{}", SUFFIXES[suffix]))
}

fn propose(
    metric: &MetricSpec,
    current: i32,
    namespace: &str,
    pods: &[Pod],
    snapshot: &Snapshot,
    now: Timestamp,
) -> Proposal {
    let wrap = match metric.type_.as_str() {
        "Resource" => format!(
            "failed to get {} resource metric value: ",
            metric.resource.as_ref().map_or("", |r| r.name.as_str())
        ),
        "ContainerResource" => format!(
            "failed to get {} container metric value: ",
            metric
                .container_resource
                .as_ref()
                .map_or("", |r| r.container.as_str())
        ),
        "Pods" => "failed to get pods metric value: ".to_string(),
        "Object" => "failed to get object metric value: ".to_string(),
        _ => String::new(),
    };
    let failed = |reason: &str, message: String| Proposal::Failed {
        reason: reason.into(),
        wrapped: format!("{wrap}{message}"),
        message,
    };
    match metric.type_.as_str() {
        kind @ ("Resource" | "ContainerResource") => {
            let (resource, container, target) = match (&metric.resource, &metric.container_resource)
            {
                (Some(r), _) if kind == "Resource" => (r.name.clone(), None, r.target.clone()),
                (_, Some(c)) => (c.name.clone(), Some(c.container.clone()), c.target.clone()),
                _ => return failed("FailedGetResourceMetric", "the metric has no source".into()),
            };
            let failure = if kind == "Resource" {
                "FailedGetResourceMetric"
            } else {
                "FailedGetContainerResourceMetric"
            };
            let samples = match snapshot.resource_samples(namespace, &resource, container.as_deref()) {
                Ok(samples) => samples,
                Err(e) => {
                    return failed(
                        failure,
                        format!("failed to get {resource} utilization: unable to get metrics for resource {resource}: {e}"),
                    )
                }
            };
            let cpu = resource == "cpu";
            let (replicas, current_value, name) = if let Some(percent) = target.average_utilization
            {
                match replicas::resource_utilization(
                    current,
                    percent,
                    &resource,
                    container.as_deref(),
                    pods,
                    &samples,
                    now,
                ) {
                    Ok(computed) => (
                        computed.replicas,
                        k8s_openapi::api::autoscaling::v2::MetricValueStatus {
                            average_utilization: computed.utilization,
                            average_value: Some(milli(computed.average)),
                            value: None,
                        },
                        format!("{resource} resource utilization (percentage of request)"),
                    ),
                    Err(e) => {
                        return failed(
                            failure,
                            format!("failed to get {resource} utilization: {e}"),
                        )
                    }
                }
            } else {
                let Some(target) = target
                    .average_value
                    .as_ref()
                    .and_then(|q| skiff_api::quantity::cpu_millis(&q.0).ok())
                else {
                    return failed(failure, format!("invalid target for {resource}: neither averageUtilization nor averageValue"));
                };
                match replicas::average_value(current, target, cpu, pods, &samples, now) {
                    Ok((replicas, average)) => (
                        replicas,
                        MetricValueStatus {
                            average_value: Some(milli(average)),
                            ..Default::default()
                        },
                        format!("{resource} resource"),
                    ),
                    Err(e) => {
                        return failed(failure, format!("failed to get {resource} usage: {e}"))
                    }
                }
            };
            let status = if kind == "Resource" {
                MetricStatus {
                    type_: "Resource".into(),
                    resource: Some(ResourceMetricStatus {
                        name: resource,
                        current: current_value,
                    }),
                    ..Default::default()
                }
            } else {
                MetricStatus {
                    type_: "ContainerResource".into(),
                    container_resource: Some(ContainerResourceMetricStatus {
                        name: resource,
                        container: container.unwrap_or_default(),
                        current: current_value,
                    }),
                    ..Default::default()
                }
            };
            Proposal::Computed {
                replicas,
                name,
                status: Box::new(status),
            }
        }
        "Pods" => {
            let Some(source) = &metric.pods else {
                return failed("FailedGetPodsMetric", "the metric has no source".into());
            };
            let name = &source.metric.name;
            let samples = match snapshot.pods_metric(namespace, name) {
                None => return Proposal::NotYet,
                Some(Err(e)) => {
                    return failed(
                        "FailedGetPodsMetric",
                        format!("unable to get metric {name}: unable to fetch metrics from custom metrics API: {e}"),
                    );
                }
                Some(Ok(samples)) => samples,
            };
            let Some(target) = source
                .target
                .average_value
                .as_ref()
                .and_then(|q| skiff_api::quantity::cpu_millis(&q.0).ok())
            else {
                return failed(
                    "FailedGetPodsMetric",
                    format!("invalid target for pods metric {name}"),
                );
            };
            match replicas::average_value(current, target, false, pods, &samples, now) {
                Ok((replicas, average)) => Proposal::Computed {
                    replicas,
                    name: format!("pods metric {name}"),
                    status: Box::new(MetricStatus {
                        type_: "Pods".into(),
                        pods: Some(PodsMetricStatus {
                            metric: MetricIdentifier {
                                name: name.clone(),
                                selector: source.metric.selector.clone(),
                            },
                            current: MetricValueStatus {
                                average_value: Some(milli(average)),
                                ..Default::default()
                            },
                        }),
                        ..Default::default()
                    }),
                },
                Err(e) => failed(
                    "FailedGetPodsMetric",
                    format!("unable to get metric {name}: {e}"),
                ),
            }
        }
        "Object" => {
            let Some(source) = &metric.object else {
                return failed("FailedGetObjectMetric", "the metric has no source".into());
            };
            let name = &source.metric.name;
            let described = &source.described_object;
            let usage = match snapshot.object_metric(namespace, described, name) {
                None => return Proposal::NotYet,
                Some(Err(e)) => {
                    return failed(
                        "FailedGetObjectMetric",
                        format!("unable to get metric {name}: {} on {} {}/unable to fetch metrics from custom metrics API: {e}", described.kind, namespace, described.name),
                    )
                }
                Some(Ok(usage)) => usage,
            };
            let quantity = |q: &Option<Quantity>| {
                q.as_ref()
                    .and_then(|q| skiff_api::quantity::cpu_millis(&q.0).ok())
            };
            let (replicas, current_value) =
                if let Some(target) = quantity(&source.target.average_value) {
                    (
                        replicas::object_average(current, usage, target),
                        MetricValueStatus {
                            average_value: Some(milli(usage / i64::from(current.max(1)))),
                            ..Default::default()
                        },
                    )
                } else if let Some(target) = quantity(&source.target.value) {
                    let ready = pods
                        .iter()
                        .filter(|p| crate::pods::phase(p) == "Running" && crate::pods::is_ready(p))
                        .count();
                    (
                        replicas::object_value(current, usage, target, ready),
                        MetricValueStatus {
                            value: Some(milli(usage)),
                            ..Default::default()
                        },
                    )
                } else {
                    return failed(
                        "FailedGetObjectMetric",
                        format!("invalid target for object metric {name}"),
                    );
                };
            Proposal::Computed {
                replicas,
                name: format!("{} metric {name}", described.kind),
                status: Box::new(MetricStatus {
                    type_: "Object".into(),
                    object: Some(ObjectMetricStatus {
                        metric: MetricIdentifier {
                            name: name.clone(),
                            selector: source.metric.selector.clone(),
                        },
                        described_object: described.clone(),
                        current: current_value,
                    }),
                    ..Default::default()
                }),
            }
        }
        other => failed(
            "FailedGetExternalMetric",
            format!("{other} metrics are not served by skiff"),
        ),
    }
}

/// Sets the replicas of a scale target. False for a kind this does not know.
fn set_replicas(target: &mut Object, replicas: i32) -> bool {
    match target {
        Object::Deployment(d) => {
            d.spec.get_or_insert_with(Default::default).replicas = Some(replicas)
        }
        Object::ReplicaSet(rs) => {
            rs.spec.get_or_insert_with(Default::default).replicas = Some(replicas)
        }
        Object::StatefulSet(sts) => {
            sts.spec.get_or_insert_with(Default::default).replicas = Some(replicas)
        }
        _ => return false,
    }
    true
}

/// The kinds with a `/scale` subresource skiff serves, and their group.
const SCALABLE: &[(&str, &str)] = &[
    ("Deployment", "apps"),
    ("ReplicaSet", "apps"),
    ("StatefulSet", "apps"),
];

pub struct HorizontalPodAutoscalerController {
    autoscalers: Store<HorizontalPodAutoscaler>,
    deployments: Store<Deployment>,
    replica_sets: Store<ReplicaSet>,
    stateful_sets: Store<StatefulSet>,
    pods: Store<Pod>,
    snapshot: feed::Shared,
    histories: HashMap<String, History>,
    _feed: feed::Handle,
}

impl HorizontalPodAutoscalerController {
    /// The target of `hpa`, read from the stores as its `/scale` would show it.
    fn target(&self, hpa: &HorizontalPodAutoscaler) -> Target {
        let spec = hpa.spec.clone().unwrap_or_default();
        let reference = &spec.scale_target_ref;
        let group = reference
            .api_version
            .as_deref()
            .and_then(|v| v.split_once('/').map(|(g, _)| g))
            .unwrap_or("");
        if !SCALABLE.contains(&(reference.kind.as_str(), group)) {
            return Err(format!(
                "no matches for kind \"{}\" in group \"{group}\"",
                reference.kind
            ));
        }
        let namespace = hpa.metadata.namespace.clone().unwrap_or_default();
        let key = format!("{namespace}/{}", reference.name);
        let missing = |resource: &str| format!("{resource}.apps \"{}\" not found", reference.name);
        match reference.kind.as_str() {
            "Deployment" => {
                let d = self
                    .deployments
                    .get(&key)
                    .ok_or_else(|| missing("deployments"))?;
                let spec = d.spec.clone().unwrap_or_default();
                Ok((
                    Scale {
                        replicas: spec.replicas.unwrap_or(1),
                        selector: Some(spec.selector),
                    },
                    Object::Deployment(Box::new(d)),
                ))
            }
            "ReplicaSet" => {
                let rs = self
                    .replica_sets
                    .get(&key)
                    .ok_or_else(|| missing("replicasets"))?;
                let spec = rs.spec.clone().unwrap_or_default();
                Ok((
                    Scale {
                        replicas: spec.replicas.unwrap_or(1),
                        selector: Some(spec.selector),
                    },
                    Object::ReplicaSet(Box::new(rs)),
                ))
            }
            _ => {
                let sts = self
                    .stateful_sets
                    .get(&key)
                    .ok_or_else(|| missing("statefulsets"))?;
                let spec = sts.spec.clone().unwrap_or_default();
                Ok((
                    Scale {
                        replicas: spec.replicas.unwrap_or(1),
                        selector: Some(spec.selector),
                    },
                    Object::StatefulSet(Box::new(sts)),
                ))
            }
        }
    }
}

impl Controller for HorizontalPodAutoscalerController {
    const NAME: &'static str = "horizontal-pod-autoscaler";

    fn new(ctx: &Context, queue: &WorkQueue) -> Self {
        let autoscalers = ctx.informers.store::<HorizontalPodAutoscaler>();
        let q = queue.clone();
        autoscalers.on_change(move |hpa: &HorizontalPodAutoscaler| q.add(&key_of(&hpa.metadata)));
        let snapshot = feed::Shared::default();
        let feed = feed::spawn(
            ctx.client.clone(),
            autoscalers.clone(),
            snapshot.clone(),
            queue.clone(),
            SYNC_PERIOD,
        );
        HorizontalPodAutoscalerController {
            autoscalers,
            deployments: ctx.informers.store::<Deployment>(),
            replica_sets: ctx.informers.store::<ReplicaSet>(),
            stateful_sets: ctx.informers.store::<StatefulSet>(),
            pods: ctx.informers.store::<Pod>(),
            snapshot,
            histories: HashMap::new(),
            _feed: feed,
        }
    }

    fn reconcile(&mut self, key: &str, now: Timestamp) -> Vec<Action> {
        let Some(hpa) = self.autoscalers.get(key) else {
            self.histories.remove(key);
            return Vec::new();
        };
        let Some(snapshot) = self.snapshot.latest() else {
            // Nothing fetched yet: the feed wakes every HPA when it has.
            return Vec::new();
        };
        let target = self.target(&hpa);
        let namespace = hpa.metadata.namespace.as_deref().unwrap_or("");
        let pods = self.pods.in_namespace(namespace);
        let history = self.histories.entry(key.to_string()).or_default();
        reconcile(&hpa, target, &pods, &snapshot, history, now)
    }
}

/// Samples keyed by pod name, as the replica calculator takes them.
pub(crate) type Samples = BTreeMap<String, Sample>;

/// A sample's window when the source says none.
pub(crate) const DEFAULT_WINDOW: SignedDuration = SignedDuration::from_secs(15);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("time")
    }

    fn hpa(target: serde_json::Value, behavior: serde_json::Value) -> HorizontalPodAutoscaler {
        serde_json::from_value(json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "ns", "uid": "h1"},
            "spec": {"scaleTargetRef": target, "minReplicas": 1, "maxReplicas": 10,
                "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 50}}}],
                "behavior": behavior},
        }))
        .expect("hpa")
    }

    fn deployment(replicas: i32) -> Object {
        Object::Deployment(Box::new(
            serde_json::from_value(json!({
                "metadata": {"name": "web", "namespace": "ns", "resourceVersion": "7"},
                "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}}}},
            }))
            .expect("deployment"),
        ))
    }

    fn pod(name: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "image": "x",
                "resources": {"requests": {"cpu": "100m"}}}]},
            "status": {"phase": "Running", "startTime": "2026-12-04T10:00:00Z",
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-12-04T10:00:00Z"}]},
        }))
        .expect("pod")
    }

    fn snapshot(cpu: &[(&str, i64)]) -> Snapshot {
        let pods = cpu
            .iter()
            .map(|(name, millicores)| {
                (
                    ("ns".to_string(), name.to_string()),
                    feed::PodUsage {
                        containers: vec![feed::ContainerUsage {
                            name: "app".into(),
                            cpu: *millicores,
                            memory: 0,
                        }],
                        timestamp: at("2026-12-04T11:59:50Z"),
                        window: DEFAULT_WINDOW,
                    },
                )
            })
            .collect();
        Snapshot {
            pods: Ok(pods),
            custom: BTreeMap::new(),
        }
    }

    fn scale(replicas: i32) -> Target {
        Ok((
            Scale {
                replicas,
                selector: Some(
                    serde_json::from_value(json!({"matchLabels": {"app": "web"}}))
                        .expect("selector"),
                ),
            },
            deployment(replicas),
        ))
    }

    fn condition(plan: &[Action], type_: &str) -> (String, String) {
        plan.iter()
            .find_map(|a| match a {
                Action::UpdateStatus(Object::HorizontalPodAutoscaler(h)) => h
                    .status
                    .as_ref()?
                    .conditions
                    .as_ref()?
                    .iter()
                    .find(|c| c.type_ == type_)
                    .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default())),
                _ => None,
            })
            .unwrap_or_default()
    }

    #[test]
    fn busy_pods_scale_the_deployment_up_with_an_event_that_says_why() {
        let h = hpa(
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}),
            json!(null),
        );
        let mut history = History::default();
        // 2 pods at 100m of 100m against 50 %: 4.
        let plan = reconcile(
            &h,
            scale(2),
            &[pod("a"), pod("b")],
            &snapshot(&[("a", 100), ("b", 100)]),
            &mut history,
            at("2026-12-04T12:00:00Z"),
        );
        let scaled = plan.iter().find_map(|a| match a {
            Action::Update(Object::Deployment(d)) => d.spec.as_ref()?.replicas,
            _ => None,
        });
        assert_eq!(scaled, Some(4));
        assert!(plan.iter().any(|a| matches!(a, Action::Event(e) if e.reason == "SuccessfulRescale"
            && e.message == "New size: 4; reason: cpu resource utilization (percentage of request) above target")));
        assert_eq!(
            condition(&plan, "ScalingActive"),
            ("True".into(), "ValidMetricFound".into())
        );
        assert_eq!(
            condition(&plan, "AbleToScale"),
            ("True".into(), "SucceededRescale".into())
        );
        let status = plan
            .iter()
            .find_map(|a| match a {
                Action::UpdateStatus(Object::HorizontalPodAutoscaler(h)) => h.status.clone(),
                _ => None,
            })
            .expect("status");
        assert_eq!(status.desired_replicas, 4);
        let current = &status.current_metrics.expect("metrics")[0];
        assert_eq!(
            current
                .resource
                .as_ref()
                .expect("resource")
                .current
                .average_utilization,
            Some(100)
        );
    }

    #[test]
    fn a_target_without_scale_is_not_able_to_scale() {
        let h = hpa(
            json!({"apiVersion": "batch/v1", "kind": "CronJob", "name": "web"}),
            json!(null),
        );
        let plan = reconcile(
            &h,
            Err("no matches for kind \"CronJob\" in group \"batch\"".into()),
            &[],
            &snapshot(&[]),
            &mut History::default(),
            at("2026-12-04T12:00:00Z"),
        );
        assert_eq!(
            condition(&plan, "AbleToScale"),
            ("False".into(), "FailedGetScale".into())
        );
        assert!(plan
            .iter()
            .any(|a| matches!(a, Action::Event(e) if e.reason == "FailedGetScale")));
        assert!(!plan.iter().any(|a| matches!(a, Action::Update(_))));
    }

    #[test]
    fn missing_metrics_leave_the_count_and_say_why() {
        let h = hpa(
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}),
            json!(null),
        );
        let plan = reconcile(
            &h,
            scale(2),
            &[pod("a"), pod("b")],
            &snapshot(&[]),
            &mut History::default(),
            at("2026-12-04T12:00:00Z"),
        );
        assert_eq!(
            condition(&plan, "ScalingActive"),
            ("False".into(), "FailedGetResourceMetric".into())
        );
        assert!(!plan.iter().any(|a| matches!(a, Action::Update(_))));
    }

    #[test]
    fn quantities_are_canonical() {
        assert_eq!(milli(250).0, "250m");
        assert_eq!(milli(1000).0, "1");
        assert_eq!(milli(1500).0, "1500m");
        assert_eq!(milli(2_000_000_000).0, "2M");
        assert_eq!(milli(41_963_520_000).0, "41963520");
        assert_eq!(milli(0).0, "0");
    }
}
