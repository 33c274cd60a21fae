//! Byte-exact test vectors for the wire codec. Every vector here also appears in
//! `docs/wire.md`.

use msgnet_core::wire::*;

/// Hex with spaces for readability.
fn h(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    hex::decode(s).expect("valid hex in test vector")
}

fn frames(buf: &[u8]) -> Result<Vec<Frame<'_>>, WireError> {
    Frames::new(buf).collect()
}

fn encode_frames(frames: &[Frame<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        let before = out.len();
        f.encode(&mut out);
        assert_eq!(out.len() - before, f.encoded_len(), "encoded_len of {f:?}");
    }
    out
}

/// Asserts `frame` encodes to exactly `hex` and `hex` decodes to exactly `[frame]`.
fn frame_vector(frame: Frame<'_>, hex: &str) {
    let bytes = h(hex);
    assert_eq!(
        encode_frames(std::slice::from_ref(&frame)),
        bytes,
        "encode {frame:?}"
    );
    assert_eq!(frames(&bytes), Ok(vec![frame]), "decode {hex}");
}

/// Every strict, non-empty prefix of `hex` fails to decode as frames with `Truncated`.
fn frame_prefixes_truncated(hex: &str) {
    let bytes = h(hex);
    for n in 1..bytes.len() {
        assert_eq!(
            frames(&bytes[..n]),
            Err(WireError::Truncated),
            "prefix {n} of {hex}"
        );
    }
}

/// Every prefix of `hex` that ends before its last `tail` bytes fails to parse as a
/// packet with `Truncated` (the Noise message may be cut, but not emptied).
fn packet_prefixes_truncated(hex: &str, tail: usize) {
    let bytes = h(hex);
    for n in 0..=bytes.len() - tail {
        assert_eq!(
            Packet::parse(&bytes[..n]),
            Err(WireError::Truncated),
            "prefix {n} of {hex}"
        );
    }
}

// ---------------------------------------------------------------- packets

const SEALED_17: &str = "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee";

#[test]
fn data_packet_vectors() {
    let cases = [
        (
            DataHeader {
                key_phase: true,
                receiver: 0x012_3456,
                pn_truncated: 0xabcd,
                pn_len: 2,
            },
            "50123456 abcd",
        ),
        (
            DataHeader {
                key_phase: false,
                receiver: 1,
                pn_truncated: 0x07,
                pn_len: 1,
            },
            "00000001 07",
        ),
        (
            DataHeader {
                key_phase: true,
                receiver: 0x20,
                pn_truncated: 0x0a0b0c,
                pn_len: 3,
            },
            "60000020 0a0b0c",
        ),
        (
            DataHeader {
                key_phase: false,
                receiver: MAX_RECEIVER_INDEX,
                pn_truncated: 0xdead_beef,
                pn_len: 4,
            },
            "3fffffff deadbeef",
        ),
    ];
    for (header, hex) in cases {
        let mut out = Vec::new();
        header.encode(&mut out);
        assert_eq!(out, h(hex));
        assert_eq!(header.encoded_len(), out.len());
        out.extend_from_slice(&h(SEALED_17));
        assert_eq!(DataHeader::parse(&out), Ok((header, 4 + header.pn_len)));
        assert_eq!(
            Packet::parse(&out),
            Ok(Packet::Data {
                header,
                header_len: 4 + header.pn_len
            })
        );
    }
}

#[test]
fn data_packet_errors() {
    // Cut in the u32, in the packet number, and a sealed part of only 16 bytes.
    for hex in [
        "",
        "50",
        "501234",
        "50123456",
        "50123456 ab",
        "3fffffff deadbe",
    ] {
        assert_eq!(
            DataHeader::parse(&h(hex)),
            Err(WireError::Truncated),
            "{hex}"
        );
        assert_eq!(Packet::parse(&h(hex)), Err(WireError::Truncated), "{hex}");
    }
    let short = h(&format!("50123456 abcd {}", &SEALED_17[2..]));
    assert_eq!(Packet::parse(&short), Err(WireError::Truncated));
    // Zero receiver index (with pn_len 1 and pn_len 4).
    for hex in ["00000000 07", "70000000 00000007"] {
        let bytes = h(&format!("{hex} {SEALED_17}"));
        assert_eq!(
            Packet::parse(&bytes),
            Err(WireError::InvalidValue("receiver index"))
        );
    }
    // DataHeader::parse refuses handshake packets.
    let hs = h(&format!("81 01020304 05060708 {SEALED_17}"));
    assert_eq!(
        DataHeader::parse(&hs),
        Err(WireError::InvalidValue("not a data packet"))
    );
}

const INITIATION_IK: &str = "80 01 01 01020304 00 aabbcc";
const INITIATION_XX_COOKIE: &str = "80 01 02 01020304 10 000102030405060708090a0b0c0d0e0f aabbcc";
const RESPONSE: &str = "81 01020304 05060708 aa";
const COOKIE_REPLY: &str = "82 0a0b0c0d 000102030405060708090a0b0c0d0e0f";
const FINISH: &str = "83 01020304 dd";

fn cookie() -> [u8; 16] {
    core::array::from_fn(|i| i as u8)
}

#[test]
fn handshake_packet_vectors() {
    let noise = h("aabbcc");

    let mut out = Vec::new();
    encode_initiation_header(&mut out, Pattern::IK, 0x0102_0304, None);
    assert_eq!(out.len(), initiation_header_len(false));
    out.extend_from_slice(&noise);
    assert_eq!(out, h(INITIATION_IK));
    assert_eq!(
        Packet::parse(&out),
        Ok(Packet::Initiation {
            version: 1,
            pattern: Pattern::IK,
            sender: 0x0102_0304,
            cookie: None,
            noise: &noise
        })
    );

    let mut out = Vec::new();
    encode_initiation_header(&mut out, Pattern::XX, 0x0102_0304, Some(&cookie()));
    assert_eq!(out.len(), initiation_header_len(true));
    out.extend_from_slice(&noise);
    assert_eq!(out, h(INITIATION_XX_COOKIE));
    assert_eq!(
        Packet::parse(&out),
        Ok(Packet::Initiation {
            version: 1,
            pattern: Pattern::XX,
            sender: 0x0102_0304,
            cookie: Some(cookie()),
            noise: &noise
        })
    );

    let mut out = Vec::new();
    encode_response_header(&mut out, 0x0102_0304, 0x0506_0708);
    out.push(0xaa);
    assert_eq!(out, h(RESPONSE));
    assert_eq!(
        Packet::parse(&out),
        Ok(Packet::Response {
            receiver: 0x0102_0304,
            sender: 0x0506_0708,
            noise: &[0xaa]
        })
    );

    let mut out = Vec::new();
    encode_cookie_reply(&mut out, 0x0a0b_0c0d, &cookie());
    assert_eq!(out, h(COOKIE_REPLY));
    assert_eq!(
        Packet::parse(&out),
        Ok(Packet::CookieReply {
            receiver: 0x0a0b_0c0d,
            cookie: cookie()
        })
    );

    let mut out = Vec::new();
    encode_finish_header(&mut out, 0x0102_0304);
    out.push(0xdd);
    assert_eq!(out, h(FINISH));
    assert_eq!(
        Packet::parse(&out),
        Ok(Packet::Finish {
            receiver: 0x0102_0304,
            noise: &[0xdd]
        })
    );
    assert_eq!(
        Packet::parse(&out).map(|p| p.packet_type()),
        Ok(Some(PacketType::FINISH))
    );
}

#[test]
fn handshake_packet_truncated_at_each_field() {
    packet_prefixes_truncated(INITIATION_IK, 3);
    packet_prefixes_truncated(INITIATION_XX_COOKIE, 3);
    packet_prefixes_truncated(RESPONSE, 1);
    packet_prefixes_truncated(COOKIE_REPLY, 1);
    packet_prefixes_truncated(FINISH, 1);
}

#[test]
fn handshake_packet_errors() {
    let cases = [
        ("80 02 01 01020304 00 aa", WireError::UnsupportedVersion(2)),
        ("80 00", WireError::UnsupportedVersion(0)),
        (
            "80 01 03 01020304 00 aa",
            WireError::InvalidValue("pattern"),
        ),
        (
            "80 01 00 01020304 00 aa",
            WireError::InvalidValue("pattern"),
        ),
        (
            "80 01 01 00000000 00 aa",
            WireError::InvalidValue("sender index"),
        ),
        (
            "80 01 01 01020304 05 0102030405 aa",
            WireError::InvalidValue("cookie length"),
        ),
        (
            "81 00000000 05060708 aa",
            WireError::InvalidValue("receiver index"),
        ),
        (
            "81 01020304 00000000 aa",
            WireError::InvalidValue("sender index"),
        ),
        (
            "82 00000000 000102030405060708090a0b0c0d0e0f",
            WireError::InvalidValue("receiver index"),
        ),
        (
            "82 0a0b0c0d 000102030405060708090a0b0c0d0e0f 00",
            WireError::TrailingBytes,
        ),
        ("83 00000000 dd", WireError::InvalidValue("receiver index")),
        ("84 01020304 dd", WireError::UnknownPacketType(0x84)),
        ("ff", WireError::UnknownPacketType(0xff)),
    ];
    for (hex, err) in cases {
        assert_eq!(Packet::parse(&h(hex)), Err(err), "{hex}");
    }
}

// ---------------------------------------------------------------- handshake payload

#[test]
fn handshake_payload_vectors() {
    let bytes = h("02 0a0b 0102030405060708 01");
    let p = HandshakePayload {
        identity: &[0x0a, 0x0b],
        timestamp: 0x0102_0304_0506_0708,
        frames: &[0x01],
    };
    let mut out = Vec::new();
    p.encode(&mut out);
    assert_eq!(out, bytes);
    assert_eq!(p.encoded_len(), bytes.len());
    assert_eq!(HandshakePayload::parse(&bytes), Ok(p));
    assert_eq!(frames(p.frames), Ok(vec![Frame::Ping]));

    let empty = HandshakePayload {
        identity: &[],
        timestamp: 0,
        frames: &[],
    };
    let mut out = Vec::new();
    empty.encode(&mut out);
    assert_eq!(out, h("00 0000000000000000"));
    assert_eq!(HandshakePayload::parse(&out), Ok(empty));

    for n in 0..bytes.len() - 1 {
        assert_eq!(
            HandshakePayload::parse(&bytes[..n]),
            Err(WireError::Truncated),
            "prefix {n}"
        );
    }
    assert_eq!(
        HandshakePayload::parse(&h("8120")),
        Err(WireError::InvalidValue("identity length"))
    );
    assert_eq!(
        HandshakePayload::parse(&h("8000")),
        Err(WireError::NonMinimalVarint)
    );
}

// ---------------------------------------------------------------- frames

#[test]
fn simple_frame_vectors() {
    frame_vector(Frame::Padding(3), "000000");
    frame_vector(Frame::Padding(1), "00");
    frame_vector(Frame::Ping, "01");
    frame_vector(
        Frame::Ack {
            transport_id: 0x1234,
        },
        "03 1234",
    );
    frame_vector(
        Frame::Reset {
            protocol_int: 300,
            code: ResetCode::UNKNOWN_PROTOCOL_INT,
            seq: None,
        },
        "04 ac02 01 00",
    );
    frame_vector(
        Frame::Reset {
            protocol_int: 65535,
            code: ResetCode::NO_HANDLER,
            seq: Some(299),
        },
        "04 ffff03 00 ac02",
    );
    frame_vector(
        Frame::Reset {
            protocol_int: 1,
            code: ResetCode(0x42),
            seq: Some(0),
        },
        "04 01 42 01",
    );
    frame_vector(
        Frame::Close {
            code: 0,
            reason: "bye",
        },
        "05 00 03 627965",
    );
    frame_vector(
        Frame::Close {
            code: 1000,
            reason: "",
        },
        "05 e807 00",
    );
}

#[test]
fn sack_vectors() {
    // Three ranges: 95..=100, 80..=90, 10..=70; largest 100, delay 25 µs.
    // first_range = 100-95 = 5; gap = 95-90-2 = 3, len = 10; gap = 80-70-2 = 8, len = 60.
    frame_vector(
        Frame::Sack(Sack {
            delay_us: 25,
            ranges: vec![(95, 100), (80, 90), (10, 70)],
        }),
        "02 64 19 02 05 03 0a 08 3c",
    );
    frame_vector(
        Frame::Sack(Sack {
            delay_us: 300,
            ranges: vec![(1000, 1000)],
        }),
        "02 e807 ac02 00 00",
    );
    // A gap of 3 below 5 reaches exactly packet 0.
    frame_vector(
        Frame::Sack(Sack {
            delay_us: 0,
            ranges: vec![(5, 5), (0, 0)],
        }),
        "02 05 00 01 00 03 00",
    );
    frame_prefixes_truncated("02 64 19 02 05 03 0a 08 3c");
}

#[test]
fn sack_errors() {
    let below = WireError::InvalidValue("sack range below 0");
    assert_eq!(frames(&h("02 05 00 00 06")), Err(below)); // first range below 0
    assert_eq!(frames(&h("02 05 00 01 00 04 00")), Err(below)); // gap below 0
    assert_eq!(frames(&h("02 05 00 01 00 03 01")), Err(below)); // range length below 0
    assert_eq!(
        frames(&h("02 05 00 8002 00")),
        Err(WireError::InvalidValue("sack range count"))
    );
    assert_eq!(
        frames(&h("02 05 8000 00 00")),
        Err(WireError::NonMinimalVarint)
    );
}

// Message frames: the flag combinations that matter.
/// Unordered, unreliable CONTINUATION of a message, payload to the end (type 0x40).
const MSG_PLAIN: &str = "40 05 68656c6c6f";
/// Unordered INIT with length, 1-byte seq (type 0x71).
const MSG_INIT: &str = "71 0001 06 2f6b61642f31 ac02 2a 02 6869";
/// Ordered CONTINUATION of a request, length, 2-byte seq (type 0x96).
const MSG_REQUEST: &str = "96 01 1234 07 03 616263";
/// Ordered INIT of a response, 4-byte seq, empty payload to the end (type 0xab).
const MSG_RESPONSE: &str = "ab ffff 01 70 ffff03 deadbeef ac02";
/// Unordered unreliable error response with an empty length-delimited payload (type 0x5c).
const MSG_ERROR: &str = "5c 02 01 00";

fn msg_plain() -> Frame<'static> {
    Frame::Message(MessageFrame {
        init: None,
        protocol_int: 5,
        ordered: false,
        seq: None,
        kind: MessageKind::Message,
        payload: b"hello",
        explicit_len: false,
    })
}

fn msg_init() -> Frame<'static> {
    Frame::Message(MessageFrame {
        init: Some(Init {
            transport_id: 1,
            protocol: "/kad/1",
        }),
        protocol_int: 300,
        ordered: false,
        seq: Some(TruncatedSeq {
            value: 0x2a,
            len: 1,
        }),
        kind: MessageKind::Message,
        payload: b"hi",
        explicit_len: true,
    })
}

#[test]
fn message_frame_vectors() {
    frame_vector(msg_plain(), MSG_PLAIN);
    frame_vector(msg_init(), MSG_INIT);
    frame_vector(
        Frame::Message(MessageFrame {
            init: None,
            protocol_int: 1,
            ordered: true,
            seq: Some(TruncatedSeq {
                value: 0x1234,
                len: 2,
            }),
            kind: MessageKind::Request(7),
            payload: b"abc",
            explicit_len: true,
        }),
        MSG_REQUEST,
    );
    frame_vector(
        Frame::Message(MessageFrame {
            init: Some(Init {
                transport_id: 0xffff,
                protocol: "p",
            }),
            protocol_int: 65535,
            ordered: true,
            seq: Some(TruncatedSeq {
                value: 0xdead_beef,
                len: 4,
            }),
            kind: MessageKind::Response(300),
            payload: b"",
            explicit_len: false,
        }),
        MSG_RESPONSE,
    );
    frame_vector(
        Frame::Message(MessageFrame {
            init: None,
            protocol_int: 2,
            ordered: false,
            seq: None,
            kind: MessageKind::ErrorResponse(1),
            payload: b"",
            explicit_len: true,
        }),
        MSG_ERROR,
    );
    let Frame::Message(m) = msg_init() else {
        unreachable!()
    };
    assert_eq!(m.header_len(), h(MSG_INIT).len() - 2);
    assert_eq!(Frame::Message(m).frame_type(), FrameType(0x71));
}

#[test]
fn message_frame_truncated_at_each_field() {
    for hex in [MSG_INIT, MSG_REQUEST, MSG_RESPONSE, MSG_ERROR] {
        frame_prefixes_truncated(hex);
    }
}

#[test]
fn message_frame_errors() {
    let cases = [
        (
            "80 05 00",
            WireError::InvalidValue("ordered frame without sequence number"),
        ),
        (
            "b0 0001 01 70 05 00",
            WireError::InvalidValue("ordered frame without sequence number"),
        ),
        (
            "70 0001 02 c328 05 00",
            WireError::InvalidValue("protocol utf-8"),
        ),
        (
            "70 0001 00 05 00",
            WireError::InvalidValue("protocol length"),
        ),
        ("70 0001 8108", WireError::InvalidValue("protocol length")),
        ("50 808004 00", WireError::InvalidValue("protocol int")),
        ("50 8500 00", WireError::NonMinimalVarint),
        ("54 05 ffffffffffffffffff 00", WireError::VarintOverflow),
    ];
    for (hex, err) in cases {
        assert_eq!(frames(&h(hex)), Err(err), "{hex}");
    }
}

#[test]
fn frame_errors() {
    let cases = [
        ("07", WireError::UnknownFrameType(FrameType(0x07))),
        ("3f", WireError::UnknownFrameType(FrameType(0x3f))),
        ("c0", WireError::UnknownFrameType(FrameType(0xc0))),
        ("01 ff", WireError::UnknownFrameType(FrameType(0xff))),
        ("04 808004 00", WireError::InvalidValue("protocol int")),
        ("04 8000 00", WireError::NonMinimalVarint),
        (
            "05 00 02 c328",
            WireError::InvalidValue("close reason utf-8"),
        ),
        ("05 00 8108", WireError::InvalidValue("close reason length")),
        ("05 00 03 6279", WireError::Truncated),
        ("03 12", WireError::Truncated),
        ("04 ac02", WireError::Truncated),
    ];
    for (hex, err) in cases {
        assert_eq!(frames(&h(hex)), Err(err), "{hex}");
    }
    // After the first error the iterator is finished.
    let bytes = h("01 07 01");
    let mut it = Frames::new(&bytes);
    assert_eq!(it.next(), Some(Ok(Frame::Ping)));
    assert_eq!(
        it.next(),
        Some(Err(WireError::UnknownFrameType(FrameType(7))))
    );
    assert_eq!(it.next(), None);
    assert_eq!(
        WireError::UnknownFrameType(FrameType(7)).to_string(),
        "unknown frame type 0x07"
    );
}

/// PADDING(2), PING, ACK, SACK, an INIT with length, and a CONTINUATION to the end.
const COALESCED: &str =
    "0000 01 03 0007 02 03 00 00 03 71 0001 06 2f6b61642f31 ac02 2a 02 6869 40 05 68656c6c6f";

#[test]
fn coalesced_frames() {
    let expected = vec![
        Frame::Padding(2),
        Frame::Ping,
        Frame::Ack { transport_id: 7 },
        Frame::Sack(Sack {
            delay_us: 0,
            ranges: vec![(0, 3)],
        }),
        msg_init(),
        msg_plain(),
    ];
    let bytes = h(COALESCED);
    assert_eq!(encode_frames(&expected), bytes);
    assert_eq!(frames(&bytes), Ok(expected));
    assert_eq!(frames(&[]), Ok(vec![]));
}

#[test]
fn packet_number_vectors() {
    assert_eq!(encode_pn_len(0xac5c02, Some(0xabe8b3)), 2);
    assert_eq!(encode_pn_len(0xace8fe, Some(0xabe8b3)), 3);
    assert_eq!(decode_pn(Some(0xa82f30ea), 0x9b32, 2), 0xa82f9b32);
    assert_eq!(encode_pn_len(0, None), 1);
    assert_eq!(decode_pn(None, 0, 1), 0);
    assert_eq!(expand(0x100, 0xff, 1), 0xff);
    assert_eq!(expand(0x1f0, 0x05, 1), 0x205);
}
