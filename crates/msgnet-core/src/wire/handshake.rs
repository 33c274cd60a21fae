//! The plaintext carried inside Noise handshake messages that have a payload.
//!
//! Wire form: `varint identity_len` (≤ 4096), the identity bytes (a libp2p
//! `NoiseHandshakePayload` protobuf, opaque here), `u64` BE timestamp (unix nanoseconds,
//! 0 when unused), then frames (the rest, possibly empty; decode them with
//! [`super::Frames`]).

use super::error::WireError;
use super::reader::Reader;
use super::varint::{varint_len, write_varint};

/// Longest identity a handshake payload may carry, in bytes.
pub const MAX_IDENTITY_LEN: usize = 4096;

/// A parsed handshake payload, borrowing from the decrypted Noise payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakePayload<'a> {
    /// The libp2p `NoiseHandshakePayload` protobuf (identity key and signature).
    pub identity: &'a [u8],
    /// Unix time in nanoseconds for replay protection of Initiations; 0 when unused.
    pub timestamp: u64,
    /// Frames riding in the handshake (0-RTT / 0.5-RTT data); may be empty.
    pub frames: &'a [u8],
}

impl<'a> HandshakePayload<'a> {
    /// Parses a handshake payload. Errors: `Truncated`, varint errors, and
    /// `InvalidValue` for an identity longer than [`MAX_IDENTITY_LEN`].
    pub fn parse(buf: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(buf);
        let len = r.varint_max(MAX_IDENTITY_LEN as u64, "identity length")?;
        let identity = r.bytes(len as usize)?;
        let timestamp = r.u64()?;
        let frames = r.rest();
        Ok(HandshakePayload {
            identity,
            timestamp,
            frames,
        })
    }

    /// Encoded length in bytes.
    pub fn encoded_len(&self) -> usize {
        varint_len(self.identity.len() as u64) + self.identity.len() + 8 + self.frames.len()
    }

    /// Appends the payload to `out`. Precondition: `identity.len() <=`
    /// [`MAX_IDENTITY_LEN`] (checked by `debug_assert!`; the peer rejects a longer one).
    pub fn encode(&self, out: &mut Vec<u8>) {
        debug_assert!(self.identity.len() <= MAX_IDENTITY_LEN);
        write_varint(out, self.identity.len() as u64);
        out.extend_from_slice(self.identity);
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(self.frames);
    }
}
