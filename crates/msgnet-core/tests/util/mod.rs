//! A pair of endpoints joined by a virtual link with a virtual clock (as quinn-proto's
//! `tests/util.rs`). No sockets, no sleeping: time advances to the next event.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use msgnet_core::{Endpoint, EndpointConfig, Event, IncomingMessage, Keypair, PeerId};

pub const A_ADDR: &str = "10.0.0.1:1000";
pub const B_ADDR: &str = "10.0.0.2:2000";

/// One datagram on the link.
#[derive(Clone, Debug)]
pub struct Datagram {
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub data: Vec<u8>,
    pub deliver_at: Instant,
}

/// Which side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

pub struct Node {
    pub ep: Endpoint,
    pub addr: SocketAddr,
    pub peer: PeerId,
    pub events: Vec<Event>,
    /// Answer every request with this function's output.
    pub responder: Option<fn(&IncomingMessage) -> Bytes>,
}

pub struct Pair {
    pub now: Instant,
    pub a: Node,
    pub b: Node,
    pub latency: Duration,
    pub in_flight: VecDeque<Datagram>,
    /// Every datagram sent, in order, with its sender side.
    pub log: Vec<(Side, Vec<u8>)>,
    /// Return true to drop the datagram: (side that sent it, index among that side's
    /// datagrams, bytes).
    pub drop: Box<dyn FnMut(Side, usize, &[u8]) -> bool>,
    sent_a: usize,
    sent_b: usize,
}

pub fn config(seed: u8) -> EndpointConfig {
    EndpointConfig { rng_seed: [seed; 32], ..EndpointConfig::default() }
}

impl Pair {
    pub fn new(ka: Keypair, kb: Keypair, ca: EndpointConfig, cb: EndpointConfig) -> Self {
        let now = Instant::now();
        let unix = Duration::from_secs(1_800_000_000);
        let a_addr: SocketAddr = A_ADDR.parse().unwrap();
        let b_addr: SocketAddr = B_ADDR.parse().unwrap();
        let mut a = Node {
            peer: ka.public().to_peer_id(),
            ep: Endpoint::new(ca, &ka, now, unix),
            addr: a_addr,
            events: Vec::new(),
            responder: None,
        };
        let b = Node {
            peer: kb.public().to_peer_id(),
            ep: Endpoint::new(cb, &kb, now, unix),
            addr: b_addr,
            events: Vec::new(),
            responder: None,
        };
        a.ep.add_address(b.peer, b_addr);
        Self {
            now,
            a,
            b,
            latency: Duration::from_millis(10),
            in_flight: VecDeque::new(),
            log: Vec::new(),
            drop: Box::new(|_, _, _| false),
            sent_a: 0,
            sent_b: 0,
        }
    }

    pub fn default_ed25519() -> Self {
        Self::new(Keypair::generate_ed25519(), Keypair::generate_ed25519(), config(1), config(2))
    }

    pub fn node(&mut self, side: Side) -> &mut Node {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    /// Drains transmits from both endpoints onto the link.
    pub fn flush(&mut self) {
        let mut buf = Vec::new();
        for side in [Side::A, Side::B] {
            loop {
                let now = self.now;
                let node = self.node(side);
                let Some(t) = node.ep.poll_transmit(now, &mut buf) else { break };
                let from = node.addr;
                let data = buf[..t.size].to_vec();
                let idx = match side {
                    Side::A => {
                        self.sent_a += 1;
                        self.sent_a - 1
                    }
                    Side::B => {
                        self.sent_b += 1;
                        self.sent_b - 1
                    }
                };
                self.log.push((side, data.clone()));
                if (self.drop)(side, idx, &data) {
                    continue;
                }
                self.in_flight.push_back(Datagram {
                    from,
                    to: t.destination,
                    data,
                    deliver_at: now + self.latency,
                });
            }
        }
    }

    /// Drains events, answering requests where a responder is set.
    pub fn drain_events(&mut self) {
        for side in [Side::A, Side::B] {
            let now = self.now;
            let node = self.node(side);
            while let Some(e) = node.ep.poll_event() {
                if let (Event::Message(m), Some(f)) = (&e, node.responder) {
                    if let Some(req) = &m.request {
                        let reply = f(m);
                        node.ep.respond(now, req, Ok(reply)).expect("respond");
                    }
                }
                node.events.push(e);
            }
        }
    }

    /// Advances to the next event (delivery or timer) and processes it. Returns false
    /// when nothing is left to do.
    pub fn step(&mut self) -> bool {
        self.drain_events();
        self.flush();
        let next_delivery = self.in_flight.iter().map(|d| d.deliver_at).min();
        let ta = self.a.ep.poll_timeout();
        let tb = self.b.ep.poll_timeout();
        let next = [next_delivery, ta, tb].into_iter().flatten().min();
        let Some(next) = next else { return false };
        if next > self.now {
            self.now = next;
        }
        let now = self.now;
        // Deliver everything due.
        let mut i = 0;
        while i < self.in_flight.len() {
            if self.in_flight[i].deliver_at <= now {
                let mut d = self.in_flight.remove(i).unwrap();
                let node = if d.to == self.a.addr {
                    &mut self.a
                } else if d.to == self.b.addr {
                    &mut self.b
                } else {
                    continue;
                };
                node.ep.handle_datagram(now, d.from, &mut d.data);
            } else {
                i += 1;
            }
        }
        if ta.is_some_and(|t| t <= now) {
            self.a.ep.handle_timeout(now);
        }
        if tb.is_some_and(|t| t <= now) {
            self.b.ep.handle_timeout(now);
        }
        self.drain_events();
        self.flush();
        true
    }

    /// Steps until `pred` holds or `limit` of virtual time passes.
    pub fn run_until(&mut self, limit: Duration, mut pred: impl FnMut(&mut Pair) -> bool) -> bool {
        let end = self.now + limit;
        loop {
            if pred(self) {
                return true;
            }
            if self.now > end || !self.step() {
                return pred(self);
            }
        }
    }

    /// The instant of the next delivery or timer.
    pub fn next_event(&mut self) -> Option<Instant> {
        self.drain_events();
        self.flush();
        let next_delivery = self.in_flight.iter().map(|d| d.deliver_at).min();
        [next_delivery, self.a.ep.poll_timeout(), self.b.ep.poll_timeout()].into_iter().flatten().min()
    }

    /// Steps for `d` of virtual time, never past its end.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            match self.next_event() {
                Some(t) if t <= end => {
                    if !self.step() {
                        break;
                    }
                }
                _ => {
                    self.now = end;
                    break;
                }
            }
        }
    }

    /// Messages delivered to `side`'s handlers.
    pub fn messages(&self, side: Side) -> Vec<&IncomingMessage> {
        let n = match side {
            Side::A => &self.a,
            Side::B => &self.b,
        };
        n.events
            .iter()
            .filter_map(|e| match e {
                Event::Message(m) => Some(m),
                _ => None,
            })
            .collect()
    }

    pub fn count_sent(&self, side: Side) -> usize {
        self.log.iter().filter(|(s, _)| *s == side).count()
    }
}

/// The `Response` result for message id `id` on `node`, if it arrived.
pub fn response_of(node: &Node, id: msgnet_core::MessageId) -> Option<Result<Bytes, msgnet_core::SendError>> {
    node.events.iter().find_map(|e| match e {
        Event::Response { id: i, result } if *i == id => Some(result.clone()),
        _ => None,
    })
}

/// The `SendComplete` result for message id `id` on `node`, if it arrived.
pub fn completion_of(node: &Node, id: msgnet_core::MessageId) -> Option<Result<(), msgnet_core::SendError>> {
    node.events.iter().find_map(|e| match e {
        Event::SendComplete { id: i, result } if *i == id => Some(result.clone()),
        _ => None,
    })
}
