//! Routing table and key-space properties: SHA-256 distance, bucket index, k-closest
//! ordering against a brute-force sort, eviction with a liveness check, refresh keys.
#![allow(clippy::unwrap_used)]

use libp2p_identity::{Keypair, PeerId};
use msgnet_kad::key::{random_peer_with_cpl, KeyHash};
use msgnet_kad::table::{Entry, InsertResult, RoutingTable};
use multiaddr::Multiaddr;
use proptest::prelude::*;
use rand::SeedableRng;
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

fn peer(seed: u64) -> PeerId {
    let mut b = [7u8; 32];
    b[..8].copy_from_slice(&seed.to_be_bytes());
    Keypair::ed25519_from_bytes(b)
        .unwrap()
        .public()
        .to_peer_id()
}

fn addr() -> Vec<Multiaddr> {
    vec!["/ip4/127.0.0.1/udp/1".parse().unwrap()]
}

proptest! {
    #[test]
    fn key_hash_is_sha256(data in prop::collection::vec(any::<u8>(), 0..300)) {
        let expected: [u8; 32] = Sha256::digest(&data).into();
        prop_assert_eq!(KeyHash::of(&data).0, expected);
    }

    #[test]
    fn bucket_index_is_255_minus_leading_zeros(a in any::<[u8; 32]>(), b in any::<[u8; 32]>()) {
        let d = KeyHash(a).distance(&KeyHash(b));
        let as_int = u128::from_be_bytes(d.0[..16].try_into().unwrap());
        let lz = if as_int != 0 { as_int.leading_zeros() } else {
            128 + u128::from_be_bytes(d.0[16..].try_into().unwrap()).leading_zeros()
        };
        prop_assert_eq!(d.leading_zeros(), lz);
        prop_assert_eq!(d.bucket_index(), (lz < 256).then(|| 255 - lz as usize));
    }

    #[test]
    fn closest_equals_brute_force(seeds in prop::collection::btree_set(1u64..100_000, 1..300), target in any::<u64>(), n in 1usize..40) {
        let now = Instant::now();
        let local = peer(0);
        let mut t = RoutingTable::new(KeyHash::of_peer(&local), 20, now);
        for s in &seeds {
            t.insert(peer(*s), &addr(), now);
        }
        let target = KeyHash::of(&target.to_be_bytes());
        let got: Vec<PeerId> = t.closest(&target, n).iter().map(|e| e.peer).collect();
        let mut all: Vec<PeerId> = t.iter().map(|e| e.peer).collect();
        all.sort_by_key(|p| KeyHash::of_peer(p).distance(&target));
        all.truncate(n);
        prop_assert_eq!(got, all);
    }
}

#[test]
fn distance_uses_sha256_of_peer_id_bytes() {
    let (a, b) = (peer(1), peer(2));
    let ha: [u8; 32] = Sha256::digest(a.to_bytes()).into();
    let hb: [u8; 32] = Sha256::digest(b.to_bytes()).into();
    let d = KeyHash::of_peer(&a).distance(&KeyHash::of_peer(&b));
    for i in 0..32 {
        assert_eq!(d.0[i], ha[i] ^ hb[i]);
    }
    assert_eq!(
        KeyHash::of_peer(&a)
            .distance(&KeyHash::of_peer(&a))
            .bucket_index(),
        None
    );
}

/// Peers falling into bucket 255 (the farthest half) of `local`.
fn far_peers(local: &KeyHash, n: usize) -> Vec<PeerId> {
    (1..)
        .map(peer)
        .filter(|p| local.distance(&KeyHash::of_peer(p)).bucket_index() == Some(255))
        .take(n)
        .collect()
}

#[test]
fn full_bucket_checks_liveness_before_evicting() {
    let now = Instant::now();
    let local = KeyHash::of_peer(&peer(0));
    let mut t = RoutingTable::new(local, 20, now);
    let peers = far_peers(&local, 23);
    for (i, p) in peers[..20].iter().enumerate() {
        assert_eq!(
            t.insert(*p, &addr(), now + Duration::from_secs(i as u64)),
            InsertResult::Inserted
        );
    }
    let far = |e: &&Entry| local.distance(&e.key).bucket_index() == Some(255);
    assert_eq!(t.iter().filter(far).count(), 20);
    // Seen again: becomes the most recently seen.
    assert_eq!(
        t.insert(peers[0], &[], now + Duration::from_secs(30)),
        InsertResult::Updated
    );
    assert_eq!(
        t.get(&peers[0]).unwrap().last_seen,
        now + Duration::from_secs(30)
    );
    // A newcomer to a full bucket whose oldest entry was seen recently: dropped.
    assert_eq!(
        t.insert(peers[20], &addr(), now + Duration::from_secs(30)),
        InsertResult::Dropped
    );
    // Later: pending, check the least recently seen (peers[1]).
    let now = now + Duration::from_secs(100);
    assert_eq!(
        t.insert(peers[20], &addr(), now),
        InsertResult::Pending { check: peers[1] }
    );
    // Only one pending entry per bucket.
    assert_eq!(t.insert(peers[21], &addr(), now), InsertResult::Dropped);
    // Alive: stays, pending dropped.
    assert_eq!(t.on_liveness(&peers[1], true, now), None);
    assert!(t.get(&peers[1]).is_some() && t.get(&peers[20]).is_none());
    assert_eq!(t.get(&peers[1]).unwrap().last_seen, now);
    // Next newcomer: check peers[2] (last seen at +2 s); dead: evicted and replaced.
    assert_eq!(
        t.insert(peers[22], &addr(), now),
        InsertResult::Pending { check: peers[2] }
    );
    assert_eq!(
        t.on_liveness(&peers[2], false, now),
        Some((peers[2], Some(peers[22])))
    );
    assert!(t.get(&peers[2]).is_none() && t.get(&peers[22]).is_some());
    assert_eq!(t.len(), 20);
    // Entries without addresses are not inserted; the local key never is.
    assert_eq!(t.insert(peers[21], &[], now), InsertResult::Dropped);
    assert_eq!(t.insert(peer(0), &addr(), now), InsertResult::Dropped);
}

#[test]
fn refresh_keys_land_in_the_requested_bucket() {
    let local = KeyHash::of_peer(&peer(0));
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    for cpl in 0..16 {
        for _ in 0..4 {
            let p = random_peer_with_cpl(&local, cpl, &mut rng).unwrap();
            assert_eq!(
                local.distance(&KeyHash::of_peer(&p)).leading_zeros() as usize,
                cpl
            );
        }
    }
}
