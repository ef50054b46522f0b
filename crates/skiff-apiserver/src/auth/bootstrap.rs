//! Kubernetes' default roles and bindings, made by the leader at start (as kube-apiserver's
//! `rbac/bootstrap-roles` post-start hook): `cluster-admin` for `system:masters`, the
//! aggregated `admin`, `edit` and `view`, discovery and `can-i` for every authenticated user,
//! and the roles of the system components.
//!
//! The objects are in `bootstrap-policy.yaml` beside this file. Each is created when missing.
//! One that exists and carries `rbac.authorization.kubernetes.io/autoupdate: "true"` gets back
//! what it lacks of the default (rules it lost, subjects removed from a binding), keeping what
//! an operator added; set the annotation to `"false"` to own the object outright.
use serde_json::Value;
use skiff_api::admission::{self, FieldValidation};
use skiff_api::resources::{self, ResourceInfo};
use skiff_api::status::ApiError;
use skiff_store::{object_key, Op, OpError};

use crate::app::App;
use crate::respond;

const POLICY: &str = include_str!("bootstrap-policy.yaml");
const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";

/// The default policy objects, admitted as if a client had sent them.
pub fn default_policy() -> Result<Vec<(&'static ResourceInfo, Value)>, ApiError> {
    let mut objects = Vec::new();
    for document in POLICY.split("\n---\n") {
        let value = skiff_api::decode::decode_body(document.as_bytes(), Some("application/yaml"))?;
        if !value.is_object() {
            continue;
        }
        let api_version = value
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
        let info = resources::by_kind(api_version, kind).ok_or_else(|| {
            ApiError::Internal(format!(
                "bootstrap policy: {api_version} {kind} is not served"
            ))
        })?;
        let admitted = admission::admit(info, value, FieldValidation::Strict)?;
        objects.push((info, admitted.object));
    }
    Ok(objects)
}

/// Creates what is missing of the default policy and restores what auto-updated objects lost.
pub async fn ensure_default_policy(app: &App) -> Result<(), ApiError> {
    for (info, wanted) in default_policy()? {
        let name = wanted
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let key = object_key(&info.qualified_resource(), "", &name);
        let op = match app.store.get(&key) {
            None => {
                let mut object = wanted;
                object["metadata"]["uid"] = Value::from(uuid::Uuid::new_v4().to_string());
                object["metadata"]["creationTimestamp"] = Value::from(crate::objects::now());
                Op::Create { key, object }
            }
            Some(current) => match reconciled(&current, &wanted) {
                Some(object) => Op::Update {
                    key,
                    object,
                    expected_revision: skiff_store::revision_of(&current),
                },
                None => continue,
            },
        };
        let result = app
            .store
            .propose_one(op)
            .await
            .map_err(respond::store_error)?;
        match result {
            // Another member got there first; the next start looks again.
            Ok(_) | Err(OpError::AlreadyExists { .. }) | Err(OpError::Conflict { .. }) => {}
            Err(e) => return Err(ApiError::Internal(e.to_string())),
        }
    }
    Ok(())
}

/// `current` with what it lacks of `wanted`, if it auto-updates and lacks something.
fn reconciled(current: &Value, wanted: &Value) -> Option<Value> {
    let pointer = format!("/metadata/annotations/{}", AUTOUPDATE.replace('/', "~1"));
    if current.pointer(&pointer).and_then(Value::as_str) != Some("true") {
        return None;
    }
    let mut object = current.clone();
    let mut changed = false;
    // Aggregated roles' rules belong to the aggregation controller.
    let lists: &[&str] = if wanted.get("aggregationRule").is_some() {
        &["subjects"]
    } else {
        &["rules", "subjects"]
    };
    for field in lists {
        let Some(want) = wanted.get(*field).and_then(Value::as_array) else {
            continue;
        };
        let have = object
            .get(*field)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut merged = have.clone();
        for item in want {
            if !merged.contains(item) {
                merged.push(item.clone());
            }
        }
        if merged != have {
            object[*field] = Value::from(merged);
            changed = true;
        }
    }
    if let Some(rule) = wanted.get("aggregationRule") {
        if object.get("aggregationRule") != Some(rule) {
            object["aggregationRule"] = rule.clone();
            changed = true;
        }
    }
    changed.then_some(object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_default_policy_is_admissible_and_complete() {
        let policy = default_policy().expect("the embedded policy admits");
        let names: Vec<(&str, &str)> = policy
            .iter()
            .map(|(info, o)| {
                (
                    info.kind,
                    o.pointer("/metadata/name")
                        .and_then(Value::as_str)
                        .unwrap_or(""),
                )
            })
            .collect();
        for wanted in [
            ("ClusterRole", "cluster-admin"),
            ("ClusterRole", "admin"),
            ("ClusterRole", "edit"),
            ("ClusterRole", "view"),
            ("ClusterRole", "system:aggregate-to-view"),
            ("ClusterRole", "system:basic-user"),
            ("ClusterRole", "system:discovery"),
            ("ClusterRoleBinding", "cluster-admin"),
            ("ClusterRoleBinding", "system:basic-user"),
        ] {
            assert!(names.contains(&wanted), "{wanted:?} in the default policy");
        }
        let admin_binding = policy
            .iter()
            .find(|(info, o)| {
                info.kind == "ClusterRoleBinding" && o["metadata"]["name"] == "cluster-admin"
            })
            .expect("cluster-admin binding");
        assert_eq!(admin_binding.1["subjects"][0]["name"], "system:masters");
    }

    #[test]
    fn auto_updated_objects_get_back_what_they_lost_and_keep_additions() {
        let wanted =
            json!({"metadata": {"name": "b"}, "subjects": [{"kind": "Group", "name": "g"}]});
        let mut current = json!({
            "metadata": {"name": "b", "annotations": {AUTOUPDATE: "true"}},
            "subjects": [{"kind": "User", "name": "added"}],
        });
        let fixed = reconciled(&current, &wanted).expect("lost a subject");
        assert_eq!(fixed["subjects"].as_array().map(Vec::len), Some(2));
        assert_eq!(reconciled(&fixed, &wanted), None, "nothing more to do");
        current["metadata"]["annotations"][AUTOUPDATE] = json!("false");
        assert_eq!(reconciled(&current, &wanted), None, "owned by the operator");
    }
}
