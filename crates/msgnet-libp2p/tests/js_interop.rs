//! Interop with a js-libp2p 3 node from npm (`interop/js/node.mjs`: TCP, noise, yamux,
//! identify, ping and a uvarint-length-prefixed echo protocol), run with the machine's
//! Node.js. Needs `npm ci --prefix interop/js`; without Node.js or the modules the tests
//! fail and say so.
//!
//! - `js_node_and_behaviour`: a Swarm with [`msgnet_libp2p::Behaviour`] + identify + ping
//!   dials the js node. Both sides receive the other's identify (msgnet's lists
//!   `/msgnet/1.0.0`), both ping, msgnet's bridge request to the js echo protocol gets
//!   its reply, and the js node's request to a `Behaviour::handle`d protocol is answered.
//! - `js_node_and_host`: the js node dials a [`msgnet::Host`] (TCP); it sees the host's
//!   identify and pings it, the host's request to the echo protocol goes over the bridge,
//!   and the js node's request to a `Host::handle`d protocol is answered.

mod common;
#[path = "../../../interop/js/harness.rs"]
mod js;

use std::time::Duration;

use bytes::Bytes;
use common::{listen, msgnet_swarm, NodeEvent};
use futures::StreamExt;
use js::{to_hex, JsNode};
use libp2p::swarm::SwarmEvent;
use libp2p::{identify, ping, Multiaddr, PeerId};
use msgnet_libp2p::{libp2p_peer_id, Event};

/// The js node's echo protocol: answers `js-echo:` || request.
const ECHO: &str = "/interop/echo/1.0.0";
/// A protocol msgnet handles, requested by the js node.
const MSGNET_SIDE: &str = "/msgnet-js-test/1.0.0";
/// Everything in one test must happen within this (a loaded 2-core machine is slow).
const DEADLINE: Duration = Duration::from_secs(90);

#[tokio::test]
async fn js_node_and_behaviour() {
    let mut jsn = JsNode::spawn(&[]).await;
    let js_peer: PeerId = jsn.peer.parse().expect("js peer id");
    let js_addr: Multiaddr = jsn.addr.parse().expect("js multiaddr");

    let mut m = msgnet_swarm();
    let m_addr = listen(&mut m, "/ip4/127.0.0.1/tcp/0").await;
    let m_id = *m.local_peer_id();
    m.behaviour_mut().msgnet.handle(MSGNET_SIDE);
    m.dial(js_addr).expect("dial the js node");

    let mut bridge_request = None;
    let mut bridge_response = false; // msgnet -> js echo answered
    let mut js_served = false; // the js node logged serving it
    let mut msgnet_served = false; // js -> msgnet handler delivered
    let mut js_got_answer = false; // ... and its response reached js
    let mut m_identify = false;
    let mut js_identify = false;
    let mut m_ping = false;
    let mut js_ping = false;
    let mut support_reported = false;
    let deadline = tokio::time::sleep(DEADLINE);
    tokio::pin!(deadline);
    while !(bridge_response
        && js_served
        && msgnet_served
        && js_got_answer
        && m_identify
        && js_identify
        && m_ping
        && js_ping
        && support_reported)
    {
        tokio::select! {
            e = m.select_next_some() => match e {
                SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                    assert_eq!(peer_id, js_peer);
                    if bridge_request.is_none() {
                        // Sent before msgnet support is known: queued, then bridged.
                        let id = m
                            .behaviour_mut()
                            .msgnet
                            .request(js_peer, ECHO, Bytes::from_static(b"hello js"))
                            .expect("request");
                        bridge_request = Some(id);
                    }
                }
                SwarmEvent::Behaviour(NodeEvent::Msgnet(Event::MsgnetSupport { peer, supported, .. })) => {
                    assert_eq!(peer, js_peer);
                    assert!(!supported, "js-libp2p does not speak /msgnet/1.0.0");
                    support_reported = true;
                }
                SwarmEvent::Behaviour(NodeEvent::Msgnet(Event::Response { id, result })) => {
                    assert_eq!(Some(id), bridge_request);
                    let reply = result.unwrap_or_else(|e| panic!("bridge request failed: {e}\n{}", jsn.transcript()));
                    assert_eq!(reply, Bytes::from_static(b"js-echo:hello js"));
                    bridge_response = true;
                }
                SwarmEvent::Behaviour(NodeEvent::Msgnet(Event::Message(msg))) => {
                    assert_eq!(libp2p_peer_id(&msg.peer), js_peer);
                    assert_eq!(&*msg.protocol, MSGNET_SIDE);
                    assert_eq!(&msg.payload[..], b"from js");
                    let req = msg.request.expect("bridge inbound is a request");
                    m.behaviour_mut()
                        .msgnet
                        .respond(&req, Ok(Bytes::from_static(b"served by msgnet")))
                        .expect("respond");
                    msgnet_served = true;
                }
                SwarmEvent::Behaviour(NodeEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
                    assert_eq!(peer_id, js_peer);
                    assert!(info.agent_version.starts_with("js-libp2p/"), "agent {}", info.agent_version);
                    for p in [ECHO, "/ipfs/id/1.0.0", "/ipfs/ping/1.0.0"] {
                        assert!(info.protocols.iter().any(|x| x.as_ref() == p), "js lacks {p}: {:?}", info.protocols);
                    }
                    assert!(!info.protocols.iter().any(|x| x.as_ref() == "/msgnet/1.0.0"));
                    assert!(info.listen_addrs.iter().any(|a| a.to_string().starts_with("/ip4/127.0.0.1/tcp/")));
                    m_identify = true;
                }
                SwarmEvent::Behaviour(NodeEvent::Ping(ping::Event { peer, result: Ok(_), .. })) => {
                    assert_eq!(peer, js_peer);
                    m_ping = true;
                }
                _ => {}
            },
            line = jsn.recv() => match line.event.as_str() {
                "error" => panic!("js node error: {}\n{}", line.raw, jsn.transcript()),
                "identify" => {
                    assert_eq!(line.field("peer"), m_id.to_string());
                    let protocols = line.list("protocols");
                    for p in ["/msgnet/1.0.0", MSGNET_SIDE, "/ipfs/id/1.0.0", "/ipfs/ping/1.0.0"] {
                        assert!(protocols.iter().any(|x| x == p), "msgnet's identify lacks {p}: {protocols:?}");
                    }
                    assert_eq!(line.field("protocol-version"), "/msgnet-test/1");
                    let listen = line.list("listen-addrs");
                    assert!(listen.contains(&m_addr.to_string()), "{listen:?} lacks {m_addr}");
                    if !js_identify {
                        js_identify = true;
                        jsn.command(&format!("ping p1 {m_id}"));
                        jsn.command(&format!("request r1 {m_id} {MSGNET_SIDE} {}", to_hex(b"from js")));
                    }
                }
                "pong" => {
                    assert_eq!(line.field("tag"), "p1");
                    assert_eq!(line.field("peer"), m_id.to_string());
                    let rtt: u64 = line.field("rtt-ms").parse().expect("rtt");
                    assert!(rtt < DEADLINE.as_millis() as u64);
                    js_ping = true;
                }
                "response" => {
                    assert_eq!(line.field("tag"), "r1");
                    assert_eq!(line.field("protocol"), MSGNET_SIDE);
                    assert_eq!(line.bytes("payload"), b"served by msgnet");
                    js_got_answer = true;
                }
                "served" => {
                    assert_eq!(line.field("peer"), m_id.to_string());
                    assert_eq!(line.field("protocol"), ECHO);
                    assert_eq!(line.bytes("request"), b"hello js");
                    assert_eq!(line.bytes("response"), b"js-echo:hello js");
                    js_served = true;
                }
                _ => {}
            },
            _ = &mut deadline => panic!(
                "timed out: bridge {bridge_response}/{js_served} js->msgnet {msgnet_served}/{js_got_answer} \
                 identify {m_identify}/{js_identify} ping {m_ping}/{js_ping} support {support_reported}\n{}",
                jsn.transcript()
            ),
        }
    }
    assert_eq!(m.behaviour().msgnet.supports_msgnet(&js_peer), Some(false));
}

#[tokio::test]
async fn js_node_and_host() {
    let mut jsn = JsNode::spawn(&[]).await;
    let js_peer: msgnet::PeerId = jsn.peer.parse().expect("js peer id");

    let host = msgnet::Host::builder(msgnet::Keypair::generate_ed25519())
        .listen("/ip4/127.0.0.1/tcp/0".parse().expect("addr"))
        .build()
        .await
        .expect("host");
    let host_id = host.local_peer_id();
    let host_addr = host.listen_addrs().into_iter().next().expect("a TCP listen address");
    let mut incoming = host.handle(MSGNET_SIDE).expect("handle");
    // Answers the js node's requests on MSGNET_SIDE.
    let server = tokio::spawn(async move {
        let msg = incoming.recv().await.expect("a request from js");
        assert_eq!(msg.peer, js_peer);
        assert!(msg.is_request());
        assert_eq!(&msg.payload[..], b"from js to host");
        msg.respond(Bytes::from_static(b"served by host")).expect("respond");
    });

    // The js node dials the host (this time the js side is the connection's initiator).
    jsn.command(&format!("dial d1 {host_addr}/p2p/{host_id}"));
    let dialed = jsn.expect(|l| l.event == "dialed").await;
    assert_eq!(dialed.field("peer"), host_id.to_string());
    let id = jsn.expect(|l| l.event == "identify").await;
    assert_eq!(id.field("peer"), host_id.to_string());
    assert!(id.field("agent").starts_with("msgnet/"), "{}", id.raw);
    assert_eq!(id.field("protocol-version"), "/msgnet/1.0.0");
    let protocols = id.list("protocols");
    for p in ["/msgnet/1.0.0", MSGNET_SIDE, "/ipfs/id/1.0.0", "/ipfs/ping/1.0.0"] {
        assert!(protocols.iter().any(|x| x == p), "the host's identify lacks {p}: {protocols:?}");
    }

    // The host asks the js echo protocol over the bridge, on the js node's connection.
    let h = host.clone();
    let request = tokio::spawn(async move {
        h.request(js_peer, ECHO, Bytes::from_static(b"hello from host"), Duration::from_secs(60)).await
    });
    jsn.command(&format!("ping p1 {host_id}"));
    jsn.command(&format!("request r1 {host_id} {MSGNET_SIDE} {}", to_hex(b"from js to host")));

    let (mut pong, mut answered, mut served) = (false, false, false);
    while !(pong && answered && served) {
        let line = jsn.expect(|l| matches!(l.event.as_str(), "pong" | "response" | "served")).await;
        match line.event.as_str() {
            "pong" => {
                assert_eq!(line.field("peer"), host_id.to_string());
                pong = true;
            }
            "response" => {
                assert_eq!(line.bytes("payload"), b"served by host");
                answered = true;
            }
            _ => {
                assert_eq!(line.field("peer"), host_id.to_string());
                assert_eq!(line.bytes("request"), b"hello from host");
                served = true;
            }
        }
    }
    let reply = tokio::time::timeout(DEADLINE, request)
        .await
        .expect("host request timed out")
        .expect("request task")
        .unwrap_or_else(|e| panic!("host request failed: {e}\n{}", jsn.transcript()));
    assert_eq!(reply, Bytes::from_static(b"js-echo:hello from host"));
    tokio::time::timeout(DEADLINE, server).await.expect("server timed out").expect("server task");
    host.close().await;
}
