//! ConfigMaps and Secrets: their keys become file names when mounted, and their size is capped.

use k8s_openapi::api::core::v1::{ConfigMap, Secret};

use crate::names;
use crate::status::{go_quote, Cause};

/// Kubernetes' cap on a ConfigMap's or Secret's data (1 MiB): they are mounted into every pod
/// that uses them and kept in every kubelet's memory.
pub(in crate::admission) const MAX_DATA_BYTES: usize = 1024 * 1024;

pub(in crate::admission) fn config_map(cm: &ConfigMap) -> Vec<Cause> {
    let mut causes = Vec::new();
    let mut total = 0;
    for (key, value) in cm.data.iter().flatten() {
        total += value.len();
        causes.extend(key_problems(key, "data"));
        if cm.binary_data.as_ref().is_some_and(|b| b.contains_key(key)) {
            causes.push(Cause::invalid(
                format!("data[{key}]"),
                &go_quote(key),
                "duplicate of key present in binaryData",
            ));
        }
    }
    for (key, value) in cm.binary_data.iter().flatten() {
        total += value.0.len();
        causes.extend(key_problems(key, "binaryData"));
        if cm.data.as_ref().is_some_and(|d| d.contains_key(key)) {
            causes.push(Cause::invalid(
                format!("binaryData[{key}]"),
                &go_quote(key),
                "duplicate of key present in data",
            ));
        }
    }
    if total > MAX_DATA_BYTES {
        // Kubernetes reports this at the empty path, for the object as a whole.
        causes.push(Cause::too_long("", MAX_DATA_BYTES));
    }
    causes
}

/// Checked after defaulting, when `stringData` has been merged into `data`.
pub(in crate::admission) fn secret(secret: &Secret) -> Vec<Cause> {
    let mut causes = Vec::new();
    let mut total = 0;
    for (key, value) in secret.data.iter().flatten() {
        total += value.0.len();
        causes.extend(key_problems(key, "data"));
    }
    if total > MAX_DATA_BYTES {
        causes.push(Cause::too_long("data", MAX_DATA_BYTES));
    }
    causes
}

fn key_problems(key: &str, map: &str) -> Vec<Cause> {
    names::config_map_key(key)
        .into_iter()
        .map(|msg| Cause::invalid(format!("{map}[{key}]"), &go_quote(key), &msg))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn printed(causes: Vec<Cause>) -> Vec<String> {
        causes.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn config_map_problems() {
        let big = "x".repeat(MAX_DATA_BYTES + 1);
        let cases: Vec<(serde_json::Value, Vec<&str>)> = vec![
            (json!({"data": {"app.properties": "a=b"}, "binaryData": {"logo.png": "AAAA"}}), vec![]),
            (
                json!({"data": {"a": "1"}, "binaryData": {"a": "AAAA"}}),
                vec![
                    r#"data[a]: Invalid value: "a": duplicate of key present in binaryData"#,
                    r#"binaryData[a]: Invalid value: "a": duplicate of key present in data"#,
                ],
            ),
            (
                json!({"data": {"a/b": "1"}}),
                vec![
                    "data[a/b]: Invalid value: \"a/b\": a valid config key must consist of alphanumeric \
                     characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex \
                     used for validation is '[-._a-zA-Z0-9]+')",
                ],
            ),
            (json!({"data": {"big": big}}), vec!["Too long: may not be more than 1048576 bytes"]),
        ];
        for (input, want) in cases {
            let cm: ConfigMap = serde_json::from_value(input.clone()).expect("ConfigMap");
            assert_eq!(printed(config_map(&cm)), want, "{input}");
        }
    }

    #[test]
    fn secret_problems() {
        let secret: Secret =
            serde_json::from_value(json!({"data": {"ok": "AAAA", "..bad": "AAAA"}}))
                .expect("Secret");
        assert_eq!(
            printed(self::secret(&secret)),
            vec![r#"data[..bad]: Invalid value: "..bad": must not start with '..'"#]
        );
    }
}
