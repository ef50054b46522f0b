//! What a pod asks of a node, computed once when the pod is seen, as Kubernetes computes it.
//!
//! Three resources are accounted: cpu (millicores), memory (bytes) and pods (a count; every pod
//! takes one slot of the node's `pods` allocatable). Other resource names (ephemeral-storage,
//! extended resources such as `nvidia.com/gpu`) are not checked yet.
//!
//! A pod's request for a resource is the larger of
//! - the sum over its app containers (they all run at once), and
//! - the largest single init container (they run one at a time, before the app containers),
//!
//! plus `spec.overhead`. Sidecars (init containers with `restartPolicy: Always`) keep running, so
//! they add to the app containers' sum and to every init container started after them. A
//! container with a limit but no request requests its limit.

use std::ops::{Add, AddAssign, Sub, SubAssign};

use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::quantity;

/// Cpu a container is counted as using *for scoring* when it requests none: 100m, as
/// kube-scheduler's `DefaultMilliCPURequest`. Without it, a node full of best-effort pods would
/// look empty to bin-packing and spreading.
pub const DEFAULT_SCORING_CPU_MILLIS: i64 = 100;
/// Memory a container is counted as using for scoring when it requests none: 200Mi, as
/// kube-scheduler's `DefaultMemoryRequest`.
pub const DEFAULT_SCORING_MEMORY_BYTES: i64 = 200 << 20;

/// The resources the scheduler accounts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Resource {
    Cpu,
    Memory,
    Pods,
}

impl Resource {
    /// The Kubernetes resource name (`cpu`, `memory`, `pods`).
    pub fn name(self) -> &'static str {
        match self {
            Resource::Cpu => "cpu",
            Resource::Memory => "memory",
            Resource::Pods => "pods",
        }
    }

    /// An amount of this resource written the way a manifest would write it.
    pub fn format(self, amount: i64) -> String {
        match self {
            Resource::Cpu => quantity::format_cpu(amount),
            Resource::Memory => quantity::format_bytes(amount),
            Resource::Pods => amount.to_string(),
        }
    }
}

/// An amount of each accounted resource: what a pod requests, what a node offers, or what the
/// pods on a node already take.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu_millis: i64,
    pub memory_bytes: i64,
    pub pods: i64,
}

impl Resources {
    /// The amount of one resource.
    pub fn get(&self, resource: Resource) -> i64 {
        match resource {
            Resource::Cpu => self.cpu_millis,
            Resource::Memory => self.memory_bytes,
            Resource::Pods => self.pods,
        }
    }

    /// The larger of each resource separately.
    fn max_each(self, other: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.max(other.cpu_millis),
            memory_bytes: self.memory_bytes.max(other.memory_bytes),
            pods: self.pods.max(other.pods),
        }
    }

    /// Reads cpu, memory and pods from a Kubernetes resource list (`status.allocatable`,
    /// `spec.overhead`). A missing or unparsable entry counts as zero: a node whose allocatable
    /// cannot be read is offered nothing rather than everything.
    pub fn from_list(list: Option<&BTreeMap<String, Quantity>>) -> Resources {
        let read = |name: &str, parse: fn(&str) -> Result<i64, crate::Error>| {
            list.and_then(|l| l.get(name))
                .and_then(|q| warn_unparsable(parse(&q.0)))
                .unwrap_or(0)
        };
        Resources {
            cpu_millis: read("cpu", quantity::cpu_millis),
            memory_bytes: read("memory", quantity::bytes),
            pods: read("pods", quantity::bytes),
        }
    }
}

impl Add for Resources {
    type Output = Resources;
    fn add(self, other: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
            pods: self.pods.saturating_add(other.pods),
        }
    }
}

impl AddAssign for Resources {
    fn add_assign(&mut self, other: Resources) {
        *self = *self + other;
    }
}

impl Sub for Resources {
    type Output = Resources;
    fn sub(self, other: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_sub(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_sub(other.memory_bytes),
            pods: self.pods.saturating_sub(other.pods),
        }
    }
}

impl SubAssign for Resources {
    fn sub_assign(&mut self, other: Resources) {
        *self = *self - other;
    }
}

/// A host port a pod's container binds on its node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HostPort {
    /// `0.0.0.0` when the manifest leaves `hostIP` out: every address of the node.
    pub ip: String,
    /// `TCP` unless the manifest says `UDP` or `SCTP`.
    pub protocol: String,
    pub port: i32,
}

impl HostPort {
    /// Whether two pods wanting these ports could not share a node: same protocol and port, and
    /// the same address or either one on every address (`0.0.0.0`), as the NodePorts filter
    /// decides.
    pub fn conflicts_with(&self, other: &HostPort) -> bool {
        const ANY: &str = "0.0.0.0";
        self.port == other.port
            && self.protocol == other.protocol
            && (self.ip == other.ip || self.ip == ANY || other.ip == ANY)
    }
}

/// Everything a pod takes from the node it lands on, computed once per pod version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodDemand {
    /// What the filters check against allocatable: the Kubernetes request (`pods` is 1).
    pub requests: Resources,
    /// What the bin-packing scorer counts: like `requests`, but a container that requests no
    /// cpu or memory counts the scoring defaults instead of zero.
    pub scoring: Resources,
    /// Host ports of the app containers, which no other pod on the node may also bind.
    pub host_ports: Vec<HostPort>,
}

impl PodDemand {
    /// Computes a pod's demand from its spec.
    pub fn of(spec: &PodSpec) -> PodDemand {
        let host_ports = spec
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                let port = p.host_port.filter(|&port| port > 0)?;
                Some(HostPort {
                    ip: p
                        .host_ip
                        .clone()
                        .filter(|ip| !ip.is_empty())
                        .unwrap_or_else(|| "0.0.0.0".to_string()),
                    protocol: p.protocol.clone().unwrap_or_else(|| "TCP".to_string()),
                    port,
                })
            })
            .collect();
        let scoring_defaults = Resources {
            cpu_millis: DEFAULT_SCORING_CPU_MILLIS,
            memory_bytes: DEFAULT_SCORING_MEMORY_BYTES,
            pods: 0,
        };
        PodDemand {
            requests: pod_requests(spec, Resources::default()),
            scoring: pod_requests(spec, scoring_defaults),
            host_ports,
        }
    }
}

/// The pod's request: max(app containers' sum, largest init container) + overhead, with
/// sidecars counted as the module docs describe. `defaults` stand in for a resource a container
/// neither requests nor limits.
///
/// Worked example: app containers request 200m and 300m; init containers request 1 cpu and then
/// 100m. The app containers run together: 200m + 300m = 500m. The init containers run one at a
/// time: the largest is 1000m. The pod needs max(500m, 1000m) = 1000m.
fn pod_requests(spec: &PodSpec, defaults: Resources) -> Resources {
    let mut app_sum = spec.containers.iter().fold(Resources::default(), |sum, c| {
        sum + container_requests(c, defaults)
    });
    let mut sidecars = Resources::default();
    let mut init_max = Resources::default();
    for init in spec.init_containers.iter().flatten() {
        let requests = container_requests(init, defaults);
        let running_alongside = if init.restart_policy.as_deref() == Some("Always") {
            app_sum += requests;
            sidecars += requests;
            sidecars
        } else {
            requests + sidecars
        };
        init_max = init_max.max_each(running_alongside);
    }
    let overhead = Resources::from_list(spec.overhead.as_ref());
    let mut total = app_sum.max_each(init_max) + overhead;
    total.pods = 1;
    total
}

/// One container's request: `requests`, else `limits`, else `defaults`, per resource.
fn container_requests(container: &Container, defaults: Resources) -> Resources {
    let resources = container.resources.as_ref();
    let requests = resources.and_then(|r| r.requests.as_ref());
    let limits = resources.and_then(|r| r.limits.as_ref());
    let read = |name: &str, parse: fn(&str) -> Result<i64, crate::Error>, default: i64| {
        let quantity = requests
            .and_then(|r| r.get(name))
            .or_else(|| limits.and_then(|l| l.get(name)));
        match quantity {
            Some(q) => warn_unparsable(parse(&q.0)).unwrap_or(0),
            None => default,
        }
    };
    Resources {
        cpu_millis: read("cpu", quantity::cpu_millis, defaults.cpu_millis),
        memory_bytes: read("memory", quantity::bytes, defaults.memory_bytes),
        pods: 0,
    }
}

/// Admission validates quantities, so an unparsable one means a bug elsewhere: say so once per
/// object version (demands are computed when an object changes, not per decision) and count
/// it as zero.
fn warn_unparsable(parsed: Result<i64, crate::Error>) -> Option<i64> {
    parsed
        .inspect_err(|err| tracing::warn!(%err, "counting an unparsable quantity as zero"))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{container, pod};

    fn cpu_mem(cpu_millis: i64, memory_bytes: i64) -> Resources {
        Resources {
            cpu_millis,
            memory_bytes,
            pods: 1,
        }
    }

    #[test]
    fn pod_requests_follow_kubernetes_rules() {
        const MI: i64 = 1 << 20;
        let cases = [
            ("no containers' requests", pod("p").build(), cpu_mem(0, 0)),
            (
                "app containers add up",
                pod("p")
                    .container(container("a").cpu("200m").memory("64Mi"))
                    .container(container("b").cpu("300m").memory("64Mi"))
                    .build(),
                cpu_mem(500, 128 * MI),
            ),
            (
                // max(200m + 300m, 1000m, 100m) = 1000m cpu; memory max(128Mi, 0) = 128Mi.
                "the largest init container wins when it is larger",
                pod("p")
                    .container(container("a").cpu("200m").memory("64Mi"))
                    .container(container("b").cpu("300m").memory("64Mi"))
                    .init(container("init-1").cpu("1"))
                    .init(container("init-2").cpu("100m"))
                    .build(),
                cpu_mem(1000, 128 * MI),
            ),
            (
                "limits stand in for missing requests",
                pod("p")
                    .container(container("a").limit_cpu("250m").limit_memory("1Gi"))
                    .container(container("b").cpu("100m").limit_cpu("2"))
                    .build(),
                cpu_mem(350, 1024 * MI),
            ),
            (
                // The sidecar (200m) runs beside the app (300m) and beside init-2 (900m + 200m).
                "sidecars add to app containers and to later init containers",
                pod("p")
                    .container(container("app").cpu("300m"))
                    .init(container("sidecar").cpu("200m").restart_always())
                    .init(container("init-2").cpu("900m"))
                    .build(),
                cpu_mem(1100, 0),
            ),
            (
                "overhead is added on top",
                pod("p")
                    .container(container("a").cpu("100m"))
                    .overhead("cpu", "250m")
                    .build(),
                cpu_mem(350, 0),
            ),
        ];
        for (name, pod, want) in cases {
            let spec = pod.spec.as_ref().expect("builder sets a spec");
            assert_eq!(PodDemand::of(spec).requests, want, "{name}");
        }
    }

    #[test]
    fn scoring_counts_defaults_for_unrequested_resources() {
        // One container requesting only 500m cpu, one requesting nothing:
        // cpu 500m + 100m = 600m, memory 200Mi + 200Mi = 400Mi.
        let pod = pod("p")
            .container(container("a").cpu("500m"))
            .container(container("b"))
            .build();
        let demand = PodDemand::of(pod.spec.as_ref().expect("builder sets a spec"));
        assert_eq!(demand.scoring, cpu_mem(600, 400 << 20));
        assert_eq!(demand.requests, cpu_mem(500, 0));
    }

    #[test]
    fn host_ports_default_their_address_and_protocol() {
        let pod = pod("p")
            .container(
                container("a")
                    .host_port(80)
                    .host_port_on("10.0.0.1", "UDP", 53),
            )
            .build();
        let demand = PodDemand::of(pod.spec.as_ref().expect("builder sets a spec"));
        let any_tcp_80 = HostPort {
            ip: "0.0.0.0".into(),
            protocol: "TCP".into(),
            port: 80,
        };
        assert_eq!(demand.host_ports[0], any_tcp_80);
        assert_eq!(demand.host_ports[1].ip, "10.0.0.1");

        let port = |ip: &str, protocol: &str, port| HostPort {
            ip: ip.into(),
            protocol: protocol.into(),
            port,
        };
        let cases = [
            (
                port("0.0.0.0", "TCP", 80),
                port("10.0.0.1", "TCP", 80),
                true,
            ),
            (
                port("10.0.0.1", "TCP", 80),
                port("10.0.0.1", "TCP", 80),
                true,
            ),
            (
                port("10.0.0.1", "TCP", 80),
                port("10.0.0.2", "TCP", 80),
                false,
            ),
            (
                port("0.0.0.0", "TCP", 80),
                port("0.0.0.0", "UDP", 80),
                false,
            ),
            (
                port("0.0.0.0", "TCP", 80),
                port("0.0.0.0", "TCP", 81),
                false,
            ),
        ];
        for (a, b, want) in cases {
            assert_eq!(a.conflicts_with(&b), want, "{a:?} vs {b:?}");
        }
    }
}
