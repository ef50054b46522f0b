//! API discovery: how clients learn which resources exist, what they are called and what
//! they can do.
//!
//! kubectl runs discovery before every command (and caches it under `~/.kube/cache/discovery`)
//! to turn `po` into `pods` and `deploy` into `deployments.apps`, and to expand `get all`.
//! Kubernetes offers two shapes of the same facts, and kubectl accepts either:
//!
//! | route                                  | aggregated (v2), one request each | legacy            |
//! |----------------------------------------|-----------------------------------|-------------------|
//! | `GET /api`                             | [`aggregated_core`]               | [`api_versions`]  |
//! | `GET /apis`                            | [`aggregated_groups`]             | [`api_group_list`] |
//! | `GET /apis/{group}`                    |                                   | [`api_group`]     |
//! | `GET /api/v1`, `/apis/{group}/{version}` |                                 | [`api_resource_list`] |
//!
//! The server answers `/api` and `/apis` in the aggregated shape when [`wants_aggregated`]
//! says the `Accept` header asks for it, with Content-Type [`AGGREGATED_CONTENT_TYPE`].
//!
//! Everything here is generated from [`skiff_api::resources::RESOURCES`] (and the create-only
//! [`skiff_api::resources::REVIEWS`]): a resource added to those tables is discovered without
//! touching this file.

use serde_json::{json, Value};
use skiff_api::resources::{self, ResourceInfo};

/// The exact Content-Type kubectl requires on an aggregated discovery response.
pub const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Verbs every served resource supports. `deletecollection` is left out on purpose: skiff does
/// not implement it, and kubectl would otherwise use it for `delete --all`.
pub const RESOURCE_VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];

/// The verbs `r` supports: a review is only ever created.
pub fn verbs_of(r: &ResourceInfo) -> &'static [&'static str] {
    if resources::is_review(r) {
        &["create"]
    } else if resources::is_measured(r) {
        &["get", "list"]
    } else {
        RESOURCE_VERBS
    }
}

/// A subresource as discovery describes it: what it answers with and what it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubresourceInfo {
    /// The path segment after the object's name (`status`, `scale`).
    pub name: &'static str,
    pub group: &'static str,
    pub version: &'static str,
    /// The kind of object the subresource reads and writes.
    pub kind: &'static str,
    pub verbs: &'static [&'static str],
}

/// How the subresource `name` of `resource` behaves, as upstream Kubernetes defines it.
pub fn subresource(resource: &ResourceInfo, name: &'static str) -> SubresourceInfo {
    let own_kind = |verbs| SubresourceInfo {
        name,
        group: resource.group,
        version: resource.version,
        kind: resource.kind,
        verbs,
    };
    match name {
        "scale" => SubresourceInfo {
            name,
            group: "autoscaling",
            version: "v1",
            kind: "Scale",
            verbs: &["get", "patch", "update"],
        },
        "log" => own_kind(&["get"]),
        // A custom metric of every object of the resource.
        _ if resources::is_measured(resource) => own_kind(&["get"]),
        "token" => SubresourceInfo {
            name,
            group: "authentication.k8s.io",
            version: "v1",
            kind: "TokenRequest",
            verbs: &["create"],
        },
        "binding" => SubresourceInfo {
            kind: "Binding",
            verbs: &["create"],
            ..own_kind(&[])
        },
        "proxy" => SubresourceInfo {
            kind: "NodeProxyOptions",
            verbs: &["get"],
            ..own_kind(&[])
        },
        "exec" => SubresourceInfo {
            kind: "PodExecOptions",
            verbs: &["create", "get"],
            ..own_kind(&[])
        },
        // `status` and anything else that reads and writes the object itself.
        _ => own_kind(&["get", "patch", "update"]),
    }
}

/// The subresources `resource` serves.
pub fn subresources(resource: &ResourceInfo) -> impl Iterator<Item = SubresourceInfo> + '_ {
    resource
        .subresources
        .iter()
        .map(move |name| subresource(resource, name))
}

/// Every served (group, version), core first, in table order. A group's first version is its
/// preferred one.
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut gvs: Vec<(&'static str, &'static str)> = Vec::new();
    for r in resources::served() {
        if !gvs.contains(&(r.group, r.version)) {
            gvs.push((r.group, r.version));
        }
    }
    gvs
}

/// The resources served under one group-version, in table order.
pub fn resources_in(group: &str, version: &str) -> Vec<&'static ResourceInfo> {
    resources::served()
        .filter(|r| r.group == group && r.version == version)
        .collect()
}

fn versions_of(group: &str) -> Vec<&'static str> {
    group_versions()
        .into_iter()
        .filter(|(g, _)| *g == group)
        .map(|(_, v)| v)
        .collect()
}

/// Whether an `Accept` header asks for aggregated discovery v2 in JSON. kubectl sends several
/// comma-separated media types in order of preference; a match anywhere counts, because
/// kubectl only lists the aggregated types ahead of plain JSON.
pub fn wants_aggregated(accept: Option<&str>) -> bool {
    let Some(accept) = accept else {
        return false;
    };
    accept.split(',').any(|media_type| {
        let mut parts = media_type.split(';').map(str::trim);
        let is_json = parts
            .next()
            .is_some_and(|t| t.eq_ignore_ascii_case("application/json"));
        let (mut g, mut v, mut as_) = (false, false, false);
        for param in parts {
            match param.split_once('=').map(|(k, val)| (k.trim(), val.trim())) {
                Some(("g", "apidiscovery.k8s.io")) => g = true,
                Some(("v", "v2")) => v = true,
                Some(("as", "APIGroupDiscoveryList")) => as_ = true,
                _ => {}
            }
        }
        is_json && g && v && as_
    })
}

// ---- Aggregated discovery (apidiscovery.k8s.io/v2) ----

/// `/api` in the aggregated shape: one item, the core group, whose name is `""`.
pub fn aggregated_core() -> Value {
    discovery_list(vec![aggregated_group("")])
}

/// `/apis` in the aggregated shape: every named group.
pub fn aggregated_groups() -> Value {
    discovery_list(
        resources::groups()
            .into_iter()
            .map(aggregated_group)
            .collect(),
    )
}

fn discovery_list(items: Vec<Value>) -> Value {
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    })
}

fn aggregated_group(group: &str) -> Value {
    let versions: Vec<Value> = versions_of(group)
        .into_iter()
        .map(|version| {
            let resources: Vec<Value> = resources_in(group, version)
                .into_iter()
                .map(aggregated_resource)
                .collect();
            // "Stale" would make kubectl hide the whole group.
            json!({ "version": version, "resources": resources, "freshness": "Current" })
        })
        .collect();
    json!({ "metadata": { "name": group }, "versions": versions })
}

fn aggregated_resource(r: &ResourceInfo) -> Value {
    let mut entry = json!({
        "resource": r.resource,
        "responseKind": { "group": r.group, "version": r.version, "kind": r.kind },
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": verbs_of(r),
    });
    // Upstream omits empty lists; kubectl treats absent and empty alike.
    insert_unless_empty(&mut entry, "shortNames", r.short_names);
    insert_unless_empty(&mut entry, "categories", r.categories);
    let subresources: Vec<Value> = subresources(r)
        .map(|s| {
            json!({
                "subresource": s.name,
                "responseKind": { "group": s.group, "version": s.version, "kind": s.kind },
                "verbs": s.verbs,
            })
        })
        .collect();
    if !subresources.is_empty() {
        entry["subresources"] = Value::from(subresources);
    }
    entry
}

fn insert_unless_empty(entry: &mut Value, key: &str, values: &[&str]) {
    if !values.is_empty() {
        entry[key] = json!(values);
    }
}

// ---- Legacy discovery ----

/// `/api` in the legacy shape. `server_address` (`host:port`) is where clients should send
/// core-group requests.
pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": versions_of(""),
        "serverAddressByClientCIDRs": [
            { "clientCIDR": "0.0.0.0/0", "serverAddress": server_address }
        ],
    })
}

/// `/apis` in the legacy shape: every named group with its versions.
pub fn api_group_list() -> Value {
    let groups: Vec<Value> = resources::groups().into_iter().map(group_body).collect();
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

/// `/apis/{group}`, or `None` if the group is not served (the core group has no such route).
pub fn api_group(group: &str) -> Option<Value> {
    if group.is_empty() || !resources::groups().contains(&group) {
        return None;
    }
    let mut body = group_body(group);
    body["kind"] = json!("APIGroup");
    body["apiVersion"] = json!("v1");
    Some(body)
}

fn group_body(group: &str) -> Value {
    let versions: Vec<Value> = versions_of(group)
        .into_iter()
        .map(|v| json!({ "groupVersion": format!("{group}/{v}"), "version": v }))
        .collect();
    let preferred = versions.first().cloned().unwrap_or(Value::Null);
    json!({ "name": group, "versions": versions, "preferredVersion": preferred })
}

/// `/api/v1` or `/apis/{group}/{version}`: the resources of one group-version, subresources
/// listed as `pods/status`. `None` if nothing is served there.
pub fn api_resource_list(group: &str, version: &str) -> Option<Value> {
    let served = resources_in(group, version);
    if served.is_empty() {
        return None;
    }
    let mut entries = Vec::new();
    for r in served {
        let mut entry = json!({
            "name": r.resource,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": verbs_of(r),
        });
        insert_unless_empty(&mut entry, "shortNames", r.short_names);
        insert_unless_empty(&mut entry, "categories", r.categories);
        entries.push(entry);
        for s in subresources(r) {
            let mut sub = json!({
                "name": format!("{}/{}", r.resource, s.name),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": s.kind,
                "verbs": s.verbs,
            });
            // Legacy discovery names the group-version only when it differs from the parent's.
            if (s.group, s.version) != (r.group, r.version) {
                sub["group"] = json!(s.group);
                sub["version"] = json!(s.version);
            }
            entries.push(sub);
        }
    }
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": if group.is_empty() { version.to_string() } else { format!("{group}/{version}") },
        "resources": entries,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every resource entry of an aggregated document, as (group, version, entry).
    fn aggregated_entries(doc: &Value) -> Vec<(String, String, Value)> {
        let mut out = Vec::new();
        for item in doc["items"].as_array().expect("items") {
            let group = item["metadata"]["name"].as_str().expect("group name");
            for version in item["versions"].as_array().expect("versions") {
                assert_eq!(version["freshness"], "Current");
                let v = version["version"].as_str().expect("version");
                for entry in version["resources"].as_array().expect("resources") {
                    out.push((group.to_string(), v.to_string(), entry.clone()));
                }
            }
        }
        out
    }

    #[test]
    fn aggregated_discovery_lists_every_resource_once() {
        let core = aggregated_core();
        assert_eq!(core["kind"], "APIGroupDiscoveryList");
        assert_eq!(core["items"].as_array().map(Vec::len), Some(1));
        assert_eq!(core["items"][0]["metadata"]["name"], "");

        let mut entries = aggregated_entries(&core);
        entries.extend(aggregated_entries(&aggregated_groups()));
        for r in resources::served() {
            let matching: Vec<&Value> = entries
                .iter()
                .filter(|(g, v, e)| g == r.group && v == r.version && e["resource"] == r.resource)
                .map(|(_, _, e)| e)
                .collect();
            assert_eq!(matching.len(), 1, "{} listed once", r.resource);
            let entry = matching[0];
            assert_eq!(entry["responseKind"]["kind"], r.kind);
            assert_eq!(entry["responseKind"]["group"], r.group);
            assert_eq!(
                entry["scope"],
                if r.namespaced {
                    "Namespaced"
                } else {
                    "Cluster"
                }
            );
            assert_eq!(entry["singularResource"], r.singular);
            let short_names = entry.get("shortNames").cloned().unwrap_or(json!([]));
            assert_eq!(short_names, json!(r.short_names), "{}", r.resource);
            for sub in r.subresources {
                let found = entry["subresources"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|s| s["subresource"] == *sub && s["responseKind"]["kind"].is_string());
                assert!(found, "{}/{sub}", r.resource);
            }
        }
        assert_eq!(entries.len(), resources::served().count());
        let review = entries
            .iter()
            .find(|(_, _, e)| e["resource"] == "selfsubjectaccessreviews")
            .expect("reviews discovered");
        assert_eq!(
            review.2["verbs"],
            json!(["create"]),
            "a review is only created"
        );
    }

    #[test]
    fn legacy_discovery_lists_every_resource_once() {
        let groups = api_group_list();
        let mut entries = Vec::new();
        for (group, version) in group_versions() {
            if !group.is_empty() {
                let listed = groups["groups"]
                    .as_array()
                    .expect("groups")
                    .iter()
                    .any(|g| g["name"] == group);
                assert!(listed, "{group} in /apis");
                assert!(api_group(group).is_some());
            }
            let list = api_resource_list(group, version).expect("served group-version");
            for entry in list["resources"].as_array().expect("resources") {
                entries.push((group, version, entry.clone()));
            }
        }
        for r in resources::served() {
            let matching: Vec<_> = entries
                .iter()
                .filter(|(g, v, e)| *g == r.group && *v == r.version && e["name"] == r.resource)
                .collect();
            assert_eq!(matching.len(), 1, "{}", r.resource);
            let entry = &matching[0].2;
            assert_eq!(entry["namespaced"], r.namespaced);
            assert_eq!(
                entry.get("shortNames").cloned().unwrap_or(json!([])),
                json!(r.short_names)
            );
            for sub in r.subresources {
                let name = format!("{}/{sub}", r.resource);
                assert!(entries.iter().any(|(_, _, e)| e["name"] == name), "{name}");
            }
        }
        assert!(api_resource_list("apps", "v2").is_none());
        assert!(api_group("").is_none());
        assert!(api_group("policy").is_none());
        assert_eq!(api_versions("10.0.0.1:6443")["versions"], json!(["v1"]));
    }

    #[test]
    fn accept_header_matching() {
        let cases = [
            (
                Some(
                    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,\
                     application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,\
                     application/json",
                ),
                true,
            ),
            (Some(AGGREGATED_CONTENT_TYPE), true),
            (Some("application/json; as=APIGroupDiscoveryList; v=v2; g=apidiscovery.k8s.io"), true),
            (Some("application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"), false),
            (
                Some("application/vnd.kubernetes.protobuf;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"),
                false,
            ),
            (Some("application/json"), false),
            (Some("application/json;as=Table;v=v1;g=meta.k8s.io"), false),
            (Some("*/*"), false),
            (None, false),
        ];
        for (accept, want) in cases {
            assert_eq!(wants_aggregated(accept), want, "{accept:?}");
        }
    }
}
