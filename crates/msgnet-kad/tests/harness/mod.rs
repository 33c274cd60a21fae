//! In-memory network of `Kademlia` nodes wired by direct calls, with a virtual clock,
//! seeded latency and optional random request failure. Shared by `tests/net.rs` and
//! `examples/kad_scale.rs` (included there with `#[path]`).
#![allow(dead_code, clippy::unwrap_used)]

use libp2p_identity::{Keypair, PeerId};
use msgnet_kad::{KadConfig, KadEvent, Kademlia, QueryId, QueryResult, QueryStats, RequestId};
use multiaddr::Multiaddr;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

/// One simulated node.
pub struct Node {
    pub kad: Kademlia,
    pub peer: PeerId,
    pub addr: Multiaddr,
    /// A dead node neither answers nor acts: requests to it time out.
    pub alive: bool,
    /// Client nodes are not learned by others.
    pub server: bool,
    timer: Option<Instant>,
}

enum Delivery {
    Request {
        from: usize,
        to: usize,
        id: RequestId,
        bytes: Vec<u8>,
        expects: bool,
    },
    Response {
        to: usize,
        id: RequestId,
        /// `None`: the request failed.
        result: Option<Vec<u8>>,
    },
    Timer {
        node: usize,
    },
}

/// The network.
pub struct Net {
    pub nodes: Vec<Node>,
    pub index: HashMap<PeerId, usize>,
    pub now: Instant,
    pub start: Instant,
    queue: BinaryHeap<Reverse<(Instant, u64)>>,
    items: HashMap<u64, Delivery>,
    seq: u64,
    rng: ChaCha20Rng,
    /// Latency range of each message.
    pub latency: (Duration, Duration),
    /// Probability that a request fails (the requester sees `Unreachable`).
    pub fail_rate: f64,
    /// Messages sent (requests and one-way messages).
    pub messages: u64,
    pub finished: HashMap<(usize, QueryId), (QueryResult, QueryStats)>,
}

pub fn peer_of(seed: u64) -> PeerId {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&seed.to_be_bytes());
    b[8] = 0x5a;
    Keypair::ed25519_from_bytes(b)
        .unwrap()
        .public()
        .to_peer_id()
}

impl Net {
    pub fn new(n: usize, seed: u64, config: impl Fn(usize) -> KadConfig) -> Self {
        let now = Instant::now();
        let mut nodes = Vec::with_capacity(n);
        let mut index = HashMap::new();
        for i in 0..n {
            let peer = peer_of(seed * 1_000_000 + i as u64);
            let addr: Multiaddr = format!(
                "/ip4/10.{}.{}.{}/udp/4001",
                i >> 16,
                (i >> 8) & 255,
                i & 255
            )
            .parse()
            .unwrap();
            let mut kad = Kademlia::new(peer, config(i), now);
            kad.set_local_addrs(vec![addr.clone()]);
            let server = kad_is_server(&config(i));
            index.insert(peer, i);
            nodes.push(Node {
                kad,
                peer,
                addr,
                alive: true,
                server,
                timer: None,
            });
        }
        Net {
            nodes,
            index,
            now,
            start: now,
            queue: BinaryHeap::new(),
            items: HashMap::new(),
            seq: 0,
            rng: ChaCha20Rng::seed_from_u64(seed),
            latency: (Duration::from_millis(10), Duration::from_millis(50)),
            fail_rate: 0.0,
            messages: 0,
            finished: HashMap::new(),
        }
    }

    fn schedule(&mut self, at: Instant, d: Delivery) {
        self.seq += 1;
        self.items.insert(self.seq, d);
        self.queue.push(Reverse((at, self.seq)));
    }

    fn delay(&mut self) -> Duration {
        let (lo, hi) = self.latency;
        lo + (hi - lo).mul_f64(self.rng.gen::<f64>())
    }

    /// Moves node `i`'s outputs into the network and re-arms its timer.
    pub fn flush(&mut self, i: usize) {
        while let Some(req) = self.nodes[i].kad.poll_request() {
            self.messages += 1;
            let at = self.now + self.delay();
            match self.index.get(&req.peer).copied() {
                Some(to) if self.rng.gen::<f64>() >= self.fail_rate => {
                    let d = Delivery::Request {
                        from: i,
                        to,
                        id: req.id,
                        bytes: req.bytes,
                        expects: req.expects_response,
                    };
                    self.schedule(at, d);
                }
                // A one-way message fails as a request does.
                _ => {
                    let d = Delivery::Response {
                        to: i,
                        id: req.id,
                        result: None,
                    };
                    self.schedule(at, d);
                }
            }
        }
        while let Some(ev) = self.nodes[i].kad.poll_event() {
            if let KadEvent::QueryFinished { id, result, stats } = ev {
                self.finished.insert((i, id), (result, stats));
            }
        }
        if let Some(t) = self.nodes[i].kad.poll_timeout() {
            let t = t.max(self.now);
            if self.nodes[i]
                .timer
                .is_none_or(|old| t < old || old <= self.now)
            {
                self.nodes[i].timer = Some(t);
                self.schedule(t, Delivery::Timer { node: i });
            }
        }
    }

    /// Processes the next delivery; false if none is due before `limit`.
    pub fn step(&mut self, limit: Instant) -> bool {
        let Some(Reverse((at, seq))) = self.queue.peek().copied() else {
            return false;
        };
        if at > limit {
            return false;
        }
        self.queue.pop();
        self.now = self.now.max(at);
        let now = self.now;
        match self.items.remove(&seq).unwrap() {
            Delivery::Request {
                from,
                to,
                id,
                bytes,
                expects,
            } => {
                if !self.nodes[to].alive {
                    return true; // silently gone: the requester times out
                }
                let addrs = if self.nodes[from].server {
                    vec![self.nodes[from].addr.clone()]
                } else {
                    vec![]
                };
                let from_peer = self.nodes[from].peer;
                let resp = self.nodes[to]
                    .kad
                    .handle_request(now, from_peer, &addrs, &bytes);
                self.flush(to);
                // A one-way message's outcome is its acknowledgement: `Ok(&[])`.
                let result = match resp {
                    Ok(Some(b)) if expects => Some(b),
                    _ if !expects => Some(Vec::new()),
                    _ => None,
                };
                let at = now + self.delay();
                self.schedule(
                    at,
                    Delivery::Response {
                        to: from,
                        id,
                        result,
                    },
                );
            }
            Delivery::Response { to, id, result } => {
                if self.nodes[to].alive {
                    self.nodes[to]
                        .kad
                        .handle_response(now, id, result.as_deref());
                    self.flush(to);
                }
            }
            Delivery::Timer { node } => {
                if self.nodes[node].timer == Some(at) {
                    self.nodes[node].timer = None;
                    if self.nodes[node].alive {
                        self.nodes[node].kad.handle_timeout(now);
                        self.flush(node);
                    }
                }
            }
        }
        true
    }

    /// Runs until query `id` of node `i` finished (or 10 virtual minutes passed).
    pub fn run_query(&mut self, i: usize, id: QueryId) -> Option<(QueryResult, QueryStats)> {
        self.run_queries(&[(i, id)]).pop().flatten()
    }

    /// Runs until all `queries` (node, id) finished (or 10 virtual minutes passed).
    pub fn run_queries(
        &mut self,
        queries: &[(usize, QueryId)],
    ) -> Vec<Option<(QueryResult, QueryStats)>> {
        for &(i, _) in queries {
            self.flush(i);
        }
        let limit = self.now + Duration::from_secs(600);
        while !queries.iter().all(|q| self.finished.contains_key(q)) {
            if !self.step(limit) {
                break;
            }
        }
        queries.iter().map(|q| self.finished.remove(q)).collect()
    }

    /// Runs the network for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let limit = self.now + d;
        while self.step(limit) {}
        self.now = self.now.max(limit);
    }

    /// Joins nodes in batches that bootstrap concurrently, each from a random node that
    /// joined before its batch; batches double up to `max_batch` (joining one at a time
    /// would stretch virtual time so far that periodic bucket refreshes dominate traffic).
    pub fn bootstrap_all(&mut self, max_batch: usize) {
        let mut joined = 1;
        while joined < self.nodes.len() {
            let end = (joined + joined.min(max_batch.max(1))).min(self.nodes.len());
            let mut queries = Vec::new();
            for i in joined..end {
                let j = self.rng.gen_range(0..joined);
                let (peer, addr) = (self.nodes[j].peer, self.nodes[j].addr.clone());
                self.nodes[i].kad.add_address(peer, addr);
                let now = self.now;
                queries.push((i, self.nodes[i].kad.bootstrap(now).unwrap()));
            }
            for r in self.run_queries(&queries) {
                r.expect("bootstrap finished");
            }
            joined = end;
        }
    }

    pub fn random_node(&mut self, alive_only: bool) -> usize {
        loop {
            let i = self.rng.gen_range(0..self.nodes.len());
            if !alive_only || self.nodes[i].alive {
                return i;
            }
        }
    }

    pub fn rng(&mut self) -> &mut ChaCha20Rng {
        &mut self.rng
    }
}

fn kad_is_server(c: &KadConfig) -> bool {
    c.mode == msgnet_kad::Mode::Server
}

/// Median and p99 of a sample.
pub fn percentiles(mut v: Vec<u32>) -> (u32, u32) {
    if v.is_empty() {
        return (0, 0);
    }
    v.sort_unstable();
    (v[v.len() / 2], v[(v.len() * 99 / 100).min(v.len() - 1)])
}

/// Runs `count` lookups of random existing peer ids from random live nodes, `batch` at a
/// time; returns (successes, rounds, messages per lookup).
pub fn lookups(net: &mut Net, count: usize, batch: usize) -> (usize, Vec<u32>, Vec<u32>) {
    let (mut ok, mut rounds, mut msgs) = (0, Vec::new(), Vec::new());
    let mut done = 0;
    while done < count {
        let mut queries = Vec::new();
        let mut targets = Vec::new();
        for _ in 0..batch.min(count - done) {
            let from = net.random_node(true);
            let target = loop {
                let t = net.random_node(true);
                if t != from {
                    break t;
                }
            };
            let key = net.nodes[target].peer.to_bytes();
            let now = net.now;
            queries.push((from, net.nodes[from].kad.find_node(now, key).unwrap()));
            targets.push(target);
        }
        done += queries.len();
        let results = net.run_queries(&queries);
        for ((res, target), (from, _)) in results.into_iter().zip(targets).zip(queries) {
            match res {
                Some((QueryResult::FoundPeers(peers), stats)) => {
                    if peers.iter().any(|p| p.peer == net.nodes[target].peer) {
                        ok += 1;
                    } else if std::env::var("KAD_DEBUG").is_ok() {
                        println!(
                            "lookup {from} -> {target} missed: {stats:?}, {} peers",
                            peers.len()
                        );
                    }
                    rounds.push(stats.rounds);
                    msgs.push(stats.requests);
                }
                other => println!("lookup {from} -> {target}: no result {other:?}"),
            }
        }
    }
    (ok, rounds, msgs)
}
