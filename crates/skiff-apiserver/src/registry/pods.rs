//! The Pod strategy: a new pod is `Pending`, meets its namespace's Pod Security level
//! ([`super::pod_security`]), and a pod running on a node is deleted gracefully.
//!
//! ## Graceful deletion (Kubernetes' `BeforeDelete` for pods)
//! A pod running on a node is not removed at once but marked with `deletionTimestamp` = now +
//! grace period, so its agent can stop the containers (SIGTERM, wait, SIGKILL) and then delete
//! it for good with a grace period of 0. The grace period is the request's
//! `gracePeriodSeconds`, else the pod's `terminationGracePeriodSeconds`, else 30 s.
//!
//! - Pods that never reached a node, pods that finished, and a grace period of 0 (`--force`)
//!   are deleted at once.
//! - A second delete may shorten the grace period, never lengthen it.
use serde_json::{json, Value};

use super::{set_status, Result, Strategy, View};
use crate::auth::user::UserInfo;

/// The ServiceAccount admission plugin's part: the account a pod runs as, and its token.
pub mod service_account {
    use serde_json::{json, Value};
    use skiff_store::object_key;

    use crate::registry::View;

    /// Where in-cluster clients look for the token, the CA and the namespace.
    pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
    /// What kubelet asks for; the API server extends such tokens (see
    /// `crate::auth::service_accounts`).
    pub const TOKEN_SECONDS: i64 = 3607;

    /// As Kubernetes' ServiceAccount admission: `serviceAccountName` defaults to `default`,
    /// and unless the pod or its account sets `automountServiceAccountToken: false`, a
    /// projected `kube-api-access-XXXXX` volume (token, `ca.crt`, `namespace`) is mounted
    /// read-only at [`MOUNT_PATH`] in every container that has nothing there.
    pub fn mutate(view: &dyn View, pod: &mut Value) {
        let namespace = pod
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_string();
        let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
            return;
        };
        let account = match spec.get("serviceAccountName").and_then(Value::as_str) {
            Some(name) if !name.is_empty() => name.to_string(),
            _ => match spec.get("serviceAccount").and_then(Value::as_str) {
                Some(name) if !name.is_empty() => name.to_string(),
                _ => "default".to_string(),
            },
        };
        spec.insert("serviceAccountName".into(), json!(account));
        spec.insert("serviceAccount".into(), json!(account));
        let automount = spec
            .get("automountServiceAccountToken")
            .and_then(Value::as_bool)
            .or_else(|| {
                view.get(&object_key("serviceaccounts", &namespace, &account))
                    .and_then(|sa| {
                        sa.get("automountServiceAccountToken")
                            .and_then(Value::as_bool)
                    })
            })
            .unwrap_or(true);
        if !automount {
            return;
        }
        let suffix: String = uuid::Uuid::new_v4()
            .simple()
            .to_string()
            .chars()
            .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            .take(5)
            .collect();
        let volume_name = format!("kube-api-access-{suffix}");
        let mut mounted = false;
        for field in ["initContainers", "containers"] {
            for container in spec
                .get_mut(field)
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                let mounts = container
                    .as_object_mut()
                    .map(|c| c.entry("volumeMounts").or_insert_with(|| json!([])));
                let Some(Value::Array(mounts)) = mounts else {
                    continue;
                };
                if mounts
                    .iter()
                    .any(|m| m.get("mountPath").and_then(Value::as_str) == Some(MOUNT_PATH))
                {
                    continue;
                }
                mounts
                    .push(json!({"name": volume_name, "mountPath": MOUNT_PATH, "readOnly": true}));
                mounted = true;
            }
        }
        if !mounted {
            return;
        }
        let volumes = spec.entry("volumes").or_insert_with(|| json!([]));
        if let Value::Array(volumes) = volumes {
            volumes.push(json!({
                "name": volume_name,
                "projected": {
                    "defaultMode": 420,
                    "sources": [
                        {"serviceAccountToken": {"expirationSeconds": TOKEN_SECONDS, "path": "token"}},
                        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                        {"downwardAPI": {"items": [{"path": "namespace",
                            "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
                    ],
                },
            }));
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::registry::fake::FakeView;

        #[test]
        fn pods_run_as_an_account_with_its_token_mounted() {
            let view = FakeView::default().with(
                "serviceaccounts",
                json!({"metadata": {"name": "quiet", "namespace": "shop"}, "automountServiceAccountToken": false}),
            );
            let mut pod = json!({"metadata": {"name": "p", "namespace": "shop"},
                                 "spec": {"containers": [{"name": "a"}, {"name": "b",
                                   "volumeMounts": [{"name": "own", "mountPath": MOUNT_PATH}]}]}});
            mutate(&view, &mut pod);
            assert_eq!(pod["spec"]["serviceAccountName"], "default");
            let volume = &pod["spec"]["volumes"][0];
            let name = volume["name"].as_str().expect("a volume");
            assert!(
                name.starts_with("kube-api-access-") && name.len() == 21,
                "{name}"
            );
            assert_eq!(
                volume["projected"]["sources"][0]["serviceAccountToken"]["path"],
                "token"
            );
            assert_eq!(
                pod["spec"]["containers"][0]["volumeMounts"][0]["name"],
                name
            );
            assert_eq!(
                pod["spec"]["containers"][1]["volumeMounts"]
                    .as_array()
                    .map(Vec::len),
                Some(1),
                "a container with its own mount there keeps it"
            );
            let mut quiet = json!({"metadata": {"name": "q", "namespace": "shop"},
                                   "spec": {"serviceAccountName": "quiet", "containers": [{"name": "a"}]}});
            mutate(&view, &mut quiet);
            assert!(
                quiet["spec"].get("volumes").is_none(),
                "the account opts out"
            );
        }
    }
}

/// Kubernetes' default `terminationGracePeriodSeconds`.
const DEFAULT_GRACE_SECONDS: i64 = 30;

pub struct Pods;

impl Strategy for Pods {
    fn prepare_for_create(&self, object: &mut Value) {
        set_status(object, Some(json!({"phase": "Pending"})));
    }

    fn mutate_on_create(&self, view: &dyn View, object: &mut Value) {
        service_account::mutate(view, object);
    }

    fn authorize_write(
        &self,
        view: &dyn View,
        _user: &UserInfo,
        namespace: Option<&str>,
        object: &Value,
        old: Option<&Value>,
    ) -> Result<Vec<String>> {
        super::pod_security::admit_pod(view, namespace.unwrap_or_default(), object, old)
    }

    fn before_delete(
        &self,
        current: &Value,
        options: &Value,
        now: jiff::Timestamp,
    ) -> Option<Value> {
        let on_node = current
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
        let phase = current.pointer("/status/phase").and_then(Value::as_str);
        if !on_node || matches!(phase, Some("Succeeded") | Some("Failed")) {
            return None;
        }
        let requested = options.get("gracePeriodSeconds").and_then(Value::as_i64);
        let pod_default = current
            .pointer("/spec/terminationGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(DEFAULT_GRACE_SECONDS);
        let already = current
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64);
        let grace = requested.unwrap_or(pod_default).max(0);
        if grace == 0 {
            return None;
        }
        if already.is_some_and(|a| a <= grace) {
            return Some(current.clone());
        }
        let mut marked = current.clone();
        let at = now + jiff::SignedDuration::from_secs(grace);
        marked["metadata"]["deletionTimestamp"] =
            at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string().into();
        marked["metadata"]["deletionGracePeriodSeconds"] = grace.into();
        Some(marked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(node: &str, phase: &str) -> Value {
        json!({"metadata": {"name": "p", "namespace": "default"},
               "spec": {"nodeName": node, "containers": []}, "status": {"phase": phase}})
    }

    /// What a delete does to a pod: `None` removes it now; `Some((timestamp, grace))` marks it.
    #[test]
    fn graceful_deletion_table() {
        let now: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().expect("a time");
        let marked_at = |secs: i64| {
            Some((
                (now + jiff::SignedDuration::from_secs(secs))
                    .strftime("%Y-%m-%dT%H:%M:%SZ")
                    .to_string(),
                secs,
            ))
        };
        let mut custom = pod("n1", "Running");
        custom["spec"]["terminationGracePeriodSeconds"] = json!(5);
        let mut terminating = pod("n1", "Running");
        terminating["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:10Z");
        terminating["metadata"]["deletionGracePeriodSeconds"] = json!(10);
        let already = Some(("2026-01-01T00:00:10Z".to_string(), 10));
        let cases = [
            ("never scheduled", pod("", "Pending"), json!(null), None),
            (
                "running, default grace",
                pod("n1", "Running"),
                json!(null),
                marked_at(30),
            ),
            ("the pod's own grace", custom, json!(null), marked_at(5)),
            (
                "asked grace",
                pod("n1", "Running"),
                json!({"gracePeriodSeconds": 7}),
                marked_at(7),
            ),
            (
                "--force",
                pod("n1", "Running"),
                json!({"gracePeriodSeconds": 0}),
                None,
            ),
            (
                "negative is force",
                pod("n1", "Running"),
                json!({"gracePeriodSeconds": -3}),
                None,
            ),
            ("succeeded", pod("n1", "Succeeded"), json!(null), None),
            ("failed", pod("n1", "Failed"), json!(null), None),
            (
                "longer again: kept",
                terminating.clone(),
                json!({"gracePeriodSeconds": 60}),
                already.clone(),
            ),
            (
                "same again: kept",
                terminating.clone(),
                json!(null),
                already,
            ),
            (
                "shorter again",
                terminating,
                json!({"gracePeriodSeconds": 2}),
                marked_at(2),
            ),
        ];
        for (case, current, options, expected) in cases {
            let got = Pods.before_delete(&current, &options, now).map(|m| {
                (
                    m["metadata"]["deletionTimestamp"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    m["metadata"]["deletionGracePeriodSeconds"]
                        .as_i64()
                        .unwrap_or(-1),
                )
            });
            assert_eq!(got, expected, "{case}");
        }
    }

    #[test]
    fn a_new_pod_is_pending_whatever_it_claims() {
        let mut p = pod("", "Running");
        p["status"]["podIP"] = json!("10.42.0.9");
        Pods.prepare_for_create(&mut p);
        assert_eq!(p["status"], json!({"phase": "Pending"}));
    }
}
