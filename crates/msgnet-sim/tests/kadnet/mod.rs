//! Kademlia on the simulator: [`KadService`] runs a `msgnet_kad::Kademlia` as a
//! [`Service`] on a sim node (every Kademlia message is a msgnet request or response
//! through the node's real endpoint and sessions), and [`KadNet`] drives a network of
//! them: joining, lookups, nodes silently gone. Shared by `tests/kad.rs` and
//! `examples/kad.rs` (included there with `#[path]`).
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use libp2p_identity::PeerId;
use msgnet_core::{EndpointConfig, IncomingMessage, SendOptions};
use msgnet_kad::{
    KadConfig, KadEvent, Kademlia, QueryId, QueryResult, QueryStats, RequestId,
    PROTOCOL,
};
use msgnet_sim::{
    EventLog, LinkParams, NodeId, Outcome, Output, OutputKind, Reply, Service, Sim,
};
use multiaddr::{Multiaddr, Protocol};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// Finished queries a service keeps until the driver takes them (beyond it the oldest
/// are dropped: the driver takes them after every batch).
const MAX_FINISHED: usize = 1024;

/// `/ip4/a.b.c.d/udp/port` for a simulated address.
pub fn multiaddr_of(a: SocketAddr) -> Multiaddr {
    let ip = match a.ip() {
        IpAddr::V4(v4) => Protocol::Ip4(v4),
        IpAddr::V6(v6) => Protocol::Ip6(v6),
    };
    Multiaddr::empty().with(ip).with(Protocol::Udp(a.port()))
}

/// The UDP socket address of a multiaddr, if it names one.
pub fn socket_of(m: &Multiaddr) -> Option<SocketAddr> {
    let mut it = m.iter();
    let ip: IpAddr = match it.next()? {
        Protocol::Ip4(v4) => v4.into(),
        Protocol::Ip6(v6) => v6.into(),
        _ => return None,
    };
    match it.next()? {
        Protocol::Udp(port) => Some(SocketAddr::new(ip, port)),
        _ => None,
    }
}

/// `msgnet_kad::Kademlia` as a simulator service on `/ipfs/kad/1.0.0`.
///
/// Inbound requests go to `handle_request` with the session's remote address as the
/// requester's listen address (in the simulator a node's session address is the one it
/// listens on), outbound requests become msgnet requests (ADD_PROVIDER a one-way
/// message), responses, acknowledgements and failures go back to `handle_response`.
/// Finished queries wait in [`KadService::take_finished`].
pub struct KadService {
    /// The state machine (read its routing table and stats; issue commands through
    /// `Sim::with_service`).
    pub kad: Kademlia,
    finished: VecDeque<(QueryId, QueryResult, QueryStats)>,
}

impl KadService {
    /// A service for `peer` listening at `addr`.
    pub fn new(peer: PeerId, addr: SocketAddr, config: KadConfig, now: Instant) -> Self {
        let mut kad = Kademlia::new(peer, config, now);
        kad.set_local_addrs(vec![multiaddr_of(addr)]);
        KadService { kad, finished: VecDeque::new() }
    }

    /// Removes and returns the outcome of query `id`, if it finished.
    pub fn take_finished(&mut self, id: QueryId) -> Option<(QueryResult, QueryStats)> {
        let i = self.finished.iter().position(|(q, _, _)| *q == id)?;
        self.finished.remove(i).map(|(_, r, s)| (r, s))
    }

    /// Whether query `id` finished (and was not taken).
    pub fn is_finished(&self, id: QueryId) -> bool {
        self.finished.iter().any(|(q, _, _)| *q == id)
    }

    fn drain_events(&mut self) {
        while let Some(ev) = self.kad.poll_event() {
            if let KadEvent::QueryFinished { id, result, stats } = ev {
                if self.finished.len() >= MAX_FINISHED {
                    self.finished.pop_front();
                }
                self.finished.push_back((id, result, stats));
            }
        }
    }
}

impl Service for KadService {
    fn protocols(&self) -> Vec<String> {
        vec![PROTOCOL.to_string()]
    }

    fn handle_message(
        &mut self,
        now: Instant,
        msg: &IncomingMessage,
        remote: Option<SocketAddr>,
    ) -> Option<Reply> {
        let addrs: Vec<Multiaddr> = remote.map(multiaddr_of).into_iter().collect();
        match self.kad.handle_request(now, msg.peer, &addrs, &msg.payload) {
            Ok(Some(bytes)) => Some(Ok(Bytes::from(bytes))),
            Ok(None) => None,
            Err(e) => Some(Err((2, e.to_string()))),
        }
    }

    fn handle_outcome(&mut self, now: Instant, token: u64, outcome: Outcome) {
        match outcome {
            Outcome::Response(Ok(bytes)) => self.kad.handle_response(now, RequestId(token), Some(&bytes)),
            // ADD_PROVIDER has no response: its acknowledgement is reported as an empty one.
            Outcome::Sent(Ok(())) => self.kad.handle_response(now, RequestId(token), Some(&[])),
            Outcome::Response(Err(_)) | Outcome::Sent(Err(_)) => self.kad.handle_response(now, RequestId(token), None),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.kad.handle_timeout(now);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.kad.poll_timeout()
    }

    fn poll_output(&mut self) -> Option<Output> {
        self.drain_events();
        let req = self.kad.poll_request()?;
        Some(Output {
            token: req.id.0,
            peer: req.peer,
            addr: req.addrs.iter().find_map(socket_of),
            protocol: PROTOCOL.to_string(),
            payload: Bytes::from(req.bytes),
            opts: SendOptions::default(),
            kind: if req.expects_response { OutputKind::Request } else { OutputKind::Message },
        })
    }
}

/// Parameters of a [`KadNet`].
#[derive(Clone, Debug)]
pub struct NetParams {
    /// Number of nodes.
    pub nodes: usize,
    /// Simulation seed.
    pub seed: u64,
    /// One-way link latency: uniform in [lo, hi] (latency lo + jitter hi - lo).
    pub latency: (Duration, Duration),
    /// Known nodes each joining node is given.
    pub known: usize,
    /// Largest group of nodes joining at once.
    pub max_batch: usize,
    /// Worker threads of the simulator's windowed mode (`Sim::set_threads`; 0:
    /// sequential).
    pub threads: usize,
}

impl Default for NetParams {
    fn default() -> Self {
        NetParams {
            nodes: 300,
            seed: 1,
            latency: (Duration::from_millis(20), Duration::from_millis(80)),
            known: 3,
            max_batch: 500,
            threads: 0,
        }
    }
}

/// Figures of a set of lookups.
#[derive(Clone, Debug, Default)]
pub struct LookupReport {
    /// Lookups started.
    pub count: usize,
    /// Of those, the ones whose result held the target.
    pub found: usize,
    /// Lookups that never finished (within ten virtual minutes).
    pub unfinished: usize,
    /// Rounds of every finished lookup.
    pub rounds: Vec<u32>,
    /// Requests of every finished lookup.
    pub requests: Vec<u32>,
    /// Virtual time the lookups took.
    pub virtual_time: Duration,
}

impl LookupReport {
    /// Found / started.
    pub fn success_rate(&self) -> f64 {
        self.found as f64 / self.count.max(1) as f64
    }
}

/// Mean and median of a sample.
pub fn mean_median(v: &[u32]) -> (f64, u32) {
    if v.is_empty() {
        return (0.0, 0);
    }
    let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64;
    let mut s = v.to_vec();
    s.sort_unstable();
    (mean, s[s.len() / 2])
}

/// A network of Kademlia nodes on the simulator.
pub struct KadNet {
    /// The simulator.
    pub sim: Sim,
    /// Node `i`'s sim id.
    pub ids: Vec<NodeId>,
    /// Node `i`'s peer id.
    pub peers: Vec<PeerId>,
    /// Nodes that joined (in order).
    pub joined: usize,
    /// Requests of the join lookups (their `QueryStats::requests`).
    pub join_requests: u64,
    rng: ChaCha20Rng,
    params: NetParams,
}

/// The endpoint configuration of the Kademlia nodes: sessions close after 30 s without
/// traffic (no keepalive), as libp2p closes idle connections; everything else default.
pub fn endpoint_config() -> EndpointConfig {
    EndpointConfig {
        idle_timeout: Duration::from_secs(30),
        keepalive_interval: Duration::from_secs(3600),
        ..EndpointConfig::default()
    }
}

/// The Kademlia configuration: libp2p's defaults (k = 20, α = 3, 10 s request timeout),
/// periodic jobs off (no records; bucket refreshes are not part of these runs).
pub fn kad_config(i: usize) -> KadConfig {
    KadConfig {
        rng_seed: i as u64,
        refresh_interval: None,
        record_republish_interval: None,
        record_replication_interval: None,
        provider_republish_interval: None,
        ..KadConfig::default()
    }
}

impl KadNet {
    /// `params.nodes` nodes with a Kademlia service each, none joined yet.
    pub fn new(params: NetParams) -> Self {
        let mut sim = Sim::new(params.seed);
        sim.set_event_log(EventLog::CountOnly);
        sim.set_threads(params.threads);
        let (lo, hi) = params.latency;
        sim.set_default_link(LinkParams {
            latency: lo,
            jitter: hi.saturating_sub(lo),
            ..LinkParams::default()
        });
        let (mut ids, mut peers) = (Vec::new(), Vec::new());
        for i in 0..params.nodes {
            let id = sim.add_ed25519_node(endpoint_config());
            let (peer, addr) = (sim.node(id).peer, sim.node(id).addr);
            let svc = KadService::new(peer, addr, kad_config(i), sim.instant());
            sim.add_service(id, svc);
            ids.push(id);
            peers.push(peer);
        }
        let rng = ChaCha20Rng::seed_from_u64(params.seed ^ 0x6b61_646e_6574);
        KadNet { sim, ids, peers, joined: 1, join_requests: 0, rng, params }
    }

    fn kad(&self, i: usize) -> &Kademlia {
        &self.sim.service::<KadService>(self.ids[i]).unwrap().kad
    }

    /// Routing table size of node `i`.
    pub fn table_len(&self, i: usize) -> usize {
        self.kad(i).routing_table().len()
    }

    /// Starts a query on node `i`.
    fn start(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut Kademlia, Instant) -> Result<QueryId, msgnet_kad::KadError>,
    ) -> Option<QueryId> {
        self.sim.with_service::<KadService, _>(self.ids[i], |s, now| f(&mut s.kad, now)).and_then(Result::ok)
    }

    /// Runs until every query in `queries` finished or `limit` of virtual time passed;
    /// returns their outcomes in order.
    pub fn run_queries(
        &mut self,
        queries: &[(usize, QueryId)],
        limit: Duration,
    ) -> Vec<Option<(QueryResult, QueryStats)>> {
        let ids = self.ids.clone();
        // Checked before every event: advance over the finished prefix only.
        let mut next = 0;
        self.sim.run_until(limit, |sim| {
            while next < queries.len() {
                let (i, q) = queries[next];
                if !sim.service::<KadService>(ids[i]).is_some_and(|s| s.is_finished(q)) {
                    return false;
                }
                next += 1;
            }
            true
        });
        queries
            .iter()
            .map(|&(i, q)| self.sim.with_service::<KadService, _>(ids[i], |s, _| s.take_finished(q)).flatten())
            .collect()
    }

    /// Joins every node: in groups that double up to `max_batch` (as the kad crate's
    /// harness does), each node is told `known` random nodes that joined before its
    /// group and looks up its own id (libp2p's bootstrap lookup). Returns the number of
    /// joins whose lookup did not finish.
    pub fn join_all(&mut self) -> usize {
        let n = self.ids.len();
        let mut failed = 0;
        while self.joined < n {
            let end = (self.joined + self.joined.min(self.params.max_batch.max(1))).min(n);
            let mut queries = Vec::new();
            for i in self.joined..end {
                for _ in 0..self.params.known.max(1) {
                    let j = self.rng.gen_range(0..self.joined);
                    let (peer, addr) = (self.peers[j], multiaddr_of(self.sim.node(self.ids[j]).addr));
                    self.sim.with_service::<KadService, _>(self.ids[i], |s, _| s.kad.add_address(peer, addr));
                }
                let key = self.peers[i].to_bytes();
                if let Some(q) = self.start(i, |k, now| k.find_node(now, key)) {
                    queries.push((i, q));
                } else {
                    failed += 1;
                }
            }
            for r in self.run_queries(&queries, Duration::from_secs(600)) {
                match r {
                    Some((_, stats)) => self.join_requests += u64::from(stats.requests),
                    None => failed += 1,
                }
            }
            self.joined = end;
        }
        failed
    }

    /// A random node that is up.
    pub fn random_live(&mut self) -> usize {
        loop {
            let i = self.rng.gen_range(0..self.ids.len());
            if !self.sim.node(self.ids[i]).is_down() {
                return i;
            }
        }
    }

    /// Takes `fraction` of the nodes off the network, silently (no goodbye: their
    /// datagrams are dropped, sessions to them time out).
    pub fn take_down(&mut self, fraction: f64) -> usize {
        let count = (self.ids.len() as f64 * fraction).round() as usize;
        let mut down = 0;
        while down < count.min(self.ids.len().saturating_sub(2)) {
            let i = self.random_live();
            self.sim.set_node_down(self.ids[i], true);
            down += 1;
        }
        down
    }

    /// `count` FIND_NODE lookups of random live nodes' ids from random live nodes,
    /// `batch` at a time. A lookup succeeds when its result (the k closest peers that
    /// answered) holds the target, as in msgnet-kad's scale example.
    pub fn lookups(&mut self, count: usize, batch: usize) -> LookupReport {
        let start = self.sim.now();
        let mut r = LookupReport { count, ..LookupReport::default() };
        let mut done = 0;
        while done < count {
            let mut queries = Vec::new();
            let mut targets = Vec::new();
            for _ in 0..batch.max(1).min(count - done) {
                let from = self.random_live();
                let target = loop {
                    let t = self.random_live();
                    if t != from {
                        break t;
                    }
                };
                let key = self.peers[target].to_bytes();
                done += 1;
                match self.start(from, |k, now| k.find_node(now, key)) {
                    Some(q) => {
                        queries.push((from, q));
                        targets.push(target);
                    }
                    None => r.unfinished += 1,
                }
            }
            let results = self.run_queries(&queries, Duration::from_secs(600));
            for (res, target) in results.into_iter().zip(targets) {
                match res {
                    Some((QueryResult::FoundPeers(peers), stats)) => {
                        if peers.iter().any(|p| p.peer == self.peers[target]) {
                            r.found += 1;
                        }
                        r.rounds.push(stats.rounds);
                        r.requests.push(stats.requests);
                    }
                    _ => r.unfinished += 1,
                }
            }
        }
        r.virtual_time = self.sim.now() - start;
        r
    }
}
