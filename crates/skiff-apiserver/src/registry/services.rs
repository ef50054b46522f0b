//! The Service strategy: a Service starts without a status, and takes addresses — a ClusterIP
//! and node ports — that no other Service holds.
//!
//! The allocators and claims themselves are in [`crate::service_ips`]; this file says when they
//! run. The verbs, for a create or an update of the Service itself (not its status):
//!
//! ```text
//! lock (allocation_lock) ─► read every Service (after a read index on create)
//!   ─► allocate: keep what the stored object had, allocate what is missing, check what the
//!      client chose is in range and free
//!   ─► write the Service + claims (one atomic proposal) ─► unlock
//!        └─ ClaimLost (another member took an address): allocate again, scattered
//! ```
//! A deleted Service's claims stay in the store; the next Service given one of its addresses
//! takes the claim over (see [`crate::service_ips::claims`]).
use serde_json::Value;
use skiff_api::resources::ResourceInfo;
use skiff_store::{key_prefix, Op};
use tokio::sync::Mutex;

use super::{set_status, ClaimLost, Result, Strategy, View};
use crate::service_ips::{self, InUse};

pub struct Services;

impl Strategy for Services {
    fn prepare_for_create(&self, object: &mut Value) {
        set_status(object, None);
    }

    fn allocation_lock<'a>(&self, view: &'a dyn View) -> Option<&'a Mutex<()>> {
        Some(view.service_network().allocation_lock())
    }

    fn allocate(
        &self,
        view: &dyn View,
        info: &ResourceInfo,
        object: &mut Value,
        old: Option<&Value>,
        scatter: bool,
    ) -> Result<()> {
        // On update, the Service's own stored addresses are not "someone else's".
        let meta = |o: &'_ Value, f: &str| {
            o.pointer(&format!("/metadata/{f}"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let skip = old.map(|o| (meta(o, "namespace"), meta(o, "name")));
        let all = view.list(&key_prefix("services", None));
        let mut used = InUse::from_services(
            all.iter().map(|s| s.as_ref()),
            skip.as_ref().map(|(ns, name)| (ns.as_str(), name.as_str())),
        );
        if scatter {
            used.scatter(&uuid::Uuid::new_v4().to_string());
        }
        service_ips::allocate(view.service_network(), info, object, old, &mut used)
    }

    fn claims(
        &self,
        view: &dyn View,
        object: &Value,
        old: Option<&Value>,
    ) -> std::result::Result<Vec<Op>, ClaimLost> {
        service_ips::claims(object, old, |key| view.get(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::fake::FakeView;
    use serde_json::json;

    fn info() -> &'static ResourceInfo {
        skiff_api::resources::find("", "v1", "services").expect("served")
    }

    fn service(name: &str, uid: &str, spec: Value) -> Value {
        json!({"metadata": {"name": name, "namespace": "default", "uid": uid}, "spec": spec})
    }

    fn keys(ops: &[Op]) -> Vec<&str> {
        ops.iter().map(|op| op.key()).collect()
    }

    #[test]
    fn a_new_service_gets_the_next_free_address_and_claims_it() {
        let view = FakeView::default().with(
            "services",
            service("a", "u-a", json!({"clusterIP": "10.43.0.2"})),
        );
        let mut b = service("b", "u-b", json!({"type": "ClusterIP"}));
        Services
            .allocate(&view, info(), &mut b, None, false)
            .expect("allocates");
        assert_eq!(b["spec"]["clusterIP"], "10.43.0.3");
        let claims = Services.claims(&view, &b, None).expect("free");
        assert_eq!(keys(&claims), ["addressclaims.skiff.io//ip-10.43.0.3"]);
    }

    #[test]
    fn an_update_keeps_its_own_address_and_claims_nothing_new() {
        let a = service("a", "u-a", json!({"clusterIP": "10.43.0.2"}));
        let view = FakeView::default().with("services", a.clone());
        let mut update = service("a", "u-a", json!({"ports": [{"port": 80}]}));
        Services
            .allocate(&view, info(), &mut update, Some(&a), false)
            .expect("its own address is not taken");
        assert_eq!(update["spec"]["clusterIP"], "10.43.0.2");
        assert!(Services
            .claims(&view, &update, Some(&a))
            .expect("kept")
            .is_empty());
    }

    /// A deleted Service releases its address: its claim is stale, and the next Service given
    /// that address takes the claim over. While the holder lives, the claim is lost.
    #[test]
    fn claims_of_deleted_services_are_taken_over_and_live_ones_lost() {
        let claim = json!({"metadata": {"name": "ip-10.43.0.2", "resourceVersion": "4"},
                           "service": {"namespace": "default", "name": "a", "uid": "u-a"}});
        let holder = service("a", "u-a", json!({"clusterIP": "10.43.0.2"}));
        let newcomer = service("b", "u-b", json!({"clusterIP": "10.43.0.2"}));
        let deleted = FakeView::default().with("addressclaims.skiff.io", claim.clone());
        let ops = Services
            .claims(&deleted, &newcomer, None)
            .expect("stale claim");
        assert!(matches!(
            &ops[..],
            [Op::Update {
                expected_revision: Some(4),
                ..
            }]
        ));
        let live = deleted.with("services", holder);
        assert_eq!(Services.claims(&live, &newcomer, None), Err(ClaimLost));
    }

    #[test]
    fn an_address_in_use_is_refused_naming_the_field() {
        let view = FakeView::default().with(
            "services",
            service("a", "u-a", json!({"clusterIP": "10.43.0.2"})),
        );
        let mut b = service("b", "u-b", json!({"clusterIP": "10.43.0.2"}));
        let err = Services
            .allocate(&view, info(), &mut b, None, false)
            .expect_err("taken");
        assert!(err.to_string().contains("spec.clusterIPs"), "{err}");
    }

    #[test]
    fn a_new_service_starts_without_status() {
        let mut svc = service("a", "u", json!({}));
        svc["status"] = json!({"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}});
        Services.prepare_for_create(&mut svc);
        assert!(svc.get("status").is_none());
    }
}
