//! What an agent measures and the API server serves from it.
//!
//! Each agent samples its containers' cgroups and the node's totals at a fixed interval and
//! offers the latest sample at `/stats/summary`, in the shape of kubelet's Summary API (the
//! subset metrics-server reads, so the JSON is kubelet's: `usageNanoCores`,
//! `workingSetBytes`, ...). The API servers fetch it from every node and serve it as
//! `metrics.k8s.io` (`kubectl top`) and `custom.metrics.k8s.io` (the HPA), from memory only.
//!
//! One extension, [`Summary::requests`]: the connections the node's service proxy forwarded
//! per second, by Service and by endpoint address, over the last sampling window. skiff's proxy
//! sees every request to a Service, so request-based autoscaling needs no adapter.
use serde::{Deserialize, Serialize};

/// kubelet's `/stats/summary`, the parts skiff fills in.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub node: NodeStats,
    #[serde(default)]
    pub pods: Vec<PodStats>,
    /// skiff's own: what the node's service proxy forwarded over the last window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<RequestStats>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStats {
    pub node_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
}

/// CPU use: the rate over the last window (`usageNanoCores`, absent until a second sample) and
/// the cumulative counter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuStats {
    /// When it was sampled (RFC 3339).
    pub time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_nano_cores: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_core_nano_seconds: Option<u64>,
}

/// Memory use: the working set (usage less inactive file pages, what kubelet evicts on and
/// `kubectl top` shows), the usage, RSS and page cache.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryStats {
    pub time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_set_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_cache_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_bytes: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodReference {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStats {
    pub pod_ref: PodReference,
    #[serde(default)]
    pub containers: Vec<ContainerStats>,
    /// The sum of the containers'.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStats {
    pub name: String,
    /// When the container started (RFC 3339), if the runtime says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
}

/// New connections through the node's service proxy per second, over `windowSeconds`. The proxy
/// works on TCP connections, so an HTTP client that keeps a connection open for many requests
/// counts once.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestStats {
    /// When the window ended (RFC 3339).
    pub time: String,
    pub window_seconds: f64,
    #[serde(default)]
    pub services: Vec<ServiceRequests>,
    #[serde(default)]
    pub endpoints: Vec<EndpointRequests>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRequests {
    pub namespace: String,
    pub name: String,
    pub per_second: f64,
}

/// Connections forwarded to one endpoint (a pod's IP), whichever Service they came through.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointRequests {
    pub ip: String,
    pub per_second: f64,
}

/// The name of the request metric in `custom.metrics.k8s.io`.
pub const REQUESTS_PER_SECOND: &str = "requests_per_second";
