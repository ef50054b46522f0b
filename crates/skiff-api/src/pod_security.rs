//! The Pod Security Standards (`privileged`, `baseline`, `restricted`), as Kubernetes' Pod
//! Security admission checks them (k8s.io/pod-security-admission, policy version 1.33).
//!
//! [`check`] is pure: a level and a pod's metadata and spec in, the violated checks out, each
//! worded as Kubernetes words it (`privileged (container "c" must not set
//! securityContext.privileged=true)`), so a refusal reads the same as on any cluster.
//!
//! | level | forbids |
//! |---|---|
//! | privileged | nothing |
//! | baseline | host namespaces, privileged containers, added capabilities beyond the default set, hostPath volumes, host ports, AppArmor `unconfined`, SELinux types and users, `procMount: Unmasked`, seccomp `Unconfined`, unsafe sysctls |
//! | restricted | baseline, and: volume types other than configMap, csi, downwardAPI, emptyDir, ephemeral, persistentVolumeClaim, projected, secret; privilege escalation; running as root; seccomp unset; capabilities not dropping ALL or adding more than NET_BIND_SERVICE |
use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{Container, PodSpec, SecurityContext};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// A Pod Security Standards level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Privileged,
    Baseline,
    Restricted,
}

impl Level {
    /// The level a namespace label names; `None` for anything else.
    pub fn parse(value: &str) -> Option<Level> {
        match value {
            "privileged" => Some(Level::Privileged),
            "baseline" => Some(Level::Baseline),
            "restricted" => Some(Level::Restricted),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The namespace labels, as Kubernetes names them.
pub const ENFORCE: &str = "pod-security.kubernetes.io/enforce";
pub const WARN: &str = "pod-security.kubernetes.io/warn";
pub const AUDIT: &str = "pod-security.kubernetes.io/audit";

/// One violated check: its name and what in the pod violates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub check: &'static str,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.check, self.detail)
    }
}

/// Kubernetes' message for a pod refused at `level`:
/// `violates PodSecurity "baseline:latest": privileged (...), hostPath volumes (...)`.
pub fn forbidden_message(level: Level, violations: &[Violation]) -> String {
    let parts: Vec<String> = violations.iter().map(ToString::to_string).collect();
    format!(
        "violates PodSecurity \"{level}:latest\": {}",
        parts.join(", ")
    )
}

/// Kubernetes' warning for a pod (or a workload's template) that `level` would refuse.
pub fn warning_message(level: Level, violations: &[Violation]) -> String {
    let parts: Vec<String> = violations.iter().map(ToString::to_string).collect();
    format!(
        "would violate PodSecurity \"{level}:latest\": {}",
        parts.join(", ")
    )
}

/// Capabilities baseline lets a container add (containerd's default set).
const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Sysctls safe to set in a pod (namespaced, isolated from the node).
pub const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

const SELINUX_TYPES: &[&str] = &[
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

/// Every check of `level` that the pod violates, in Kubernetes' order.
pub fn check(level: Level, meta: &ObjectMeta, spec: &PodSpec) -> Vec<Violation> {
    if level == Level::Privileged {
        return Vec::new();
    }
    let containers = all_containers(spec);
    let mut out = Vec::new();
    baseline(meta, spec, &containers, &mut out);
    if level == Level::Restricted {
        restricted(spec, &containers, &mut out);
    }
    out
}

/// The containers of every kind, with their kind's name for messages (`container`,
/// `initContainer`, `ephemeralContainer`... Kubernetes says "container" for all).
fn all_containers(spec: &PodSpec) -> Vec<(&str, Option<&SecurityContext>, Option<&Container>)> {
    let mut out: Vec<(&str, Option<&SecurityContext>, Option<&Container>)> = Vec::new();
    for c in spec.init_containers.iter().flatten() {
        out.push((&c.name, c.security_context.as_ref(), Some(c)));
    }
    for c in &spec.containers {
        out.push((&c.name, c.security_context.as_ref(), Some(c)));
    }
    for c in spec.ephemeral_containers.iter().flatten() {
        out.push((&c.name, c.security_context.as_ref(), None));
    }
    out
}

type Containers<'a> = [(&'a str, Option<&'a SecurityContext>, Option<&'a Container>)];

/// `container "a"`, or `containers "a", "b"`.
fn containers_phrase(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    if names.len() == 1 {
        format!("container {}", quoted[0])
    } else {
        format!("containers {}", quoted.join(", "))
    }
}

fn push(out: &mut Vec<Violation>, check: &'static str, detail: String) {
    out.push(Violation { check, detail });
}

fn baseline(meta: &ObjectMeta, spec: &PodSpec, containers: &Containers, out: &mut Vec<Violation>) {
    // Host namespaces.
    let mut host = Vec::new();
    for (set, field) in [
        (spec.host_network, "hostNetwork=true"),
        (spec.host_pid, "hostPID=true"),
        (spec.host_ipc, "hostIPC=true"),
    ] {
        if set == Some(true) {
            host.push(field);
        }
    }
    if !host.is_empty() {
        push(out, "host namespaces", host.join(", "));
    }
    // Privileged.
    let privileged: Vec<&str> = containers
        .iter()
        .filter(|(_, sc, _)| sc.and_then(|s| s.privileged) == Some(true))
        .map(|(n, _, _)| *n)
        .collect();
    if !privileged.is_empty() {
        push(
            out,
            "privileged",
            format!(
                "{} must not set securityContext.privileged=true",
                containers_phrase(&privileged)
            ),
        );
    }
    // Capabilities beyond the default set.
    let mut added: Vec<&str> = Vec::new();
    let mut added_names: Vec<&str> = Vec::new();
    for (name, sc, _) in containers {
        let adds = sc
            .and_then(|s| s.capabilities.as_ref())
            .and_then(|c| c.add.as_ref());
        let mut mine = false;
        for cap in adds.into_iter().flatten() {
            if !BASELINE_CAPABILITIES.contains(&cap.as_str()) {
                mine = true;
                if !added.contains(&cap.as_str()) {
                    added.push(cap);
                }
            }
        }
        if mine {
            added_names.push(name);
        }
    }
    if !added.is_empty() {
        let quoted: Vec<String> = added.iter().map(|c| format!("{c:?}")).collect();
        push(
            out,
            "non-default capabilities",
            format!(
                "{} must not include {} in securityContext.capabilities.add",
                containers_phrase(&added_names),
                quoted.join(", ")
            ),
        );
    }
    // hostPath volumes.
    let host_paths: Vec<String> = spec
        .volumes
        .iter()
        .flatten()
        .filter(|v| v.host_path.is_some())
        .map(|v| format!("{:?}", v.name))
        .collect();
    if !host_paths.is_empty() {
        let noun = if host_paths.len() == 1 {
            "volume"
        } else {
            "volumes"
        };
        push(
            out,
            "hostPath volumes",
            format!("{noun} {}", host_paths.join(", ")),
        );
    }
    // Host ports.
    let mut ports: Vec<String> = Vec::new();
    let mut port_names: Vec<&str> = Vec::new();
    for (name, _, c) in containers {
        let mut mine = false;
        for port in c.and_then(|c| c.ports.as_ref()).into_iter().flatten() {
            if let Some(p) = port.host_port.filter(|p| *p != 0) {
                mine = true;
                ports.push(p.to_string());
            }
        }
        if mine {
            port_names.push(name);
        }
    }
    if !ports.is_empty() {
        push(
            out,
            "hostPort",
            format!(
                "{} uses hostPort {}",
                containers_phrase(&port_names),
                ports.join(", ")
            ),
        );
    }
    // AppArmor.
    let annotations = meta.annotations.clone().unwrap_or_default();
    let unconfined: Vec<String> = annotations
        .iter()
        .filter(|(k, v)| {
            k.starts_with("container.apparmor.security.beta.kubernetes.io/") && *v == "unconfined"
        })
        .map(|(k, v)| format!("{k:?}={v:?}"))
        .collect();
    let profile_unconfined = spec
        .security_context
        .as_ref()
        .and_then(|s| s.app_armor_profile.as_ref())
        .is_some_and(|p| p.type_ == "Unconfined")
        || containers.iter().any(|(_, sc, _)| {
            sc.and_then(|s| s.app_armor_profile.as_ref())
                .is_some_and(|p| p.type_ == "Unconfined")
        });
    if !unconfined.is_empty() || profile_unconfined {
        let detail = if unconfined.is_empty() {
            "pod or containers must not set securityContext.appArmorProfile.type to \"Unconfined\""
                .to_string()
        } else {
            format!("forbidden AppArmor profiles: {}", unconfined.join(", "))
        };
        push(out, "appArmorProfile", detail);
    }
    // SELinux.
    let selinux_bad = |o: &k8s_openapi::api::core::v1::SELinuxOptions| {
        o.type_
            .as_deref()
            .is_some_and(|t| !t.is_empty() && !SELINUX_TYPES.contains(&t))
            || o.user.as_deref().is_some_and(|u| !u.is_empty())
            || o.role.as_deref().is_some_and(|r| !r.is_empty())
    };
    let pod_selinux = spec
        .security_context
        .as_ref()
        .and_then(|s| s.se_linux_options.as_ref())
        .is_some_and(selinux_bad);
    let container_selinux = containers.iter().any(|(_, sc, _)| {
        sc.and_then(|s| s.se_linux_options.as_ref())
            .is_some_and(selinux_bad)
    });
    if pod_selinux || container_selinux {
        push(
            out,
            "seLinuxOptions",
            "pod or containers must not set securityContext.seLinuxOptions type, user or role \
             beyond the allowed values"
                .to_string(),
        );
    }
    // /proc mount.
    let unmasked: Vec<&str> = containers
        .iter()
        .filter(|(_, sc, _)| {
            sc.and_then(|s| s.proc_mount.as_deref())
                .is_some_and(|m| m != "Default")
        })
        .map(|(n, _, _)| *n)
        .collect();
    if !unmasked.is_empty() {
        push(
            out,
            "procMount",
            format!(
                "{} must not set securityContext.procMount to \"Unmasked\"",
                containers_phrase(&unmasked)
            ),
        );
    }
    // Seccomp Unconfined.
    let pod_unconfined = spec
        .security_context
        .as_ref()
        .and_then(|s| s.seccomp_profile.as_ref())
        .is_some_and(|p| p.type_ == "Unconfined");
    let unconfined: Vec<&str> = containers
        .iter()
        .filter(|(_, sc, _)| {
            sc.and_then(|s| s.seccomp_profile.as_ref())
                .is_some_and(|p| p.type_ == "Unconfined")
        })
        .map(|(n, _, _)| *n)
        .collect();
    if pod_unconfined {
        push(
            out,
            "seccompProfile",
            "pod must not set securityContext.seccompProfile.type to \"Unconfined\"".to_string(),
        );
    } else if !unconfined.is_empty() {
        push(
            out,
            "seccompProfile",
            format!(
                "{} must not set securityContext.seccompProfile.type to \"Unconfined\"",
                containers_phrase(&unconfined)
            ),
        );
    }
    // Sysctls.
    let unsafe_sysctls: Vec<String> = spec
        .security_context
        .as_ref()
        .and_then(|s| s.sysctls.as_ref())
        .into_iter()
        .flatten()
        .filter(|s| !SAFE_SYSCTLS.contains(&s.name.as_str()))
        .map(|s| format!("{:?}", s.name))
        .collect();
    if !unsafe_sysctls.is_empty() {
        push(out, "forbidden sysctls", unsafe_sysctls.join(", "));
    }
}

const RESTRICTED_VOLUMES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

fn restricted(spec: &PodSpec, containers: &Containers, out: &mut Vec<Violation>) {
    // Volume types.
    let mut bad: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for volume in spec.volumes.iter().flatten() {
        let value = serde_json::to_value(volume).unwrap_or_default();
        for (field, _) in value.as_object().into_iter().flatten() {
            if field != "name" && !RESTRICTED_VOLUMES.contains(&field.as_str()) {
                bad.entry(field.clone())
                    .or_default()
                    .push(format!("{:?}", volume.name));
            }
        }
    }
    if !bad.is_empty() {
        let (names, types): (Vec<String>, Vec<String>) =
            bad.iter().map(|(t, vs)| (vs.join(", "), t.clone())).unzip();
        let noun = if names.len() == 1 && !names[0].contains(',') {
            "volume"
        } else {
            "volumes"
        };
        push(
            out,
            "restricted volume types",
            format!(
                "{noun} {} uses restricted volume type {}",
                names.join(", "),
                types.join(", ")
            ),
        );
    }
    let pod_sc = spec.security_context.as_ref();
    // Privilege escalation.
    let escalating: Vec<&str> = containers
        .iter()
        .filter(|(_, sc, _)| sc.and_then(|s| s.allow_privilege_escalation) != Some(false))
        .map(|(n, _, _)| *n)
        .collect();
    if !escalating.is_empty() {
        push(
            out,
            "allowPrivilegeEscalation != false",
            format!(
                "{} must set securityContext.allowPrivilegeEscalation=false",
                containers_phrase(&escalating)
            ),
        );
    }
    // Capabilities.
    let mut not_dropping = Vec::new();
    let mut adding = Vec::new();
    for (name, sc, _) in containers {
        let caps = sc.and_then(|s| s.capabilities.as_ref());
        let drops_all = caps
            .and_then(|c| c.drop.as_ref())
            .is_some_and(|d| d.iter().any(|c| c == "ALL"));
        if !drops_all {
            not_dropping.push(*name);
        }
        if caps
            .and_then(|c| c.add.as_ref())
            .is_some_and(|a| a.iter().any(|c| c != "NET_BIND_SERVICE"))
        {
            adding.push(*name);
        }
    }
    let mut details = Vec::new();
    if !not_dropping.is_empty() {
        details.push(format!(
            "{} must set securityContext.capabilities.drop=[\"ALL\"]",
            containers_phrase(&not_dropping)
        ));
    }
    if !adding.is_empty() {
        details.push(format!(
            "{} must not include capabilities other than \"NET_BIND_SERVICE\" in securityContext.capabilities.add",
            containers_phrase(&adding)
        ));
    }
    if !details.is_empty() {
        push(out, "unrestricted capabilities", details.join("; "));
    }
    // Running as non-root.
    let pod_non_root = pod_sc.and_then(|s| s.run_as_non_root);
    let pod_root = pod_sc.and_then(|s| s.run_as_user) == Some(0);
    let not_non_root: Vec<&str> = containers
        .iter()
        .filter(|(_, sc, _)| {
            let mine = sc.and_then(|s| s.run_as_non_root);
            mine == Some(false) || (mine.is_none() && pod_non_root != Some(true))
        })
        .map(|(n, _, _)| *n)
        .collect();
    if pod_non_root == Some(false) {
        push(
            out,
            "runAsNonRoot != true",
            "pod must not set securityContext.runAsNonRoot=false".to_string(),
        );
    } else if !not_non_root.is_empty() {
        push(
            out,
            "runAsNonRoot != true",
            format!(
                "pod or {} must set securityContext.runAsNonRoot=true",
                containers_phrase(&not_non_root)
            ),
        );
    }
    let root_users: Vec<&str> = containers
        .iter()
        .filter(|(_, sc, _)| sc.and_then(|s| s.run_as_user) == Some(0))
        .map(|(n, _, _)| *n)
        .collect();
    if pod_root {
        push(
            out,
            "runAsUser=0",
            "pod must not set runAsUser=0".to_string(),
        );
    } else if !root_users.is_empty() {
        push(
            out,
            "runAsUser=0",
            format!(
                "{} must not set runAsUser=0",
                containers_phrase(&root_users)
            ),
        );
    }
    // Seccomp must be set.
    let pod_seccomp = pod_sc
        .and_then(|s| s.seccomp_profile.as_ref())
        .is_some_and(|p| matches!(p.type_.as_str(), "RuntimeDefault" | "Localhost"));
    let unset: Vec<&str> = containers
        .iter()
        .filter(
            |(_, sc, _)| match sc.and_then(|s| s.seccomp_profile.as_ref()) {
                Some(p) => !matches!(p.type_.as_str(), "RuntimeDefault" | "Localhost"),
                None => !pod_seccomp,
            },
        )
        .map(|(n, _, _)| *n)
        .collect();
    if !unset.is_empty() {
        push(
            out,
            "seccompProfile",
            format!(
                "pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"",
                containers_phrase(&unset)
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn violations(level: Level, pod: serde_json::Value) -> Vec<String> {
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(pod).expect("a pod");
        check(level, &pod.metadata, &pod.spec.unwrap_or_default())
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn baseline_refuses_what_takes_the_node() {
        let plain = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        assert!(violations(Level::Baseline, plain.clone()).is_empty());
        let taking = json!({"metadata": {"name": "p"}, "spec": {
            "hostNetwork": true, "hostPID": true,
            "containers": [{"name": "c", "image": "i",
                            "securityContext": {"privileged": true, "capabilities": {"add": ["SYS_ADMIN", "CHOWN"]}},
                            "ports": [{"containerPort": 80, "hostPort": 8080}]}],
            "volumes": [{"name": "root", "hostPath": {"path": "/"}}]}});
        assert_eq!(
            violations(Level::Baseline, taking.clone()),
            vec![
                "host namespaces (hostNetwork=true, hostPID=true)",
                r#"privileged (container "c" must not set securityContext.privileged=true)"#,
                r#"non-default capabilities (container "c" must not include "SYS_ADMIN" in securityContext.capabilities.add)"#,
                r#"hostPath volumes (volume "root")"#,
                r#"hostPort (container "c" uses hostPort 8080)"#,
            ]
        );
        assert!(violations(Level::Privileged, taking).is_empty());
        let sysctl = json!({"metadata": {"name": "p"}, "spec": {
            "securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"},
                                            {"name": "net.ipv4.tcp_syncookies", "value": "1"}]},
            "containers": [{"name": "c", "image": "i", "securityContext": {"seccompProfile": {"type": "Unconfined"}}}]}});
        assert_eq!(
            violations(Level::Baseline, sysctl),
            vec![
                r#"seccompProfile (container "c" must not set securityContext.seccompProfile.type to "Unconfined")"#,
                r#"forbidden sysctls ("kernel.msgmax")"#,
            ]
        );
    }

    #[test]
    fn restricted_wants_a_hardened_pod() {
        let plain = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        assert_eq!(
            violations(Level::Restricted, plain),
            vec![
                r#"allowPrivilegeEscalation != false (container "c" must set securityContext.allowPrivilegeEscalation=false)"#,
                r#"unrestricted capabilities (container "c" must set securityContext.capabilities.drop=["ALL"])"#,
                r#"runAsNonRoot != true (pod or container "c" must set securityContext.runAsNonRoot=true)"#,
                r#"seccompProfile (pod or container "c" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")"#,
            ]
        );
        let hardened = json!({"metadata": {"name": "p"}, "spec": {
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "image": "i", "securityContext": {
                "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}],
            "volumes": [{"name": "cache", "emptyDir": {}}]}});
        assert!(violations(Level::Restricted, hardened.clone()).is_empty());
        let mut with_host = hardened;
        with_host["spec"]["volumes"] =
            json!([{"name": "nfs", "nfs": {"server": "s", "path": "/"}}]);
        assert_eq!(
            violations(Level::Restricted, with_host),
            vec![r#"restricted volume types (volume "nfs" uses restricted volume type nfs)"#]
        );
    }
}
