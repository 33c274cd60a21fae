//! Sans-IO tests of the endpoint with a virtual clock: handshakes, loss, replay,
//! forged packets, the amplification bound and cookies.

mod util;

use std::time::Duration;

use bytes::Bytes;
use msgnet_core::{
    Delivery, DropReason, EndpointConfig, Event, Keypair, SendError, SendOptions,
};
use util::{completion_of, config, response_of, Pair, Side};

const P: &str = "/test/echo/1";

fn echo(m: &msgnet_core::IncomingMessage) -> Bytes {
    let mut v = b"re:".to_vec();
    v.extend_from_slice(&m.payload);
    Bytes::from(v)
}

fn ready_pair() -> Pair {
    let mut p = Pair::default_ed25519();
    p.b.ep.register_protocol(P);
    p.b.responder = Some(echo);
    p
}

#[test]
fn cold_request_is_one_round_trip_ik() {
    let mut p = ready_pair();
    let now = p.now;
    let start = p.now;
    let id = p.a.ep.request(now, p.b.peer, P, Bytes::from_static(b"hello"), SendOptions::default()).unwrap();
    assert!(p.run_until(Duration::from_secs(5), |p| response_of(&p.a, id).is_some()));
    assert_eq!(response_of(&p.a, id).unwrap().unwrap(), Bytes::from_static(b"re:hello"));
    // One packet each way, and one round trip of virtual time (2 × 10 ms latency, plus
    // nothing else: the responder answered inside its Response).
    // A's only packet before the reply arrived was the Initiation; B's only packet was
    // the Response, which carried the reply. (A then confirms the session with a data
    // packet, sent after the response arrived.)
    assert_eq!(p.count_sent(Side::B), 1, "B sent only the Response");
    assert_eq!(p.log[0], (Side::A, p.log[0].1.clone()));
    assert_eq!(p.log[0].1[0], 0x80);
    assert_eq!(p.log[1].0, Side::B);
    assert_eq!(p.log[1].1[0], 0x81);
    assert!(p.log[2..].iter().all(|(s, d)| *s == Side::A && d[0] < 0x80));
    assert_eq!(p.now - start, Duration::from_millis(20));
    let s = p.a.ep.sessions(&p.b.peer);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].pattern, "IK");
    assert!(s[0].established);
}

#[test]
fn xx_for_secp256k1_identities() {
    let mut p = Pair::new(Keypair::generate_secp256k1(), Keypair::generate_secp256k1(), config(3), config(4));
    p.b.ep.register_protocol(P);
    p.b.responder = Some(echo);
    let now = p.now;
    let id = p.a.ep.request(now, p.b.peer, P, Bytes::from_static(b"x"), SendOptions::default()).unwrap();
    assert!(p.run_until(Duration::from_secs(5), |p| response_of(&p.a, id).is_some()));
    assert_eq!(response_of(&p.a, id).unwrap().unwrap(), Bytes::from_static(b"re:x"));
    assert_eq!(p.a.ep.sessions(&p.b.peer)[0].pattern, "XX");
    // Initiation, Response, Finish(with the request), then the reply: 1.5 round trips.
    let kinds: Vec<u8> = p.log.iter().take(3).map(|(_, d)| d[0]).collect();
    assert_eq!(kinds, vec![0x80, 0x81, 0x83]);
    assert_eq!(p.messages(Side::B)[0].peer, p.a.peer);
}

#[test]
fn mixed_key_types_ik_from_secp_to_ed() {
    // The responder is ed25519, so IK works whatever the initiator's key type.
    let mut p = Pair::new(Keypair::generate_ecdsa(), Keypair::generate_ed25519(), config(5), config(6));
    p.b.ep.register_protocol(P);
    p.b.responder = Some(echo);
    let now = p.now;
    let id = p.a.ep.request(now, p.b.peer, P, Bytes::from_static(b"y"), SendOptions::default()).unwrap();
    assert!(p.run_until(Duration::from_secs(5), |p| response_of(&p.a, id).is_some()));
    assert_eq!(p.a.ep.sessions(&p.b.peer)[0].pattern, "IK");
    assert_eq!(p.messages(Side::B)[0].peer, p.a.peer);
}

fn lose_nth(side: Side, n: usize) -> Box<dyn FnMut(Side, usize, &[u8]) -> bool> {
    Box::new(move |s, i, _| s == side && i == n)
}

#[test]
fn lost_initiation_is_retransmitted() {
    let mut p = ready_pair();
    p.drop = lose_nth(Side::A, 0);
    let now = p.now;
    let id = p.a.ep.request(now, p.b.peer, P, Bytes::from_static(b"1"), SendOptions::default()).unwrap();
    assert!(p.run_until(Duration::from_secs(5), |p| response_of(&p.a, id).is_some()));
    assert_eq!(response_of(&p.a, id).unwrap().unwrap(), Bytes::from_static(b"re:1"));
    assert_eq!(p.messages(Side::B).len(), 1);
    assert!(p.a.ep.stats().retransmissions >= 1);
}

#[test]
fn lost_response_is_answered_from_cache_without_redelivery() {
    let mut p = ready_pair();
    p.drop = lose_nth(Side::B, 0);
    let now = p.now;
    let id = p.a.ep.request(now, p.b.peer, P, Bytes::from_static(b"2"), SendOptions::default()).unwrap();
    assert!(p.run_until(Duration::from_secs(5), |p| response_of(&p.a, id).is_some()));
    assert_eq!(response_of(&p.a, id).unwrap().unwrap(), Bytes::from_static(b"re:2"));
    // The 0-RTT request was delivered once although the Initiation arrived twice.
    assert_eq!(p.messages(Side::B).len(), 1);
    assert_eq!(p.b.ep.sessions(&p.a.peer).len(), 1);
}

#[test]
fn lost_xx_packets_recovered() {
    for (side, n) in [(Side::A, 0), (Side::B, 0), (Side::A, 1)] {
        let mut p = Pair::new(Keypair::generate_secp256k1(), Keypair::generate_secp256k1(), config(7), config(8));
        p.b.ep.register_protocol(P);
        p.b.responder = Some(echo);
        p.drop = lose_nth(side, n);
        let now = p.now;
        let id = p.a.ep.request(now, p.b.peer, P, Bytes::from_static(b"z"), SendOptions::default()).unwrap();
        assert!(
            p.run_until(Duration::from_secs(5), |p| response_of(&p.a, id).is_some()),
            "losing {side:?} packet {n}"
        );
        assert_eq!(response_of(&p.a, id).unwrap().unwrap(), Bytes::from_static(b"re:z"));
        assert_eq!(p.messages(Side::B).len(), 1, "losing {side:?} packet {n}");
    }
}

#[test]
fn lost_confirmation_recovered() {
    // A's first data packet (the confirmation of the IK handshake) is lost; B must not
    // send data before it hears from A, and A retransmits the confirmation.
    let mut p = ready_pair();
    p.drop = lose_nth(Side::A, 1);
    let now = p.now;
    let id = p.a.ep.send(now, p.b.peer, P, Bytes::from_static(b"m1"), SendOptions::default()).unwrap();
    p.run_until(Duration::from_secs(5), |p| completion_of(&p.a, id).is_some());
    let now = p.now;
    let id2 = p.b.ep.send(now, p.a.peer, P, Bytes::from_static(b"back"), SendOptions::default());
    p.a.ep.register_protocol(P);
    let id2 = id2.unwrap();
    assert!(p.run_until(Duration::from_secs(5), |p| completion_of(&p.b, id2).is_some()));
    assert_eq!(completion_of(&p.b, id2).unwrap(), Ok(()));
    assert_eq!(p.messages(Side::A).len(), 1);
}

#[test]
fn unsupported_protocol_fails_with_reset() {
    let mut p = ready_pair();
    let now = p.now;
    let start = now;
    let id = p.a.ep.send(now, p.b.peer, "/nope/1", Bytes::from_static(b"?"), SendOptions::default()).unwrap();
    let rid = p.a.ep.request(now, p.b.peer, "/nope/1", Bytes::from_static(b"?"), SendOptions::default()).unwrap();
    assert!(p.run_until(Duration::from_secs(1), |p| completion_of(&p.a, id).is_some() && response_of(&p.a, rid).is_some()));
    assert_eq!(completion_of(&p.a, id).unwrap(), Err(SendError::UnsupportedProtocol("/nope/1".into())));
    assert_eq!(response_of(&p.a, rid).unwrap(), Err(SendError::UnsupportedProtocol("/nope/1".into())));
    // Not a timeout: one round trip (20 ms) plus the responder's reply hold (10 ms).
    assert!(p.now - start <= Duration::from_millis(30), "{:?}", p.now - start);
    assert!(p.messages(Side::B).is_empty());
}

/// Establishes a session and returns the pair with B's handler registered.
fn established() -> Pair {
    let mut p = ready_pair();
    let now = p.now;
    let id = p.a.ep.send(now, p.b.peer, P, Bytes::from_static(b"hi"), SendOptions::default()).unwrap();
    assert!(p.run_until(Duration::from_secs(2), |p| completion_of(&p.a, id).is_some()));
    p.run_for(Duration::from_millis(100));
    p
}

/// Sends one more message from A and returns the data packet carrying it.
fn capture_data_packet(p: &mut Pair) -> Vec<u8> {
    let before = p.log.len();
    let now = p.now;
    let id = p.a.ep.send(now, p.b.peer, P, Bytes::from_static(b"cap"), SendOptions::default()).unwrap();
    assert!(p.run_until(Duration::from_secs(2), |p| completion_of(&p.a, id).is_some()));
    p.log[before..].iter().find(|(s, d)| *s == Side::A && d[0] < 0x80).unwrap().1.clone()
}

#[test]
fn replayed_truncated_flipped_forged_packets_are_dropped_and_counted() {
    let mut p = established();
    let pkt = capture_data_packet(&mut p);
    let delivered = p.messages(Side::B).len();
    let now = p.now;
    let from = p.a.addr;
    let stats0 = p.b.ep.stats().clone();

    // Replay.
    p.b.ep.handle_datagram(now, from, &mut pkt.clone());
    assert_eq!(p.b.ep.stats().dropped(DropReason::Replay), stats0.dropped(DropReason::Replay) + 1);
    // Truncated to below the tag.
    p.b.ep.handle_datagram(now, from, &mut pkt[..10].to_vec());
    assert_eq!(p.b.ep.stats().dropped(DropReason::Malformed), stats0.dropped(DropReason::Malformed) + 1);
    // Bit flips anywhere after the receiver index (header pn, ciphertext, tag).
    let mut flipped = 0;
    for i in 4..pkt.len() {
        let mut m = pkt.clone();
        m[i] ^= 0x01;
        p.b.ep.handle_datagram(now, from, &mut m);
        flipped += 1;
    }
    let s = p.b.ep.stats();
    let rejected = (s.dropped(DropReason::Decrypt) - stats0.dropped(DropReason::Decrypt))
        + (s.dropped(DropReason::Replay) - stats0.dropped(DropReason::Replay) - 1);
    assert_eq!(rejected, flipped, "every bit-flipped packet is rejected");
    // Forged: an unknown receiver index, and garbage.
    let mut forged = pkt.clone();
    forged[1] ^= 0x55;
    p.b.ep.handle_datagram(now, from, &mut forged);
    assert!(p.b.ep.stats().dropped(DropReason::UnknownSession) > stats0.dropped(DropReason::UnknownSession)
        || p.b.ep.stats().dropped(DropReason::Decrypt) > stats0.dropped(DropReason::Decrypt));
    p.b.ep.handle_datagram(now, from, &mut vec![0xff; 40]);
    p.b.ep.handle_datagram(now, from, &mut Vec::new());
    assert_eq!(p.b.ep.stats().dropped(DropReason::Malformed), stats0.dropped(DropReason::Malformed) + 3);
    // None of it reached a handler.
    p.drain_events();
    assert_eq!(p.messages(Side::B).len(), delivered);
}

#[test]
fn replayed_initiation_is_refused() {
    let mut p = established();
    let init = p.log.iter().find(|(s, d)| *s == Side::A && d[0] == 0x80).unwrap().1.clone();
    let delivered = p.messages(Side::B).len();
    // After the handshake completed, an identical Initiation gets nothing.
    let now = p.now;
    let from = p.a.addr;
    let b_sent = p.count_sent(Side::B);
    p.b.ep.handle_datagram(now, from, &mut init.clone());
    p.flush();
    assert_eq!(p.count_sent(Side::B), b_sent, "no answer to a replay once validated");
    assert_eq!(p.b.ep.stats().dropped(DropReason::Replay), 1);
    p.run_for(Duration::from_secs(1));
    assert_eq!(p.messages(Side::B).len(), delivered);
}

#[test]
fn stale_or_repeated_timestamps_are_refused() {
    // Two different Initiations from A where the second carries an older timestamp
    // cannot be produced honestly; emulate a restarted responder instead: B2 gets A's
    // Initiation after the freshness window.
    let kb = Keypair::generate_ed25519();
    let mut cfg = config(9);
    cfg.handshake_freshness = Duration::from_secs(30);
    let mut p = Pair::new(Keypair::generate_ed25519(), kb, config(10), cfg);
    p.b.ep.register_protocol(P);
    p.drop = Box::new(|s, _, _| s == Side::A); // capture A's Initiation, deliver nothing
    let now = p.now;
    p.a.ep.send(now, p.b.peer, P, Bytes::from_static(b"old"), SendOptions::default()).unwrap();
    p.flush();
    let init = p.log[0].1.clone();
    p.now += Duration::from_secs(60);
    let now = p.now;
    let from = p.a.addr;
    p.b.ep.handle_datagram(now, from, &mut init.clone());
    assert_eq!(p.b.ep.stats().dropped(DropReason::StaleInitiation), 1);
    p.drain_events();
    assert!(p.messages(Side::B).is_empty());
}

#[test]
fn amplification_bound_holds_byte_for_byte() {
    // Many requests whose responses are large: B must not send more to A's address than
    // it received before A's address is validated.
    let mut p = Pair::default_ed25519();
    p.b.ep.register_protocol(P);
    p.b.responder = Some(|_| Bytes::from(vec![7u8; 900]));
    let now = p.now;
    let ids: Vec<_> = (0..8)
        .map(|i| p.a.ep.request(now, p.b.peer, P, Bytes::from(vec![i as u8; 10]), SendOptions::default()).unwrap())
        .collect();
    // Drop everything A sends after its Initiation, so B never validates A.
    p.drop = Box::new(|s, i, _| s == Side::A && i > 0);
    p.run_for(Duration::from_secs(3));
    let rx: usize = p.log.iter().filter(|(s, _)| *s == Side::A).take(1).map(|(_, d)| d.len()).sum();
    let tx: usize = p.log.iter().filter(|(s, _)| *s == Side::B).map(|(_, d)| d.len()).sum();
    assert!(tx > 0);
    assert!(tx <= rx, "B sent {tx} bytes to an unvalidated address that sent it {rx}");
    // Once A's packets get through, everything completes.
    p.drop = Box::new(|_, _, _| false);
    assert!(p.run_until(Duration::from_secs(10), |p| ids.iter().all(|id| response_of(&p.a, *id).is_some())));
    for id in ids {
        assert_eq!(response_of(&p.a, id).unwrap().unwrap().len(), 900);
    }
}

#[test]
fn cookie_mode_under_initiation_flood() {
    let mut cb = config(12);
    cb.cookie_threshold_per_sec = 5;
    let mut p = Pair::new(Keypair::generate_ed25519(), Keypair::generate_ed25519(), config(11), cb);
    p.b.ep.register_protocol(P);
    p.b.responder = Some(echo);
    // A flood of valid-looking Initiations from 200 spoofed addresses (fresh identities).
    let b_peer = p.b.peer;
    let b_addr = p.b.addr;
    let mut flood = Vec::new();
    for i in 0..200u32 {
        let k = Keypair::generate_ed25519();
        let mut e = msgnet_core::Endpoint::new(config(100), &k, p.now, Duration::from_secs(1_800_000_000));
        e.add_address(b_peer, b_addr);
        e.send(p.now, b_peer, P, Bytes::from_static(b"flood"), SendOptions::default()).unwrap();
        let mut buf = Vec::new();
        let t = e.poll_transmit(p.now, &mut buf).unwrap();
        let from: std::net::SocketAddr = format!("10.9.{}.{}:4000", i / 250, i % 250 + 1).parse().unwrap();
        flood.push((from, buf[..t.size].to_vec()));
    }
    let now = p.now;
    for (from, mut pkt) in flood {
        p.b.ep.handle_datagram(now, from, &mut pkt);
    }
    let s = p.b.ep.stats();
    assert_eq!(s.cookie_replies_sent, 195);
    assert_eq!(s.dropped(DropReason::CookieRequired), 195);
    // State was created only for the first five.
    let mut buf = Vec::new();
    let mut replies = 0;
    while let Some(t) = p.b.ep.poll_transmit(now, &mut buf) {
        if buf[0] == 0x82 {
            assert_eq!(t.size, 21, "cookie replies are small: no amplification");
            replies += 1;
        }
    }
    assert_eq!(replies, 195);
    while p.b.ep.poll_event().is_some() {}
    // A legitimate initiator in the same second gets a cookie, echoes it, and completes.
    let id = p.a.ep.request(now, p.b.peer, P, Bytes::from_static(b"legit"), SendOptions::default()).unwrap();
    assert!(p.run_until(Duration::from_secs(2), |p| response_of(&p.a, id).is_some()));
    assert_eq!(response_of(&p.a, id).unwrap().unwrap(), Bytes::from_static(b"re:legit"));
    assert!(p.log.iter().any(|(s, d)| *s == Side::B && d[0] == 0x82), "A was asked for a cookie");
}

#[test]
fn many_messages_with_loss_exactly_once_and_ordered_in_order() {
    let mut p = ready_pair();
    let mut n = 0u64;
    p.drop = Box::new(move |_, _, _| {
        n = n.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (n >> 33) % 100 < 20
    });
    let mut ids = Vec::new();
    for i in 0..2000u32 {
        let now = p.now;
        let delivery = if i % 2 == 0 { Delivery::Ordered } else { Delivery::Reliable };
        let opts = SendOptions { delivery, early_data: true };
        ids.push(p.a.ep.send(now, p.b.peer, P, Bytes::from(i.to_be_bytes().to_vec()), opts).unwrap());
        if i % 50 == 0 {
            p.step();
        }
    }
    assert!(p.run_until(Duration::from_secs(30), |p| ids.iter().all(|id| completion_of(&p.a, *id).is_some())));
    for id in &ids {
        assert_eq!(completion_of(&p.a, *id).unwrap(), Ok(()));
    }
    let got: Vec<u32> = p
        .messages(Side::B)
        .iter()
        .map(|m| u32::from_be_bytes(m.payload[..4].try_into().unwrap()))
        .collect();
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(sorted, (0..2000).collect::<Vec<_>>(), "each message exactly once");
    let ordered: Vec<u32> = got.iter().copied().filter(|i| i % 2 == 0).collect();
    let mut o2 = ordered.clone();
    o2.sort();
    assert_eq!(ordered, o2, "ordered messages in order");
    assert!(p.a.ep.stats().retransmissions > 0);
}

#[test]
fn rekeying_keeps_the_session_working() {
    let mut ca = config(13);
    ca.rekey_after_packets = 20;
    let mut cb = config(14);
    cb.rekey_after_packets = 25;
    let mut p = Pair::new(Keypair::generate_ed25519(), Keypair::generate_ed25519(), ca, cb);
    p.b.ep.register_protocol(P);
    p.b.responder = Some(echo);
    for i in 0..300u32 {
        let now = p.now;
        let id = p.a.ep.request(now, p.b.peer, P, Bytes::from(i.to_string()), SendOptions::default()).unwrap();
        assert!(p.run_until(Duration::from_secs(2), |p| response_of(&p.a, id).is_some()));
        assert_eq!(response_of(&p.a, id).unwrap().unwrap(), Bytes::from(format!("re:{i}")));
    }
    assert_eq!(p.b.ep.stats().dropped(DropReason::Decrypt), 0);
}

#[test]
fn unreachable_peer_fails_within_handshake_timeout() {
    let mut ca = config(15);
    ca.handshake_timeout = Duration::from_secs(2);
    let mut p = Pair::new(Keypair::generate_ed25519(), Keypair::generate_ed25519(), ca, config(16));
    p.drop = Box::new(|_, _, _| true);
    let now = p.now;
    let start = now;
    let id = p.a.ep.send(now, p.b.peer, P, Bytes::from_static(b"void"), SendOptions::default()).unwrap();
    assert!(p.run_until(Duration::from_secs(5), |p| completion_of(&p.a, id).is_some()));
    assert!(matches!(completion_of(&p.a, id).unwrap(), Err(SendError::Unreachable(_))));
    assert!(p.now - start <= Duration::from_secs(2) + Duration::from_millis(1));
}

#[test]
fn vanished_peer_times_out_and_idle_session_closes() {
    let mut p = established();
    p.drop = Box::new(|_, _, _| true);
    let now = p.now;
    let start = now;
    let id = p.a.ep.send(now, p.b.peer, P, Bytes::from_static(b"lost"), SendOptions::default()).unwrap();
    assert!(p.run_until(Duration::from_secs(20), |p| completion_of(&p.a, id).is_some()));
    assert_eq!(completion_of(&p.a, id).unwrap(), Err(SendError::TimedOut));
    assert!(p.now - start <= EndpointConfig::default().send_timeout + Duration::from_millis(1));
    // B hears nothing and closes its side after the idle timeout.
    assert!(p.run_until(Duration::from_secs(120), |p| p.b.ep.peers().is_empty()));
    assert!(p.b.events.iter().any(|e| matches!(e, Event::SessionDown { .. })));
}

#[test]
fn deterministic_given_seeds() {
    fn run() -> Vec<Vec<u8>> {
        let ka = Keypair::ed25519_from_bytes([1u8; 32]).unwrap();
        let kb = Keypair::ed25519_from_bytes([2u8; 32]).unwrap();
        let mut p = Pair::new(ka, kb, config(20), config(21));
        p.b.ep.register_protocol(P);
        p.b.responder = Some(echo);
        let now = p.now;
        let id = p.a.ep.request(now, p.b.peer, P, Bytes::from_static(b"d"), SendOptions::default()).unwrap();
        p.run_until(Duration::from_secs(2), |p| response_of(&p.a, id).is_some());
        p.run_for(Duration::from_millis(50));
        p.log.iter().map(|(_, d)| d.clone()).collect()
    }
    assert_eq!(run(), run());
}

#[test]
fn overhead_of_a_64_byte_message_is_24_bytes() {
    let mut p = established();
    // Let acknowledgements settle so nothing else rides with the message.
    p.run_for(Duration::from_millis(200));
    let before = p.log.len();
    let now = p.now;
    let id = p.a.ep.send(now, p.b.peer, P, Bytes::from(vec![0x42; 64]), SendOptions::default()).unwrap();
    p.flush();
    let pkt = p.log[before..].iter().find(|(s, _)| *s == Side::A).unwrap().1.clone();
    assert_eq!(pkt.len() - 64, 24, "4 header + 1 pn + 3 frame header + 16 tag");
    assert!(p.run_until(Duration::from_secs(1), |p| completion_of(&p.a, id).is_some()));
    let unreliable = SendOptions { delivery: Delivery::Unreliable, early_data: true };
    p.run_for(Duration::from_millis(200));
    let before = p.log.len();
    let now = p.now;
    p.a.ep.send(now, p.b.peer, P, Bytes::from(vec![0x42; 64]), unreliable).unwrap();
    p.flush();
    let pkt = p.log[before..].iter().find(|(s, _)| *s == Side::A).unwrap().1.clone();
    assert_eq!(pkt.len() - 64, 23, "an unreliable message needs no sequence number");
}

#[test]
fn small_messages_coalesce_into_one_packet() {
    let mut p = established();
    p.run_for(Duration::from_millis(200));
    let before = p.log.len();
    let now = p.now;
    for i in 0..10u8 {
        p.a.ep.send(now, p.b.peer, P, Bytes::from(vec![i; 64]), SendOptions::default()).unwrap();
    }
    p.flush();
    let a_pkts: Vec<_> = p.log[before..].iter().filter(|(s, _)| *s == Side::A).collect();
    assert_eq!(a_pkts.len(), 1, "ten 64-byte messages fit one packet");
    p.run_for(Duration::from_millis(100));
    assert_eq!(p.messages(Side::B).len(), 11);
}

#[test]
fn many_protocols_both_directions() {
    let mut p = established();
    let protos: Vec<String> = (0..40).map(|i| format!("/multi/{i}/1.0.0")).collect();
    for pr in &protos {
        p.a.ep.register_protocol(pr);
        p.b.ep.register_protocol(pr);
    }
    let mut ids = Vec::new();
    for round in 0..5u8 {
        for pr in &protos {
            let now = p.now;
            ids.push((Side::A, p.a.ep.send(now, p.b.peer, pr, Bytes::from(vec![round]), SendOptions::default()).unwrap()));
            ids.push((Side::B, p.b.ep.send(now, p.a.peer, pr, Bytes::from(vec![round]), SendOptions::default()).unwrap()));
        }
        p.step();
    }
    assert!(p.run_until(Duration::from_secs(5), |p| ids.iter().all(|(s, id)| {
        let n = if *s == Side::A { &p.a } else { &p.b };
        completion_of(n, *id).is_some()
    })));
    for side in [Side::A, Side::B] {
        let msgs = p.messages(side);
        for pr in &protos {
            let n = msgs.iter().filter(|m| &*m.protocol == pr.as_str()).count();
            assert_eq!(n, 5, "{side:?} {pr}");
        }
    }
}

#[test]
fn peer_address_change_keeps_the_session() {
    let mut p = established();
    // A's NAT rebinds: its packets now come from another port.
    let new_addr: std::net::SocketAddr = "10.0.0.1:3333".parse().unwrap();
    p.a.addr = new_addr;
    let now = p.now;
    let id = p.a.ep.request(now, p.b.peer, P, Bytes::from_static(b"moved"), SendOptions::default()).unwrap();
    assert!(p.run_until(Duration::from_secs(2), |p| response_of(&p.a, id).is_some()));
    assert_eq!(response_of(&p.a, id).unwrap().unwrap(), Bytes::from_static(b"re:moved"));
    let s = p.b.ep.sessions(&p.a.peer);
    assert_eq!(s.len(), 1, "same session");
    assert_eq!(s[0].remote, new_addr);
}

#[test]
fn api_misuse_gets_typed_errors() {
    let mut p = ready_pair();
    let now = p.now;
    let big = Bytes::from(vec![0u8; (4 << 20) + 1]);
    assert!(matches!(p.a.ep.send(now, p.b.peer, P, big, SendOptions::default()), Err(SendError::MessageTooLarge { .. })));
    let unreliable = SendOptions { delivery: Delivery::Unreliable, early_data: true };
    let big_u = Bytes::from(vec![0u8; (64 << 10) + 1]);
    assert!(matches!(p.a.ep.send(now, p.b.peer, P, big_u, unreliable), Err(SendError::MessageTooLarge { .. })));
    assert_eq!(p.a.ep.send(now, p.b.peer, "", Bytes::new(), SendOptions::default()), Err(SendError::InvalidProtocol));
    let stranger = Keypair::generate_ed25519().public().to_peer_id();
    assert_eq!(p.a.ep.send(now, stranger, P, Bytes::new(), SendOptions::default()), Err(SendError::NoAddress));
    let me = p.a.peer;
    assert!(matches!(p.a.ep.send(now, me, P, Bytes::new(), SendOptions::default()), Err(SendError::Unreachable(_))));
    let fake = msgnet_core::InboundRequest { session: msgnet_core::SessionId(99), protocol: P.into(), request_id: 1 };
    assert_eq!(p.b.ep.respond(now, &fake, Ok(Bytes::new())), Err(SendError::UnknownRequest));
    p.a.ep.close(now);
    assert_eq!(p.a.ep.send(now, p.b.peer, P, Bytes::new(), SendOptions::default()), Err(SendError::Closed));
}

#[test]
fn unreliable_only_channel_switches_to_continuation() {
    let mut p = established();
    let unreliable = SendOptions { delivery: Delivery::Unreliable, early_data: true };
    const U: &str = "/only/unreliable/with/a/long/name/1.0.0";
    p.b.ep.register_protocol(U);
    let now = p.now;
    p.a.ep.send(now, p.b.peer, U, Bytes::from(vec![1; 64]), unreliable).unwrap();
    p.run_for(Duration::from_millis(200));
    let before = p.log.len();
    let now = p.now;
    p.a.ep.send(now, p.b.peer, U, Bytes::from(vec![2; 64]), unreliable).unwrap();
    p.flush();
    let pkt = p.log[before..].iter().find(|(s, _)| *s == Side::A).unwrap().1.clone();
    assert_eq!(pkt.len() - 64, 23, "the INIT was acknowledged, so the name is not repeated");
    p.run_for(Duration::from_millis(100));
    assert_eq!(p.messages(Side::B).iter().filter(|m| &*m.protocol == U).count(), 2);
}

#[test]
fn handler_removed_after_delivery_does_not_fail_delivered_messages() {
    // B acknowledges nothing until its handler is gone (its packets are dropped), then A
    // retransmits: the duplicates must be acknowledged, not answered with RESET.
    let mut p = established();
    p.run_for(Duration::from_millis(100));
    p.drop = Box::new(|s, _, _| s == Side::B);
    let mut ids = Vec::new();
    for i in 0..20u8 {
        let now = p.now;
        ids.push(p.a.ep.send(now, p.b.peer, P, Bytes::from(vec![i]), SendOptions::default()).unwrap());
    }
    p.run_for(Duration::from_millis(50));
    assert_eq!(p.messages(Side::B).len(), 21, "all delivered once");
    p.b.ep.unregister_protocol(P);
    p.drop = Box::new(|_, _, _| false);
    assert!(p.run_until(Duration::from_secs(5), |p| ids.iter().all(|id| completion_of(&p.a, *id).is_some())));
    for id in ids {
        assert_eq!(completion_of(&p.a, id).unwrap(), Ok(()));
    }
    assert_eq!(p.messages(Side::B).len(), 21);
}

#[test]
fn two_hundred_ordered_messages_sent_at_once_arrive_in_order() {
    let mut p = established();
    const O: &str = "/ordered/burst/1";
    p.b.ep.register_protocol(O);
    let now = p.now;
    let opts = SendOptions { delivery: Delivery::Ordered, early_data: true };
    for i in 0..200u32 {
        p.a.ep.send(now, p.b.peer, O, Bytes::from(i.to_be_bytes().to_vec()), opts).unwrap();
    }
    p.run_for(Duration::from_secs(2));
    let got: Vec<u32> = p
        .messages(Side::B)
        .iter()
        .filter(|m| &*m.protocol == O)
        .map(|m| u32::from_be_bytes(m.payload[..4].try_into().unwrap()))
        .collect();
    assert_eq!(got, (0..200).collect::<Vec<_>>());
}

/// The address book is bounded: peers known only because they contacted us are forgotten,
/// oldest idle first, beyond `max_dormant_peers`; peers given an address are kept; a peer
/// keeps at most `MAX_ADDRS_PER_PEER` addresses.
#[test]
fn address_book_forgets_idle_inbound_peers_beyond_the_bound() {
    let mut p = ready_pair();
    // B with a small bound (a new identity; each A below is given its address).
    let kb = Keypair::generate_ed25519();
    p.b.peer = kb.public().to_peer_id();
    let unix = Duration::from_secs(1_800_000_000);
    p.b.ep = msgnet_core::Endpoint::new(EndpointConfig { max_dormant_peers: 3, ..config(2) }, &kb, p.now, unix);
    p.b.ep.register_protocol(P);
    let b_addr = p.b.addr;
    // A pinned peer: B was given its address.
    let pinned = Keypair::generate_ed25519();
    p.b.ep.add_address(pinned.public().to_peer_id(), "10.0.9.9:9".parse().unwrap());

    let mut initiators = Vec::new();
    for i in 0..6u8 {
        let k = if i == 0 { pinned.clone() } else { Keypair::generate_ed25519() };
        let addr: std::net::SocketAddr = format!("10.0.1.{}:1000", i + 1).parse().unwrap();
        p.a = util::Node {
            peer: k.public().to_peer_id(),
            ep: msgnet_core::Endpoint::new(config(10 + i), &k, p.now, unix),
            addr,
            events: Vec::new(),
            responder: None,
        };
        p.a.ep.add_address(p.b.peer, b_addr);
        let now = p.now;
        let id = p.a.ep.send(now, p.b.peer, P, Bytes::from(vec![i]), SendOptions::default()).unwrap();
        assert!(p.run_until(Duration::from_secs(5), |p| completion_of(&p.a, id).is_some()));
        assert_eq!(completion_of(&p.a, id).unwrap(), Ok(()));
        // A's first data packet (it confirms the session) tells B where A is.
        p.run_for(Duration::from_millis(100));
        assert_eq!(p.b.ep.addresses(&p.a.peer).first(), Some(&addr), "B learned where {i} came from");
        // A goes away: B's session with it ends, and the peer becomes idle.
        let now = p.now;
        p.a.ep.close(now);
        p.run_for(Duration::from_millis(100));
        assert!(p.b.ep.sessions(&p.a.peer).is_empty(), "B closed its session with {i}");
        initiators.push((p.a.peer, addr));
    }
    let known: Vec<bool> = initiators.iter().map(|(peer, _)| !p.b.ep.addresses(peer).is_empty()).collect();
    // 0 is pinned; of the five unpinned, the two idle longest are forgotten.
    assert_eq!(known, [true, false, false, true, true, true]);
    assert_eq!(p.b.ep.addresses(&initiators[0].0), vec![initiators[0].1, "10.0.9.9:9".parse().unwrap()]);
    assert_eq!(p.b.ep.send(p.now, initiators[1].0, P, Bytes::new(), SendOptions::default()), Err(SendError::NoAddress));

    // At most MAX_ADDRS_PER_PEER addresses per peer; a new one replaces the last.
    let many = Keypair::generate_ed25519().public().to_peer_id();
    for port in 1..=20u16 {
        p.b.ep.add_address(many, std::net::SocketAddr::from(([10, 0, 2, 1], port)));
    }
    let addrs = p.b.ep.addresses(&many);
    assert_eq!(addrs.len(), msgnet_core::MAX_ADDRS_PER_PEER);
    assert_eq!(addrs.first(), Some(&std::net::SocketAddr::from(([10, 0, 2, 1], 1))));
    assert_eq!(addrs.last(), Some(&std::net::SocketAddr::from(([10, 0, 2, 1], 20))));
}
