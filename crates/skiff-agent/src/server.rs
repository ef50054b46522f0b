//! The agent's own HTTPS endpoint (kubelet's port 10250): what the API server proxies
//! `kubectl logs` (and `kubectl exec`) to, and where it reads the node's measurements
//! ([`crate::stats`]) at kubelet's paths: `/stats/summary` (JSON), `/metrics/cadvisor` (also
//! `/metrics`) and `/metrics/resource` (Prometheus text).
//!
//! The certificate is signed by the node CA (asked from `/skiff/v1/nodes/NAME/certificate` at
//! start), so the API server can verify it. Callers must present a client certificate from
//! the cluster CA, which only servers hold (nodes' certificates come from the node CA), and the
//! node secret as a bearer token: another node cannot read this node's logs or metrics, or
//! exec into its pods, whatever it holds.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path as UrlPath, Query, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

pub use axum_server::tls_rustls::RustlsConfig;

use crate::containerd::exec::{ExecRequest, ExecSession};
use crate::containerd::ContainerdRuntime;
use crate::error::AgentError;
use crate::logs::{self, LogOptions};
use crate::stats::{self, prometheus};

/// What the endpoint needs.
pub struct AgentEndpoint {
    /// The bearer token callers must present.
    pub secret: String,
    /// The agent's data dir (log files are under `logs/`).
    pub data_dir: PathBuf,
    /// The runtime exec runs in (None with the fake runtime: no processes to exec into).
    pub containerd: Option<Arc<crate::containerd::ContainerdRuntime>>,
    /// The latest measurements, published by the agent's sampler (`None` before the first).
    pub stats: stats::SampleReceiver,
}

/// The routes of the agent endpoint.
pub fn router(endpoint: Arc<AgentEndpoint>) -> Router {
    Router::new()
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs),
        )
        .route("/exec/{namespace}/{pod}/{container}", get(exec))
        .route("/stats/summary", get(stats_summary))
        .route("/metrics/cadvisor", get(metrics_cadvisor))
        .route("/metrics", get(metrics_cadvisor))
        .route("/metrics/resource", get(metrics_resource))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(endpoint)
}

/// Serves `router` over TLS on `listener` until `stop` turns true, to clients with a
/// certificate from `client_ca_pem` (the cluster CA) only.
pub async fn serve(
    endpoint: Arc<AgentEndpoint>,
    listener: std::net::TcpListener,
    config: RustlsConfig,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let handle = axum_server::Handle::new();
    let signal = handle.clone();
    tokio::spawn(async move {
        crate::stopped(&mut stop).await;
        signal.graceful_shutdown(Some(Duration::from_secs(1)));
    });
    axum_server::from_tcp_rustls(listener, config)?
        .handle(handle)
        .serve(router(endpoint).into_make_service())
        .await?;
    Ok(())
}

/// The endpoint's TLS with `cert_pem`, its certificate: [`renew`] swaps in another while it
/// serves (connections already open keep the one they began with).
pub fn tls(cert_pem: &str, key_pem: &str, client_ca_pem: &str) -> Result<RustlsConfig, AgentError> {
    Ok(RustlsConfig::from_config(Arc::new(tls_config(
        cert_pem,
        key_pem,
        client_ca_pem,
    )?)))
}

/// A renewed certificate for new connections.
pub fn renew(
    config: &RustlsConfig,
    cert_pem: &str,
    key_pem: &str,
    client_ca_pem: &str,
) -> Result<(), AgentError> {
    config.reload_from_config(Arc::new(tls_config(cert_pem, key_pem, client_ca_pem)?));
    Ok(())
}

/// TLS that asks every client for a certificate chaining to `client_ca_pem` (and the client
/// usage, which only servers' certificates carry).
fn tls_config(
    cert_pem: &str,
    key_pem: &str,
    client_ca_pem: &str,
) -> Result<rustls::ServerConfig, AgentError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        AgentError::Endpoint(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{what}: {e}"),
        ))
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(client_ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| bad("the cluster CA", &e))?;
        roots.add(cert).map_err(|e| bad("the cluster CA", &e))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| bad("the client verifier", &e))?;
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("the serving certificate", &e))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| bad("the serving key", &e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("TLS versions", &e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| bad("the serving certificate", &e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// kubectl's log options, as the API server passes them on.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogQuery {
    #[serde(default)]
    follow: Option<String>,
    #[serde(default)]
    previous: Option<String>,
    #[serde(default)]
    timestamps: Option<String>,
    #[serde(default)]
    tail_lines: Option<i64>,
    #[serde(default)]
    since_seconds: Option<i64>,
    #[serde(default)]
    since_time: Option<String>,
    #[serde(default)]
    limit_bytes: Option<usize>,
}

fn flag(v: &Option<String>) -> bool {
    v.as_deref().is_some_and(|v| v == "true" || v == "1")
}

fn error(code: StatusCode, message: String) -> Response {
    (code, message).into_response()
}

/// Whether the caller presented the node secret (only the API server knows it).
fn authorized(endpoint: &AgentEndpoint, headers: &HeaderMap) -> bool {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    !token.is_empty() && token == endpoint.secret
}

async fn container_logs(
    State(endpoint): State<Arc<AgentEndpoint>>,
    UrlPath((namespace, pod, container)): UrlPath<(String, String, String)>,
    Query(query): Query<LogQuery>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&endpoint, &headers) {
        return error(StatusCode::UNAUTHORIZED, "Unauthorized".into());
    }
    let logs_dir = endpoint.data_dir.join("logs");
    let Some(dir) = pod_log_dir(&logs_dir, &namespace, &pod) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no logs of pod {namespace}/{pod} on this node"),
        );
    };
    let attempts = attempts_of(&dir, &container);
    let previous = flag(&query.previous);
    let chosen = if previous {
        attempts.iter().rev().nth(1)
    } else {
        attempts.last()
    };
    let Some(attempt) = chosen else {
        return error(
            StatusCode::NOT_FOUND,
            if previous {
                format!("previous terminated container \"{container}\" in pod \"{pod}\" not found")
            } else {
                format!("container \"{container}\" in pod \"{pod}\" has no logs yet")
            },
        );
    };
    let path = dir.join(format!("{container}_{attempt}.log"));
    let mut rotated = path.clone().into_os_string();
    rotated.push(".1");
    let since = match (&query.since_seconds, &query.since_time) {
        (Some(s), _) => Some(jiff::Timestamp::now() - jiff::SignedDuration::from_secs(*s)),
        (None, Some(t)) => t.parse().ok(),
        _ => None,
    };
    let options = LogOptions {
        timestamps: flag(&query.timestamps),
        tail_lines: query.tail_lines.filter(|n| *n >= 0).map(|n| n as usize),
        since,
        limit_bytes: query.limit_bytes,
    };
    let text = logs::render(&[PathBuf::from(rotated), path.clone()], &options);
    if !flag(&query.follow) || previous {
        return text.into_response();
    }
    // Follow: what is there now, then new lines as they are written, until the container
    // stops writing (it exited) or a newer attempt starts.
    let start = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let timestamps = options.timestamps;
    let newer = format!("{container}_{}.log", attempt + 1);
    let stream = futures::stream::unfold(
        (Some(text), start, path, dir, newer),
        move |(first, offset, path, dir, newer)| async move {
            if let Some(text) = first {
                return Some((
                    Ok::<_, std::io::Error>(text),
                    (None, offset, path, dir, newer),
                ));
            }
            let mut offset = offset;
            loop {
                let (chunk, next) = read_new_lines(&path, offset, timestamps).await;
                offset = next;
                if !chunk.is_empty() {
                    return Some((Ok(chunk), (None, offset, path, dir, newer)));
                }
                if !logs::is_active(&path) || dir.join(&newer).exists() || !dir.exists() {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        },
    );
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// `render` of the latest sample, if the caller may see it and there is one.
fn with_sample(
    endpoint: &AgentEndpoint,
    headers: &HeaderMap,
    render: impl FnOnce(&stats::Sample) -> Response,
) -> Response {
    if !authorized(endpoint, headers) {
        return error(StatusCode::UNAUTHORIZED, "Unauthorized".into());
    }
    // Cloned out so the channel is not held while rendering.
    let latest = endpoint.stats.borrow().clone();
    match latest {
        Some(sample) => render(&sample),
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no measurements yet: the first sample is taken when the agent starts".into(),
        ),
    }
}

/// kubelet's Summary API: the latest sample as JSON.
async fn stats_summary(State(endpoint): State<Arc<AgentEndpoint>>, headers: HeaderMap) -> Response {
    with_sample(&endpoint, &headers, |sample| {
        axum::Json(&sample.summary).into_response()
    })
}

fn prometheus_text(text: String) -> Response {
    ([(header::CONTENT_TYPE, prometheus::CONTENT_TYPE)], text).into_response()
}

/// cAdvisor's container metrics (`/metrics/cadvisor`, and `/metrics`).
async fn metrics_cadvisor(
    State(endpoint): State<Arc<AgentEndpoint>>,
    headers: HeaderMap,
) -> Response {
    with_sample(&endpoint, &headers, |sample| {
        prometheus_text(prometheus::cadvisor(sample))
    })
}

/// kubelet's resource metrics (`/metrics/resource`).
async fn metrics_resource(
    State(endpoint): State<Arc<AgentEndpoint>>,
    headers: HeaderMap,
) -> Response {
    with_sample(&endpoint, &headers, |sample| {
        prometheus_text(prometheus::resource(sample))
    })
}

/// `kubectl exec` over WebSocket, subprotocol `v5.channel.k8s.io` (or v4): binary frames
/// whose first byte is the channel — 0 stdin, 1 stdout, 2 stderr, 3 the final status (JSON),
/// 4 terminal resize, 255 "close this channel" (v5: the client's stdin ended).
async fn exec(
    State(endpoint): State<Arc<AgentEndpoint>>,
    UrlPath((namespace, pod, container)): UrlPath<(String, String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if !authorized(&endpoint, &headers) {
        return error(StatusCode::UNAUTHORIZED, "Unauthorized".into());
    }
    let Some(runtime) = endpoint.containerd.clone() else {
        return error(
            StatusCode::BAD_REQUEST,
            "this node's runtime cannot exec".into(),
        );
    };
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query.as_deref().unwrap_or("")).unwrap_or_default();
    let is = |key: &str| {
        pairs
            .iter()
            .any(|(k, v)| k == key && (v == "true" || v == "1"))
    };
    let request = ExecRequest {
        namespace,
        pod,
        container,
        command: pairs
            .iter()
            .filter(|(k, _)| k == "command")
            .map(|(_, v)| v.clone())
            .collect(),
        tty: is("tty"),
        stdin: is("stdin"),
    };
    let session = match runtime.exec(&request).await {
        Ok(session) => session,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    ws.protocols(["v5.channel.k8s.io", "v4.channel.k8s.io"])
        .on_upgrade(move |socket| pump(socket, runtime, session))
}

/// How long the first frames of an exec wait after the upgrade (see `pump`).
const STREAMS_SETTLE: Duration = Duration::from_millis(100);

/// Moves bytes between the WebSocket and the exec's stdio until the process exits.
async fn pump(socket: WebSocket, runtime: Arc<ContainerdRuntime>, session: ExecSession) {
    use futures::{SinkExt, StreamExt};
    use tokio::io::AsyncWriteExt;

    let (mut sink, mut incoming) = socket.split();
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
    let mut readers = Vec::new();
    let ExecSession {
        handle,
        stdin,
        stdout,
        stderr,
        exit,
    } = session;
    let streams = [(1u8, Some(stdout)), (2u8, stderr)];
    for (channel, stream) in streams {
        let Some(mut stream) = stream else { continue };
        let tx = out_tx.clone();
        readers.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        let mut frame = Vec::with_capacity(n + 1);
                        frame.push(channel);
                        frame.extend_from_slice(&buf[..n]);
                        if tx.send(frame).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }));
    }
    drop(out_tx);
    let writer = tokio::spawn(async move {
        // kubectl (client-go's WebSocket executor) reads the connection from the moment it is
        // open but creates its streams a moment later, and drops frames for a stream it does
        // not have yet ("Unknown stream id 1, discarding message"): a quick command's output,
        // and even its exit status, were lost and kubectl waited. The process already runs
        // (it started before the upgrade), so its output waits here briefly instead.
        tokio::time::sleep(STREAMS_SETTLE).await;
        while let Some(frame) = out_rx.recv().await {
            if sink.send(Message::Binary(frame.into())).await.is_err() {
                break;
            }
        }
        sink
    });

    let mut stdin = stdin;
    let mut exit = exit;
    let code = loop {
        tokio::select! {
            result = &mut exit => break result.ok().and_then(|r| r.ok()),
            message = incoming.next() => match message {
                Some(Ok(Message::Binary(data))) if !data.is_empty() => match data[0] {
                    0 => {
                        if let Some(stdin) = stdin.as_mut() {
                            let _ = stdin.write_all(&data[1..]).await;
                        }
                    }
                    4 => {
                        let size: serde_json::Value = serde_json::from_slice(&data[1..]).unwrap_or_default();
                        let width = size["Width"].as_u64().unwrap_or(80) as u32;
                        let height = size["Height"].as_u64().unwrap_or(24) as u32;
                        runtime.resize(&handle, width, height).await;
                    }
                    255 if data.get(1) == Some(&0) => {
                        stdin = None;
                        runtime.close_stdin(&handle).await;
                    }
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    // The client went away: the process is left to finish on its own.
                    break None;
                }
                Some(Ok(_)) => {}
            },
        }
    };
    // Let the last output through, then stop reading (the FIFOs never report EOF: we hold
    // both ends open).
    tokio::time::sleep(Duration::from_millis(150)).await;
    for reader in &readers {
        reader.abort();
    }
    for reader in readers {
        let _ = reader.await;
    }
    runtime.finish(&handle);
    let Ok(mut sink) = writer.await else {
        return;
    };
    if let Some(code) = code {
        let status = if code == 0 {
            serde_json::json!({"metadata": {}, "status": "Success"})
        } else {
            serde_json::json!({
                "metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
                "message": format!("command terminated with non-zero exit code: error executing command, exit status {code}"),
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}
            })
        };
        let mut frame = vec![3u8];
        frame.extend_from_slice(status.to_string().as_bytes());
        let _ = sink.send(Message::Binary(frame.into())).await;
    }
    // A normal closure (1000); a Close without a code reads as an error to kubectl.
    let _ = sink
        .send(Message::Close(Some(axum::extract::ws::CloseFrame {
            code: axum::extract::ws::close_code::NORMAL,
            reason: "".into(),
        })))
        .await;
}

/// Complete lines written to `path` after `offset`, rendered; and the offset after them.
async fn read_new_lines(path: &Path, offset: u64, timestamps: bool) -> (String, u64) {
    let Ok(mut file) = tokio::fs::File::open(path).await else {
        return (String::new(), offset);
    };
    if file.seek(std::io::SeekFrom::Start(offset)).await.is_err() {
        return (String::new(), offset);
    }
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).await.is_err() {
        return (String::new(), offset);
    }
    // Only up to the last newline: a record being written stays for the next read.
    let Some(end) = bytes.iter().rposition(|b| *b == b'\n') else {
        return (String::new(), offset);
    };
    let text = String::from_utf8_lossy(&bytes[..=end]);
    let mut out = String::new();
    for line in text.lines() {
        if let Some(record) = logs::parse_record(line) {
            if timestamps {
                out.push_str(record.time);
                out.push(' ');
            }
            out.push_str(record.text);
            if !record.partial {
                out.push('\n');
            }
        }
    }
    (out, offset + end as u64 + 1)
}

/// The newest log dir of pod `namespace/pod` (a pod re-created with the same name has a new
/// uid and so a new dir).
fn pod_log_dir(logs_dir: &Path, namespace: &str, pod: &str) -> Option<PathBuf> {
    let prefix = format!("{namespace}_{pod}_");
    std::fs::read_dir(logs_dir)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
}

/// The attempt numbers with a log file for `container`, ascending.
fn attempts_of(dir: &Path, container: &str) -> Vec<u32> {
    let prefix = format!("{container}_");
    let mut attempts: Vec<u32> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.strip_prefix(&prefix)?
                        .strip_suffix(".log")?
                        .parse()
                        .ok()
                })
                .collect()
        })
        .unwrap_or_default();
    attempts.sort_unstable();
    attempts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_current_and_previous_attempts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pod = dir.path().join("ns_web_u1");
        std::fs::create_dir_all(&pod).expect("mkdir");
        for f in [
            "app_0.log",
            "app_2.log",
            "app_1.log",
            "app_1.log.1",
            "side_0.log",
        ] {
            std::fs::write(pod.join(f), "").expect("write");
        }
        assert_eq!(attempts_of(&pod, "app"), [0, 1, 2]);
        assert_eq!(attempts_of(&pod, "side"), [0]);
        assert_eq!(pod_log_dir(dir.path(), "ns", "web"), Some(pod));
        assert_eq!(pod_log_dir(dir.path(), "ns", "we"), None);
    }

    fn endpoint(stats: stats::SampleReceiver) -> Arc<AgentEndpoint> {
        Arc::new(AgentEndpoint {
            secret: "s3cret".into(),
            data_dir: PathBuf::from("/nonexistent"),
            containerd: None,
            stats,
        })
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let value = format!("Bearer {token}").parse().expect("header value");
        headers.insert(header::AUTHORIZATION, value);
        headers
    }

    async fn body(response: Response) -> (StatusCode, String) {
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn measurements_need_the_node_secret_and_a_first_sample() {
        let (tx, rx) = stats::channel();
        let endpoint = endpoint(rx);
        let ask = |token: &str| {
            let (endpoint, headers) = (endpoint.clone(), bearer(token));
            async move {
                [
                    body(stats_summary(State(endpoint.clone()), headers.clone()).await).await,
                    body(metrics_cadvisor(State(endpoint.clone()), headers.clone()).await).await,
                    body(metrics_resource(State(endpoint), headers).await).await,
                ]
            }
        };
        for (status, _) in ask("wrong").await {
            assert_eq!(status, StatusCode::UNAUTHORIZED);
        }
        for (status, text) in ask("s3cret").await {
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            assert!(text.contains("no measurements yet"), "{text}");
        }

        let mut sample = stats::Sample::default();
        sample.summary.node.node_name = "n1".into();
        sample.machine_memory_bytes = Some(2048);
        tx.send_replace(Some(Arc::new(sample)));
        let [summary, cadvisor, resource] = ask("s3cret").await;
        assert_eq!(summary.0, StatusCode::OK);
        let json: serde_json::Value = serde_json::from_str(&summary.1).expect("json");
        assert_eq!(json["node"]["nodeName"], "n1");
        assert_eq!(json["pods"], serde_json::json!([]));
        assert_eq!(cadvisor.0, StatusCode::OK);
        assert!(
            cadvisor.1.contains("\nmachine_memory_bytes 2048\n"),
            "{}",
            cadvisor.1
        );
        assert_eq!(resource.0, StatusCode::OK);
        assert!(resource.1.contains("scrape_error 0"), "{}", resource.1);
    }
}
