//! Server-side apply (`application/apply-patch+yaml`): the server merges a manager's *whole
//! intent* into the object and remembers which fields each manager set.
//!
//! ## The idea
//! Every field of an object can have owners, recorded in `metadata.managedFields`: one entry per
//! manager (`kubectl`, `kubectl-scale`, a controller) with the set of fields it last set, in the
//! FieldsV1 format (`{"f:spec": {"f:replicas": {}}}`; list elements by key
//! `k:{"name":"web"}`, set members by value `v:"x"`, the element itself `.`).
//!
//! An apply of configuration `C` by manager `M`:
//! 1. the fields of `C` are computed ([`field_set`]);
//! 2. a field of `C` whose value differs from the live one and that another manager owns is a
//!    **conflict** — refused with 409 unless `force=true`, which takes the field over;
//! 3. fields `M` owned before but left out of `C` are **removed**, unless someone else owns them
//!    too (this is how apply deletes: by no longer mentioning a field);
//! 4. `C` is merged in (maps field by field, keyed lists element by element, other lists whole);
//! 5. `M` now owns exactly the fields of `C`.
//!
//! Ordinary writes (PUT, PATCH) take ownership of the fields they change ([`record_update`]),
//! with operation `Update`; that is what makes `kubectl scale` then `kubectl apply
//! --server-side` with another replica count a conflict.
//!
//! ## Simplifications (compared with apimachinery's structured-merge-diff)
//! - List strategies come from the same table as strategic merge patch
//!   ([`super::strategic::RULES`]); unknown lists are atomic.
//! - Owned fields removed by an apply do not drop parent maps that become empty.
use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use super::strategic::{lookup, Ctx, ListStrategy};

/// One path through an object, as FieldsV1 segments (`f:spec`, `k:{"name":"web"}`, `.`).
pub type Path = Vec<String>;

/// The fields a manager owns.
pub type FieldSet = BTreeSet<Path>;

/// Metadata fields that identify or are decided by the server; nobody owns them.
const SERVER_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// The fields set in `object` (an object of kind `kind`), without apiVersion, kind, status and
/// the server's metadata.
pub fn field_set(object: &Value) -> FieldSet {
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    let mut set = FieldSet::new();
    if let Some(map) = object.as_object() {
        for (key, value) in map {
            match key.as_str() {
                "apiVersion" | "kind" | "status" => {}
                "metadata" => {
                    let Some(meta) = value.as_object() else {
                        continue;
                    };
                    for (k, v) in meta {
                        if SERVER_METADATA.contains(&k.as_str()) {
                            continue;
                        }
                        let path = vec!["f:metadata".to_string(), format!("f:{k}")];
                        walk(kind, Ctx::Metadata, k, v, path, &mut set);
                    }
                }
                _ => walk(
                    kind,
                    Ctx::Root,
                    key,
                    value,
                    vec![format!("f:{key}")],
                    &mut set,
                ),
            }
        }
    }
    set
}

/// Adds the paths of `value` (field `field` of a map in context `ctx`) under `path`.
fn walk(kind: &str, ctx: Ctx, field: &str, value: &Value, path: Path, set: &mut FieldSet) {
    let (strategy, child) = lookup(kind, ctx, field);
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let mut p = path.clone();
                p.push(format!("f:{k}"));
                walk(kind, child, k, v, p, set);
            }
        }
        Value::Array(items) => match strategy {
            ListStrategy::MergeByKey(key) => {
                for item in items {
                    let Some(segment) = key_segment(item, key) else {
                        // An element without its key cannot be told apart: own the list.
                        set.insert(path.clone());
                        return;
                    };
                    let mut element = path.clone();
                    element.push(segment);
                    let mut dot = element.clone();
                    dot.push(".".into());
                    set.insert(dot);
                    if let Some(map) = item.as_object() {
                        for (k, v) in map {
                            let mut p = element.clone();
                            p.push(format!("f:{k}"));
                            walk(kind, child, k, v, p, set);
                        }
                    }
                }
            }
            ListStrategy::Union => {
                for item in items {
                    let mut p = path.clone();
                    p.push(format!("v:{item}"));
                    set.insert(p);
                }
            }
            ListStrategy::Atomic => {
                set.insert(path);
            }
        },
        _ => {
            set.insert(path);
        }
    }
}

/// `k:{"name":"web"}` for an element whose merge key is `name`.
fn key_segment(item: &Value, key: &str) -> Option<String> {
    let value = item.get(key)?;
    Some(format!("k:{}", json!({ key: value })))
}

/// The value at `path` in `object` (`None` when absent). A `.` segment is the element itself.
pub fn value_at<'a>(object: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut current = object;
    for segment in path {
        if segment == "." {
            return Some(current);
        }
        current = step(current, segment)?;
    }
    Some(current)
}

fn step<'a>(value: &'a Value, segment: &str) -> Option<&'a Value> {
    if let Some(field) = segment.strip_prefix("f:") {
        return value.get(field);
    }
    let items = value.as_array()?;
    position(items, segment).map(|i| &items[i])
}

fn step_mut<'a>(value: &'a mut Value, segment: &str) -> Option<&'a mut Value> {
    if let Some(field) = segment.strip_prefix("f:") {
        return value.get_mut(field);
    }
    let items = value.as_array_mut()?;
    let i = position(items, segment)?;
    items.get_mut(i)
}

/// The index of the list element a `k:` or `v:` segment names.
fn position(items: &[Value], segment: &str) -> Option<usize> {
    if let Some(key) = segment.strip_prefix("k:") {
        let key: Map<String, Value> = serde_json::from_str(key).ok()?;
        return items
            .iter()
            .position(|item| key.iter().all(|(k, v)| item.get(k) == Some(v)));
    }
    let member: Value = serde_json::from_str(segment.strip_prefix("v:")?).ok()?;
    items.iter().position(|item| *item == member)
}

/// Removes what `path` points at (a field, a keyed element with `.`, a set member).
fn remove_at(object: &mut Value, path: &[String]) {
    let (last, parent_path) = match path.split_last() {
        Some((last, rest)) if last == "." => match rest.split_last() {
            Some((element, parent)) => (element, parent),
            None => return,
        },
        Some((last, rest)) => (last, rest),
        None => return,
    };
    let mut parent = object;
    for segment in parent_path {
        parent = match step_mut(parent, segment) {
            Some(next) => next,
            None => return,
        };
    }
    if let Some(field) = last.strip_prefix("f:") {
        if let Some(map) = parent.as_object_mut() {
            map.remove(field);
        }
    } else if let Some(items) = parent.as_array_mut() {
        if let Some(i) = position(items, last) {
            items.remove(i);
        }
    }
}

/// One entry of `metadata.managedFields`.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub fields: FieldSet,
}

/// The entries of an object's `metadata.managedFields`.
pub fn managed_fields(object: &Value) -> Vec<Entry> {
    object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|e| Entry {
            manager: e["manager"].as_str().unwrap_or("").to_string(),
            operation: e["operation"].as_str().unwrap_or("Update").to_string(),
            api_version: e["apiVersion"].as_str().unwrap_or("").to_string(),
            time: e["time"].as_str().unwrap_or("").to_string(),
            fields: from_fields_v1(&e["fieldsV1"]),
        })
        .collect()
}

/// Writes `entries` into the object's metadata (entries owning nothing are dropped).
pub fn set_managed_fields(object: &mut Value, entries: &[Entry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(&e.fields),
            })
        })
        .collect();
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(list));
        }
    }
}

/// FieldsV1 JSON: a tree whose leaves are `{}`.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut node = &mut root;
        for segment in path {
            node = node
                .entry(segment.clone())
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
                .expect("FieldsV1 nodes are objects");
        }
    }
    Value::Object(root)
}

/// The paths of a FieldsV1 tree (its leaves).
pub fn from_fields_v1(tree: &Value) -> FieldSet {
    fn go(node: &Map<String, Value>, path: &mut Path, out: &mut FieldSet) {
        for (segment, child) in node {
            path.push(segment.clone());
            match child.as_object() {
                Some(map) if !map.is_empty() => go(map, path, out),
                _ => {
                    out.insert(path.clone());
                }
            }
            path.pop();
        }
    }
    let mut out = FieldSet::new();
    if let Some(map) = tree.as_object() {
        go(map, &mut Vec::new(), &mut out);
    }
    out
}

/// `.spec.replicas`, `.spec.template.spec.containers[name="web"].image`: how Kubernetes prints
/// a field in a conflict.
pub fn display(path: &[String]) -> String {
    let mut text = String::new();
    for segment in path {
        if let Some(field) = segment.strip_prefix("f:") {
            text.push('.');
            text.push_str(field);
        } else if let Some(key) = segment.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(key).unwrap_or_default();
            let parts: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
            text.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(member) = segment.strip_prefix("v:") {
            text.push_str(&format!("[={member}]"));
        }
    }
    text
}

/// A field another manager owns with a different value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub manager: String,
    pub api_version: String,
    pub field: String,
}

/// Applies `config` (the whole intent of `manager`) to `live` (`None`: the object does not
/// exist yet). Returns the new object with its managedFields, or the conflicts.
pub fn apply(
    live: Option<&Value>,
    config: &Value,
    manager: &str,
    force: bool,
    now: &str,
) -> Result<Value, Vec<Conflict>> {
    let applied = field_set(config);
    let api_version = config
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let Some(live) = live else {
        let mut created = config.clone();
        let entry = Entry {
            manager: manager.into(),
            operation: "Apply".into(),
            api_version,
            time: now.into(),
            fields: applied,
        };
        set_managed_fields(&mut created, &[entry]);
        return Ok(created);
    };
    let mut entries = managed_fields(live);
    let previous: FieldSet = entries
        .iter()
        .filter(|e| e.manager == manager && e.operation == "Apply")
        .flat_map(|e| e.fields.iter().cloned())
        .collect();

    // Conflicts: fields of the config that others own with another value.
    let mut conflicts = Vec::new();
    let mut taken = BTreeSet::new();
    for path in &applied {
        if path.last().map(String::as_str) == Some(".") {
            continue;
        }
        if value_at(live, path) == value_at(config, path) {
            continue;
        }
        for entry in entries.iter().filter(|e| e.manager != manager) {
            if owns(&entry.fields, path) {
                conflicts.push(Conflict {
                    manager: entry.manager.clone(),
                    api_version: entry.api_version.clone(),
                    field: display(path),
                });
                taken.insert(path.clone());
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }

    // Removal: what this manager set before and no longer mentions, unless others own it.
    let mut result = live.clone();
    let others: FieldSet = entries
        .iter()
        .filter(|e| e.manager != manager)
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    let mut gone: Vec<&Path> = previous
        .iter()
        .filter(|p| !applied.contains(*p) && !others.contains(*p))
        .collect();
    // Deepest first, so an element's fields go before the element.
    gone.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for path in gone {
        remove_at(&mut result, path);
    }

    // Merge the configuration in.
    let kind = config.get("kind").and_then(Value::as_str).unwrap_or("");
    merge(kind, Ctx::Root, &mut result, config);

    // Ownership: forced fields leave their old owners; this manager owns the config's fields.
    for entry in &mut entries {
        if entry.manager != manager {
            entry
                .fields
                .retain(|p| !taken.iter().any(|t| p.starts_with(t)));
        }
    }
    entries.retain(|e| !(e.manager == manager && e.operation == "Apply"));
    entries.push(Entry {
        manager: manager.into(),
        operation: "Apply".into(),
        api_version,
        time: now.into(),
        fields: applied,
    });
    set_managed_fields(&mut result, &entries);
    Ok(result)
}

/// Whether `set` owns `path` or something that contains it (an atomic list, an element).
fn owns(set: &FieldSet, path: &Path) -> bool {
    set.contains(path)
        || set
            .iter()
            .any(|p| path.starts_with(p) && p.last().map(String::as_str) != Some("."))
}

/// Merges `config` into `target`: maps field by field, keyed lists by key, other lists and
/// scalars replaced.
fn merge(kind: &str, ctx: Ctx, target: &mut Value, config: &Value) {
    let (Some(target_map), Some(config_map)) = (target.as_object_mut(), config.as_object()) else {
        *target = config.clone();
        return;
    };
    for (field, value) in config_map {
        let (strategy, child) = lookup(kind, ctx, field);
        match (target_map.get_mut(field), value) {
            (Some(existing @ Value::Object(_)), Value::Object(_)) => {
                merge(kind, child, existing, value)
            }
            (Some(Value::Array(existing)), Value::Array(items)) => match strategy {
                ListStrategy::MergeByKey(key) => {
                    let mut merged = Vec::new();
                    for item in items {
                        let old = existing
                            .iter()
                            .position(|e| e.get(key).is_some() && e.get(key) == item.get(key))
                            .map(|i| existing.remove(i));
                        match old {
                            Some(mut old) => {
                                merge(kind, child, &mut old, item);
                                merged.push(old);
                            }
                            None => merged.push(item.clone()),
                        }
                    }
                    // Elements others put there stay, after the configured ones.
                    merged.append(existing);
                    *existing = merged;
                }
                ListStrategy::Union => {
                    for item in items {
                        if !existing.contains(item) {
                            existing.push(item.clone());
                        }
                    }
                }
                ListStrategy::Atomic => *existing = items.clone(),
            },
            _ => {
                target_map.insert(field.clone(), value.clone());
            }
        }
    }
}

/// Records an ordinary write (PUT or PATCH) by `manager`: it now owns the fields whose value it
/// changed or added, and nobody else does. Returns the object with updated managedFields.
pub fn record_update(old: Option<&Value>, new: &mut Value, manager: &str, now: &str) {
    let mut entries = old.map(managed_fields).unwrap_or_default();
    let changed: FieldSet = field_set(new)
        .into_iter()
        .filter(|p| {
            p.last().map(String::as_str) != Some(".")
                && old.and_then(|o| value_at(o, p)) != value_at(new, p)
        })
        .collect();
    if changed.is_empty() {
        set_managed_fields(new, &entries);
        return;
    }
    for entry in &mut entries {
        if entry.manager != manager || entry.operation != "Update" {
            entry.fields.retain(|p| !changed.contains(p));
        }
    }
    let api_version = new
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    match entries
        .iter_mut()
        .find(|e| e.manager == manager && e.operation == "Update")
    {
        Some(entry) => {
            entry.fields.extend(changed);
            entry.time = now.into();
        }
        None => entries.push(Entry {
            manager: manager.into(),
            operation: "Update".into(),
            api_version,
            time: now.into(),
            fields: changed,
        }),
    }
    set_managed_fields(new, &entries);
}

/// The manager of a write without `fieldManager`: the client's name from its User-Agent
/// (`kubectl/v1.33.0 (linux/amd64)` → `kubectl`), as kube-apiserver derives it.
pub fn manager_from_user_agent(user_agent: Option<&str>) -> String {
    user_agent
        .and_then(|ua| ua.split('/').next())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("unknown")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-11-22T12:00:00Z";

    fn deployment(replicas: i64, image: &str, extra_label: Option<&str>) -> Value {
        let mut labels = json!({"app": "web"});
        if let Some(l) = extra_label {
            labels[l] = json!("yes");
        }
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": labels},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "web", "image": image}]}}}
        })
    }

    #[test]
    fn field_sets_use_keys_for_named_lists() {
        let set = field_set(&deployment(3, "nginx", None));
        let text: Vec<String> = set.iter().map(|p| display(p)).collect();
        assert!(text.contains(&".spec.replicas".to_string()), "{text:?}");
        assert!(
            text.contains(&".spec.template.spec.containers[name=\"web\"].image".to_string()),
            "{text:?}"
        );
        assert!(
            text.contains(&".metadata.labels.app".to_string()),
            "{text:?}"
        );
        assert!(
            !text.iter().any(|t| t.contains("metadata.name")),
            "{text:?}"
        );
        // The FieldsV1 encoding round-trips.
        assert_eq!(from_fields_v1(&to_fields_v1(&set)), set);
        let v1 = to_fields_v1(&set);
        assert!(
            v1.pointer("/f:spec/f:template/f:spec/f:containers/k:{\"name\":\"web\"}/.")
                .is_some(),
            "{v1}"
        );
    }

    #[test]
    fn apply_creates_updates_removes_and_reports_conflicts() {
        // (1) Create: the manager owns everything it sent.
        let created = apply(
            None,
            &deployment(3, "nginx:1", Some("tier")),
            "kubectl",
            false,
            NOW,
        )
        .expect("create");
        assert_eq!(
            created["metadata"]["managedFields"][0]["manager"],
            "kubectl"
        );
        assert_eq!(
            created["metadata"]["managedFields"][0]["operation"],
            "Apply"
        );

        // (2) Re-apply without the `tier` label: apply removes what it no longer mentions.
        let updated = apply(
            Some(&created),
            &deployment(3, "nginx:2", None),
            "kubectl",
            false,
            NOW,
        )
        .expect("update");
        assert!(
            updated["metadata"]["labels"].get("tier").is_none(),
            "{updated}"
        );
        assert_eq!(
            updated["spec"]["template"]["spec"]["containers"][0]["image"],
            "nginx:2"
        );

        // (3) Someone scales with an ordinary write: they own spec.replicas now.
        let mut scaled = updated.clone();
        scaled["spec"]["replicas"] = json!(5);
        record_update(Some(&updated), &mut scaled, "kubectl-scale", NOW);

        // (4) Applying another replica count conflicts, naming the field and the manager...
        let err = apply(
            Some(&scaled),
            &deployment(3, "nginx:2", None),
            "kubectl",
            false,
            NOW,
        )
        .expect_err("conflict");
        assert_eq!(
            err,
            vec![Conflict {
                manager: "kubectl-scale".into(),
                api_version: "apps/v1".into(),
                field: ".spec.replicas".into()
            }]
        );
        // ...applying the same value is no conflict (shared ownership)...
        apply(
            Some(&scaled),
            &deployment(5, "nginx:2", None),
            "kubectl",
            false,
            NOW,
        )
        .expect("same value");
        // ...and force takes the field over.
        let forced = apply(
            Some(&scaled),
            &deployment(3, "nginx:2", None),
            "kubectl",
            true,
            NOW,
        )
        .expect("forced");
        assert_eq!(forced["spec"]["replicas"], 3);
        let managers: Vec<&str> = forced["metadata"]["managedFields"]
            .as_array()
            .expect("entries")
            .iter()
            .filter_map(|e| e["manager"].as_str())
            .collect();
        assert_eq!(
            managers,
            vec!["kubectl"],
            "kubectl-scale owned only replicas: it is gone"
        );
    }

    #[test]
    fn keyed_lists_merge_and_other_managers_elements_stay() {
        let base = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "a", "image": "x"}]}});
        let live = apply(None, &base, "alice", false, NOW).expect("create");
        let bob = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "b", "image": "y"}]}});
        let both = apply(Some(&live), &bob, "bob", false, NOW).expect("bob applies");
        let names: Vec<&str> = both["spec"]["containers"]
            .as_array()
            .expect("containers")
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(names, vec!["b", "a"]);
        // Alice applies without her container: it goes, bob's stays.
        let alice =
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}});
        let after = apply(Some(&both), &alice, "alice", false, NOW).expect("alice applies");
        let names: Vec<&str> = after["spec"]["containers"]
            .as_array()
            .expect("containers")
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(names, vec!["b"]);
    }

    #[test]
    fn managers_come_from_the_user_agent() {
        assert_eq!(
            manager_from_user_agent(Some("kubectl/v1.33.1 (linux/amd64) kubernetes/abc")),
            "kubectl"
        );
        assert_eq!(manager_from_user_agent(None), "unknown");
    }
}
