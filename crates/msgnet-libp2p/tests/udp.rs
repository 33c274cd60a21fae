//! The msgnet behaviour owning msgnet's UDP packet transport beside TCP, over real sockets
//! on 127.0.0.1: messages and requests over UDP with no libp2p connection, one swarm
//! talking to a UDP peer and a TCP peer at once, garbage datagrams, peers that are gone,
//! the fallback to TCP, and UDP addresses learnt through identify.

use std::error::Error;
use std::time::Duration;

use bytes::Bytes;
use futures::future::select_all;
use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identify, noise, tcp, yamux, Multiaddr, PeerId, Swarm};
use msgnet_libp2p::{
    Behaviour, Config, Delivery, DropReason, EndpointConfig, Event, SendError, SendOptions, UdpError, UDP_SESSION,
};

/// Every wait ends by this; a loaded CI machine is slow, the protocol is not.
const WAIT: Duration = Duration::from_secs(60);

#[derive(NetworkBehaviour)]
struct Node {
    msgnet: Behaviour,
    identify: identify::Behaviour,
}

/// A swarm with TCP, identify and the msgnet behaviour; with `udp`, the behaviour owns a
/// UDP socket on 127.0.0.1 (or `udp_listen`).
fn node(udp: Option<(&str, EndpointConfig)>) -> Swarm<Node> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
        .expect("tcp")
        .with_behaviour(|key| -> Result<Node, Box<dyn Error + Send + Sync>> {
            let mut msgnet = Behaviour::new(Config::default());
            if let Some((listen, endpoint)) = udp {
                msgnet = msgnet.with_udp(key, &listen.parse()?, endpoint)?;
            }
            Ok(Node {
                msgnet,
                identify: identify::Behaviour::new(identify::Config::new("/msgnet-udp-test/1".into(), key.public())),
            })
        })
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

fn udp_node() -> Swarm<Node> {
    node(Some(("/ip4/127.0.0.1/udp/0", EndpointConfig::default())))
}

/// Listens on TCP on 127.0.0.1 and returns the address, polling only this swarm.
async fn listen_tcp(swarm: &mut Swarm<Node>) -> Multiaddr {
    swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("addr")).expect("listen");
    loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            return address;
        }
    }
}

/// The first UDP listen address, with `/p2p/<id>`.
fn udp_addr(swarm: &Swarm<Node>) -> Multiaddr {
    let addrs = swarm.behaviour().msgnet.udp_listen_addrs();
    let addr = addrs.first().expect("a UDP listen address").clone();
    addr.with(Protocol::P2p(*swarm.local_peer_id()))
}

/// The next event of any of `swarms`, with its index.
async fn next(swarms: &mut [&mut Swarm<Node>]) -> (usize, SwarmEvent<NodeEvent>) {
    let futures: Vec<_> = swarms.iter_mut().map(|s| s.select_next_some()).collect();
    let fut = select_all(futures);
    match tokio::time::timeout(WAIT, fut).await {
        Ok((event, i, _)) => (i, event),
        Err(_) => panic!("no swarm event within {WAIT:?}"),
    }
}

/// Polls `swarms` (answering requests with the payload upper-cased) until `step`, called
/// with every msgnet event first, returns `true`.
async fn run_until(swarms: &mut [&mut Swarm<Node>], what: &str, mut step: impl FnMut(usize, &Event) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        let (i, e) = next(swarms).await;
        if let SwarmEvent::Behaviour(NodeEvent::Msgnet(e)) = e {
            let done = step(i, &e);
            if let Event::Message(m) = &e {
                if let Some(req) = &m.request {
                    let reply = Bytes::from(m.payload.to_ascii_uppercase());
                    swarms[i].behaviour_mut().msgnet.respond(req, Ok(reply)).expect("respond");
                }
            }
            if done {
                return;
            }
        }
    }
}

/// (a) Two swarms, each owning UDP and TCP, exchange messages (one fragmented) and
/// requests both ways over UDP; no libp2p connection exists.
#[tokio::test]
async fn messages_and_requests_over_udp() {
    let mut a = udp_node();
    let mut b = udp_node();
    // Both own TCP as well (listening, unused here); the UDP listen addresses are
    // reported on the first polls, below.
    a.listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("addr")).expect("listen");
    b.listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("addr")).expect("listen");
    let (a_id, b_id) = (*a.local_peer_id(), *b.local_peer_id());
    for s in [&mut a, &mut b] {
        s.behaviour_mut().msgnet.handle("/test/msg/1");
        s.behaviour_mut().msgnet.handle("/test/echo/1");
    }
    let a_udp = udp_addr(&a);
    b.behaviour_mut().msgnet.add_address(a_id, a_udp.clone());

    const MESSAGES: usize = 300;
    const REQUESTS: usize = 50;
    let big = Bytes::from(vec![7u8; 100_000]);
    let mut sends = Vec::new();
    for i in 0..MESSAGES {
        let payload = Bytes::from(format!("message {i}").repeat(1 + i % 9));
        sends.push(b.behaviour_mut().msgnet.send(a_id, "/test/msg/1", payload).expect("send"));
    }
    sends.push(b.behaviour_mut().msgnet.send(a_id, "/test/msg/1", big.clone()).expect("send big"));
    let mut requests = Vec::new();
    for i in 0..REQUESTS {
        let payload = Bytes::from(format!("request {i}"));
        requests.push(b.behaviour_mut().msgnet.request(a_id, "/test/echo/1", payload).expect("request"));
    }

    let (mut acked, mut answered, mut received, mut got_big) = (0, 0, 0, false);
    let (mut listen_events, mut sessions_up) = (0, 0);
    run_until(&mut [&mut a, &mut b], "the exchange", |i, e| {
        match e {
            Event::Message(m) => {
                assert_ne!(m.session.0 & UDP_SESSION, 0, "delivered over UDP");
                if i == 0 {
                    assert_eq!(m.peer, b_id);
                    received += 1;
                    if m.payload.len() == big.len() {
                        assert_eq!(m.payload, big);
                        got_big = true;
                    }
                } else {
                    assert_eq!(m.peer, a_id);
                }
            }
            Event::SendComplete { id, result } => {
                assert_eq!(i, 1);
                assert_eq!(result, &Ok(()));
                assert!(sends.contains(id));
                acked += 1;
            }
            Event::Response { id, result } => {
                assert_eq!(i, 1);
                let body = result.as_ref().expect("response");
                assert!(body.starts_with(b"REQUEST "), "{body:?}");
                assert!(requests.contains(id));
                answered += 1;
            }
            Event::UdpListenAddr { address } => {
                assert!(multiaddr_is_udp(address));
                listen_events += 1;
            }
            Event::UdpSessionUp { peer, .. } => {
                assert_eq!(*peer, if i == 0 { b_id } else { a_id });
                sessions_up += 1;
            }
            _ => {}
        }
        acked == MESSAGES + 1 && answered == REQUESTS && received == MESSAGES + 1 + REQUESTS && got_big
    })
    .await;
    // a knows b only through the session b started: reply over it.
    let reverse = a.behaviour_mut().msgnet.request(b_id, "/test/echo/1", Bytes::from_static(b"from a")).expect("request");
    assert_eq!(outcome(&mut [&mut a, &mut b], reverse).await, Ok(Bytes::from_static(b"FROM A")));

    assert_eq!(listen_events, 2, "each swarm reported its UDP address");
    assert_eq!(sessions_up, 2, "one session, reported on both sides");
    assert_eq!(a.connected_peers().count(), 0, "no libp2p connection");
    assert_eq!(b.connected_peers().count(), 0, "no libp2p connection");
    let a_stats = a.behaviour().msgnet.udp_stats().expect("udp on").clone();
    assert!(a_stats.messages_delivered >= (MESSAGES + 1 + REQUESTS) as u64, "{a_stats:?}");
    assert_eq!(a_stats.dropped_total(), 0, "{a_stats:?}");
    assert_eq!(b.behaviour().msgnet.udp_peers(), vec![a_id]);
    let sessions = a.behaviour().msgnet.udp_sessions(&b_id);
    assert_eq!(sessions.len(), 1);
    assert!(sessions[0].established && !sessions[0].initiator);
}

/// Per-send options reach the UDP endpoint: an unreliable message over the datagram limit
/// is refused there (a reliable one of that size is not), unreliable ones are delivered and
/// complete, ordered ones arrive in order, and a send without 0-RTT still goes out once
/// the handshake completed.
#[tokio::test]
async fn send_options_apply_over_udp() {
    let mut a = udp_node();
    let mut b = udp_node();
    let (a_id, b_id) = (*a.local_peer_id(), *b.local_peer_id());
    a.behaviour_mut().msgnet.handle("/test/msg/1");
    b.behaviour_mut().msgnet.add_address(a_id, udp_addr(&a));
    let opts = |delivery| SendOptions { delivery, early_data: true };

    let over = Bytes::from(vec![1u8; (64 << 10) + 1]);
    let refused = b.behaviour_mut().msgnet.send_with(a_id, "/test/msg/1", over.clone(), opts(Delivery::Unreliable));
    assert!(matches!(refused, Err(SendError::MessageTooLarge { limit: 65536, .. })), "{refused:?}");
    let first = SendOptions { delivery: Delivery::Reliable, early_data: false };
    let mut ids = vec![b.behaviour_mut().msgnet.send_with(a_id, "/test/msg/1", over.clone(), first).expect("reliable")];
    const N: u32 = 60;
    for i in 0..N {
        let payload = Bytes::from(i.to_be_bytes().to_vec());
        let delivery = if i % 2 == 0 { Delivery::Ordered } else { Delivery::Unreliable };
        ids.push(b.behaviour_mut().msgnet.send_with(a_id, "/test/msg/1", payload, opts(delivery)).expect("send"));
    }
    let (mut done, mut big, mut ordered, mut unreliable) = (0, false, Vec::new(), 0);
    run_until(&mut [&mut a, &mut b], "the options' sends", |i, e| {
        match e {
            Event::Message(m) if i == 0 => {
                assert_eq!(m.peer, b_id);
                assert_ne!(m.session.0 & UDP_SESSION, 0, "delivered over UDP");
                if m.payload.len() == over.len() {
                    big = true;
                } else {
                    let n = u32::from_be_bytes(m.payload[..].try_into().expect("4 bytes"));
                    if n % 2 == 0 {
                        ordered.push(n);
                    } else {
                        unreliable += 1;
                    }
                }
            }
            Event::SendComplete { id, result } if i == 1 => {
                assert!(ids.contains(id));
                assert_eq!(result, &Ok(()));
                done += 1;
            }
            _ => {}
        }
        // Unreliable messages may be lost in principle; on loopback they are not.
        done == ids.len() && big && ordered.len() == N as usize / 2 && unreliable == N / 2
    })
    .await;
    assert!(ordered.windows(2).all(|w| w[0] < w[1]), "ordered messages in order: {ordered:?}");
}

fn multiaddr_is_udp(addr: &Multiaddr) -> bool {
    msgnet_libp2p::multiaddr_to_socket(addr).is_some()
}

/// (b) One swarm talks at the same time to a peer over UDP and to another over TCP (the
/// msgnet stream), with the same calls.
#[tokio::test]
async fn one_swarm_udp_and_tcp_peers() {
    let mut hub = udp_node();
    let mut u = udp_node();
    let mut t = node(None);
    listen_tcp(&mut hub).await;
    let t_tcp = listen_tcp(&mut t).await;
    let (u_id, t_id) = (*u.local_peer_id(), *t.local_peer_id());
    u.behaviour_mut().msgnet.handle("/test/echo/1");
    t.behaviour_mut().msgnet.handle("/test/echo/1");
    hub.behaviour_mut().msgnet.add_address(u_id, udp_addr(&u));
    hub.behaviour_mut().msgnet.add_address(t_id, t_tcp);

    const EACH: usize = 40;
    let mut to_u = Vec::new();
    let mut to_t = Vec::new();
    for i in 0..EACH {
        let m = hub.behaviour_mut().msgnet.send(u_id, "/test/echo/1", Bytes::from(format!("m{i}"))).expect("send u");
        let r = hub.behaviour_mut().msgnet.request(u_id, "/test/echo/1", Bytes::from(format!("to u {i}"))).expect("req u");
        to_u.extend([m, r]);
        let m = hub.behaviour_mut().msgnet.send(t_id, "/test/echo/1", Bytes::from(format!("m{i}"))).expect("send t");
        let r = hub.behaviour_mut().msgnet.request(t_id, "/test/echo/1", Bytes::from(format!("to t {i}"))).expect("req t");
        to_t.extend([m, r]);
    }
    let (mut done_u, mut done_t) = (0, 0);
    let (mut at_u, mut at_t) = (0, 0);
    run_until(&mut [&mut hub, &mut u, &mut t], "both peers", |i, e| {
        match (i, e) {
            (0, Event::SendComplete { id, result }) => {
                assert_eq!(result, &Ok(()));
                if to_u.contains(id) {
                    done_u += 1;
                } else {
                    assert!(to_t.contains(id));
                    done_t += 1;
                }
            }
            (0, Event::Response { id, result }) => {
                let body = result.as_ref().expect("response");
                if to_u.contains(id) {
                    assert!(body.starts_with(b"TO U "), "{body:?}");
                    done_u += 1;
                } else {
                    assert!(to_t.contains(id));
                    assert!(body.starts_with(b"TO T "), "{body:?}");
                    done_t += 1;
                }
            }
            (1, Event::Message(m)) => {
                assert_ne!(m.session.0 & UDP_SESSION, 0, "u is reached over UDP");
                at_u += 1;
            }
            (2, Event::Message(m)) => {
                assert_eq!(m.session.0 & UDP_SESSION, 0, "t is reached over the msgnet stream");
                at_t += 1;
            }
            _ => {}
        }
        // Every message arrives once, and every send and request completes.
        (done_u, done_t, at_u, at_t) == (2 * EACH, 2 * EACH, 2 * EACH, 2 * EACH)
    })
    .await;
    let connected: Vec<PeerId> = hub.connected_peers().copied().collect();
    assert_eq!(connected, vec![t_id], "a TCP connection to t only");
    assert_eq!(hub.behaviour().msgnet.udp_sessions(&u_id).len(), 1);
    assert!(hub.behaviour().msgnet.udp_sessions(&t_id).is_empty());
    assert_eq!(hub.behaviour().msgnet.supports_msgnet(&t_id), Some(true));
    assert!(t.behaviour().msgnet.udp_stats().is_none(), "t has no UDP transport");
}

/// (c) Garbage datagrams to the behaviour's socket are dropped and counted; the
/// transport keeps serving.
#[tokio::test]
async fn garbage_datagrams_are_dropped_and_counted() {
    let mut a = udp_node();
    let mut b = udp_node();
    let a_id = *a.local_peer_id();
    a.behaviour_mut().msgnet.handle("/test/echo/1");
    let a_udp = udp_addr(&a);
    b.behaviour_mut().msgnet.add_address(a_id, a_udp.clone());
    let first = b.behaviour_mut().msgnet.request(a_id, "/test/echo/1", Bytes::from_static(b"one")).expect("request");
    assert_eq!(outcome(&mut [&mut b, &mut a], first).await, Ok(Bytes::from_static(b"ONE")));

    let before = a.behaviour().msgnet.udp_stats().expect("udp on").clone();
    let target = a.behaviour().msgnet.udp_local_addr().expect("udp on");
    let junk = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut x: u32 = 0x1234_5678;
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x as u8
    };
    let mut datagrams: Vec<Vec<u8>> = Vec::new();
    for i in 0..10 {
        datagrams.push(Vec::new()); // empty: malformed
        let mut d: Vec<u8> = (0..40 + i).map(|_| rand()).collect();
        d[0] &= 0x7f; // a data packet for no session
        datagrams.push(d);
        let mut d: Vec<u8> = (0..1400).map(|_| rand()).collect();
        d[0] = 0xff; // no such packet type
        datagrams.push(d);
        let d: Vec<u8> = (0..3 + i * 37).map(|_| rand()).collect(); // anything
        datagrams.push(d);
    }
    for d in &datagrams {
        junk.send_to(d, target).expect("send junk");
    }
    let n = datagrams.len() as u64;
    let mut stats = before.clone();
    let deadline = tokio::time::Instant::now() + WAIT;
    while stats.dropped_total() < before.dropped_total() + n {
        assert!(tokio::time::Instant::now() < deadline, "drops not counted: {stats:?}");
        let _ = tokio::time::timeout(Duration::from_millis(100), next(&mut [&mut a, &mut b])).await;
        stats = a.behaviour().msgnet.udp_stats().expect("udp on").clone();
    }
    assert!(stats.rx_datagrams >= before.rx_datagrams + n);
    assert!(stats.dropped(DropReason::Malformed) >= before.dropped(DropReason::Malformed) + 10, "{stats:?}");
    assert_eq!(stats.messages_delivered, before.messages_delivered, "garbage delivered nothing");

    let second = b.behaviour_mut().msgnet.request(a_id, "/test/echo/1", Bytes::from_static(b"two")).expect("request");
    assert_eq!(outcome(&mut [&mut b, &mut a], second).await, Ok(Bytes::from_static(b"TWO")));
}

fn quick_failures() -> EndpointConfig {
    EndpointConfig {
        handshake_timeout: Duration::from_secs(2),
        send_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(4),
        keepalive_interval: Duration::from_secs(1),
        ..EndpointConfig::default()
    }
}

/// Waits for the outcome of request `id` made by `swarms[0]`.
async fn outcome(swarms: &mut [&mut Swarm<Node>], id: msgnet_libp2p::MessageId) -> Result<Bytes, SendError> {
    let mut result = None;
    run_until(swarms, "the request's outcome", |i, e| {
        if let (0, Event::Response { id: got, result: r }) = (i, e) {
            if *got == id {
                result = Some(r.clone());
            }
        }
        result.is_some()
    })
    .await;
    result.expect("set")
}

/// (d) A request to a UDP peer that is gone fails with a typed error: `Unreachable` when
/// no session exists (a peer whose behaviour was dropped also closed its sessions, so we
/// learn it at once), `TimedOut` or `SessionClosed` on a session whose peer hangs.
#[tokio::test]
async fn requests_to_a_gone_udp_peer_fail() {
    let mut a = node(Some(("/ip4/127.0.0.1/udp/0", quick_failures())));
    // A peer that never answers: its socket is gone.
    let gone = udp_node();
    let (gone_id, gone_addr) = (*gone.local_peer_id(), udp_addr(&gone));
    drop(gone);
    a.behaviour_mut().msgnet.add_address(gone_id, gone_addr);
    let id = a.behaviour_mut().msgnet.request(gone_id, "/test/echo/1", Bytes::from_static(b"hello")).expect("request");
    let result = outcome(&mut [&mut a], id).await;
    assert!(matches!(result, Err(SendError::Unreachable(_))), "{result:?}");

    // Peers with an established session: b is dropped (its transport sends CLOSE), c hangs
    // (its swarm is never polled again: the socket stays open and silent).
    let mut b = udp_node();
    let mut c = udp_node();
    let (b_id, c_id) = (*b.local_peer_id(), *c.local_peer_id());
    for (s, id) in [(&mut b, b_id), (&mut c, c_id)] {
        s.behaviour_mut().msgnet.handle("/test/echo/1");
        a.behaviour_mut().msgnet.add_address(id, udp_addr(s));
    }
    // Two round trips: the second one's data packets validate b's side of the session
    // (an unvalidated responder session cannot send CLOSE).
    for _ in 0..2 {
        let id = a.behaviour_mut().msgnet.request(b_id, "/test/echo/1", Bytes::from_static(b"hi")).expect("request");
        assert_eq!(outcome(&mut [&mut a, &mut b], id).await, Ok(Bytes::from_static(b"HI")));
    }
    let id = a.behaviour_mut().msgnet.request(c_id, "/test/echo/1", Bytes::from_static(b"hi")).expect("request");
    assert_eq!(outcome(&mut [&mut a, &mut c], id).await, Ok(Bytes::from_static(b"HI")));

    drop(b);
    let mut down = None;
    run_until(&mut [&mut a], "b's session to end", |_, e| {
        // (c's session may end meanwhile too, by its idle timeout, on a slow machine.)
        if let Event::UdpSessionDown { peer, reason } = e {
            if *peer == b_id {
                down = Some(reason.clone());
            }
        }
        down.is_some()
    })
    .await;
    let reason = down.expect("set");
    assert!(reason.contains("closed by peer"), "{reason}");
    // Its address is still known: a new handshake, which nobody answers.
    let id = a.behaviour_mut().msgnet.request(b_id, "/test/echo/1", Bytes::from_static(b"again?")).expect("request");
    let result = outcome(&mut [&mut a], id).await;
    assert!(matches!(result, Err(SendError::Unreachable(_))), "{result:?}");

    let id = a.behaviour_mut().msgnet.request(c_id, "/test/echo/1", Bytes::from_static(b"still there?")).expect("request");
    let result = outcome(&mut [&mut a], id).await;
    // Not acknowledged in time on the session, or (if the session idled out first) a new
    // handshake that c never answers.
    assert!(
        matches!(result, Err(SendError::TimedOut | SendError::SessionClosed(_) | SendError::Unreachable(_))),
        "{result:?}"
    );
    assert_eq!(a.connected_peers().count(), 0);
    drop(c);
}

/// A request over UDP that the peer acknowledges but never answers fails with `TimedOut`
/// after `Config::request_timeout`, as on streams.
#[tokio::test]
async fn unanswered_udp_request_times_out() {
    let config = Config { request_timeout: Duration::from_secs(1), ..Config::default() };
    let mut a = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
        .expect("tcp")
        .with_behaviour(|key| -> Result<Node, Box<dyn Error + Send + Sync>> {
            let msgnet = Behaviour::new(config).with_udp(key, &"/ip4/127.0.0.1/udp/0".parse()?, EndpointConfig::default())?;
            let identify = identify::Behaviour::new(identify::Config::new("/msgnet-udp-test/1".into(), key.public()));
            Ok(Node { msgnet, identify })
        })
        .expect("behaviour")
        .build();
    let mut b = udp_node();
    let b_id = *b.local_peer_id();
    b.behaviour_mut().msgnet.handle("/test/silent/1");
    a.behaviour_mut().msgnet.add_address(b_id, udp_addr(&b));
    let id = a.behaviour_mut().msgnet.request(b_id, "/test/silent/1", Bytes::from_static(b"anyone?")).expect("request");
    let (mut delivered, mut outcome) = (None, None);
    let deadline = tokio::time::Instant::now() + WAIT;
    while outcome.is_none() {
        assert!(tokio::time::Instant::now() < deadline, "no outcome");
        match next(&mut [&mut a, &mut b]).await {
            // b holds the request and never responds.
            (1, SwarmEvent::Behaviour(NodeEvent::Msgnet(Event::Message(m)))) => delivered = m.request,
            (0, SwarmEvent::Behaviour(NodeEvent::Msgnet(Event::Response { id: got, result }))) => {
                assert_eq!(got, id);
                outcome = Some(result);
            }
            _ => {}
        }
    }
    assert_eq!(outcome, Some(Err(SendError::TimedOut)));
    let req = delivered.expect("b got the request");
    // A late answer is still accepted by b's endpoint, and dropped and counted at a.
    assert_eq!(a.behaviour().msgnet.late_responses(), 0);
    b.behaviour_mut().msgnet.respond(&req, Ok(Bytes::from_static(b"too late"))).expect("respond");
    let deadline = tokio::time::Instant::now() + WAIT;
    while a.behaviour().msgnet.late_responses() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the late response never arrived");
        let _ = tokio::time::timeout(Duration::from_millis(100), next(&mut [&mut a, &mut b])).await;
    }
    assert_eq!(a.behaviour().msgnet.late_responses(), 1);
}

/// A peer whose UDP address does not answer but that has a TCP address is reached over
/// TCP once the UDP handshake gives up.
#[tokio::test]
async fn falls_back_to_tcp_when_udp_cannot_reach() {
    let mut a = node(Some(("/ip4/127.0.0.1/udp/0", quick_failures())));
    let mut b = node(None);
    let b_id = *b.local_peer_id();
    let b_tcp = listen_tcp(&mut b).await;
    b.behaviour_mut().msgnet.handle("/test/echo/1");
    // A UDP address where nobody listens, and b's real TCP address.
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let dead_addr: Multiaddr = format!("/ip4/127.0.0.1/udp/{}", dead.local_addr().expect("addr").port()).parse().expect("addr");
    drop(dead);
    a.behaviour_mut().msgnet.add_address(b_id, dead_addr);
    a.behaviour_mut().msgnet.add_address(b_id, b_tcp);
    let id = a.behaviour_mut().msgnet.request(b_id, "/test/echo/1", Bytes::from_static(b"by any means")).expect("request");
    assert_eq!(outcome(&mut [&mut a, &mut b], id).await, Ok(Bytes::from_static(b"BY ANY MEANS")));
    assert_eq!(a.connected_peers().copied().collect::<Vec<_>>(), vec![b_id]);
    assert!(a.behaviour().msgnet.udp_sessions(&b_id).is_empty());
    let stats = a.behaviour().msgnet.udp_stats().expect("udp on");
    assert!(stats.tx_datagrams > 0, "UDP was tried first: {stats:?}");
    assert_eq!(stats.handshakes_completed, 0);
}

/// A UDP listen address made external is advertised by identify; the peer's msgnet
/// behaviour picks it up and its next requests go over UDP.
#[tokio::test]
async fn identify_advertises_the_udp_address() {
    let mut a = udp_node();
    let mut b = udp_node();
    let a_id = *a.local_peer_id();
    let a_tcp = listen_tcp(&mut a).await;
    a.behaviour_mut().msgnet.handle("/test/echo/1");
    for addr in a.behaviour().msgnet.udp_listen_addrs() {
        a.add_external_address(addr);
    }
    b.behaviour_mut().msgnet.add_address(a_id, a_tcp);
    let mut n = 0u32;
    let mut pending = Some(b.behaviour_mut().msgnet.request(a_id, "/test/echo/1", Bytes::from_static(b"r0")).expect("request"));
    let mut over_tcp = 0;
    let deadline = tokio::time::Instant::now() + WAIT;
    // Request after request until one arrives at a over UDP.
    let mut over_udp = false;
    while !over_udp {
        assert!(tokio::time::Instant::now() < deadline, "b never used a's UDP address");
        let (i, e) = next(&mut [&mut a, &mut b]).await;
        let SwarmEvent::Behaviour(NodeEvent::Msgnet(e)) = e else { continue };
        match (i, e) {
            (0, Event::Message(m)) => {
                if m.session.0 & UDP_SESSION != 0 {
                    over_udp = true;
                } else {
                    over_tcp += 1;
                }
                let req = m.request.expect("a request");
                a.behaviour_mut().msgnet.respond(&req, Ok(m.payload)).expect("respond");
            }
            (1, Event::Response { id, result }) => {
                assert_eq!(Some(id), pending);
                assert!(result.is_ok(), "{result:?}");
                n += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                let payload = Bytes::from(format!("r{n}"));
                pending = Some(b.behaviour_mut().msgnet.request(a_id, "/test/echo/1", payload).expect("request"));
            }
            _ => {}
        }
    }
    assert!(over_tcp >= 1, "the first request went over the TCP connection");
    let last = pending.expect("a request in flight");
    assert!(outcome(&mut [&mut b, &mut a], last).await.is_ok());
    assert_eq!(b.behaviour().msgnet.udp_peers(), vec![a_id]);
}

/// A socket bound to 0.0.0.0 names its port on the IPs of the swarm's listen addresses.
#[tokio::test]
async fn unspecified_bind_reports_interface_addresses() {
    let mut a = node(Some(("/ip4/0.0.0.0/udp/0", EndpointConfig::default())));
    assert!(a.behaviour().msgnet.udp_listen_addrs().is_empty());
    let port = a.behaviour().msgnet.udp_local_addr().expect("udp on").port();
    a.listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("addr")).expect("listen");
    let expected: Multiaddr = format!("/ip4/127.0.0.1/udp/{port}").parse().expect("addr");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        assert!(tokio::time::Instant::now() < deadline, "no UdpListenAddr");
        if let SwarmEvent::Behaviour(NodeEvent::Msgnet(Event::UdpListenAddr { address })) = next(&mut [&mut a]).await.1 {
            assert_eq!(address, expected);
            break;
        }
    }
    assert_eq!(a.behaviour().msgnet.udp_listen_addrs(), vec![expected]);
}

#[tokio::test]
async fn with_udp_refuses_bad_settings() {
    let key = libp2p::identity::Keypair::generate_ed25519();
    let b = || Behaviour::new(Config::default());
    for bad in ["/ip4/127.0.0.1/udp/0/quic-v1", "/ip4/127.0.0.1/tcp/0", "/dns4/localhost/udp/0"] {
        let r = b().with_udp(&key, &bad.parse().expect("addr"), EndpointConfig::default());
        assert!(matches!(r, Err(UdpError::UnsupportedAddress(_))), "{bad}");
    }
    let other = libp2p::identity::Keypair::generate_ed25519().public().to_peer_id();
    let wrong_id: Multiaddr = format!("/ip4/127.0.0.1/udp/0/p2p/{other}").parse().expect("addr");
    assert!(matches!(
        b().with_udp(&key, &wrong_id, EndpointConfig::default()),
        Err(UdpError::UnsupportedAddress(_))
    ));
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let taken_addr: Multiaddr = format!("/ip4/127.0.0.1/udp/{}", taken.local_addr().expect("addr").port()).parse().expect("addr");
    assert!(matches!(b().with_udp(&key, &taken_addr, EndpointConfig::default()), Err(UdpError::Bind { .. })));
    let on = b().with_udp(&key, &"/ip4/127.0.0.1/udp/0".parse().expect("addr"), EndpointConfig::default()).expect("bind");
    assert!(matches!(
        on.with_udp(&key, &"/ip4/127.0.0.1/udp/0".parse().expect("addr"), EndpointConfig::default()),
        Err(UdpError::AlreadyEnabled)
    ));
}

#[test]
fn with_udp_needs_a_runtime() {
    let key = libp2p::identity::Keypair::generate_ed25519();
    let r = Behaviour::new(Config::default()).with_udp(&key, &"/ip4/127.0.0.1/udp/0".parse().expect("addr"), EndpointConfig::default());
    assert!(matches!(r, Err(UdpError::NoRuntime)));
}
