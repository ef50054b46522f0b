//! Join tokens and the secrets derived from the cluster secret: what a new server or agent is
//! handed to find and prove itself to the cluster.
use std::fmt;

use super::PkiError;

const JOIN_TOKEN_PREFIX: &str = "K10";
const JOIN_TOKEN_USER: &str = "server";

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

/// The secret agents present: derived from the cluster secret, so it is not the secret that
/// lets a machine join as a server.
pub fn node_secret(cluster_secret: &str) -> String {
    sha256_hex(format!("skiff-node:{cluster_secret}").as_bytes())
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

/// Compares without stopping at the first difference, so timing reveals nothing about how
/// much of a guessed hash was right.
pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
