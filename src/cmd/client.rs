//! A small HTTPS client for skiff's own endpoints (join, members, bench), trusting exactly the
//! cluster CA.

use anyhow::{bail, Context};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A client that trusts only `ca_pem` and sends `token` as a bearer token.
pub struct ClusterClient {
    http: reqwest::Client,
    token: String,
}

impl ClusterClient {
    pub fn new(ca_pem: &str, token: &str) -> anyhow::Result<ClusterClient> {
        let ca =
            reqwest::Certificate::from_pem(ca_pem.as_bytes()).context("reading the cluster CA")?;
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            // Redirects to the leader are followed by hand, keeping the token (reqwest drops
            // credentials when a redirect changes host or port).
            .redirect(reqwest::redirect::Policy::none())
            // The token must never travel in clear text, not even after a redirect.
            .https_only(true)
            .build()?;
        Ok(ClusterClient {
            http,
            token: token.to_string(),
        })
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Sends a JSON request and decodes a JSON answer, following up to three leader redirects.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        url: &str,
        body: Option<&impl Serialize>,
    ) -> anyhow::Result<T> {
        let mut url = url.to_string();
        for _ in 0..3 {
            let mut request = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(&self.token);
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request
                .send()
                .await
                .with_context(|| format!("{method} {url}"))?;
            let status = response.status();
            if status == StatusCode::TEMPORARY_REDIRECT {
                let location = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .context("redirect without a Location")?;
                url = location.to_string();
                continue;
            }
            let text = response.text().await?;
            if !status.is_success() {
                bail!("{method} {url}: {status}: {text}");
            }
            return serde_json::from_str(&text)
                .with_context(|| format!("decoding the answer of {url}"));
        }
        bail!("{method} {url}: too many redirects")
    }
}

/// Fetches the CA from `server` without trusting anything yet; the caller must check it
/// against the hash in its join token before using it.
pub async fn fetch_ca_unverified(server: &str) -> anyhow::Result<String> {
    let http = reqwest::Client::builder()
        .use_rustls_tls()
        .danger_accept_invalid_certs(true)
        .timeout(std::time::Duration::from_secs(10))
        .build()?;
    let url = format!("{}/cacerts", server.trim_end_matches('/'));
    let response = http
        .get(&url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    if !response.status().is_success() {
        bail!("GET {url}: {}", response.status());
    }
    // A CA certificate is a few KiB; anything much bigger is not one.
    let body = response.bytes().await?;
    if body.len() > 64 * 1024 {
        bail!("GET {url}: answer too large for a CA certificate");
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}
