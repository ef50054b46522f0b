//! The Node strategy: a node writes only its own Node object (Kubernetes' NodeRestriction
//! admission). The Node authorizer ([`crate::auth::node`]) cannot see the name of a Node
//! being created, which is in the body; this check can.
use serde_json::Value;
use skiff_api::status::ApiError;

use super::{Result, Strategy, View};
use crate::auth::user::UserInfo;

pub struct Nodes;

impl Strategy for Nodes {
    fn authorize_write(
        &self,
        _view: &dyn View,
        user: &UserInfo,
        _namespace: Option<&str>,
        object: &Value,
        _old: Option<&Value>,
    ) -> Result<Vec<String>> {
        let Some(node) = user.node_name() else {
            return Ok(Vec::new());
        };
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        if name == node {
            Ok(Vec::new())
        } else {
            Err(ApiError::Forbidden(format!(
                "nodes {name:?} is forbidden: node {node:?} is not allowed to modify node {name:?}"
            )))
        }
    }
}
