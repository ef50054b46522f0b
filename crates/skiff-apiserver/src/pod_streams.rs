//! A pod's log and exec streams, which the API server passes on to the pod's node agent:
//! `pods/log` and `pods/exec`. (Not to be confused with the agent's service proxy.)
//!
//! As in Kubernetes, the API server finds the pod's node, then calls the agent's own HTTPS
//! endpoint (`status.daemonEndpoints.kubeletEndpoint.Port` on the node's InternalIP).
//! Authenticated both ways: the API server checks the agent's certificate against the cluster
//! CA (the agent got it from `/skiff/v1/nodes/NAME/certificate`), and the agent checks the
//! bearer token the API server presents (the node secret).
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::Response;
use serde_json::Value;
use skiff_api::ApiError;

use crate::app::App;
use crate::target::Target;

type Result<T, E = ApiError> = std::result::Result<T, E>;

/// The kubelet port when a node does not say.
const DEFAULT_AGENT_PORT: i64 = 10250;

/// How this server reaches agents: one HTTPS client (logs) and one TLS configuration (exec's
/// upgraded connections), each trusting only this cluster's CA. Built on first use and kept in
/// the [`App`], so servers of different clusters in one process (tests) never share them.
#[derive(Default)]
pub struct AgentClients {
    http: OnceLock<reqwest::Client>,
    tls: OnceLock<Arc<rustls::ClientConfig>>,
}

/// The HTTPS client for every agent.
pub(crate) fn agent_client(app: &App) -> Result<&reqwest::Client> {
    if let Some(client) = app.agents.http.get() {
        return Ok(client);
    }
    let ca = reqwest::Certificate::from_pem(app.cluster.node_ca_cert_pem.as_bytes())
        .map_err(|e| ApiError::Internal(format!("the node CA: {e}")))?;
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .https_only(true)
        .connect_timeout(std::time::Duration::from_secs(5));
    if let Some(pem) = &app.agent_identity_pem {
        let identity = reqwest::Identity::from_pem(pem.as_bytes())
            .map_err(|e| ApiError::Internal(format!("this server's certificate: {e}")))?;
        builder = builder.identity(identity);
    }
    let client = builder
        .build()
        .map_err(|e| ApiError::Internal(format!("agent client: {e}")))?;
    Ok(app.agents.http.get_or_init(|| client))
}

/// `GET /api/v1/namespaces/{ns}/pods/{name}/log`.
pub async fn logs(app: &Arc<App>, target: &Target, query: Option<&str>) -> Result<Response> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|e| ApiError::BadRequest(format!("invalid query parameters: {e}")))?;
    let param = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let (pod, namespace, name) = pod_of(app, target).await?;
    let container = choose_container(&pod, &name, param("container"))?;
    let previous = param("previous").is_some_and(|v| v == "true");
    if !previous {
        if let Some(reason) = waiting_reason(&pod, &container) {
            return Err(ApiError::BadRequest(format!(
                "container \"{container}\" in pod \"{name}\" is waiting to start: {reason}"
            )));
        }
    }
    let base = agent_url(app, &pod, &name)?;
    let mut url = format!("{base}/containerLogs/{namespace}/{name}/{container}");
    let passed: Vec<(String, String)> = pairs
        .into_iter()
        .filter(|(k, _)| {
            matches!(
                k.as_str(),
                "follow"
                    | "previous"
                    | "tailLines"
                    | "sinceSeconds"
                    | "sinceTime"
                    | "timestamps"
                    | "limitBytes"
            )
        })
        .collect();
    if !passed.is_empty() {
        url.push('?');
        url.push_str(&serde_urlencoded::to_string(&passed).unwrap_or_default());
    }
    let response = agent_client(app)?
        .get(&url)
        .bearer_auth(&app.node_secret)
        .send()
        .await
        .map_err(|e| ApiError::ServiceUnavailable(format!("reaching the node's agent: {e}")))?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        return Err(match status.as_u16() {
            404 => ApiError::BadRequest(text),
            _ => ApiError::Internal(text),
        });
    }
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from_stream(response.bytes_stream()))
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// The pod a subresource request is about, with its namespace and name.
pub(crate) async fn pod_of(app: &App, target: &Target) -> Result<(Arc<Value>, String, String)> {
    let name = target.name.clone().unwrap_or_default();
    let namespace = target.namespace.clone().unwrap_or_default();
    let key = target.key();
    let pod = match app.store.get(&key) {
        Some(pod) => pod,
        None => {
            app.store
                .linearize()
                .await
                .map_err(|e| ApiError::ServiceUnavailable(e.to_string()))?;
            app.store.get(&key).ok_or_else(|| ApiError::NotFound {
                resource: "pods".into(),
                name: name.clone(),
            })?
        }
    };
    Ok((pod, namespace, name))
}

/// The container asked for, or the only one; Kubernetes' messages otherwise.
pub(crate) fn choose_container(pod: &Value, name: &str, asked: Option<String>) -> Result<String> {
    let names = |path: &str| -> Vec<String> {
        pod.pointer(path)
            .and_then(Value::as_array)
            .map(|cs| {
                cs.iter()
                    .filter_map(|c| c.get("name").and_then(Value::as_str).map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let containers = names("/spec/containers");
    let init = names("/spec/initContainers");
    match asked.filter(|c| !c.is_empty()) {
        Some(c) if containers.contains(&c) || init.contains(&c) => Ok(c),
        Some(c) => Err(ApiError::BadRequest(format!(
            "container {c} is not valid for pod {name}"
        ))),
        None if containers.len() == 1 => Ok(containers[0].clone()),
        None => Err(ApiError::BadRequest(format!(
            "a container name must be specified for pod {name}, choose one of: [{}]",
            containers.join(" ")
        ))),
    }
}

/// `ContainerCreating` and the like when the container has not started yet.
fn waiting_reason(pod: &Value, container: &str) -> Option<String> {
    let statuses = ["/status/containerStatuses", "/status/initContainerStatuses"];
    let status = statuses.iter().find_map(|path| {
        pod.pointer(path)?
            .as_array()?
            .iter()
            .find(|s| s.get("name").and_then(Value::as_str) == Some(container))
    });
    match status {
        None => Some("ContainerCreating".into()),
        Some(s) => {
            let waiting = s.pointer("/state/waiting")?;
            // A container that ran before (restarting) still has logs to show.
            if s.pointer("/lastState/terminated").is_some() {
                return None;
            }
            Some(
                waiting
                    .get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or("ContainerCreating")
                    .to_string(),
            )
        }
    }
}

/// `https://IP:PORT` of the agent on the pod's node.
pub(crate) fn agent_url(app: &App, pod: &Value, name: &str) -> Result<String> {
    let node_name = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::BadRequest(format!("pod {name} does not have a host assigned")))?;
    let node_key = skiff_store::object_key("nodes", "", node_name);
    let node = app.store.get(&node_key).ok_or_else(|| ApiError::NotFound {
        resource: "nodes".into(),
        name: node_name.into(),
    })?;
    node_agent_url(&node)
}

/// `https://IP:PORT` of the agent of `node` (its InternalIP and kubelet endpoint port).
pub(crate) fn node_agent_url(node: &Value) -> Result<String> {
    let node_name = node
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let address = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .and_then(|addresses| {
            addresses
                .iter()
                .find(|a| a.get("type").and_then(Value::as_str) == Some("InternalIP"))
        })
        .and_then(|a| a.get("address").and_then(Value::as_str))
        .ok_or_else(|| {
            ApiError::ServiceUnavailable(format!("node {node_name} has no InternalIP"))
        })?;
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_i64)
        .unwrap_or(DEFAULT_AGENT_PORT);
    let host = if address.contains(':') {
        format!("[{address}]")
    } else {
        address.to_string()
    };
    Ok(format!("https://{host}:{port}"))
}

/// `GET .../pods/{name}/exec` with `Upgrade: websocket`: proxied to the agent as bytes.
///
/// The API server does not speak the exec protocol itself (as kube-apiserver's upgrade-aware
/// proxy does not): it checks the request, opens a TLS connection to the agent, sends the same
/// upgrade request with the node secret instead of the user's token, and when the agent
/// answers `101 Switching Protocols` it answers the client with the agent's headers and joins
/// the two connections. The WebSocket handshake (key, accept, subprotocol) is between kubectl
/// and the agent, end to end.
pub async fn exec(
    app: &Arc<App>,
    target: &Target,
    mut request: axum::http::Request<Body>,
) -> Result<Response> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let query = request.uri().query().unwrap_or("").to_string();
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(&query)
        .map_err(|e| ApiError::BadRequest(format!("invalid query parameters: {e}")))?;
    let container_asked = pairs
        .iter()
        .find(|(k, _)| k == "container")
        .map(|(_, v)| v.clone());
    if !pairs.iter().any(|(k, _)| k == "command") {
        return Err(ApiError::BadRequest(
            "you must specify at least 1 command".into(),
        ));
    }
    let headers = request.headers().clone();
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !upgrade.eq_ignore_ascii_case("websocket") {
        return Err(ApiError::BadRequest(
            "exec needs a WebSocket upgrade (subprotocol v5.channel.k8s.io); SPDY is not supported"
                .into(),
        ));
    }
    let (pod, namespace, name) = pod_of(app, target).await?;
    let container = choose_container(&pod, &name, container_asked)?;
    let running = ["/status/containerStatuses", "/status/initContainerStatuses"]
        .iter()
        .filter_map(|p| pod.pointer(p).and_then(Value::as_array))
        .flatten()
        .any(|s| {
            s.get("name").and_then(Value::as_str) == Some(&container)
                && s.pointer("/state/running").is_some()
        });
    if !running {
        return Err(ApiError::BadRequest(format!(
            "unable to upgrade connection: container not found (\"{container}\")"
        )));
    }
    let base = agent_url(app, &pod, &name)?;
    let authority = base.trim_start_matches("https://").to_string();
    let host = authority
        .rsplit_once(':')
        .map(|(h, _)| h.trim_matches(['[', ']']).to_string())
        .unwrap_or_default();

    // TLS to the agent, verified against the cluster CA.
    let tcp = tokio::net::TcpStream::connect(&authority)
        .await
        .map_err(|e| ApiError::ServiceUnavailable(format!("reaching the node's agent: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let connector = tokio_rustls::TlsConnector::from(agent_tls(app)?);
    let server_name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|e| ApiError::Internal(format!("agent address {host}: {e}")))?;
    let mut agent = connector
        .connect(server_name, tcp)
        .await
        .map_err(|e| ApiError::ServiceUnavailable(format!("TLS to the node's agent: {e}")))?;

    let mut upstream = format!(
        "GET /exec/{namespace}/{name}/{container}?{query} HTTP/1.1\r\nHost: {authority}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nAuthorization: Bearer {}\r\n",
        app.node_secret
    );
    for key in [
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-protocol",
        "sec-websocket-extensions",
    ] {
        for value in headers.get_all(key) {
            if let Ok(v) = value.to_str() {
                upstream.push_str(&format!("{key}: {v}\r\n"));
            }
        }
    }
    upstream.push_str("\r\n");
    agent
        .write_all(upstream.as_bytes())
        .await
        .map_err(|e| ApiError::ServiceUnavailable(format!("writing to the node's agent: {e}")))?;

    // The agent's answer: headers up to the blank line (any bytes after it are already
    // WebSocket frames and go to the client first).
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        let n = agent
            .read(&mut buf)
            .await
            .map_err(|e| ApiError::ServiceUnavailable(format!("reading from the agent: {e}")))?;
        if n == 0 {
            return Err(ApiError::ServiceUnavailable(
                "the agent closed the connection".into(),
            ));
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(pos) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        if head.len() > 64 * 1024 {
            return Err(ApiError::ServiceUnavailable(
                "the agent's answer is too long".into(),
            ));
        }
    };
    let leftover = head.split_off(end);
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let code: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(502);
    if code != 101 {
        let mut body = leftover;
        let _ = agent.read_to_end(&mut body).await;
        return Err(ApiError::BadRequest(format!(
            "the node's agent refused the exec ({code}): {}",
            String::from_utf8_lossy(&body).trim()
        )));
    }
    let mut response = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    for line in lines.filter(|l| !l.is_empty()) {
        if let Some((k, v)) = line.split_once(':') {
            response = response.header(k.trim(), v.trim());
        }
    }
    let response = response
        .body(Body::empty())
        .map_err(|e| ApiError::Internal(e.to_string()))?;

    // Join the client's upgraded connection with the agent's once hyper hands it over.
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut client = hyper_util::rt::TokioIo::new(upgraded);
        if !leftover.is_empty() && client.write_all(&leftover).await.is_err() {
            return;
        }
        let _ = tokio::io::copy_bidirectional(&mut client, &mut agent).await;
    });
    Ok(response)
}

/// TLS settings for connections to agents: trust the node CA only, and show this server's
/// certificate.
fn agent_tls(app: &App) -> Result<Arc<rustls::ClientConfig>> {
    if let Some(config) = app.agents.tls.get() {
        return Ok(config.clone());
    }
    let mut roots = rustls::RootCertStore::empty();
    let mut reader = std::io::Cursor::new(app.cluster.node_ca_cert_pem.as_bytes());
    for cert in rustls_pemfile_certs(&mut reader) {
        roots
            .add(cert)
            .map_err(|e| ApiError::Internal(format!("the node CA: {e}")))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .with_root_certificates(roots);
    // Agents let in only callers with a cluster-CA certificate: this server's own.
    let config = match &app.agent_identity_pem {
        Some(pem) => {
            use rustls::pki_types::pem::PemObject;
            let chain = rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| ApiError::Internal(format!("this server's certificate: {e}")))?;
            let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(pem.as_bytes())
                .map_err(|e| ApiError::Internal(format!("this server's key: {e}")))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| ApiError::Internal(format!("this server's certificate: {e}")))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(app.agents.tls.get_or_init(|| Arc::new(config)).clone())
}

/// The certificates in a PEM bundle.
fn rustls_pemfile_certs(
    reader: &mut dyn std::io::BufRead,
) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    let mut text = Vec::new();
    let _ = reader.read_to_end(&mut text);
    rustls::pki_types::CertificateDer::pem_slice_iter(&text)
        .flatten()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containers_are_chosen_as_kubernetes_does() {
        let pod = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "i"}]}});
        assert_eq!(
            choose_container(&pod, "p", Some("b".into())).ok(),
            Some("b".into())
        );
        assert_eq!(
            choose_container(&pod, "p", Some("i".into())).ok(),
            Some("i".into())
        );
        let err = choose_container(&pod, "p", None).expect_err("two containers");
        assert!(err.to_string().contains("choose one of: [a b]"), "{err}");
        let err = choose_container(&pod, "p", Some("z".into())).expect_err("no z");
        assert!(
            err.to_string()
                .contains("container z is not valid for pod p"),
            "{err}"
        );
        let single = json!({"spec": {"containers": [{"name": "a"}]}});
        assert_eq!(choose_container(&single, "p", None).ok(), Some("a".into()));
    }

    #[test]
    fn waiting_containers_have_no_logs_yet() {
        let pod = json!({"status": {"containerStatuses": [
            {"name": "a", "state": {"waiting": {"reason": "ErrImagePull"}}},
            {"name": "b", "state": {"running": {}}},
            {"name": "c", "state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": {"terminated": {"exitCode": 1}}}
        ]}});
        assert_eq!(waiting_reason(&pod, "a").as_deref(), Some("ErrImagePull"));
        assert_eq!(waiting_reason(&pod, "b"), None);
        assert_eq!(waiting_reason(&pod, "c"), None);
        assert_eq!(
            waiting_reason(&pod, "d").as_deref(),
            Some("ContainerCreating")
        );
    }
}
