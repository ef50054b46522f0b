//! `limit` and `continue`: a list in pages, as kubectl (500 at a time) and informers ask for it.
//!
//! Items are ordered by their store key (namespace, then name). A page holds the first `limit`
//! items after the previous page's last key; the token carries that key and the first page's
//! revision, in Kubernetes' format (base64 of `{"v":"meta.k8s.io/v1","rv":…,"start":…}`).
//!
//! The difference from Kubernetes: etcd serves every page from the first page's snapshot; skiff
//! keeps no old snapshots, so each page is read from the current state. An object is never
//! listed twice (keys only go forward), but one created behind the cursor meanwhile is not
//! listed, and one changed meanwhile is listed as it is now. Every page carries the first page's
//! `resourceVersion`, so a client that watches from it (as informers do) is told of each of
//! those changes: its view is complete.
use std::sync::Arc;

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use skiff_api::status::ApiError;

use crate::query::Params;
use crate::target::Target;

/// One page of a list.
pub struct Page {
    pub items: Vec<Arc<Value>>,
    /// The list's revision: the first page's.
    pub revision: u64,
    /// The next page's token; `None` on the last page.
    pub next: Option<String>,
    /// Items after this page (left out when selectors filter, as Kubernetes does).
    pub remaining: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct Token {
    v: String,
    rv: u64,
    /// The store key of the previous page's last item, plus `\0` (the next key after it).
    start: String,
}

const TOKEN_VERSION: &str = "meta.k8s.io/v1";
/// Longest token accepted (a store key is at most a few hundred bytes).
const MAX_TOKEN: usize = 4096;

fn invalid(why: &str) -> ApiError {
    ApiError::BadRequest(format!("continue key is not valid: {why}"))
}

fn decode(token: &str, prefix: &str) -> Result<Token, ApiError> {
    if token.len() > MAX_TOKEN {
        return Err(invalid("too long"));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(token)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(token))
        .map_err(|_| invalid("not base64"))?;
    let token: Token = serde_json::from_slice(&bytes).map_err(|e| invalid(&e.to_string()))?;
    if token.v != TOKEN_VERSION {
        return Err(invalid(&format!("unsupported version {:?}", token.v)));
    }
    // A token is good only for the collection it came from.
    if !token.start.starts_with(prefix) {
        return Err(invalid("it is for another collection"));
    }
    Ok(token)
}

fn encode(rv: u64, start: String) -> String {
    let token = Token {
        v: TOKEN_VERSION.into(),
        rv,
        start,
    };
    base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&token).unwrap_or_default())
}

fn key_of(target: &Target, object: &Value) -> String {
    let meta = |field: &str| {
        object
            .pointer(&format!("/metadata/{field}"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    skiff_store::object_key(
        &target.info.qualified_resource(),
        &meta("namespace"),
        &meta("name"),
    )
}

/// The page `params` ask for, out of `items` (already filtered) read at `revision`.
pub fn page(
    target: &Target,
    params: &Params,
    revision: u64,
    items: Vec<Arc<Value>>,
    selected: bool,
) -> Result<Page, ApiError> {
    let limit = params.limit.filter(|l| *l > 0);
    let token = match params.continue_token.as_deref().filter(|t| !t.is_empty()) {
        Some(token) => Some(decode(token, &target.prefix())?),
        None => None,
    };
    if token.is_none() && limit.is_none() {
        return Ok(Page {
            items,
            revision,
            next: None,
            remaining: None,
        });
    }
    let mut keyed: Vec<(String, Arc<Value>)> =
        items.into_iter().map(|o| (key_of(target, &o), o)).collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    let (rv, after) = match &token {
        Some(t) => (t.rv, keyed.partition_point(|(k, _)| *k < t.start)),
        None => (revision, 0),
    };
    let rest = &keyed[after..];
    let take = limit.map_or(rest.len(), |l| (l as usize).min(rest.len()));
    let (this, more) = rest.split_at(take);
    let next = match (more.is_empty(), this.last()) {
        (false, Some((last, _))) => Some(encode(rv, format!("{last}\u{0}"))),
        _ => None,
    };
    Ok(Page {
        items: this.iter().map(|(_, o)| o.clone()).collect(),
        revision: rv,
        remaining: (!selected && next.is_some()).then_some(more.len() as u64),
        next,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn target() -> Target {
        crate::target::parse("/api/v1/namespaces/default/configmaps")
            .expect("parse")
            .expect("a target")
    }

    fn params(limit: Option<u64>, token: Option<String>) -> Params {
        Params {
            limit,
            continue_token: token,
            ..Params::default()
        }
    }

    fn names(page: &Page) -> Vec<String> {
        page.items
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap_or("").to_string())
            .collect()
    }

    fn items(names: &[&str]) -> Vec<Arc<Value>> {
        names
            .iter()
            .map(|n| Arc::new(json!({"metadata": {"name": n, "namespace": "default"}})))
            .collect()
    }

    #[test]
    fn pages_follow_key_order_and_carry_the_first_revision() {
        let t = target();
        let all = items(&["d", "a", "c", "b", "e"]);
        let first = page(&t, &params(Some(2), None), 10, all.clone(), false).expect("page");
        assert_eq!(names(&first), ["a", "b"]);
        assert_eq!(first.remaining, Some(3));
        let token = first.next.clone().expect("more");

        // Meanwhile "aa" appears behind the cursor and "b" goes: neither changes what follows.
        let now = items(&["d", "a", "aa", "c", "e"]);
        let second = page(&t, &params(Some(2), Some(token)), 12, now.clone(), false).expect("p");
        assert_eq!(names(&second), ["c", "d"]);
        assert_eq!(second.revision, 10, "the first page's revision");
        let third = page(&t, &params(Some(2), second.next.clone()), 13, now, false).expect("p");
        assert_eq!(names(&third), ["e"]);
        assert!(third.next.is_none());
        assert_eq!(third.remaining, None);

        // No limit: everything, unpaged.
        let whole = page(&t, &params(None, None), 10, all, true).expect("page");
        assert_eq!(whole.items.len(), 5);
        assert!(whole.next.is_none());
    }

    #[test]
    fn bad_and_foreign_tokens_are_refused_by_name() {
        let t = target();
        let err =
            |token: &str| match page(&t, &params(Some(1), Some(token.into())), 1, vec![], false) {
                Err(e) => e.to_string(),
                Ok(_) => "accepted".into(),
            };
        assert!(err("%%%").contains("continue key is not valid"));
        let foreign = encode(1, "secrets/default/x\u{0}".into());
        assert!(
            err(&foreign).contains("another collection"),
            "{}",
            err(&foreign)
        );
        assert!(err(&"A".repeat(5000)).contains("too long"));
    }
}
