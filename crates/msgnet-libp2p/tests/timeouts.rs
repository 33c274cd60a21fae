//! Request timeouts over real TCP connections on 127.0.0.1: a request the peer never
//! answers fails with `TimedOut` and releases its budget, a late response is dropped and
//! counted, and the connection keeps working. Over a msgnet stream and over the bridge
//! (a plain request-response peer that holds its answer), and the bridge's own
//! `bridge_timeout` releasing a request too.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use common::{listen, plain_swarm, PlainEvent, BRIDGE_TEST};
use futures::StreamExt;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{noise, request_response, tcp, yamux, PeerId, Swarm};
use msgnet_libp2p::{Behaviour, Config, Event, InboundRequest, MessageId, SendError};

/// The server never answers these.
const SLOW: &str = "/timeout-test/slow/1";
/// The server answers these at once.
const FAST: &str = "/timeout-test/fast/1";

/// The plain node's protocol ([`BRIDGE_TEST`]) as a `&str` (checked in each test).
const BRIDGE_PROTOCOL: &str = "/bridge-test/1.0.0";

/// Generous bound on every wait (loaded CI machines).
const WAIT: Duration = Duration::from_secs(60);

fn swarm(config: Config) -> Swarm<Behaviour> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
        .expect("tcp")
        .with_behaviour(|_| Behaviour::new(config))
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

fn client_config(request_timeout: Duration, max_in_flight: usize) -> Config {
    Config { request_timeout, max_in_flight_per_peer: max_in_flight, ..Config::default() }
}

/// Drives both swarms until the client reports a behaviour event (`Some`) or the server
/// handled one of its events (`None`). Panics if the connection closes or nothing happens
/// within [`WAIT`].
async fn step<S: NetworkBehaviour>(
    server: &mut Swarm<S>,
    client: &mut Swarm<Behaviour>,
    mut on_server: impl FnMut(&mut Swarm<S>, S::ToSwarm),
) -> Option<Event> {
    let wait = async {
        loop {
            tokio::select! {
                e = server.select_next_some() => {
                    if let SwarmEvent::Behaviour(e) = e {
                        on_server(server, e);
                        return None;
                    }
                }
                e = client.select_next_some() => match e {
                    SwarmEvent::Behaviour(e) => return Some(e),
                    SwarmEvent::ConnectionClosed { cause, .. } => panic!("connection closed: {cause:?}"),
                    _ => {}
                },
            }
        }
    };
    tokio::time::timeout(WAIT, wait).await.expect("nothing happened within the wait")
}

/// Drives both swarms until the client reports the outcome of `id`; fails the test on
/// any other request's outcome.
async fn outcome<S: NetworkBehaviour>(
    server: &mut Swarm<S>,
    client: &mut Swarm<Behaviour>,
    mut on_server: impl FnMut(&mut Swarm<S>, S::ToSwarm),
    id: MessageId,
) -> Result<Bytes, SendError> {
    loop {
        if let Some(Event::Response { id: got, result }) = step(server, client, &mut on_server).await {
            assert_eq!(got, id, "unexpected outcome {result:?}");
            return result;
        }
    }
}

/// The msgnet server: answers [`FAST`] with the request payload, holds [`SLOW`].
fn serve(held: &mut Vec<InboundRequest>) -> impl FnMut(&mut Swarm<Behaviour>, Event) + '_ {
    |server, event| {
        if let Event::Message(m) = event {
            let Some(req) = m.request else { return };
            if &*req.protocol == SLOW {
                held.push(req);
            } else {
                server.behaviour_mut().respond(&req, Ok(m.payload)).expect("respond");
            }
        }
    }
}

/// The plain server: answers `now` at once, holds everything else.
fn serve_plain(
    held: &mut Vec<request_response::ResponseChannel<Vec<u8>>>,
) -> impl FnMut(&mut Swarm<common::Plain>, PlainEvent) + '_ {
    |plain, event| {
        if let PlainEvent::Rr(request_response::Event::Message {
            message: request_response::Message::Request { request, channel, .. },
            ..
        }) = event
        {
            if request == b"now" {
                plain.behaviour_mut().rr.send_response(channel, b"answer".to_vec()).expect("respond");
            } else {
                held.push(channel);
            }
        }
    }
}

#[tokio::test]
async fn stream_request_times_out_releases_and_drops_late_response() {
    let mut server = swarm(Config::default());
    let addr = listen(&mut server, "/ip4/127.0.0.1/tcp/0").await;
    let server_id = *server.local_peer_id();
    server.behaviour_mut().handle(SLOW);
    server.behaviour_mut().handle(FAST);
    let mut client = swarm(client_config(Duration::from_secs(1), 2));
    client.behaviour_mut().add_address(server_id, addr);
    let mut held = Vec::new();

    // Connect (a request answered at once).
    let warm = client.behaviour_mut().request(server_id, FAST, Bytes::from_static(b"warm")).expect("request");
    assert_eq!(outcome(&mut server, &mut client, serve(&mut held), warm).await, Ok(Bytes::from_static(b"warm")));

    // Two requests the server holds use up the budget (2).
    let slow: HashSet<MessageId> = (0..2)
        .map(|i| client.behaviour_mut().request(server_id, SLOW, Bytes::from(vec![i; 8])).expect("request"))
        .collect();
    assert_eq!(
        client.behaviour_mut().request(server_id, FAST, Bytes::from_static(b"x")).err(),
        Some(SendError::Backpressure)
    );
    let mut timed_out = HashSet::new();
    while timed_out.len() < 2 {
        if let Some(Event::Response { id, result }) = step(&mut server, &mut client, serve(&mut held)).await {
            assert!(slow.contains(&id), "unexpected outcome of {id:?}: {result:?}");
            assert_eq!(result, Err(SendError::TimedOut));
            assert!(timed_out.insert(id), "{id:?} finished twice");
        }
    }

    // Released: a new request is accepted and answered. The server read the held ones
    // first (same stream, in order).
    let fast = client.behaviour_mut().request(server_id, FAST, Bytes::from_static(b"fast")).expect("budget released");
    assert_eq!(outcome(&mut server, &mut client, serve(&mut held), fast).await, Ok(Bytes::from_static(b"fast")));
    assert_eq!(held.len(), 2, "the server got both held requests");
    assert_eq!(client.behaviour().late_responses(), 0);

    // The server answers the held requests now, late; their responses travel before the
    // next request's response. They are dropped (no event: `outcome` would fail on one)
    // and counted.
    for req in std::mem::take(&mut held) {
        server.behaviour_mut().respond(&req, Ok(Bytes::from_static(b"late"))).expect("late respond");
    }
    let fast = client.behaviour_mut().request(server_id, FAST, Bytes::from_static(b"again")).expect("request");
    assert_eq!(outcome(&mut server, &mut client, serve(&mut held), fast).await, Ok(Bytes::from_static(b"again")));
    assert_eq!(client.behaviour().late_responses(), 2);
}

/// A plain rust-libp2p node whose request-response handler holds a request: the msgnet
/// client reaches it over the bridge, the request times out, the late answer is counted.
#[tokio::test]
async fn bridge_request_times_out_and_late_response_is_counted() {
    let mut plain = plain_swarm();
    let addr = listen(&mut plain, "/ip4/127.0.0.1/tcp/0").await;
    let plain_id = *plain.local_peer_id();
    let mut client = swarm(client_config(Duration::from_secs(2), 1));
    client.behaviour_mut().add_address(plain_id, addr);
    let mut held = Vec::new();
    let proto = BRIDGE_PROTOCOL;
    assert_eq!(proto, BRIDGE_TEST.as_ref());

    let warm = client.behaviour_mut().request(plain_id, proto, Bytes::from_static(b"now")).expect("request");
    assert_eq!(outcome(&mut plain, &mut client, serve_plain(&mut held), warm).await, Ok(Bytes::from_static(b"answer")));
    assert_eq!(client.behaviour().supports_msgnet(&plain_id), Some(false));

    let id = client.behaviour_mut().request(plain_id, proto, Bytes::from_static(b"hold")).expect("request");
    assert_eq!(
        client.behaviour_mut().request(plain_id, proto, Bytes::from_static(b"now")).err(),
        Some(SendError::Backpressure)
    );
    assert_eq!(outcome(&mut plain, &mut client, serve_plain(&mut held), id).await, Err(SendError::TimedOut));

    // Released: the budget of 1 takes a new request, answered at once.
    let next = client.behaviour_mut().request(plain_id, proto, Bytes::from_static(b"now")).expect("budget released");
    assert_eq!(outcome(&mut plain, &mut client, serve_plain(&mut held), next).await, Ok(Bytes::from_static(b"answer")));

    // The plain node answers the held request, late (its bridge stream is still open on
    // the client, within `bridge_timeout`): dropped and counted, no event.
    while held.is_empty() {
        if let Some(e) = step(&mut plain, &mut client, serve_plain(&mut held)).await {
            panic!("unexpected event {e:?}");
        }
    }
    plain.behaviour_mut().rr.send_response(held.remove(0), b"late".to_vec()).expect("respond");
    // A dropped response makes no event: look at the counter between short drives.
    let give_up = tokio::time::Instant::now() + WAIT;
    while client.behaviour().late_responses() < 1 {
        assert!(tokio::time::Instant::now() < give_up, "the late response was not counted");
        let drive = step(&mut plain, &mut client, serve_plain(&mut held));
        if let Ok(Some(Event::Response { id, result })) = tokio::time::timeout(Duration::from_millis(50), drive).await {
            panic!("unexpected outcome of {id:?}: {result:?}");
        }
    }
    assert_eq!(client.behaviour().late_responses(), 1);
}

/// With the behaviour's timeout off, the bridge's own `bridge_timeout` ends a request
/// the peer never answers, and releases its budget.
#[tokio::test]
async fn bridge_timeout_releases_a_request() {
    let mut plain = plain_swarm();
    let addr = listen(&mut plain, "/ip4/127.0.0.1/tcp/0").await;
    let plain_id: PeerId = *plain.local_peer_id();
    let config = Config { bridge_timeout: Duration::from_secs(2), ..client_config(Duration::MAX, 1) };
    let mut client = swarm(config);
    client.behaviour_mut().add_address(plain_id, addr);
    let mut held = Vec::new();
    let proto = BRIDGE_PROTOCOL;
    assert_eq!(proto, BRIDGE_TEST.as_ref());

    let id = client.behaviour_mut().request(plain_id, proto, Bytes::from_static(b"hold")).expect("request");
    assert_eq!(
        client.behaviour_mut().request(plain_id, proto, Bytes::from_static(b"now")).err(),
        Some(SendError::Backpressure)
    );
    assert_eq!(outcome(&mut plain, &mut client, serve_plain(&mut held), id).await, Err(SendError::TimedOut));
    let next = client.behaviour_mut().request(plain_id, proto, Bytes::from_static(b"now")).expect("budget released");
    assert_eq!(outcome(&mut plain, &mut client, serve_plain(&mut held), next).await, Ok(Bytes::from_static(b"answer")));
}
