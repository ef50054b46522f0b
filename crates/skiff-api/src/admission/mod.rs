//! Admission: turning a client's object into the object skiff stores, or saying exactly why not.
//!
//! ## Expected flow
//! [`admit`] runs the steps a Kubernetes API server runs on a create or update body:
//! 1. `apiVersion`/`kind` must be the resource's own, and are filled in when absent (the
//!    Python client omits them).
//! 2. The body is decoded into k8s-openapi's type for the kind (`typed`); a wrong type is a
//!    `400` naming the field.
//! 3. Fields the type has no place for are unknown fields (`strict`); the request's
//!    [`FieldValidation`] makes them an error, warnings, or nothing.
//! 4. Defaults are filled in (`defaults`).
//! 5. Everything is validated at once (`validation`); any problem is a `422 Invalid` listing
//!    them all.
//! 6. The object must fit in storage ([`MAX_OBJECT_BYTES`]).
//!
//! ## Guarantees
//! An admitted object is canonical JSON: what k8s-openapi writes for its type, so two
//! spellings of the same object store identically, with `apiVersion` and `kind` set.
//!
//! ## Caveats
//! Create-only preparation is left to the caller: generating a name from `generateName`,
//! setting uid/creationTimestamp/resourceVersion/generation, filling the namespace from the
//! URL, resetting `status` (Pods start `Pending`). On update, call [`validate_update`] with the
//! stored object as well as [`admit`] on the new one.
//!
//! ## Layout
//! - this file: [`admit`], [`FieldValidation`], the `apiVersion`/`kind` and size checks.
//! - `typed`: k8s-openapi's type per served kind, and per-kind dispatch.
//! - `strict`: finding unknown fields by diffing the body against its typed round trip.
//! - `defaults`: Kubernetes' defaulting.
//! - `validation/`: Kubernetes' validation, one file per family of kinds.
//! - `update`: [`validate_update`], the immutable fields.
//! - `tests`: end-to-end cases, including the seed manifests.

mod defaults;
mod strict;
mod typed;
mod update;
mod validation;

#[cfg(test)]
mod tests;

use serde_json::Value;

pub use update::validate_update;

use crate::decode::json_type;
use crate::resources::ResourceInfo;
use crate::status::ApiError;
use typed::Typed;

/// The largest object skiff stores: 1.5 MiB, etcd's default request limit, which every
/// Kubernetes cluster inherits.
pub const MAX_OBJECT_BYTES: usize = 1536 * 1024;

/// What to do with fields the object's type does not have (`?fieldValidation=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    /// Reject the request (`400`), naming every unknown field. kubectl asks for this.
    Strict,
    /// Accept, and return one `Warning` header per unknown field. The server's default.
    #[default]
    Warn,
    /// Accept silently, dropping the fields.
    Ignore,
}

impl FieldValidation {
    /// Reads the `fieldValidation` query parameter; absent means [`FieldValidation::Warn`].
    pub fn parse(value: Option<&str>) -> Result<Self, ApiError> {
        match value.unwrap_or("") {
            "" | "Warn" => Ok(FieldValidation::Warn),
            "Strict" => Ok(FieldValidation::Strict),
            "Ignore" => Ok(FieldValidation::Ignore),
            other => Err(ApiError::BadRequest(format!(
                "fieldValidation: Unsupported value: \"{other}\": supported values: \"Ignore\", \"Strict\", \"Warn\""
            ))),
        }
    }
}

/// An object that passed admission.
#[derive(Debug, Clone, PartialEq)]
pub struct Admitted {
    /// The canonical, defaulted object, ready to store.
    pub object: Value,
    /// Texts for `Warning: 299 - "<text>"` response headers (unknown fields under `Warn`).
    pub warnings: Vec<String>,
}

/// Decodes, checks, defaults and validates a create or update body for `info`'s resource.
pub fn admit(
    info: &ResourceInfo,
    body: Value,
    validation: FieldValidation,
) -> Result<Admitted, ApiError> {
    let body = with_type_meta(info, body)?;
    let mut typed = Typed::decode(info, &body)?;

    let unknown = strict::unknown_fields(&body, &typed.to_json()?);
    let mut warnings = Vec::new();
    match validation {
        FieldValidation::Strict if !unknown.is_empty() => {
            let fields: Vec<String> = unknown
                .iter()
                .map(|f| format!("unknown field \"{f}\""))
                .collect();
            return Err(ApiError::BadRequest(format!(
                "strict decoding error: {}",
                fields.join(", ")
            )));
        }
        FieldValidation::Warn => {
            warnings.extend(unknown.iter().map(|f| format!("unknown field \"{f}\"")));
        }
        FieldValidation::Strict | FieldValidation::Ignore => {}
    }

    typed.apply_defaults(info);
    let selector_given = body.pointer("/spec/selector").is_some_and(|s| !s.is_null());
    let causes = typed.validate(selector_given);
    if !causes.is_empty() {
        let name = typed.metadata().name.clone().unwrap_or_default();
        return Err(ApiError::invalid(info, &name, causes));
    }

    let object = typed.to_json()?;
    check_size(&object)?;
    Ok(Admitted { object, warnings })
}

/// Step 1: `apiVersion` and `kind` must name this resource; absent (or empty) ones are filled
/// in.
pub fn with_type_meta(info: &ResourceInfo, mut body: Value) -> Result<Value, ApiError> {
    let api_version = info.api_version();
    let Some(map) = body.as_object_mut() else {
        return Err(ApiError::BadRequest(format!(
            "the body of the request must be an object, not {}",
            json_type(&body)
        )));
    };
    for (field, expected, what) in [
        ("apiVersion", api_version.as_str(), "API version"),
        ("kind", info.kind, "kind"),
    ] {
        match map.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::String(given)) if given.is_empty() || given == expected => {}
            Some(Value::String(given)) => {
                return Err(ApiError::BadRequest(format!(
                "the {what} in the data ({given}) does not match the expected {what} ({expected})"
            )))
            }
            Some(other) => {
                return Err(ApiError::BadRequest(format!(
                    "{kind} in version \"{version}\" cannot be handled as a {kind}: {field}: \
                     expected a string, found {}",
                    json_type(other),
                    kind = info.kind,
                    version = info.version,
                )))
            }
        }
        map.insert(field.to_string(), Value::String(expected.to_string()));
    }
    Ok(body)
}

/// Step 6. An object over etcd's limit fails in Kubernetes only when storage rejects it, as a
/// `500` with reason `Unknown` and the message `etcdserver: request is too large`. We answer
/// what that really is, `413 RequestEntityTooLarge`, and before anything is written.
fn check_size(object: &Value) -> Result<(), ApiError> {
    let size = serde_json::to_vec(object)
        .map(|bytes| bytes.len())
        .unwrap_or(0);
    if size > MAX_OBJECT_BYTES {
        return Err(ApiError::RequestEntityTooLarge(format!(
            "the object is {size} bytes, more than the {MAX_OBJECT_BYTES} bytes an object may have"
        )));
    }
    Ok(())
}
