//! The cluster CA and what it signs: creating or loading the CA, issuing serving certificates,
//! and the rustls configuration that serves them.
use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::files::{create_private_dir, read_optional, write_atomic, PUBLIC_MODE, SECRET_MODE};
use super::join::sha256_hex;
use super::PkiError;

/// The CA outlives every serving cert; replacing it means re-issuing every kubeconfig.
const CA_VALIDITY_YEARS: i64 = 10;
pub(super) const SERVER_CERT_VALIDITY_YEARS: i64 = 1;

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
        Self::generate_named("skiff-ca")
    }

    /// A brand-new CA with the common name `name`.
    fn generate_named(name: &str) -> Result<Self, PkiError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name(name);
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
        Self::load_or_create_as(dir, "ca", "skiff-ca")
    }

    /// The node CA stored in `dir` (`node-ca.crt`, `node-ca.key`), created on first start: it
    /// signs only the serving certificates of node agents, which the API server trusts when
    /// it calls them. Clients of the API server trust the cluster CA, never this one, so no
    /// node certificate can pass for a server's, whatever names it carries.
    pub fn load_or_create_node_ca(dir: &Path) -> Result<Self, PkiError> {
        Self::load_or_create_as(dir, "node-ca", "skiff-node-ca")
    }

    fn load_or_create_as(dir: &Path, stem: &str, name: &str) -> Result<Self, PkiError> {
        let cert_path = dir.join(format!("{stem}.crt"));
        let key_path = dir.join(format!("{stem}.key"));
        match (read_optional(&cert_path)?, read_optional(&key_path)?) {
            (Some(cert), Some(key)) => Self::from_pem(cert, key),
            (None, None) => {
                let ca = Self::generate_named(name)?;
                create_private_dir(dir)?;
                // Key first: a cert without its key is useless, and the check above refuses
                // to paper over that state with a new CA.
                write_atomic(&key_path, ca.key_pem.as_bytes(), SECRET_MODE)?;
                write_atomic(&cert_path, ca.cert_pem.as_bytes(), PUBLIC_MODE)?;
                tracing::info!(dir = %dir.display(), name, "created a new CA");
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
    issue(
        ca,
        sans,
        "skiff-server",
        &[
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        None,
    )
}

/// A node agent's serving certificate for `sans`, signed by the node CA: for serving only
/// (no client use), so it opens no door of another component. Valid for `valid_for` (the
/// agent renews it before then); returns the certificate, its key and its end (Unix seconds).
pub fn issue_node_serving_cert(
    node_ca: &ClusterCa,
    sans: &[String],
    valid_for: std::time::Duration,
) -> Result<(String, String, i64), PkiError> {
    let not_after = jiff::Timestamp::now().as_second()
        + i64::try_from(valid_for.as_secs()).unwrap_or(i64::MAX / 2);
    let (cert, key) = issue(
        node_ca,
        sans,
        "skiff-node",
        &[ExtendedKeyUsagePurpose::ServerAuth],
        Some(not_after),
    )?;
    Ok((cert, key, not_after))
}

/// A certificate for `sans` signed by `ca`, valid until `not_after` (Unix seconds) or for
/// [`SERVER_CERT_VALIDITY_YEARS`].
fn issue(
    ca: &ClusterCa,
    sans: &[String],
    name: &str,
    usages: &[ExtendedKeyUsagePurpose],
    not_after: Option<i64>,
) -> Result<(String, String), PkiError> {
    let sans = normalise_sans(sans);
    if sans.is_empty() {
        return Err(PkiError::NoSans);
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name(name);
    params.subject_alt_names = sans
        .iter()
        .map(|san| match san.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => Ok(SanType::DnsName(san.as_str().try_into()?)),
        })
        .collect::<Result<_, rcgen::Error>>()?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = usages.to_vec();
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, SERVER_CERT_VALIDITY_YEARS)?;
    if let Some(end) = not_after {
        params.not_after = rcgen::date_time_ymd(1970, 1, 1)
            + std::time::Duration::from_secs(u64::try_from(end).unwrap_or(0));
    }
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca.issuer()?)?;
    Ok((cert.pem(), key.serialize_pem()))
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

pub(super) fn ring_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

pub(super) fn common_name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

/// Valid from yesterday (nodes' clocks disagree a little) until `years` from today.
pub(super) fn set_validity(params: &mut CertificateParams, years: i64) -> Result<(), PkiError> {
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
pub(super) fn validity_end(years: i64) -> Result<i64, PkiError> {
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
pub(super) fn normalise_sans(sans: &[String]) -> Vec<String> {
    let mut sans: Vec<String> = sans
        .iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    sans.sort();
    sans.dedup();
    sans
}
