//! Two [`StreamConn`]s wired back to back.

use std::collections::HashSet;

use bytes::Bytes;
use libp2p_identity::{Keypair, PeerId};
use proptest::prelude::*;

use super::*;
use crate::{Event, MessageId, SendError, SessionId};

struct Side {
    conn: StreamConn,
    handlers: HashSet<String>,
    events: Vec<Event>,
}

struct Pair {
    a: Side,
    b: Side,
}

fn peer() -> PeerId {
    Keypair::generate_ed25519().public().to_peer_id()
}

fn fixed_peer(n: u8) -> PeerId {
    Keypair::ed25519_from_bytes([n; 32]).expect("key").public().to_peer_id()
}

impl Pair {
    fn new(handlers_a: &[&str], handlers_b: &[&str]) -> Self {
        let (pa, pb) = (fixed_peer(1), fixed_peer(2));
        let side = |s: u64, p: PeerId, h: &[&str]| Side {
            conn: StreamConn::new(SessionId(s), p, StreamConfig::default()),
            handlers: h.iter().map(|s| s.to_string()).collect(),
            events: Vec::new(),
        };
        // a's conn talks to b (peer pb) and vice versa.
        Pair { a: side(1, pb, handlers_a), b: side(2, pa, handlers_b) }
    }

    /// Moves bytes both ways until quiet, cutting each direction's byte stream into
    /// chunks whose sizes cycle through `chunks`.
    fn pump_chunked(&mut self, chunks: &[usize]) {
        let mut k = 0;
        loop {
            let mut moved = false;
            for dir in 0..2 {
                let (from, to) = if dir == 0 { (&mut self.a, &mut self.b) } else { (&mut self.b, &mut self.a) };
                while let Some(out) = from.conn.poll_output() {
                    moved = true;
                    let mut rest = &out[..];
                    while !rest.is_empty() {
                        let n = chunks[k % chunks.len()].clamp(1, rest.len());
                        k += 1;
                        let h = &to.handlers;
                        to.conn.handle_input(&rest[..n], &|p: &str| h.contains(p)).expect("valid input");
                        rest = &rest[n..];
                    }
                }
                for side in [&mut self.a, &mut self.b] {
                    while let Some(e) = side.conn.poll_event() {
                        side.events.push(e);
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn pump(&mut self) {
        self.pump_chunked(&[usize::MAX]);
    }
}

fn messages(events: &[Event]) -> Vec<(String, Bytes, bool)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message(m) => Some((m.protocol.to_string(), m.payload.clone(), m.request.is_some())),
            _ => None,
        })
        .collect()
}

fn completions(events: &[Event]) -> Vec<(MessageId, Result<(), SendError>)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::SendComplete { id, result } => Some((*id, result.clone())),
            _ => None,
        })
        .collect()
}

fn responses(events: &[Event]) -> Vec<(MessageId, Result<Bytes, SendError>)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Response { id, result } => Some((*id, result.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn byte_exact_round_trip() {
    let mut p = Pair::new(&[], &["/p"]);
    p.a.conn.send(MessageId(1), "/p", Bytes::from_static(b"hi")).expect("send");
    p.a.conn.send(MessageId(2), "/p", Bytes::from_static(b"yo")).expect("send");
    let out = p.a.conn.poll_output().expect("output");
    // One record: INIT (0x70: unordered, I, L; transport 0, "/p", int 1, len 2, "hi"),
    // then CONTINUATION (0x50: unordered, L; int 1, len 2, "yo").
    assert_eq!(hex::encode(&out), "0f700000022f700102686950010279 6f".replace(' ', ""));
    let h = |p: &str| p == "/p";
    p.b.conn.handle_input(&out, &h).expect("input");
    let sack = p.b.conn.poll_output().expect("sack");
    // SACK largest 1, delay 0, no more ranges, first range 1: cumulative (0, 1).
    assert_eq!(hex::encode(&sack), "050201000001");
    p.a.conn.handle_input(&sack, &|_: &str| false).expect("sack input");
    assert!(p.a.conn.poll_output().is_none(), "SACK is not acknowledged");
    while let Some(e) = p.a.conn.poll_event() {
        p.a.events.push(e);
    }
    assert_eq!(completions(&p.a.events), vec![(MessageId(1), Ok(())), (MessageId(2), Ok(()))]);
    let got: Vec<_> = std::iter::from_fn(|| p.b.conn.poll_event()).collect();
    assert_eq!(
        messages(&got),
        vec![
            ("/p".into(), Bytes::from_static(b"hi"), false),
            ("/p".into(), Bytes::from_static(b"yo"), false)
        ]
    );
    assert_eq!(p.a.conn.in_flight(), 0);
}

#[test]
fn one_byte_reads() {
    let mut p = Pair::new(&["/q"], &["/p"]);
    for i in 0..50u64 {
        p.a.conn.send(MessageId(i), "/p", Bytes::from(vec![i as u8; i as usize * 37])).expect("send");
        p.b.conn.request(MessageId(100 + i), "/q", Bytes::from(vec![1; 3])).expect("req");
    }
    p.pump_chunked(&[1]);
    assert_eq!(messages(&p.b.events).len(), 50);
    assert_eq!(completions(&p.a.events).len(), 50);
    assert!(completions(&p.a.events).iter().all(|(_, r)| r.is_ok()));
    assert_eq!(messages(&p.a.events).len(), 50);
    for (i, (_, payload, _)) in messages(&p.b.events).into_iter().enumerate() {
        assert_eq!(payload, Bytes::from(vec![i as u8; i * 37]));
    }
}

#[test]
fn reset_fails_exactly_that_message() {
    let mut p = Pair::new(&[], &["/p"]);
    p.a.conn.send(MessageId(1), "/p", Bytes::from_static(b"1")).expect("send");
    p.a.conn.send(MessageId(2), "/x", Bytes::from_static(b"2")).expect("send");
    p.a.conn.send(MessageId(3), "/p", Bytes::from_static(b"3")).expect("send");
    p.a.conn.request(MessageId(4), "/x", Bytes::from_static(b"4")).expect("req");
    p.a.conn.send(MessageId(5), "/x", Bytes::from_static(b"5")).expect("send");
    p.a.conn.send(MessageId(6), "/p", Bytes::from_static(b"6")).expect("send");
    p.pump_chunked(&[3, 1, 5]);
    let unsupported = || Err(SendError::UnsupportedProtocol("/x".into()));
    let mut done = completions(&p.a.events);
    // RESETs are applied before the SACK of the same record.
    done.sort_by_key(|(id, _)| *id);
    assert_eq!(
        done,
        vec![
            (MessageId(1), Ok(())),
            (MessageId(2), unsupported()),
            (MessageId(3), Ok(())),
            (MessageId(5), unsupported()),
            (MessageId(6), Ok(())),
        ]
    );
    let r = responses(&p.a.events);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].0, MessageId(4));
    assert_eq!(r[0].1, Err(SendError::UnsupportedProtocol("/x".into())));
    let got: Vec<_> = messages(&p.b.events).into_iter().map(|m| m.1).collect();
    assert_eq!(got, vec![Bytes::from_static(b"1"), Bytes::from_static(b"3"), Bytes::from_static(b"6")]);
    assert_eq!(p.a.conn.in_flight(), 0);
}

#[test]
fn responses_route_to_requests() {
    let mut p = Pair::new(&[], &["/echo"]);
    p.a.conn.request(MessageId(1), "/echo", Bytes::from_static(b"a")).expect("req");
    p.a.conn.request(MessageId(2), "/echo", Bytes::from_static(b"b")).expect("req");
    p.a.conn.request(MessageId(3), "/echo", Bytes::from_static(b"c")).expect("req");
    p.pump();
    let reqs: Vec<_> = p
        .b
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Message(m) => Some((m.request.clone().expect("request"), m.payload.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(reqs.len(), 3);
    assert_eq!(p.a.conn.in_flight(), 3, "requests wait for responses, not acks");
    // Answer in reverse order; the last one with an error.
    for (req, payload) in reqs.iter().rev() {
        let result = if &payload[..] == b"c" {
            Err((7, "nope".to_string()))
        } else {
            Ok(Bytes::from(payload.to_ascii_uppercase()))
        };
        p.b.conn.respond(req, result).expect("respond");
    }
    assert_eq!(p.b.conn.respond(&reqs[0].0, Ok(Bytes::new())), Err(SendError::UnknownRequest));
    p.pump_chunked(&[2]);
    assert_eq!(
        responses(&p.a.events),
        vec![
            (MessageId(3), Err(SendError::Remote { code: 7, reason: "nope".into() })),
            (MessageId(2), Ok(Bytes::from_static(b"B"))),
            (MessageId(1), Ok(Bytes::from_static(b"A"))),
        ]
    );
    assert_eq!(p.a.conn.in_flight(), 0);
}

#[test]
fn abandoned_requests_release_and_late_responses_are_counted() {
    let mut p = Pair::new(&[], &["/echo"]);
    for i in 1..=3 {
        p.a.conn.request(MessageId(i), "/echo", Bytes::from(vec![i as u8])).expect("req");
    }
    p.pump();
    let reqs: Vec<_> = p
        .b
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Message(m) => m.request.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(reqs.len(), 3);
    assert_eq!(p.a.conn.in_flight(), 3);
    // The driver gives up on 1 and 3.
    assert_eq!(p.a.conn.abandon_requests(|id| id == MessageId(1) || id == MessageId(3)), 2);
    assert_eq!(p.a.conn.in_flight(), 1);
    assert_eq!(p.a.conn.abandon_requests(|id| id == MessageId(1)), 0, "already abandoned");
    for req in &reqs {
        p.b.conn.respond(req, Ok(Bytes::from_static(b"ok"))).expect("respond");
    }
    p.pump();
    // Only the live request completes; the other two responses are dropped and counted.
    assert_eq!(responses(&p.a.events), vec![(MessageId(2), Ok(Bytes::from_static(b"ok")))]);
    assert_eq!(p.a.conn.late_responses(), 2);
    assert_eq!(p.a.conn.in_flight(), 0);
    // The connection still works.
    p.a.conn.request(MessageId(4), "/echo", Bytes::from_static(b"x")).expect("req");
    p.pump();
    let req = p
        .b
        .events
        .iter()
        .rev()
        .find_map(|e| match e {
            Event::Message(m) => m.request.clone(),
            _ => None,
        })
        .expect("fourth request");
    p.b.conn.respond(&req, Ok(Bytes::from_static(b"y"))).expect("respond");
    p.pump();
    assert_eq!(responses(&p.a.events).last(), Some(&(MessageId(4), Ok(Bytes::from_static(b"y")))));
    assert_eq!(p.a.conn.late_responses(), 2);
}

/// Moves everything `from` has to write into `to`; whether there was anything.
fn deliver(from: &mut Side, to: &mut Side) -> bool {
    let mut any = false;
    while let Some(out) = from.conn.poll_output() {
        any = true;
        let h = &to.handlers;
        to.conn.handle_input(&out, &|p: &str| h.contains(p)).expect("valid input");
    }
    while let Some(e) = to.conn.poll_event() {
        to.events.push(e);
    }
    any
}

#[test]
fn requests_and_responses_carry_the_sacks() {
    let mut p = Pair::new(&[], &["/echo", "/sink"]);
    for round in 0..3u64 {
        p.a.conn.request(MessageId(round), "/echo", Bytes::from_static(b"q")).expect("req");
        assert!(deliver(&mut p.a, &mut p.b));
        assert!(p.b.conn.poll_output().is_none(), "no SACK of its own for a request");
        let req = p
            .b
            .events
            .drain(..)
            .find_map(|e| match e {
                Event::Message(m) => m.request,
                _ => None,
            })
            .expect("request");
        p.b.conn.respond(&req, Ok(Bytes::from_static(b"r"))).expect("respond");
        assert!(deliver(&mut p.b, &mut p.a), "the response, with the SACK");
        assert!(p.a.conn.poll_output().is_none(), "no SACK of its own for a response");
        assert_eq!(responses(&p.a.events).len() as u64, round + 1);
        assert_eq!(p.a.conn.in_flight(), 0);
    }
    // A one-way message is acknowledged at once.
    p.a.conn.send(MessageId(10), "/sink", Bytes::from_static(b"m")).expect("send");
    assert!(deliver(&mut p.a, &mut p.b));
    assert!(deliver(&mut p.b, &mut p.a), "SACK for the one-way message");
    assert_eq!(completions(&p.a.events), vec![(MessageId(10), Ok(()))]);
    // Unanswered requests are acknowledged once SACK_EVERY are unacknowledged.
    let before = p.b.events.len();
    for i in 0..SACK_EVERY - 1 {
        p.a.conn.request(MessageId(100 + i), "/echo", Bytes::from_static(b"q")).expect("req");
        assert!(deliver(&mut p.a, &mut p.b));
        assert!(p.b.conn.poll_output().is_none(), "below the threshold ({i})");
    }
    p.a.conn.request(MessageId(99), "/echo", Bytes::from_static(b"q")).expect("req");
    assert!(deliver(&mut p.a, &mut p.b));
    assert!(p.b.conn.poll_output().is_some(), "SACK at the threshold");
    assert_eq!(p.b.events.len() - before, SACK_EVERY as usize);
}

#[test]
fn garbage_is_an_error() {
    let cases: &[&[u8]] = &[
        &[0x01, 0x06],                   // unknown frame type
        &[0x02, 0x05, 0x00, 0x00, 0x06], // SACK below 0
        &[0xff, 0xff, 0xff, 0x7f],       // record too large
        &[0x80, 0x00],                   // non-minimal prefix
        &[0x05, 0x02, 0x00, 0x00, 0x00, 0x00], // SACK of index 0, nothing sent
    ];
    for bytes in cases {
        let mut c = StreamConn::new(SessionId(1), peer(), StreamConfig::default());
        c.send(MessageId(9), "/p", Bytes::from_static(b"x")).expect("send");
        let err = c.handle_input(bytes, &|_: &str| true);
        if bytes[0] == 0x05 {
            // One message sent: index 0 is valid, so this record is fine...
            assert!(err.is_ok());
            continue;
        }
        assert!(err.is_err(), "{bytes:02x?}");
        assert!(matches!(
            c.poll_event(),
            Some(Event::SendComplete { id: MessageId(9), result: Err(SendError::SessionClosed(_)) })
        ));
        assert_eq!(c.handle_input(&[0], &|_: &str| true), Err(StreamError::Closed));
        assert!(c.send(MessageId(10), "/p", Bytes::new()).is_err());
        // A CLOSE frame follows the queued message.
        let out = c.poll_output().expect("output");
        assert!(out.windows(1).any(|w| w[0] == 0x05));
    }
    let mut c = StreamConn::new(SessionId(1), peer(), StreamConfig::default());
    assert!(matches!(
        c.handle_input(&[0x05, 0x02, 0x00, 0x00, 0x00, 0x00], &|_: &str| true),
        Err(StreamError::Protocol(_))
    ));
    // A CONTINUATION for an unbound int is refused with RESET, not fatal.
    let mut c = StreamConn::new(SessionId(1), peer(), StreamConfig::default());
    c.handle_input(&[0x04, 0x50, 0x07, 0x01, 0x61], &|_: &str| true).expect("ok");
    let out = c.poll_output().expect("reset");
    // RESET int 7, UNKNOWN_PROTOCOL_INT, seq 0 (+1), then SACK (0, 0).
    assert_eq!(hex::encode(&out), "09040701010200000000");
}

#[test]
fn rebinding_an_int_is_fatal() {
    let mut p = Pair::new(&[], &["/p", "/q"]);
    p.a.conn.send(MessageId(1), "/p", Bytes::new()).expect("send");
    let out = p.a.conn.poll_output().expect("out");
    let h = |_: &str| true;
    p.b.conn.handle_input(&out, &h).expect("first");
    // Same int 1, different name.
    let mut rec = Vec::new();
    crate::wire::Frame::Message(crate::wire::MessageFrame {
        init: Some(crate::wire::Init { transport_id: 0, protocol: "/q" }),
        protocol_int: 1,
        ordered: false,
        seq: None,
        kind: crate::wire::MessageKind::Message,
        payload: b"",
        explicit_len: true,
    })
    .encode(&mut rec);
    let mut wire = Vec::new();
    encode_record(&mut wire, &rec);
    assert!(matches!(p.b.conn.handle_input(&wire, &h), Err(StreamError::Protocol(_))));
}

#[test]
fn fail_all_and_close() {
    let mut p = Pair::new(&[], &["/p"]);
    p.a.conn.send(MessageId(1), "/p", Bytes::new()).expect("send");
    p.a.conn.request(MessageId(2), "/p", Bytes::new()).expect("req");
    p.a.conn.fail_all(SendError::SessionClosed("gone".into()));
    let events: Vec<_> = std::iter::from_fn(|| p.a.conn.poll_event()).collect();
    assert_eq!(completions(&events), vec![(MessageId(1), Err(SendError::SessionClosed("gone".into())))]);
    assert_eq!(responses(&events), vec![(MessageId(2), Err(SendError::SessionClosed("gone".into())))]);
    assert!(p.a.conn.send(MessageId(3), "/p", Bytes::new()).is_err());

    // A peer's CLOSE fails what is pending and ends the conversation quietly.
    let mut p = Pair::new(&[], &["/p"]);
    p.b.conn.request(MessageId(7), "/p", Bytes::new()).expect("req");
    p.a.conn.close(0, "bye");
    p.pump();
    assert!(matches!(
        responses(&p.b.events).as_slice(),
        [(MessageId(7), Err(SendError::SessionClosed(_)))]
    ));
    assert!(p.b.conn.closed().is_some());
    assert_eq!(p.b.conn.handle_input(&[0x01, 0x01], &|_: &str| true), Ok(()));
}

#[test]
fn limits() {
    let config = StreamConfig { max_in_flight: 2, max_message_size: 10, ..StreamConfig::default() };
    let mut c = StreamConn::new(SessionId(1), peer(), config);
    assert_eq!(
        c.send(MessageId(0), "/p", Bytes::from(vec![0; 11])),
        Err(SendError::MessageTooLarge { size: 11, limit: 10 })
    );
    assert_eq!(c.send(MessageId(0), "", Bytes::new()), Err(SendError::InvalidProtocol));
    c.send(MessageId(1), "/p", Bytes::new()).expect("1");
    c.request(MessageId(2), "/p", Bytes::new()).expect("2");
    assert_eq!(c.send(MessageId(3), "/p", Bytes::new()), Err(SendError::Backpressure));

    // Inbound requests beyond the limit are refused with a busy error response.
    let mut p = Pair::new(&[], &["/p"]);
    p.b.conn = StreamConn::new(
        SessionId(2),
        peer(),
        StreamConfig { max_inbound_requests: 1, ..StreamConfig::default() },
    );
    p.a.conn.request(MessageId(1), "/p", Bytes::new()).expect("1");
    p.a.conn.request(MessageId(2), "/p", Bytes::new()).expect("2");
    p.pump();
    assert_eq!(messages(&p.b.events).len(), 1);
    assert_eq!(
        responses(&p.a.events),
        vec![(MessageId(2), Err(SendError::Remote { code: BUSY_CODE, reason: "busy".into() }))]
    );
}

#[test]
fn output_overflow_when_peer_does_not_read() {
    let config = StreamConfig { max_output: 64, ..StreamConfig::default() };
    let mut c = StreamConn::new(SessionId(1), peer(), config);
    let mut wire = Vec::new();
    for i in 0..100u16 {
        let mut rec = Vec::new();
        crate::wire::Frame::Message(crate::wire::MessageFrame {
            init: Some(crate::wire::Init { transport_id: 0, protocol: "/nobody" }),
            protocol_int: 1,
            ordered: false,
            seq: None,
            kind: crate::wire::MessageKind::Message,
            payload: &i.to_be_bytes(),
            explicit_len: true,
        })
        .encode(&mut rec);
        encode_record(&mut wire, &rec);
    }
    assert!(!c.wants_input() || c.output_len() == 0);
    assert_eq!(c.handle_input(&wire, &|_: &str| false), Err(StreamError::OutputOverflow));
}

/// One scripted conversation, returning both sides' events (in order) for comparison.
fn scripted(chunks: &[usize], ops: &[(bool, u8, usize)]) -> (Vec<String>, Vec<String>) {
    let mut p = Pair::new(&["/a"], &["/b", "/echo"]);
    for (i, &(from_a, op, len)) in ops.iter().enumerate() {
        let id = MessageId(i as u64);
        let payload = Bytes::from(vec![i as u8; len]);
        let side = if from_a { &mut p.a } else { &mut p.b };
        let proto = ["/a", "/b", "/echo", "/none"][usize::from(op % 4)];
        let _ = if op & 4 == 0 {
            side.conn.send(id, proto, payload)
        } else {
            side.conn.request(id, proto, payload)
        };
        if i % 3 == 0 {
            p.pump_chunked(chunks);
            // Answer every request seen so far.
            for side in [&mut p.a, &mut p.b] {
                let reqs: Vec<_> = side
                    .events
                    .iter()
                    .filter_map(|e| match e {
                        Event::Message(m) => m.request.clone().map(|r| (r, m.payload.clone())),
                        _ => None,
                    })
                    .collect();
                for (r, payload) in reqs {
                    let _ = side.conn.respond(&r, Ok(payload));
                }
            }
        }
    }
    p.pump_chunked(chunks);
    let show = |es: &[Event]| es.iter().map(|e| format!("{e:?}")).collect::<Vec<_>>();
    (show(&p.a.events), show(&p.b.events))
}

proptest! {
    #[test]
    fn chunking_does_not_matter(
        chunks in proptest::collection::vec(1usize..64, 1..8),
        ops in proptest::collection::vec((any::<bool>(), 0u8..8, 0usize..300), 1..40),
    ) {
        let reference = scripted(&[usize::MAX], &ops);
        let chunked = scripted(&chunks, &ops);
        prop_assert_eq!(reference, chunked);
    }

    #[test]
    fn random_input_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), cut in 1usize..16) {
        let mut c = StreamConn::new(SessionId(1), peer(), StreamConfig::default());
        let _ = c.send(MessageId(1), "/p", Bytes::from_static(b"x"));
        for chunk in bytes.chunks(cut) {
            if c.handle_input(chunk, &|p: &str| p.starts_with("/p")).is_err() {
                break;
            }
        }
        while c.poll_output().is_some() {}
        while c.poll_event().is_some() {}
    }
}
