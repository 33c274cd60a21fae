//! Arbitrary datagrams fed to a live endpoint (with an established session, so data
//! packets reach decryption) never panic and are always counted.

mod util;

use std::time::Duration;

use bytes::Bytes;
use msgnet_core::SendOptions;
use proptest::prelude::*;
use util::{completion_of, Pair};

fn established() -> (Pair, Vec<Vec<u8>>) {
    let mut p = Pair::default_ed25519();
    p.b.ep.register_protocol("/p");
    let now = p.now;
    let id = p.a.ep.send(now, p.b.peer, "/p", Bytes::from_static(b"x"), SendOptions::default()).unwrap();
    assert!(p.run_until(Duration::from_secs(2), |p| completion_of(&p.a, id).is_some()));
    let seen = p.log.iter().map(|(_, d)| d.clone()).collect();
    (p, seen)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    #[test]
    fn random_datagrams_never_panic(data in proptest::collection::vec(any::<u8>(), 0..1400)) {
        let (mut p, _) = established();
        let before = p.b.ep.stats().clone();
        let now = p.now;
        let from = p.a.addr;
        p.b.ep.handle_datagram(now, from, &mut data.clone());
        let after = p.b.ep.stats();
        prop_assert_eq!(after.rx_datagrams, before.rx_datagrams + 1);
        // Random bytes are never accepted as a message.
        prop_assert_eq!(after.messages_delivered, before.messages_delivered);
    }

    #[test]
    fn mutated_real_packets_never_panic(idx in 0usize..8, pos in 0usize..1400, byte in any::<u8>(), cut in 0usize..1400) {
        let (mut p, seen) = established();
        let mut pkt = seen[idx % seen.len()].clone();
        let l = pkt.len();
        pkt[pos % l] = byte;
        pkt.truncate(cut.max(1));
        let now = p.now;
        let from = p.a.addr;
        p.b.ep.handle_datagram(now, from, &mut pkt.clone());
        p.a.ep.handle_datagram(now, from, &mut pkt);
        let mut buf = Vec::new();
        while p.b.ep.poll_transmit(now, &mut buf).is_some() {}
        while p.a.ep.poll_transmit(now, &mut buf).is_some() {}
    }
}
