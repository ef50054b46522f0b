//! The Service registry's allocators: a virtual IP from the service CIDR for every ClusterIP,
//! NodePort and LoadBalancer service, and a node port from 30000–32767 for every port of a
//! NodePort or LoadBalancer service.
//!
//! What is in use is read from the services in the store, under a lock held from that read
//! until the write is committed, so two creates through this member never pick the same
//! address. Two creates racing through two *different* members could, so every address a write
//! takes is also *claimed* in the same atomic store proposal, as Kubernetes does with its
//! IPAddress objects: a claim is a small object keyed by the address
//! (`addressclaims.skiff.io//ip-10.43.0.7`, `.../nodeport-30080-tcp`), created if new, or taken
//! over from a deleted service with a compare-and-swap on its revision. Of two writes claiming
//! one address, the store applies one; the other's whole proposal fails, and it allocates again
//! from a fresh read ([`claims`]). Claims are never deleted: one left by a deleted service is
//! taken over by the next service given that address.
//!
//! ```text
//! create/update of a Service ─► admission (defaults, validation)
//!   ─► lock ─► read every Service ─► keep what the old object had ─► allocate what is missing
//!   ─► check what the user chose is in range and free
//!   ─► write the Service + claim each new address, atomically ─► unlock
//!        └─ a claim lost to another member: read again and allocate again
//! ```
use std::collections::HashSet;
use std::net::Ipv4Addr;

use serde_json::{json, Value};
use skiff_api::resources::ResourceInfo;
use skiff_api::status::{go_quote, ApiError, Cause};
use skiff_store::{object_key, revision_of, Op};

pub use crate::registry::ClaimLost;
use tokio::sync::Mutex;

/// Kubernetes' default `--service-node-port-range`.
pub const NODE_PORT_RANGE: (u16, u16) = (30000, 32767);
/// k3s's default `--service-cidr`.
pub const DEFAULT_SERVICE_CIDR: &str = "10.43.0.0/16";

/// The service CIDR and the lock every allocation holds.
pub struct ServiceNetwork {
    base: u32,
    prefix: u8,
    cidr: String,
    lock: Mutex<()>,
}

impl ServiceNetwork {
    /// Parses `10.43.0.0/16`. The block needs room for at least a few services.
    pub fn parse(cidr: &str) -> Result<ServiceNetwork, String> {
        let (ip, prefix) = cidr
            .split_once('/')
            .ok_or_else(|| format!("service CIDR {cidr:?}: expected ADDRESS/PREFIX"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("service CIDR {cidr:?}: {ip:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (8..=28).contains(p))
            .ok_or_else(|| format!("service CIDR {cidr:?}: the prefix must be 8 to 28"))?;
        let mask = u32::MAX << (32 - prefix);
        Ok(ServiceNetwork {
            base: u32::from(ip) & mask,
            prefix,
            cidr: format!("{}/{prefix}", Ipv4Addr::from(u32::from(ip) & mask)),
            lock: Mutex::new(()),
        })
    }

    /// The block, normalised (`10.43.0.0/16`).
    pub fn cidr(&self) -> &str {
        &self.cidr
    }

    /// Held from reading what is in use until the write that uses a new address is committed.
    pub fn allocation_lock(&self) -> &Mutex<()> {
        &self.lock
    }

    /// The first host of the block, the `kubernetes` Service's address (`10.43.0.1`).
    pub fn kubernetes_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base + 1)
    }

    fn size(&self) -> u32 {
        1u32 << (32 - self.prefix)
    }

    /// Usable addresses: not the network address, not the broadcast address, and not the first
    /// host (Kubernetes gives `.1` to the `kubernetes` service).
    fn contains_usable(&self, ip: Ipv4Addr) -> bool {
        let offset = u32::from(ip).wrapping_sub(self.base);
        offset >= 2 && offset < self.size() - 1
    }
}

impl Default for ServiceNetwork {
    fn default() -> Self {
        ServiceNetwork::parse(DEFAULT_SERVICE_CIDR).expect("the default service CIDR parses")
    }
}

/// What the other services already hold.
#[derive(Debug, Default)]
pub struct InUse {
    ips: HashSet<Ipv4Addr>,
    node_ports: HashSet<(u16, String)>,
    /// Where the search for a free ClusterIP starts, as an offset into the block: 0 (the
    /// lowest free address first) unless [`InUse::scatter`] moved it.
    ip_start: u32,
}

impl InUse {
    /// Everything held by `services`, except the object at `skip` (the one being updated).
    pub fn from_services<'a>(
        services: impl IntoIterator<Item = &'a Value>,
        skip: Option<(&str, &str)>,
    ) -> InUse {
        let mut used = InUse::default();
        for svc in services {
            let ns = svc.pointer("/metadata/namespace").and_then(Value::as_str);
            let name = svc.pointer("/metadata/name").and_then(Value::as_str);
            if let (Some((skip_ns, skip_name)), Some(ns), Some(name)) = (skip, ns, name) {
                if ns == skip_ns && name == skip_name {
                    continue;
                }
            }
            if let Some(ip) = text(svc, "/spec/clusterIP").and_then(|ip| ip.parse().ok()) {
                used.ips.insert(ip);
            }
            for port in ports(svc) {
                if let Some(node_port) = node_port_of(port) {
                    used.node_ports.insert((node_port, protocol_of(port)));
                }
            }
        }
        used
    }

    /// Makes the next ClusterIP come from a point of the block chosen by `seed`, not the lowest
    /// free one. For a write that lost its addresses to another member: both members would
    /// otherwise keep choosing the same lowest free address (Kubernetes picks at random always).
    pub fn scatter(&mut self, seed: &str) {
        self.ip_start = seed
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
    }
}

/// Fills in `spec.clusterIP(s)` and node ports of `object` (a Service after admission),
/// keeping what `old` (the stored object, on update) already had, and checks that addresses
/// the user chose are valid and free.
pub fn allocate(
    network: &ServiceNetwork,
    info: &ResourceInfo,
    object: &mut Value,
    old: Option<&Value>,
    used: &mut InUse,
) -> Result<(), ApiError> {
    let name = text(object, "/metadata/name")
        .unwrap_or_default()
        .to_string();
    let service_type = text(object, "/spec/type")
        .unwrap_or("ClusterIP")
        .to_string();
    let mut causes = Vec::new();

    // An update that leaves the address out keeps the one it had (kubectl replace, a PUT of a
    // hand-written manifest): the address is the server's, not the client's.
    if let Some(old) = old {
        if text(object, "/spec/clusterIP").unwrap_or("").is_empty() {
            if let Some(ip) = old.pointer("/spec/clusterIP").cloned() {
                object["spec"]["clusterIP"] = ip;
            }
        }
        if matches!(service_type.as_str(), "NodePort" | "LoadBalancer") {
            keep_node_ports(object, old);
        }
    }

    if service_type != "ExternalName" {
        match text(object, "/spec/clusterIP").unwrap_or("") {
            "None" => {}
            "" => match free_ip(network, used) {
                Some(ip) => {
                    object["spec"]["clusterIP"] = json!(ip.to_string());
                    used.ips.insert(ip);
                }
                None => {
                    return Err(ApiError::Internal(format!(
                        "failed to allocate a serviceIP: range is full ({})",
                        network.cidr
                    )))
                }
            },
            chosen => {
                let unchanged = old.and_then(|o| text(o, "/spec/clusterIP")) == Some(chosen);
                match chosen.parse::<Ipv4Addr>() {
                    _ if unchanged => {}
                    Ok(ip) if !network.contains_usable(ip) => causes.push(Cause::invalid(
                        "spec.clusterIPs",
                        &format!("[]string{{{}}}", go_quote(chosen)),
                        &format!(
                            "failed to allocate IP {chosen}: provided IP is not in the valid range. The range of valid IPs is {}",
                            network.cidr
                        ),
                    )),
                    Ok(ip) if used.ips.contains(&ip) => causes.push(Cause::invalid(
                        "spec.clusterIPs",
                        &format!("[]string{{{}}}", go_quote(chosen)),
                        &format!("failed to allocate IP {chosen}: provided IP is already allocated"),
                    )),
                    Ok(ip) => {
                        used.ips.insert(ip);
                    }
                    // Admission already rejected what does not parse; IPv6 is not served.
                    Err(_) => causes.push(Cause::invalid(
                        "spec.clusterIP",
                        &go_quote(chosen),
                        "skiff's service network is IPv4 only",
                    )),
                }
            }
        }
        let ip = object["spec"]["clusterIP"].clone();
        object["spec"]["clusterIPs"] = json!([ip]);
        if ip != json!("None") {
            object["spec"]["ipFamilies"] = json!(["IPv4"]);
            object["spec"]["ipFamilyPolicy"] = json!("SingleStack");
        }
    }

    if matches!(service_type.as_str(), "NodePort" | "LoadBalancer") {
        let old_ports: HashSet<(u16, String)> = old
            .map(|o| {
                ports(o)
                    .filter_map(|p| node_port_of(p).map(|n| (n, protocol_of(p))))
                    .collect()
            })
            .unwrap_or_default();
        let count = object
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        for i in 0..count {
            let port = &object["spec"]["ports"][i];
            let protocol = protocol_of(port);
            match node_port_of(port) {
                Some(chosen) if old_ports.contains(&(chosen, protocol.clone())) => {}
                Some(chosen) => {
                    if !used.node_ports.insert((chosen, protocol)) {
                        causes.push(Cause::invalid(
                            format!("spec.ports[{i}].nodePort"),
                            &chosen.to_string(),
                            "provided port is already allocated",
                        ));
                    }
                }
                None => match free_node_port(&name, i, &protocol, used) {
                    Some(n) => {
                        object["spec"]["ports"][i]["nodePort"] = json!(n);
                        used.node_ports.insert((n, protocol));
                    }
                    None => {
                        return Err(ApiError::Internal(
                            "failed to allocate a nodePort: range is full".into(),
                        ))
                    }
                },
            }
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(info, &name, causes))
    }
}

/// The store resource of address claims; not served by the API.
const CLAIMS: &str = "addressclaims.skiff.io";

/// The addresses a Service holds, as claim names: `ip-10.43.0.7`, `nodeport-30080-tcp`.
fn addresses(svc: &Value) -> HashSet<String> {
    let mut held = HashSet::new();
    if let Some(ip) = text(svc, "/spec/clusterIP").filter(|ip| ip.parse::<Ipv4Addr>().is_ok()) {
        held.insert(format!("ip-{ip}"));
    }
    for port in ports(svc) {
        if let Some(node_port) = node_port_of(port) {
            held.insert(format!(
                "nodeport-{node_port}-{}",
                protocol_of(port).to_ascii_lowercase()
            ));
        }
    }
    held
}

/// The store operations that claim every address `svc` holds and `old` (the stored object, on
/// update) did not, to go in the same atomic proposal as the write of `svc`. `get` reads the
/// store (after a read index, so a claim written through another member is seen).
///
/// A claim whose service still exists with that uid and still holds the address is live: this
/// write lost a race and gets [`ClaimLost`]. Any other existing claim is stale and is taken over
/// at its revision; a missing one is created.
pub fn claims(
    svc: &Value,
    old: Option<&Value>,
    get: impl Fn(&str) -> Option<std::sync::Arc<Value>>,
) -> Result<Vec<Op>, ClaimLost> {
    let kept = old.map(addresses).unwrap_or_default();
    let ns = text(svc, "/metadata/namespace").unwrap_or("");
    let name = text(svc, "/metadata/name").unwrap_or("");
    let uid = text(svc, "/metadata/uid").unwrap_or("");
    let mut wanted: Vec<String> = addresses(svc).difference(&kept).cloned().collect();
    wanted.sort();
    let mut ops = Vec::new();
    for address in wanted {
        let key = object_key(CLAIMS, "", &address);
        let claim = json!({
            "apiVersion": "skiff.io/v1",
            "kind": "AddressClaim",
            "metadata": {"name": address},
            "service": {"namespace": ns, "name": name, "uid": uid},
        });
        match get(&key) {
            None => ops.push(Op::Create { key, object: claim }),
            Some(existing) => {
                let holder = |field: &str| {
                    existing
                        .pointer(&format!("/service/{field}"))
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string()
                };
                let live = get(&object_key(
                    "services",
                    &holder("namespace"),
                    &holder("name"),
                ))
                .filter(|s| text(s, "/metadata/uid") == Some(holder("uid").as_str()))
                .is_some_and(|s| addresses(&s).contains(&address));
                if live && holder("uid") != uid {
                    return Err(ClaimLost);
                }
                ops.push(Op::Update {
                    key,
                    object: claim,
                    expected_revision: revision_of(&existing),
                });
            }
        }
    }
    Ok(ops)
}

/// A port left without `nodePort` keeps the one the same port (number and protocol) had.
fn keep_node_ports(object: &mut Value, old: &Value) {
    let Some(new_ports) = object
        .pointer_mut("/spec/ports")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for port in new_ports.iter_mut() {
        if node_port_of(port).is_some() {
            continue;
        }
        let same = ports(old)
            .find(|p| p.get("port") == port.get("port") && protocol_of(p) == protocol_of(port));
        if let Some(n) = same.and_then(node_port_of) {
            port["nodePort"] = json!(n);
        }
    }
}

/// The lowest free address. Kubernetes picks at random; the lowest keeps addresses short
/// and predictable for someone reading `kubectl get svc` on a small cluster.
fn free_ip(network: &ServiceNetwork, used: &InUse) -> Option<Ipv4Addr> {
    // Usable offsets are 2..size-1; the search wraps around from the start point.
    let usable = network.size() - 3;
    (0..usable)
        .map(|k| 2 + (used.ip_start.wrapping_add(k)) % usable)
        .map(|offset| Ipv4Addr::from(network.base + offset))
        .find(|ip| !used.ips.contains(ip))
}

/// A free node port, starting from a point that depends on the service so that ports do not
/// all crowd at 30000 (Kubernetes picks at random).
fn free_node_port(name: &str, index: usize, protocol: &str, used: &InUse) -> Option<u16> {
    let (low, high) = NODE_PORT_RANGE;
    let span = u32::from(high - low) + 1;
    let seed = name.bytes().fold(index as u32, |h, b| {
        h.wrapping_mul(31).wrapping_add(b.into())
    });
    (0..span)
        .map(|k| low + ((seed.wrapping_add(k)) % span) as u16)
        .find(|p| !used.node_ports.contains(&(*p, protocol.to_string())))
}

fn text<'a>(object: &'a Value, pointer: &str) -> Option<&'a str> {
    object.pointer(pointer).and_then(Value::as_str)
}

fn ports(svc: &Value) -> impl Iterator<Item = &Value> {
    svc.pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn node_port_of(port: &Value) -> Option<u16> {
    port.get("nodePort")
        .and_then(Value::as_u64)
        .filter(|n| *n != 0)
        .and_then(|n| u16::try_from(n).ok())
}

fn protocol_of(port: &Value) -> String {
    port.get("protocol")
        .and_then(Value::as_str)
        .unwrap_or("TCP")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_api::resources;

    fn info() -> &'static ResourceInfo {
        resources::find("", "v1", "services").expect("services are served")
    }

    fn service(name: &str, spec: Value) -> Value {
        json!({"metadata": {"name": name, "namespace": "default"}, "spec": spec})
    }

    fn allocated(network: &ServiceNetwork, existing: &[Value], mut svc: Value) -> Value {
        let mut used = InUse::from_services(existing, None);
        allocate(network, info(), &mut svc, None, &mut used).expect("allocates");
        svc
    }

    #[test]
    fn cluster_ips_start_after_the_reserved_first_host_and_skip_used_ones() {
        let net = ServiceNetwork::parse("10.96.0.0/24").expect("parses");
        let a = allocated(&net, &[], service("a", json!({"type": "ClusterIP"})));
        assert_eq!(a["spec"]["clusterIP"], "10.96.0.2");
        assert_eq!(a["spec"]["clusterIPs"], json!(["10.96.0.2"]));
        assert_eq!(a["spec"]["ipFamilies"], json!(["IPv4"]));
        let b = allocated(&net, &[a], service("b", json!({"type": "ClusterIP"})));
        assert_eq!(b["spec"]["clusterIP"], "10.96.0.3");
    }

    #[test]
    fn a_scattered_search_stays_in_the_block_and_skips_used_addresses() {
        let net = ServiceNetwork::parse("10.96.0.0/28").expect("parses"); // usable: .2-.14
        let taken: Vec<Value> = (2..=13)
            .map(|n| {
                service(
                    &format!("s{n}"),
                    json!({"clusterIP": format!("10.96.0.{n}")}),
                )
            })
            .collect();
        for seed in ["a", "b", "some/longer/seed", ""] {
            let mut used = InUse::from_services(&taken, None);
            used.scatter(seed);
            assert_eq!(
                free_ip(&net, &used),
                Some(Ipv4Addr::new(10, 96, 0, 14)),
                "{seed}"
            );
        }
        let mut used = InUse::default();
        let found: HashSet<Ipv4Addr> = ["x", "y", "z", "w", "v", "u"]
            .iter()
            .filter_map(|seed| {
                used.scatter(seed);
                free_ip(&net, &used)
            })
            .collect();
        assert!(found.iter().all(|ip| net.contains_usable(*ip)), "{found:?}");
    }

    #[test]
    fn headless_and_external_name_services_get_no_address() {
        let net = ServiceNetwork::default();
        let headless = allocated(&net, &[], service("h", json!({"clusterIP": "None"})));
        assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));
        let ext = allocated(
            &net,
            &[],
            service(
                "e",
                json!({"type": "ExternalName", "externalName": "example.org"}),
            ),
        );
        assert!(ext["spec"].get("clusterIP").is_none());
    }

    #[test]
    fn a_chosen_address_must_be_in_range_and_free() {
        let net = ServiceNetwork::parse("10.43.0.0/16").expect("parses");
        let taken = service("a", json!({"clusterIP": "10.43.0.10"}));
        let cases = [
            ("10.43.0.10", Some("provided IP is already allocated")),
            (
                "10.44.0.10",
                Some(
                    "provided IP is not in the valid range. The range of valid IPs is 10.43.0.0/16",
                ),
            ),
            ("10.43.0.0", Some("not in the valid range")),
            ("10.43.255.255", Some("not in the valid range")),
            ("10.43.0.11", None),
        ];
        for (ip, expected) in cases {
            let mut svc = service("b", json!({"clusterIP": ip}));
            let mut used = InUse::from_services([&taken], None);
            let result = allocate(&net, info(), &mut svc, None, &mut used);
            match (expected, result) {
                (None, Ok(())) => {}
                (Some(text), Err(e)) => assert!(e.to_string().contains(text), "{ip}: {e}"),
                (expected, result) => panic!("{ip}: expected {expected:?}, got {result:?}"),
            }
        }
    }

    #[test]
    fn node_ports_are_allocated_kept_on_update_and_conflicts_are_rejected() {
        let net = ServiceNetwork::default();
        let spec = json!({"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}, {"name": "b", "port": 81, "nodePort": 30081, "protocol": "TCP"}]});
        let a = allocated(&net, &[], service("a", spec.clone()));
        let given = a["spec"]["ports"][0]["nodePort"]
            .as_u64()
            .expect("allocated");
        assert!((30000..=32767).contains(&given) && given != 30081);
        assert_eq!(a["spec"]["ports"][1]["nodePort"], 30081);

        // An update without node ports keeps them, and is not a conflict with itself.
        let mut update = service("a", spec.clone());
        update["spec"]["ports"][1]
            .as_object_mut()
            .expect("port")
            .remove("nodePort");
        let mut used = InUse::from_services([&a], Some(("default", "a")));
        allocate(&net, info(), &mut update, Some(&a), &mut used).expect("update");
        assert_eq!(update["spec"]["ports"][0]["nodePort"], json!(given));
        assert_eq!(update["spec"]["ports"][1]["nodePort"], 30081);
        assert_eq!(update["spec"]["clusterIP"], a["spec"]["clusterIP"]);

        // Another service asking for 30081/TCP is refused, naming the field.
        let mut other = service(
            "c",
            json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30081, "protocol": "TCP"}]}),
        );
        let mut used = InUse::from_services([&a], None);
        let err = allocate(&net, info(), &mut other, None, &mut used).expect_err("conflict");
        assert!(
            err.to_string().contains(
                "spec.ports[0].nodePort: Invalid value: 30081: provided port is already allocated"
            ),
            "{err}"
        );
        // The same number over UDP is free.
        let mut udp = service(
            "d",
            json!({"type": "NodePort", "ports": [{"port": 53, "nodePort": 30081, "protocol": "UDP"}]}),
        );
        let mut used = InUse::from_services([&a], None);
        allocate(&net, info(), &mut udp, None, &mut used).expect("udp is another port");
    }

    #[test]
    fn bad_cidrs_are_refused_with_the_reason() {
        for (cidr, text) in [
            ("10.43.0.0", "ADDRESS/PREFIX"),
            ("fd00::/64", "not an IPv4"),
            ("10.43.0.0/30", "8 to 28"),
        ] {
            let err = ServiceNetwork::parse(cidr).err().expect("refused");
            assert!(err.contains(text), "{cidr}: {err}");
        }
    }

    fn with_uid(mut svc: Value, uid: &str) -> Value {
        svc["metadata"]["uid"] = json!(uid);
        svc
    }

    fn kinds(ops: &[Op]) -> Vec<(String, &'static str)> {
        ops.iter()
            .map(|op| {
                let kind = match op {
                    Op::Create { .. } => "create",
                    Op::Update { .. } => "take over",
                    Op::Delete { .. } => "delete",
                };
                (op.key().to_string(), kind)
            })
            .collect()
    }

    #[test]
    fn new_addresses_are_claimed_stale_claims_taken_over_and_live_ones_lost() {
        let svc = with_uid(
            service(
                "web",
                json!({"type": "NodePort", "clusterIP": "10.43.0.7",
                       "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}]}),
            ),
            "u-web",
        );
        let store: std::collections::HashMap<String, std::sync::Arc<Value>> = Default::default();
        let ops = claims(&svc, None, |k| store.get(k).cloned()).expect("nothing claimed yet");
        assert_eq!(
            kinds(&ops),
            vec![
                ("addressclaims.skiff.io//ip-10.43.0.7".to_string(), "create"),
                (
                    "addressclaims.skiff.io//nodeport-30080-tcp".to_string(),
                    "create"
                ),
            ]
        );

        // An update that keeps its addresses claims nothing new.
        let ops = claims(&svc, Some(&svc), |k| store.get(k).cloned()).expect("kept");
        assert!(ops.is_empty(), "{ops:?}");

        // The IP's claim is left by a deleted service: taken over at its revision.
        let mut store = store;
        let claim = |holder: &str, uid: &str| {
            std::sync::Arc::new(json!({
                "metadata": {"name": "ip-10.43.0.7", "resourceVersion": "12"},
                "service": {"namespace": "default", "name": holder, "uid": uid},
            }))
        };
        store.insert(
            "addressclaims.skiff.io//ip-10.43.0.7".into(),
            claim("old", "u-old"),
        );
        let ops = claims(&svc, None, |k| store.get(k).cloned()).expect("stale claim");
        assert!(matches!(
            &ops[0],
            Op::Update {
                expected_revision: Some(12),
                ..
            }
        ));

        // A service that exists but has moved to another address no longer holds the claim...
        let moved = with_uid(service("old", json!({"clusterIP": "10.43.0.9"})), "u-old");
        store.insert("services/default/old".into(), std::sync::Arc::new(moved));
        assert!(claims(&svc, None, |k| store.get(k).cloned()).is_ok());

        // ...but one that still holds it means a concurrent write won the address.
        let holder = with_uid(service("old", json!({"clusterIP": "10.43.0.7"})), "u-old");
        store.insert("services/default/old".into(), std::sync::Arc::new(holder));
        assert!(claims(&svc, None, |k| store.get(k).cloned()).is_err());
    }
}
