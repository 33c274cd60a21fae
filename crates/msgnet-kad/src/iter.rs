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
//! [`DisjointPeersIter`] runs `d` such iterators over disjoint peer sets (S/Kademlia): the
//! initial peers are dealt round-robin, and a peer claimed by one path is never queried by
//! another. With `d = 1` it is a plain lookup. Neither type does I/O or reads a clock.

use crate::key::{Distance, KeyHash};
use libp2p_identity::PeerId;
use std::collections::{BTreeMap, HashMap};
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
    /// Claimed by another disjoint path.
    Skipped,
}

#[derive(Clone, Debug)]
struct IterPeer {
    peer: PeerId,
    state: PeerState,
    hop: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Iterating { no_progress: usize },
    Stalled,
    Finished,
}

/// A lookup of the peers closest to a target.
#[derive(Clone, Debug)]
pub struct ClosestPeersIter {
    target: KeyHash,
    config: IterConfig,
    peers: BTreeMap<Distance, IterPeer>,
    state: State,
    num_waiting: usize,
    rounds: u32,
}

impl ClosestPeersIter {
    /// A lookup of `target` starting from `known` (only the `num_results` closest are kept).
    pub fn new(
        target: KeyHash,
        known: impl IntoIterator<Item = PeerId>,
        config: IterConfig,
    ) -> Self {
        let config = IterConfig {
            parallelism: config.parallelism.max(1),
            num_results: config.num_results.max(1),
            ..config
        };
        let mut it = ClosestPeersIter {
            target,
            config,
            peers: BTreeMap::new(),
            state: State::Iterating { no_progress: 0 },
            num_waiting: 0,
            rounds: 0,
        };
        for p in known {
            it.insert(p, 1);
        }
        while it.peers.len() > it.config.num_results {
            it.peers.pop_last();
        }
        it
    }

    /// Target of the lookup.
    pub fn target(&self) -> &KeyHash {
        &self.target
    }

    /// Adds a candidate; returns its distance if it was new.
    fn insert(&mut self, peer: PeerId, hop: u32) -> Option<Distance> {
        let d = KeyHash::of_peer(&peer).distance(&self.target);
        if self.peers.contains_key(&d) {
            return None;
        }
        self.peers.insert(
            d,
            IterPeer {
                peer,
                state: PeerState::NotContacted,
                hop,
            },
        );
        // Bound memory: forget the farthest candidates never contacted.
        let cap = self.config.num_results * 8;
        while self.peers.len() > cap {
            let Some((&far, p)) = self.peers.iter().next_back() else {
                break;
            };
            if p.state != PeerState::NotContacted {
                break;
            }
            self.peers.remove(&far);
        }
        Some(d)
    }

    fn find(&mut self, peer: &PeerId) -> Option<&mut IterPeer> {
        let d = KeyHash::of_peer(peer).distance(&self.target);
        self.peers.get_mut(&d).filter(|p| p.peer == *peer)
    }

    /// The peer answered, naming `closer` peers. Returns false if the peer was not being
    /// waited for (unknown, already failed or succeeded), in which case nothing changes.
    pub fn on_success(&mut self, peer: &PeerId, closer: impl IntoIterator<Item = PeerId>) -> bool {
        if self.state == State::Finished {
            return false;
        }
        let Some(p) = self.find(peer) else {
            return false;
        };
        let hop = p.hop;
        match p.state {
            PeerState::Waiting(_) => {
                p.state = PeerState::Succeeded;
                self.num_waiting -= 1;
            }
            PeerState::Unresponsive => p.state = PeerState::Succeeded,
            _ => return false,
        }
        let mut progress = false;
        for c in closer {
            if let Some(d) = self.insert(c, hop + 1) {
                progress |= self.peers.keys().next() == Some(&d);
            }
        }
        self.state = match self.state {
            State::Iterating { .. } | State::Stalled if progress => {
                State::Iterating { no_progress: 0 }
            }
            State::Iterating { no_progress } if no_progress + 1 >= self.config.parallelism => {
                State::Stalled
            }
            State::Iterating { no_progress } => State::Iterating {
                no_progress: no_progress + 1,
            },
            s => s,
        };
        true
    }

    /// The request to `peer` failed. Returns false if it was not in flight.
    pub fn on_failure(&mut self, peer: &PeerId) -> bool {
        if self.state == State::Finished {
            return false;
        }
        let Some(p) = self.find(peer) else {
            return false;
        };
        match p.state {
            PeerState::Waiting(_) => {
                p.state = PeerState::Failed;
                self.num_waiting -= 1;
            }
            PeerState::Unresponsive => p.state = PeerState::Failed,
            _ => return false,
        }
        true
    }

    /// Withdraws a peer just returned by `next` without querying it (disjoint paths).
    pub fn skip(&mut self, peer: &PeerId) {
        if let Some(p) = self.find(peer) {
            if let PeerState::Waiting(_) = p.state {
                p.state = PeerState::Skipped;
                self.num_waiting -= 1;
            }
        }
    }

    /// The next step of the lookup at time `now`.
    pub fn next(&mut self, now: Instant) -> Next {
        if self.state == State::Finished {
            return Next::Finished;
        }
        // Count successes from the closest peer outwards while no closer peer is pending.
        let mut results = Some(0usize);
        let num_results = self.config.num_results;
        let timeout = self.config.peer_timeout;
        let cap = match self.state {
            State::Stalled => num_results.max(self.config.parallelism),
            _ => self.config.parallelism,
        };
        for p in self.peers.values_mut() {
            let at_capacity = self.num_waiting >= cap;
            match p.state {
                PeerState::Waiting(deadline) if now >= deadline => {
                    p.state = PeerState::Unresponsive;
                    self.num_waiting -= 1;
                }
                PeerState::Waiting(_) => {
                    if at_capacity {
                        return Next::Waiting;
                    }
                    results = None;
                }
                PeerState::Succeeded => {
                    if let Some(n) = results.as_mut() {
                        *n += 1;
                        if *n >= num_results {
                            self.state = State::Finished;
                            return Next::Finished;
                        }
                    }
                }
                PeerState::NotContacted => {
                    if at_capacity {
                        return Next::Waiting;
                    }
                    p.state = PeerState::Waiting(now + timeout);
                    self.num_waiting += 1;
                    self.rounds = self.rounds.max(p.hop);
                    return Next::Query(p.peer);
                }
                PeerState::Unresponsive | PeerState::Failed | PeerState::Skipped => {}
            }
        }
        if self.num_waiting > 0 {
            Next::Waiting
        } else {
            self.state = State::Finished;
            Next::Finished
        }
    }

    /// The earliest instant at which a waiting request times out.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.peers
            .values()
            .filter_map(|p| match p.state {
                PeerState::Waiting(t) => Some(t),
                _ => None,
            })
            .min()
    }

    /// True once [`Self::next`] has returned [`Next::Finished`] (or [`Self::finish`] was called).
    pub fn is_finished(&self) -> bool {
        self.state == State::Finished
    }

    /// Ends the lookup early (e.g. a record quorum was reached).
    pub fn finish(&mut self) {
        self.state = State::Finished;
    }

    /// Rounds so far: the largest hop count of a queried peer (initial peers are hop 1,
    /// peers they named hop 2, and so on).
    pub fn rounds(&self) -> u32 {
        self.rounds
    }

    /// The closest peers that answered, closest first, at most `num_results`.
    pub fn result(&self) -> Vec<(Distance, PeerId)> {
        self.peers
            .iter()
            .filter(|(_, p)| p.state == PeerState::Succeeded)
            .take(self.config.num_results)
            .map(|(d, p)| (*d, p.peer))
            .collect()
    }
}

/// `d` lookups of one target over disjoint peer sets.
#[derive(Clone, Debug)]
pub struct DisjointPeersIter {
    paths: Vec<ClosestPeersIter>,
    owner: HashMap<PeerId, usize>,
    turn: usize,
    num_results: usize,
}

impl DisjointPeersIter {
    /// `paths` disjoint lookups (at least 1) of `target`, each with `config`.
    pub fn new(
        target: KeyHash,
        known: impl IntoIterator<Item = PeerId>,
        config: IterConfig,
        paths: usize,
    ) -> Self {
        let d = paths.max(1);
        let mut known: Vec<(Distance, PeerId)> = known
            .into_iter()
            .map(|p| (KeyHash::of_peer(&p).distance(&target), p))
            .collect();
        known.sort_unstable_by_key(|(d, _)| *d);
        known.dedup_by_key(|(d, _)| *d);
        known.truncate(config.num_results.max(1) * d);
        let mut owner = HashMap::new();
        let mut sets = vec![Vec::new(); d];
        for (i, (_, p)) in known.into_iter().enumerate() {
            owner.insert(p, i % d);
            sets[i % d].push(p);
        }
        let paths = sets
            .into_iter()
            .map(|s| ClosestPeersIter::new(target, s, config))
            .collect();
        DisjointPeersIter {
            paths,
            owner,
            turn: 0,
            num_results: config.num_results.max(1),
        }
    }

    /// The next peer to query, in turn across paths.
    pub fn next(&mut self, now: Instant) -> Next {
        let d = self.paths.len();
        let mut all_finished = true;
        for t in 0..d {
            let i = (self.turn + t) % d;
            loop {
                match self.paths[i].next(now) {
                    Next::Query(p) if d == 1 => return Next::Query(p),
                    Next::Query(p) => match self.owner.get(&p) {
                        Some(&j) if j != i => self.paths[i].skip(&p),
                        _ => {
                            self.owner.insert(p, i);
                            self.turn = i + 1;
                            return Next::Query(p);
                        }
                    },
                    Next::Waiting => {
                        all_finished = false;
                        break;
                    }
                    Next::Finished => break,
                }
            }
        }
        if all_finished {
            Next::Finished
        } else {
            Next::Waiting
        }
    }

    fn path_of(&mut self, peer: &PeerId) -> Option<&mut ClosestPeersIter> {
        if self.paths.len() == 1 {
            return self.paths.first_mut();
        }
        let i = *self.owner.get(peer)?;
        self.paths.get_mut(i)
    }

    /// Reports a response of `peer` naming `closer` peers.
    pub fn on_success(&mut self, peer: &PeerId, closer: impl IntoIterator<Item = PeerId>) -> bool {
        self.path_of(peer)
            .is_some_and(|p| p.on_success(peer, closer))
    }

    /// Reports a failed request to `peer`.
    pub fn on_failure(&mut self, peer: &PeerId) -> bool {
        self.path_of(peer).is_some_and(|p| p.on_failure(peer))
    }

    /// Ends all paths.
    pub fn finish(&mut self) {
        self.paths.iter_mut().for_each(ClosestPeersIter::finish);
    }

    /// True when every path has finished.
    pub fn is_finished(&self) -> bool {
        self.paths.iter().all(ClosestPeersIter::is_finished)
    }

    /// Largest round count of any path.
    pub fn rounds(&self) -> u32 {
        self.paths
            .iter()
            .map(ClosestPeersIter::rounds)
            .max()
            .unwrap_or(0)
    }

    /// Earliest per-peer timeout of any path.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.paths
            .iter()
            .filter_map(ClosestPeersIter::next_deadline)
            .min()
    }

    /// The `num_results` closest peers that answered on any path, closest first.
    pub fn result(&self) -> Vec<PeerId> {
        let mut all: Vec<(Distance, PeerId)> = self
            .paths
            .iter()
            .flat_map(ClosestPeersIter::result)
            .collect();
        all.sort_unstable_by_key(|(d, _)| *d);
        all.dedup_by_key(|(d, _)| *d);
        all.into_iter()
            .take(self.num_results)
            .map(|(_, p)| p)
            .collect()
    }
}
