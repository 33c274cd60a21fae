//! Message frames: INIT and CONTINUATION with their flags (types `0x40..=0xbf`).
//!
//! The type byte carries the flags: bits 7..6 `01` unordered / `10` ordered, bit 5 `I`
//! (INIT), bit 4 `L` (explicit payload length), bits 3..2 `K` (kind), bits 1..0 `S`
//! (sequence-number length: none, 1, 2 or 4 bytes). The body follows in field order:
//! `[transport_id u16, protocol_len varint, protocol]` if I, `protocol_int varint`,
//! `seq` if S≠0, `request_id varint` if K≠0, `[payload_len varint]` if L, payload (all
//! remaining bytes when L is clear).

use super::error::WireError;
use super::reader::Reader;
use super::varint::{varint_len, write_varint, MAX_VARINT};

/// Longest protocol name an INIT may carry, in bytes.
pub const MAX_PROTOCOL_LEN: usize = 1024;

/// Flag bits of a message frame's type byte.
pub mod flags {
    /// Bits 7..6 = `01`: unordered message frame.
    pub const UNORDERED: u8 = 0x40;
    /// Bits 7..6 = `10`: ordered message frame.
    pub const ORDERED: u8 = 0x80;
    /// Bit 5: INIT (carries transport id and protocol name).
    pub const INIT: u8 = 0x20;
    /// Bit 4: an explicit payload length is present.
    pub const LEN: u8 = 0x10;
    /// Bits 3..2: message kind.
    pub const KIND_MASK: u8 = 0x0c;
    /// Bits 1..0: sequence-number length code.
    pub const SEQ_MASK: u8 = 0x03;
}

/// The INIT part of a message frame: binds `protocol_int` to a protocol name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Init<'a> {
    /// The transport the sender asks the receiver to answer on.
    pub transport_id: u16,
    /// Protocol name, 1..=[`MAX_PROTOCOL_LEN`] bytes of UTF-8.
    pub protocol: &'a str,
}

/// A sequence number truncated to 1, 2 or 4 bytes (see [`crate::wire::expand`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TruncatedSeq {
    /// The low `len` bytes of the full sequence number.
    pub value: u32,
    /// 1, 2 or 4.
    pub len: u8,
}

impl TruncatedSeq {
    fn code(self) -> u8 {
        match self.len {
            1 => 1,
            2 => 2,
            _ => 3,
        }
    }

    fn wire_len(self) -> usize {
        match self.code() {
            1 => 1,
            2 => 2,
            _ => 4,
        }
    }

    fn is_valid(self) -> bool {
        matches!(self.len, 1 | 2 | 4) && (self.len == 4 || self.value >> (8 * self.len) == 0)
    }
}

/// What a message frame carries, with the request id where there is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// A one-way message (K = 0).
    Message,
    /// A request expecting a response (K = 1).
    Request(u64),
    /// The response to the request with this id (K = 2).
    Response(u64),
    /// An error response to the request with this id (K = 3).
    ErrorResponse(u64),
}

impl MessageKind {
    fn code(self) -> u8 {
        match self {
            MessageKind::Message => 0,
            MessageKind::Request(_) => 1,
            MessageKind::Response(_) => 2,
            MessageKind::ErrorResponse(_) => 3,
        }
    }

    /// The request id, unless this is a plain message.
    pub fn request_id(self) -> Option<u64> {
        match self {
            MessageKind::Message => None,
            MessageKind::Request(id)
            | MessageKind::Response(id)
            | MessageKind::ErrorResponse(id) => Some(id),
        }
    }
}

/// An INIT or CONTINUATION frame carrying (a fragment of) a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageFrame<'a> {
    /// Present on INIT frames.
    pub init: Option<Init<'a>>,
    /// The sender's compact int for the protocol (≤ 65535 on the wire as a varint).
    pub protocol_int: u16,
    /// Ordered delivery within the channel; requires `seq`.
    pub ordered: bool,
    /// Sequence number; `None` for unreliable messages.
    pub seq: Option<TruncatedSeq>,
    /// Message, request, response or error response.
    pub kind: MessageKind,
    /// The payload bytes.
    pub payload: &'a [u8],
    /// Encode: write an explicit length (L). Decode: whether L was set. Without it the
    /// payload runs to the end of the packet, so the frame must be the last.
    pub explicit_len: bool,
}

impl<'a> MessageFrame<'a> {
    /// The frame's type byte.
    pub fn type_byte(&self) -> u8 {
        let mut t = if self.ordered {
            flags::ORDERED
        } else {
            flags::UNORDERED
        };
        if self.init.is_some() {
            t |= flags::INIT;
        }
        if self.explicit_len {
            t |= flags::LEN;
        }
        t |= self.kind.code() << 2;
        t |= self.seq.map_or(0, TruncatedSeq::code);
        t
    }

    /// Checks the encoder's preconditions: protocol 1..=1024 bytes, `seq.len` in
    /// {1, 2, 4} with `value` fitting, `ordered` implies `seq`, request id ≤ 2^63 − 1.
    pub fn validate(&self) -> Result<(), WireError> {
        if let Some(init) = self.init {
            if init.protocol.is_empty() || init.protocol.len() > MAX_PROTOCOL_LEN {
                return Err(WireError::InvalidValue("protocol length"));
            }
        }
        if self.seq.is_some_and(|s| !s.is_valid()) {
            return Err(WireError::InvalidValue("sequence number length"));
        }
        if self.ordered && self.seq.is_none() {
            return Err(WireError::InvalidValue(
                "ordered frame without sequence number",
            ));
        }
        if self.kind.request_id().is_some_and(|id| id > MAX_VARINT) {
            return Err(WireError::InvalidValue("request id"));
        }
        Ok(())
    }

    /// Encoded length without the payload bytes (but with the payload length varint
    /// when `explicit_len`).
    pub fn header_len(&self) -> usize {
        let len_field = if self.explicit_len {
            varint_len(self.payload.len() as u64)
        } else {
            0
        };
        self.fixed_header_len() + len_field
    }

    /// Header length without the payload-length varint.
    fn fixed_header_len(&self) -> usize {
        let init = self.init.map_or(0, |i| {
            2 + varint_len(i.protocol.len() as u64) + i.protocol.len()
        });
        let seq = self.seq.map_or(0, TruncatedSeq::wire_len);
        let req = self.kind.request_id().map_or(0, varint_len);
        1 + init + varint_len(u64::from(self.protocol_int)) + seq + req
    }

    /// The largest payload length for which this frame (with its current flags) fits in
    /// `space` bytes, or `None` if not even an empty payload fits. Ignores the current
    /// payload.
    pub fn max_payload(&self, space: usize) -> Option<usize> {
        let fixed = self.fixed_header_len();
        let room = space.checked_sub(fixed)?;
        if !self.explicit_len {
            return Some(room);
        }
        let fits = |p: usize| varint_len(p as u64) + p <= room;
        let p = room.checked_sub(varint_len(room as u64))?;
        Some(if fits(p + 1) { p + 1 } else { p })
    }

    /// Total encoded length.
    pub fn encoded_len(&self) -> usize {
        self.header_len() + self.payload.len()
    }

    /// Appends the frame to `out`.
    ///
    /// Preconditions: [`MessageFrame::validate`] succeeds. Violations trip a
    /// `debug_assert!`; release builds write what they can (a `seq` with an invalid
    /// `len` is written as 4 bytes, an over-long value is masked) without panicking, and
    /// the peer may reject the result.
    pub fn encode(&self, out: &mut Vec<u8>) {
        debug_assert_eq!(self.validate(), Ok(()));
        out.push(self.type_byte());
        if let Some(init) = self.init {
            out.extend_from_slice(&init.transport_id.to_be_bytes());
            write_varint(out, init.protocol.len() as u64);
            out.extend_from_slice(init.protocol.as_bytes());
        }
        write_varint(out, u64::from(self.protocol_int));
        if let Some(seq) = self.seq {
            let bytes = seq.value.to_be_bytes();
            out.extend_from_slice(bytes.get(4 - seq.wire_len()..).unwrap_or_default());
        }
        if let Some(id) = self.kind.request_id() {
            write_varint(out, id);
        }
        if self.explicit_len {
            write_varint(out, self.payload.len() as u64);
        }
        out.extend_from_slice(self.payload);
    }

    /// Decodes the body of a message frame whose type byte `t` (in `0x40..=0xbf`) has
    /// already been consumed from `r`.
    pub(crate) fn decode_body(t: u8, r: &mut Reader<'a>) -> Result<Self, WireError> {
        let ordered = t & 0xc0 == flags::ORDERED;
        let seq_code = t & flags::SEQ_MASK;
        if ordered && seq_code == 0 {
            return Err(WireError::InvalidValue(
                "ordered frame without sequence number",
            ));
        }
        let init = if t & flags::INIT != 0 {
            let transport_id = r.u16()?;
            let len = r.varint_max(MAX_PROTOCOL_LEN as u64, "protocol length")?;
            if len == 0 {
                return Err(WireError::InvalidValue("protocol length"));
            }
            let bytes = r.bytes(len as usize)?;
            let protocol = std::str::from_utf8(bytes)
                .map_err(|_| WireError::InvalidValue("protocol utf-8"))?;
            Some(Init {
                transport_id,
                protocol,
            })
        } else {
            None
        };
        let protocol_int = r.varint_max(u64::from(u16::MAX), "protocol int")? as u16;
        let seq = match seq_code {
            0 => None,
            1 => Some(TruncatedSeq {
                value: u32::from(r.u8()?),
                len: 1,
            }),
            2 => Some(TruncatedSeq {
                value: u32::from(r.u16()?),
                len: 2,
            }),
            _ => Some(TruncatedSeq {
                value: r.u32()?,
                len: 4,
            }),
        };
        let kind = match (t & flags::KIND_MASK) >> 2 {
            0 => MessageKind::Message,
            1 => MessageKind::Request(r.varint()?),
            2 => MessageKind::Response(r.varint()?),
            _ => MessageKind::ErrorResponse(r.varint()?),
        };
        let explicit_len = t & flags::LEN != 0;
        let payload = if explicit_len {
            let len = usize::try_from(r.varint()?).map_err(|_| WireError::Truncated)?;
            r.bytes(len)?
        } else {
            r.rest()
        };
        Ok(MessageFrame {
            init,
            protocol_int,
            ordered,
            seq,
            kind,
            payload,
            explicit_len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(explicit_len: bool) -> MessageFrame<'static> {
        MessageFrame {
            init: Some(Init {
                transport_id: 7,
                protocol: "/p",
            }),
            protocol_int: 300,
            ordered: true,
            seq: Some(TruncatedSeq {
                value: 0x1234,
                len: 2,
            }),
            kind: MessageKind::Request(1),
            payload: b"",
            explicit_len,
        }
    }

    #[test]
    fn max_payload_is_exact() {
        for explicit_len in [false, true] {
            let f = frame(explicit_len);
            assert_eq!(f.max_payload(f.header_len() - 1), None);
            for space in f.header_len()..f.header_len() + 20_000 {
                let p = f.max_payload(space).expect("fits");
                let payload = vec![0u8; p + 1];
                let fits = |n| {
                    MessageFrame {
                        payload: &payload[..n],
                        ..f
                    }
                    .encoded_len()
                };
                assert!(fits(p) <= space, "space {space}");
                assert!(fits(p + 1) > space, "space {space}");
            }
        }
    }

    #[test]
    fn validate() {
        assert_eq!(frame(true).validate(), Ok(()));
        let bad_seq = MessageFrame {
            seq: Some(TruncatedSeq { value: 256, len: 1 }),
            ..frame(true)
        };
        assert!(bad_seq.validate().is_err());
        let no_seq = MessageFrame {
            seq: None,
            ..frame(true)
        };
        assert!(no_seq.validate().is_err());
        let empty = MessageFrame {
            init: Some(Init {
                transport_id: 0,
                protocol: "",
            }),
            ..frame(true)
        };
        assert!(empty.validate().is_err());
    }
}
