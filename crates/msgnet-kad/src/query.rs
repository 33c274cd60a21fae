//! Queries: the lookup iterator of each command plus its second phase, the requests they
//! send and how responses feed them.
//!
//! Each query wraps a [`DisjointPeersIter`]; PUT_VALUE and ADD_PROVIDER queries add a second
//! phase that sends the record (or provider announcement) to the k closest peers the
//! lookup found; bootstrap chains an own-id lookup and one lookup per stale bucket. Queries
//! advance eagerly whenever an input touches them, pushing requests into the outbound
//! queue, at most α (or k when stalled) per query plus the k stores of the second phase.

use crate::iter::{DisjointPeersIter, Next};
use crate::kad::{parse_peer, Kademlia, Pending, Purpose};
use crate::key::{random_peer_with_cpl, KeyHash, MAX_REFRESH_CPL};
use crate::record::{PeerInfo, Record};
use crate::wire::{Message, MessageType, WirePeer, WireRecord};
use crate::{
    KadConfig, KadEvent, OutboundRequest, QueryId, QueryResult, QueryStats, RequestFailure,
    RequestId,
};
use libp2p_identity::PeerId;
use multiaddr::Multiaddr;
use std::collections::{HashMap, VecDeque};
use std::time::Instant;

/// rust-libp2p's `clusterLevelRaw` in requests.
pub(crate) const REQUEST_CLUSTER_LEVEL: i32 = 10;

pub(crate) enum Kind {
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

/// Second phase of PUT_VALUE / ADD_PROVIDER: sending to the closest peers found.
pub(crate) struct StorePhase {
    targets: Vec<PeerId>,
    next: usize,
    in_flight: usize,
    ok: usize,
}

pub(crate) struct Query {
    pub(crate) kind: Kind,
    pub(crate) key: Vec<u8>,
    pub(crate) iter: DisjointPeersIter,
    pub(crate) addrs: HashMap<PeerId, Vec<Multiaddr>>,
    pub(crate) store: Option<StorePhase>,
    pub(crate) stats: QueryStats,
    pub(crate) started: Instant,
    pub(crate) internal: bool,
}

impl Kademlia {
    // ---- driving queries ----

    pub(crate) fn send(
        &mut self,
        now: Instant,
        peer: PeerId,
        msg: &Message,
        purpose: Purpose,
        addrs: Vec<Multiaddr>,
    ) {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        let expects_response = msg.ty != MessageType::ADD_PROVIDER;
        if expects_response {
            let deadline = now + self.config.request_timeout;
            self.pending.insert(
                id,
                Pending {
                    peer,
                    addrs: addrs.clone(),
                    deadline,
                    purpose,
                },
            );
        }
        self.stats.requests_out += 1;
        self.outbound.push_back(OutboundRequest {
            id,
            peer,
            addrs,
            bytes: msg.encode(),
            expects_response,
        });
    }

    fn addrs_of(&self, q: &Query, peer: &PeerId) -> Vec<Multiaddr> {
        match q.addrs.get(peer) {
            Some(a) if !a.is_empty() => a.clone(),
            _ => self
                .table
                .get(peer)
                .map(|e| e.addrs.clone())
                .unwrap_or_default(),
        }
    }

    fn lookup_request(kind: &Kind, key: &[u8]) -> Message {
        let ty = match kind {
            Kind::GetValue { .. } => MessageType::GET_VALUE,
            Kind::GetProviders { .. } => MessageType::GET_PROVIDERS,
            _ => MessageType::FIND_NODE,
        };
        Message {
            ty,
            cluster_level_raw: REQUEST_CLUSTER_LEVEL,
            key: key.to_vec(),
            ..Message::default()
        }
    }

    fn store_request(&self, q: &Query) -> Message {
        match &q.kind {
            Kind::PutValue { record, .. } => Message {
                ty: MessageType::PUT_VALUE,
                key: record.key.clone(),
                record: Some(WireRecord {
                    key: record.key.clone(),
                    value: record.value.clone(),
                    publisher: record.publisher.map(|p| p.to_bytes()).unwrap_or_default(),
                    ..WireRecord::default()
                }),
                ..Message::default()
            },
            _ => Message {
                ty: MessageType::ADD_PROVIDER,
                cluster_level_raw: REQUEST_CLUSTER_LEVEL,
                key: q.key.clone(),
                provider_peers: vec![self.wire_peer(&self.local, &self.local_addrs, false)],
                ..Message::default()
            },
        }
    }

    pub(crate) fn wire_peer(
        &self,
        peer: &PeerId,
        addrs: &[Multiaddr],
        connected: bool,
    ) -> WirePeer {
        WirePeer {
            id: peer.to_bytes(),
            addrs: addrs.iter().map(|a| a.to_vec()).collect(),
            connection: if connected {
                crate::wire::ConnectionType::CONNECTED
            } else {
                crate::wire::ConnectionType::NOT_CONNECTED
            },
        }
    }

    /// Sends what query `id` can send now; finishes it when it is done.
    pub(crate) fn advance(&mut self, id: QueryId, now: Instant) {
        let Some(mut q) = self.queries.remove(&id) else {
            return;
        };
        loop {
            if let Some(s) = &q.store {
                if s.next < s.targets.len() {
                    let peer = s.targets[s.next];
                    let msg = self.store_request(&q);
                    let addrs = self.addrs_of(&q, &peer);
                    self.send(now, peer, &msg, Purpose::Store(id), addrs);
                    let expects = msg.ty != MessageType::ADD_PROVIDER;
                    if let Some(s) = q.store.as_mut() {
                        s.next += 1;
                        if expects {
                            s.in_flight += 1;
                        } else {
                            s.ok += 1;
                        }
                    }
                    q.stats.requests += 1;
                    continue;
                }
                if s.in_flight == 0 {
                    return self.finish(id, q, now);
                }
                break;
            }
            match q.iter.next(now) {
                Next::Query(peer) => {
                    let msg = Self::lookup_request(&q.kind, &q.key);
                    let addrs = self.addrs_of(&q, &peer);
                    self.send(now, peer, &msg, Purpose::Lookup(id), addrs);
                    q.stats.requests += 1;
                }
                Next::Waiting => break,
                Next::Finished => {
                    q.stats.rounds = q.stats.rounds.max(q.iter.rounds());
                    if !self.lookup_done(&mut q, now) {
                        return self.finish(id, q, now);
                    }
                }
            }
        }
        self.queries.insert(id, q);
    }

    /// The lookup phase of `q` ended; returns true if the query continues.
    fn lookup_done(&mut self, q: &mut Query, now: Instant) -> bool {
        match &mut q.kind {
            Kind::Bootstrap { plan, stale_before } => {
                self.table.mark_refreshed(&KeyHash::of(&q.key), now);
                let before = *stale_before;
                let plan = plan.get_or_insert_with(|| {
                    let max = self.table.max_cpl().min(MAX_REFRESH_CPL);
                    let local = *self.table.local_key();
                    let stale = before
                        .map(|b| self.table.stale_buckets(b, max))
                        .unwrap_or_default();
                    stale
                        .into_iter()
                        .filter_map(|i| random_peer_with_cpl(&local, 255 - i, &mut self.rng))
                        .collect()
                });
                let Some(next) = plan.pop_front() else {
                    return false;
                };
                q.key = next.to_bytes();
                q.iter = self.iter_for(&q.key);
                true
            }
            Kind::PutValue { .. } | Kind::AddProvider if q.store.is_none() => {
                let targets = q.iter.result();
                q.store = Some(StorePhase {
                    targets,
                    next: 0,
                    in_flight: 0,
                    ok: 0,
                });
                true
            }
            _ => false,
        }
    }

    pub(crate) fn finish(&mut self, id: QueryId, mut q: Query, now: Instant) {
        q.stats.duration = now.saturating_duration_since(q.started);
        q.stats.rounds = q.stats.rounds.max(q.iter.rounds());
        let stored = q.store.as_ref().map_or(0, |s| s.ok);
        let result = match q.kind {
            Kind::Bootstrap { .. } => QueryResult::Bootstrapped {
                table_size: self.table.len(),
            },
            Kind::FindNode => QueryResult::FoundPeers(
                q.iter
                    .result()
                    .into_iter()
                    .map(|peer| PeerInfo {
                        peer,
                        addrs: self.addrs_of(&q, &peer),
                    })
                    .collect(),
            ),
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
            Kind::AddProvider => QueryResult::AddProvider { sent: stored },
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

    /// The response to request `id` arrived (`Ok(bytes)`) or the request failed.
    pub fn handle_response(
        &mut self,
        now: Instant,
        id: RequestId,
        result: Result<&[u8], RequestFailure>,
    ) {
        self.now = now;
        let Some(p) = self.pending.remove(&id) else {
            self.stats.unexpected_responses += 1;
            return;
        };
        let msg = match result {
            Ok(b) if b.len() > self.config.max_message_size => None,
            Ok(b) => match Message::decode(b) {
                Ok(m) => Some(m),
                Err(_) => {
                    self.stats.malformed += 1;
                    None
                }
            },
            Err(_) => None,
        };
        match &msg {
            Some(_) => self.learn(p.peer, &p.addrs, now),
            None => self.forget(&p.peer),
        }
        let qid = match p.purpose {
            Purpose::Liveness => {
                if let Some((evicted, promoted)) =
                    self.table.on_liveness(&p.peer, msg.is_some(), now)
                {
                    self.push_event(KadEvent::PeerRemoved { peer: evicted });
                    if let Some(peer) = promoted {
                        self.push_event(KadEvent::PeerAdded { peer });
                    }
                }
                return;
            }
            Purpose::Lookup(q) | Purpose::Store(q) => q,
        };
        if let Some(q) = self.queries.get_mut(&qid) {
            match (p.purpose, msg) {
                (Purpose::Store(_), m) => {
                    if let Some(s) = q.store.as_mut() {
                        s.in_flight = s.in_flight.saturating_sub(1);
                        s.ok += usize::from(m.is_some());
                    }
                    if m.is_some() {
                        q.stats.success += 1
                    } else {
                        q.stats.failure += 1
                    }
                }
                (_, Some(m)) => {
                    q.stats.success += 1;
                    Self::on_lookup_response(q, &self.local, &p.peer, m, &self.config);
                }
                (_, None) => {
                    q.stats.failure += 1;
                    q.iter.on_failure(&p.peer);
                }
            }
        }
        self.advance(qid, now);
    }

    fn on_lookup_response(
        q: &mut Query,
        local: &PeerId,
        from: &PeerId,
        m: Message,
        config: &KadConfig,
    ) {
        let cap = config.k * 16;
        let mut closer = Vec::new();
        for info in m.closer_peers.into_iter().take(cap).filter_map(parse_peer) {
            if info.peer == *local {
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
                if let Some(r) = m.record.filter(|r| r.key == q.key) {
                    let publisher = PeerId::from_bytes(&r.publisher).ok();
                    let rec = Record {
                        key: r.key,
                        value: r.value,
                        publisher,
                    };
                    if config.validator.validate(&rec) {
                        found.push(rec);
                    }
                }
                if found.len() >= *quorum {
                    q.iter.finish();
                }
            }
            Kind::GetProviders { found } => {
                for info in m
                    .provider_peers
                    .into_iter()
                    .take(cap)
                    .filter_map(parse_peer)
                {
                    if found.len() < config.max_providers_per_key
                        && !found.iter().any(|f| f.peer == info.peer)
                    {
                        found.push(info);
                    }
                }
                if found.len() >= config.max_providers_per_key {
                    q.iter.finish();
                }
            }
            _ => {}
        }
    }
}
