//! Leases (`coordination.k8s.io/v1`): what Kubernetes' `ValidateLeaseSpec` checks.

use k8s_openapi::api::coordination::v1::Lease;

use crate::status::Cause;

pub(in crate::admission) fn lease(lease: &Lease) -> Vec<Cause> {
    let Some(spec) = &lease.spec else {
        return Vec::new();
    };
    let mut causes = Vec::new();
    if let Some(seconds) = spec.lease_duration_seconds.filter(|s| *s <= 0) {
        causes.push(Cause::invalid(
            "spec.leaseDurationSeconds",
            &seconds.to_string(),
            "must be greater than 0",
        ));
    }
    causes.extend(super::non_negative(
        spec.lease_transitions.map(i64::from),
        "spec.leaseTransitions",
    ));
    if spec
        .preferred_holder
        .as_deref()
        .is_some_and(|h| !h.is_empty())
        && spec.strategy.as_deref().unwrap_or_default().is_empty()
    {
        causes.push(Cause::forbidden(
            "spec.preferredHolder",
            "may only be specified if `strategy` is defined",
        ));
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn messages(spec: serde_json::Value) -> Vec<String> {
        let object: Lease =
            serde_json::from_value(json!({"metadata": {"name": "l"}, "spec": spec}))
                .expect("a Lease");
        lease(&object).iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn lease_spec_rules_as_kubernetes_words_them() {
        assert!(messages(json!({"holderIdentity": "a", "leaseDurationSeconds": 15})).is_empty());
        assert_eq!(
            messages(json!({"leaseDurationSeconds": 0, "leaseTransitions": -1})),
            vec![
                "spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0",
                "spec.leaseTransitions: Invalid value: -1: must be greater than or equal to 0",
            ]
        );
        assert_eq!(
            messages(json!({"preferredHolder": "b"})),
            vec!["spec.preferredHolder: Forbidden: may only be specified if `strategy` is defined"]
        );
    }
}
