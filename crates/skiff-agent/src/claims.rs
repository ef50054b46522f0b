//! What one agent claims on its machine, so that two skiff instances on one machine (two
//! clusters, or a test beside a real one) fail at start instead of silently sharing.
//!
//! - The bridge: its owner's data dir is written into the link's alias
//!   (`/sys/class/net/BRIDGE/ifalias`, what `ip link set BRIDGE alias` sets). Another data dir
//!   finding it there is refused.
//! - The pod CIDR: a route to it through another interface means another instance already uses
//!   that range here (two first servers both hand out 10.42.0.0/24).
//!
//! The port of the agent's endpoint is claimed by binding it (`skiff agent`/`skiff server`).

use std::net::Ipv4Addr;
use std::path::Path;

use crate::error::AgentError;

fn alias_path(bridge: &str) -> std::path::PathBuf {
    Path::new("/sys/class/net").join(bridge).join("ifalias")
}

fn owner_tag(data_dir: &Path) -> String {
    format!("skiff:{}", data_dir.display())
}

/// Refuses a bridge that another skiff (another data dir) has claimed.
pub fn check_bridge_owner(bridge: &str, data_dir: &Path) -> Result<(), AgentError> {
    let alias = std::fs::read_to_string(alias_path(bridge)).unwrap_or_default();
    bridge_owner_verdict(bridge, alias.trim(), &owner_tag(data_dir))
}

fn bridge_owner_verdict(bridge: &str, alias: &str, mine: &str) -> Result<(), AgentError> {
    match alias.strip_prefix("skiff:") {
        Some(_) if alias != mine => Err(AgentError::Claimed(format!(
            "the bridge {bridge} belongs to another skiff on this machine (data dir {}): give \
             this one a bridge of its own with --bridge NAME, and a --cluster-cidr that does \
             not overlap",
            &alias["skiff:".len()..]
        ))),
        _ => Ok(()),
    }
}

/// Marks the bridge as this data dir's (best effort: an old kernel without `ifalias` only
/// loses the check).
pub fn mark_bridge_owner(bridge: &str, data_dir: &Path) {
    if let Err(e) = std::fs::write(alias_path(bridge), owner_tag(data_dir)) {
        tracing::debug!(error = %e, bridge, "writing the bridge's alias");
    }
}

/// Refuses a pod CIDR that this machine already routes through an interface other than
/// `bridge`.
pub fn check_pod_cidr_free(bridge: &str, pod_cidr: &str) -> Result<(), AgentError> {
    let table = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    pod_cidr_verdict(&table, bridge, pod_cidr)
}

fn pod_cidr_verdict(route_table: &str, bridge: &str, pod_cidr: &str) -> Result<(), AgentError> {
    let Some((network, prefix)) = parse_cidr(pod_cidr) else {
        return Err(AgentError::Claimed(format!(
            "the pod CIDR {pod_cidr:?} is not ADDRESS/PREFIX"
        )));
    };
    for line in route_table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [iface, dest, _gateway, _flags, _, _, _, mask, ..] = fields.as_slice() else {
            continue;
        };
        if *iface == bridge {
            continue;
        }
        let (Some(dest), Some(mask)) = (hex_ipv4(dest), hex_ipv4(mask)) else {
            continue;
        };
        let route_prefix = u32::from(mask).count_ones();
        // Only routes as specific as a node's range or more: a default route or the cluster
        // CIDR routed elsewhere says nothing about who uses this range on this machine.
        if route_prefix < prefix {
            continue;
        }
        if u32::from(dest) & mask_of(prefix) == u32::from(network) {
            return Err(AgentError::Claimed(format!(
                "the pod CIDR {pod_cidr} is already routed through {iface} on this machine \
                 (another skiff, or another network, uses it): give this cluster another \
                 --cluster-cidr, or this agent another --bridge only if {iface} is not in use"
            )));
        }
    }
    Ok(())
}

fn mask_of(prefix: u32) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    }
}

fn parse_cidr(cidr: &str) -> Option<(Ipv4Addr, u32)> {
    let (ip, prefix) = cidr.split_once('/')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let prefix: u32 = prefix.parse().ok().filter(|p| *p <= 32)?;
    Some((Ipv4Addr::from(u32::from(ip) & mask_of(prefix)), prefix))
}

/// `/proc/net/route` writes addresses as little-endian hex (`00002A0A` is 10.42.0.0).
fn hex_ipv4(text: &str) -> Option<Ipv4Addr> {
    let raw = u32::from_str_radix(text, 16).ok()?;
    Some(Ipv4Addr::from(raw.swap_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
skiff0\t00002A0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
eth0\t00012A0A\t0200A8C0\t0003\t0\t0\t0\t00FFFFFF\t0\t0\t0
";

    #[test]
    fn a_pod_cidr_routed_through_another_interface_is_taken() {
        // Ours, on our own bridge: free.
        assert!(pod_cidr_verdict(TABLE, "skiff0", "10.42.0.0/24").is_ok());
        // Another instance's bridge holds it.
        let taken = pod_cidr_verdict(TABLE, "skiff1", "10.42.0.0/24")
            .expect_err("taken")
            .to_string();
        assert!(taken.contains("routed through skiff0"), "{taken}");
        // A peer node's range routed via eth0 (host-gw) is someone's too.
        assert!(pod_cidr_verdict(TABLE, "skiff0", "10.42.1.0/24").is_err());
        // The default route and the LAN say nothing about 10.42.2.0/24.
        assert!(pod_cidr_verdict(TABLE, "skiff0", "10.42.2.0/24").is_ok());
        assert!(pod_cidr_verdict(TABLE, "skiff0", "nonsense").is_err());
    }

    #[test]
    fn a_bridge_claimed_by_another_data_dir_is_refused() {
        let mine = "skiff:/var/lib/skiff/agent";
        assert!(bridge_owner_verdict("skiff0", "", mine).is_ok());
        assert!(bridge_owner_verdict("skiff0", mine, mine).is_ok());
        // Someone else's alias that is not skiff's: not ours to judge.
        assert!(bridge_owner_verdict("skiff0", "uplink", mine).is_ok());
        let refused = bridge_owner_verdict("skiff0", "skiff:/tmp/other", mine)
            .expect_err("refused")
            .to_string();
        assert!(refused.contains("/tmp/other"), "{refused}");
        assert!(refused.contains("--bridge"), "{refused}");
    }

    #[test]
    fn route_table_addresses_are_little_endian() {
        assert_eq!(hex_ipv4("00002A0A"), Some(Ipv4Addr::new(10, 42, 0, 0)));
        assert_eq!(hex_ipv4("00FFFFFF"), Some(Ipv4Addr::new(255, 255, 255, 0)));
    }
}
