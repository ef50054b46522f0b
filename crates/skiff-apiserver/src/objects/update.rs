//! PUT and PATCH of an object or its status, and server-side apply.
//!
//! All three build the new object from the current one and share one tail
//! ([`write_with_retries`]): keep what the verb may not change (status on the main resource,
//! everything but status on `/status`, the deletion fields), let the strategy allocate, skip
//! writes that change nothing, compare-and-set on the resourceVersion, and retry a lost race
//! when the client set no precondition. Removing the last finalizer of an object being deleted
//! deletes it.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value};
use skiff_api::admission::{self, FieldValidation};
use skiff_api::decode;
use skiff_api::patch;
use skiff_api::status::ApiError;
use skiff_api::versions;
use skiff_store::{revision_of, Op, OpError};

use super::delete::finalizers_of;
use super::{
    check_subresource, create, get_fresh, lost_races, metadata_of, name_of, not_found, now,
    write_with_claims, Result, CONFLICT_RETRIES,
};
use crate::app::App;
use crate::auth::user::UserInfo;
use crate::query::Params;
use crate::registry::{strategy_for, ClaimLost};
use crate::respond;
use crate::target::Target;

/// PUT of an object or its status.
pub async fn update(
    app: &App,
    user: &UserInfo,
    target: &Target,
    params: &Params,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Response> {
    check_subresource(target)?;
    let name = name_of(target)?.to_string();
    let validation = FieldValidation::parse(params.field_validation.as_deref())?;
    let body = versions::to_stored(target.served, decode::decode_object(body, content_type)?)?;
    let body_name = body
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if body_name != name {
        return Err(ApiError::BadRequest(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    if let (Some(ns), Some(given)) = (
        &target.namespace,
        body.pointer("/metadata/namespace").and_then(Value::as_str),
    ) {
        if !given.is_empty() && given != ns {
            return Err(ApiError::BadRequest(
                "the namespace of the provided object does not match the namespace sent on the request".into(),
            ));
        }
    }
    // A resourceVersion in the body is the client's precondition; without one the update is
    // unconditional and we retry internally if someone else wrote in between.
    let precondition = revision_of(&body);
    let manager = params.manager();
    write_with_retries(app, user, target, params, &name, precondition, |current| {
        let mut admitted = admission::admit(target.info, body.clone(), validation)?;
        patch::apply::record_update(Some(current), &mut admitted.object, &manager, &now());
        Ok(admitted)
    })
    .await
}

/// PATCH of an object or its status.
pub async fn patch(
    app: &App,
    user: &UserInfo,
    target: &Target,
    params: &Params,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Response> {
    check_subresource(target)?;
    let name = name_of(target)?.to_string();
    let validation = FieldValidation::parse(params.field_validation.as_deref())?;
    let content_type = content_type
        .map(|ct| ct.split(';').next().unwrap_or(ct).trim().to_string())
        .ok_or_else(|| {
            ApiError::UnsupportedMediaType(
                "PATCH needs a Content-Type naming the patch type".into(),
            )
        })?;
    if content_type == "application/apply-patch+yaml" {
        return server_side_apply(app, user, target, params, &name, body, validation).await;
    }
    let manager = params.manager();
    write_with_retries(app, user, target, params, &name, None, |current| {
        // The patch is against the object in the client's version.
        let served = versions::from_stored(target.served, current);
        let patched = patch::apply_patch(&served, body, &content_type)?;
        let patched = versions::to_stored(target.served, patched)?;
        let mut admitted = admission::admit(target.info, patched, validation)?;
        patch::apply::record_update(Some(current), &mut admitted.object, &manager, &now());
        Ok(admitted)
    })
    .await
}

/// Server-side apply: the body is the manager's whole intent for the object
/// (skiff_api::patch::apply); a missing object is created from it.
async fn server_side_apply(
    app: &App,
    user: &UserInfo,
    target: &Target,
    params: &Params,
    name: &str,
    body: &[u8],
    validation: FieldValidation,
) -> Result<Response> {
    let Some(manager) = params.field_manager.clone().filter(|m| !m.is_empty()) else {
        return Err(ApiError::BadRequest(
            "PATCH with apply requires fieldManager to be set".into(),
        ));
    };
    let mut config = decode::decode_object(body, Some("application/apply-patch+yaml"))?;
    config = admission::with_type_meta(target.served, config)?;
    config = versions::to_stored(target.served, config)?;
    let body_name = config
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or(name);
    if body_name != name {
        return Err(ApiError::BadRequest(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    let conflict = |conflicts: Vec<patch::apply::Conflict>| ApiError::ApplyConflict {
        resource: target.info.qualified_resource(),
        name: name.to_string(),
        conflicts: conflicts
            .into_iter()
            .map(|c| (c.manager, c.api_version, c.field))
            .collect(),
    };
    if get_fresh(app, &target.key()).await?.is_none() && target.subresource.is_none() {
        let created = patch::apply::apply(None, &config, &manager, params.force(), &now())
            .map_err(conflict)?;
        // `created` is in the stored version already.
        let collection = Target {
            name: None,
            served: target.info,
            ..target.clone()
        };
        let bytes = serde_json::to_vec(&created)
            .map_err(|e| ApiError::Internal(format!("encoding the applied object: {e}")))?;
        return create(
            app,
            user,
            &collection,
            params,
            Some("application/json"),
            &bytes,
        )
        .await;
    }
    let force = params.force();
    write_with_retries(app, user, target, params, name, None, |current| {
        let merged = patch::apply::apply(Some(current), &config, &manager, force, &now())
            .map_err(conflict)?;
        admission::admit(target.info, merged, validation)
    })
    .await
}

/// The shared tail of update and patch: build the new object from the current one, keep what
/// the verb may not change, compare-and-set, and retry a lost race when the client set no
/// precondition.
async fn write_with_retries(
    app: &App,
    user: &UserInfo,
    target: &Target,
    params: &Params,
    name: &str,
    precondition: Option<u64>,
    build: impl Fn(&Value) -> Result<admission::Admitted>,
) -> Result<Response> {
    let info = target.info;
    let dry_run = params.is_dry_run()?;
    let key = target.key();
    let has_status = info.subresources.contains(&"status");
    let strategy = strategy_for(info);
    // What the object takes from what others hold is allocated on writes of the object itself,
    // never of its status, under a lock held until the write is in.
    let lock = match target.subresource {
        None => strategy.allocation_lock(app),
        Some(_) => None,
    };
    let allocating = lock.is_some();
    let _allocation = match lock {
        Some(lock) => Some(lock.lock().await),
        None => None,
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        if attempt > 1 {
            // We lost a race, or this member was behind: catch up before reading again.
            app.store.linearize().await.map_err(respond::store_error)?;
        }
        let current = get_fresh(app, &key)
            .await?
            .ok_or_else(|| not_found(target, name))?;
        let admitted = build(&current)?;
        let mut object = admitted.object;
        let mut warnings = admitted.warnings;
        // The namespace is the path's, whether or not the body repeats it.
        let meta = metadata_of(&mut object)?;
        match &target.namespace {
            Some(ns) => {
                meta.insert("namespace".into(), Value::from(ns.clone()));
            }
            None => {
                meta.remove("namespace");
            }
        }
        // A patch may carry a resourceVersion; then it is a precondition like a PUT's.
        let precondition = precondition
            .or_else(|| revision_of(&object).filter(|rv| Some(*rv) != revision_of(&current)));
        let object = match target.subresource.as_deref() {
            // The status subresource changes status and nothing else.
            Some("status") => {
                let mut merged = (*current).clone();
                merged["status"] = object.get("status").cloned().unwrap_or(Value::Null);
                if merged["status"].is_null() {
                    if let Some(m) = merged.as_object_mut() {
                        m.remove("status");
                    }
                }
                merged
            }
            // The main resource cannot change status when status has its own endpoint.
            _ if has_status => {
                match current.get("status") {
                    Some(status) => object["status"] = status.clone(),
                    None => {
                        if let Some(m) = object.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
                object
            }
            _ => object,
        };
        let mut object = object;
        keep_deletion_fields(&current, &mut object);
        if target.subresource.is_none() {
            warnings.extend(strategy.authorize_write(
                app,
                user,
                target.namespace.as_deref(),
                &object,
                Some(&current),
            )?);
        }
        if allocating {
            strategy.allocate(app, info, &mut object, Some(&current), attempt > 1)?;
        }
        admission::validate_update(info, &current, &object)?;
        // The last finalizer of an object being deleted was just removed: it goes now.
        let finishes_deletion = object.pointer("/metadata/deletionTimestamp").is_some()
            && !finalizers_of(&current).is_empty()
            && finalizers_of(&object).is_empty();
        // Nothing changed but bookkeeping: no write, no new resourceVersion, no watch event,
        // as Kubernetes does (and `kubectl patch` then says "patched (no change)"). A stale
        // resourceVersion is still a conflict.
        let stale = precondition.is_some_and(|rv| Some(rv) != revision_of(&current));
        if !finishes_deletion && !stale && unchanged(&current, &object) {
            return Ok(respond::json_with_warnings(
                StatusCode::OK,
                &current,
                &warnings,
            ));
        }
        if dry_run {
            if target.subresource.is_none() {
                crate::quota::charge(
                    app,
                    info,
                    target.namespace.as_deref(),
                    &object,
                    Some(&current),
                )?;
            }
            return Ok(respond::json_with_warnings(
                StatusCode::OK,
                &object,
                &warnings,
            ));
        }
        let expected = precondition.or_else(|| revision_of(&current));
        let op = if finishes_deletion {
            Op::Delete {
                key: key.clone(),
                expected_uid: None,
                expected_revision: expected,
            }
        } else {
            Op::Update {
                key: key.clone(),
                object: object.clone(),
                expected_revision: expected,
            }
        };
        // What the object newly takes is claimed in the same proposal (Strategy::claims).
        let claims = match allocating && !finishes_deletion {
            true => strategy.claims(app, &object, Some(&current)),
            false => Ok(Vec::new()),
        };
        // What the object newly takes of its namespace's quotas (a Service's node ports) is
        // charged in the same proposal.
        let quotas = match target.subresource.is_none() && !finishes_deletion {
            true => crate::quota::charge(
                app,
                info,
                target.namespace.as_deref(),
                &object,
                Some(&current),
            )?,
            false => Vec::new(),
        };
        let claims = claims.map(|mut claims| {
            claims.extend(quotas);
            claims
        });
        let written = match claims {
            Ok(claims) => write_with_claims(app, op, claims).await?,
            Err(ClaimLost) => None,
        };
        let Some(result) = written else {
            if attempt < CONFLICT_RETRIES {
                continue;
            }
            return Err(lost_races(info, name));
        };
        let result = result.map(|stored| {
            if finishes_deletion {
                object.clone()
            } else {
                stored
            }
        });
        match result {
            Ok(stored) => {
                return Ok(respond::json_with_warnings(
                    StatusCode::OK,
                    &stored,
                    &warnings,
                ))
            }
            Err(OpError::Conflict { .. })
                if precondition.is_none() && attempt < CONFLICT_RETRIES =>
            {
                continue
            }
            Err(e) => return Err(respond::op_error(info, name, e)),
        }
    }
}

/// Whether `new` is `old` except for what every write restamps: the resourceVersion and the
/// managedFields timestamps of the writer.
/// Compared in place, without copying either object (this runs on every write).
fn unchanged(old: &Value, new: &Value) -> bool {
    let (Some(old), Some(new)) = (old.as_object(), new.as_object()) else {
        return old == new;
    };
    // Equal maps except for the keys `skip` names.
    fn equal_but(a: &Map<String, Value>, b: &Map<String, Value>, skip: &[&str]) -> bool {
        let kept =
            |m: &Map<String, Value>| m.keys().filter(|k| !skip.contains(&k.as_str())).count();
        kept(a) == kept(b)
            && a.iter()
                .filter(|(k, _)| !skip.contains(&k.as_str()))
                .all(|(k, v)| b.get(k) == Some(v))
    }
    let (old_meta, new_meta) = (
        old.get("metadata").and_then(Value::as_object),
        new.get("metadata").and_then(Value::as_object),
    );
    let bookkeeping = ["resourceVersion", "managedFields"];
    equal_but(old, new, &["metadata"])
        && match (old_meta, new_meta) {
            (Some(a), Some(b)) => equal_but(a, b, &bookkeeping),
            (a, b) => a == b,
        }
}

/// `deletionTimestamp` and `deletionGracePeriodSeconds` are the server's: an update keeps the
/// stored ones whatever its body says.
fn keep_deletion_fields(current: &Value, object: &mut Value) {
    for field in ["deletionTimestamp", "deletionGracePeriodSeconds"] {
        match current.pointer(&format!("/metadata/{field}")) {
            Some(value) => object["metadata"][field] = value.clone(),
            None => {
                if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.remove(field);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::unchanged;
    use serde_json::json;

    #[test]
    fn only_bookkeeping_differs_means_unchanged() {
        let old = json!({"kind": "ConfigMap", "metadata": {"name": "a", "resourceVersion": "3",
            "managedFields": [{"time": "t1"}]}, "data": {"k": "v"}});
        let same = json!({"kind": "ConfigMap", "metadata": {"name": "a", "resourceVersion": "4",
            "managedFields": [{"time": "t2"}]}, "data": {"k": "v"}});
        assert!(unchanged(&old, &same));
        let mut data = same.clone();
        data["data"]["k"] = json!("w");
        assert!(!unchanged(&old, &data));
        let mut label = same.clone();
        label["metadata"]["labels"] = json!({"x": "y"});
        assert!(!unchanged(&old, &label));
        let mut extra = same.clone();
        extra["spec"] = json!({});
        assert!(!unchanged(&old, &extra));
        assert!(!unchanged(
            &old,
            &json!({"kind": "ConfigMap", "data": {"k": "v"}})
        ));
    }
}
