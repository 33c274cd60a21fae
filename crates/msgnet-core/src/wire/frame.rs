//! Frames: the plaintext of a data packet (and of a handshake payload's `frames`) is a
//! sequence of frames, each starting with a [`FrameType`] byte.
//!
//! Decoding is a [`Frames`] iterator over a borrowed buffer; encoding appends
//! [`Frame::encode`] output to a `Vec<u8>`. Message frames (INIT / CONTINUATION) live in
//! [`super::message`].

use std::fmt;

use super::error::WireError;
use super::message::MessageFrame;
use super::reader::Reader;
use super::varint::{varint_len, write_varint};

/// Most ranges a SACK frame may carry (including the first).
pub const MAX_SACK_RANGES: usize = 256;

/// Longest CLOSE reason, in bytes.
pub const MAX_REASON_LEN: usize = 1024;

/// A frame's type byte. An open newtype: unknown values are representable and print as
/// hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameType(pub u8);

impl FrameType {
    /// One zero byte; a run of them is one [`Frame::Padding`].
    pub const PADDING: FrameType = FrameType(0x00);
    /// Elicits an acknowledgement; no body.
    pub const PING: FrameType = FrameType(0x01);
    /// Selective acknowledgement of packet numbers.
    pub const SACK: FrameType = FrameType(0x02);
    /// Transport consolidation: "use this transport for me".
    pub const ACK: FrameType = FrameType(0x03);
    /// No handler for a protocol int.
    pub const RESET: FrameType = FrameType(0x04);
    /// Closes the session.
    pub const CLOSE: FrameType = FrameType(0x05);
    /// One fragment of a message larger than a packet.
    pub const FRAGMENT: FrameType = FrameType(0x06);
    /// Transport racing: the message frame that follows is one copy of race `race_id`.
    pub const RACE: FrameType = FrameType(0x08);
    /// First message frame type (unordered, no flags).
    pub const MESSAGE_FIRST: FrameType = FrameType(0x40);
    /// Last message frame type (ordered, every flag set).
    pub const MESSAGE_LAST: FrameType = FrameType(0xbf);

    /// Whether this is an INIT or CONTINUATION type (`0x40..=0xbf`).
    pub fn is_message(self) -> bool {
        (Self::MESSAGE_FIRST.0..=Self::MESSAGE_LAST.0).contains(&self.0)
    }
}

impl fmt::Display for FrameType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::PADDING => f.write_str("PADDING"),
            Self::PING => f.write_str("PING"),
            Self::SACK => f.write_str("SACK"),
            Self::ACK => f.write_str("ACK"),
            Self::RESET => f.write_str("RESET"),
            Self::CLOSE => f.write_str("CLOSE"),
            Self::FRAGMENT => f.write_str("FRAGMENT"),
            Self::RACE => f.write_str("RACE"),
            t if t.is_message() => write!(f, "MESSAGE(0x{:02x})", t.0),
            FrameType(other) => write!(f, "0x{other:02x}"),
        }
    }
}

/// Why a RESET was sent. An open newtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResetCode(pub u8);

impl ResetCode {
    /// The protocol is known but no handler is registered.
    pub const NO_HANDLER: ResetCode = ResetCode(0);
    /// The protocol int was never bound by an INIT.
    pub const UNKNOWN_PROTOCOL_INT: ResetCode = ResetCode(1);
}

impl fmt::Display for ResetCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NO_HANDLER => f.write_str("NO_HANDLER"),
            Self::UNKNOWN_PROTOCOL_INT => f.write_str("UNKNOWN_PROTOCOL_INT"),
            ResetCode(other) => write!(f, "0x{other:02x}"),
        }
    }
}

/// A selective acknowledgement of packet numbers (QUIC ACK layout, RFC 9000 §19.3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sack {
    /// Time between receiving the largest packet and sending this frame, microseconds.
    pub delay_us: u64,
    /// Inclusive `(smallest, largest)` pairs in descending order, disjoint and
    /// non-adjacent; `ranges[0].1` is the largest acknowledged packet number.
    pub ranges: Vec<(u64, u64)>,
}

impl Sack {
    /// The largest acknowledged packet number.
    pub fn largest(&self) -> Option<u64> {
        self.ranges.first().map(|&(_, largest)| largest)
    }

    /// Whether `pn` falls in one of the ranges.
    pub fn contains(&self, pn: u64) -> bool {
        self.ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&pn))
    }

    /// The varints after the type byte, in wire order (at most [`MAX_SACK_RANGES`]
    /// ranges; an empty Sack has none).
    fn fields(&self) -> impl Iterator<Item = u64> + '_ {
        let ranges = self.ranges.get(..MAX_SACK_RANGES).unwrap_or(&self.ranges);
        let head = ranges.first().map(|&(lo, hi)| {
            [
                hi,
                self.delay_us,
                ranges.len() as u64 - 1,
                hi.saturating_sub(lo),
            ]
        });
        let tail = ranges.windows(2).flat_map(|w| match w {
            [(prev_lo, _), (lo, hi)] => [
                prev_lo.saturating_sub(*hi).saturating_sub(2),
                hi.saturating_sub(*lo),
            ],
            _ => [0, 0],
        });
        head.into_iter().flatten().chain(tail)
    }

    fn encoded_len(&self) -> usize {
        if self.ranges.is_empty() {
            return 0;
        }
        1 + self.fields().map(varint_len).sum::<usize>()
    }

    fn encode(&self, out: &mut Vec<u8>) {
        debug_assert!(!self.ranges.is_empty(), "empty Sack");
        if self.ranges.is_empty() {
            return;
        }
        out.push(FrameType::SACK.0);
        for v in self.fields() {
            write_varint(out, v);
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Sack, WireError> {
        let underflow = WireError::InvalidValue("sack range below 0");
        let largest = r.varint()?;
        let delay_us = r.varint()?;
        let count = r.varint_max(MAX_SACK_RANGES as u64 - 1, "sack range count")? as usize;
        let first = r.varint()?;
        let mut smallest = largest.checked_sub(first).ok_or(underflow)?;
        let mut ranges = Vec::with_capacity(count + 1);
        ranges.push((smallest, largest));
        for _ in 0..count {
            let gap = r.varint()?;
            let len = r.varint()?;
            let hi = smallest
                .checked_sub(gap)
                .and_then(|v| v.checked_sub(2))
                .ok_or(underflow)?;
            smallest = hi.checked_sub(len).ok_or(underflow)?;
            ranges.push((smallest, hi));
        }
        Ok(Sack { delay_us, ranges })
    }
}

/// One decoded frame, borrowing strings and payloads from the packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A run of this many `0x00` bytes.
    Padding(usize),
    /// Ack-eliciting, no body.
    Ping,
    /// Selective acknowledgement.
    Sack(Sack),
    /// Transport consolidation: "use this transport for me".
    Ack {
        /// The transport to use.
        transport_id: u16,
    },
    /// No handler for a protocol int.
    Reset {
        /// The protocol int the RESET refers to.
        protocol_int: u16,
        /// Why.
        code: ResetCode,
        /// The full sequence number of the refused reliable message, so the sender fails
        /// exactly that message (`None` for an unreliable one). Encoded as varint
        /// `seq + 1`, with `0` for none.
        seq: Option<u64>,
    },
    /// Closes the session.
    Close {
        /// Application-defined close code (≤ 2^63 − 1).
        code: u64,
        /// Human-readable reason, ≤ [`MAX_REASON_LEN`] bytes.
        reason: &'a str,
    },
    /// INIT or CONTINUATION.
    Message(MessageFrame<'a>),
    /// A fragment of a message larger than a packet.
    Fragment(FragmentFrame<'a>),
    /// Transport racing: the message frame that follows is one copy of the message the
    /// sender sent on several transports at once, all copies sharing `race_id` (see
    /// [`super::race`]).
    Race {
        /// Shared by every copy of one raced message; chosen at random by the sender.
        race_id: u64,
    },
}

/// `reason` cut to at most [`MAX_REASON_LEN`] bytes at a char boundary.
fn clip_reason(reason: &str) -> &str {
    let mut end = reason.len().min(MAX_REASON_LEN);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason.get(..end).unwrap_or_default()
}

impl<'a> Frame<'a> {
    /// The frame's type byte.
    pub fn frame_type(&self) -> FrameType {
        match self {
            Frame::Padding(_) => FrameType::PADDING,
            Frame::Ping => FrameType::PING,
            Frame::Sack(_) => FrameType::SACK,
            Frame::Ack { .. } => FrameType::ACK,
            Frame::Reset { .. } => FrameType::RESET,
            Frame::Close { .. } => FrameType::CLOSE,
            Frame::Message(m) => FrameType(m.type_byte()),
            Frame::Fragment(_) => FrameType::FRAGMENT,
            Frame::Race { .. } => FrameType::RACE,
        }
    }

    /// Whether receiving this frame obliges the receiver to acknowledge the packet
    /// (everything but PADDING, SACK and CLOSE).
    pub fn is_ack_eliciting(&self) -> bool {
        !matches!(
            self,
            Frame::Padding(_) | Frame::Sack(_) | Frame::Close { .. }
        )
    }

    /// Encoded length in bytes.
    pub fn encoded_len(&self) -> usize {
        match self {
            Frame::Padding(n) => *n,
            Frame::Ping => 1,
            Frame::Sack(sack) => sack.encoded_len(),
            Frame::Ack { .. } => 3,
            Frame::Reset { protocol_int, seq, .. } => {
                2 + varint_len(u64::from(*protocol_int)) + varint_len(seq.map_or(0, |s| s.saturating_add(1)))
            }
            Frame::Close { code, reason } => {
                let reason = clip_reason(reason);
                1 + varint_len(*code) + varint_len(reason.len() as u64) + reason.len()
            }
            Frame::Message(m) => m.encoded_len(),
            Frame::Fragment(f) => f.encoded_len(),
            Frame::Race { .. } => 9,
        }
    }

    /// Appends the frame to `out`.
    ///
    /// Preconditions (checked by `debug_assert!`, never a panic in release): a SACK has
    /// at least one range (an empty one encodes to nothing), ranges beyond
    /// [`MAX_SACK_RANGES`] are dropped (the oldest), SACK numbers and delay and a CLOSE
    /// code are ≤ 2^63 − 1 (see [`write_varint`]), SACK ranges are descending, and a
    /// longer reason is cut to [`MAX_REASON_LEN`] bytes at a char boundary; message
    /// frames as [`MessageFrame::encode`].
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Frame::Padding(n) => out.resize(out.len().saturating_add(*n), 0),
            Frame::Ping => out.push(FrameType::PING.0),
            Frame::Sack(sack) => sack.encode(out),
            Frame::Ack { transport_id } => {
                out.push(FrameType::ACK.0);
                out.extend_from_slice(&transport_id.to_be_bytes());
            }
            Frame::Reset { protocol_int, code, seq } => {
                out.push(FrameType::RESET.0);
                write_varint(out, u64::from(*protocol_int));
                out.push(code.0);
                write_varint(out, seq.map_or(0, |s| s.saturating_add(1)));
            }
            Frame::Close { code, reason } => {
                let reason = clip_reason(reason);
                out.push(FrameType::CLOSE.0);
                write_varint(out, *code);
                write_varint(out, reason.len() as u64);
                out.extend_from_slice(reason.as_bytes());
            }
            Frame::Message(m) => m.encode(out),
            Frame::Fragment(f) => f.encode(out),
            Frame::Race { race_id } => {
                out.push(FrameType::RACE.0);
                out.extend_from_slice(&race_id.to_be_bytes());
            }
        }
    }

    /// Decodes one frame from `r`. A message frame without explicit length consumes
    /// the rest of the input.
    pub fn decode(r: &mut Reader<'a>) -> Result<Frame<'a>, WireError> {
        let t = FrameType(r.u8()?);
        Ok(match t {
            FrameType::PADDING => {
                let mut n = 1;
                while r.peek_u8() == Some(0) {
                    r.u8()?;
                    n += 1;
                }
                Frame::Padding(n)
            }
            FrameType::PING => Frame::Ping,
            FrameType::SACK => Frame::Sack(Sack::decode(r)?),
            FrameType::ACK => Frame::Ack {
                transport_id: r.u16()?,
            },
            FrameType::RESET => Frame::Reset {
                protocol_int: r.varint_max(u64::from(u16::MAX), "protocol int")? as u16,
                code: ResetCode(r.u8()?),
                seq: r.varint()?.checked_sub(1),
            },
            FrameType::CLOSE => {
                let code = r.varint()?;
                let len = r.varint_max(MAX_REASON_LEN as u64, "close reason length")?;
                let bytes = r.bytes(len as usize)?;
                let reason = std::str::from_utf8(bytes)
                    .map_err(|_| WireError::InvalidValue("close reason utf-8"))?;
                Frame::Close { code, reason }
            }
            t if t.is_message() => Frame::Message(MessageFrame::decode_body(t.0, r)?),
            FrameType::FRAGMENT => Frame::Fragment(FragmentFrame::decode_body(r)?),
            FrameType::RACE => Frame::Race { race_id: r.u64()? },
            t => return Err(WireError::UnknownFrameType(t)),
        })
    }
}

/// Iterator over the frames of a plaintext. Yields `Err` at most once, then `None`.
///
/// An empty buffer yields nothing; a valid data packet's plaintext is never empty.
#[derive(Debug, Clone)]
pub struct Frames<'a> {
    r: Reader<'a>,
    failed: bool,
}

impl<'a> Frames<'a> {
    /// Frames of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Frames {
            r: Reader::new(buf),
            failed: false,
        }
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<Frame<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.r.is_empty() {
            return None;
        }
        let frame = Frame::decode(&mut self.r);
        self.failed = frame.is_err();
        Some(frame)
    }
}

impl std::iter::FusedIterator for Frames<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display() {
        assert_eq!(FrameType::SACK.to_string(), "SACK");
        assert_eq!(FrameType(0x06).to_string(), "FRAGMENT");
        assert_eq!(FrameType(0x07).to_string(), "0x07");
        assert_eq!(FrameType(0x08).to_string(), "RACE");
        assert_eq!(FrameType(0x09).to_string(), "0x09");
        assert_eq!(FrameType(0xf0).to_string(), "0xf0");
        assert_eq!(FrameType(0x7c).to_string(), "MESSAGE(0x7c)");
        assert_eq!(ResetCode(9).to_string(), "0x09");
    }

    #[test]
    fn clip() {
        let long = "é".repeat(600); // 1200 bytes
        assert_eq!(clip_reason(&long).len(), 1024);
        let close = Frame::Close {
            code: 1,
            reason: &long,
        };
        let mut out = Vec::new();
        close.encode(&mut out);
        assert_eq!(out.len(), close.encoded_len());
        assert!(matches!(
            Frames::new(&out).next(),
            Some(Ok(Frame::Close { .. }))
        ));
    }

    #[test]
    fn oversized_sack_keeps_newest() {
        let ranges: Vec<_> = (0..300u64).rev().map(|i| (3 * i, 3 * i + 1)).collect();
        let sack = Sack {
            delay_us: 0,
            ranges: ranges.clone(),
        };
        let mut out = Vec::new();
        Frame::Sack(sack.clone()).encode(&mut out);
        assert_eq!(out.len(), Frame::Sack(sack).encoded_len());
        let Some(Ok(Frame::Sack(back))) = Frames::new(&out).next() else {
            panic!()
        };
        assert_eq!(back.ranges, ranges[..MAX_SACK_RANGES]);
    }
}

/// One fragment of a large message: `0x06, varint total_len, varint offset,
/// varint unreliable_id`, then an embedded message frame (with L set) whose payload is the
/// fragment's bytes `offset .. offset + len` of the whole message.
///
/// The embedded frame carries everything the whole message would (INIT, protocol int,
/// ordering, sequence number, kind, request id); fragments of one message are grouped by
/// (protocol int, sequence number), or by (protocol int, `unreliable_id`) when the message
/// is unreliable (no sequence number). `unreliable_id` is 0 for reliable messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentFrame<'a> {
    /// Length of the whole message (1 ..= 2^32).
    pub total_len: u64,
    /// Offset of this fragment in the message.
    pub offset: u64,
    /// Groups the fragments of an unreliable message; 0 for reliable ones.
    pub unreliable_id: u64,
    /// The message header; `payload` is this fragment's bytes.
    pub message: MessageFrame<'a>,
}

/// Largest message a FRAGMENT can describe.
pub const MAX_FRAGMENTED_LEN: u64 = 1 << 32;

impl<'a> FragmentFrame<'a> {
    fn embedded(&self) -> MessageFrame<'a> {
        MessageFrame { explicit_len: true, ..self.message }
    }

    /// Encoded length without the fragment payload bytes.
    pub fn header_len(&self) -> usize {
        1 + varint_len(self.total_len)
            + varint_len(self.offset)
            + varint_len(self.unreliable_id)
            + self.embedded().header_len()
    }

    /// Total encoded length.
    pub fn encoded_len(&self) -> usize {
        self.header_len() + self.message.payload.len()
    }

    /// Appends the frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(FrameType::FRAGMENT.0);
        write_varint(out, self.total_len);
        write_varint(out, self.offset);
        write_varint(out, self.unreliable_id);
        self.embedded().encode(out);
    }

    fn decode_body(r: &mut Reader<'a>) -> Result<Self, WireError> {
        let total_len = r.varint()?;
        let offset = r.varint()?;
        let unreliable_id = r.varint()?;
        let t = FrameType(r.u8()?);
        if !t.is_message() || t.0 & crate::wire::message_flags::LEN == 0 {
            return Err(WireError::InvalidValue("fragment inner type"));
        }
        let message = MessageFrame::decode_body(t.0, r)?;
        let end = offset.checked_add(message.payload.len() as u64);
        if total_len == 0
            || total_len > MAX_FRAGMENTED_LEN
            || message.payload.is_empty()
            || end.is_none_or(|e| e > total_len)
        {
            return Err(WireError::InvalidValue("fragment bounds"));
        }
        Ok(FragmentFrame { total_len, offset, unreliable_id, message })
    }
}
