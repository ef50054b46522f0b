//! [`DnsTable`]: the names the node's DNS server answers for, built from Services and
//! EndpointSlices (pure: no sockets, no clock).
//!
//! Every record lives under a lower-case, fully qualified name. A name that has records also
//! makes all its parents inside the cluster domain exist (`svc.cluster.local.`,
//! `_tcp.web.default.svc.cluster.local.`), so that asking for them is NOERROR without answers
//! rather than NXDOMAIN, as the DNS requires of "empty non-terminals".
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::service_view::Snapshot;

/// Seconds clients may cache an answer (and a negative answer): short, so that changes to
/// Services and endpoints show up quickly.
pub const TTL: u32 = 5;
/// The schema version the specification asks to publish at `dns-version.<domain>`.
const SCHEMA_VERSION: &str = "1.1.0";

/// What the DNS server answers from, rebuilt whenever Services or EndpointSlices change.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct DnsTable {
    /// The cluster domain, lower case with the final dot (`cluster.local.`); empty only in the
    /// `Default` table, which exists before the first build and answers nothing.
    domain: String,
    /// Every name that exists → its records. Names inside the domain, plus the reverse
    /// (`in-addr.arpa.`) names of ClusterIPs and headless endpoints.
    names: BTreeMap<String, Vec<RData>>,
}

/// The answer to one question.
#[derive(Debug, PartialEq)]
pub enum Answer {
    Records(Vec<Record>),
    /// The name exists, not with this type: NOERROR without answers.
    NoData,
    /// A name in the cluster domain that does not exist.
    NxDomain,
    /// Not a cluster name: ask the node's resolvers.
    Forward,
    /// The table has not been built yet: SERVFAIL, so that clients retry rather than cache.
    NotReady,
}

/// A ready endpoint of a headless service, as DNS names it.
struct Endpoint {
    /// Its hostname, or its IP with dashes (`10-42-0-8`).
    host: String,
    ip: Ipv4Addr,
    /// The ports its EndpointSlice lists, by (port name, protocol).
    ports: BTreeMap<(String, String), u16>,
}

impl DnsTable {
    /// The table for `cluster_domain` (`cluster.local`) from these Services and EndpointSlices.
    pub fn build(services: &[Service], slices: &[EndpointSlice], cluster_domain: &str) -> DnsTable {
        let mut table = DnsTable {
            domain: fqdn(cluster_domain),
            names: BTreeMap::new(),
        };
        let apex = table.domain.clone();
        if let (Ok(mname), Ok(rname)) = (
            Name::from_str(&format!("ns.dns.{apex}")),
            Name::from_str(&format!("hostmaster.{apex}")),
        ) {
            // Refresh, retry and expire only matter to secondaries, which there are none of;
            // the minimum is what negative answers are cached for.
            let soa = SOA::new(mname, rname, 1, 7200, 1800, 86400, TTL);
            table.add(&apex, RData::SOA(soa));
        }
        table.add(
            &format!("dns-version.{apex}"),
            RData::TXT(TXT::new(vec![SCHEMA_VERSION.to_string()])),
        );
        // The snapshot knows which slices belong to which service.
        let slices = Snapshot {
            slices: slices.to_vec(),
            ..Snapshot::default()
        };
        for svc in services {
            let (Some(ns), Some(name), Some(spec)) = (
                svc.metadata.namespace.as_deref(),
                svc.metadata.name.as_deref(),
                svc.spec.as_ref(),
            ) else {
                continue;
            };
            let service_name = format!("{name}.{ns}.svc.{apex}").to_lowercase();
            table.add_service(&service_name, spec, &ready_endpoints(&slices, svc, spec));
        }
        table
    }

    fn add_service(&mut self, service_name: &str, spec: &ServiceSpec, endpoints: &[Endpoint]) {
        if spec.type_.as_deref() == Some("ExternalName") {
            match spec
                .external_name
                .as_deref()
                .map(|n| Name::from_str(&fqdn(n)))
            {
                Some(Ok(target)) => self.add(service_name, RData::CNAME(CNAME(target))),
                _ => self.add_empty(service_name),
            }
            return;
        }
        let headless = spec.cluster_ip.as_deref() == Some("None");
        self.add_empty(service_name);
        if headless {
            for endpoint in endpoints {
                let host_name = format!("{}.{service_name}", endpoint.host);
                self.add(service_name, RData::A(A(endpoint.ip)));
                self.add(&host_name, RData::A(A(endpoint.ip)));
                self.add_ptr(IpAddr::V4(endpoint.ip), &host_name);
            }
        } else if let Some(ip) = spec.cluster_ip.as_deref().and_then(|ip| ip.parse().ok()) {
            self.add(service_name, address(ip));
            self.add_ptr(ip, service_name);
        }
        // A service whose ClusterIP is not allocated yet exists, without addresses.
        for port in spec.ports.iter().flatten() {
            let Some(port_name) = port.name.as_deref().filter(|n| !n.is_empty()) else {
                continue;
            };
            let protocol = port.protocol.clone().unwrap_or_else(|| "TCP".into());
            let srv_name = format!(
                "_{}._{}.{service_name}",
                port_name.to_lowercase(),
                protocol.to_lowercase()
            );
            let targets: Vec<(u16, String)> = if headless {
                let key = (port_name.to_string(), protocol);
                endpoints
                    .iter()
                    .filter_map(|e| {
                        Some((*e.ports.get(&key)?, format!("{}.{service_name}", e.host)))
                    })
                    .collect()
            } else {
                u16::try_from(port.port)
                    .map(|p| vec![(p, service_name.to_string())])
                    .unwrap_or_default()
            };
            self.add_empty(&srv_name);
            for (port, target) in targets {
                if let Ok(target) = Name::from_str(&target) {
                    self.add(&srv_name, RData::SRV(SRV::new(0, 100, port, target)));
                }
            }
        }
    }

    /// Makes `name` (lower case, fully qualified) exist, and its parents inside the domain.
    /// Reverse names live outside the domain: they get no parents.
    fn add_empty(&mut self, name: &str) {
        self.names.entry(name.to_string()).or_default();
        let mut name = name;
        while name != self.domain && self.in_domain(name) {
            let Some((_, parent)) = name.split_once('.') else {
                break;
            };
            name = parent;
            self.names.entry(name.to_string()).or_default();
        }
    }

    fn add(&mut self, name: &str, data: RData) {
        self.add_empty(name);
        let records = self.names.entry(name.to_string()).or_default();
        // The same endpoint may be listed by two slices while they are being rewritten.
        if !records.contains(&data) {
            records.push(data);
        }
    }

    fn add_ptr(&mut self, ip: IpAddr, target: &str) {
        if let Ok(target) = Name::from_str(target) {
            self.add(&fqdn(&Name::from(ip).to_ascii()), RData::PTR(PTR(target)));
        }
    }

    /// Whether `name` (lower case, fully qualified) is the cluster domain or inside it.
    fn in_domain(&self, name: &str) -> bool {
        name == self.domain || name.ends_with(&format!(".{}", self.domain))
    }

    /// The answer for `name` (any case, with or without the final dot) and `qtype`.
    pub fn lookup(&self, name: &str, qtype: RecordType) -> Answer {
        if self.domain.is_empty() {
            return Answer::NotReady;
        }
        let key = fqdn(name);
        let Some(data) = self.names.get(&key) else {
            return if self.in_domain(&key) {
                Answer::NxDomain
            } else {
                Answer::Forward
            };
        };
        // Answer with the name as asked: some resolvers check that the case comes back.
        let Ok(owner) = Name::from_ascii(fqdn_keep_case(name)) else {
            return Answer::NxDomain;
        };
        let records: Vec<Record> = data
            .iter()
            .filter(|d| {
                let found = d.record_type();
                // A CNAME answers every type: the client follows it.
                found == qtype || qtype == RecordType::ANY || found == RecordType::CNAME
            })
            .map(|d| Record::from_rdata(owner.clone(), TTL, d.clone()))
            .collect();
        if records.is_empty() {
            Answer::NoData
        } else {
            Answer::Records(records)
        }
    }

    /// The zone's SOA for the authority section of a negative answer about `name`, which lets
    /// resolvers cache "no such name" for [`TTL`] seconds; `None` outside the cluster domain.
    pub fn negative_authority(&self, name: &str) -> Option<Record> {
        if self.domain.is_empty() || !self.in_domain(&fqdn(name)) {
            return None;
        }
        let soa = self
            .names
            .get(&self.domain)?
            .iter()
            .find(|d| d.record_type() == RecordType::SOA)?;
        Some(Record::from_rdata(
            Name::from_str(&self.domain).ok()?,
            TTL,
            soa.clone(),
        ))
    }
}

/// The ready endpoints of `svc` (or all of them with `publishNotReadyAddresses`).
fn ready_endpoints(slices: &Snapshot, svc: &Service, spec: &ServiceSpec) -> Vec<Endpoint> {
    let mut endpoints = Vec::new();
    for slice in slices.slices_of(svc) {
        let ports: BTreeMap<(String, String), u16> = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                let key = (
                    p.name.clone().unwrap_or_default(),
                    p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                );
                Some((key, u16::try_from(p.port?).ok()?))
            })
            .collect();
        for endpoint in &slice.endpoints {
            // An endpoint without conditions is ready, as EndpointSlice documents.
            let ready = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(true);
            let Some(ip) = crate::service_view::endpoint_ipv4(endpoint) else {
                continue;
            };
            if ready || spec.publish_not_ready_addresses == Some(true) {
                let host = endpoint
                    .hostname
                    .clone()
                    .unwrap_or_else(|| ip.to_string().replace('.', "-"));
                endpoints.push(Endpoint {
                    host: host.to_lowercase(),
                    ip,
                    ports: ports.clone(),
                });
            }
        }
    }
    endpoints
}

fn address(ip: IpAddr) -> RData {
    match ip {
        IpAddr::V4(ip) => RData::A(A(ip)),
        IpAddr::V6(ip) => RData::AAAA(AAAA(ip)),
    }
}

/// `name` in lower case with exactly one final dot: the table's key.
fn fqdn(name: &str) -> String {
    fqdn_keep_case(name).to_lowercase()
}

fn fqdn_keep_case(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use serde_json::json;

    /// `web` (ClusterIP), `db` (headless, three endpoints of which one is not ready), `ext`
    /// (ExternalName) and `pending` (no ClusterIP yet).
    pub(crate) fn objects() -> (Vec<Service>, Vec<EndpointSlice>) {
        let services = serde_json::from_value(json!([
            {"metadata": {"name": "web", "namespace": "default"},
             "spec": {"clusterIP": "10.43.0.5", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}},
            {"metadata": {"name": "db", "namespace": "shop"},
             "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}},
            {"metadata": {"name": "ext", "namespace": "default"},
             "spec": {"type": "ExternalName", "externalName": "example.org"}},
            {"metadata": {"name": "pending", "namespace": "default"},
             "spec": {"ports": [{"port": 80}]}}
        ]))
        .expect("services");
        let slices = serde_json::from_value(json!([
            {"metadata": {"name": "db-1", "namespace": "shop", "labels": {"kubernetes.io/service-name": "db"}},
             "addressType": "IPv4", "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
             "endpoints": [
                {"addresses": ["10.42.0.7"], "conditions": {"ready": true}, "hostname": "db-0"},
                {"addresses": ["10.42.0.8"], "conditions": {"ready": true}},
                {"addresses": ["10.42.0.9"], "conditions": {"ready": false}}
             ]},
            // A slice of another namespace's `db` must not leak into shop's.
            {"metadata": {"name": "db-x", "namespace": "other", "labels": {"kubernetes.io/service-name": "db"}},
             "addressType": "IPv4", "endpoints": [{"addresses": ["10.42.9.9"]}]}
        ]))
        .expect("slices");
        (services, slices)
    }

    fn text(answer: &Answer) -> Vec<String> {
        match answer {
            Answer::Records(records) => records.iter().map(|r| r.data.to_string()).collect(),
            other => vec![format!("{other:?}")],
        }
    }

    #[test]
    fn lookups_follow_the_kubernetes_dns_specification() {
        let (services, slices) = objects();
        let table = DnsTable::build(&services, &slices, "cluster.local");
        use RecordType::{A, AAAA, ANY, PTR, SRV, TXT};
        #[rustfmt::skip]
        let cases: &[(&str, RecordType, &[&str])] = &[
            // ClusterIP service: its address, whatever the case or final dot.
            ("web.default.svc.cluster.local.", A, &["10.43.0.5"]),
            ("WEB.Default.SVC.cluster.local", A, &["10.43.0.5"]),
            // Headless: the ready endpoints, and each one by hostname or dashed IP.
            ("db.shop.svc.cluster.local.", A, &["10.42.0.7", "10.42.0.8"]),
            ("db-0.db.shop.svc.cluster.local.", A, &["10.42.0.7"]),
            ("10-42-0-8.db.shop.svc.cluster.local.", A, &["10.42.0.8"]),
            ("10-42-0-9.db.shop.svc.cluster.local.", A, &["NxDomain"]),
            // SRV for named ports: the service, or each ready endpoint when headless.
            ("_http._tcp.web.default.svc.cluster.local.", SRV, &["0 100 80 web.default.svc.cluster.local."]),
            ("_pg._tcp.db.shop.svc.cluster.local.", SRV, &[
                "0 100 5432 db-0.db.shop.svc.cluster.local.",
                "0 100 5432 10-42-0-8.db.shop.svc.cluster.local.",
            ]),
            ("_PG._TCP.db.shop.svc.cluster.local.", SRV, &[
                "0 100 5432 db-0.db.shop.svc.cluster.local.",
                "0 100 5432 10-42-0-8.db.shop.svc.cluster.local.",
            ]),
            ("_pg._udp.db.shop.svc.cluster.local.", SRV, &["NxDomain"]),
            // ExternalName: a CNAME whatever the type asked.
            ("ext.default.svc.cluster.local.", A, &["example.org."]),
            // Names that exist without the asked type, and empty non-terminals: NOERROR.
            ("web.default.svc.cluster.local.", AAAA, &["NoData"]),
            ("web.default.svc.cluster.local.", SRV, &["NoData"]),
            ("_tcp.web.default.svc.cluster.local.", SRV, &["NoData"]),
            ("default.svc.cluster.local.", A, &["NoData"]),
            ("svc.cluster.local.", A, &["NoData"]),
            ("pending.default.svc.cluster.local.", A, &["NoData"]),
            ("cluster.local.", ANY, &["ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5"]),
            ("dns-version.cluster.local.", TXT, &["1.1.0"]),
            // Names in the domain that do not exist: NXDOMAIN, never forwarded.
            ("nope.default.svc.cluster.local.", A, &["NxDomain"]),
            ("db.other.svc.cluster.local.", A, &["NxDomain"]),
            ("google.com.default.svc.cluster.local.", A, &["NxDomain"]),
            ("cluster.local.example.org.", A, &["Forward"]),
            // Reverse lookups of cluster addresses.
            ("5.0.43.10.in-addr.arpa.", PTR, &["web.default.svc.cluster.local."]),
            ("7.0.42.10.in-addr.arpa.", PTR, &["db-0.db.shop.svc.cluster.local."]),
            ("1.1.168.192.in-addr.arpa.", PTR, &["Forward"]),
            // Everything else goes to the node's resolvers.
            ("example.org.", A, &["Forward"]),
        ];
        for (name, qtype, expected) in cases {
            assert_eq!(
                text(&table.lookup(name, *qtype)),
                *expected,
                "{name} {qtype}"
            );
        }
    }

    #[test]
    fn answers_echo_the_name_as_asked() {
        let (services, slices) = objects();
        let table = DnsTable::build(&services, &slices, "cluster.local.");
        let Answer::Records(records) = table.lookup("Web.Default.svc.Cluster.Local", RecordType::A)
        else {
            panic!("web has an address");
        };
        assert_eq!(records[0].name.to_ascii(), "Web.Default.svc.Cluster.Local.");
        assert_eq!(records[0].ttl, TTL);
    }

    #[test]
    fn negative_answers_carry_the_zone_only_inside_it() {
        let (services, slices) = objects();
        let table = DnsTable::build(&services, &slices, "cluster.local");
        let soa = table
            .negative_authority("nope.default.svc.cluster.local.")
            .expect("an SOA");
        assert_eq!(soa.name.to_ascii(), "cluster.local.");
        assert_eq!(table.negative_authority("example.org."), None);
    }

    #[test]
    fn the_table_before_the_first_build_answers_nothing() {
        let table = DnsTable::default();
        assert_eq!(
            table.lookup("example.org.", RecordType::A),
            Answer::NotReady
        );
        assert_eq!(
            table.lookup("web.default.svc.cluster.local.", RecordType::A),
            Answer::NotReady
        );
    }
}
