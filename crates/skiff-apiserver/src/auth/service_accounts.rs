//! ServiceAccount tokens: bound, signed JWTs, as Kubernetes' TokenRequest API makes them
//! (`kubectl create token NAME`, and what a pod's projected token is).
//!
//! A token is an ES256 JWT signed with the cluster's service-account key
//! (`DATA_DIR/tls/service-account.key`, made with the CA and handed to joining servers):
//!
//! ```json
//! {"iss": "https://kubernetes.default.svc.cluster.local", "sub": "system:serviceaccount:NS:NAME",
//!  "aud": ["https://kubernetes.default.svc.cluster.local"], "exp": ..., "iat": ..., "nbf": ...,
//!  "jti": "...", "kubernetes.io": {"namespace": "NS", "serviceaccount": {"name": ..., "uid": ...},
//!                                  "pod": {"name": ..., "uid": ...}}}
//! ```
//!
//! It authenticates while it has not expired, its audience includes the API server's, and the
//! ServiceAccount (and the pod it is bound to, if any) still exists with the same uid: deleting
//! either revokes it. The user is `system:serviceaccount:NS:NAME` in `system:serviceaccounts`
//! and `system:serviceaccounts:NS`.
use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::Response;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use skiff_api::status::ApiError;
use skiff_store::object_key;

use super::user::{UserInfo, SERVICE_ACCOUNTS, SERVICE_ACCOUNT_PREFIX};
use crate::app::App;
use crate::registry::View;
use crate::respond;
use crate::target::Target;

/// The issuer and default audience, as Kubernetes' default `--service-account-issuer`.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// Kubernetes' default and bounds for `expirationSeconds`.
const DEFAULT_SECONDS: i64 = 3600;
const MIN_SECONDS: i64 = 600;
const MAX_SECONDS: i64 = 48 * 3600;
/// kubelet asks for this lifetime for a pod's projected token; bound to the pod, such a token
/// is extended to [`EXTENDED_SECONDS`] (Kubernetes' `--service-account-extend-token-expiration`,
/// on by default), so a pod's token keeps working without refreshes and ends with the pod.
const KUBELET_SECONDS: i64 = 3607;
const EXTENDED_SECONDS: i64 = 365 * 24 * 3600;

/// The key pair tokens are signed and checked with.
pub struct SigningKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl SigningKey {
    /// From the PEM of a P-256 private key (PKCS#8).
    pub fn from_pem(pem: &str) -> Result<SigningKey, String> {
        let pair =
            rcgen::KeyPair::from_pem(pem).map_err(|e| format!("service-account key: {e}"))?;
        if pair.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
            return Err("service-account key: not a P-256 key".into());
        }
        Ok(SigningKey {
            encoding: EncodingKey::from_ec_der(&pair.serialize_der()),
            decoding: DecodingKey::from_ec_der(pair.public_key_raw()),
        })
    }

    /// A new key's PEM.
    pub fn generate_pem() -> Result<String, String> {
        rcgen::KeyPair::generate()
            .map(|k| k.serialize_pem())
            .map_err(|e| format!("making a service-account key: {e}"))
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: Vec<String>,
    exp: i64,
    iat: i64,
    nbf: i64,
    jti: String,
    #[serde(rename = "kubernetes.io")]
    kubernetes: KubernetesClaims,
}

#[derive(Debug, Serialize, Deserialize)]
struct KubernetesClaims {
    namespace: String,
    serviceaccount: Ref,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pod: Option<Ref>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    secret: Option<Ref>,
    /// For an extended token: when it would have expired (clients may warn after it).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    warnafter: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Ref {
    name: String,
    uid: String,
}

/// Whether a bearer token looks like a JWT (three base64url parts, a JSON header).
pub fn looks_like_jwt(token: &str) -> bool {
    token.starts_with("eyJ") && token.matches('.').count() == 2
}

/// The service account a token stands for, if it is valid now.
pub fn authenticate(app: &App, token: &str) -> Option<UserInfo> {
    let key = app.service_account_key.as_ref()?;
    authenticate_with(app, key, token)
}

fn authenticate_with(view: &dyn View, key: &SigningKey, token: &str) -> Option<UserInfo> {
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&[ISSUER]);
    validation.set_issuer(&[ISSUER]);
    validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
    let claims = jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation)
        .ok()?
        .claims;
    let k = &claims.kubernetes;
    let account = view.get(&object_key(
        "serviceaccounts",
        &k.namespace,
        &k.serviceaccount.name,
    ))?;
    if uid_of(&account) != k.serviceaccount.uid {
        return None;
    }
    if let Some(pod) = &k.pod {
        let bound = view.get(&object_key("pods", &k.namespace, &pod.name))?;
        if uid_of(&bound) != pod.uid {
            return None;
        }
    }
    if claims.sub
        != format!(
            "{SERVICE_ACCOUNT_PREFIX}{}:{}",
            k.namespace, k.serviceaccount.name
        )
    {
        return None;
    }
    let mut user = UserInfo::new(
        &claims.sub,
        &[
            SERVICE_ACCOUNTS,
            &format!("{SERVICE_ACCOUNTS}:{}", k.namespace),
        ],
    );
    user.uid = k.serviceaccount.uid.clone();
    user.extra.insert(
        "authentication.kubernetes.io/credential-id".into(),
        vec![format!("JTI={}", claims.jti)],
    );
    if let Some(pod) = &k.pod {
        user.extra.insert(
            "authentication.kubernetes.io/pod-name".into(),
            vec![pod.name.clone()],
        );
        user.extra.insert(
            "authentication.kubernetes.io/pod-uid".into(),
            vec![pod.uid.clone()],
        );
    }
    Some(user)
}

fn uid_of(object: &Value) -> &str {
    object
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `POST .../serviceaccounts/NAME/token`: a TokenRequest answered with a signed token.
pub async fn token_request(
    app: &App,
    user: Option<&crate::auth::user::UserInfo>,
    target: &Target,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    // The account (and a bound pod) may have been written through another member a moment ago.
    app.store.linearize().await.map_err(respond::store_error)?;
    let key = app.service_account_key.as_ref().ok_or_else(|| {
        ApiError::ServiceUnavailable("this server has no service-account key".into())
    })?;
    let request = if body.is_empty() {
        json!({})
    } else {
        skiff_api::decode::decode_object(body, content_type)?
    };
    let namespace = target.namespace.as_deref().unwrap_or("");
    let name = target.name.as_deref().unwrap_or("");
    if let Some(node) = user.and_then(|u| u.node_name()) {
        node_may_ask(app, node, namespace, name, &request)?;
    }
    let (token, expires, mut answer) =
        issue(app, key, namespace, name, &request, jiff::Timestamp::now())?;
    answer["status"] = json!({"token": token, "expirationTimestamp": expires.to_string()});
    Ok(respond::json(StatusCode::CREATED, &answer))
}

/// NodeRestriction for tokens, as Kubernetes': a node asks only for tokens bound to a pod
/// scheduled to it that runs as the account (what kubelet projects into its pods), never a
/// free-standing token it could use elsewhere.
fn node_may_ask(
    view: &dyn View,
    node: &str,
    namespace: &str,
    account: &str,
    request: &Value,
) -> Result<(), ApiError> {
    let refuse = |why: &str| {
        Err(ApiError::Forbidden(format!(
            "serviceaccounts {account:?} is forbidden: node {node:?} {why}"
        )))
    };
    let bound = request.pointer("/spec/boundObjectRef");
    let kind = bound.and_then(|b| b.get("kind")).and_then(Value::as_str);
    let pod_name = bound.and_then(|b| b.get("name")).and_then(Value::as_str);
    let (Some("Pod"), Some(pod_name)) = (kind, pod_name) else {
        return refuse("requested token not bound to a pod");
    };
    let Some(pod) = view.get(&object_key("pods", namespace, pod_name)) else {
        return refuse("requested token bound to a pod that does not exist");
    };
    if pod.pointer("/spec/nodeName").and_then(Value::as_str) != Some(node) {
        return refuse("requested token bound to a pod scheduled on a different node");
    }
    let runs_as = pod
        .pointer("/spec/serviceAccountName")
        .and_then(Value::as_str)
        .unwrap_or("default");
    if runs_as != account {
        return refuse("requested token bound to a pod with a different service account");
    }
    Ok(())
}

/// Signs a token for `namespace/name` as `request` (a TokenRequest) asks; the token, when it
/// expires, and the TokenRequest to answer with (status left for the caller).
fn issue(
    view: &dyn View,
    key: &SigningKey,
    namespace: &str,
    name: &str,
    request: &Value,
    now: jiff::Timestamp,
) -> Result<(String, jiff::Timestamp, Value), ApiError> {
    let account = view
        .get(&object_key("serviceaccounts", namespace, name))
        .ok_or_else(|| ApiError::NotFound {
            resource: "serviceaccounts".into(),
            name: name.into(),
        })?;
    let spec = request.get("spec").cloned().unwrap_or(json!({}));
    let seconds = spec
        .get("expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(DEFAULT_SECONDS);
    if seconds < MIN_SECONDS {
        return Err(ApiError::BadRequest(
            "spec.expirationSeconds: Invalid value: may not specify a duration less than 10 minutes".into(),
        ));
    }
    let seconds = seconds.min(MAX_SECONDS);
    let audiences: Vec<String> = spec
        .get("audiences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .filter(|a: &Vec<String>| !a.is_empty())
        .unwrap_or_else(|| vec![ISSUER.to_string()]);
    let mut pod = None;
    let mut secret = None;
    if let Some(bound) = spec.get("boundObjectRef").filter(|b| b.is_object()) {
        let kind = bound.get("kind").and_then(Value::as_str).unwrap_or("");
        let bound_name = bound.get("name").and_then(Value::as_str).unwrap_or("");
        let resource = match kind {
            "Pod" => "pods",
            "Secret" => "secrets",
            other => {
                return Err(ApiError::BadRequest(format!(
                    "spec.boundObjectRef.kind: Unsupported value: {other:?}: supported values: \"Pod\", \"Secret\""
                )))
            }
        };
        let object = view
            .get(&object_key(resource, namespace, bound_name))
            .ok_or_else(|| ApiError::NotFound {
                resource: resource.into(),
                name: bound_name.into(),
            })?;
        let uid = uid_of(&object).to_string();
        if let Some(wanted) = bound
            .get("uid")
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty())
        {
            if wanted != uid {
                return Err(ApiError::Conflict {
                    resource: resource.into(),
                    name: bound_name.into(),
                    message: format!("the UID in the bound object reference ({wanted}) does not match the UID in record ({uid})"),
                });
            }
        }
        let reference = Ref {
            name: bound_name.to_string(),
            uid,
        };
        if kind == "Pod" {
            pod = Some(reference);
        } else {
            secret = Some(reference);
        }
    }
    let iat = now.as_second();
    let extended = seconds == KUBELET_SECONDS && pod.is_some();
    let exp = iat + if extended { EXTENDED_SECONDS } else { seconds };
    let claims = Claims {
        iss: ISSUER.into(),
        sub: format!("{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}"),
        aud: audiences.clone(),
        exp,
        iat,
        nbf: iat,
        jti: uuid::Uuid::new_v4().to_string(),
        kubernetes: KubernetesClaims {
            namespace: namespace.into(),
            serviceaccount: Ref {
                name: name.into(),
                uid: uid_of(&account).into(),
            },
            pod,
            secret,
            warnafter: extended.then_some(iat + seconds),
        },
    };
    let token = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &key.encoding)
        .map_err(|e| ApiError::Internal(format!("signing a token: {e}")))?;
    let expires = jiff::Timestamp::from_second(exp)
        .map_err(|e| ApiError::Internal(format!("token expiry: {e}")))?;
    let mut answer_spec = spec;
    answer_spec["audiences"] = json!(audiences);
    answer_spec["expirationSeconds"] = json!(seconds);
    let answer = json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": now.to_string()},
        "spec": answer_spec,
    });
    Ok((token, expires, answer))
}

/// Claims readable without the key (tests and `skiff explain`): the payload of a JWT.
pub fn unverified_claims(token: &str) -> Option<BTreeMap<String, Value>> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::fake::FakeView;

    #[test]
    fn a_token_authenticates_its_account_until_the_account_or_pod_goes() {
        let key = SigningKey::from_pem(&SigningKey::generate_pem().expect("key")).expect("key");
        let view = FakeView::default()
            .with(
                "serviceaccounts",
                json!({"metadata": {"name": "robot", "namespace": "shop", "uid": "sa-1"}}),
            )
            .with(
                "pods",
                json!({"metadata": {"name": "till", "namespace": "shop", "uid": "pod-1"}}),
            );
        let now = jiff::Timestamp::now();
        let request = json!({"spec": {"boundObjectRef": {"kind": "Pod", "name": "till"}}});
        let (token, expires, answer) =
            issue(&view, &key, "shop", "robot", &request, now).expect("issued");
        assert!(looks_like_jwt(&token));
        assert_eq!(answer["spec"]["expirationSeconds"], 3600);
        assert_eq!(expires.as_second() - now.as_second(), 3600);
        let claims = unverified_claims(&token).expect("claims");
        assert_eq!(claims["sub"], "system:serviceaccount:shop:robot");
        assert_eq!(claims["kubernetes.io"]["pod"]["uid"], "pod-1");

        let user = authenticate_with(&view, &key, &token).expect("valid");
        assert_eq!(user.name, "system:serviceaccount:shop:robot");
        assert_eq!(
            user.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:shop",
                "system:authenticated"
            ]
        );
        // The pod replaced (same name, new uid): the token is revoked.
        let replaced = FakeView::default()
            .with(
                "serviceaccounts",
                json!({"metadata": {"name": "robot", "namespace": "shop", "uid": "sa-1"}}),
            )
            .with(
                "pods",
                json!({"metadata": {"name": "till", "namespace": "shop", "uid": "pod-2"}}),
            );
        assert!(authenticate_with(&replaced, &key, &token).is_none());
        // Another key's signature, a tampered payload, another audience: refused.
        let other = SigningKey::from_pem(&SigningKey::generate_pem().expect("key")).expect("key");
        assert!(authenticate_with(&view, &other, &token).is_none());
        let elsewhere = json!({"spec": {"audiences": ["vault"]}});
        let (vault, _, _) = issue(&view, &key, "shop", "robot", &elsewhere, now).expect("issued");
        assert!(
            authenticate_with(&view, &key, &vault).is_none(),
            "not for the API server"
        );
        let short = json!({"spec": {"expirationSeconds": 60}});
        assert!(issue(&view, &key, "shop", "robot", &short, now).is_err());
        assert!(issue(&view, &key, "shop", "nobody", &json!({}), now).is_err());
        // What kubelet asks for a pod is extended to a year, with a warning time.
        let kubelet = json!({"spec": {"expirationSeconds": 3607,
                                      "boundObjectRef": {"kind": "Pod", "name": "till", "uid": "pod-1"}}});
        let (token, expires, _) =
            issue(&view, &key, "shop", "robot", &kubelet, now).expect("issued");
        assert_eq!(expires.as_second() - now.as_second(), 365 * 24 * 3600);
        let claims = unverified_claims(&token).expect("claims");
        assert_eq!(claims["kubernetes.io"]["warnafter"], now.as_second() + 3607);
        let wrong_uid =
            json!({"spec": {"boundObjectRef": {"kind": "Pod", "name": "till", "uid": "other"}}});
        assert!(issue(&view, &key, "shop", "robot", &wrong_uid, now).is_err());
    }

    #[test]
    fn a_node_asks_only_for_tokens_of_its_own_pods() {
        let view = FakeView::default()
            .with(
                "pods",
                json!({"metadata": {"name": "till", "namespace": "shop"},
                       "spec": {"nodeName": "edge-1", "serviceAccountName": "robot"}}),
            )
            .with(
                "pods",
                json!({"metadata": {"name": "vault", "namespace": "shop"},
                       "spec": {"nodeName": "edge-2", "serviceAccountName": "robot"}}),
            );
        let bound = |pod: &str| json!({"spec": {"boundObjectRef": {"kind": "Pod", "name": pod}}});
        assert!(node_may_ask(&view, "edge-1", "shop", "robot", &bound("till")).is_ok());
        let cases = [
            ("robot", json!({}), "not bound to a pod"),
            ("robot", bound("vault"), "scheduled on a different node"),
            ("robot", bound("gone"), "does not exist"),
            ("admin", bound("till"), "a different service account"),
        ];
        for (account, request, words) in cases {
            let err = node_may_ask(&view, "edge-1", "shop", account, &request).expect_err(words);
            assert!(err.to_string().contains(words), "{err}");
            assert_eq!(err.code(), 403);
        }
    }
}
