//! Field selectors: `spec.nodeName=node-1,status.phase!=Running`. Only `=`, `==` and `!=`,
//! and each resource allows only a few fields.

use serde_json::Value;

use crate::resources::ResourceInfo;
use crate::status::ApiError;

/// One `field=value` or `field!=value` term of a field selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    /// Dotted path into the object (`spec.nodeName`).
    pub field: String,
    /// `false` for `!=`.
    pub equals: bool,
    pub value: String,
}

/// A field selector: every term must hold. The empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    pub requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// Parses `a=b,c!=d`. Values may escape `\,`, `\=` and `\\`.
    pub fn parse(selector: &str) -> Result<Self, ApiError> {
        let mut requirements = Vec::new();
        for term in split_unescaped_commas(selector) {
            if term.trim().is_empty() {
                continue;
            }
            let invalid = || {
                ApiError::BadRequest(format!(
                    "invalid selector: '{selector}'; can't understand '{term}'"
                ))
            };
            // The first operator wins, trying `!=` and `==` before `=` at each position.
            let (field, equals, rest) = (0..term.len())
                .filter(|&i| term.is_char_boundary(i))
                .find_map(|i| {
                    let tail = &term[i..];
                    if tail.starts_with("!=") {
                        Some((&term[..i], false, &term[i + 2..]))
                    } else if tail.starts_with("==") {
                        Some((&term[..i], true, &term[i + 2..]))
                    } else if tail.starts_with('=') {
                        Some((&term[..i], true, &term[i + 1..]))
                    } else {
                        None
                    }
                })
                .ok_or_else(invalid)?;
            let value = unescape(rest.trim()).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "invalid field selector: invalid escape sequence in '{term}'; \
                     only '\\\\', '\\,' and '\\=' may be escaped"
                ))
            })?;
            requirements.push(FieldRequirement {
                field: field.trim().to_string(),
                equals,
                value,
            });
        }
        Ok(FieldSelector { requirements })
    }

    /// Rejects fields this resource cannot be selected by, as Kubernetes does with a 400.
    pub fn validate(&self, info: &ResourceInfo) -> Result<(), ApiError> {
        match self
            .requirements
            .iter()
            .find(|r| !info.supports_field(&r.field))
        {
            Some(r) => Err(ApiError::BadRequest(format!(
                "field label not supported: {}",
                r.field
            ))),
            None => Ok(()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether an object in JSON form satisfies every term. A missing field reads as `""`;
    /// booleans and numbers compare as their text (`spec.hostNetwork=true`).
    pub fn matches(&self, object: &Value) -> bool {
        self.requirements.iter().all(|r| {
            let actual = field_text(object, &r.field);
            (actual == r.value) == r.equals
        })
    }
}

/// The text of the value at a dotted path, `""` when absent or not a scalar.
fn field_text(object: &Value, path: &str) -> String {
    let found = path
        .split('.')
        .try_fold(object, |v, segment| v.get(segment));
    match found {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// Splits on commas that are not escaped with a backslash.
fn split_unescaped_commas(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            ',' if !escaped => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => escaped = false,
        }
    }
    parts.push(&s[start..]);
    parts
}

/// Undoes `\\`, `\,` and `\=`; `None` on any other escape.
fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(e @ ('\\' | ',' | '=')) => out.push(e),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources;
    use serde_json::json;

    #[test]
    fn field_selectors_match_by_dotted_path() {
        let pod = json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"nodeName": "node-1", "hostNetwork": true},
            "status": {"phase": "Running"}
        });
        let cases = [
            ("", true),
            ("spec.nodeName=node-1", true),
            ("spec.nodeName==node-1", true),
            ("spec.nodeName!=node-1", false),
            ("spec.nodeName=", false),
            ("spec.schedulerName=", true),
            ("status.phase!=Pending,metadata.name=p", true),
            ("spec.hostNetwork=true", true),
            ("metadata.namespace=default,", true),
        ];
        for (selector, want) in cases {
            let parsed = FieldSelector::parse(selector).expect(selector);
            assert_eq!(parsed.matches(&pod), want, "{selector:?}");
        }
    }

    #[test]
    fn field_selector_errors() {
        assert_eq!(
            FieldSelector::parse("spec.nodeName"),
            Err(ApiError::BadRequest(
                "invalid selector: 'spec.nodeName'; can't understand 'spec.nodeName'".into()
            ))
        );
        let escaped = FieldSelector::parse(r"metadata.name=a\,b").expect("escaped comma");
        assert_eq!(escaped.requirements[0].value, "a,b");
        assert!(FieldSelector::parse(r"metadata.name=a\b").is_err());

        let pods = resources::find("", "v1", "pods").expect("pods served");
        let nodes = resources::find("", "v1", "nodes").expect("nodes served");
        let selector =
            FieldSelector::parse("spec.nodeName=n,metadata.namespace=default").expect("valid");
        assert_eq!(selector.validate(pods), Ok(()));
        assert_eq!(
            FieldSelector::parse("spec.foo=x")
                .expect("valid")
                .validate(pods),
            Err(ApiError::BadRequest(
                "field label not supported: spec.foo".into()
            ))
        );
        assert!(selector.validate(nodes).is_err());
    }
}
