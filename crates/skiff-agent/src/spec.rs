//! From a pod's container to an OCI runtime spec — the JSON document runc executes.
//!
//! Two steps, both pure:
//! 1. [`container_config`]: the Kubernetes view (a `Container` in a `Pod`) becomes a
//!    [`ContainerConfig`]: env with `valueFrom` resolved, volumes turned into bind mounts,
//!    `resources` turned into cgroup numbers.
//! 2. [`oci_spec`]: a `ContainerConfig` plus the image's config becomes the runtime spec. The
//!    spec is written as JSON on purpose: it reads like the document runc receives. Its defaults
//!    (capabilities, mounts, masked paths) are those of containerd's CRI plugin.
use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{json, Value};

use skiff_api::quantity;

use crate::runtime::{ContainerConfig, Mount, Resources};

/// What an image says about how to run it (entrypoint, cmd, env, working dir, user).
pub use skiff_image::ImageConfig;

/// Where a pod's files live on the node, under the agent's data dir.
pub struct PodDirs<'a> {
    pub pod_dir: &'a Path,
    pub log_dir: &'a Path,
}

/// Values `fieldRef` env vars may read that are not in the pod object yet, and the
/// ConfigMaps and Secrets `envFrom`/`valueFrom` refer to (read by the worker beforehand).
#[derive(Debug, Clone, Default)]
pub struct Downward {
    pub pod_ip: Option<String>,
    pub host_ip: Option<String>,
    pub node_name: String,
    /// ConfigMap name → its data (absent: the ConfigMap does not exist).
    pub config_maps: std::collections::HashMap<String, BTreeMap<String, String>>,
    /// Secret name → its decoded data.
    pub secrets: std::collections::HashMap<String, BTreeMap<String, String>>,
    /// `WEB_SERVICE_HOST` and friends for the namespace's services (before the container's
    /// own variables, which win).
    pub service_env: Vec<(String, String)>,
}

/// The ConfigMaps and Secrets a container's environment reads.
pub fn env_references(container: &Container) -> (Vec<String>, Vec<String>) {
    let mut maps = Vec::new();
    let mut secrets = Vec::new();
    for from in container.env_from.iter().flatten() {
        if let Some(r) = &from.config_map_ref {
            maps.push(r.name.clone());
        }
        if let Some(r) = &from.secret_ref {
            secrets.push(r.name.clone());
        }
    }
    for var in container.env.iter().flatten() {
        let Some(from) = &var.value_from else {
            continue;
        };
        if let Some(r) = &from.config_map_key_ref {
            maps.push(r.name.clone());
        }
        if let Some(r) = &from.secret_key_ref {
            secrets.push(r.name.clone());
        }
    }
    maps.sort();
    maps.dedup();
    secrets.sort();
    secrets.dedup();
    (maps, secrets)
}

/// `envFrom` entries, in order: every key of the ConfigMap or Secret (with the prefix).
fn env_from(
    container: &Container,
    downward: &Downward,
    env: &mut Vec<(String, String)>,
) -> Result<(), String> {
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (source, name, optional, kind) = if let Some(r) = &from.config_map_ref {
            (&downward.config_maps, &r.name, r.optional, "configmap")
        } else if let Some(r) = &from.secret_ref {
            (&downward.secrets, &r.name, r.optional, "secret")
        } else {
            continue;
        };
        match source.get(name) {
            Some(data) => {
                for (k, v) in data {
                    env.push((format!("{prefix}{k}"), v.clone()));
                }
            }
            None if optional == Some(true) => {}
            None => return Err(format!("{kind} \"{name}\" not found")),
        }
    }
    Ok(())
}

/// A container of `pod` as the runtime should create it. Errors name the field at fault.
pub fn container_config(
    pod: &Pod,
    container: &Container,
    init: bool,
    attempt: u32,
    dirs: &PodDirs<'_>,
    downward: &Downward,
) -> Result<ContainerConfig, String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref().ok_or("pod has no spec")?;
    let uid = meta.uid.clone().unwrap_or_default();
    let name = meta.name.clone().unwrap_or_default();
    let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());

    let mut env = Vec::new();
    if spec.enable_service_links != Some(false) {
        env.extend(downward.service_env.iter().cloned());
    }
    env_from(container, downward, &mut env)?;
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(v), _) => v.clone(),
            (None, Some(from)) => {
                if let Some(field) = &from.field_ref {
                    field_value(pod, &field.field_path, downward).ok_or_else(|| {
                        format!(
                            "env {}: unsupported fieldPath {:?}",
                            var.name, field.field_path
                        )
                    })?
                } else if let Some(r) = &from.config_map_key_ref {
                    key_value(
                        &downward.config_maps,
                        "configmap",
                        &namespace,
                        &r.name,
                        &r.key,
                        r.optional,
                    )?
                } else if let Some(r) = &from.secret_key_ref {
                    key_value(
                        &downward.secrets,
                        "secret",
                        &namespace,
                        &r.name,
                        &r.key,
                        r.optional,
                    )?
                } else {
                    String::new()
                }
            }
            (None, None) => String::new(),
        };
        env.push((var.name.clone(), expand(&value, &env)));
    }

    let mut mounts = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let volume = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == mount.name)
            .ok_or_else(|| format!("volumeMounts {}: no volume of that name", mount.name))?;
        let host_path = if let Some(host) = &volume.host_path {
            std::path::PathBuf::from(&host.path)
        } else if volume.empty_dir.is_some() {
            dirs.pod_dir.join("volumes").join(&volume.name)
        } else {
            return Err(format!(
                "volume {}: only emptyDir and hostPath volumes are supported",
                volume.name
            ));
        };
        mounts.push(Mount {
            host_path,
            container_path: mount.mount_path.clone(),
            read_only: mount.read_only.unwrap_or(false),
        });
    }
    // /etc/hosts and /etc/resolv.conf come from the pod dir, shared by its containers.
    for file in ["hosts", "resolv.conf"] {
        let host_path = dirs.pod_dir.join(file);
        if host_path.exists() {
            mounts.push(Mount {
                host_path,
                container_path: format!("/etc/{file}"),
                read_only: false,
            });
        }
    }

    let security = container.security_context.as_ref();
    let pod_security = spec.security_context.as_ref();
    Ok(ContainerConfig {
        pod_uid: uid.clone(),
        pod_name: name.clone(),
        namespace,
        name: container.name.clone(),
        attempt,
        image: container.image.clone().unwrap_or_default(),
        command: container.command.clone().unwrap_or_default(),
        args: container.args.clone().unwrap_or_default(),
        env,
        working_dir: container.working_dir.clone().filter(|d| !d.is_empty()),
        mounts,
        resources: resources(container),
        run_as_user: security
            .and_then(|s| s.run_as_user)
            .or(pod_security.and_then(|s| s.run_as_user)),
        run_as_group: security
            .and_then(|s| s.run_as_group)
            .or(pod_security.and_then(|s| s.run_as_group)),
        read_only_root: security
            .and_then(|s| s.read_only_root_filesystem)
            .unwrap_or(false),
        privileged: security.and_then(|s| s.privileged).unwrap_or(false),
        hostname: spec.hostname.clone().unwrap_or(name),
        netns: None,
        log_path: dirs
            .log_dir
            .join(format!("{}_{}.log", container.name, attempt)),
        init,
    })
}

/// One key of a ConfigMap or Secret, with kubelet's errors when it is missing and not optional.
fn key_value(
    source: &std::collections::HashMap<String, BTreeMap<String, String>>,
    kind: &str,
    namespace: &str,
    name: &str,
    key: &str,
    optional: Option<bool>,
) -> Result<String, String> {
    let optional = optional == Some(true);
    match source.get(name) {
        None if optional => Ok(String::new()),
        None => Err(format!("{kind} \"{name}\" not found")),
        Some(data) => match data.get(key) {
            Some(v) => Ok(v.clone()),
            None if optional => Ok(String::new()),
            None => Err(format!(
                "couldn't find key {key} in {} {namespace}/{name}",
                if kind == "configmap" {
                    "ConfigMap"
                } else {
                    "Secret"
                }
            )),
        },
    }
}

/// `valueFrom.fieldRef` values Kubernetes supports that skiff knows.
fn field_value(pod: &Pod, path: &str, downward: &Downward) -> Option<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    Some(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => downward.node_name.clone(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into()),
        "status.podIP" => downward.pod_ip.clone().unwrap_or_default(),
        "status.podIPs" => downward.pod_ip.clone().unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => downward.host_ip.clone().unwrap_or_default(),
        _ => {
            let key = path
                .strip_prefix("metadata.labels['")
                .map(|k| (k, true))
                .or_else(|| {
                    path.strip_prefix("metadata.annotations['")
                        .map(|k| (k, false))
                })?;
            let name = key.0.strip_suffix("']")?;
            let map = if key.1 {
                &meta.labels
            } else {
                &meta.annotations
            };
            map.as_ref()
                .and_then(|m| m.get(name))
                .cloned()
                .unwrap_or_default()
        }
    })
}

/// Kubernetes' `$(VAR)` expansion of env values from variables defined earlier; `$$(VAR)`
/// escapes; unknown references stay as written.
pub fn expand(value: &str, defined: &[(String, String)]) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match defined.iter().rev().find(|(k, _)| k == name) {
                        Some((_, v)) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push('$');
                    rest = after;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Kubernetes' mapping of `resources` to cgroup v1 values (kubelet's `cm` package):
/// - cpu request → `cpu.shares` = millicores × 1024 / 1000, at least 2 (no request: 2, the
///   floor, as a best-effort container gets);
/// - cpu limit → CFS quota over a 100 ms period: quota = millicores × 100 000 / 1000 µs
///   (so `500m` is 50 000 µs of every 100 000), at least 1 000 µs;
/// - memory limit → `memory.limit_in_bytes`.
///
/// A limit without a request means the request equals the limit (API defaulting does that too).
pub fn resources(container: &Container) -> Resources {
    let res = container.resources.as_ref();
    let get = |which: &str, key: &str| {
        res.and_then(|r| match which {
            "requests" => r.requests.as_ref(),
            _ => r.limits.as_ref(),
        })
        .and_then(|m| m.get(key))
        .map(|q| q.0.clone())
    };
    let cpu_limit = get("limits", "cpu").and_then(|q| quantity::cpu_millis(&q).ok());
    let cpu_request = get("requests", "cpu")
        .and_then(|q| quantity::cpu_millis(&q).ok())
        .or(cpu_limit);
    let memory_limit = get("limits", "memory").and_then(|q| quantity::bytes(&q).ok());
    Resources {
        cpu_shares: Some(cpu_request.map_or(2, |m| (m * 1024 / 1000).max(2) as u64)),
        cpu_quota: cpu_limit.map(|m| (m * 100_000 / 1000).max(1_000)),
        cpu_period: cpu_limit.map(|_| 100_000),
        memory_limit,
    }
}

/// The capabilities containerd's CRI plugin (and Docker) give a non-privileged container.
const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// (No `rlimits`: the container inherits containerd's, which inherit the agent's — raising
/// them can fail where the host's own hard limit is lower.)
///
/// The process a container runs: Kubernetes' rules for `command`/`args` over the image's
/// `Entrypoint`/`Cmd`:
/// - neither given: Entrypoint + Cmd;
/// - only `command`: command (the image's Cmd is dropped too);
/// - only `args`: Entrypoint + args;
/// - both: command + args.
pub fn process_args(config: &ContainerConfig, image: &ImageConfig) -> Vec<String> {
    match (config.command.is_empty(), config.args.is_empty()) {
        (true, true) => [image.entrypoint.clone(), image.cmd.clone()].concat(),
        (false, true) => config.command.clone(),
        (true, false) => [image.entrypoint.clone(), config.args.clone()].concat(),
        (false, false) => [config.command.clone(), config.args.clone()].concat(),
    }
}

/// The cluster DNS a pod uses, when the node runs one.
#[derive(Debug, Clone)]
pub struct ClusterDns {
    pub nameserver: String,
    /// `cluster.local`.
    pub domain: String,
}

/// The pod's /etc/resolv.conf, by its dnsPolicy (Kubernetes' rules): `ClusterFirst` (the
/// default) points at the cluster DNS with the namespace's search path, except for
/// hostNetwork pods, which keep the node's unless they ask for `ClusterFirstWithHostNet`;
/// `Default` is the node's; `None` is only what `dnsConfig` says. `dnsConfig` adds to all.
pub fn resolv_conf(pod: &Pod, node_resolv: &str, dns: Option<&ClusterDns>) -> String {
    let spec = pod.spec.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let host_network = spec.host_network.unwrap_or(false);
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let (mut nameservers, mut searches, mut options): (Vec<String>, Vec<String>, Vec<String>) =
        (Vec::new(), Vec::new(), Vec::new());
    let node = || {
        let mut n = (Vec::new(), Vec::new(), Vec::new());
        for line in node_resolv.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => n.0.extend(words.map(String::from)),
                Some("search") | Some("domain") => n.1.extend(words.map(String::from)),
                Some("options") => n.2.extend(words.map(String::from)),
                _ => {}
            }
        }
        n
    };
    match (policy, dns) {
        ("None", _) => {}
        ("ClusterFirstWithHostNet", Some(dns)) | ("ClusterFirst", Some(dns))
            if policy == "ClusterFirstWithHostNet" || !host_network =>
        {
            nameservers.push(dns.nameserver.clone());
            searches = vec![
                format!("{namespace}.svc.{}", dns.domain),
                format!("svc.{}", dns.domain),
                dns.domain.clone(),
            ];
            searches.extend(node().1);
            options.push("ndots:5".into());
        }
        _ => (nameservers, searches, options) = node(),
    }
    if let Some(config) = &spec.dns_config {
        nameservers.extend(config.nameservers.iter().flatten().cloned());
        searches.extend(config.searches.iter().flatten().cloned());
        for option in config.options.iter().flatten() {
            let Some(name) = &option.name else { continue };
            options.retain(|o| o.split(':').next() != Some(name.as_str()));
            options.push(match &option.value {
                Some(v) => format!("{name}:{v}"),
                None => name.clone(),
            });
        }
    }
    searches.dedup();
    let mut text = String::new();
    if !searches.is_empty() {
        text.push_str(&format!("search {}\n", searches.join(" ")));
    }
    for ns in nameservers.iter().take(3) {
        text.push_str(&format!("nameserver {ns}\n"));
    }
    if !options.is_empty() {
        text.push_str(&format!("options {}\n", options.join(" ")));
    }
    text
}

/// The OCI runtime spec for a container. `cgroups_path` is where runc puts its cgroup.
pub fn oci_spec(config: &ContainerConfig, image: &ImageConfig, cgroups_path: &str) -> Value {
    // Env: the image's, then the pod's (later wins, as in Kubernetes).
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let image_env = image.env.iter().filter_map(|kv| kv.split_once('='));
    for (k, v) in image_env.chain(config.env.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
        if env.insert(k.to_string(), v.to_string()).is_none() {
            order.push(k.to_string());
        }
    }
    if !env.contains_key("PATH") {
        env.insert(
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
        order.insert(0, "PATH".into());
    }
    env.insert("HOSTNAME".into(), config.hostname.clone());
    if !order.iter().any(|k| k == "HOSTNAME") {
        order.push("HOSTNAME".into());
    }
    let env: Vec<String> = order.iter().map(|k| format!("{k}={}", env[k])).collect();

    let (uid, gid) = user_ids(config, image);
    let caps: Vec<&str> = if config.privileged {
        ALL_CAPABILITIES.to_vec()
    } else {
        DEFAULT_CAPABILITIES.to_vec()
    };
    let cwd = config
        .working_dir
        .clone()
        .or_else(|| image.working_dir.clone().filter(|d| !d.is_empty()))
        .unwrap_or_else(|| "/".into());

    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", if config.privileged { "rw" } else { "ro" }]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
    ];
    for m in &config.mounts {
        let mode = if m.read_only { "ro" } else { "rw" };
        mounts.push(json!({
            "destination": m.container_path,
            "type": "bind",
            "source": m.host_path,
            "options": ["rbind", "rprivate", mode],
        }));
    }

    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    match &config.netns {
        Some(path) => namespaces.push(json!({"type": "network", "path": path})),
        // hostNetwork: no network namespace entry means the host's; the hostname then is the
        // node's too, so no uts namespace either.
        None => namespaces.retain(|n| n["type"] != "uts"),
    }

    let mut resources = json!({"devices": [{"allow": false, "access": "rwm"}]});
    if config.privileged {
        resources["devices"] = json!([{"allow": true, "access": "rwm"}]);
    }
    let r = &config.resources;
    let mut cpu = serde_json::Map::new();
    if let Some(shares) = r.cpu_shares {
        cpu.insert("shares".into(), shares.into());
    }
    if let Some(quota) = r.cpu_quota {
        cpu.insert("quota".into(), quota.into());
    }
    if let Some(period) = r.cpu_period {
        cpu.insert("period".into(), period.into());
    }
    if !cpu.is_empty() {
        resources["cpu"] = Value::Object(cpu);
    }
    if let Some(limit) = r.memory_limit {
        // Swap equal to the limit: no swap beyond it, so exceeding the limit is an OOM kill.
        resources["memory"] = json!({"limit": limit, "swap": limit});
    }

    let mut linux = json!({
        "namespaces": namespaces,
        "resources": resources,
        "cgroupsPath": cgroups_path,
    });
    if !config.privileged {
        linux["maskedPaths"] = json!([
            "/proc/acpi",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/proc/scsi",
            "/sys/firmware"
        ]);
        linux["readonlyPaths"] = json!([
            "/proc/asound",
            "/proc/bus",
            "/proc/fs",
            "/proc/irq",
            "/proc/sys",
            "/proc/sysrq-trigger"
        ]);
    }

    let mut spec = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": uid, "gid": gid},
            "args": process_args(config, image),
            "env": env,
            "cwd": cwd,
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps,
            },
            "noNewPrivileges": !config.privileged,
        },
        "root": {"path": "rootfs", "readonly": config.read_only_root},
        "mounts": mounts,
        "linux": linux,
    });
    if config.netns.is_some() {
        spec["hostname"] = config.hostname.clone().into();
    }
    spec
}

/// uid/gid: securityContext wins; else the image's `User` if numeric (`"1000"` or
/// `"1000:1000"`); else root. Names would need the image's /etc/passwd: not supported.
fn user_ids(config: &ContainerConfig, image: &ImageConfig) -> (i64, i64) {
    let (mut uid, mut gid) = (0, 0);
    if let Some(user) = image.user.as_deref().filter(|u| !u.is_empty()) {
        let (u, g) = user.split_once(':').unwrap_or((user, ""));
        uid = u.parse().unwrap_or(0);
        gid = g.parse().unwrap_or(0);
    }
    (
        config.run_as_user.unwrap_or(uid),
        config.run_as_group.unwrap_or(gid),
    )
}

const ALL_CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: Value) -> Pod {
        serde_json::from_value(json).expect("pod")
    }

    #[test]
    fn expansion_follows_kubernetes() {
        let defined = vec![("A".to_string(), "x".to_string())];
        assert_eq!(expand("$(A)-$(B)", &defined), "x-$(B)");
        assert_eq!(expand("$$(A)", &defined), "$(A)");
        assert_eq!(expand("cost $5", &defined), "cost $5");
        assert_eq!(expand("$(A", &defined), "$(A");
    }

    #[test]
    fn resources_map_to_cgroup_values() {
        let c: Container = serde_json::from_value(json!({
            "name": "a",
            "resources": {"requests": {"cpu": "250m"}, "limits": {"cpu": "500m", "memory": "64Mi"}}
        }))
        .expect("container");
        // shares = 250 × 1024 / 1000 = 256; quota = 500 × 100 = 50 000 µs per 100 000.
        assert_eq!(
            resources(&c),
            Resources {
                cpu_shares: Some(256),
                cpu_quota: Some(50_000),
                cpu_period: Some(100_000),
                memory_limit: Some(64 << 20),
            }
        );
        let best_effort: Container = serde_json::from_value(json!({"name": "b"})).expect("c");
        assert_eq!(resources(&best_effort).cpu_shares, Some(2));
        assert_eq!(resources(&best_effort).cpu_quota, None);
    }

    #[test]
    fn command_and_args_follow_kubernetes_rules() {
        let image = ImageConfig {
            entrypoint: vec!["/ep".into()],
            cmd: vec!["c1".into()],
            ..ImageConfig::default()
        };
        let mut c = ContainerConfig::default();
        assert_eq!(process_args(&c, &image), ["/ep", "c1"]);
        c.args = vec!["a".into()];
        assert_eq!(process_args(&c, &image), ["/ep", "a"]);
        c.command = vec!["/cmd".into()];
        assert_eq!(process_args(&c, &image), ["/cmd", "a"]);
        c.args.clear();
        assert_eq!(process_args(&c, &image), ["/cmd"]);
    }

    #[test]
    fn pod_containers_become_configs() {
        let p = pod(json!({
            "metadata": {"name": "web", "namespace": "ns1", "uid": "u1", "labels": {"app": "w"}},
            "spec": {
                "containers": [{
                    "name": "c", "image": "skiff.local/web:1.0",
                    "env": [
                        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                        {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                        {"name": "GREETING", "value": "hi $(POD)"}
                    ],
                    "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
                    "securityContext": {"runAsUser": 1000, "readOnlyRootFilesystem": true}
                }],
                "volumes": [{"name": "scratch", "emptyDir": {}}]
            }
        }));
        let dirs = PodDirs {
            pod_dir: Path::new("/data/pods/u1"),
            log_dir: Path::new("/data/logs/ns1_web_u1"),
        };
        let downward = Downward {
            pod_ip: Some("10.42.0.5".into()),
            host_ip: None,
            node_name: "n1".into(),
            ..Downward::default()
        };
        let spec = p.spec.as_ref().expect("spec");
        let c =
            container_config(&p, &spec.containers[0], false, 2, &dirs, &downward).expect("config");
        assert_eq!(
            c.env,
            [
                ("POD".to_string(), "web".to_string()),
                ("IP".into(), "10.42.0.5".into()),
                ("APP".into(), "w".into()),
                ("GREETING".into(), "hi web".into())
            ]
        );
        assert_eq!(
            c.mounts[0].host_path,
            Path::new("/data/pods/u1/volumes/scratch")
        );
        assert_eq!(c.run_as_user, Some(1000));
        assert!(c.read_only_root);
        assert_eq!(c.log_path, Path::new("/data/logs/ns1_web_u1/c_2.log"));

        let spec = oci_spec(&c, &ImageConfig::default(), "/skiff/u1/c");
        assert_eq!(spec["process"]["user"]["uid"], 1000);
        assert_eq!(spec["root"]["readonly"], true);
        assert_eq!(spec["linux"]["cgroupsPath"], "/skiff/u1/c");
        // The spec is a valid OCI runtime spec.
        let parsed: Result<oci_spec::runtime::Spec, _> = serde_json::from_value(spec);
        assert!(parsed.is_ok(), "{parsed:?}");
    }

    #[test]
    fn resolv_conf_follows_the_dns_policy() {
        let dns = ClusterDns {
            nameserver: "10.42.0.1".into(),
            domain: "cluster.local".into(),
        };
        let node = "nameserver 192.0.2.53\nsearch corp.example\noptions edns0\n";
        let pod = |spec: serde_json::Value| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p", "namespace": "shop"},
                "spec": spec
            }))
            .expect("pod")
        };
        let cases = [
            (
                serde_json::json!({"containers": []}),
                "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example\nnameserver 10.42.0.1\noptions ndots:5\n",
            ),
            (
                serde_json::json!({"containers": [], "hostNetwork": true}),
                "search corp.example\nnameserver 192.0.2.53\noptions edns0\n",
            ),
            (
                serde_json::json!({"containers": [], "hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"}),
                "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example\nnameserver 10.42.0.1\noptions ndots:5\n",
            ),
            (
                serde_json::json!({"containers": [], "dnsPolicy": "Default"}),
                "search corp.example\nnameserver 192.0.2.53\noptions edns0\n",
            ),
            (
                serde_json::json!({"containers": [], "dnsPolicy": "None", "dnsConfig": {
                    "nameservers": ["1.1.1.1"], "searches": ["a.example"],
                    "options": [{"name": "ndots", "value": "2"}]}}),
                "search a.example\nnameserver 1.1.1.1\noptions ndots:2\n",
            ),
        ];
        for (spec, expected) in cases {
            assert_eq!(
                resolv_conf(&pod(spec.clone()), node, Some(&dns)),
                expected,
                "{spec}"
            );
        }
    }

    #[test]
    fn env_from_config_maps_and_secrets() {
        let p = pod(json!({
            "metadata": {"name": "web", "namespace": "ns1", "uid": "u1"},
            "spec": {"containers": [{
                "name": "c",
                "envFrom": [{"configMapRef": {"name": "cfg"}}, {"prefix": "S_", "secretRef": {"name": "sec"}}],
                "env": [
                    {"name": "ONE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "GREETING"}}},
                    {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "x", "optional": true}}}
                ]
            }]}
        }));
        let dirs = PodDirs {
            pod_dir: Path::new("/p"),
            log_dir: Path::new("/l"),
        };
        let mut downward = Downward::default();
        downward.config_maps.insert(
            "cfg".into(),
            [("GREETING".to_string(), "hi".to_string())].into(),
        );
        downward.secrets.insert(
            "sec".into(),
            [("TOKEN".to_string(), "t0k".to_string())].into(),
        );
        let spec = p.spec.as_ref().expect("spec");
        let c =
            container_config(&p, &spec.containers[0], false, 0, &dirs, &downward).expect("config");
        assert_eq!(
            c.env,
            [
                ("GREETING".to_string(), "hi".to_string()),
                ("S_TOKEN".into(), "t0k".into()),
                ("ONE".into(), "hi".into()),
                ("OPT".into(), String::new())
            ]
        );
        downward.config_maps.clear();
        let err = container_config(&p, &spec.containers[0], false, 0, &dirs, &downward)
            .expect_err("missing configmap");
        assert_eq!(err, "configmap \"cfg\" not found");
    }

    #[test]
    fn unsupported_volumes_are_named() {
        let p = pod(json!({
            "metadata": {"name": "web", "uid": "u1"},
            "spec": {
                "containers": [{"name": "c", "volumeMounts": [{"name": "cfg", "mountPath": "/cfg"}]}],
                "volumes": [{"name": "cfg", "nfs": {"server": "s", "path": "/"}}]
            }
        }));
        let dirs = PodDirs {
            pod_dir: Path::new("/p"),
            log_dir: Path::new("/l"),
        };
        let spec = p.spec.as_ref().expect("spec");
        let err = container_config(
            &p,
            &spec.containers[0],
            false,
            0,
            &dirs,
            &Downward::default(),
        )
        .expect_err("nfs is not supported");
        assert!(err.contains("volume cfg"), "{err}");
    }
}
