//! The only kernel rules the proxy needs: send traffic for `CLUSTER-IP:PORT` to the local port
//! the proxy listens on for it.
//!
//! ```text
//! nat PREROUTING (from pods) ─┐
//! nat OUTPUT   (from the node) ┴─► SKIFF-SVC-<bridge> ─► -d 10.43.0.5/32 -p tcp --dport 80 -j REDIRECT --to-ports 41003
//! ```
//! REDIRECT rewrites the destination to this host (the bridge address for pod traffic,
//! 127.0.0.1 for the node's own), so the proxy sees the real client address. The whole chain is
//! replaced in one `iptables-restore --noflush` call, so a change is atomic and costs one exec.
use std::net::Ipv4Addr;

use tokio::io::AsyncWriteExt;

use crate::error::AgentError;

/// One ClusterIP port redirected to a local listener.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Redirect {
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    /// `tcp` or `udp`.
    pub protocol: &'static str,
    pub local_port: u16,
}

/// The chain of the agent whose pods sit on `bridge` (several agents may share a host in tests).
pub fn chain_name(bridge: &str) -> String {
    // iptables chain names are at most 28 characters.
    let mut name = format!("SKIFF-SVC-{bridge}");
    name.truncate(28);
    name
}

/// What `iptables-restore --noflush` is fed to make the chain exactly `redirects`.
pub fn restore_input(chain: &str, redirects: &[Redirect]) -> String {
    let mut text = format!("*nat\n:{chain} - [0:0]\n");
    for r in redirects {
        text.push_str(&format!(
            "-A {chain} -d {}/32 -p {} -m {} --dport {} -j REDIRECT --to-ports {}\n",
            r.cluster_ip, r.protocol, r.protocol, r.port, r.local_port
        ));
    }
    text.push_str("COMMIT\n");
    text
}

/// Makes the chain hold exactly `redirects`, creating it and the jumps to it when missing.
pub async fn sync(chain: &str, redirects: &[Redirect]) -> Result<(), AgentError> {
    let failed = |command: &str, message: String| AgentError::Command {
        command: command.to_string(),
        message,
    };
    let restore = |e: std::io::Error| failed("iptables-restore", e.to_string());
    let mut child = tokio::process::Command::new("iptables-restore")
        .args(["--noflush", "--wait"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(restore)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(restore_input(chain, redirects).as_bytes())
            .await
            .map_err(restore)?;
    }
    let out = child.wait_with_output().await.map_err(restore)?;
    if !out.status.success() {
        return Err(failed(
            "iptables-restore",
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    for hook in ["PREROUTING", "OUTPUT"] {
        let rule = ["-t", "nat", "-C", hook, "-j", chain, "-w"];
        let present = tokio::process::Command::new("iptables")
            .args(rule)
            .output()
            .await
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !present {
            let out = tokio::process::Command::new("iptables")
                .args(["-t", "nat", "-I", hook, "-j", chain, "-w"])
                .output()
                .await
                .map_err(|e| failed("iptables", e.to_string()))?;
            if !out.status.success() {
                return Err(failed(
                    &format!("iptables -t nat -I {hook} -j {chain}"),
                    String::from_utf8_lossy(&out.stderr).trim().to_string(),
                ));
            }
        }
    }
    Ok(())
}

/// Removes the chain and the jumps to it (a node leaving for good, or a test's cleanup).
pub async fn remove(chain: &str) {
    for hook in ["PREROUTING", "OUTPUT"] {
        let _ = tokio::process::Command::new("iptables")
            .args(["-t", "nat", "-D", hook, "-j", chain, "-w"])
            .output()
            .await;
    }
    for op in ["-F", "-X"] {
        let _ = tokio::process::Command::new("iptables")
            .args(["-t", "nat", op, chain, "-w"])
            .output()
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_is_rewritten_whole() {
        let text = restore_input(
            "SKIFF-SVC-skiff0",
            &[Redirect {
                cluster_ip: Ipv4Addr::new(10, 43, 0, 5),
                port: 80,
                protocol: "tcp",
                local_port: 41003,
            }],
        );
        assert_eq!(
            text,
            "*nat\n:SKIFF-SVC-skiff0 - [0:0]\n-A SKIFF-SVC-skiff0 -d 10.43.0.5/32 -p tcp -m tcp --dport 80 -j REDIRECT --to-ports 41003\nCOMMIT\n"
        );
        assert_eq!(chain_name("a-very-long-bridge-name-indeed").len(), 28);
    }
}
