//! Building HTTP responses: JSON bodies, `Status` errors, `Warning` headers, and how store
//! failures become Kubernetes errors.

use std::sync::Arc;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use skiff_api::resources::ResourceInfo;
use skiff_api::status::ApiError;
use skiff_store::{OpError, StoreError};

pub const JSON: &str = "application/json";

pub fn json(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, JSON)], bytes).into_response()
}

/// A JSON body with `Warning` headers (RFC 7234 form, as Kubernetes sends them).
pub fn json_with_warnings(status: StatusCode, body: &Value, warnings: &[String]) -> Response {
    let mut response = json(status, body);
    for warning in warnings {
        let text = format!(
            "299 - \"{}\"",
            warning.replace('\\', "\\\\").replace('"', "\\\"")
        );
        if let Ok(value) = HeaderValue::from_str(&text) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}

pub fn error(e: ApiError) -> Response {
    let status = StatusCode::from_u16(e.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json(status, &e.to_status())
}

/// A list body written item by item, without deep-copying the stored objects into one `Value`.
/// `page` is the next page's token and the count of items after this page, when paginated.
pub fn list(
    info: &ResourceInfo,
    revision: u64,
    items: &[Arc<Value>],
    page: Option<(&str, Option<u64>)>,
) -> Response {
    let mut metadata = serde_json::json!({ "resourceVersion": revision.to_string() });
    if let Some((token, remaining)) = page {
        metadata["continue"] = token.into();
        if let Some(remaining) = remaining {
            metadata["remainingItemCount"] = remaining.into();
        }
    }
    let mut out = Vec::with_capacity(256 + items.len() * 512);
    out.extend_from_slice(
        format!(
            r#"{{"kind":"{}","apiVersion":"{}","metadata":{metadata},"items":["#,
            info.list_kind,
            info.api_version(),
        )
        .as_bytes(),
    );
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Serialising a Value into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, &**item);
    }
    out.extend_from_slice(b"]}");
    (StatusCode::OK, [(header::CONTENT_TYPE, JSON)], out).into_response()
}

/// How a refused store operation reads to a Kubernetes client.
pub fn op_error(info: &ResourceInfo, name: &str, e: OpError) -> ApiError {
    let resource = info.qualified_resource();
    match e {
        OpError::NotFound { .. } => ApiError::NotFound {
            resource,
            name: name.into(),
        },
        OpError::AlreadyExists { .. } => ApiError::AlreadyExists {
            resource,
            name: name.into(),
        },
        OpError::Conflict { .. } => ApiError::Conflict {
            resource,
            name: name.into(),
            message: "the object has been modified; please apply your changes to the latest version and try again"
                .into(),
        },
        OpError::UidMismatch { expected, current, .. } => ApiError::Conflict {
            resource,
            name: name.into(),
            message: format!("Precondition failed: UID in precondition: {expected}, UID in object meta: {current}"),
        },
        OpError::AtomicAborted { cause, .. } => op_error(info, name, *cause),
        OpError::Malformed { reason, .. } => ApiError::BadRequest(reason),
    }
}

pub fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Unavailable(m) => ApiError::ServiceUnavailable(m),
        StoreError::Timeout(m) => ApiError::Timeout(m),
        StoreError::ShuttingDown => {
            ApiError::ServiceUnavailable("the server is shutting down".into())
        }
        other => ApiError::Internal(other.to_string()),
    }
}

/// A response about objects of the stored version, rewritten for a client of `served`
/// ([`skiff_api::versions`]): an object or each item of a list is converted; a Table, a
/// Status or a failure passes as it is.
pub async fn in_version(served: &'static ResourceInfo, response: Response) -> Response {
    if !response.status().is_success() {
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return error(ApiError::Internal("reading a response to convert".into()));
    };
    let Ok(mut value) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, axum::body::Body::from(bytes));
    };
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
    if kind == served.list_kind {
        if let Some(items) = value.get_mut("items").and_then(Value::as_array_mut) {
            for item in items.iter_mut() {
                *item = skiff_api::versions::from_stored(served, item);
            }
        }
        value["apiVersion"] = Value::from(served.api_version());
    } else if kind == served.kind {
        value = skiff_api::versions::from_stored(served, &value);
    }
    let mut converted = json(parts.status, &value);
    for (name, header_value) in parts.headers.iter() {
        if name != header::CONTENT_LENGTH && name != header::CONTENT_TYPE {
            converted
                .headers_mut()
                .append(name.clone(), header_value.clone());
        }
    }
    converted
}
