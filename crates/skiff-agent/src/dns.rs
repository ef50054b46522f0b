//! The node's DNS server: pods find Services by name.
//!
//! Every agent answers on its pod bridge's address (pods' resolv.conf points there, see
//! [`crate::spec::resolv_conf`]) from a [`DnsTable`] rebuilt whenever Services or
//! EndpointSlices change, following Kubernetes' DNS specification:
//!
//! | name | answer |
//! |---|---|
//! | `SVC.NS.svc.cluster.local` A | the ClusterIP; for a headless service the ready endpoints' IPs |
//! | `HOST.SVC.NS.svc.cluster.local` A | one endpoint of a headless service (its hostname, or its IP with dashes) |
//! | `_PORT._PROTO.SVC.NS.svc.cluster.local` SRV | each named port: the port and `SVC.NS.svc.cluster.local` (per endpoint for headless) |
//! | `SVC.NS.svc.cluster.local` for an ExternalName service | CNAME to the external name |
//! | any other name in `cluster.local` | NXDOMAIN (or NOERROR without answers when the name exists with other types) |
//! | names outside `cluster.local` | forwarded to the node's resolvers (resolv.conf), SERVFAIL if none answers |
//!
//! The wire format is hickory-proto's; only the lookup is skiff's. TTL is 5 s so that changes
//! show up quickly.
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;

use crate::services::Snapshot;

/// Seconds clients may cache an answer.
const TTL: u32 = 5;
/// How long a forwarded query may take per upstream.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// An EndpointSlice's ports by (name, protocol).
type SlicePorts = BTreeMap<(String, String), u16>;

/// What the server answers from: lower-case fully qualified names → records.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct DnsTable {
    domain: String,
    a: BTreeMap<String, Vec<Ipv4Addr>>,
    srv: BTreeMap<String, Vec<(u16, String)>>,
    cname: BTreeMap<String, String>,
    /// Every name that exists (with or without records), parents included.
    names: BTreeSet<String>,
}

/// The answer to one question.
#[derive(Debug, PartialEq)]
pub enum Answer {
    Records(Vec<Record>),
    /// The name exists in the cluster domain, not with this type.
    NoData,
    NxDomain,
    /// Not a cluster name: ask the node's resolvers.
    Forward,
}

impl DnsTable {
    /// The table for `cluster_domain` (`cluster.local`) from the snapshot's objects.
    pub fn build(services: &[Service], slices: &[EndpointSlice], cluster_domain: &str) -> DnsTable {
        let domain = format!("{}.", cluster_domain.trim_end_matches('.').to_lowercase());
        let mut table = DnsTable {
            domain: domain.clone(),
            ..DnsTable::default()
        };
        table.names.insert(domain.clone());
        table.names.insert(format!("svc.{domain}"));
        let snapshot_slices = Snapshot {
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
            let fqdn = format!("{name}.{ns}.svc.{domain}").to_lowercase();
            table
                .names
                .insert(format!("{ns}.svc.{domain}").to_lowercase());
            table.names.insert(fqdn.clone());
            if spec.type_.as_deref() == Some("ExternalName") {
                if let Some(external) = &spec.external_name {
                    let target = format!("{}.", external.trim_end_matches('.'));
                    table.cname.insert(fqdn, target);
                }
                continue;
            }
            let cluster_ip = spec
                .cluster_ip
                .as_deref()
                .and_then(|ip| ip.parse::<Ipv4Addr>().ok());
            // Ready endpoints with their hostnames (for headless services).
            let mut endpoints: Vec<(String, Ipv4Addr, SlicePorts)> = Vec::new();
            for slice in snapshot_slices.slices_of(svc) {
                let ports: SlicePorts = slice
                    .ports
                    .iter()
                    .flatten()
                    .filter_map(|p| {
                        Some((
                            (
                                p.name.clone().unwrap_or_default(),
                                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                            ),
                            u16::try_from(p.port?).ok()?,
                        ))
                    })
                    .collect();
                for endpoint in &slice.endpoints {
                    let ready = endpoint
                        .conditions
                        .as_ref()
                        .and_then(|c| c.ready)
                        .unwrap_or(true);
                    let Some(ip) = crate::services::endpoint_ipv4(endpoint) else {
                        continue;
                    };
                    if ready || spec.publish_not_ready_addresses == Some(true) {
                        let host = endpoint
                            .hostname
                            .clone()
                            .unwrap_or_else(|| ip.to_string().replace('.', "-"));
                        endpoints.push((host.to_lowercase(), ip, ports.clone()));
                    }
                }
            }
            match cluster_ip {
                Some(ip) => {
                    table.a.insert(fqdn.clone(), vec![ip]);
                }
                None => {
                    let mut ips: Vec<Ipv4Addr> = endpoints.iter().map(|(_, ip, _)| *ip).collect();
                    ips.sort();
                    ips.dedup();
                    table.a.insert(fqdn.clone(), ips);
                    for (host, ip, _) in &endpoints {
                        let host_name = format!("{host}.{fqdn}");
                        table.names.insert(host_name.clone());
                        table.a.entry(host_name).or_default().push(*ip);
                    }
                }
            }
            for port in spec.ports.iter().flatten() {
                let Some(port_name) = port.name.as_deref().filter(|n| !n.is_empty()) else {
                    continue;
                };
                let protocol = port.protocol.clone().unwrap_or_else(|| "TCP".into());
                let proto_name = format!("_{}.{fqdn}", protocol.to_lowercase());
                let srv_name = format!("_{}.{proto_name}", port_name.to_lowercase());
                table.names.insert(proto_name);
                table.names.insert(srv_name.clone());
                let records = match cluster_ip {
                    Some(_) => vec![(port.port as u16, fqdn.clone())],
                    None => endpoints
                        .iter()
                        .filter_map(|(host, _, ports)| {
                            let p = ports.get(&(port_name.to_string(), protocol.clone()))?;
                            Some((*p, format!("{host}.{fqdn}")))
                        })
                        .collect(),
                };
                table.srv.insert(srv_name, records);
            }
        }
        table
    }

    /// The answer for `name` (any case, with or without the final dot) and `qtype`.
    pub fn lookup(&self, name: &str, qtype: RecordType) -> Answer {
        let mut key = name.to_lowercase();
        if !key.ends_with('.') {
            key.push('.');
        }
        if key != self.domain && !key.ends_with(&format!(".{}", self.domain)) {
            return Answer::Forward;
        }
        if !self.names.contains(&key) {
            return Answer::NxDomain;
        }
        let Ok(owner) = Name::from_str(&key) else {
            return Answer::NxDomain;
        };
        let mut records = Vec::new();
        if let Some(target) = self.cname.get(&key) {
            if let Ok(target) = Name::from_str(target) {
                records.push(Record::from_rdata(
                    owner.clone(),
                    TTL,
                    RData::CNAME(CNAME(target)),
                ));
            }
        }
        if matches!(qtype, RecordType::A | RecordType::ANY) {
            for ip in self.a.get(&key).into_iter().flatten() {
                records.push(Record::from_rdata(owner.clone(), TTL, RData::A(A(*ip))));
            }
        }
        if matches!(qtype, RecordType::SRV | RecordType::ANY) {
            for (port, target) in self.srv.get(&key).into_iter().flatten() {
                if let Ok(target) = Name::from_str(target) {
                    let srv = SRV::new(0, 100, *port, target);
                    records.push(Record::from_rdata(owner.clone(), TTL, RData::SRV(srv)));
                }
            }
        }
        if records.is_empty() {
            Answer::NoData
        } else {
            Answer::Records(records)
        }
    }
}

/// The node's resolvers from a resolv.conf (`nameserver` lines), on port 53.
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
        })
        .filter_map(|ip| ip.parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// A DNS server bound to its address (UDP and TCP), ready to [`DnsServer::run`].
pub struct DnsServer {
    udp: Arc<UdpSocket>,
    tcp: TcpListener,
}

impl DnsServer {
    /// Binds UDP and TCP on `addr`; an error here (the address is taken) is reported at once.
    pub async fn bind(addr: SocketAddr) -> std::io::Result<DnsServer> {
        let udp = Arc::new(UdpSocket::bind(addr).await?);
        let tcp = TcpListener::bind(udp.local_addr()?).await?;
        Ok(DnsServer { udp, tcp })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.udp.local_addr()
    }

    /// Answers until the task is dropped, from the latest table.
    pub async fn run(self, table: watch::Receiver<Arc<DnsTable>>, upstreams: Vec<SocketAddr>) {
        let upstreams = Arc::new(upstreams);
        let tcp_table = table.clone();
        let tcp_upstreams = upstreams.clone();
        let tcp = self.tcp;
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = tcp.accept().await {
                let (table, upstreams) = (tcp_table.clone(), tcp_upstreams.clone());
                tokio::spawn(async move {
                    // DNS over TCP: each message has a two-byte length in front.
                    loop {
                        let mut len = [0u8; 2];
                        if stream.read_exact(&mut len).await.is_err() {
                            return;
                        }
                        let mut query = vec![0u8; u16::from_be_bytes(len) as usize];
                        if stream.read_exact(&mut query).await.is_err() {
                            return;
                        }
                        let table = table.borrow().clone();
                        let Some(reply) = answer(&table, &query, &upstreams).await else {
                            return;
                        };
                        let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
                        framed.extend(reply);
                        if stream.write_all(&framed).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, client)) = self.udp.recv_from(&mut buf).await else {
                continue;
            };
            let query = buf[..n].to_vec();
            let (socket, table, upstreams) =
                (self.udp.clone(), table.borrow().clone(), upstreams.clone());
            tokio::spawn(async move {
                if let Some(reply) = answer(&table, &query, &upstreams).await {
                    let _ = socket.send_to(&reply, client).await;
                }
            });
        }
    }
}

/// The reply to one query message (`None`: not a message worth answering).
async fn answer(table: &DnsTable, query: &[u8], upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    if request.metadata.message_type != MessageType::Query {
        return None;
    }
    let id = request.metadata.id;
    let Some(question) = request.queries.first().cloned() else {
        return Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
            .to_vec()
            .ok();
    };
    let result = table.lookup(&question.name.to_ascii(), question.query_type);
    if result == Answer::Forward {
        return Some(forward(query, id, upstreams).await);
    }
    let mut reply = Message::response(id, request.metadata.op_code);
    reply.metadata.authoritative = true;
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.add_query(question);
    match result {
        Answer::Records(records) => {
            reply.add_answers(records);
        }
        Answer::NoData => {}
        Answer::NxDomain => reply.metadata.response_code = ResponseCode::NXDomain,
        Answer::Forward => unreachable!("handled above"),
    }
    reply.to_vec().ok()
}

/// Asks each upstream in turn; SERVFAIL when none answers.
async fn forward(query: &[u8], id: u16, upstreams: &[SocketAddr]) -> Vec<u8> {
    for upstream in upstreams {
        let bind: SocketAddr = if upstream.is_ipv4() {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from(([0u16; 8], 0))
        };
        let Ok(socket) = UdpSocket::bind(bind).await else {
            continue;
        };
        if socket.send_to(query, upstream).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 4096];
        if let Ok(Ok((n, from))) =
            tokio::time::timeout(UPSTREAM_TIMEOUT, socket.recv_from(&mut buf)).await
        {
            if from == *upstream {
                return buf[..n].to_vec();
            }
        }
    }
    Message::error_msg(id, OpCode::Query, ResponseCode::ServFail)
        .to_vec()
        .unwrap_or_default()
}

/// Keeps `tx` holding the table for the latest snapshot.
pub async fn follow(
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    tx: watch::Sender<Arc<DnsTable>>,
    cluster_domain: String,
) {
    loop {
        let snapshot = snapshots.borrow_and_update().clone();
        let table = DnsTable::build(&snapshot.services, &snapshot.slices, &cluster_domain);
        tx.send_if_modified(|current| {
            let changed = **current != table;
            if changed {
                *current = Arc::new(table);
            }
            changed
        });
        if snapshots.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use serde_json::json;

    fn objects() -> (Vec<Service>, Vec<EndpointSlice>) {
        let services = serde_json::from_value(json!([
            {"metadata": {"name": "web", "namespace": "default"},
             "spec": {"clusterIP": "10.43.0.5", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}},
            {"metadata": {"name": "db", "namespace": "shop"},
             "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}},
            {"metadata": {"name": "ext", "namespace": "default"},
             "spec": {"type": "ExternalName", "externalName": "example.org"}}
        ]))
        .expect("services");
        let slices = serde_json::from_value(json!([
            {"metadata": {"name": "db-1", "namespace": "shop", "labels": {"kubernetes.io/service-name": "db"}},
             "addressType": "IPv4", "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
             "endpoints": [
                {"addresses": ["10.42.0.7"], "conditions": {"ready": true}, "hostname": "db-0"},
                {"addresses": ["10.42.0.8"], "conditions": {"ready": true}},
                {"addresses": ["10.42.0.9"], "conditions": {"ready": false}}
             ]}
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
        let cases: &[(&str, RecordType, &[&str])] = &[
            (
                "web.default.svc.cluster.local.",
                RecordType::A,
                &["10.43.0.5"],
            ),
            (
                "WEB.Default.svc.cluster.local",
                RecordType::A,
                &["10.43.0.5"],
            ),
            (
                "db.shop.svc.cluster.local.",
                RecordType::A,
                &["10.42.0.7", "10.42.0.8"],
            ),
            (
                "db-0.db.shop.svc.cluster.local.",
                RecordType::A,
                &["10.42.0.7"],
            ),
            (
                "10-42-0-8.db.shop.svc.cluster.local.",
                RecordType::A,
                &["10.42.0.8"],
            ),
            (
                "_http._tcp.web.default.svc.cluster.local.",
                RecordType::SRV,
                &["0 100 80 web.default.svc.cluster.local."],
            ),
            (
                "_pg._tcp.db.shop.svc.cluster.local.",
                RecordType::SRV,
                &[
                    "0 100 5432 db-0.db.shop.svc.cluster.local.",
                    "0 100 5432 10-42-0-8.db.shop.svc.cluster.local.",
                ],
            ),
            (
                "ext.default.svc.cluster.local.",
                RecordType::A,
                &["example.org."],
            ),
            (
                "web.default.svc.cluster.local.",
                RecordType::AAAA,
                &["NoData"],
            ),
            ("default.svc.cluster.local.", RecordType::A, &["NoData"]),
            (
                "nope.default.svc.cluster.local.",
                RecordType::A,
                &["NxDomain"],
            ),
            (
                "10-42-0-9.db.shop.svc.cluster.local.",
                RecordType::A,
                &["NxDomain"],
            ),
            ("example.org.", RecordType::A, &["Forward"]),
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
    fn resolv_conf_nameservers_become_upstreams() {
        let text = "search corp\nnameserver 192.0.2.53\nnameserver ::1\noptions edns0\n";
        assert_eq!(
            upstreams_from_resolv_conf(text),
            vec![
                "192.0.2.53:53".parse().expect("addr"),
                "[::1]:53".parse().expect("addr")
            ]
        );
    }

    fn query(name: &str, qtype: RecordType) -> Vec<u8> {
        let mut message = Message::query();
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(Name::from_str(name).expect("name"), qtype));
        message.to_vec().expect("encode")
    }

    async fn ask_udp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        socket
            .send_to(&query(name, qtype), server)
            .await
            .expect("send");
        let mut buf = vec![0u8; 4096];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
            .await
            .expect("an answer in time")
            .expect("recv");
        Message::from_vec(&buf[..n]).expect("decode")
    }

    #[tokio::test]
    async fn the_server_answers_over_udp_and_tcp_follows_changes_and_forwards() {
        // A fake upstream on loopback that answers every query with 192.0.2.1.
        let upstream = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let upstream_addr = upstream.local_addr().expect("addr");
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, from)) = upstream.recv_from(&mut buf).await {
                let Ok(request) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let mut reply = Message::response(request.metadata.id, OpCode::Query);
                let question = request.queries[0].clone();
                reply.add_answer(Record::from_rdata(
                    question.name.clone(),
                    60,
                    RData::A(A(Ipv4Addr::new(192, 0, 2, 1))),
                ));
                reply.add_query(question);
                let _ = upstream
                    .send_to(&reply.to_vec().expect("encode"), from)
                    .await;
            }
        });

        let (services, slices) = objects();
        let (tx, rx) = watch::channel(Arc::new(DnsTable::build(
            &services,
            &slices,
            "cluster.local",
        )));
        let server = DnsServer::bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let addr = server.local_addr().expect("addr");
        tokio::spawn(server.run(rx, vec![upstream_addr]));

        let reply = ask_udp(addr, "web.default.svc.cluster.local.", RecordType::A).await;
        assert_eq!(reply.answers[0].data.to_string(), "10.43.0.5");
        assert!(reply.metadata.authoritative);
        let reply = ask_udp(addr, "missing.default.svc.cluster.local.", RecordType::A).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
        let reply = ask_udp(addr, "example.org.", RecordType::A).await;
        assert_eq!(reply.answers[0].data.to_string(), "192.0.2.1", "forwarded");

        // A new table: the next answer follows it.
        tx.send_replace(Arc::new(DnsTable::build(
            &services[1..],
            &slices,
            "cluster.local",
        )));
        let reply = ask_udp(addr, "web.default.svc.cluster.local.", RecordType::A).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);

        // TCP: length-prefixed messages.
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let q = query("db.shop.svc.cluster.local.", RecordType::A);
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend(q);
        stream.write_all(&framed).await.expect("write");
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await.expect("length");
        let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
        stream.read_exact(&mut body).await.expect("body");
        let reply = Message::from_vec(&body).expect("decode");
        assert_eq!(reply.answers.len(), 2);
    }
}
