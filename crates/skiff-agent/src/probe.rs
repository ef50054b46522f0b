//! Probes: startup, liveness and readiness checks of a running container, as kubelet runs them.
//!
//! One prober task per running container (started by the pod worker, aborted when the
//! container stops). It reports only *changes* to the worker, which owns the container:
//!
//! ```text
//! container started
//!   └─ startup probe? ── every periodSeconds after initialDelaySeconds ──┬─ successThreshold passes ─► Started
//!                                                                       └─ failureThreshold fails ──► Failed (restart)
//!      no startup probe ─► Started at once
//! after Started, side by side:
//!   liveness:  failureThreshold consecutive failures ─► Failed (the worker kills; restartPolicy restarts)
//!   readiness: successThreshold passes ─► Ready(true);  failureThreshold fails ─► Ready(false)
//! every failure ─► Unhealthy (an Event: "Liveness probe failed: HTTP probe failed with statuscode: 500")
//! ```
//!
//! Before its first result, readiness is false and liveness is success, as in Kubernetes.
//! A probe passes when: httpGet answers with a status in 200..400; tcpSocket connects; exec
//! exits 0. Each attempt may take `timeoutSeconds` (default 1) before it counts as failed.
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::runtime::Runtime;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Startup,
    Liveness,
    Readiness,
}

impl Kind {
    /// `Liveness`, as kubelet's messages name it.
    pub fn title(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
        }
    }

    pub fn lower(self) -> &'static str {
        match self {
            Kind::Startup => "startup",
            Kind::Liveness => "liveness",
            Kind::Readiness => "readiness",
        }
    }
}

/// What a prober tells the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// The startup probe passed (or there is none): liveness and readiness begin.
    Started,
    /// The readiness result changed.
    Ready(bool),
    /// One attempt failed (an `Unhealthy` event).
    Unhealthy { kind: Kind, message: String },
    /// The container must be restarted (liveness or startup gave up on it).
    Failed { kind: Kind },
}

/// The counting rules of one probe, apart from how it checks (pure).
#[derive(Debug, Clone)]
pub struct Thresholds {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success: u32,
    pub failure: u32,
}

impl Thresholds {
    /// Kubernetes' defaults: period 10 s, timeout 1 s, 1 success, 3 failures.
    pub fn of(probe: &Probe) -> Thresholds {
        let secs =
            |v: Option<i32>, default: i32| Duration::from_secs(v.unwrap_or(default).max(0) as u64);
        Thresholds {
            initial_delay: secs(probe.initial_delay_seconds, 0),
            period: secs(probe.period_seconds, 10).max(Duration::from_secs(1)),
            timeout: secs(probe.timeout_seconds, 1).max(Duration::from_secs(1)),
            success: probe.success_threshold.unwrap_or(1).max(1) as u32,
            failure: probe.failure_threshold.unwrap_or(3).max(1) as u32,
        }
    }
}

/// Consecutive results of one probe and the verdict they add up to.
#[derive(Debug, Clone)]
pub struct Counter {
    thresholds: Thresholds,
    successes: u32,
    failures: u32,
    verdict: Option<bool>,
}

impl Counter {
    pub fn new(thresholds: Thresholds) -> Counter {
        Counter {
            thresholds,
            successes: 0,
            failures: 0,
            verdict: None,
        }
    }

    /// Adds one result; returns the new verdict when it changed.
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        if ok {
            self.successes += 1;
            self.failures = 0;
        } else {
            self.failures += 1;
            self.successes = 0;
        }
        let verdict = if self.successes >= self.thresholds.success {
            Some(true)
        } else if self.failures >= self.thresholds.failure {
            Some(false)
        } else {
            self.verdict
        };
        let changed = verdict != self.verdict;
        self.verdict = verdict;
        if changed {
            verdict
        } else {
            None
        }
    }
}

/// Where and how to check one container.
pub struct Target<R> {
    pub runtime: Arc<R>,
    pub container_id: String,
    pub container: Container,
    pub pod_ip: Option<String>,
}

/// Starts the prober of a container that just started; `None` when it has no probes at all
/// (then it counts as started and ready as long as it runs).
pub fn spawn<R: Runtime>(
    target: Target<R>,
    updates: mpsc::Sender<(String, Update)>,
) -> Option<JoinHandle<()>> {
    let c = &target.container;
    if c.startup_probe.is_none() && c.liveness_probe.is_none() && c.readiness_probe.is_none() {
        return None;
    }
    Some(tokio::spawn(async move {
        let target = Arc::new(target);
        let send = |u: Update| {
            let tx = updates.clone();
            let id = target.container_id.clone();
            async move { tx.send((id, u)).await.is_ok() }
        };
        if let Some(probe) = target.container.startup_probe.clone() {
            // The first verdict decides: started, or restarted.
            if !probe_until(&target, &probe, Kind::Startup, &send, |_| true).await {
                send(Update::Failed {
                    kind: Kind::Startup,
                })
                .await;
                return;
            }
        }
        if !send(Update::Started).await {
            return;
        }
        let liveness = target.container.liveness_probe.clone();
        let readiness = target.container.readiness_probe.clone();
        let live = async {
            match liveness {
                // Runs until it fails for good; then the container is to be killed.
                Some(probe) => {
                    probe_until(&target, &probe, Kind::Liveness, &send, |ok| !ok).await;
                    send(Update::Failed {
                        kind: Kind::Liveness,
                    })
                    .await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        let ready = async {
            if let Some(probe) = readiness {
                probe_until(&target, &probe, Kind::Readiness, &send, |_| false).await;
            }
            std::future::pending::<()>().await;
        };
        // Liveness ending means the container is to be killed: the prober is done.
        tokio::select! {
            _ = live => {}
            _ = ready => {}
        }
    }))
}

/// Runs one probe on its schedule until `done` accepts a verdict (or the worker is gone), and
/// returns that verdict. Every failed attempt is reported (`Unhealthy`); readiness verdicts are
/// reported as they change.
async fn probe_until<R: Runtime, F, Fut>(
    target: &Target<R>,
    probe: &Probe,
    kind: Kind,
    send: &F,
    done: impl Fn(bool) -> bool,
) -> bool
where
    F: Fn(Update) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let thresholds = Thresholds::of(probe);
    let mut counter = Counter::new(thresholds.clone());
    tokio::time::sleep(thresholds.initial_delay).await;
    loop {
        let result = check(target, probe, thresholds.timeout).await;
        if let Err(message) = &result {
            let message = message.clone();
            send(Update::Unhealthy { kind, message }).await;
        }
        if let Some(verdict) = counter.record(result.is_ok()) {
            let worker_gone = kind == Kind::Readiness && !send(Update::Ready(verdict)).await;
            if worker_gone || done(verdict) {
                return verdict;
            }
        }
        tokio::time::sleep(thresholds.period).await;
    }
}

/// One attempt. `Err` carries kubelet's wording of the failure.
pub async fn check<R: Runtime>(
    target: &Target<R>,
    probe: &Probe,
    timeout: Duration,
) -> Result<(), String> {
    if let Some(http) = &probe.http_get {
        let host = http
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .or_else(|| target.pod_ip.clone())
            .ok_or("the pod has no IP yet")?;
        let port = resolve_port(&http.port, &target.container)?;
        let scheme = http.scheme.as_deref().unwrap_or("HTTP").to_lowercase();
        let path = http.path.as_deref().unwrap_or("/");
        let path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        let url = format!("{scheme}://{host}:{port}{path}");
        let headers: Vec<(String, String)> = http
            .http_headers
            .iter()
            .flatten()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect();
        return http_get(&url, &headers, timeout).await;
    }
    if let Some(tcp) = &probe.tcp_socket {
        let host = tcp
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .or_else(|| target.pod_ip.clone())
            .ok_or("the pod has no IP yet")?;
        let port = resolve_port(&tcp.port, &target.container)?;
        let addr = format!("{host}:{port}");
        return match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&addr)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("dial tcp {addr}: connect: {e}")),
            Err(_) => Err(format!("dial tcp {addr}: i/o timeout")),
        };
    }
    if let Some(exec) = &probe.exec {
        let command = exec.command.clone().unwrap_or_default();
        return match target
            .runtime
            .exec_sync(&target.container_id, &command, timeout)
            .await
        {
            Ok((0, _)) => Ok(()),
            Ok((code, output)) if output.trim().is_empty() => {
                Err(format!("command {command:?} exited with {code}"))
            }
            Ok((_, output)) => Err(output.trim().to_string()),
            Err(e) => Err(e.to_string()),
        };
    }
    if probe.grpc.is_some() {
        return Err("gRPC probes are not supported by skiff yet".into());
    }
    Err("the probe has no handler (httpGet, tcpSocket or exec)".into())
}

/// Runs a lifecycle hook (preStop) to its end or `timeout`: exec, httpGet or sleep.
pub async fn run_hook<R: Runtime>(
    target: &Target<R>,
    hook: &k8s_openapi::api::core::v1::LifecycleHandler,
    timeout: Duration,
) -> Result<(), String> {
    if let Some(sleep) = &hook.sleep {
        let wanted = Duration::from_secs(sleep.seconds.max(0) as u64);
        tokio::time::sleep(wanted.min(timeout)).await;
        return Ok(());
    }
    // A hook is a probe without thresholds: the same three ways of checking.
    let probe = Probe {
        exec: hook.exec.clone(),
        http_get: hook.http_get.clone(),
        tcp_socket: hook.tcp_socket.clone(),
        ..Probe::default()
    };
    check(target, &probe, timeout.max(Duration::from_secs(1))).await
}

/// A port by number, or by the name of one of the container's ports.
pub fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    let number = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => match name.parse::<i32>() {
            Ok(n) => n,
            Err(_) => container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name))
                .map(|p| p.container_port)
                .ok_or_else(|| format!("couldn't find port {name:?} in the container's ports"))?,
        },
    };
    u16::try_from(number)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("invalid port number: {number}"))
}

/// kubelet's HTTP check: success is 200 ≤ status < 400; TLS is not verified (as kubelet).
async fn http_get(
    url: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> Result<(), String> {
    static CLIENT: std::sync::OnceLock<Result<reqwest::Client, String>> =
        std::sync::OnceLock::new();
    let client = CLIENT
        .get_or_init(|| {
            let _ = rustls::crypto::ring::default_provider().install_default();
            reqwest::Client::builder()
                .danger_accept_invalid_certs(true)
                .user_agent(format!("kube-probe/1.{}", "33"))
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(Clone::clone)?;
    let mut request = client.get(url).timeout(timeout);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    match request.send().await {
        Ok(response) => {
            let code = response.status().as_u16();
            if (200..400).contains(&code) {
                Ok(())
            } else {
                Err(format!("HTTP probe failed with statuscode: {code}"))
            }
        }
        Err(e) if e.is_timeout() => Err(format!(
            "Get \"{url}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        )),
        Err(e) if e.is_connect() => Err(format!("Get \"{url}\": dial tcp: connect: connection refused")),
        Err(e) => Err(format!("Get \"{url}\": {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn thresholds(success: u32, failure: u32) -> Thresholds {
        Thresholds {
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            success,
            failure,
        }
    }

    #[test]
    fn verdicts_change_only_at_the_thresholds() {
        // (success threshold, failure threshold, results, verdict changes after each result)
        type Case<'a> = (u32, u32, &'a [bool], &'a [Option<bool>]);
        let cases: &[Case] = &[
            (
                1,
                3,
                &[true, false, false, false, true],
                &[Some(true), None, None, Some(false), Some(true)],
            ),
            (
                2,
                1,
                &[true, true, false, true, true],
                &[None, Some(true), Some(false), None, Some(true)],
            ),
            (
                1,
                3,
                &[false, false, false, false],
                &[None, None, Some(false), None],
            ),
        ];
        for (success, failure, results, expected) in cases {
            let mut counter = Counter::new(thresholds(*success, *failure));
            let got: Vec<Option<bool>> = results.iter().map(|r| counter.record(*r)).collect();
            assert_eq!(
                &got, expected,
                "success={success} failure={failure} {results:?}"
            );
        }
    }

    #[test]
    fn defaults_are_kubernetes_defaults() {
        let t = Thresholds::of(&Probe::default());
        assert_eq!(t.period, Duration::from_secs(10));
        assert_eq!(t.timeout, Duration::from_secs(1));
        assert_eq!((t.success, t.failure), (1, 3));
    }

    #[test]
    fn ports_resolve_by_number_or_name() {
        let container: Container = serde_json::from_value(json!({
            "name": "web", "ports": [{"name": "http", "containerPort": 8080}]
        }))
        .expect("container");
        assert_eq!(resolve_port(&IntOrString::Int(80), &container), Ok(80));
        assert_eq!(
            resolve_port(&IntOrString::String("http".into()), &container),
            Ok(8080)
        );
        assert!(
            resolve_port(&IntOrString::String("admin".into()), &container)
                .expect_err("fails")
                .contains("admin")
        );
        assert!(resolve_port(&IntOrString::Int(0), &container).is_err());
    }

    #[tokio::test]
    async fn http_and_tcp_checks_against_a_local_server() {
        use crate::fake::FakeRuntime;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // A tiny HTTP server: /ok answers 200, anything else 500.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = vec![0u8; 1024];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]).to_string();
                let status = if request.starts_with("GET /ok ") && request.contains("x-probe: yes")
                {
                    "200 OK"
                } else {
                    "500 Internal Server Error"
                };
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    )
                    .await;
            }
        });
        let target = Target {
            runtime: Arc::new(FakeRuntime::new("10.99.0.")),
            container_id: "c1".into(),
            container: Container::default(),
            pod_ip: Some("127.0.0.1".into()),
        };
        let probe =
            |value: serde_json::Value| -> Probe { serde_json::from_value(value).expect("probe") };
        let second = Duration::from_secs(1);
        let ok = probe(
            json!({"httpGet": {"path": "/ok", "port": port, "httpHeaders": [{"name": "X-Probe", "value": "yes"}]}}),
        );
        assert_eq!(check(&target, &ok, second).await, Ok(()));
        let bad = probe(json!({"httpGet": {"path": "/healthz", "port": port}}));
        assert_eq!(
            check(&target, &bad, second).await,
            Err("HTTP probe failed with statuscode: 500".into())
        );
        let tcp = probe(json!({"tcpSocket": {"port": port}}));
        assert_eq!(check(&target, &tcp, second).await, Ok(()));
        // A port nobody listens on.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let refused = probe(json!({"tcpSocket": {"port": closed}}));
        assert!(check(&target, &refused, second)
            .await
            .expect_err("fails")
            .contains("connect"));
        let refused_http = probe(json!({"httpGet": {"port": closed}}));
        assert!(check(&target, &refused_http, second)
            .await
            .expect_err("fails")
            .contains("refused"));
    }
}
