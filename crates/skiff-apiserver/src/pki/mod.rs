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
//! | `node-ca.crt`, `node-ca.key` | the node CA: agents' serving certificates | 0600 |
//! | `service-account.key` | signs ServiceAccount tokens | 0600 |
//! | `encryption-config.yaml` | the key Secrets are sealed with at rest (`encryption`) | 0600 |
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
//!
//! ## Layout
//! - `issue`: the CA and the certificates it issues; the TLS configuration.
//! - `files`: the serving certificate on disk, token files, kubeconfigs, atomic writes.
//! - `join`: join tokens and the node secret.

use std::io;
use std::path::{Path, PathBuf};

pub mod encryption;
mod files;
mod issue;
mod join;

pub use files::{ensure_server_cert, load_or_create_token, write_kubeconfig, write_secret};
pub use issue::{issue_node_serving_cert, issue_server_cert, server_tls_config, ClusterCa};
pub(crate) use join::sha256_hex;
pub use join::{node_secret, JoinToken};

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

#[cfg(test)]
mod tests {
    use super::issue::ring_provider;
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    use std::fs;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;

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
