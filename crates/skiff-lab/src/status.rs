//! `skiff lab status`: each host's processes and link, its node's condition, and who leads
//! the Raft cluster — as each server sees it, because during a partition they may disagree.

use std::path::Path;

use skiff_client::{Client, Kubeconfig};

use super::cluster::{members, node_readiness};
use super::procs::{self, ProcState};
use super::state::{Host, Lab, Role, API_PORT};

pub async fn status(dir: &Path) -> anyhow::Result<()> {
    let lab = Lab::load(dir)?;
    println!(
        "lab {} in {}: subnet {}, bridge {} ({})",
        lab.id,
        lab.dir.display(),
        lab.subnet,
        lab.bridge,
        lab.bridge_ip
    );
    let clients = server_clients(&lab);
    // Each server's own view of the members, asked in parallel (a stopped server would
    // otherwise hold up the others' answers).
    let views = futures::future::join_all(clients.iter().map(|(_, c)| members(c))).await;
    let seen: Vec<(String, Seen)> = clients
        .iter()
        .zip(&views)
        .map(|((name, _), view)| (name.clone(), Seen::from_members(view.as_deref())))
        .collect();
    let leader_seen_by = |host: &Host| -> String {
        seen.iter()
            .find(|(name, _)| *name == host.name)
            .map(|(_, s)| s.to_string())
            .unwrap_or_default()
    };
    let nodes = node_conditions(&clients).await;

    println!();
    println!(
        "{:<8} {:<7} {:<14} {:<14} {:<18} {:<6} {:<22} {:<9} LEADER (as it sees it)",
        "HOST", "ROLE", "ADDRESS", "SKIFF", "CONTAINERD", "PROCS", "LINK", "NODE"
    );
    for host in &lab.hosts {
        let skiff = match host.pid {
            Some(pid) => format!("{pid} {}", procs::state_of(pid)),
            None => "not started".into(),
        };
        let containerd = std::fs::read_to_string(host.containerd_pid_file())
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .map(|pid| format!("{pid} {}", procs::state_of(pid)))
            .unwrap_or_else(|| "-".into());
        let count = procs::host_processes(host).len();
        let mut link = if host.partitioned {
            "partitioned".to_string()
        } else {
            "up".to_string()
        };
        if let Some(netem) = &host.netem {
            let parts: Vec<&str> = [netem.delay.as_deref(), netem.loss.as_deref()]
                .into_iter()
                .flatten()
                .collect();
            link.push_str(&format!(", netem {}", parts.join("/")));
        }
        let node = nodes
            .as_ref()
            .map(|n| {
                n.iter()
                    .find(|(name, _)| *name == host.name)
                    .map_or(
                        "absent",
                        |(_, ready)| if *ready { "Ready" } else { "NotReady" },
                    )
            })
            .unwrap_or("?");
        println!(
            "{:<8} {:<7} {:<14} {:<14} {:<18} {:<6} {:<22} {:<9} {}",
            host.name,
            host.role,
            host.ip,
            skiff,
            containerd,
            count,
            link,
            node,
            leader_seen_by(host)
        );
    }

    println!();
    println!("{}", leader_line(&seen));
    if nodes.is_none() {
        println!("nodes: no server answered (the NODE column is unknown)");
    }
    let stopped = lab
        .hosts
        .iter()
        .filter(|h| h.pid.map(procs::state_of) == Some(ProcState::Stopped))
        .count();
    if stopped > 0 {
        println!(
            "{stopped} host(s) stopped: `skiff lab cont --dir {} HOST` resumes one",
            lab.dir.display()
        );
    }
    Ok(())
}

/// What one server says about the leader.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Leader(String),
    /// It answered, but knows no leader (an election is going on, or it cannot reach one).
    NoLeader,
    /// It did not answer within 2 s (killed, stopped, or cut off from this machine).
    NoAnswer,
}

impl Seen {
    fn from_members(members: Option<&[serde_json::Value]>) -> Seen {
        let Some(members) = members else {
            return Seen::NoAnswer;
        };
        match members.iter().find(|m| m["leader"] == true) {
            Some(m) => Seen::Leader(m["name"].as_str().unwrap_or("?").to_string()),
            None => Seen::NoLeader,
        }
    }
}

impl std::fmt::Display for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Seen::Leader(name) => f.write_str(name),
            Seen::NoLeader => f.write_str("none"),
            Seen::NoAnswer => f.write_str("no answer"),
        }
    }
}

/// `leader: host-2 (seen by host-1, host-2; host-3: none)`, or the disagreement.
fn leader_line(seen: &[(String, Seen)]) -> String {
    let mut groups: Vec<(&Seen, Vec<&str>)> = Vec::new();
    for (server, view) in seen {
        match groups.iter_mut().find(|(v, _)| *v == view) {
            Some((_, servers)) => servers.push(server),
            None => groups.push((view, vec![server])),
        }
    }
    let leaders: Vec<&str> = groups
        .iter()
        .filter_map(|(v, _)| match v {
            Seen::Leader(name) => Some(name.as_str()),
            _ => None,
        })
        .collect();
    let parts: Vec<String> = groups
        .iter()
        .map(|(view, servers)| {
            let servers = servers.join(", ");
            match view {
                Seen::Leader(_) if leaders.len() == 1 => format!("seen by {servers}"),
                other => format!("{servers}: {other}"),
            }
        })
        .collect();
    match leaders.as_slice() {
        [] if seen.is_empty() => {
            "leader: unknown (no server has written its kubeconfig yet)".into()
        }
        [] => format!("leader: none ({})", parts.join("; ")),
        [leader] => format!("leader: {leader} ({})", parts.join("; ")),
        _ => format!("leader: the servers disagree ({})", parts.join("; ")),
    }
}

/// A client per server, each talking to that server only (the admin credentials of host-1's
/// kubeconfig, that server's URL).
fn server_clients(lab: &Lab) -> Vec<(String, Client)> {
    let Some(first) = lab.hosts.iter().find(|h| h.role == Role::Server) else {
        return Vec::new();
    };
    let Ok(config) = Kubeconfig::read(&first.data_dir.join("kubeconfig.yaml")) else {
        return Vec::new();
    };
    lab.servers()
        .filter_map(|server| {
            let url = format!("https://{}:{API_PORT}", server.ip);
            let client = Client::new(&url, &config.ca_pem, &config.token).ok()?;
            Some((server.name.clone(), client))
        })
        .collect()
}

/// (node, Ready?) from the first server that answers; None when none does.
async fn node_conditions(clients: &[(String, Client)]) -> Option<Vec<(String, bool)>> {
    for (_, client) in clients {
        if let Some(readiness) = node_readiness(client).await {
            return Some(readiness);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(list: &[(&str, Seen)]) -> Vec<(String, Seen)> {
        list.iter()
            .map(|(s, v)| (s.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn the_leader_line_says_who_agrees() {
        let leader = |n: &str| Seen::Leader(n.into());
        let line = leader_line(&seen(&[
            ("host-1", leader("host-2")),
            ("host-2", leader("host-2")),
            ("host-3", Seen::NoLeader),
        ]));
        assert_eq!(
            line,
            "leader: host-2 (seen by host-1, host-2; host-3: none)"
        );
        // A partitioned old leader still believes in itself.
        let line = leader_line(&seen(&[
            ("host-1", leader("host-2")),
            ("host-2", leader("host-2")),
            ("host-3", leader("host-3")),
        ]));
        assert_eq!(
            line,
            "leader: the servers disagree (host-1, host-2: host-2; host-3: host-3)"
        );
        let line = leader_line(&seen(&[("host-1", Seen::NoAnswer)]));
        assert_eq!(line, "leader: none (host-1: no answer)");
    }
}
