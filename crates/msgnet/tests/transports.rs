//! Two hosts over each transport on real loopback sockets (127.0.0.1 only): UDP, TCP and
//! QUIC each alone, all three known at once (the first message races, UDP carries the rest;
//! `racing.rs` tests racing itself), unsupported protocols over TCP, and the
//! fallback from a dead UDP address to TCP. Every wait is bounded by a failure guard.

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use msgnet::{EndpointConfig, Host, Keypair, Multiaddr, SendError, Transport};

const GUARD: Duration = Duration::from_secs(60);
const N_SENDS: u32 = 1_000;
const N_REQUESTS: u32 = 200;

fn ma(s: &str) -> Multiaddr {
    s.parse().expect("valid multiaddr")
}

fn config() -> EndpointConfig {
    EndpointConfig { handshake_timeout: Duration::from_secs(2), ..EndpointConfig::default() }
}

async fn host(listen: &[&str]) -> Host {
    let mut b = Host::builder(Keypair::generate_ed25519()).config(config());
    for l in listen {
        b = b.listen(ma(l));
    }
    b.build().await.expect("host builds")
}

async fn guard<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(GUARD, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: not done within {GUARD:?}"),
    }
}

/// The listen address of `host` on `transport`.
fn addr_of(host: &Host, transport: Transport) -> Multiaddr {
    host.listen_addrs()
        .into_iter()
        .find(|a| Transport::of(a) == Some(transport))
        .unwrap_or_else(|| panic!("{transport} address in {:?}", host.listen_addrs()))
}

/// `host` answers every `/echo/1` request with its payload.
fn spawn_echo(host: &Host) -> tokio::task::JoinHandle<()> {
    let mut echo = host.handle("/echo/1").expect("handler");
    tokio::spawn(async move {
        while let Some(msg) = echo.recv().await {
            let payload = msg.payload.clone();
            let _ = msg.respond(payload);
        }
    })
}

/// `a` sends 1,000 messages and 200 requests to `b`; every one arrives once and every
/// request is answered.
async fn exchange(a: &Host, b: &Host) {
    let mut inbox = b.handle("/count/1").expect("handler");
    let receiver = tokio::spawn(async move {
        let mut seen = HashSet::new();
        while seen.len() < N_SENDS as usize {
            let msg = inbox.recv().await.expect("stream open");
            let bytes: [u8; 4] = msg.payload[..].try_into().expect("4 bytes");
            assert!(seen.insert(u32::from_be_bytes(bytes)), "duplicate");
        }
        (seen, inbox)
    });
    let echoer = spawn_echo(b);
    let peer = b.local_peer_id();
    let results: Vec<Result<(), SendError>> = guard(
        "sends",
        futures::stream::iter(0..N_SENDS)
            .map(|i| a.send(peer, "/count/1", i.to_be_bytes().to_vec()))
            .buffer_unordered(128)
            .collect(),
    )
    .await;
    assert!(results.iter().all(Result::is_ok), "{:?}", results.iter().find(|r| r.is_err()));
    let (seen, _inbox) = guard("receives", receiver).await.expect("receiver");
    assert_eq!(seen, (0..N_SENDS).collect::<HashSet<_>>());
    let replies: Vec<_> = guard(
        "requests",
        futures::stream::iter(0..N_REQUESTS)
            .map(|i| async move {
                let payload = format!("req {i}");
                let reply = a.request(peer, "/echo/1", payload.clone(), Duration::from_secs(20)).await;
                (payload, reply)
            })
            .buffer_unordered(32)
            .collect(),
    )
    .await;
    for (payload, reply) in replies {
        assert_eq!(reply.expect("reply"), payload.as_bytes());
    }
    b.remove_handler("/echo/1");
    let _ = guard("echo ends", echoer).await;
}

/// The transports of `a`'s established sessions/connections with `b`.
async fn transports(a: &Host, b: &Host) -> HashSet<Transport> {
    a.connections(b.local_peer_id())
        .await
        .into_iter()
        .filter(|c| c.established)
        .map(|c| c.transport)
        .collect()
}

async fn one_transport(listen: &str, transport: Transport) {
    let a = host(&[listen]).await;
    let b = host(&[listen]).await;
    a.add_address(b.local_peer_id(), addr_of(&b, transport)).expect("address");
    exchange(&a, &b).await;
    assert_eq!(transports(&a, &b).await, HashSet::from([transport]));
    assert!(a.peers().await.contains(&b.local_peer_id()));
    assert!(b.peers().await.contains(&a.local_peer_id()));
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_only() {
    one_transport("/ip4/127.0.0.1/tcp/0", Transport::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_only() {
    one_transport("/ip4/127.0.0.1/udp/0/quic-v1", Transport::Quic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_only() {
    one_transport("/ip4/127.0.0.1/udp/0", Transport::Udp).await;
}

const ALL: [&str; 3] = ["/ip4/127.0.0.1/udp/0", "/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_three_known_prefers_udp() {
    let a = host(&ALL).await;
    let b = host(&ALL).await;
    assert_eq!(b.listen_addrs().len(), 3, "{:?}", b.listen_addrs());
    // Learned in the order TCP, QUIC, UDP: the preference, not the order, decides.
    for t in [Transport::Tcp, Transport::Quic, Transport::Udp] {
        let addr = addr_of(&b, t).with(multiaddr::Protocol::P2p(b.local_peer_id()));
        a.add_address(b.local_peer_id(), addr).expect("address");
    }
    exchange(&a, &b).await;
    // The first message raced on all three transports, each copy opening its own path;
    // both sides then consolidated on UDP, which carried everything else.
    assert_eq!(transports(&a, &b).await, HashSet::from([Transport::Udp, Transport::Quic, Transport::Tcp]));
    assert_eq!(a.consolidated_transport(b.local_peer_id()).await, Some(Transport::Udp));
    let stats = a.transport_stats().await;
    assert_eq!(stats.races, 1, "{stats:?}");
    assert_eq!((stats.sent_on(Transport::Quic), stats.sent_on(Transport::Tcp)), (1, 1), "{stats:?}");
    assert_eq!(stats.sent_on(Transport::Udp), u64::from(N_SENDS + N_REQUESTS), "{stats:?}");
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_go_back_the_way_requests_came() {
    // b knows no address of a: it can answer only on the connection a opened (TCP).
    let a = host(&["/ip4/127.0.0.1/udp/0"]).await;
    let b = host(&ALL).await;
    a.add_address(b.local_peer_id(), addr_of(&b, Transport::Tcp)).expect("address");
    spawn_echo(&b);
    let reply = guard("request", a.request(b.local_peer_id(), "/echo/1", "hi", GUARD)).await;
    assert_eq!(reply.expect("reply"), "hi".as_bytes());
    // And b reaches a back over that connection without any address of a.
    let mut inbox = a.handle("/back/1").expect("handler");
    guard("send back", b.send(a.local_peer_id(), "/back/1", "back")).await.expect("sent back");
    let msg = guard("receive back", inbox.recv()).await.expect("message");
    assert_eq!(msg.payload, "back".as_bytes());
    assert_eq!(transports(&b, &a).await, HashSet::from([Transport::Tcp]));
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_protocol_over_tcp() {
    let a = host(&["/ip4/127.0.0.1/tcp/0"]).await;
    let b = host(&["/ip4/127.0.0.1/tcp/0"]).await;
    a.add_address(b.local_peer_id(), addr_of(&b, Transport::Tcp)).expect("address");
    let _other = b.handle("/other/1").expect("handler");
    let peer = b.local_peer_id();
    let err = guard("send", a.send(peer, "/nobody/1", "x")).await.expect_err("unsupported");
    assert_eq!(err, SendError::UnsupportedProtocol("/nobody/1".into()));
    let err = guard("request", a.request(peer, "/nobody/2", "x", GUARD)).await.expect_err("unsupported");
    assert_eq!(err, SendError::UnsupportedProtocol("/nobody/2".into()));
    assert_eq!(transports(&a, &b).await, HashSet::from([Transport::Tcp]));
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_udp_address_falls_back_to_tcp() {
    // A UDP socket that is gone: bind one, note its address, close it.
    let dead = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        msgnet::socket_to_multiaddr(s.local_addr().expect("addr"))
    };
    let a = host(&["/ip4/127.0.0.1/udp/0"]).await;
    let b = host(&["/ip4/127.0.0.1/tcp/0"]).await;
    let peer = b.local_peer_id();
    a.add_address(peer, dead).expect("dead udp address");
    a.add_address(peer, addr_of(&b, Transport::Tcp)).expect("tcp address");
    let mut inbox = b.handle("/count/1").expect("handler");
    guard("send", a.send(peer, "/count/1", "first")).await.expect("falls back to tcp");
    assert_eq!(guard("receive", inbox.recv()).await.expect("message").payload, "first".as_bytes());
    assert!(transports(&a, &b).await.contains(&Transport::Tcp));
    // Later messages go to TCP at once (UDP is marked as failing): well within one
    // handshake timeout each.
    for i in 0..20u32 {
        let sent = tokio::time::timeout(Duration::from_secs(1), a.send(peer, "/count/1", i.to_be_bytes().to_vec()));
        sent.await.expect("no UDP handshake wait").expect("sent");
    }
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_and_listen_shapes() {
    let h = host(&ALL).await;
    let kinds: Vec<_> = h.listen_addrs().iter().map(|a| Transport::of(a).expect("known")).collect();
    assert_eq!(kinds, vec![Transport::Udp, Transport::Tcp, Transport::Quic]);
    let peer = Keypair::generate_ed25519().public().to_peer_id();
    for ok in ["/ip4/127.0.0.1/tcp/1", "/ip6/::1/udp/2/quic-v1", "/ip4/127.0.0.1/udp/3"] {
        h.add_address(peer, ma(ok)).expect(ok);
    }
    assert!(h.add_address(peer, ma("/ip4/127.0.0.1/tcp/1/ws")).is_err());
    let bad = Host::builder(Keypair::generate_ed25519()).listen(ma("/ip4/127.0.0.1/tcp/0/ws")).build().await;
    assert!(bad.is_err());
    h.close().await;
}

/// Over a libp2p connection each host learns who the other is (identify):
/// `HostEvent::Identified` carries the peer's listen address, `/msgnet/1.0.0` among its
/// protocols, and msgnet's agent version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identify_info_is_reported() {
    let a = host(&["/ip4/127.0.0.1/tcp/0"]).await;
    let b = host(&["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"]).await;
    let mut events = a.events();
    a.add_address(b.local_peer_id(), addr_of(&b, Transport::Tcp)).expect("address");
    spawn_echo(&b);
    guard("request", a.request(b.local_peer_id(), "/echo/1", b"hi".to_vec(), GUARD)).await.expect("answered");
    let (listen_addrs, protocols, agent) = guard("identify", async {
        loop {
            match events.recv().await.expect("events open") {
                msgnet::HostEvent::Identified { peer, listen_addrs, protocols, agent_version }
                    if peer == b.local_peer_id() =>
                {
                    break (listen_addrs, protocols, agent_version)
                }
                _ => {}
            }
        }
    })
    .await;
    for t in [Transport::Tcp, Transport::Quic] {
        assert!(listen_addrs.contains(&addr_of(&b, t)), "{t} address of B in {listen_addrs:?}");
    }
    assert!(protocols.iter().any(|p| p == "/msgnet/1.0.0"), "{protocols:?}");
    assert!(agent.starts_with("msgnet/"), "{agent}");
    a.close().await;
    b.close().await;
}
