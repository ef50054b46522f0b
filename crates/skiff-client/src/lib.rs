//! skiff-client: how skiff's own components talk to the API server.
//!
//! The scheduler, the controllers and the node agents never reach into the store: they read and
//! write through the same Kubernetes REST API that kubectl uses, so every write they make is
//! validated, versioned and visible in watches like anyone else's (DESIGN.md: "no component calls
//! another directly except through the API").
//!
//! ## Layout
//! - [`Client`]: typed requests (`get`, `list`, `create`, `replace`, `patch`, `delete`, subresources)
//!   over HTTPS with a bearer token, trusting exactly the cluster CA.
//!   Fails over between the servers it knows (`servers`, private: the list learned from
//!   `/skiff/v1/members`).
//! - [`kubeconfig`] ([`Kubeconfig`]): reads the kubeconfig `skiff server` writes.
//! - [`bootstrap`]: the one unverified request, fetching the CA a join token pins.
//! - [`events`]: an Event recorder with Kubernetes' wording and counting.
//! - [`watcher`]: a list + watch loop that survives dropped connections and `410 Gone`, yielding
//!   [`watcher::Event`]s — the building block of every control loop.
//! - [`informer`]: shared informers on top of it: one watch and one cache per kind per
//!   process, with handlers that enqueue keys and streams for loops that keep their own state.
//!
//! Types come from `k8s-openapi`; the URL of a type is derived from its `Resource` constants, so
//! `client.get::<Pod>(Some("default"), "web")` needs no path strings.
pub mod bootstrap;
pub mod events;
pub mod informer;
pub mod kubeconfig;
mod servers;
pub mod watcher;

use servers::Servers;

pub use kubeconfig::Kubeconfig;
pub use reqwest::Method;

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::Resource;
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What can go wrong talking to the API server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with a Kubernetes `Status` error (404, 409, 422, ...).
    #[error("{code} {reason}: {message}")]
    Api {
        code: u16,
        reason: String,
        message: String,
    },
    /// The request did not get an answer (connection refused, TLS, timeout).
    #[error("transport: {0}")]
    Transport(#[from] reqwest::Error),
    /// The answer was not what its type promised.
    #[error("decoding the answer: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("{0}")]
    Config(String),
}

impl Error {
    /// The HTTP code of an API error, if this is one.
    pub fn code(&self) -> Option<u16> {
        match self {
            Error::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.code() == Some(404)
    }

    pub fn is_conflict(&self) -> bool {
        self.code() == Some(409)
    }

    pub fn is_gone(&self) -> bool {
        self.code() == Some(410)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which objects a list or watch returns.
#[derive(Debug, Clone, Default)]
pub struct ListParams {
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
}

impl ListParams {
    pub fn fields(selector: impl Into<String>) -> ListParams {
        ListParams {
            field_selector: Some(selector.into()),
            ..ListParams::default()
        }
    }

    pub fn labels(selector: impl Into<String>) -> ListParams {
        ListParams {
            label_selector: Some(selector.into()),
            ..ListParams::default()
        }
    }

    fn append(&self, query: &mut Vec<(&'static str, String)>) {
        if let Some(s) = &self.label_selector {
            query.push(("labelSelector", s.clone()));
        }
        if let Some(s) = &self.field_selector {
            query.push(("fieldSelector", s.clone()));
        }
    }
}

/// A list answer: the items and the revision to watch from.
#[derive(Debug, Clone)]
pub struct ObjectList<K> {
    pub items: Vec<K>,
    pub resource_version: String,
}

#[derive(Deserialize)]
struct RawList<K> {
    #[serde(default = "Vec::new")]
    items: Vec<K>,
    #[serde(default)]
    metadata: RawListMeta,
}

#[derive(Deserialize, Default)]
struct RawListMeta {
    #[serde(default, rename = "resourceVersion")]
    resource_version: String,
}

/// A Kubernetes API client for one cluster. Cheap to clone (the connection pool and the list
/// of servers are shared).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// The same trust, but redirects are returned instead of followed (see `request_leader`).
    no_redirect: reqwest::Client,
    servers: Arc<Servers>,
    token: String,
}

impl Client {
    /// A client for `server` (`https://host:port`) that trusts only `ca_pem` and authenticates
    /// with `token`.
    pub fn new(server: &str, ca_pem: &str, token: &str) -> Result<Client> {
        // skiff uses ring for TLS everywhere; the binary installs it too, libraries and tests
        // may not have.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes())?;
        let builder = || {
            reqwest::Client::builder()
                .use_rustls_tls()
                .tls_built_in_root_certs(false)
                .add_root_certificate(ca.clone())
                .https_only(true)
                .tcp_nodelay(true)
                .connect_timeout(Duration::from_secs(5))
                // A server cut off by a partition sends no FIN: pings find the dead connection
                // (a watch would otherwise wait on it for its whole timeout).
                .http2_keep_alive_interval(Duration::from_secs(5))
                .http2_keep_alive_timeout(Duration::from_secs(5))
                .http2_keep_alive_while_idle(true)
                .tcp_keepalive(Duration::from_secs(15))
                // Idle pooled connections are closed before a restarted server's would be.
                .pool_idle_timeout(Duration::from_secs(50))
        };
        Ok(Client {
            http: builder().build()?,
            no_redirect: builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(10))
                .build()?,
            servers: Arc::new(Servers::new(server)),
            token: token.to_string(),
        })
    }

    /// A client from a kubeconfig written by `skiff server`.
    pub fn from_kubeconfig(path: &std::path::Path) -> Result<Client> {
        let config = Kubeconfig::read(path)?;
        Client::new(&config.server, &config.ca_pem, &config.token)
    }

    /// The server requests go to now.
    pub fn server(&self) -> String {
        self.servers.current()
    }

    /// Every server this client may use.
    pub fn servers(&self) -> Vec<String> {
        self.servers.urls().clone()
    }

    /// Learns every server's address from the member list (`/skiff/v1/members`), so requests
    /// fail over to another server when the one in use stops answering. Returns how many
    /// servers are known.
    pub async fn refresh_servers(&self) -> Result<usize> {
        let answer: Value = self
            .request(
                Method::GET,
                &format!("{}/skiff/v1/members", self.server()),
                &[],
                None,
            )
            .await?;
        let learned: Vec<String> = answer["members"]
            .as_array()
            .map(|members| {
                members
                    .iter()
                    .filter_map(|m| m["addr"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if !learned.is_empty() {
            self.servers.set(learned);
        }
        Ok(self.servers.urls().len())
    }

    /// The collection URL of `K` in namespace `ns` (all namespaces when `None` for namespaced
    /// types).
    pub fn collection_url<K: Resource>(&self, ns: Option<&str>) -> String {
        self.collection_url_of(K::GROUP, K::VERSION, K::URL_PATH_SEGMENT, ns)
    }

    /// The collection URL of a resource known only at run time (`group` is `""` for the core
    /// group; `resource` is the plural, as in the URL).
    pub fn collection_url_of(
        &self,
        group: &str,
        version: &str,
        resource: &str,
        ns: Option<&str>,
    ) -> String {
        let mut url = self.server();
        if group.is_empty() {
            let _ = write!(url, "/api/{version}");
        } else {
            let _ = write!(url, "/apis/{group}/{version}");
        }
        if let Some(ns) = ns {
            let _ = write!(url, "/namespaces/{ns}");
        }
        let _ = write!(url, "/{resource}");
        url
    }

    fn object_url<K: Resource>(&self, ns: Option<&str>, name: &str) -> String {
        format!("{}/{}", self.collection_url::<K>(ns), name)
    }

    /// Sends a request and decodes a JSON answer; non-2xx answers become [`Error::Api`].
    pub async fn request<T: DeserializeOwned>(
        &self,
        method: Method,
        url: &str,
        query: &[(&str, String)],
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<T> {
        let response = self.send(method, url, query, body, None).await?;
        let bytes = response.bytes().await?;
        Ok(serde_json::from_slice(&bytes)?)
    }

    /// A request to one of skiff's own endpoints (`path` such as `/skiff/v1/...`) that only
    /// the Raft leader answers: a follower redirects (307) and the request is sent again to
    /// the leader, with the token (every member is under the same CA, so the token stays
    /// within the cluster). A server that cannot be reached is failed over; one that took the
    /// request and went silent (10 s) is failed over for the next request, since this one
    /// may have been carried out.
    pub async fn request_leader<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T> {
        self.leader_request(method, path, body, None).await
    }

    /// [`Client::request_leader`] for a request that may safely be carried out twice (a
    /// heartbeat, a read): each server is given `attempt` to answer, then the next one is
    /// asked. A leader cut off by a partition keeps its connections open without answering,
    /// and without this a request would wait on it until HTTP/2's pings gave up (up to 10 s).
    pub async fn request_leader_retrying<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        attempt: Duration,
    ) -> Result<T> {
        self.leader_request(method, path, body, Some(attempt)).await
    }

    async fn leader_request<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        retry_after: Option<Duration>,
    ) -> Result<T> {
        let mut url = format!("{}{path}", self.server());
        let mut attempts = 0;
        while attempts < 3 + self.servers.urls().len() {
            attempts += 1;
            let mut request = self
                .no_redirect
                .request(method.clone(), &url)
                .bearer_auth(&self.token);
            if let Some(body) = body {
                request = request.json(body);
            }
            if let Some(attempt) = retry_after {
                request = request.timeout(attempt);
            }
            let response = match request.send().await {
                Ok(response) => response,
                // Nothing was sent (or, when the caller allows it, nothing came back in
                // time): the next server may take it.
                Err(e) if e.is_connect() || (retry_after.is_some() && e.is_timeout()) => {
                    let next = self.servers.fail_over(&url);
                    if next == url {
                        // A leader's address from a redirect that is not (yet) in the list.
                        url = format!("{}{path}", self.server());
                    } else {
                        url = next;
                    }
                    continue;
                }
                Err(e) => {
                    if e.is_timeout() {
                        self.servers.fail_over(&url);
                    }
                    return Err(e.into());
                }
            };
            let status = response.status();
            if status == StatusCode::TEMPORARY_REDIRECT {
                if let Some(location) = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                {
                    url = location.to_string();
                    continue;
                }
            }
            let bytes = response.bytes().await?;
            if !status.is_success() {
                return Err(api_error(status, &bytes));
            }
            return Ok(serde_json::from_slice(&bytes)?);
        }
        Err(Error::Config(format!("{path}: too many redirects")))
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        query: &[(&str, String)],
        body: Option<(&str, Vec<u8>)>,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response> {
        let mut url = url.to_string();
        let mut tries_left = self.servers.urls().len();
        let response = loop {
            let mut request = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(&self.token)
                .header(reqwest::header::ACCEPT, "application/json");
            if !query.is_empty() {
                request = request.query(query);
            }
            if let Some((content_type, body)) = &body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, *content_type)
                    .body(body.clone());
            }
            if let Some(timeout) = timeout {
                request = request.timeout(timeout);
            }
            match request.send().await {
                Ok(response) => break response,
                // The connection was refused or timed out: nothing was sent, so another server
                // may take the request, whatever its method. A read may be asked again
                // whatever happened to it.
                Err(e)
                    if tries_left > 1
                        && (e.is_connect()
                            || (method == Method::GET && (e.is_timeout() || e.is_request()))) =>
                {
                    tries_left -= 1;
                    url = self.servers.fail_over(&url);
                }
                Err(e) => {
                    if e.is_connect() || e.is_timeout() {
                        self.servers.fail_over(&url);
                    }
                    return Err(e.into());
                }
            }
        };
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        Err(api_error(
            status,
            &response.bytes().await.unwrap_or_default(),
        ))
    }

    pub async fn get<K: Resource + DeserializeOwned>(
        &self,
        ns: Option<&str>,
        name: &str,
    ) -> Result<K> {
        self.request(Method::GET, &self.object_url::<K>(ns, name), &[], None)
            .await
    }

    /// Like [`Client::get`] but `None` for 404.
    pub async fn get_opt<K: Resource + DeserializeOwned>(
        &self,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Option<K>> {
        match self.get(ns, name).await {
            Ok(object) => Ok(Some(object)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn list<K: Resource + DeserializeOwned>(
        &self,
        ns: Option<&str>,
        params: &ListParams,
    ) -> Result<ObjectList<K>> {
        self.list_at(&self.collection_url::<K>(ns), params).await
    }

    /// Lists the collection at `url` (from [`Client::collection_url_of`]), decoding each item
    /// as `T` (which may read only part of it, such as the metadata).
    pub async fn list_at<T: DeserializeOwned>(
        &self,
        url: &str,
        params: &ListParams,
    ) -> Result<ObjectList<T>> {
        let mut query = Vec::new();
        params.append(&mut query);
        let raw: RawList<T> = self.request(Method::GET, url, &query, None).await?;
        Ok(ObjectList {
            items: raw.items,
            resource_version: raw.metadata.resource_version,
        })
    }

    pub async fn create<K: Resource + Serialize + DeserializeOwned>(
        &self,
        ns: Option<&str>,
        object: &K,
    ) -> Result<K> {
        let body = json_body(object)?;
        self.request(Method::POST, &self.collection_url::<K>(ns), &[], Some(body))
            .await
    }

    /// PUT: replaces the object; its `metadata.resourceVersion` makes it a compare-and-swap.
    pub async fn replace<K: Resource + Serialize + DeserializeOwned>(
        &self,
        ns: Option<&str>,
        name: &str,
        object: &K,
    ) -> Result<K> {
        let body = json_body(object)?;
        self.request(
            Method::PUT,
            &self.object_url::<K>(ns, name),
            &[],
            Some(body),
        )
        .await
    }

    /// PUT on the `status` subresource: only `status` changes.
    pub async fn replace_status<K: Resource + Serialize + DeserializeOwned>(
        &self,
        ns: Option<&str>,
        name: &str,
        object: &K,
    ) -> Result<K> {
        let body = json_body(object)?;
        let url = format!("{}/status", self.object_url::<K>(ns, name));
        self.request(Method::PUT, &url, &[], Some(body)).await
    }

    /// A JSON merge patch (RFC 7386) of the object, or of a subresource such as `status`.
    pub async fn merge_patch<K: Resource + DeserializeOwned>(
        &self,
        ns: Option<&str>,
        name: &str,
        subresource: Option<&str>,
        patch: &Value,
    ) -> Result<K> {
        let mut url = self.object_url::<K>(ns, name);
        if let Some(sub) = subresource {
            let _ = write!(url, "/{sub}");
        }
        let body = ("application/merge-patch+json", serde_json::to_vec(patch)?);
        self.request(Method::PATCH, &url, &[], Some(body)).await
    }

    /// POST to a subresource (`binding`, `eviction`) and return the raw answer.
    pub async fn post_subresource<K: Resource>(
        &self,
        ns: Option<&str>,
        name: &str,
        subresource: &str,
        body: &Value,
    ) -> Result<Value> {
        let url = format!("{}/{subresource}", self.object_url::<K>(ns, name));
        let body = ("application/json", serde_json::to_vec(body)?);
        self.request(Method::POST, &url, &[], Some(body)).await
    }

    /// DELETE with optional preconditions (`uid`, `resourceVersion`) and grace period.
    pub async fn delete<K: Resource>(
        &self,
        ns: Option<&str>,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<Value> {
        let body = ("application/json", serde_json::to_vec(&options.to_json())?);
        self.request(
            Method::DELETE,
            &self.object_url::<K>(ns, name),
            &[],
            Some(body),
        )
        .await
    }

    /// [`Client::delete`] of the object at `url` (a collection URL from
    /// [`Client::collection_url_of`] and the object's name).
    pub async fn delete_at(&self, url: &str, options: &DeleteOptions) -> Result<Value> {
        let body = ("application/json", serde_json::to_vec(&options.to_json())?);
        self.request(Method::DELETE, url, &[], Some(body)).await
    }

    /// Opens a watch from `resource_version`; the answer is a stream of newline-separated
    /// JSON events. `timeout` bounds how long the server keeps it open.
    pub async fn watch_raw<K: Resource>(
        &self,
        ns: Option<&str>,
        params: &ListParams,
        resource_version: &str,
        timeout: Duration,
    ) -> Result<reqwest::Response> {
        let url = self.collection_url::<K>(ns);
        self.watch_raw_at(&url, params, resource_version, timeout)
            .await
    }

    /// [`Client::watch_raw`] of the collection at `url`.
    pub async fn watch_raw_at(
        &self,
        url: &str,
        params: &ListParams,
        resource_version: &str,
        timeout: Duration,
    ) -> Result<reqwest::Response> {
        let mut query = vec![
            ("watch", "true".to_string()),
            ("resourceVersion", resource_version.to_string()),
            ("allowWatchBookmarks", "true".to_string()),
            ("timeoutSeconds", timeout.as_secs().to_string()),
        ];
        params.append(&mut query);
        self.send(Method::GET, url, &query, None, None).await
    }
}

/// Options of a DELETE.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// Delete only if the object still has this uid (it was not deleted and re-created).
    pub uid: Option<String>,
    /// Delete only if the object is still at this version.
    pub resource_version: Option<String>,
    pub grace_period_seconds: Option<i64>,
    /// `Background`, `Foreground` or `Orphan`.
    pub propagation_policy: Option<String>,
}

impl DeleteOptions {
    pub fn with_uid(uid: impl Into<String>) -> DeleteOptions {
        DeleteOptions {
            uid: Some(uid.into()),
            ..DeleteOptions::default()
        }
    }

    fn to_json(&self) -> Value {
        let mut options = serde_json::json!({"kind": "DeleteOptions", "apiVersion": "v1"});
        if self.uid.is_some() || self.resource_version.is_some() {
            options["preconditions"] = serde_json::json!({
                "uid": self.uid, "resourceVersion": self.resource_version,
            });
        }
        if let Some(grace) = self.grace_period_seconds {
            options["gracePeriodSeconds"] = grace.into();
        }
        if let Some(policy) = &self.propagation_policy {
            options["propagationPolicy"] = policy.clone().into();
        }
        options
    }
}

fn json_body<T: Serialize>(object: &T) -> Result<(&'static str, Vec<u8>)> {
    Ok(("application/json", serde_json::to_vec(object)?))
}

/// Turns a non-2xx answer into [`Error::Api`], reading the `Status` body when there is one.
fn api_error(status: StatusCode, body: &[u8]) -> Error {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let text = |key: &str| parsed.get(key).and_then(Value::as_str).map(str::to_string);
    Error::Api {
        code: status.as_u16(),
        reason: text("reason")
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("").to_string()),
        message: text("message")
            .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(300).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::servers::starts_with_base;
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::{Node, Pod};

    fn client() -> Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Client {
            http: reqwest::Client::new(),
            no_redirect: reqwest::Client::new(),
            servers: Arc::new(Servers::new("https://h:6443")),
            token: "t".into(),
        }
    }

    #[test]
    fn urls_come_from_the_resource_constants() {
        let c = client();
        assert_eq!(
            c.collection_url::<Pod>(Some("default")),
            "https://h:6443/api/v1/namespaces/default/pods"
        );
        assert_eq!(c.collection_url::<Pod>(None), "https://h:6443/api/v1/pods");
        assert_eq!(
            c.object_url::<Deployment>(Some("a"), "web"),
            "https://h:6443/apis/apps/v1/namespaces/a/deployments/web"
        );
        assert_eq!(
            c.object_url::<Node>(None, "n1"),
            "https://h:6443/api/v1/nodes/n1"
        );
    }

    #[test]
    fn status_bodies_become_api_errors() {
        let body = br#"{"kind":"Status","reason":"Conflict","message":"stale","code":409}"#;
        let e = api_error(StatusCode::CONFLICT, body);
        assert!(e.is_conflict());
        assert_eq!(e.to_string(), "409 Conflict: stale");
        let e = api_error(StatusCode::BAD_GATEWAY, b"upstream down");
        assert_eq!(e.to_string(), "502 Bad Gateway: upstream down");
    }

    #[test]
    fn a_failed_server_hands_its_requests_to_the_next() {
        let servers = Servers::new("https://given:6443/");
        assert_eq!(servers.current(), "https://given:6443");
        servers.set(vec![
            "https://a:6443".into(),
            "https://c:6443".into(),
            "https://b:6443".into(),
        ]);
        // The learned servers, and the given address last as the fallback.
        assert_eq!(
            *servers.urls(),
            [
                "https://a:6443",
                "https://b:6443",
                "https://c:6443",
                "https://given:6443"
            ]
        );
        assert_eq!(servers.current(), "https://a:6443");
        assert_eq!(
            servers.fail_over("https://a:6443/api/v1/pods?watch=true"),
            "https://b:6443/api/v1/pods?watch=true"
        );
        // A second request that failed on `a` meanwhile does not skip `b`.
        assert_eq!(servers.fail_over("https://a:6443/x"), "https://b:6443/x");
        assert_eq!(servers.current(), "https://b:6443");
        // A URL of no known server (a redirect to the leader) is left alone.
        assert_eq!(servers.fail_over("https://z:6443/x"), "https://z:6443/x");
        // The last wraps around to the first.
        servers.fail_over("https://b:6443/");
        servers.fail_over("https://c:6443/");
        assert_eq!(
            servers.fail_over("https://given:6443/y"),
            "https://a:6443/y"
        );
        // Learning again keeps the server in use when it is still a member.
        servers.fail_over("https://a:6443/");
        servers.set(vec!["https://b:6443".into(), "https://d:6443".into()]);
        assert_eq!(servers.current(), "https://b:6443");
        assert!(!starts_with_base("https://a:64430/x", "https://a:6443"));
    }

    #[test]
    fn delete_options_carry_preconditions() {
        let o = DeleteOptions::with_uid("u1").to_json();
        assert_eq!(o["preconditions"]["uid"], "u1");
        assert!(o.get("gracePeriodSeconds").is_none());
    }
}
