//! The `kubernetes` Service in `default`: how a pod finds the API servers.
//!
//! In-cluster clients (client-go's and the Python client's `load_incluster_config`) connect to
//! `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`, the first address of the service
//! CIDR (`10.43.0.1:443`), trusting the CA projected into the pod. The leader keeps three objects
//! true, as kube-apiserver's endpoint reconciler does:
//!
//! ```text
//! Service default/kubernetes        clusterIP 10.43.0.1, port https 443 → the servers' port
//! Endpoints default/kubernetes      every member's address (skip-mirror)
//! EndpointSlice default/kubernetes  the same, which the service proxy and DNS read
//! ```
//!
//! The addresses are the members' advertised URLs. Members whose ports differ (several servers
//! on one machine) get one slice per port. A member that is down stays listed until it is
//! removed from the cluster: the service proxy skips an endpoint that refuses and tries the next,
//! so a client notices only a slower connect. The objects are written straight to the store (the
//! address `.1` is outside what the Service allocator hands out), and put back if a user deletes
//! or changes them.
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use serde_json::{json, Value};
use skiff_store::{object_key, revision_of, MemberInfo, Op, OpError};

use crate::app::App;
use crate::objects;
use crate::respond;
use skiff_api::ApiError;

pub const NAMESPACE: &str = "default";
pub const NAME: &str = "kubernetes";
/// The port clients use (the Service's), whatever port the servers listen on.
pub const SERVICE_PORT: u16 = 443;
const PORT_NAME: &str = "https";
const SERVICES: &str = "services";
const ENDPOINTS: &str = "endpoints";
const SLICES: &str = "endpointslices.discovery.k8s.io";
/// The manager label of the slices written here (the endpoints controller leaves them alone:
/// the Service has no selector).
const MANAGER: &str = "skiff-apiserver";

/// The DNS names the API servers' certificate must hold so in-cluster clients can verify it.
pub fn subject_alt_names(service_ip: Ipv4Addr) -> Vec<String> {
    vec![
        service_ip.to_string(),
        "kubernetes".into(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        "kubernetes.default.svc.cluster.local".into(),
    ]
}

/// The members' API addresses (`https://IP:PORT`), in member order; names that are not
/// addresses are left out (a slice holds addresses only).
fn member_addresses(members: &[MemberInfo]) -> Vec<SocketAddr> {
    members
        .iter()
        .filter_map(|m| {
            m.addr
                .strip_prefix("https://")
                .and_then(|a| a.trim_end_matches('/').parse::<SocketAddr>().ok())
        })
        .filter(|a| a.is_ipv4())
        .collect()
}

/// What the three kinds should hold: `(qualified resource, name, object)`.
pub fn desired(service_ip: Ipv4Addr, members: &[MemberInfo]) -> Vec<(&'static str, String, Value)> {
    let addresses = member_addresses(members);
    let mut by_port: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for a in &addresses {
        let ips = by_port.entry(a.port()).or_default();
        if !ips.contains(&a.ip().to_string()) {
            ips.push(a.ip().to_string());
        }
    }
    // The Service's targetPort is the port most members listen on (the leader's on a tie).
    let target_port = by_port
        .iter()
        .max_by_key(|(port, ips)| (ips.len(), std::cmp::Reverse(**port)))
        .map(|(port, _)| *port)
        .unwrap_or(6443);
    let labels = json!({"component": "apiserver", "provider": "kubernetes"});
    let ip = service_ip.to_string();
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": ip,
            "clusterIPs": [ip],
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "internalTrafficPolicy": "Cluster",
            "sessionAffinity": "None",
            "ports": [{"name": PORT_NAME, "port": SERVICE_PORT, "protocol": "TCP", "targetPort": target_port}],
        },
        "status": {"loadBalancer": {}},
    });
    let port_entry = |port: u16| json!({"name": PORT_NAME, "port": port, "protocol": "TCP"});
    let subsets: Vec<Value> = by_port
        .iter()
        .map(|(port, ips)| {
            json!({
                "addresses": ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>(),
                "ports": [port_entry(*port)],
            })
        })
        .collect();
    let endpoints = json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {
            "name": NAME,
            "namespace": NAMESPACE,
            "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"},
        },
        "subsets": subsets,
    });
    let mut out = vec![
        (SERVICES, NAME.to_string(), service),
        (ENDPOINTS, NAME.to_string(), endpoints),
    ];
    for (i, (port, ips)) in by_port.iter().enumerate() {
        // The usual case (every server on one port) is one slice named like the Service.
        let name = if i == 0 {
            NAME.to_string()
        } else {
            format!("{NAME}-{port}")
        };
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": name,
                "namespace": NAMESPACE,
                "labels": {
                    "kubernetes.io/service-name": NAME,
                    "endpointslice.kubernetes.io/managed-by": MANAGER,
                },
            },
            "addressType": "IPv4",
            "endpoints": ips.iter().map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}})).collect::<Vec<_>>(),
            "ports": [port_entry(*port)],
        });
        out.push((SLICES, name, slice));
    }
    out
}

/// The fields this module owns, to compare a stored object with the wanted one.
fn owned(object: &Value) -> Value {
    json!({
        "labels": object.pointer("/metadata/labels"),
        "spec": object.get("spec"),
        "subsets": object.get("subsets"),
        "endpoints": object.get("endpoints"),
        "ports": object.get("ports"),
        "addressType": object.get("addressType"),
    })
}

/// The writes that make the store hold `wanted`: create the missing, replace the changed
/// (keeping their metadata), delete slices of ours no longer wanted.
pub fn plan(store: &skiff_store::Store, wanted: Vec<(&'static str, String, Value)>) -> Vec<Op> {
    let mut ops = Vec::new();
    let mut wanted_slices = Vec::new();
    for (resource, name, mut object) in wanted {
        let key = object_key(resource, NAMESPACE, &name);
        if resource == SLICES {
            wanted_slices.push(key.clone());
        }
        match store.get(&key) {
            None => {
                object["metadata"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
                object["metadata"]["creationTimestamp"] = json!(objects::now());
                ops.push(Op::Create { key, object });
            }
            Some(current) if owned(&current) != owned(&object) => {
                let mut metadata = current["metadata"].clone();
                metadata["labels"] = object["metadata"]["labels"].clone();
                object["metadata"] = metadata;
                ops.push(Op::Update {
                    key,
                    object,
                    expected_revision: revision_of(&current),
                });
            }
            Some(_) => {}
        }
    }
    let (slices, _) = store.list(&skiff_store::key_prefix(SLICES, Some(NAMESPACE)));
    for slice in slices {
        let ours = slice
            .pointer("/metadata/labels/endpointslice.kubernetes.io~1managed-by")
            .and_then(Value::as_str)
            == Some(MANAGER);
        let name = slice
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let key = object_key(SLICES, NAMESPACE, name);
        if ours && !wanted_slices.contains(&key) {
            ops.push(Op::Delete {
                key,
                expected_uid: None,
                expected_revision: revision_of(&slice),
            });
        }
    }
    ops
}

/// One pass on the leader: the three kinds made true from the current members. False when
/// there is nothing to do yet (no `default` namespace).
pub async fn reconcile(app: &App) -> Result<bool, ApiError> {
    if app
        .store
        .get(&object_key("namespaces", "", NAMESPACE))
        .is_none()
    {
        return Ok(false);
    }
    let wanted = desired(app.services.kubernetes_ip(), &app.store.members());
    for op in plan(&app.store, wanted) {
        match app
            .store
            .propose_one(op)
            .await
            .map_err(respond::store_error)?
        {
            // Someone wrote in between: the next pass looks again.
            Ok(_)
            | Err(OpError::AlreadyExists { .. })
            | Err(OpError::Conflict { .. })
            | Err(OpError::NotFound { .. }) => {}
            Err(e) => return Err(ApiError::Internal(e.to_string())),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, addr: &str) -> MemberInfo {
        MemberInfo {
            id,
            name: format!("s{id}"),
            addr: addr.into(),
            role: "voter",
            leader: id == 1,
        }
    }

    #[test]
    fn one_slice_when_the_servers_share_a_port_and_one_per_port_otherwise() {
        let ip = Ipv4Addr::new(10, 43, 0, 1);
        let same = desired(
            ip,
            &[
                member(1, "https://10.0.0.1:6443"),
                member(2, "https://10.0.0.2:6443"),
                member(3, "not-an-address"),
            ],
        );
        let kinds: Vec<(&str, &str)> = same.iter().map(|(r, n, _)| (*r, n.as_str())).collect();
        assert_eq!(
            kinds,
            [
                (SERVICES, "kubernetes"),
                (ENDPOINTS, "kubernetes"),
                (SLICES, "kubernetes")
            ]
        );
        assert_eq!(same[0].2["spec"]["clusterIP"], "10.43.0.1");
        assert_eq!(same[0].2["spec"]["ports"][0]["port"], 443);
        assert_eq!(same[0].2["spec"]["ports"][0]["targetPort"], 6443);
        assert_eq!(
            same[2].2["endpoints"],
            json!([
                {"addresses": ["10.0.0.1"], "conditions": {"ready": true}},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": true}},
            ])
        );
        assert_eq!(same[1].2["subsets"][0]["ports"][0]["port"], 6443);

        let mixed = desired(
            ip,
            &[
                member(1, "https://127.0.0.1:40001"),
                member(2, "https://127.0.0.1:40002"),
            ],
        );
        let names: Vec<&str> = mixed.iter().map(|(_, n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["kubernetes", "kubernetes", "kubernetes", "kubernetes-40002"]
        );
        assert_eq!(mixed[1].2["subsets"].as_array().map(Vec::len), Some(2));
        assert_eq!(mixed[3].2["ports"][0]["port"], 40002);
    }

    #[test]
    fn the_certificate_names_the_service() {
        let sans = subject_alt_names(Ipv4Addr::new(10, 43, 0, 1));
        assert!(sans.contains(&"10.43.0.1".to_string()));
        assert!(sans.contains(&"kubernetes.default.svc".to_string()));
    }
}
