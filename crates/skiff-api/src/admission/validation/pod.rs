//! Pod specs, wherever they appear: in Pods (`spec`) and in the templates of Deployments and
//! ReplicaSets (`spec.template.spec`). The caller passes the path prefix.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Container, KeyToPath, PodSpec, Probe, Volume};

use super::{non_negative, one_of, port_number};
use crate::names;
use crate::status::{go_quote, Cause};

const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
/// Sorted, as Kubernetes lists them (it prints `sets.List`).
const DNS_POLICIES: &[&str] = &["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"];
const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];
const TERMINATION_MESSAGE_POLICIES: &[&str] = &["File", "FallbackToLogsOnError"];
pub(super) const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];

/// Every problem with a pod spec; `path` is where the spec sits (`spec`, `spec.template.spec`).
pub(in crate::admission) fn pod_spec(spec: &PodSpec, path: &str) -> Vec<Cause> {
    let mut causes = Vec::new();

    let mut volumes = BTreeSet::new();
    for (i, volume) in spec.volumes.iter().flatten().enumerate() {
        let name_path = format!("{path}.volumes[{i}].name");
        if volume.name.is_empty() {
            causes.push(Cause::required(name_path));
        } else if !volumes.insert(volume.name.as_str()) {
            causes.push(Cause::duplicate(name_path, &volume.name));
        } else {
            for msg in names::dns1123_label(&volume.name) {
                causes.push(Cause::invalid(&name_path, &go_quote(&volume.name), &msg));
            }
        }
        causes.extend(self::volume(volume, &format!("{path}.volumes[{i}]")));
    }

    if spec.containers.is_empty() {
        causes.push(Cause::required(format!("{path}.containers")));
    }
    // Names are unique across containers and init containers: both appear in `kubectl logs -c`
    // and in the container statuses.
    let mut container_names = BTreeSet::new();
    let lists = [
        ("containers", spec.containers.as_slice()),
        (
            "initContainers",
            spec.init_containers.as_deref().unwrap_or_default(),
        ),
    ];
    for (list, containers) in lists {
        for (i, c) in containers.iter().enumerate() {
            let c_path = format!("{path}.{list}[{i}]");
            if !c.name.is_empty() && !container_names.insert(c.name.as_str()) {
                causes.push(Cause::duplicate(format!("{c_path}.name"), &c.name));
            }
            causes.extend(container(c, &c_path, &volumes));
        }
    }

    causes.extend(one_of(
        spec.restart_policy.as_deref(),
        &format!("{path}.restartPolicy"),
        RESTART_POLICIES,
    ));
    causes.extend(one_of(
        spec.dns_policy.as_deref(),
        &format!("{path}.dnsPolicy"),
        DNS_POLICIES,
    ));
    causes.extend(non_negative(
        spec.termination_grace_period_seconds,
        &format!("{path}.terminationGracePeriodSeconds"),
    ));
    for (field, value) in [
        ("nodeName", &spec.node_name),
        ("serviceAccountName", &spec.service_account_name),
    ] {
        if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
            for msg in names::dns1123_subdomain(value) {
                causes.push(Cause::invalid(
                    format!("{path}.{field}"),
                    &go_quote(value),
                    &msg,
                ));
            }
        }
    }
    causes
}

/// A volume's source: one only, what it needs named, file modes and paths inside the volume.
fn volume(volume: &Volume, path: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    let sources = serde_json::to_value(volume)
        .ok()
        .and_then(|v| v.as_object().map(|o| o.len().saturating_sub(1)))
        .unwrap_or(0);
    if sources > 1 {
        causes.push(Cause::forbidden(
            path,
            "may not specify more than 1 volume type",
        ));
    }
    if let Some(cm) = &volume.config_map {
        let at = format!("{path}.configMap");
        if cm.name.is_empty() {
            causes.push(Cause::required(format!("{at}.name")));
        }
        causes.extend(file_mode(cm.default_mode, &format!("{at}.defaultMode")));
        causes.extend(items(cm.items.as_deref(), &at));
    }
    if let Some(secret) = &volume.secret {
        let at = format!("{path}.secret");
        if secret.secret_name.as_deref().unwrap_or_default().is_empty() {
            causes.push(Cause::required(format!("{at}.secretName")));
        }
        causes.extend(file_mode(secret.default_mode, &format!("{at}.defaultMode")));
        causes.extend(items(secret.items.as_deref(), &at));
    }
    if let Some(downward) = &volume.downward_api {
        let at = format!("{path}.downwardAPI");
        causes.extend(file_mode(
            downward.default_mode,
            &format!("{at}.defaultMode"),
        ));
        for (j, item) in downward.items.iter().flatten().enumerate() {
            let item_at = format!("{at}.items[{j}]");
            causes.extend(local_non_reserved_path(
                &item.path,
                &format!("{item_at}.path"),
            ));
            causes.extend(file_mode(item.mode, &format!("{item_at}.mode")));
        }
    }
    if let Some(projected) = &volume.projected {
        let at = format!("{path}.projected");
        causes.extend(file_mode(
            projected.default_mode,
            &format!("{at}.defaultMode"),
        ));
        for (j, source) in projected.sources.iter().flatten().enumerate() {
            let source_at = format!("{at}.sources[{j}]");
            if let Some(cm) = &source.config_map {
                causes.extend(items(
                    cm.items.as_deref(),
                    &format!("{source_at}.configMap"),
                ));
            }
            if let Some(secret) = &source.secret {
                causes.extend(items(
                    secret.items.as_deref(),
                    &format!("{source_at}.secret"),
                ));
            }
            if let Some(token) = &source.service_account_token {
                causes.extend(local_non_reserved_path(
                    &token.path,
                    &format!("{source_at}.serviceAccountToken.path"),
                ));
            }
        }
    }
    causes
}

/// The `items` of a ConfigMap or Secret source.
fn items(items: Option<&[KeyToPath]>, path: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    for (j, item) in items.into_iter().flatten().enumerate() {
        let at = format!("{path}.items[{j}]");
        if item.key.is_empty() {
            causes.push(Cause::required(format!("{at}.key")));
        }
        causes.extend(local_non_reserved_path(&item.path, &format!("{at}.path")));
        causes.extend(file_mode(item.mode, &format!("{at}.mode")));
    }
    causes
}

fn file_mode(mode: Option<i32>, path: &str) -> Option<Cause> {
    mode.filter(|m| !(0..=0o777).contains(m)).map(|m| {
        Cause::invalid(
            path,
            &m.to_string(),
            "must be a number between 0 and 0777 (octal), both inclusive",
        )
    })
}

/// Kubernetes' `validateLocalDescendingPath`: relative, no `..` element.
fn local_descending_path(value: &str, path: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    if value.starts_with('/') {
        causes.push(Cause::invalid(
            path,
            &go_quote(value),
            "must be a relative path",
        ));
    }
    if value.split('/').any(|part| part == "..") {
        causes.push(Cause::invalid(
            path,
            &go_quote(value),
            "must not contain '..'",
        ));
    }
    causes
}

/// Kubernetes' `validateLocalNonReservedPath`: a descending path not starting with `..` (the
/// atomic writer's own names).
fn local_non_reserved_path(value: &str, path: &str) -> Vec<Cause> {
    if value.is_empty() {
        return vec![Cause::required(path)];
    }
    let mut causes = local_descending_path(value, path);
    if value.starts_with("..") {
        causes.push(Cause::invalid(
            path,
            &go_quote(value),
            "must not start with '..'",
        ));
    }
    causes
}

fn container(c: &Container, path: &str, volumes: &BTreeSet<&str>) -> Vec<Cause> {
    let mut causes = Vec::new();
    if c.name.is_empty() {
        causes.push(Cause::required(format!("{path}.name")));
    } else {
        for msg in names::dns1123_label(&c.name) {
            causes.push(Cause::invalid(
                format!("{path}.name"),
                &go_quote(&c.name),
                &msg,
            ));
        }
    }
    match c.image.as_deref().unwrap_or("") {
        "" => causes.push(Cause::required(format!("{path}.image"))),
        image if image.trim() != image => causes.push(Cause::invalid(
            format!("{path}.image"),
            &go_quote(image),
            "must not have leading or trailing whitespace",
        )),
        _ => {}
    }

    let mut port_names = BTreeSet::new();
    for (i, port) in c.ports.iter().flatten().enumerate() {
        let port_path = format!("{path}.ports[{i}]");
        if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            let errs = names::port_name(name);
            if !errs.is_empty() {
                for msg in errs {
                    causes.push(Cause::invalid(
                        format!("{port_path}.name"),
                        &go_quote(name),
                        &msg,
                    ));
                }
            } else if !port_names.insert(name) {
                causes.push(Cause::duplicate(format!("{port_path}.name"), name));
            }
        }
        if port.container_port == 0 {
            causes.push(Cause::required(format!("{port_path}.containerPort")));
        } else {
            causes.extend(port_number(
                port.container_port,
                &format!("{port_path}.containerPort"),
            ));
        }
        if let Some(host_port) = port.host_port.filter(|p| *p != 0) {
            causes.extend(port_number(host_port, &format!("{port_path}.hostPort")));
        }
        causes.extend(one_of(
            port.protocol.as_deref(),
            &format!("{port_path}.protocol"),
            PROTOCOLS,
        ));
    }

    for (i, env) in c.env.iter().flatten().enumerate() {
        let name_path = format!("{path}.env[{i}].name");
        if env.name.is_empty() {
            causes.push(Cause::required(name_path));
        } else {
            for msg in names::env_var_name(&env.name) {
                causes.push(Cause::invalid(&name_path, &go_quote(&env.name), &msg));
            }
        }
    }

    for (i, mount) in c.volume_mounts.iter().flatten().enumerate() {
        let mount_path = format!("{path}.volumeMounts[{i}]");
        if mount.name.is_empty() {
            causes.push(Cause::required(format!("{mount_path}.name")));
        } else if !volumes.contains(mount.name.as_str()) {
            causes.push(Cause::not_found(format!("{mount_path}.name"), &mount.name));
        }
        if mount.mount_path.is_empty() {
            causes.push(Cause::required(format!("{mount_path}.mountPath")));
        }
        let sub_path = mount.sub_path.as_deref().unwrap_or_default();
        if !sub_path.is_empty() {
            if mount
                .sub_path_expr
                .as_deref()
                .is_some_and(|e| !e.is_empty())
            {
                causes.push(Cause::invalid(
                    format!("{mount_path}.subPathExpr"),
                    &go_quote(mount.sub_path_expr.as_deref().unwrap_or_default()),
                    "subPathExpr and subPath are mutually exclusive",
                ));
            }
            causes.extend(local_descending_path(
                sub_path,
                &format!("{mount_path}.subPath"),
            ));
        }
    }

    for (field, probe) in [
        ("livenessProbe", &c.liveness_probe),
        ("readinessProbe", &c.readiness_probe),
        ("startupProbe", &c.startup_probe),
    ] {
        if let Some(probe) = probe {
            causes.extend(self::probe(probe, &format!("{path}.{field}")));
        }
    }

    causes.extend(one_of(
        c.image_pull_policy.as_deref(),
        &format!("{path}.imagePullPolicy"),
        PULL_POLICIES,
    ));
    causes.extend(one_of(
        c.termination_message_policy.as_deref(),
        &format!("{path}.terminationMessagePolicy"),
        TERMINATION_MESSAGE_POLICIES,
    ));
    causes
}

/// A probe has exactly one way of probing.
fn probe(p: &Probe, path: &str) -> Vec<Cause> {
    let handlers: Vec<&str> = [
        ("exec", p.exec.is_some()),
        ("httpGet", p.http_get.is_some()),
        ("tcpSocket", p.tcp_socket.is_some()),
        ("grpc", p.grpc.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    let mut causes = Vec::new();
    match handlers.as_slice() {
        [] => causes.push(Cause::required_because(path, "must specify a handler type")),
        [_] => {}
        [_, extra @ ..] => {
            for name in extra {
                causes.push(Cause::forbidden(
                    format!("{path}.{name}"),
                    "may not specify more than 1 handler type",
                ));
            }
        }
    }
    for (field, value) in [
        ("initialDelaySeconds", p.initial_delay_seconds),
        ("timeoutSeconds", p.timeout_seconds),
        ("periodSeconds", p.period_seconds),
        ("successThreshold", p.success_threshold),
        ("failureThreshold", p.failure_threshold),
    ] {
        causes.extend(non_negative(
            value.map(i64::from),
            &format!("{path}.{field}"),
        ));
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A pod spec with the defaults that matter for validation already filled in.
    fn spec(value: serde_json::Value) -> PodSpec {
        let mut spec: PodSpec = serde_json::from_value(value).expect("valid PodSpec");
        crate::admission::defaults::pod_spec(&mut spec);
        spec
    }

    fn problems(value: serde_json::Value) -> Vec<String> {
        pod_spec(&spec(value), "spec")
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn pod_spec_problems() {
        let cases: Vec<(serde_json::Value, Vec<&str>)> = vec![
            (json!({"containers": [{"name": "web", "image": "nginx"}]}), vec![]),
            (json!({"containers": []}), vec!["spec.containers: Required value"]),
            (
                json!({"containers": [{"image": "nginx"}]}),
                vec!["spec.containers[0].name: Required value"],
            ),
            (
                json!({"containers": [{"name": "web"}]}),
                vec!["spec.containers[0].image: Required value"],
            ),
            (
                json!({"containers": [{"name": "web", "image": "a"}], "initContainers": [{"name": "web", "image": "b"}]}),
                vec![r#"spec.initContainers[0].name: Duplicate value: "web""#],
            ),
            (
                json!({"containers": [{"name": "Web", "image": "a"}]}),
                vec![
                    "spec.containers[0].name: Invalid value: \"Web\": a lowercase RFC 1123 label must \
                     consist of lower case alphanumeric characters or '-', and must start and end \
                     with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for \
                     validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
                ],
            ),
            (
                json!({"containers": [{"name": "w", "image": "a", "ports": [{"containerPort": 70000, "protocol": "HTTP"}]}]}),
                vec![
                    "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
                    r#"spec.containers[0].ports[0].protocol: Unsupported value: "HTTP": supported values: "SCTP", "TCP", "UDP""#,
                ],
            ),
            (
                json!({"containers": [{"name": "w", "image": "a", "ports": [{"containerPort": 0}]}]}),
                vec!["spec.containers[0].ports[0].containerPort: Required value"],
            ),
            (
                json!({"containers": [{"name": "w", "image": "a"}], "restartPolicy": "Sometimes"}),
                vec![r#"spec.restartPolicy: Unsupported value: "Sometimes": supported values: "Always", "OnFailure", "Never""#],
            ),
            (
                json!({"containers": [{"name": "w", "image": "a", "env": [{"name": ""}, {"name": "A=B"}]}]}),
                vec![
                    "spec.containers[0].env[0].name: Required value",
                    "spec.containers[0].env[1].name: Invalid value: \"A=B\": a valid environment variable \
                     name must consist only of printable ASCII characters other than '='",
                ],
            ),
            (
                json!({"containers": [{"name": "w", "image": "a", "volumeMounts": [{"name": "data", "mountPath": "/d"}]}]}),
                vec![r#"spec.containers[0].volumeMounts[0].name: Not found: "data""#],
            ),
            (
                json!({"volumes": [{"name": "data"}], "containers": [{"name": "w", "image": "a", "volumeMounts": [{"name": "data", "mountPath": "/d"}]}]}),
                vec![],
            ),
            (
                json!({"volumes": [
                    {"name": "a", "configMap": {"name": "c", "defaultMode": 4096,
                                               "items": [{"key": "k", "path": "../x"}, {"key": "", "path": "..data"}]}},
                    {"name": "b", "secret": {}, "emptyDir": {}},
                    {"name": "d", "downwardAPI": {"items": [{"path": "/abs", "fieldRef": {"fieldPath": "metadata.name"}}]}},
                ], "containers": [{"name": "w", "image": "a",
                    "volumeMounts": [{"name": "a", "mountPath": "/a", "subPath": "x/../../y"}]}]}),
                vec![
                    "spec.volumes[0].configMap.defaultMode: Invalid value: 4096: must be a number between 0 and 0777 (octal), both inclusive",
                    "spec.volumes[0].configMap.items[0].path: Invalid value: \"../x\": must not contain '..'",
                    "spec.volumes[0].configMap.items[0].path: Invalid value: \"../x\": must not start with '..'",
                    "spec.volumes[0].configMap.items[1].key: Required value",
                    "spec.volumes[0].configMap.items[1].path: Invalid value: \"..data\": must not start with '..'",
                    "spec.volumes[1]: Forbidden: may not specify more than 1 volume type",
                    "spec.volumes[1].secret.secretName: Required value",
                    "spec.volumes[2].downwardAPI.items[0].path: Invalid value: \"/abs\": must be a relative path",
                    "spec.containers[0].volumeMounts[0].subPath: Invalid value: \"x/../../y\": must not contain '..'",
                ],
            ),
            (
                json!({"containers": [{"name": "w", "image": "a", "livenessProbe": {"periodSeconds": 5}}]}),
                vec!["spec.containers[0].livenessProbe: Required value: must specify a handler type"],
            ),
        ];
        for (input, want) in cases {
            assert_eq!(problems(input.clone()), want, "{input}");
        }
    }
}
