//! Resource quantities and what a pod asks for.
use k8s_openapi::api::core::v1::{Container, Pod};

/// CPU in millicores, memory in bytes, and a pod count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu_milli: i64,
    pub memory: i64,
    pub pods: i64,
}

impl Resources {
    pub fn add(&mut self, other: &Resources) {
        self.cpu_milli += other.cpu_milli;
        self.memory += other.memory;
        self.pods += other.pods;
    }

    pub fn sub(&mut self, other: &Resources) {
        self.cpu_milli -= other.cpu_milli;
        self.memory -= other.memory;
        self.pods -= other.pods;
    }
}

/// `"500m"` → 500, `"2"` → 2000, `"0.5"` → 500.
pub fn cpu_milli(q: &str) -> Option<i64> {
    let q = q.trim();
    if let Some(m) = q.strip_suffix('m') {
        return m.parse().ok();
    }
    q.parse::<f64>().ok().map(|c| (c * 1000.0).ceil() as i64)
}

/// `"64Mi"` → 67108864, `"1G"` → 10^9, `"129e6"`, plain bytes.
pub fn bytes(q: &str) -> Option<i64> {
    const SUFFIXES: [(&str, f64); 12] = [
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("Pi", 1125899906842624.0),
        ("Ei", 1152921504606846976.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let q = q.trim();
    for (suffix, factor) in SUFFIXES {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<f64>().ok().map(|n| (n * factor).ceil() as i64);
        }
    }
    q.parse::<f64>().ok().map(|n| n.ceil() as i64)
}

/// A container's requests; a limit without a request counts as the request (API defaulting).
fn container_requests(c: &Container) -> Resources {
    let r = c.resources.as_ref();
    let get = |key: &str| {
        r.and_then(|r| r.requests.as_ref())
            .and_then(|m| m.get(key))
            .or_else(|| r.and_then(|r| r.limits.as_ref()).and_then(|m| m.get(key)))
            .map(|q| q.0.clone())
    };
    Resources {
        cpu_milli: get("cpu").and_then(|q| cpu_milli(&q)).unwrap_or(0),
        memory: get("memory").and_then(|q| bytes(&q)).unwrap_or(0),
        pods: 0,
    }
}

/// What a pod occupies on a node: the larger of the sum of its app containers and the largest
/// init container (init containers run one at a time, before the app containers), per
/// resource — Kubernetes' rule — plus one pod.
pub fn pod_requests(pod: &Pod) -> Resources {
    let Some(spec) = &pod.spec else {
        return Resources {
            pods: 1,
            ..Resources::default()
        };
    };
    let mut sum = Resources::default();
    for c in &spec.containers {
        sum.add(&container_requests(c));
    }
    for c in spec.init_containers.iter().flatten() {
        let init = container_requests(c);
        sum.cpu_milli = sum.cpu_milli.max(init.cpu_milli);
        sum.memory = sum.memory.max(init.memory);
    }
    sum.pods = 1;
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quantities() {
        assert_eq!(cpu_milli("250m"), Some(250));
        assert_eq!(cpu_milli("1.5"), Some(1500));
        assert_eq!(bytes("1Gi"), Some(1 << 30));
        assert_eq!(bytes("500M"), Some(500_000_000));
        assert_eq!(bytes("1e3"), Some(1000));
        assert_eq!(bytes("x"), None);
    }

    #[test]
    fn init_containers_count_by_their_maximum_and_limits_default_requests() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {
                "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "2", "memory": "10Mi"}}}],
                "containers": [
                    {"name": "a", "resources": {"requests": {"cpu": "500m", "memory": "64Mi"}}},
                    {"name": "b", "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}}}
                ]
            }
        }))
        .expect("pod");
        // cpu: max(500m + 250m, 2000m) = 2000m; memory: max(128Mi, 10Mi) = 128Mi.
        assert_eq!(
            pod_requests(&pod),
            Resources {
                cpu_milli: 2000,
                memory: 128 << 20,
                pods: 1
            }
        );
    }
}
