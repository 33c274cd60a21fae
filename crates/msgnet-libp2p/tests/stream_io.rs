//! Message order and backpressure on the long-lived `/msgnet/1.0.0` streams over
//! TCP+noise+yamux and QUIC, with a tiny write window and a receiver that does not read for
//! a while (the sender's writes block on the transport's flow control and must resume when
//! the stream can take more), and an idle connection closing when keep-alive is off.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{listen, msgnet_swarm_with, Node};
use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::Swarm;
use msgnet_libp2p::{Config, Event};

/// Messages sent before the receiver reads anything: half of them [`BIG`] bytes, 13 MB
/// in all, more than a stream's receive window (libp2p-quic: 10 MB; yamux: 256 KiB).
const MESSAGES: usize = 400;
const BIG: usize = 64 * 1024;

fn swarm(config: Config) -> Swarm<Node> {
    msgnet_swarm_with(config, Duration::from_secs(60))
}

fn payload(i: usize) -> Bytes {
    // Every other message is large; each carries its index.
    let len = if i.is_multiple_of(2) { BIG } else { 16 };
    let mut p = vec![(i % 251) as u8; len];
    p[..8].copy_from_slice(&(i as u64).to_be_bytes());
    Bytes::from(p)
}

async fn ordered_under_backpressure(listen_addr: &str) {
    // A write window far below one message: at most one record waits in the behaviour.
    let config = Config {
        write_window: 512,
        ..Config::default()
    };
    let mut a = swarm(config.clone());
    let mut b = swarm(config);
    let addr = listen(&mut a, listen_addr).await;
    let a_id = *a.local_peer_id();
    a.behaviour_mut().msgnet.handle("/test/seq/1");
    b.behaviour_mut().msgnet.add_address(a_id, addr);

    // Connect, then send everything while `a` is not polled: `b`'s writes block.
    let first = b
        .behaviour_mut()
        .msgnet
        .request(a_id, "/test/seq/1", payload(0))
        .expect("request");
    let mut done = 0usize;
    let mut next = 0usize;
    let deadline = tokio::time::sleep(Duration::from_secs(120));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            e = a.select_next_some() => if let SwarmEvent::Behaviour(common::NodeEvent::Msgnet(Event::Message(m))) = e {
                assert_eq!(m.payload, payload(0));
                let req = m.request.expect("a request");
                a.behaviour_mut().msgnet.respond(&req, Ok(Bytes::from_static(b"ok"))).expect("respond");
                next = 1;
            },
            e = b.select_next_some() => if let SwarmEvent::Behaviour(common::NodeEvent::Msgnet(Event::Response { id, result })) = e {
                assert_eq!(id, first);
                assert_eq!(result.expect("response"), Bytes::from_static(b"ok"));
                break;
            },
            _ = &mut deadline => panic!("no first round trip"),
        }
    }
    for i in 1..=MESSAGES {
        b.behaviour_mut()
            .msgnet
            .send(a_id, "/test/seq/1", payload(i))
            .expect("send");
    }
    // Only `b` runs: it writes until the transport's flow control stops it.
    let idle = tokio::time::sleep(Duration::from_millis(500));
    tokio::pin!(idle);
    loop {
        tokio::select! {
            e = b.select_next_some() => if let SwarmEvent::Behaviour(common::NodeEvent::Msgnet(Event::SendComplete { result, .. })) = e {
                result.expect("send");
                done += 1;
            },
            _ = &mut idle => break,
        }
    }
    assert_eq!(
        done, 0,
        "the receiver acknowledged messages it did not read"
    );

    // Now both run: everything arrives, in order, and completes.
    while !(next == MESSAGES + 1 && done == MESSAGES) {
        tokio::select! {
            e = a.select_next_some() => if let SwarmEvent::Behaviour(common::NodeEvent::Msgnet(Event::Message(m))) = e {
                assert!(m.request.is_none());
                assert_eq!(m.payload, payload(next), "message {next} out of order or altered");
                next += 1;
            },
            e = b.select_next_some() => if let SwarmEvent::Behaviour(common::NodeEvent::Msgnet(Event::SendComplete { result, .. })) = e {
                result.expect("send");
                done += 1;
            },
            _ = &mut deadline => panic!("timed out: received {next}, completed {done}"),
        }
    }
}

#[tokio::test]
async fn tcp_ordered_under_backpressure() {
    ordered_under_backpressure("/ip4/127.0.0.1/tcp/0").await;
}

#[tokio::test]
async fn quic_ordered_under_backpressure() {
    ordered_under_backpressure("/ip4/127.0.0.1/udp/0/quic-v1").await;
}

/// With `keep_alive` off the msgnet streams do not keep the connection: once the
/// exchange is over, the swarm's idle timeout closes it.
#[tokio::test]
async fn without_keep_alive_an_idle_connection_closes() {
    let config = Config {
        keep_alive: false,
        ..Config::default()
    };
    let build = |config: Config| msgnet_swarm_with(config, Duration::from_secs(1));
    let mut a = build(config.clone());
    let mut b = build(config);
    let addr = listen(&mut a, "/ip4/127.0.0.1/udp/0/quic-v1").await;
    let a_id = *a.local_peer_id();
    a.behaviour_mut().msgnet.handle("/test/seq/1");
    b.behaviour_mut().msgnet.add_address(a_id, addr);
    let id = b
        .behaviour_mut()
        .msgnet
        .request(a_id, "/test/seq/1", payload(1))
        .expect("request");
    let (mut answered, mut closed) = (false, false);
    let deadline = tokio::time::sleep(Duration::from_secs(60));
    tokio::pin!(deadline);
    while !(answered && closed) {
        tokio::select! {
            e = a.select_next_some() => if let SwarmEvent::Behaviour(common::NodeEvent::Msgnet(Event::Message(m))) = e {
                let req = m.request.expect("a request");
                a.behaviour_mut().msgnet.respond(&req, Ok(m.payload)).expect("respond");
            },
            e = b.select_next_some() => match e {
                SwarmEvent::Behaviour(common::NodeEvent::Msgnet(Event::Response { id: got, result })) => {
                    assert_eq!(got, id);
                    assert_eq!(result.expect("response"), payload(1));
                    answered = true;
                }
                SwarmEvent::ConnectionClosed { .. } => {
                    assert!(answered, "closed before the response");
                    closed = true;
                }
                _ => {}
            },
            _ = &mut deadline => panic!("answered {answered}, closed {closed}"),
        }
    }
}
