//! The proxy's sockets: accept (TCP) or receive (UDP), pick an endpoint, relay.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

use super::Shared;

/// How long the proxy waits for an endpoint to accept before trying the next.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Bytes moved per read in each direction: 64 KiB rather than tokio's default 8 KiB cuts the
/// system calls of a bulk transfer by eight (docs/benchmarks.md has both figures).
const COPY_BUFFER: usize = 64 * 1024;
/// A UDP "connection" (client address ↔ endpoint) is forgotten after this long without replies.
const UDP_IDLE: Duration = Duration::from_secs(30);

/// Listens on `port` of every address (0: any free port) and serves until the task is
/// aborted. Returns the port actually bound.
pub(super) async fn start(
    protocol: &str,
    port: u16,
    shared: Arc<Shared>,
) -> std::io::Result<(u16, JoinHandle<()>)> {
    let addr = SocketAddr::from(([0, 0, 0, 0], port));
    if protocol == "udp" {
        let socket = Arc::new(UdpSocket::bind(addr).await?);
        let bound = socket.local_addr()?.port();
        Ok((bound, tokio::spawn(serve_udp(socket, shared))))
    } else {
        let listener = TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?.port();
        Ok((bound, tokio::spawn(serve_tcp(listener, shared))))
    }
}

async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((inbound, client)) => match shared.admission.admit(client.ip()) {
                Some(ticket) => {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        relay_tcp(inbound, client, shared).await;
                        drop(ticket);
                    });
                }
                None => {
                    // Refused, not queued: a reset tells the client at once. (A zero linger
                    // never blocks; tokio deprecates set_linger for the other values.)
                    tracing::debug!(%client, "connection limit reached; refusing");
                    #[allow(deprecated)]
                    let _ = inbound.set_linger(Some(Duration::ZERO));
                }
            },
            Err(e) => {
                // Out of file descriptors and the like: pause instead of spinning.
                tracing::warn!(error = %e, "accepting a proxied connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Connects to an endpoint (the next one when one refuses) and copies both ways until either
/// side closes or the endpoint has been gone for the drain period.
async fn relay_tcp(mut inbound: TcpStream, client: SocketAddr, shared: Arc<Shared>) {
    let mut tried = Vec::new();
    let (mut outbound, endpoint) = loop {
        let pick = shared
            .balancer
            .lock()
            .ok()
            .and_then(|mut b| b.pick(client.ip(), &tried, Instant::now()));
        let Some(endpoint) = pick else {
            // No endpoint (left): closing tells the client at once, as a reject would.
            tracing::debug!(%client, tried = tried.len(), "no endpoint for a connection");
            return;
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(endpoint)).await {
            Ok(Ok(stream)) => {
                shared.requests.forwarded(endpoint.ip());
                break (stream, endpoint);
            }
            Ok(Err(e)) => {
                tracing::debug!(%endpoint, error = %e, "endpoint refused; trying another")
            }
            Err(_) => tracing::debug!(%endpoint, "endpoint did not answer; trying another"),
        }
        tried.push(endpoint);
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let mut live = shared.live.subscribe();
    let drain = shared.drain;
    let drained = async move {
        let _ = live.wait_for(|set| !set.contains(&endpoint)).await;
        tokio::time::sleep(drain).await;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional_with_sizes(&mut inbound, &mut outbound, COPY_BUFFER, COPY_BUFFER) => {}
        _ = drained => tracing::debug!(%endpoint, "closing a drained connection"),
    }
}

/// UDP has no connections; a client address is tied to one endpoint (through a socket of its
/// own, so replies find their way back) until it has been idle for [`UDP_IDLE`].
async fn serve_udp(socket: Arc<UdpSocket>, shared: Arc<Shared>) {
    let sessions: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, client) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(e) => {
                tracing::debug!(error = %e, "receiving a proxied datagram");
                continue;
            }
        };
        let existing = sessions.lock().ok().and_then(|s| s.get(&client).cloned());
        let upstream = match existing {
            Some(upstream) => upstream,
            None => match open_udp_session(&socket, &shared, &sessions, client).await {
                Some(upstream) => upstream,
                None => continue,
            },
        };
        let _ = upstream.send(&buf[..n]).await;
    }
}

async fn open_udp_session(
    socket: &Arc<UdpSocket>,
    shared: &Arc<Shared>,
    sessions: &Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>>,
    client: SocketAddr,
) -> Option<Arc<UdpSocket>> {
    // Beyond the limits the datagram is dropped (no session, no socket).
    let ticket = shared.admission.admit(client.ip())?;
    let endpoint = shared
        .balancer
        .lock()
        .ok()
        .and_then(|mut b| b.pick(client.ip(), &[], Instant::now()))?;
    let upstream = UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], 0)))
        .await
        .ok()?;
    upstream.connect(endpoint).await.ok()?;
    shared.requests.forwarded(endpoint.ip());
    let upstream = Arc::new(upstream);
    if let Ok(mut s) = sessions.lock() {
        s.insert(client, upstream.clone());
    }
    let (reply_to, from, table) = (socket.clone(), upstream.clone(), sessions.clone());
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        while let Ok(Ok(n)) = tokio::time::timeout(UDP_IDLE, from.recv(&mut buf)).await {
            let _ = reply_to.send_to(&buf[..n], client).await;
        }
        if let Ok(mut s) = table.lock() {
            s.remove(&client);
        }
        drop(ticket);
    });
    Some(upstream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::balancer::{Backend, Balancer, Policy};
    use crate::stats::RequestCounter;
    use std::collections::HashSet;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A TCP server on loopback that answers every connection with its name.
    async fn named_server(name: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let _ = s.write_all(name.as_bytes()).await;
            }
        });
        addr
    }

    fn shared(backends: Vec<SocketAddr>, drain: Duration) -> Arc<Shared> {
        shared_counted(backends, drain, &Arc::default())
    }

    fn shared_counted(
        backends: Vec<SocketAddr>,
        drain: Duration,
        counter: &Arc<RequestCounter>,
    ) -> Arc<Shared> {
        let mut balancer = Balancer::new(Policy::RoundRobin, None);
        balancer.update(
            Policy::RoundRobin,
            None,
            backends
                .iter()
                .map(|a| Backend {
                    addr: *a,
                    weight: 1,
                })
                .collect(),
        );
        Arc::new(Shared {
            balancer: Mutex::new(balancer),
            live: tokio::sync::watch::channel(backends.into_iter().collect::<HashSet<_>>()).0,
            drain,
            admission: crate::proxy::limits::Admission::new(crate::proxy::limits::DEFAULT),
            requests: counter.tally("default", "web"),
        })
    }

    async fn ask(port: u16) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out).await;
        out
    }

    #[tokio::test]
    async fn tcp_round_robins_and_skips_a_refusing_endpoint() {
        let a = named_server("a").await;
        let b = named_server("b").await;
        // A port nobody listens on: connections are refused.
        let dead = {
            let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            l.local_addr().expect("addr")
        };
        let counter = Arc::default();
        let shared = shared_counted(vec![a, dead, b], DRAIN_TEST, &counter);
        let (port, task) = start("tcp", 0, shared).await.expect("listen");
        let mut answers = Vec::new();
        for _ in 0..6 {
            answers.push(ask(port).await);
        }
        task.abort();
        let a_count = answers.iter().filter(|x| *x == "a").count();
        let b_count = answers.iter().filter(|x| *x == "b").count();
        assert_eq!((a_count, b_count), (3, 3), "{answers:?}");
        // Six connections forwarded (the refusals are not counted), all to 127.0.0.1.
        let totals = counter.totals();
        let web = ("default".to_string(), "web".to_string());
        assert_eq!(totals.services.get(&web), Some(&6));
        assert_eq!(totals.endpoints.get(&a.ip()), Some(&6));
    }

    const DRAIN_TEST: Duration = Duration::from_millis(200);

    #[tokio::test]
    async fn connections_to_a_removed_endpoint_are_closed_after_the_drain() {
        // An endpoint that accepts and then says nothing: the connection stays open.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let quiet = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let shared = shared(vec![quiet], DRAIN_TEST);
        let (port, task) = start("tcp", 0, shared.clone()).await.expect("listen");
        let mut client = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let mut buf = [0u8; 1];
        // Still open while the endpoint is there.
        assert!(
            tokio::time::timeout(Duration::from_millis(300), client.read(&mut buf))
                .await
                .is_err()
        );
        shared.live.send_replace(HashSet::new());
        let closed = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf)).await;
        task.abort();
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
    }

    #[tokio::test]
    async fn udp_replies_come_back_to_the_client() {
        let echo = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let echo_addr = echo.local_addr().expect("addr");
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = echo.recv_from(&mut buf).await {
                let mut reply = b"echo:".to_vec();
                reply.extend_from_slice(&buf[..n]);
                let _ = echo.send_to(&reply, from).await;
            }
        });
        let counter = Arc::default();
        let shared = shared_counted(vec![echo_addr], DRAIN_TEST, &counter);
        let (port, task) = start("udp", 0, shared).await.expect("listen");
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        client.connect(("127.0.0.1", port)).await.expect("connect");
        client.send(b"ping").await.expect("send");
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf))
            .await
            .expect("a reply in time")
            .expect("recv");
        task.abort();
        assert_eq!(&buf[..n], b"echo:ping");
        // One session, counted once.
        assert_eq!(counter.totals().endpoints.get(&echo_addr.ip()), Some(&1));
    }
}
