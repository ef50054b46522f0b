//! Node heartbeats, kept in memory on the leader.
//!
//! kubelet renews a Lease object every 10 s, which in Kubernetes is an etcd write. On an edge
//! cluster with flash storage that is wear for no information: skiff's agents POST
//! `/skiff/v1/nodes/NAME/heartbeat` to the leader, which only notes the time. The node
//! lifecycle controller (on the leader) reads these times and writes to the store only when a
//! node's state changes. A new leader starts with an empty table and notes when it took over
//! (the entry with the empty name); the controller counts a node it has not heard from yet as
//! seen at that moment only if the node's stored `Ready` is `True`, so a failover neither makes
//! healthy nodes look dead nor dead ones look alive (skiff-controllers' `nodelifecycle`,
//! "Leader changes").
//!
//! Clients still find the Leases they expect: `kubectl describe node` reads
//! `kube-node-lease/leases/NODE`, and each Node has one there, made up on each read from this
//! table by the Lease strategy ([`crate::registry::leases`]) rather than stored.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use std::net::IpAddr;

use serde_json::{json, Value};
use skiff_api::ApiError;

use crate::app::App;
use crate::auth::tokens;
use crate::respond;

/// When each node was last heard from.
#[derive(Debug)]
pub struct Leases {
    /// Heartbeat times, and when the table (re)started.
    seen: Mutex<(HashMap<String, Instant>, Instant)>,
}

impl Default for Leases {
    fn default() -> Self {
        Leases {
            seen: Mutex::new((HashMap::new(), Instant::now())),
        }
    }
}

impl Leases {
    pub fn renew(&self, node: &str) {
        self.lock().0.insert(node.to_string(), Instant::now());
    }

    /// Every node's last heartbeat as a wall-clock time, for the nodes heard from since this
    /// table started; the entry with the empty name is when it started. A node missing from
    /// it has sent nothing to this leader: whether it gets a grace period is the node lifecycle
    /// controller's decision, not the table's.
    pub fn as_timestamps(&self) -> std::collections::BTreeMap<String, jiff::Timestamp> {
        let now = jiff::Timestamp::now();
        let table = self.lock();
        let at = |instant: Instant| {
            let ago = jiff::SignedDuration::try_from(instant.elapsed()).unwrap_or_default();
            now - ago
        };
        let mut out: std::collections::BTreeMap<String, jiff::Timestamp> =
            table.0.iter().map(|(k, v)| (k.clone(), at(*v))).collect();
        out.insert(String::new(), at(table.1));
        out
    }

    /// Forgets all heartbeats and notes the time: called when this member becomes leader (what
    /// an earlier term of its own heard may be stale).
    pub fn reset(&self) {
        *self.lock() = (HashMap::new(), Instant::now());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (HashMap<String, Instant>, Instant)> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `POST /skiff/v1/nodes/{name}/heartbeat`: the leader notes the time; followers redirect.
pub async fn heartbeat(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    let path = format!("/skiff/v1/nodes/{name}/heartbeat");
    if let Some(redirect) = crate::cluster::redirect_to_leader(&app, &path) {
        return redirect;
    }
    app.leases.renew(&name);
    respond::json(StatusCode::OK, &json!({"node": name}))
}

/// What an agent asks its serving certificate for.
#[derive(Debug, serde::Deserialize)]
pub struct CertificateRequest {
    /// Addresses the API server will reach the agent at.
    pub addresses: Vec<String>,
}

/// `POST /skiff/v1/nodes/{name}/certificate`: a serving certificate for the agent's HTTPS
/// endpoint (logs, exec), signed by the node CA, so the API server can verify it is talking
/// to the node it means. The key travels back over the TLS connection the node's own
/// credential opened (the auth middleware lets a node ask only for its own name).
///
/// The node CA is not the cluster CA clients trust for the API server, so no node certificate
/// passes for a server's. The certificate names the node and the IP addresses it asked for:
/// never an unspecified, link-local or multicast address, and, once the Node is registered,
/// only addresses it reports.
pub async fn certificate(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    axum::Json(request): axum::Json<CertificateRequest>,
) -> Response {
    let ca = match crate::pki::ClusterCa::from_pem(
        app.cluster.node_ca_cert_pem.clone(),
        app.cluster.node_ca_key_pem.clone(),
    ) {
        Ok(ca) => ca,
        Err(e) => {
            return respond::error(ApiError::Internal(format!("the node CA: {e}")));
        }
    };
    let node = app.store.get(&skiff_store::object_key("nodes", "", &name));
    if let Err(e) = check_certificate_request(&name, &request.addresses, node.as_deref()) {
        return respond::error(e);
    }
    let mut sans = vec![name.clone()];
    sans.extend(request.addresses);
    match crate::pki::issue_node_serving_cert(&ca, &sans, app.node_cert_validity) {
        Ok((cert, key, not_after)) => respond::json(
            StatusCode::OK,
            &json!({"cert": cert, "key": key, "ca": app.cluster.node_ca_cert_pem, "notAfter": not_after}),
        ),
        Err(e) => respond::error(ApiError::BadRequest(format!(
            "issuing a certificate for node {name}: {e}"
        ))),
    }
}

/// Refuses the names and addresses a node may not have in its serving certificate.
/// `node`: the stored Node, if registered.
pub fn check_certificate_request(
    name: &str,
    addresses: &[String],
    node: Option<&Value>,
) -> Result<(), ApiError> {
    let reported: Option<Vec<&str>> = node.map(|node| {
        node.pointer("/status/addresses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|a| a.get("address").and_then(Value::as_str))
            .collect()
    });
    for address in addresses {
        let refuse = |why: &str| {
            Err(ApiError::Forbidden(format!(
                "node {name:?} may not have {address:?} in its serving certificate: {why}"
            )))
        };
        let Ok(ip) = address.parse::<IpAddr>() else {
            return refuse("only IP addresses are signed besides the node's name");
        };
        let special = ip.is_unspecified()
            || ip.is_multicast()
            || matches!(ip, IpAddr::V4(v4) if v4.is_link_local() || v4.is_broadcast())
            || matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80);
        if special {
            return refuse("unspecified, link-local and multicast addresses are refused");
        }
        if let Some(reported) = &reported {
            if !reported
                .iter()
                .any(|r| r.parse::<IpAddr>().ok() == Some(ip))
            {
                return refuse("the Node does not report it in status.addresses");
            }
        }
    }
    Ok(())
}

/// `POST /skiff/v1/nodes/{name}/credential`, with the node join token: the node's own token,
/// `system:node:NAME` in `system:nodes`, which the Node authorizer limits to that node's
/// objects (see [`crate::auth::node`]). A name gets one credential: another machine with the
/// join token cannot take over a node that has joined. To let a reinstalled machine join
/// under its old name, delete its token Secret (`skiff token delete ID`, the Secret labelled
/// `skiff.io/node=NAME` in `kube-system`).
pub async fn credential(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    let path = format!("/skiff/v1/nodes/{name}/credential");
    if let Some(redirect) = crate::cluster::redirect_to_leader(&app, &path) {
        return redirect;
    }
    if let Some(problem) = skiff_api::names::dns1123_subdomain(&name)
        .into_iter()
        .next()
    {
        return respond::error(ApiError::BadRequest(format!(
            "node name {name:?}: {problem}"
        )));
    }
    let user = format!("{}{name}", crate::auth::user::NODE_PREFIX);
    let taken = app
        .store
        .list(&skiff_store::key_prefix("secrets", Some(tokens::NAMESPACE)))
        .0
        .iter()
        .find(|s| {
            s.pointer("/metadata/labels/skiff.io~1node")
                .and_then(Value::as_str)
                == Some(&name)
        })
        .and_then(|s| {
            s.pointer("/metadata/name")
                .and_then(Value::as_str)
                .map(str::to_string)
        });
    if let Some(secret) = taken {
        return respond::error(ApiError::Conflict {
            resource: "nodes".into(),
            name: name.clone(),
            message: format!(
                "the node already has a credential (secret {}/{secret}); a machine joining \
                 under a taken name is refused: delete that secret to let a reinstalled node \
                 join again",
                tokens::NAMESPACE
            ),
        });
    }
    let groups = vec![crate::auth::user::NODES.to_string()];
    let (token, mut secret) = match tokens::mint(&user, &groups, None) {
        Ok(minted) => minted,
        Err(_) => return respond::error(ApiError::Internal("no randomness for a token".into())),
    };
    secret["metadata"]["labels"]["skiff.io/node"] = json!(name);
    secret["metadata"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
    secret["metadata"]["creationTimestamp"] = json!(crate::objects::now());
    let key = skiff_store::object_key(
        "secrets",
        tokens::NAMESPACE,
        secret["metadata"]["name"].as_str().unwrap_or(""),
    );
    match app
        .store
        .propose_one(skiff_store::Op::Create {
            key,
            object: secret,
        })
        .await
    {
        Ok(Ok(_)) => respond::json(StatusCode::CREATED, &json!({"node": name, "token": token})),
        Ok(Err(e)) => respond::error(ApiError::Internal(e.to_string())),
        Err(e) => respond::error(respond::store_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_certificate_names_only_what_the_node_holds() {
        let ok = |addresses: &[&str], node: Option<&Value>| {
            let addresses: Vec<String> = addresses.iter().map(|a| a.to_string()).collect();
            check_certificate_request("edge-1", &addresses, node).is_ok()
        };
        assert!(
            ok(&["10.0.0.7"], None),
            "a first certificate, before registering"
        );
        assert!(!ok(&["0.0.0.0"], None));
        assert!(!ok(&["169.254.169.254"], None));
        assert!(!ok(&["api.example"], None), "names besides its own");
        let node =
            json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.7"}]}});
        assert!(ok(&["10.0.0.7"], Some(&node)));
        assert!(!ok(&["10.0.0.8"], Some(&node)), "not one it reports");
    }

    #[test]
    fn the_table_holds_real_heartbeats_and_its_start_only() {
        let leases = Leases::default();
        leases.renew("a");
        let table = leases.as_timestamps();
        assert_eq!(
            table.keys().map(String::as_str).collect::<Vec<_>>(),
            ["", "a"]
        );
        assert!(table[""] <= table["a"]);
        // A new term forgets what an earlier one heard: only the start is left, and it is
        // later than the forgotten heartbeat.
        std::thread::sleep(std::time::Duration::from_millis(5));
        leases.reset();
        let after = leases.as_timestamps();
        assert_eq!(after.keys().map(String::as_str).collect::<Vec<_>>(), [""]);
        assert!(after[""] > table["a"]);
    }
}
