//! Kubernetes' strategic merge patch (`application/strategic-merge-patch+json`).
//!
//! A strategic merge patch reads like a JSON merge patch (maps merge, `null` deletes a key), but
//! it knows that some lists are really maps in disguise: a Pod's `containers` are named, so a
//! patch that mentions only container `b` must update `b` and leave `a` alone, where a merge
//! patch would replace the whole list. This is what `kubectl apply`, `kubectl set image` and the
//! client libraries' `patch_*` calls send.
//!
//! ## How a list merges
//! Kubernetes reads each list's strategy from struct tags on its Go types
//! (`patchStrategy:"merge" patchMergeKey:"name"`). We have no Go types, so [`RULES`] is that
//! information as a table, keyed by *where* a field sits ([`Ctx`]) and its name, not by its
//! exact path. A Pod's spec is at `spec`, a Deployment's at `spec.template.spec`, a CronJob's at
//! `spec.jobTemplate.spec.template.spec`; all three are a [`Ctx::PodSpec`], so one row covers
//! `containers` in every kind. A list with no row is atomic: the patch replaces it.
//!
//! - [`ListStrategy::MergeByKey`]: patch elements whose key matches an element of the list
//!   merge into it; the others are appended.
//! - [`ListStrategy::Union`]: a list of strings merged as a set that keeps its order
//!   (`metadata.finalizers`).
//! - [`ListStrategy::Atomic`]: the patch's list replaces the stored one.
//!
//! ## Directives
//! Keys starting with `$` in the patch steer the merge and are never stored:
//! - `{"$patch": "replace", ...}` in a map: the map becomes the rest of the patch map.
//! - `{"$patch": "delete"}` in a map: the map is removed.
//! - `[{"$patch": "replace"}, ...]` in a list: the list becomes the rest of the patch list.
//! - `[{"$patch": "delete", "name": "b"}]` in a merged list: element `b` is removed.
//! - `"$retainKeys": ["type"]` in a map: after merging, only the listed keys stay. `kubectl
//!   apply` sends it for fields with a "retainKeys" strategy (a Deployment's `strategy`), so
//!   switching `type` to `Recreate` also drops the old `rollingUpdate`.
//! - `"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}]`: after merging the list
//!   `containers`, the named elements come first, in this order; the others keep their order.
//! - `"$deleteFromPrimitiveList/finalizers": ["x"]`: removes those values from the list.
//!
//! ## Caveats
//! - Only the built-in fields in [`RULES`] merge by key. Kubernetes refuses strategic merge
//!   patches for custom resources (they have no Go types); we merge their lists atomically.
//! - `$setElementOrder` uses the simple rule above, not apimachinery's interleaving of the
//!   patch's order with the server-only elements; both agree whenever the patch names every
//!   element, which is what `kubectl apply` sends.
//! - `{"$patch": "delete"}` on a map removes the key; apimachinery leaves an empty map `{}`.

use serde_json::{Map, Value};

use crate::status::ApiError;

/// The `$patch` key: `replace` or `delete` the map (or list) it sits in.
const PATCH: &str = "$patch";
/// The `$retainKeys` key: the keys the merged map keeps.
const RETAIN_KEYS: &str = "$retainKeys";
/// Prefix of `$setElementOrder/<field>`: the order of list `<field>` after merging.
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
/// Prefix of `$deleteFromPrimitiveList/<field>`: values to remove from list `<field>`.
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

/// Applies a strategic merge patch to a stored object and returns the patched object.
///
/// The object's own `kind` says where its pod spec is (at `spec` for a Pod, under a `template`
/// for the workload kinds), which decides how its lists merge. A patch that is not a JSON
/// object, or that uses a directive wrongly (an unknown `$patch` value, a merged list element
/// without its merge key), is a `400 BadRequest`.
pub fn strategic_merge(current: &Value, patch: &Value) -> Result<Value, ApiError> {
    let Value::Object(patch) = patch else {
        return Err(ApiError::BadRequest(format!(
            "a strategic merge patch must be a JSON object, not {}",
            crate::decode::json_type(patch)
        )));
    };
    let original = match current {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    let merger = Merger {
        kind: current.get("kind").and_then(Value::as_str).unwrap_or(""),
    };
    // `{"$patch": "delete"}` at the top deletes "the object"; what is left is an empty one,
    // as in apimachinery, and validation refuses it.
    let merged = merger.merge_map(original, patch, Ctx::Root)?;
    Ok(Value::Object(merged.unwrap_or_default()))
}

/// What kind of map we are inside, as far as list strategies care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ctx {
    /// The object itself.
    Root,
    /// `metadata`, the object's or a template's.
    Metadata,
    /// A pod template (`spec.template` of the workload kinds).
    Template,
    /// A PodSpec: a Pod's `spec`, or a template's `spec`.
    PodSpec,
    /// One element of a PodSpec's `containers`, `initContainers` or `ephemeralContainers`.
    Container,
    /// A Service's `spec`.
    ServiceSpec,
    /// The object's `status`.
    Status,
    /// In a rule's `parent`: any map. As a map's own context: one with no rules of its own.
    Any,
}

/// How a list field merges with the patch's list of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListStrategy {
    /// The patch's list replaces the stored one.
    Atomic,
    /// Elements are maps, identified by the value of this key.
    MergeByKey(&'static str),
    /// Elements are primitives; the result is the stored list plus the patch's new values.
    Union,
}

/// One row of the merge table: field `field` of a map in context `parent` (of an object of
/// kind `kind`, when given) is a list with strategy `list`, and its maps (or the map itself,
/// for a map-valued field) are in context `child`.
#[derive(Debug)]
pub struct Rule {
    /// The context of the map holding the field ([`Ctx::Any`]: every map).
    pub parent: Ctx,
    /// The object kind the row is for; `None` for every kind.
    pub kind: Option<&'static str>,
    /// The field's name in that map.
    pub field: &'static str,
    /// How the field merges when it is a list.
    pub list: ListStrategy,
    /// The context of the field's value (a map) or of its elements (a list of maps).
    pub child: Ctx,
}

/// Shorthand for the table below.
const fn rule(parent: Ctx, field: &'static str, list: ListStrategy, child: Ctx) -> Rule {
    Rule {
        parent,
        kind: None,
        field,
        list,
        child,
    }
}

use ListStrategy::{Atomic, MergeByKey, Union};

/// The merge table: the `patchStrategy`/`patchMergeKey` tags of the Kubernetes types skiff
/// serves, plus the rows that say how to reach the maps that hold those lists. The first row
/// that matches wins; a field with no row is an atomic list (or a map with no rules).
///
/// | where                          | field                                    | merges by       |
/// |--------------------------------|------------------------------------------|-----------------|
/// | metadata                       | `ownerReferences`                        | `uid`           |
/// | metadata                       | `finalizers`                             | set union       |
/// | pod spec                       | `containers`, `initContainers`, `ephemeralContainers` | `name` |
/// | pod spec                       | `volumes`, `imagePullSecrets`            | `name`          |
/// | pod spec                       | `hostAliases`                            | `ip`            |
/// | pod spec                       | `tolerations`                            | atomic          |
/// | container                      | `env`                                    | `name`          |
/// | container                      | `ports`                                  | `containerPort` |
/// | container                      | `volumeMounts`                           | `mountPath`     |
/// | container                      | `volumeDevices`                          | `devicePath`    |
/// | container                      | `envFrom`                                | atomic          |
/// | Service spec                   | `ports`                                  | `port`          |
/// | status                         | `conditions`                             | `type`          |
pub const RULES: &[Rule] = &[
    // How to get there: which maps are metadata, pod specs, containers.
    rule(Ctx::Root, "metadata", Atomic, Ctx::Metadata),
    Rule {
        kind: Some("Pod"),
        ..rule(Ctx::Root, "spec", Atomic, Ctx::PodSpec)
    },
    Rule {
        kind: Some("Service"),
        ..rule(Ctx::Root, "spec", Atomic, Ctx::ServiceSpec)
    },
    rule(Ctx::Root, "status", Atomic, Ctx::Status),
    // Deployment, ReplicaSet, StatefulSet, DaemonSet, Job: `spec.template`; CronJob:
    // `spec.jobTemplate.spec.template`.
    rule(Ctx::Any, "template", Atomic, Ctx::Template),
    rule(Ctx::Template, "metadata", Atomic, Ctx::Metadata),
    rule(Ctx::Template, "spec", Atomic, Ctx::PodSpec),
    // metadata
    rule(
        Ctx::Metadata,
        "ownerReferences",
        MergeByKey("uid"),
        Ctx::Any,
    ),
    rule(Ctx::Metadata, "finalizers", Union, Ctx::Any),
    // PodSpec
    rule(
        Ctx::PodSpec,
        "containers",
        MergeByKey("name"),
        Ctx::Container,
    ),
    rule(
        Ctx::PodSpec,
        "initContainers",
        MergeByKey("name"),
        Ctx::Container,
    ),
    rule(
        Ctx::PodSpec,
        "ephemeralContainers",
        MergeByKey("name"),
        Ctx::Container,
    ),
    rule(Ctx::PodSpec, "volumes", MergeByKey("name"), Ctx::Any),
    rule(
        Ctx::PodSpec,
        "imagePullSecrets",
        MergeByKey("name"),
        Ctx::Any,
    ),
    rule(Ctx::PodSpec, "hostAliases", MergeByKey("ip"), Ctx::Any),
    rule(Ctx::PodSpec, "tolerations", Atomic, Ctx::Any),
    // Container
    rule(Ctx::Container, "env", MergeByKey("name"), Ctx::Any),
    rule(
        Ctx::Container,
        "ports",
        MergeByKey("containerPort"),
        Ctx::Any,
    ),
    rule(
        Ctx::Container,
        "volumeMounts",
        MergeByKey("mountPath"),
        Ctx::Any,
    ),
    rule(
        Ctx::Container,
        "volumeDevices",
        MergeByKey("devicePath"),
        Ctx::Any,
    ),
    rule(Ctx::Container, "envFrom", Atomic, Ctx::Any),
    // Service
    rule(Ctx::ServiceSpec, "ports", MergeByKey("port"), Ctx::Any),
    // status: Pod, Deployment, ReplicaSet, Node (and Job, Namespace...) conditions.
    rule(Ctx::Status, "conditions", MergeByKey("type"), Ctx::Any),
];

/// The strategy of field `field` in a map in context `parent`, and the context of its maps.
pub fn lookup(kind: &str, parent: Ctx, field: &str) -> (ListStrategy, Ctx) {
    RULES
        .iter()
        .find(|r| {
            r.field == field
                && (r.parent == parent || r.parent == Ctx::Any)
                && r.kind.is_none_or(|k| k == kind)
        })
        .map_or((Atomic, Ctx::Any), |r| (r.list, r.child))
}

/// One merge: the kind of the object being patched, which some rules depend on.
struct Merger<'a> {
    kind: &'a str,
}

/// The directives found in one patch map, gathered before its fields merge.
#[derive(Default)]
struct Directives<'p> {
    retain_keys: Option<Vec<&'p str>>,
    set_element_order: Vec<(&'p str, &'p [Value])>,
    delete_from_primitive_list: Vec<(&'p str, &'p [Value])>,
}

impl Merger<'_> {
    /// Merges patch map `patch` into `original`. `None` means the patch deleted the map.
    fn merge_map(
        &self,
        mut original: Map<String, Value>,
        patch: &Map<String, Value>,
        ctx: Ctx,
    ) -> Result<Option<Map<String, Value>>, ApiError> {
        match patch.get(PATCH) {
            None => {}
            Some(Value::String(s)) if s == "delete" => return Ok(None),
            // Merging the rest into nothing, rather than copying it, still runs the nested
            // directives and drops the `null`s, so no `$` key is stored.
            Some(Value::String(s)) if s == "replace" => original = Map::new(),
            Some(other) => return Err(unknown_patch_type(other)),
        }
        let directives = directives(patch)?;

        for (field, values) in &directives.delete_from_primitive_list {
            if let Some(Value::Array(list)) = original.get_mut(*field) {
                list.retain(|v| !values.contains(v));
            }
        }

        for (field, value) in patch {
            if field.starts_with('$') && is_directive(field) {
                continue;
            }
            let (list, child) = lookup(self.kind, ctx, field);
            let merged = self.merge_value(original.remove(field), value, list, child)?;
            if let Some(merged) = merged {
                original.insert(field.clone(), merged);
            }
        }

        for (field, order) in &directives.set_element_order {
            let (list, _) = lookup(self.kind, ctx, field);
            if let Some(Value::Array(items)) = original.get_mut(*field) {
                let key = match list {
                    MergeByKey(key) => Some(key),
                    Atomic | Union => None,
                };
                *items = reorder(std::mem::take(items), order, key);
            }
        }

        if let Some(keep) = &directives.retain_keys {
            original.retain(|k, _| keep.contains(&k.as_str()));
        }
        Ok(Some(original))
    }

    /// Merges a patch value into the stored value of a field (`None`: the field is absent).
    /// Returns `None` when the field is to be removed.
    fn merge_value(
        &self,
        original: Option<Value>,
        patch: &Value,
        list: ListStrategy,
        child: Ctx,
    ) -> Result<Option<Value>, ApiError> {
        Ok(match patch {
            Value::Null => None,
            Value::Object(patch) => {
                let base = match original {
                    Some(Value::Object(map)) => map,
                    _ => Map::new(),
                };
                self.merge_map(base, patch, child)?.map(Value::Object)
            }
            Value::Array(patch) => {
                let base = match original {
                    Some(Value::Array(items)) => items,
                    _ => Vec::new(),
                };
                Some(Value::Array(self.merge_list(base, patch, list, child)?))
            }
            primitive => Some(primitive.clone()),
        })
    }

    /// Merges a patch list into a stored list with the field's strategy.
    fn merge_list(
        &self,
        original: Vec<Value>,
        patch: &[Value],
        list: ListStrategy,
        child: Ctx,
    ) -> Result<Vec<Value>, ApiError> {
        // `[{"$patch": "replace"}, ...]`: whatever the strategy, the rest is the new list.
        let replace = patch.iter().any(|item| {
            item.get(PATCH).and_then(Value::as_str) == Some("replace")
                && item.as_object().is_some_and(|m| m.len() == 1)
        });
        if replace || list == Atomic {
            let mut out = Vec::new();
            for item in patch {
                if item.get(PATCH).is_some() && item.as_object().is_some_and(|m| m.len() == 1) {
                    continue;
                }
                // Elements go through a merge with nothing so their own directives run.
                if let Some(item) = self.merge_value(None, item, Atomic, child)? {
                    out.push(item);
                }
            }
            return Ok(out);
        }

        let mut merged = original;
        match list {
            // Returned above: the patch's list is the new list.
            Atomic => {}
            Union => {
                for item in patch {
                    if !merged.contains(item) {
                        merged.push(item.clone());
                    }
                }
            }
            MergeByKey(key) => {
                for item in patch {
                    let Value::Object(item) = item else {
                        return Err(ApiError::BadRequest(format!(
                            "strategic merge patch: list elements merged by \"{key}\" must be objects, not {}",
                            crate::decode::json_type(item)
                        )));
                    };
                    let Some(id) = item.get(key) else {
                        return Err(ApiError::BadRequest(format!(
                            "strategic merge patch: list element does not contain declared merge key \"{key}\": {}",
                            Value::Object(item.clone())
                        )));
                    };
                    let position = merged.iter().position(|e| e.get(key) == Some(id));
                    match item.get(PATCH) {
                        Some(Value::String(s)) if s == "delete" => {
                            merged.retain(|e| e.get(key) != Some(id));
                            continue;
                        }
                        None => {}
                        // `replace` on one element: that element becomes the patch element.
                        Some(Value::String(s)) if s == "replace" => {}
                        Some(other) => return Err(unknown_patch_type(other)),
                    }
                    match position {
                        Some(i) => {
                            let stored = match std::mem::take(&mut merged[i]) {
                                Value::Object(map) => map,
                                _ => Map::new(),
                            };
                            match self.merge_map(stored, item, child)? {
                                Some(map) => merged[i] = Value::Object(map),
                                None => {
                                    merged.remove(i);
                                }
                            }
                        }
                        None => {
                            if let Some(map) = self.merge_map(Map::new(), item, child)? {
                                merged.push(Value::Object(map));
                            }
                        }
                    }
                }
            }
        }
        Ok(merged)
    }
}

/// Whether a `$`-key is one of the directives; other `$` keys are ordinary fields.
fn is_directive(key: &str) -> bool {
    key == PATCH
        || key == RETAIN_KEYS
        || key.starts_with(SET_ELEMENT_ORDER)
        || key.starts_with(DELETE_FROM_PRIMITIVE_LIST)
}

/// Reads the `$retainKeys`, `$setElementOrder/...` and `$deleteFromPrimitiveList/...` keys of
/// a patch map, checking that each holds a list.
fn directives(patch: &Map<String, Value>) -> Result<Directives<'_>, ApiError> {
    let mut found = Directives::default();
    for (key, value) in patch {
        if key == RETAIN_KEYS {
            let mut keep = Vec::new();
            for item in list(key, value)? {
                let Some(name) = item.as_str() else {
                    return Err(ApiError::BadRequest(format!(
                        "strategic merge patch: {RETAIN_KEYS} must list field names, found {item}"
                    )));
                };
                keep.push(name);
            }
            // A patch that sets a field it also says not to keep contradicts itself;
            // apimachinery refuses it rather than guess.
            if let Some(field) = patch
                .keys()
                .find(|k| !k.starts_with('$') && !keep.contains(&k.as_str()))
            {
                return Err(ApiError::BadRequest(format!(
                    "strategic merge patch: {RETAIN_KEYS} does not list field \"{field}\" that the patch sets"
                )));
            }
            found.retain_keys = Some(keep);
        } else if let Some(field) = key.strip_prefix(SET_ELEMENT_ORDER) {
            found.set_element_order.push((field, list(key, value)?));
        } else if let Some(field) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            found
                .delete_from_primitive_list
                .push((field, list(key, value)?));
        }
    }
    Ok(found)
}

/// The list a `$retainKeys`, `$setElementOrder/...` or `$deleteFromPrimitiveList/...` key holds.
fn list<'p>(key: &str, value: &'p Value) -> Result<&'p [Value], ApiError> {
    match value {
        Value::Array(items) => Ok(items),
        other => Err(ApiError::BadRequest(format!(
            "strategic merge patch: {key} must be a list, not {}",
            crate::decode::json_type(other)
        ))),
    }
}

/// Orders `items` as `$setElementOrder` asks: the elements `order` names first, in its order,
/// then the rest in their current order. Elements are named by their merge key, or by their
/// value in a list of primitives.
fn reorder(items: Vec<Value>, order: &[Value], key: Option<&str>) -> Vec<Value> {
    let id = |v: &Value| -> Option<Value> {
        match key {
            Some(key) => v.get(key).cloned(),
            None => Some(v.clone()),
        }
    };
    let mut rest = items;
    let mut out = Vec::with_capacity(rest.len());
    for wanted in order {
        let Some(wanted) = id(wanted) else { continue };
        if let Some(i) = rest.iter().position(|e| id(e).as_ref() == Some(&wanted)) {
            out.push(rest.remove(i));
        }
    }
    out.extend(rest);
    out
}

/// The `400` for a `$patch` value other than `replace` or `delete`.
fn unknown_patch_type(value: &Value) -> ApiError {
    let shown = value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_string);
    ApiError::BadRequest(format!(
        "strategic merge patch: unknown patch type: {shown} (expected \"replace\" or \"delete\")"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The Deployment of the Kubernetes task "Update API Objects in Place Using kubectl patch".
    fn patch_demo() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "patch-demo"},
            "spec": {
                "replicas": 2,
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                "template": {"spec": {
                    "containers": [{"name": "patch-demo-ctr", "image": "nginx"}],
                    "tolerations": [{"effect": "NoSchedule", "key": "dedicated", "value": "test-team"}]
                }}
            }
        })
    }

    /// The Deployment `kubectl apply` updates in the apply test: one container `web`.
    fn web() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": {
                "replicas": 2,
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                "template": {"spec": {"containers": [{
                    "name": "web", "image": "skiff.local/web:1.0",
                    "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                    "envFrom": [{"configMapRef": {"name": "web-config"}}]
                }]}}
            }
        })
    }

    /// A Pod, whose pod spec is at `spec` rather than under a template.
    fn pod() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"app": "p", "tier": "front"}, "finalizers": ["a/x", "b/y"],
                         "ownerReferences": [{"uid": "1", "name": "rs", "controller": true}]},
            "spec": {"containers": [
                {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}, {"name": "Z", "value": "3"}]},
                {"name": "b", "image": "b:1"}
            ]},
            "status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "Initialized", "status": "True"}]}
        })
    }

    /// Every key in a patched object, to check that no directive was stored.
    fn dollar_keys(value: &Value, found: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    if k.starts_with('$') {
                        found.push(k.clone());
                    }
                    dollar_keys(v, found);
                }
            }
            Value::Array(items) => items.iter().for_each(|v| dollar_keys(v, found)),
            _ => {}
        }
    }

    #[test]
    fn patches() {
        // (what, object, patch, pointer, value expected there)
        let cases: Vec<(&str, Value, Value, &str, Value)> = vec![
            (
                "docs: containers merge by name",
                patch_demo(),
                json!({"spec": {"template": {"spec": {"containers": [{"name": "patch-demo-ctr-2", "image": "redis"}]}}}}),
                "/spec/template/spec/containers",
                json!([{"name": "patch-demo-ctr", "image": "nginx"}, {"name": "patch-demo-ctr-2", "image": "redis"}]),
            ),
            (
                "docs: tolerations are replaced",
                patch_demo(),
                json!({"spec": {"template": {"spec": {"tolerations": [{"effect": "NoSchedule", "key": "disktype", "value": "ssd"}]}}}}),
                "/spec/template/spec/tolerations",
                json!([{"effect": "NoSchedule", "key": "disktype", "value": "ssd"}]),
            ),
            (
                "docs: $retainKeys drops rollingUpdate when switching to Recreate",
                patch_demo(),
                json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
                "/spec/strategy",
                json!({"type": "Recreate"}),
            ),
            (
                "kubectl apply: replicas",
                web(),
                kubectl_apply_body(),
                "/spec/replicas",
                json!(4),
            ),
            (
                "kubectl apply: image changes, ports and envFrom stay",
                web(),
                kubectl_apply_body(),
                "/spec/template/spec/containers",
                json!([{
                    "name": "web", "image": "skiff.local/web:1.1",
                    "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                    "envFrom": [{"configMapRef": {"name": "web-config"}}]
                }]),
            ),
            (
                "kubectl apply: $retainKeys keeps only type",
                web(),
                kubectl_apply_body(),
                "/spec/strategy",
                json!({"type": "RollingUpdate"}),
            ),
            (
                "kubectl set image: b updated, a untouched, order kept",
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
                       "spec": {"template": {"spec": {"containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]}}}}),
                json!({"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "x:2"}]}}}}),
                "/spec/template/spec/containers",
                json!([{"name": "a", "image": "a:1"}, {"name": "b", "image": "x:2"}]),
            ),
            (
                "pod spec at spec: env merges by name, null deletes a field, $patch delete an entry",
                pod(),
                json!({"spec": {"containers": [{"name": "a", "env": [
                    {"name": "X", "value": null, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "Z", "$patch": "delete"},
                    {"name": "Y", "value": "2"}
                ]}]}}),
                "/spec/containers/0/env",
                json!([{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}, {"name": "Y", "value": "2"}]),
            ),
            (
                "$deleteFromPrimitiveList/finalizers",
                pod(),
                json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a/x"]}}),
                "/metadata/finalizers",
                json!(["b/y"]),
            ),
            (
                "finalizers merge as an ordered set",
                pod(),
                json!({"metadata": {"finalizers": ["c/z", "a/x"]}}),
                "/metadata/finalizers",
                json!(["a/x", "b/y", "c/z"]),
            ),
            (
                "null deletes a map key",
                pod(),
                json!({"metadata": {"labels": {"tier": null, "env": "prod"}}}),
                "/metadata/labels",
                json!({"app": "p", "env": "prod"}),
            ),
            (
                "$patch: replace on a map",
                pod(),
                json!({"metadata": {"labels": {"$patch": "replace", "only": "this"}}}),
                "/metadata/labels",
                json!({"only": "this"}),
            ),
            (
                "$patch: delete on a map",
                pod(),
                json!({"metadata": {"labels": {"$patch": "delete"}}}),
                "/metadata/labels",
                Value::Null,
            ),
            (
                "$patch: replace marker in a merged list",
                pod(),
                json!({"spec": {"containers": [{"$patch": "replace"}, {"name": "c", "image": "c:1"}]}}),
                "/spec/containers",
                json!([{"name": "c", "image": "c:1"}]),
            ),
            (
                "$patch: delete on a container",
                pod(),
                json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}),
                "/spec/containers",
                json!([{"name": "b", "image": "b:1"}]),
            ),
            (
                "$setElementOrder: named first, in its order",
                pod(),
                json!({"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
                                "containers": [{"name": "b", "image": "b:2"}]}}),
                "/spec/containers",
                json!([{"name": "b", "image": "b:2"},
                       {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}, {"name": "Z", "value": "3"}]}]),
            ),
            (
                "status conditions merge by type",
                pod(),
                json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
                "/status/conditions",
                json!([{"type": "Ready", "status": "True"}, {"type": "Initialized", "status": "True"}]),
            ),
            (
                "ownerReferences merge by uid",
                pod(),
                json!({"metadata": {"ownerReferences": [{"uid": "1", "blockOwnerDeletion": true}]}}),
                "/metadata/ownerReferences",
                json!([{"uid": "1", "name": "rs", "controller": true, "blockOwnerDeletion": true}]),
            ),
            (
                "Service ports merge by port",
                json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
                       "spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}]}}),
                json!({"spec": {"ports": [{"port": 443, "targetPort": 8443}]}}),
                "/spec/ports",
                json!([{"port": 80, "name": "http"}, {"port": 443, "name": "https", "targetPort": 8443}]),
            ),
            (
                "a kind with no pod spec at spec: containers are an ordinary, atomic list",
                json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
                       "spec": {"containers": [{"name": "a"}, {"name": "b"}]}}),
                json!({"spec": {"containers": [{"name": "b", "image": "x"}]}}),
                "/spec/containers",
                json!([{"name": "b", "image": "x"}]),
            ),
        ];
        for (what, object, patch, pointer, want) in cases {
            let patched = match strategic_merge(&object, &patch) {
                Ok(patched) => patched,
                Err(e) => panic!("{what}: {e:?}"),
            };
            assert_eq!(
                patched.pointer(pointer).cloned().unwrap_or(Value::Null),
                want,
                "{what}"
            );
            let mut found = Vec::new();
            dollar_keys(&patched, &mut found);
            assert!(found.is_empty(), "{what}: stored directives {found:?}");
            assert_eq!(patched["kind"], object["kind"], "{what}");
        }
    }

    /// The body `kubectl apply` sends after raising replicas to 4 and the image to 1.1.
    fn kubectl_apply_body() -> Value {
        json!({
            "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "..."}},
            "spec": {
                "replicas": 4,
                "strategy": {"$retainKeys": ["type"]},
                "template": {"spec": {
                    "$setElementOrder/containers": [{"name": "web"}],
                    "containers": [{"image": "skiff.local/web:1.1", "name": "web"}]
                }}
            }
        })
    }

    #[test]
    fn through_apply_patch() {
        let patched = crate::patch::apply_patch(
            &web(),
            kubectl_apply_body().to_string().as_bytes(),
            "application/strategic-merge-patch+json",
        );
        let Ok(patched) = patched else {
            panic!("{patched:?}")
        };
        assert_eq!(
            patched
                .pointer("/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration"),
            Some(&json!("..."))
        );
        assert_eq!(patched["metadata"]["name"], "web");
    }

    #[test]
    fn bad_patches() {
        // (what, patch, words the 400's message must contain)
        let cases: Vec<(&str, Value, &str)> = vec![
            (
                "a list",
                json!([{"op": "add"}]),
                "must be a JSON object, not",
            ),
            ("a string", json!("spec"), "must be a JSON object, not"),
            (
                "unknown $patch on a map",
                json!({"metadata": {"labels": {"$patch": "merge"}}}),
                "unknown patch type: merge",
            ),
            (
                "unknown $patch on a list element",
                json!({"spec": {"containers": [{"name": "a", "$patch": "remove"}]}}),
                "unknown patch type: remove",
            ),
            (
                "merged element without its key",
                json!({"spec": {"containers": [{"image": "x"}]}}),
                "merge key \"name\"",
            ),
            (
                "$retainKeys not a list",
                json!({"spec": {"$retainKeys": "type"}}),
                "$retainKeys must be a list",
            ),
            (
                "$retainKeys missing a patched field",
                json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {}}}}),
                "does not list field \"rollingUpdate\"",
            ),
        ];
        for (what, patch, words) in cases {
            match strategic_merge(&pod(), &patch) {
                Err(ApiError::BadRequest(message)) => {
                    assert!(message.contains(words), "{what}: {message}")
                }
                other => panic!("{what}: {other:?}"),
            }
        }
    }

    #[test]
    fn lookup_finds_pod_specs_in_every_kind() {
        // (kind, context chain from the root, field, strategy)
        let cases: &[(&str, &[&str], &str, ListStrategy)] = &[
            ("Pod", &["spec"], "containers", MergeByKey("name")),
            (
                "Deployment",
                &["spec", "template", "spec"],
                "containers",
                MergeByKey("name"),
            ),
            (
                "CronJob",
                &["spec", "jobTemplate", "spec", "template", "spec"],
                "initContainers",
                MergeByKey("name"),
            ),
            (
                "ReplicaSet",
                &["spec", "template", "spec", "containers"],
                "ports",
                MergeByKey("containerPort"),
            ),
            ("Service", &["spec"], "ports", MergeByKey("port")),
            ("Deployment", &["spec"], "containers", Atomic),
            ("Pod", &["spec"], "tolerations", Atomic),
            ("Pod", &["metadata"], "finalizers", Union),
        ];
        for (kind, chain, field, want) in cases {
            let ctx = chain
                .iter()
                .fold(Ctx::Root, |ctx, step| lookup(kind, ctx, step).1);
            assert_eq!(
                lookup(kind, ctx, field).0,
                *want,
                "{kind} {chain:?} {field}"
            );
        }
    }
}
