//! The `scale` subresource of Deployments and ReplicaSets (`kubectl scale`).
//!
//! A `Scale` (autoscaling/v1) is a view of the parent: `spec.replicas` and, in status, the
//! current replica count and the label selector as a string. GET builds the view; PUT and
//! PATCH change `spec.replicas` of the parent with a compare-and-swap on its resourceVersion
//! (retried when another writer got there first, unless the client named a resourceVersion).
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};
use skiff_api::ApiError;
use skiff_store::{Op, OpError};

use crate::app::App;
use crate::respond;
use crate::target::Target;

type Result<T, E = ApiError> = std::result::Result<T, E>;

/// The label selector of a workload as `kubectl` prints it (`app=web,tier in (a,b)`).
fn selector_string(object: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(labels) = object
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
    {
        for (k, v) in labels {
            parts.push(format!("{k}={}", v.as_str().unwrap_or("")));
        }
    }
    for e in object
        .pointer("/spec/selector/matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = e["key"].as_str().unwrap_or("");
        let values: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        parts.push(match e["operator"].as_str().unwrap_or("") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            _ => format!("!{key}"),
        });
    }
    parts.join(",")
}

/// The Scale view of a Deployment or ReplicaSet.
pub fn scale_of(object: &Value) -> Value {
    let meta = &object["metadata"];
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"], "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": object.pointer("/spec/replicas").cloned().unwrap_or(json!(1))},
        "status": {
            "replicas": object.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector_string(object),
        },
    })
}

async fn current(app: &App, target: &Target) -> Result<Arc<Value>> {
    let key = target.key();
    if let Some(object) = app.store.get(&key) {
        return Ok(object);
    }
    app.store.linearize().await.map_err(respond::store_error)?;
    app.store.get(&key).ok_or_else(|| ApiError::NotFound {
        resource: target.info.qualified_resource(),
        name: target.name.clone().unwrap_or_default(),
    })
}

/// GET, PUT or PATCH of `.../scale`.
pub async fn serve(
    app: &Arc<App>,
    target: &Target,
    method: &axum::http::Method,
    query: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Response> {
    let name = target.name.clone().unwrap_or_default();
    let manager = crate::query::Params::parse(query)?.manager();
    if *method == axum::http::Method::GET {
        return Ok(respond::json(
            StatusCode::OK,
            &scale_of(&*current(app, target).await?),
        ));
    }
    if *method != axum::http::Method::PUT && *method != axum::http::Method::PATCH {
        return Err(ApiError::MethodNotAllowed(format!(
            "the server does not allow this method on the requested resource: {method}"
        )));
    }
    for _attempt in 0..5 {
        let object = current(app, target).await?;
        let view = scale_of(&object);
        let wanted = if *method == axum::http::Method::PUT {
            skiff_api::decode::decode_object(body, content_type)?
        } else {
            let content_type = content_type
                .map(|ct| ct.split(';').next().unwrap_or(ct).trim().to_string())
                .unwrap_or_else(|| "application/merge-patch+json".into());
            skiff_api::patch::apply_patch(&view, body, &content_type)?
        };
        let replicas = wanted
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .ok_or_else(|| ApiError::BadRequest("spec.replicas: Required value".into()))?;
        if replicas < 0 {
            return Err(ApiError::Invalid {
                kind: "Scale".into(),
                name: name.clone(),
                causes: vec![skiff_api::Cause {
                    field: "spec.replicas".into(),
                    reason: "FieldValueInvalid".into(),
                    message: format!(
                        "Invalid value: {replicas}: must be greater than or equal to 0"
                    ),
                }],
            });
        }
        // A resourceVersion the client sent is its precondition; otherwise ours, retried.
        let asked = wanted
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty() && *method == axum::http::Method::PUT)
            .map(str::to_string);
        let revision = asked
            .clone()
            .or_else(|| {
                object
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .and_then(|v| v.parse::<u64>().ok());
        let mut updated = (*object).clone();
        updated["spec"]["replicas"] = replicas.into();
        // `kubectl scale` owns spec.replicas now (a later server-side apply conflicts on it).
        skiff_api::patch::apply::record_update(
            Some(&object),
            &mut updated,
            &manager,
            &crate::objects::now(),
        );
        let op = Op::Update {
            key: target.key(),
            object: updated,
            expected_revision: revision,
        };
        match app
            .store
            .propose_one(op)
            .await
            .map_err(respond::store_error)?
        {
            Ok(stored) => return Ok(respond::json(StatusCode::OK, &scale_of(&stored))),
            Err(OpError::Conflict { .. }) if asked.is_none() => continue,
            Err(e) => return Err(respond::op_error(target.info, &name, e)),
        }
    }
    Err(ApiError::Conflict {
        resource: target.info.qualified_resource(),
        name,
        message: ApiError::CONFLICT_MODIFIED.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_views_carry_replicas_and_the_selector() {
        let d = json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u", "resourceVersion": "7"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]}},
            "status": {"replicas": 2}
        });
        let s = scale_of(&d);
        assert_eq!(s["spec"]["replicas"], 3);
        assert_eq!(s["status"]["replicas"], 2);
        assert_eq!(s["status"]["selector"], "app=web,tier in (a,b)");
        assert_eq!(s["metadata"]["resourceVersion"], "7");
    }
}
