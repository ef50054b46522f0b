//! The one request made before anything is trusted: fetching the cluster CA to check it
//! against the hash in a join token (`K10<sha256 of the CA>::…`), as k3s's agents do.

use std::time::Duration;

use crate::{Error, Result};

/// A CA certificate is a few KiB; anything much bigger is not one.
const MAX_CA_BYTES: usize = 64 * 1024;

/// Fetches `/cacerts` from `server` without verifying its certificate. The caller must check
/// the answer against its join token's hash before trusting it for anything.
pub async fn fetch_ca_unverified(server: &str) -> Result<String> {
    let http = reqwest::Client::builder()
        .use_rustls_tls()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(10))
        .build()?;
    let url = format!("{}/cacerts", server.trim_end_matches('/'));
    let response = http.get(&url).send().await?;
    if !response.status().is_success() {
        return Err(Error::Config(format!("GET {url}: {}", response.status())));
    }
    let body = response.bytes().await?;
    if body.len() > MAX_CA_BYTES {
        return Err(Error::Config(format!(
            "GET {url}: {} bytes is too large for a CA certificate",
            body.len()
        )));
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}
