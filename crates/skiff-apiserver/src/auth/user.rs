//! Who a request is from: the user an authenticated credential names, with its groups.

/// Kubernetes' superuser group: RBAC's default `cluster-admin` binding names it.
pub const MASTERS: &str = "system:masters";
/// Every authenticated user is in this group (the default `system:basic-user` and
/// `system:discovery` bindings name it).
pub const AUTHENTICATED: &str = "system:authenticated";
/// The group of nodes; a node's user name is `system:node:NAME`.
pub const NODES: &str = "system:nodes";
/// The prefix of a node's user name.
pub const NODE_PREFIX: &str = "system:node:";
/// The prefix of a service account's user name: `system:serviceaccount:NAMESPACE:NAME`.
pub const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";
/// The group of every service account.
pub const SERVICE_ACCOUNTS: &str = "system:serviceaccounts";

/// An authenticated user, as Kubernetes' `user.Info`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    /// Extra attributes (`authentication.kubernetes.io/credential-id`, ...), by key.
    pub extra: std::collections::BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// A user in `groups`, and in [`AUTHENTICATED`] as every authenticated user is.
    pub fn new(name: &str, groups: &[&str]) -> UserInfo {
        let mut groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        if !groups.iter().any(|g| g == AUTHENTICATED) {
            groups.push(AUTHENTICATED.to_string());
        }
        UserInfo {
            name: name.to_string(),
            groups,
            ..UserInfo::default()
        }
    }

    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// The node this user is, for a `system:node:NAME` user in [`NODES`].
    pub fn node_name(&self) -> Option<&str> {
        let name = self.name.strip_prefix(NODE_PREFIX)?;
        (self.in_group(NODES) && !name.is_empty()).then_some(name)
    }

    /// `(namespace, name)` for a service account's user name.
    pub fn service_account(&self) -> Option<(&str, &str)> {
        split_service_account(&self.name)
    }
}

/// `(namespace, name)` of `system:serviceaccount:NAMESPACE:NAME`.
pub fn split_service_account(user: &str) -> Option<(&str, &str)> {
    let rest = user.strip_prefix(SERVICE_ACCOUNT_PREFIX)?;
    let (namespace, name) = rest.split_once(':')?;
    (!namespace.is_empty() && !name.is_empty() && !name.contains(':')).then_some((namespace, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_say_what_a_user_is() {
        let node = UserInfo::new("system:node:edge-1", &[NODES]);
        assert_eq!(node.node_name(), Some("edge-1"));
        assert!(node.in_group(AUTHENTICATED));
        assert_eq!(
            UserInfo::new("system:node:edge-1", &[]).node_name(),
            None,
            "a node's name without the nodes group is just a name"
        );
        let sa = UserInfo::new("system:serviceaccount:shop:default", &[]);
        assert_eq!(sa.service_account(), Some(("shop", "default")));
        assert_eq!(split_service_account("system:serviceaccount:shop"), None);
        assert_eq!(split_service_account("system:serviceaccount::x"), None);
    }
}
