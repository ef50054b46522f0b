//! End-to-end: schemathesis (property-based testing from an OpenAPI document, installed from
//! PyPI by scripts/test) generates requests from every group-version's OpenAPI v3 document that
//! skiff serves and sends them, authenticated as the admin, to a real server for a fixed time
//! budget each. Not one answer may be a server error (5xx), no request may go unanswered, and
//! the server must still be ready afterwards.
mod common;

use std::path::Path;
use std::process::Command;

use common::Server;

/// Seconds of generated requests per document (`SKIFF_SCHEMATHESIS_SECONDS` overrides).
const SECONDS_PER_DOCUMENT: u64 = 20;

#[test]
fn generated_requests_from_skiffs_own_openapi_get_no_server_errors() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let st = root.join("target/schemathesis/bin/st");
    assert!(
        st.exists(),
        "{} is missing: scripts/test installs schemathesis",
        st.display()
    );
    let seconds = std::env::var("SKIFF_SCHEMATHESIS_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(SECONDS_PER_DOCUMENT);
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(&dir.path().join("s1"));
    let client = server.wait_ready();
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, &client.ca_pem).expect("ca");

    let (code, index) = client.get("/openapi/v3");
    assert_eq!(code, 200, "{index}");
    let documents: Vec<String> = index["paths"]
        .as_object()
        .expect("the index lists documents")
        .keys()
        .cloned()
        .collect();
    assert!(documents.len() >= 5, "{documents:?}");
    for document in &documents {
        let (code, spec) = client.get(&format!("/openapi/v3/{document}"));
        assert_eq!(code, 200, "{document}");
        let file = dir
            .path()
            .join(format!("{}.json", document.replace('/', "_")));
        std::fs::write(&file, spec.to_string()).expect("spec");
        let out = Command::new(&st)
            .arg("run")
            .arg(&file)
            .args(["--url", &client.base])
            .args(["-H", &format!("Authorization: Bearer {}", client.token)])
            .arg("--tls-verify")
            .arg(&ca)
            .args(["--checks", "not_a_server_error", "--phases", "fuzzing"])
            .args(["--max-time", &seconds.to_string(), "--workers", "2"])
            .args(["--request-timeout", "10", "--seed", "1"])
            .env("PYTHONPATH", root.join("tests/schemathesis"))
            .env("SCHEMATHESIS_HOOKS", "hooks")
            .env("NO_COLOR", "1")
            .output()
            .expect("run schemathesis");
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let summary = report.rsplit("SUMMARY").next().unwrap_or(&report);
        assert!(
            out.status.success(),
            "{document}: schemathesis found failures or errors:\n{report}"
        );
        assert!(
            summary.contains("Tested:") && !summary.contains("Server error"),
            "{document}:\n{summary}"
        );
        assert_eq!(client.get_status("/readyz"), 200, "alive after {document}");
    }
}
