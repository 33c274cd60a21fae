//! Records, providers, validation and the bounded stores that hold them.
//!
//! The stores are in-memory, keyed by the raw key bytes, bounded in the number of keys
//! and of providers per key, and expire entries lazily (`expire(now)`). Entries we
//! published ourselves are flagged `local` so the node can republish them.

use crate::table::MAX_ADDRS;
use crate::wire::{WirePeer, WireRecord};
use cid::Cid;
use libp2p_identity::PeerId;
use multiaddr::{Multiaddr, Protocol};
use std::collections::BTreeMap;
use std::time::Instant;

/// A DHT record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Key.
    pub key: Vec<u8>,
    /// Value.
    pub value: Vec<u8>,
    /// Original publisher (carried in rust-libp2p's field 666).
    pub publisher: Option<PeerId>,
}

impl Record {
    /// A record without publisher.
    pub fn new(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Record {
            key: key.into(),
            value: value.into(),
            publisher: None,
        }
    }

    /// Parses a wire record; `None` if the publisher is not a valid peer id.
    pub(crate) fn from_wire(r: WireRecord) -> Option<Self> {
        let publisher = match r.publisher.is_empty() {
            true => None,
            false => Some(PeerId::from_bytes(&r.publisher).ok()?),
        };
        Some(Record {
            key: r.key,
            value: r.value,
            publisher,
        })
    }

    /// The record on the wire, with a remaining lifetime of `ttl` seconds (0: unspecified).
    pub(crate) fn to_wire(&self, ttl: u32) -> WireRecord {
        WireRecord {
            key: self.key.clone(),
            value: self.value.clone(),
            publisher: self.publisher.map(|p| p.to_bytes()).unwrap_or_default(),
            ttl,
            ..WireRecord::default()
        }
    }
}

/// The provider key of a CID, as the libp2p DHT uses it: the CID's multihash bytes.
pub fn provider_key(cid: &Cid) -> Vec<u8> {
    cid.hash().to_bytes()
}

/// A peer and its addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer.
    pub peer: PeerId,
    /// Its addresses.
    pub addrs: Vec<Multiaddr>,
}

impl PeerInfo {
    /// `peer` at `addrs`.
    pub fn new(peer: PeerId, addrs: Vec<Multiaddr>) -> Self {
        PeerInfo { peer, addrs }
    }

    /// Parses a wire peer: a valid id, its valid addresses (those naming another peer
    /// dropped, at most [`MAX_ADDRS`]).
    pub(crate) fn from_wire(w: WirePeer) -> Option<Self> {
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
}

/// `peer` at `addrs` as a wire peer (connection type not given).
pub(crate) fn wire_peer(peer: &PeerId, addrs: &[Multiaddr]) -> WirePeer {
    WirePeer {
        id: peer.to_bytes(),
        addrs: addrs.iter().map(|a| a.to_vec()).collect(),
        ..WirePeer::default()
    }
}

/// Decides which records are acceptable and which of several values is best, as
/// go-libp2p-record's `Validator` does (e.g. by namespace: `/pk/`, `/ipns/`).
pub trait Validator: Send + Sync + std::fmt::Debug {
    /// Whether `record` may be stored or returned.
    fn validate(&self, record: &Record) -> bool;
    /// Index of the best record among `records` (all valid, same key, non-empty slice).
    fn select(&self, _key: &[u8], _records: &[&Record]) -> usize {
        0
    }
}

/// Accepts every record and prefers the first one seen.
#[derive(Clone, Copy, Debug, Default)]
pub struct AcceptAll;

impl Validator for AcceptAll {
    fn validate(&self, _record: &Record) -> bool {
        true
    }
}

#[derive(Clone, Debug)]
pub(crate) struct StoredRecord {
    pub record: Record,
    pub expires: Instant,
    pub local: bool,
}

/// Bounded record store.
#[derive(Debug)]
pub(crate) struct RecordStore {
    pub records: BTreeMap<Vec<u8>, StoredRecord>,
    pub max_records: usize,
}

impl RecordStore {
    pub fn new(max_records: usize) -> Self {
        RecordStore {
            records: BTreeMap::new(),
            max_records,
        }
    }

    pub fn get(&self, key: &[u8], now: Instant) -> Option<&Record> {
        let r = self.records.get(key)?;
        (r.expires > now).then_some(&r.record)
    }

    /// Stores a record; false if the store is full and the key is new.
    pub fn put(&mut self, record: Record, expires: Instant, local: bool) -> bool {
        if let Some(r) = self.records.get_mut(&record.key) {
            r.local |= local;
            r.expires = r.expires.max(expires);
            r.record = record;
            return true;
        }
        if self.records.len() >= self.max_records {
            return false;
        }
        let key = record.key.clone();
        let stored = StoredRecord {
            record,
            expires,
            local,
        };
        self.records.insert(key, stored);
        true
    }

    pub fn expire(&mut self, now: Instant) {
        self.records.retain(|_, r| r.expires > now);
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Provider {
    pub info: PeerInfo,
    pub expires: Instant,
}

/// Bounded provider store: at most `max_keys` keys and `max_per_key` providers per key.
#[derive(Debug)]
pub(crate) struct ProviderStore {
    pub providers: BTreeMap<Vec<u8>, Vec<Provider>>,
    pub max_keys: usize,
    pub max_per_key: usize,
}

impl ProviderStore {
    pub fn new(max_keys: usize, max_per_key: usize) -> Self {
        ProviderStore {
            providers: BTreeMap::new(),
            max_keys,
            max_per_key,
        }
    }

    /// Adds or refreshes a provider; false if a bound refused it.
    pub fn add(&mut self, key: &[u8], info: PeerInfo, expires: Instant) -> bool {
        if !self.providers.contains_key(key) && self.providers.len() >= self.max_keys {
            return false;
        }
        let list = self.providers.entry(key.to_vec()).or_default();
        if let Some(p) = list.iter_mut().find(|p| p.info.peer == info.peer) {
            p.info.addrs = info.addrs;
            p.expires = expires;
            return true;
        }
        if list.len() >= self.max_per_key {
            return false;
        }
        list.push(Provider { info, expires });
        true
    }

    pub fn get(&self, key: &[u8], now: Instant) -> Vec<PeerInfo> {
        let list = self.providers.get(key).map_or(&[][..], Vec::as_slice);
        let live = list.iter().filter(|p| p.expires > now);
        live.map(|p| p.info.clone()).collect()
    }

    pub fn expire(&mut self, now: Instant) {
        for list in self.providers.values_mut() {
            list.retain(|p| p.expires > now);
        }
        self.providers.retain(|_, l| !l.is_empty());
    }
}
