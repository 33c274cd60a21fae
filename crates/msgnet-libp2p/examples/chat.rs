//! A chat over msgnet on a rust-libp2p Swarm: the msgnet behaviour beside identify and
//! ping, over TCP+noise+yamux and QUIC.
//!
//! ```text
//! cargo run -p msgnet-libp2p --example chat                      # prints its addresses
//! cargo run -p msgnet-libp2p --example chat -- /ip4/127.0.0.1/tcp/PORT
//! ```
//!
//! Every line typed is sent to every connected peer on `/chat/1`; each send reports when
//! the peer acknowledged it. Lines starting with `?` are sent as requests instead, and
//! the peer answers with the line's length.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identify, noise, ping, tcp, yamux, Multiaddr};
use msgnet_libp2p::{libp2p_peer_id, Event};

const CHAT: &str = "/chat/1";

/// The swarm's behaviour: msgnet's message API next to ordinary libp2p protocols.
#[derive(NetworkBehaviour)]
struct Chat {
    msgnet: msgnet_libp2p::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)?
        .with_quic()
        .with_behaviour(|key| Chat {
            msgnet: msgnet_libp2p::Behaviour::new(msgnet_libp2p::Config::default()),
            identify: identify::Behaviour::new(identify::Config::new("/chat/1.0.0".into(), key.public())),
            ping: ping::Behaviour::default(),
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();

    swarm.behaviour_mut().msgnet.handle(CHAT);
    swarm.listen_on("/ip4/0.0.0.0/tcp/0".parse()?)?;
    swarm.listen_on("/ip4/0.0.0.0/udp/0/quic-v1".parse()?)?;
    if let Some(addr) = std::env::args().nth(1) {
        swarm.dial(addr.parse::<Multiaddr>()?)?;
    }
    println!("peer id {}", swarm.local_peer_id());

    // Lines from stdin, read on a thread (bounded channel).
    let (mut tx, mut lines) = futures::channel::mpsc::channel::<String>(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if futures::executor::block_on(tx.send(line)).is_err() {
                break;
            }
        }
    });

    let mut peers = HashSet::new();
    loop {
        tokio::select! {
            Some(line) = lines.next() => {
                for peer in &peers {
                    let msgnet = &mut swarm.behaviour_mut().msgnet;
                    let result = match line.strip_prefix('?') {
                        Some(q) => msgnet.request(*peer, CHAT, Bytes::from(q.to_string())),
                        None => msgnet.send(*peer, CHAT, Bytes::from(line.clone())),
                    };
                    if let Err(e) = result {
                        eprintln!("to {peer}: {e}");
                    }
                }
            }
            event = swarm.select_next_some() => match event {
                SwarmEvent::NewListenAddr { address, .. } => println!("listening on {address}"),
                SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                    println!("connected to {peer_id}");
                    peers.insert(peer_id);
                }
                SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                    println!("disconnected from {peer_id}");
                    peers.remove(&peer_id);
                }
                SwarmEvent::Behaviour(ChatEvent::Msgnet(event)) => match event {
                    Event::Message(m) => {
                        let text = String::from_utf8_lossy(&m.payload).into_owned();
                        println!("{}: {text}", libp2p_peer_id(&m.peer));
                        if let Some(req) = m.request {
                            let reply = Bytes::from(format!("{} bytes", m.payload.len()));
                            let _ = swarm.behaviour_mut().msgnet.respond(&req, Ok(reply));
                        }
                    }
                    Event::SendComplete { id, result } => println!("message {} delivered: {result:?}", id.0),
                    Event::Response { id, result } => println!("request {}: {result:?}", id.0),
                    Event::MsgnetSupport { peer, supported, .. } => {
                        println!("{peer} speaks /msgnet/1.0.0: {supported}");
                    }
                    _ => {}
                },
                SwarmEvent::Behaviour(ChatEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
                    println!("{peer_id} runs {}", info.agent_version);
                }
                _ => {}
            },
        }
    }
}
