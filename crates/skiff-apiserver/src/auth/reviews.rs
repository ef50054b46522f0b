//! The reviews: questions a client `create`s and the server answers without storing anything.
//!
//! | resource | asked by | answers |
//! |---|---|---|
//! | `selfsubjectaccessreviews` | `kubectl auth can-i VERB RESOURCE` | may I? |
//! | `selfsubjectrulesreviews` | `kubectl auth can-i --list` | what may I do in a namespace? |
//! | `subjectaccessreviews` | admins, webhooks | may this user? |
//! | `localsubjectaccessreviews` | namespace admins | may this user, in my namespace? |
//! | `selfsubjectreviews` | `kubectl auth whoami` | who am I? |
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};
use skiff_api::status::ApiError;

use super::attributes::Attributes;
use super::user::UserInfo;
use crate::app::App;
use crate::respond;
use crate::target::Target;

/// Answers a POST of a review to `target` by `user`.
pub fn serve(
    app: &App,
    user: &UserInfo,
    target: &Target,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    if target.name.is_some() {
        return Err(ApiError::MethodNotAllowed(format!(
            "{} are only created",
            target.info.resource
        )));
    }
    let mut review = skiff_api::decode::decode_object(body, content_type)?;
    let kind = review.get("kind").and_then(Value::as_str).unwrap_or("");
    if !kind.is_empty() && kind != target.info.kind {
        return Err(ApiError::BadRequest(format!(
            "expected a {}, got a {kind}",
            target.info.kind
        )));
    }
    let spec = review.get("spec").cloned().unwrap_or(json!({}));
    let status = match target.info.resource {
        "selfsubjectreviews" => json!({"userInfo": user_info(user)}),
        "selfsubjectaccessreviews" => access(app, user, &spec, None)?,
        "subjectaccessreviews" => access(app, &subject(&spec)?, &spec, None)?,
        "localsubjectaccessreviews" => {
            let namespace = target.namespace.as_deref().unwrap_or("");
            access(app, &subject(&spec)?, &spec, Some(namespace))?
        }
        "selfsubjectrulesreviews" => rules(app, user, &spec)?,
        other => return Err(ApiError::NoSuchPath(other.to_string())),
    };
    review["apiVersion"] = json!(target.info.api_version());
    review["kind"] = json!(target.info.kind);
    if review.get("metadata").is_none_or(|m| !m.is_object()) {
        review["metadata"] = json!({});
    }
    review["status"] = status;
    Ok(respond::json(StatusCode::CREATED, &review))
}

fn user_info(user: &UserInfo) -> Value {
    let mut info = json!({"username": user.name, "groups": user.groups});
    if !user.uid.is_empty() {
        info["uid"] = json!(user.uid);
    }
    if !user.extra.is_empty() {
        info["extra"] = json!(user.extra);
    }
    info
}

/// The user a SubjectAccessReview asks about.
fn subject(spec: &Value) -> Result<UserInfo, ApiError> {
    let name = spec.get("user").and_then(Value::as_str).unwrap_or("");
    let groups: Vec<String> = super::rbac::strings(spec, "groups")
        .map(str::to_string)
        .collect();
    if name.is_empty() && groups.is_empty() {
        return Err(invalid(
            "spec.user",
            "at least one of user or group must be specified",
        ));
    }
    let mut extra = std::collections::BTreeMap::new();
    if let Some(map) = spec.get("extra").and_then(Value::as_object) {
        for (key, values) in map {
            let values = values
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect();
            extra.insert(key.clone(), values);
        }
    }
    Ok(UserInfo {
        name: name.to_string(),
        uid: spec
            .get("uid")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        groups,
        extra,
    })
}

/// The status of an access review: whether `user` may do what `spec` describes.
fn access(
    app: &App,
    user: &UserInfo,
    spec: &Value,
    local_namespace: Option<&str>,
) -> Result<Value, ApiError> {
    let text = |value: &Value, field: &str| {
        value
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let attributes = match (
        spec.get("resourceAttributes"),
        spec.get("nonResourceAttributes"),
    ) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "spec.resourceAttributes",
                "cannot be specified in combination with nonResourceAttributes",
            ))
        }
        (Some(r), None) => {
            let mut namespace = text(r, "namespace");
            if let Some(local) = local_namespace {
                if namespace.is_empty() {
                    namespace = local.to_string();
                } else if namespace != local {
                    return Err(invalid(
                        "spec.resourceAttributes.namespace",
                        "must match metadata.namespace",
                    ));
                }
            }
            let resource = match text(r, "subresource") {
                sub if sub.is_empty() => text(r, "resource"),
                sub => format!("{}/{sub}", text(r, "resource")),
            };
            Attributes::resource(
                user,
                &text(r, "verb"),
                &text(r, "group"),
                &resource,
                &namespace,
                &text(r, "name"),
            )
        }
        (None, Some(n)) => Attributes {
            path: text(n, "path"),
            ..Attributes::for_path(user, &axum::http::Method::GET, "")
        }
        .with_verb(&text(n, "verb")),
        (None, None) => {
            return Err(invalid(
                "spec.resourceAttributes",
                "exactly one of nonResourceAttributes or resourceAttributes must be specified",
            ))
        }
    };
    let allowed = super::allowed(app, &attributes);
    Ok(json!({"allowed": allowed}))
}

/// What `user` may do in `spec.namespace`: the rules of every role bound to them there and
/// cluster-wide, as `kubectl auth can-i --list` prints them.
fn rules(app: &App, user: &UserInfo, spec: &Value) -> Result<Value, ApiError> {
    let namespace = spec.get("namespace").and_then(Value::as_str).unwrap_or("");
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    if user.in_group(super::user::MASTERS) {
        resource_rules.push(json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}));
        non_resource_rules.push(json!({"verbs": ["*"], "nonResourceURLs": ["*"]}));
    }
    for rule in super::rbac::rules_for(app, user, namespace) {
        if rule.get("nonResourceURLs").is_some() {
            non_resource_rules.push(json!({
                "verbs": rule.get("verbs"),
                "nonResourceURLs": rule.get("nonResourceURLs"),
            }));
        } else {
            let mut entry = json!({
                "verbs": rule.get("verbs"),
                "apiGroups": rule.get("apiGroups").cloned().unwrap_or(json!([])),
                "resources": rule.get("resources").cloned().unwrap_or(json!([])),
            });
            if let Some(names) = rule.get("resourceNames") {
                entry["resourceNames"] = names.clone();
            }
            resource_rules.push(entry);
        }
    }
    Ok(json!({
        "resourceRules": resource_rules,
        "nonResourceRules": non_resource_rules,
        "incomplete": false,
    }))
}

fn invalid(field: &str, detail: &str) -> ApiError {
    ApiError::BadRequest(format!("{field}: Invalid value: {detail}"))
}
