//! The Pod strategy: a new pod is `Pending`, and a pod running on a node is deleted gracefully.
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

use super::{set_status, Strategy};

/// Kubernetes' default `terminationGracePeriodSeconds`.
const DEFAULT_GRACE_SECONDS: i64 = 30;

pub struct Pods;

impl Strategy for Pods {
    fn prepare_for_create(&self, object: &mut Value) {
        set_status(object, Some(json!({"phase": "Pending"})));
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
