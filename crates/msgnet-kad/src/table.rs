//! The routing table: 256 k-buckets by XOR distance from the local key.
//!
//! Each bucket holds at most `k` entries (with their keys kept contiguously beside them so
//! that lookups scan 32-byte keys, not whole entries). A peer that
//! arrives at a full bucket whose least-recently-seen entry was not seen for
//! [`CHECK_AFTER`] becomes the bucket's single *pending* entry and the caller is told to
//! check the liveness of that entry; [`RoutingTable::on_liveness`]
//! then keeps the old entry (alive) or evicts it in favour of the pending one (dead).
//! Removing any entry from a bucket also promotes its pending entry. The table performs no
//! I/O: the liveness request is sent by [`crate::Kademlia`].

use crate::key::{Distance, KeyHash};
use crate::record::wire_peer;
use libp2p_identity::PeerId;
use multiaddr::Multiaddr;
use std::time::{Duration, Instant};

/// Addresses kept per peer.
pub const MAX_ADDRS: usize = 8;

/// A full bucket only checks (and may evict) its least-recently-seen entry if that entry
/// was last seen longer ago than this; otherwise the newcomer is dropped. Without it every
/// request from a new peer to a busy node would cost a liveness check.
pub const CHECK_AFTER: Duration = Duration::from_secs(60);

/// One routing table entry.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The peer.
    pub peer: PeerId,
    /// SHA-256 of its id.
    pub key: KeyHash,
    /// Known addresses, most recent first (at most [`MAX_ADDRS`]).
    pub addrs: Vec<Multiaddr>,
    /// When the peer was last seen alive.
    pub last_seen: Instant,
    /// The entry as an encoded `Peer` message (id and addresses), copied into responses.
    pub wire: Vec<u8>,
}

#[derive(Debug)]
struct Bucket {
    /// Unordered (updates happen in place); the least recently seen is found by `last_seen`.
    entries: Vec<Entry>,
    /// `keys[i] == entries[i].key`.
    keys: Vec<KeyHash>,
    /// A candidate waiting for the liveness check of the least recently seen entry.
    pending: Option<Box<Entry>>,
    last_refresh: Instant,
}

/// Outcome of [`RoutingTable::insert`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertResult {
    /// The peer was already present; its addresses and last-seen time were refreshed.
    Updated,
    /// The peer was added to a bucket with room.
    Inserted,
    /// The bucket is full: the peer is pending; check the liveness of `check`.
    Pending {
        /// Least-recently-seen entry of the bucket, to be checked.
        check: PeerId,
    },
    /// Not inserted: the local key, no address, or a full bucket whose oldest entry was seen
    /// recently or that already has a pending entry.
    Dropped,
}

/// 256 k-buckets keyed by the bucket index of the distance to the local key.
#[derive(Debug)]
pub struct RoutingTable {
    pub(crate) local: KeyHash,
    k: usize,
    buckets: Vec<Bucket>,
    len: usize,
    /// Bit j set ⇔ bucket j is non-empty: lookups skip empty buckets without touching them.
    occupied: [u64; 4],
}

/// Merges `new` addresses in front of `e`'s and re-encodes the entry if they changed.
fn merge_addrs(e: &mut Entry, new: &[Multiaddr]) {
    if new.is_empty() || e.addrs.starts_with(new) {
        return;
    }
    for a in new.iter().rev() {
        e.addrs.retain(|x| x != a);
        e.addrs.insert(0, a.clone());
    }
    e.addrs.truncate(MAX_ADDRS);
    e.wire = wire_peer(&e.peer, &e.addrs).encode();
}

impl RoutingTable {
    /// An empty table around `local` with buckets of size `k`.
    pub fn new(local: KeyHash, k: usize, now: Instant) -> Self {
        let buckets = (0..256)
            .map(|_| Bucket {
                entries: Vec::new(),
                keys: Vec::new(),
                pending: None,
                last_refresh: now,
            })
            .collect();
        RoutingTable {
            local,
            k: k.max(1),
            buckets,
            len: 0,
            occupied: [0; 4],
        }
    }

    fn sync_occupied(&mut self, b: usize) {
        let bit = 1u64 << (b % 64);
        if self.buckets[b].entries.is_empty() {
            self.occupied[b / 64] &= !bit;
        } else {
            self.occupied[b / 64] |= bit;
        }
    }

    fn is_occupied(&self, b: usize) -> bool {
        self.occupied[b / 64] >> (b % 64) & 1 == 1
    }

    /// Bucket index of `key`, `None` for the local key.
    pub fn bucket_index(&self, key: &KeyHash) -> Option<usize> {
        self.local.distance(key).bucket_index()
    }

    /// Number of entries (pending entries excluded).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bucket and position of `peer`'s entry.
    fn locate(&self, peer: &PeerId) -> Option<(usize, usize)> {
        let key = KeyHash::of_peer(peer);
        let b = self.bucket_index(&key)?;
        let i = self.buckets[b].keys.iter().position(|k| *k == key)?;
        Some((b, i))
    }

    /// The entry of `peer`, if present.
    pub fn get(&self, peer: &PeerId) -> Option<&Entry> {
        let (b, i) = self.locate(peer)?;
        Some(&self.buckets[b].entries[i])
    }

    /// All entries, farthest bucket last-seen order not guaranteed.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.buckets.iter().flat_map(|b| b.entries.iter())
    }

    /// Records that `peer` is alive at `addrs`: moves it to the most-recently-seen end,
    /// inserts it if there is room, or makes it the bucket's pending entry.
    pub fn insert(&mut self, peer: PeerId, addrs: &[Multiaddr], now: Instant) -> InsertResult {
        let key = KeyHash::of_peer(&peer);
        let Some(b) = self.bucket_index(&key) else {
            return InsertResult::Dropped;
        };
        let k = self.k;
        let bucket = &mut self.buckets[b];
        if let Some(i) = bucket.keys.iter().position(|k| *k == key) {
            let e = &mut bucket.entries[i];
            merge_addrs(e, addrs);
            e.last_seen = e.last_seen.max(now);
            return InsertResult::Updated;
        }
        if addrs.is_empty() {
            return InsertResult::Dropped;
        }
        let mut entry = Entry {
            peer,
            key,
            addrs: Vec::new(),
            last_seen: now,
            wire: Vec::new(),
        };
        merge_addrs(&mut entry, addrs);
        if bucket.entries.len() < k {
            bucket.entries.push(entry);
            bucket.keys.push(key);
            self.len += 1;
            self.sync_occupied(b);
            return InsertResult::Inserted;
        }
        if let Some(p) = &mut bucket.pending {
            if p.key == key {
                merge_addrs(p, addrs);
            }
            return InsertResult::Dropped;
        }
        match bucket.entries.iter().min_by_key(|e| e.last_seen) {
            Some(oldest) if now >= oldest.last_seen + CHECK_AFTER => {
                let check = oldest.peer;
                bucket.pending = Some(Box::new(entry));
                InsertResult::Pending { check }
            }
            _ => InsertResult::Dropped,
        }
    }

    /// Whether [`Self::insert`] could take `peer` at `now`: its bucket has room, or its
    /// least-recently-seen entry is due for a liveness check.
    pub fn could_insert(&self, peer: &PeerId, now: Instant) -> bool {
        let Some(b) = self.bucket_index(&KeyHash::of_peer(peer)) else {
            return false;
        };
        let entries = &self.buckets[b].entries;
        let oldest = entries.iter().map(|e| e.last_seen).min();
        entries.len() < self.k || oldest.is_some_and(|t| now >= t + CHECK_AFTER)
    }

    /// Removes `peer`; a pending entry of its bucket takes its place. Returns the removed
    /// entry and the promoted peer.
    pub fn remove(&mut self, peer: &PeerId) -> Option<(Entry, Option<PeerId>)> {
        let key = KeyHash::of_peer(peer);
        let b = self.bucket_index(&key)?;
        let bucket = &mut self.buckets[b];
        if bucket.pending.as_ref().is_some_and(|p| p.key == key) {
            bucket.pending = None;
        }
        let i = bucket.keys.iter().position(|k| *k == key)?;
        let removed = bucket.entries.swap_remove(i);
        bucket.keys.swap_remove(i);
        let promoted = bucket.pending.take().map(|p| {
            let peer = p.peer;
            bucket.keys.push(p.key);
            bucket.entries.push(*p);
            peer
        });
        if promoted.is_none() {
            self.len -= 1;
        }
        self.sync_occupied(b);
        Some((removed, promoted))
    }

    /// Result of a liveness check of `peer` (the least-recently-seen entry of a full bucket).
    /// Alive: it is refreshed and the pending entry dropped. Dead: it is evicted and the
    /// pending entry inserted. Returns `(evicted, inserted)` when an eviction happened.
    pub fn on_liveness(
        &mut self,
        peer: &PeerId,
        alive: bool,
        now: Instant,
    ) -> Option<(PeerId, Option<PeerId>)> {
        if alive {
            let key = KeyHash::of_peer(peer);
            let b = self.bucket_index(&key)?;
            self.buckets[b].pending = None;
            self.insert(*peer, &[], now);
            None
        } else {
            self.remove(peer).map(|(e, promoted)| (e.peer, promoted))
        }
    }

    /// The `n` entries closest to `target`, closest first. Buckets are visited in order of
    /// distance to the target (the bucket of the target first, then the buckets of the set
    /// bits of `local ^ target` downwards, then those of the unset bits upwards), so only
    /// whole buckets up to the n-th entry are sorted.
    pub fn closest(&self, target: &KeyHash, n: usize) -> Vec<&Entry> {
        let d = self.local.distance(target);
        let order = (0..256)
            .rev()
            .filter(|&j| d.bit(j))
            .chain((0..256).filter(|&j| !d.bit(j)));
        let mut all: Vec<(Distance, usize, usize)> = Vec::with_capacity(n + self.k);
        for j in order.filter(|&j| self.is_occupied(j)) {
            if all.len() >= n {
                break;
            }
            let keys = self.buckets[j].keys.iter().enumerate();
            all.extend(keys.map(|(i, k)| (k.distance(target), j, i)));
        }
        all.sort_unstable_by_key(|(d, _, _)| *d);
        all.truncate(n);
        all.into_iter()
            .filter_map(|(_, j, i)| self.buckets[j].entries.get(i))
            .collect()
    }

    /// The highest common prefix length of any entry with the local key (0 if empty).
    pub fn max_cpl(&self) -> usize {
        (0..256)
            .find(|&i| self.is_occupied(i))
            .map_or(0, |i| 255 - i)
    }

    /// Indices of buckets not refreshed since `before`, among those with a common prefix
    /// length below `max_cpl`, farthest first.
    pub fn stale_buckets(&self, before: Instant, max_cpl: usize) -> Vec<usize> {
        (0..max_cpl.min(256))
            .map(|cpl| 255 - cpl)
            .filter(|&i| self.buckets[i].last_refresh <= before)
            .collect()
    }

    /// Marks the bucket holding `key` as refreshed.
    pub fn mark_refreshed(&mut self, key: &KeyHash, now: Instant) {
        if let Some(b) = self.bucket_index(key) {
            self.buckets[b].last_refresh = now;
        }
    }
}
