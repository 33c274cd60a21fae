//! Two (or more) hosts on real loopback UDP (127.0.0.1 only). Every wait is bounded by a
//! failure guard; assertions are on counts, contents and error variants.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use msgnet::{Bytes, EndpointConfig, Host, HostError, HostEvent, Keypair, Multiaddr, SendError};

/// Failure guard for whole scenarios (never a wait for something to "probably" happen).
const GUARD: Duration = Duration::from_secs(60);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

fn loopback() -> Multiaddr {
    "/ip4/127.0.0.1/udp/0".parse().expect("valid multiaddr")
}

fn config() -> EndpointConfig {
    EndpointConfig { handshake_timeout: HANDSHAKE_TIMEOUT, ..EndpointConfig::default() }
}

async fn host() -> Host {
    Host::builder(Keypair::generate_ed25519())
        .listen(loopback())
        .config(config())
        .build()
        .await
        .expect("host builds")
}

/// Two hosts that know each other's address.
async fn pair() -> (Host, Host) {
    let (a, b) = (host().await, host().await);
    a.add_address(b.local_peer_id(), b.listen_addrs()[0].clone()).expect("b's address");
    b.add_address(a.local_peer_id(), a.listen_addrs()[0].clone()).expect("a's address");
    (a, b)
}

async fn guard<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(GUARD, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: not done within {GUARD:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_sends_arrive_exactly_once() {
    const N: u32 = 10_000;
    let (a, b) = pair().await;
    let mut inbox = b.handle("/count/1").expect("handler");
    let receiver = tokio::spawn(async move {
        let mut seen = HashSet::new();
        let mut duplicates = 0;
        while seen.len() < N as usize {
            let msg = inbox.recv().await.expect("stream open");
            assert_eq!(msg.protocol, "/count/1");
            assert!(!msg.is_request());
            let bytes: [u8; 4] = msg.payload[..].try_into().expect("4-byte payload");
            if !seen.insert(u32::from_be_bytes(bytes)) {
                duplicates += 1;
            }
        }
        (seen, duplicates, inbox)
    });
    let peer = b.local_peer_id();
    let results: Vec<Result<(), SendError>> = guard(
        "10k sends",
        futures::stream::iter(0..N)
            .map(|i| a.send(peer, "/count/1", i.to_be_bytes().to_vec()))
            .buffer_unordered(256)
            .collect(),
    )
    .await;
    assert_eq!(results.len(), N as usize);
    assert!(results.iter().all(Result::is_ok), "{:?}", results.iter().find(|r| r.is_err()));
    let (seen, duplicates, mut inbox) = guard("10k receives", receiver).await.expect("receiver");
    assert_eq!(duplicates, 0);
    assert_eq!(seen, (0..N).collect::<HashSet<_>>());
    // Every send is acknowledged and all 10,000 distinct messages arrived: nothing extra.
    assert!(inbox.recv().now_or_never().is_none(), "an extra message arrived");
    let stats = b.stats().await;
    assert!(stats.messages_delivered >= u64::from(N), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_requests_are_answered() {
    let (a, b) = pair().await;
    let mut inbox = b.handle("/echo/1").expect("handler");
    tokio::spawn(async move {
        while let Some(msg) = inbox.recv().await {
            assert!(msg.is_request());
            let mut answer = b"re:".to_vec();
            answer.extend_from_slice(&msg.payload);
            msg.respond(answer).expect("respond");
        }
    });
    let peer = b.local_peer_id();
    let a2 = a.clone();
    let answers: Vec<(u32, Result<Bytes, SendError>)> = guard(
        "1000 requests",
        futures::stream::iter(0..1000u32)
            .map(|i| {
                let a = a2.clone();
                async move {
                    let r = a
                        .request(peer, "/echo/1", format!("q{i}"), Duration::from_secs(30))
                        .await;
                    (i, r)
                }
            })
            .buffer_unordered(64)
            .collect(),
    )
    .await;
    assert_eq!(answers.len(), 1000);
    for (i, answer) in answers {
        assert_eq!(answer.expect("answered"), Bytes::from(format!("re:q{i}")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_to_unhandled_protocol_fails_quickly() {
    let (a, b) = pair().await;
    let _other = b.handle("/exists/1").expect("handler");
    let start = Instant::now();
    let result = guard("send", a.send(b.local_peer_id(), "/missing/1", "x")).await;
    assert_eq!(result, Err(SendError::UnsupportedProtocol("/missing/1".into())));
    let elapsed = start.elapsed();
    assert!(elapsed < config().send_timeout / 4, "took {elapsed:?}");

    // A request fails the same way.
    let result = guard(
        "request",
        a.request(b.local_peer_id(), "/missing/2", "x", Duration::from_secs(30)),
    )
    .await;
    assert_eq!(result, Err(SendError::UnsupportedProtocol("/missing/2".into())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_protocols_both_directions() {
    const PROTOCOLS: usize = 20;
    const PER_PROTOCOL: usize = 50;
    let (a, b) = pair().await;
    let mut collectors = Vec::new();
    for host in [&a, &b] {
        for p in 0..PROTOCOLS {
            let protocol = format!("/multi/{p}");
            let mut inbox = host.handle(&protocol).expect("handler");
            collectors.push(tokio::spawn(async move {
                let mut got = HashSet::new();
                while got.len() < PER_PROTOCOL {
                    let msg = inbox.recv().await.expect("stream open");
                    let text = String::from_utf8(msg.payload.to_vec()).expect("utf8");
                    let (proto, n) = text.split_once('#').expect("proto#n");
                    assert_eq!(proto, msg.protocol, "payload on the wrong protocol");
                    assert!(got.insert(n.parse::<usize>().expect("n")), "duplicate {text}");
                }
                // The inbox is returned, not dropped: removing a handler while the peer
                // still retransmits an unacknowledged message makes that send fail.
                (protocol, got.len(), inbox)
            }));
        }
    }
    let mut sends = Vec::new();
    for (from, to) in [(&a, &b), (&b, &a)] {
        let to = to.local_peer_id();
        for p in 0..PROTOCOLS {
            for n in 0..PER_PROTOCOL {
                let from = from.clone();
                sends.push(async move {
                    let protocol = format!("/multi/{p}");
                    let payload = format!("{protocol}#{n}");
                    from.send(to, &protocol, payload).await
                });
            }
        }
    }
    let results: Vec<_> =
        guard("sends", futures::stream::iter(sends).buffer_unordered(256).collect()).await;
    assert_eq!(results.len(), 2 * PROTOCOLS * PER_PROTOCOL);
    let failed: Vec<_> = results.iter().filter(|r| r.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} failed, e.g. {:?}; a's sessions {:?}, b's sessions {:?}; a {:?}; b {:?}",
        failed.len(),
        failed[0],
        a.sessions(b.local_peer_id()).await,
        b.sessions(a.local_peer_id()).await,
        a.stats().await,
        b.stats().await,
    );
    let mut per_protocol: HashMap<String, usize> = HashMap::new();
    let mut inboxes = Vec::new();
    for collector in collectors {
        let (protocol, count, inbox) = guard("collector", collector).await.expect("collector");
        *per_protocol.entry(protocol).or_default() += count;
        inboxes.push(inbox);
    }
    assert_eq!(per_protocol.len(), PROTOCOLS);
    assert!(per_protocol.values().all(|n| *n == 2 * PER_PROTOCOL), "{per_protocol:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_request_fails_with_remote_code_1() {
    let (a, b) = pair().await;
    let mut inbox = b.handle("/drop/1").expect("handler");
    tokio::spawn(async move {
        while let Some(msg) = inbox.recv().await {
            assert!(msg.is_request());
            drop(msg);
        }
    });
    let start = Instant::now();
    let result = guard(
        "request",
        a.request(b.local_peer_id(), "/drop/1", "x", Duration::from_secs(30)),
    )
    .await;
    match result {
        Err(SendError::Remote { code: 1, reason }) => {
            assert_eq!(reason, "handler dropped the request")
        }
        other => panic!("expected Remote code 1, got {other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(10));

    // And `fail` carries the handler's own code and reason.
    let mut failing = b.handle("/fail/1").expect("handler");
    tokio::spawn(async move {
        while let Some(msg) = failing.recv().await {
            msg.fail(42, "nope").expect("fail");
        }
    });
    let result = guard(
        "request",
        a.request(b.local_peer_id(), "/fail/1", "x", Duration::from_secs(30)),
    )
    .await;
    assert_eq!(result, Err(SendError::Remote { code: 42, reason: "nope".into() }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_peer_fails_within_handshake_timeout() {
    let a = host().await;
    // A socket that is bound (so no one else takes the port) but never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = msgnet::socket_to_multiaddr(silent.local_addr().expect("addr"));
    let ghost = Keypair::generate_ed25519().public().to_peer_id();
    a.add_address(ghost, addr).expect("address");
    let start = Instant::now();
    let result = guard("request", a.request(ghost, "/x/1", "hi", Duration::from_secs(30))).await;
    assert!(
        matches!(result, Err(SendError::Unreachable(_) | SendError::TimedOut)),
        "got {result:?}"
    );
    let elapsed = start.elapsed();
    assert!(elapsed < HANDSHAKE_TIMEOUT + Duration::from_secs(2), "took {elapsed:?}");

    // A peer without any address fails at once.
    let nobody = Keypair::generate_ed25519().public().to_peer_id();
    let result = guard("send", a.send(nobody, "/x/1", "hi")).await;
    assert_eq!(result, Err(SendError::NoAddress));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_then_send_is_closed() {
    let (a, b) = pair().await;
    let mut inbox = b.handle("/ping/1").expect("handler");
    let mut a_inbox = a.handle("/ping/1").expect("handler");
    let mut b_events = b.events();
    guard("first send", a.send(b.local_peer_id(), "/ping/1", "one")).await.expect("delivered");
    assert_eq!(&guard("recv", inbox.recv()).await.expect("message").payload[..], b"one");
    assert_eq!(a.peers().await, vec![b.local_peer_id()]);

    guard("close", a.close()).await;
    assert_eq!(a.send(b.local_peer_id(), "/ping/1", "two").await, Err(SendError::Closed));
    assert_eq!(
        a.request(b.local_peer_id(), "/ping/1", "two", Duration::from_secs(1)).await,
        Err(SendError::Closed)
    );
    assert!(matches!(a.handle("/other/1"), Err(HostError::Closed)));
    assert!(guard("a's handler ends", a_inbox.recv()).await.is_none());
    assert!(a.peers().await.is_empty());
    guard("second close", a.close()).await;

    // b heard the CLOSE.
    let down = guard("session down at b", async {
        loop {
            match b_events.recv().await {
                Ok(HostEvent::SessionDown { peer, .. }) => break peer,
                Ok(_) => continue,
                Err(e) => panic!("events: {e}"),
            }
        }
    })
    .await;
    assert_eq!(down, a.local_peer_id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_registry_rules() {
    let (a, b) = pair().await;
    let inbox = b.handle("/h/1").expect("handler");
    assert!(matches!(b.handle("/h/1"), Err(HostError::AlreadyHandled(p)) if p == "/h/1"));
    assert!(matches!(b.handle(""), Err(HostError::InvalidProtocol)));
    assert!(matches!(b.handle(&"x".repeat(1025)), Err(HostError::InvalidProtocol)));

    // Dropping the stream removes the handler; a new one can be registered.
    drop(inbox);
    let mut inbox = b.handle("/h/1").expect("handler after drop");
    guard("send", a.send(b.local_peer_id(), "/h/1", "x")).await.expect("delivered");
    let msg = guard("recv", inbox.recv()).await.expect("message");
    assert_eq!(msg.peer, a.local_peer_id());
    assert_eq!(msg.respond("no"), Err(SendError::UnknownRequest));

    // remove_handler ends the stream and the peer's sends fail.
    assert!(b.remove_handler("/h/1"));
    assert!(!b.remove_handler("/h/1"));
    assert!(guard("stream ends", inbox.recv()).await.is_none());
    let result = guard("send", a.send(b.local_peer_id(), "/h/1", "x")).await;
    assert_eq!(result, Err(SendError::UnsupportedProtocol("/h/1".into())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_sessions() {
    let (a, b) = pair().await;
    let mut a_events = a.events();
    let _inbox = b.handle("/e/1").expect("handler");
    guard("send", a.send(b.local_peer_id(), "/e/1", "x")).await.expect("delivered");
    let up = guard("session up", async {
        loop {
            if let Ok(HostEvent::SessionUp { peer, remote }) = a_events.recv().await {
                break (peer, remote);
            }
        }
    })
    .await;
    assert_eq!(up, (b.local_peer_id(), b.listen_addrs()[0].clone()));
    let sessions = a.sessions(b.local_peer_id()).await;
    assert_eq!(sessions.len(), 1);
    assert!(sessions[0].established && sessions[0].initiator);
    assert!(a.stats().await.handshakes_completed >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_every_handle_stops_the_driver() {
    let a = host().await;
    let mut inbox = a.handle("/d/1").expect("handler");
    drop(a);
    assert!(guard("stream ends", inbox.recv()).await.is_none());
}

#[tokio::test]
async fn address_validation() {
    let a = host().await;
    let peer = Keypair::generate_ed25519().public().to_peer_id();
    let other = Keypair::generate_ed25519().public().to_peer_id();
    let with_p2p: Multiaddr = format!("/ip4/127.0.0.1/udp/9/p2p/{peer}").parse().expect("addr");
    a.add_address(peer, with_p2p.clone()).expect("matching /p2p accepted");
    assert!(matches!(a.add_address(other, with_p2p.clone()), Err(HostError::PeerIdMismatch)));
    // TCP and QUIC addresses are accepted (libp2p side); other shapes are not.
    let tcp: Multiaddr = "/ip4/127.0.0.1/tcp/9".parse().expect("addr");
    a.add_address(peer, tcp.clone()).expect("tcp accepted");
    let ws: Multiaddr = "/ip4/127.0.0.1/tcp/9/ws".parse().expect("addr");
    assert!(matches!(a.add_address(peer, ws.clone()), Err(HostError::UnsupportedAddress(x)) if x == ws));
    assert_eq!(
        Host::dial_info(&with_p2p).expect("dial info"),
        (peer, "/ip4/127.0.0.1/udp/9".parse().expect("addr"))
    );
    assert!(matches!(Host::dial_info(&tcp), Err(HostError::MissingPeerId(_))));

    // Listen addresses: an unsupported shape and a second IPv4 UDP one are refused.
    let builder = Host::builder(Keypair::generate_ed25519()).listen(ws.clone());
    assert!(matches!(builder.build().await, Err(HostError::UnsupportedAddress(x)) if x == ws));
    let builder = Host::builder(Keypair::generate_ed25519()).listen(loopback()).listen(loopback());
    assert!(matches!(builder.build().await, Err(HostError::UnsupportedAddress(_))));
    let listen = a.listen_addrs();
    assert_eq!(listen.len(), 1);
    let sock = msgnet::multiaddr_to_socket(&listen[0]).expect("udp");
    assert!(sock.ip().is_loopback() && sock.port() != 0);
}

#[test]
fn keyfile_creates_then_reloads_and_refuses_corrupt_files() {
    let dir = std::env::temp_dir().join(format!(
        "msgnet-keyfile-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("identity.key");

    let created = msgnet::keyfile::load_or_create(&path).expect("created");
    assert!(path.exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let reloaded = msgnet::keyfile::load_or_create(&path).expect("reloaded");
    assert_eq!(created.public().to_peer_id(), reloaded.public().to_peer_id());

    let corrupt = dir.join("corrupt.key");
    std::fs::write(&corrupt, b"definitely not a protobuf key").expect("write");
    assert!(matches!(msgnet::keyfile::load_or_create(&corrupt), Err(HostError::KeyFile(_))));
    // The corrupt file is left as it was, never replaced.
    assert_eq!(std::fs::read(&corrupt).expect("read"), b"definitely not a protobuf key");

    let empty = dir.join("empty.key");
    std::fs::write(&empty, b"").expect("write");
    assert!(matches!(msgnet::keyfile::load_or_create(&empty), Err(HostError::KeyFile(_))));
    assert!(matches!(
        msgnet::keyfile::load_or_create(&dir.join("no/such/dir/key")),
        Err(HostError::KeyFile(_))
    ));
    let _ = std::fs::remove_dir_all(&dir);
}
