//! The kubeconfig `skiff server` writes: one cluster, one user, a bearer token.

use base64::Engine as _;
use serde_json::Value;

use crate::Error;

/// The server URL, CA and token of a kubeconfig written by `skiff server`.
#[derive(Debug, Clone)]
pub struct Kubeconfig {
    pub server: String,
    pub ca_pem: String,
    pub token: String,
}

impl Kubeconfig {
    pub fn read(path: &std::path::Path) -> Result<Kubeconfig, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("reading {}: {e}", path.display())))?;
        Kubeconfig::parse(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// skiff writes each field on its own line, its value as a JSON string, so a line scan is
    /// enough; a hand-edited kubeconfig with another layout is not supported here.
    pub fn parse(text: &str) -> Result<Kubeconfig, String> {
        let field = |name: &str| -> Result<String, String> {
            let line = text
                .lines()
                .find_map(|l| l.trim().strip_prefix(&format!("{name}:")))
                .ok_or_else(|| format!("no {name}"))?;
            let value: Value =
                serde_json::from_str(line.trim()).unwrap_or_else(|_| Value::from(line.trim()));
            Ok(value.as_str().unwrap_or_default().to_string())
        };
        let ca = base64::engine::general_purpose::STANDARD
            .decode(field("certificate-authority-data")?)
            .map_err(|e| format!("decoding certificate-authority-data: {e}"))?;
        Ok(Kubeconfig {
            server: field("server")?,
            ca_pem: String::from_utf8(ca).map_err(|e| e.to_string())?,
            token: field("token")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_skiff_writes() {
        let text = "clusters:\n- cluster:\n    certificate-authority-data: \"UEVN\"\n    server: \"https://127.0.0.1:6443\"\nusers:\n- user:\n    token: \"abc\"\n";
        let k = Kubeconfig::parse(text).expect("parses");
        assert_eq!(k.server, "https://127.0.0.1:6443");
        assert_eq!(k.ca_pem, "PEM");
        assert_eq!(k.token, "abc");
        assert!(Kubeconfig::parse("server: x").is_err());
    }
}
