//! What the lab asks of its cluster while it comes up and when it is looked at: has host-1
//! written its tokens, which nodes are Ready, who are the members (as one server sees them);
//! and the kubeconfigs the lab writes for people.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use k8s_openapi::api::core::v1::Node;
use serde_json::Value;
use skiff_client::{Client, ListParams, Method};

use super::procs::{self, ProcState};
use super::state::{Host, Lab, API_PORT};

/// host-1 writes its kubeconfig, then `token` and `node-token` once it serves.
pub async fn wait_for_tokens(first: &Host, deadline: Instant) -> anyhow::Result<()> {
    let node_token = first.data_dir.join("node-token");
    loop {
        if std::fs::metadata(&node_token).is_ok_and(|m| m.len() > 0) {
            return Ok(());
        }
        check_alive(first)?;
        if Instant::now() > deadline {
            bail!(
                "{} did not write {} in time{}",
                first.name,
                node_token.display(),
                log_tail(first)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An error naming the host and showing the end of its log, when its skiff has exited.
fn check_alive(host: &Host) -> anyhow::Result<()> {
    match host.pid.map(procs::state_of) {
        Some(ProcState::Dead) => bail!("{}'s skiff exited{}", host.name, log_tail(host)),
        _ => Ok(()),
    }
}

/// The last lines of a host's log, to put in an error.
pub fn log_tail(host: &Host) -> String {
    let path = host.log_file();
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() {
        return format!("; its log {} is empty", path.display());
    }
    let tail = lines[lines.len().saturating_sub(12)..].join("\n    ");
    format!("; its log is {}, ending:\n    {tail}", path.display())
}

/// Polls the API (through host-1) until every host's node is Ready and every server is a
/// voting member; fails early when a host's skiff exits.
pub async fn wait_until_ready(
    lab: &Lab,
    started: Instant,
    deadline: Instant,
) -> anyhow::Result<()> {
    let first = lab.first_server()?;
    let client = Client::from_kubeconfig(&first.data_dir.join("kubeconfig.yaml"))?;
    let servers: Vec<&str> = lab.servers().map(|h| h.name.as_str()).collect();
    let mut reported: Vec<String> = Vec::new();
    loop {
        for host in &lab.hosts {
            check_alive(host)?;
        }
        let ready = ready_nodes(&client).await;
        let voters = voters(&client).await;
        for name in &ready {
            if !reported.contains(name) && lab.host(name).is_ok() {
                println!("{:>6.1}s  {name} Ready", started.elapsed().as_secs_f64());
                reported.push(name.clone());
            }
        }
        let not_ready: Vec<&Host> = lab
            .hosts
            .iter()
            .filter(|h| !ready.contains(&h.name))
            .collect();
        let not_voting: Vec<&&str> = servers
            .iter()
            .filter(|s| !voters.iter().any(|v| v == *s))
            .collect();
        if not_ready.is_empty() && not_voting.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            let mut message = String::new();
            for host in &not_ready {
                message.push_str(&format!("\n{} is not Ready{}", host.name, log_tail(host)));
            }
            if !not_voting.is_empty() {
                let names: Vec<&str> = not_voting.iter().map(|s| **s).collect();
                message.push_str(&format!("\nnot (yet) voting members: {}", names.join(", ")));
            }
            bail!(
                "the lab was not ready after {:.0}s:{message}",
                started.elapsed().as_secs_f64()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Names of the nodes whose Ready condition is True (none when the API does not answer).
pub async fn ready_nodes(client: &Client) -> Vec<String> {
    node_readiness(client)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(name, ready)| ready.then_some(name))
        .collect()
}

/// Every node and whether it is Ready, as one server answers (None: no answer within 2 s —
/// a stopped or cut-off server, or a follower that cannot reach the leader for its read).
pub async fn node_readiness(client: &Client) -> Option<Vec<(String, bool)>> {
    let list = tokio::time::timeout(
        Duration::from_secs(2),
        client.list::<Node>(None, &ListParams::default()),
    )
    .await;
    let Ok(Ok(list)) = list else {
        return None;
    };
    let readiness = list
        .items
        .into_iter()
        .filter_map(|node| {
            let ready = node
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            Some((node.metadata.name?, ready))
        })
        .collect();
    Some(readiness)
}

/// The members as one server sees them (`GET /skiff/v1/members`), None when it does not answer.
pub async fn members(client: &Client) -> Option<Vec<Value>> {
    let answer = tokio::time::timeout(
        Duration::from_secs(2),
        client.request_leader::<Value>(Method::GET, "/skiff/v1/members", None),
    )
    .await;
    match answer {
        Ok(Ok(answer)) => answer["members"].as_array().cloned(),
        _ => None,
    }
}

async fn voters(client: &Client) -> Vec<String> {
    members(client)
        .await
        .unwrap_or_default()
        .iter()
        .filter(|m| m["role"] == "voter")
        .filter_map(|m| m["name"].as_str().map(str::to_string))
        .collect()
}

/// DIR/kubeconfig.yaml (host-1's, which already names https://IP1:6443) and one per server.
pub fn write_kubeconfigs(lab: &Lab) -> anyhow::Result<()> {
    let first = lab.first_server()?;
    let source = first.data_dir.join("kubeconfig.yaml");
    let text = std::fs::read_to_string(&source)
        .with_context(|| format!("reading {}", source.display()))?;
    write_private(&lab.dir.join("kubeconfig.yaml"), &text)?;
    for server in lab.servers() {
        let url = format!("https://{}:{API_PORT}", server.ip);
        write_private(&lab.kubeconfig_for(server), &with_server(&text, &url))?;
    }
    Ok(())
}

/// The kubeconfig with its `server:` line pointing at `url` (skiff writes one cluster).
fn with_server(kubeconfig: &str, url: &str) -> String {
    kubeconfig
        .lines()
        .map(|line| {
            let indent = &line[..line.len() - line.trim_start().len()];
            if line.trim_start().starts_with("server:") {
                format!("{indent}server: \"{url}\"\n")
            } else {
                format!("{line}\n")
            }
        })
        .collect()
}

/// Kubeconfigs hold the admin token: root only.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfigs_for_other_servers_differ_only_in_the_url() {
        let text = "clusters:\n- name: \"skiff\"\n  cluster:\n    server: \"https://10.200.1.11:6443\"\n    certificate-authority-data: \"X\"\n";
        let other = with_server(text, "https://10.200.1.12:6443");
        assert_eq!(other, text.replace("10.200.1.11", "10.200.1.12"));
    }
}
