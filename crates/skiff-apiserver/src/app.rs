//! The application: shared state, the router, authentication, and serving over TLS.
//!
//! One HTTPS port carries everything a skiff server answers: the Kubernetes API, discovery and
//! OpenAPI, health and metrics, cluster membership, and (as gRPC over HTTP/2) the Raft traffic
//! between servers.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use serde_json::json;
use skiff_api::status::ApiError;
use skiff_store::Store;
use tokio_util::sync::CancellationToken;

use crate::auth::Requester;
use crate::metrics::{Counted, Metrics, RaftGauges};
use crate::query::Params;
use crate::target::{self, Target};
use crate::{cluster, discovery, objects, openapi, respond, subresources, tables, watch};

/// Requests bigger than this are refused with 413, as Kubernetes' 3 MiB limit does.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// The Kubernetes minor version skiff's types come from (k8s-openapi's `v1_33` feature).
/// kubectl's dispatcher runs the kubectl matching this minor version.
pub const KUBERNETES_MINOR: &str = "33";

/// Secrets that let another server join this cluster.
pub struct ClusterSecrets {
    /// The shared secret in the join token; servers present it to each other.
    pub secret: String,
    pub ca_cert_pem: String,
    /// Handed to a joining server (over TLS pinned to the CA, after it proved the secret) so it
    /// can issue its own serving certificate.
    pub ca_key_pem: String,
    /// The node CA: signs node agents' serving certificates, which only the API server trusts
    /// (see [`crate::pki::ClusterCa::load_or_create_node_ca`]).
    pub node_ca_cert_pem: String,
    pub node_ca_key_pem: String,
    /// Signs ServiceAccount tokens (PEM, P-256); handed to joining servers like the CA key.
    pub service_account_key_pem: String,
    /// The EncryptionConfiguration of Secrets at rest (see [`crate::pki::encryption`]);
    /// replaced by key rotation.
    pub encryption_config: std::sync::RwLock<String>,
}

impl ClusterSecrets {
    /// The EncryptionConfiguration in force.
    pub fn encryption_config(&self) -> String {
        self.encryption_config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Everything request handlers share.
pub struct App {
    pub store: Store,
    pub metrics: Metrics,
    /// The bearer token of the cluster administrator (in the kubeconfig).
    pub admin_token: String,
    pub cluster: ClusterSecrets,
    /// Cancelled when the server shuts down; long-running responses (watches) end on it.
    pub shutdown: CancellationToken,
    /// Member ids handed out by `/skiff/v1/join` but not yet in the membership, so two servers
    /// joining at once do not get the same id.
    pub reserved_ids: Mutex<u64>,
    /// The bearer token agents present (see [`crate::pki::node_secret`]).
    pub node_secret: String,
    /// When each node last sent a heartbeat to this member (only the leader's matters).
    pub leases: crate::nodes::Leases,
    /// The service CIDR and node port allocators (see [`crate::service_ips`]).
    pub services: crate::service_ips::ServiceNetwork,
    /// Every node's pod range together (`--cluster-cidr`), served to agents at
    /// `/skiff/v1/cluster` so they masquerade only traffic that leaves it.
    pub cluster_cidr: String,
    /// How this server reaches agents for logs and exec.
    pub agents: crate::pod_streams::AgentClients,
    /// The agents' latest measurements (`kubectl top`, the HPA), in memory only.
    pub measurements: crate::measurements::Measurements,
    /// The Pod Security level enforced in namespaces that do not set one (`--pod-security`).
    pub pod_security: skiff_api::pod_security::Level,
    /// This server's certificate and key (PEM), shown to agents, which let in only callers
    /// with a cluster-CA certificate (see skiff-agent's `server.rs`).
    pub agent_identity_pem: Option<String>,
    /// How many requests may be in flight (`--max-requests-inflight`,
    /// `--max-mutating-requests-inflight`).
    pub inflight: crate::inflight::Inflight,
    /// Watches open at once per user (`--max-watches-per-user`).
    pub watch_caps: Arc<crate::inflight::WatchCaps>,
    /// Where each request is recorded (`--audit-log-path`); `None`: no audit log.
    pub audit: Option<crate::audit::AuditLog>,
    /// What ServiceAccount tokens are signed with; `None` serves no tokens (unit tests).
    pub service_account_key: Option<crate::auth::service_accounts::SigningKey>,
    /// Where this member keeps its EncryptionConfiguration (`DATA_DIR/tls/encryption-config.yaml`);
    /// `None`: not on disk (unit tests), so keys cannot be rotated.
    pub encryption_config_path: Option<std::path::PathBuf>,
    /// How long node agents' serving certificates last (`--node-cert-validity`); agents renew
    /// them at about two thirds of that.
    pub node_cert_validity: std::time::Duration,
}

/// A year, as kubelet's serving certificates from the cluster signer.
pub const DEFAULT_NODE_CERT_VALIDITY: std::time::Duration =
    std::time::Duration::from_secs(365 * 24 * 3600);

impl App {
    pub fn new(store: Store, admin_token: String, cluster: ClusterSecrets) -> App {
        let node_secret = crate::pki::node_secret(&cluster.secret);
        App {
            store,
            metrics: Metrics::new(),
            admin_token,
            cluster,
            shutdown: CancellationToken::new(),
            reserved_ids: Mutex::new(0),
            node_secret,
            leases: crate::nodes::Leases::default(),
            services: crate::service_ips::ServiceNetwork::default(),
            cluster_cidr: crate::cluster_network::DEFAULT_CLUSTER_CIDR.to_string(),
            agents: Default::default(),
            measurements: Default::default(),
            pod_security: skiff_api::pod_security::Level::Baseline,
            service_account_key: None,
            encryption_config_path: None,
            node_cert_validity: DEFAULT_NODE_CERT_VALIDITY,
            audit: None,
            agent_identity_pem: None,
            inflight: crate::inflight::Inflight::default(),
            watch_caps: crate::inflight::WatchCaps::new(DEFAULT_WATCHES_PER_USER),
        }
    }
}

/// The whole HTTP surface of a skiff server.
pub fn router(app: Arc<App>) -> Router {
    let api = Router::new()
        .route("/version", get(version))
        .route("/version/", get(version))
        .route("/healthz", get(live))
        .route("/livez", get(live))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/cacerts", get(cacerts))
        .route("/api", get(api_root))
        .route("/api/v1", get(core_resources))
        .route("/apis", get(apis_root))
        .route("/apis/{group}", get(api_group))
        .route("/apis/{group}/{version}", get(group_resources))
        .route("/openapi/v3", get(openapi_index))
        .route("/openapi/v3/{*path}", get(openapi_document))
        .route("/skiff/v1/join", post(cluster::join))
        .route("/skiff/v1/members", get(cluster::list).post(cluster::add))
        .route("/skiff/v1/members/{id}", delete(cluster::remove))
        .route(
            "/skiff/v1/nodes/{name}/heartbeat",
            post(crate::nodes::heartbeat),
        )
        .route(
            "/skiff/v1/nodes/{name}/certificate",
            post(crate::nodes::certificate),
        )
        .route(
            "/skiff/v1/nodes/{name}/credential",
            post(crate::nodes::credential),
        )
        .route("/skiff/v1/cluster", get(crate::cluster_network::get))
        .route(
            "/skiff/v1/encryption",
            get(crate::secrets_encryption::status).put(crate::secrets_encryption::install),
        )
        .route(
            "/skiff/v1/encryption/rotate",
            post(crate::secrets_encryption::rotate),
        )
        .fallback(resource_request)
        .layer(middleware::from_fn_with_state(app.clone(), observe))
        .layer(middleware::from_fn_with_state(
            app.clone(),
            crate::auth::middleware,
        ))
        .with_state(app.clone());
    // Raft traffic authenticates with the cluster secret in the service's interceptor, on its
    // headers, before a body is read (see skiff_store::service::PeerAuth).
    let raft = app.store.raft_service();
    api.route_service("/skiff.raft.v1.RaftTransport/{*method}", raft)
}

async fn version() -> Response {
    respond::json(
        StatusCode::OK,
        &json!({
            "major": "1",
            "minor": KUBERNETES_MINOR,
            "gitVersion": format!("v1.{KUBERNETES_MINOR}.0-skiff.{}", env!("CARGO_PKG_VERSION")),
            "gitCommit": "",
            "gitTreeState": "clean",
            "buildDate": "",
            "goVersion": "",
            "compiler": "rustc",
            "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
        }),
    )
}

/// `/livez`, `/healthz`: the process is alive and its Raft core still runs. A core stopped by a
/// storage error (a full disk) never serves again; the server exits on it (see `skiff server`),
/// and until then it must not look healthy.
async fn live(State(app): State<Arc<App>>) -> Response {
    match app.store.fatal_error() {
        None => "ok".into_response(),
        Some(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("[-]raft-core failed: {e}\nlivez check failed\n"),
        )
            .into_response(),
    }
}

/// `/readyz`: the checks in kube-apiserver's `?verbose` format. A server whose cluster cannot
/// survive the loss of one server stays ready (it still serves) but says so.
async fn ready(State(app): State<Arc<App>>) -> Response {
    let mut body = String::new();
    let mut failed = false;
    match app.store.fatal_error() {
        None => body.push_str("[+]raft-core ok\n"),
        Some(e) => {
            failed = true;
            body.push_str(&format!("[-]raft-core failed: {e}\n"));
        }
    }
    if app.store.is_ready() {
        body.push_str("[+]store ok\n");
    } else {
        failed = true;
        body.push_str("[-]store failed: no leader or not caught up\n");
    }
    let warning = app.store.fault_tolerance_warning();
    if let Some(warning) = &warning {
        body.push_str(&format!("[!]fault-tolerance warning: {warning}\n"));
    }
    if failed {
        body.push_str("readyz check failed\n");
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    } else if warning.is_some() {
        body.push_str("readyz check passed, with a warning\n");
        body.into_response()
    } else {
        "ok".into_response()
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let status = app.store.status();
    app.metrics.set_raft(RaftGauges {
        term: status.term,
        is_leader: status.is_leader,
        leader_id: status.leader,
        commit_index: status.commit_index,
        last_applied: status.last_applied,
        revision: status.revision,
    });
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        app.metrics.render(),
    )
        .into_response()
}

async fn cacerts(State(app): State<Arc<App>>) -> String {
    app.cluster.ca_cert_pem.clone()
}

async fn api_root(request: Request) -> Response {
    let accept = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    if discovery::wants_aggregated(accept) {
        aggregated(discovery::aggregated_core())
    } else {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        respond::json(StatusCode::OK, &discovery::api_versions(host))
    }
}

async fn apis_root(request: Request) -> Response {
    let accept = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    if discovery::wants_aggregated(accept) {
        aggregated(discovery::aggregated_groups())
    } else {
        respond::json(StatusCode::OK, &discovery::api_group_list())
    }
}

fn aggregated(body: serde_json::Value) -> Response {
    let mut response = respond::json(StatusCode::OK, &body);
    if let Ok(value) = discovery::AGGREGATED_CONTENT_TYPE.parse() {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

async fn core_resources() -> Response {
    discovery_or_404(discovery::api_resource_list("", "v1"), "/api/v1")
}

async fn api_group(axum::extract::Path(group): axum::extract::Path<String>) -> Response {
    discovery_or_404(discovery::api_group(&group), &format!("/apis/{group}"))
}

async fn group_resources(
    axum::extract::Path((group, version)): axum::extract::Path<(String, String)>,
) -> Response {
    discovery_or_404(
        discovery::api_resource_list(&group, &version),
        &format!("/apis/{group}/{version}"),
    )
}

fn discovery_or_404(body: Option<serde_json::Value>, path: &str) -> Response {
    match body {
        Some(body) => respond::json(StatusCode::OK, &body),
        None => respond::error(page_not_found(path)),
    }
}

fn page_not_found(path: &str) -> ApiError {
    ApiError::NoSuchPath(path.to_string())
}

async fn openapi_index() -> Response {
    respond::json(StatusCode::OK, &openapi::index())
}

async fn openapi_document(axum::extract::Path(path): axum::extract::Path<String>) -> Response {
    match openapi::served_document(&path) {
        Some(document) => {
            let mut response = (
                StatusCode::OK,
                [(header::CONTENT_TYPE, respond::JSON)],
                document.json.clone(),
            )
                .into_response();
            // The URL carries the document's hash, so clients may cache it for good.
            if let Ok(value) = "public, immutable".parse() {
                response.headers_mut().insert(header::CACHE_CONTROL, value);
            }
            response
        }
        None => respond::error(page_not_found(&format!("/openapi/v3/{path}"))),
    }
}

/// Every `/api/...` and `/apis/...` request for objects ends here: the subresources in
/// [`crate::subresources::SUBRESOURCES`] go to their own modules, everything else to the
/// generic verbs. The response says what the request counts as in the metrics ([`observe`]).
async fn resource_request(State(app): State<Arc<App>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let mut target = match target::parse(parts.uri.path()) {
        Ok(Some(target)) => target,
        Ok(None) => return respond::error(page_not_found(parts.uri.path())),
        Err(e) => return respond::error(e),
    };
    // Every request that reaches a handler passed the auth middleware, which says who it is.
    let Some(Requester(user)) = parts.extensions.get::<Requester>().cloned() else {
        return respond::error(ApiError::Unauthorized);
    };
    if let Some(served) = subresources::route(&target, &parts.method) {
        let (counted, response) = subresources::serve(&app, served, &target, parts, body).await;
        return counted.on(response);
    }
    let mut params = match Params::parse(parts.uri.query()) {
        Ok(params) => params,
        Err(e) => return respond::error(e),
    };
    let body = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return respond::error(ApiError::RequestEntityTooLarge(format!(
                "Request entity too large: limit is {MAX_BODY_BYTES}"
            )))
        }
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let verb = verb_of(&parts.method, &target, &params);
    if skiff_api::resources::is_review(target.info) {
        let result = match parts.method {
            Method::POST => crate::auth::reviews::serve(&app, &user, &target, content_type, &body),
            _ => Err(ApiError::MethodNotAllowed(format!(
                "{} are only created (POST)",
                target.info.resource
            ))),
        };
        return Counted::new(verb, target.info.resource).on(result.unwrap_or_else(respond::error));
    }
    if skiff_api::resources::is_measured(target.info) {
        let result = crate::measurements::serve(&app, &target, &params, verb).await;
        return Counted::new(verb, target.info.resource).on(result.unwrap_or_else(respond::error));
    }
    // Reads may be answered as a Table: server-side printing for `kubectl get`.
    let table = match verb {
        "WATCH" | "LIST" | "GET" => tables::requested(
            parts
                .headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok()),
            params.include_object.as_deref(),
        ),
        _ => Ok(None),
    };
    let result = match (verb, table) {
        (_, Err(e)) => Err(e),
        ("WATCH", Ok(table)) => {
            single_object_watch(&mut target, &mut params);
            let ticket = if user.in_group(crate::auth::user::MASTERS) {
                Ok(None)
            } else {
                app.watch_caps.admit(&user.name)
            };
            match ticket {
                Ok(ticket) => watch::watch(app.clone(), &target, &params, table, ticket),
                Err(e) => return retry_after(respond::error(e)),
            }
        }
        ("LIST", Ok(table)) => objects::list(&app, &target, &params, table).await,
        ("GET", Ok(table)) => objects::get(&app, &target, &params, table).await,
        ("CREATE", _) => objects::create(&app, &user, &target, &params, content_type, &body).await,
        ("UPDATE", _) => objects::update(&app, &user, &target, &params, content_type, &body).await,
        ("PATCH", _) => objects::patch(&app, &user, &target, &params, content_type, &body).await,
        ("DELETE", _) => objects::delete(&app, &target, &params, &body).await,
        _ => Err(ApiError::MethodNotAllowed(format!(
            "the server does not allow this method on the requested resource: {}",
            parts.method
        ))),
    };
    let response = result.unwrap_or_else(respond::error);
    let response = match verb {
        // Watches convert each event themselves ([`watch`]).
        "WATCH" => response,
        _ if skiff_api::versions::converts(target.served) => {
            respond::in_version(target.served, response).await
        }
        _ => response,
    };
    Counted::new(verb, target.info.resource).on(response)
}

/// The default of `--max-watches-per-user`: an agent opens about ten, kubectl one or two.
pub const DEFAULT_WATCHES_PER_USER: usize = 100;

/// A 429 tells the client when to try again.
pub fn retry_after(mut response: Response) -> Response {
    if let Ok(value) = "1".parse() {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// The one metrics layer: times every request and counts those whose response says what they
/// are ([`Counted`]: resource requests; health checks, discovery and refused requests are not
/// counted).
async fn observe(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let response = next.run(request).await;
    if let Some(counted) = response.extensions().get::<Counted>() {
        app.metrics.observe_request(
            counted.verb,
            counted.resource,
            response.status().as_u16(),
            started.elapsed().as_secs_f64(),
        );
    }
    response
}

pub(crate) fn verb_of(method: &Method, target: &Target, params: &Params) -> &'static str {
    match *method {
        Method::GET if params.is_watch() => "WATCH",
        Method::GET if target.name.is_none() => "LIST",
        Method::GET => "GET",
        Method::POST => "CREATE",
        Method::PUT => "UPDATE",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        _ => "UNSUPPORTED",
    }
}

/// `GET .../pods/web?watch=true` (the old form) watches one object: the same as a watch on the
/// collection with `fieldSelector=metadata.name=web`.
fn single_object_watch(target: &mut Target, params: &mut Params) {
    if let Some(name) = target.name.take() {
        let by_name = format!("metadata.name={name}");
        params.field_selector = Some(match params.field_selector.take() {
            Some(existing) if !existing.is_empty() => format!("{existing},{by_name}"),
            _ => by_name,
        });
        target.subresource = None;
    }
}

/// Serves `router` over TLS on `listen` until `app.shutdown` is cancelled, then lets in-flight
/// requests finish for up to `grace`.
pub async fn serve(
    app: Arc<App>,
    listener: std::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    grace: Duration,
) -> std::io::Result<()> {
    let handle = axum_server::Handle::new();
    let shutdown = app.shutdown.clone();
    let signal = handle.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        signal.graceful_shutdown(Some(grace));
    });
    let config = axum_server::tls_rustls::RustlsConfig::from_config(tls);
    // Without TCP_NODELAY, Nagle's algorithm and delayed ACKs stall small Raft messages and
    // API replies by tens of milliseconds (measured: ~90 ms per write in a three-member cluster).
    let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(config)
        .acceptor(axum_server::accept::NoDelayAcceptor::new());
    axum_server::from_tcp(listener)?
        .acceptor(acceptor)
        .handle(handle)
        .serve(router(app).into_make_service_with_connect_info::<SocketAddr>())
        .await
}

/// Binds `addr` (port 0 picks a free port) without starting to serve.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// A body-less response with just a status code (used by cluster redirects).
pub fn empty(status: StatusCode) -> Response {
    (status, Body::empty()).into_response()
}

pub use skiff_api::volumes::LOCAL_PATH_PROVISIONER;

/// Creates the default StorageClass `local-path` if missing, as k3s ships one: volumes made
/// on the node the scheduler picks for the first pod (WaitForFirstConsumer), deleted with
/// their claims. Runs on the leader at start; an administrator may change which class is the
/// default, and a deleted one comes back at the next start, as k3s's manifests do.
pub async fn ensure_default_storage_class(app: &App) -> Result<(), ApiError> {
    let key = skiff_store::object_key(crate::registry::storage::STORAGE_CLASSES, "", "local-path");
    if app.store.get(&key).is_some() {
        return Ok(());
    }
    let class = json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": "local-path",
            "uid": uuid::Uuid::new_v4().to_string(),
            "creationTimestamp": objects::now(),
            "annotations": {crate::registry::storage::DEFAULT_CLASS_ANNOTATION: "true"},
        },
        "provisioner": LOCAL_PATH_PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
    });
    let result = app
        .store
        .propose_one(skiff_store::Op::Create { key, object: class })
        .await
        .map_err(respond::store_error)?;
    match result {
        Ok(_) | Err(skiff_store::OpError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(ApiError::Internal(e.to_string())),
    }
}

/// Creates the namespaces every Kubernetes cluster has, if missing. Runs on the leader at start.
pub async fn ensure_system_namespaces(app: &App) -> Result<(), ApiError> {
    for name in crate::registry::namespaces::SYSTEM_NAMESPACES {
        let key = skiff_store::object_key("namespaces", "", name);
        if app.store.get(&key).is_some() {
            continue;
        }
        let namespace = json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "uid": uuid::Uuid::new_v4().to_string(),
                "creationTimestamp": objects::now(),
                "labels": {"kubernetes.io/metadata.name": name},
            },
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        });
        let result = app
            .store
            .propose_one(skiff_store::Op::Create {
                key,
                object: namespace,
            })
            .await
            .map_err(respond::store_error)?;
        match result {
            Ok(_) | Err(skiff_store::OpError::AlreadyExists { .. }) => {}
            Err(e) => return Err(ApiError::Internal(e.to_string())),
        }
    }
    Ok(())
}
