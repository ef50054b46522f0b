//! The node's DNS server: pods find Services by name.
//!
//! Every agent answers on its pod bridge's address (pods' resolv.conf points there, see
//! [`crate::resolv::resolv_conf`]) from a [`DnsTable`] rebuilt whenever Services or
//! EndpointSlices change ([`follow`]), following Kubernetes' DNS specification
//! (github.com/kubernetes/dns, docs/specification.md):
//!
//! | name | answer |
//! |---|---|
//! | `SVC.NS.svc.cluster.local` A | the ClusterIP; for a headless service the ready endpoints' IPs |
//! | `HOST.SVC.NS.svc.cluster.local` A | one endpoint of a headless service (its hostname, or its IP with dashes) |
//! | `_PORT._PROTO.SVC.NS.svc.cluster.local` SRV | each named port: the port and `SVC.NS.svc.cluster.local` (per endpoint for headless) |
//! | `SVC.NS.svc.cluster.local` for an ExternalName service | CNAME to the external name |
//! | `D.C.B.A.in-addr.arpa` PTR | the service (or headless endpoint) that has the address |
//! | `dns-version.cluster.local` TXT | the specification's schema version |
//! | any other name in `cluster.local` | NXDOMAIN (NOERROR without answers when the name exists with other types) |
//! | names outside `cluster.local` | forwarded to the node's resolvers (resolv.conf), SERVFAIL if none answers |
//!
//! Layout: [`table`] decides the answer (pure); this file speaks DNS over UDP and TCP and
//! forwards. The wire format is hickory-proto's.
//!
//! ## Expected flow
//! ```text
//! DnsServer::bind(addr)  ── the caller learns at once if the address is taken
//!     .run(table, upstreams)
//!         UDP: one task per query ──┐
//!         TCP: one task per client ─┴─► answer(): table.lookup() ─► cluster name: reply
//!                                                                  └► other: forward()
//! ```
//! ## Guarantees
//! - A name inside the cluster domain is never sent to an upstream.
//! - Dropping `run`'s future stops everything it started, in-flight queries included.
//! - A UDP answer too big for the client comes back truncated (TC), and the client asks
//!   again over TCP, which is forwarded over TCP too.
//!
//! ## Caveats
//! IPv4 endpoints only (like the service proxy); no pod records (`A-B-C-D.NS.pod`), no DNSSEC.
mod table;

pub use table::{Answer, DnsTable, TTL};

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::service_view::Snapshot;

/// How long a forwarded query may take per upstream before the next one is tried.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a TCP client may stay connected without sending a query.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// UDP queries being answered at once (forwarded ones wait on upstreams); more are dropped,
/// and their clients retry.
const MAX_UDP_IN_FLIGHT: usize = 256;
/// TCP clients served at once; more are disconnected.
const MAX_TCP_CLIENTS: usize = 64;
/// The UDP payload we accept and send to EDNS clients: the size that does not fragment on
/// common paths (DNS flag day 2020).
const EDNS_PAYLOAD: u16 = 1232;

/// How a query arrived; forwarding uses the same.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Transport {
    Udp,
    Tcp,
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
        .filter_map(|ip| ip.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// A DNS server bound to its address (UDP and TCP), ready to [`DnsServer::run`].
pub struct DnsServer {
    udp: UdpSocket,
    tcp: TcpListener,
}

impl DnsServer {
    /// Binds UDP and TCP on `addr`; an error here (the address is taken) is reported at once.
    pub async fn bind(addr: SocketAddr) -> io::Result<DnsServer> {
        let mut attempts = 0;
        loop {
            let udp = UdpSocket::bind(addr).await?;
            match TcpListener::bind(udp.local_addr()?).await {
                Ok(tcp) => return Ok(DnsServer { udp, tcp }),
                // With port 0 the UDP socket picks the port, which TCP may find taken.
                Err(_) if addr.port() == 0 && attempts < 5 => attempts += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// The address UDP and TCP listen on (the port is the real one when bound to port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.udp.local_addr()
    }

    /// Answers from the latest `table` until this future is dropped.
    pub async fn run(self, table: watch::Receiver<Arc<DnsTable>>, upstreams: Vec<SocketAddr>) {
        let upstreams: Arc<[SocketAddr]> = upstreams.into();
        tokio::join!(
            serve_udp(self.udp, table.clone(), upstreams.clone()),
            serve_tcp(self.tcp, table, upstreams),
        );
    }
}

/// [`DnsServer::bind`] then [`DnsServer::run`]: serves UDP and TCP on `bind` until dropped.
pub async fn serve(
    bind: SocketAddr,
    table: watch::Receiver<Arc<DnsTable>>,
    upstreams: Vec<SocketAddr>,
) -> io::Result<()> {
    DnsServer::bind(bind).await?.run(table, upstreams).await;
    Ok(())
}

async fn serve_udp(
    socket: UdpSocket,
    table: watch::Receiver<Arc<DnsTable>>,
    upstreams: Arc<[SocketAddr]>,
) {
    let socket = Arc::new(socket);
    // Owned here, so that dropping the server aborts the queries it is still answering.
    let mut queries = JoinSet::new();
    let mut buf = vec![0u8; usize::from(EDNS_PAYLOAD)];
    loop {
        let (n, client) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(e) => {
                tracing::debug!(error = %e, "dns: UDP receive failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        while queries.try_join_next().is_some() {}
        if queries.len() >= MAX_UDP_IN_FLIGHT {
            tracing::debug!(%client, "dns: too many queries in flight, dropping one");
            continue;
        }
        let query = buf[..n].to_vec();
        let (socket, table, upstreams) =
            (socket.clone(), table.borrow().clone(), upstreams.clone());
        queries.spawn(async move {
            if let Some(reply) = answer(&table, &query, &upstreams, Transport::Udp).await {
                let _ = socket.send_to(&reply, client).await;
            }
        });
    }
}

async fn serve_tcp(
    listener: TcpListener,
    table: watch::Receiver<Arc<DnsTable>>,
    upstreams: Arc<[SocketAddr]>,
) {
    let mut clients = JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::debug!(error = %e, "dns: TCP accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        while clients.try_join_next().is_some() {}
        if clients.len() >= MAX_TCP_CLIENTS {
            continue;
        }
        clients.spawn(serve_tcp_client(stream, table.clone(), upstreams.clone()));
    }
}

/// Answers one TCP client's queries, one after the other, until it goes quiet or away.
async fn serve_tcp_client(
    mut stream: TcpStream,
    table: watch::Receiver<Arc<DnsTable>>,
    upstreams: Arc<[SocketAddr]>,
) {
    while let Ok(Ok(query)) = tokio::time::timeout(TCP_IDLE, read_framed(&mut stream)).await {
        let table = table.borrow().clone();
        let Some(reply) = answer(&table, &query, &upstreams, Transport::Tcp).await else {
            return;
        };
        if write_framed(&mut stream, &reply).await.is_err() {
            return;
        }
    }
}

/// Reads one DNS-over-TCP message: a two-byte length, then the message.
async fn read_framed(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let mut message = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut message).await?;
    Ok(message)
}

async fn write_framed(stream: &mut TcpStream, message: &[u8]) -> io::Result<()> {
    let len = u16::try_from(message.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "DNS message over 64 KiB"))?;
    let mut framed = Vec::with_capacity(message.len() + 2);
    framed.extend(len.to_be_bytes());
    framed.extend(message);
    stream.write_all(&framed).await
}

/// The reply to one query message (`None`: not a query, or not a message at all).
async fn answer(
    table: &DnsTable,
    query: &[u8],
    upstreams: &[SocketAddr],
    transport: Transport,
) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    if request.metadata.message_type != MessageType::Query {
        return None;
    }
    let id = request.metadata.id;
    if request.metadata.op_code != OpCode::Query {
        let reply = Message::error_msg(id, request.metadata.op_code, ResponseCode::NotImp);
        return reply.to_vec().ok();
    }
    let Some(question) = request.queries.first().cloned() else {
        let reply = Message::error_msg(id, OpCode::Query, ResponseCode::FormErr);
        return reply.to_vec().ok();
    };
    let name = question.name.to_ascii();
    let mut reply = Message::response(id, OpCode::Query);
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    match table.lookup(&name, question.query_type) {
        Answer::Forward => return Some(forward(query, id, upstreams, transport).await),
        Answer::NotReady => reply.metadata.response_code = ResponseCode::ServFail,
        Answer::Records(records) => {
            reply.metadata.authoritative = true;
            reply.add_answers(records);
        }
        negative @ (Answer::NoData | Answer::NxDomain) => {
            reply.metadata.authoritative = true;
            if negative == Answer::NxDomain {
                reply.metadata.response_code = ResponseCode::NXDomain;
            }
            reply.add_authorities(table.negative_authority(&name));
        }
    }
    reply.add_query(question);
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        reply.set_edns(edns);
    }
    let encoded = reply.to_vec().ok()?;
    let room = request.max_payload().min(EDNS_PAYLOAD);
    if transport == Transport::Udp && encoded.len() > usize::from(room) {
        // The TC bit tells the client to ask again over TCP (many headless endpoints).
        return reply.truncate().to_vec().ok();
    }
    Some(encoded)
}

/// Asks each upstream in turn, over the client's transport; SERVFAIL when none answers.
async fn forward(query: &[u8], id: u16, upstreams: &[SocketAddr], transport: Transport) -> Vec<u8> {
    for &upstream in upstreams {
        let asked = tokio::time::timeout(UPSTREAM_TIMEOUT, async {
            match transport {
                Transport::Udp => exchange_udp(query, id, upstream).await,
                Transport::Tcp => exchange_tcp(query, upstream).await,
            }
        })
        .await;
        match asked {
            Ok(Ok(reply)) => return reply,
            Ok(Err(e)) => tracing::debug!(%upstream, error = %e, "dns: upstream failed"),
            Err(_) => tracing::debug!(%upstream, "dns: upstream did not answer in time"),
        }
    }
    Message::error_msg(id, OpCode::Query, ResponseCode::ServFail)
        .to_vec()
        .unwrap_or_default()
}

async fn exchange_udp(query: &[u8], id: u16, upstream: SocketAddr) -> io::Result<Vec<u8>> {
    let any = match upstream {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let socket = UdpSocket::bind(SocketAddr::new(any, 0)).await?;
    // Connected: only the upstream's datagrams arrive, and a closed port fails at once.
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; usize::from(u16::MAX)];
    loop {
        let n = socket.recv(&mut buf).await?;
        if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
            return Ok(buf[..n].to_vec());
        }
    }
}

async fn exchange_tcp(query: &[u8], upstream: SocketAddr) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(upstream).await?;
    write_framed(&mut stream, query).await?;
    read_framed(&mut stream).await
}

/// Keeps `tx` holding the table for the latest snapshot.
pub async fn follow(
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    tx: watch::Sender<Arc<DnsTable>>,
    cluster_domain: String,
) {
    loop {
        let snapshot = snapshots.borrow_and_update().clone();
        // Until the watches have listed once, keep the empty table, which answers SERVFAIL:
        // building from empty lists would answer NXDOMAIN, which resolvers cache.
        if snapshot.synced {
            let table = DnsTable::build(&snapshot.services, &snapshot.slices, &cluster_domain);
            tx.send_if_modified(|current| {
                let changed = **current != table;
                if changed {
                    *current = Arc::new(table);
                }
                changed
            });
        }
        if snapshots.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{Name, RData, Record, RecordType};
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use serde_json::json;
    use std::str::FromStr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn query(name: &str, qtype: RecordType) -> Vec<u8> {
        let mut message = Message::query();
        message.metadata.id = 4242;
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
        let mut buf = vec![0u8; 65535];
        let (n, _) = tokio::time::timeout(Duration::from_secs(10), socket.recv_from(&mut buf))
            .await
            .expect("an answer in time")
            .expect("recv");
        Message::from_vec(&buf[..n]).expect("decode")
    }

    async fn ask_tcp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
        let mut stream = TcpStream::connect(server).await.expect("connect");
        write_framed(&mut stream, &query(name, qtype))
            .await
            .expect("write");
        let body = tokio::time::timeout(Duration::from_secs(10), read_framed(&mut stream))
            .await
            .expect("an answer in time")
            .expect("read");
        Message::from_vec(&body).expect("decode")
    }

    fn answers(reply: &Message) -> Vec<String> {
        reply.answers.iter().map(|r| r.data.to_string()).collect()
    }

    /// Starts a server on loopback for `table`; the sender changes its table.
    async fn start(
        table: DnsTable,
        upstreams: Vec<SocketAddr>,
    ) -> (SocketAddr, watch::Sender<Arc<DnsTable>>) {
        let (tx, rx) = watch::channel(Arc::new(table));
        let server = DnsServer::bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let addr = server.local_addr().expect("addr");
        tokio::spawn(server.run(rx, upstreams));
        (addr, tx)
    }

    /// A fake upstream on loopback: answers every name with 192.0.2.1 over UDP and
    /// 192.0.2.2 over TCP, and counts the queries it gets.
    async fn fake_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
        let DnsServer { udp, tcp } = DnsServer::bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let addr = udp.local_addr().expect("addr");
        let asked = Arc::new(AtomicUsize::new(0));
        fn reply(query: &[u8], ip: Ipv4Addr) -> Vec<u8> {
            let request = Message::from_vec(query).expect("a query");
            let mut reply = Message::response(request.metadata.id, OpCode::Query);
            let question = request.queries[0].clone();
            reply.add_answer(Record::from_rdata(
                question.name.clone(),
                60,
                RData::A(A(ip)),
            ));
            reply.add_query(question);
            reply.to_vec().expect("encode")
        }
        let counter = asked.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, from)) = udp.recv_from(&mut buf).await {
                counter.fetch_add(1, Ordering::SeqCst);
                let answer = reply(&buf[..n], Ipv4Addr::new(192, 0, 2, 1));
                let _ = udp.send_to(&answer, from).await;
            }
        });
        let counter = asked.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = tcp.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let query = read_framed(&mut stream).await.expect("query");
                let answer = reply(&query, Ipv4Addr::new(192, 0, 2, 2));
                write_framed(&mut stream, &answer).await.expect("write");
            }
        });
        (addr, asked)
    }

    fn table() -> DnsTable {
        let (services, slices) = table::tests::objects();
        DnsTable::build(&services, &slices, "cluster.local")
    }

    #[tokio::test(start_paused = true)]
    async fn the_table_waits_for_the_first_full_read() {
        let (snapshots_tx, snapshots) = watch::channel(Arc::new(Snapshot::default()));
        let (tx, mut tables) = watch::channel(Arc::new(DnsTable::default()));
        tokio::spawn(follow(snapshots, tx, "cluster.local".into()));
        let web = |synced| Snapshot {
            synced,
            services: serde_json::from_value(json!([{
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {"clusterIP": "10.43.0.7", "ports": [{"port": 80}]},
            }]))
            .expect("services"),
            ..Snapshot::default()
        };
        // Lists not read yet: no table, so SERVFAIL rather than a cacheable NXDOMAIN.
        snapshots_tx.send(Arc::new(web(false))).expect("send");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let name = "web.default.svc.cluster.local.";
        assert_eq!(
            tables.borrow().lookup(name, RecordType::A),
            crate::dns::table::Answer::NotReady
        );
        snapshots_tx.send(Arc::new(web(true))).expect("send");
        tables.changed().await.expect("a table");
        assert!(matches!(
            tables.borrow().lookup(name, RecordType::A),
            crate::dns::table::Answer::Records(_)
        ));
    }

    #[tokio::test]
    async fn the_server_answers_over_udp_and_tcp_and_follows_the_table() {
        let (services, slices) = table::tests::objects();
        let (addr, tx) = start(table(), vec![]).await;

        // 1. A ClusterIP service over UDP: authoritative, the query echoed.
        let reply = ask_udp(addr, "web.default.svc.cluster.local.", RecordType::A).await;
        assert_eq!(reply.metadata.id, 4242);
        assert!(reply.metadata.authoritative);
        assert_eq!(reply.queries.len(), 1);
        assert_eq!(answers(&reply), ["10.43.0.5"]);

        // 2. A missing name: NXDOMAIN with the zone's SOA; a name without the type: NOERROR.
        let reply = ask_udp(addr, "missing.default.svc.cluster.local.", RecordType::A).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(reply.authorities.len(), 1);
        let reply = ask_udp(addr, "web.default.svc.cluster.local.", RecordType::AAAA).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert!(reply.answers.is_empty());

        // 3. The same over TCP: a headless service's endpoints, SRV records.
        let reply = ask_tcp(addr, "DB.shop.svc.cluster.local.", RecordType::A).await;
        assert_eq!(answers(&reply), ["10.42.0.7", "10.42.0.8"]);
        let reply = ask_tcp(addr, "_pg._tcp.db.shop.svc.cluster.local.", RecordType::SRV).await;
        assert_eq!(reply.answers.len(), 2);

        // 4. A new table without `web`: the next answer follows it.
        tx.send_replace(Arc::new(DnsTable::build(
            &services[1..],
            &slices,
            "cluster.local",
        )));
        let reply = ask_udp(addr, "web.default.svc.cluster.local.", RecordType::A).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);

        // 5. Before the first table: SERVFAIL, not a cacheable NXDOMAIN.
        tx.send_replace(Arc::new(DnsTable::default()));
        let reply = ask_udp(addr, "db.shop.svc.cluster.local.", RecordType::A).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    }

    #[tokio::test]
    async fn other_names_are_forwarded_and_cluster_names_never_are() {
        let (upstream, asked) = fake_upstream().await;
        let (addr, _tx) = start(table(), vec![upstream]).await;

        // 1. A name outside the cluster goes upstream, over the client's transport.
        let reply = ask_udp(addr, "example.org.", RecordType::A).await;
        assert_eq!(reply.metadata.id, 4242);
        assert_eq!(answers(&reply), ["192.0.2.1"]);
        let reply = ask_tcp(addr, "example.org.", RecordType::A).await;
        assert_eq!(answers(&reply), ["192.0.2.2"]);
        assert_eq!(asked.load(Ordering::SeqCst), 2);

        // 2. Cluster names, existing or not, in any type or case, stay here.
        for (name, qtype) in [
            ("web.default.svc.cluster.local.", RecordType::A),
            ("web.default.svc.cluster.local.", RecordType::MX),
            ("nope.default.svc.cluster.local.", RecordType::A),
            ("example.org.default.svc.Cluster.Local.", RecordType::AAAA),
        ] {
            let reply = ask_udp(addr, name, qtype).await;
            assert!(reply.metadata.authoritative, "{name}");
        }
        assert_eq!(
            asked.load(Ordering::SeqCst),
            2,
            "no cluster name went upstream"
        );
    }

    #[tokio::test]
    async fn upstreams_are_tried_in_turn_then_servfail() {
        // An upstream that never answers, one whose port is closed, then a working one.
        let silent = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let closed = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let closed_addr = closed.local_addr().expect("addr");
        drop(closed);
        let (upstream, _) = fake_upstream().await;
        let silent_addr = silent.local_addr().expect("addr");

        let (addr, _tx) = start(table(), vec![silent_addr, closed_addr, upstream]).await;
        let reply = ask_udp(addr, "example.org.", RecordType::A).await;
        assert_eq!(answers(&reply), ["192.0.2.1"]);

        let (addr, _tx) = start(table(), vec![closed_addr]).await;
        let reply = ask_udp(addr, "example.org.", RecordType::A).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
        assert_eq!(reply.metadata.id, 4242);
    }

    #[tokio::test]
    async fn answers_too_big_for_udp_are_truncated_and_whole_over_tcp() {
        let services: Vec<Service> = serde_json::from_value(json!([
            {"metadata": {"name": "big", "namespace": "default"}, "spec": {"clusterIP": "None"}}
        ]))
        .expect("services");
        let endpoints: Vec<_> = (1..=100)
            .map(|i| json!({"addresses": [format!("10.42.1.{i}")]}))
            .collect();
        let slices: Vec<EndpointSlice> = serde_json::from_value(json!([
            {"metadata": {"name": "big-1", "namespace": "default",
                          "labels": {"kubernetes.io/service-name": "big"}},
             "addressType": "IPv4", "endpoints": endpoints}
        ]))
        .expect("slices");
        let (addr, _tx) = start(DnsTable::build(&services, &slices, "cluster.local"), vec![]).await;

        let reply = ask_udp(addr, "big.default.svc.cluster.local.", RecordType::A).await;
        assert!(reply.metadata.truncation);
        assert!(reply.answers.is_empty());
        let reply = ask_tcp(addr, "big.default.svc.cluster.local.", RecordType::A).await;
        assert!(!reply.metadata.truncation);
        assert_eq!(reply.answers.len(), 100);
    }

    #[tokio::test]
    async fn dropping_the_server_closes_its_sockets() {
        let (_tx, rx) = watch::channel(Arc::new(table()));
        let server = DnsServer::bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let addr = server.local_addr().expect("addr");
        let task = tokio::spawn(server.run(rx, vec![]));
        // A client connected before the drop is served until then.
        let mut client = TcpStream::connect(addr).await.expect("connect");
        task.abort();
        let _ = task.await;
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "the listener is gone"
        );
        write_framed(
            &mut client,
            &query("web.default.svc.cluster.local.", RecordType::A),
        )
        .await
        .ok();
        assert!(
            read_framed(&mut client).await.is_err(),
            "its connection too"
        );
        DnsServer::bind(addr)
            .await
            .expect("the address is free again");
    }

    #[test]
    fn resolv_conf_nameservers_become_upstreams() {
        let text =
            "# from DHCP\nsearch corp\nnameserver 192.0.2.53\nnameserver ::1\noptions edns0\n";
        assert_eq!(
            upstreams_from_resolv_conf(text),
            vec![
                "192.0.2.53:53".parse::<SocketAddr>().expect("addr"),
                "[::1]:53".parse().expect("addr")
            ]
        );
    }
}
