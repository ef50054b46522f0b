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
use serde_json::json;

use crate::app::App;
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
/// endpoint (logs, exec), signed by the cluster CA, so the API server can verify it is talking
/// to the node it means. The key travels back over the TLS connection the node token opened.
pub async fn certificate(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    axum::Json(request): axum::Json<CertificateRequest>,
) -> Response {
    let ca = match crate::pki::ClusterCa::from_pem(
        app.cluster.ca_cert_pem.clone(),
        app.cluster.ca_key_pem.clone(),
    ) {
        Ok(ca) => ca,
        Err(e) => {
            return respond::error(skiff_api::ApiError::Internal(format!(
                "the cluster CA: {e}"
            )))
        }
    };
    let mut sans = vec![name.clone()];
    sans.extend(request.addresses);
    match crate::pki::issue_server_cert(&ca, &sans) {
        Ok((cert, key)) => respond::json(
            StatusCode::OK,
            &json!({"cert": cert, "key": key, "ca": app.cluster.ca_cert_pem}),
        ),
        Err(e) => respond::error(skiff_api::ApiError::BadRequest(format!(
            "issuing a certificate for node {name}: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
