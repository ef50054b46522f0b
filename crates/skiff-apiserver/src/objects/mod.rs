//! The generic verbs on objects: get, list, create, update, patch, delete.
//!
//! Every resource goes through these same functions, and they know no resource by name: what
//! differs per resource comes from skiff-api (its type, defaults, validation, field selectors)
//! and from its strategy ([`crate::registry`]: initial status, allocated addresses, graceful
//! deletion, cascades, objects made up on read). The life of a write:
//!
//! 1. decode the body (JSON, YAML or protobuf) and *admit* it: typed decode, unknown-field
//!    check, defaulting, validation (skiff_api::admission);
//! 2. fill in what the server decides: namespace, name from generateName, uid,
//!    creationTimestamp, and whatever the strategy prepares or allocates;
//! 3. propose the operation to the store, with the strategy's extra operations in the same
//!    atomic proposal; `apply` decides the revision and the compare-and-set;
//! 4. answer with the object as stored (its resourceVersion is the revision).
//!
//! ## Layout
//! - this file: get, list, their selectors, and what the verbs share.
//! - `create`: POST.
//! - `update`: PUT, PATCH and server-side apply, and the status subresource.
//! - `delete`: DELETE, finalizers, and the strategy's graceful deletion and cascade.
//! - `tests`: the verbs against a real one-member store.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value};
use skiff_api::selector::{FieldSelector, LabelSelector};
use skiff_api::status::ApiError;
use skiff_store::{Op, OpError, Proposal};

use crate::app::App;
use crate::query::Params;
use crate::registry::strategy_for;
use crate::respond;
use crate::tables::{self, TableOptions};
use crate::target::Target;

mod create;
mod delete;
mod pages;
mod update;

#[cfg(test)]
mod tests;

pub use create::create;
pub use delete::delete;
pub use update::{patch, update};

/// How many times a write without a client precondition retries after losing a race.
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
        None => strategy_for(target.info)
            .made_up(app, target.namespace.as_deref(), name)
            .map(Arc::new)
            .ok_or_else(|| not_found(target, name))?,
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
    let made_up = strategy_for(target.info).made_up_list(app, target.namespace.as_deref(), &items);
    items.extend(made_up.into_iter().map(Arc::new));
    let items: Vec<Arc<Value>> = items.into_iter().filter(|o| filter.matches(o)).collect();
    let selected = params
        .label_selector
        .as_deref()
        .is_some_and(|s| !s.is_empty())
        || params
            .field_selector
            .as_deref()
            .is_some_and(|s| !s.is_empty());
    let page = pages::page(target, params, revision, items, selected)?;
    let next = page.next.as_ref().map(|t| (t.as_str(), page.remaining));
    Ok(match table {
        Some(options) => {
            let mut table = tables::for_list(
                &target.info.qualified_resource(),
                page.items.iter().map(|o| o.as_ref()),
                page.revision,
                page.next.as_deref(),
                options,
                jiff::Timestamp::now(),
            );
            if let Some(remaining) = page.remaining.filter(|_| page.next.is_some()) {
                table["metadata"]["remainingItemCount"] = remaining.into();
            }
            respond::json(StatusCode::OK, &table)
        }
        None => respond::list(target.info, page.revision, &page.items, next),
    })
}

/// Writes `op` in one atomic proposal with the strategy's `claims` on what it takes (see
/// [`crate::registry::Strategy::claims`]). `None`: a claim was lost to a concurrent write, so
/// nothing was written and the caller allocates again.
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
            // The object's own write failed (it exists, a stale resourceVersion): that error.
            Err(OpError::AtomicAborted { index: 0, cause }) => Some(Err(*cause)),
            Err(OpError::AtomicAborted { .. }) => None,
            Err(e) => Some(Err(e)),
        },
    )
}

/// A write that lost what it allocated, or the quota it charged, to concurrent writes on
/// every retry.
fn lost_races(info: &skiff_api::resources::ResourceInfo, name: &str) -> ApiError {
    ApiError::Conflict {
        resource: info.qualified_resource(),
        name: name.to_string(),
        message:
            "its addresses or its namespace's quota were taken by concurrent writes; try again"
                .into(),
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
