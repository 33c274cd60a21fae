//! Property tests for the wire codec: no input panics a decoder, every encoding decodes
//! back to what was encoded, and every successful decode re-encodes to the same bytes
//! (the encoding is canonical).

use msgnet_core::wire::*;
use proptest::prelude::*;

// ---------------------------------------------------------------- owned frame specs

/// An owned description of a frame, so strategies can generate it.
#[derive(Debug, Clone)]
enum Spec {
    Padding(usize),
    Ping,
    Sack(Sack),
    Ack(u16),
    Reset(u16, u8, Option<u64>),
    Close(u64, String),
    Msg(Msg),
}

#[derive(Debug, Clone)]
struct Msg {
    init: Option<(u16, String)>,
    protocol_int: u16,
    ordered: bool,
    seq: Option<TruncatedSeq>,
    kind: MessageKind,
    payload: Vec<u8>,
    explicit_len: bool,
}

impl Spec {
    fn frame(&self) -> Frame<'_> {
        match self {
            Spec::Padding(n) => Frame::Padding(*n),
            Spec::Ping => Frame::Ping,
            Spec::Sack(s) => Frame::Sack(s.clone()),
            Spec::Ack(t) => Frame::Ack { transport_id: *t },
            Spec::Reset(p, c, q) => Frame::Reset {
                seq: *q,
                protocol_int: *p,
                code: ResetCode(*c),
            },
            Spec::Close(code, reason) => Frame::Close {
                code: *code,
                reason,
            },
            Spec::Msg(m) => Frame::Message(MessageFrame {
                init: m.init.as_ref().map(|(t, p)| Init {
                    transport_id: *t,
                    protocol: p,
                }),
                protocol_int: m.protocol_int,
                ordered: m.ordered,
                seq: m.seq,
                kind: m.kind,
                payload: &m.payload,
                explicit_len: m.explicit_len,
            }),
        }
    }
}

fn varint_value() -> impl Strategy<Value = u64> {
    prop_oneof![0..200u64, 0..20_000u64, 0..=MAX_VARINT]
}

fn sack() -> impl Strategy<Value = Sack> {
    let step = prop_oneof![0..5u64, 0..1_000u64, 0..=MAX_VARINT];
    (
        varint_value(),
        varint_value(),
        step.clone(),
        prop::collection::vec((step.clone(), step), 0..12),
    )
        .prop_map(|(largest, delay_us, first, rest)| {
            let mut lo = largest.saturating_sub(first);
            let mut ranges = vec![(lo, largest)];
            for (gap, len) in rest {
                let Some(hi) = lo.checked_sub(gap).and_then(|v| v.checked_sub(2)) else {
                    break;
                };
                let Some(new_lo) = hi.checked_sub(len) else {
                    break;
                };
                ranges.push((new_lo, hi));
                lo = new_lo;
            }
            Sack { delay_us, ranges }
        })
}

fn seq() -> impl Strategy<Value = Option<TruncatedSeq>> {
    prop_oneof![
        Just(None),
        any::<u8>().prop_map(|v| Some(TruncatedSeq {
            value: v.into(),
            len: 1
        })),
        any::<u16>().prop_map(|v| Some(TruncatedSeq {
            value: v.into(),
            len: 2
        })),
        any::<u32>().prop_map(|v| Some(TruncatedSeq { value: v, len: 4 })),
    ]
}

fn kind() -> impl Strategy<Value = MessageKind> {
    prop_oneof![
        Just(MessageKind::Message),
        varint_value().prop_map(MessageKind::Request),
        varint_value().prop_map(MessageKind::Response),
        varint_value().prop_map(MessageKind::ErrorResponse),
    ]
}

fn msg() -> impl Strategy<Value = Msg> {
    let protocol = prop_oneof!["/[a-z0-9/._-]{0,40}", "\\PC{1,30}"];
    (
        prop::option::of((any::<u16>(), protocol)),
        any::<u16>(),
        any::<bool>(),
        seq(),
        kind(),
        prop::collection::vec(any::<u8>(), 0..80),
        any::<bool>(),
    )
        .prop_map(
            |(init, protocol_int, ordered, seq, kind, payload, explicit_len)| Msg {
                init,
                protocol_int,
                // Ordered frames need a sequence number.
                ordered: ordered && seq.is_some(),
                seq,
                kind,
                payload,
                explicit_len,
            },
        )
}

fn spec() -> impl Strategy<Value = Spec> {
    prop_oneof![
        (1..40usize).prop_map(Spec::Padding),
        Just(Spec::Ping),
        sack().prop_map(Spec::Sack),
        any::<u16>().prop_map(Spec::Ack),
        (any::<u16>(), any::<u8>(), proptest::option::of(0u64..(1u64 << 62))).prop_map(|(p, c, q)| Spec::Reset(p, c, q)),
        (varint_value(), "\\PC{0,40}").prop_map(|(c, r)| Spec::Close(c, r)),
        msg().prop_map(Spec::Msg),
    ]
}

/// Several frames as a packet would carry them: every message frame but the last has an
/// explicit length.
fn specs() -> impl Strategy<Value = Vec<Spec>> {
    prop::collection::vec(spec(), 1..8).prop_map(|mut specs| {
        let last = specs.len() - 1;
        for (i, s) in specs.iter_mut().enumerate() {
            if let Spec::Msg(m) = s {
                m.explicit_len |= i != last;
            }
        }
        specs
    })
}

fn encode_all(frames: &[Frame<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        f.encode(&mut out);
    }
    out
}

/// What decoding yields: adjacent padding runs merge into one.
fn normalize<'a>(frames: Vec<Frame<'a>>) -> Vec<Frame<'a>> {
    let mut out: Vec<Frame<'a>> = Vec::new();
    for f in frames {
        if let (Some(Frame::Padding(a)), Frame::Padding(b)) = (out.last_mut(), &f) {
            *a += b;
            continue;
        }
        out.push(f);
    }
    out
}

/// Decodes `bytes` as frames without panicking; on success, re-encoding must reproduce
/// the input exactly.
fn check_frames_canonical(bytes: &[u8]) {
    let decoded: Result<Vec<_>, _> = Frames::new(bytes).collect();
    if let Ok(frames) = decoded {
        let lens: usize = frames.iter().map(Frame::encoded_len).sum();
        assert_eq!(lens, bytes.len());
        assert_eq!(encode_all(&frames), bytes);
    }
}

// ---------------------------------------------------------------- packet specs

#[derive(Debug, Clone)]
enum PacketSpec {
    Data(DataHeader, Vec<u8>),
    Initiation(Pattern, u32, Option<[u8; 16]>, Vec<u8>),
    Response(u32, u32, Vec<u8>),
    CookieReply(u32, [u8; 16]),
    Finish(u32, Vec<u8>),
}

fn packet_spec() -> impl Strategy<Value = PacketSpec> {
    let index = 1..=u32::MAX;
    let noise = prop::collection::vec(any::<u8>(), 1..100);
    let data = (
        any::<bool>(),
        1..=MAX_RECEIVER_INDEX,
        1..=4usize,
        any::<u32>(),
        prop::collection::vec(any::<u8>(), TAG_LEN + 1..100),
    )
        .prop_map(|(key_phase, receiver, pn_len, pn, sealed)| {
            let pn_truncated = if pn_len == 4 {
                pn
            } else {
                pn & ((1 << (8 * pn_len)) - 1)
            };
            PacketSpec::Data(
                DataHeader {
                    key_phase,
                    receiver,
                    pn_truncated,
                    pn_len,
                },
                sealed,
            )
        });
    prop_oneof![
        data,
        (
            prop_oneof![Just(Pattern::IK), Just(Pattern::XX)],
            index.clone(),
            any::<Option<[u8; 16]>>(),
            noise.clone()
        )
            .prop_map(|(p, s, c, n)| PacketSpec::Initiation(p, s, c, n)),
        (index.clone(), index.clone(), noise.clone())
            .prop_map(|(r, s, n)| PacketSpec::Response(r, s, n)),
        (index.clone(), any::<[u8; 16]>()).prop_map(|(r, c)| PacketSpec::CookieReply(r, c)),
        (index, noise).prop_map(|(r, n)| PacketSpec::Finish(r, n)),
    ]
}

impl PacketSpec {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            PacketSpec::Data(header, sealed) => {
                header.encode(&mut out);
                out.extend_from_slice(sealed);
            }
            PacketSpec::Initiation(p, s, c, n) => {
                encode_initiation_header(&mut out, *p, *s, c.as_ref());
                out.extend_from_slice(n);
            }
            PacketSpec::Response(r, s, n) => {
                encode_response_header(&mut out, *r, *s);
                out.extend_from_slice(n);
            }
            PacketSpec::CookieReply(r, c) => encode_cookie_reply(&mut out, *r, c),
            PacketSpec::Finish(r, n) => {
                encode_finish_header(&mut out, *r);
                out.extend_from_slice(n);
            }
        }
        out
    }

    fn expected(&self) -> Packet<'_> {
        match self {
            PacketSpec::Data(header, _) => Packet::Data {
                header: *header,
                header_len: header.encoded_len(),
            },
            PacketSpec::Initiation(p, s, c, n) => Packet::Initiation {
                version: VERSION,
                pattern: *p,
                sender: *s,
                cookie: *c,
                noise: n,
            },
            PacketSpec::Response(r, s, n) => Packet::Response {
                receiver: *r,
                sender: *s,
                noise: n,
            },
            PacketSpec::CookieReply(r, c) => Packet::CookieReply {
                receiver: *r,
                cookie: *c,
            },
            PacketSpec::Finish(r, n) => Packet::Finish {
                receiver: *r,
                noise: n,
            },
        }
    }
}

/// Re-encodes a parsed packet; `buf` supplies the sealed part of a data packet.
fn reencode(packet: &Packet<'_>, buf: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match packet {
        Packet::Data { header, header_len } => {
            header.encode(&mut out);
            out.extend_from_slice(&buf[*header_len..]);
        }
        Packet::Initiation {
            pattern,
            sender,
            cookie,
            noise,
            ..
        } => {
            encode_initiation_header(&mut out, *pattern, *sender, cookie.as_ref());
            out.extend_from_slice(noise);
        }
        Packet::Response {
            receiver,
            sender,
            noise,
        } => {
            encode_response_header(&mut out, *receiver, *sender);
            out.extend_from_slice(noise);
        }
        Packet::CookieReply { receiver, cookie } => {
            encode_cookie_reply(&mut out, *receiver, cookie)
        }
        Packet::Finish { receiver, noise } => {
            encode_finish_header(&mut out, *receiver);
            out.extend_from_slice(noise);
        }
    }
    out
}

/// Byte strings that often start like something valid.
fn noisy_bytes() -> impl Strategy<Value = Vec<u8>> {
    let interesting = prop_oneof![
        Just(0x00u8),
        Just(0x01),
        Just(0x02),
        Just(0x03),
        Just(0x04),
        Just(0x05),
        0x40..=0xbfu8,
        0x80..=0x84u8,
        Just(0x7f),
        Just(0xff),
        any::<u8>()
    ];
    prop::collection::vec(interesting, 0..200)
}

/// A valid encoding with a few bytes overwritten and maybe cut short.
fn mutated(valid: Vec<u8>, edits: Vec<(usize, u8)>, cut: usize) -> Vec<u8> {
    let mut bytes = valid;
    for (at, b) in edits {
        if !bytes.is_empty() {
            let i = at % bytes.len();
            bytes[i] = b;
        }
    }
    let keep = bytes.len().saturating_sub(cut % 4);
    bytes.truncate(keep);
    bytes
}

// ---------------------------------------------------------------- properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn decoders_never_panic(bytes in prop_oneof![prop::collection::vec(any::<u8>(), 0..300), noisy_bytes()]) {
        if let Ok(packet) = Packet::parse(&bytes) {
            prop_assert_eq!(reencode(&packet, &bytes), bytes.clone());
        }
        let _ = DataHeader::parse(&bytes);
        check_frames_canonical(&bytes);
        if let Ok(p) = HandshakePayload::parse(&bytes) {
            let mut out = Vec::new();
            p.encode(&mut out);
            prop_assert_eq!(&out, &bytes);
            check_frames_canonical(p.frames);
        }
        let mut r = Reader::new(&bytes);
        while r.varint().is_ok() {}
    }

    #[test]
    fn mutated_frames_never_panic(
        specs in specs(),
        edits in prop::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        cut in any::<usize>(),
    ) {
        let frames: Vec<_> = specs.iter().map(Spec::frame).collect();
        check_frames_canonical(&mutated(encode_all(&frames), edits, cut));
    }

    #[test]
    fn mutated_packets_never_panic(
        spec in packet_spec(),
        edits in prop::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        cut in any::<usize>(),
    ) {
        let bytes = mutated(spec.encode(), edits, cut);
        if let Ok(packet) = Packet::parse(&bytes) {
            prop_assert_eq!(reencode(&packet, &bytes), bytes.clone());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn frame_roundtrip(spec in spec()) {
        let frame = spec.frame();
        let mut out = Vec::new();
        frame.encode(&mut out);
        prop_assert_eq!(out.len(), frame.encoded_len());
        if let Frame::Message(m) = &frame {
            prop_assert_eq!(m.header_len() + m.payload.len(), out.len());
            prop_assert_eq!(m.validate(), Ok(()));
        }
        let decoded: Result<Vec<_>, _> = Frames::new(&out).collect();
        prop_assert_eq!(decoded, Ok(vec![frame]));
    }

    #[test]
    fn coalesced_roundtrip(specs in specs()) {
        let frames: Vec<_> = specs.iter().map(Spec::frame).collect();
        let out = encode_all(&frames);
        prop_assert_eq!(out.len(), frames.iter().map(Frame::encoded_len).sum::<usize>());
        let decoded: Result<Vec<_>, _> = Frames::new(&out).collect();
        prop_assert_eq!(decoded, Ok(normalize(frames)));
    }

    #[test]
    fn packet_roundtrip(spec in packet_spec()) {
        let bytes = spec.encode();
        prop_assert_eq!(Packet::parse(&bytes), Ok(spec.expected()));
    }

    #[test]
    fn handshake_payload_roundtrip(
        identity in prop_oneof![prop::collection::vec(any::<u8>(), 0..300), prop::collection::vec(any::<u8>(), MAX_IDENTITY_LEN..=MAX_IDENTITY_LEN)],
        timestamp in any::<u64>(),
        specs in prop::collection::vec(spec(), 0..4),
    ) {
        let frames: Vec<_> = specs.iter().map(Spec::frame).collect();
        let frame_bytes = encode_all(&frames);
        let p = HandshakePayload { identity: &identity, timestamp, frames: &frame_bytes };
        let mut out = Vec::new();
        p.encode(&mut out);
        prop_assert_eq!(out.len(), p.encoded_len());
        prop_assert_eq!(HandshakePayload::parse(&out), Ok(p));
    }

    #[test]
    fn varint_roundtrip(v in varint_value(), tail in prop::collection::vec(any::<u8>(), 0..3)) {
        let mut out = Vec::new();
        write_varint(&mut out, v);
        prop_assert_eq!(out.len(), varint_len(v));
        out.extend_from_slice(&tail);
        prop_assert_eq!(read_varint(&out), Ok((v, varint_len(v))));
    }

    /// RFC 9000 A.2/A.3: with the length from `encode_pn_len`, any receiver whose largest
    /// received number lies in `[largest_acked, full]` (or anything below `full`, or
    /// nothing, when nothing is acknowledged) recovers `full`.
    #[test]
    fn pn_roundtrip(
        full in prop_oneof![0..1_000u64, 0..(1u64 << 62)],
        unacked in prop_oneof![0..300u64, 0..(1u64 << 30)],
        none in any::<bool>(),
        r in any::<u64>(),
    ) {
        let (acked, largest_received) = if none || unacked > full {
            let full_small = full % (1 << 30);
            let lr = if r % 3 == 0 { None } else { Some(r % (full_small + 1)) };
            (None, (full_small, lr))
        } else {
            let acked = full - unacked;
            (Some(acked), (full, Some(acked + r % (unacked + 1))))
        };
        let (full, largest_received) = largest_received;
        let len = encode_pn_len(full, acked);
        prop_assert!((1..=4).contains(&len));
        let truncated = full & ((1u64 << (8 * len)) - 1);
        prop_assert_eq!(decode_pn(largest_received, truncated, len), full);
        let expected = largest_received.map_or(0, |l| l + 1);
        prop_assert_eq!(expand(expected, truncated, truncate_len(full, acked)), full);
    }
}
