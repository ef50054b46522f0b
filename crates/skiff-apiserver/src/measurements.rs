//! `metrics.k8s.io` and `custom.metrics.k8s.io`: what the agents measured, served from memory.
//!
//! Kubernetes gets these from add-ons (metrics-server scrapes every kubelet; a Prometheus
//! adapter serves custom metrics). skiff's API server does both itself: when a client asks, it
//! fetches `/stats/summary` from every Ready node's agent (kubelet's Summary API shape, see
//! [`skiff_api::metrics`]) over the same authenticated HTTPS as logs and exec, keeps the
//! answers for [`FRESH`] so that a burst of requests costs one round, and answers from them.
//! Nothing is written to the Raft log: measurements are gone when the server restarts, as
//! metrics-server's are, and each server fetches its own.
//!
//! | path | answer |
//! |---|---|
//! | `/apis/metrics.k8s.io/v1beta1/nodes[/NAME]` | `NodeMetrics`: the node's CPU and working-set memory |
//! | `/apis/metrics.k8s.io/v1beta1/[namespaces/NS/]pods[/NAME]` | `PodMetrics`: each container's |
//! | `/apis/custom.metrics.k8s.io/v1beta2/namespaces/NS/pods/{*,NAME}/requests_per_second` | `MetricValueList`: new connections per second to each pod, through every node's service proxy |
//! | `/apis/custom.metrics.k8s.io/v1beta2/namespaces/NS/services/NAME/requests_per_second` | the same for the Service as a whole |
//!
//! Pods are matched to the measurements by uid (a deleted pod's last sample is never shown) and
//! to request rates by their pod IP. Label selectors select on the pods' and nodes' labels.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Map, Value};
use skiff_api::metrics::{Summary, REQUESTS_PER_SECOND};
use skiff_api::selector::{labels_of, LabelSelector};
use skiff_api::status::ApiError;

use crate::app::App;
use crate::query::Params;
use crate::respond;
use crate::target::Target;

/// How long one round of fetches answers requests.
pub const FRESH: Duration = Duration::from_secs(5);
/// How long an agent may take to answer before its node is left out of a round.
const AGENT_TIMEOUT: Duration = Duration::from_secs(3);
/// The window reported when an agent does not say (metrics-server's resolution).
const DEFAULT_WINDOW_SECONDS: f64 = 15.0;

type Result<T> = std::result::Result<T, ApiError>;

/// Every node's summary of one round, by node name.
type Round = Arc<HashMap<String, Summary>>;

/// The latest round of summaries, and when it was fetched.
#[derive(Default)]
pub struct Measurements {
    latest: Mutex<Option<(Instant, Round)>>,
    /// Held while a round runs, so concurrent requests wait for it instead of starting theirs.
    round: tokio::sync::Mutex<()>,
}

impl Measurements {
    fn fresh(&self) -> Option<Round> {
        let latest = self.latest.lock().ok()?;
        latest
            .as_ref()
            .filter(|(at, _)| at.elapsed() < FRESH)
            .map(|(_, summaries)| summaries.clone())
    }
}

/// Every Ready node's summary, from the last round if it is fresh, else from a new one.
pub async fn summaries(app: &App) -> Round {
    if let Some(summaries) = app.measurements.fresh() {
        return summaries;
    }
    let _round = app.measurements.round.lock().await;
    if let Some(summaries) = app.measurements.fresh() {
        return summaries;
    }
    let nodes = app.store.list(&skiff_store::key_prefix("nodes", None)).0;
    let fetches = nodes.iter().filter(|n| is_ready(n)).map(|node| async move {
        let name = node
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        match tokio::time::timeout(AGENT_TIMEOUT, fetch(app, node)).await {
            Ok(Ok(summary)) => Some((name, summary)),
            Ok(Err(e)) => {
                tracing::debug!(node = %name, error = %e, "no measurements from the node");
                None
            }
            Err(_) => {
                tracing::debug!(node = %name, "the node's agent did not answer in time");
                None
            }
        }
    });
    let summaries: HashMap<String, Summary> = futures::future::join_all(fetches)
        .await
        .into_iter()
        .flatten()
        .collect();
    let summaries = Arc::new(summaries);
    if let Ok(mut latest) = app.measurements.latest.lock() {
        *latest = Some((Instant::now(), summaries.clone()));
    }
    summaries
}

fn is_ready(node: &Value) -> bool {
    node.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|conditions| {
            conditions.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some("Ready")
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

async fn fetch(app: &App, node: &Value) -> Result<Summary> {
    let (_, bytes) = agent_get(app, node, "/stats/summary").await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::ServiceUnavailable(format!("the node's summary: {e}")))
}

/// The largest answer taken from an agent: a summary or the Prometheus text of 110 pods is well
/// under 1 MiB.
const MAX_AGENT_ANSWER: usize = 8 << 20;

/// GETs `path` from the node's agent with the server's node credentials; its content type and
/// body (at most [`MAX_AGENT_ANSWER`], read as it arrives).
async fn agent_get(app: &App, node: &Value, path: &str) -> Result<(String, Vec<u8>)> {
    let url = format!("{}{path}", crate::pod_streams::node_agent_url(node)?);
    let mut response = crate::pod_streams::agent_client(app)?
        .get(&url)
        .bearer_auth(&app.node_secret)
        .send()
        .await
        .map_err(|e| ApiError::ServiceUnavailable(format!("reaching the node's agent: {e}")))?;
    if !response.status().is_success() {
        return Err(ApiError::ServiceUnavailable(format!(
            "the node's agent answered {}",
            response.status()
        )));
    }
    let content_type = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_string();
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| ApiError::ServiceUnavailable(format!("reading the agent's answer: {e}")))?
    {
        if body.len() + chunk.len() > MAX_AGENT_ANSWER {
            return Err(ApiError::ServiceUnavailable(
                "the agent's answer is too large".into(),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((content_type, body))
}

/// The agent paths `nodes/NAME/proxy/...` reaches. Kubernetes proxies any path to kubelet;
/// skiff's agent endpoint also serves logs and exec, which have their own, narrower
/// authorization (`pods/log`, `pods/exec`), so the proxy reaches only the measurements.
const PROXIED: &[&str] = &[
    "/metrics",
    "/metrics/cadvisor",
    "/metrics/resource",
    "/stats/summary",
];

/// `GET /api/v1/nodes/NAME/proxy/PATH` for the paths in [`PROXIED`]: the agent's answer as it
/// gave it (Prometheus text or JSON).
pub async fn node_proxy(app: &App, target: &Target) -> Result<Response> {
    let path = target.proxy_path.as_deref().unwrap_or("/");
    if !PROXIED.contains(&path) {
        return Err(ApiError::NoSuchPath(format!(
            "{path} through the node proxy (skiff's node proxy serves {})",
            PROXIED.join(", ")
        )));
    }
    let name = target.name.as_deref().unwrap_or("");
    let node = app
        .store
        .get(&target.key())
        .ok_or_else(|| not_found(target, name))?;
    let (content_type, body) = agent_get(app, &node, path).await?;
    Response::builder()
        .status(StatusCode::OK)
        .header(axum::http::header::CONTENT_TYPE, content_type)
        .body(axum::body::Body::from(body))
        .map_err(|e| ApiError::Internal(format!("the proxied answer: {e}")))
}

/// Serves a GET of a measured resource (`target.info` is one of
/// [`skiff_api::resources::MEASURED`]).
pub async fn serve(app: &App, target: &Target, params: &Params, verb: &str) -> Result<Response> {
    if !matches!(verb, "GET" | "LIST") {
        return Err(ApiError::MethodNotAllowed(format!(
            "{} in {} are measured, not stored: only get and list",
            target.info.resource,
            target.info.api_version()
        )));
    }
    let selector = match params.label_selector.as_deref() {
        Some(s) if !s.trim().is_empty() => Some(LabelSelector::parse(s)?),
        _ => None,
    };
    let summaries = summaries(app).await;
    let now = jiff::Timestamp::now();
    let body = match (target.info.group, target.info.resource) {
        ("metrics.k8s.io", "nodes") => {
            node_metrics(app, target, &summaries, selector.as_ref(), now)?
        }
        ("metrics.k8s.io", _) => pod_metrics(app, target, &summaries, selector.as_ref(), now)?,
        (_, resource) => custom_metrics(app, target, resource, &summaries, selector.as_ref())?,
    };
    Ok(respond::json(StatusCode::OK, &body))
}

fn selected(selector: Option<&LabelSelector>, object: &Value) -> bool {
    selector.is_none_or(|s| s.matches(&labels_of(object)))
}

fn list_of(target: &Target, items: Vec<Value>) -> Value {
    json!({
        "kind": target.info.list_kind,
        "apiVersion": target.info.api_version(),
        "metadata": {},
        "items": items,
    })
}

fn not_found(target: &Target, name: &str) -> ApiError {
    ApiError::NotFound {
        resource: format!("{}.{}", target.info.resource, target.info.group),
        name: name.to_string(),
    }
}

/// A CPU rate as metrics-server writes it: nanocores (`123456789n`).
pub fn cpu_quantity(nano_cores: u64) -> String {
    format!("{nano_cores}n")
}

/// Bytes as metrics-server writes them: whole KiB when they divide (`2048Ki`), bytes otherwise.
pub fn memory_quantity(bytes: u64) -> String {
    if bytes.is_multiple_of(1024) && bytes > 0 {
        format!("{}Ki", bytes / 1024)
    } else {
        bytes.to_string()
    }
}

/// A rate in thousandths, the way Kubernetes prints a milli-quantity (`2500m`, `3`).
pub fn rate_quantity(per_second: f64) -> String {
    let milli = (per_second * 1000.0).round().max(0.0) as u64;
    if milli.is_multiple_of(1000) {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    }
}

fn usage(
    cpu: Option<&skiff_api::metrics::CpuStats>,
    memory: Option<&skiff_api::metrics::MemoryStats>,
) -> Option<Value> {
    let cpu = cpu.and_then(|c| c.usage_nano_cores)?;
    let memory = memory.and_then(|m| m.working_set_bytes)?;
    Some(json!({"cpu": cpu_quantity(cpu), "memory": memory_quantity(memory)}))
}

fn window(summary: &Summary) -> String {
    let seconds = summary
        .requests
        .as_ref()
        .map_or(DEFAULT_WINDOW_SECONDS, |r| r.window_seconds);
    format!("{}s", seconds.round().max(1.0) as u64)
}

fn metadata(object: &Value, now: jiff::Timestamp) -> Value {
    let mut meta = Map::new();
    for field in ["name", "namespace", "labels"] {
        if let Some(v) = object.pointer(&format!("/metadata/{field}")) {
            meta.insert(field.into(), v.clone());
        }
    }
    meta.insert(
        "creationTimestamp".into(),
        Value::from(now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
    );
    Value::Object(meta)
}

fn node_metrics(
    app: &App,
    target: &Target,
    summaries: &HashMap<String, Summary>,
    selector: Option<&LabelSelector>,
    now: jiff::Timestamp,
) -> Result<Value> {
    let mut items = Vec::new();
    for node in app.store.list(&skiff_store::key_prefix("nodes", None)).0 {
        let name = node
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        if target.name.as_deref().is_some_and(|n| n != name) || !selected(selector, &node) {
            continue;
        }
        let Some(summary) = summaries.get(name) else {
            continue;
        };
        let stats = &summary.node;
        let Some(usage) = usage(stats.cpu.as_ref(), stats.memory.as_ref()) else {
            continue;
        };
        let timestamp = stats
            .cpu
            .as_ref()
            .map(|c| c.time.clone())
            .unwrap_or_default();
        items.push(json!({
            "kind": "NodeMetrics",
            "apiVersion": "metrics.k8s.io/v1beta1",
            "metadata": metadata(&node, now),
            "timestamp": timestamp,
            "window": window(summary),
            "usage": usage,
        }));
    }
    match &target.name {
        Some(name) => items.pop().ok_or_else(|| not_found(target, name)),
        None => Ok(list_of(target, items)),
    }
}

fn pod_metrics(
    app: &App,
    target: &Target,
    summaries: &HashMap<String, Summary>,
    selector: Option<&LabelSelector>,
    now: jiff::Timestamp,
) -> Result<Value> {
    // Each measured pod by uid, with the window of its node's sample.
    let mut measured = HashMap::new();
    for summary in summaries.values() {
        for pod in &summary.pods {
            measured.insert(pod.pod_ref.uid.as_str(), (pod, window(summary)));
        }
    }
    let prefix = skiff_store::key_prefix("pods", target.namespace.as_deref());
    let mut items = Vec::new();
    for pod in app.store.list(&prefix).0 {
        let name = pod
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        if target.name.as_deref().is_some_and(|n| n != name) || !selected(selector, &pod) {
            continue;
        }
        let uid = pod
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or("");
        let Some((stats, window)) = measured.get(uid) else {
            continue;
        };
        let containers: Vec<Value> = stats
            .containers
            .iter()
            .filter_map(|c| {
                usage(c.cpu.as_ref(), c.memory.as_ref())
                    .map(|usage| json!({"name": c.name, "usage": usage}))
            })
            .collect();
        // A pod is shown once every container has a rate (metrics-server's rule too).
        if containers.is_empty() || containers.len() < stats.containers.len() {
            continue;
        }
        let timestamp = stats
            .containers
            .iter()
            .filter_map(|c| c.cpu.as_ref().map(|cpu| cpu.time.clone()))
            .max()
            .unwrap_or_default();
        items.push(json!({
            "kind": "PodMetrics",
            "apiVersion": "metrics.k8s.io/v1beta1",
            "metadata": metadata(&pod, now),
            "timestamp": timestamp,
            "window": window,
            "containers": containers,
        }));
    }
    match &target.name {
        Some(name) => items.pop().ok_or_else(|| not_found(target, name)),
        None => Ok(list_of(target, items)),
    }
}

/// `requests_per_second` of pods (each pod's IP, summed over every node's proxy) or of a
/// Service (summed over every node's proxy).
fn custom_metrics(
    app: &App,
    target: &Target,
    resource: &str,
    summaries: &HashMap<String, Summary>,
    selector: Option<&LabelSelector>,
) -> Result<Value> {
    let metric = target.subresource.as_deref().unwrap_or("");
    let (Some(namespace), Some(name)) = (target.namespace.as_deref(), target.name.as_deref())
    else {
        return Err(ApiError::NotFound {
            resource: format!("{resource}.{}", target.info.group),
            name: "the metric must be asked for as namespaces/NS/RESOURCE/NAME/METRIC".into(),
        });
    };
    if metric != REQUESTS_PER_SECOND {
        return Err(ApiError::NotFound {
            resource: format!("{resource}.{}", target.info.group),
            name: format!("the server could not find the metric {metric} for {resource}"),
        });
    }
    let window = summaries
        .values()
        .filter_map(|s| s.requests.as_ref())
        .map(|r| r.window_seconds)
        .fold(0.0, f64::max);
    let window = if window > 0.0 {
        window
    } else {
        DEFAULT_WINDOW_SECONDS
    };
    let timestamp = summaries
        .values()
        .filter_map(|s| s.requests.as_ref().map(|r| r.time.clone()))
        .max()
        .unwrap_or_default();
    let item = |kind: &str, api_version: &str, object_name: &str, per_second: f64| {
        json!({
            "describedObject": {"kind": kind, "namespace": namespace, "name": object_name, "apiVersion": api_version},
            "metric": {"name": REQUESTS_PER_SECOND},
            "timestamp": timestamp,
            "windowSeconds": window.round() as u64,
            "value": rate_quantity(per_second),
        })
    };
    let items = if resource == "services" {
        let key = skiff_store::object_key("services", namespace, name);
        if app.store.get(&key).is_none() {
            return Err(ApiError::NotFound {
                resource: "services".into(),
                name: name.to_string(),
            });
        }
        let per_second: f64 = summaries
            .values()
            .filter_map(|s| s.requests.as_ref())
            .flat_map(|r| r.services.iter())
            .filter(|s| s.namespace == namespace && s.name == name)
            .map(|s| s.per_second)
            .sum();
        vec![item("Service", "v1", name, per_second)]
    } else {
        let mut by_ip: HashMap<&str, f64> = HashMap::new();
        for endpoint in summaries
            .values()
            .filter_map(|s| s.requests.as_ref())
            .flat_map(|r| r.endpoints.iter())
        {
            *by_ip.entry(endpoint.ip.as_str()).or_default() += endpoint.per_second;
        }
        let prefix = skiff_store::key_prefix("pods", Some(namespace));
        let mut items = Vec::new();
        for pod in app.store.list(&prefix).0 {
            let pod_name = pod
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            if (name != "*" && pod_name != name) || !selected(selector, &pod) {
                continue;
            }
            // Only running pods with an address can be sent requests.
            let Some(ip) = pod.pointer("/status/podIP").and_then(Value::as_str) else {
                continue;
            };
            let per_second = by_ip.get(ip).copied().unwrap_or(0.0);
            items.push(item("Pod", "v1", pod_name, per_second));
        }
        if items.is_empty() && name != "*" {
            return Err(ApiError::NotFound {
                resource: "pods".into(),
                name: name.to_string(),
            });
        }
        items
    };
    Ok(list_of(target, items))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_are_written_as_metrics_server_and_kubernetes_write_them() {
        assert_eq!(cpu_quantity(123_456_789), "123456789n");
        assert_eq!(cpu_quantity(0), "0n");
        assert_eq!(memory_quantity(2 << 20), "2048Ki");
        assert_eq!(memory_quantity(1000), "1000");
        assert_eq!(memory_quantity(0), "0");
        assert_eq!(rate_quantity(2.5), "2500m");
        assert_eq!(rate_quantity(3.0), "3");
        assert_eq!(rate_quantity(0.0), "0");
        assert_eq!(rate_quantity(-1.0), "0");
    }
}
