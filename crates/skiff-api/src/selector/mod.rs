//! Label and field selectors: which objects a list, a watch, a Service or a Deployment means.
//!
//! Label selectors come as strings (`?labelSelector=app=web,tier in (a,b)`, `kubectl -l`) or as
//! `metav1.LabelSelector` objects (`spec.selector` of Deployments and ReplicaSets); both become
//! one [`LabelSelector`]: a list of requirements that must all hold. The string grammar and
//! its error messages follow `apimachinery/pkg/labels/selector.go`.
//!
//! Field selectors (`?fieldSelector=spec.nodeName=node-1`) only know `=`, `==` and `!=`, and each
//! resource allows only a few fields ([`ResourceInfo::field_selectors`](crate::resources::ResourceInfo::field_selectors)).
//!
//! ## Layout
//! - `label`: label selectors, from strings and from `metav1.LabelSelector`.
//! - `field`: field selectors.

mod field;
mod label;

use std::collections::BTreeMap;

use serde_json::Value;

pub use field::{FieldRequirement, FieldSelector};
pub use label::{LabelSelector, Operator, Requirement};

/// The labels of an object in JSON form (`metadata.labels`); none when it has none.
pub fn labels_of(object: &Value) -> BTreeMap<String, String> {
    object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn labels_of_reads_metadata_labels() {
        assert_eq!(
            labels_of(&json!({"metadata": {"labels": {"app": "web"}}})),
            [("app".to_string(), "web".to_string())].into()
        );
        assert!(labels_of(&json!({"metadata": {}})).is_empty());
    }
}
