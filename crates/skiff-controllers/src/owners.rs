//! Controller references: which object controls which, and how a controller claims children.
//!
//! An object may list many owners in `metadata.ownerReferences` but at most one with
//! `controller: true`: the controller that manages it. A ReplicaSet's pods point at the
//! ReplicaSet, a Deployment's ReplicaSets at the Deployment. The reference carries the owner's
//! uid, so a Deployment deleted and re-created under the same name does not inherit the old
//! one's children by accident.
//!
//! Claiming (Kubernetes' `ControllerRefManager`) decides, for each candidate child:
//! - it is controlled by us and still matches our selector → **owned**;
//! - it is controlled by us but its labels no longer match → **release** it (drop our
//!   reference), so a user can relabel a pod out of a ReplicaSet to debug it;
//! - nobody controls it and it matches → **adopt** it (add our reference), so pods
//!   created by hand or left by a deleted controller with `--cascade=orphan` are reused;
//! - someone else controls it → leave it alone.
//!
//! Neither adoption nor release happens while either side is being deleted.
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use skiff_api::selector::LabelSelector;

/// What a controller should do about one candidate child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    Owned,
    Adopt,
    Release,
    Ignore,
}

/// The `controller: true` owner reference of an object, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// The `namespace/name` key of the object's controller if it is a `kind`: the queue key a
/// change of a child wakes.
pub fn controller_key(meta: &ObjectMeta, kind: &str) -> Option<String> {
    controller_of(meta)
        .filter(|r| r.kind == kind)
        .map(|r| format!("{}/{}", meta.namespace.as_deref().unwrap_or(""), r.name))
}

/// A controller reference to `owner`. `blockOwnerDeletion` makes a foreground deletion of the
/// owner wait for this child to go first.
pub fn controller_ref<K>(owner: &K) -> OwnerReference
where
    K: k8s_openapi::Resource + k8s_openapi::Metadata<Ty = ObjectMeta>,
{
    let meta = owner.metadata();
    OwnerReference {
        api_version: K::API_VERSION.to_string(),
        kind: K::KIND.to_string(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Decides what the controller with `owner_uid` and `selector` does about `child`.
pub fn claim(
    owner_uid: &str,
    owner_deleting: bool,
    selector: &LabelSelector,
    child: &ObjectMeta,
) -> Claim {
    let matches = selector.matches(&child.labels.clone().unwrap_or_default());
    let child_deleting = child.deletion_timestamp.is_some();
    match controller_of(child) {
        Some(r) if r.uid == owner_uid => {
            if matches || owner_deleting || child_deleting {
                Claim::Owned
            } else {
                Claim::Release
            }
        }
        Some(_) => Claim::Ignore,
        None if matches && !owner_deleting && !child_deleting => Claim::Adopt,
        None => Claim::Ignore,
    }
}

/// `meta` with a controller reference added (adoption).
pub fn with_controller(meta: &ObjectMeta, reference: OwnerReference) -> ObjectMeta {
    let mut meta = meta.clone();
    meta.owner_references
        .get_or_insert_with(Vec::new)
        .push(reference);
    meta
}

/// `meta` without any owner reference to `owner_uid` (release).
pub fn without_owner(meta: &ObjectMeta, owner_uid: &str) -> ObjectMeta {
    let mut meta = meta.clone();
    if let Some(refs) = meta.owner_references.as_mut() {
        refs.retain(|r| r.uid != owner_uid);
        if refs.is_empty() {
            meta.owner_references = None;
        }
    }
    meta
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn meta(labels: &[(&str, &str)], controller: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            owner_references: controller.map(|uid| {
                vec![OwnerReference {
                    uid: uid.into(),
                    controller: Some(true),
                    ..OwnerReference::default()
                }]
            }),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn claim_table() {
        let selector = LabelSelector::parse("app=web").expect("selector");
        let deleting = {
            let mut m = meta(&[("app", "web")], None);
            m.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
            m
        };
        let cases = [
            (
                "ours, matching",
                meta(&[("app", "web")], Some("me")),
                false,
                Claim::Owned,
            ),
            (
                "ours, relabelled",
                meta(&[("app", "db")], Some("me")),
                false,
                Claim::Release,
            ),
            (
                "ours, relabelled, we are deleting",
                meta(&[("app", "db")], Some("me")),
                true,
                Claim::Owned,
            ),
            (
                "orphan, matching",
                meta(&[("app", "web")], None),
                false,
                Claim::Adopt,
            ),
            (
                "orphan, matching, we are deleting",
                meta(&[("app", "web")], None),
                true,
                Claim::Ignore,
            ),
            ("orphan being deleted", deleting, false, Claim::Ignore),
            (
                "orphan, not matching",
                meta(&[("app", "db")], None),
                false,
                Claim::Ignore,
            ),
            (
                "someone else's",
                meta(&[("app", "web")], Some("other")),
                false,
                Claim::Ignore,
            ),
        ];
        for (name, child, owner_deleting, want) in cases {
            assert_eq!(
                claim("me", owner_deleting, &selector, &child),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn adopt_and_release_edit_only_our_reference() {
        let child = meta(&[], None);
        let mut owner = k8s_openapi::api::apps::v1::ReplicaSet::default();
        owner.metadata.name = Some("web".into());
        owner.metadata.uid = Some("me".into());
        let adopted = with_controller(&child, controller_ref(&owner));
        let r = controller_of(&adopted).expect("controller");
        assert_eq!((r.kind.as_str(), r.uid.as_str()), ("ReplicaSet", "me"));
        assert_eq!(r.block_owner_deletion, Some(true));
        assert_eq!(without_owner(&adopted, "me").owner_references, None);
    }
}
