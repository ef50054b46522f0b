//! `POST /api/v1/namespaces/{ns}/pods/{name}/binding`: how a scheduler assigns a pod to a node.
//!
//! The body is a `Binding` (`target: {kind: Node, name}`). In one compare-and-swap write the
//! pod gets `spec.nodeName`, the Binding's annotations, and the condition `PodScheduled=True`.
//! A pod that already has a node answers 409, as in Kubernetes — two schedulers (or a leader
//! change in the middle of a batch) can never bind one pod twice.
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

/// The pod with the binding applied, or why it cannot be.
pub fn bind(pod: &Value, binding: &Value, now: &str) -> Result<Value> {
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::BadRequest("target.name: Required value".into()))?;
    if let Some(kind) = binding.pointer("/target/kind").and_then(Value::as_str) {
        if !kind.is_empty() && kind != "Node" {
            return Err(ApiError::BadRequest(format!(
                "target.kind: Unsupported value: \"{kind}\": supported values: \"Node\""
            )));
        }
    }
    if let Some(current) = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    {
        return Err(ApiError::Conflict {
            resource: "pods".into(),
            name: name.into(),
            message: format!("pod {name} is already assigned to node \"{current}\""),
        });
    }
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        return Err(ApiError::Conflict {
            resource: "pods".into(),
            name: name.into(),
            message: format!("pod {name} is being deleted, cannot be assigned to a host"),
        });
    }
    let mut bound = pod.clone();
    bound["spec"]["nodeName"] = node.into();
    if let Some(annotations) = binding
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
    {
        let meta = &mut bound["metadata"];
        if !meta["annotations"].is_object() {
            meta["annotations"] = json!({});
        }
        for (k, v) in annotations {
            meta["annotations"][k] = v.clone();
        }
    }
    let mut conditions: Vec<Value> = bound
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    conditions.retain(|c| c["type"] != "PodScheduled");
    conditions.push(json!({"type": "PodScheduled", "status": "True", "lastTransitionTime": now}));
    if !bound["status"].is_object() {
        bound["status"] = json!({});
    }
    bound["status"]["conditions"] = Value::from(conditions);
    Ok(bound)
}

pub async fn serve(app: &Arc<App>, target: &Target, body: &[u8]) -> Result<Response> {
    let binding = skiff_api::decode::decode_object(body, None)?;
    let name = target.name.clone().unwrap_or_default();
    let key = target.key();
    for _attempt in 0..5 {
        let pod = match app.store.get(&key) {
            Some(pod) => pod,
            None => {
                app.store.linearize().await.map_err(respond::store_error)?;
                app.store.get(&key).ok_or_else(|| ApiError::NotFound {
                    resource: "pods".into(),
                    name: name.clone(),
                })?
            }
        };
        let bound = bind(&pod, &binding, &crate::objects::now())?;
        let revision = pod
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .and_then(|v| v.parse::<u64>().ok());
        let op = Op::Update {
            key: key.clone(),
            object: bound,
            expected_revision: revision,
        };
        match app
            .store
            .propose_one(op)
            .await
            .map_err(respond::store_error)?
        {
            Ok(_) => {
                return Ok(respond::json(
                    StatusCode::CREATED,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
                ))
            }
            // The pod changed (a status write): read it again and retry.
            Err(OpError::Conflict { .. }) => continue,
            Err(e) => return Err(respond::op_error(target.info, &name, e)),
        }
    }
    Err(ApiError::Conflict {
        resource: "pods".into(),
        name,
        message: ApiError::CONFLICT_MODIFIED.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_sets_the_node_once() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": []}});
        let binding = json!({"metadata": {"name": "p", "annotations": {"a": "b"}}, "target": {"kind": "Node", "name": "n1"}});
        let bound = bind(&pod, &binding, "2026-01-01T00:00:00Z").expect("binds");
        assert_eq!(bound["spec"]["nodeName"], "n1");
        assert_eq!(bound["metadata"]["annotations"]["a"], "b");
        assert_eq!(bound["status"]["conditions"][0]["type"], "PodScheduled");
        let again = bind(&bound, &binding, "x").expect_err("already bound");
        assert!(
            again
                .to_string()
                .contains("already assigned to node \"n1\""),
            "{again}"
        );
        let bad =
            bind(&pod, &json!({"target": {"kind": "Pod", "name": "x"}}), "x").expect_err("kind");
        assert!(bad.to_string().contains("target.kind"), "{bad}");
    }
}
