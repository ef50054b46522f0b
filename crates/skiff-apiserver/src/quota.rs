//! ResourceQuota admission and upkeep: how much a namespace may hold, as Kubernetes'
//! `ResourceQuota` admission plugin and quota controller.
//!
//! ```text
//! create / update ─► charge: for each quota of the namespace that tracks what the write adds
//!                     used (counted now, from the store) + what it adds  >  hard ?  ─► 403
//!                     else the quota with its new status.used, written in the same atomic
//!                     proposal as the object, expecting the quota's resourceVersion
//! ```
//!
//! Usage is counted from the objects themselves ([`skiff_api::quota`]) each time, not added to
//! the last `status.used`, so it can never drift. Two writes charging one quota at once both
//! expect its resourceVersion: one wins, the other's proposal aborts and the verb counts again
//! (it may then be refused). Writes that take nothing a quota tracks (a pod's status, a
//! ConfigMap under a pods-only quota) do not touch the quota. Deletes free what they held at
//! once; the leader writes the lower figures into `status.used` within [`REFRESH`]
//! ([`refresh`]), as Kubernetes' quota controller does.
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{json, Map, Value};
use skiff_api::quota;
use skiff_api::resources::ResourceInfo;
use skiff_api::status::ApiError;
use skiff_store::{key_prefix, object_key, revision_of, Op};

use crate::app::App;
use crate::registry::View;

const QUOTAS: &str = "resourcequotas";

/// How often the leader writes freed usage into quotas' status.
pub const REFRESH: Duration = Duration::from_secs(5);

/// A quota's limits by quota resource (the amounts that do not parse are left out: admission
/// refused them).
fn hard_of(q: &Value) -> BTreeMap<String, i64> {
    q.pointer("/spec/hard")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(name, v)| Some((name.clone(), quota::parse(name, v.as_str()?).ok()?)))
        .collect()
}

/// What the objects of `namespace` that quota `spec` covers use of each resource in `tracked`
/// (every tracked resource present, at 0 when nothing uses it).
fn namespace_usage(
    view: &dyn View,
    namespace: &str,
    spec: &Value,
    tracked: &BTreeSet<String>,
) -> BTreeMap<String, i64> {
    let mut used: BTreeMap<String, i64> = tracked.iter().map(|r| (r.clone(), 0)).collect();
    let resources: BTreeSet<&str> = tracked.iter().map(|r| quota::counted_resource(r)).collect();
    for resource in resources {
        for object in view.list(&key_prefix(resource, Some(namespace))) {
            if !quota::covers(spec, resource, &object) {
                continue;
            }
            for (name, amount) in quota::usage(resource, &object) {
                if let Some(sum) = used.get_mut(&name) {
                    *sum = sum.saturating_add(amount);
                }
            }
        }
    }
    used
}

/// `status` as the quota controller writes it: `hard` as the spec says, `used` counted.
fn status_of(hard: &BTreeMap<String, i64>, used: &BTreeMap<String, i64>) -> Value {
    let written = |amounts: &BTreeMap<String, i64>| -> Map<String, Value> {
        amounts
            .iter()
            .map(|(r, a)| (r.clone(), Value::from(quota::format(r, *a))))
            .collect()
    };
    json!({"hard": written(hard), "used": written(used)})
}

/// The status a quota should have now, from the objects in `view`.
pub fn current_status(view: &dyn View, q: &Value) -> Value {
    let namespace = q
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let hard = hard_of(q);
    let tracked = hard.keys().cloned().collect();
    let spec = q.get("spec").cloned().unwrap_or(Value::Null);
    status_of(&hard, &namespace_usage(view, namespace, &spec, &tracked))
}

/// Admission for a write of `object` (of `info`'s resource, in `namespace`, replacing `old`):
/// refused with Kubernetes' 403 when it would take a quota of the namespace past its limit,
/// else the quota updates to write in the same proposal as the object.
pub fn charge(
    view: &dyn View,
    info: &ResourceInfo,
    namespace: Option<&str>,
    object: &Value,
    old: Option<&Value>,
) -> Result<Vec<Op>, ApiError> {
    let Some(namespace) = namespace else {
        return Ok(Vec::new());
    };
    let quotas = view.list(&key_prefix(QUOTAS, Some(namespace)));
    if quotas.is_empty() {
        return Ok(Vec::new());
    }
    let resource = info.qualified_resource();
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let forbidden =
        |why: String| ApiError::Forbidden(format!("{resource} {name:?} is forbidden: {why}"));
    let adds = quota::usage(&resource, object);
    let had = old.map(|o| quota::usage(&resource, o)).unwrap_or_default();
    let mut ops = Vec::new();
    for q in quotas {
        let spec = q.get("spec").cloned().unwrap_or(Value::Null);
        if !quota::covers(&spec, &resource, object) {
            continue;
        }
        let quota_name = q
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let hard = hard_of(&q);
        let tracked: BTreeSet<String> = hard.keys().cloned().collect();
        if resource == "pods" && old.is_none() {
            if let Some(missing) = quota::missing_declarations(object, &tracked) {
                return Err(forbidden(format!("failed quota: {quota_name}: {missing}")));
            }
        }
        // What this write adds of what the quota tracks (an update only what grew).
        let requested: BTreeMap<String, i64> = adds
            .iter()
            .filter(|(r, _)| tracked.contains(*r))
            .map(|(r, a)| (r.clone(), a - had.get(r).copied().unwrap_or(0)))
            .filter(|(_, delta)| *delta > 0)
            .collect();
        if requested.is_empty() {
            continue;
        }
        let mut used = namespace_usage(view, namespace, &spec, &tracked);
        let over: Vec<&String> = requested
            .iter()
            .filter(|(r, delta)| used[*r].saturating_add(**delta) > hard[*r])
            .map(|(r, _)| r)
            .collect();
        if !over.is_empty() {
            let pick = |amounts: &BTreeMap<String, i64>| -> BTreeMap<String, i64> {
                over.iter().map(|r| ((*r).clone(), amounts[*r])).collect()
            };
            return Err(forbidden(format!(
                "exceeded quota: {quota_name}, requested: {}, used: {}, limited: {}",
                quota::pretty(&pick(&requested)),
                quota::pretty(&pick(&used)),
                quota::pretty(&pick(&hard)),
            )));
        }
        for (r, delta) in &requested {
            if let Some(sum) = used.get_mut(r) {
                *sum = sum.saturating_add(*delta);
            }
        }
        let mut updated = (*q).clone();
        updated["status"] = status_of(&hard, &used);
        ops.push(Op::Update {
            key: object_key(QUOTAS, namespace, quota_name),
            object: updated,
            expected_revision: revision_of(&q),
        });
    }
    Ok(ops)
}

/// The leader's pass over every quota: `status` brought up to date where it is not (usage
/// freed by deletes and finished pods, a changed `spec.hard`). A quota changed meanwhile is
/// left for the next pass. Returns how many quotas were written.
pub async fn refresh(app: &App) -> usize {
    let mut written = 0;
    for q in app.store.list(&key_prefix(QUOTAS, None)).0 {
        let status = current_status(app, &q);
        if q.get("status") == Some(&status) {
            continue;
        }
        let namespace = q
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("");
        let name = q
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let mut updated = (*q).clone();
        updated["status"] = status;
        let op = Op::Update {
            key: object_key(QUOTAS, namespace, name),
            object: updated,
            expected_revision: revision_of(&q),
        };
        match app.store.propose_one(op).await {
            Ok(Ok(_)) => written += 1,
            Ok(Err(e)) => tracing::debug!(quota = name, error = %e, "quota changed meanwhile"),
            Err(e) => {
                tracing::debug!(error = %e, "quota status not written");
                break;
            }
        }
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::fake::FakeView;
    use skiff_api::resources::find;

    fn quota(hard: Value) -> Value {
        json!({"metadata": {"name": "q", "namespace": "ns", "resourceVersion": "7"}, "spec": {"hard": hard}})
    }

    fn pod(name: &str, cpu: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "ns"}, "spec": {"containers": [
            {"name": "c", "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}, "limits": {"cpu": cpu, "memory": "64Mi"}}}
        ]}})
    }

    #[test]
    fn a_pod_within_the_quota_updates_its_status_in_the_same_write() {
        let view = FakeView::default()
            .with(
                "resourcequotas",
                quota(json!({"pods": "2", "requests.cpu": "1"})),
            )
            .with("pods", pod("a", "500m"));
        let info = find("", "v1", "pods").expect("pods");
        let ops = charge(&view, info, Some("ns"), &pod("b", "500m"), None).expect("fits");
        let [Op::Update {
            key,
            object,
            expected_revision,
        }] = ops.as_slice()
        else {
            panic!("one quota update: {ops:?}");
        };
        assert_eq!(key, "resourcequotas/ns/q");
        assert_eq!(*expected_revision, Some(7));
        assert_eq!(
            object["status"]["used"],
            json!({"pods": "2", "requests.cpu": "1"})
        );
        assert_eq!(
            object["status"]["hard"],
            json!({"pods": "2", "requests.cpu": "1"})
        );
    }

    #[test]
    fn a_pod_past_the_quota_is_refused_with_kubernetes_words() {
        let view = FakeView::default()
            .with(
                "resourcequotas",
                quota(json!({"pods": "5", "requests.cpu": "1", "limits.memory": "1Gi"})),
            )
            .with("pods", pod("a", "800m"));
        let info = find("", "v1", "pods").expect("pods");
        let err = charge(&view, info, Some("ns"), &pod("b", "300m"), None).expect_err("over");
        assert_eq!(
            err.to_string(),
            "pods \"b\" is forbidden: exceeded quota: q, requested: requests.cpu=300m, used: requests.cpu=800m, limited: requests.cpu=1"
        );
        assert_eq!(err.code(), 403);
        let bare = json!({"metadata": {"name": "bare"}, "spec": {"containers": [{"name": "c"}]}});
        let err = charge(&view, info, Some("ns"), &bare, None).expect_err("undeclared");
        assert_eq!(
            err.to_string(),
            "pods \"bare\" is forbidden: failed quota: q: must specify limits.memory for: c; requests.cpu for: c"
        );
    }

    #[test]
    fn writes_that_take_nothing_tracked_leave_the_quota_alone() {
        let view = FakeView::default().with("resourcequotas", quota(json!({"pods": "1"})));
        let cm = find("", "v1", "configmaps").expect("configmaps");
        let object = json!({"metadata": {"name": "c", "namespace": "ns"}});
        assert!(charge(&view, cm, Some("ns"), &object, None)
            .expect("ok")
            .is_empty());
        // Another namespace has no quota.
        let pods = find("", "v1", "pods").expect("pods");
        assert!(charge(&view, pods, Some("other"), &pod("x", "1"), None)
            .expect("ok")
            .is_empty());
        // An update that adds nothing (a relabelled pod) is not charged, even at the limit.
        let view = view.with("pods", pod("a", "1"));
        assert!(charge(
            &view,
            pods,
            Some("ns"),
            &pod("a", "1"),
            Some(&pod("a", "1"))
        )
        .expect("ok")
        .is_empty());
    }

    #[test]
    fn counts_and_node_ports() {
        let view = FakeView::default()
            .with(
                "resourcequotas",
                quota(json!({"count/deployments.apps": "1", "services.nodeports": "1"})),
            )
            .with(
                "deployments.apps",
                json!({"metadata": {"name": "d1", "namespace": "ns"}}),
            );
        let deployments = find("apps", "v1", "deployments").expect("deployments");
        let err = charge(
            &view,
            deployments,
            Some("ns"),
            &json!({"metadata": {"name": "d2"}}),
            None,
        )
        .expect_err("one only");
        assert!(err.to_string().contains("requested: count/deployments.apps=1, used: count/deployments.apps=1, limited: count/deployments.apps=1"), "{err}");
        let services = find("", "v1", "services").expect("services");
        let cluster_ip =
            json!({"metadata": {"name": "s"}, "spec": {"type": "ClusterIP", "ports": [{}]}});
        let node_port =
            json!({"metadata": {"name": "s"}, "spec": {"type": "NodePort", "ports": [{}, {}]}});
        assert!(charge(&view, services, Some("ns"), &cluster_ip, None)
            .expect("fits")
            .is_empty());
        let err =
            charge(&view, services, Some("ns"), &node_port, Some(&cluster_ip)).expect_err("2 > 1");
        assert!(
            err.to_string()
                .contains("exceeded quota: q, requested: services.nodeports=2"),
            "{err}"
        );
    }

    #[test]
    fn status_counts_what_is_there() {
        let mut done = pod("done", "4");
        done["status"] = json!({"phase": "Succeeded"});
        let view = FakeView::default()
            .with("pods", pod("a", "250m"))
            .with("pods", done);
        let q = quota(
            json!({"pods": "10", "requests.cpu": "2", "limits.memory": "1Gi", "secrets": "3"}),
        );
        assert_eq!(
            current_status(&view, &q),
            json!({
                "hard": {"pods": "10", "requests.cpu": "2", "limits.memory": "1Gi", "secrets": "3"},
                "used": {"pods": "1", "requests.cpu": "250m", "limits.memory": "64Mi", "secrets": "0"},
            })
        );
    }
}
