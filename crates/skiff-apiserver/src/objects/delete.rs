//! DELETE of an object.
//!
//! ## Expected flow
//! 1. The object must exist, and its strategy must allow the delete (the system namespaces).
//! 2. An object with finalizers, or asked to delete in the foreground or orphan its dependents,
//!    is only marked (`deletionTimestamp`, the finalizer added); the garbage collector does the
//!    finalizers' work and the update that removes the last one deletes it.
//! 3. Otherwise the strategy may mark it for a graceful deletion instead (a pod on a node,
//!    which its agent deletes once the containers have stopped).
//! 4. Otherwise it is removed, together with what its strategy deletes along with it (a
//!    namespace's contents), in one atomic write.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;
use skiff_api::decode;
use skiff_api::status::{self, ApiError};
use skiff_store::{Op, OpError, Proposal};

use super::{get_fresh, name_of, not_found, now, Result, CONFLICT_RETRIES};
use crate::app::App;
use crate::query::Params;
use crate::registry::strategy_for;
use crate::respond;
use crate::target::Target;

/// DELETE of an object.
pub async fn delete(app: &App, target: &Target, params: &Params, body: &[u8]) -> Result<Response> {
    if target.subresource.is_some() {
        return Err(ApiError::MethodNotAllowed(
            "DELETE is not supported on subresources".into(),
        ));
    }
    let info = target.info;
    let name = name_of(target)?.to_string();
    let options: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        decode::decode_object(body, None)?
    };
    let expected_uid = options
        .pointer("/preconditions/uid")
        .and_then(Value::as_str)
        .map(String::from);
    let expected_revision = match options
        .pointer("/preconditions/resourceVersion")
        .and_then(Value::as_str)
    {
        Some(rv) => Some(rv.parse::<u64>().map_err(|_| {
            ApiError::BadRequest(format!("invalid resourceVersion precondition: {rv}"))
        })?),
        None => None,
    };
    let dry_run = params.is_dry_run()?
        || options
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
    let key = target.key();
    let current = get_fresh(app, &key)
        .await?
        .ok_or_else(|| not_found(target, &name))?;
    let strategy = strategy_for(info);
    strategy.validate_delete(&name)?;
    let uid = current
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let marked = finalizing_deletion(&current, &options)
        .or_else(|| strategy.before_delete(&current, &options, jiff::Timestamp::now()));
    if let Some(marked) = marked {
        // The object stays, marked for deletion: whoever finishes the deletion (the garbage
        // collector once the finalizers are done, a pod's agent once its containers stopped)
        // deletes it for good.
        if dry_run || marked == *current {
            return Ok(respond::json(StatusCode::OK, &marked));
        }
        let revision = current
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .and_then(|v| v.parse::<u64>().ok());
        let op = Op::Update {
            key: key.clone(),
            object: marked,
            expected_revision: expected_revision.or(revision),
        };
        return match app
            .store
            .propose_one(op)
            .await
            .map_err(respond::store_error)?
        {
            Ok(stored) => Ok(respond::json(StatusCode::OK, &stored)),
            Err(e) => Err(respond::op_error(info, &name, e)),
        };
    }
    let mut attempt = 0;
    loop {
        if dry_run {
            break;
        }
        attempt += 1;
        let mut ops = vec![Op::Delete {
            key: key.clone(),
            expected_uid: expected_uid.clone(),
            expected_revision,
        }];
        ops.extend(strategy.delete_along(app, &name));
        let proposal = if ops.len() == 1 {
            Proposal::One(ops.remove(0))
        } else {
            Proposal::Atomic(ops)
        };
        match app
            .store
            .propose(proposal)
            .await
            .map_err(respond::store_error)?
        {
            Ok(_) => break,
            // Something deleted along with it was deleted meanwhile: list those again.
            Err(OpError::AtomicAborted { index, .. })
                if index > 0 && attempt < CONFLICT_RETRIES =>
            {
                app.store.linearize().await.map_err(respond::store_error)?;
            }
            Err(e) => return Err(respond::op_error(info, &name, e)),
        }
    }
    Ok(respond::json(
        StatusCode::OK,
        &status::success_status(info, &name, &uid),
    ))
}

/// The finalizers of an object.
pub(super) fn finalizers_of(object: &Value) -> Vec<String> {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|fs| {
            fs.iter()
                .filter_map(|f| f.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Deletion with finalizers (Kubernetes' `deleteWithFinalizers`): `propagationPolicy:
/// Foreground` adds the `foregroundDeletion` finalizer and `Orphan` (or `orphanDependents:
/// true`) the `orphan` finalizer; an object with any finalizer is only marked with
/// `deletionTimestamp`. The garbage collector does the finalizer's work and removes it, and the
/// update that removes the last finalizer deletes the object.
fn finalizing_deletion(current: &Value, options: &Value) -> Option<Value> {
    let policy = options
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .or_else(|| {
            (options.get("orphanDependents") == Some(&Value::Bool(true))).then_some("Orphan")
        });
    let mut finalizers = finalizers_of(current);
    let before = finalizers.len();
    let wanted = match policy {
        Some("Foreground") => Some("foregroundDeletion"),
        Some("Orphan") => Some("orphan"),
        _ => None,
    };
    if let Some(f) = wanted {
        if !finalizers.iter().any(|x| x == f) {
            finalizers.push(f.to_string());
        }
    }
    if finalizers.is_empty() {
        return None;
    }
    let already = current.pointer("/metadata/deletionTimestamp").is_some();
    if already && finalizers.len() == before {
        return Some(current.clone());
    }
    let mut marked = current.clone();
    marked["metadata"]["finalizers"] = Value::from(finalizers);
    if !already {
        marked["metadata"]["deletionTimestamp"] = now().into();
        marked["metadata"]["deletionGracePeriodSeconds"] = 0.into();
    }
    Some(marked)
}
