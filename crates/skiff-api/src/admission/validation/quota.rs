//! ResourceQuotas: what `spec.hard` may name and hold, and the scopes a quota may narrow to.

use k8s_openapi::api::core::v1::ResourceQuota;

use crate::quota::{self, SCOPES};
use crate::status::{go_quote, Cause};

/// Scopes that only make sense for the objects they pick out: a quota with one of these may
/// only track pods (and, except BestEffort, their compute resources).
const POD_SCOPES: &[&str] = &[
    "Terminating",
    "NotTerminating",
    "NotBestEffort",
    "PriorityClass",
];

pub(in crate::admission) fn resource_quota(rq: &ResourceQuota) -> Vec<Cause> {
    let mut causes = Vec::new();
    let spec = rq.spec.clone().unwrap_or_default();
    for (name, quantity) in spec.hard.iter().flatten() {
        let field = format!("spec.hard[{name}]");
        if !quota::is_quota_resource(name) {
            causes.push(Cause::invalid(
                field.clone(),
                &go_quote(name),
                "must be a standard resource for quota",
            ));
            continue;
        }
        match quota::parse(name, &quantity.0) {
            Err(_) => causes.push(Cause::invalid(
                field,
                &go_quote(&quantity.0),
                "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
            )),
            Ok(amount) if amount < 0 => causes.push(Cause::invalid(
                field,
                &go_quote(&quantity.0),
                "must be greater than or equal to 0",
            )),
            Ok(_) => {}
        }
    }
    let mut scopes: Vec<String> = spec.scopes.clone().unwrap_or_default();
    for (i, scope) in scopes.iter().enumerate() {
        if !SCOPES.contains(&scope.as_str()) {
            causes.push(Cause::not_supported(
                format!("spec.scopes[{i}]"),
                scope,
                SCOPES,
            ));
        }
    }
    let expressions = spec
        .scope_selector
        .as_ref()
        .and_then(|s| s.match_expressions.clone())
        .unwrap_or_default();
    for (i, e) in expressions.iter().enumerate() {
        let field = format!("spec.scopeSelector.matchExpressions[{i}]");
        if !SCOPES.contains(&e.scope_name.as_str()) {
            causes.push(Cause::not_supported(
                format!("{field}.scopeName"),
                &e.scope_name,
                SCOPES,
            ));
        }
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" | "NotIn" if e.scope_name != "PriorityClass" => causes.push(Cause::invalid(
                format!("{field}.operator"),
                &go_quote(&e.operator),
                "must be 'Exist' when scope is any of ResourceQuotaScopeTerminating, ResourceQuotaScopeNotTerminating, ResourceQuotaScopeBestEffort or ResourceQuotaScopeNotBestEffort",
            )),
            "In" | "NotIn" if values.is_empty() => causes.push(Cause::required_because(
                format!("{field}.values"),
                "must be at least one value when `operator` is 'In' or 'NotIn' for scope selector",
            )),
            "Exists" | "DoesNotExist" if !values.is_empty() => causes.push(Cause::invalid(
                format!("{field}.values"),
                &format!("{values:?}"),
                "must be no value when `operator` is 'Exist' or 'DoesNotExist' for scope selector",
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => causes.push(Cause::not_supported(
                format!("{field}.operator"),
                other,
                &["In", "NotIn", "Exists", "DoesNotExist"],
            )),
        }
        scopes.push(e.scope_name.clone());
    }
    let has = |s: &str| scopes.iter().any(|x| x == s);
    for (a, b) in [
        ("Terminating", "NotTerminating"),
        ("BestEffort", "NotBestEffort"),
    ] {
        if has(a) && has(b) {
            causes.push(Cause::invalid(
                "spec.scopes",
                &format!("[{a} {b}]"),
                "conflicting scopes",
            ));
        }
    }
    // A scoped quota picks out pods, so it can only track what pods use.
    for scope in scopes.iter().filter(|s| SCOPES.contains(&s.as_str())) {
        for name in spec.hard.iter().flatten().map(|(name, _)| name) {
            let pod_resource = quota::counted_resource(name) == "pods";
            let allowed = if scope == "BestEffort" {
                name == "pods" || name == "count/pods"
            } else {
                POD_SCOPES.contains(&scope.as_str()) && pod_resource
            };
            if !allowed {
                causes.push(Cause::invalid(
                    format!("spec.hard[{name}]"),
                    &go_quote(name),
                    &format!("unsupported scope applied to resource: {scope}"),
                ));
            }
        }
    }
    causes
}
