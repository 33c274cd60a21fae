//! Transport racing (`docs/wire.md` §7): transport ids, and the two plaintexts a raced
//! message travels in — the *copy* (RACE + INIT message frame) and the *answer* (ACK and
//! the outcome).
//!
//! A host that knows a peer on several transports and has no path to it yet sends its
//! first message on each of them. Every copy is a request on the reserved protocol
//! [`RACE_PROTOCOL`] whose payload is a [`RaceCopy`]: a RACE frame with the race id the
//! copies share, then the message itself as an INIT message frame naming the transport
//! the copy went out on. The receiver delivers the first copy of a race id, drops the
//! others, and answers every copy with a [`RaceAnswer`]: an ACK frame naming the
//! transport it wants to be reached on, then the outcome. Riding inside an ordinary
//! request, the same bytes work over msgnet's UDP sessions and over libp2p streams, and
//! a peer without racing refuses the request (no handler) so that the sender falls back
//! to one plain send.

use super::error::WireError;
use super::frame::{Frame, Frames, ResetCode};
use super::message::{Init, MessageFrame, MessageKind, MAX_PROTOCOL_LEN};

/// The protocol id raced copies are sent on (a request; the answer is a [`RaceAnswer`]).
pub const RACE_PROTOCOL: &str = "/msgnet/race/1";

/// Transport ids, as carried by INIT (`transport_id`) and ACK frames.
pub mod transport_id {
    /// Not raced / not specified: what every INIT outside a race carries.
    pub const UNSPECIFIED: u16 = 0;
    /// msgnet's own secure sessions over UDP.
    pub const UDP: u16 = 1;
    /// libp2p over QUIC (`/quic-v1`).
    pub const QUIC: u16 = 2;
    /// libp2p over TCP with noise and yamux.
    pub const TCP: u16 = 3;
}

/// One copy of a raced message: `RACE{race_id}` then an unordered INIT message frame
/// (protocol int 0, no sequence number, request id 0 for a request, payload to the end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaceCopy<'a> {
    /// Shared by every copy of the message.
    pub race_id: u64,
    /// The transport this copy was sent on (a [`transport_id`] value).
    pub transport_id: u16,
    /// The protocol the message is for (1..=1024 bytes).
    pub protocol: &'a str,
    /// Whether the message is a request (the answer then carries the response).
    pub request: bool,
    /// The message bytes.
    pub payload: &'a [u8],
}

impl<'a> RaceCopy<'a> {
    fn message(&self) -> MessageFrame<'a> {
        MessageFrame {
            init: Some(Init { transport_id: self.transport_id, protocol: self.protocol }),
            protocol_int: 0,
            ordered: false,
            seq: None,
            kind: if self.request { MessageKind::Request(0) } else { MessageKind::Message },
            payload: self.payload,
            explicit_len: false,
        }
    }

    /// Appends the copy to `out`. Precondition: `protocol` is 1..=1024 bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        Frame::Race { race_id: self.race_id }.encode(out);
        self.message().encode(out);
    }

    /// Decodes a copy. Anything but exactly RACE followed by one unordered INIT message
    /// frame of kind message or request (no sequence number, protocol int 0, request id
    /// 0) is `InvalidValue("race copy")`; codec errors are passed on.
    pub fn decode(buf: &'a [u8]) -> Result<Self, WireError> {
        let invalid = WireError::InvalidValue("race copy");
        let mut frames = Frames::new(buf);
        let Some(Frame::Race { race_id }) = frames.next().transpose()? else {
            return Err(invalid);
        };
        let Some(Frame::Message(m)) = frames.next().transpose()? else {
            return Err(invalid);
        };
        if frames.next().is_some() {
            return Err(invalid);
        }
        let request = match m.kind {
            MessageKind::Message => false,
            MessageKind::Request(0) => true,
            _ => return Err(invalid),
        };
        let Some(init) = m.init else { return Err(invalid) };
        if m.ordered || m.seq.is_some() || m.protocol_int != 0 || m.explicit_len {
            return Err(invalid);
        }
        Ok(RaceCopy { race_id, transport_id: init.transport_id, protocol: init.protocol, request, payload: m.payload })
    }
}

/// What the receiver did with a copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaceOutcome<'a> {
    /// The copy was taken: a message delivered (now or from an earlier copy), or a
    /// duplicate request whose response travels on the copy that was delivered. Nothing
    /// follows the ACK.
    Taken,
    /// The response to the raced request: a message frame of kind Response (id 0).
    Response(&'a [u8]),
    /// The raced request failed at the receiver: kind ErrorResponse (id 0), payload
    /// `code u8 || UTF-8 reason`.
    Error {
        /// The handler's error code (1: it dropped the request).
        code: u8,
        /// Why.
        reason: &'a str,
    },
    /// No handler for the message's protocol: `RESET{protocol_int 0, NO_HANDLER, no
    /// seq}`.
    NoHandler,
}

/// The answer to one copy: `ACK{transport_id}`, then the outcome's frame, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaceAnswer<'a> {
    /// The transport the receiver wants this peer to use from now on.
    pub transport_id: u16,
    /// What happened to the copy.
    pub outcome: RaceOutcome<'a>,
}

fn response_frame(kind: MessageKind, payload: &[u8]) -> MessageFrame<'_> {
    MessageFrame { init: None, protocol_int: 0, ordered: false, seq: None, kind, payload, explicit_len: false }
}

impl<'a> RaceAnswer<'a> {
    /// Appends the answer to `out`. A reason longer than 1024 bytes is cut at a char
    /// boundary.
    pub fn encode(&self, out: &mut Vec<u8>) {
        Frame::Ack { transport_id: self.transport_id }.encode(out);
        match self.outcome {
            RaceOutcome::Taken => {}
            RaceOutcome::Response(p) => response_frame(MessageKind::Response(0), p).encode(out),
            RaceOutcome::Error { code, reason } => {
                let mut end = reason.len().min(MAX_PROTOCOL_LEN);
                while !reason.is_char_boundary(end) {
                    end -= 1;
                }
                let mut payload = Vec::with_capacity(1 + end);
                payload.push(code);
                payload.extend_from_slice(reason.get(..end).unwrap_or_default().as_bytes());
                response_frame(MessageKind::ErrorResponse(0), &payload).encode(out);
            }
            RaceOutcome::NoHandler => {
                Frame::Reset { protocol_int: 0, code: ResetCode::NO_HANDLER, seq: None }.encode(out)
            }
        }
    }

    /// Decodes an answer; anything but the shapes [`RaceAnswer::encode`] writes is
    /// `InvalidValue("race answer")` (an error reason that is not UTF-8 included).
    pub fn decode(buf: &'a [u8]) -> Result<Self, WireError> {
        let invalid = WireError::InvalidValue("race answer");
        let mut frames = Frames::new(buf);
        let Some(Frame::Ack { transport_id }) = frames.next().transpose()? else {
            return Err(invalid);
        };
        let outcome = match frames.next().transpose()? {
            None => RaceOutcome::Taken,
            Some(Frame::Reset { protocol_int: 0, code: ResetCode::NO_HANDLER, seq: None }) => RaceOutcome::NoHandler,
            Some(Frame::Message(m))
                if m.init.is_none()
                    && m.protocol_int == 0
                    && !m.ordered
                    && m.seq.is_none()
                    && !m.explicit_len =>
            {
                match m.kind {
                    MessageKind::Response(0) => RaceOutcome::Response(m.payload),
                    MessageKind::ErrorResponse(0) => {
                        let (&code, reason) = m.payload.split_first().ok_or(invalid)?;
                        let reason = std::str::from_utf8(reason).map_err(|_| invalid)?;
                        RaceOutcome::Error { code, reason }
                    }
                    _ => return Err(invalid),
                }
            }
            Some(_) => return Err(invalid),
        };
        if frames.next().is_some() {
            return Err(invalid);
        }
        Ok(RaceAnswer { transport_id, outcome })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::FrameType;

    fn h(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
    }

    fn enc_copy(c: &RaceCopy<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        c.encode(&mut out);
        out
    }

    fn enc_answer(a: &RaceAnswer<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        a.encode(&mut out);
        out
    }

    #[test]
    fn race_frame_vector() {
        let f = Frame::Race { race_id: 0x0102_0304_0506_0708 };
        let mut out = Vec::new();
        f.encode(&mut out);
        assert_eq!(out, h("08 0102030405060708"));
        assert_eq!(out.len(), f.encoded_len());
        assert_eq!(Frames::new(&out).collect::<Vec<_>>(), vec![Ok(f.clone())]);
        assert!(f.is_ack_eliciting());
        assert_eq!(Frames::new(&h("08 01020304050607")).next(), Some(Err(WireError::Truncated)));
        // 0x07 stays unassigned.
        assert_eq!(
            Frames::new(&h("07")).next(),
            Some(Err(WireError::UnknownFrameType(FrameType(0x07))))
        );
    }

    #[test]
    fn copy_vectors() {
        let send = RaceCopy { race_id: 0x2a, transport_id: transport_id::UDP, protocol: "/p", request: false, payload: b"hi" };
        let bytes = h("08 000000000000002a 60 0001 02 2f70 00 6869");
        assert_eq!(enc_copy(&send), bytes);
        assert_eq!(RaceCopy::decode(&bytes), Ok(send));

        let req = RaceCopy { race_id: u64::MAX, transport_id: transport_id::TCP, protocol: "/p", request: true, payload: b"" };
        let bytes = h("08 ffffffffffffffff 64 0003 02 2f70 00 00");
        assert_eq!(enc_copy(&req), bytes);
        assert_eq!(RaceCopy::decode(&bytes), Ok(req));
    }

    #[test]
    fn copy_errors() {
        let invalid = Err(WireError::InvalidValue("race copy"));
        // No RACE first.
        assert_eq!(RaceCopy::decode(&h("60 0001 02 2f70 00 6869")), invalid);
        // RACE alone.
        assert_eq!(RaceCopy::decode(&h("08 000000000000002a")), invalid);
        // CONTINUATION instead of INIT.
        assert_eq!(RaceCopy::decode(&h("08 000000000000002a 40 00 6869")), invalid);
        // A response kind.
        assert_eq!(RaceCopy::decode(&h("08 000000000000002a 68 0001 02 2f70 00 00")), invalid);
        // A sequence number.
        assert_eq!(RaceCopy::decode(&h("08 000000000000002a 61 0001 02 2f70 00 05")), invalid);
        // A frame after an explicit-length message.
        assert_eq!(RaceCopy::decode(&h("08 000000000000002a 70 0001 02 2f70 00 00 01")), invalid);
        // Codec errors pass through.
        assert_eq!(RaceCopy::decode(&h("08 00")), Err(WireError::Truncated));
        assert_eq!(RaceCopy::decode(&h("")), invalid);
    }

    #[test]
    fn answer_vectors() {
        let cases: Vec<(RaceAnswer<'_>, &str)> = vec![
            (RaceAnswer { transport_id: 1, outcome: RaceOutcome::Taken }, "03 0001"),
            (RaceAnswer { transport_id: 2, outcome: RaceOutcome::Response(b"ok") }, "03 0002 48 00 00 6f6b"),
            (RaceAnswer { transport_id: 3, outcome: RaceOutcome::Error { code: 1, reason: "x" } }, "03 0003 4c 00 00 01 78"),
            (RaceAnswer { transport_id: 1, outcome: RaceOutcome::NoHandler }, "03 0001 04 00 00 00"),
        ];
        for (answer, hex) in cases {
            let bytes = h(hex);
            assert_eq!(enc_answer(&answer), bytes, "{hex}");
            assert_eq!(RaceAnswer::decode(&bytes), Ok(answer), "{hex}");
        }
    }

    #[test]
    fn answer_errors() {
        let invalid = Err(WireError::InvalidValue("race answer"));
        assert_eq!(RaceAnswer::decode(&h("")), invalid);
        assert_eq!(RaceAnswer::decode(&h("01")), invalid);
        assert_eq!(RaceAnswer::decode(&h("03 0001 01")), invalid);
        assert_eq!(RaceAnswer::decode(&h("03 0001 4c 00 00")), invalid); // no code
        assert_eq!(RaceAnswer::decode(&h("03 0001 4c 00 00 01 c328")), invalid); // not UTF-8
        assert_eq!(RaceAnswer::decode(&h("03 0001 04 00 01 00")), invalid); // other RESET code
        assert_eq!(RaceAnswer::decode(&h("03 0001 04 00 00 00 01")), invalid); // trailing
        assert_eq!(RaceAnswer::decode(&h("03 00")), Err(WireError::Truncated));
        let long = "é".repeat(600);
        let bytes = enc_answer(&RaceAnswer { transport_id: 1, outcome: RaceOutcome::Error { code: 9, reason: &long } });
        let Ok(RaceAnswer { outcome: RaceOutcome::Error { code: 9, reason }, .. }) = RaceAnswer::decode(&bytes) else {
            panic!("long reason")
        };
        assert_eq!(reason.len(), 1024);
    }
}
