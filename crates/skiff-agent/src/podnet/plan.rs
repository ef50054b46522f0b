//! The pure part of the pod network: from this node, its peers and the chosen backend to the
//! routes, neighbour (ARP) entries and forwarding-database entries the node should have.
//! Nothing here touches the kernel; [`super::netlink`] makes the kernel match a [`Plan`].
//!
//! ```text
//!  host-gw  (peer on this node's subnet):   10.42.1.0/24 via 192.168.1.12
//!
//!  vxlan    (peer anywhere):                10.42.1.0/24 via 10.42.1.0 dev skiff.vxlan onlink
//!                                           neigh 10.42.1.0 lladdr 02:73:c0:a8:01:0c  (peer's VTEP)
//!                                           fdb 02:73:c0:a8:01:0c dst 192.168.1.12     (where it is)
//! ```
//! As flannel does, a node's VTEP address is the first (network) address of its pod CIDR, so
//! nothing needs to be published beyond what the Node object already holds: `spec.podCIDR` and
//! the `InternalIP`. The VTEP's MAC address is made from the node IP ([`vtep_mac`]) rather than
//! published in an annotation.
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Node;

/// The VXLAN device every node that needs one has (at most 15 characters: IFNAMSIZ).
pub const VXLAN_DEVICE: &str = "skiff.vxlan";
/// The VXLAN network identifier (flannel's default).
pub const VXLAN_VNI: u32 = 1;
/// The UDP port VXLAN packets go to: 8472, the Linux kernel's and flannel's default rather than
/// IANA's 4789, so a skiff node and a flannel one do not fight over the port by accident.
pub const VXLAN_PORT: u16 = 8472;
/// What VXLAN adds to every packet: outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14).
pub const VXLAN_OVERHEAD: u32 = 50;

/// An IPv4 block, always normalised (`10.42.1.7/24` is kept as `10.42.1.0/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Net {
    /// `None` for a prefix over 32.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Ipv4Net> {
        (prefix <= 32).then(|| Ipv4Net {
            addr: Ipv4Addr::from(u32::from(addr) & mask(prefix)),
            prefix,
        })
    }

    /// Parses `ADDRESS/PREFIX`.
    pub fn parse(text: &str) -> Option<Ipv4Net> {
        let (addr, prefix) = text.trim().split_once('/')?;
        Ipv4Net::new(addr.parse().ok()?, prefix.parse().ok()?)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.addr)
    }

    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

/// `--pod-network`: how this node reaches other nodes' pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A plain route to each peer's pod CIDR via the peer's node IP. Fast (no encapsulation),
    /// but only for peers on this node's own subnet (one link, no router between).
    HostGw,
    /// An overlay: pod packets to a peer are wrapped in UDP to the peer's node IP. Works across
    /// routers, costs 50 bytes per packet.
    Vxlan,
    /// Per peer: host-gw to peers on this node's subnet, VXLAN to the others.
    Auto,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::HostGw => "host-gw",
            Mode::Vxlan => "vxlan",
            Mode::Auto => "auto",
        }
    }
}

/// This node as the plan needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Local {
    pub node_name: String,
    pub node_ip: Ipv4Addr,
    pub pod_cidr: Ipv4Net,
    /// The subnet of the interface that holds `node_ip` (`192.168.1.0/24`); `None` when no
    /// interface holds it (then no peer counts as on-link).
    pub subnet: Option<Ipv4Net>,
}

/// Another node, from its Node object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    pub name: String,
    pub node_ip: Ipv4Addr,
    pub pod_cidr: Ipv4Net,
}

impl Peer {
    /// `spec.podCIDR` and the first `InternalIP`; `None` until the node has both (IPAM gives
    /// the CIDR just after the node registers).
    pub fn from_node(node: &Node) -> Option<Peer> {
        let pod_cidr = Ipv4Net::parse(node.spec.as_ref()?.pod_cidr.as_deref()?)?;
        let node_ip = node
            .status
            .as_ref()?
            .addresses
            .as_ref()?
            .iter()
            .find(|a| a.type_ == "InternalIP")?
            .address
            .parse()
            .ok()?;
        Some(Peer {
            name: node.metadata.name.clone()?,
            node_ip,
            pod_cidr,
        })
    }
}

/// Where a route's packets go next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NextHop {
    /// Via a gateway on the node's own link (host-gw): the kernel finds the interface.
    Gateway(Ipv4Addr),
    /// Via the peer's VTEP address on the VXLAN device, `onlink` (the address is on no subnet
    /// of the device, the neighbour entry answers for it).
    Vtep(Ipv4Addr),
}

/// A route to a peer's pod CIDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    pub dst: Ipv4Net,
    pub via: NextHop,
}

/// A permanent ARP entry on the VXLAN device: the peer's VTEP address → its MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Neighbour {
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
}

/// A forwarding-database entry on the VXLAN device: frames for this MAC go in UDP to `dst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FdbEntry {
    pub mac: [u8; 6],
    pub dst: Ipv4Addr,
}

/// The VXLAN device as it should be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanDevice {
    pub vni: u32,
    pub port: u16,
    /// The outer source address: the node IP.
    pub local: Ipv4Addr,
    /// The device's own MAC, which peers put in their neighbour entries ([`vtep_mac`]).
    pub mac: [u8; 6],
    /// This node's VTEP address (its pod CIDR's network address, as a /32): traffic the node
    /// itself sends to remote pods leaves with it, so replies come back through the tunnel.
    pub address: Ipv4Addr,
}

/// Everything one peer needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerEntries {
    pub route: Route,
    pub neighbour: Option<Neighbour>,
    pub fdb: Option<FdbEntry>,
}

/// A backend: what this node adds so that one peer's pods are reachable. Both are driven by the
/// same watch of Nodes, and what a departed peer left is removed because it is in no plan.
pub trait Backend {
    /// What the node needs for `peer`, or why this backend cannot reach it.
    fn peer(&self, local: &Local, peer: &Peer) -> Result<PeerEntries, String>;
}

/// A route via the peer's node IP, which must be on this node's link.
pub struct HostGw;

impl Backend for HostGw {
    fn peer(&self, local: &Local, peer: &Peer) -> Result<PeerEntries, String> {
        match local.subnet {
            Some(subnet) if subnet.contains(peer.node_ip) => Ok(PeerEntries {
                route: Route {
                    dst: peer.pod_cidr,
                    via: NextHop::Gateway(peer.node_ip),
                },
                neighbour: None,
                fdb: None,
            }),
            subnet => Err(format!(
                "host-gw: {} is not on this node's subnet ({}); use --pod-network vxlan or auto",
                peer.node_ip,
                subnet.map_or("unknown".to_string(), |s| s.to_string())
            )),
        }
    }
}

/// A route into the VXLAN device, with the peer's VTEP in the ARP table and the FDB.
pub struct Vxlan;

impl Backend for Vxlan {
    fn peer(&self, _local: &Local, peer: &Peer) -> Result<PeerEntries, String> {
        let vtep = peer.pod_cidr.addr;
        let mac = vtep_mac(peer.node_ip);
        Ok(PeerEntries {
            route: Route {
                dst: peer.pod_cidr,
                via: NextHop::Vtep(vtep),
            },
            neighbour: Some(Neighbour { ip: vtep, mac }),
            fdb: Some(FdbEntry {
                mac,
                dst: peer.node_ip,
            }),
        })
    }
}

/// A node's VTEP MAC: `02:73` (locally administered, unicast; 0x73 is 's') and the node IP's
/// four bytes, so every node knows every other node's without asking.
pub fn vtep_mac(node_ip: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = node_ip.octets();
    [0x02, 0x73, a, b, c, d]
}

/// What the node should have, all of it; anything skiff made that is not here is removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The VXLAN device, when some peer goes through it (always in `vxlan` mode).
    pub vxlan: Option<VxlanDevice>,
    pub routes: Vec<Route>,
    pub neighbours: Vec<Neighbour>,
    pub fdb: Vec<FdbEntry>,
    /// Peers left out, by name, and why.
    pub skipped: Vec<(String, String)>,
}

/// The plan for `local` and `peers` (in any order; `local` itself may be among them).
pub fn plan(local: &Local, peers: &[Peer], mode: Mode) -> Plan {
    let mut sorted: Vec<&Peer> = peers.iter().collect();
    sorted.sort();
    let mut plan = Plan::default();
    // Who holds each pod CIDR, so a second claim (which IPAM should never make) is skipped
    // rather than fought over.
    let mut claimed: BTreeMap<Ipv4Net, &str> = BTreeMap::new();
    let mut any_vxlan = false;
    for peer in sorted {
        if peer.name == local.node_name {
            continue;
        }
        let skip = skip_reason(local, peer, &claimed);
        if let Some(reason) = skip {
            plan.skipped.push((peer.name.clone(), reason));
            continue;
        }
        let on_link = local.subnet.is_some_and(|s| s.contains(peer.node_ip));
        let backend: &dyn Backend = match mode {
            Mode::HostGw => &HostGw,
            Mode::Vxlan => &Vxlan,
            Mode::Auto if on_link => &HostGw,
            Mode::Auto => &Vxlan,
        };
        match backend.peer(local, peer) {
            Ok(entries) => {
                claimed.insert(peer.pod_cidr, &peer.name);
                any_vxlan |= matches!(entries.route.via, NextHop::Vtep(_));
                plan.routes.push(entries.route);
                plan.neighbours.extend(entries.neighbour);
                plan.fdb.extend(entries.fdb);
            }
            Err(reason) => plan.skipped.push((peer.name.clone(), reason)),
        }
    }
    if mode == Mode::Vxlan || any_vxlan {
        plan.vxlan = Some(VxlanDevice {
            vni: VXLAN_VNI,
            port: VXLAN_PORT,
            local: local.node_ip,
            mac: vtep_mac(local.node_ip),
            address: local.pod_cidr.addr,
        });
    }
    plan.routes.sort();
    plan.neighbours.sort();
    plan.fdb.sort();
    plan
}

/// Why `peer` gets no route, if it does not; `claimed` holds the pod CIDRs routed so far.
fn skip_reason(local: &Local, peer: &Peer, claimed: &BTreeMap<Ipv4Net, &str>) -> Option<String> {
    if peer.node_ip == local.node_ip {
        // Two agents in one network namespace (tests do this): the peer's bridge route is
        // already here, and a route via our own address would loop.
        return Some("it has this node's address (same network namespace)".to_string());
    }
    if peer.pod_cidr.overlaps(&local.pod_cidr) {
        return Some(format!(
            "its pod CIDR {} overlaps this node's",
            peer.pod_cidr
        ));
    }
    claimed
        .iter()
        .find(|(cidr, _)| cidr.overlaps(&peer.pod_cidr))
        .map(|(_, owner)| format!("its pod CIDR {} overlaps node {owner}'s", peer.pod_cidr))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> Ipv4Net {
        Ipv4Net::parse(text).expect("test CIDR")
    }

    fn ip(text: &str) -> Ipv4Addr {
        text.parse().expect("test IP")
    }

    fn peer(name: &str, node_ip: &str, pod_cidr: &str) -> Peer {
        Peer {
            name: name.into(),
            node_ip: ip(node_ip),
            pod_cidr: net(pod_cidr),
        }
    }

    /// Node `a`: 192.168.1.11 on 192.168.1.0/24, pods 10.42.0.0/24.
    fn local() -> Local {
        Local {
            node_name: "a".into(),
            node_ip: ip("192.168.1.11"),
            pod_cidr: net("10.42.0.0/24"),
            subnet: Some(net("192.168.1.0/24")),
        }
    }

    fn gw(dst: &str, via: &str) -> Route {
        Route {
            dst: net(dst),
            via: NextHop::Gateway(ip(via)),
        }
    }

    fn vtep(dst: &str) -> Route {
        Route {
            dst: net(dst),
            via: NextHop::Vtep(net(dst).addr),
        }
    }

    /// (what, peers, mode, routes, a VXLAN device?, skipped peers and why)
    type Row = (
        &'static str,
        Vec<Peer>,
        Mode,
        Vec<Route>,
        bool,
        Vec<(&'static str, &'static str)>,
    );

    #[rustfmt::skip]
    fn table() -> Vec<Row> {
        let b = peer("b", "192.168.1.12", "10.42.1.0/24"); // same subnet
        let c = peer("c", "172.16.5.9", "10.42.2.0/24"); // behind a router
        let me = peer("a", "192.168.1.11", "10.42.0.0/24");
        let twin = peer("twin", "192.168.1.11", "10.42.3.0/24"); // same netns as a
        let clash = peer("clash", "192.168.1.13", "10.42.0.0/24"); // a's own CIDR
        let late = peer("z", "192.168.1.14", "10.42.1.0/25"); // inside b's CIDR
        let host_gw_refused = "host-gw: 172.16.5.9 is not on this node's subnet (192.168.1.0/24); \
                               use --pod-network vxlan or auto";
        vec![
            ("no peers", vec![me.clone()], Mode::Auto, vec![], false, vec![]),
            ("no peers, vxlan: the device anyway", vec![], Mode::Vxlan, vec![], true, vec![]),
            ("host-gw, on-link peer", vec![b.clone()], Mode::HostGw,
             vec![gw("10.42.1.0/24", "192.168.1.12")], false, vec![]),
            ("host-gw refuses a peer behind a router", vec![b.clone(), c.clone()], Mode::HostGw,
             vec![gw("10.42.1.0/24", "192.168.1.12")], false, vec![("c", host_gw_refused)]),
            ("vxlan for every peer", vec![c.clone(), b.clone()], Mode::Vxlan,
             vec![vtep("10.42.1.0/24"), vtep("10.42.2.0/24")], true, vec![]),
            ("auto: host-gw on-link, vxlan beyond", vec![b.clone(), c.clone(), me.clone()], Mode::Auto,
             vec![gw("10.42.1.0/24", "192.168.1.12"), vtep("10.42.2.0/24")], true, vec![]),
            ("auto, all on-link: no device", vec![b.clone()], Mode::Auto,
             vec![gw("10.42.1.0/24", "192.168.1.12")], false, vec![]),
            ("a peer in this netns and overlapping CIDRs are skipped",
             vec![b.clone(), twin, clash, late], Mode::Auto,
             vec![gw("10.42.1.0/24", "192.168.1.12")], false,
             vec![("clash", "its pod CIDR 10.42.0.0/24 overlaps this node's"),
                  ("twin", "it has this node's address (same network namespace)"),
                  ("z", "its pod CIDR 10.42.1.0/25 overlaps node b's")]),
        ]
    }

    #[test]
    fn the_plan_for_each_mode_and_peer() {
        for (what, peers, mode, routes, device, skipped) in table() {
            let plan = plan(&local(), &peers, mode);
            assert_eq!(plan.routes, routes, "{what}: routes");
            assert_eq!(plan.vxlan.is_some(), device, "{what}: device");
            let skipped: Vec<(String, String)> = skipped
                .into_iter()
                .map(|(n, r)| (n.to_string(), r.to_string()))
                .collect();
            assert_eq!(plan.skipped, skipped, "{what}: skipped");
            // Every VXLAN route has its peer's VTEP in the ARP table and the FDB.
            let vxlan_routes = routes.iter().filter(|r| matches!(r.via, NextHop::Vtep(_)));
            assert_eq!(
                plan.neighbours.len(),
                vxlan_routes.clone().count(),
                "{what}"
            );
            assert_eq!(plan.fdb.len(), vxlan_routes.count(), "{what}");
        }
    }

    #[test]
    fn vxlan_entries_point_at_the_peer() {
        let plan = plan(
            &local(),
            &[peer("c", "172.16.5.9", "10.42.2.0/24")],
            Mode::Auto,
        );
        let mac = [0x02, 0x73, 172, 16, 5, 9];
        assert_eq!(
            plan.neighbours,
            vec![Neighbour {
                ip: ip("10.42.2.0"),
                mac
            }]
        );
        assert_eq!(
            plan.fdb,
            vec![FdbEntry {
                mac,
                dst: ip("172.16.5.9")
            }]
        );
        assert_eq!(
            plan.vxlan,
            Some(VxlanDevice {
                vni: 1,
                port: 8472,
                local: ip("192.168.1.11"),
                mac: [0x02, 0x73, 192, 168, 1, 11],
                address: ip("10.42.0.0"),
            })
        );
    }

    #[test]
    fn cidrs() {
        assert_eq!(net("10.42.1.7/24").to_string(), "10.42.1.0/24");
        assert!(net("10.42.0.0/16").contains(ip("10.42.200.3")));
        assert!(!net("10.42.0.0/16").contains(ip("10.43.0.1")));
        assert!(net("0.0.0.0/0").contains(ip("1.2.3.4")));
        assert!(net("10.42.0.0/16").overlaps(&net("10.42.3.0/24")));
        assert!(!net("10.42.0.0/24").overlaps(&net("10.42.1.0/24")));
        assert_eq!(Ipv4Net::parse("10.42.0.0/33"), None);
        assert_eq!(Ipv4Net::parse("10.42.0.0"), None);
    }

    #[test]
    fn peers_come_from_node_objects() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "b"},
            "spec": {"podCIDR": "10.42.1.0/24"},
            "status": {"addresses": [
                {"type": "Hostname", "address": "b"},
                {"type": "InternalIP", "address": "192.168.1.12"}
            ]}
        }))
        .expect("node");
        assert_eq!(
            Peer::from_node(&node),
            Some(peer("b", "192.168.1.12", "10.42.1.0/24"))
        );
        let no_cidr: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "b"},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.168.1.12"}]}
        }))
        .expect("node");
        assert_eq!(Peer::from_node(&no_cidr), None);
    }
}
