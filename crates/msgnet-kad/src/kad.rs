//! The Kademlia state machine: state, commands, queries, timers and outputs.
//!
//! Owns the routing table, the stores, the running queries and the request bookkeeping.
//! Each query wraps a [`ClosestPeersIter`]; PUT_VALUE and ADD_PROVIDER queries add a
//! second phase that sends the record (or provider announcement) to the k closest peers
//! the lookup found; bootstrap chains an own-id lookup and one lookup per stale bucket.
//! Queries advance eagerly whenever an input touches them, pushing requests into the
//! outbound queue, at most α (or k when stalled) per query plus the k stores of the
//! second phase. Answering requests (the server side) is in `server.rs`.

use crate::iter::{ClosestPeersIter, IterConfig, Next};
use crate::key::{random_peer_with_cpl, KeyHash, MAX_REFRESH_CPL};
use crate::record::{wire_peer, PeerInfo, ProviderStore, Record, RecordStore};
use crate::table::{InsertResult, RoutingTable, CHECK_AFTER, MAX_ADDRS};
use crate::wire::{Message, MessageType};
use crate::{
    KadConfig, KadError, KadEvent, KadStats, OutboundRequest, QueryId, QueryResult, QueryStats,
    RequestId,
};
use libp2p_identity::PeerId;
use multiaddr::Multiaddr;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// rust-libp2p's `clusterLevelRaw` in requests.
const REQUEST_CLUSTER_LEVEL: i32 = 10;

/// How often expired records and providers are dropped.
const EXPIRE_EVERY: Duration = Duration::from_secs(60);

/// Most requesters probed at once (see [`Kademlia::probe`]).
const MAX_PROBES: usize = 64;

/// Most requesters whose last probe is remembered.
const MAX_PROBED: usize = 4096;

/// A request as rust-libp2p sends it.
fn request(ty: MessageType, key: Vec<u8>) -> Message {
    Message::new(ty, REQUEST_CLUSTER_LEVEL, key)
}

/// What an outbound request is for.
#[derive(Clone, Copy)]
enum Purpose {
    Lookup(QueryId),
    Store(QueryId),
    Liveness,
    Probe,
}

/// An outbound request waiting for its response.
struct Pending {
    peer: PeerId,
    addrs: Vec<Multiaddr>,
    deadline: Instant,
    purpose: Purpose,
}

enum Kind {
    FindNode,
    /// Own-id lookup, then one lookup per stale bucket; `plan` is `None` until planned.
    /// Buckets refreshed at or before `stale_before` are refreshed (`None`: none).
    Bootstrap {
        plan: Option<VecDeque<PeerId>>,
        stale_before: Option<Instant>,
    },
    GetValue {
        quorum: usize,
        found: Vec<Record>,
    },
    GetProviders {
        found: Vec<PeerInfo>,
    },
    PutValue {
        record: Record,
        quorum: usize,
    },
    AddProvider,
}

struct Query {
    kind: Kind,
    key: Vec<u8>,
    iter: ClosestPeersIter,
    /// Addresses the lookup learned from responses (bounded).
    addrs: HashMap<PeerId, Vec<Multiaddr>>,
    /// PUT_VALUE / ADD_PROVIDER after the lookup: stores in flight to the closest peers
    /// found (`None` while looking up).
    storing: Option<usize>,
    /// Stores sent, and acknowledged (PUT_VALUE answered, ADD_PROVIDER delivered).
    sent: usize,
    stored: usize,
    stats: QueryStats,
    started: Instant,
    /// Started by a periodic job: no event when it finishes.
    internal: bool,
}

/// The intervals of the periodic jobs: bucket refresh, record republishing, record
/// replication, provider republishing (`None`: disabled) and expiry.
fn intervals(config: &KadConfig) -> [Option<Duration>; 5] {
    [
        config.refresh_interval,
        config.record_republish_interval,
        config.record_replication_interval,
        config.provider_republish_interval,
        Some(EXPIRE_EVERY),
    ]
}

/// A Kademlia node as a sans-IO state machine. See the crate docs for the call order.
pub struct Kademlia {
    pub(crate) local: PeerId,
    pub(crate) local_addrs: Vec<Multiaddr>,
    pub(crate) config: KadConfig,
    rng: ChaCha20Rng,
    pub(crate) table: RoutingTable,
    pub(crate) records: RecordStore,
    pub(crate) providers: ProviderStore,
    provided: BTreeSet<Vec<u8>>,
    queries: BTreeMap<QueryId, Query>,
    next_query: u64,
    pending: BTreeMap<RequestId, Pending>,
    next_request: u64,
    outbound: VecDeque<OutboundRequest>,
    events: VecDeque<KadEvent>,
    /// Internal queries waiting for room (at most one per record and provided key).
    jobs: VecDeque<(Kind, Vec<u8>)>,
    /// Probes in flight, and when each requester was last probed.
    probing: usize,
    probed: HashMap<PeerId, Instant>,
    /// When each of the periodic jobs of [`intervals`] is due next.
    timers: [Option<Instant>; 5],
    pub(crate) now: Instant,
    pub(crate) stats: KadStats,
}

impl Kademlia {
    /// A node for `local` with `config`, created at `now`.
    pub fn new(local: PeerId, config: KadConfig, now: Instant) -> Self {
        Kademlia {
            local,
            local_addrs: Vec::new(),
            rng: ChaCha20Rng::seed_from_u64(config.rng_seed),
            table: RoutingTable::new(KeyHash::of_peer(&local), config.k, now),
            records: RecordStore::new(config.max_records),
            providers: ProviderStore::new(config.max_provider_keys, config.max_providers_per_key),
            provided: BTreeSet::new(),
            queries: BTreeMap::new(),
            next_query: 0,
            pending: BTreeMap::new(),
            next_request: 0,
            outbound: VecDeque::new(),
            events: VecDeque::new(),
            jobs: VecDeque::new(),
            probing: 0,
            probed: HashMap::new(),
            timers: intervals(&config).map(|d| d.map(|d| now + d)),
            now,
            stats: KadStats::default(),
            config,
        }
    }

    // ---- getters ----

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

    /// Number of requests (and one-way messages) waiting for their outcome.
    pub fn requests_in_flight(&self) -> usize {
        self.pending.len()
    }

    // ---- hints ----

    /// Our own dialable addresses, sent in ADD_PROVIDER and provider responses.
    pub fn set_local_addrs(&mut self, mut addrs: Vec<Multiaddr>) {
        addrs.truncate(MAX_ADDRS);
        self.local_addrs = addrs;
    }

    /// A known address of a server peer (bootstrap peers etc.), learned as a live one:
    /// added to its entry, or inserted if there is room (a full bucket checks the
    /// liveness of its least-recently-seen entry first, as for any new peer).
    pub fn add_address(&mut self, peer: PeerId, addr: Multiaddr) {
        self.learn(peer, &[addr], self.now);
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
        self.start(now, kind, self.local.to_bytes())
    }

    /// Finds the k peers closest to `key` (peer id bytes or any key).
    pub fn find_node(&mut self, now: Instant, key: Vec<u8>) -> Result<QueryId, KadError> {
        self.start(now, Kind::FindNode, key)
    }

    /// Finds a record; finishes once `quorum` peers (counting ourselves) returned a valid one.
    pub fn get_value(
        &mut self,
        now: Instant,
        key: Vec<u8>,
        quorum: usize,
    ) -> Result<QueryId, KadError> {
        let found = self.records.get(&key, now).cloned().into_iter().collect();
        let quorum = quorum.max(1);
        self.start(now, Kind::GetValue { quorum, found }, key)
    }

    /// Stores `record` locally and on the k closest peers; `quorum` acknowledgements succeed.
    pub fn put_value(
        &mut self,
        now: Instant,
        mut record: Record,
        quorum: usize,
    ) -> Result<QueryId, KadError> {
        if !self.acceptable(&record) {
            return Err(KadError::InvalidRecord);
        }
        record.publisher.get_or_insert(self.local);
        let expires = now + self.config.record_ttl;
        if !self.records.put(record.clone(), expires, true) {
            return Err(KadError::StoreFull);
        }
        let key = record.key.clone();
        let quorum = quorum.max(1);
        self.start(now, Kind::PutValue { record, quorum }, key)
    }

    /// Announces us as a provider of `key` (see [`crate::provider_key`]) to the k closest.
    pub fn add_provider(&mut self, now: Instant, key: Vec<u8>) -> Result<QueryId, KadError> {
        if !self.provide_locally(&key, now) {
            return Err(KadError::StoreFull);
        }
        self.provided.insert(key.clone());
        self.start(now, Kind::AddProvider, key)
    }

    /// Finds providers of `key`.
    pub fn get_providers(&mut self, now: Instant, key: Vec<u8>) -> Result<QueryId, KadError> {
        let found = self.providers.get(&key, now);
        self.start(now, Kind::GetProviders { found }, key)
    }

    /// Whether `record` may be stored or returned: it has a key, a value within
    /// [`KadConfig::max_value_size`] and the validator's approval.
    pub(crate) fn acceptable(&self, record: &Record) -> bool {
        !record.key.is_empty()
            && record.value.len() <= self.config.max_value_size
            && self.config.validator.validate(record)
    }

    /// Records (or refreshes) ourselves as a provider of `key`.
    fn provide_locally(&mut self, key: &[u8], now: Instant) -> bool {
        let me = PeerInfo::new(self.local, self.local_addrs.clone());
        self.providers.add(key, me, now + self.config.provider_ttl)
    }

    /// Starts a query for a command, if there is room.
    fn start(&mut self, now: Instant, kind: Kind, key: Vec<u8>) -> Result<QueryId, KadError> {
        self.now = now;
        if !self.has_room(false) {
            return Err(KadError::TooManyQueries);
        }
        Ok(self.launch(now, kind, key, false))
    }

    /// Room for another query: a command's query counts against
    /// [`KadConfig::max_queries`] until its event is taken; internal jobs may use at most
    /// half.
    fn has_room(&self, internal: bool) -> bool {
        let limit = self.config.max_queries / if internal { 2 } else { 1 };
        self.queries.len() + self.events.len() < limit
    }

    fn launch(&mut self, now: Instant, kind: Kind, key: Vec<u8>, internal: bool) -> QueryId {
        let id = QueryId(self.next_query);
        self.next_query += 1;
        let q = Query {
            iter: self.lookup(&key),
            kind,
            key,
            addrs: HashMap::new(),
            storing: None,
            sent: 0,
            stored: 0,
            stats: QueryStats::default(),
            started: now,
            internal,
        };
        self.advance(id, q, now);
        id
    }

    /// A lookup of `key` from the k closest peers of the routing table.
    fn lookup(&self, key: &[u8]) -> ClosestPeersIter {
        let target = KeyHash::of(key);
        let known = self.table.closest(&target, self.config.k);
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
        ClosestPeersIter::new(target, known.iter().map(|e| e.peer), cfg, paths)
    }

    // ---- routing table upkeep ----

    /// `peer` is a live server at `addrs`.
    pub(crate) fn learn(&mut self, peer: PeerId, addrs: &[Multiaddr], now: Instant) {
        if let InsertResult::Pending { check } = self.table.insert(peer, addrs, now) {
            let addrs = self.known_addrs(None, &check);
            let msg = request(MessageType::FIND_NODE, self.local.to_bytes());
            self.send(check, &msg, Purpose::Liveness, addrs);
        }
    }

    /// Asks `peer`, which sent a request from `addrs` but is not in the routing table,
    /// whether it serves [`crate::PROTOCOL`] (FIND_NODE of our id, as the liveness checks
    /// do: every implementation answers it); if it answers it is learned at `addrs`. For
    /// hosts that cannot tell a server requester from a client (which answers nothing).
    ///
    /// Skipped when that cannot change the table (its bucket is full of entries seen
    /// within [`CHECK_AFTER`]), when `peer` was probed within [`CHECK_AFTER`], and beyond
    /// 64 probes in flight. Without these limits two nodes whose buckets are full probe
    /// each other forever: each probe is a request from a peer the other does not know,
    /// which it answers with a probe in turn.
    pub fn probe(&mut self, now: Instant, peer: PeerId, addrs: Vec<Multiaddr>) {
        self.now = now;
        let recently = |t: &Instant| now < *t + CHECK_AFTER;
        if addrs.is_empty()
            || self.probing >= MAX_PROBES
            || !self.table.could_insert(&peer, now)
            || self.probed.get(&peer).is_some_and(recently)
        {
            return;
        }
        if self.probed.len() >= MAX_PROBED {
            self.probed.retain(|_, t| recently(t));
            if self.probed.len() >= MAX_PROBED {
                self.probed.clear();
            }
        }
        self.probed.insert(peer, now);
        self.probing += 1;
        let msg = request(MessageType::FIND_NODE, self.local.to_bytes());
        self.send(peer, &msg, Purpose::Probe, addrs);
    }

    // ---- queries ----

    fn send(&mut self, peer: PeerId, msg: &Message, purpose: Purpose, addrs: Vec<Multiaddr>) {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        let pending = Pending {
            peer,
            addrs: addrs.clone(),
            deadline: self.now + self.config.request_timeout,
            purpose,
        };
        self.pending.insert(id, pending);
        self.stats.requests_out += 1;
        self.outbound.push_back(OutboundRequest {
            id,
            peer,
            addrs,
            bytes: msg.encode(),
            expects_response: msg.ty != MessageType::ADD_PROVIDER,
        });
    }

    /// The addresses of `peer` that query `q` learned, else those of the routing table.
    fn known_addrs(&self, q: Option<&Query>, peer: &PeerId) -> Vec<Multiaddr> {
        match q.and_then(|q| q.addrs.get(peer)) {
            Some(a) if !a.is_empty() => a.clone(),
            _ => self
                .table
                .get(peer)
                .map_or_else(Vec::new, |e| e.addrs.clone()),
        }
    }

    /// Sends what query `id` can send now; finishes it when it is done, else puts it
    /// (back) among the running queries.
    fn advance(&mut self, id: QueryId, mut q: Query, now: Instant) {
        loop {
            match q.storing {
                Some(0) => return self.finish(id, q, now),
                Some(_) => break,
                None => {}
            }
            match q.iter.next(now) {
                Next::Query(peer) => {
                    let ty = match q.kind {
                        Kind::GetValue { .. } => MessageType::GET_VALUE,
                        Kind::GetProviders { .. } => MessageType::GET_PROVIDERS,
                        _ => MessageType::FIND_NODE,
                    };
                    let msg = request(ty, q.key.clone());
                    let addrs = self.known_addrs(Some(&q), &peer);
                    self.send(peer, &msg, Purpose::Lookup(id), addrs);
                    q.stats.requests += 1;
                }
                Next::Waiting => break,
                Next::Finished => {
                    q.stats.rounds = q.stats.rounds.max(q.iter.rounds());
                    if !self.lookup_done(id, &mut q, now) {
                        return self.finish(id, q, now);
                    }
                }
            }
        }
        self.queries.insert(id, q);
    }

    /// The lookup phase of `q` ended; returns true if the query continues.
    fn lookup_done(&mut self, id: QueryId, q: &mut Query, now: Instant) -> bool {
        let msg = match &mut q.kind {
            Kind::Bootstrap { plan, stale_before } => {
                self.table.mark_refreshed(&KeyHash::of(&q.key), now);
                let plan = plan.get_or_insert_with(|| {
                    let max = self.table.max_cpl().min(MAX_REFRESH_CPL);
                    let local = self.table.local;
                    let stale = stale_before.map(|b| self.table.stale_buckets(b, max));
                    stale
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|i| random_peer_with_cpl(&local, 255 - i, &mut self.rng))
                        .collect()
                });
                let Some(next) = plan.pop_front() else {
                    return false;
                };
                q.key = next.to_bytes();
                q.iter = self.lookup(&q.key);
                return true;
            }
            Kind::PutValue { record, .. } => Message {
                record: Some(record.to_wire(0)),
                ..Message::new(MessageType::PUT_VALUE, 0, record.key.clone())
            },
            Kind::AddProvider => Message {
                provider_peers: vec![wire_peer(&self.local, &self.local_addrs)],
                ..request(MessageType::ADD_PROVIDER, q.key.clone())
            },
            _ => return false,
        };
        let targets = q.iter.result();
        for (_, peer) in &targets {
            let addrs = self.known_addrs(Some(q), peer);
            self.send(*peer, &msg, Purpose::Store(id), addrs);
        }
        q.stats.requests += targets.len() as u32;
        q.sent = targets.len();
        q.storing = Some(targets.len());
        true
    }

    fn finish(&mut self, id: QueryId, mut q: Query, now: Instant) {
        q.stats.duration = now.saturating_duration_since(q.started);
        q.stats.rounds = q.stats.rounds.max(q.iter.rounds());
        let (sent, stored) = (q.sent, q.stored);
        let result = match q.kind {
            Kind::Bootstrap { .. } => QueryResult::Bootstrapped {
                table_size: self.table.len(),
            },
            Kind::FindNode => {
                let info = |(_, p)| PeerInfo::new(p, self.known_addrs(Some(&q), &p));
                QueryResult::FoundPeers(q.iter.result().into_iter().map(info).collect())
            }
            Kind::GetValue { quorum, found } => {
                let refs: Vec<&Record> = found.iter().collect();
                let record = (!refs.is_empty()).then(|| {
                    let i = self.config.validator.select(&q.key, &refs);
                    refs.get(i).copied().unwrap_or(refs[0]).clone()
                });
                QueryResult::FoundRecord {
                    record,
                    quorum_met: found.len() >= quorum,
                }
            }
            Kind::PutValue { quorum, .. } => QueryResult::PutValue {
                stored,
                quorum_met: stored >= quorum,
            },
            Kind::AddProvider => QueryResult::AddProvider {
                sent,
                acked: stored,
            },
            Kind::GetProviders { found } => QueryResult::Providers(found),
        };
        if !q.internal {
            self.events.push_back(KadEvent::QueryFinished {
                id,
                result,
                stats: q.stats,
            });
        }
    }

    // ---- inputs ----

    /// The response to request `id` arrived (`Some(bytes)`; for a one-way message, see
    /// [`OutboundRequest::expects_response`], the host's acknowledgement: `Some(&[])`), or
    /// the request failed (`None`: timed out, the peer was unreachable or refused; all
    /// count alike, as a sign that the peer is not a live server).
    pub fn handle_response(&mut self, now: Instant, id: RequestId, response: Option<&[u8]>) {
        self.now = now;
        let Some(p) = self.pending.remove(&id) else {
            self.stats.unexpected_responses += 1;
            return;
        };
        let msg = match response {
            Some(b) if b.len() > self.config.max_message_size => None,
            Some(b) => Message::decode(b)
                .inspect_err(|_| self.stats.malformed += 1)
                .ok(),
            None => None,
        };
        // A peer that fails a request leaves the routing table.
        match &msg {
            Some(_) => self.learn(p.peer, &p.addrs, now),
            None => drop(self.table.remove(&p.peer)),
        }
        let qid = match p.purpose {
            Purpose::Probe => {
                self.probing -= 1;
                return;
            }
            Purpose::Liveness => {
                self.table.on_liveness(&p.peer, msg.is_some(), now);
                return;
            }
            Purpose::Lookup(q) | Purpose::Store(q) => q,
        };
        let Some(mut q) = self.queries.remove(&qid) else {
            return;
        };
        match &msg {
            Some(_) => q.stats.success += 1,
            None => q.stats.failure += 1,
        }
        match (p.purpose, msg) {
            (Purpose::Store(_), m) => {
                if let Some(n) = q.storing.as_mut() {
                    *n = n.saturating_sub(1);
                    q.stored += usize::from(m.is_some());
                }
            }
            (_, Some(m)) => self.on_lookup_response(&mut q, &p.peer, m),
            (_, None) => {
                q.iter.on_failure(&p.peer);
            }
        }
        self.advance(qid, q, now);
    }

    fn on_lookup_response(&self, q: &mut Query, from: &PeerId, m: Message) {
        let config = &self.config;
        let cap = config.k * 16;
        let mut closer = Vec::new();
        let infos = m.closer_peers.into_iter().take(cap);
        for info in infos.filter_map(PeerInfo::from_wire) {
            if info.peer == self.local {
                continue;
            }
            if q.addrs.len() < cap && !info.addrs.is_empty() {
                q.addrs.entry(info.peer).or_insert(info.addrs);
            }
            closer.push(info.peer);
        }
        q.iter.on_success(from, closer);
        match &mut q.kind {
            Kind::GetValue { quorum, found } => {
                let rec = m
                    .record
                    .filter(|r| r.key == q.key)
                    .and_then(Record::from_wire);
                found.extend(rec.filter(|r| self.acceptable(r)));
                if found.len() >= *quorum {
                    q.iter.finish();
                }
            }
            Kind::GetProviders { found } => {
                let max = config.max_providers_per_key;
                let infos = m.provider_peers.into_iter().take(cap);
                for info in infos.filter_map(PeerInfo::from_wire) {
                    if found.len() < max && !found.iter().any(|f| f.peer == info.peer) {
                        found.push(info);
                    }
                }
                if found.len() >= max {
                    q.iter.finish();
                }
            }
            _ => {}
        }
    }

    /// Expires requests, runs periodic jobs (refresh, republish, replication, expiry).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        let expired = self.pending.iter().filter(|(_, p)| p.deadline <= now);
        let expired: Vec<RequestId> = expired.map(|(id, _)| *id).collect();
        for id in expired {
            self.handle_response(now, id, None);
        }
        let ids: Vec<QueryId> = self.queries.keys().copied().collect();
        for id in ids {
            let Some(mut q) = self.queries.remove(&id) else {
                continue;
            };
            if now >= q.started + self.config.query_timeout {
                q.stats.timed_out = true;
                self.finish(id, q, now);
            } else {
                self.advance(id, q, now);
            }
        }
        self.periodic(now);
    }

    fn periodic(&mut self, now: Instant) {
        let mut due = [false; 5];
        let timers = self.timers.iter_mut().zip(intervals(&self.config));
        for ((at, every), due) in timers.zip(&mut due) {
            if let (Some(t), Some(d)) = (*at, every) {
                *due = now >= t;
                if *due {
                    *at = Some(now + d);
                }
            }
        }
        let [refresh, republish, replicate, provide, expire] = due;
        if expire {
            self.records.expire(now);
            self.providers.expire(now);
        }
        let config = &self.config;
        if refresh && !self.table.is_empty() {
            let stale_before = now.checked_sub(config.refresh_interval.unwrap_or_default());
            let kind = Kind::Bootstrap {
                plan: None,
                stale_before,
            };
            self.jobs.push_back((kind, self.local.to_bytes()));
        }
        for r in self.records.records.values_mut() {
            if r.local && republish {
                // Our own records live as long as we republish them.
                r.expires = r.expires.max(now + config.record_ttl);
            }
            if (r.local && republish) || (!r.local && replicate) {
                let record = r.record.clone();
                let key = record.key.clone();
                self.jobs
                    .push_back((Kind::PutValue { record, quorum: 1 }, key));
            }
        }
        if provide {
            for key in self.provided.clone() {
                self.provide_locally(&key, now);
                self.jobs.push_back((Kind::AddProvider, key));
            }
        }
        let cap = self.config.max_records + self.config.max_provider_keys + 1;
        while self.jobs.len() > cap {
            self.jobs.pop_front();
        }
        while self.has_room(true) {
            let Some((kind, key)) = self.jobs.pop_front() else {
                break;
            };
            self.launch(now, kind, key, true);
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
        // Per-peer iterator deadlines equal request deadlines, which `pending` covers.
        let queries = self.queries.values();
        let jobs = (!self.jobs.is_empty()).then(|| self.now + Duration::from_secs(1));
        self.timers
            .iter()
            .flatten()
            .copied()
            .chain(self.pending.values().map(|p| p.deadline))
            .chain(queries.map(|q| q.started + self.config.query_timeout))
            .chain(jobs)
            .min()
    }
}
