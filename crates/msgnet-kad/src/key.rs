//! Keys and XOR distance in the SHA-256 key space of the libp2p kad-dht spec.
//!
//! The distance between two keys (peer ids as their multihash bytes, record keys, provider
//! keys) is the XOR of the SHA-256 of their bytes, compared as a 256-bit big-endian number.
//! This module owns that arithmetic, bucket indices and the random keys used to refresh a
//! bucket; it calls nothing else in the crate.

use libp2p_identity::PeerId;
use rand::RngCore;
use sha2::digest::generic_array::GenericArray;
use std::sync::OnceLock;

/// SHA-256 of a key's bytes: a point in the 256-bit Kademlia key space.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct KeyHash(pub [u8; 32]);

/// XOR distance between two [`KeyHash`]es; orders as a big-endian 256-bit integer.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub struct Distance(pub [u8; 32]);

impl KeyHash {
    /// Hashes arbitrary key bytes (a record key, a provider key, peer id bytes).
    pub fn of(bytes: &[u8]) -> Self {
        KeyHash(sha256(bytes))
    }

    /// Hashes a peer id's multihash bytes.
    pub fn of_peer(peer: &PeerId) -> Self {
        // Serialise on the stack: this runs for every peer of every response.
        let mut buf = [0u8; 80];
        let mut w = &mut buf[..];
        match peer.as_ref().write(&mut w) {
            Ok(n) => Self::of(&buf[..n]),
            Err(_) => Self::of(&peer.to_bytes()),
        }
    }

    /// XOR distance to `other`.
    pub fn distance(&self, other: &KeyHash) -> Distance {
        Distance(std::array::from_fn(|i| self.0[i] ^ other.0[i]))
    }
}

/// SHA-256 through `sha2`'s block function with our own padding: every distance
/// computation hashes, and this path avoids the generic buffering layers, which cost more
/// than the compression itself for 34- to 40-byte keys (and far more in debug builds).
fn sha256(data: &[u8]) -> [u8; 32] {
    let mut state: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut blocks = data.chunks_exact(64);
    for b in &mut blocks {
        sha2::compress256(&mut state, &[*GenericArray::from_slice(b)]);
    }
    let rest = blocks.remainder();
    let mut tail = [0u8; 128];
    tail[..rest.len()].copy_from_slice(rest);
    tail[rest.len()] = 0x80;
    let n = if rest.len() < 56 { 64 } else { 128 };
    tail[n - 8..n].copy_from_slice(&((data.len() as u64).wrapping_mul(8)).to_be_bytes());
    for b in tail[..n].chunks_exact(64) {
        sha2::compress256(&mut state, &[*GenericArray::from_slice(b)]);
    }
    let mut out = [0u8; 32];
    for (o, w) in out.chunks_exact_mut(4).zip(state) {
        o.copy_from_slice(&w.to_be_bytes());
    }
    out
}

impl Distance {
    /// Number of leading zero bits (the common prefix length of the two keys); 256 for zero.
    pub fn leading_zeros(&self) -> u32 {
        let mut n = 0;
        for b in self.0 {
            if b != 0 {
                return n + b.leading_zeros();
            }
            n += 8;
        }
        n
    }

    /// The k-bucket index of this distance: `255 - leading_zeros`, so bucket 255 holds the
    /// farthest half of the key space. `None` for distance zero (the local key itself).
    pub fn bucket_index(&self) -> Option<usize> {
        let lz = self.leading_zeros();
        (lz < 256).then(|| 255 - lz as usize)
    }

    /// Bit `j` counted from the least significant end (bit `j` set ⇔ the keys first differ
    /// at the bit of bucket `j`).
    pub fn bit(&self, j: usize) -> bool {
        j < 256 && (self.0[31 - j / 8] >> (j % 8)) & 1 == 1
    }
}

/// Refresh keys can only be generated for common prefix lengths below this (as in
/// go-libp2p-kad-dht, whose `maxCplForRefresh` is 15).
pub const MAX_REFRESH_CPL: usize = 16;

/// For every 16-bit prefix, a seed whose SHA-256 multihash peer id hashes to that prefix.
/// Built once per process (~770k SHA-256 evaluations), deterministic, shared read-only.
fn prefix_table() -> &'static [u32] {
    static TABLE: OnceLock<Vec<u32>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = vec![u32::MAX; 1 << 16];
        let mut missing = table.len();
        let mut seed = 0u32;
        while missing > 0 && seed < u32::MAX {
            let prefix = KeyHash::of(&seed_peer_bytes(seed)).0;
            let slot = usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
            if table[slot] == u32::MAX {
                table[slot] = seed;
                missing -= 1;
            }
            seed += 1;
        }
        table
    })
}

/// Peer id bytes (a SHA-256 multihash) derived from a seed.
fn seed_peer_bytes(seed: u32) -> [u8; 34] {
    let mut b = [0u8; 34];
    b[0] = 0x12;
    b[1] = 0x20;
    b[2..6].copy_from_slice(&seed.to_be_bytes());
    b
}

/// A random peer id whose key shares exactly `cpl` leading bits with `local`
/// (`cpl < MAX_REFRESH_CPL`), i.e. which falls into bucket `255 - cpl`. Used for refresh.
pub fn random_peer_with_cpl(local: &KeyHash, cpl: usize, rng: &mut impl RngCore) -> Option<PeerId> {
    let cpl = cpl.min(MAX_REFRESH_CPL - 1);
    let local16 = u16::from_be_bytes([local.0[0], local.0[1]]);
    let flip = 0x8000u16 >> cpl;
    let low_mask = flip.wrapping_sub(1);
    let prefix = ((local16 ^ flip) & !low_mask) | (rng.next_u32() as u16 & low_mask);
    let seed = prefix_table()[usize::from(prefix)];
    // A SHA-256 multihash with a 32-byte digest is always a valid peer id.
    PeerId::from_bytes(&seed_peer_bytes(seed)).ok()
}
