//! Carrying a plan out through the API: the one place controllers write.
//!
//! Every write goes to the URL skiff's resource table ([`skiff_api::resources`]) gives the
//! object's `apiVersion` and `kind`, so there is no list of kinds here: a controller may write
//! any kind the API serves. The contract (in order, stop at the first failure unless the controller keeps going, a 404 on delete
//! is success) is in the crate documentation.
use k8s_openapi::api::core::v1::ObjectReference;
use serde_json::Value;
use skiff_client::events::Recorder;
use skiff_client::{Client, DeleteOptions, Error, Method};

use crate::workqueue::WorkQueue;
use crate::{Action, Object, Propagation};

/// Applies a plan in order. A failure requeues `key` with back-off and stops the plan, unless
/// `keep_going` (the garbage collector: one object it cannot delete must not hold up the
/// rest). Returns the actions that were applied, so the loop expects to see exactly those.
pub async fn apply_plan(
    client: &Client,
    recorder: &Recorder,
    queue: &WorkQueue,
    key: &str,
    plan: Vec<Action>,
    keep_going: bool,
) -> Vec<Action> {
    let mut applied = Vec::with_capacity(plan.len());
    let mut failed = false;
    for action in plan {
        match apply(client, recorder, queue, key, &action).await {
            Ok(()) => applied.push(action),
            Err(e) if matches!(action, Action::Delete { .. }) && e.is_not_found() => {
                applied.push(action)
            }
            Err(e) => {
                if e.is_conflict() {
                    // A conflict or AlreadyExists only means the cache was behind the store.
                    tracing::debug!(%key, %action, error = %e, "controller action conflicted; requeued");
                } else {
                    tracing::warn!(%key, %action, error = %e, "controller action failed; requeued");
                }
                failed = true;
                if !keep_going {
                    break;
                }
            }
        }
    }
    if failed {
        queue.requeue_with_backoff(key);
    } else {
        queue.forget(key);
    }
    applied
}

async fn apply(
    client: &Client,
    recorder: &Recorder,
    queue: &WorkQueue,
    key: &str,
    action: &Action,
) -> Result<(), Error> {
    let json = |value: &Value| -> Result<Option<(&str, Vec<u8>)>, Error> {
        Ok(Some(("application/json", serde_json::to_vec(value)?)))
    };
    match action {
        Action::Create(object) => {
            let value = object.to_value();
            let url = collection_url(client, &object.reference())?;
            client
                .request::<Value>(Method::POST, &url, &[], json(&value)?)
                .await
                .map(drop)
        }
        Action::Update(Object::Dynamic(value)) => patch_owners(client, value).await,
        Action::Update(object) | Action::UpdateStatus(object) => {
            let mut url = object_url(client, &object.reference())?;
            if matches!(action, Action::UpdateStatus(_)) {
                url.push_str("/status");
            }
            client
                .request::<Value>(Method::PUT, &url, &[], json(&object.to_value())?)
                .await
                .map(drop)
        }
        Action::Delete {
            object,
            uid,
            propagation,
            unless_owner_exists,
            grace_period_seconds,
        } => {
            for owner in unless_owner_exists {
                if owner_exists(client, owner).await? {
                    tracing::info!(
                        object = %crate::describe(object),
                        owner = %crate::describe(owner),
                        "not collected: its owner exists (the cache was behind)"
                    );
                    return Ok(());
                }
            }
            let options = DeleteOptions {
                uid: Some(uid.clone()).filter(|u| !u.is_empty()),
                propagation_policy: propagation.map(|p| {
                    match p {
                        Propagation::Background => "Background",
                        Propagation::Foreground => "Foreground",
                        Propagation::Orphan => "Orphan",
                    }
                    .to_string()
                }),
                grace_period_seconds: *grace_period_seconds,
                ..DeleteOptions::default()
            };
            let url = object_url(client, object)?;
            client.delete_at(&url, &options).await.map(drop)
        }
        Action::Event(note) => {
            recorder.emit(
                note.regarding.clone(),
                note.type_,
                &note.reason,
                &note.message,
            );
            Ok(())
        }
        Action::RequeueAfter { after, .. } => {
            queue.add_after(key, *after);
            Ok(())
        }
    }
}

/// Whether the object `owner` names exists with the uid it names, asked of the API (not the
/// stores). A kind the API does not serve, or a reference that cannot name an object, is an
/// owner that does not exist.
async fn owner_exists(client: &Client, owner: &ObjectReference) -> Result<bool, Error> {
    let Ok(url) = object_url(client, owner) else {
        return Ok(false);
    };
    match client.request::<Value>(Method::GET, &url, &[], None).await {
        Ok(found) => {
            Ok(found.pointer("/metadata/uid").and_then(Value::as_str) == owner.uid.as_deref())
        }
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

/// A generic update: the garbage collector editing ownerReferences or finalizers of an object
/// it sees only by its metadata. A merge patch of exactly those two lists (null removes one),
/// with the resourceVersion as a compare-and-swap precondition.
async fn patch_owners(client: &Client, value: &Value) -> Result<(), Error> {
    let url = object_url(client, &crate::dynamic_reference(value))?;
    let meta = |field: &str| {
        value
            .pointer(&format!("/metadata/{field}"))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let patch = serde_json::json!({"metadata": {
        "resourceVersion": meta("resourceVersion"),
        "ownerReferences": meta("ownerReferences"),
        "finalizers": meta("finalizers"),
    }});
    let body = ("application/merge-patch+json", serde_json::to_vec(&patch)?);
    client
        .request::<Value>(Method::PATCH, &url, &[], Some(body))
        .await
        .map(drop)
}

/// The collection an object belongs in, from its `apiVersion` and `kind`.
fn collection_url(client: &Client, object: &ObjectReference) -> Result<String, Error> {
    let api_version = object.api_version.as_deref().unwrap_or_default();
    let kind = object.kind.as_deref().unwrap_or_default();
    let info = skiff_api::resources::by_kind(api_version, kind).ok_or_else(|| {
        Error::Config(format!(
            "no served resource has kind {kind} in {api_version}"
        ))
    })?;
    // Cluster-scoped objects (Nodes) have no namespace.
    let ns = object
        .namespace
        .as_deref()
        .filter(|ns| info.namespaced && !ns.is_empty());
    Ok(client.collection_url_of(info.group, info.version, info.resource, ns))
}

fn object_url(client: &Client, object: &ObjectReference) -> Result<String, Error> {
    let name = object.name.as_deref().unwrap_or_default();
    Ok(format!("{}/{name}", collection_url(client, object)?))
}
