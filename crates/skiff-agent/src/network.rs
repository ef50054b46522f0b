//! Pod networking: one network namespace per pod, wired to the node's bridge by CNI plugins.
//!
//! ```text
//!  host netns                                pod netns (DATA/netns/<pod uid>)
//!  ┌──────────────────────────────┐          ┌──────────────────────────┐
//!  │ skiff0 bridge 10.42.0.1/24 ──┼── veth ──┼─ eth0 10.42.0.7/24       │
//!  │ (gateway for the pod CIDR)   │          │ lo 127.0.0.1             │
//!  └──────────────────────────────┘          └──────────────────────────┘
//! ```
//! - The namespace is created by the agent, not by a "pause" container: a thread calls
//!   `unshare(CLONE_NEWNET)` and bind-mounts its `/proc/thread-self/ns/net` onto a file, which keeps
//!   the namespace alive after the thread is gone. Every container of the pod is given that file
//!   as its network namespace, so they share `localhost` and the IP.
//! - CNI plugins are plain executables (Debian's containernetworking-plugins): the agent runs
//!   `bridge` (with `host-local` IPAM over the node's pod CIDR) with the CNI
//!   environment variables and the network config on stdin; the bridge plugin's answer names the
//!   IP. `DEL` with the same arguments releases it. The loopback interface is brought up by
//!   the agent itself (`ip link set lo up` inside the new namespace) rather than by the CNI
//!   loopback plugin: the same result without starting another Go program per pod.
//! - Pods on other nodes are reached through routes [`crate::podnet`] keeps; this module's
//!   iptables rules let that traffic through and masquerade only what leaves the cluster CIDR.
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::runtime::RuntimeError;

/// Where the CNI plugins are on Debian.
pub const DEFAULT_CNI_BIN: &str = "/usr/lib/cni";

/// The network settings of one node.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// The pod CIDR assigned to this node (e.g. `10.42.0.0/24`).
    pub pod_cidr: String,
    /// The bridge name (skiff0 by default; tests use their own so they can run side by side).
    pub bridge: String,
    /// Where the CNI plugin binaries are.
    pub cni_bin: PathBuf,
    /// The agent's data dir: netns files and host-local's IP allocations live under it.
    pub data_dir: PathBuf,
    /// The pods' interface MTU; `None` leaves CNI's default. Lowered by VXLAN's headers when
    /// peers may be reached through it ([`crate::podnet::pod_mtu`]).
    pub mtu: Option<u32>,
}

impl NetworkConfig {
    fn netns_dir(&self) -> PathBuf {
        self.data_dir.join("netns")
    }

    /// The pod's IP as CNI gave it, kept for agent restarts.
    fn result_path(&self, pod_uid: &str) -> PathBuf {
        self.data_dir.join("cni").join("results").join(pod_uid)
    }

    pub fn netns_path(&self, pod_uid: &str) -> PathBuf {
        self.netns_dir().join(pod_uid)
    }

    /// The bridge plugin's configuration (CNI spec 1.0).
    fn bridge_conf(&self) -> Value {
        let mut conf = json!({
            "cniVersion": "1.0.0",
            "name": "skiff",
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": true,
            // No per-pod NAT rules (each costs iptables calls under the xtables lock, which
            // serialises a burst of pod starts): one MASQUERADE rule for the whole pod CIDR,
            // installed by `allow_forwarding`, lets pods reach the outside world.
            "ipMasq": false,
            // A pod can reach itself through a Service address that the proxy sends back to it.
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": self.pod_cidr}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": self.data_dir.join("cni").join("ipam"),
            }
        });
        if let Some(mtu) = self.mtu {
            conf["mtu"] = json!(mtu);
        }
        conf
    }

    /// Creates the pod's namespace (if missing) and attaches it; returns its IP.
    pub async fn setup(&self, pod_uid: &str) -> Result<(PathBuf, String), RuntimeError> {
        let netns = self.netns_path(pod_uid);
        let saved = self.result_path(pod_uid);
        if netns.exists() {
            // Set up before (the agent restarted): the pod keeps its interface and IP; a
            // second ADD would fail on the existing eth0.
            if let Some(ip) = std::fs::read_to_string(&saved)
                .ok()
                .filter(|ip| !ip.is_empty())
            {
                return Ok((netns, ip));
            }
        } else {
            create_netns(&netns).await?;
        }
        match self.attach(pod_uid, &netns).await {
            Ok(ip) => Ok((netns, ip)),
            Err(e) => {
                // A half-done ADD (the veth made, then host-local failing on a full disk, or
                // the IP not saved) would fail every retry on the existing eth0: undo it, so
                // the next attempt starts clean.
                if let Err(undo) = self.teardown(pod_uid).await {
                    tracing::warn!(pod_uid, error = %undo, "undoing a failed CNI ADD");
                }
                Err(e)
            }
        }
    }

    /// CNI ADD into `netns`; the IP it gave is saved for agent restarts.
    async fn attach(&self, pod_uid: &str, netns: &Path) -> Result<String, RuntimeError> {
        let result = self
            .plugin("ADD", "bridge", "eth0", pod_uid, netns, &self.bridge_conf())
            .await?;
        let ip = result
            .pointer("/ips/0/address")
            .and_then(Value::as_str)
            .and_then(|cidr| cidr.split('/').next())
            .ok_or_else(|| RuntimeError::Failed(format!("CNI bridge gave no IP: {result}")))?;
        let saved = self.result_path(pod_uid);
        if let Some(dir) = saved.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        std::fs::write(&saved, ip).map_err(|e| {
            RuntimeError::Failed(format!("saving the pod's IP in {}: {e}", saved.display()))
        })?;
        Ok(ip.to_string())
    }

    /// Detaches the pod (frees its IP) and removes its namespace. Safe to call twice.
    pub async fn teardown(&self, pod_uid: &str) -> Result<(), RuntimeError> {
        let netns = self.netns_path(pod_uid);
        // DEL must run even if the namespace is already gone, so host-local frees the IP.
        let ns_arg = if netns.exists() {
            netns.clone()
        } else {
            PathBuf::new()
        };
        self.plugin(
            "DEL",
            "bridge",
            "eth0",
            pod_uid,
            &ns_arg,
            &self.bridge_conf(),
        )
        .await?;
        if netns.exists() {
            remove_netns(&netns)?;
        }
        let _ = std::fs::remove_file(self.result_path(pod_uid));
        Ok(())
    }

    /// Pod uids that still have a namespace file.
    pub fn list(&self) -> Vec<String> {
        std::fs::read_dir(self.netns_dir())
            .map(|dir| {
                dir.flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Runs one CNI plugin. The environment is cleared: plugins read only CNI_* and PATH.
    async fn plugin(
        &self,
        command: &str,
        plugin: &str,
        ifname: &str,
        container_id: &str,
        netns: &Path,
        conf: &Value,
    ) -> Result<Value, RuntimeError> {
        let binary = self.cni_bin.join(plugin);
        let mut child = tokio::process::Command::new(&binary)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container_id)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", ifname)
            .env("CNI_PATH", &self.cni_bin)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| RuntimeError::Failed(format!("running {}: {e}", binary.display())))?;
        if let Some(mut stdin) = child.stdin.take() {
            let body = conf.to_string();
            stdin
                .write_all(body.as_bytes())
                .await
                .map_err(|e| RuntimeError::Failed(format!("CNI {plugin}: {e}")))?;
        }
        let output = child
            .wait_with_output()
            .await
            .map_err(|e| RuntimeError::Failed(format!("CNI {plugin}: {e}")))?;
        let stdout: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
        if !output.status.success() {
            // Plugins report errors as JSON {code, msg, details} on stdout.
            let msg = stdout
                .get("msg")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(&output.stderr).trim().to_string());
            return Err(RuntimeError::Failed(format!(
                "CNI {plugin} {command} for {container_id}: {msg}"
            )));
        }
        Ok(stdout)
    }
}

/// Makes a new network namespace and pins it at `path` with a bind mount.
async fn create_netns(path: &Path) -> Result<(), RuntimeError> {
    let path = path.to_path_buf();
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        RuntimeError::Failed(format!("creating network namespace: {what}: {e}"))
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| failed("mkdir", &e))?;
    }
    std::fs::File::create(&path).map_err(|e| failed("creating the pin file", &e))?;
    // unshare() changes the namespace of the calling thread only, so a short-lived thread of
    // its own does it; the runtime's threads keep the host's namespace.
    let pin = path.clone();
    let result = std::thread::spawn(move || -> Result<(), RuntimeError> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| failed("unshare", &e))?;
        let own = format!("/proc/self/task/{}/ns/net", nix::unistd::gettid());
        nix::mount::mount(
            Some(own.as_str()),
            &pin,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| failed("bind mount", &e))?;
        // A child process inherits the namespaces of the thread that starts it, so `ip` here
        // brings up the new namespace's loopback (what the CNI loopback plugin would do, for a
        // fraction of the cost of starting that Go program for every pod).
        let up = std::process::Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .map_err(|e| failed("ip link set lo up", &e))?;
        if !up.success() {
            return Err(failed("ip link set lo up", &up));
        }
        Ok(())
    })
    .join()
    .map_err(|_| failed("thread", &"panicked"))?;
    if let Err(e) = result {
        if let Err(removing) = std::fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), error = %removing, "removing the pin file of a namespace that failed");
        }
        return Err(e);
    }
    Ok(())
}

/// Unpins and deletes a namespace file; the namespace dies with its last user.
fn remove_netns(path: &Path) -> Result<(), RuntimeError> {
    match nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => {
            return Err(RuntimeError::Failed(format!(
                "unmounting {}: {e}",
                path.display()
            )))
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(RuntimeError::Failed(format!(
            "removing {}: {e}",
            path.display()
        ))),
    }
}

/// The bridge's own address in the pod CIDR: the first host, as host-local makes it the pods'
/// gateway (`10.42.0.0/24` → `10.42.0.1`).
pub fn gateway(pod_cidr: &str) -> Option<std::net::Ipv4Addr> {
    let (ip, _) = pod_cidr.split_once('/')?;
    let ip: std::net::Ipv4Addr = ip.parse().ok()?;
    Some(std::net::Ipv4Addr::from(u32::from(ip) + 1))
}

/// Creates the pod bridge with its gateway address now, rather than at the first pod's CNI
/// ADD, so the node's DNS server can listen on that address from the start. The bridge plugin
/// later finds it as it would have made it.
pub async fn ensure_bridge(bridge: &str, pod_cidr: &str) -> Result<(), RuntimeError> {
    let (gateway, prefix) = match (gateway(pod_cidr), pod_cidr.split_once('/')) {
        (Some(gw), Some((_, prefix))) => (gw, prefix),
        _ => {
            return Err(RuntimeError::Failed(format!(
                "pod CIDR {pod_cidr:?} is not ADDRESS/PREFIX"
            )))
        }
    };
    let ip = |args: &[&str]| {
        let mut command = tokio::process::Command::new("ip");
        command
            .args(args)
            .stderr(Stdio::null())
            .stdout(Stdio::null());
        command
    };
    let exists = ip(&["link", "show", bridge])
        .status()
        .await
        .map(|s| s.success())
        .unwrap_or(false);
    if !exists {
        ip(&["link", "add", bridge, "type", "bridge"])
            .status()
            .await
            .map_err(|e| RuntimeError::Failed(format!("ip link add {bridge}: {e}")))?;
    }
    let address = format!("{gateway}/{prefix}");
    let shown = tokio::process::Command::new("ip")
        .args(["-4", "addr", "show", "dev", bridge])
        .output()
        .await
        .map_err(|e| RuntimeError::Failed(format!("ip addr show {bridge}: {e}")))?;
    if !String::from_utf8_lossy(&shown.stdout).contains(&format!("inet {address}")) {
        let status = ip(&["addr", "add", &address, "dev", bridge])
            .status()
            .await
            .map_err(|e| RuntimeError::Failed(format!("ip addr add: {e}")))?;
        if !status.success() {
            return Err(RuntimeError::Failed(format!(
                "ip addr add {address} dev {bridge} failed"
            )));
        }
    }
    ip(&["link", "set", bridge, "up"])
        .status()
        .await
        .map_err(|e| RuntimeError::Failed(format!("ip link set {bridge} up: {e}")))?;
    Ok(())
}

/// Removes the node's bridge (at agent shutdown in tests; CNI DEL leaves it).
pub async fn delete_bridge(name: &str) {
    let _ = tokio::process::Command::new("ip")
        .args(["link", "delete", name])
        .stderr(Stdio::null())
        .status()
        .await;
}

/// The host's iptables rules for the pod network, each checked before it is added:
/// - FORWARD accepts traffic to and from the bridge (Docker sets the chain's policy to DROP,
///   and bridged pod traffic traverses iptables);
/// - one MASQUERADE rule in `nat POSTROUTING` for traffic from the pod CIDR to anywhere outside
///   the cluster CIDR, so pods reach the outside world with the node's address while pod → pod
///   traffic between nodes keeps the pod's own source address.
///
/// Agents before the cluster-wide pod network masqueraded everything leaving by another
/// interface than the bridge (`-s POD_CIDR ! -o BRIDGE`), which hid pods from each other
/// across nodes; that rule is removed if present.
pub async fn allow_forwarding(
    bridge: &str,
    pod_cidr: &str,
    cluster_cidr: &str,
) -> Result<(), RuntimeError> {
    let masquerade = [
        "-t",
        "nat",
        "POSTROUTING",
        "-s",
        pod_cidr,
        "!",
        "-d",
        cluster_cidr,
        "-j",
        "MASQUERADE",
    ];
    ensure_rule(&masquerade).await?;
    delete_rule(&[
        "-t",
        "nat",
        "POSTROUTING",
        "-s",
        pod_cidr,
        "!",
        "-o",
        bridge,
        "-j",
        "MASQUERADE",
    ])
    .await;
    allow_device_forwarding(bridge).await
}

/// FORWARD accepts traffic arriving on and leaving by `device` (the bridge, the VXLAN device).
pub async fn allow_device_forwarding(device: &str) -> Result<(), RuntimeError> {
    for direction in ["-i", "-o"] {
        ensure_rule(&["FORWARD", direction, device, "-j", "ACCEPT"]).await?;
    }
    Ok(())
}

/// Removes what [`allow_device_forwarding`] added.
pub async fn remove_device_forwarding(device: &str) {
    for direction in ["-i", "-o"] {
        delete_rule(&["FORWARD", direction, device, "-j", "ACCEPT"]).await;
    }
}

/// `iptables -C` the rule, and `-I` it when missing. `rule` may start with `-t TABLE`.
async fn ensure_rule(rule: &[&str]) -> Result<(), RuntimeError> {
    let (table, rule) = match rule {
        ["-t", table, rest @ ..] => (Some(*table), rest),
        rest => (None, rest),
    };
    let run = |op: &'static str| {
        let mut command = tokio::process::Command::new("iptables");
        command.arg("-w");
        if let Some(table) = table {
            command.args(["-t", table]);
        }
        command.arg(op).args(rule).stderr(Stdio::null());
        command
    };
    let present = run("-C")
        .status()
        .await
        .map(|s| s.success())
        .unwrap_or(false);
    if !present {
        let status = run("-I")
            .status()
            .await
            .map_err(|e| RuntimeError::Failed(format!("iptables: {e}")))?;
        if !status.success() {
            return Err(RuntimeError::Failed(format!(
                "iptables -I {} failed",
                rule.join(" ")
            )));
        }
    }
    Ok(())
}

/// `iptables -D` the rule until none is left (an agent that crashed between `-C` and `-I`
/// could have added it twice). `rule` may start with `-t TABLE`.
async fn delete_rule(rule: &[&str]) {
    let (table, rule) = match rule {
        ["-t", table, rest @ ..] => (*table, rest),
        rest => ("filter", rest),
    };
    for _ in 0..8 {
        let deleted = tokio::process::Command::new("iptables")
            .args(["-w", "-t", table, "-D"])
            .args(rule)
            .stderr(Stdio::null())
            .status()
            .await
            .map(|s| s.success())
            .unwrap_or(false);
        if !deleted {
            return;
        }
    }
}

/// Removes what [`allow_forwarding`] added: every MASQUERADE rule for `pod_cidr` in either
/// form (so callers need not know the cluster CIDR), and the bridge's FORWARD rules.
pub async fn remove_forwarding(bridge: &str, pod_cidr: &str) {
    let listed = tokio::process::Command::new("iptables")
        .args(["-w", "-t", "nat", "-S", "POSTROUTING"])
        .stderr(Stdio::null())
        .output()
        .await
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for line in listed.lines() {
        // `-A POSTROUTING -s 10.42.0.0/24 ! -d 10.42.0.0/16 -j MASQUERADE`
        let words: Vec<&str> = line.split_whitespace().collect();
        let ours = words.windows(2).any(|w| w == ["-s", pod_cidr])
            && words.ends_with(&["-j", "MASQUERADE"]);
        if let (true, ["-A", rule @ ..]) = (ours, words.as_slice()) {
            let mut delete = vec!["-t", "nat"];
            delete.extend_from_slice(rule);
            delete_rule(&delete).await;
        }
    }
    remove_device_forwarding(bridge).await;
}
