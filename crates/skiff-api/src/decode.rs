//! Request bodies to JSON values.
//!
//! kubectl and client-go send JSON, except client-go's typed clients (kubectl's `create`
//! generators), which send protobuf; the Python client sends JSON with *no* Content-Type;
//! server-side apply sends `application/apply-patch+yaml` whose body is usually JSON anyway; a
//! few third-party clients send YAML. Everything becomes one `serde_json::Value` here, so the
//! rest of the server sees only JSON.

use serde_json::Value;

use crate::status::ApiError;

/// How a body is to be parsed, decided from its Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyFormat {
    Json,
    Yaml,
    Protobuf,
}

/// The media types accepted for object bodies, for the 415 message.
const ACCEPTED: &str = "application/json, application/yaml, application/vnd.kubernetes.protobuf";

fn body_format(content_type: Option<&str>) -> Result<BodyFormat, ApiError> {
    // Parameters (`; charset=utf-8`) do not change the format.
    let media_type = content_type
        .and_then(|ct| ct.split(';').next())
        .map(|ct| ct.trim().to_ascii_lowercase())
        .unwrap_or_default();
    match media_type.as_str() {
        // No Content-Type at all: the Python client's creates. JSON is the only sane guess.
        "" => Ok(BodyFormat::Json),
        "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" => Ok(BodyFormat::Yaml),
        t if t.ends_with("+yaml") => Ok(BodyFormat::Yaml),
        "application/json" | "text/json" => Ok(BodyFormat::Json),
        crate::protobuf::MEDIA_TYPE => Ok(BodyFormat::Protobuf),
        t if t.ends_with("+json") => Ok(BodyFormat::Json),
        other => Err(ApiError::UnsupportedMediaType(format!(
            "the body of the request was in an unknown format ({other}) - accepted media types include: {ACCEPTED}"
        ))),
    }
}

/// Parses a request body as JSON or YAML according to its Content-Type.
///
/// YAML-typed bodies that are really JSON (server-side apply from kubectl) go through the JSON
/// parser, which is exact where YAML 1.1 would reinterpret (`0644`, `yes`). Syntax errors are
/// `BadRequest`s that say where: `line 3 column 5`.
pub fn decode_body(bytes: &[u8], content_type: Option<&str>) -> Result<Value, ApiError> {
    let format = body_format(content_type)?;
    if format == BodyFormat::Protobuf {
        return crate::protobuf::decode(bytes);
    }
    let looks_like_json = bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{' || *b == b'[');
    if format == BodyFormat::Json || looks_like_json {
        serde_json::from_slice(bytes)
            .map_err(|e| ApiError::BadRequest(format!("error decoding JSON body: {e}")))
    } else {
        decode_yaml(bytes)
    }
}

/// YAML as Kubernetes reads it (YAML 1.1 through sigs.k8s.io/yaml): `0644` is octal, so a
/// `defaultMode: 0644` arrives as 420.
fn decode_yaml(bytes: &[u8]) -> Result<Value, ApiError> {
    let options = serde_saphyr::options! {
        legacy_octal_numbers: true,
        with_snippet: false,
    };
    serde_saphyr::from_slice_with_options::<Value>(bytes, options).map_err(|e| {
        // serde-saphyr usually ends its message with `at line 4, column 3`; add it when not.
        let message = e.to_string();
        let position = match e.location() {
            Some(l) if !message.contains(" line ") => {
                format!(" at line {}, column {}", l.line(), l.column())
            }
            _ => String::new(),
        };
        ApiError::BadRequest(format!("error decoding YAML body: {message}{position}"))
    })
}

/// Like [`decode_body`], for bodies that must be one object (creates, updates).
pub fn decode_object(bytes: &[u8], content_type: Option<&str>) -> Result<Value, ApiError> {
    let value = decode_body(bytes, content_type)?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(ApiError::BadRequest(format!(
            "the body of the request must be an object, not {}",
            json_type(&value)
        )))
    }
}

/// A JSON value's type, as a word for error messages.
pub(crate) fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A body nested 100,000 deep is refused by the parser's depth limit (128), not followed
    /// into a stack overflow, in JSON and in YAML.
    #[test]
    fn deeply_nested_bodies_are_refused() {
        let json = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let error = decode_body(json.as_bytes(), Some("application/json")).expect_err("json");
        assert_eq!(error.code(), 400, "{error}");
        let yaml = format!("a: {}{}", "[".repeat(100_000), "]".repeat(100_000));
        let error = decode_body(yaml.as_bytes(), Some("application/yaml")).expect_err("yaml");
        assert_eq!(error.code(), 400, "{error}");
    }

    /// "Billion laughs": nine levels of aliases, each nine of the one before, would expand to
    /// 9^9 strings. The decoder's budget refuses it instead of expanding it.
    #[test]
    fn yaml_alias_bombs_are_refused() {
        let mut yaml = String::from("a0: &a0 [\"lol\"]\n");
        for level in 1..10 {
            let refs = vec![format!("*a{}", level - 1); 9].join(", ");
            yaml.push_str(&format!("a{level}: &a{level} [{refs}]\n"));
        }
        let error = decode_body(yaml.as_bytes(), Some("application/yaml")).expect_err("refused");
        assert_eq!(error.code(), 400, "{error}");
    }

    #[test]
    fn formats_follow_the_content_type() {
        let yaml = "kind: Pod\nspec:\n  mode: 0644\n  name: web\n";
        let json_body = r#"{"kind": "Pod", "spec": {"mode": 420, "name": "web"}}"#;
        let want = json!({"kind": "Pod", "spec": {"mode": 420, "name": "web"}});
        let cases: &[(&str, Option<&str>)] = &[
            (json_body, None),
            (json_body, Some("application/json")),
            (json_body, Some("application/json; charset=utf-8")),
            (json_body, Some("application/merge-patch+json")),
            (json_body, Some("application/apply-patch+yaml")),
            (yaml, Some("application/yaml")),
            (yaml, Some("application/apply-patch+yaml")),
            (yaml, Some("Application/YAML; charset=utf-8")),
        ];
        for (body, content_type) in cases {
            let got = decode_body(body.as_bytes(), *content_type);
            assert_eq!(got, Ok(want.clone()), "{content_type:?}");
        }
    }

    #[test]
    fn empty_yaml_values_are_null() {
        let got = decode_body(
            b"metadata:\n  labels:\n  name: x\n",
            Some("application/yaml"),
        );
        assert_eq!(got, Ok(json!({"metadata": {"labels": null, "name": "x"}})));
    }

    #[test]
    fn syntax_errors_say_where() {
        let cases: &[(&[u8], Option<&str>, &str)] = &[
            (b"{\"kind\": \"Pod\",\n \"spec\": }", None, "line 2 column"),
            (
                b"kind: Pod\nspec:\n  - a\n  b: c\n",
                Some("application/yaml"),
                "line 4, column 3",
            ),
            (
                b"a: 1\na: 2\n",
                Some("application/yaml"),
                "duplicate mapping key: a",
            ),
        ];
        for (body, content_type, want) in cases {
            match decode_body(body, *content_type) {
                Err(ApiError::BadRequest(message)) => assert!(message.contains(want), "{message}"),
                other => panic!("{content_type:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn other_media_types_are_unsupported() {
        let got = decode_body(b"\x0a\x0b", Some("application/cbor"));
        assert!(
            matches!(got, Err(ApiError::UnsupportedMediaType(m)) if m.contains("(application/cbor)"))
        );
    }

    #[test]
    fn object_bodies_must_be_objects() {
        assert!(decode_object(b"{}", None).is_ok());
        assert_eq!(
            decode_object(b"[1]", None),
            Err(ApiError::BadRequest(
                "the body of the request must be an object, not an array".into()
            ))
        );
    }
}
