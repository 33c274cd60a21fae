//! Errors of the wire codec: malformed input only.
//!
//! Every decoder in [`crate::wire`] returns [`WireError`] instead of panicking. The
//! variants say what was wrong with the bytes, not what the caller should do; a packet that
//! fails to decode is dropped and counted by the endpoint.

use super::frame::FrameType;

/// Why a packet, frame or handshake payload failed to decode.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The input ended before a field did (or a required field, such as a Noise message,
    /// is empty).
    #[error("truncated input")]
    Truncated,
    /// A varint used more bytes than needed (its last group is `0x00`).
    #[error("non-minimal varint encoding")]
    NonMinimalVarint,
    /// A varint was longer than 9 bytes.
    #[error("varint longer than 9 bytes")]
    VarintOverflow,
    /// The first byte of a packet is `>= 0x80` but names no known packet type.
    #[error("unknown packet type 0x{0:02x}")]
    UnknownPacketType(u8),
    /// A frame type byte names no known frame.
    #[error("unknown frame type {0}")]
    UnknownFrameType(FrameType),
    /// An Initiation carries a protocol version this implementation does not speak.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    /// A field holds a value outside its legal range; the string names the field.
    #[error("invalid value: {0}")]
    InvalidValue(&'static str),
    /// Bytes follow the end of a structure that must end the input.
    #[error("trailing bytes")]
    TrailingBytes,
}
