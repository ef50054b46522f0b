//! Rotating the key Secrets are sealed with, on every server, while the cluster serves (what
//! `k3s secrets-encrypt rotate-keys` does, and what Kubernetes documents as four manual steps).
//!
//! `skiff secrets-encrypt rotate` asks the leader, which:
//!
//! 1. makes a new key and gives every member a configuration that can open it but does not
//!    seal with it yet (`PUT /skiff/v1/encryption`, the new key after the sealing one). Every
//!    member must take it, or the rotation stops here: nothing is sealed with a key a member
//!    cannot open;
//! 2. gives every member the configuration with the new key first: from now on each member
//!    seals with it, in the log, its state and its snapshots;
//! 3. rewrites every Secret (an update to the same content, so a new resourceVersion), so each
//!    is sealed with the new key.
//!
//! Earlier keys stay in the configuration as readers: the Raft log and older snapshots still
//! hold entries they sealed, which a member replays after a restart. Each member keeps its
//! configuration in `DATA_DIR/tls/encryption-config.yaml` (0600) and swaps its keys in place
//! ([`skiff_store::seal::Sealer::replace`]); a server joining later receives the current one.
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use skiff_api::status::ApiError;
use skiff_store::seal::Provider;
use skiff_store::{key_prefix, object_key, revision_of, Op, OpError};

use crate::app::App;
use crate::pki::encryption;
use crate::respond;

/// One rotation at a time.
static ROTATING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What this member seals and opens with (key names only, never keys).
pub async fn status(State(app): State<Arc<App>>) -> Response {
    respond::json(StatusCode::OK, &describe(&app))
}

fn describe(app: &App) -> Value {
    let providers = encryption::parse(&app.cluster.encryption_config()).unwrap_or_default();
    let listed: Vec<Value> = providers
        .iter()
        .map(|p| match p {
            Provider::AesGcm { name, .. } => json!({"provider": "aesgcm", "name": name}),
            Provider::SecretBox { name, .. } => json!({"provider": "secretbox", "name": name}),
            Provider::Identity => json!({"provider": "identity"}),
        })
        .collect();
    let sealer = app.store.sealer();
    json!({
        "member": app.store.id(),
        "providers": listed,
        "sealingWith": if sealer.seals() { sealer.key_names().first().cloned() } else { None },
    })
}

#[derive(Deserialize)]
pub struct Install {
    config: String,
}

/// A new configuration for this member (from the leader during a rotation). It must still
/// open everything the current one does: a key may be added or moved first, never dropped.
pub async fn install(State(app): State<Arc<App>>, Json(request): Json<Install>) -> Response {
    match install_config(&app, &request.config) {
        Ok(()) => respond::json(StatusCode::OK, &describe(&app)),
        Err(e) => respond::error(e),
    }
}

fn install_config(app: &App, text: &str) -> Result<(), ApiError> {
    let path = app.encryption_config_path.as_ref().ok_or_else(|| {
        ApiError::BadRequest("this server keeps no encryption configuration on disk".into())
    })?;
    let providers = encryption::parse(text)
        .map_err(|e| ApiError::BadRequest(format!("encryption configuration: {e}")))?;
    let names: Vec<&str> = providers.iter().filter_map(Provider::name).collect();
    if let Some(dropped) = app
        .store
        .sealer()
        .key_names()
        .into_iter()
        .find(|old| !names.contains(&old.as_str()))
    {
        return Err(ApiError::BadRequest(format!(
            "encryption configuration: it drops key {dropped:?}, which sealed entries of the Raft log and snapshots may still use"
        )));
    }
    encryption::write(path, text).map_err(|e| ApiError::Internal(e.to_string()))?;
    app.store.sealer().replace(providers);
    *app.cluster
        .encryption_config
        .write()
        .unwrap_or_else(|e| e.into_inner()) = text.to_string();
    tracing::info!(keys = ?app.store.sealer().key_names(), "encryption configuration replaced");
    Ok(())
}

#[derive(Deserialize, Default)]
pub struct Rotate {
    /// `aesgcm` (the default) or `secretbox`.
    #[serde(default)]
    provider: Option<String>,
}

/// The rotation, run by the leader (see the module documentation).
pub async fn rotate(State(app): State<Arc<App>>, body: Option<Json<Rotate>>) -> Response {
    if let Some(redirect) = crate::cluster::redirect_to_leader(&app, "/skiff/v1/encryption/rotate")
    {
        return redirect;
    }
    let provider = body
        .and_then(|Json(r)| r.provider)
        .unwrap_or_else(|| "aesgcm".into());
    if provider != "aesgcm" && provider != "secretbox" {
        return respond::error(ApiError::BadRequest(format!(
            "provider: Unsupported value: {provider:?}: supported values: \"aesgcm\", \"secretbox\""
        )));
    }
    let _one = ROTATING.lock().await;
    match run_rotation(&app, &provider).await {
        Ok(answer) => respond::json(StatusCode::OK, &answer),
        Err(e) => respond::error(e),
    }
}

async fn run_rotation(app: &App, provider: &str) -> Result<Value, ApiError> {
    let current = encryption::parse(&app.cluster.encryption_config())
        .map_err(|e| ApiError::Internal(format!("the encryption configuration in force: {e}")))?;
    let taken: Vec<String> = current
        .iter()
        .filter_map(Provider::name)
        .map(String::from)
        .collect();
    let new =
        encryption::new_key(provider, &taken).map_err(|e| ApiError::Internal(e.to_string()))?;
    let name = new.name().unwrap_or_default().to_string();
    // 1. Every member can open the new key; 2. every member seals with it.
    let mut reading = current.clone();
    reading.insert(1.min(reading.len()), new.clone());
    let mut sealing = vec![new];
    sealing.extend(current);
    let members = app.store.members();
    for (step, providers) in [("add", &reading), ("seal with", &sealing)] {
        let text = encryption::render(providers);
        for member in &members {
            push_config(app, &member.addr, &text).await.map_err(|e| {
                ApiError::ServiceUnavailable(format!(
                    "key rotation stopped: member {} ({}) did not {step} key {name}: {e}; \
                     no Secret is sealed with a key a member cannot open; run it again when every server is up",
                    member.id, member.addr
                ))
            })?;
        }
    }
    // 3. Every Secret sealed anew.
    let rewritten = rewrite_secrets(app).await?;
    tracing::info!(key = %name, rewritten, "secrets encryption key rotated");
    Ok(json!({
        "key": name,
        "provider": provider,
        "members": members.len(),
        "secretsRewritten": rewritten,
    }))
}

/// Installs a configuration on the member at `addr` (this one too, the same way).
async fn push_config(app: &App, addr: &str, text: &str) -> Result<(), String> {
    let ca = reqwest::Certificate::from_pem(app.cluster.ca_cert_pem.as_bytes())
        .map_err(|e| e.to_string())?;
    let http = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let response = http
        .put(format!(
            "{}/skiff/v1/encryption",
            addr.trim_end_matches('/')
        ))
        .bearer_auth(&app.cluster.secret)
        .json(&json!({"config": text}))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if response.status().is_success() {
        Ok(())
    } else {
        let status = response.status();
        Err(format!(
            "{status}: {}",
            response.text().await.unwrap_or_default()
        ))
    }
}

/// Writes every Secret again as it is, so it is sealed with the first key. A Secret changed
/// meanwhile is read again (its new write was sealed with the new key anyway); one deleted is
/// skipped.
async fn rewrite_secrets(app: &App) -> Result<usize, ApiError> {
    let mut rewritten = 0;
    for secret in app.store.list(&key_prefix("secrets", None)).0 {
        let meta = |field: &str| {
            secret
                .pointer(&format!("/metadata/{field}"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let key = object_key("secrets", &meta("namespace"), &meta("name"));
        let mut object = secret;
        for _ in 0..5 {
            let op = Op::Update {
                key: key.clone(),
                object: (*object).clone(),
                expected_revision: revision_of(&object),
            };
            match app
                .store
                .propose_one(op)
                .await
                .map_err(respond::store_error)?
            {
                Ok(_) => {
                    rewritten += 1;
                    break;
                }
                Err(OpError::Conflict { .. }) => match app.store.get(&key) {
                    Some(fresh) => object = fresh,
                    None => break,
                },
                Err(OpError::NotFound { .. }) => break,
                Err(e) => return Err(ApiError::Internal(format!("rewriting {key}: {e}"))),
            }
        }
    }
    Ok(rewritten)
}
