//! The Kademlia state machine: state, commands, hints, timers and outputs.
//!
//! Owns the routing table, the stores, the running queries and the request bookkeeping.
//! How queries run and consume responses is in `query.rs`; answering requests (the
//! server side) in `server.rs`.

use crate::iter::{DisjointPeersIter, IterConfig};
use crate::key::KeyHash;
use crate::query::{Kind, Query, REQUEST_CLUSTER_LEVEL};
use crate::record::{PeerInfo, ProviderStore, Record, RecordStore};
use crate::table::{InsertResult, RoutingTable, MAX_ADDRS};
use crate::wire::{Message, MessageType, WirePeer};
use crate::{
    KadConfig, KadError, KadEvent, KadStats, OutboundRequest, QueryId, QueryStats, RequestFailure,
    RequestId,
};
use libp2p_identity::PeerId;
use multiaddr::{Multiaddr, Protocol};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

#[derive(Clone, Copy)]
pub(crate) enum Purpose {
    Lookup(QueryId),
    Store(QueryId),
    Liveness,
}

pub(crate) struct Pending {
    pub(crate) peer: PeerId,
    pub(crate) addrs: Vec<Multiaddr>,
    pub(crate) deadline: Instant,
    pub(crate) purpose: Purpose,
}

enum Job {
    Refresh,
    Put(Record),
    Provide(Vec<u8>),
}

/// Periodic work, each `None` when disabled.
struct Timers {
    refresh: Option<Instant>,
    republish: Option<Instant>,
    replicate: Option<Instant>,
    provide: Option<Instant>,
    expire: Instant,
}

/// A Kademlia node as a sans-IO state machine. See the crate docs for the call order.
pub struct Kademlia {
    pub(crate) local: PeerId,
    pub(crate) local_addrs: Vec<Multiaddr>,
    pub(crate) config: KadConfig,
    pub(crate) rng: ChaCha20Rng,
    pub(crate) table: RoutingTable,
    pub(crate) records: RecordStore,
    pub(crate) providers: ProviderStore,
    pub(crate) provided: BTreeSet<Vec<u8>>,
    pub(crate) queries: BTreeMap<QueryId, Query>,
    pub(crate) next_query: u64,
    pub(crate) pending: BTreeMap<RequestId, Pending>,
    pub(crate) next_request: u64,
    pub(crate) outbound: VecDeque<OutboundRequest>,
    pub(crate) events: VecDeque<KadEvent>,
    jobs: VecDeque<Job>,
    timers: Timers,
    pub(crate) now: Instant,
    pub(crate) stats: KadStats,
}

const EXPIRE_EVERY: Duration = Duration::from_secs(60);

/// Parses a wire peer: valid id, valid addresses (those naming another peer dropped).
pub(crate) fn parse_peer(w: WirePeer) -> Option<PeerInfo> {
    let peer = PeerId::from_bytes(&w.id).ok()?;
    let addrs = w
        .addrs
        .into_iter()
        .filter_map(|a| Multiaddr::try_from(a).ok())
        .filter(|a| !matches!(a.iter().last(), Some(Protocol::P2p(p)) if p != peer))
        .take(MAX_ADDRS)
        .collect();
    Some(PeerInfo { peer, addrs })
}

impl Kademlia {
    /// A node for `local` with `config`, created at `now`.
    pub fn new(local: PeerId, config: KadConfig, now: Instant) -> Self {
        let every = |d: Option<Duration>| d.map(|d| now + d);
        let timers = Timers {
            refresh: every(config.refresh_interval),
            republish: every(config.record_republish_interval),
            replicate: every(config.record_replication_interval),
            provide: every(config.provider_republish_interval),
            expire: now + EXPIRE_EVERY,
        };
        Kademlia {
            local,
            local_addrs: Vec::new(),
            rng: ChaCha20Rng::seed_from_u64(config.rng_seed),
            table: RoutingTable::new(KeyHash::of_peer(&local), config.k, now),
            records: RecordStore {
                records: BTreeMap::new(),
                max_records: config.max_records,
            },
            providers: ProviderStore {
                providers: BTreeMap::new(),
                max_keys: config.max_provider_keys,
                max_per_key: config.max_providers_per_key,
            },
            provided: BTreeSet::new(),
            queries: BTreeMap::new(),
            next_query: 0,
            pending: BTreeMap::new(),
            next_request: 0,
            outbound: VecDeque::new(),
            events: VecDeque::new(),
            jobs: VecDeque::new(),
            timers,
            now,
            stats: KadStats::default(),
            config,
        }
    }

    // ---- getters ----

    /// Our peer id.
    pub fn local_peer_id(&self) -> &PeerId {
        &self.local
    }

    /// The routing table.
    pub fn routing_table(&self) -> &RoutingTable {
        &self.table
    }

    /// Node-wide counters.
    pub fn stats(&self) -> KadStats {
        self.stats
    }

    /// A stored, unexpired record.
    pub fn record(&self, key: &[u8]) -> Option<&Record> {
        self.records.get(key, self.now)
    }

    /// Number of running queries.
    pub fn active_queries(&self) -> usize {
        self.queries.len()
    }

    // ---- hints ----

    /// Our own dialable addresses, sent in ADD_PROVIDER and provider responses.
    pub fn set_local_addrs(&mut self, addrs: Vec<Multiaddr>) {
        self.local_addrs = addrs;
        self.local_addrs.truncate(MAX_ADDRS);
    }

    /// A known address of a server peer (bootstrap peers etc.); inserts it if there is room.
    pub fn add_address(&mut self, peer: PeerId, addr: Multiaddr) {
        let now = self.now;
        if !self.table.add_addrs(&peer, std::slice::from_ref(&addr)) {
            self.learn(peer, &[addr], now);
        }
    }

    /// The host has a live connection to `peer`, a server reachable at `addrs`.
    pub fn peer_connected(&mut self, now: Instant, peer: PeerId, addrs: &[Multiaddr]) {
        self.now = now;
        self.learn(peer, addrs, now);
        self.table.set_connected(&peer, true);
    }

    /// The host's connection to `peer` closed (the entry stays).
    pub fn peer_disconnected(&mut self, peer: &PeerId) {
        self.table.set_connected(peer, false);
    }

    /// The host could not reach `peer` at any address: it leaves the routing table.
    pub fn peer_unreachable(&mut self, peer: &PeerId) {
        self.forget(peer);
    }

    // ---- commands ----

    /// Looks up our own id, then refreshes every bucket up to the closest known peer.
    pub fn bootstrap(&mut self, now: Instant) -> Result<QueryId, KadError> {
        if self.table.is_empty() {
            return Err(KadError::NoKnownPeers);
        }
        let kind = Kind::Bootstrap {
            plan: None,
            stale_before: Some(now),
        };
        self.start(now, kind, self.local.to_bytes(), false)
    }

    /// Finds the k peers closest to `key` (peer id bytes or any key).
    pub fn find_node(&mut self, now: Instant, key: Vec<u8>) -> Result<QueryId, KadError> {
        self.start(now, Kind::FindNode, key, false)
    }

    /// Finds a record; finishes once `quorum` peers (counting ourselves) returned a valid one.
    pub fn get_value(
        &mut self,
        now: Instant,
        key: Vec<u8>,
        quorum: usize,
    ) -> Result<QueryId, KadError> {
        let found: Vec<Record> = self.records.get(&key, now).cloned().into_iter().collect();
        self.start(
            now,
            Kind::GetValue {
                quorum: quorum.max(1),
                found,
            },
            key,
            false,
        )
    }

    /// Stores `record` locally and on the k closest peers; `quorum` acknowledgements succeed.
    pub fn put_value(
        &mut self,
        now: Instant,
        mut record: Record,
        quorum: usize,
    ) -> Result<QueryId, KadError> {
        if record.key.is_empty() || record.value.len() > self.config.max_value_size {
            return Err(KadError::InvalidRecord);
        }
        if !self.config.validator.validate(&record) {
            return Err(KadError::InvalidRecord);
        }
        record.publisher.get_or_insert(self.local);
        if !self
            .records
            .put(record.clone(), now + self.config.record_ttl, true)
        {
            return Err(KadError::StoreFull);
        }
        let key = record.key.clone();
        self.start(
            now,
            Kind::PutValue {
                record,
                quorum: quorum.max(1),
            },
            key,
            false,
        )
    }

    /// Announces us as a provider of `key` (see [`crate::provider_key`]) to the k closest.
    pub fn add_provider(&mut self, now: Instant, key: Vec<u8>) -> Result<QueryId, KadError> {
        let me = PeerInfo {
            peer: self.local,
            addrs: self.local_addrs.clone(),
        };
        if !self.providers.add(&key, me, now + self.config.provider_ttl) {
            return Err(KadError::StoreFull);
        }
        self.provided.insert(key.clone());
        self.start(now, Kind::AddProvider, key, false)
    }

    /// Finds providers of `key`.
    pub fn get_providers(&mut self, now: Instant, key: Vec<u8>) -> Result<QueryId, KadError> {
        let found = self.providers.get(&key, now);
        self.start(now, Kind::GetProviders { found }, key, false)
    }

    pub(crate) fn iter_for(&self, key: &[u8]) -> DisjointPeersIter {
        let target = KeyHash::of(key);
        let known: Vec<PeerId> = self
            .table
            .closest(&target, self.config.k)
            .iter()
            .map(|e| e.peer)
            .collect();
        let cfg = IterConfig {
            parallelism: self.config.alpha,
            num_results: self.config.k,
            peer_timeout: self.config.request_timeout,
        };
        let paths = if self.config.disjoint_paths {
            self.config.alpha
        } else {
            1
        };
        DisjointPeersIter::new(target, known, cfg, paths)
    }

    fn start(
        &mut self,
        now: Instant,
        kind: Kind,
        key: Vec<u8>,
        internal: bool,
    ) -> Result<QueryId, KadError> {
        self.now = now;
        let limit = if internal {
            self.config.max_queries / 2
        } else {
            self.config.max_queries
        };
        if self.queries.len() >= limit || self.events.len() >= self.config.max_events {
            return Err(KadError::TooManyQueries);
        }
        let id = QueryId(self.next_query);
        self.next_query += 1;
        let q = Query {
            iter: self.iter_for(&key),
            kind,
            key,
            addrs: HashMap::new(),
            store: None,
            stats: QueryStats::default(),
            started: now,
            internal,
        };
        self.queries.insert(id, q);
        self.advance(id, now);
        Ok(id)
    }

    // ---- routing table upkeep ----

    pub(crate) fn push_event(&mut self, e: KadEvent) {
        if self.events.len() < self.config.max_events {
            self.events.push_back(e);
        } else {
            self.stats.dropped_events += 1;
        }
    }

    /// `peer` is a live server at `addrs`.
    pub(crate) fn learn(&mut self, peer: PeerId, addrs: &[Multiaddr], now: Instant) {
        match self.table.insert(peer, addrs, now) {
            InsertResult::Inserted => self.push_event(KadEvent::PeerAdded { peer }),
            InsertResult::Pending { check } => {
                let addrs = self
                    .table
                    .get(&check)
                    .map(|e| e.addrs.clone())
                    .unwrap_or_default();
                let msg = Message {
                    ty: MessageType::FIND_NODE,
                    cluster_level_raw: REQUEST_CLUSTER_LEVEL,
                    key: self.local.to_bytes(),
                    ..Message::default()
                };
                self.send(now, check, &msg, Purpose::Liveness, addrs);
            }
            InsertResult::Updated | InsertResult::Dropped => {}
        }
    }

    pub(crate) fn forget(&mut self, peer: &PeerId) {
        if let Some((_, promoted)) = self.table.remove(peer) {
            self.push_event(KadEvent::PeerRemoved { peer: *peer });
            if let Some(p) = promoted {
                self.push_event(KadEvent::PeerAdded { peer: p });
            }
        }
    }

    /// Expires requests, runs periodic jobs (refresh, republish, replication, expiry).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        let expired: Vec<RequestId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.handle_response(now, id, Err(RequestFailure::Timeout));
        }
        let ids: Vec<QueryId> = self.queries.keys().copied().collect();
        for id in ids {
            let timed_out = self
                .queries
                .get(&id)
                .is_some_and(|q| now >= q.started + self.config.query_timeout);
            if timed_out {
                if let Some(mut q) = self.queries.remove(&id) {
                    q.stats.timed_out = true;
                    self.finish(id, q, now);
                }
            } else {
                self.advance(id, now);
            }
        }
        self.periodic(now);
    }

    fn periodic(&mut self, now: Instant) {
        if now >= self.timers.expire {
            self.records.expire(now);
            self.providers.expire(now);
            self.timers.expire = now + EXPIRE_EVERY;
        }
        let cap = self.config.max_records + self.config.max_provider_keys + 1;
        let due = |t: &mut Option<Instant>, every: Option<Duration>| match (*t, every) {
            (Some(at), Some(d)) if now >= at => {
                *t = Some(now + d);
                true
            }
            _ => false,
        };
        if due(&mut self.timers.refresh, self.config.refresh_interval) {
            self.jobs.push_back(Job::Refresh);
        }
        let republish = due(
            &mut self.timers.republish,
            self.config.record_republish_interval,
        );
        let replicate = due(
            &mut self.timers.replicate,
            self.config.record_replication_interval,
        );
        for r in self.records.records.values_mut() {
            if r.local && republish {
                // Our own records live as long as we republish them.
                r.expires = r.expires.max(now + self.config.record_ttl);
            }
            if (r.local && republish) || (!r.local && replicate) {
                self.jobs.push_back(Job::Put(r.record.clone()));
            }
        }
        if due(
            &mut self.timers.provide,
            self.config.provider_republish_interval,
        ) {
            for key in &self.provided {
                self.jobs.push_back(Job::Provide(key.clone()));
            }
        }
        while self.jobs.len() > cap {
            self.jobs.pop_front();
        }
        while let Some(job) = self.jobs.pop_front() {
            let started = match &job {
                Job::Refresh => {
                    let before = now.checked_sub(self.config.refresh_interval.unwrap_or_default());
                    let kind = Kind::Bootstrap {
                        plan: None,
                        stale_before: before,
                    };
                    self.table.is_empty()
                        || self.start(now, kind, self.local.to_bytes(), true).is_ok()
                }
                Job::Put(r) => {
                    let kind = Kind::PutValue {
                        record: r.clone(),
                        quorum: 1,
                    };
                    self.start(now, kind, r.key.clone(), true).is_ok()
                }
                Job::Provide(key) => {
                    let me = PeerInfo {
                        peer: self.local,
                        addrs: self.local_addrs.clone(),
                    };
                    self.providers.add(key, me, now + self.config.provider_ttl);
                    self.start(now, Kind::AddProvider, key.clone(), true)
                        .is_ok()
                }
            };
            if !started {
                self.jobs.push_front(job);
                break;
            }
        }
    }

    // ---- outputs ----

    /// The next request to send.
    pub fn poll_request(&mut self) -> Option<OutboundRequest> {
        self.outbound.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<KadEvent> {
        self.events.pop_front()
    }

    /// When to call [`Self::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.timers.expire;
        for at in [
            self.timers.refresh,
            self.timers.republish,
            self.timers.replicate,
            self.timers.provide,
        ]
        .into_iter()
        .flatten()
        {
            t = t.min(at);
        }
        for p in self.pending.values() {
            t = t.min(p.deadline);
        }
        // Per-peer iterator deadlines equal request deadlines, which `pending` covers.
        for q in self.queries.values() {
            t = t.min(q.started + self.config.query_timeout);
        }
        if !self.jobs.is_empty() {
            t = t.min(self.now + Duration::from_secs(1));
        }
        Some(t)
    }
}
