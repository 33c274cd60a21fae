//! The wire codec: packets, handshake payloads and frames. `docs/wire.md` is its
//! specification; this module is its reference implementation.
//!
//! The module owns byte layout only. It performs no cryptography (the crypto layer seals
//! and opens data packets and Noise messages), keeps no state, and calls nothing outside
//! itself. Every decoder takes a borrowed slice, returns [`WireError`] on malformed input
//! and never panics; every encoder appends to a caller-owned `Vec<u8>` and documents its
//! preconditions (violations trip `debug_assert!` and never panic in release builds).
//!
//! - [`Packet::parse`] / [`DataHeader`] / `encode_*_header`: the outer packet forms.
//! - [`HandshakePayload`]: the plaintext inside Noise messages.
//! - [`Frames`] / [`Frame`]: the plaintext of data packets, several frames per packet.
//! - [`RaceCopy`] / [`RaceAnswer`]: the plaintexts of transport racing (§7), with the
//!   [`transport_id`] values.
//! - [`truncate_len`] / [`expand`]: RFC 9000 A.2/A.3 number truncation, shared by packet
//!   numbers and message sequence numbers.
//! - [`Reader`], [`write_varint`], [`read_varint`]: the primitives.

mod error;
mod frame;
mod handshake;
mod message;
mod packet;
mod pn;
mod race;
mod reader;
mod varint;

pub use error::WireError;
pub use frame::{
    FragmentFrame, Frame, FrameType, Frames, ResetCode, Sack, MAX_FRAGMENTED_LEN, MAX_REASON_LEN,
    MAX_SACK_RANGES,
};
pub use handshake::{HandshakePayload, MAX_IDENTITY_LEN};
pub use message::{
    flags as message_flags, Init, MessageFrame, MessageKind, TruncatedSeq, MAX_PROTOCOL_LEN,
};
pub use packet::{
    encode_cookie_reply, encode_finish_header, encode_initiation_header, encode_response_header,
    initiation_header_len, DataHeader, Packet, PacketType, Pattern, COOKIE_LEN, MAX_RECEIVER_INDEX,
    TAG_LEN, VERSION,
};
pub use pn::{decode_pn, encode_pn_len, expand, truncate_len};
pub use race::{transport_id, RaceAnswer, RaceCopy, RaceOutcome, RACE_PROTOCOL};
pub use reader::Reader;
pub use varint::{read_varint, varint_len, write_varint, MAX_VARINT, MAX_VARINT_LEN};
