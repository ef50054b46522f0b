//! Starting real `skiff server` processes for end-to-end tests, and talking to them over HTTPS
//! with the credentials they write.
#![allow(dead_code)] // each test file uses a different part of this module

pub mod fake;
pub mod lab;
pub mod node;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A `skiff server` process with its own data dir and port.
pub struct Server {
    pub dir: PathBuf,
    pub port: u16,
    child: Option<Child>,
    extra: Vec<String>,
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Server {
    /// Starts a first server in `dir` on a fresh port, without a node agent (the store and
    /// API tests need no containers).
    pub fn start(dir: &Path) -> Server {
        Server::start_with(dir, free_port(), vec!["--disable-agent".to_string()])
    }

    /// Starts a first server in `dir` with its node agent, passing `agent_args` (a bridge,
    /// containerd namespace and kubelet port of the test's own, so tests can run side by side).
    #[allow(dead_code)]
    pub fn start_with_agent(dir: &Path, agent_args: &[&str]) -> Server {
        let extra = agent_args.iter().map(|a| a.to_string()).collect();
        Server::start_with(dir, free_port(), extra)
    }

    /// Starts a first server without a node agent, with more flags.
    #[allow(dead_code)]
    pub fn start_with_flags(dir: &Path, flags: &[&str]) -> Server {
        let mut extra = vec!["--disable-agent".to_string()];
        extra.extend(flags.iter().map(|f| f.to_string()));
        Server::start_with(dir, free_port(), extra)
    }

    /// Starts a server joining the cluster that `leader` belongs to.
    pub fn join(dir: &Path, leader: &Server) -> Server {
        let token = std::fs::read_to_string(leader.dir.join("token")).expect("join token");
        let extra = vec![
            "--disable-agent".to_string(),
            "--join".to_string(),
            leader.url(),
            "--token".to_string(),
            token.trim().to_string(),
        ];
        Server::start_with(dir, free_port(), extra)
    }

    fn start_with(dir: &Path, port: u16, extra: Vec<String>) -> Server {
        let mut server = Server {
            dir: dir.to_path_buf(),
            port,
            child: None,
            extra,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.with_extension("log"))
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .arg("server")
            .arg("--data-dir")
            .arg(&self.dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--snapshot-every")
            .arg("200")
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start skiff server");
        self.child = Some(child);
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig.yaml")
    }

    /// Waits until the server answers `/readyz` with 200 and has its kubeconfig written.
    pub fn wait_ready(&self) -> Client {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.kubeconfig().exists() {
                if let Ok(client) = Client::from_kubeconfig(&self.kubeconfig(), &self.url()) {
                    if client.get_status("/readyz") == 200
                        // The system namespaces are made one by one, this one last.
                        && client.get_status("/api/v1/namespaces/kube-node-lease") == 200
                    {
                        return client;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "server in {} did not become ready; see its log",
                self.dir.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }

    /// The process's exit status, if it has exited on its own.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGTERM, a clean exit, then the same process again (data dir, port, flags).
    pub fn stop_and_start(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Starts the process again with the same data dir, port and flags.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A blocking HTTPS client with the admin token and the cluster CA of a kubeconfig.
pub struct Client {
    http: reqwest::blocking::Client,
    pub base: String,
    pub token: String,
    pub ca_pem: String,
}

fn kubeconfig_field(text: &str, name: &str) -> Option<String> {
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{name}:")))?;
    let value: Value = serde_json::from_str(line.trim()).ok()?;
    value.as_str().map(String::from)
}

impl Client {
    pub fn from_kubeconfig(path: &Path, base: &str) -> Result<Client, String> {
        use base64::Engine as _;
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        let ca = kubeconfig_field(&text, "certificate-authority-data").ok_or("no CA")?;
        let ca_pem = String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(ca)
                .map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
        let token = kubeconfig_field(&text, "token").ok_or("no token")?;
        Ok(Client::new(base, &ca_pem, &token))
    }

    pub fn new(base: &str, ca_pem: &str, token: &str) -> Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA");
        let http = reqwest::blocking::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        Client {
            http,
            base: base.to_string(),
            token: token.to_string(),
            ca_pem: ca_pem.to_string(),
        }
    }

    /// The same credentials against another server of the cluster.
    pub fn at(&self, base: &str) -> Client {
        Client::new(base, &self.ca_pem, &self.token)
    }

    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::blocking::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    pub fn get_status(&self, path: &str) -> u16 {
        self.request(reqwest::Method::GET, path)
            .send()
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    /// Sends a request with an optional JSON body; returns the status and the decoded body.
    pub fn call(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        match request.send() {
            Ok(response) => {
                let status = response.status().as_u16();
                let text = response.text().unwrap_or_default();
                (
                    status,
                    serde_json::from_str(&text).unwrap_or(Value::String(text)),
                )
            }
            Err(e) => (0, Value::String(e.to_string())),
        }
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None)
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body))
    }
}

/// A small ConfigMap body.
pub fn configmap(name: &str, value: &str) -> Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": {"value": value},
    })
}

/// Retries `f` until it returns `Some`, or panics after `timeout`.
pub fn eventually<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = f() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `metadata.name` of every item of a list response.
pub fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i["metadata"]["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Running kubectl: the 1.33 dispatcher on PATH, or the 1.32 binary behind it.
#[allow(dead_code)]
pub mod kubectl {
    use std::path::Path;
    use std::process::{Command, Output};

    /// The kubectl 1.32 binary behind the dispatcher (Debian's google-cloud-sdk layout).
    pub const KUBECTL_1_32: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.32";

    pub fn run(binary: &str, kubeconfig: &Path, args: &[&str]) -> Output {
        Command::new(binary)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            .output()
            .expect("run kubectl")
    }

    /// stdout then stderr, as one text.
    pub fn text(out: &Output) -> String {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}
