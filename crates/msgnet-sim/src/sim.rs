//! The simulator: nodes, links, the virtual clock and the event loop.
//!
//! This module owns the event heap and the order of everything. One heap entry is a
//! datagram arriving at a node or a node's timer, keyed by (virtual time, sequence
//! number), so ties resolve in scheduling order and a run is a pure function of the
//! seed and the calls made. After every input to a node (a datagram, a timer, a
//! command) the node's transmits are routed onto links (`link.rs`), its events recorded
//! (`node.rs`), and its timer re-armed. Timers are invalidated lazily: a node's
//! `poll_timeout` is only asked again after that node got input, and stale heap entries
//! are skipped by generation number, so idle nodes cost nothing.
//!
//! That is the sequential loop (the default). Windowed mode ([`Sim::set_threads`],
//! `sim/window.rs`) takes every event before the earliest one plus the lookahead (the
//! smallest link latency) at once, runs the nodes' events on worker threads and then
//! routes what they sent in a canonical order: deterministic for any thread count.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use bytes::Bytes;
use libp2p_identity::Keypair;
use msgnet_core::{
    Endpoint, EndpointConfig, InboundRequest, IncomingMessage, MessageId, SendError, SendOptions,
};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::link::{Fate, LinkCounters, LinkParams, LinkState, MAX_DELAY};
use crate::node::{EventLog, Node, NodeId, TimerKind};
use crate::service::Service;
use crate::trace::{Mark, Trace, TraceRecord};

mod window;

/// The simulator's own maps (by address, by link) are looked up for every datagram:
/// FxHash rather than `std`'s SipHash (no untrusted keys here, and no result depends on
/// their iteration order).
type HashMap<K, V> = rustc_hash::FxHashMap<K, V>;

/// The UNIX time every simulation starts at (2027-01-15), so handshake timestamps are
/// the same in every run.
pub const UNIX_START: Duration = Duration::from_secs(1_800_000_000);

/// Longest single `run_until` (keeps virtual instants representable).
const MAX_RUN: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

enum Kind {
    Deliver {
        from: NodeId,
        to: NodeId,
        from_addr: SocketAddr,
        data: Vec<u8>,
        digest: u64,
    },
    Timer {
        node: NodeId,
        gen: u64,
    },
    ServiceTimer {
        node: NodeId,
        gen: u64,
    },
}

struct Entry {
    at: Duration,
    seq: u64,
    kind: Kind,
}

/// The scheduled events, in (time, scheduling order): a binary heap of 32-byte keys
/// over a slab of the events themselves, so that a push or pop moves a key per heap
/// level rather than a whole datagram entry (112 bytes; millions of them per run).
#[derive(Default)]
struct Queue {
    heap: BinaryHeap<Reverse<(Duration, u64, usize)>>,
    slab: Vec<Option<Kind>>,
    free: Vec<usize>,
}

impl Queue {
    fn push(&mut self, at: Duration, seq: u64, kind: Kind) {
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slab[slot] = Some(kind);
                slot
            }
            None => {
                self.slab.push(Some(kind));
                self.slab.len() - 1
            }
        };
        self.heap.push(Reverse((at, seq, slot)));
    }

    /// The earliest event, if it is due before `end`.
    fn pop_before(&mut self, end: Duration) -> Option<Entry> {
        let &Reverse((at, _, _)) = self.heap.peek()?;
        if at >= end {
            return None;
        }
        let Reverse((at, seq, slot)) = self.heap.pop()?;
        let kind = self.slab.get_mut(slot)?.take()?;
        self.free.push(slot);
        Some(Entry { at, seq, kind })
    }

    /// The time of the earliest event.
    fn next_at(&self) -> Option<Duration> {
        self.heap.peek().map(|&Reverse((at, _, _))| at)
    }

    fn len(&self) -> usize {
        self.heap.len()
    }
}

/// A deterministic network of msgnet endpoints on a virtual clock.
///
/// All randomness comes from ChaCha20 streams derived from the seed: the network's
/// (loss, delay, duplication), the nodes' `EndpointConfig::rng_seed`, and the keys of
/// [`Sim::add_ed25519_node`]. The same seed and the same calls give the same run, byte
/// for byte ([`Sim::trace_hash`]).
pub struct Sim {
    seed: u64,
    epoch: Instant,
    now: Duration,
    nodes: Vec<Node>,
    /// Per node, read for every datagram: its address and whether it is down (copies of
    /// `Node::addr` and `Node::down`, kept apart so routing touches no node state).
    node_addrs: Vec<SocketAddr>,
    down: Vec<bool>,
    by_addr: HashMap<SocketAddr, NodeId>,
    default_link: LinkParams,
    overrides: HashMap<(NodeId, NodeId), LinkParams>,
    links: HashMap<(NodeId, NodeId), LinkState>,
    /// Directed links that use another link's parameters and state (a shared bottleneck).
    shared: HashMap<(NodeId, NodeId), (NodeId, NodeId)>,
    net_rng: ChaCha20Rng,
    seed_rng: ChaCha20Rng,
    key_rng: ChaCha20Rng,
    queue: Queue,
    seq: u64,
    trace: Trace,
    trace_log: Option<Vec<TraceRecord>>,
    totals: LinkCounters,
    unroutable: u64,
    /// Nodes handed out by `node_mut` whose output has not been drained yet.
    touched: Vec<NodeId>,
    buf: Vec<u8>,
    /// Sequential mode: one input's transmits (destination, start, length in `sent_bytes`).
    sent: Vec<(SocketAddr, usize, usize)>,
    sent_bytes: Vec<u8>,
    log: EventLog,
    steps: u64,
    /// Worker threads of windowed mode; 0: sequential.
    threads: usize,
    /// The worker threads themselves (windowed mode with 2 or more), kept for the whole
    /// run: starting threads for every window cost more than small windows' work.
    pool: Option<rayon::ThreadPool>,
    /// The smallest delay of any link, once computed (`None` after a link change).
    lookahead: Option<Duration>,
    /// Windows run in windowed mode.
    windows: u64,
    /// Reused buffers of windowed mode.
    win: window::Scratch,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("seed", &self.seed)
            .field("now", &self.now)
            .field("nodes", &self.nodes.len())
            .field("pending", &self.queue.len())
            .finish_non_exhaustive()
    }
}

impl Sim {
    /// An empty simulation. The only real clock read: `Instant::now()` once, as the
    /// virtual epoch (runs never depend on its value).
    pub fn new(seed: u64) -> Self {
        let stream = |s| {
            let mut r = ChaCha20Rng::seed_from_u64(seed);
            r.set_stream(s);
            r
        };
        Self {
            seed,
            epoch: Instant::now(),
            now: Duration::ZERO,
            nodes: Vec::new(),
            node_addrs: Vec::new(),
            down: Vec::new(),
            by_addr: HashMap::default(),
            default_link: LinkParams::default(),
            overrides: HashMap::default(),
            links: HashMap::default(),
            shared: HashMap::default(),
            net_rng: stream(0),
            seed_rng: stream(1),
            key_rng: stream(2),
            queue: Queue::default(),
            seq: 0,
            trace: Trace::default(),
            trace_log: None,
            totals: LinkCounters::default(),
            unroutable: 0,
            touched: Vec::new(),
            buf: Vec::with_capacity(2048),
            sent: Vec::new(),
            sent_bytes: Vec::new(),
            log: EventLog::Full,
            steps: 0,
            threads: 0,
            pool: None,
            lookahead: None,
            windows: 0,
            win: window::Scratch::default(),
        }
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    // ----- nodes ----------------------------------------------------------------------

    /// The address of the `i`-th node: `10.a.b.c:port`, with `a.b.c` the node number
    /// plus one (so up to 16 million nodes on port 4000, then further ports).
    pub fn addr_of(i: usize) -> SocketAddr {
        let n = i as u64 + 1;
        let ip = Ipv4Addr::new(10, (n >> 16) as u8, (n >> 8) as u8, n as u8);
        let port = 4000u16.wrapping_add((n >> 24) as u16);
        SocketAddr::V4(SocketAddrV4::new(ip, port))
    }

    /// Adds a node with this identity. Its `config.rng_seed` is replaced by one derived
    /// from the simulation seed; the endpoint is created at the current virtual time with
    /// UNIX time [`UNIX_START`] plus the virtual time.
    pub fn add_node(&mut self, keypair: &Keypair, mut config: EndpointConfig) -> NodeId {
        self.seed_rng.fill_bytes(&mut config.rng_seed);
        let id = NodeId(self.nodes.len());
        let addr = Self::addr_of(id.0);
        let ep = Endpoint::new(config, keypair, self.instant(), UNIX_START + self.now);
        self.nodes.push(Node::new(ep, addr, self.log));
        self.node_addrs.push(addr);
        self.down.push(false);
        self.by_addr.insert(addr, id);
        self.rearm(id);
        id
    }

    /// Adds a node with an ed25519 identity derived from the simulation seed.
    pub fn add_ed25519_node(&mut self, config: EndpointConfig) -> NodeId {
        let kp = self.next_ed25519();
        self.add_node(&kp, config)
    }

    fn next_ed25519(&mut self) -> Keypair {
        loop {
            let mut secret = [0u8; 32];
            self.key_rng.fill_bytes(&mut secret);
            // Every 32-byte string is a valid ed25519 secret; the loop only satisfies
            // the fallible signature.
            if let Ok(kp) = Keypair::ed25519_from_bytes(secret) {
                return kp;
            }
        }
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Every node id, in order.
    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> {
        (0..self.nodes.len()).map(NodeId)
    }

    /// A node. Panics if `id` is not from this simulation.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.0]
    }

    /// A node, mutably (to register protocols, inspect or drive its endpoint directly).
    /// Whatever the endpoint produces is drained before the next step. Panics if `id`
    /// is not from this simulation.
    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        self.touched.push(id);
        &mut self.nodes[id.0]
    }

    /// Every node, in id order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Tells `a` that `b` is at `b`'s address.
    pub fn introduce(&mut self, a: NodeId, b: NodeId) {
        let (peer, addr) = (self.nodes[b.0].peer, self.nodes[b.0].addr);
        self.nodes[a.0].ep.add_address(peer, addr);
    }

    /// Registers `protocol` on `node`.
    pub fn register(&mut self, node: NodeId, protocol: &str) {
        self.nodes[node.0].ep.register_protocol(protocol);
    }

    /// Answers every request `node` receives with `f`'s output (`None`: no answer).
    pub fn set_responder(
        &mut self,
        node: NodeId,
        f: impl FnMut(&IncomingMessage) -> Option<Bytes> + Send + 'static,
    ) {
        self.nodes[node.0].responder = Some(Box::new(f));
    }

    /// Removes `node`'s auto-responder.
    pub fn clear_responder(&mut self, node: NodeId) {
        self.nodes[node.0].responder = None;
    }

    // ----- services -------------------------------------------------------------------

    /// Hosts `service` on `node` (see [`Service`]): registers its protocols on the
    /// endpoint, then drains its first outputs and arms its timer. Messages on those
    /// protocols go to the service instead of the auto-responder.
    pub fn add_service(&mut self, node: NodeId, service: impl Service) {
        self.nodes[node.0].add_service(Box::new(service));
        self.after_input(node);
    }

    /// The first service of type `T` on `node`.
    pub fn service<T: Service>(&self, node: NodeId) -> Option<&T> {
        self.nodes[node.0].service::<T>()
    }

    /// Calls `f` on the first service of type `T` on `node` with the current virtual
    /// instant (to issue commands), then drains its outputs through the endpoint and
    /// re-arms the timers. `None` if the node hosts no such service.
    pub fn with_service<T: Service, R>(
        &mut self,
        node: NodeId,
        f: impl FnOnce(&mut T, Instant) -> R,
    ) -> Option<R> {
        let now = self.instant();
        let r = self.nodes[node.0].service_mut::<T>().map(|s| f(s, now));
        if r.is_some() {
            self.after_input(node);
        }
        r
    }

    /// Takes `node` off the network (or puts it back): while down, every datagram from
    /// it or to it (including those already in flight when they arrive) is dropped. Its
    /// endpoint keeps running its timers, as a peer that vanished without closing.
    pub fn set_node_down(&mut self, node: NodeId, down: bool) {
        self.nodes[node.0].down = down;
        self.down[node.0] = down;
    }

    /// What to keep of events, for every node (existing and future).
    pub fn set_event_log(&mut self, log: EventLog) {
        self.log = log;
        for n in &mut self.nodes {
            n.log = log;
        }
    }

    // ----- links ----------------------------------------------------------------------

    /// The parameters of every link without an override.
    pub fn set_default_link(&mut self, params: LinkParams) {
        self.lookahead = None;
        self.default_link = params;
    }

    /// Makes the directed link `a → b` use the parameters and the state (queue, loss
    /// channel, counters) of `via_a → via_b`: datagrams of both pairs share one
    /// bottleneck, as flows through one router port do.
    pub fn share_link(&mut self, a: NodeId, b: NodeId, via_a: NodeId, via_b: NodeId) {
        if (a, b) != (via_a, via_b) {
            self.shared.insert((a, b), (via_a, via_b));
        }
    }

    /// Overrides the link from `a` to `b` (one direction).
    pub fn set_link(&mut self, a: NodeId, b: NodeId, params: LinkParams) {
        self.lookahead = None;
        self.overrides.insert((a, b), params);
    }

    /// Removes the override of the link from `a` to `b`.
    pub fn clear_link(&mut self, a: NodeId, b: NodeId) {
        self.lookahead = None;
        self.overrides.remove(&(a, b));
    }

    /// The parameters in force from `a` to `b`.
    pub fn link(&self, a: NodeId, b: NodeId) -> &LinkParams {
        self.overrides.get(&(a, b)).unwrap_or(&self.default_link)
    }

    /// Counters of the link from `a` to `b`.
    pub fn link_counters(&self, a: NodeId, b: NodeId) -> LinkCounters {
        self.links
            .get(&(a, b))
            .map(|l| l.counters)
            .unwrap_or_default()
    }

    /// Counters of all links together.
    pub fn totals(&self) -> LinkCounters {
        self.totals
    }

    /// Datagrams sent to an address no node has.
    pub fn unroutable(&self) -> u64 {
        self.unroutable
    }

    // ----- time and commands ----------------------------------------------------------

    /// Virtual time since the start.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// The current virtual time as an `Instant` (for calling endpoint methods directly).
    pub fn instant(&self) -> Instant {
        self.epoch + self.now
    }

    /// Runs the event loop in windowed mode on `threads` worker threads (the calling
    /// thread is one of them), or sequentially with 0 (the default).
    ///
    /// **Sequential** (0): one event at a time in (time, scheduling order), every
    /// datagram routed as it is sent. **Windowed** (1 or more): conservative parallel
    /// simulation with a lookahead window. The lookahead L is the smallest delay any
    /// datagram can have on any link: the smallest `latency` of the default link and of
    /// every override (jitter, reordering, the bandwidth queue and duplicates only add
    /// delay). Repeatedly, with t0 the earliest scheduled event, every event before
    /// t0 + L is taken at once: nothing sent in that window can arrive before its end,
    /// so the nodes' events are independent and run on the workers, each node's in
    /// (time, scheduling order), timers re-armed inside the window included. Then, on
    /// the calling thread, what the nodes sent and delivered is put on the links and
    /// into the trace in one canonical order (time, node, order within the node), so
    /// the network's randomness never depends on thread scheduling: **the same seed
    /// gives the same run, byte for byte, for any number of threads ≥ 1** (1 runs the
    /// windows on the calling thread). It is not the sequential run (events of a
    /// window are scheduled in another order), so a seed's trace hash differs between
    /// 0 and ≥ 1. With a zero-latency link anywhere, L is 0 and the loop stays
    /// sequential.
    ///
    /// In windowed mode, [`Sim::run_until`] checks its predicate between windows, and
    /// auto-responders and services of different nodes run concurrently (they must not
    /// share mutable state). [`Sim::step`] is always sequential. Windows also end at
    /// the limit of [`Sim::run_until`] / [`Sim::run_for`], so the same seed *and the
    /// same calls* give the same run (as in sequential mode).
    ///
    /// With 2 or more, the workers are a thread pool kept until the next call; if the
    /// system refuses to start its threads, windows run on the calling thread alone
    /// (the same run, only slower).
    pub fn set_threads(&mut self, threads: usize) {
        self.threads = threads;
        self.pool = (threads > 1)
            .then(|| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(|i| format!("msgnet-sim-{i}"))
                    .build()
                    .ok()
            })
            .flatten();
    }

    /// The worker threads of windowed mode (0: sequential).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The lookahead of windowed mode: the smallest latency of the default link and of
    /// every override (capped at [`MAX_DELAY`]). Zero keeps the loop sequential.
    pub fn lookahead(&self) -> Duration {
        self.overrides
            .values()
            .chain(std::iter::once(&self.default_link))
            .map(|p| p.latency)
            .min()
            .unwrap_or(Duration::ZERO)
            .min(MAX_DELAY)
    }

    /// [`Sim::lookahead`], computed again only after a link change.
    fn cached_lookahead(&mut self) -> Duration {
        match self.lookahead {
            Some(l) => l,
            None => {
                let l = Sim::lookahead(self);
                self.lookahead = Some(l);
                l
            }
        }
    }

    /// Windows run in windowed mode so far.
    pub fn windows(&self) -> u64 {
        self.windows
    }

    /// Events processed so far (deliveries and timer firings, stale timers excluded).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The fingerprint of every datagram event so far (see `trace.rs`).
    pub fn trace_hash(&self) -> u64 {
        self.trace.value()
    }

    /// Keeps (or stops keeping) every datagram event in [`Sim::trace_log`].
    pub fn set_trace_log(&mut self, on: bool) {
        if on != self.trace_log.is_some() {
            self.trace_log = on.then(Vec::new);
        }
    }

    /// The datagram events recorded since [`Sim::set_trace_log`] was turned on.
    pub fn trace_log(&self) -> &[TraceRecord] {
        self.trace_log.as_deref().unwrap_or(&[])
    }

    fn mark(&mut self, mark: Mark, from: NodeId, to: usize, len: usize, digest: u64) {
        self.trace.record(mark, self.now, from.0, to, digest);
        if let Some(log) = &mut self.trace_log {
            log.push(TraceRecord {
                mark,
                at: self.now,
                from: from.0,
                to,
                len,
                digest,
            });
        }
    }

    /// `from` sends a message to `to` (see `Endpoint::send`).
    pub fn send(
        &mut self,
        from: NodeId,
        to: NodeId,
        protocol: &str,
        payload: impl Into<Bytes>,
        opts: SendOptions,
    ) -> Result<MessageId, SendError> {
        let (now, peer) = (self.instant(), self.nodes[to.0].peer);
        let r = self.nodes[from.0]
            .ep
            .send(now, peer, protocol, payload.into(), opts);
        self.after_input(from);
        r
    }

    /// `from` sends a request to `to` (see `Endpoint::request`); the outcome lands in
    /// [`Node::response`].
    pub fn request(
        &mut self,
        from: NodeId,
        to: NodeId,
        protocol: &str,
        payload: impl Into<Bytes>,
        opts: SendOptions,
    ) -> Result<MessageId, SendError> {
        let (now, peer) = (self.instant(), self.nodes[to.0].peer);
        let r = self.nodes[from.0]
            .ep
            .request(now, peer, protocol, payload.into(), opts);
        self.after_input(from);
        r
    }

    /// `node` answers an inbound request.
    pub fn respond(
        &mut self,
        node: NodeId,
        request: &InboundRequest,
        result: Result<Bytes, (u8, String)>,
    ) -> Result<(), SendError> {
        let now = self.instant();
        let r = self.nodes[node.0].ep.respond(now, request, result);
        self.after_input(node);
        r
    }

    // ----- the event loop -------------------------------------------------------------

    /// Processes the next event, sequentially (whatever [`Sim::set_threads`] says).
    /// Returns false when nothing is scheduled.
    pub fn step(&mut self) -> bool {
        self.flush_touched();
        let Some(e) = self.queue.pop_before(Duration::MAX) else {
            return false;
        };
        self.now = self.now.max(e.at);
        match e.kind {
            Kind::Deliver {
                from,
                to,
                from_addr,
                mut data,
                digest,
            } => {
                self.steps += 1;
                if self.down[from.0] || self.down[to.0] {
                    self.count(from, to, |c| c.dropped_down += 1);
                    self.mark(Mark::Down, from, to.0, data.len(), digest);
                    return true;
                }
                let len = data.len() as u64;
                self.count(from, to, |c| {
                    c.delivered += 1;
                    c.bytes_delivered += len;
                });
                self.mark(Mark::Delivered, from, to.0, data.len(), digest);
                let now = self.instant();
                self.nodes[to.0].deliver(now, from_addr, &mut data);
                self.after_input(to);
            }
            Kind::Timer { node, gen } | Kind::ServiceTimer { node, gen } => {
                let which = match e.kind {
                    Kind::Timer { .. } => TimerKind::Endpoint,
                    _ => TimerKind::Services,
                };
                let now = self.instant();
                if self.nodes[node.0].fire_timer(which, gen, now) {
                    self.steps += 1;
                    self.after_input(node);
                }
            }
        }
        true
    }

    /// The virtual time of the next scheduled event, if any.
    pub fn next_event_time(&self) -> Option<Duration> {
        self.queue.next_at()
    }

    /// Runs until `pred` holds or `limit` of virtual time has passed (at most ten
    /// years); returns whether `pred` held. On a time-out the clock stands at the limit.
    ///
    /// In sequential mode (the default) `pred` is checked before every event. In
    /// windowed mode ([`Sim::set_threads`]) it is checked between windows: the run may
    /// go on for up to one lookahead (the smallest link latency) of virtual time after
    /// `pred` became true, and the clock then stands at the last event processed.
    pub fn run_until(&mut self, limit: Duration, mut pred: impl FnMut(&Sim) -> bool) -> bool {
        let end = self.now.saturating_add(limit.min(MAX_RUN));
        loop {
            self.flush_touched();
            if pred(self) {
                return true;
            }
            match self.next_event_time() {
                Some(t) if t <= end => {
                    let lookahead = self.cached_lookahead();
                    if self.threads == 0 || lookahead.is_zero() {
                        self.step();
                    } else {
                        self.run_window(end, lookahead);
                    }
                }
                _ => {
                    self.now = self.now.max(end);
                    return pred(self);
                }
            }
        }
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        self.run_until(d, |_| false);
    }

    fn flush_touched(&mut self) {
        while let Some(id) = self.touched.pop() {
            if id.0 < self.nodes.len() {
                self.after_input(id);
            }
        }
    }

    fn push(&mut self, at: Duration, kind: Kind) {
        self.seq += 1;
        self.queue.push(at, self.seq, kind);
    }

    /// Drains `id`'s transmits and events (answers can produce more transmits) and
    /// routes the transmits in the order the endpoint emitted them, then re-arms its
    /// timers. (Routing after draining rather than in between changes nothing: routing
    /// never touches an endpoint.)
    fn after_input(&mut self, id: NodeId) {
        let now = self.instant();
        let (mut buf, mut sent, mut bytes) = (
            std::mem::take(&mut self.buf),
            std::mem::take(&mut self.sent),
            std::mem::take(&mut self.sent_bytes),
        );
        self.nodes[id.0].drain(now, &mut buf, |dst, data| {
            sent.push((dst, bytes.len(), data.len()));
            bytes.extend_from_slice(data);
        });
        for &(dst, start, len) in &sent {
            self.route(id, dst, &bytes[start..start + len]);
        }
        sent.clear();
        bytes.clear();
        (self.buf, self.sent, self.sent_bytes) = (buf, sent, bytes);
        self.rearm(id);
    }

    /// Re-arms `id`'s endpoint timer and services' timer, scheduling new heap entries.
    fn rearm(&mut self, id: NodeId) {
        let (ep, svc) = self.nodes[id.0].rearm_timers(self.epoch, self.now);
        if let Some((at, gen)) = ep {
            self.push(at, Kind::Timer { node: id, gen });
        }
        if let Some((at, gen)) = svc {
            self.push(at, Kind::ServiceTimer { node: id, gen });
        }
    }

    /// Applies `f` to the counters of the link from `from` to `to` and to the totals.
    fn count(&mut self, from: NodeId, to: NodeId, f: impl Fn(&mut LinkCounters)) {
        f(&mut self.links.entry((from, to)).or_default().counters);
        f(&mut self.totals);
    }

    /// Puts one datagram from `from` on the link to its destination.
    fn route(&mut self, from: NodeId, dst: SocketAddr, data: &[u8]) {
        self.route_digested(from, dst, data.to_vec(), Trace::digest(data));
    }

    /// [`Sim::route`] of an owned datagram with its digest already computed (by a
    /// worker): the buffer moves into the heap entry of its delivery.
    fn route_digested(&mut self, from: NodeId, dst: SocketAddr, data: Vec<u8>, digest: u64) {
        let (len, now) = (data.len(), self.now);
        let Some(&to) = self.by_addr.get(&dst) else {
            self.unroutable += 1;
            self.mark(Mark::Unroutable, from, usize::MAX, len, digest);
            return;
        };
        self.mark(Mark::Sent, from, to.0, len, digest);
        if self.down[from.0] {
            self.count(from, to, |c| {
                c.sent += 1;
                c.bytes_sent += len as u64;
                c.dropped_down += 1;
            });
            self.mark(Mark::Down, from, to.0, len, digest);
            return;
        }
        let key = self.shared.get(&(from, to)).copied().unwrap_or((from, to));
        let params = self.overrides.get(&key).unwrap_or(&self.default_link);
        let link = self.links.entry(key).or_default();
        let before = link.counters;
        let fate = link.transmit(params, &mut self.net_rng, now, len);
        let after = link.counters;
        self.totals.add(&LinkCounters {
            sent: after.sent - before.sent,
            bytes_sent: after.bytes_sent - before.bytes_sent,
            delivered: 0,
            bytes_delivered: 0,
            dropped_loss: after.dropped_loss - before.dropped_loss,
            dropped_queue: after.dropped_queue - before.dropped_queue,
            dropped_down: 0,
            duplicated: after.duplicated - before.duplicated,
        });
        let from_addr = self.node_addrs[from.0];
        match fate {
            Fate::Lost => self.mark(Mark::Lost, from, to.0, len, digest),
            Fate::QueueFull => self.mark(Mark::QueueFull, from, to.0, len, digest),
            Fate::Deliver { at, dup } => {
                let deliver = |data| Kind::Deliver {
                    from,
                    to,
                    from_addr,
                    data,
                    digest,
                };
                if let Some(d) = dup {
                    self.mark(Mark::Duplicated, from, to.0, len, digest);
                    self.push(d, deliver(data.clone()));
                }
                self.push(at, deliver(data));
            }
        }
    }
}
