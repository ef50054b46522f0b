//! The generic verbs on objects: get, list, create, update, patch, delete.
//!
//! Every resource goes through these same functions; what differs per resource (its type,
//! defaults, validation, field selectors) comes from skiff-api. The life of a write:
//!
//! 1. decode the body (JSON or YAML) and *admit* it: typed decode, unknown-field check,
//!    defaulting, validation (skiff_api::admission);
//! 2. fill in what the server decides: namespace, name from generateName, uid, creationTimestamp;
//! 3. propose the operation to the store; `apply` decides the revision and the compare-and-set;
//! 4. answer with the object as stored (its resourceVersion is the revision).

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value};
use skiff_api::admission::{self, FieldValidation};
use skiff_api::decode;
use skiff_api::patch;
use skiff_api::selector::{FieldSelector, LabelSelector};
use skiff_api::status::{self, ApiError};
use skiff_store::{key_prefix, object_key, revision_of, Op, OpError, Proposal};

use crate::app::App;
use crate::query::Params;
use crate::respond;
use crate::services::{self, InUse};
use crate::tables::{self, TableOptions};
use crate::target::Target;

/// Namespaces that always exist and may not be deleted.
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

/// How many times a patch or update without a client precondition retries after losing a race.
const CONFLICT_RETRIES: usize = 5;

pub type Result<T> = std::result::Result<T, ApiError>;

fn name_of(target: &Target) -> Result<&str> {
    target.name.as_deref().ok_or_else(|| {
        ApiError::MethodNotAllowed("this operation needs an object name in the path".into())
    })
}

fn check_subresource(target: &Target) -> Result<()> {
    match target.subresource.as_deref() {
        None => Ok(()),
        Some(sub) if target.info.subresources.contains(&sub) => Ok(()),
        Some(sub) => Err(ApiError::NotFound {
            resource: format!("{}/{sub}", target.info.qualified_resource()),
            name: target.name.clone().unwrap_or_default(),
        }),
    }
}

/// GET of one object (or its status subresource, which is the whole object in Kubernetes);
/// a one-row Table when `table` says the client asked for one.
pub async fn get(
    app: &App,
    target: &Target,
    params: &Params,
    table: Option<TableOptions>,
) -> Result<Response> {
    check_subresource(target)?;
    let name = name_of(target)?;
    if !params.any_version_ok() {
        app.store.linearize().await.map_err(respond::store_error)?;
    }
    let object = match app.store.get(&target.key()) {
        Some(object) => object,
        None => node_lease(app, target, name).ok_or_else(|| not_found(target, name))?,
    };
    Ok(match table {
        Some(options) => respond::json(
            StatusCode::OK,
            &tables::for_object(
                &target.info.qualified_resource(),
                &object,
                options,
                jiff::Timestamp::now(),
            ),
        ),
        None => respond::json(StatusCode::OK, &object),
    })
}

/// The object at `key`, re-read after a read index if this member does not have it: a write
/// checks what it depends on against local state (fast), and only a miss pays for the round
/// trip that tells "does not exist" from "not applied here yet".
async fn get_fresh(app: &App, key: &str) -> Result<Option<Arc<Value>>> {
    if let Some(object) = app.store.get(key) {
        return Ok(Some(object));
    }
    app.store.linearize().await.map_err(respond::store_error)?;
    Ok(app.store.get(key))
}

/// Whether `target` addresses leases in `kube-node-lease` (or in every namespace), where each
/// Node has a Lease made up from the heartbeat table (see nodes.rs).
fn has_node_leases(target: &Target) -> bool {
    target.info.qualified_resource() == "leases.coordination.k8s.io"
        && target
            .namespace
            .as_deref()
            .is_none_or(|ns| ns == crate::nodes::NODE_LEASE_NAMESPACE)
}

/// The made-up Lease of node `name`, when `target` is a node lease and that Node exists.
fn node_lease(app: &App, target: &Target, name: &str) -> Option<Arc<Value>> {
    if !has_node_leases(target) {
        return None;
    }
    let node = app.store.get(&object_key("nodes", "", name))?;
    let mut leases = crate::nodes::node_leases(app, [node.as_ref()], &Default::default());
    leases.pop().map(Arc::new)
}

/// The made-up node leases a list of `target` includes besides the stored `items`.
fn node_leases(app: &App, target: &Target, items: &[Arc<Value>]) -> Vec<Arc<Value>> {
    if !has_node_leases(target) {
        return Vec::new();
    }
    let stored: std::collections::HashSet<String> = items
        .iter()
        .filter(|l| {
            l.pointer("/metadata/namespace").and_then(Value::as_str)
                == Some(crate::nodes::NODE_LEASE_NAMESPACE)
        })
        .filter_map(|l| Some(l.pointer("/metadata/name")?.as_str()?.to_string()))
        .collect();
    let (nodes, _) = app.store.list(&key_prefix("nodes", None));
    crate::nodes::node_leases(app, nodes.iter().map(|n| n.as_ref()), &stored)
        .into_iter()
        .map(Arc::new)
        .collect()
}

fn not_found(target: &Target, name: &str) -> ApiError {
    ApiError::NotFound {
        resource: target.info.qualified_resource(),
        name: name.into(),
    }
}

/// The selectors of a list or watch request, checked against the resource.
pub struct Filter {
    labels: Option<LabelSelector>,
    fields: Option<FieldSelector>,
}

impl Filter {
    pub fn from_params(target: &Target, params: &Params) -> Result<Filter> {
        let labels = match params.label_selector.as_deref() {
            Some(s) if !s.trim().is_empty() => Some(LabelSelector::parse(s)?),
            _ => None,
        };
        let fields = match params.field_selector.as_deref() {
            Some(s) if !s.trim().is_empty() => {
                let selector = FieldSelector::parse(s)?;
                selector.validate(target.info)?;
                Some(selector)
            }
            _ => None,
        };
        Ok(Filter { labels, fields })
    }

    pub fn matches(&self, object: &Value) -> bool {
        if let Some(labels) = &self.labels {
            if !labels.matches(&skiff_api::selector::labels_of(object)) {
                return false;
            }
        }
        match &self.fields {
            Some(fields) => fields.matches(object),
            None => true,
        }
    }
}

/// GET of a collection (not a watch); a Table when `table` says the client asked for one.
pub async fn list(
    app: &App,
    target: &Target,
    params: &Params,
    table: Option<TableOptions>,
) -> Result<Response> {
    let filter = Filter::from_params(target, params)?;
    if !params.any_version_ok() {
        app.store.linearize().await.map_err(respond::store_error)?;
    }
    let (mut items, revision) = app.store.list(&target.prefix());
    let made_up = node_leases(app, target, &items);
    items.extend(made_up);
    let items: Vec<Arc<Value>> = items.into_iter().filter(|o| filter.matches(o)).collect();
    Ok(match table {
        Some(options) => respond::json(
            StatusCode::OK,
            &tables::for_list(
                &target.info.qualified_resource(),
                items.iter().map(|o| o.as_ref()),
                revision,
                None,
                options,
                jiff::Timestamp::now(),
            ),
        ),
        None => respond::list(target.info, revision, &items),
    })
}

/// POST to a collection.
pub async fn create(
    app: &App,
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
    let mut body = decode::decode_object(body, content_type)?;
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
    let admitted = admission::admit(info, body, validation)?;
    let mut object = admitted.object;
    reset_status_on_create(info.resource, &mut object);
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
    meta.insert("uid".into(), Value::from(uuid::Uuid::new_v4().to_string()));
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

    // Services get their ClusterIP and node ports here; the lock is held until the write is in.
    // The object as it was before, to allocate again from if another member wins an address.
    let unallocated = is_service(target).then(|| object.clone());
    let _allocation = match is_service(target) {
        true => Some(allocate_service_addresses(app, info, &mut object).await?),
        false => None,
    };
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
            &admitted.warnings,
        ));
    }
    let mut attempt = 0;
    let stored = loop {
        attempt += 1;
        let claims = match &unallocated {
            Some(_) => services::claims(&object, None, |k| app.store.get(k)),
            None => Ok(Vec::new()),
        };
        let create = Op::Create {
            key: key.clone(),
            object: object.clone(),
        };
        let written = match claims {
            Ok(claims) => write_with_claims(app, create, claims).await?,
            Err(services::ClaimLost) => None,
        };
        match (written, &unallocated) {
            (Some(result), _) => break result.map_err(|e| respond::op_error(info, &name, e))?,
            // Another member's Service took an address this one picked: pick again from a
            // fresh read (an address the user chose is then reported as taken).
            (None, Some(fresh)) if attempt < CONFLICT_RETRIES => {
                object = fresh.clone();
                allocate_from_fresh_read(app, info, &mut object, true).await?;
            }
            (None, _) => return Err(addresses_taken(info, &name)),
        }
    };
    Ok(respond::json_with_warnings(
        StatusCode::CREATED,
        &stored,
        &admitted.warnings,
    ))
}

/// Writes `op` (of a Service, or of anything when `claims` is empty) in one atomic proposal
/// with the claims on the addresses it takes (see services.rs). `None`: a claim was lost to a
/// concurrent write, so nothing was written and the caller allocates again.
async fn write_with_claims(
    app: &App,
    op: Op,
    claims: Vec<Op>,
) -> Result<Option<std::result::Result<Value, OpError>>> {
    if claims.is_empty() {
        return Ok(Some(
            app.store
                .propose_one(op)
                .await
                .map_err(respond::store_error)?,
        ));
    }
    let mut ops = vec![op];
    ops.extend(claims);
    Ok(
        match app
            .store
            .propose(Proposal::Atomic(ops))
            .await
            .map_err(respond::store_error)?
        {
            // The first object is `op`'s; the claims' follow.
            Ok(objects) => Some(Ok(objects.into_iter().next().unwrap_or(Value::Null))),
            // The Service's own write failed (it exists, a stale resourceVersion): that error.
            Err(OpError::AtomicAborted { index: 0, cause }) => Some(Err(*cause)),
            Err(OpError::AtomicAborted { .. }) => None,
            Err(e) => Some(Err(e)),
        },
    )
}

/// A Service write that lost its addresses to concurrent writes on every retry.
fn addresses_taken(info: &skiff_api::resources::ResourceInfo, name: &str) -> ApiError {
    ApiError::Conflict {
        resource: info.qualified_resource(),
        name: name.to_string(),
        message: "its addresses were taken by concurrent writes; try again".into(),
    }
}

/// PUT of an object or its status.
pub async fn update(
    app: &App,
    target: &Target,
    params: &Params,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Response> {
    check_subresource(target)?;
    let name = name_of(target)?.to_string();
    let validation = FieldValidation::parse(params.field_validation.as_deref())?;
    let body = decode::decode_object(body, content_type)?;
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
    write_with_retries(app, target, params, &name, precondition, |current| {
        let mut admitted = admission::admit(target.info, body.clone(), validation)?;
        patch::apply::record_update(Some(current), &mut admitted.object, &manager, &now());
        Ok(admitted)
    })
    .await
}

/// PATCH of an object or its status.
pub async fn patch(
    app: &App,
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
        return server_side_apply(app, target, params, &name, body, validation).await;
    }
    let manager = params.manager();
    write_with_retries(app, target, params, &name, None, |current| {
        let patched = patch::apply_patch(current, body, &content_type)?;
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
    config = admission::with_type_meta(target.info, config)?;
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
        let collection = Target {
            name: None,
            ..target.clone()
        };
        let bytes = serde_json::to_vec(&created)
            .map_err(|e| ApiError::Internal(format!("encoding the applied object: {e}")))?;
        return create(app, &collection, params, Some("application/json"), &bytes).await;
    }
    let force = params.force();
    write_with_retries(app, target, params, name, None, |current| {
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
    let allocating = is_service(target) && target.subresource.is_none();
    let _allocation = match allocating {
        true => Some(app.services.lock().await),
        false => None,
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
        if allocating {
            let skip = (target.namespace.as_deref().unwrap_or(""), name);
            let mut used = services_in_use(app, Some(skip));
            if attempt > 1 {
                used.scatter(&uuid::Uuid::new_v4().to_string());
            }
            services::allocate(&app.services, info, &mut object, Some(&current), &mut used)?;
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
                &admitted.warnings,
            ));
        }
        if dry_run {
            return Ok(respond::json_with_warnings(
                StatusCode::OK,
                &object,
                &admitted.warnings,
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
        // A Service that takes new addresses claims them in the same proposal (services.rs).
        let claims = match allocating && !finishes_deletion {
            true => services::claims(&object, Some(&current), |k| app.store.get(k)),
            false => Ok(Vec::new()),
        };
        let written = match claims {
            Ok(claims) => write_with_claims(app, op, claims).await?,
            Err(services::ClaimLost) => None,
        };
        let Some(result) = written else {
            if attempt < CONFLICT_RETRIES {
                continue;
            }
            return Err(addresses_taken(info, name));
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
                    &admitted.warnings,
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

/// DELETE of an object. Namespaces take everything inside them along, atomically.
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
    if info.resource == "namespaces" && SYSTEM_NAMESPACES.contains(&name.as_str()) {
        return Err(ApiError::Forbidden(format!(
            "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
        )));
    }
    let uid = current
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let marked = finalizing_deletion(&current, &options)
        .or_else(|| graceful_deletion(info.resource, &current, &options));
    if let Some(marked) = marked {
        // The object stays, marked for deletion: the agent running the pod removes it once its
        // containers have stopped, or the garbage collector once its finalizers are done.
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
        if info.resource == "namespaces" {
            ops.extend(contents_of_namespace(app, &name));
        }
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
            // Something inside the namespace was deleted meanwhile: list its contents again.
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
fn is_service(target: &Target) -> bool {
    target.info.group.is_empty() && target.info.resource == "services"
}

/// Takes the allocation lock, reads what every Service holds and gives `object` its
/// addresses; the returned guard must live until the object is written.
async fn allocate_service_addresses<'a>(
    app: &'a App,
    info: &skiff_api::resources::ResourceInfo,
    object: &mut Value,
) -> Result<tokio::sync::MutexGuard<'a, ()>> {
    let guard = app.services.lock().await;
    allocate_from_fresh_read(app, info, object, false).await?;
    Ok(guard)
}

/// Gives a new Service its addresses from what every stored Service holds after a read index.
/// `scatter`: start the ClusterIP search at a random point, after losing a claim to another
/// member (see [`services::InUse::scatter`]). The caller holds the allocation lock.
async fn allocate_from_fresh_read(
    app: &App,
    info: &skiff_api::resources::ResourceInfo,
    object: &mut Value,
    scatter: bool,
) -> Result<()> {
    app.store.linearize().await.map_err(respond::store_error)?;
    let mut used = services_in_use(app, None);
    if scatter {
        used.scatter(&uuid::Uuid::new_v4().to_string());
    }
    services::allocate(&app.services, info, object, None, &mut used)
}

/// The addresses every stored Service holds, but the one at `skip` (namespace, name).
fn services_in_use(app: &App, skip: Option<(&str, &str)>) -> InUse {
    let (all, _) = app.store.list(&key_prefix("services", None));
    InUse::from_services(all.iter().map(|v| v.as_ref()), skip)
}

fn finalizers_of(object: &Value) -> Vec<String> {
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

/// Graceful deletion (Kubernetes' `BeforeDelete`): a pod running on a node is not removed at
/// once but marked with `deletionTimestamp` = now + grace period, so its agent can stop the
/// containers (SIGTERM, wait, SIGKILL) and then delete it for good with a grace period of 0.
/// Pods that never reached a node, pods that finished, and a grace period of 0 (`--force`)
/// delete at once. A second delete may shorten the grace period, never lengthen it.
///
/// Returns the marked object, or `None` when the object should be removed now.
fn graceful_deletion(resource: &str, current: &Value, options: &Value) -> Option<Value> {
    if resource != "pods" {
        return None;
    }
    let on_node = current
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let phase = current.pointer("/status/phase").and_then(Value::as_str);
    if !on_node || matches!(phase, Some("Succeeded") | Some("Failed")) {
        return None;
    }
    let requested = options.get("gracePeriodSeconds").and_then(Value::as_i64);
    let pod_default = current
        .pointer("/spec/terminationGracePeriodSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(30);
    let already = current
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64);
    let grace = requested.unwrap_or(pod_default).max(0);
    if grace == 0 {
        return None;
    }
    if already.is_some_and(|a| a <= grace) {
        return Some(current.clone());
    }
    let mut marked = current.clone();
    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(grace);
    marked["metadata"]["deletionTimestamp"] = at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string().into();
    marked["metadata"]["deletionGracePeriodSeconds"] = grace.into();
    Some(marked)
}

/// Delete operations for every object inside namespace `ns`.
fn contents_of_namespace(app: &App, ns: &str) -> Vec<Op> {
    skiff_api::resources::RESOURCES
        .iter()
        .filter(|r| r.namespaced)
        .flat_map(|r| {
            let (items, _) = app
                .store
                .list(&skiff_store::key_prefix(&r.qualified_resource(), Some(ns)));
            items.into_iter().filter_map(move |o| {
                let name = o.pointer("/metadata/name")?.as_str()?.to_string();
                Some(Op::Delete {
                    key: object_key(&r.qualified_resource(), ns, &name),
                    expected_uid: None,
                    expected_revision: None,
                })
            })
        })
        .collect()
}

/// What a new object's status starts as: the client does not get to claim observed state (a
/// Deployment created from `-o yaml` output must not say its replicas are available). Nodes
/// keep theirs, as in Kubernetes: the agent registering a node reports its capacity.
fn reset_status_on_create(resource: &str, object: &mut Value) {
    let fresh = match resource {
        "pods" => Some(serde_json::json!({"phase": "Pending"})),
        "namespaces" => Some(serde_json::json!({"phase": "Active"})),
        "deployments" | "replicasets" | "services" => None,
        _ => return,
    };
    if let Some(root) = object.as_object_mut() {
        match fresh {
            Some(status) => {
                root.insert("status".into(), status);
            }
            None => {
                root.remove("status");
            }
        }
    }
}

fn metadata_of(object: &mut Value) -> Result<&mut Map<String, Value>> {
    object
        .as_object_mut()
        .and_then(|o| {
            o.entry("metadata")
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
        })
        .ok_or_else(|| ApiError::BadRequest("metadata must be an object".into()))
}

/// Kubernetes' `Time`: RFC 3339 in UTC with whole seconds.
pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
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
