//! Cluster membership over HTTPS: joining servers, listing and removing members.
//!
//! ## Expected flow of a join (`skiff server --join URL --token K10<hash>::server:<secret>`)
//! 1. The joiner fetches `/cacerts` and checks its SHA-256 against the hash in the token: from
//!    here on it trusts only that CA, so another endpoint cannot pose as the cluster.
//! 2. `POST /skiff/v1/join` (bearer: the secret) reserves a member id and returns the CA key and
//!    the admin token, so the joiner can issue its own serving certificate and kubeconfig.
//! 3. The joiner opens its store with that id and starts serving (Raft traffic included).
//! 4. `POST /skiff/v1/members` asks the leader to add it: as a learner first, which returns once
//!    it has caught up (from the log, or a snapshot when the log was compacted), then as a voter.
//!
//! Membership changes must run on the leader; a follower answers `307 Temporary Redirect` to the
//! leader's address, and skiff's client follows it with the same credentials.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use skiff_api::status::ApiError;
use skiff_store::StoreError;

use crate::app::{empty, App};
use crate::respond;

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinRequest {
    pub name: String,
    /// The URL the joiner will serve at (`https://10.0.0.6:6443`).
    pub addr: String,
}

/// What a joining server receives.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinGrant {
    pub id: u64,
    pub ca_cert: String,
    pub ca_key: String,
    pub node_ca_cert: String,
    pub node_ca_key: String,
    pub service_account_key: String,
    /// The EncryptionConfiguration Secrets are sealed with (every member must have the keys).
    pub encryption_config: String,
    pub admin_token: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddMember {
    pub id: u64,
    pub name: String,
    pub addr: String,
}

/// `None` when this member leads; otherwise the redirect (or 503) to answer with.
pub(crate) fn redirect_to_leader(app: &App, path: &str) -> Option<Response> {
    match app.store.leader() {
        Some((id, _)) if id == app.store.id() => None,
        Some((_, addr)) => {
            let mut response = empty(StatusCode::TEMPORARY_REDIRECT);
            if let Ok(location) = format!("{}{path}", addr.trim_end_matches('/')).parse() {
                response.headers_mut().insert(header::LOCATION, location);
            }
            Some(response)
        }
        None => Some(respond::error(ApiError::ServiceUnavailable(
            "no Raft leader elected".into(),
        ))),
    }
}

pub async fn join(State(app): State<Arc<App>>, Json(request): Json<JoinRequest>) -> Response {
    if let Some(redirect) = redirect_to_leader(&app, "/skiff/v1/join") {
        return redirect;
    }
    if request.name.is_empty() || !request.addr.starts_with("https://") {
        return respond::error(ApiError::BadRequest(
            "join needs a name and an addr URL (https://HOST:PORT)".into(),
        ));
    }
    if app.store.members().iter().any(|m| m.addr == request.addr) {
        return respond::error(ApiError::AlreadyExists {
            resource: "members".into(),
            name: request.addr,
        });
    }
    let id = {
        let mut reserved = app.reserved_ids.lock().unwrap_or_else(|p| p.into_inner());
        let id = app.store.next_member_id().max(*reserved + 1);
        *reserved = id;
        id
    };
    tracing::info!(id, name = %request.name, addr = %request.addr, "granting join");
    let grant = JoinGrant {
        id,
        ca_cert: app.cluster.ca_cert_pem.clone(),
        ca_key: app.cluster.ca_key_pem.clone(),
        node_ca_cert: app.cluster.node_ca_cert_pem.clone(),
        node_ca_key: app.cluster.node_ca_key_pem.clone(),
        service_account_key: app.cluster.service_account_key_pem.clone(),
        encryption_config: app.cluster.encryption_config(),
        admin_token: app.admin_token.clone(),
    };
    respond::json(StatusCode::OK, &json!(grant))
}

pub async fn add(State(app): State<Arc<App>>, Json(request): Json<AddMember>) -> Response {
    if let Some(redirect) = redirect_to_leader(&app, "/skiff/v1/members") {
        return redirect;
    }
    tracing::info!(id = request.id, addr = %request.addr, "adding member");
    match app
        .store
        .add_member(request.id, &request.name, &request.addr)
        .await
    {
        Ok(()) => members(&app),
        Err(e) => respond::error(membership_error(e, request.id)),
    }
}

/// A change that could not be made now is the client's to retry: 409 while another change is
/// being committed, 503 while there is no leader or the learner is still catching up.
fn membership_error(e: StoreError, id: u64) -> ApiError {
    match e {
        StoreError::MembershipBusy(message) => ApiError::Conflict {
            resource: "members".into(),
            name: id.to_string(),
            message,
        },
        other => crate::respond::store_error(other),
    }
}

/// The members, and a warning when the voters cannot survive the loss of one server.
fn members(app: &App) -> Response {
    respond::json(
        StatusCode::OK,
        &json!({
            "members": app.store.members(),
            "warning": app.store.fault_tolerance_warning(),
        }),
    )
}

pub async fn list(State(app): State<Arc<App>>) -> Response {
    members(&app)
}

pub async fn remove(State(app): State<Arc<App>>, Path(id): Path<u64>) -> Response {
    if let Some(redirect) = redirect_to_leader(&app, &format!("/skiff/v1/members/{id}")) {
        return redirect;
    }
    if !app.store.members().iter().any(|m| m.id == id) {
        return respond::error(ApiError::NotFound {
            resource: "members".into(),
            name: id.to_string(),
        });
    }
    tracing::info!(id, "removing member");
    match app.store.remove_member(id).await {
        Ok(()) => members(&app),
        Err(e) => respond::error(membership_error(e, id)),
    }
}
