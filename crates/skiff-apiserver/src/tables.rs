//! Server-side printing: answering `kubectl get` with a `meta.k8s.io` `Table`.
//!
//! kubectl does not know how to print a Pod. It asks the server for rows instead, with
//! `Accept: application/json;as=Table;v=v1;g=meta.k8s.io,...,application/json`, and prints the
//! column headers and cells it gets back. Without this, every resource shows only NAME and AGE.
//! The columns and the way each cell is computed follow kube-apiserver's printers
//! (`pkg/printers/internalversion/printers.go`), so `kubectl get` reads as it does against
//! Kubernetes.
//!
//! ## Expected flow
//! 1. [`requested`] reads the Accept header (and `?includeObject=`) and says whether a Table
//!    was asked for. Media types skiff cannot produce are skipped; when nothing is left the
//!    answer is plain JSON, as before.
//! 2. A list becomes one Table ([`for_list`]), a single object a one-row Table
//!    ([`for_object`]), and each watch event's object a one-row Table ([`WatchTables`]).
//! 3. Every row carries the object's metadata (`PartialObjectMetadata`), which is how kubectl
//!    adds the NAMESPACE column for `-A` and the LABELS column for `--show-labels`.
//!
//! ## Caveats
//! The server fills in every column, including those with `priority: 1`; kubectl shows those
//! only for `-o wide`. Ages are computed when the response is built, as in Kubernetes.
//!
//! ## Layout
//! - this file: negotiation, the Table and its rows, which printer serves which resource, and
//!   the formatting the printers share (AGE, label selectors).
//! - `pods`: a pod's READY, STATUS and RESTARTS, the most involved cells.
//! - `workloads`: Deployments and ReplicaSets.
//! - `network`: Services, Endpoints and EndpointSlices.
//! - `cluster`: Nodes, Namespaces, Events, ConfigMaps, Secrets, Leases and ResourceQuotas.
//! - `storage`: PersistentVolumes, PersistentVolumeClaims and StorageClasses.
//! - `docs`: the column descriptions.

mod cluster;
mod docs;
mod network;
mod pods;
mod storage;
mod workloads;

use jiff::{SignedDuration, Timestamp};
use serde_json::{json, Map, Value};
use skiff_api::status::ApiError;

/// The `meta.k8s.io` version of Table the client asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableVersion {
    V1,
    V1beta1,
}

impl TableVersion {
    fn api_version(self) -> &'static str {
        match self {
            TableVersion::V1 => "meta.k8s.io/v1",
            TableVersion::V1beta1 => "meta.k8s.io/v1beta1",
        }
    }
}

/// What each row carries besides its cells (`?includeObject=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    /// The object's metadata only, as `PartialObjectMetadata` (the default).
    #[default]
    Metadata,
    /// The whole object.
    Object,
}

/// How a Table response should be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableOptions {
    pub version: TableVersion,
    pub include: IncludeObject,
}

/// Whether the request asked for a Table: the first media range in `accept` that skiff can
/// produce decides. `None` means plain JSON (also when nothing in `accept` can be produced,
/// which is how skiff answered before it printed tables).
pub fn requested(
    accept: Option<&str>,
    include_object: Option<&str>,
) -> Result<Option<TableOptions>, ApiError> {
    let Some(version) = accept.and_then(negotiate) else {
        return Ok(None);
    };
    let include = match include_object.unwrap_or("") {
        "" | "Metadata" => IncludeObject::Metadata,
        "Object" => IncludeObject::Object,
        "None" => IncludeObject::None,
        other => {
            return Err(ApiError::BadRequest(format!(
                "Invalid value: \"{other}\": includeObject must be one of None, Metadata, Object"
            )))
        }
    };
    Ok(Some(TableOptions { version, include }))
}

/// The Table version asked for by the first producible media range, or `None` for plain JSON.
fn negotiate(accept: &str) -> Option<TableVersion> {
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        if !matches!(media.as_str(), "application/json" | "application/*" | "*/*") {
            continue;
        }
        let mut params = (None, None, None);
        for param in parts {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            match key.trim() {
                "as" => params.0 = Some(value.trim()),
                "v" => params.1 = Some(value.trim()),
                "g" => params.2 = Some(value.trim()),
                _ => {}
            }
        }
        match params {
            (None, _, _) => return None,
            (Some("Table"), Some("v1"), Some("meta.k8s.io")) => return Some(TableVersion::V1),
            (Some("Table"), Some("v1beta1"), Some("meta.k8s.io")) => {
                return Some(TableVersion::V1beta1)
            }
            // Another conversion (PartialObjectMetadataList, ...) skiff cannot produce.
            _ => continue,
        }
    }
    None
}

/// The Table for a list: `resource` is the qualified resource (`pods`, `deployments.apps`),
/// `revision` the list's resourceVersion.
pub fn for_list<'a>(
    resource: &str,
    objects: impl IntoIterator<Item = &'a Value>,
    revision: u64,
    continue_token: Option<&str>,
    options: TableOptions,
    now: Timestamp,
) -> Value {
    let mut metadata = Map::new();
    metadata.insert("resourceVersion".into(), revision.to_string().into());
    if let Some(token) = continue_token.filter(|t| !t.is_empty()) {
        metadata.insert("continue".into(), token.into());
    }
    let printer = printer_for(resource);
    let rows = objects
        .into_iter()
        .map(|object| row(printer, object, options, now))
        .collect();
    table(printer, metadata, rows, options)
}

/// The one-row Table for a single object; its resourceVersion is the object's.
pub fn for_object(resource: &str, object: &Value, options: TableOptions, now: Timestamp) -> Value {
    let mut metadata = Map::new();
    let revision = str_at(object, "/metadata/resourceVersion");
    if !revision.is_empty() {
        metadata.insert("resourceVersion".into(), revision.into());
    }
    let printer = printer_for(resource);
    let rows = vec![row(printer, object, options, now)];
    table(printer, metadata, rows, options)
}

/// Turns the objects of a watch into one-row Tables. As kube-apiserver does, only the first
/// event carries the column definitions; kubectl keeps using the ones it has.
pub struct WatchTables {
    resource: String,
    options: TableOptions,
    columns_sent: bool,
}

impl WatchTables {
    pub fn new(resource: String, options: TableOptions) -> WatchTables {
        WatchTables {
            resource,
            options,
            columns_sent: false,
        }
    }

    pub fn event_object(&mut self, object: &Value) -> Value {
        let mut table = for_object(&self.resource, object, self.options, Timestamp::now());
        if std::mem::replace(&mut self.columns_sent, true) {
            table["columnDefinitions"] = json!([]);
        }
        table
    }

    /// A BOOKMARK's object: a Table without rows that carries only the revision.
    pub fn bookmark(&self, revision: u64) -> Value {
        json!({
            "kind": "Table",
            "apiVersion": self.options.version.api_version(),
            "metadata": {"resourceVersion": revision.to_string()},
            "columnDefinitions": [],
            "rows": [],
        })
    }
}

fn table(
    printer: &Printer,
    metadata: Map<String, Value>,
    rows: Vec<Value>,
    options: TableOptions,
) -> Value {
    let columns: Vec<Value> = printer
        .columns
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.kind,
                "format": c.format,
                "description": c.description,
                "priority": c.priority,
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": options.version.api_version(),
        "metadata": metadata,
        "columnDefinitions": columns,
        "rows": rows,
    })
}

fn row(printer: &Printer, object: &Value, options: TableOptions, now: Timestamp) -> Value {
    let mut row = Map::new();
    row.insert("cells".into(), Value::Array((printer.cells)(object, now)));
    // A finished pod is marked so, as Kubernetes marks it (clients may dim or hide the row).
    if let Some(conditions) = (printer.conditions)(object) {
        row.insert("conditions".into(), conditions);
    }
    match options.include {
        IncludeObject::None => {}
        IncludeObject::Object => {
            row.insert("object".into(), object.clone());
        }
        IncludeObject::Metadata => {
            let metadata = object.get("metadata").cloned().unwrap_or_else(|| json!({}));
            row.insert(
                "object".into(),
                json!({
                    "kind": "PartialObjectMetadata",
                    "apiVersion": options.version.api_version(),
                    "metadata": metadata,
                }),
            );
        }
    }
    Value::Object(row)
}

/// One column of a Table, as `metav1.TableColumnDefinition`.
struct Column {
    name: &'static str,
    /// `string`, `integer`, ... (an OpenAPI type).
    kind: &'static str,
    /// `name` for the column that holds the object's name; empty otherwise.
    format: &'static str,
    description: &'static str,
    /// 0: always shown; 1: shown with `-o wide`.
    priority: u8,
}

const fn column(name: &'static str, kind: &'static str, description: &'static str) -> Column {
    Column {
        name,
        kind,
        format: "",
        description,
        priority: 0,
    }
}

/// A column kubectl shows only with `-o wide`.
const fn wide(name: &'static str, kind: &'static str, description: &'static str) -> Column {
    Column {
        priority: 1,
        ..column(name, kind, description)
    }
}

const NAME: Column = Column {
    format: "name",
    ..column("Name", "string", docs::NAME)
};
const AGE: Column = column("Age", "string", docs::CREATED);

/// How one resource is printed: its columns, and the cells of one object, one per column.
struct Printer {
    columns: &'static [Column],
    cells: fn(&Value, Timestamp) -> Vec<Value>,
    /// Conditions of the row (only pods have any: `Completed`).
    conditions: fn(&Value) -> Option<Value>,
}

impl Printer {
    const fn new(
        columns: &'static [Column],
        cells: fn(&Value, Timestamp) -> Vec<Value>,
    ) -> Printer {
        Printer {
            columns,
            cells,
            conditions: |_| None,
        }
    }
}

/// The printer of a qualified resource (`pods`, `deployments.apps`).
fn printer_for(resource: &str) -> &'static Printer {
    match resource {
        "pods" => &pods::PODS,
        "deployments.apps" => &workloads::DEPLOYMENTS,
        "replicasets.apps" => &workloads::REPLICASETS,
        "statefulsets.apps" => &workloads::STATEFULSETS,
        "daemonsets.apps" => &workloads::DAEMONSETS,
        "jobs.batch" => &workloads::JOBS,
        "cronjobs.batch" => &workloads::CRONJOBS,
        "horizontalpodautoscalers.autoscaling" => &workloads::HORIZONTAL_POD_AUTOSCALERS,
        "controllerrevisions.apps" => &workloads::CONTROLLER_REVISIONS,
        "services" => &network::SERVICES,
        "endpoints" => &network::ENDPOINTS,
        "endpointslices.discovery.k8s.io" => &network::ENDPOINTSLICES,
        "nodes" => &cluster::NODES,
        "namespaces" => &cluster::NAMESPACES,
        "configmaps" => &cluster::CONFIGMAPS,
        "secrets" => &cluster::SECRETS,
        "events" => &cluster::EVENTS,
        "leases.coordination.k8s.io" => &cluster::LEASES,
        "resourcequotas" => &cluster::RESOURCE_QUOTAS,
        "persistentvolumes" => &storage::PERSISTENT_VOLUMES,
        "persistentvolumeclaims" => &storage::PERSISTENT_VOLUME_CLAIMS,
        "storageclasses.storage.k8s.io" => &storage::STORAGE_CLASSES,
        _ => &DEFAULT,
    }
}

/// Everything else. kube-apiserver's own fallback shows CREATED AT; skiff shows AGE, as
/// Kubernetes does for custom resources without printer columns.
const DEFAULT: Printer = Printer::new(&[NAME, AGE], default_cells);

fn default_cells(object: &Value, now: Timestamp) -> Vec<Value> {
    vec![name(object), age(object, now).into()]
}

// ---- formatting shared by the printers ----

fn name(object: &Value) -> Value {
    str_at(object, "/metadata/name").into()
}

/// AGE: how long ago the object was created.
pub fn age(object: &Value, now: Timestamp) -> String {
    since(str_at(object, "/metadata/creationTimestamp"), now)
}

/// How long before `now` an RFC 3339 `timestamp` was (`<unknown>` when unset).
pub fn since(timestamp: &str, now: Timestamp) -> String {
    match timestamp.parse::<Timestamp>() {
        Ok(then) => human_duration(now.duration_since(then)),
        Err(_) => "<unknown>".into(),
    }
}

/// A duration to about two significant figures, as Kubernetes' `duration.HumanDuration`:
/// seconds up to 2 minutes, then `3m20s` up to 10 minutes, minutes up to 3 hours, `5h30m` up
/// to 8 hours, hours up to 2 days, `2d3h` up to 8 days, days up to 2 years, then `3y10d`.
pub fn human_duration(d: SignedDuration) -> String {
    // Up to two seconds in the future is clock skew between machines: call it now.
    let seconds = d.as_secs();
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    let with_rest = |big: i64, unit: &str, rest: i64, rest_unit: &str| match rest {
        0 => format!("{big}{unit}"),
        _ => format!("{big}{unit}{rest}{rest_unit}"),
    };
    let (minutes, hours) = (seconds / 60, seconds / 3600);
    let days = hours / 24;
    match () {
        _ if seconds < 2 * 60 => format!("{seconds}s"),
        _ if minutes < 10 => with_rest(minutes, "m", seconds % 60, "s"),
        _ if minutes < 3 * 60 => format!("{minutes}m"),
        _ if hours < 8 => with_rest(hours, "h", minutes % 60, "m"),
        _ if hours < 48 => format!("{hours}h"),
        _ if hours < 8 * 24 => with_rest(days, "d", hours % 24, "h"),
        _ if days < 2 * 365 => format!("{days}d"),
        _ if days < 8 * 365 => with_rest(days / 365, "y", days % 365, "d"),
        _ => format!("{}y", days / 365),
    }
}

/// A label map as `a=b,c=d` (sorted by key), `<none>` when empty.
fn format_labels(map: Option<&Value>) -> String {
    let mut pairs: Vec<String> = map
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    pairs.sort_unstable();
    or_none(pairs.join(","))
}

fn or_none(s: String) -> String {
    if s.is_empty() {
        "<none>".into()
    } else {
        s
    }
}

fn labels_of(object: &Value) -> impl Iterator<Item = (&str, &str)> {
    object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or("")))
}

fn str_at<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn int_at(object: &Value, pointer: &str) -> i64 {
    object.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn array_at<'a>(object: &'a Value, pointer: &str) -> &'a [Value] {
    object
        .pointer(pointer)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn strings_at<'a>(object: &'a Value, pointer: &str) -> Vec<&'a str> {
    array_at(object, pointer)
        .iter()
        .filter_map(Value::as_str)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn now() -> Timestamp {
        "2024-05-01T12:00:00Z".parse().expect("timestamp")
    }

    /// An RFC 3339 time `seconds` before [`now`].
    pub(super) fn ago(seconds: i64) -> String {
        (now() - SignedDuration::from_secs(seconds)).to_string()
    }

    const KUBECTL: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

    #[test]
    fn the_first_producible_media_range_decides() {
        let cases: &[(&str, Option<TableVersion>)] = &[
            (KUBECTL, Some(TableVersion::V1)),
            (
                "application/json;as=Table;v=v1beta1;g=meta.k8s.io, application/json",
                Some(TableVersion::V1beta1),
            ),
            ("application/json", None),
            ("*/*", None),
            // Only what skiff cannot produce: plain JSON, as before tables existed.
            ("application/vnd.kubernetes.protobuf", None),
            (
                "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1;g=meta.k8s.io",
                Some(TableVersion::V1),
            ),
            (
                "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io,application/json",
                None,
            ),
            ("application/json;as=Table;v=v2;g=meta.k8s.io", None),
        ];
        for (accept, want) in cases {
            let got = requested(Some(accept), None).expect("valid");
            assert_eq!(got.map(|o| o.version), *want, "{accept}");
        }
        assert_eq!(requested(None, None).expect("valid"), None);
    }

    #[test]
    fn include_object_is_checked_only_when_a_table_is_asked_for() {
        let include = |value| requested(Some(KUBECTL), Some(value)).map(|o| o.map(|o| o.include));
        assert_eq!(include("").expect("ok"), Some(IncludeObject::Metadata));
        assert_eq!(include("None").expect("ok"), Some(IncludeObject::None));
        assert_eq!(include("Object").expect("ok"), Some(IncludeObject::Object));
        assert!(include("Everything").is_err());
        assert_eq!(
            requested(Some("application/json"), Some("Everything")).expect("ok"),
            None
        );
    }

    #[test]
    fn ages_read_like_kubectls() {
        let cases: &[(i64, &str)] = &[
            (-2, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (5, "5s"),
            (119, "119s"),
            (120, "2m"),
            (200, "3m20s"),
            (599, "9m59s"),
            (600, "10m"),
            (3 * 3600 - 1, "179m"),
            (3 * 3600, "3h"),
            (5 * 3600 + 30 * 60, "5h30m"),
            (8 * 3600 + 59, "8h"),
            (47 * 3600, "47h"),
            (51 * 3600, "2d3h"),
            (7 * 86400, "7d"),
            (8 * 86400 + 3600, "8d"),
            (730 * 86400, "2y"),
            (740 * 86400, "2y10d"),
            (9 * 365 * 86400, "9y"),
        ];
        for (seconds, want) in cases {
            assert_eq!(
                human_duration(SignedDuration::from_secs(*seconds)),
                *want,
                "{seconds}s"
            );
        }
        assert_eq!(since("", now()), "<unknown>");
        assert_eq!(since(&ago(200), now()), "3m20s");
    }

    fn configmap(name: &str) -> Value {
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"},
                         "resourceVersion": "7", "creationTimestamp": ago(5)},
            "data": {"a": "1", "b": "2"},
        })
    }

    #[test]
    fn a_list_becomes_a_table_whose_rows_carry_the_metadata() {
        let options = TableOptions {
            version: TableVersion::V1,
            include: IncludeObject::Metadata,
        };
        let items = [configmap("one"), configmap("two")];
        let table = for_list("configmaps", &items, 42, Some("next"), options, now());
        assert_eq!(table["kind"], "Table");
        assert_eq!(table["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(
            table["metadata"],
            json!({"resourceVersion": "42", "continue": "next"})
        );
        let names: Vec<&Value> = table["columnDefinitions"]
            .as_array()
            .expect("columns")
            .iter()
            .map(|c| &c["name"])
            .collect();
        assert_eq!(names, ["Name", "Data", "Age"]);
        assert_eq!(table["columnDefinitions"][0]["format"], "name");
        assert_eq!(table["rows"][1]["cells"], json!(["two", 2, "5s"]));
        let object = &table["rows"][0]["object"];
        assert_eq!(object["kind"], "PartialObjectMetadata");
        assert_eq!(object["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(object["metadata"]["namespace"], "default");
        assert_eq!(object["metadata"]["labels"]["app"], "web");
    }

    #[test]
    fn include_object_chooses_what_each_row_carries() {
        let object = configmap("one");
        let with = |include| {
            let options = TableOptions {
                version: TableVersion::V1beta1,
                include,
            };
            for_object("configmaps", &object, options, now())
        };
        let none = with(IncludeObject::None);
        assert_eq!(none["apiVersion"], "meta.k8s.io/v1beta1");
        assert_eq!(none["metadata"], json!({"resourceVersion": "7"}));
        assert!(none["rows"][0].get("object").is_none());
        assert_eq!(with(IncludeObject::Object)["rows"][0]["object"], object);
    }

    #[test]
    fn resources_without_a_printer_show_name_and_age() {
        let options = TableOptions {
            version: TableVersion::V1,
            include: IncludeObject::None,
        };
        let table = for_object("widgets.example.com", &configmap("w"), options, now());
        assert_eq!(table["columnDefinitions"][1]["name"], "Age");
        assert_eq!(table["rows"][0]["cells"], json!(["w", "5s"]));
    }

    #[test]
    fn only_the_first_watch_event_carries_the_columns() {
        let options = TableOptions {
            version: TableVersion::V1,
            include: IncludeObject::Metadata,
        };
        let mut tables = WatchTables::new("configmaps".into(), options);
        let first = tables.event_object(&configmap("one"));
        let second = tables.event_object(&configmap("two"));
        assert_eq!(first["columnDefinitions"].as_array().map(Vec::len), Some(3));
        assert_eq!(second["columnDefinitions"], json!([]));
        assert_eq!(second["rows"][0]["cells"][0], "two");
        assert_eq!(tables.bookmark(9)["metadata"]["resourceVersion"], "9");
    }
}
