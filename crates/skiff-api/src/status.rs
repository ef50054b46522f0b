//! API errors and the Kubernetes `Status` objects they turn into.
//!
//! Every failed request answers with a `Status` (`kind: Status`, `status: Failure`) whose
//! `reason` and `code` clients switch on: kubectl prints `Error from server (NotFound): ...`,
//! client-go retries `Conflict`s, `kubectl apply` falls back to a merge patch on a 415. So the
//! wording and the reason/code pairs below copy Kubernetes' `apimachinery/pkg/api/errors`, and the
//! per-field causes of an `Invalid` copy `apimachinery/pkg/util/validation/field` (1.33).

use serde_json::{json, Map, Value};

use crate::resources::ResourceInfo;

/// The one error type of skiff-api: everything that can make the API server answer with a
/// failure `Status`.
///
/// `resource` fields hold the qualified resource (`pods`, `deployments.apps`); `kind` in
/// [`ApiError::Invalid`] holds the qualified kind (`Pod`, `Deployment.apps`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("{resource} \"{name}\" not found")]
    NotFound { resource: String, name: String },
    /// A path that names no resource skiff serves (Kubernetes' "page not found").
    #[error("the server could not find the requested resource ({0})")]
    NoSuchPath(String),

    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists { resource: String, name: String },

    /// An optimistic-concurrency failure; `message` says why (usually
    /// [`ApiError::CONFLICT_MODIFIED`]).
    #[error("Operation cannot be fulfilled on {resource} \"{name}\": {message}")]
    Conflict {
        resource: String,
        name: String,
        message: String,
    },

    /// A server-side apply changed fields other managers own (409, reason Conflict, one
    /// `FieldManagerConflict` cause per field), as kube-apiserver reports it.
    #[error("{}", apply_conflict_message(conflicts))]
    ApplyConflict {
        resource: String,
        name: String,
        /// (manager, apiVersion, field) — the field as `.spec.replicas`.
        conflicts: Vec<(String, String, String)>,
    },

    /// The object failed validation; one [`Cause`] per problem, all of them at once.
    #[error("{}", invalid_message(kind, name, causes))]
    Invalid {
        kind: String,
        name: String,
        causes: Vec<Cause>,
    },

    #[error("{0}")]
    BadRequest(String),

    #[error("Unauthorized")]
    Unauthorized,

    #[error("{0}")]
    Forbidden(String),

    #[error("{0}")]
    MethodNotAllowed(String),

    #[error("{0}")]
    NotAcceptable(String),

    #[error("{0}")]
    UnsupportedMediaType(String),

    /// A watch or list asked for a resourceVersion that is no longer kept.
    #[error("{0}")]
    Gone(String),

    #[error("Request entity too large: {0}")]
    RequestEntityTooLarge(String),

    #[error("Timeout: {0}")]
    Timeout(String),

    #[error("{0}")]
    ServiceUnavailable(String),

    /// Over the server's limit of requests in flight (429; the response says when to retry).
    #[error("{0}")]
    TooManyRequests(String),

    #[error("Internal error occurred: {0}")]
    Internal(String),
}

impl ApiError {
    /// The message Kubernetes gives with a `Conflict` on a stale resourceVersion.
    pub const CONFLICT_MODIFIED: &'static str =
        "the object has been modified; please apply your changes to the latest version and try again";

    /// `NotFound` for a name of this resource type.
    pub fn not_found(info: &ResourceInfo, name: &str) -> Self {
        ApiError::NotFound {
            resource: info.qualified_resource(),
            name: name.to_string(),
        }
    }

    /// `AlreadyExists` for a name of this resource type.
    pub fn already_exists(info: &ResourceInfo, name: &str) -> Self {
        ApiError::AlreadyExists {
            resource: info.qualified_resource(),
            name: name.to_string(),
        }
    }

    /// The `Conflict` a write with a stale resourceVersion gets.
    pub fn conflict(info: &ResourceInfo, name: &str) -> Self {
        ApiError::Conflict {
            resource: info.qualified_resource(),
            name: name.to_string(),
            message: Self::CONFLICT_MODIFIED.to_string(),
        }
    }

    /// `Invalid` for an object of this resource type.
    pub fn invalid(info: &ResourceInfo, name: &str, causes: Vec<Cause>) -> Self {
        ApiError::Invalid {
            kind: info.qualified_kind(),
            name: name.to_string(),
            causes,
        }
    }

    /// The HTTP status code.
    pub fn code(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::Unauthorized => 401,
            ApiError::Forbidden(_) => 403,
            ApiError::NotFound { .. } | ApiError::NoSuchPath(_) => 404,
            ApiError::MethodNotAllowed(_) => 405,
            ApiError::NotAcceptable(_) => 406,
            ApiError::AlreadyExists { .. }
            | ApiError::Conflict { .. }
            | ApiError::ApplyConflict { .. } => 409,
            ApiError::Gone(_) => 410,
            ApiError::RequestEntityTooLarge(_) => 413,
            ApiError::UnsupportedMediaType(_) => 415,
            ApiError::Invalid { .. } => 422,
            ApiError::TooManyRequests(_) => 429,
            ApiError::Internal(_) => 500,
            ApiError::ServiceUnavailable(_) => 503,
            ApiError::Timeout(_) => 504,
        }
    }

    /// The machine-readable `reason` of the Status (`metav1.StatusReason`).
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::NotFound { .. } | ApiError::NoSuchPath(_) => "NotFound",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } | ApiError::ApplyConflict { .. } => "Conflict",
            ApiError::Invalid { .. } => "Invalid",
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::Unauthorized => "Unauthorized",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::MethodNotAllowed(_) => "MethodNotAllowed",
            ApiError::NotAcceptable(_) => "NotAcceptable",
            ApiError::UnsupportedMediaType(_) => "UnsupportedMediaType",
            // Kubernetes has both `Gone` and `Expired` for 410; an expired resourceVersion,
            // the only 410 skiff gives, is `Expired`, and that is what client-go's reflector
            // checks before it relists.
            ApiError::Gone(_) => "Expired",
            ApiError::RequestEntityTooLarge(_) => "RequestEntityTooLarge",
            ApiError::Timeout(_) => "Timeout",
            ApiError::ServiceUnavailable(_) => "ServiceUnavailable",
            ApiError::TooManyRequests(_) => "TooManyRequests",
            ApiError::Internal(_) => "InternalError",
        }
    }

    /// The failure `Status` object to send as the response body.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.code(),
        });
        if let (Some(details), Some(obj)) = (self.details(), status.as_object_mut()) {
            obj.insert("details".to_string(), details);
        }
        status
    }

    /// `details` of the Status, when there is something to put in it.
    fn details(&self) -> Option<Value> {
        match self {
            // Kubernetes names the *resource* in `details.kind` for these (`"kind": "pods"`).
            ApiError::NotFound { resource, name }
            | ApiError::AlreadyExists { resource, name }
            | ApiError::Conflict { resource, name, .. } => {
                let (resource, group) = split_qualified(resource);
                details(name, group, resource, None, &[])
            }
            ApiError::Invalid { kind, name, causes } => {
                let (kind, group) = split_qualified(kind);
                details(name, group, kind, None, causes)
            }
            ApiError::ApplyConflict {
                resource,
                name,
                conflicts,
            } => {
                let (resource, group) = split_qualified(resource);
                let causes: Vec<Cause> = conflicts
                    .iter()
                    .map(|(manager, version, field)| Cause {
                        reason: "FieldManagerConflict".into(),
                        message: format!("conflict with \"{manager}\" using {version}"),
                        field: field.clone(),
                    })
                    .collect();
                details(name, group, resource, None, &causes)
            }
            _ => None,
        }
    }
}

/// `Apply failed with 1 conflict: conflict with "kubectl-scale" using apps/v1: .spec.replicas`.
fn apply_conflict_message(conflicts: &[(String, String, String)]) -> String {
    let n = conflicts.len();
    let each: Vec<String> = conflicts
        .iter()
        .map(|(manager, version, field)| {
            format!("conflict with \"{manager}\" using {version}: {field}")
        })
        .collect();
    format!(
        "Apply failed with {n} conflict{}: {}",
        if n == 1 { "" } else { "s" },
        each.join("\n")
    )
}

/// `pods` → (`pods`, ``); `deployments.apps` → (`deployments`, `apps`).
fn split_qualified(qualified: &str) -> (&str, &str) {
    qualified.split_once('.').unwrap_or((qualified, ""))
}

/// A `StatusDetails` object with its empty fields left out, as Go's `omitempty` does; `None`
/// when every field is empty.
fn details(
    name: &str,
    group: &str,
    kind: &str,
    uid: Option<&str>,
    causes: &[Cause],
) -> Option<Value> {
    let mut map = Map::new();
    for (key, value) in [
        ("name", name),
        ("group", group),
        ("kind", kind),
        ("uid", uid.unwrap_or("")),
    ] {
        if !value.is_empty() {
            map.insert(key.to_string(), Value::String(value.to_string()));
        }
    }
    if !causes.is_empty() {
        let causes = causes.iter().map(Cause::to_json).collect();
        map.insert("causes".to_string(), Value::Array(causes));
    }
    (!map.is_empty()).then_some(Value::Object(map))
}

/// `Deployment.apps "my-app" is invalid: <errors>`, where one error stands alone and several are
/// bracketed (`[a, b]`), as Kubernetes' error aggregate prints them. Identical messages are
/// shown once, as the aggregate does too.
fn invalid_message(kind: &str, name: &str, causes: &[Cause]) -> String {
    let mut messages: Vec<String> = Vec::with_capacity(causes.len());
    for cause in causes {
        let message = cause.to_string();
        if !messages.contains(&message) {
            messages.push(message);
        }
    }
    let errors = match messages.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    };
    format!("{kind} {} is invalid: {errors}", go_quote(name))
}

/// The body of a successful delete when the object itself is not returned.
///
/// Kubernetes fills `details.kind` with the resource (`pods`) here too.
pub fn success_status(info: &ResourceInfo, name: &str, uid: &str) -> Value {
    let mut status = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
    });
    let details = details(name, info.group, info.resource, Some(uid), &[]);
    if let (Some(details), Some(obj)) = (details, status.as_object_mut()) {
        obj.insert("details".to_string(), details);
    }
    status
}

/// One problem with one field of an object, as `metav1.StatusCause`.
///
/// `message` is what Kubernetes' `field.Error.ErrorBody()` prints, without the field
/// (`Invalid value: "Foo": a lowercase RFC 1123 ...`); it is what goes into the Status.
/// [`Cause`]'s `Display` adds the field in front, as `field.Error.Error()` does, for the
/// top-level message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueNotSupported`,
    /// `FieldValueDuplicate`, `FieldValueTooLong`, `FieldValueForbidden` or
    /// `FieldValueNotFound`.
    pub reason: String,
    pub message: String,
    /// Dotted path with indices and keys in brackets: `spec.containers[0].name`, `data[a b]`.
    pub field: String,
}

impl Cause {
    fn new(reason: &str, field: impl Into<String>, message: String) -> Self {
        Cause {
            reason: reason.to_string(),
            message,
            field: field.into(),
        }
    }

    /// `<field>: Required value`.
    pub fn required(field: impl Into<String>) -> Self {
        Self::new("FieldValueRequired", field, "Required value".to_string())
    }

    /// `<field>: Required value: <detail>`.
    pub fn required_because(field: impl Into<String>, detail: &str) -> Self {
        Self::new(
            "FieldValueRequired",
            field,
            format!("Required value: {detail}"),
        )
    }

    /// `<field>: Invalid value: <value>: <detail>`. `value_display` is the value as Go would
    /// print it: strings quoted ([`go_quote`]), numbers bare, maps as `map[string]string{...}`.
    pub fn invalid(field: impl Into<String>, value_display: &str, detail: &str) -> Self {
        Self::new(
            "FieldValueInvalid",
            field,
            with_detail(format!("Invalid value: {value_display}"), detail),
        )
    }

    /// `<field>: Unsupported value: "<value>": supported values: "a", "b"`.
    pub fn not_supported(field: impl Into<String>, value: &str, allowed: &[&str]) -> Self {
        let allowed: Vec<String> = allowed.iter().map(|v| go_quote(v)).collect();
        let detail = if allowed.is_empty() {
            String::new()
        } else {
            format!("supported values: {}", allowed.join(", "))
        };
        Self::new(
            "FieldValueNotSupported",
            field,
            with_detail(format!("Unsupported value: {}", go_quote(value)), &detail),
        )
    }

    /// `<field>: Duplicate value: "<value>"`.
    pub fn duplicate(field: impl Into<String>, value: &str) -> Self {
        Self::new(
            "FieldValueDuplicate",
            field,
            format!("Duplicate value: {}", go_quote(value)),
        )
    }

    /// `<field>: Not found: "<value>"`: a reference to something that is not there.
    pub fn not_found(field: impl Into<String>, value: &str) -> Self {
        Self::new(
            "FieldValueNotFound",
            field,
            format!("Not found: {}", go_quote(value)),
        )
    }

    /// `<field>: Forbidden: <detail>`.
    pub fn forbidden(field: impl Into<String>, detail: &str) -> Self {
        Self::new(
            "FieldValueForbidden",
            field,
            with_detail("Forbidden".to_string(), detail),
        )
    }

    /// `<field>: Too long: may not be more than <max> bytes`.
    pub fn too_long(field: impl Into<String>, max_bytes: usize) -> Self {
        Self::new(
            "FieldValueTooLong",
            field,
            format!("Too long: may not be more than {max_bytes} bytes"),
        )
    }

    /// The cause as it appears in `details.causes`.
    pub fn to_json(&self) -> Value {
        json!({ "reason": self.reason, "message": self.message, "field": self.field })
    }
}

fn with_detail(body: String, detail: &str) -> String {
    if detail.is_empty() {
        body
    } else {
        format!("{body}: {detail}")
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// A string quoted the way Go's `%q` quotes it, so messages read exactly like Kubernetes'.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources;

    fn deployments() -> &'static ResourceInfo {
        resources::find("apps", "v1", "deployments").expect("deployments served")
    }

    fn pods() -> &'static ResourceInfo {
        resources::find("", "v1", "pods").expect("pods served")
    }

    #[test]
    fn messages_codes_and_reasons_match_kubernetes() {
        let rfc1123 = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric \
            characters, '-' or '.', and must start and end with an alphanumeric character \
            (e.g. 'example.com', regex used for validation is \
            '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
        let cases: Vec<(ApiError, u16, &str, String)> = vec![
            (ApiError::not_found(pods(), "x"), 404, "NotFound", r#"pods "x" not found"#.into()),
            (
                ApiError::not_found(deployments(), "web"),
                404,
                "NotFound",
                r#"deployments.apps "web" not found"#.into(),
            ),
            (
                ApiError::already_exists(pods(), "x"),
                409,
                "AlreadyExists",
                r#"pods "x" already exists"#.into(),
            ),
            (
                ApiError::conflict(pods(), "x"),
                409,
                "Conflict",
                "Operation cannot be fulfilled on pods \"x\": the object has been modified; \
                 please apply your changes to the latest version and try again"
                    .into(),
            ),
            (
                ApiError::invalid(
                    deployments(),
                    "my-app",
                    vec![Cause::invalid(
                        "spec.template.metadata.labels",
                        r#"map[string]string{"app":"x"}"#,
                        "`selector` does not match template `labels`",
                    )],
                ),
                422,
                "Invalid",
                "Deployment.apps \"my-app\" is invalid: spec.template.metadata.labels: Invalid \
                 value: map[string]string{\"app\":\"x\"}: `selector` does not match template `labels`"
                    .into(),
            ),
            (
                ApiError::invalid(
                    pods(),
                    "Foo",
                    vec![
                        Cause::invalid("metadata.name", &go_quote("Foo"), rfc1123),
                        Cause::required("spec.containers[0].name"),
                    ],
                ),
                422,
                "Invalid",
                format!(
                    "Pod \"Foo\" is invalid: [metadata.name: Invalid value: \"Foo\": {rfc1123}, \
                     spec.containers[0].name: Required value]"
                ),
            ),
            (ApiError::BadRequest("bad".into()), 400, "BadRequest", "bad".into()),
            (ApiError::Unauthorized, 401, "Unauthorized", "Unauthorized".into()),
            (ApiError::Forbidden("no".into()), 403, "Forbidden", "no".into()),
            (ApiError::MethodNotAllowed("m".into()), 405, "MethodNotAllowed", "m".into()),
            (ApiError::NotAcceptable("n".into()), 406, "NotAcceptable", "n".into()),
            (ApiError::Gone("too old".into()), 410, "Expired", "too old".into()),
            (
                ApiError::RequestEntityTooLarge("limit is 3145728".into()),
                413,
                "RequestEntityTooLarge",
                "Request entity too large: limit is 3145728".into(),
            ),
            (ApiError::UnsupportedMediaType("u".into()), 415, "UnsupportedMediaType", "u".into()),
            (ApiError::Internal("boom".into()), 500, "InternalError", "Internal error occurred: boom".into()),
            (ApiError::ServiceUnavailable("s".into()), 503, "ServiceUnavailable", "s".into()),
            (ApiError::Timeout("t".into()), 504, "Timeout", "Timeout: t".into()),
        ];
        for (error, code, reason, message) in cases {
            assert_eq!(error.code(), code, "{error:?}");
            assert_eq!(error.reason(), reason, "{error:?}");
            assert_eq!(error.to_string(), message, "{error:?}");
        }
    }

    #[test]
    fn status_objects_have_kubernetes_shape() {
        let cases: Vec<(ApiError, Value)> = vec![
            (
                ApiError::not_found(deployments(), "web"),
                json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "deployments.apps \"web\" not found", "reason": "NotFound",
                    "details": {"name": "web", "group": "apps", "kind": "deployments"},
                    "code": 404
                }),
            ),
            (
                ApiError::invalid(pods(), "p", vec![Cause::required("spec.containers")]),
                json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "Pod \"p\" is invalid: spec.containers: Required value",
                    "reason": "Invalid",
                    "details": {"name": "p", "kind": "Pod", "causes": [
                        {"reason": "FieldValueRequired", "message": "Required value", "field": "spec.containers"}
                    ]},
                    "code": 422
                }),
            ),
            (
                ApiError::BadRequest("nope".into()),
                json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "nope", "reason": "BadRequest", "code": 400
                }),
            ),
        ];
        for (error, want) in cases {
            assert_eq!(error.to_status(), want);
        }
    }

    #[test]
    fn cause_constructors_print_like_field_errors() {
        let cases = vec![
            (
                Cause::required("spec.containers[0].image"),
                "FieldValueRequired",
                "spec.containers[0].image: Required value",
            ),
            (
                Cause::required_because("metadata.name", "name or generateName is required"),
                "FieldValueRequired",
                "metadata.name: Required value: name or generateName is required",
            ),
            (
                Cause::not_supported(
                    "spec.restartPolicy",
                    "Sometimes",
                    &["Always", "OnFailure", "Never"],
                ),
                "FieldValueNotSupported",
                r#"spec.restartPolicy: Unsupported value: "Sometimes": supported values: "Always", "OnFailure", "Never""#,
            ),
            (
                Cause::duplicate("spec.containers[1].name", "web"),
                "FieldValueDuplicate",
                r#"spec.containers[1].name: Duplicate value: "web""#,
            ),
            (
                Cause::invalid("spec.replicas", "-1", "must be greater than or equal to 0"),
                "FieldValueInvalid",
                "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
            ),
            (
                Cause::invalid("spec.x", "1", ""),
                "FieldValueInvalid",
                "spec.x: Invalid value: 1",
            ),
            (
                Cause::forbidden("spec.strategy.rollingUpdate", "may not be specified"),
                "FieldValueForbidden",
                "spec.strategy.rollingUpdate: Forbidden: may not be specified",
            ),
            (
                Cause::too_long("data", 1048576),
                "FieldValueTooLong",
                "data: Too long: may not be more than 1048576 bytes",
            ),
        ];
        for (cause, reason, printed) in cases {
            assert_eq!(cause.reason, reason);
            assert_eq!(cause.to_string(), printed);
            assert!(
                printed.ends_with(&cause.message),
                "message is the body without the field"
            );
        }
    }

    #[test]
    fn duplicate_messages_are_shown_once() {
        let error = ApiError::invalid(
            pods(),
            "p",
            vec![Cause::required("a"), Cause::required("a")],
        );
        assert_eq!(error.to_string(), "Pod \"p\" is invalid: a: Required value");
    }

    #[test]
    fn success_status_names_the_deleted_object() {
        assert_eq!(
            success_status(deployments(), "web", "1234"),
            json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {"name": "web", "group": "apps", "kind": "deployments", "uid": "1234"}
            })
        );
    }

    #[test]
    fn go_quote_escapes_like_go() {
        let cases = [
            ("Foo", r#""Foo""#),
            ("a\"b", r#""a\"b""#),
            ("a\nb", r#""a\nb""#),
            ("", r#""""#),
        ];
        for (input, want) in cases {
            assert_eq!(go_quote(input), want);
        }
    }
}
