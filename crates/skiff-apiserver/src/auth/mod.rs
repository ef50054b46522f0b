//! Who is asking, and may they: every request passes authentication, impersonation and
//! authorization before a handler sees it, as in kube-apiserver's filter chain.
//!
//! ```text
//!  bearer token ─► authenticate ─► UserInfo ─► Impersonate-* headers? ─► UserInfo
//!                                                                          │
//!           403 Forbidden ◄─ no ─ authorize(Attributes: verb, resource, namespace, name | path)
//!                                   │ yes
//!                                   ▼
//!                        handler (the user in the request's extensions: [`Requester`])
//! ```
//!
//! ## Credentials
//! - the admin token (in the kubeconfig `skiff server` writes): `system:admin` in
//!   `system:masters`, which the default `cluster-admin` binding lets do anything;
//! - user tokens made with `skiff token create` ([`tokens`]);
//! - ServiceAccount tokens: signed JWTs from the TokenRequest API ([`service_accounts`]);
//! - each node's own token, `system:node:NAME` in `system:nodes`, which its agent gets at
//!   join ([`crate::nodes::credential`]) and keeps in its data dir;
//! - the node join token (`skiff token --node`): only for getting a node's own token, finding
//!   the servers and the cluster network, never for the Kubernetes API;
//! - the cluster secret, which servers present to each other on `/skiff/v1/` only.
//!
//! ## Layout
//! - [`user`]: `UserInfo` and the well-known users and groups.
//! - [`tokens`]: user tokens kept as hashed Secrets.
//! - [`service_accounts`]: ServiceAccount tokens, signed and checked.
//! - [`attributes`]: a request as RBAC sees it, and Kubernetes' 403 wording.
//! - [`node`]: the Node authorizer: a node reaches only its own objects.
//! - [`rbac`]: the RBAC authorizer.
//! - [`escalation`]: nobody grants what they do not hold.
//! - [`reviews`]: `kubectl auth can-i` and `kubectl auth whoami`.
//! - [`bootstrap`]: Kubernetes' default roles and bindings, made at start.
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::Response;
use skiff_api::status::ApiError;

use crate::app::App;
use crate::query::Params;
use crate::respond;

pub mod attributes;
pub mod bootstrap;
pub mod escalation;
pub mod node;
pub mod rbac;
pub mod reviews;
pub mod service_accounts;
pub mod tokens;
pub mod user;

use attributes::Attributes;
use user::{UserInfo, AUTHENTICATED, MASTERS, SERVICE_ACCOUNTS};

/// The user a request was authenticated (and maybe impersonated) as, in its extensions.
#[derive(Debug, Clone)]
pub struct Requester(pub UserInfo);

/// The user the cluster administrator's token stands for (k3s's name for it).
pub const ADMIN_USER: &str = "system:admin";

/// Paths anyone may read, as Kubernetes' default `system:public-info-viewer` role allows
/// (`/cacerts` is k3s's: a joining server fetches the CA and checks it against its token).
pub fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/version" | "/version/" | "/healthz" | "/livez" | "/readyz" | "/cacerts"
    )
}

/// The user a bearer token stands for, if it is one of this cluster's.
pub fn authenticate(app: &App, token: &str) -> Option<UserInfo> {
    if token.is_empty() {
        return None;
    }
    let eq =
        |secret: &str| skiff_store::service::constant_time_eq(token.as_bytes(), secret.as_bytes());
    if eq(&app.admin_token) {
        return Some(UserInfo::new(ADMIN_USER, &[MASTERS]));
    }
    if service_accounts::looks_like_jwt(token) {
        return service_accounts::authenticate(app, token);
    }
    tokens::authenticate(app, token, jiff::Timestamp::now())
}

/// The middleware in front of every route but Raft's.
pub async fn middleware(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    if is_public(&path) {
        return next.run(request).await;
    }
    let received = jiff::Timestamp::now();
    let audit_log = app
        .audit
        .clone()
        .filter(|_| crate::audit::is_audited(&path));
    let uri = request.uri().to_string();
    let source_ip = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let user_agent = request
        .headers()
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut audit = Audit {
        policy: audit_log.as_ref().map(|log| log.policy.clone()),
        ..Audit::default()
    };
    let mut response = decide_and_run(&app, request, next, &path, &mut audit).await;
    // Refused before the handler: the policy still decides whether that is logged.
    if !audit.decided {
        if let Some(policy) = audit.policy.clone() {
            let nobody = UserInfo::default();
            let user = audit.user.as_ref().unwrap_or(&nobody);
            let (level, omit) = policy.level(user, audit.attributes.as_ref(), &path);
            audit.level = level.min(crate::audit::Level::Metadata);
            audit.omit_managed_fields = omit;
        }
    }
    let audit_log = audit_log.filter(|_| audit.level != crate::audit::Level::None);
    if let Some(log) = audit_log {
        let response_object = if audit.level == crate::audit::Level::RequestResponse {
            let (captured, object) = capture_response(response).await;
            response = captured;
            object.map(|o| without_managed_fields(o, audit.omit_managed_fields))
        } else {
            None
        };
        let audit_id = uuid::Uuid::new_v4().to_string();
        if let Ok(value) = audit_id.parse() {
            response.headers_mut().insert("audit-id", value);
        }
        let nobody = UserInfo::default();
        log.record(&crate::audit::Event {
            audit_id,
            request_uri: &uri,
            user: audit.user.as_ref().unwrap_or(&nobody),
            impersonated: audit.impersonated.as_ref(),
            attributes: audit.attributes.as_ref(),
            source_ip,
            user_agent: user_agent.as_deref(),
            code: response.status().as_u16(),
            received,
            finished: jiff::Timestamp::now(),
            decision: audit.decision,
            level: audit.level,
            request_object: audit.request_object.take(),
            response_object,
        });
    }
    response
}

/// The response's object for the audit log, when the response is a JSON document of known
/// size (not a watch or a log stream); the response itself goes on unchanged.
async fn capture_response(response: Response) -> (Response, Option<serde_json::Value>) {
    use axum::body::HttpBody;
    let json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    let small = response
        .body()
        .size_hint()
        .exact()
        .is_some_and(|n| n <= crate::app::MAX_BODY_BYTES as u64);
    if !json || !small {
        return (response, None);
    }
    let (parts, body) = response.into_parts();
    match axum::body::to_bytes(body, crate::app::MAX_BODY_BYTES).await {
        Ok(bytes) => {
            let object = serde_json::from_slice(&bytes).ok();
            (
                Response::from_parts(parts, axum::body::Body::from(bytes)),
                object,
            )
        }
        Err(_) => (Response::from_parts(parts, axum::body::Body::empty()), None),
    }
}

/// The request's body for the audit log (level `Request` and above): read here, bounded like
/// every body, and handed on to the handler unchanged.
async fn capture_request(
    request: Request,
    audit: &mut Audit,
) -> std::result::Result<Request, Response> {
    if !matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::PATCH
    ) {
        return Ok(request);
    }
    let content_type = request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, crate::app::MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            respond::error(ApiError::RequestEntityTooLarge(
                "the request body is too large".into(),
            ))
        })?;
    audit.request_object = skiff_api::decode::decode_body(&bytes, content_type.as_deref())
        .ok()
        .map(|o| without_managed_fields(o, audit.omit_managed_fields));
    Ok(Request::from_parts(parts, axum::body::Body::from(bytes)))
}

fn without_managed_fields(mut object: serde_json::Value, omit: bool) -> serde_json::Value {
    if omit {
        if let Some(meta) = object
            .get_mut("metadata")
            .and_then(serde_json::Value::as_object_mut)
        {
            meta.remove("managedFields");
        }
    }
    object
}

/// The level the policy gives this request, and its body when the level keeps it.
async fn audit_level(
    request: Request,
    audit: &mut Audit,
    path: &str,
) -> std::result::Result<Request, Response> {
    let Some(policy) = audit.policy.clone() else {
        return Ok(request);
    };
    let nobody = UserInfo::default();
    let user = audit
        .impersonated
        .as_ref()
        .or(audit.user.as_ref())
        .unwrap_or(&nobody);
    let (level, omit) = policy.level(user, audit.attributes.as_ref(), path);
    audit.decided = true;
    audit.level = level;
    audit.omit_managed_fields = omit;
    if level >= crate::audit::Level::Request {
        return capture_request(request, audit).await;
    }
    Ok(request)
}

/// What the audit log learns of a request on its way through.
#[derive(Default)]
struct Audit {
    /// The log's policy; `None`: no audit log.
    policy: Option<Arc<crate::audit::Policy>>,
    user: Option<UserInfo>,
    impersonated: Option<UserInfo>,
    attributes: Option<Attributes>,
    decision: &'static str,
    level: crate::audit::Level,
    /// Whether the policy has been asked (requests refused early have not).
    decided: bool,
    omit_managed_fields: bool,
    request_object: Option<serde_json::Value>,
}

/// The token of an `Authorization: Bearer TOKEN` header. The scheme is case-insensitive (RFC
/// 7235; the Python client's in-cluster configuration sends `bearer`), as in Kubernetes.
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty() && !t.contains(' '))
}

async fn decide_and_run(
    app: &Arc<App>,
    mut request: Request,
    next: Next,
    path: &str,
    audit: &mut Audit,
) -> Response {
    let token = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .unwrap_or("")
        .to_string();
    audit.decision = "forbid";
    if path.starts_with("/skiff/v1/") {
        let caller = skiff_caller(app, &token);
        let allowed = skiff_paths_allowed(&caller, path, request.method());
        audit.user = Some(match caller {
            SkiffCaller::Server => UserInfo::new("system:skiff-server", &[]),
            SkiffCaller::JoinToken => UserInfo::new("system:node-join-token", &[]),
            SkiffCaller::User(user) => user,
            SkiffCaller::Nobody => UserInfo::default(),
        });
        return if allowed {
            audit.decision = "allow";
            match audit_level(request, audit, path).await {
                Ok(request) => next.run(request).await,
                Err(refused) => refused,
            }
        } else {
            respond::error(ApiError::Unauthorized)
        };
    }
    let Some(user) = authenticate(app, &token) else {
        return respond::error(ApiError::Unauthorized);
    };
    audit.user = Some(user.clone());
    let acting = match impersonate(app, user.clone(), request.headers()) {
        Ok(acting) => acting,
        Err(e) => return respond::error(e),
    };
    if acting != user {
        audit.impersonated = Some(acting.clone());
    }
    let attributes = attributes_of(&acting, request.method(), path, request.uri().query());
    if let Some(attributes) = &attributes {
        if let Err(e) = authorize(app, attributes) {
            audit.attributes = Some(attributes.clone());
            return respond::error(e);
        }
    }
    audit.attributes = attributes;
    audit.decision = "allow";
    // Over the limit of requests in flight: 429 at once, not a queue (see crate::inflight).
    let _permit = if crate::inflight::is_long_running(path, request.uri().query()) {
        None
    } else {
        let mutating = !matches!(
            *request.method(),
            Method::GET | Method::HEAD | Method::OPTIONS
        );
        let system = acting.in_group(MASTERS) || acting.node_name().is_some();
        match app.inflight.try_acquire(mutating, system) {
            Some(permit) => Some(permit),
            None => {
                return crate::app::retry_after(respond::error(ApiError::TooManyRequests(
                    "Too many requests, please try again later.".into(),
                )));
            }
        }
    };
    request.extensions_mut().insert(Requester(acting));
    match audit_level(request, audit, path).await {
        Ok(request) => next.run(request).await,
        Err(refused) => refused,
    }
}

/// Who calls a `/skiff/v1/` endpoint: another server (the cluster secret), a machine joining
/// as a node (the node join token), or an authenticated user (the admin, a node).
enum SkiffCaller {
    Server,
    JoinToken,
    User(UserInfo),
    Nobody,
}

fn skiff_caller(app: &App, token: &str) -> SkiffCaller {
    let eq =
        |secret: &str| skiff_store::service::constant_time_eq(token.as_bytes(), secret.as_bytes());
    if eq(&app.cluster.secret) {
        SkiffCaller::Server
    } else if eq(&app.node_secret) {
        SkiffCaller::JoinToken
    } else {
        authenticate(app, token).map_or(SkiffCaller::Nobody, SkiffCaller::User)
    }
}

/// skiff's own endpoints: servers and the admin may do anything. Every node may read the member
/// list (how agents learn every server's address) and the cluster network; with the join token
/// it may get its own credential, and with that its heartbeats and its serving certificate go
/// to its own name only.
fn skiff_paths_allowed(caller: &SkiffCaller, path: &str, method: &Method) -> bool {
    let shared =
        (path == "/skiff/v1/members" || path == "/skiff/v1/cluster") && method == Method::GET;
    let own = |node: &str, what: &str| {
        path.strip_prefix("/skiff/v1/nodes/")
            .and_then(|rest| rest.split_once('/'))
            .is_some_and(|(name, rest)| name == node && rest == what)
    };
    match caller {
        SkiffCaller::Server => true,
        SkiffCaller::User(user) if user.in_group(MASTERS) => true,
        SkiffCaller::JoinToken => {
            let credential = path.strip_prefix("/skiff/v1/nodes/").is_some_and(|rest| {
                rest.ends_with("/credential") && rest.matches('/').count() == 1
            });
            shared || (credential && method == Method::POST)
        }
        SkiffCaller::User(user) => match user.node_name() {
            Some(node) => shared || own(node, "heartbeat") || own(node, "certificate"),
            None => false,
        },
        SkiffCaller::Nobody => false,
    }
}

/// What a request to `path` asks, or `None` for a resource path skiff does not serve (the
/// handler answers 404 for it, as for any unknown path).
fn attributes_of(
    user: &UserInfo,
    method: &Method,
    path: &str,
    query: Option<&str>,
) -> Option<Attributes> {
    match crate::target::parse(path) {
        Ok(Some(target)) => {
            let params = Params::parse(query).unwrap_or_default();
            Some(Attributes::for_target(user, method, &target, &params))
        }
        Ok(None) => Some(Attributes::for_path(user, method, path)),
        Err(_) => None,
    }
}

/// Allows the request or says why not, in Kubernetes' words.
pub fn authorize(app: &App, attributes: &Attributes) -> Result<(), ApiError> {
    if allowed(app, attributes) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(attributes.forbidden_status_message("")))
    }
}

/// The authorizers in order: `system:masters` may do anything (as Kubernetes' privileged-group
/// authorizer), a node is limited to its own by the Node authorizer, then RBAC.
pub fn allowed(app: &App, attributes: &Attributes) -> bool {
    if attributes.user.in_group(MASTERS) {
        return true;
    }
    if let Some(node) = attributes.user.node_name() {
        if let Some(decided) = node::decide(app, node, attributes) {
            return decided;
        }
    }
    rbac::allows(app, attributes)
}

/// Applies `Impersonate-User`, `-Group`, `-Uid` and `-Extra-*`: the request acts as that user,
/// if `user` may `impersonate` each of them (Kubernetes' impersonation filter).
pub fn impersonate(app: &App, user: UserInfo, headers: &HeaderMap) -> Result<UserInfo, ApiError> {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_string)
            .collect()
    };
    let name = values("impersonate-user").into_iter().next();
    let groups = values("impersonate-group");
    let uid = values("impersonate-uid").into_iter().next();
    let mut extra: Vec<(String, String)> = Vec::new();
    for (header, value) in headers {
        if let Some(key) = header.as_str().strip_prefix("impersonate-extra-") {
            if let Ok(value) = value.to_str() {
                // Header names cannot hold every character a key may have: they come
                // percent-encoded.
                let key = percent_encoding::percent_decode_str(key)
                    .decode_utf8_lossy()
                    .into_owned();
                extra.push((key, value.to_string()));
            }
        }
    }
    let Some(name) = name else {
        if !groups.is_empty() || uid.is_some() || !extra.is_empty() {
            return Err(ApiError::BadRequest(
                "requested impersonation of groups, uid or extra without impersonating a user"
                    .into(),
            ));
        }
        return Ok(user);
    };
    let check = |resource: &str, group: &str, namespace: &str, target: &str| {
        let attributes =
            Attributes::resource(&user, "impersonate", group, resource, namespace, target);
        authorize(app, &attributes)
    };
    let service_account = user::split_service_account(&name);
    match service_account {
        Some((namespace, sa)) => check("serviceaccounts", "", namespace, sa)?,
        None => check("users", "", "", &name)?,
    }
    for group in &groups {
        check("groups", "", "", group)?;
    }
    if let Some(uid) = &uid {
        check("uids", "authentication.k8s.io", "", uid)?;
    }
    for (key, value) in &extra {
        check(
            &format!("userextras/{key}"),
            "authentication.k8s.io",
            "",
            value,
        )?;
    }
    let mut impersonated = UserInfo {
        name: name.clone(),
        uid: uid.unwrap_or_default(),
        groups: groups.clone(),
        extra: Default::default(),
    };
    for (key, value) in extra {
        impersonated.extra.entry(key).or_default().push(value);
    }
    if let Some((namespace, _)) = service_account {
        if groups.is_empty() {
            impersonated.groups = vec![
                SERVICE_ACCOUNTS.to_string(),
                format!("{SERVICE_ACCOUNTS}:{namespace}"),
            ];
        }
    }
    if name != "system:anonymous" && !impersonated.in_group(AUTHENTICATED) {
        impersonated.groups.push(AUTHENTICATED.to_string());
    }
    Ok(impersonated)
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_the_token_one_word() {
        assert_eq!(bearer_token("Bearer abc.def"), Some("abc.def"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer a b"), None);
    }
}
