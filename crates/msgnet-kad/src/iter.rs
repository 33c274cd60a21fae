//! Lookups as pure iterators, after rust-libp2p's `query/peers/closest.rs`.
//!
//! A [`ClosestPeersIter`] knows a target and a set of candidate peers ordered by distance.
//! The caller asks [`ClosestPeersIter::next`] for the next peer to query (at most
//! `parallelism` in flight), and reports each outcome with `on_success` (with the closer
//! peers the response named) or `on_failure`. A peer that does not answer within
//! `peer_timeout` stops counting against the parallelism but may still answer late. The
//! lookup finishes when the `num_results` closest known peers have all answered, or when
//! no candidates are left. After `parallelism` responses in a row without progress (no new
//! closest peer) the iterator is *stalled* and widens its parallelism to `num_results`.
//!
//! [`ClosestPeersIter::new`] runs `d` such lookups over disjoint peer sets
//! (S/Kademlia): every candidate belongs to one path, the initial peers dealt round-robin
//! and every later one to the path of the peer that named it first, so no peer is queried
//! by two paths. Each path keeps its own parallelism and ends on its own; `next` takes the
//! paths in turn. With `d = 1` it is a plain lookup. No I/O, no clock.

use crate::key::{Distance, KeyHash};
use libp2p_identity::PeerId;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Iterator parameters.
#[derive(Clone, Copy, Debug)]
pub struct IterConfig {
    /// α: requests in flight while making progress.
    pub parallelism: usize,
    /// k: how many closest successful peers end the lookup.
    pub num_results: usize,
    /// After this long a request no longer counts against the parallelism.
    pub peer_timeout: Duration,
}

/// What to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Send a request to this peer, then report the outcome.
    Query(PeerId),
    /// Nothing to send until a response arrives or a request times out.
    Waiting,
    /// The lookup is over; read the result.
    Finished,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PeerState {
    NotContacted,
    Waiting(Instant),
    Unresponsive,
    Failed,
    Succeeded,
}

#[derive(Clone, Debug)]
struct IterPeer {
    peer: PeerId,
    state: PeerState,
    hop: u32,
    /// The disjoint path the peer belongs to.
    path: usize,
}

/// One disjoint path's progress.
#[derive(Clone, Debug)]
struct Path {
    /// Responses in a row without progress; at `parallelism` or more the path is stalled.
    no_progress: usize,
    finished: bool,
    num_waiting: usize,
}

/// A lookup of the peers closest to a target, over one or more disjoint paths.
#[derive(Clone, Debug)]
pub struct ClosestPeersIter {
    target: KeyHash,
    config: IterConfig,
    peers: BTreeMap<Distance, IterPeer>,
    paths: Vec<Path>,
    /// The path `next` asks first.
    turn: usize,
    rounds: u32,
}

impl ClosestPeersIter {
    /// `paths` disjoint lookups (at least 1; 1 is a plain lookup) of `target`, each with
    /// `config`, starting from the `num_results * paths` closest of `known`.
    pub fn new(
        target: KeyHash,
        known: impl IntoIterator<Item = PeerId>,
        config: IterConfig,
        paths: usize,
    ) -> Self {
        let config = IterConfig {
            parallelism: config.parallelism.max(1),
            num_results: config.num_results.max(1),
            ..config
        };
        let path = Path {
            no_progress: 0,
            finished: false,
            num_waiting: 0,
        };
        let mut it = ClosestPeersIter {
            target,
            config,
            peers: BTreeMap::new(),
            paths: vec![path; paths.max(1)],
            turn: 0,
            rounds: 0,
        };
        for p in known {
            it.insert(p, 1, 0);
        }
        while it.peers.len() > config.num_results * it.paths.len() {
            it.peers.pop_last();
        }
        for (i, p) in it.peers.values_mut().enumerate() {
            p.path = i % paths.max(1);
        }
        it
    }

    /// Adds a candidate to `path`; returns its distance if it was new.
    fn insert(&mut self, peer: PeerId, hop: u32, path: usize) -> Option<Distance> {
        let d = KeyHash::of_peer(&peer).distance(&self.target);
        if self.peers.contains_key(&d) {
            return None;
        }
        let p = IterPeer {
            peer,
            state: PeerState::NotContacted,
            hop,
            path,
        };
        self.peers.insert(d, p);
        // Bound memory: forget the farthest candidates never contacted.
        let cap = self.config.num_results * 8 * self.paths.len();
        while self.peers.len() > cap {
            match self.peers.last_key_value() {
                Some((&far, p)) if p.state == PeerState::NotContacted => {
                    self.peers.remove(&far);
                }
                _ => break,
            }
        }
        Some(d)
    }

    /// Ends the request to `peer` with `outcome` if it was in flight (or timed out);
    /// returns the peer's hop count and path.
    fn settle(&mut self, peer: &PeerId, outcome: PeerState) -> Option<(u32, usize)> {
        let d = KeyHash::of_peer(peer).distance(&self.target);
        let p = self.peers.get_mut(&d).filter(|p| p.peer == *peer)?;
        let path = &mut self.paths[p.path];
        match p.state {
            _ if path.finished => return None,
            PeerState::Waiting(_) => path.num_waiting -= 1,
            PeerState::Unresponsive => {}
            _ => return None,
        }
        p.state = outcome;
        Some((p.hop, p.path))
    }

    /// The peer answered, naming `closer` peers. Returns false if the peer was not being
    /// waited for (unknown, already failed or succeeded), in which case nothing changes.
    pub fn on_success(&mut self, peer: &PeerId, closer: impl IntoIterator<Item = PeerId>) -> bool {
        let Some((hop, path)) = self.settle(peer, PeerState::Succeeded) else {
            return false;
        };
        let mut progress = false;
        for c in closer {
            if let Some(d) = self.insert(c, hop + 1, path) {
                // Progress: the new peer is the closest of its path.
                progress |= !self.peers.range(..d).any(|(_, p)| p.path == path);
            }
        }
        let no_progress = &mut self.paths[path].no_progress;
        *no_progress = if progress { 0 } else { *no_progress + 1 };
        true
    }

    /// The request to `peer` failed. Returns false if it was not in flight.
    pub fn on_failure(&mut self, peer: &PeerId) -> bool {
        self.settle(peer, PeerState::Failed).is_some()
    }

    /// The next step of the lookup at time `now`: the next peer to query, taking the
    /// paths in turn.
    pub fn next(&mut self, now: Instant) -> Next {
        let n = self.paths.len();
        let mut waiting = false;
        for t in 0..n {
            let i = (self.turn + t) % n;
            match self.next_on(i, now) {
                Next::Query(p) => {
                    self.turn = i + 1;
                    return Next::Query(p);
                }
                Next::Waiting => waiting = true,
                Next::Finished => {}
            }
        }
        if waiting {
            Next::Waiting
        } else {
            Next::Finished
        }
    }

    /// The next step of path `i`.
    fn next_on(&mut self, i: usize, now: Instant) -> Next {
        let path = &mut self.paths[i];
        if path.finished {
            return Next::Finished;
        }
        // Count successes from the closest peer outwards while no closer peer is pending.
        let mut results = Some(0usize);
        let num_results = self.config.num_results;
        let cap = match path.no_progress >= self.config.parallelism {
            true => num_results.max(self.config.parallelism),
            false => self.config.parallelism,
        };
        for p in self.peers.values_mut().filter(|p| p.path == i) {
            let at_capacity = path.num_waiting >= cap;
            match p.state {
                PeerState::Waiting(deadline) if now >= deadline => {
                    p.state = PeerState::Unresponsive;
                    path.num_waiting -= 1;
                }
                PeerState::Waiting(_) if at_capacity => return Next::Waiting,
                PeerState::Waiting(_) => results = None,
                PeerState::Succeeded => {
                    if let Some(n) = results.as_mut() {
                        *n += 1;
                        if *n >= num_results {
                            path.finished = true;
                            return Next::Finished;
                        }
                    }
                }
                PeerState::NotContacted if at_capacity => return Next::Waiting,
                PeerState::NotContacted => {
                    p.state = PeerState::Waiting(now + self.config.peer_timeout);
                    path.num_waiting += 1;
                    self.rounds = self.rounds.max(p.hop);
                    return Next::Query(p.peer);
                }
                PeerState::Unresponsive | PeerState::Failed => {}
            }
        }
        if path.num_waiting > 0 {
            Next::Waiting
        } else {
            path.finished = true;
            Next::Finished
        }
    }

    /// Ends the lookup early (e.g. a record quorum was reached).
    pub fn finish(&mut self) {
        for path in &mut self.paths {
            path.finished = true;
        }
    }

    /// Rounds so far: the largest hop count of a queried peer (initial peers are hop 1,
    /// peers they named hop 2, and so on).
    pub fn rounds(&self) -> u32 {
        self.rounds
    }

    /// The closest peers that answered on any path, closest first, at most `num_results`.
    pub fn result(&self) -> Vec<(Distance, PeerId)> {
        self.peers
            .iter()
            .filter(|(_, p)| p.state == PeerState::Succeeded)
            .take(self.config.num_results)
            .map(|(d, p)| (*d, p.peer))
            .collect()
    }
}
