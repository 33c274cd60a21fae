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
    // A peer whose large messages never complete: of each 64 KiB message only the first
    // packet arrives. (Unreliable messages, so that nothing is retransmitted and each
    // message leaves one partial behind; reliable and unreliable partials count against
    // the same bounds.)
    let mut cb = config(31);
    cb.max_reassembly_per_session = 256 << 10;
    cb.max_message_size = 256 << 10;
    cb.unreliable_reassembly_timeout = Duration::from_secs(10);
    let mut ca = config(30);
    ca.unreliable_deadline = Duration::from_millis(300);
    let mut p = Pair::new(Keypair::generate_ed25519(), Keypair::generate_ed25519(), ca, cb);
    p.b.ep.register_protocol(P);
    let now = p.now;
    let id = p.a.ep.send(now, p.b.peer, P, Bytes::from_static(b"hi"), SendOptions::default()).unwrap();
    assert!(p.run_until(Duration::from_secs(2), |p| completion_of(&p.a, id).is_some()));
    let allow = std::rc::Rc::new(std::cell::Cell::new(false));
    let gate = allow.clone();
    p.drop = Box::new(move |s, _, d| {
        if s == Side::A && d[0] < 0x80 && d.len() > 1000 {
            return !gate.replace(false);
        }
        false
    });
    let unreliable = SendOptions { delivery: Delivery::Unreliable, early_data: true };
    let mut peak = 0;
    for i in 0..12u8 {
        allow.set(true);
        let now = p.now;
        p.a.ep.send(now, p.b.peer, P, pattern(64 << 10, i), unreliable).unwrap();
        // Long enough for the whole message to leave under a loss-shrunk window.
        p.run_for(Duration::from_secs(1));
        peak = peak.max(p.b.ep.reassembly_bytes());
    }
    assert_eq!(peak, 256 << 10, "four 64 KiB partials fill the per-session bound, and no more");
    assert!(p.b.ep.stats().dropped(DropReason::ReassemblyLimit) >= 5);
    // Partials are dropped whole at their deadline.
    p.drop = Box::new(|s, _, _| s == Side::A);
    p.run_for(Duration::from_secs(11));
    assert_eq!(p.b.ep.reassembly_bytes(), 0);
}

#[test]
fn unreliable_messages_are_never_sent_after_their_deadline() {
    let mut ca = config(40);
    ca.unreliable_deadline = Duration::from_millis(50);
    let mut p = Pair::new(Keypair::generate_ed25519(), Keypair::generate_ed25519(), ca, config(41));
    p.b.ep.register_protocol(P);
    let now = p.now;
    let id = p.a.ep.send(now, p.b.peer, P, Bytes::from_static(b"hi"), SendOptions::default()).unwrap();
    assert!(p.run_until(Duration::from_secs(2), |p| completion_of(&p.a, id).is_some()));
    // Nothing gets through for a while: the congestion window fills and stays full.
    p.drop = Box::new(|s, _, _| s == Side::A);
    let unreliable = SendOptions { delivery: Delivery::Unreliable, early_data: true };
    let now = p.now;
    let ids: Vec<_> = (0..40u8)
        .map(|i| p.a.ep.send(now, p.b.peer, P, pattern(20_000, i), unreliable).unwrap())
        .collect();
    p.run_for(Duration::from_millis(200));
    let timed_out = ids
        .iter()
        .filter(|id| completion_of(&p.a, **id) == Some(Err(msgnet_core::SendError::TimedOut)))
        .count();
    assert!(timed_out > 0, "messages still queued at their deadline are dropped");
    assert!(ids.iter().all(|id| completion_of(&p.a, *id).is_some()), "every send has an outcome");
    // The session survives: dropping unreliable data is not a failure of the peer.
    p.drop = Box::new(|_, _, _| false);
    let now = p.now;
    let id = p.a.ep.send(now, p.b.peer, P, Bytes::from_static(b"after"), SendOptions::default()).unwrap();
    assert!(p.run_until(Duration::from_secs(5), |p| completion_of(&p.a, id).is_some()));
    assert_eq!(completion_of(&p.a, id).unwrap(), Ok(()));
}

#[test]
fn path_mtu_discovery_finds_the_path_and_never_relies_on_fragmentation() {
    // A path that carries at most 1300 bytes of UDP payload (larger datagrams vanish,
    // as with "don't fragment" on a narrow link).
    let mut p = Pair::default_ed25519();
    p.b.ep.register_protocol(P);
    p.drop = Box::new(|_, _, d| d.len() > 1300);
    let now = p.now;
    let id = p.a.ep.send(now, p.b.peer, P, Bytes::from_static(b"hi"), SendOptions::default()).unwrap();
    assert!(p.run_until(Duration::from_secs(2), |p| completion_of(&p.a, id).is_some()));
    p.run_for(Duration::from_secs(10));
    let mtu = p.a.ep.sessions(&p.b.peer)[0].mtu;
    assert!((1284..=1300).contains(&mtu), "found {mtu}");
    // Large messages now use the discovered size, and none of their packets is lost.
    let before = p.log.len();
    let msg = pattern(200_000, 5);
    let now = p.now;
    let id = p.a.ep.send(now, p.b.peer, P, msg.clone(), SendOptions::default()).unwrap();
    assert!(p.run_until(Duration::from_secs(10), |p| completion_of(&p.a, id).is_some()));
    assert_eq!(p.messages(Side::B).last().unwrap().payload, msg);
    let big = p.log[before..].iter().filter(|(s, d)| *s == Side::A && d.len() > 1200).count();
    let too_big = p.log[before..].iter().filter(|(s, d)| *s == Side::A && d.len() > 1300).count();
    assert!(big > 100, "packets above 1200 bytes are used");
    assert_eq!(too_big, 0);
    // On a wide path the search reaches the configured ceiling.
    let mut p = Pair::default_ed25519();
    p.b.ep.register_protocol(P);
    let now = p.now;
    let id = p.a.ep.send(now, p.b.peer, P, Bytes::from_static(b"hi"), SendOptions::default()).unwrap();
    assert!(p.run_until(Duration::from_secs(2), |p| completion_of(&p.a, id).is_some()));
    p.run_for(Duration::from_secs(5));
    assert_eq!(p.a.ep.sessions(&p.b.peer)[0].mtu, 1452);
}
