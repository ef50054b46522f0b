//! POST to a collection: a new object.
//!
//! The server decides the name (from `generateName`), the uid and the creation time; the
//! resource's strategy decides the initial status and allocates what the object takes.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;
use skiff_api::admission::{self, FieldValidation};
use skiff_api::decode;
use skiff_api::patch;
use skiff_api::status::ApiError;
use skiff_api::versions;
use skiff_store::{object_key, Op, OpError};

use super::{get_fresh, lost_races, metadata_of, now, write_with_claims, Result, CONFLICT_RETRIES};
use crate::app::App;
use crate::auth::user::UserInfo;
use crate::query::Params;
use crate::registry::{strategy_for, ClaimLost};
use crate::respond;
use crate::target::Target;

/// POST to a collection.
pub async fn create(
    app: &App,
    user: &UserInfo,
    target: &Target,
    params: &Params,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Response> {
    if target.name.is_some() {
        return Err(ApiError::MethodNotAllowed(format!(
            "POST is not supported on a single {}",
            target.info.singular
        )));
    }
    let info = target.info;
    if info.namespaced && target.namespace.is_none() {
        return Err(ApiError::MethodNotAllowed(format!(
            "create {} in a namespace: POST to .../namespaces/NAMESPACE/{}",
            info.resource, info.resource
        )));
    }
    let validation = FieldValidation::parse(params.field_validation.as_deref())?;
    let dry_run = params.is_dry_run()?;
    let mut body = versions::to_stored(target.served, decode::decode_object(body, content_type)?)?;
    // generateName first, so admission validates (and defaults from) the final name.
    let body_meta = metadata_of(&mut body)?;
    if body_meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .is_empty()
    {
        if let Some(prefix) = body_meta.get("generateName").and_then(Value::as_str) {
            // Kubernetes cuts the prefix so that prefix + 5 random characters fit in 63.
            let prefix: String = prefix.chars().take(58).collect();
            body_meta.insert(
                "name".into(),
                Value::from(format!("{prefix}{}", random_suffix())),
            );
        }
    }
    // The uid is the server's, decided before admission: a Job's generated selector names it.
    let uid = uuid::Uuid::new_v4().to_string();
    metadata_of(&mut body)?.insert("uid".into(), Value::from(uid.clone()));
    let admitted = admission::admit(info, body, validation)?;
    let mut object = admitted.object;
    let mut warnings = admitted.warnings;
    let strategy = strategy_for(info);
    strategy.mutate_on_create(app, &mut object);
    warnings.extend(strategy.authorize_write(
        app,
        user,
        target.namespace.as_deref(),
        &object,
        None,
    )?);
    strategy.prepare_for_create(&mut object);
    // Who set which field (server-side apply's creates arrive with theirs already).
    if object.pointer("/metadata/managedFields").is_none() {
        patch::apply::record_update(None, &mut object, &params.manager(), &now());
    }
    let meta = metadata_of(&mut object)?;

    // The namespace comes from the path; a different one in the body is a client mistake.
    if info.namespaced {
        let ns = target.namespace.clone().unwrap_or_default();
        match meta.get("namespace").and_then(Value::as_str) {
            Some(given) if !given.is_empty() && given != ns => {
                return Err(ApiError::BadRequest(
                    "the namespace of the provided object does not match the namespace sent on the request".into(),
                ))
            }
            _ => {
                meta.insert("namespace".into(), Value::from(ns));
            }
        }
    } else {
        meta.remove("namespace");
    }
    // What only the server decides. resourceVersion and generation are set by the store's apply.
    meta.insert("uid".into(), Value::from(uid));
    meta.insert("creationTimestamp".into(), Value::from(now()));
    for server_owned in [
        "resourceVersion",
        "generation",
        "deletionTimestamp",
        "selfLink",
    ] {
        meta.remove(server_owned);
    }
    let name = meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();

    // What the object takes from what others hold (a Service's addresses) is allocated here,
    // from a fresh read, under a lock held until the write is in. The object as it was before
    // is kept, to allocate again from if another member wins something it took.
    let lock = strategy.allocation_lock(app);
    let unallocated = lock.is_some().then(|| object.clone());
    let _allocation = match lock {
        Some(lock) => {
            let guard = lock.lock().await;
            app.store.linearize().await.map_err(respond::store_error)?;
            strategy.allocate(app, info, &mut object, None, false)?;
            Some(guard)
        }
        None => None,
    };
    // Every namespaced object lives in a namespace that exists (the API's rule, not one
    // resource's).
    if let Some(ns) = &target.namespace {
        let ns_key = object_key("namespaces", "", ns);
        if get_fresh(app, &ns_key).await?.is_none() {
            return Err(ApiError::NotFound {
                resource: "namespaces".into(),
                name: ns.clone(),
            });
        }
    }
    let key = object_key(
        &info.qualified_resource(),
        target.namespace.as_deref().unwrap_or(""),
        &name,
    );
    if dry_run {
        crate::quota::charge(app, info, target.namespace.as_deref(), &object, None)?;
        if app.store.get(&key).is_some() {
            return Err(respond::op_error(
                info,
                &name,
                OpError::AlreadyExists { key },
            ));
        }
        return Ok(respond::json_with_warnings(
            StatusCode::CREATED,
            &object,
            &warnings,
        ));
    }
    let mut attempt = 0;
    let stored = loop {
        attempt += 1;
        // What the object takes of its namespace's quotas is written with it.
        let quotas = crate::quota::charge(app, info, target.namespace.as_deref(), &object, None)?;
        let claims = strategy.claims(app, &object, None).map(|mut claims| {
            claims.extend(quotas);
            claims
        });
        let create = Op::Create {
            key: key.clone(),
            object: object.clone(),
        };
        let written = match claims {
            Ok(claims) => write_with_claims(app, create, claims).await?,
            Err(ClaimLost) => None,
        };
        match (written, &unallocated) {
            (Some(result), _) => break result.map_err(|e| respond::op_error(info, &name, e))?,
            // Another write took something this one picked, or charged a quota this one
            // charges: count and pick again from a fresh read (an address the user chose is
            // then reported as taken).
            (None, unallocated) if attempt < CONFLICT_RETRIES => {
                app.store.linearize().await.map_err(respond::store_error)?;
                if let Some(fresh) = unallocated {
                    object = fresh.clone();
                    strategy.allocate(app, info, &mut object, None, true)?;
                }
            }
            (None, _) => return Err(lost_races(info, &name)),
        }
    };
    Ok(respond::json_with_warnings(
        StatusCode::CREATED,
        &stored,
        &warnings,
    ))
}

/// Five characters from Kubernetes' generateName alphabet (no vowels, no look-alikes).
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .take(5)
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}
