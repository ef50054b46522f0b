//! OpenAPI v3 documents: enough for `kubectl apply` and `create` to leave validation to the
//! server.
//!
//! ## Expected flow (kubectl 1.32, `apply -f`)
//! 1. `GET /openapi/v3` → [`index`]: one entry per group-version, each with a URL that carries
//!    the document's hash, so kubectl can cache documents forever.
//! 2. `GET /openapi/v3/apis/apps/v1?hash=…` → [`document`] (served byte for byte from
//!    [`served_document`], so the hash in the index is the hash of what is sent).
//! 3. kubectl finds *the first* PATCH operation whose `x-kubernetes-group-version-kind` is the
//!    object's GVK, and looks for a `fieldValidation` query parameter on it. Found: it sends
//!    `?fieldValidation=Strict` and does no client-side validation. Not found (or no document):
//!    it falls back to `/openapi/v2` as protobuf, which skiff does not serve, and `create`
//!    fails. Every PATCH operation therefore carries the parameter, subresources included.
//!
//! ## Schemas
//! `components.schemas` are the real field schemas, named as upstream (`io.k8s.api.core.v1.Pod`),
//! generated from k8s-openapi's types with schemars by `examples/openapi-schemas.rs` into
//! `openapi/schemas.json` and embedded here (so the server's build skips schemars). Each
//! document carries the schemas its kinds reach; the kinds' own schemas get
//! `x-kubernetes-group-version-kind` (what `kubectl explain` looks up), and the lists that merge
//! by key carry `x-kubernetes-patch-merge-key`/`-patch-strategy` (what `kubectl apply` computes
//! its patches from). Kinds without a generated schema (list kinds) keep a placeholder.
//!
//! ## Caveats
//! - Only subresources that can be patched (`status`, `scale`) get paths.

use std::sync::OnceLock;

use serde_json::{json, Map, Value};
use skiff_api::resources::ResourceInfo;

use crate::discovery::{group_versions, resources_in, subresources, SubresourceInfo};

/// One group-version's document, rendered once.
#[derive(Debug)]
pub struct ServedDocument {
    /// The key in the index: `api/v1`, `apis/apps/v1`.
    pub path: String,
    /// The document as sent on the wire.
    pub json: String,
    /// Hex SHA-256 of `json`; changes exactly when the document does.
    pub hash: String,
    value: Value,
}

/// The documents only change with the binary, so they are built on first use and kept.
fn served_documents() -> &'static [ServedDocument] {
    static DOCUMENTS: OnceLock<Vec<ServedDocument>> = OnceLock::new();
    DOCUMENTS.get_or_init(|| {
        group_versions()
            .into_iter()
            .map(|(group, version)| {
                let value = build_document(group, version);
                let json = value.to_string();
                ServedDocument {
                    path: group_version_path(group, version),
                    hash: hex::encode(ring::digest::digest(&ring::digest::SHA256, json.as_bytes())),
                    json,
                    value,
                }
            })
            .collect()
    })
}

/// `api/v1` for the core group, `apis/{group}/{version}` otherwise: the URL prefix of a
/// group-version without its leading slash.
pub fn group_version_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: where each group-version's document is.
pub fn index() -> Value {
    let paths: Map<String, Value> = served_documents()
        .iter()
        .map(|doc| {
            let url = format!("/openapi/v3/{}?hash={}", doc.path, doc.hash);
            (doc.path.clone(), json!({ "serverRelativeURL": url }))
        })
        .collect();
    json!({ "paths": paths })
}

/// The rendered document for `path` (`api/v1`, `apis/apps/v1`; a leading `/` is ignored).
pub fn served_document(path: &str) -> Option<&'static ServedDocument> {
    let path = path.trim_start_matches('/');
    served_documents().iter().find(|doc| doc.path == path)
}

/// The document for `path`, as a value.
pub fn document(path: &str) -> Option<Value> {
    served_document(path).map(|doc| doc.value.clone())
}

fn build_document(group: &str, version: &str) -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for r in resources_in(group, version) {
        add_resource_paths(&mut paths, r);
        schemas.insert(schema_name(r.group, r.version, r.kind), placeholder(r.kind));
        schemas.insert(
            schema_name(r.group, r.version, r.list_kind),
            placeholder(r.list_kind),
        );
        for sub in subresources(r) {
            schemas
                .entry(schema_name(sub.group, sub.version, sub.kind))
                .or_insert_with(|| placeholder(sub.kind));
        }
    }
    for kind in ["Status", "DeleteOptions", "Patch"] {
        schemas.insert(meta_schema(kind), placeholder(kind));
    }
    add_real_schemas(&mut schemas, group, version);
    json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes (skiff)", "version": env!("CARGO_PKG_VERSION") },
        "paths": paths,
        "components": { "schemas": schemas },
    })
}

/// The generated schemas (see the module comment), parsed once.
fn generated() -> &'static Map<String, Value> {
    static SCHEMAS: OnceLock<Map<String, Value>> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        serde_json::from_str(include_str!("../openapi/schemas.json")).unwrap_or_default()
    })
}

/// Replaces placeholders with the generated schemas and adds every schema they refer to,
/// transitively; marks the served kinds with their GVK.
fn add_real_schemas(schemas: &mut Map<String, Value>, group: &str, version: &str) {
    let all = generated();
    let mut pending: Vec<String> = schemas
        .keys()
        .filter(|name| all.contains_key(*name))
        .cloned()
        .collect();
    let mut done = std::collections::HashSet::new();
    while let Some(name) = pending.pop() {
        let Some(schema) = all.get(&name) else {
            continue;
        };
        if !done.insert(name.clone()) {
            continue;
        }
        collect_refs(schema, &mut pending);
        schemas.insert(name, schema.clone());
    }
    for r in resources_in(group, version) {
        if let Some(schema) = schemas.get_mut(&schema_name(r.group, r.version, r.kind)) {
            if schema.get("properties").is_some() {
                schema["x-kubernetes-group-version-kind"] =
                    json!([gvk(r.group, r.version, r.kind)]);
            }
        }
    }
}

/// The schema names `value` refers to with `$ref`.
fn collect_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("$ref", Value::String(r)) => {
                        if let Some(name) = r.strip_prefix("#/components/schemas/") {
                            out.push(name.to_string());
                        }
                    }
                    _ => collect_refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

fn add_resource_paths(paths: &mut Map<String, Value>, r: &ResourceInfo) {
    let prefix = format!("/{}", group_version_path(r.group, r.version));
    let collection = if r.namespaced {
        format!("{prefix}/namespaces/{{namespace}}/{}", r.resource)
    } else {
        format!("{prefix}/{}", r.resource)
    };
    let item = format!("{collection}/{{name}}");
    let kind_ref = schema_ref(&schema_name(r.group, r.version, r.kind));
    let list_ref = schema_ref(&schema_name(r.group, r.version, r.list_kind));
    let gvk = gvk(r.group, r.version, r.kind);
    let scope = if r.namespaced { "Namespaced" } else { "" };
    let op =
        |verb: &str, suffix: &str| operation_id(verb, r.group, r.version, scope, r.kind, suffix);
    let namespace_param = r.namespaced.then(|| path_param("namespace"));

    paths.insert(
        collection,
        json!({
            "parameters": namespace_param.iter().collect::<Vec<_>>(),
            "get": {
                "operationId": op("list", ""),
                "description": format!("list or watch objects of kind {}", r.kind),
                "parameters": list_params(),
                "responses": { "200": response(&list_ref) },
                "x-kubernetes-action": "list",
                "x-kubernetes-group-version-kind": gvk,
            },
            "post": {
                "operationId": op("create", ""),
                "description": format!("create a {}", r.kind),
                "parameters": write_params(false),
                "requestBody": json_body(&kind_ref),
                "responses": {
                    "200": response(&kind_ref),
                    "201": response(&kind_ref),
                    "202": response(&kind_ref),
                },
                "x-kubernetes-action": "post",
                "x-kubernetes-group-version-kind": gvk,
            },
        }),
    );
    if r.namespaced {
        // `kubectl get -A` lists across namespaces from the group-version root.
        paths.insert(
            format!("{prefix}/{}", r.resource),
            json!({
                "get": {
                    "operationId": operation_id("list", r.group, r.version, "", r.kind, "ForAllNamespaces"),
                    "description": format!("list or watch objects of kind {} in all namespaces", r.kind),
                    "parameters": list_params(),
                    "responses": { "200": response(&list_ref) },
                    "x-kubernetes-action": "list",
                    "x-kubernetes-group-version-kind": gvk,
                },
            }),
        );
    }

    let item_params: Vec<Value> = std::iter::once(path_param("name"))
        .chain(namespace_param.clone())
        .collect();
    paths.insert(
        item.clone(),
        json!({
            "parameters": item_params,
            "get": {
                "operationId": op("read", ""),
                "description": format!("read the specified {}", r.kind),
                "responses": { "200": response(&kind_ref) },
                "x-kubernetes-action": "get",
                "x-kubernetes-group-version-kind": gvk,
            },
            "put": {
                "operationId": op("replace", ""),
                "description": format!("replace the specified {}", r.kind),
                "parameters": write_params(false),
                "requestBody": json_body(&kind_ref),
                "responses": { "200": response(&kind_ref), "201": response(&kind_ref) },
                "x-kubernetes-action": "put",
                "x-kubernetes-group-version-kind": gvk,
            },
            "delete": {
                "operationId": op("delete", ""),
                "description": format!("delete a {}", r.kind),
                "parameters": delete_params(),
                "requestBody": {
                    "content": { "application/json": {
                        "schema": schema_ref(&meta_schema("DeleteOptions"))
                    } },
                },
                "responses": { "200": response(&kind_ref), "202": response(&kind_ref) },
                "x-kubernetes-action": "delete",
                "x-kubernetes-group-version-kind": gvk,
            },
            "patch": patch_operation(op("patch", ""), r.kind, &kind_ref, &gvk),
        }),
    );

    for sub in subresources(r).filter(|s| s.verbs.contains(&"patch")) {
        add_subresource_path(paths, r, &item, &item_params, sub);
    }
}

fn add_subresource_path(
    paths: &mut Map<String, Value>,
    r: &ResourceInfo,
    item: &str,
    item_params: &[Value],
    sub: SubresourceInfo,
) {
    let sub_ref = schema_ref(&schema_name(sub.group, sub.version, sub.kind));
    let sub_gvk = gvk(sub.group, sub.version, sub.kind);
    let scope = if r.namespaced { "Namespaced" } else { "" };
    let suffix = capitalise(sub.name);
    let op = |verb: &str| operation_id(verb, r.group, r.version, scope, r.kind, &suffix);
    let mut entry = json!({ "parameters": item_params });
    if sub.verbs.contains(&"get") {
        entry["get"] = json!({
            "operationId": op("read"),
            "description": format!("read {} of the specified {}", sub.name, r.kind),
            "responses": { "200": response(&sub_ref) },
            "x-kubernetes-action": "get",
            "x-kubernetes-group-version-kind": sub_gvk,
        });
    }
    if sub.verbs.contains(&"update") {
        entry["put"] = json!({
            "operationId": op("replace"),
            "description": format!("replace {} of the specified {}", sub.name, r.kind),
            "parameters": write_params(false),
            "requestBody": json_body(&sub_ref),
            "responses": { "200": response(&sub_ref), "201": response(&sub_ref) },
            "x-kubernetes-action": "put",
            "x-kubernetes-group-version-kind": sub_gvk,
        });
    }
    entry["patch"] = patch_operation(op("patch"), r.kind, &sub_ref, &sub_gvk);
    paths.insert(format!("{item}/{}", sub.name), entry);
}

/// A PATCH operation: the one kubectl inspects to decide whether the server validates.
fn patch_operation(operation_id: String, kind: &str, result_ref: &Value, gvk: &Value) -> Value {
    let patch_ref = schema_ref(&meta_schema("Patch"));
    let content: Map<String, Value> = [
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
        "application/apply-patch+yaml",
    ]
    .into_iter()
    .map(|media_type| (media_type.to_string(), json!({ "schema": patch_ref })))
    .collect();
    json!({
        "operationId": operation_id,
        "description": format!("partially update the specified {kind}"),
        "parameters": write_params(true),
        "requestBody": { "required": true, "content": content },
        "responses": { "200": response(result_ref), "201": response(result_ref) },
        "x-kubernetes-action": "patch",
        "x-kubernetes-group-version-kind": gvk,
    })
}

/// Query parameters of create, update and patch. `fieldValidation` is the one kubectl looks
/// for; `force` only means something for server-side apply.
fn write_params(patch: bool) -> Vec<Value> {
    let mut params = vec![
        query_param(
            "dryRun",
            "string",
            "When present (All), validate without persisting.",
        ),
        query_param(
            "fieldManager",
            "string",
            "Name of the actor making the change.",
        ),
        query_param(
            "fieldValidation",
            "string",
            "Ignore, Warn or Strict: what to do with unknown or duplicate fields.",
        ),
    ];
    if patch {
        params.push(query_param(
            "force",
            "boolean",
            "Server-side apply: take ownership of conflicting fields.",
        ));
    }
    params
}

fn list_params() -> Vec<Value> {
    vec![
        query_param("labelSelector", "string", "Restrict the list by labels."),
        query_param("fieldSelector", "string", "Restrict the list by fields."),
        query_param("limit", "integer", "Maximum number of items to return."),
        query_param("continue", "string", "Continue token from a previous page."),
        query_param(
            "resourceVersion",
            "string",
            "Where to start a watch, or how fresh a list must be.",
        ),
        query_param(
            "resourceVersionMatch",
            "string",
            "How resourceVersion applies to a list.",
        ),
        query_param(
            "timeoutSeconds",
            "integer",
            "End the list or watch after this long.",
        ),
        query_param(
            "watch",
            "boolean",
            "Stream changes instead of returning a list.",
        ),
        query_param(
            "allowWatchBookmarks",
            "boolean",
            "Allow BOOKMARK watch events.",
        ),
    ]
}

fn delete_params() -> Vec<Value> {
    vec![
        query_param(
            "dryRun",
            "string",
            "When present (All), validate without persisting.",
        ),
        query_param(
            "gracePeriodSeconds",
            "integer",
            "Seconds before the object is deleted.",
        ),
        query_param(
            "propagationPolicy",
            "string",
            "Orphan, Background or Foreground.",
        ),
    ]
}

fn query_param(name: &str, ty: &str, description: &str) -> Value {
    json!({
        "name": name,
        "in": "query",
        "description": description,
        "schema": { "type": ty, "uniqueItems": true },
    })
}

fn path_param(name: &str) -> Value {
    json!({
        "name": name,
        "in": "path",
        "required": true,
        "schema": { "type": "string", "uniqueItems": true },
    })
}

fn response(schema: &Value) -> Value {
    json!({
        "description": "OK",
        "content": { "application/json": { "schema": schema } },
    })
}

fn json_body(schema: &Value) -> Value {
    json!({ "required": true, "content": { "application/json": { "schema": schema } } })
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({ "group": group, "version": version, "kind": kind })
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// Upstream's schema names: `io.k8s.api.core.v1.Pod`, `io.k8s.api.apps.v1.Deployment`; a
/// dotted group contributes its first label (`coordination.k8s.io` → `coordination`).
fn schema_name(group: &str, version: &str, kind: &str) -> String {
    let package = match group {
        "" => "core",
        g => g.split('.').next().unwrap_or(g),
    };
    format!("io.k8s.api.{package}.{version}.{kind}")
}

fn meta_schema(kind: &str) -> String {
    format!("io.k8s.apimachinery.pkg.apis.meta.v1.{kind}")
}

/// A schema with a name and no fields, for kinds without a generated schema.
fn placeholder(kind: &str) -> Value {
    json!({
        "description": format!("{kind}. Field schema not published yet; the server validates."),
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// Upstream's operation ids: `patchAppsV1NamespacedDeploymentStatus`, `listCoreV1Node`.
fn operation_id(
    verb: &str,
    group: &str,
    version: &str,
    scope: &str,
    kind: &str,
    suffix: &str,
) -> String {
    let group = match group {
        "" => "Core".to_string(),
        g => capitalise(g.split('.').next().unwrap_or(g)),
    };
    format!("{verb}{group}{}{scope}{kind}{suffix}", capitalise(version))
}

fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_api::resources::RESOURCES;

    const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

    #[test]
    fn index_lists_each_group_version_with_its_hash() {
        let index = index();
        let paths = index["paths"].as_object().expect("paths");
        assert_eq!(paths.len(), group_versions().len());
        for (group, version) in group_versions() {
            let path = group_version_path(group, version);
            let served = served_document(&path).expect("document served");
            let hash = hex::encode(ring::digest::digest(
                &ring::digest::SHA256,
                served.json.as_bytes(),
            ));
            assert_eq!(
                paths[&path]["serverRelativeURL"],
                format!("/openapi/v3/{path}?hash={hash}")
            );
            let parsed: Value = serde_json::from_str(&served.json).expect("valid JSON");
            assert_eq!(Some(parsed), document(&format!("/{path}")));
        }
        assert!(document("apis/policy/v1").is_none());
        // Stable: rebuilding the document gives the same bytes, hence the same hash.
        assert_eq!(
            build_document("", "v1").to_string(),
            served_document("api/v1").expect("core").json
        );
    }

    #[test]
    fn every_kind_has_a_patch_that_delegates_validation() {
        for r in RESOURCES {
            let doc = document(&group_version_path(r.group, r.version)).expect("document");
            let want = gvk(r.group, r.version, r.kind);
            let patches: Vec<&Value> = doc["paths"]
                .as_object()
                .expect("paths")
                .values()
                .filter_map(|p| p.get("patch"))
                .filter(|op| op["x-kubernetes-group-version-kind"] == want)
                .collect();
            assert!(!patches.is_empty(), "{} has a PATCH", r.kind);
            // kubectl stops at the first PATCH with the GVK, in no particular order: all count.
            for op in patches {
                let has = |name: &str| {
                    op["parameters"]
                        .as_array()
                        .expect("parameters")
                        .iter()
                        .any(|p| p["name"] == name && p["in"] == "query")
                };
                assert!(
                    has("fieldValidation") && has("dryRun") && has("fieldManager"),
                    "{}",
                    r.kind
                );
                assert!(
                    op["requestBody"]["content"]["application/strategic-merge-patch+json"]
                        .is_object()
                );
            }
        }
    }

    #[test]
    fn operations_carry_gvk_and_action_and_paths_follow_scope() {
        for r in RESOURCES {
            let doc = document(&group_version_path(r.group, r.version)).expect("document");
            let paths = doc["paths"].as_object().expect("paths");
            for (path, item) in paths {
                for method in METHODS {
                    if let Some(op) = item.get(method) {
                        assert!(op["x-kubernetes-action"].is_string(), "{method} {path}");
                        assert!(
                            op["x-kubernetes-group-version-kind"]["kind"].is_string(),
                            "{method} {path}"
                        );
                    }
                }
            }
            let prefix = format!("/{}", group_version_path(r.group, r.version));
            let item = if r.namespaced {
                format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", r.resource)
            } else {
                format!("{prefix}/{}/{{name}}", r.resource)
            };
            for method in ["get", "put", "delete", "patch"] {
                assert!(paths[&item].get(method).is_some(), "{method} {item}");
            }
            let collection = item.trim_end_matches("/{name}");
            assert_eq!(paths[collection]["get"]["x-kubernetes-action"], "list");
            assert_eq!(paths[collection]["post"]["x-kubernetes-action"], "post");
            // Every served kind has its real schema, marked with its GVK (kubectl explain).
            let schema = &doc["components"]["schemas"][schema_name(r.group, r.version, r.kind)];
            assert!(schema["properties"]["metadata"].is_object(), "{}", r.kind);
            assert_eq!(
                schema["x-kubernetes-group-version-kind"][0]["kind"], r.kind,
                "{}",
                r.kind
            );
        }
        assert!(document("api/v1").expect("core")["paths"]
            ["/api/v1/namespaces/{namespace}/pods/{name}/status"]["patch"]
            .is_object());
    }

    #[test]
    fn upstream_names() {
        let cases = [
            (("", "v1", "Pod"), "io.k8s.api.core.v1.Pod"),
            (
                ("apps", "v1", "Deployment"),
                "io.k8s.api.apps.v1.Deployment",
            ),
            (
                ("coordination.k8s.io", "v1", "Lease"),
                "io.k8s.api.coordination.v1.Lease",
            ),
        ];
        for ((g, v, k), want) in cases {
            assert_eq!(schema_name(g, v, k), want);
        }
        assert_eq!(
            operation_id("patch", "apps", "v1", "Namespaced", "Deployment", "Status"),
            "patchAppsV1NamespacedDeploymentStatus"
        );
        assert_eq!(
            operation_id("list", "", "v1", "", "Node", ""),
            "listCoreV1Node"
        );
    }
}
