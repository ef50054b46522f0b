//! What every namespace holds from the start, as two of Kubernetes' controllers make it: the
//! `default` ServiceAccount (the serviceaccounts-controller), which pods run as unless they
//! name another, and the `kube-root-ca.crt` ConfigMap (the root-ca-cert-publisher), the CA an
//! in-cluster client checks the API server against. Deleted, either comes back; an edited
//! `kube-root-ca.crt` is set back to the cluster's CA.
use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use skiff_client::informer::Store;

use crate::controller::{Context, Controller};
use crate::workqueue::WorkQueue;
use crate::{Action, Object};

/// The ServiceAccount every namespace has.
pub const DEFAULT_ACCOUNT: &str = "default";
/// The ConfigMap with the cluster's CA in every namespace, under the key `ca.crt`.
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";

/// The writes that give `namespace` its default account and CA bundle (pure). `account` and
/// `bundle` are what exists there now; `ca` is the cluster CA's PEM (empty: publish none).
pub fn reconcile(
    namespace: &Namespace,
    account: Option<&ServiceAccount>,
    bundle: Option<&ConfigMap>,
    ca: &str,
) -> Vec<Action> {
    let name = namespace.metadata.name.clone().unwrap_or_default();
    if namespace.metadata.deletion_timestamp.is_some()
        || namespace.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating")
    {
        return Vec::new();
    }
    let meta = |object: &str| ObjectMeta {
        name: Some(object.to_string()),
        namespace: Some(name.clone()),
        ..ObjectMeta::default()
    };
    let mut plan = Vec::new();
    if account.is_none() {
        plan.push(Action::Create(Object::ServiceAccount(Box::new(
            ServiceAccount {
                metadata: meta(DEFAULT_ACCOUNT),
                ..ServiceAccount::default()
            },
        ))));
    }
    if !ca.is_empty() {
        let wanted = BTreeMap::from([("ca.crt".to_string(), ca.to_string())]);
        match bundle {
            None => plan.push(Action::Create(Object::ConfigMap(Box::new(ConfigMap {
                metadata: meta(ROOT_CA_CONFIGMAP),
                data: Some(wanted),
                ..ConfigMap::default()
            })))),
            Some(existing) if existing.data.as_ref() != Some(&wanted) => {
                let mut fixed = existing.clone();
                fixed.data = Some(wanted);
                fixed.binary_data = None;
                plan.push(Action::Update(Object::ConfigMap(Box::new(fixed))));
            }
            Some(_) => {}
        }
    }
    plan
}

/// The controller: one key per namespace, woken by the namespace and by its default account
/// and CA bundle.
pub struct ServiceAccountsController {
    namespaces: Store<Namespace>,
    accounts: Store<ServiceAccount>,
    bundles: Store<ConfigMap>,
    ca: String,
}

impl Controller for ServiceAccountsController {
    const NAME: &'static str = "serviceaccounts-controller";
    const KEEP_GOING: bool = true;

    fn new(ctx: &Context, queue: &WorkQueue) -> Self {
        let namespaces = ctx.informers.store::<Namespace>();
        let accounts = ctx.informers.store::<ServiceAccount>();
        let bundles = ctx.informers.store::<ConfigMap>();
        let q = queue.clone();
        namespaces.on_change(move |ns: &Namespace| {
            if let Some(name) = &ns.metadata.name {
                q.add(name);
            }
        });
        let q = queue.clone();
        accounts.on_change(move |sa: &ServiceAccount| {
            if sa.metadata.name.as_deref() == Some(DEFAULT_ACCOUNT) {
                q.add(sa.metadata.namespace.as_deref().unwrap_or_default());
            }
        });
        let q = queue.clone();
        bundles.on_change(move |cm: &ConfigMap| {
            if cm.metadata.name.as_deref() == Some(ROOT_CA_CONFIGMAP) {
                q.add(cm.metadata.namespace.as_deref().unwrap_or_default());
            }
        });
        ServiceAccountsController {
            namespaces,
            accounts,
            bundles,
            ca: ctx.config.root_ca.clone(),
        }
    }

    fn reconcile(&mut self, key: &str, _now: Timestamp) -> Vec<Action> {
        let Some(namespace) = self.namespaces.get(&format!("/{key}")) else {
            return Vec::new();
        };
        let account = self.accounts.get(&format!("{key}/{DEFAULT_ACCOUNT}"));
        let bundle = self.bundles.get(&format!("{key}/{ROOT_CA_CONFIGMAP}"));
        reconcile(&namespace, account.as_ref(), bundle.as_ref(), &self.ca)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_namespace_gets_its_default_account_and_the_ca() {
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": "shop"}})).expect("ns");
        let plan: Vec<String> = reconcile(&ns, None, None, "PEM")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            plan,
            [
                "create ServiceAccount shop/default",
                "create ConfigMap shop/kube-root-ca.crt"
            ]
        );
        let account: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": "default", "namespace": "shop"}}))
                .expect("sa");
        let edited: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "kube-root-ca.crt", "namespace": "shop", "resourceVersion": "7"},
            "data": {"ca.crt": "forged"}}))
        .expect("cm");
        let plan: Vec<String> = reconcile(&ns, Some(&account), Some(&edited), "PEM")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            plan,
            ["update ConfigMap shop/kube-root-ca.crt at resourceVersion 7"]
        );
        let terminating: Namespace = serde_json::from_value(
            json!({"metadata": {"name": "gone"}, "status": {"phase": "Terminating"}}),
        )
        .expect("ns");
        assert!(reconcile(&terminating, None, None, "PEM").is_empty());
    }
}
