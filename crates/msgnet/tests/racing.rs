//! Transport racing and consolidation between two hosts on real loopback sockets
//! (127.0.0.1 only). B listens on UDP, TCP and QUIC and A knows all three: A's first
//! message goes out on all three, is delivered once, and both sides then use one
//! transport; when that transport's listener goes away, later sends and requests go over
//! another one, none lost or duplicated. Every wait is bounded by a failure guard.

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use msgnet::network::TransportStats;
use msgnet::{EndpointConfig, Host, Incoming, Keypair, Multiaddr, PeerId, Transport};

const GUARD: Duration = Duration::from_secs(60);
const TRANSPORTS: [Transport; 3] = [Transport::Udp, Transport::Quic, Transport::Tcp];

fn ma(s: &str) -> Multiaddr {
    s.parse().expect("valid multiaddr")
}

async fn host() -> Host {
    Host::builder(Keypair::generate_ed25519())
        .config(EndpointConfig::default())
        .listen(ma("/ip4/127.0.0.1/udp/0"))
        .listen(ma("/ip4/127.0.0.1/tcp/0"))
        .listen(ma("/ip4/127.0.0.1/udp/0/quic-v1"))
        .build()
        .await
        .expect("host builds")
}

async fn guard<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(GUARD, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: not done within {GUARD:?}"),
    }
}

/// Polls `check` until it holds (bounded by the guard).
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    guard(what, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

fn addr_of(host: &Host, transport: Transport) -> Multiaddr {
    host.listen_addrs()
        .into_iter()
        .find(|a| Transport::of(a) == Some(transport))
        .unwrap_or_else(|| panic!("{transport} address in {:?}", host.listen_addrs()))
}

/// A and B, A knowing every address of B.
async fn pair() -> (Host, Host) {
    let (a, b) = (host().await, host().await);
    for t in TRANSPORTS {
        a.add_address(b.local_peer_id(), addr_of(&b, t)).expect("add address");
    }
    (a, b)
}

fn total(stats: &TransportStats, f: impl Fn(&TransportStats, Transport) -> u64) -> u64 {
    TRANSPORTS.iter().map(|t| f(stats, *t)).sum()
}

/// Waits until the race is over on both sides: B received all three copies (two of them
/// dropped as duplicates) and both sides consolidated on the same transport. Returns it.
async fn settled(a: &Host, b: &Host) -> Transport {
    let (pa, pb) = (a.local_peer_id(), b.local_peer_id());
    eventually("B received every copy", || async {
        let s = b.transport_stats().await;
        s.duplicates >= 2 && TRANSPORTS.iter().all(|t| s.received_on(*t) >= 1)
    })
    .await;
    let chosen = guard("both sides consolidated on one transport", async {
        loop {
            let (ta, tb) = (a.consolidated_transport(pb).await, b.consolidated_transport(pa).await);
            if let (Some(ta), Some(tb)) = (ta, tb) {
                if ta == tb {
                    break ta;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let b_stats = b.transport_stats().await;
    assert_eq!(b_stats.duplicates, 2, "exactly the two later copies were dropped: {b_stats:?}");
    chosen
}

/// Receives `n` messages on `inbox` and checks that they are exactly `expected`, with
/// nothing more arriving shortly after.
async fn receive_exactly(inbox: &mut Incoming, expected: HashSet<u32>) {
    let mut seen = HashSet::new();
    while seen.len() < expected.len() {
        let msg = guard("receive", inbox.recv()).await.expect("stream open");
        let bytes: [u8; 4] = msg.payload[..].try_into().expect("4 bytes");
        assert!(seen.insert(u32::from_be_bytes(bytes)), "message {:?} delivered twice", bytes);
    }
    assert_eq!(seen, expected);
    if let Ok(extra) = tokio::time::timeout(Duration::from_millis(300), inbox.recv()).await {
        panic!("unexpected extra delivery: {extra:?}");
    }
}

fn spawn_echo(b: &Host) {
    let mut echo = b.handle("/echo/1").expect("handler");
    tokio::spawn(async move {
        while let Some(msg) = echo.recv().await {
            let payload = msg.payload.clone();
            let _ = msg.respond(payload);
        }
    });
}

/// Sends `range` as 4-byte messages one after the other and `requests` echo requests;
/// all succeed.
async fn traffic(a: &Host, peer: PeerId, range: std::ops::Range<u32>, requests: u32) {
    for i in range {
        guard("send", a.send(peer, "/count/1", i.to_be_bytes().to_vec())).await.expect("send succeeds");
    }
    for i in 0..requests {
        let payload = format!("req {i}").into_bytes();
        let reply = guard("request", a.request(peer, "/echo/1", payload.clone(), GUARD))
            .await
            .expect("request answered");
        assert_eq!(&reply[..], &payload[..]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_message_races_then_one_transport_carries_everything() {
    let (a, b) = pair().await;
    let mut inbox = b.handle("/count/1").expect("handler");
    spawn_echo(&b);
    let pb = b.local_peer_id();

    guard("first send", a.send(pb, "/count/1", 0u32.to_be_bytes().to_vec())).await.expect("first send");
    let a_stats = a.transport_stats().await;
    assert_eq!(a_stats.races, 1);
    for t in TRANSPORTS {
        assert_eq!(a_stats.raced_on(t), 1, "one copy on {t}: {a_stats:?}");
    }
    let chosen = settled(&a, &b).await;
    receive_exactly(&mut inbox, HashSet::from([0])).await;

    // The copies opened a path on every transport.
    let conns = a.connections(pb).await;
    for t in TRANSPORTS {
        assert!(conns.iter().any(|c| c.transport == t), "a {t} path in {conns:?}");
    }

    // From now on only the chosen transport carries messages, both ways of counting.
    let (a0, b0) = (a.transport_stats().await, b.transport_stats().await);
    traffic(&a, pb, 1..51, 20).await;
    receive_exactly(&mut inbox, (1..51).collect()).await;
    let (a1, b1) = (a.transport_stats().await, b.transport_stats().await);
    for t in TRANSPORTS {
        let sent = a1.sent_on(t) - a0.sent_on(t);
        let received = b1.received_on(t) - b0.received_on(t);
        if t == chosen {
            assert_eq!(sent, 70, "A sent everything on {t}: {a1:?}");
            assert_eq!(received, 70, "B received everything on {t}: {b1:?}");
        } else {
            assert_eq!((sent, received), (0, 0), "nothing on {t} (chosen {chosen}): {a1:?} {b1:?}");
        }
    }
    assert_eq!(a1.races, 1, "no second race");
    assert_eq!(total(&b1, TransportStats::received_on), 3 + 70);
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raced_request_is_answered_once() {
    let (a, b) = pair().await;
    let pb = b.local_peer_id();
    let mut echo = b.handle("/echo/1").expect("handler");
    let b2 = b.clone();
    let handled = tokio::spawn(async move {
        let mut n = 0u32;
        while let Some(msg) = echo.recv().await {
            n += 1;
            if n == 1 {
                // Answer the raced request only once both later copies were answered as
                // duplicates: A must keep waiting for the answer with the response.
                while b2.transport_stats().await.duplicates < 2 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            let mut reply = b"re: ".to_vec();
            reply.extend_from_slice(&msg.payload);
            msg.respond(reply).expect("respond");
        }
        n
    });

    let reply = guard("raced request", a.request(pb, "/echo/1", &b"first"[..], GUARD)).await.expect("answered");
    assert_eq!(&reply[..], b"re: first");
    assert_eq!(a.transport_stats().await.races, 1);
    settled(&a, &b).await;
    for i in 0..10 {
        let payload = format!("next {i}");
        let reply = guard("request", a.request(pb, "/echo/1", payload.clone(), GUARD)).await.expect("answered");
        assert_eq!(reply, format!("re: {payload}").as_bytes());
    }
    // A request to a protocol B does not handle fails as such, raced or not.
    let c = host().await;
    for t in TRANSPORTS {
        c.add_address(pb, addr_of(&b, t)).expect("add address");
    }
    let err = guard("unhandled", c.request(pb, "/nobody/1", &b"x"[..], GUARD)).await.expect_err("no handler");
    assert!(matches!(err, msgnet::SendError::UnsupportedProtocol(ref p) if p == "/nobody/1"), "{err:?}");

    b.close().await;
    let n = guard("handler ends", handled).await.expect("handler task");
    assert_eq!(n, 11, "the raced request reached the handler once, then the ten others");
    a.close().await;
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consolidated_listener_goes_away_and_traffic_moves() {
    let (a, b) = pair().await;
    let mut inbox = b.handle("/count/1").expect("handler");
    spawn_echo(&b);
    let pb = b.local_peer_id();

    guard("first send", a.send(pb, "/count/1", 0u32.to_be_bytes().to_vec())).await.expect("first send");
    let first = settled(&a, &b).await;
    receive_exactly(&mut inbox, HashSet::from([0])).await;

    // The chosen transport's listener goes away; later traffic moves to another one.
    let removed = addr_of(&b, first);
    b.remove_listener(&removed).await.expect("remove listener");
    assert!(!b.listen_addrs().contains(&removed), "{removed} no longer listed: {:?}", b.listen_addrs());
    assert_eq!(b.listen_addrs().len(), 2, "the other two stay: {:?}", b.listen_addrs());
    let err = b.remove_listener(&removed).await.expect_err("already removed");
    assert!(matches!(err, msgnet::HostError::UnsupportedAddress(_)), "{err:?}");
    let before = a.transport_stats().await;
    traffic(&a, pb, 1..31, 10).await;
    receive_exactly(&mut inbox, (1..31).collect()).await;
    let after = a.transport_stats().await;
    let moved: Vec<Transport> =
        TRANSPORTS.into_iter().filter(|t| *t != first && after.sent_on(*t) > before.sent_on(*t)).collect();
    assert!(!moved.is_empty(), "traffic moved off {first}: {before:?} → {after:?}");
    assert_ne!(a.consolidated_transport(pb).await, Some(first));

    // And once more: the next transport's listener goes away too. (Once A saw its
    // connection close: a message written into a connection that B is closing at that
    // very moment may or may not have been read, and its retry would then be a second
    // copy; racing is not about that.)
    let second = moved[0];
    b.remove_listener(&addr_of(&b, second)).await.expect("remove listener");
    eventually("A sees the connection close", || async {
        !a.connections(pb).await.iter().any(|c| c.transport == second)
    })
    .await;
    let before = a.transport_stats().await;
    traffic(&a, pb, 31..51, 5).await;
    receive_exactly(&mut inbox, (31..51).collect()).await;
    let after = a.transport_stats().await;
    let third = TRANSPORTS.into_iter().find(|t| *t != first && *t != second).expect("a third transport");
    assert!(after.sent_on(third) >= before.sent_on(third) + 25, "{third} carries the rest: {after:?}");

    // An address B never listened on is refused.
    let err = b.remove_listener(&ma("/ip4/127.0.0.1/tcp/1")).await.expect_err("not listened on");
    assert!(matches!(err, msgnet::HostError::UnsupportedAddress(_)), "{err:?}");
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_in_flight_when_the_listener_goes_away_are_not_lost() {
    let (a, b) = pair().await;
    let mut inbox = b.handle("/count/1").expect("handler");
    let pb = b.local_peer_id();
    guard("first send", a.send(pb, "/count/1", 0u32.to_be_bytes().to_vec())).await.expect("first send");
    let first = settled(&a, &b).await;

    // 300 sends under way while the consolidated transport's listener goes away: each
    // one succeeds (on that transport, or retried on another), and each message arrives.
    // A message that arrived just before its transport closed, unacknowledged, is sent
    // again, so here "at least once" is what holds, not "exactly once".
    let sends: Vec<_> = (1..301u32).map(|i| a.send(pb, "/count/1", i.to_be_bytes().to_vec())).collect();
    let all = tokio::spawn(futures::future::join_all(sends));
    b.remove_listener(&addr_of(&b, first)).await.expect("remove listener");
    let results = guard("sends", all).await.expect("sends task");
    assert!(results.iter().all(Result::is_ok), "{:?}", results.iter().find(|r| r.is_err()));
    let mut seen = HashSet::new();
    while seen.len() < 301 {
        let msg = guard("receive", inbox.recv()).await.expect("stream open");
        let bytes: [u8; 4] = msg.payload[..].try_into().expect("4 bytes");
        seen.insert(u32::from_be_bytes(bytes));
    }
    assert_eq!(seen, (0..301).collect::<HashSet<_>>());
    a.close().await;
    b.close().await;
}

/// A peer that does not race: a plain rust-libp2p `Swarm` with msgnet's `Behaviour` on TCP
/// and QUIC, which registers `/echo/1` but not the race protocol. A knows both addresses,
/// so its first request is raced; both copies are refused as an unknown protocol, and the
/// request then goes out once, the plain way. The peer sees exactly one request and one
/// message, and A's later sends are not raced again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_without_racing_gets_one_plain_copy() {
    use futures::StreamExt;
    use libp2p::swarm::SwarmEvent;
    use libp2p::{noise, tcp, yamux};
    use msgnet_libp2p::{Behaviour, Config, Event};

    let mut plain = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
        .expect("tcp")
        .with_quic()
        .with_behaviour(|_| Behaviour::new(Config::default()))
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    assert!(plain.behaviour_mut().handle("/echo/1"));
    plain.listen_on(ma("/ip4/127.0.0.1/tcp/0")).expect("tcp listen");
    plain.listen_on(ma("/ip4/127.0.0.1/udp/0/quic-v1")).expect("quic listen");
    let mut addrs = Vec::new();
    while addrs.len() < 2 {
        if let SwarmEvent::NewListenAddr { address, .. } = guard("plain listens", plain.select_next_some()).await {
            addrs.push(address);
        }
    }
    let peer = *plain.local_peer_id();
    let a = host().await;
    for addr in &addrs {
        a.add_address(peer, addr.clone()).expect("add address");
    }

    // The plain peer answers every request and reports what it received.
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(Event::Message(msg)) = plain.select_next_some().await {
                if let Some(req) = &msg.request {
                    let mut reply = b"re: ".to_vec();
                    reply.extend_from_slice(&msg.payload);
                    plain.behaviour_mut().respond(req, Ok(reply.into())).expect("respond");
                }
                let _ = seen_tx.send((msg.protocol.to_string(), msg.payload.to_vec(), msg.request.is_some()));
            }
        }
    });

    let reply = guard("request", a.request(peer, "/echo/1", b"first".to_vec(), GUARD)).await.expect("answered");
    assert_eq!(&reply[..], b"re: first");
    let stats = a.transport_stats().await;
    assert_eq!(stats.races, 1, "the first request was raced: {stats:?}");
    assert_eq!(stats.raced_on(Transport::Tcp) + stats.raced_on(Transport::Quic), 2, "{stats:?}");
    assert_eq!(a.consolidated_transport(peer).await, None, "no ACK, so nothing consolidated");

    guard("send", a.send(peer, "/echo/1", b"second".to_vec())).await.expect("send succeeds");
    let first = guard("peer saw the request", seen_rx.recv()).await.expect("driver runs");
    assert_eq!(first, ("/echo/1".to_owned(), b"first".to_vec(), true));
    let second = guard("peer saw the message", seen_rx.recv()).await.expect("driver runs");
    assert_eq!(second, ("/echo/1".to_owned(), b"second".to_vec(), false));
    if let Ok(extra) = tokio::time::timeout(Duration::from_millis(300), seen_rx.recv()).await {
        panic!("the peer received a second copy: {extra:?}");
    }
    assert_eq!(a.transport_stats().await.races, 1, "no second race");
    driver.abort();
    a.close().await;
}
