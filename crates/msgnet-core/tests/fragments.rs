//! Large messages: fragmentation, reassembly, retransmission of single fragments, and
//! the reassembly memory bounds.

mod util;

use std::time::Duration;

use bytes::Bytes;
use msgnet_core::{Delivery, DropReason, Keypair, SendOptions};
use util::{completion_of, config, Pair, Side};

const P: &str = "/big/1";

fn pattern(len: usize, seed: u8) -> Bytes {
    Bytes::from((0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect::<Vec<_>>())
}

fn established() -> Pair {
    let mut p = Pair::default_ed25519();
    p.latency = Duration::from_millis(5);
    p.b.ep.register_protocol(P);
    let now = p.now;
    let id = p.a.ep.send(now, p.b.peer, P, Bytes::from_static(b"hi"), SendOptions::default()).unwrap();
    assert!(p.run_until(Duration::from_secs(2), |p| completion_of(&p.a, id).is_some()));
    p
}

#[test]
fn one_mib_message_intact_under_loss() {
    let mut p = established();
    let mut n = 7u64;
    p.drop = Box::new(move |_, _, _| {
        n = n.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (n >> 33) % 100 < 10
    });
    let msg = pattern(1 << 20, 3);
    let now = p.now;
    let id = p.a.ep.send(now, p.b.peer, P, msg.clone(), SendOptions::default()).unwrap();
    assert!(p.run_until(Duration::from_secs(60), |p| completion_of(&p.a, id).is_some()));
    assert_eq!(completion_of(&p.a, id).unwrap(), Ok(()));
    let got = p.messages(Side::B);
    let last = got.last().unwrap();
    assert_eq!(last.payload, msg, "reassembled byte for byte");
    assert_eq!(got.len(), 2, "delivered once");
    assert_eq!(p.b.ep.reassembly_bytes(), 0, "reassembly memory released");
}

#[test]
fn a_lost_fragment_is_retransmitted_alone() {
    let mut p = established();
    p.run_for(Duration::from_millis(100));
    let start = p.log.len();
    // Drop the 5th data packet A sends from now on.
    let mut seen = 0;
    p.drop = Box::new(move |s, _, d| {
        if s == Side::A && d[0] < 0x80 {
            seen += 1;
            return seen == 5;
        }
        false
    });
    let msg = pattern(100_000, 9);
    let now = p.now;
    let id = p.a.ep.send(now, p.b.peer, P, msg.clone(), SendOptions::default()).unwrap();
    assert!(p.run_until(Duration::from_secs(10), |p| completion_of(&p.a, id).is_some()));
    assert_eq!(completion_of(&p.a, id).unwrap(), Ok(()));
    assert_eq!(p.messages(Side::B).last().unwrap().payload, msg);
    let a_data: usize = p.log[start..].iter().filter(|(s, d)| *s == Side::A && d[0] < 0x80 && d.len() > 200).count();
    let fragments = 100_000usize.div_ceil(1100);
    assert!(a_data <= fragments + 1 + 1, "{a_data} big packets for {fragments} fragments: only the lost one was resent");
    assert_eq!(p.a.ep.stats().retransmissions, 1);
}

#[test]
fn unreliable_large_message_arrives_or_is_dropped_whole() {
    let mut p = established();
    let unreliable = SendOptions { delivery: Delivery::Unreliable, early_data: true };
    let msg = pattern(30_000, 1);
    let now = p.now;
    p.a.ep.send(now, p.b.peer, P, msg.clone(), unreliable).unwrap();
    p.run_for(Duration::from_millis(200));
    assert_eq!(p.messages(Side::B).last().unwrap().payload, msg);
    // Now lose one fragment: nothing is delivered, and the partial is dropped at its deadline.
    let delivered = p.messages(Side::B).len();
    let mut seen = 0;
    p.drop = Box::new(move |s, _, d| {
        if s == Side::A && d.len() > 500 {
            seen += 1;
            return seen == 3;
        }
        false
    });
    let now = p.now;
    p.a.ep.send(now, p.b.peer, P, pattern(30_000, 2), unreliable).unwrap();
    p.run_for(Duration::from_millis(200));
    assert!(p.b.ep.reassembly_bytes() > 0);
    p.run_for(Duration::from_secs(3));
    assert_eq!(p.messages(Side::B).len(), delivered, "an incomplete unreliable message is not delivered");
    assert_eq!(p.b.ep.reassembly_bytes(), 0, "dropped whole at its deadline");
    assert_eq!(p.a.ep.stats().retransmissions, 0, "unreliable fragments are never resent");
}

#[test]
fn reassembly_memory_is_bounded_against_first_fragments_only() {
    // A peer that sends one fragment of each of many large messages and never the rest.
    let mut cb = config(31);
    cb.max_reassembly_per_session = 256 << 10;
    cb.max_message_size = 64 << 10;
    cb.reassembly_timeout = Duration::from_secs(5);
    let mut ca = config(30);
    ca.max_message_size = 64 << 10;
    ca.send_timeout = Duration::from_secs(600);
    let mut p = Pair::new(Keypair::generate_ed25519(), Keypair::generate_ed25519(), ca, cb);
    p.b.ep.register_protocol(P);
    let now = p.now;
    let id = p.a.ep.send(now, p.b.peer, P, Bytes::from_static(b"hi"), SendOptions::default()).unwrap();
    assert!(p.run_until(Duration::from_secs(2), |p| completion_of(&p.a, id).is_some()));
    // Let exactly one big data packet through after each send.
    let allow = std::rc::Rc::new(std::cell::Cell::new(false));
    let gate = allow.clone();
    p.drop = Box::new(move |s, _, d| {
        if s == Side::A && d[0] < 0x80 && d.len() > 1000 {
            return !gate.replace(false);
        }
        false
    });
    let mut peak = 0;
    for i in 0..20u8 {
        allow.set(true);
        let now = p.now;
        p.a.ep.send(now, p.b.peer, P, pattern(64 << 10, i), SendOptions::default()).unwrap();
        p.run_for(Duration::from_millis(30));
        peak = peak.max(p.b.ep.reassembly_bytes());
    }
    assert_eq!(peak, 256 << 10, "four 64 KiB partials fill the per-session bound, and no more");
    assert!(p.b.ep.stats().dropped(DropReason::ReassemblyLimit) >= 10);
    // Partials that make no progress are dropped after the reassembly timeout.
    p.drop = Box::new(|s, _, _| s == Side::A);
    p.run_for(Duration::from_secs(6));
    assert_eq!(p.b.ep.reassembly_bytes(), 0);
}
