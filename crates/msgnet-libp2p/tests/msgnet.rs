//! Two msgnet swarms over real sockets on 127.0.0.1: bulk messages and requests over
//! TCP+noise+yamux and over QUIC, refusal of unknown protocols, and identify listing
//! `/msgnet/1.0.0`.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use common::{listen, msgnet_swarm, NodeEvent};
use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{identify, ping};
use msgnet_libp2p::{Event, MessageId, SendError};

const MESSAGES: usize = 1000;
const REQUESTS: usize = 200;

async fn exchange(listen_addr: &str) {
    let mut a = msgnet_swarm();
    let mut b = msgnet_swarm();
    let addr = listen(&mut a, listen_addr).await;
    let a_id = *a.local_peer_id();
    a.behaviour_mut().msgnet.handle("/test/msg/1");
    a.behaviour_mut().msgnet.handle("/test/echo/1");
    // b knows a's address; the first send dials.
    b.behaviour_mut().msgnet.add_address(a_id, addr);

    let mut sends = HashSet::new();
    let mut requests = HashSet::new();
    for i in 0..MESSAGES {
        let payload = Bytes::from(format!("message {i}").repeat(1 + i % 7));
        sends.insert(b.behaviour_mut().msgnet.send(a_id, "/test/msg/1", payload).expect("send"));
    }
    for i in 0..REQUESTS {
        let payload = Bytes::from(format!("request {i}"));
        requests.insert(b.behaviour_mut().msgnet.request(a_id, "/test/echo/1", payload).expect("request"));
    }

    let mut received = 0usize;
    let mut acked = 0usize;
    let mut answered = 0usize;
    let mut a_identified_msgnet = false;
    let mut b_identified_msgnet = false;
    let mut pinged = false;
    let deadline = tokio::time::sleep(Duration::from_secs(60));
    tokio::pin!(deadline);
    while !(received == MESSAGES + REQUESTS
        && acked == MESSAGES
        && answered == REQUESTS
        && a_identified_msgnet
        && b_identified_msgnet
        && pinged)
    {
        tokio::select! {
            e = a.select_next_some() => match e {
                SwarmEvent::Behaviour(NodeEvent::Msgnet(Event::Message(m))) => {
                    received += 1;
                    if let Some(req) = m.request {
                        let reply = Bytes::from(m.payload.to_ascii_uppercase());
                        a.behaviour_mut().msgnet.respond(&req, Ok(reply)).expect("respond");
                    } else {
                        assert!(m.payload.starts_with(b"message "));
                    }
                }
                SwarmEvent::Behaviour(NodeEvent::Identify(identify::Event::Received { info, .. })) => {
                    assert!(info.protocols.iter().any(|p| p.as_ref() == "/msgnet/1.0.0"));
                    a_identified_msgnet = true;
                }
                _ => {}
            },
            e = b.select_next_some() => match e {
                SwarmEvent::Behaviour(NodeEvent::Msgnet(Event::SendComplete { id, result })) => {
                    assert_eq!(result, Ok(()));
                    assert!(sends.remove(&id));
                    acked += 1;
                }
                SwarmEvent::Behaviour(NodeEvent::Msgnet(Event::Response { id, result })) => {
                    let body = result.expect("response");
                    assert!(body.starts_with(b"REQUEST "), "{body:?}");
                    assert!(requests.remove(&id));
                    answered += 1;
                }
                SwarmEvent::Behaviour(NodeEvent::Msgnet(Event::MsgnetSupport { supported, .. })) => {
                    assert!(supported);
                }
                SwarmEvent::Behaviour(NodeEvent::Identify(identify::Event::Received { info, .. })) => {
                    // identify from a msgnet swarm lists /msgnet/1.0.0 and its handlers.
                    let protocols: Vec<String> = info.protocols.iter().map(|p| p.to_string()).collect();
                    assert!(protocols.contains(&"/msgnet/1.0.0".to_string()), "{protocols:?}");
                    assert!(protocols.contains(&"/test/echo/1".to_string()), "{protocols:?}");
                    b_identified_msgnet = true;
                }
                SwarmEvent::Behaviour(NodeEvent::Ping(ping::Event { result: Ok(_), .. })) => pinged = true,
                _ => {}
            },
            _ = &mut deadline => panic!(
                "timed out: received {received}, acked {acked}, answered {answered}, identify {a_identified_msgnet}/{b_identified_msgnet}, ping {pinged}"
            ),
        }
    }
    assert!(sends.is_empty() && requests.is_empty());
    assert_eq!(b.behaviour().msgnet.supports_msgnet(&a_id), Some(true));
}

#[tokio::test]
async fn tcp_exchange() {
    exchange("/ip4/127.0.0.1/tcp/0").await;
}

#[tokio::test]
async fn quic_exchange() {
    exchange("/ip4/127.0.0.1/udp/0/quic-v1").await;
}

#[tokio::test]
async fn unsupported_protocol() {
    let mut a = msgnet_swarm();
    let mut b = msgnet_swarm();
    let addr = listen(&mut a, "/ip4/127.0.0.1/tcp/0").await;
    let a_id = *a.local_peer_id();
    a.behaviour_mut().msgnet.handle("/yes/1");
    b.behaviour_mut().msgnet.add_address(a_id, addr);
    let m = &mut b.behaviour_mut().msgnet;
    let ok1 = m.send(a_id, "/yes/1", Bytes::from_static(b"1")).expect("send");
    let no1 = m.send(a_id, "/no/1", Bytes::from_static(b"2")).expect("send");
    let req = m.request(a_id, "/no/1", Bytes::from_static(b"3")).expect("request");
    let ok2 = m.send(a_id, "/yes/1", Bytes::from_static(b"4")).expect("send");
    assert_eq!(m.send(a_id, "", Bytes::new()), Err(SendError::InvalidProtocol));

    let mut outcomes: Vec<(MessageId, Result<(), SendError>)> = Vec::new();
    let mut response = None;
    let mut delivered = 0;
    let deadline = tokio::time::sleep(Duration::from_secs(30));
    tokio::pin!(deadline);
    while outcomes.len() < 3 || response.is_none() || delivered < 2 {
        tokio::select! {
            e = a.select_next_some() => {
                if let SwarmEvent::Behaviour(NodeEvent::Msgnet(Event::Message(m))) = e {
                    assert_eq!(&*m.protocol, "/yes/1");
                    delivered += 1;
                }
            }
            e = b.select_next_some() => match e {
                SwarmEvent::Behaviour(NodeEvent::Msgnet(Event::SendComplete { id, result })) => outcomes.push((id, result)),
                SwarmEvent::Behaviour(NodeEvent::Msgnet(Event::Response { id, result })) => {
                    assert_eq!(id, req);
                    response = Some(result);
                }
                _ => {}
            },
            _ = &mut deadline => panic!("timed out: {outcomes:?} {response:?}"),
        }
    }
    outcomes.sort_by_key(|(id, _)| *id);
    let unsupported = Err(SendError::UnsupportedProtocol("/no/1".into()));
    assert_eq!(outcomes, vec![(ok1, Ok(())), (no1, unsupported.clone()), (ok2, Ok(()))]);
    assert_eq!(response, Some(Err(SendError::UnsupportedProtocol("/no/1".into()))));
}

#[tokio::test]
async fn unreachable_peer_fails() {
    let mut b = msgnet_swarm();
    let stranger = libp2p::PeerId::random();
    // A closed port: the dial fails quickly.
    b.behaviour_mut().msgnet.add_address(stranger, "/ip4/127.0.0.1/tcp/1".parse().expect("addr"));
    let id = b.behaviour_mut().msgnet.send(stranger, "/x/1", Bytes::new()).expect("send");
    let nowhere = libp2p::PeerId::random();
    let id2 = b.behaviour_mut().msgnet.request(nowhere, "/x/1", Bytes::new()).expect("request");
    let mut seen = 0;
    let deadline = tokio::time::sleep(Duration::from_secs(30));
    tokio::pin!(deadline);
    while seen < 2 {
        tokio::select! {
            e = b.select_next_some() => match e {
                SwarmEvent::Behaviour(NodeEvent::Msgnet(Event::SendComplete { id: got, result })) => {
                    assert_eq!(got, id);
                    assert!(matches!(result, Err(SendError::Unreachable(_))), "{result:?}");
                    seen += 1;
                }
                SwarmEvent::Behaviour(NodeEvent::Msgnet(Event::Response { id: got, result })) => {
                    assert_eq!(got, id2);
                    assert!(matches!(result, Err(SendError::Unreachable(_))), "{result:?}");
                    seen += 1;
                }
                _ => {}
            },
            _ = &mut deadline => panic!("timed out"),
        }
    }
}
