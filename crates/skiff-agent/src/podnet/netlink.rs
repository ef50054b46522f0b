//! The thin I/O of the pod network: make the kernel's routes, VXLAN device, neighbour and FDB
//! entries match a [`Plan`], over rtnetlink (no `ip` processes).
//!
//! Only what skiff made is touched: routes carry skiff's own route protocol number
//! ([`ROUTE_PROTOCOL`], shown by `ip route` as `proto 83`), and neighbour and FDB entries live
//! on skiff's own VXLAN device. Anything of those that is not in the plan is removed — the
//! routes of a deleted node, and at start whatever an earlier run left.
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{InfoData, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, LinkUnspec, LinkVxlan, RouteMessageBuilder};

use super::plan::{
    FdbEntry, Ipv4Net, Neighbour, NextHop, Plan, Route, VxlanDevice, VXLAN_DEVICE, VXLAN_OVERHEAD,
};
use crate::runtime::RuntimeError;

/// The route protocol number on skiff's routes: unassigned in `/etc/iproute2/rt_protos`
/// (83 is 'S'), so `ip route show proto 83` lists exactly skiff's.
pub const ROUTE_PROTOCOL: u8 = 83;

const ENOENT: i32 = 2;
const ESRCH: i32 = 3;
const ENODEV: i32 = 19;

/// The interface that carries the node IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Underlay {
    pub index: u32,
    pub subnet: Ipv4Net,
    pub mtu: u32,
}

/// A netlink connection in the agent's network namespace.
pub struct Dataplane {
    handle: Handle,
}

fn failed(what: impl std::fmt::Display, e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Failed(format!("pod network: {what}: {e}"))
}

/// The kernel's errno in a netlink error (0 for other errors).
fn errno(e: &rtnetlink::Error) -> i32 {
    match e {
        rtnetlink::Error::NetlinkError(m) => -m.raw_code(),
        _ => 0,
    }
}

impl Dataplane {
    /// Opens the connection (its task runs on the current tokio runtime).
    pub fn connect() -> Result<Dataplane, RuntimeError> {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|e| failed("opening a netlink socket", e))?;
        tokio::spawn(connection);
        Ok(Dataplane { handle })
    }

    /// The interface holding `node_ip`, with its subnet and MTU; `None` when no interface
    /// holds it (a node IP behind NAT).
    pub async fn underlay(&self, node_ip: Ipv4Addr) -> Result<Option<Underlay>, RuntimeError> {
        let addresses: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| failed("listing addresses", e))?;
        let Some(found) = addresses.iter().find(|a| {
            a.attributes.iter().any(
                |attr| matches!(attr, AddressAttribute::Local(IpAddr::V4(ip)) if *ip == node_ip),
            )
        }) else {
            return Ok(None);
        };
        let index = found.header.index;
        let subnet = Ipv4Net::new(node_ip, found.header.prefix_len)
            .ok_or_else(|| failed("address prefix", found.header.prefix_len))?;
        let mtu = self
            .link_by_index(index)
            .await?
            .and_then(|link| {
                link.attributes.iter().find_map(|a| match a {
                    LinkAttribute::Mtu(mtu) => Some(*mtu),
                    _ => None,
                })
            })
            .unwrap_or(1500);
        Ok(Some(Underlay { index, subnet, mtu }))
    }

    /// Makes the kernel match `plan`: the VXLAN device, then its FDB and neighbour entries,
    /// then the routes (so a route never points at a VTEP the kernel cannot resolve yet).
    pub async fn apply(&self, plan: &Plan, underlay: Option<Underlay>) -> Result<(), RuntimeError> {
        let vxlan = match &plan.vxlan {
            Some(device) => Some(self.ensure_vxlan(device, underlay).await?),
            None => {
                self.remove_vxlan().await?;
                None
            }
        };
        if let Some(index) = vxlan {
            self.sync_fdb(index, &plan.fdb).await?;
            self.sync_neighbours(index, &plan.neighbours).await?;
        }
        self.sync_routes(&plan.routes, vxlan).await
    }

    async fn link_by_name(&self, name: &str) -> Result<Option<LinkMessage>, RuntimeError> {
        let request = self.handle.link().get().match_name(name.to_string());
        match request.execute().try_next().await {
            Ok(link) => Ok(link),
            Err(e) if errno(&e) == ENODEV => Ok(None),
            Err(e) => Err(failed(format!("looking up {name}"), e)),
        }
    }

    async fn link_by_index(&self, index: u32) -> Result<Option<LinkMessage>, RuntimeError> {
        match self
            .handle
            .link()
            .get()
            .match_index(index)
            .execute()
            .try_next()
            .await
        {
            Ok(link) => Ok(link),
            Err(e) if errno(&e) == ENODEV => Ok(None),
            Err(e) => Err(failed(format!("looking up link {index}"), e)),
        }
    }

    /// Creates the VXLAN device (or re-creates one whose settings differ), up, with this node's
    /// VTEP address; returns its index.
    async fn ensure_vxlan(
        &self,
        device: &VxlanDevice,
        underlay: Option<Underlay>,
    ) -> Result<u32, RuntimeError> {
        let existing = self.link_by_name(VXLAN_DEVICE).await?;
        let index = match existing {
            Some(link) if vxlan_matches(&link, device, underlay) => link.header.index,
            other => {
                if let Some(link) = other {
                    tracing::info!(
                        device = VXLAN_DEVICE,
                        "re-creating the VXLAN device (its settings changed)"
                    );
                    self.delete_link(link.header.index).await?;
                }
                let mut builder = LinkVxlan::new(VXLAN_DEVICE, device.vni)
                    .port(device.port)
                    .local(device.local)
                    .learning(false)
                    .address(device.mac.to_vec());
                if let Some(underlay) = underlay {
                    // Bound to the node IP's interface; its MTU leaves room for the headers.
                    builder = builder
                        .dev(underlay.index)
                        .mtu(underlay.mtu.saturating_sub(VXLAN_OVERHEAD));
                }
                self.handle
                    .link()
                    .add(builder.build())
                    .execute()
                    .await
                    .map_err(|e| failed(format!("creating {VXLAN_DEVICE}"), e))?;
                let link = self.link_by_name(VXLAN_DEVICE).await?.ok_or_else(|| {
                    failed(format!("creating {VXLAN_DEVICE}"), "gone right after")
                })?;
                tracing::info!(device = VXLAN_DEVICE, vni = device.vni, port = device.port, local = %device.local, "VXLAN device created");
                link.header.index
            }
        };
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|e| failed(format!("setting {VXLAN_DEVICE} up"), e))?;
        self.ensure_only_address(index, device.address).await?;
        // Checked on every pass, not only at creation: the device outlives the agent, and
        // the rules may have been flushed meanwhile.
        crate::network::allow_device_forwarding(VXLAN_DEVICE).await?;
        Ok(index)
    }

    async fn delete_link(&self, index: u32) -> Result<(), RuntimeError> {
        match self.handle.link().del(index).execute().await {
            Err(e) if errno(&e) != ENODEV => Err(failed("deleting a link", e)),
            _ => Ok(()),
        }
    }

    /// Removes the VXLAN device (its routes, neighbours and FDB go with it).
    async fn remove_vxlan(&self) -> Result<(), RuntimeError> {
        if let Some(link) = self.link_by_name(VXLAN_DEVICE).await? {
            self.delete_link(link.header.index).await?;
            crate::network::remove_device_forwarding(VXLAN_DEVICE).await;
            tracing::info!(
                device = VXLAN_DEVICE,
                "VXLAN device removed (no peer needs it)"
            );
        }
        Ok(())
    }

    /// The device holds `address/32` and nothing else (the node's pod CIDR may have changed).
    async fn ensure_only_address(&self, index: u32, address: Ipv4Addr) -> Result<(), RuntimeError> {
        let held: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(|e| failed(format!("listing {VXLAN_DEVICE}'s addresses"), e))?;
        let mut present = false;
        for message in held {
            let ip = message.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            });
            if ip == Some(address) && message.header.prefix_len == 32 {
                present = true;
            } else if ip.is_some() {
                self.handle
                    .address()
                    .del(message)
                    .execute()
                    .await
                    .map_err(|e| failed(format!("removing an old address of {VXLAN_DEVICE}"), e))?;
            }
        }
        if !present {
            self.handle
                .address()
                .add(index, IpAddr::V4(address), 32)
                .execute()
                .await
                .map_err(|e| failed(format!("adding {address}/32 to {VXLAN_DEVICE}"), e))?;
        }
        Ok(())
    }

    /// The neighbour table's entries of `family` on link `index` that `keep` accepts (the FDB
    /// is the bridge family's table, ARP the IPv4 one).
    async fn neighbours_on(
        &self,
        family: AddressFamily,
        index: u32,
        keep: impl Fn(&NeighbourMessage) -> bool,
    ) -> Result<Vec<NeighbourMessage>, rtnetlink::Error> {
        self.handle
            .neighbours()
            .get()
            .set_address_family(family)
            .execute()
            .try_filter(|m| futures::future::ready(m.header.ifindex == index && keep(m)))
            .try_collect()
            .await
    }

    async fn sync_fdb(&self, index: u32, desired: &[FdbEntry]) -> Result<(), RuntimeError> {
        let existing = self
            .neighbours_on(AddressFamily::Bridge, index, |_| true)
            .await
            .map_err(|e| failed("listing FDB entries", e))?;
        for message in existing {
            let entry = match (mac_of(&message), ipv4_of(&message)) {
                (Some(mac), Some(dst)) => Some(FdbEntry { mac, dst }),
                _ => None,
            };
            if !entry.is_some_and(|e| desired.contains(&e)) {
                self.delete_neighbour(message, "an FDB entry").await?;
            }
        }
        for entry in desired {
            self.handle
                .neighbours()
                .add_bridge(index, &entry.mac)
                .destination(IpAddr::V4(entry.dst))
                .flags(NeighbourFlags::Own)
                .state(NeighbourState::Permanent)
                .replace()
                .execute()
                .await
                .map_err(|e| {
                    failed(
                        format!("FDB entry {} → {}", mac_text(&entry.mac), entry.dst),
                        e,
                    )
                })?;
        }
        Ok(())
    }

    async fn sync_neighbours(&self, index: u32, desired: &[Neighbour]) -> Result<(), RuntimeError> {
        let existing = self
            .neighbours_on(AddressFamily::Inet, index, |m| {
                m.header.state == NeighbourState::Permanent
            })
            .await
            .map_err(|e| failed("listing neighbours", e))?;
        for message in existing {
            let entry = match (ipv4_of(&message), mac_of(&message)) {
                (Some(ip), Some(mac)) => Some(Neighbour { ip, mac }),
                _ => None,
            };
            if !entry.is_some_and(|e| desired.contains(&e)) {
                self.delete_neighbour(message, "a neighbour entry").await?;
            }
        }
        for entry in desired {
            self.handle
                .neighbours()
                .add(index, IpAddr::V4(entry.ip))
                .link_layer_address(&entry.mac)
                .state(NeighbourState::Permanent)
                .replace()
                .execute()
                .await
                .map_err(|e| {
                    failed(
                        format!("neighbour {} → {}", entry.ip, mac_text(&entry.mac)),
                        e,
                    )
                })?;
        }
        Ok(())
    }

    async fn delete_neighbour(
        &self,
        message: NeighbourMessage,
        what: &str,
    ) -> Result<(), RuntimeError> {
        match self.handle.neighbours().del(message).execute().await {
            Err(e) if errno(&e) != ENOENT => Err(failed(format!("removing {what}"), e)),
            _ => Ok(()),
        }
    }

    /// Removes skiff's routes that are not in `desired` or point elsewhere, then adds (replaces)
    /// the missing ones.
    async fn sync_routes(&self, desired: &[Route], vxlan: Option<u32>) -> Result<(), RuntimeError> {
        let ours: Vec<RouteMessage> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_filter(|m| {
                futures::future::ready(
                    m.header.protocol == RouteProtocol::Other(ROUTE_PROTOCOL)
                        && m.header.table == RouteHeader::RT_TABLE_MAIN,
                )
            })
            .try_collect()
            .await
            .map_err(|e| failed("listing routes", e))?;
        let mut present: BTreeMap<Ipv4Net, Route> = BTreeMap::new();
        for message in ours {
            let route = route_of(&message, vxlan);
            match route.filter(|r| desired.contains(r)) {
                Some(route) => {
                    present.insert(route.dst, route);
                }
                None => match self.handle.route().del(message).execute().await {
                    Err(e) if errno(&e) != ESRCH => return Err(failed("removing a route", e)),
                    _ => {
                        if let Some(route) = route {
                            tracing::info!(dst = %route.dst, "pod network: route removed");
                        }
                    }
                },
            }
        }
        for route in desired {
            if present.get(&route.dst) == Some(route) {
                continue;
            }
            let builder = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(route.dst.addr, route.dst.prefix)
                .protocol(RouteProtocol::Other(ROUTE_PROTOCOL));
            let message = match (route.via, vxlan) {
                (NextHop::Gateway(gateway), _) => builder.gateway(gateway).build(),
                (NextHop::Vtep(vtep), Some(index)) => builder
                    .gateway(vtep)
                    .output_interface(index)
                    .onlink()
                    .build(),
                (NextHop::Vtep(_), None) => continue,
            };
            self.handle
                .route()
                .add(message)
                .replace()
                .execute()
                .await
                .map_err(|e| failed(format!("adding the route to {}", route.dst), e))?;
            tracing::info!(dst = %route.dst, via = ?route.via, "pod network: route added");
        }
        Ok(())
    }
}

/// Whether an existing VXLAN device has the settings the plan wants.
fn vxlan_matches(link: &LinkMessage, device: &VxlanDevice, underlay: Option<Underlay>) -> bool {
    let mac = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(mac) => Some(mac.as_slice()),
        _ => None,
    });
    let info: &[InfoVxlan] = link
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
                LinkInfo::Data(InfoData::Vxlan(info)) => Some(info.as_slice()),
                _ => None,
            }),
            _ => None,
        })
        .unwrap_or_default();
    let has = |wanted: &InfoVxlan| info.contains(wanted);
    mac == Some(device.mac.as_slice())
        && has(&InfoVxlan::Id(device.vni))
        && has(&InfoVxlan::Port(device.port))
        && has(&InfoVxlan::Local(device.local))
        && has(&InfoVxlan::Learning(false))
        && underlay.is_none_or(|u| has(&InfoVxlan::Link(u.index)))
}

/// A listed route as the plan would have written it (`None` for one it could not have).
fn route_of(message: &RouteMessage, vxlan: Option<u32>) -> Option<Route> {
    let mut dst = None;
    let mut gateway = None;
    let mut oif = None;
    for attribute in &message.attributes {
        match attribute {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = Some(*ip),
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gateway = Some(*ip),
            RouteAttribute::Oif(index) => oif = Some(*index),
            _ => {}
        }
    }
    let dst = Ipv4Net::new(dst?, message.header.destination_prefix_length)?;
    let gateway = gateway?;
    let through_vxlan = vxlan.is_some() && oif == vxlan;
    let via = if through_vxlan && message.header.flags.contains(RouteFlags::Onlink) {
        NextHop::Vtep(gateway)
    } else if through_vxlan {
        return None;
    } else {
        NextHop::Gateway(gateway)
    };
    Some(Route { dst, via })
}

fn mac_of(message: &NeighbourMessage) -> Option<[u8; 6]> {
    message.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(mac) => mac.as_slice().try_into().ok(),
        _ => None,
    })
}

fn ipv4_of(message: &NeighbourMessage) -> Option<Ipv4Addr> {
    message.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
        _ => None,
    })
}

fn mac_text(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Turns on IPv4 forwarding (a fresh network namespace has it off; without it a node routes
/// nothing between its pods and its peers).
pub fn enable_ip_forwarding() -> Result<(), RuntimeError> {
    const PATH: &str = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(PATH).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    std::fs::write(PATH, "1").map_err(|e| failed(format!("writing 1 to {PATH}"), e))?;
    tracing::info!("IPv4 forwarding turned on");
    Ok(())
}
