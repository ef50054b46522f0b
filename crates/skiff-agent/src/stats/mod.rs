//! What this node and its containers use, measured here and served by the agent's endpoint
//! ([`crate::server`]): `/stats/summary` (kubelet's Summary API, which metrics-server and the
//! API servers read), `/metrics/cadvisor` and `/metrics/resource` (Prometheus text).
//!
//! ## Expected flow
//! Every `--metrics-interval` (15 s, metrics-server's default resolution) the sampler:
//! 1. lists the runtime's containers and keeps the running ones, only the newest attempt of
//!    each container name ([`newest_running`]);
//! 2. reads each one's cgroup ([`crate::runtime::Runtime::usage`], [`cgroupfs`]) and the
//!    node's totals from `/proc`;
//! 3. turns each cumulative CPU counter into a rate since the previous sample of the same
//!    container id (`usageNanoCores`; absent on a container's first sample, as in kubelet);
//! 4. turns the service proxy's connection counters ([`requests`]) into per-second rates over
//!    the real time between the two samples;
//! 5. publishes the [`Sample`] on a watch channel; the endpoint serves the latest one.
//!
//! ## Caveats
//! - Simulated nodes (the fake runtime) have no cgroups, so their pods have no metrics; their
//!   node figures are the host machine's.
//! - A pod's figures are the sums of its running containers' (kubelet reads the pod's cgroup,
//!   which also holds what exited containers used).
//! - The cost is a few small file reads per container: 100 pods are some 300 reads of sysfs,
//!   and one list of the runtime's containers, per interval.
pub mod cgroupfs;
pub mod prometheus;
pub mod requests;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use skiff_api::metrics::{
    ContainerStats, CpuStats, EndpointRequests, MemoryStats, NodeStats, PodReference, PodStats,
    RequestStats, ServiceRequests, Summary,
};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use crate::runtime::{ContainerRecord, ContainerState, Runtime};

pub use cgroupfs::{CgroupUsage, MemoryUsage, NodeUsage};
pub use requests::{RequestCounter, ServiceTally};

/// How often the sampler measures unless told otherwise (metrics-server's resolution).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);
/// A shorter interval is raised to this: a rate over less is mostly noise.
const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// What the runtime measured of one container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerUsage {
    /// The container's cgroup path (`/skiff-k8s/pod<uid>/<id>`): cAdvisor's `id` label.
    pub cgroup: String,
    pub usage: CgroupUsage,
}

/// One measurement of the node, what the endpoint serves until the next.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    /// kubelet's Summary: node, pods and their containers, and the proxy's request rates.
    pub summary: Summary,
    /// When it was taken (every `time` in `summary` says the same).
    pub taken_at: Timestamp,
    /// Each container's cgroup path, by (pod uid, container name).
    pub cgroups: BTreeMap<(String, String), String>,
    /// The node's installed memory (`MemTotal`).
    pub machine_memory_bytes: Option<u64>,
    /// Connections the proxy forwarded since the agent started, by (namespace, Service).
    pub connections: BTreeMap<(String, String), u64>,
}

/// Where the sampler publishes; `None` until the first sample.
pub type SampleSender = watch::Sender<Option<Arc<Sample>>>;
/// What the endpoint reads.
pub type SampleReceiver = watch::Receiver<Option<Arc<Sample>>>;

/// A channel with no sample yet.
pub fn channel() -> (SampleSender, SampleReceiver) {
    watch::channel(None)
}

/// The running containers of `records`, the newest attempt of each (pod, container name)
/// only, ordered by namespace, pod name, pod uid and container name.
pub fn newest_running(records: Vec<ContainerRecord>) -> Vec<ContainerRecord> {
    let mut running: Vec<ContainerRecord> = records
        .into_iter()
        .filter(|r| matches!(r.state, ContainerState::Running { .. }))
        .collect();
    running.sort_by(|a, b| {
        (
            &a.pod_namespace,
            &a.pod_name,
            &a.pod_uid,
            &a.container_name,
            Reverse(a.attempt),
        )
            .cmp(&(
                &b.pod_namespace,
                &b.pod_name,
                &b.pod_uid,
                &b.container_name,
                Reverse(b.attempt),
            ))
    });
    // The first of each run is the newest attempt.
    running.dedup_by(|later, first| {
        later.pod_uid == first.pod_uid && later.container_name == first.container_name
    });
    running
}

/// CPU use as a rate: nanoseconds of CPU time per second of wall time, i.e. billionths of a
/// core. 1.5 s of CPU over a 15 s window is 0.1 core, 100,000,000 nanocores. `None` for a
/// counter that went backwards (a different cgroup under the same name) or no time passed.
pub fn nano_cores(before_ns: u64, now_ns: u64, elapsed: Duration) -> Option<u64> {
    let elapsed = elapsed.as_nanos();
    if now_ns < before_ns || elapsed == 0 {
        return None;
    }
    let rate = u128::from(now_ns - before_ns) * 1_000_000_000 / elapsed;
    u64::try_from(rate).ok()
}

/// What the previous sample left for the next one's rates.
#[derive(Debug)]
struct Previous {
    at: Instant,
    /// CPU time by container id.
    containers: HashMap<String, u64>,
    node_cpu_ns: Option<u64>,
    requests: requests::Totals,
    active_services: BTreeSet<(String, String)>,
    active_endpoints: BTreeSet<IpAddr>,
}

/// Builds [`Sample`]s, remembering the previous one's counters for rates.
#[derive(Debug)]
pub struct Sampler {
    node_name: String,
    /// `/proc`, or a tree of test files.
    proc_root: PathBuf,
    /// The service proxy's counters; `None` on nodes without a proxy.
    requests: Option<Arc<RequestCounter>>,
    previous: Option<Previous>,
}

impl Sampler {
    pub fn new(
        node_name: &str,
        proc_root: impl Into<PathBuf>,
        requests: Option<Arc<RequestCounter>>,
    ) -> Sampler {
        Sampler {
            node_name: node_name.to_string(),
            proc_root: proc_root.into(),
            requests,
            previous: None,
        }
    }

    /// One sample of `records` (all the runtime's containers), measured with `usage`, at
    /// `now` (for rates) and `time` (what it says).
    pub fn take(
        &mut self,
        records: Vec<ContainerRecord>,
        usage: impl Fn(&ContainerRecord) -> Option<ContainerUsage>,
        now: Instant,
        time: Timestamp,
    ) -> Sample {
        let stamp = time.to_string();
        let previous = self.previous.take();
        let elapsed = previous
            .as_ref()
            .map(|p| now.saturating_duration_since(p.at));
        let rate = |id: Option<&str>, node: Option<u64>, now_ns: u64| {
            let before = match id {
                Some(id) => previous.as_ref()?.containers.get(id).copied(),
                None => node,
            }?;
            nano_cores(before, now_ns, elapsed?)
        };

        let running = newest_running(records);
        let mut cpu_now = HashMap::with_capacity(running.len());
        let mut cgroups = BTreeMap::new();
        let mut pods: Vec<PodStats> = Vec::new();
        for record in &running {
            let Some(measured) = usage(record) else {
                continue;
            };
            let cpu = measured.usage.cpu_ns.map(|ns| {
                cpu_now.insert(record.id.clone(), ns);
                CpuStats {
                    time: stamp.clone(),
                    usage_nano_cores: rate(Some(&record.id), None, ns),
                    usage_core_nano_seconds: Some(ns),
                }
            });
            let memory = measured.usage.memory.map(|m| MemoryStats {
                time: stamp.clone(),
                working_set_bytes: Some(m.working_set),
                usage_bytes: Some(m.usage),
                rss_bytes: Some(m.rss),
                page_cache_bytes: Some(m.cache),
                available_bytes: None,
            });
            let start_time = match &record.state {
                ContainerState::Running { started_at } => Some(started_at.to_string()),
                _ => None,
            };
            if pods.last().is_none_or(|p| p.pod_ref.uid != record.pod_uid) {
                pods.push(PodStats {
                    pod_ref: PodReference {
                        name: record.pod_name.clone(),
                        namespace: record.pod_namespace.clone(),
                        uid: record.pod_uid.clone(),
                    },
                    ..PodStats::default()
                });
            }
            if let Some(pod) = pods.last_mut() {
                pod.containers.push(ContainerStats {
                    name: record.container_name.clone(),
                    start_time,
                    cpu,
                    memory,
                });
            }
            cgroups.insert(
                (record.pod_uid.clone(), record.container_name.clone()),
                measured.cgroup,
            );
        }
        for pod in &mut pods {
            let (cpu, memory) = pod_totals(&pod.containers, &stamp);
            pod.cpu = cpu;
            pod.memory = memory;
        }

        let node_usage = cgroupfs::read_node(&self.proc_root);
        let node = NodeStats {
            node_name: self.node_name.clone(),
            cpu: node_usage.cpu_ns.map(|ns| CpuStats {
                time: stamp.clone(),
                usage_nano_cores: rate(None, previous.as_ref().and_then(|p| p.node_cpu_ns), ns),
                usage_core_nano_seconds: Some(ns),
            }),
            memory: node_usage.memory.map(|m| MemoryStats {
                time: stamp.clone(),
                working_set_bytes: Some(m.working_set()),
                available_bytes: Some(m.available),
                ..MemoryStats::default()
            }),
        };

        let totals = self.requests.as_ref().map(|c| c.totals());
        let mut active_services = BTreeSet::new();
        let mut active_endpoints = BTreeSet::new();
        let request_stats = match (&totals, &previous, elapsed) {
            (Some(totals), Some(previous), Some(elapsed)) => {
                let window = elapsed.as_secs_f64();
                let services = requests::rates(
                    &previous.requests.services,
                    &totals.services,
                    &previous.active_services,
                    window,
                );
                let endpoints = requests::rates(
                    &previous.requests.endpoints,
                    &totals.endpoints,
                    &previous.active_endpoints,
                    window,
                );
                active_services = services
                    .iter()
                    .filter(|(_, r)| *r > 0.0)
                    .map(|(k, _)| k.clone())
                    .collect();
                active_endpoints = endpoints
                    .iter()
                    .filter(|(_, r)| *r > 0.0)
                    .map(|(k, _)| *k)
                    .collect();
                Some(RequestStats {
                    time: stamp.clone(),
                    window_seconds: window,
                    services: services
                        .into_iter()
                        .map(|((namespace, name), per_second)| ServiceRequests {
                            namespace,
                            name,
                            per_second,
                        })
                        .collect(),
                    endpoints: endpoints
                        .into_iter()
                        .map(|(ip, per_second)| EndpointRequests {
                            ip: ip.to_string(),
                            per_second,
                        })
                        .collect(),
                })
            }
            // The first sample: no window yet.
            _ => None,
        };
        let totals = totals.unwrap_or_default();
        let sample = Sample {
            summary: Summary {
                node,
                pods,
                requests: request_stats,
            },
            taken_at: time,
            cgroups,
            machine_memory_bytes: node_usage.memory.map(|m| m.total),
            connections: totals.services.clone(),
        };
        self.previous = Some(Previous {
            at: now,
            containers: cpu_now,
            node_cpu_ns: node_usage.cpu_ns,
            requests: totals,
            active_services,
            active_endpoints,
        });
        sample
    }
}

/// A pod's figures: the sums of its containers'. The CPU rate sums the containers that have
/// one (a container on its first sample has none yet).
fn pod_totals(
    containers: &[ContainerStats],
    stamp: &str,
) -> (Option<CpuStats>, Option<MemoryStats>) {
    fn sum(values: impl Iterator<Item = Option<u64>>) -> Option<u64> {
        values.flatten().reduce(u64::saturating_add)
    }
    let cpus: Vec<&CpuStats> = containers.iter().filter_map(|c| c.cpu.as_ref()).collect();
    let memories: Vec<&MemoryStats> = containers
        .iter()
        .filter_map(|c| c.memory.as_ref())
        .collect();
    let cpu = (!cpus.is_empty()).then(|| CpuStats {
        time: stamp.to_string(),
        usage_nano_cores: sum(cpus.iter().map(|c| c.usage_nano_cores)),
        usage_core_nano_seconds: sum(cpus.iter().map(|c| c.usage_core_nano_seconds)),
    });
    let memory = (!memories.is_empty()).then(|| MemoryStats {
        time: stamp.to_string(),
        working_set_bytes: sum(memories.iter().map(|m| m.working_set_bytes)),
        usage_bytes: sum(memories.iter().map(|m| m.usage_bytes)),
        rss_bytes: sum(memories.iter().map(|m| m.rss_bytes)),
        page_cache_bytes: sum(memories.iter().map(|m| m.page_cache_bytes)),
        available_bytes: None,
    });
    (cpu, memory)
}

/// Samples every `interval` (at least a second; the first at once) and publishes each sample
/// on `publish`, until `shutdown`. A runtime that cannot list its containers keeps the last
/// sample in place (logged).
pub async fn run<R: Runtime>(
    runtime: Arc<R>,
    mut sampler: Sampler,
    interval: Duration,
    publish: SampleSender,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(interval.max(MIN_INTERVAL));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = crate::stopped(&mut shutdown) => return,
        }
        let records = match runtime.list().await {
            Ok(records) => records,
            Err(e) => {
                tracing::warn!(error = %e, "listing containers to measure them");
                continue;
            }
        };
        let sample = sampler.take(
            records,
            |record| runtime.usage(record),
            Instant::now(),
            Timestamp::now(),
        );
        publish.send_replace(Some(Arc::new(sample)));
    }
}

#[cfg(test)]
mod tests;
