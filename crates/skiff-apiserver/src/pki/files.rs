//! The cluster's files on disk: this server's serving certificate (reused across restarts),
//! token files and kubeconfigs, each written atomically with the right mode.
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};

use super::issue::{
    issue_server_cert, normalise_sans, validity_end, ClusterCa, SERVER_CERT_VALIDITY_YEARS,
};
use super::{io_err, PkiError};

/// Mode of files that hold secrets: readable by the server's user only.
pub(super) const SECRET_MODE: u32 = 0o600;
/// Mode of files anyone may read (certificates, metadata).
pub(super) const PUBLIC_MODE: u32 = 0o644;
/// A serving cert with less time than this left is replaced at start-up (k3s uses 90 days too).
const RENEW_BEFORE_DAYS: i64 = 90;

/// What `server.crt` was issued for; compared on start-up to decide whether to reuse it.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServerCertRecord {
    sans: Vec<String>,
    ca_sha256: String,
    /// Unix seconds.
    not_after: i64,
}

/// This server's serving cert and key (PEM) from `dir`, issued anew only when missing, when
/// the SAN set or the CA changed, or when it expires within 90 days: a restart must not churn
/// certificates that clients may have pinned or cached connections with.
pub fn ensure_server_cert(
    dir: &Path,
    ca: &ClusterCa,
    sans: &[String],
) -> Result<(String, String), PkiError> {
    let cert_path = dir.join("server.crt");
    let key_path = dir.join("server.key");
    let record_path = dir.join("server.json");
    let wanted_sans = normalise_sans(sans);
    let ca_sha256 = ca.sha256_hex();

    let existing = (
        read_optional(&cert_path)?,
        read_optional(&key_path)?,
        read_optional(&record_path)?,
    );
    if let (Some(cert), Some(key), Some(record)) = existing {
        // An unreadable record is treated like a missing one: reissue.
        if let Ok(record) = serde_json::from_str::<ServerCertRecord>(&record) {
            let renew_after = record.not_after - RENEW_BEFORE_DAYS * 24 * 3600;
            if record.sans == wanted_sans
                && record.ca_sha256 == ca_sha256
                && jiff::Timestamp::now().as_second() < renew_after
            {
                return Ok((cert, key));
            }
        }
    }

    let (cert, key) = issue_server_cert(ca, &wanted_sans)?;
    let record = ServerCertRecord {
        sans: wanted_sans,
        ca_sha256,
        not_after: validity_end(SERVER_CERT_VALIDITY_YEARS)?,
    };
    let record_json = serde_json::to_vec_pretty(&record)?;
    create_private_dir(dir)?;
    write_atomic(&key_path, key.as_bytes(), SECRET_MODE)?;
    write_atomic(&cert_path, cert.as_bytes(), PUBLIC_MODE)?;
    // The record goes last: it is the commit marker. A crash before this line leaves a stale
    // or missing record, and the next start simply issues again.
    write_atomic(&record_path, &record_json, PUBLIC_MODE)?;
    tracing::info!(sans = ?record.sans, "issued a new serving certificate");
    Ok((cert, key))
}

/// The secret stored at `path` (32 random bytes, hex), created on first use. Used for the admin
/// bearer token and the cluster secret.
pub fn load_or_create_token(path: &Path) -> Result<String, PkiError> {
    if let Some(existing) = read_optional(path)? {
        let token = existing.trim();
        if token.is_empty() {
            return Err(PkiError::EmptySecret(path.to_path_buf()));
        }
        return Ok(token.to_string());
    }
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| PkiError::Random)?;
    let token = hex::encode(bytes);
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
    }
    write_atomic(path, format!("{token}\n").as_bytes(), SECRET_MODE)?;
    Ok(token)
}

/// Writes a kubeconfig (mode 0600) that trusts `ca_pem` and authenticates with `token`; the
/// cluster, user and context are all called `name`, and the context is made current.
pub fn write_kubeconfig(
    path: &Path,
    server_url: &str,
    ca_pem: &str,
    token: &str,
    name: &str,
) -> Result<(), PkiError> {
    use base64::Engine as _;
    // A JSON string is a valid YAML double-quoted scalar, so serde_json does the quoting.
    let quote = |s: &str| serde_json::Value::from(s).to_string();
    let name = quote(name);
    let server = quote(server_url);
    let ca_data = quote(&base64::engine::general_purpose::STANDARD.encode(ca_pem));
    let token = quote(token);
    let yaml = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: {name}
  cluster:
    server: {server}
    certificate-authority-data: {ca_data}
users:
- name: {name}
  user:
    token: {token}
contexts:
- name: {name}
  context:
    cluster: {name}
    user: {name}
current-context: {name}
preferences: {{}}
"
    );
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
    }
    write_atomic(path, yaml.as_bytes(), SECRET_MODE)
}

/// Creates `dir` (and its parents) readable by the server's user only, if it is missing.
pub(super) fn create_private_dir(dir: &Path) -> Result<(), PkiError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err("creating", dir))
}

/// The file's contents, or `None` if it does not exist.
pub(super) fn read_optional(path: &Path) -> Result<Option<String>, PkiError> {
    match fs::read_to_string(path) {
        Ok(contents) => Ok(Some(contents)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("reading", path)(e)),
    }
}

/// Replaces `path` with `contents` so that readers see the old file or the new one, never a
/// torn one. The file is created with `mode` before any byte is written, so a secret is never
/// readable by others, not even briefly.
/// Writes a secret file (mode 0600) atomically: a crash leaves the old content or the new.
pub fn write_secret(path: &Path, contents: &[u8]) -> Result<(), PkiError> {
    write_atomic(path, contents, SECRET_MODE)
}

pub(super) fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io_err("writing", path)(io::ErrorKind::InvalidInput.into()))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    // A leftover from a crash may have the wrong mode; start afresh.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err("removing", &tmp)(e)),
        _ => {}
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err("creating", &tmp))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(io_err("writing", &tmp))?;
    fs::rename(&tmp, path).map_err(io_err("renaming into", path))?;
    // Make the rename itself durable; failing to is no reason to fail the write.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
