//! From a pod's container to an OCI runtime spec — the JSON document runc executes.
//!
//! Two steps, both pure:
//! 1. [`container_config`]: the Kubernetes view (a `Container` in a `Pod`) becomes a
//!    [`ContainerConfig`]: its environment resolved ([`crate::env`]), volumes turned into bind
//!    mounts, `resources` turned into cgroup numbers.
//! 2. [`oci_spec`]: a `ContainerConfig` plus the image's config becomes the runtime spec. The
//!    spec is written as JSON on purpose: it reads like the document runc receives. Its defaults
//!    (capabilities, mounts, masked paths) are those of containerd's CRI plugin.
use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{json, Value};

use skiff_api::quantity;

use crate::env::{self, Downward};
use crate::error::AgentError;
use crate::runtime::{ContainerConfig, Mount, Resources};

/// What an image says about how to run it (entrypoint, cmd, env, working dir, user).
pub use skiff_image::ImageConfig;

/// Where a pod's files live on the node, under the agent's data dir.
pub struct PodDirs<'a> {
    pub pod_dir: &'a Path,
    pub log_dir: &'a Path,
}

/// A container of `pod` as the runtime should create it. Errors name the field at fault.
pub fn container_config(
    pod: &Pod,
    container: &Container,
    init: bool,
    attempt: u32,
    dirs: &PodDirs<'_>,
    downward: &Downward,
) -> Result<ContainerConfig, AgentError> {
    let meta = &pod.metadata;
    let spec = pod
        .spec
        .as_ref()
        .ok_or_else(|| AgentError::ContainerConfig("pod has no spec".into()))?;
    let uid = meta.uid.clone().unwrap_or_default();
    let name = meta.name.clone().unwrap_or_default();
    let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());

    let env = env::container_env(pod, container, downward)?;

    let mut mounts = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let volume = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == mount.name)
            .ok_or_else(|| {
                AgentError::ContainerConfig(format!(
                    "volumeMounts {}: no volume of that name",
                    mount.name
                ))
            })?;
        let host_path = if let Some(host) = &volume.host_path {
            std::path::PathBuf::from(&host.path)
        } else if volume.empty_dir.is_some() || volume.projected.is_some() {
            dirs.pod_dir.join("volumes").join(&volume.name)
        } else {
            return Err(AgentError::ContainerConfig(format!(
                "volume {}: only emptyDir, hostPath and projected volumes are supported",
                volume.name
            )));
        };
        mounts.push(Mount {
            host_path,
            container_path: mount.mount_path.clone(),
            // Projected files are the API's, not the container's to change (kubelet mounts
            // them read-only too).
            read_only: mount.read_only.unwrap_or(false) || volume.projected.is_some(),
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
        .expect_err("nfs is not supported")
        .to_string();
        assert!(err.contains("volume cfg"), "{err}");
    }
}
