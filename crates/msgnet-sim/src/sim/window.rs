//! Windowed mode: conservative parallel simulation with a lookahead window (see
//! [`Sim::set_threads`]).
//!
//! This module owns one window: taking its events off the heap, grouping them by node,
//! running each node's events on a worker (`run_node`: deliveries, timers, and timers
//! re-armed inside the window), and replaying what the nodes did (deliveries, sends,
//! new timers) on the calling thread in canonical order through `sim.rs`'s `route`,
//! `mark`, `count` and `push`. Workers touch only their own nodes and their own
//! [`Lane`]; the links, the network RNG, the trace and the heap are only touched by the
//! replay, so nothing depends on thread scheduling.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rayon::prelude::*;

use super::{Entry, Kind, Sim};
use crate::node::{Node, NodeId, TimerKind, TimerSlot};
use crate::trace::{Mark, Trace};

/// Chunks of work per thread and window: more than one, so a thread that drew cheap
/// events takes more (steals) while another is busy.
const CHUNKS_PER_THREAD: usize = 8;

/// Estimated cost of a delivered handshake packet (first byte ≥ 0x80: Diffie-Hellman
/// operations, a signature check) in units of other events, for splitting a window
/// into chunks of about equal cost. Only the split depends on it, never the run.
const HANDSHAKE_WEIGHT: u64 = 24;

/// Windows of less estimated cost than this run on the calling thread alone: starting
/// threads would cost more than they save (most windows of a quiet network are tiny).
const MIN_PARALLEL_WEIGHT: u64 = 2 * HANDSHAKE_WEIGHT;

/// One event of a window, for the worker that runs its node.
struct Work {
    node: usize,
    entry: Entry,
    /// A delivery whose sender or receiver is down (decided when the window is taken,
    /// where every node is visible; nodes only go down between windows).
    dropped: bool,
}

/// Something a node did in a window, replayed on the calling thread.
enum Rec {
    /// A datagram from `from` was handed to the node.
    Delivered {
        from: NodeId,
        len: usize,
        digest: u64,
    },
    /// A datagram from `from` arrived while one of them was down.
    Down {
        from: NodeId,
        len: usize,
        digest: u64,
    },
    /// The node sent `data` (with this digest) to `dst`. The replay moves `data` into
    /// the heap entry of its delivery.
    Sent {
        dst: SocketAddr,
        data: Vec<u8>,
        digest: u64,
    },
    /// The endpoint's timer is armed for after the window.
    Timer { at: Duration, gen: u64 },
    /// The services' timer is armed for after the window.
    ServiceTimer { at: Duration, gen: u64 },
}

/// A [`Rec`] at a virtual time, of a node.
struct Out {
    at: Duration,
    node: usize,
    rec: Rec,
}

/// Datagram buffers a lane keeps for reuse (delivered datagrams' buffers carry the
/// next datagrams sent, so a datagram costs no allocation on its way).
const POOL_MAX: usize = 1024;

/// One worker's output of a window (reused across windows).
#[derive(Default)]
struct Lane {
    out: Vec<Out>,
    buf: Vec<u8>,
    /// Buffers of delivered datagrams, for the datagrams sent next (at most
    /// [`POOL_MAX`]).
    pool: Vec<Vec<u8>>,
    steps: u64,
    last: Duration,
}

impl Lane {
    /// Keeps a delivered datagram's buffer for reuse.
    fn recycle(&mut self, data: &mut Vec<u8>) {
        if self.pool.len() < POOL_MAX && data.capacity() > 0 {
            self.pool.push(std::mem::take(data));
        }
    }
}

/// Buffers of windowed mode, reused across windows so that a window allocates little.
#[derive(Default)]
pub(super) struct Scratch {
    work: Vec<Work>,
    lanes: Vec<Lane>,
    /// Replay order: (time, node, lane, index in the lane).
    order: Vec<(Duration, usize, u32, u32)>,
}

/// The nodes `base..base + nodes.len()` and their events of this window.
struct Chunk<'a> {
    base: usize,
    nodes: &'a mut [Node],
    work: &'a mut [Work],
}

impl Sim {
    /// Runs one window: every event before min(t0 + `lookahead`, `end` + 1 ns), t0 the
    /// earliest scheduled event. `lookahead` must not exceed the smallest link delay.
    pub(super) fn run_window(&mut self, end: Duration, lookahead: Duration) {
        let Some(first) = self.queue.next_at() else {
            return;
        };
        let w_end = first
            .saturating_add(lookahead)
            .min(end.saturating_add(Duration::from_nanos(1)));
        let mut s = std::mem::take(&mut self.win);
        while let Some(entry) = self.queue.pop_before(w_end) {
            let (node, dropped) = match &entry.kind {
                Kind::Deliver { from, to, .. } => (to.0, self.down[from.0] || self.down[to.0]),
                Kind::Timer { node, .. } | Kind::ServiceTimer { node, .. } => (node.0, false),
            };
            s.work.push(Work {
                node,
                entry,
                dropped,
            });
        }
        s.work
            .sort_unstable_by_key(|w| (w.node, w.entry.at, w.entry.seq));
        self.windows += 1;

        let threads = self.threads.max(1);
        let epoch = self.epoch;
        {
            let total: u64 = s.work.iter().map(weight).sum();
            let chunks = chunks(&mut self.nodes, &mut s.work, threads, total);
            // One lane per chunk (a node's records are all in its chunk's lane).
            if s.lanes.len() < chunks.len() {
                s.lanes.resize_with(chunks.len(), Lane::default);
            }
            match &self.pool {
                Some(pool) if chunks.len() > 1 && total >= MIN_PARALLEL_WEIGHT => {
                    pool.install(|| {
                        chunks
                            .into_par_iter()
                            .zip(s.lanes.par_iter_mut())
                            .for_each(|(c, lane)| run_chunk(c, lane, epoch, w_end))
                    });
                }
                _ => {
                    for (c, lane) in chunks.into_iter().zip(s.lanes.iter_mut()) {
                        run_chunk(c, lane, epoch, w_end);
                    }
                }
            }
        }

        // Replay in canonical order. A node's records are all in one lane, in the
        // order they happened, so (time, node, lane, index) orders them the same way
        // whatever the number of threads and the chunk each thread drew.
        s.order.clear();
        let mut last = self.now;
        for (li, lane) in s.lanes.iter_mut().enumerate() {
            for (i, o) in lane.out.iter().enumerate() {
                s.order.push((o.at, o.node, li as u32, i as u32));
            }
            self.steps += std::mem::take(&mut lane.steps);
            last = last.max(lane.last);
        }
        s.order.sort_unstable();
        for &(at, node, li, i) in &s.order {
            let id = NodeId(node);
            self.now = at;
            match &mut s.lanes[li as usize].out[i as usize].rec {
                &mut Rec::Delivered { from, len, digest } => {
                    self.count(from, id, |c| {
                        c.delivered += 1;
                        c.bytes_delivered += len as u64;
                    });
                    self.mark(Mark::Delivered, from, node, len, digest);
                }
                &mut Rec::Down { from, len, digest } => {
                    self.count(from, id, |c| c.dropped_down += 1);
                    self.mark(Mark::Down, from, node, len, digest);
                }
                Rec::Sent { dst, data, digest } => {
                    self.route_digested(id, *dst, std::mem::take(data), *digest)
                }
                &mut Rec::Timer { at, gen } => self.push(at, Kind::Timer { node: id, gen }),
                &mut Rec::ServiceTimer { at, gen } => {
                    self.push(at, Kind::ServiceTimer { node: id, gen })
                }
            }
        }
        self.now = last;
        for lane in &mut s.lanes {
            lane.out.clear();
            lane.last = Duration::ZERO;
        }
        s.work.clear();
        self.win = s;
    }
}

/// The estimated cost of one event (see [`HANDSHAKE_WEIGHT`]).
fn weight(w: &Work) -> u64 {
    match &w.entry.kind {
        Kind::Deliver { data, .. } if !w.dropped && data.first().is_some_and(|b| *b >= 0x80) => {
            HANDSHAKE_WEIGHT
        }
        _ => 1,
    }
}

/// Splits the window's events (sorted by node) and the nodes they belong to into
/// chunks of about equal estimated cost (`total` for all of them), never splitting a
/// node's events.
fn chunks<'a>(
    nodes: &'a mut [Node],
    work: &'a mut [Work],
    threads: usize,
    total: u64,
) -> Vec<Chunk<'a>> {
    let per_chunk = (total / (threads * CHUNKS_PER_THREAD) as u64).max(1);
    let mut out = Vec::new();
    let (mut nodes, mut work, mut base) = (nodes, work, 0);
    while !work.is_empty() {
        let mut k = 0;
        let mut cost = 0;
        while k < work.len() && (cost < per_chunk || work[k].node == work[k - 1].node) {
            cost += weight(&work[k]);
            k += 1;
        }
        let (lo, hi) = (work[0].node, work[k - 1].node + 1);
        let (w, rest) = std::mem::take(&mut work).split_at_mut(k);
        work = rest;
        let (_, tail) = std::mem::take(&mut nodes).split_at_mut(lo - base);
        let (n, tail) = tail.split_at_mut(hi - lo);
        nodes = tail;
        base = hi;
        out.push(Chunk {
            base: lo,
            nodes: n,
            work: w,
        });
    }
    out
}

fn run_chunk(c: Chunk<'_>, lane: &mut Lane, epoch: Instant, w_end: Duration) {
    let mut i = 0;
    while i < c.work.len() {
        let node = c.work[i].node;
        let mut j = i + 1;
        while j < c.work.len() && c.work[j].node == node {
            j += 1;
        }
        run_node(
            node,
            &mut c.nodes[node - c.base],
            &mut c.work[i..j],
            lane,
            epoch,
            w_end,
        );
        i = j;
    }
}

/// A timer of the node re-armed inside the window for before its end.
#[derive(Clone, Copy)]
struct Local {
    at: Duration,
    /// Order of arming, for two local timers at the same instant.
    order: u64,
    gen: u64,
}

/// Runs node `id`'s events of the window (sorted by time and scheduling order) and the
/// timers it re-arms for before `w_end`, in time order; at equal times the events that
/// were scheduled before the window come first, then local timers in arming order (as
/// the sequential loop's sequence numbers would have it).
fn run_node(
    id: usize,
    node: &mut Node,
    work: &mut [Work],
    lane: &mut Lane,
    epoch: Instant,
    w_end: Duration,
) {
    let gens = (node.timer.generation(), node.svc_timer.generation());
    // Local timers: [endpoint, services].
    let mut local: [Option<Local>; 2] = [None, None];
    let mut order = 0u64;
    let mut i = 0;
    let mut now = Duration::ZERO;
    loop {
        let next_local = (0..2)
            .filter_map(|k| local[k].map(|l| (l.at, l.order, k)))
            .min();
        let take_work = match (work.get(i), next_local) {
            (Some(w), Some((at, _, _))) => w.entry.at <= at,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        if take_work {
            let w = &mut work[i];
            i += 1;
            now = w.entry.at;
            let instant = epoch + now;
            match &mut w.entry.kind {
                Kind::Deliver {
                    from,
                    from_addr,
                    data,
                    digest,
                    ..
                } => {
                    lane.steps += 1;
                    let (from, len, digest) = (*from, data.len(), *digest);
                    if w.dropped {
                        lane.out.push(Out {
                            at: now,
                            node: id,
                            rec: Rec::Down { from, len, digest },
                        });
                        lane.recycle(data);
                        continue;
                    }
                    lane.out.push(Out {
                        at: now,
                        node: id,
                        rec: Rec::Delivered { from, len, digest },
                    });
                    node.deliver(instant, *from_addr, data);
                    lane.recycle(data);
                }
                Kind::Timer { gen, .. } => {
                    if !node.fire_timer(TimerKind::Endpoint, *gen, instant) {
                        continue;
                    }
                    lane.steps += 1;
                }
                Kind::ServiceTimer { gen, .. } => {
                    if !node.fire_timer(TimerKind::Services, *gen, instant) {
                        continue;
                    }
                    lane.steps += 1;
                }
            }
        } else {
            let Some((at, _, k)) = next_local else { break };
            let Some(l) = local[k].take() else { break };
            now = at;
            let which = if k == 0 {
                TimerKind::Endpoint
            } else {
                TimerKind::Services
            };
            if !node.fire_timer(which, l.gen, epoch + now) {
                continue;
            }
            lane.steps += 1;
        }
        // After an input: drain, then re-arm.
        let Lane { out, buf, pool, .. } = &mut *lane;
        node.drain(epoch + now, buf, |dst, bytes| {
            let mut data = pool.pop().unwrap_or_default();
            data.clear();
            data.extend_from_slice(bytes);
            out.push(Out {
                at: now,
                node: id,
                rec: Rec::Sent {
                    dst,
                    data,
                    digest: Trace::digest(bytes),
                },
            });
        });
        let (ep, svc) = node.rearm_timers(epoch, now);
        for (k, armed) in [ep, svc].into_iter().enumerate() {
            if let Some((at, gen)) = armed {
                if at < w_end {
                    order += 1;
                    local[k] = Some(Local { at, order, gen });
                }
            }
        }
    }
    // Timers armed for after the window go on the heap, once per node and timer.
    let armed = |t: &TimerSlot, seen: u64| {
        let gen = t.generation();
        t.armed().filter(|_| gen != seen).map(|at| (at, gen))
    };
    if let Some((at, gen)) = armed(&node.timer, gens.0) {
        lane.out.push(Out {
            at: now,
            node: id,
            rec: Rec::Timer { at, gen },
        });
    }
    if let Some((at, gen)) = armed(&node.svc_timer, gens.1) {
        lane.out.push(Out {
            at: now,
            node: id,
            rec: Rec::ServiceTimer { at, gen },
        });
    }
    lane.last = lane.last.max(now);
}
