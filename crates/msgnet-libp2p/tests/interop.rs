//! Interop with an ordinary rust-libp2p 0.57 node (identify, ping, request-response with a
//! uvarint-length-prefixed bytes codec on `/bridge-test/1.0.0`), over TCP and QUIC.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{listen, msgnet_swarm, plain_swarm, NodeEvent, PlainEvent, BRIDGE_TEST};
use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{identify, ping, request_response};
use msgnet_libp2p::{libp2p_peer_id, Event};

async fn interop(listen_addr: &str) {
    let mut m = msgnet_swarm();
    let mut p = plain_swarm();
    let addr = listen(&mut m, listen_addr).await;
    let m_id = *m.local_peer_id();
    let p_id = *p.local_peer_id();
    m.behaviour_mut().msgnet.handle(BRIDGE_TEST.as_ref());
    p.dial(addr).expect("dial");

    let mut bridge_request = None;
    let mut bridge_response = false;
    let mut served = false;
    let mut plain_got_answer = false;
    let mut m_identify = false;
    let mut p_identify = false;
    let mut m_ping = false;
    let mut p_ping = false;
    let mut support_reported = false;
    let deadline = tokio::time::sleep(Duration::from_secs(30));
    tokio::pin!(deadline);
    while !(bridge_response
        && served
        && plain_got_answer
        && m_identify
        && p_identify
        && m_ping
        && p_ping
        && support_reported)
    {
        tokio::select! {
            e = m.select_next_some() => match e {
                SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                    assert_eq!(peer_id, p_id);
                    // Sent before msgnet support is known: queued, then bridged.
                    let id = m
                        .behaviour_mut()
                        .msgnet
                        .request(p_id, BRIDGE_TEST.as_ref(), Bytes::from_static(b"hello plain"))
                        .expect("request");
                    bridge_request = Some(id);
                }
                SwarmEvent::Behaviour(NodeEvent::Msgnet(Event::MsgnetSupport { peer, supported, .. })) => {
                    assert_eq!(peer, p_id);
                    assert!(!supported);
                    support_reported = true;
                }
                SwarmEvent::Behaviour(NodeEvent::Msgnet(Event::Response { id, result })) => {
                    assert_eq!(Some(id), bridge_request);
                    assert_eq!(result.expect("bridge response"), Bytes::from_static(b"HELLO PLAIN"));
                    bridge_response = true;
                }
                SwarmEvent::Behaviour(NodeEvent::Msgnet(Event::Message(msg))) => {
                    assert_eq!(libp2p_peer_id(&msg.peer), p_id);
                    assert_eq!(&*msg.protocol, BRIDGE_TEST.as_ref());
                    assert_eq!(&msg.payload[..], b"from plain");
                    let req = msg.request.expect("bridge inbound is a request");
                    m.behaviour_mut().msgnet.respond(&req, Ok(Bytes::from_static(b"served by msgnet"))).expect("respond");
                    served = true;
                }
                SwarmEvent::Behaviour(NodeEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
                    assert_eq!(peer_id, p_id);
                    assert!(info.protocols.contains(&BRIDGE_TEST));
                    assert_eq!(info.protocol_version, "/plain-test/1");
                    m_identify = true;
                }
                SwarmEvent::Behaviour(NodeEvent::Ping(ping::Event { result: Ok(_), .. })) => m_ping = true,
                _ => {}
            },
            e = p.select_next_some() => match e {
                SwarmEvent::Behaviour(PlainEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
                    assert_eq!(peer_id, m_id);
                    assert!(info.protocols.iter().any(|x| x.as_ref() == "/msgnet/1.0.0"));
                    assert!(info.protocols.contains(&BRIDGE_TEST));
                    assert_eq!(info.protocol_version, "/msgnet-test/1");
                    p_identify = true;
                    // Now ask msgnet's handler for /bridge-test/1.0.0.
                    p.behaviour_mut().rr.send_request(&m_id, b"from plain".to_vec());
                }
                SwarmEvent::Behaviour(PlainEvent::Ping(ping::Event { result: Ok(_), .. })) => p_ping = true,
                SwarmEvent::Behaviour(PlainEvent::Rr(request_response::Event::Message { message, .. })) => match message {
                    request_response::Message::Request { request, channel, .. } => {
                        assert_eq!(request, b"hello plain");
                        p.behaviour_mut().rr.send_response(channel, request.to_ascii_uppercase()).expect("respond");
                    }
                    request_response::Message::Response { response, .. } => {
                        assert_eq!(response, b"served by msgnet");
                        plain_got_answer = true;
                    }
                },
                SwarmEvent::Behaviour(PlainEvent::Rr(request_response::Event::OutboundFailure { error, .. })) => {
                    panic!("plain request failed: {error}");
                }
                _ => {}
            },
            _ = &mut deadline => panic!(
                "timed out: bridge {bridge_response} served {served} answer {plain_got_answer} identify {m_identify}/{p_identify} ping {m_ping}/{p_ping} support {support_reported}"
            ),
        }
    }
    assert_eq!(m.behaviour().msgnet.supports_msgnet(&p_id), Some(false));
}

#[tokio::test]
async fn plain_node_tcp() {
    interop("/ip4/127.0.0.1/tcp/0").await;
}

#[tokio::test]
async fn plain_node_quic() {
    interop("/ip4/127.0.0.1/udp/0/quic-v1").await;
}
