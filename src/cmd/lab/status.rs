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
    let leader_seen_by = |host: &Host| -> String {
        let Some(i) = clients.iter().position(|(name, _)| *name == host.name) else {
            return String::new();
        };
        match &views[i] {
            None => "no answer".into(),
            Some(members) => members
                .iter()
                .find(|m| m["leader"] == true)
                .and_then(|m| m["name"].as_str())
                .unwrap_or("none")
                .to_string(),
        }
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
    let answers: Vec<(&str, String)> = clients
        .iter()
        .zip(&views)
        .filter_map(|((name, _), view)| {
            let view = view.as_ref()?;
            let leader = view.iter().find(|m| m["leader"] == true)?;
            Some((
                name.as_str(),
                leader["name"].as_str().unwrap_or("?").to_string(),
            ))
        })
        .collect();
    match answers.first() {
        None => println!("leader: no server answered"),
        Some((_, leader)) if answers.iter().all(|(_, l)| l == leader) => println!(
            "leader: {leader} (according to {} of {} servers)",
            answers.len(),
            clients.len()
        ),
        Some(_) => {
            let says: Vec<String> = answers
                .iter()
                .map(|(s, l)| format!("{s} says {l}"))
                .collect();
            println!("leader: the servers disagree ({})", says.join(", "));
        }
    }
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
