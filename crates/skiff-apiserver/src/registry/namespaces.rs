//! The Namespace strategy: a new namespace is `Active`, its Pod Security labels name real
//! levels, the system namespaces stay, and deleting a namespace deletes everything inside it
//! in the same atomic write.
//!
//! Kubernetes deletes a namespace's contents asynchronously (the namespace controller, behind
//! the `kubernetes` finalizer, with the namespace `Terminating` meanwhile). skiff has few enough
//! objects per namespace to delete them all in one Raft entry instead: no one ever sees a
//! namespace half emptied. If an object inside is deleted meanwhile, the atomic write fails and
//! the delete lists the contents again.
use serde_json::{json, Value};
use skiff_api::resources::RESOURCES;
use skiff_api::status::ApiError;
use skiff_store::{key_prefix, object_key, Op};

use super::{set_status, Result, Strategy, View};

/// Namespaces that always exist and may not be deleted.
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

pub struct Namespaces;

impl Strategy for Namespaces {
    fn prepare_for_create(&self, object: &mut Value) {
        set_status(object, Some(json!({"phase": "Active"})));
    }

    /// Pod Security labels must name a level; raising `enforce` warns of pods it would refuse.
    fn authorize_write(
        &self,
        view: &dyn View,
        _user: &crate::auth::user::UserInfo,
        _namespace: Option<&str>,
        object: &Value,
        old: Option<&Value>,
    ) -> Result<Vec<String>> {
        super::pod_security::admit_namespace(view, object, old)
    }

    fn validate_delete(&self, name: &str) -> Result<()> {
        if SYSTEM_NAMESPACES.contains(&name) {
            return Err(ApiError::Forbidden(format!(
                "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
            )));
        }
        Ok(())
    }

    /// A delete for every object of every namespaced resource inside namespace `name`.
    fn delete_along(&self, view: &dyn View, name: &str) -> Vec<Op> {
        RESOURCES
            .iter()
            .filter(|r| r.namespaced)
            .flat_map(|r| {
                let resource = r.qualified_resource();
                view.list(&key_prefix(&resource, Some(name)))
                    .into_iter()
                    .filter_map(move |o| {
                        let object = o.pointer("/metadata/name")?.as_str()?;
                        Some(Op::Delete {
                            key: object_key(&resource, name, object),
                            expected_uid: None,
                            expected_revision: None,
                        })
                    })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::fake::FakeView;

    fn object(ns: &str, name: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": ns}})
    }

    #[test]
    fn deleting_a_namespace_takes_its_contents_and_nothing_else() {
        let view = FakeView::default()
            .with("namespaces", json!({"metadata": {"name": "a"}}))
            .with("pods", object("a", "web-1"))
            .with("pods", object("ab", "other-namespace-same-prefix"))
            .with("configmaps", object("a", "settings"))
            .with("deployments.apps", object("a", "web"))
            .with("pods", object("b", "elsewhere"))
            .with("nodes", json!({"metadata": {"name": "a"}}));
        let mut keys: Vec<String> = Namespaces
            .delete_along(&view, "a")
            .iter()
            .map(|op| op.key().to_string())
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "configmaps/a/settings",
                "deployments.apps/a/web",
                "pods/a/web-1"
            ]
        );
        assert!(Namespaces.delete_along(&view, "empty").is_empty());
    }

    #[test]
    fn system_namespaces_may_not_be_deleted() {
        for (name, allowed) in [
            ("default", false),
            ("kube-system", false),
            ("kube-public", false),
            ("kube-node-lease", false),
            ("team-a", true),
        ] {
            let result = Namespaces.validate_delete(name);
            assert_eq!(result.is_ok(), allowed, "{name}");
            if let Err(e) = result {
                assert!(e.to_string().contains("may not be deleted"), "{e}");
            }
        }
    }
}
