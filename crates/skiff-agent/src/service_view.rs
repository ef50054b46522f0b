//! The agent's view of the cluster's Services: Services, EndpointSlices and the weights pods
//! ask for, watched from the API server and published as one immutable [`Snapshot`] that the
//! service proxy, the DNS server and new containers' environment all read.
//!
//! ```text
//! watch services ──┐
//! watch endpointslices ──┼─► caches ─► (50 ms quiet) ─► Arc<Snapshot> on a watch channel
//! watch pods (weights) ──┘                                  ├─► proxy::run
//!                                                           ├─► dns::serve
//!                                                           └─► pod env (FOO_SERVICE_HOST)
//! ```
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::Metadata;
use skiff_client::watcher::{self, Event};
use skiff_client::{Client, ListParams};
use tokio::sync::watch;

use crate::proxy::balancer::WEIGHT_ANNOTATION;

/// Everything service-related the agent knows at one moment.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Whether Services, EndpointSlices and Pods have each been listed at least once. Until
    /// then the lists below are not "nothing exists" but "not read yet": DNS answers SERVFAIL
    /// rather than a cacheable NXDOMAIN, the proxy leaves its rules alone, and a pod that wants
    /// service variables waits (as kubelet does).
    pub synced: bool,
    pub services: Vec<Service>,
    pub slices: Vec<EndpointSlice>,
    /// `skiff.io/weight` of pods that set it, by (namespace, name).
    pub weights: HashMap<(String, String), u32>,
}

impl Snapshot {
    /// The EndpointSlices of `service` (label `kubernetes.io/service-name`).
    pub fn slices_of<'a>(
        &'a self,
        service: &'a Service,
    ) -> impl Iterator<Item = &'a EndpointSlice> {
        let ns = service.metadata.namespace.as_deref();
        let name = service.metadata.name.as_deref();
        self.slices.iter().filter(move |s| {
            s.metadata.namespace.as_deref() == ns
                && s.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL))
                    .map(String::as_str)
                    == name
        })
    }
}

/// The IPv4 address of an EndpointSlice endpoint (its first address), if it has one.
pub fn endpoint_ipv4(
    endpoint: &k8s_openapi::api::discovery::v1::Endpoint,
) -> Option<std::net::Ipv4Addr> {
    endpoint.addresses.first()?.parse().ok()
}

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Starts the watches; the receiver always holds the latest snapshot.
pub fn spawn(
    client: Client,
    mut shutdown: watch::Receiver<bool>,
) -> watch::Receiver<Arc<Snapshot>> {
    let (tx, rx) = watch::channel(Arc::new(Snapshot::default()));
    let mut services = watcher::spawn::<Service>(client.clone(), None, ListParams::default());
    let mut slices = watcher::spawn::<EndpointSlice>(client.clone(), None, ListParams::default());
    let mut pods = watcher::spawn::<Pod>(client, None, ListParams::default());
    tokio::spawn(async move {
        let mut cache = Caches::default();
        loop {
            tokio::select! {
                Some(e) = services.recv() => cache.services.apply(e),
                Some(e) = slices.recv() => cache.slices.apply(e),
                Some(e) = pods.recv() => cache.apply_pod(e),
                _ = crate::stopped(&mut shutdown) => return,
                else => return,
            }
            // Let a burst of changes (a rollout touches many objects) settle into one snapshot.
            let quiet = tokio::time::sleep(Duration::from_millis(50));
            tokio::pin!(quiet);
            loop {
                tokio::select! {
                    Some(e) = services.recv() => cache.services.apply(e),
                    Some(e) = slices.recv() => cache.slices.apply(e),
                    Some(e) = pods.recv() => cache.apply_pod(e),
                    _ = &mut quiet => break,
                }
            }
            if tx.send(Arc::new(cache.snapshot())).is_err() {
                return;
            }
        }
    });
    rx
}

#[derive(Default)]
struct Caches {
    services: Cache<Service>,
    slices: Cache<EndpointSlice>,
    weights: HashMap<(String, String), u32>,
    /// Whether the pod watcher has delivered its first list.
    pods_listed: bool,
}

impl Caches {
    fn apply_pod(&mut self, event: Event<Pod>) {
        let weight_of = |pod: &Pod| {
            let key = (
                pod.metadata.namespace.clone().unwrap_or_default(),
                pod.metadata.name.clone().unwrap_or_default(),
            );
            let weight = pod
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(WEIGHT_ANNOTATION))
                .and_then(|w| w.trim().parse::<u32>().ok());
            (key, weight)
        };
        match event {
            Event::Restarted(pods) => {
                self.pods_listed = true;
                self.weights = pods
                    .iter()
                    .filter_map(|p| match weight_of(p) {
                        (key, Some(w)) => Some((key, w)),
                        _ => None,
                    })
                    .collect();
            }
            Event::Applied(pod) => match weight_of(&pod) {
                (key, Some(w)) => {
                    self.weights.insert(key, w);
                }
                (key, None) => {
                    self.weights.remove(&key);
                }
            },
            Event::Deleted(pod) => {
                self.weights.remove(&weight_of(&pod).0);
            }
        }
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            synced: self.services.listed && self.slices.listed && self.pods_listed,
            services: self.services.objects.values().cloned().collect(),
            slices: self.slices.objects.values().cloned().collect(),
            weights: self.weights.clone(),
        }
    }
}

/// Objects by namespace/name, kept in step with a watcher.
struct Cache<K> {
    objects: BTreeMap<(String, String), K>,
    /// Whether the watcher has delivered its first list.
    listed: bool,
}

impl<K> Default for Cache<K> {
    fn default() -> Self {
        Cache {
            objects: BTreeMap::new(),
            listed: false,
        }
    }
}

impl<K: Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>> Cache<K> {
    fn key(object: &K) -> (String, String) {
        let meta = object.metadata();
        (
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        )
    }

    fn apply(&mut self, event: Event<K>) {
        match event {
            Event::Restarted(all) => {
                self.listed = true;
                self.objects = all.into_iter().map(|o| (Self::key(&o), o)).collect();
            }
            Event::Applied(o) => {
                self.objects.insert(Self::key(&o), o);
            }
            Event::Deleted(o) => {
                self.objects.remove(&Self::key(&o));
            }
        }
    }
}

/// The variables Kubernetes gives a container for every service of its namespace that existed
/// when it started (`WEB_SERVICE_HOST`, `WEB_SERVICE_PORT`, `WEB_PORT_80_TCP_ADDR`, ...): the
/// service-discovery mechanism older than DNS, still used by many programs.
pub fn service_env(snapshot: &Snapshot, namespace: &str) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for svc in &snapshot.services {
        if svc.metadata.namespace.as_deref() != Some(namespace) {
            continue;
        }
        let Some(spec) = &svc.spec else { continue };
        let ip = spec.cluster_ip.as_deref().unwrap_or("");
        if ip.is_empty() || ip == "None" {
            continue;
        }
        let ports = spec.ports.as_deref().unwrap_or_default();
        let Some(first) = ports.first() else { continue };
        let name = svc
            .metadata
            .name
            .as_deref()
            .unwrap_or("")
            .to_uppercase()
            .replace('-', "_");
        env.push((format!("{name}_SERVICE_HOST"), ip.to_string()));
        env.push((format!("{name}_SERVICE_PORT"), first.port.to_string()));
        for port in ports {
            if let Some(port_name) = port.name.as_deref().filter(|n| !n.is_empty()) {
                env.push((
                    format!(
                        "{name}_SERVICE_PORT_{}",
                        port_name.to_uppercase().replace('-', "_")
                    ),
                    port.port.to_string(),
                ));
            }
        }
        // Docker link variables.
        let proto = |p: &k8s_openapi::api::core::v1::ServicePort| {
            p.protocol.clone().unwrap_or_else(|| "TCP".into())
        };
        env.push((
            format!("{name}_PORT"),
            format!("{}://{ip}:{}", proto(first).to_lowercase(), first.port),
        ));
        for port in ports {
            let p = proto(port);
            let prefix = format!("{name}_PORT_{}_{p}", port.port);
            env.push((
                prefix.clone(),
                format!("{}://{ip}:{}", p.to_lowercase(), port.port),
            ));
            env.push((format!("{prefix}_PROTO"), p.to_lowercase()));
            env.push((format!("{prefix}_PORT"), port.port.to_string()));
            env.push((format!("{prefix}_ADDR"), ip.to_string()));
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_snapshot_is_synced_once_every_watch_has_listed() {
        let mut caches = Caches::default();
        assert!(!caches.snapshot().synced);
        caches.services.apply(Event::Restarted(Vec::new()));
        caches.slices.apply(Event::Restarted(Vec::new()));
        assert!(!caches.snapshot().synced, "pods not listed yet");
        // A single change is not a list: still not synced.
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}})).expect("pod");
        caches.apply_pod(Event::Applied(pod));
        assert!(!caches.snapshot().synced);
        caches.apply_pod(Event::Restarted(Vec::new()));
        assert!(caches.snapshot().synced);
    }

    #[test]
    fn service_env_follows_kubernetes_naming() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "my-web", "namespace": "default"},
            "spec": {"clusterIP": "10.43.0.7", "ports": [
                {"name": "http", "port": 80, "protocol": "TCP"},
                {"name": "dns-udp", "port": 53, "protocol": "UDP"}]}
        }))
        .expect("service");
        let headless: Service = serde_json::from_value(json!({
            "metadata": {"name": "db", "namespace": "default"},
            "spec": {"clusterIP": "None", "ports": [{"port": 5432}]}
        }))
        .expect("service");
        let elsewhere: Service = serde_json::from_value(json!({
            "metadata": {"name": "other", "namespace": "kube-system"},
            "spec": {"clusterIP": "10.43.0.9", "ports": [{"port": 1}]}
        }))
        .expect("service");
        let snapshot = Snapshot {
            services: vec![svc, headless, elsewhere],
            ..Snapshot::default()
        };
        let env: HashMap<String, String> = service_env(&snapshot, "default").into_iter().collect();
        let expect = [
            ("MY_WEB_SERVICE_HOST", "10.43.0.7"),
            ("MY_WEB_SERVICE_PORT", "80"),
            ("MY_WEB_SERVICE_PORT_HTTP", "80"),
            ("MY_WEB_SERVICE_PORT_DNS_UDP", "53"),
            ("MY_WEB_PORT", "tcp://10.43.0.7:80"),
            ("MY_WEB_PORT_80_TCP", "tcp://10.43.0.7:80"),
            ("MY_WEB_PORT_80_TCP_ADDR", "10.43.0.7"),
            ("MY_WEB_PORT_53_UDP_PROTO", "udp"),
        ];
        for (k, v) in expect {
            assert_eq!(env.get(k).map(String::as_str), Some(v), "{k}");
        }
        assert!(!env
            .keys()
            .any(|k| k.starts_with("DB_") || k.starts_with("OTHER_")));
    }
}
