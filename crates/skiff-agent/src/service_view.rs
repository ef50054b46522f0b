//! The agent's view of the cluster's Services: Services, EndpointSlices and the weights pods
//! ask for, watched from the API server and published as one immutable [`Snapshot`] that the
//! service proxy, the DNS server and new containers' environment all read.
//!
//! ```text
//! informer: services ──────────┐
//! informer: endpointslices ────┼─► (50 ms quiet) ─► Arc<Snapshot> on a watch channel
//! informer: pods, metadata only ┘                      ├─► proxy::run
//!   (the weights they ask for)                         ├─► dns::serve
//!                                                      └─► pod env (FOO_SERVICE_HOST)
//! ```
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use skiff_client::informer::{Informers, MetadataStore, PartialObject, Store};
use tokio::sync::{watch, Notify};

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

/// Keeps a snapshot of the informers' Services, EndpointSlices and pod weights; the receiver
/// always holds the latest.
pub fn spawn(
    informers: &Informers,
    shutdown: watch::Receiver<bool>,
) -> watch::Receiver<Arc<Snapshot>> {
    let (tx, rx) = watch::channel(Arc::new(Snapshot::default()));
    let services = informers.store::<Service>();
    let slices = informers.store::<EndpointSlice>();
    // Of pods the agent needs only an annotation: their metadata, not whole pods.
    let pods = skiff_api::resources::by_kind("v1", "Pod").map(|info| informers.metadata(info));
    let changed = Arc::new(Notify::new());
    let wake = || {
        let changed = changed.clone();
        move || changed.notify_one()
    };
    let ping = wake();
    services.on_change(move |_| ping());
    let ping = wake();
    slices.on_change(move |_| ping());
    if let Some(store) = pods
        .as_ref()
        .and_then(|p| p.as_any().downcast_ref::<Store<PartialObject>>())
    {
        let ping = wake();
        store.on_change(move |_| ping());
    }
    tokio::spawn(publish(services, slices, pods, changed, tx, shutdown));
    rx
}

/// Publishes a snapshot once every store has its first list, and then after every burst of
/// changes.
async fn publish(
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    pods: Option<Arc<dyn MetadataStore>>,
    changed: Arc<Notify>,
    tx: watch::Sender<Arc<Snapshot>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let pods_synced =
        |pods: &Option<Arc<dyn MetadataStore>>| pods.as_ref().is_none_or(|p| p.is_synced());
    // The first lists, even empty ones (which call no handler).
    let mut pods_listed = pods.as_ref().map(|p| p.synced());
    tokio::select! {
        _ = async {
            services.wait_synced().await;
            slices.wait_synced().await;
            if let Some(listed) = pods_listed.as_mut() {
                let _ = listed.wait_for(|s| *s).await;
            }
        } => {}
        _ = crate::stopped(&mut shutdown) => return,
    }
    loop {
        let snapshot = Snapshot {
            synced: services.is_synced() && slices.is_synced() && pods_synced(&pods),
            services: services.list(),
            slices: slices.list(),
            weights: pods
                .as_ref()
                .map(|p| weights(p.as_ref()))
                .unwrap_or_default(),
        };
        if tx.send(Arc::new(snapshot)).is_err() {
            return;
        }
        tokio::select! {
            _ = changed.notified() => {}
            _ = crate::stopped(&mut shutdown) => return,
        }
        // Let a burst of changes (a rollout touches many objects) settle into one snapshot.
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = crate::stopped(&mut shutdown) => return,
        }
    }
}

/// `skiff.io/weight` of the pods that set it, by (namespace, name).
fn weights(pods: &dyn MetadataStore) -> HashMap<(String, String), u32> {
    let mut weights = HashMap::new();
    pods.for_each_meta(&mut |meta| {
        let weight = meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(WEIGHT_ANNOTATION))
            .and_then(|w| w.trim().parse::<u32>().ok());
        if let Some(weight) = weight {
            let key = (
                meta.namespace.clone().unwrap_or_default(),
                meta.name.clone().unwrap_or_default(),
            );
            weights.insert(key, weight);
        }
    });
    weights
}

/// The variables Kubernetes gives a container for every service of its namespace that existed
/// when it started (`WEB_SERVICE_HOST`, `WEB_SERVICE_PORT`, `WEB_PORT_80_TCP_ADDR`, ...): the
/// service-discovery mechanism older than DNS, still used by many programs. With `links` false
/// (`enableServiceLinks: false`) only the `kubernetes` Service's (`KUBERNETES_SERVICE_HOST`),
/// which every pod gets, as in-cluster clients need them.
pub fn service_env(snapshot: &Snapshot, namespace: &str, links: bool) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for svc in &snapshot.services {
        let svc_namespace = svc.metadata.namespace.as_deref();
        let api =
            svc_namespace == Some("default") && svc.metadata.name.as_deref() == Some("kubernetes");
        if !(api || links && svc_namespace == Some(namespace)) {
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

    /// A pod seen by its metadata, with a weight annotation.
    fn weighted(name: &str, weight: &str) -> PartialObject {
        serde_json::from_value(json!({"metadata": {
            "name": name, "namespace": "default",
            "annotations": {WEIGHT_ANNOTATION: weight}}}))
        .expect("pod metadata")
    }

    #[tokio::test(start_paused = true)]
    async fn a_snapshot_is_synced_once_every_store_has_listed() {
        use skiff_client::watcher::Event;
        let informers = Informers::offline();
        let (_stop, stop) = watch::channel(false);
        let mut snapshots = spawn(&informers, stop);
        let services = informers.store::<Service>();
        let slices = informers.store::<EndpointSlice>();
        let pods = informers.find("v1", "Pod").expect("the pods' store");
        let pods = pods
            .as_any()
            .downcast_ref::<Store<PartialObject>>()
            .expect("metadata only");
        services.apply(Event::Restarted(Vec::new()));
        slices.apply(Event::Restarted(Vec::new()));
        // A single change is not a list: nothing is published as synced yet.
        pods.apply(Event::Applied(weighted("early", "5")));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!snapshots.borrow().synced, "pods not listed yet");
        pods.apply(Event::Restarted(vec![
            weighted("p", "3"),
            weighted("q", "x"),
        ]));
        let synced = tokio::time::timeout(Duration::from_secs(5), snapshots.wait_for(|s| s.synced))
            .await
            .expect("a synced snapshot")
            .expect("the channel")
            .clone();
        let weights: Vec<_> = synced.weights.iter().collect();
        // Only the listed pods count, and only a weight that parses.
        assert_eq!(
            weights,
            vec![(&("default".to_string(), "p".to_string()), &3)]
        );
        // A change after the list is published after the quiet period.
        pods.apply(Event::Applied(weighted("r", "7")));
        tokio::time::timeout(
            Duration::from_secs(5),
            snapshots.wait_for(|s| s.weights.len() == 2),
        )
        .await
        .expect("the change published")
        .expect("the channel");
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
        let env: HashMap<String, String> = service_env(&snapshot, "default", true)
            .into_iter()
            .collect();
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

    #[test]
    fn every_pod_gets_the_kubernetes_service_even_without_service_links() {
        let api: Service = serde_json::from_value(json!({
            "metadata": {"name": "kubernetes", "namespace": "default"},
            "spec": {"clusterIP": "10.43.0.1", "ports": [{"name": "https", "port": 443, "protocol": "TCP"}]}
        }))
        .expect("service");
        let own: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"clusterIP": "10.43.0.8", "ports": [{"port": 80}]}
        }))
        .expect("service");
        let snapshot = Snapshot {
            services: vec![api, own],
            ..Snapshot::default()
        };
        let names = |links| -> Vec<String> {
            service_env(&snapshot, "shop", links)
                .into_iter()
                .map(|(k, _)| k)
                .filter(|k| k.ends_with("_SERVICE_HOST"))
                .collect()
        };
        assert_eq!(names(true), ["KUBERNETES_SERVICE_HOST", "WEB_SERVICE_HOST"]);
        assert_eq!(names(false), ["KUBERNETES_SERVICE_HOST"]);
        let env: HashMap<String, String> =
            service_env(&snapshot, "shop", false).into_iter().collect();
        assert_eq!(env["KUBERNETES_SERVICE_PORT"], "443");
        assert_eq!(env["KUBERNETES_SERVICE_PORT_HTTPS"], "443");
    }
}
