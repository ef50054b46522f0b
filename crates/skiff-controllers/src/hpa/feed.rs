//! The HPA's metrics, fetched through the API every sync period.
//!
//! The HPA controller's passes are pure functions of the stores, and metrics are not in the
//! stores: they come from `metrics.k8s.io` and `custom.metrics.k8s.io`, which the API server
//! answers from the agents' latest samples. So a task fetches, once per period, everything the
//! HPAs of the moment need — every pod's resource usage in one list, and each Pods or Object
//! metric they name — keeps it as one [`Snapshot`], and then wakes every HPA. A fetch that
//! fails is kept as its error, which the HPA reports (`FailedGetResourceMetric`, ...).
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::autoscaling::v2::{CrossVersionObjectReference, HorizontalPodAutoscaler};
use serde_json::Value;
use skiff_client::informer::{key_of, Store};
use skiff_client::Client;

use super::{Samples, DEFAULT_WINDOW};
use crate::hpa::replicas::Sample;
use crate::workqueue::WorkQueue;

/// One container's usage, in thousandths (millicores; milli-bytes).
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerUsage {
    pub name: String,
    pub cpu: i64,
    pub memory: i64,
}

/// One pod's usage.
#[derive(Debug, Clone, PartialEq)]
pub struct PodUsage {
    pub containers: Vec<ContainerUsage>,
    pub timestamp: Timestamp,
    pub window: SignedDuration,
}

/// Everything fetched in one period.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Every pod's usage by (namespace, name), or why the list failed.
    pub pods: Result<BTreeMap<(String, String), PodUsage>, String>,
    /// Each custom metric by its path below `/apis/custom.metrics.k8s.io/v1beta2`: the values
    /// by object name (thousandths), or why the fetch failed.
    pub custom: BTreeMap<String, Result<BTreeMap<String, Sample>, String>>,
}

impl Snapshot {
    /// Each pod's usage of `resource` (`cpu` or `memory`), summed over its containers (or only
    /// `container`), by pod name, in `namespace`.
    pub fn resource_samples(
        &self,
        namespace: &str,
        resource: &str,
        container: Option<&str>,
    ) -> Result<Samples, String> {
        let pods = self.pods.as_ref().map_err(Clone::clone)?;
        if resource != "cpu" && resource != "memory" {
            return Err(format!("no metrics for resource {resource}"));
        }
        let mut out = Samples::new();
        for ((ns, pod), usage) in pods {
            if ns != namespace {
                continue;
            }
            let value = usage
                .containers
                .iter()
                .filter(|c| container.is_none_or(|wanted| wanted == c.name))
                .map(|c| if resource == "cpu" { c.cpu } else { c.memory })
                .sum();
            out.insert(
                pod.clone(),
                Sample {
                    value,
                    timestamp: usage.timestamp,
                    window: usage.window,
                },
            );
        }
        Ok(out)
    }

    /// The Pods metric `metric` of `namespace`'s pods; `None` if not fetched yet.
    pub fn pods_metric(&self, namespace: &str, metric: &str) -> Option<Result<Samples, String>> {
        self.custom.get(&pods_path(namespace, metric)).cloned()
    }

    /// The Object metric `metric` of `described`; `None` if not fetched yet.
    pub fn object_metric(
        &self,
        namespace: &str,
        described: &CrossVersionObjectReference,
        metric: &str,
    ) -> Option<Result<i64, String>> {
        let path = object_path(namespace, described, metric)?;
        Some(match self.custom.get(&path)? {
            Ok(values) => values
                .get(&described.name)
                .map(|s| s.value)
                .ok_or_else(|| format!("no value for {}", described.name)),
            Err(e) => Err(e.clone()),
        })
    }
}

fn pods_path(namespace: &str, metric: &str) -> String {
    format!("/namespaces/{namespace}/pods/*/{metric}")
}

/// The path of an Object metric: the described object's resource from its kind.
fn object_path(
    namespace: &str,
    described: &CrossVersionObjectReference,
    metric: &str,
) -> Option<String> {
    let api_version = described.api_version.as_deref().unwrap_or("v1");
    let info = skiff_api::resources::by_kind(api_version, &described.kind)?;
    Some(format!(
        "/namespaces/{namespace}/{}/{}/{metric}",
        info.resource, described.name
    ))
}

/// The latest snapshot, shared between the fetching task and the controller.
#[derive(Clone, Default)]
pub struct Shared(Arc<Mutex<Option<Arc<Snapshot>>>>);

impl Shared {
    pub fn latest(&self) -> Option<Arc<Snapshot>> {
        self.0.lock().ok()?.clone()
    }

    fn set(&self, snapshot: Snapshot) {
        if let Ok(mut latest) = self.0.lock() {
            *latest = Some(Arc::new(snapshot));
        }
    }
}

/// The fetching task; stops when dropped (with its controller).
pub struct Handle(tokio::task::JoinHandle<()>);

impl Drop for Handle {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts fetching every `period` for the HPAs in `autoscalers`, waking each in `queue`.
pub fn spawn(
    client: Client,
    autoscalers: Store<HorizontalPodAutoscaler>,
    shared: Shared,
    queue: WorkQueue,
    period: Duration,
) -> Handle {
    Handle(tokio::spawn(async move {
        loop {
            let hpas = autoscalers.list();
            if !hpas.is_empty() {
                shared.set(fetch(&client, &hpas).await);
                for hpa in &hpas {
                    queue.add(&key_of(&hpa.metadata));
                }
            }
            tokio::time::sleep(period).await;
        }
    }))
}

/// The paths below `custom.metrics.k8s.io/v1beta2` the HPAs need.
fn custom_paths(hpas: &[HorizontalPodAutoscaler]) -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    for hpa in hpas {
        let namespace = hpa.metadata.namespace.as_deref().unwrap_or("");
        for metric in hpa.spec.iter().flat_map(|s| s.metrics.iter().flatten()) {
            if let Some(pods) = &metric.pods {
                paths.insert(pods_path(namespace, &pods.metric.name));
            }
            if let Some(object) = &metric.object {
                paths.extend(object_path(
                    namespace,
                    &object.described_object,
                    &object.metric.name,
                ));
            }
        }
    }
    paths
}

const CUSTOM_METRICS: &str = "/apis/custom.metrics.k8s.io/v1beta2";

async fn fetch(client: &Client, hpas: &[HorizontalPodAutoscaler]) -> Snapshot {
    let base = client.server();
    let wants_resources = hpas.iter().any(|h| {
        h.spec
            .iter()
            .flat_map(|s| s.metrics.iter().flatten())
            .any(|m| matches!(m.type_.as_str(), "Resource" | "ContainerResource"))
    });
    let pods = if wants_resources {
        get(client, &format!("{base}/apis/metrics.k8s.io/v1beta1/pods"))
            .await
            .map(|list| pod_usage(&list))
    } else {
        Ok(BTreeMap::new())
    };
    let mut custom = BTreeMap::new();
    for path in custom_paths(hpas) {
        let result = get(client, &format!("{base}{CUSTOM_METRICS}{path}"))
            .await
            .map(|list| metric_values(&list));
        custom.insert(path, result);
    }
    Snapshot { pods, custom }
}

async fn get(client: &Client, url: &str) -> Result<Value, String> {
    client
        .request::<Value>(skiff_client::Method::GET, url, &[], None)
        .await
        .map_err(|e| e.to_string())
}

/// Thousandths of a quantity (`250m` → 250; `128Mi` → 134217728000); 0 when unreadable.
fn thousandths(value: Option<&Value>) -> i64 {
    value
        .and_then(Value::as_str)
        .and_then(|q| skiff_api::quantity::cpu_millis(q).ok())
        .unwrap_or(0)
}

fn time_of(value: Option<&Value>) -> Timestamp {
    value
        .and_then(Value::as_str)
        .and_then(|t| t.parse().ok())
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// A `PodMetricsList` by (namespace, name).
pub fn pod_usage(list: &Value) -> BTreeMap<(String, String), PodUsage> {
    let mut out = BTreeMap::new();
    for item in list
        .get("items")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let text = |p: &str| {
            item.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let window = item
            .get("window")
            .and_then(Value::as_str)
            .and_then(|w| w.trim_end_matches('s').parse::<i64>().ok())
            .map_or(DEFAULT_WINDOW, SignedDuration::from_secs);
        let containers = item
            .get("containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|c| ContainerUsage {
                name: c
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                cpu: thousandths(c.pointer("/usage/cpu")),
                memory: thousandths(c.pointer("/usage/memory")),
            })
            .collect();
        out.insert(
            (text("/metadata/namespace"), text("/metadata/name")),
            PodUsage {
                containers,
                timestamp: time_of(item.get("timestamp")),
                window,
            },
        );
    }
    out
}

/// A `MetricValueList` by described object name.
pub fn metric_values(list: &Value) -> BTreeMap<String, Sample> {
    let mut out = BTreeMap::new();
    for item in list
        .get("items")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = item
            .pointer("/describedObject/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let window = item
            .get("windowSeconds")
            .and_then(Value::as_i64)
            .map_or(DEFAULT_WINDOW, SignedDuration::from_secs);
        out.insert(
            name,
            Sample {
                value: thousandths(item.get("value")),
                timestamp: time_of(item.get("timestamp")),
                window,
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lists_are_read_in_thousandths() {
        let pods = pod_usage(&json!({"items": [{
            "metadata": {"name": "web-1", "namespace": "ns"},
            "timestamp": "2026-12-04T12:00:00Z", "window": "15s",
            "containers": [{"name": "app", "usage": {"cpu": "250000000n", "memory": "2048Ki"}}],
        }]}));
        let usage = &pods[&("ns".to_string(), "web-1".to_string())];
        assert_eq!(usage.containers[0].cpu, 250);
        assert_eq!(usage.containers[0].memory, 2048 * 1024 * 1000);
        let values = metric_values(&json!({"items": [{
            "describedObject": {"kind": "Pod", "name": "web-1"}, "value": "2500m", "windowSeconds": 15,
        }]}));
        assert_eq!(values["web-1"].value, 2500);
    }
}
