//! ControllerRevisions: the pod templates a StatefulSet or DaemonSet has had, numbered, so
//! `kubectl rollout history|undo` can show and restore them (Kubernetes' `history` package).
//!
//! A revision is named `<owner>-<template hash>` and its `data` is the strategic merge patch
//! that puts its template back (`{"spec": {"template": {…, "$patch": "replace"}}}`), which is
//! exactly what `kubectl rollout undo` applies.
use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use serde_json::json;

use crate::{owners, reference_to, Action, Object};

/// The pod label naming the revision a pod was made from.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// The revision a pod was made from.
pub fn of_pod(pod: &k8s_openapi::api::core::v1::Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get(REVISION_LABEL)
        .map(String::as_str)
}

/// The hash label on a ControllerRevision.
const HASH_LABEL: &str = "controller.kubernetes.io/hash";

/// The owner's side of its revisions.
pub struct Owner<'a> {
    pub reference: OwnerReference,
    pub namespace: Option<String>,
    /// The owner's selector labels, which its revisions carry (kubectl lists them by it).
    pub labels: BTreeMap<String, String>,
    pub uid: &'a str,
}

/// The revisions `owner` controls, oldest first.
pub fn owned<'a>(
    owner: &Owner<'_>,
    revisions: &'a [ControllerRevision],
) -> Vec<&'a ControllerRevision> {
    let mut owned: Vec<&ControllerRevision> = revisions
        .iter()
        .filter(|r| owners::controller_of(&r.metadata).is_some_and(|o| o.uid == owner.uid))
        .collect();
    owned.sort_by_key(|r| r.revision);
    owned
}

/// The write that makes `name` (the template's revision) the newest: a new revision, or an
/// older one renumbered (a rollback); nothing when it is the newest already.
pub fn ensure_newest(
    owner: &Owner<'_>,
    owned: &[&ControllerRevision],
    template: &PodTemplateSpec,
    name: &str,
    hash: &str,
) -> Option<Action> {
    let newest = owned.last().map_or(0, |r| r.revision);
    match owned
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some(name))
    {
        None => {
            let mut labels = owner.labels.clone();
            labels.insert(HASH_LABEL.into(), hash.into());
            let mut template = serde_json::to_value(template).unwrap_or_default();
            template["$patch"] = json!("replace");
            Some(Action::Create(Object::ControllerRevision(Box::new(
                ControllerRevision {
                    metadata: ObjectMeta {
                        name: Some(name.to_string()),
                        namespace: owner.namespace.clone(),
                        labels: Some(labels),
                        owner_references: Some(vec![owner.reference.clone()]),
                        ..ObjectMeta::default()
                    },
                    data: Some(RawExtension(json!({"spec": {"template": template}}))),
                    revision: newest + 1,
                },
            ))))
        }
        Some(existing) if existing.revision < newest => {
            let mut bumped = (*existing).clone();
            bumped.revision = newest + 1;
            Some(Action::Update(Object::ControllerRevision(Box::new(bumped))))
        }
        Some(_) => None,
    }
}

/// The template a revision holds.
pub fn template_of(revision: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut template = revision.data.as_ref()?.0.pointer("/spec/template")?.clone();
    if let Some(map) = template.as_object_mut() {
        map.remove("$patch");
    }
    serde_json::from_value(template).ok()
}

/// Deletes the oldest revisions beyond `limit` among those `in_use` does not keep.
pub fn prune(
    owned: &[&ControllerRevision],
    in_use: impl Fn(&ControllerRevision) -> bool,
    limit: i32,
) -> Vec<Action> {
    let old: Vec<&&ControllerRevision> = owned.iter().filter(|r| !in_use(r)).collect();
    let excess = old.len().saturating_sub(limit.max(0) as usize);
    old.iter()
        .take(excess)
        .map(|r| Action::delete(reference_to(**r), None))
        .collect()
}
