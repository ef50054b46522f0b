//! The Role/ClusterRole and RoleBinding/ClusterRoleBinding strategies: a write may not grant
//! what its writer does not hold (see [`crate::auth::escalation`]).
use serde_json::Value;

use super::{Result, Strategy, View};
use crate::auth::escalation;
use crate::auth::user::UserInfo;

/// One escalation check, for the namespaced resource and its cluster-wide twin.
pub struct NoEscalation {
    namespaced: &'static str,
    cluster: &'static str,
    check: fn(&dyn View, &UserInfo, &str, &str, &Value) -> Result<()>,
}

/// Roles and ClusterRoles hold only rules their writer holds.
pub static ROLES: NoEscalation = NoEscalation {
    namespaced: "roles",
    cluster: "clusterroles",
    check: escalation::check_role,
};

/// Bindings grant only roles whose rules their writer holds.
pub static BINDINGS: NoEscalation = NoEscalation {
    namespaced: "rolebindings",
    cluster: "clusterrolebindings",
    check: escalation::check_binding,
};

impl Strategy for NoEscalation {
    fn authorize_write(
        &self,
        view: &dyn View,
        user: &UserInfo,
        namespace: Option<&str>,
        object: &Value,
        _old: Option<&Value>,
    ) -> Result<Vec<String>> {
        let (resource, namespace) = match namespace {
            Some(ns) => (self.namespaced, ns),
            None => (self.cluster, ""),
        };
        (self.check)(view, user, resource, namespace, object)?;
        Ok(Vec::new())
    }
}
