//! The cluster's certificates and secrets on disk.
//!
//! Every skiff server serves HTTPS, because kubectl only sends its bearer token over TLS. The
//! cluster has one certificate authority; each server holds a serving certificate signed by it,
//! and every kubeconfig trusts the CA, so any server can answer any client.
//!
//! ## Files under `DATA_DIR/tls/`
//! | file          | what                                                    | mode |
//! |---------------|---------------------------------------------------------|------|
//! | `ca.crt`      | the cluster CA certificate, identical on every server   | 0644 |
//! | `ca.key`      | the CA private key (servers mint their own certs)       | 0600 |
//! | `server.crt`  | this server's serving certificate, signed by the CA     | 0644 |
//! | `server.key`  | its private key                                         | 0600 |
//! | `server.json` | what `server.crt` was issued for: SANs, CA hash, expiry | 0644 |
//!
//! Token files (admin bearer token, cluster secret) live wherever the caller says. Every file is
//! written atomically (temporary file, fsync, rename), so a crash leaves the old file or the new
//! one, never half of one.
//!
//! ## Join tokens
//! A joining server must learn the CA without trusting the network it learns it over. As in
//! k3s, the token pins the CA: `K10<sha256 of ca.crt>::server:<secret>`. The joiner fetches the
//! CA over unverified TLS, checks its hash against the token, and only then trusts it; the
//! secret then proves to the cluster that the joiner was invited.
//!
//! ## Caveats
//! - Serving certificates last a year and are renewed at start-up once fewer than 90 days
//!   remain; a server that runs for a whole year without a restart serves an expired cert.
//! - The CA hash covers the exact PEM bytes of `ca.crt`: servers must hand out that file
//!   byte for byte.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use ring::rand::SecureRandom;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

/// Mode of files that hold secrets: readable by the server's user only.
const SECRET_MODE: u32 = 0o600;
/// Mode of files anyone may read (certificates, metadata).
const PUBLIC_MODE: u32 = 0o644;

/// The CA outlives every serving cert; replacing it means re-issuing every kubeconfig.
const CA_VALIDITY_YEARS: i64 = 10;
const SERVER_CERT_VALIDITY_YEARS: i64 = 1;
/// A serving cert with less time than this left is replaced at start-up (k3s uses 90 days too).
const RENEW_BEFORE_DAYS: i64 = 90;

const JOIN_TOKEN_PREFIX: &str = "K10";
const JOIN_TOKEN_USER: &str = "server";

/// What went wrong while reading, creating or using the cluster's certificates and secrets.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("invalid CA: {0}")]
    InvalidCa(String),
    #[error(
        "{0} is missing although {1} exists; refusing to create a new CA over a half-present one"
    )]
    PartialCa(PathBuf, PathBuf),
    #[error("invalid PEM: {0}")]
    Pem(String),
    #[error("computing a certificate's validity: {0}")]
    Validity(#[from] jiff::Error),
    #[error("encoding the serving certificate record: {0}")]
    Record(#[from] serde_json::Error),
    #[error("a serving certificate needs at least one subject alternative name")]
    NoSans,
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("the system random number generator failed")]
    Random,
    #[error("secret file {0} is empty")]
    EmptySecret(PathBuf),
    #[error("malformed join token: {0}")]
    MalformedJoinToken(&'static str),
    #[error("the cluster's CA certificate does not match the hash in the join token")]
    CaHashMismatch,
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> PkiError + 'a {
    move |source| PkiError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The cluster's certificate authority: it signs every server's serving certificate.
#[derive(Clone)]
pub struct ClusterCa {
    pub cert_pem: String,
    pub key_pem: String,
}

// Hand-written so the private key can never end up in a log line.
impl fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterCa")
            .field("sha256", &self.sha256_hex())
            .finish_non_exhaustive()
    }
}

impl ClusterCa {
    /// A brand-new CA, for the first server of a new cluster.
    pub fn generate() -> Result<Self, PkiError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name("skiff-ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, CA_VALIDITY_YEARS)?;
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The CA stored in `dir` (`ca.crt`, `ca.key`), created on first start.
    pub fn load_or_create(dir: &Path) -> Result<Self, PkiError> {
        let cert_path = dir.join("ca.crt");
        let key_path = dir.join("ca.key");
        match (read_optional(&cert_path)?, read_optional(&key_path)?) {
            (Some(cert), Some(key)) => Self::from_pem(cert, key),
            (None, None) => {
                let ca = Self::generate()?;
                create_private_dir(dir)?;
                // Key first: a cert without its key is useless, and the check above refuses
                // to paper over that state with a new CA.
                write_atomic(&key_path, ca.key_pem.as_bytes(), SECRET_MODE)?;
                write_atomic(&cert_path, ca.cert_pem.as_bytes(), PUBLIC_MODE)?;
                tracing::info!(dir = %dir.display(), "created a new cluster CA");
                Ok(ca)
            }
            (Some(_), None) => Err(PkiError::PartialCa(key_path, cert_path)),
            (None, Some(_)) => Err(PkiError::PartialCa(cert_path, key_path)),
        }
    }

    /// A CA received from elsewhere (a joining server gets it from the cluster). Checks that
    /// the certificate parses and that the key belongs to it.
    pub fn from_pem(
        cert_pem: impl Into<String>,
        key_pem: impl Into<String>,
    ) -> Result<Self, PkiError> {
        let ca = Self {
            cert_pem: cert_pem.into(),
            key_pem: key_pem.into(),
        };
        ca.issuer()?;
        let cert = CertificateDer::from_pem_slice(ca.cert_pem.as_bytes())
            .map_err(|e| PkiError::InvalidCa(format!("certificate: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(ca.key_pem.as_bytes())
            .map_err(|e| PkiError::InvalidCa(format!("private key: {e}")))?;
        rustls::sign::CertifiedKey::from_der(vec![cert], key, &ring_provider())
            .map_err(|e| PkiError::InvalidCa(format!("key does not match certificate: {e}")))?;
        Ok(ca)
    }

    /// Hex SHA-256 of the certificate's PEM bytes: what a join token pins.
    pub fn sha256_hex(&self) -> String {
        sha256_hex(self.cert_pem.as_bytes())
    }

    /// The signer, rebuilt from the certificate itself so that issued certs name the CA's
    /// subject exactly as it is written in `ca.crt`, whoever generated it.
    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, PkiError> {
        let key = KeyPair::from_pem(&self.key_pem)
            .map_err(|e| PkiError::InvalidCa(format!("private key: {e}")))?;
        Issuer::from_ca_cert_pem(&self.cert_pem, key)
            .map_err(|e| PkiError::InvalidCa(format!("certificate: {e}")))
    }
}

/// A serving certificate and key (PEM) for `sans`, signed by `ca`. Entries that parse as IP
/// addresses become IP SANs, the rest DNS SANs. Usable as a client certificate too, because
/// servers call each other.
pub fn issue_server_cert(ca: &ClusterCa, sans: &[String]) -> Result<(String, String), PkiError> {
    let sans = normalise_sans(sans);
    if sans.is_empty() {
        return Err(PkiError::NoSans);
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name("skiff-server");
    params.subject_alt_names = sans
        .iter()
        .map(|san| match san.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => Ok(SanType::DnsName(san.as_str().try_into()?)),
        })
        .collect::<Result<_, rcgen::Error>>()?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, SERVER_CERT_VALIDITY_YEARS)?;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca.issuer()?)?;
    Ok((cert.pem(), key.serialize_pem()))
}

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

/// A rustls server configuration for `cert_pem` (leaf first, then any chain) and `key_pem`,
/// offering HTTP/2 (kubectl, and gRPC for Raft on the same port) and HTTP/1.1 (the Python
/// client).
pub fn server_tls_config(cert_pem: &str, key_pem: &str) -> Result<rustls::ServerConfig, PkiError> {
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Pem(format!("certificate: {e}")))?;
    if certs.is_empty() {
        return Err(PkiError::Pem("no certificate found".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| PkiError::Pem(format!("private key: {e}")))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(ring_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
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

/// The token a new server needs to join the cluster: which CA to trust, and the secret that
/// proves it was invited.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// Hex SHA-256 of the CA certificate's PEM bytes.
    pub ca_hash: String,
    /// The cluster secret.
    pub secret: String,
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("ca_hash", &self.ca_hash)
            .finish_non_exhaustive()
    }
}

impl JoinToken {
    /// The token for a cluster whose CA certificate is `ca_pem`.
    pub fn new(ca_pem: &str, secret: impl Into<String>) -> Self {
        Self {
            ca_hash: sha256_hex(ca_pem.as_bytes()),
            secret: secret.into(),
        }
    }

    /// `K10<ca_hash>::server:<secret>`, the form people paste into `--token`.
    pub fn format(&self) -> String {
        format!(
            "{JOIN_TOKEN_PREFIX}{}::{JOIN_TOKEN_USER}:{}",
            self.ca_hash, self.secret
        )
    }

    /// Reads the form [`JoinToken::format`] writes.
    pub fn parse(token: &str) -> Result<Self, PkiError> {
        Self::parse_as(token, JOIN_TOKEN_USER)
    }

    /// The node token a remote agent presents: `K10<ca_hash>::node:<node secret>`.
    pub fn format_node(&self) -> String {
        format!("{JOIN_TOKEN_PREFIX}{}::node:{}", self.ca_hash, self.secret)
    }

    /// Parses a node token (as [`JoinToken::parse`] does a server token).
    pub fn parse_node(token: &str) -> Result<Self, PkiError> {
        Self::parse_as(token, "node")
    }

    fn parse_as(token: &str, user: &str) -> Result<Self, PkiError> {
        let rest = token
            .trim()
            .strip_prefix(JOIN_TOKEN_PREFIX)
            .ok_or(PkiError::MalformedJoinToken("it must start with K10"))?;
        let (ca_hash, credentials) = rest.split_once("::").ok_or(PkiError::MalformedJoinToken(
            "expected '::' after the CA hash",
        ))?;
        if ca_hash.len() != 64 || !ca_hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(PkiError::MalformedJoinToken(
                "the CA hash must be 64 hex digits (a SHA-256)",
            ));
        }
        let secret = credentials
            .strip_prefix(user)
            .and_then(|s| s.strip_prefix(':'))
            .ok_or(PkiError::MalformedJoinToken(if user == "node" {
                "expected 'node:<secret>' after '::'"
            } else {
                "expected 'server:<secret>' after '::'"
            }))?;
        if secret.is_empty() || secret.chars().any(char::is_whitespace) {
            return Err(PkiError::MalformedJoinToken(
                "the secret must be non-empty and contain no spaces",
            ));
        }
        Ok(Self {
            ca_hash: ca_hash.to_ascii_lowercase(),
            secret: secret.to_string(),
        })
    }

    /// Succeeds only if `ca_pem` is the CA this token pins.
    pub fn verify_ca(&self, ca_pem: &str) -> Result<(), PkiError> {
        let actual = ring::digest::digest(&ring::digest::SHA256, ca_pem.as_bytes());
        let expected = hex::decode(&self.ca_hash).map_err(|_| PkiError::CaHashMismatch)?;
        if constant_time_eq(actual.as_ref(), &expected) {
            Ok(())
        } else {
            Err(PkiError::CaHashMismatch)
        }
    }
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

fn ring_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

fn common_name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

/// Valid from yesterday (nodes' clocks disagree a little) until `years` from today.
fn set_validity(params: &mut CertificateParams, years: i64) -> Result<(), PkiError> {
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    let start = today.yesterday()?;
    // jiff clamps 29 February to the 28th in non-leap years.
    let end = today.checked_add(jiff::Span::new().years(years))?;
    // jiff dates are always valid calendar dates, so rcgen's own date check cannot fail.
    params.not_before =
        rcgen::date_time_ymd(start.year().into(), start.month() as u8, start.day() as u8);
    params.not_after = rcgen::date_time_ymd(end.year().into(), end.month() as u8, end.day() as u8);
    Ok(())
}

/// The `not_after` that [`set_validity`] writes for `years`, in Unix seconds.
fn validity_end(years: i64) -> Result<i64, PkiError> {
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    today
        .checked_add(jiff::Span::new().years(years))
        .and_then(|end| end.to_zoned(jiff::tz::TimeZone::UTC))
        .map(|end| end.timestamp().as_second())
        .map_err(PkiError::from)
}

/// SANs trimmed, without blanks or duplicates, sorted: the order callers list them in must not
/// count as a change.
fn normalise_sans(sans: &[String]) -> Vec<String> {
    let mut sans: Vec<String> = sans
        .iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    sans.sort();
    sans.dedup();
    sans
}

/// The secret agents present: derived from the cluster secret, so it is not the secret that
/// lets a machine join as a server.
pub fn node_secret(cluster_secret: &str) -> String {
    sha256_hex(format!("skiff-node:{cluster_secret}").as_bytes())
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

/// Compares without stopping at the first difference, so timing reveals nothing about how
/// much of a guessed hash was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Creates `dir` (and its parents) readable by the server's user only, if it is missing.
fn create_private_dir(dir: &Path) -> Result<(), PkiError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err("creating", dir))
}

/// The file's contents, or `None` if it does not exist.
fn read_optional(path: &Path) -> Result<Option<String>, PkiError> {
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

fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::os::unix::fs::PermissionsExt;

    /// A scratch directory removed when the test ends.
    struct ScratchDir(PathBuf);

    impl ScratchDir {
        fn new() -> Self {
            let dir = std::env::temp_dir().join(format!("skiff-pki-{}", uuid::Uuid::new_v4()));
            fs::create_dir_all(&dir).expect("create scratch dir");
            Self(dir)
        }
    }

    impl Drop for ScratchDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("stat").permissions().mode() & 0o777
    }

    fn sans(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// Runs one TLS exchange over loopback: a server with `cert`/`key`, a client that trusts
    /// `trusted_ca` and connects by `server_name`. Returns the negotiated ALPN protocol.
    fn handshake(
        cert: &str,
        key: &str,
        trusted_ca: &str,
        server_name: &str,
    ) -> io::Result<Vec<u8>> {
        let server_config = Arc::new(server_tls_config(cert, key).expect("server config"));
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let server = std::thread::spawn(move || -> io::Result<()> {
            let (tcp, _) = listener.accept()?;
            let conn = rustls::ServerConnection::new(server_config).map_err(io::Error::other)?;
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let mut ping = [0u8; 4];
            tls.read_exact(&mut ping)?;
            tls.write_all(b"pong")?;
            tls.flush()
        });

        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(trusted_ca.as_bytes()).expect("CA PEM"))
            .expect("add root");
        let mut client_config =
            rustls::ClientConfig::builder_with_provider(Arc::new(ring_provider()))
                .with_safe_default_protocol_versions()
                .expect("protocol versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
        client_config.alpn_protocols = vec![b"h2".to_vec()];
        let name = rustls::pki_types::ServerName::try_from(server_name.to_string()).expect("name");
        let conn = rustls::ClientConnection::new(Arc::new(client_config), name)
            .map_err(io::Error::other)?;
        let mut tls = rustls::StreamOwned::new(conn, TcpStream::connect(addr)?);
        let result = (|| {
            tls.write_all(b"ping")?;
            let mut pong = [0u8; 4];
            tls.read_exact(&mut pong)?;
            assert_eq!(&pong, b"pong");
            Ok(tls.conn.alpn_protocol().unwrap_or_default().to_vec())
        })();
        drop(tls);
        let _ = server.join();
        result
    }

    #[test]
    fn server_cert_completes_a_tls_handshake() {
        let ca = ClusterCa::generate().expect("CA");
        let other_ca = ClusterCa::generate().expect("other CA");
        let (cert, key) =
            issue_server_cert(&ca, &sans(&["127.0.0.1", "skiff.local", "::1"])).expect("issue");

        // (server name the client dials, CA the client trusts, should the handshake succeed)
        let cases = [
            ("127.0.0.1", &ca, true),
            ("skiff.local", &ca, true),
            ("other.example", &ca, false),
            ("127.0.0.1", &other_ca, false),
        ];
        for (server_name, trusted, ok) in cases {
            let result = handshake(&cert, &key, &trusted.cert_pem, server_name);
            match result {
                Ok(alpn) => {
                    assert!(ok, "{server_name} should have been refused");
                    assert_eq!(alpn, b"h2");
                }
                Err(e) => {
                    assert!(!ok, "{server_name}: {e}");
                    assert!(e.to_string().contains("invalid peer certificate"), "{e}");
                }
            }
        }
    }

    #[test]
    fn a_ca_received_as_pem_can_issue_certs() {
        let ca = ClusterCa::generate().expect("CA");
        let received =
            ClusterCa::from_pem(ca.cert_pem.clone(), ca.key_pem.clone()).expect("from_pem");
        let (cert, key) = issue_server_cert(&received, &sans(&["127.0.0.1"])).expect("issue");
        handshake(&cert, &key, &ca.cert_pem, "127.0.0.1").expect("trusted by the original CA");

        let stranger = ClusterCa::generate().expect("CA");
        let mismatched = ClusterCa::from_pem(ca.cert_pem.clone(), stranger.key_pem);
        assert!(
            matches!(mismatched, Err(PkiError::InvalidCa(_))),
            "{mismatched:?}"
        );
        assert!(ClusterCa::from_pem("garbage", ca.key_pem).is_err());
    }

    #[test]
    fn ca_and_server_cert_survive_restarts() {
        let scratch = ScratchDir::new();
        let dir = ScratchDir(scratch.0.join("data/tls"));
        let ca = ClusterCa::load_or_create(&dir.0).expect("create CA");
        assert_eq!(mode(&dir.0), 0o700);
        assert_eq!(mode(&dir.0.join("ca.key")), 0o600);
        let again = ClusterCa::load_or_create(&dir.0).expect("load CA");
        assert_eq!(ca.cert_pem, again.cert_pem);

        let first = ensure_server_cert(&dir.0, &ca, &sans(&["10.0.0.1", "node-1"])).expect("issue");
        assert_eq!(mode(&dir.0.join("server.key")), 0o600);
        let reordered = ensure_server_cert(&dir.0, &ca, &sans(&["node-1", "10.0.0.1", "node-1"]))
            .expect("reuse");
        assert_eq!(first, reordered, "same SAN set must reuse the cert");
        let changed =
            ensure_server_cert(&dir.0, &ca, &sans(&["10.0.0.2", "node-1"])).expect("reissue");
        assert_ne!(first.0, changed.0, "a new SAN set must reissue");

        fs::remove_file(dir.0.join("ca.key")).expect("remove key");
        assert!(matches!(
            ClusterCa::load_or_create(&dir.0),
            Err(PkiError::PartialCa(..))
        ));
    }

    #[test]
    fn tokens_are_created_once_with_mode_0600() {
        let dir = ScratchDir::new();
        let path = dir.0.join("secrets/admin-token");
        let token = load_or_create_token(&path).expect("create");
        assert_eq!(token.len(), 64);
        assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(mode(&path), 0o600);
        assert_eq!(load_or_create_token(&path).expect("load"), token);
    }

    #[test]
    fn join_token_round_trips_and_pins_the_ca() {
        let ca = ClusterCa::generate().expect("CA");
        let token = JoinToken::new(&ca.cert_pem, "s3cret");
        let text = token.format();
        assert_eq!(text, format!("K10{}::server:s3cret", ca.sha256_hex()));
        let parsed = JoinToken::parse(&text).expect("parse");
        assert_eq!(parsed, token);
        parsed.verify_ca(&ca.cert_pem).expect("same CA");

        let other = ClusterCa::generate().expect("CA");
        assert!(matches!(
            parsed.verify_ca(&other.cert_pem),
            Err(PkiError::CaHashMismatch)
        ));
        let wrong_hash =
            JoinToken::parse(&format!("K10{}::server:s3cret", "ab".repeat(32))).expect("parse");
        assert!(matches!(
            wrong_hash.verify_ca(&ca.cert_pem),
            Err(PkiError::CaHashMismatch)
        ));
    }

    #[test]
    fn malformed_join_tokens_are_rejected() {
        let hash = "0f".repeat(32);
        let cases = [
            "".to_string(),
            "s3cret".to_string(),
            format!("K11{hash}::server:s3cret"),
            format!("K10{hash}:server:s3cret"),
            format!("K10{}::server:s3cret", &hash[2..]),
            format!("K10{}::server:s3cret", "zz".repeat(32)),
            format!("K10{hash}::node:s3cret"),
            format!("K10{hash}::server:"),
            format!("K10{hash}::server"),
        ];
        for case in cases {
            assert!(
                matches!(
                    JoinToken::parse(&case),
                    Err(PkiError::MalformedJoinToken(_))
                ),
                "{case:?} should be rejected"
            );
        }
    }

    #[test]
    fn kubeconfig_is_private_and_quoted() {
        let dir = ScratchDir::new();
        let path = dir.0.join("kube/config");
        write_kubeconfig(
            &path,
            "https://127.0.0.1:6443",
            "PEM",
            "tok\"en",
            "my cluster",
        )
        .expect("write");
        assert_eq!(mode(&path), 0o600);
        let yaml = fs::read_to_string(&path).expect("read");
        assert!(yaml.contains("server: \"https://127.0.0.1:6443\""));
        assert!(yaml.contains("certificate-authority-data: \"UEVN\""));
        assert!(yaml.contains("token: \"tok\\\"en\""));
        assert!(yaml.contains("current-context: \"my cluster\""));
    }
}
