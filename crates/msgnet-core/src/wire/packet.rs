//! Packets: the outermost layer of every UDP datagram.
//!
//! The first byte selects the form. `0x00..=0x7f` is a data packet with a short header
//! ([`DataHeader`]) followed by an AEAD-sealed frame payload; `0x80..=0x83` are the
//! handshake packets ([`PacketType`]). This module only frames bytes: it neither seals nor
//! opens (the crypto layer does, with the header bytes as AAD and the full 64-bit packet
//! number as nonce).

use std::fmt;

use super::error::WireError;
use super::reader::Reader;

/// Length of the AEAD tag that ends every sealed payload.
pub const TAG_LEN: usize = 16;

/// Length of a stateless cookie.
pub const COOKIE_LEN: usize = 16;

/// The only protocol version this codec speaks.
pub const VERSION: u8 = 1;

/// Largest receiver index a data header can carry (28 bits).
pub const MAX_RECEIVER_INDEX: u32 = (1 << 28) - 1;

/// The first byte of a handshake packet. An open newtype: unknown values are
/// representable (and rejected by [`Packet::parse`] as
/// [`WireError::UnknownPacketType`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PacketType(pub u8);

impl PacketType {
    /// First handshake message, initiator to responder.
    pub const INITIATION: PacketType = PacketType(0x80);
    /// Second handshake message, responder to initiator.
    pub const RESPONSE: PacketType = PacketType(0x81);
    /// Stateless cookie sent instead of a Response under load.
    pub const COOKIE_REPLY: PacketType = PacketType(0x82);
    /// Third handshake message of Noise XX, initiator to responder.
    pub const FINISH: PacketType = PacketType(0x83);
}

impl fmt::Display for PacketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::INITIATION => f.write_str("INITIATION"),
            Self::RESPONSE => f.write_str("RESPONSE"),
            Self::COOKIE_REPLY => f.write_str("COOKIE_REPLY"),
            Self::FINISH => f.write_str("FINISH"),
            PacketType(other) => write!(f, "0x{other:02x}"),
        }
    }
}

/// The Noise handshake pattern an Initiation starts. An open newtype; only
/// [`Pattern::IK`] and [`Pattern::XX`] decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pattern(pub u8);

impl Pattern {
    /// Noise IK: the initiator knows the responder's static key.
    pub const IK: Pattern = Pattern(1);
    /// Noise XX: three messages, neither static key known in advance.
    pub const XX: Pattern = Pattern(2);
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::IK => f.write_str("IK"),
            Self::XX => f.write_str("XX"),
            Pattern(other) => write!(f, "0x{other:02x}"),
        }
    }
}

/// The short header of a data packet.
///
/// Wire form: one big-endian `u32` — bit 31 = 0, bit 30 = key phase, bits 29..28 =
/// `pn_len − 1`, bits 27..0 = receiver index (non-zero) — then `pn_len` bytes of
/// truncated packet number, big-endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataHeader {
    /// Key phase bit, flipped on every rekey.
    pub key_phase: bool,
    /// The receiver's session index, 1..=[`MAX_RECEIVER_INDEX`].
    pub receiver: u32,
    /// The packet number truncated to `pn_len` bytes.
    pub pn_truncated: u32,
    /// Length of the truncated packet number, 1..=4.
    pub pn_len: usize,
}

impl DataHeader {
    /// Parses the header at the start of a whole data packet and returns it with its
    /// length (`4 + pn_len`; the AAD is `buf[..len]`, the sealed payload `buf[len..]`).
    ///
    /// Errors: `InvalidValue` if bit 31 is set (a handshake packet), `InvalidValue` for a
    /// zero receiver index, [`WireError::Truncated`] if the header is cut short or the
    /// sealed payload is shorter than `TAG_LEN + 1` bytes.
    pub fn parse(buf: &[u8]) -> Result<(DataHeader, usize), WireError> {
        let mut r = Reader::new(buf);
        let word = r.u32()?;
        if word & 0x8000_0000 != 0 {
            return Err(WireError::InvalidValue("not a data packet"));
        }
        let key_phase = word & 0x4000_0000 != 0;
        let pn_len = ((word >> 28) & 0b11) as usize + 1;
        let receiver = word & MAX_RECEIVER_INDEX;
        if receiver == 0 {
            return Err(WireError::InvalidValue("receiver index"));
        }
        let pn_truncated = r.uint(pn_len)? as u32;
        if r.remaining() < TAG_LEN + 1 {
            return Err(WireError::Truncated);
        }
        let header = DataHeader {
            key_phase,
            receiver,
            pn_truncated,
            pn_len,
        };
        Ok((header, 4 + pn_len))
    }

    /// Encoded length: `4 + pn_len`.
    pub fn encoded_len(&self) -> usize {
        4 + self.pn_len.clamp(1, 4)
    }

    /// Appends the header to `out`.
    ///
    /// Preconditions: `receiver` in 1..=[`MAX_RECEIVER_INDEX`], `pn_len` in 1..=4 and
    /// `pn_truncated` fitting `pn_len` bytes. Violations trip a `debug_assert!`; release
    /// builds mask the receiver to 28 bits, clamp `pn_len` and write the low bytes of the
    /// packet number.
    pub fn encode(&self, out: &mut Vec<u8>) {
        debug_assert!(self.receiver != 0 && self.receiver <= MAX_RECEIVER_INDEX);
        debug_assert!((1..=4).contains(&self.pn_len));
        debug_assert!(self.pn_len >= 4 || self.pn_truncated >> (8 * self.pn_len) == 0);
        let pn_len = self.pn_len.clamp(1, 4);
        let word = (u32::from(self.key_phase) << 30)
            | (((pn_len - 1) as u32) << 28)
            | (self.receiver & MAX_RECEIVER_INDEX);
        out.extend_from_slice(&word.to_be_bytes());
        let pn = self.pn_truncated.to_be_bytes();
        out.extend_from_slice(pn.get(4 - pn_len..).unwrap_or_default());
    }
}

/// A parsed packet. Handshake packets borrow their Noise message from the input; a data
/// packet's sealed payload is `buf[header_len..]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    /// A data packet (first byte `0x00..=0x7f`).
    Data {
        /// The short header.
        header: DataHeader,
        /// Length of the header; the sealed payload follows it.
        header_len: usize,
    },
    /// `0x80`: first handshake message.
    Initiation {
        /// Protocol version; always [`VERSION`] after a successful parse.
        version: u8,
        /// Noise pattern, IK or XX.
        pattern: Pattern,
        /// The initiator's session index (non-zero).
        sender: u32,
        /// Cookie echoed from a CookieReply, if any.
        cookie: Option<[u8; COOKIE_LEN]>,
        /// The Noise message (non-empty).
        noise: &'a [u8],
    },
    /// `0x81`: second handshake message.
    Response {
        /// The initiator's session index (non-zero).
        receiver: u32,
        /// The responder's session index (non-zero).
        sender: u32,
        /// The Noise message (non-empty).
        noise: &'a [u8],
    },
    /// `0x82`: stateless cookie instead of a Response.
    CookieReply {
        /// The initiator's session index (non-zero).
        receiver: u32,
        /// The cookie to echo in the next Initiation.
        cookie: [u8; COOKIE_LEN],
    },
    /// `0x83`: third handshake message (Noise XX).
    Finish {
        /// The responder's session index (non-zero).
        receiver: u32,
        /// The Noise message (non-empty).
        noise: &'a [u8],
    },
}

fn index(r: &mut Reader<'_>, what: &'static str) -> Result<u32, WireError> {
    match r.u32()? {
        0 => Err(WireError::InvalidValue(what)),
        v => Ok(v),
    }
}

fn noise<'a>(r: &mut Reader<'a>) -> Result<&'a [u8], WireError> {
    match r.rest() {
        [] => Err(WireError::Truncated),
        rest => Ok(rest),
    }
}

impl<'a> Packet<'a> {
    /// Parses a whole datagram. Never panics; see `docs/wire.md` for each form's checks.
    pub fn parse(buf: &'a [u8]) -> Result<Packet<'a>, WireError> {
        let first = *buf.first().ok_or(WireError::Truncated)?;
        if first < 0x80 {
            let (header, header_len) = DataHeader::parse(buf)?;
            return Ok(Packet::Data { header, header_len });
        }
        let mut r = Reader::new(buf);
        let ty = PacketType(r.u8()?);
        match ty {
            PacketType::INITIATION => {
                let version = r.u8()?;
                if version != VERSION {
                    return Err(WireError::UnsupportedVersion(version));
                }
                let pattern = Pattern(r.u8()?);
                if pattern != Pattern::IK && pattern != Pattern::XX {
                    return Err(WireError::InvalidValue("pattern"));
                }
                let sender = index(&mut r, "sender index")?;
                let cookie = match r.u8()? {
                    0 => None,
                    16 => Some(r.array::<COOKIE_LEN>()?),
                    _ => return Err(WireError::InvalidValue("cookie length")),
                };
                let noise = noise(&mut r)?;
                Ok(Packet::Initiation {
                    version,
                    pattern,
                    sender,
                    cookie,
                    noise,
                })
            }
            PacketType::RESPONSE => {
                let receiver = index(&mut r, "receiver index")?;
                let sender = index(&mut r, "sender index")?;
                let noise = noise(&mut r)?;
                Ok(Packet::Response {
                    receiver,
                    sender,
                    noise,
                })
            }
            PacketType::COOKIE_REPLY => {
                let receiver = index(&mut r, "receiver index")?;
                let cookie = r.array::<COOKIE_LEN>()?;
                r.expect_end()?;
                Ok(Packet::CookieReply { receiver, cookie })
            }
            PacketType::FINISH => {
                let receiver = index(&mut r, "receiver index")?;
                let noise = noise(&mut r)?;
                Ok(Packet::Finish { receiver, noise })
            }
            PacketType(other) => Err(WireError::UnknownPacketType(other)),
        }
    }

    /// The packet's type byte: its first byte for handshake packets, `None` for data.
    pub fn packet_type(&self) -> Option<PacketType> {
        match self {
            Packet::Data { .. } => None,
            Packet::Initiation { .. } => Some(PacketType::INITIATION),
            Packet::Response { .. } => Some(PacketType::RESPONSE),
            Packet::CookieReply { .. } => Some(PacketType::COOKIE_REPLY),
            Packet::Finish { .. } => Some(PacketType::FINISH),
        }
    }
}

/// Length of an Initiation header (everything before the Noise message).
pub fn initiation_header_len(cookie: bool) -> usize {
    8 + if cookie { COOKIE_LEN } else { 0 }
}

/// Appends an Initiation header (version [`VERSION`]); the caller appends the Noise
/// message. Precondition: `sender != 0`.
pub fn encode_initiation_header(
    out: &mut Vec<u8>,
    pattern: Pattern,
    sender: u32,
    cookie: Option<&[u8; COOKIE_LEN]>,
) {
    debug_assert!(sender != 0);
    out.extend_from_slice(&[PacketType::INITIATION.0, VERSION, pattern.0]);
    out.extend_from_slice(&sender.to_be_bytes());
    match cookie {
        Some(cookie) => {
            out.push(COOKIE_LEN as u8);
            out.extend_from_slice(cookie);
        }
        None => out.push(0),
    }
}

/// Appends a Response header (9 bytes); the caller appends the Noise message.
/// Precondition: both indices non-zero.
pub fn encode_response_header(out: &mut Vec<u8>, receiver: u32, sender: u32) {
    debug_assert!(receiver != 0 && sender != 0);
    out.push(PacketType::RESPONSE.0);
    out.extend_from_slice(&receiver.to_be_bytes());
    out.extend_from_slice(&sender.to_be_bytes());
}

/// Appends a whole CookieReply (21 bytes). Precondition: `receiver != 0`.
pub fn encode_cookie_reply(out: &mut Vec<u8>, receiver: u32, cookie: &[u8; COOKIE_LEN]) {
    debug_assert!(receiver != 0);
    out.push(PacketType::COOKIE_REPLY.0);
    out.extend_from_slice(&receiver.to_be_bytes());
    out.extend_from_slice(cookie);
}

/// Appends a Finish header (5 bytes); the caller appends the Noise message.
/// Precondition: `receiver != 0`.
pub fn encode_finish_header(out: &mut Vec<u8>, receiver: u32) {
    debug_assert!(receiver != 0);
    out.push(PacketType::FINISH.0);
    out.extend_from_slice(&receiver.to_be_bytes());
}
