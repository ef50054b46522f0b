//! `GET /skiff/v1/cluster`: the cluster's address ranges, for agents.
//!
//! An agent needs the cluster CIDR (every node's pod range together) to tell pod → pod traffic,
//! which keeps the pod's source address across hosts, from traffic leaving the cluster, which
//! is masqueraded. The ranges are flags of `skiff server` (`--cluster-cidr`, `--service-cidr`),
//! so agents ask a server rather than repeat them.
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use crate::app::App;
use crate::respond;

/// k3s's default `--cluster-cidr`; each node gets a /24 of it.
pub const DEFAULT_CLUSTER_CIDR: &str = "10.42.0.0/16";

/// `{"clusterCIDR": "10.42.0.0/16", "serviceCIDR": "10.43.0.0/16"}`.
pub async fn get(State(app): State<Arc<App>>) -> Response {
    respond::json(
        StatusCode::OK,
        &json!({
            "clusterCIDR": app.cluster_cidr,
            "serviceCIDR": app.services.cidr(),
        }),
    )
}
