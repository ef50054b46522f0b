//! The endpoints controller: which pods answer for a Service, written down twice, as the
//! `Endpoints` object named like the Service and as `EndpointSlice`s labelled with its name.
//! The service proxy and DNS read the slices; older clients (and `kubectl get endpoints`) read
//! the Endpoints.
//!
//! One pass, as a script:
//! 1. Services without a selector are left alone: their endpoints are written by hand (or by
//!    another controller). So are `ExternalName` services (DNS answers with a CNAME) and
//!    services being deleted (the garbage collector is about to take their endpoints).
//! 2. **Which pods**: those of the namespace that match the selector, have an IP of the
//!    service's family and have not finished (`Succeeded`/`Failed`). A pod being deleted
//!    (`deletionTimestamp` set) still counts for the slices, marked terminating, but not for
//!    the Endpoints (unless `publishNotReadyAddresses`).
//! 3. **Which ports**: each service port's `targetPort`, a number or a container port name
//!    looked up in each pod — so two pods of one Service may serve on different ports.
//! 4. **Endpoints** ([`desired_endpoints`]): pods are grouped into subsets the way Kubernetes'
//!    `RepackSubsets` does: each port maps to the set of addresses that serve it, and ports
//!    with the same set of addresses share a subset. Ready pods go to `addresses`, the others
//!    to `notReadyAddresses`.
//! 5. **EndpointSlices** ([`desired_slices`]): one slice per distinct set of resolved ports,
//!    at most [`MAX_ENDPOINTS_PER_SLICE`] endpoints each, every endpoint with the conditions
//!    Kubernetes sets: `ready` (ready and not terminating, or `publishNotReadyAddresses`),
//!    `serving` (ready, whatever else), `terminating` (being deleted). With no pods at all one
//!    empty slice remains, as in Kubernetes, so consumers can tell "no endpoints" from "not
//!    reconciled yet".
//! 6. **Write only what differs**: create what is missing, replace what changed, delete this
//!    controller's own slices that are no longer wanted. A pass over an unchanged Service is an
//!    empty plan, so pod status churn (probes, restarts) costs no writes.
//!
//! Names and ownership: the Endpoints is named like the Service; a slice is named
//! `<service>-<suffix>`, the suffix derived from the Service's uid, the slice's ports and its
//! position, so a pass that runs before the watch has shown its own creations asks to create
//! the same name again and gets AlreadyExists instead of a duplicate. Both kinds carry a
//! controller reference to the Service, so the garbage collector removes them with it. Slices
//! carry Kubernetes' own manager label (`endpointslice-controller.k8s.io`), so tools that
//! filter on it treat skiff's slices as they treat a cluster's.
//!
//! Caveats (differences from Kubernetes): one address family per Service (the first of
//! `spec.ipFamilies`, IPv4 when unset), where Kubernetes writes slices for each family of a
//! dual-stack Service; no `zone` or topology hints on endpoints; no
//! `endpoints.kubernetes.io/last-change-trigger-time` annotation and no truncation of
//! Endpoints past 1000 addresses; slices are refilled by position rather than Kubernetes'
//! churn-minimising packing.
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
    ServicePort,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use jiff::Timestamp;
use skiff_client::informer::{key_of, Store};

use crate::child_names::NameGenerator;
use crate::controller::{Context, Controller};
use crate::workqueue::WorkQueue;
use crate::{owners, pods, reference_to, Action, Object};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label that says which controller manages an EndpointSlice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY_LABEL`] on the slices this controller writes (Kubernetes' own).
pub const MANAGER: &str = "endpointslice-controller.k8s.io";
/// The label Kubernetes puts on the endpoints of a headless Service (`clusterIP: None`).
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// Kubernetes' default `--max-endpoints-per-slice`.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;

/// Plans one pass for `service`. `pods` are the pods of its namespace, `endpoints` the stored
/// Endpoints named like it (if any), `slices` the stored EndpointSlices of its namespace
/// (others' slices are ignored).
pub fn reconcile(
    service: &Service,
    pods: &[Pod],
    endpoints: Option<&Endpoints>,
    slices: &[EndpointSlice],
) -> Vec<Action> {
    let mut actions = Vec::new();
    if !is_managed(service) {
        return actions;
    }

    let want = desired_endpoints(service, pods);
    actions.extend(write(endpoints, want, Object::Endpoints, |e, want| {
        take_ownership(&mut e.metadata, want.metadata);
        e.subsets = want.subsets;
    }));

    let mut ours: BTreeMap<&str, &EndpointSlice> = slices
        .iter()
        .filter(|s| is_slice_of(s, service))
        .map(|s| (s.metadata.name.as_deref().unwrap_or(""), s))
        .collect();
    for want in desired_slices(service, pods) {
        let have = ours.remove(want.metadata.name.as_deref().unwrap_or(""));
        actions.extend(write(have, want, Object::EndpointSlice, |s, want| {
            take_ownership(&mut s.metadata, want.metadata);
            s.address_type = want.address_type;
            s.endpoints = want.endpoints;
            s.ports = want.ports;
        }));
    }
    // What is left is ours but no longer wanted: ports changed, fewer pods, an old incarnation.
    for stale in ours.into_values() {
        actions.push(Action::delete(reference_to(stale), None));
    }
    actions
}

/// Creates `want` when nothing is stored; otherwise replaces `have` with the fields this
/// controller owns copied from `want` (`adopt`), but only if that changes anything. The rest of
/// `have` (resourceVersion, annotations) stays as stored; labels are replaced with the
/// Service's, as Kubernetes does.
fn write<K: Clone + PartialEq>(
    have: Option<&K>,
    want: K,
    wrap: fn(Box<K>) -> Object,
    adopt: impl FnOnce(&mut K, K),
) -> Option<Action> {
    let Some(have) = have else {
        return Some(Action::Create(wrap(Box::new(want))));
    };
    let mut updated = have.clone();
    adopt(&mut updated, want);
    (updated != *have).then(|| Action::Update(wrap(Box::new(updated))))
}

/// The labels and owner references this controller sets on what it writes.
fn take_ownership(meta: &mut ObjectMeta, want: ObjectMeta) {
    meta.labels = want.labels;
    meta.owner_references = want.owner_references;
}

/// Whether this controller writes the Service's endpoints: it has a selector, is not an
/// `ExternalName` alias, and is not being deleted.
pub fn is_managed(service: &Service) -> bool {
    let spec = service.spec.as_ref();
    spec.and_then(|s| s.selector.as_ref()).is_some()
        && spec.and_then(|s| s.type_.as_deref()) != Some("ExternalName")
        && service.metadata.deletion_timestamp.is_none()
}

/// Whether `slice` is one this controller wrote for `service` (by its labels; an old
/// incarnation's slices count too, so they are cleaned up).
pub fn is_slice_of(slice: &EndpointSlice, service: &Service) -> bool {
    slice.metadata.namespace == service.metadata.namespace
        && service_of_slice(slice) == service.metadata.name.as_deref()
}

/// The Endpoints `service` should have (Kubernetes' endpoints controller, `syncService`).
pub fn desired_endpoints(service: &Service, pods: &[Pod]) -> Endpoints {
    let publish_not_ready = publishes_not_ready(service);
    let service_ports = service_ports(service);
    // Each port with the addresses that serve it; `None` stands for "no ports", which only a
    // headless Service may have.
    let mut by_port: BTreeMap<Option<PortKey>, BTreeSet<AddressKey>> = BTreeMap::new();
    let mut addresses: BTreeMap<AddressKey, EndpointAddress> = BTreeMap::new();
    for pod in selected(service, pods) {
        if pod.metadata.deletion_timestamp.is_some() && !publish_not_ready {
            continue;
        }
        let Some(ip) = pod_ip(pod, &address_type(service)) else {
            continue;
        };
        let key = AddressKey {
            ip: ip.clone(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            ready: publish_not_ready || pods::is_ready(pod),
        };
        addresses.insert(
            key.clone(),
            EndpointAddress {
                ip,
                hostname: hostname(service, pod),
                node_name: node_name(pod),
                target_ref: Some(target_ref(pod)),
            },
        );
        if service_ports.is_empty() {
            if is_headless(service) {
                by_port.entry(None).or_default().insert(key);
            }
            continue;
        }
        // A port the pod does not have (a named targetPort none of its containers declares)
        // is left out for that pod alone.
        for port in service_ports.iter().filter_map(|p| resolve(p, pod)) {
            by_port.entry(Some(port)).or_default().insert(key.clone());
        }
    }

    // Ports served by exactly the same addresses share a subset. Subsets come out ordered by
    // their addresses (Kubernetes orders them by a hash: any fixed order will do, as long as
    // equal content compares equal).
    let mut subsets: BTreeMap<BTreeSet<AddressKey>, Vec<PortKey>> = BTreeMap::new();
    for (port, serving) in by_port {
        let ports = subsets.entry(serving).or_default();
        ports.extend(port);
    }
    let subsets: Vec<EndpointSubset> = subsets
        .into_iter()
        .map(|(serving, ports)| {
            let pick = |ready: bool| {
                let list: Vec<EndpointAddress> = serving
                    .iter()
                    .filter(|k| k.ready == ready)
                    .filter_map(|k| addresses.get(k).cloned())
                    .collect();
                non_empty(list)
            };
            EndpointSubset {
                addresses: pick(true),
                not_ready_addresses: pick(false),
                ports: non_empty(ports.into_iter().map(PortKey::endpoint_port).collect()),
            }
        })
        .collect();

    let mut labels = service.metadata.labels.clone().unwrap_or_default();
    set_headless_label(service, &mut labels);
    Endpoints {
        metadata: owned_meta(service, service.metadata.name.clone(), labels),
        subsets: non_empty(subsets),
    }
}

/// The EndpointSlices `service` should have (Kubernetes' EndpointSlice controller), by name.
pub fn desired_slices(service: &Service, pods: &[Pod]) -> Vec<EndpointSlice> {
    let address_type = address_type(service);
    let service_ports = service_ports(service);
    let mut by_ports: BTreeMap<Vec<PortKey>, Vec<Endpoint>> = BTreeMap::new();
    for pod in selected(service, pods) {
        let Some(ip) = pod_ip(pod, &address_type) else {
            continue;
        };
        // As in Kubernetes, a pod that has none of the ports still gets an endpoint, in the
        // slice whose port list is empty.
        let ports: Vec<PortKey> = service_ports
            .iter()
            .filter_map(|p| resolve(p, pod))
            .collect();
        by_ports
            .entry(ports)
            .or_default()
            .push(endpoint(service, pod, ip));
    }
    if by_ports.is_empty() {
        by_ports.insert(Vec::new(), Vec::new());
    }

    let mut labels: BTreeMap<String, String> = service
        .metadata
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| {
            ![SERVICE_NAME_LABEL, MANAGED_BY_LABEL, HEADLESS_LABEL].contains(&k.as_str())
        })
        .collect();
    let service_name = service.metadata.name.clone().unwrap_or_default();
    labels.insert(SERVICE_NAME_LABEL.into(), service_name.clone());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGER.into());
    set_headless_label(service, &mut labels);

    let mut slices = Vec::new();
    for (ports, mut endpoints) in by_ports {
        endpoints.sort_by(|a, b| a.addresses.cmp(&b.addresses));
        let chunks: Vec<Vec<Endpoint>> = if endpoints.is_empty() {
            vec![Vec::new()]
        } else {
            endpoints
                .chunks(MAX_ENDPOINTS_PER_SLICE)
                .map(<[Endpoint]>::to_vec)
                .collect()
        };
        for (i, chunk) in chunks.into_iter().enumerate() {
            let name = format!("{service_name}-{}", slice_suffix(service, &ports, i));
            slices.push(EndpointSlice {
                metadata: owned_meta(service, Some(name), labels.clone()),
                address_type: address_type.clone(),
                endpoints: chunk,
                ports: non_empty(ports.iter().map(PortKey::slice_port).collect()),
            });
        }
    }
    slices
}

/// One address of the Endpoints, as `RepackSubsets` tells addresses apart; ordered by IP
/// then pod uid, as Kubernetes sorts them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct AddressKey {
    ip: String,
    uid: String,
    ready: bool,
}

/// A service port resolved for one pod: the port's name, the pod's port number, protocol and
/// application protocol.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct PortKey {
    name: String,
    port: i32,
    protocol: String,
    app_protocol: Option<String>,
}

impl PortKey {
    fn endpoint_port(self) -> EndpointPort {
        EndpointPort {
            name: Some(self.name).filter(|n| !n.is_empty()),
            port: self.port,
            protocol: Some(self.protocol),
            app_protocol: self.app_protocol,
        }
    }

    /// Slices always carry the name, empty for the unnamed port (as the API server defaults it).
    fn slice_port(&self) -> SlicePort {
        SlicePort {
            name: Some(self.name.clone()),
            port: Some(self.port),
            protocol: Some(self.protocol.clone()),
            app_protocol: self.app_protocol.clone(),
        }
    }
}

/// Whether `service`'s selector picks `pod` (same namespace, every selector label equal). A
/// Service without a selector selects nothing.
pub fn selects(service: &Service, pod: &Pod) -> bool {
    let Some(selector) = service.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return false;
    };
    let labels = pod.metadata.labels.as_ref();
    pod.metadata.namespace == service.metadata.namespace
        && selector
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// The name of the Service a slice of this controller's is for, from its labels.
pub fn service_of_slice(slice: &EndpointSlice) -> Option<&str> {
    let labels = slice.metadata.labels.as_ref()?;
    (labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGER))
        .then(|| labels.get(SERVICE_NAME_LABEL).map(String::as_str))
        .flatten()
}

/// The names of the Services a change to `pod` concerns, among `services` and `slices` of its
/// namespace: those whose selector matches it, and those whose slices list it (its labels may
/// just have stopped matching, or it may be gone).
pub fn services_of_pod(
    services: &[Service],
    slices: &[EndpointSlice],
    pod: &Pod,
) -> BTreeSet<String> {
    let selecting = services
        .iter()
        .filter(|svc| selects(svc, pod))
        .filter_map(|svc| svc.metadata.name.clone());
    let listing = slices
        .iter()
        .filter(|slice| {
            slice.metadata.namespace == pod.metadata.namespace
                && slice.endpoints.iter().any(|e| {
                    e.target_ref.as_ref().and_then(|r| r.name.as_ref())
                        == pod.metadata.name.as_ref()
                })
        })
        .filter_map(|slice| service_of_slice(slice).map(str::to_string));
    selecting.chain(listing).collect()
}

/// The pods `service` puts in its endpoints: selected and not finished.
fn selected<'a>(service: &'a Service, pods: &'a [Pod]) -> impl Iterator<Item = &'a Pod> + 'a {
    pods.iter()
        .filter(|pod| selects(service, pod) && !matches!(pods::phase(pod), "Succeeded" | "Failed"))
}

fn service_ports(service: &Service) -> Vec<ServicePort> {
    service
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default()
}

/// The pod's port for `port` (Kubernetes' `FindPort`): a numeric targetPort as it is (the
/// service's own port when unset), a named one from the first container port with that name
/// and protocol. `None` when the pod has no such port.
fn resolve(port: &ServicePort, pod: &Pod) -> Option<PortKey> {
    let protocol = port.protocol.clone().unwrap_or_else(|| "TCP".into());
    let number = match &port.target_port {
        None => port.port,
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(name)) => {
            pod.spec
                .iter()
                .flat_map(|s| &s.containers)
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol
                })?
                .container_port
        }
    };
    Some(PortKey {
        name: port.name.clone().unwrap_or_default(),
        port: number,
        protocol,
        app_protocol: port.app_protocol.clone(),
    })
}

/// A slice endpoint for a selected pod, with Kubernetes' conditions (`podToEndpoint`).
fn endpoint(service: &Service, pod: &Pod, ip: String) -> Endpoint {
    let serving = pods::is_ready(pod);
    let terminating = pod.metadata.deletion_timestamp.is_some();
    // A terminating pod is never `ready`, so clients that only know `ready` stop sending it
    // new connections; those that know `serving` may still use it while nothing else is up.
    let ready = publishes_not_ready(service) || (serving && !terminating);
    Endpoint {
        addresses: vec![ip],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        hostname: hostname(service, pod),
        node_name: node_name(pod),
        target_ref: Some(target_ref(pod)),
        ..Endpoint::default()
    }
}

fn publishes_not_ready(service: &Service) -> bool {
    service
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false)
}

fn is_headless(service: &Service) -> bool {
    service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

fn set_headless_label(service: &Service, labels: &mut BTreeMap<String, String>) {
    if is_headless(service) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    } else {
        labels.remove(HEADLESS_LABEL);
    }
}

/// `IPv4` or `IPv6`: the service's first IP family.
fn address_type(service: &Service) -> String {
    service
        .spec
        .as_ref()
        .and_then(|s| s.ip_families.as_ref())
        .and_then(|f| f.first().cloned())
        .unwrap_or_else(|| "IPv4".into())
}

/// The pod's IP of `family` (`status.podIPs`, or `status.podIP` from older writers).
fn pod_ip(pod: &Pod, family: &str) -> Option<String> {
    let status = pod.status.as_ref()?;
    let ips = status.pod_ips.iter().flatten().map(|p| p.ip.as_str());
    ips.chain(status.pod_ip.as_deref())
        .find(|ip| !ip.is_empty() && ip.contains(':') == (family == "IPv6"))
        .map(str::to_string)
}

/// A pod's hostname in DNS (`<hostname>.<service>.<ns>.svc`) when it asks for one under this
/// Service: `spec.hostname` set and `spec.subdomain` naming the Service.
fn hostname(service: &Service, pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    (spec.subdomain.as_ref() == service.metadata.name.as_ref())
        .then(|| spec.hostname.clone())
        .flatten()
        .filter(|h| !h.is_empty())
}

fn node_name(pod: &Pod) -> Option<String> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty())
}

/// Kind, namespace, name and uid only: a resourceVersion would change with every pod status
/// write and make every pass a write.
fn target_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..ObjectReference::default()
    }
}

/// Metadata of an object this controller owns for `service`.
fn owned_meta(
    service: &Service,
    name: Option<String>,
    labels: BTreeMap<String, String>,
) -> ObjectMeta {
    ObjectMeta {
        name,
        namespace: service.metadata.namespace.clone(),
        labels: Some(labels).filter(|l| !l.is_empty()),
        owner_references: Some(vec![owners::controller_ref(service)]),
        ..ObjectMeta::default()
    }
}

/// Five name characters fixed by the Service's uid, the slice's ports and its position
/// (FNV-1a over those, seeding the shared name alphabet).
fn slice_suffix(service: &Service, ports: &[PortKey], position: usize) -> String {
    let identity = format!(
        "{}/{ports:?}/{position}",
        service.metadata.uid.as_deref().unwrap_or("")
    );
    let hash = identity.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    NameGenerator::from_seed(hash).suffix()
}

/// `None` for an empty list, as Go omits it, so what is compared is what the store holds.
fn non_empty<T>(list: Vec<T>) -> Option<Vec<T>> {
    Some(list).filter(|l| !l.is_empty())
}

/// The endpoints controller in the loop's shape: keyed by Service (one pass writes its
/// Endpoints and its EndpointSlices), woken by changes of the Service, of its Endpoints and
/// slices (by hand, or a deletion), and of the pods it selects or selected. Kubernetes records
/// no event per pass here, and neither does skiff.
pub struct EndpointsController {
    services: Store<Service>,
    endpoints: Store<Endpoints>,
    slices: Store<EndpointSlice>,
    pods: Store<Pod>,
}

impl Controller for EndpointsController {
    const NAME: &'static str = "endpoint-controller";

    fn new(ctx: &Context, queue: &WorkQueue) -> Self {
        let services = ctx.informers.store::<Service>();
        let endpoints = ctx.informers.store::<Endpoints>();
        let slices = ctx.informers.store::<EndpointSlice>();
        let pods = ctx.informers.store::<Pod>();
        let q = queue.clone();
        services.on_change(move |svc: &Service| q.add(&key_of(&svc.metadata)));
        let q = queue.clone();
        endpoints.on_change(move |ep: &Endpoints| q.add(&key_of(&ep.metadata)));
        let q = queue.clone();
        slices.on_change(move |slice: &EndpointSlice| {
            if let Some(service) = service_of_slice(slice) {
                let ns = slice.metadata.namespace.as_deref().unwrap_or("");
                q.add(&format!("{ns}/{service}"));
            }
        });
        let (q, svc_store, slice_store) = (queue.clone(), services.clone(), slices.clone());
        pods.on_change(move |pod: &Pod| {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("");
            let (services, slices) = (svc_store.in_namespace(ns), slice_store.in_namespace(ns));
            for name in services_of_pod(&services, &slices, pod) {
                q.add(&format!("{ns}/{name}"));
            }
        });
        EndpointsController {
            services,
            endpoints,
            slices,
            pods,
        }
    }

    fn reconcile(&mut self, key: &str, _now: Timestamp) -> Vec<Action> {
        let Some(service) = self.services.get(key) else {
            return Vec::new();
        };
        let ns = service.metadata.namespace.as_deref().unwrap_or("");
        reconcile(
            &service,
            &self.pods.in_namespace(ns),
            self.endpoints.get(key).as_ref(),
            &self.slices.in_namespace(ns),
        )
    }
}
