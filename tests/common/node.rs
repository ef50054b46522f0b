//! A cluster with a real node agent (containerd, runc, CNI) for end-to-end tests: its own
//! server, containerd namespace, bridge and pod subnet per test, cleaned up on drop.
#![allow(dead_code)] // each test file uses a different part of this module

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{eventually, Client, Server};
use serde_json::Value;

/// A test's cluster: a server with an agent, and what it needs to clean up.
pub struct Cluster {
    pub server: Server,
    pub client: Client,
    pub dir: tempfile::TempDir,
    bridge: String,
    namespace: String,
    /// The node's pod CIDR (the first /24 of the test's cluster CIDR).
    pod_cidr: String,
    /// The node's address on its pod bridge (where its DNS server answers).
    pub gateway: String,
}

/// The busybox applets the test images link.
const APPLETS: [&str; 20] = [
    "sh", "httpd", "echo", "cat", "sleep", "wget", "head", "tr", "env", "ls", "true", "false",
    "seq", "kill", "id", "touch", "rm", "nslookup", "hostname", "printf",
];

/// A rootfs with busybox and a web page, packed with `skiff image pack` into the agent's
/// airgap directory so the agent imports it at start.
pub fn pack_image(data: &Path, tag: &str, page: &str) {
    let rootfs = data.with_extension("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).expect("rootfs");
    std::fs::create_dir_all(rootfs.join("var/www")).expect("www");
    std::fs::create_dir_all(rootfs.join("tmp")).expect("tmp");
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("busybox-static");
    for applet in APPLETS {
        let link = rootfs.join("bin").join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", link).expect("symlink");
        }
    }
    std::fs::write(rootfs.join("var/www/index.html"), page).expect("page");
    // What probes ask for (seed-002's /healthz and /ready): remove them to fail the probe.
    std::fs::write(rootfs.join("var/www/healthz"), "ok\n").expect("healthz");
    std::fs::write(rootfs.join("var/www/ready"), "ok\n").expect("ready");
    // A page that costs CPU (busybox httpd runs CGI scripts): load for the autoscaler tests,
    // as Kubernetes' HPA walkthrough uses php-apache.
    let cgi = rootfs.join("var/www/cgi-bin");
    std::fs::create_dir_all(&cgi).expect("cgi-bin");
    std::fs::write(
        cgi.join("burn"),
        "#!/bin/sh\ni=0\nwhile [ $i -lt 50000 ]; do i=$((i+1)); done\nprintf 'Content-Type: text/plain\\r\\n\\r\\nburnt %s\\n' $i\n",
    )
    .expect("burn");
    std::fs::set_permissions(
        cgi.join("burn"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod burn");
    let images = data.join("agent").join("images");
    std::fs::create_dir_all(&images).expect("images dir");
    let out = images.join(format!("{}.tar", tag.replace(['/', ':'], "_")));
    let status = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["image", "pack", "--rootfs"])
        .arg(&rootfs)
        .args([
            "--entrypoint",
            "/bin/httpd",
            "--cmd",
            "-f",
            "--cmd",
            "-p",
            "--cmd",
            "8080",
        ])
        .args([
            "--cmd",
            "-h",
            "--cmd",
            "/var/www",
            "--env",
            "GREETING=hello",
        ])
        .args(["--port", "8080", "--tag", tag, "-o"])
        .arg(&out)
        .status()
        .expect("skiff image pack");
    assert!(status.success(), "skiff image pack failed");
}

impl Cluster {
    /// `n` picks the subnet (10.<n>.0.0/16) and names, distinct per test.
    pub fn start(n: u8, tag: &str) -> Cluster {
        Cluster::start_with(n, tag, &[])
    }

    /// As [`Cluster::start`], with more flags for the server (and its agent).
    pub fn start_with(n: u8, tag: &str, flags: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("s");
        pack_image(&data, "skiff.local/web:1.0", &format!("hello from {tag}\n"));
        let bridge = format!("skt{tag}");
        let namespace = format!("skiff-test-{tag}");
        let cidr = format!("10.{n}.0.0/16");
        let service_cidr = format!("10.{}.0.0/16", n + 100);
        let node_name = format!("node-{tag}");
        let mut args = vec![
            "--bridge",
            &bridge,
            "--containerd-namespace",
            &namespace,
            "--kubelet-port",
            "0",
            "--cluster-cidr",
            &cidr,
            "--service-cidr",
            &service_cidr,
            "--node-name",
            &node_name,
        ];
        args.extend_from_slice(flags);
        let server = Server::start_with_agent(&data, &args);
        let client = server.wait_ready();
        let cluster = Cluster {
            server,
            client,
            dir,
            bridge,
            namespace,
            pod_cidr: format!("10.{n}.0.0/24"),
            gateway: format!("10.{n}.0.1"),
        };
        let node = format!("node-{tag}");
        eventually("the node registers", Duration::from_secs(60), || {
            let (code, _) = cluster.client.get(&format!("/api/v1/nodes/{node}"));
            (code == 200).then_some(())
        });
        cluster
    }

    /// Packs another busybox web image into the agent's airgap dir and waits until the agent
    /// has imported it (the directory is watched).
    pub fn add_image(&self, tag: &str, page: &str) {
        pack_image(&self.data(), tag, page);
        let short = tag.rsplit('/').next().unwrap_or(tag).to_string();
        let short = if short.contains(':') {
            short
        } else {
            format!("{short}:latest")
        };
        eventually(
            &format!("image {tag} imported"),
            Duration::from_secs(30),
            || {
                self.ctr(&["images", "ls", "-q"])
                    .lines()
                    .any(|l| l.ends_with(&short))
                    .then_some(())
            },
        );
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("s")
    }

    pub fn node(&self) -> String {
        let (_, nodes) = self.client.get("/api/v1/nodes");
        nodes["items"][0]["metadata"]["name"]
            .as_str()
            .expect("a node")
            .to_string()
    }

    pub fn kubectl(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.server.kubeconfig())
            .args(args)
            .output()
            .expect("kubectl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Labels `default` `privileged` for Pod Security, so tests may use hostPath volumes.
    pub fn allow_privileged_pods(&self) {
        let (ok, out, err) = self.kubectl(&[
            "label",
            "namespace",
            "default",
            "pod-security.kubernetes.io/enforce=privileged",
        ]);
        assert!(ok, "{out}{err}");
    }

    /// Creates a pod bound to this node (there is no scheduler in these tests).
    pub fn create_pod(&self, mut pod: Value) {
        pod["apiVersion"] = "v1".into();
        pod["kind"] = "Pod".into();
        pod["spec"]["nodeName"] = self.node().into();
        let (code, body) = self.client.post("/api/v1/namespaces/default/pods", &pod);
        assert_eq!(code, 201, "{body}");
    }

    pub fn pod(&self, name: &str) -> Value {
        self.client
            .get(&format!("/api/v1/namespaces/default/pods/{name}"))
            .1
    }

    pub fn wait_running(&self, name: &str) -> Value {
        eventually(
            &format!("pod {name} Running"),
            Duration::from_secs(90),
            || {
                let pod = self.pod(name);
                let ready = pod["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True");
                (pod["status"]["phase"] == "Running" && ready).then_some(pod)
            },
        )
    }

    pub fn ctr(&self, args: &[&str]) -> String {
        let socket = self.data().join("agent/containerd/containerd.sock");
        let out = Command::new("ctr")
            .arg("--address")
            .arg(socket)
            .args(["--namespace", &self.namespace])
            .args(args)
            .output()
            .expect("ctr");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Containers skiff has in its containerd namespace (ids).
    pub fn containers(&self) -> Vec<String> {
        self.ctr(&["containers", "ls", "-q"])
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Pods first (the agent stops and removes their containers), then the server, whose
        // SIGTERM also stops its containerd; then what the agent set up on the host.
        // Workloads first, or their controllers would recreate the pods deleted next (a test
        // that failed half-way leaves them behind).
        let _ = self.kubectl(&[
            "delete",
            "horizontalpodautoscalers,deployments,replicasets,statefulsets,daemonsets,cronjobs,jobs",
            "--all",
            "--cascade=orphan",
            "--timeout=30s",
        ]);
        let _ = self.kubectl(&[
            "delete",
            "pods",
            "--all",
            "--grace-period=1",
            "--timeout=60s",
        ]);
        // A finished pod's object may go before its agent has removed the containers it kept
        // for logs: wait for that, or stopping the server orphans their shims.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !self.containers().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        self.server.stop();
        let pid_file = self.data().join("agent/containerd/containerd.pid");
        if let Ok(pid) = std::fs::read_to_string(pid_file) {
            let _ = Command::new("kill").arg(pid.trim()).status();
            std::thread::sleep(Duration::from_millis(500));
        }
        let _ = Command::new("ip")
            .args(["link", "delete", &self.bridge])
            .status();
        // The service proxy's redirect chain (the agent removes it on a clean stop too).
        let chain = format!("SKIFF-SVC-{}", self.bridge);
        for hook in ["PREROUTING", "OUTPUT"] {
            let _ = Command::new("iptables")
                .args(["-w", "-t", "nat", "-D", hook, "-j", &chain])
                .stderr(std::process::Stdio::null())
                .status();
        }
        for op in ["-F", "-X"] {
            let _ = Command::new("iptables")
                .args(["-w", "-t", "nat", op, &chain])
                .stderr(std::process::Stdio::null())
                .status();
        }
        for direction in ["-i", "-o"] {
            let _ = Command::new("iptables")
                .args([
                    "-w",
                    "-D",
                    "FORWARD",
                    direction,
                    &self.bridge,
                    "-j",
                    "ACCEPT",
                ])
                .status();
        }
        // The node's MASQUERADE rule, in whichever form the agent wrote it (`! -d CLUSTER` now,
        // `! -o BRIDGE` before).
        let rules = Command::new("iptables")
            .args(["-w", "-t", "nat", "-S", "POSTROUTING"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let ours = format!("-A POSTROUTING -s {} ", self.pod_cidr);
        for rule in rules
            .lines()
            .filter(|r| r.starts_with(&ours) && r.ends_with("MASQUERADE"))
        {
            let _ = Command::new("iptables")
                .args(["-w", "-t", "nat", "-D"])
                .args(rule.split_whitespace().skip(1))
                .status();
        }
        // containerd leaves overlay mounts only for running containers; unmount anything left
        // under the test dir so the temp dir can be removed.
        if let Ok(mounts) = std::fs::read_to_string("/proc/mounts") {
            let root = self.dir.path().display().to_string();
            let mut targets: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split_whitespace().nth(1))
                .filter(|t| t.starts_with(&root))
                .collect();
            targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
            for target in targets {
                let _ = Command::new("umount").args(["-l", target]).status();
            }
        }
        // The test's cgroup parent (`skiff-<containerd namespace>`), in every v1 hierarchy.
        if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
            for hierarchy in hierarchies.flatten() {
                remove_cgroup_tree(&hierarchy.path().join(format!("skiff-{}", self.namespace)));
            }
        }
    }
}

/// rmdir bottom-up (a cgroup directory goes once its children have and it has no process).
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&entry.path());
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
}

pub fn http_get(ip: &str, port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(
        &format!("{ip}:{port}").parse().ok()?,
        Duration::from_secs(2),
    )
    .ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(format!("GET / HTTP/1.0\r\nHost: {ip}\r\n\r\n").as_bytes())
        .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer)
}
