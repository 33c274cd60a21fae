//! The lookup iterator: terminates, finds the k closest of a known set, keeps at most α
//! requests in flight while making progress, survives failures and timeouts; disjoint
//! paths never share a peer.
#![allow(clippy::unwrap_used)]

use libp2p_identity::{Keypair, PeerId};
use msgnet_kad::iter::{ClosestPeersIter, IterConfig, Next};
use msgnet_kad::key::KeyHash;
use proptest::prelude::*;
use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

fn peers(n: usize, salt: u8) -> Vec<PeerId> {
    (0..n)
        .map(|i| {
            let mut b = [salt; 32];
            b[..8].copy_from_slice(&(i as u64).to_be_bytes());
            Keypair::ed25519_from_bytes(b)
                .unwrap()
                .public()
                .to_peer_id()
        })
        .collect()
}

fn cfg(alpha: usize, k: usize) -> IterConfig {
    IterConfig {
        parallelism: alpha,
        num_results: k,
        peer_timeout: Duration::from_secs(10),
    }
}

fn sorted(all: &[PeerId], target: &KeyHash) -> Vec<PeerId> {
    let mut v = all.to_vec();
    v.sort_by_key(|p| KeyHash::of_peer(p).distance(target));
    v
}

/// Each queried peer answers with its `answer` neighbours on either side in distance to
/// the target (so the lookup walks inwards over several rounds). Returns (result, max in flight, queried).
fn drive(
    it: &mut ClosestPeersIter,
    target: KeyHash,
    all: &[PeerId],
    failing: &HashSet<PeerId>,
    answer: usize,
) -> (Vec<PeerId>, usize, Vec<PeerId>) {
    let by_distance = sorted(all, &target);
    let now = Instant::now();
    let mut in_flight: VecDeque<PeerId> = VecDeque::new();
    let (mut max_in_flight, mut queried) = (0, Vec::new());
    for _ in 0..100_000 {
        match it.next(now) {
            Next::Query(p) => {
                assert!(!queried.contains(&p), "peer queried twice");
                queried.push(p);
                in_flight.push_back(p);
                max_in_flight = max_in_flight.max(in_flight.len());
            }
            Next::Waiting => {
                let p = in_flight
                    .pop_front()
                    .expect("waiting with nothing in flight");
                if failing.contains(&p) {
                    assert!(it.on_failure(&p));
                } else {
                    let pos = by_distance.iter().position(|q| *q == p).unwrap();
                    let window = pos.saturating_sub(answer)..(pos + answer).min(by_distance.len());
                    let closer: Vec<PeerId> = by_distance[window]
                        .iter()
                        .filter(|q| **q != p)
                        .copied()
                        .collect();
                    assert!(it.on_success(&p, closer));
                }
            }
            Next::Finished => {
                return (
                    it.result().into_iter().map(|(_, p)| p).collect(),
                    max_in_flight,
                    queried,
                )
            }
        }
    }
    panic!("lookup did not terminate");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn finds_the_k_closest(n in 30usize..200, salt in any::<u8>(), seed in 0usize..1000, alpha in 1usize..5) {
        let all = peers(n, salt);
        let target = KeyHash::of(&seed.to_be_bytes());
        let k = 20;
        // Start from the 3 farthest peers: the lookup must walk inwards.
        let start: Vec<PeerId> = sorted(&all, &target).into_iter().rev().take(3).collect();
        let mut it = ClosestPeersIter::new(target, start, cfg(alpha, k), 1);
        let (result, max_in_flight, _) = drive(&mut it, target, &all, &HashSet::new(), k);
        let expected: Vec<PeerId> = sorted(&all, &target).into_iter().take(k).collect();
        prop_assert_eq!(result, expected);
        prop_assert!(max_in_flight <= k.max(alpha));
    }

    #[test]
    fn failures_are_excluded(n in 40usize..150, salt in any::<u8>(), fail_every in 2usize..6) {
        let all = peers(n, salt);
        let target = KeyHash::of(b"t");
        let failing: HashSet<PeerId> = all.iter().step_by(fail_every).copied().collect();
        let start: Vec<PeerId> = all.iter().take(10).copied().collect();
        let mut it = ClosestPeersIter::new(target, start, cfg(3, 20), 1);
        let (result, _, _) = drive(&mut it, target, &all, &failing, 20);
        let expected: Vec<PeerId> =
            sorted(&all, &target).into_iter().filter(|p| !failing.contains(p)).take(20).collect();
        prop_assert_eq!(result, expected);
    }
}

#[test]
fn respects_alpha_while_progressing() {
    let all = peers(100, 1);
    let target = KeyHash::of(b"x");
    let mut it = ClosestPeersIter::new(target, all.clone(), cfg(3, 20), 1);
    let now = Instant::now();
    let first: Vec<Next> = (0..5).map(|_| it.next(now)).collect();
    assert!(matches!(
        first[..3],
        [Next::Query(_), Next::Query(_), Next::Query(_)]
    ));
    assert_eq!(first[3], Next::Waiting);
    assert_eq!(first[4], Next::Waiting);
}

#[test]
fn timeouts_free_slots_and_late_answers_count() {
    let all = peers(10, 2);
    let target = KeyHash::of(b"y");
    let mut it = ClosestPeersIter::new(target, all.clone(), cfg(2, 5), 1);
    let t0 = Instant::now();
    let (Next::Query(a), Next::Query(b)) = (it.next(t0), it.next(t0)) else {
        panic!()
    };
    assert_eq!(it.next(t0), Next::Waiting);
    // Not yet timed out at the deadline's eve.
    assert_eq!(it.next(t0 + Duration::from_secs(9)), Next::Waiting);
    // Both time out: two new peers may be queried.
    let t1 = t0 + Duration::from_secs(11);
    let (Next::Query(c), Next::Query(d)) = (it.next(t1), it.next(t1)) else {
        panic!()
    };
    assert!(![a, b].contains(&c) && ![a, b].contains(&d));
    // A late answer from a timed-out peer still counts as a success.
    assert!(it.on_success(&a, []));
    assert!(it.on_failure(&b));
    assert!(!it.on_failure(&b), "reported twice");
    // Nobody else answers: the lookup still terminates.
    let mut now = t1;
    loop {
        now += Duration::from_secs(11);
        match it.next(now) {
            Next::Finished => break,
            Next::Query(_) | Next::Waiting => {}
        }
    }
    assert_eq!(
        it.result().into_iter().map(|(_, p)| p).collect::<Vec<_>>(),
        vec![a]
    );
}

#[test]
fn empty_lookup_finishes_at_once() {
    let mut it = ClosestPeersIter::new(KeyHash::of(b"z"), Vec::new(), cfg(3, 20), 1);
    assert_eq!(it.next(Instant::now()), Next::Finished);
    assert!(it.result().is_empty());
}

#[test]
fn disjoint_paths_never_share_a_peer() {
    let all = peers(150, 3);
    let target = KeyHash::of(b"d");
    let by_distance = sorted(&all, &target);
    let start: Vec<PeerId> = by_distance.iter().rev().take(9).copied().collect();
    let mut it = ClosestPeersIter::new(target, start, cfg(3, 20), 3);
    let now = Instant::now();
    let mut queried = HashSet::new();
    let mut in_flight = VecDeque::new();
    let mut rng_answer = 0usize;
    loop {
        match it.next(now) {
            Next::Query(p) => {
                assert!(queried.insert(p), "peer queried twice across paths");
                in_flight.push_back(p);
            }
            Next::Waiting => {
                let p = in_flight.pop_front().unwrap();
                // Answers vary per peer so that paths see different candidates.
                rng_answer += 7;
                let closer: Vec<PeerId> = all
                    .iter()
                    .cycle()
                    .skip(rng_answer % 150)
                    .take(20)
                    .copied()
                    .collect();
                it.on_success(&p, closer);
            }
            Next::Finished => break,
        }
    }
    let result: Vec<PeerId> = it.result().into_iter().map(|(_, p)| p).collect();
    assert_eq!(result.len(), 20);
    assert!(result
        .windows(2)
        .all(|w| KeyHash::of_peer(&w[0]).distance(&target)
            < KeyHash::of_peer(&w[1]).distance(&target)));
    assert!(it.rounds() >= 2);
}
