//! The encryption configuration of Secrets at rest (`DATA_DIR/tls/encryption-config.yaml`,
//! 0600), in Kubernetes' `EncryptionConfiguration` format, as k3s keeps it with
//! `--secrets-encryption`. The first server makes one with a new random AES-256-GCM key; joining
//! servers receive it with the CA. The store seals Secrets with the first provider and opens
//! them with any (see `skiff_store::seal`):
//!
//! ```yaml
//! kind: EncryptionConfiguration
//! apiVersion: apiserver.config.k8s.io/v1
//! resources:
//!   - resources: [secrets]
//!     providers:
//!       - aesgcm:
//!           keys:
//!             - name: key-20261203
//!               secret: <base64 of 32 random bytes>
//!       - identity: {}
//! ```
//! Putting `identity` first turns sealing of new writes off (reads still open sealed ones);
//! `secretbox` (XSalsa20-Poly1305) keys are written like `aesgcm` ones. `skiff secrets-encrypt
//! rotate` rewrites this file on every server ([`crate::secrets_encryption`]).
use std::path::Path;

use base64::Engine;
use ring::rand::SecureRandom;
use serde_json::Value;
use skiff_store::seal::Provider;

use super::files::{read_optional, write_atomic, SECRET_MODE};
use super::PkiError;

/// The configuration's text and its providers, made on first start.
pub fn load_or_create(path: &Path) -> Result<(String, Vec<Provider>), PkiError> {
    let text = match read_optional(path)? {
        Some(text) => text,
        None => {
            let text = new_config()?;
            write_atomic(path, text.as_bytes(), SECRET_MODE)?;
            text
        }
    };
    let providers =
        parse(&text).map_err(|e| PkiError::InvalidCa(format!("{}: {e}", path.display())))?;
    Ok((text, providers))
}

/// Writes a configuration received from the cluster (a joining server).
pub fn write(path: &Path, text: &str) -> Result<(), PkiError> {
    write_atomic(path, text.as_bytes(), SECRET_MODE)
}

fn new_config() -> Result<String, PkiError> {
    Ok(render(&[new_key("aesgcm", &[])?, Provider::Identity]))
}

/// A new random key for `provider` (`aesgcm` or `secretbox`), named for the time it was made
/// and unlike any name in `taken`.
pub fn new_key(provider: &str, taken: &[String]) -> Result<Provider, PkiError> {
    let mut key = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| PkiError::Random)?;
    let stamp = format!("key-{}", jiff::Timestamp::now().strftime("%Y%m%d%H%M%S"));
    let name = (0..)
        .map(|i| match i {
            0 => stamp.clone(),
            i => format!("{stamp}-{i}"),
        })
        .find(|n| !taken.contains(n))
        .unwrap_or(stamp);
    Ok(match provider {
        "secretbox" => Provider::SecretBox { name, key },
        _ => Provider::AesGcm { name, key },
    })
}

/// The EncryptionConfiguration for `providers`, in order (each key its own provider entry, so
/// the order of keys is the order of providers).
pub fn render(providers: &[Provider]) -> String {
    let mut text = String::from(
        "kind: EncryptionConfiguration\napiVersion: apiserver.config.k8s.io/v1\nresources:\n  - resources: [secrets]\n    providers:\n",
    );
    for provider in providers {
        let (kind, name, key) = match provider {
            Provider::AesGcm { name, key } => ("aesgcm", name, key),
            Provider::SecretBox { name, key } => ("secretbox", name, key),
            Provider::Identity => {
                text.push_str("      - identity: {}\n");
                continue;
            }
        };
        text.push_str(&format!(
            "      - {kind}:\n          keys:\n            - name: {name}\n              secret: {}\n",
            base64::engine::general_purpose::STANDARD.encode(key)
        ));
    }
    text
}

/// The providers for `secrets` in an EncryptionConfiguration, in order.
pub fn parse(text: &str) -> Result<Vec<Provider>, String> {
    let config = skiff_api::decode::decode_body(text.as_bytes(), Some("application/yaml"))
        .map_err(|e| e.to_string())?;
    if config.get("kind").and_then(Value::as_str) != Some("EncryptionConfiguration") {
        return Err("kind: must be EncryptionConfiguration".into());
    }
    let resources = config
        .get("resources")
        .and_then(Value::as_array)
        .ok_or("resources: Required value")?;
    let entry = resources
        .iter()
        .find(|r| {
            r.get("resources")
                .and_then(Value::as_array)
                .is_some_and(|list| list.iter().any(|v| v == "secrets"))
        })
        .ok_or("resources: no entry for secrets")?;
    let mut providers = Vec::new();
    for (i, provider) in entry
        .get("providers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if provider.get("identity").is_some() {
            providers.push(Provider::Identity);
        } else if let Some((kind, keys)) = ["aesgcm", "secretbox"]
            .iter()
            .find_map(|kind| provider.get(*kind).map(|keys| (*kind, keys)))
        {
            for (j, key) in keys
                .get("keys")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let at = format!("providers[{i}].{kind}.keys[{j}]");
                let name = key
                    .get("name")
                    .and_then(Value::as_str)
                    .filter(|n| !n.is_empty() && !n.contains(':'))
                    .ok_or(format!("{at}.name: Required value (no ':')"))?;
                let secret = key
                    .get("secret")
                    .and_then(Value::as_str)
                    .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                    .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                    .ok_or(format!("{at}.secret: must be the base64 of 32 bytes"))?;
                let name = name.to_string();
                providers.push(match kind {
                    "secretbox" => Provider::SecretBox { name, key: secret },
                    _ => Provider::AesGcm { name, key: secret },
                });
            }
        } else {
            return Err(format!(
                "providers[{i}]: only aesgcm, secretbox and identity are supported"
            ));
        }
    }
    if providers.is_empty() {
        return Err("providers: Required value".into());
    }
    Ok(providers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_configuration_seals_with_its_key_and_reads_clear_data() {
        let text = new_config().expect("config");
        let providers = parse(&text).expect("parses");
        assert!(matches!(providers[0], Provider::AesGcm { .. }));
        assert!(matches!(providers[1], Provider::Identity));
        assert!(parse("kind: Other\n").is_err());
        let bad = text.replace("secret: ", "secret: AAAA");
        assert!(parse(&bad)
            .expect_err("a short key")
            .contains("base64 of 32 bytes"));
    }

    #[test]
    fn rendered_configurations_parse_back_in_order() {
        let first = new_key("secretbox", &[]).expect("key");
        let taken = vec![first.name().expect("named").to_string()];
        let second = new_key("aesgcm", &taken).expect("key");
        assert_ne!(second.name(), first.name(), "names are unique");
        let text = render(&[first, second, Provider::Identity]);
        let parsed = parse(&text).expect("parses");
        assert!(matches!(parsed[0], Provider::SecretBox { .. }));
        assert!(matches!(parsed[1], Provider::AesGcm { .. }));
        assert!(matches!(parsed[2], Provider::Identity));
        assert!(parse(&text.replace("secretbox", "kms"))
            .expect_err("unknown provider")
            .contains("only aesgcm, secretbox and identity"));
    }
}
