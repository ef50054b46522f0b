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
use crate::runtime::{ContainerConfig, Mount, Resources, Seccomp, Security};
use crate::volumes;

/// What an image says about how to run it (entrypoint, cmd, env, working dir, user).
pub use skiff_image::ImageConfig;

/// Where a pod's files live on the node, under the agent's data dir.
pub struct PodDirs<'a> {
    pub pod_dir: &'a Path,
    pub log_dir: &'a Path,
}

/// What the node allows and defaults for its pods (kubelet's flags of the same names).
#[derive(Debug, Clone, Default)]
pub struct PodPolicy {
    /// `--pod-max-pids`: processes per pod, all its containers together (`None`: unlimited).
    pub max_pids: Option<i64>,
    /// `--seccomp-default`: `RuntimeDefault` for containers that name no profile.
    pub seccomp_default: bool,
    /// `--allowed-unsafe-sysctls`: names, or `prefix.*`, allowed beyond the safe set.
    pub allowed_unsafe_sysctls: Vec<String>,
    /// Where `Localhost` seccomp profiles are read from (kubelet's `<root>/seccomp`).
    pub seccomp_dir: std::path::PathBuf,
}

impl PodPolicy {
    fn allows_sysctl(&self, name: &str) -> bool {
        skiff_api::pod_security::SAFE_SYSCTLS.contains(&name)
            || self
                .allowed_unsafe_sysctls
                .iter()
                .any(|allowed| match allowed.strip_suffix('*') {
                    Some(prefix) => name.starts_with(prefix),
                    None => allowed == name,
                })
    }
}

/// A container of `pod` as the runtime should create it. Errors name the field at fault.
pub fn container_config(
    pod: &Pod,
    container: &Container,
    init: bool,
    attempt: u32,
    dirs: &PodDirs<'_>,
    downward: &Downward,
    policy: &PodPolicy,
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
        let volume_dir = if let Some(host) = &volume.host_path {
            std::path::PathBuf::from(&host.path)
        } else if volume.empty_dir.is_some()
            || volumes::from_api(volume)
            || volume.persistent_volume_claim.is_some()
        {
            dirs.pod_dir.join("volumes").join(&volume.name)
        } else {
            return Err(AgentError::ContainerConfig(format!(
                "volume {}: only emptyDir, hostPath, configMap, secret, downwardAPI, projected \
                 and persistentVolumeClaim volumes are supported",
                volume.name
            )));
        };
        let sub_path = match (&mount.sub_path, &mount.sub_path_expr) {
            (Some(path), _) if !path.is_empty() => Some(path.clone()),
            (_, Some(expr)) if !expr.is_empty() => Some(env::expand(expr, &env)),
            _ => None,
        };
        let host_path = match sub_path {
            Some(sub) => sub_path_on_node(&volume_dir, &sub).map_err(|e| {
                AgentError::ContainerConfig(format!(
                    "volumeMounts {} subPath {sub:?}: {e}",
                    mount.name
                ))
            })?,
            None => volume_dir,
        };
        mounts.push(Mount {
            host_path,
            container_path: mount.mount_path.clone(),
            // Files from the API are the API's, not the container's to change (kubelet mounts
            // them read-only too).
            read_only: mount.read_only.unwrap_or(false)
                || volumes::from_api(volume)
                || volume
                    .persistent_volume_claim
                    .as_ref()
                    .is_some_and(|c| c.read_only == Some(true)),
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
        security: security_of(pod, container, policy)?,
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

/// The container's `securityContext` over the pod's, checked against the node's policy.
fn security_of(
    pod: &Pod,
    container: &Container,
    policy: &PodPolicy,
) -> Result<Security, AgentError> {
    let bad = |msg: String| AgentError::ContainerConfig(msg);
    let spec = pod.spec.as_ref();
    let pod_sc = spec.and_then(|s| s.security_context.as_ref());
    let sc = container.security_context.as_ref();

    let caps = sc.and_then(|s| s.capabilities.as_ref());
    let cap_names = |list: Option<&Vec<String>>, field: &str| -> Result<Vec<String>, AgentError> {
        list.into_iter()
            .flatten()
            .enumerate()
            .map(|(i, name)| {
                capability_name(name).ok_or_else(|| {
                    bad(format!(
                        "securityContext.capabilities.{field}[{i}]: unknown capability {name:?}"
                    ))
                })
            })
            .collect()
    };

    let profile = sc
        .and_then(|s| s.seccomp_profile.as_ref())
        .or(pod_sc.and_then(|s| s.seccomp_profile.as_ref()));
    let seccomp = match profile.map(|p| (p.type_.as_str(), p.localhost_profile.as_deref())) {
        None if policy.seccomp_default => Seccomp::RuntimeDefault,
        None | Some(("Unconfined", _)) => Seccomp::Unconfined,
        Some(("RuntimeDefault", _)) => Seccomp::RuntimeDefault,
        Some(("Localhost", Some(file))) => {
            let relative = std::path::Path::new(file);
            let inside = relative
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
            if file.is_empty() || !inside {
                return Err(bad(format!(
                    "securityContext.seccompProfile.localhostProfile: {file:?} must be a relative path without '..'"
                )));
            }
            Seccomp::Localhost(policy.seccomp_dir.join(relative))
        }
        Some(("Localhost", None)) => {
            return Err(bad(
                "securityContext.seccompProfile.localhostProfile: required for type Localhost"
                    .into(),
            ))
        }
        Some((other, _)) => {
            return Err(bad(format!(
                "securityContext.seccompProfile.type: unsupported value {other:?}"
            )))
        }
    };

    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let mut sysctls = Vec::new();
    for sysctl in pod_sc
        .and_then(|s| s.sysctls.as_ref())
        .into_iter()
        .flatten()
    {
        // kubelet's words.
        if !policy.allows_sysctl(&sysctl.name) {
            return Err(bad(format!(
                "forbidden sysctl: {:?} not allowlisted",
                sysctl.name
            )));
        }
        if host_network && sysctl.name.starts_with("net.") {
            return Err(bad(format!(
                "sysctl {:?} not allowed with host net enabled",
                sysctl.name
            )));
        }
        sysctls.push((sysctl.name.clone(), sysctl.value.clone()));
    }

    Ok(Security {
        run_as_non_root: sc
            .and_then(|s| s.run_as_non_root)
            .or(pod_sc.and_then(|s| s.run_as_non_root))
            .unwrap_or(false),
        capabilities_add: cap_names(caps.and_then(|c| c.add.as_ref()), "add")?,
        capabilities_drop: cap_names(caps.and_then(|c| c.drop.as_ref()), "drop")?,
        allow_privilege_escalation: sc.and_then(|s| s.allow_privilege_escalation),
        seccomp,
        unmasked_proc: sc.and_then(|s| s.proc_mount.as_deref()) == Some("Unmasked"),
        sysctls,
        supplemental_groups: pod_sc
            .and_then(|s| s.supplemental_groups.clone())
            .unwrap_or_default(),
    })
}

/// `NET_ADMIN`, `net_admin` or `CAP_NET_ADMIN` as `CAP_NET_ADMIN`; `ALL` as is; `None` for a
/// name no kernel knows.
fn capability_name(name: &str) -> Option<String> {
    let upper = name.trim().to_ascii_uppercase();
    if upper == "ALL" {
        return Some(upper);
    }
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    ALL_CAPABILITIES.contains(&full.as_str()).then_some(full)
}

/// The capabilities a container gets, as containerd computes them: the default set (all when
/// privileged); `drop: [ALL]` empties it; then `add` (`ALL`: every one); then the other drops.
fn capabilities(config: &ContainerConfig) -> Vec<String> {
    if config.privileged {
        return ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect();
    }
    let s = &config.security;
    let mut caps: Vec<String> = if s.capabilities_drop.iter().any(|c| c == "ALL") {
        Vec::new()
    } else {
        DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect()
    };
    for add in &s.capabilities_add {
        if add == "ALL" {
            caps = ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect();
        } else if !caps.contains(add) {
            caps.push(add.clone());
        }
    }
    caps.retain(|c| !s.capabilities_drop.contains(c));
    caps
}

/// kubelet's check of `runAsNonRoot`, in its words: the uid the container would run as must not
/// be 0, and must be known (a user name in the image cannot be checked).
fn verify_non_root(config: &ContainerConfig, image: &ImageConfig) -> Result<(), String> {
    if !config.security.run_as_non_root {
        return Ok(());
    }
    let pod = format!(
        "{}_{}({})",
        config.pod_name, config.namespace, config.pod_uid
    );
    let container = &config.name;
    if config.run_as_user == Some(0) {
        return Err(format!(
            "container's runAsUser breaks non-root policy (pod: {pod:?}, container: {container})"
        ));
    }
    if config.run_as_user.is_some() {
        return Ok(());
    }
    let user = image.user.as_deref().unwrap_or("");
    let uid = user.split(':').next().unwrap_or("");
    if uid.is_empty() {
        return Err(format!(
            "container has runAsNonRoot and image will run as root (pod: {pod:?}, container: {container})"
        ));
    }
    match uid.parse::<i64>() {
        Ok(0) => Err(format!(
            "container has runAsNonRoot and image will run as root (pod: {pod:?}, container: {container})"
        )),
        Ok(_) => Ok(()),
        Err(_) => Err(format!(
            "container has runAsNonRoot and image has non-numeric user ({uid}), cannot verify user is non-root (pod: {pod:?}, container: {container})"
        )),
    }
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

/// The OCI runtime spec for a container. `cgroups_path` is where runc puts its cgroup. Fails
/// (with kubelet's message) when the pod's security context cannot hold with this image.
pub fn oci_spec(
    config: &ContainerConfig,
    image: &ImageConfig,
    cgroups_path: &str,
) -> Result<Value, String> {
    verify_non_root(config, image)?;
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

    let (uid, gid) = user_ids(config, image)?;
    let caps = capabilities(config);
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
        // Read-only is recursive: a mount below a read-only hostPath is read-only too.
        let mode = if m.read_only { "rro" } else { "rw" };
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
    let security = &config.security;
    if !config.security.sysctls.is_empty() {
        linux["sysctl"] = security
            .sysctls
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.clone())))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    // Privileged containers run without a filter, as in Kubernetes.
    if !config.privileged {
        match &security.seccomp {
            Seccomp::Unconfined | Seccomp::Localhost(_) => {}
            Seccomp::RuntimeDefault => linux["seccomp"] = crate::seccomp::runtime_default(&caps),
            Seccomp::Profile(profile) => linux["seccomp"] = profile.clone(),
        }
    }
    if let Seccomp::Localhost(path) = &security.seccomp {
        return Err(format!("seccomp profile {} was not read", path.display()));
    }
    if !config.privileged && !security.unmasked_proc {
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
            "user": {"uid": uid, "gid": gid, "additionalGids": security.supplemental_groups},
            "args": process_args(config, image),
            "env": env,
            "cwd": cwd,
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps,
            },
            // Only when asked, as kubelet does: setuid programs work unless the pod says not.
            "noNewPrivileges": !config.privileged && security.allow_privilege_escalation == Some(false),
        },
        "root": {"path": "rootfs", "readonly": config.read_only_root},
        "mounts": mounts,
        "linux": linux,
    });
    if config.netns.is_some() {
        spec["hostname"] = config.hostname.clone().into();
    }
    Ok(spec)
}

/// uid/gid: securityContext wins; else the image's `User` if numeric (`"1000"` or
/// `"1000:1000"`); else root. A user *name* would need the image's /etc/passwd, which skiff does
/// not read: such an image needs `runAsUser`, rather than silently running as root.
fn user_ids(config: &ContainerConfig, image: &ImageConfig) -> Result<(i64, i64), String> {
    let (mut uid, mut gid) = (0, 0);
    if let Some(user) = image.user.as_deref().filter(|u| !u.is_empty()) {
        let (u, g) = user.split_once(':').unwrap_or((user, ""));
        match u.parse() {
            Ok(n) => uid = n,
            Err(_) if config.run_as_user.is_some() => {}
            Err(_) => {
                return Err(format!(
                    "the image's user {u:?} is a name, which skiff does not look up: set securityContext.runAsUser"
                ))
            }
        }
        match g.parse() {
            Ok(n) => gid = n,
            Err(_) if g.is_empty() || config.run_as_group.is_some() => {}
            Err(_) => {
                return Err(format!(
                    "the image's group {g:?} is a name, which skiff does not look up: set securityContext.runAsGroup"
                ))
            }
        }
    }
    Ok((
        config.run_as_user.unwrap_or(uid),
        config.run_as_group.unwrap_or(gid),
    ))
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

/// Where a `subPath` of a volume is on the node: made (as a directory) if it is not there, as
/// kubelet does, and resolved through symlinks, which must not lead out of the volume — a
/// container could otherwise plant a link in a shared volume that takes the next container to
/// the node's root. A file of a ConfigMap or Secret volume resolves into the version current at
/// the start, so a `subPath` mount does not see later updates (as in Kubernetes).
fn sub_path_on_node(volume: &Path, sub: &str) -> std::io::Result<std::path::PathBuf> {
    if sub.starts_with('/') || sub.split('/').any(|part| part == "..") {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "must be a relative path without '..'",
        ));
    }
    let volume = volume.canonicalize()?;
    let inside = |path: &Path| -> std::io::Result<std::path::PathBuf> {
        let resolved = path.canonicalize()?;
        if resolved.starts_with(&volume) {
            Ok(resolved)
        } else {
            Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("leads out of the volume (to {})", resolved.display()),
            ))
        }
    };
    let path = volume.join(sub);
    if std::fs::symlink_metadata(&path).is_err() {
        // What exists of it must be inside before anything is made below it.
        let existing = path
            .ancestors()
            .find(|a| std::fs::symlink_metadata(a).is_ok())
            .unwrap_or(&volume);
        inside(existing)?;
        std::fs::create_dir_all(&path)?;
    }
    inside(&path)
}

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
        let policy = PodPolicy::default();
        let c = container_config(&p, &spec.containers[0], false, 2, &dirs, &downward, &policy)
            .expect("config");
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

        let spec = oci_spec(&c, &ImageConfig::default(), "/skiff/u1/c").expect("spec");
        assert_eq!(spec["process"]["user"]["uid"], 1000);
        // The pids limit is the pod's (its cgroup), not each container's.
        assert!(spec["linux"]["resources"].get("pids").is_none());
        // Kubernetes' defaults: no filter, privilege escalation allowed, /proc masked.
        assert!(spec["linux"].get("seccomp").is_none());
        assert_eq!(spec["process"]["noNewPrivileges"], false);
        assert!(spec["linux"]["maskedPaths"].is_array());
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
            &PodPolicy::default(),
        )
        .expect_err("nfs is not supported")
        .to_string();
        assert!(err.contains("volume cfg"), "{err}");
    }

    #[test]
    fn sub_paths_stay_inside_their_volume() {
        let root = tempfile::tempdir().expect("tempdir");
        let volume = root.path().join("v");
        std::fs::create_dir_all(volume.join("data")).expect("dirs");
        std::fs::write(volume.join("data/app.conf"), "x").expect("file");
        std::os::unix::fs::symlink("data/app.conf", volume.join("app.conf")).expect("link");
        std::os::unix::fs::symlink("/etc", volume.join("escape")).expect("link");
        let volume = volume.canonicalize().expect("canonical");
        // A link inside the volume resolves to its target (the version current now).
        assert_eq!(
            sub_path_on_node(&volume, "app.conf").expect("inside"),
            volume.join("data/app.conf")
        );
        // Missing: made as a directory.
        assert!(sub_path_on_node(&volume, "new/dir").expect("made").is_dir());
        for bad in [
            "escape",
            "escape/passwd",
            "escape/made",
            "../v",
            "/etc",
            "data/../../x",
        ] {
            assert!(sub_path_on_node(&volume, bad).is_err(), "{bad}");
        }
        assert!(!Path::new("/etc/made").exists());
    }

    /// The container's security context (pod values under it) as a config, or the error.
    fn secured(pod_sc: Value, sc: Value, policy: &PodPolicy) -> Result<ContainerConfig, String> {
        let p = pod(json!({
            "metadata": {"name": "web", "namespace": "ns1", "uid": "u1"},
            "spec": {"securityContext": pod_sc, "containers": [{"name": "c", "securityContext": sc}]}
        }));
        let dirs = PodDirs {
            pod_dir: Path::new("/p"),
            log_dir: Path::new("/l"),
        };
        let spec = p.spec.as_ref().expect("spec");
        container_config(
            &p,
            &spec.containers[0],
            false,
            0,
            &dirs,
            &Downward::default(),
            policy,
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn capabilities_are_added_and_dropped_as_containerd_does() {
        let caps = |sc: Value| -> Vec<String> {
            let c = secured(json!({}), sc, &PodPolicy::default()).expect("config");
            let spec = oci_spec(&c, &ImageConfig::default(), "/x").expect("spec");
            serde_json::from_value(spec["process"]["capabilities"]["effective"].clone())
                .expect("caps")
        };
        assert_eq!(
            caps(json!({"capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}})),
            ["CAP_NET_BIND_SERVICE"]
        );
        let added = caps(json!({"capabilities": {"add": ["net_admin"], "drop": ["CAP_KILL"]}}));
        assert!(added.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(added.contains(&"CAP_CHOWN".to_string()), "defaults stay");
        assert!(!added.contains(&"CAP_KILL".to_string()));
        assert!(caps(json!({"capabilities": {"drop": ["ALL"]}})).is_empty());

        let err = secured(
            json!({}),
            json!({"capabilities": {"add": ["CHOWN", "TAKE_OVER"]}}),
            &PodPolicy::default(),
        )
        .expect_err("unknown");
        assert!(
            err.contains("securityContext.capabilities.add[1]: unknown capability \"TAKE_OVER\""),
            "{err}"
        );
    }

    #[test]
    fn run_as_non_root_refuses_root_with_kubelets_words() {
        let image = |user: &str| ImageConfig {
            user: Some(user.into()),
            ..ImageConfig::default()
        };
        let policy = PodPolicy::default();
        let c = secured(json!({"runAsNonRoot": true}), json!({}), &policy).expect("config");
        let err = oci_spec(&c, &image(""), "/x").expect_err("root image");
        assert_eq!(
            err,
            "container has runAsNonRoot and image will run as root (pod: \"web_ns1(u1)\", container: c)"
        );
        let err = oci_spec(&c, &image("nobody"), "/x").expect_err("a name");
        assert!(err.contains("image has non-numeric user (nobody)"), "{err}");
        assert!(oci_spec(&c, &image("1000"), "/x").is_ok());
        // The container's runAsUser wins over the image's user, and 0 breaks the policy.
        let c = secured(
            json!({"runAsNonRoot": true}),
            json!({"runAsUser": 0}),
            &policy,
        )
        .expect("config");
        let err = oci_spec(&c, &image("1000"), "/x").expect_err("runAsUser 0");
        assert!(
            err.starts_with("container's runAsUser breaks non-root policy"),
            "{err}"
        );
        // Without runAsNonRoot, a named user is not silently root either.
        let c = secured(json!({}), json!({}), &policy).expect("config");
        let err = oci_spec(&c, &image("nobody"), "/x").expect_err("a name");
        assert!(err.contains("set securityContext.runAsUser"), "{err}");
    }

    #[test]
    fn seccomp_escalation_proc_mount_sysctls_and_groups_reach_the_spec() {
        let policy = PodPolicy::default();
        let c = secured(
            json!({"seccompProfile": {"type": "RuntimeDefault"}, "supplementalGroups": [5, 6],
                   "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]}),
            json!({"allowPrivilegeEscalation": false, "procMount": "Unmasked"}),
            &policy,
        )
        .expect("config");
        let spec = oci_spec(&c, &ImageConfig::default(), "/x").expect("spec");
        assert_eq!(spec["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ALLOW");
        assert_eq!(spec["process"]["noNewPrivileges"], true);
        assert!(spec["linux"].get("maskedPaths").is_none());
        assert_eq!(
            spec["linux"]["sysctl"]["net.ipv4.ip_unprivileged_port_start"],
            "0"
        );
        assert_eq!(spec["process"]["user"]["additionalGids"], json!([5, 6]));
        let parsed: Result<oci_spec::runtime::Spec, _> = serde_json::from_value(spec);
        assert!(parsed.is_ok(), "{parsed:?}");

        // The container's Unconfined wins over the pod's RuntimeDefault; the node's default
        // applies only where nothing is said.
        let c = secured(
            json!({"seccompProfile": {"type": "RuntimeDefault"}}),
            json!({"seccompProfile": {"type": "Unconfined"}}),
            &policy,
        )
        .expect("config");
        assert_eq!(c.security.seccomp, Seccomp::Unconfined);
        let defaulting = PodPolicy {
            seccomp_default: true,
            seccomp_dir: "/var/lib/skiff/seccomp".into(),
            ..PodPolicy::default()
        };
        let c = secured(json!({}), json!({}), &defaulting).expect("config");
        assert_eq!(c.security.seccomp, Seccomp::RuntimeDefault);
        let c = secured(
            json!({}),
            json!({"seccompProfile": {"type": "Localhost", "localhostProfile": "audit.json"}}),
            &defaulting,
        )
        .expect("config");
        assert_eq!(
            c.security.seccomp,
            Seccomp::Localhost("/var/lib/skiff/seccomp/audit.json".into())
        );
        let err = secured(
            json!({}),
            json!({"seccompProfile": {"type": "Localhost", "localhostProfile": "../../etc/x"}}),
            &defaulting,
        )
        .expect_err("outside the profile dir");
        assert!(err.contains("localhostProfile"), "{err}");

        // Unsafe sysctls only when the node allows them.
        let unsafe_sysctl = json!({"sysctls": [{"name": "kernel.msgmax", "value": "1"}]});
        let err = secured(unsafe_sysctl.clone(), json!({}), &policy).expect_err("unsafe");
        assert_eq!(err, "forbidden sysctl: \"kernel.msgmax\" not allowlisted");
        let allowing = PodPolicy {
            allowed_unsafe_sysctls: vec!["kernel.msg*".into()],
            ..PodPolicy::default()
        };
        assert!(secured(unsafe_sysctl, json!({}), &allowing).is_ok());
    }
}
