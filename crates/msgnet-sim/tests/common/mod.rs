//! Shared test workload: flows of numbered messages between node pairs, issued in
//! waves under a window, with per-message bookkeeping that is checked at the end.

#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use msgnet_core::{Delivery, EndpointConfig, Event, MessageId, SendError, SendOptions};
use msgnet_sim::{LinkParams, Loss, NodeId, Sim};

/// Endpoint config for heavy loss: long send and handshake timeouts.
pub fn lossy_config() -> EndpointConfig {
    EndpointConfig {
        // Correctness under 30 % loss, not speed: loss-based congestion control runs a
        // small window there, so queued messages wait long in virtual time.
        send_timeout: Duration::from_secs(600),
        handshake_timeout: Duration::from_secs(60),
        idle_timeout: Duration::from_secs(120),
        ..EndpointConfig::default()
    }
}

/// 30 % loss, 10 % duplication, 30 % of datagrams delayed by up to 50 ms extra.
pub fn hostile_link() -> LinkParams {
    LinkParams {
        latency: Duration::from_millis(10),
        jitter: Duration::from_millis(2),
        loss: Loss::Random(0.3),
        duplicate: 0.1,
        reorder: 0.3,
        reorder_extra: Duration::from_millis(50),
        ..LinkParams::default()
    }
}

/// One stream of numbered messages from one node to another on one protocol.
#[derive(Debug, Clone)]
pub struct Flow {
    pub from: NodeId,
    pub to: NodeId,
    pub protocol: &'static str,
    /// Delivery of message `i`.
    pub pattern: fn(u32) -> Delivery,
    pub total: u32,
    next: u32,
    outstanding: Vec<(MessageId, u32)>,
    pub ok: u32,
    pub failed: Vec<(u32, SendError)>,
}

impl Flow {
    pub fn new(from: NodeId, to: NodeId, protocol: &'static str, pattern: fn(u32) -> Delivery, total: u32) -> Self {
        Self { from, to, protocol, pattern, total, next: 0, outstanding: Vec::new(), ok: 0, failed: Vec::new() }
    }
}

/// Payload: flow index, sequence number, delivery, then filler of a size that varies.
pub fn payload(flow: usize, seq: u32, d: Delivery) -> Bytes {
    let mut v = Vec::with_capacity(64);
    v.extend_from_slice(&(flow as u32).to_le_bytes());
    v.extend_from_slice(&seq.to_le_bytes());
    v.push(match d {
        Delivery::Unreliable => 0,
        Delivery::Ordered => 2,
        _ => 1,
    });
    v.resize(9 + (seq as usize * 37) % 300, 0xAB);
    Bytes::from(v)
}

/// Parses `payload`'s header: (flow, seq, delivery byte).
pub fn parse(p: &[u8]) -> Option<(usize, u32, u8)> {
    let f = u32::from_le_bytes(p.get(0..4)?.try_into().ok()?) as usize;
    let s = u32::from_le_bytes(p.get(4..8)?.try_into().ok()?);
    Some((f, s, *p.get(8)?))
}

/// Sends every flow's messages with at most `window` outstanding per flow, running the
/// simulation `tick` between waves, until all completed or `limit` virtual time passed.
pub fn drive(sim: &mut Sim, flows: &mut [Flow], window: usize, tick: Duration, limit: Duration) {
    let end = sim.now() + limit;
    loop {
        let mut done = true;
        for (fi, f) in flows.iter_mut().enumerate() {
            // Collect finished sends.
            let node = sim.node_mut(f.from);
            f.outstanding.retain(|(id, seq)| match node.take_completion(*id) {
                Some(Ok(())) => {
                    f.ok += 1;
                    false
                }
                Some(Err(e)) => {
                    f.failed.push((*seq, e));
                    false
                }
                None => true,
            });
            while f.outstanding.len() < window && f.next < f.total {
                let d = (f.pattern)(f.next);
                let opts = SendOptions { delivery: d, early_data: true };
                match sim.send(f.from, f.to, f.protocol, payload(fi, f.next, d), opts) {
                    Ok(id) => {
                        f.outstanding.push((id, f.next));
                        f.next += 1;
                    }
                    Err(SendError::Backpressure) => break,
                    Err(e) => panic!("send refused: {e}"),
                }
            }
            if f.next < f.total || !f.outstanding.is_empty() {
                done = false;
            }
        }
        if done || sim.now() >= end {
            return;
        }
        sim.run_for(tick);
    }
}

/// Received (flow, seq) → count, and per flow the receive order of Ordered sequence
/// numbers, from every node's event log.
pub struct Received {
    pub count: HashMap<(usize, u32), u32>,
    pub ordered: HashMap<usize, Vec<u32>>,
}

pub fn received(sim: &Sim, flows: &[Flow]) -> Received {
    let mut r = Received { count: HashMap::new(), ordered: HashMap::new() };
    for to in flows.iter().map(|f| f.to).collect::<std::collections::BTreeSet<_>>() {
        for e in &sim.node(to).events {
            let Event::Message(m) = e else { continue };
            let Some((fi, seq, d)) = parse(&m.payload) else { panic!("bad payload") };
            assert_eq!(flows[fi].to, to, "message of flow {fi} at the wrong node");
            assert_eq!(flows[fi].protocol, &*m.protocol, "message of flow {fi} on the wrong protocol");
            *r.count.entry((fi, seq)).or_default() += 1;
            if d == 2 {
                r.ordered.entry(fi).or_default().push(seq);
            }
        }
    }
    r
}

/// A sim with `n` nodes of `config`, all protocols registered everywhere, everyone
/// introduced to everyone.
pub fn mesh(seed: u64, n: usize, config: EndpointConfig, protocols: &[&str]) -> (Sim, Vec<NodeId>) {
    let mut sim = Sim::new(seed);
    let ids: Vec<NodeId> = (0..n).map(|_| sim.add_ed25519_node(config.clone())).collect();
    for &a in &ids {
        for p in protocols {
            sim.register(a, p);
        }
        for &b in &ids {
            if a != b {
                sim.introduce(a, b);
            }
        }
    }
    (sim, ids)
}
