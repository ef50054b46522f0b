//! Bearer tokens for people and nodes, kept as Secrets in `kube-system` (as Kubernetes keeps
//! its bootstrap tokens): `skiff token create --user ann --group shop-admins` prints
//! `ID.SECRET` once, and the cluster keeps only the SHA-256 of the secret part, so reading the
//! Secret does not give the token away. Deleting the Secret (`skiff token delete ID`) revokes
//! the token on the next request.
//!
//! | Secret `kube-system/skiff-token-ID`, type `skiff.io/user-token` | |
//! |---|---|
//! | `token-id` | `ID`: 6 characters `[a-z0-9]` |
//! | `token-secret-sha256` | hex SHA-256 of `SECRET` (32 characters `[a-z0-9]`) |
//! | `user`, `groups` | who the token is (groups comma-separated) |
//! | `expiration` | optional RFC 3339 time after which the token is refused |
use base64::Engine;
use serde_json::{json, Value};
use skiff_store::object_key;

use super::user::UserInfo;
use crate::pki::sha256_hex;
use crate::registry::View;

/// The Secret type of a user token.
pub const SECRET_TYPE: &str = "skiff.io/user-token";
/// Where token Secrets live.
pub const NAMESPACE: &str = "kube-system";
const ID_LEN: usize = 6;
const SECRET_LEN: usize = 32;
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// The name of the Secret holding token `id`.
pub fn secret_name(id: &str) -> String {
    format!("skiff-token-{id}")
}

/// A new token for `user` in `groups`: the token to hand out (`ID.SECRET`, shown once) and the
/// Secret that makes the cluster accept it.
pub fn mint(
    user: &str,
    groups: &[String],
    expiration: Option<jiff::Timestamp>,
) -> Result<(String, Value), ring::error::Unspecified> {
    let id = random(ID_LEN)?;
    let secret = random(SECRET_LEN)?;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut data = json!({
        "token-id": b64(&id),
        "token-secret-sha256": b64(&sha256_hex(secret.as_bytes())),
        "user": b64(user),
        "groups": b64(&groups.join(",")),
    });
    if let Some(at) = expiration {
        data["expiration"] = json!(b64(&at.to_string()));
    }
    let object = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": secret_name(&id),
            "namespace": NAMESPACE,
            "labels": {"skiff.io/token-user": label_safe(user)},
        },
        "type": SECRET_TYPE,
        "data": data,
    });
    Ok((format!("{id}.{secret}"), object))
}

/// The user a token names, if it is a live token of this cluster.
pub fn authenticate(view: &dyn View, token: &str, now: jiff::Timestamp) -> Option<UserInfo> {
    let (id, secret) = token.split_once('.')?;
    if id.len() != ID_LEN || secret.len() != SECRET_LEN || !well_formed(id) || !well_formed(secret)
    {
        return None;
    }
    let stored = view.get(&object_key("secrets", NAMESPACE, &secret_name(id)))?;
    if stored.get("type").and_then(Value::as_str) != Some(SECRET_TYPE) {
        return None;
    }
    let field = |name: &str| -> Option<String> {
        let encoded = stored.pointer(&format!("/data/{name}"))?.as_str()?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?;
        String::from_utf8(bytes).ok()
    };
    let hash = field("token-secret-sha256")?;
    if !skiff_store::service::constant_time_eq(
        sha256_hex(secret.as_bytes()).as_bytes(),
        hash.as_bytes(),
    ) {
        return None;
    }
    if let Some(expiration) = field("expiration") {
        let at: jiff::Timestamp = expiration.parse().ok()?;
        if at <= now {
            return None;
        }
    }
    let user = field("user").filter(|u| !u.is_empty())?;
    let groups = field("groups").unwrap_or_default();
    let groups: Vec<&str> = groups.split(',').filter(|g| !g.is_empty()).collect();
    let mut info = UserInfo::new(&user, &groups);
    info.extra.insert(
        "authentication.kubernetes.io/credential-id".into(),
        vec![format!("skiff-token:{id}")],
    );
    Some(info)
}

fn well_formed(s: &str) -> bool {
    s.bytes().all(|b| ALPHABET.contains(&b))
}

/// A label value standing for `user` (label values are limited to 63 characters of
/// `[A-Za-z0-9_.-]`), so `kubectl get secrets -l skiff.io/token-user=ann` finds a user's tokens.
fn label_safe(user: &str) -> String {
    let cleaned: String = user
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    cleaned
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

fn random(len: usize) -> Result<String, ring::error::Unspecified> {
    use ring::rand::SecureRandom;
    let rng = ring::rand::SystemRandom::new();
    let mut out = String::with_capacity(len);
    while out.len() < len {
        let mut byte = [0u8; 1];
        rng.fill(&mut byte)?;
        // 252 = 7 × 36: rejecting the rest keeps every character equally likely.
        if byte[0] < 252 {
            out.push(ALPHABET[usize::from(byte[0]) % ALPHABET.len()] as char);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::fake::FakeView;

    #[test]
    fn a_minted_token_authenticates_until_revoked_or_expired() {
        let now: jiff::Timestamp = "2026-12-03T12:00:00Z".parse().expect("time");
        let (token, secret) = mint(
            "ann",
            &["shop-admins".into()],
            Some("2026-12-04T12:00:00Z".parse().expect("time")),
        )
        .expect("random");
        let stored = serde_json::to_string(&secret).expect("json");
        assert!(
            !stored.contains(token.split('.').nth(1).expect("secret part")),
            "only the hash is kept"
        );
        let view = FakeView::default().with("secrets", secret);
        let user = authenticate(&view, &token, now).expect("a live token");
        assert_eq!(user.name, "ann");
        assert_eq!(user.groups, vec!["shop-admins", "system:authenticated"]);
        let later: jiff::Timestamp = "2026-12-05T00:00:00Z".parse().expect("time");
        assert!(authenticate(&view, &token, later).is_none(), "expired");
        let (id, _) = token.split_once('.').expect("id");
        let wrong = format!("{id}.{}", "a".repeat(32));
        assert!(authenticate(&view, &wrong, now).is_none());
        assert!(
            authenticate(&FakeView::default(), &token, now).is_none(),
            "revoked"
        );
        assert!(authenticate(&view, "not-a-token", now).is_none());
        assert_eq!(label_safe("system:node:edge-1"), "system_node_edge-1");
    }
}
