//! The libp2p kad-dht protobuf (`dht.proto`), hand-encoded.
//!
//! ```text
//! message Record  { bytes key = 1; bytes value = 2; string timeReceived = 5;
//!                   bytes publisher = 666; uint32 ttl = 777; }      // 666/777: rust-libp2p only
//! message Message {
//!   enum MessageType { PUT_VALUE = 0; GET_VALUE = 1; ADD_PROVIDER = 2; GET_PROVIDERS = 3;
//!                      FIND_NODE = 4; PING = 5; }
//!   enum ConnectionType { NOT_CONNECTED = 0; CONNECTED = 1; CAN_CONNECT = 2; CANNOT_CONNECT = 3; }
//!   message Peer { bytes id = 1; repeated bytes addrs = 2; ConnectionType connection = 3; }
//!   MessageType type = 1; int32 clusterLevelRaw = 10; bytes key = 2; Record record = 3;
//!   repeated Peer closerPeers = 8; repeated Peer providerPeers = 9;
//! }
//! ```
//!
//! Encoding follows proto3 as rust-libp2p's quick-protobuf code does: scalar fields equal
//! to their default are omitted (so a PUT_VALUE carries no `type` field at all) and fields
//! are written in declaration order (`clusterLevelRaw` before `key`), which makes our bytes
//! identical to rust-libp2p's. go-libp2p writes in field-number order; decoders accept any
//! order. Decoding skips unknown fields (and known field numbers with an unexpected wire
//! type, as quick-protobuf does), keeps unknown enum values, and never panics. One message
//! is one protobuf; on libp2p streams the host adds the unsigned-varint length prefix.

use crate::error::DecodeError;

/// The `MessageType` enum as an open newtype: unknown values survive decoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct MessageType(pub i32);

impl MessageType {
    /// Store a record on the receiver.
    pub const PUT_VALUE: Self = Self(0);
    /// Ask for a record and closer peers.
    pub const GET_VALUE: Self = Self(1);
    /// Announce a provider (no response).
    pub const ADD_PROVIDER: Self = Self(2);
    /// Ask for providers and closer peers.
    pub const GET_PROVIDERS: Self = Self(3);
    /// Ask for the peers closest to a key.
    pub const FIND_NODE: Self = Self(4);
    /// Liveness check (deprecated by the spec, still answered).
    pub const PING: Self = Self(5);
}

/// The `ConnectionType` enum as an open newtype.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct ConnectionType(pub i32);

impl ConnectionType {
    /// No information (the default, omitted on the wire).
    pub const NOT_CONNECTED: Self = Self(0);
    /// The sender has a live connection to the peer.
    pub const CONNECTED: Self = Self(1);
    /// The sender recently connected to the peer.
    pub const CAN_CONNECT: Self = Self(2);
    /// The sender tried hard to connect to the peer and failed.
    pub const CANNOT_CONNECT: Self = Self(3);
}

/// `Message.Peer`: a peer id (multihash bytes) with its multiaddrs (binary form).
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct WirePeer {
    /// Peer id bytes.
    pub id: Vec<u8>,
    /// Binary multiaddrs.
    pub addrs: Vec<Vec<u8>>,
    /// What the sender knows about its connectivity to the peer.
    pub connection: ConnectionType,
}

/// `Record`: a key/value pair as carried by PUT_VALUE and GET_VALUE.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct WireRecord {
    /// Record key.
    pub key: Vec<u8>,
    /// Record value.
    pub value: Vec<u8>,
    /// RFC 3339 time the record was received (set by go-libp2p; informational).
    pub time_received: String,
    /// Original publisher's peer id bytes (rust-libp2p extension, field 666).
    pub publisher: Vec<u8>,
    /// Remaining TTL in seconds, 0 = unspecified (rust-libp2p extension, field 777).
    pub ttl: u32,
}

/// The top-level `Message`.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Message {
    /// Message type.
    pub ty: MessageType,
    /// Unused by the protocol; rust-libp2p sends 10 in requests and 9 in responses.
    pub cluster_level_raw: i32,
    /// The key the message is about.
    pub key: Vec<u8>,
    /// A record (PUT_VALUE, GET_VALUE responses).
    pub record: Option<WireRecord>,
    /// Peers closer to the key.
    pub closer_peers: Vec<WirePeer>,
    /// Providers of the key.
    pub provider_peers: Vec<WirePeer>,
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited field (bytes, string or nested message).
fn put_bytes(out: &mut Vec<u8>, tag: u64, b: &[u8]) {
    put_varint(out, tag);
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// A singular bytes field: omitted when empty, as proto3 omits defaults.
fn put_nonempty(out: &mut Vec<u8>, tag: u64, b: &[u8]) {
    if !b.is_empty() {
        put_bytes(out, tag, b);
    }
}

/// A varint field, omitted when zero. Negative int32 and enum values arrive
/// sign-extended, so they take ten bytes as protobuf requires.
fn put_int(out: &mut Vec<u8>, tag: u64, v: i64) {
    if v != 0 {
        put_varint(out, tag);
        put_varint(out, v as u64);
    }
}

impl WirePeer {
    /// Encodes this `Peer` message on its own.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.id.len() + 24 * self.addrs.len());
        put_nonempty(&mut out, 10, &self.id);
        for a in &self.addrs {
            put_bytes(&mut out, 18, a);
        }
        put_int(&mut out, 24, self.connection.0.into());
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader(bytes);
        let mut p = WirePeer::default();
        while let Some(tag) = r.tag()? {
            match tag {
                10 => p.id = r.bytes()?.to_vec(),
                18 => p.addrs.push(r.bytes()?.to_vec()),
                24 => p.connection = ConnectionType(r.varint()? as i32),
                t => r.skip(t)?,
            }
        }
        Ok(p)
    }
}

impl WireRecord {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.key.len() + self.value.len());
        put_nonempty(&mut out, 10, &self.key);
        put_nonempty(&mut out, 18, &self.value);
        put_nonempty(&mut out, 42, self.time_received.as_bytes());
        put_nonempty(&mut out, 5330, &self.publisher);
        put_int(&mut out, 6216, self.ttl.into());
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader(bytes);
        let mut rec = WireRecord::default();
        while let Some(tag) = r.tag()? {
            match tag {
                10 => rec.key = r.bytes()?.to_vec(),
                18 => rec.value = r.bytes()?.to_vec(),
                42 => {
                    rec.time_received = String::from_utf8(r.bytes()?.to_vec())
                        .map_err(|_| DecodeError::InvalidUtf8)?
                }
                5330 => rec.publisher = r.bytes()?.to_vec(),
                6216 => rec.ttl = r.varint()? as u32,
                t => r.skip(t)?,
            }
        }
        Ok(rec)
    }
}

impl Message {
    /// A message of type `ty` about `key`, without record or peers.
    pub fn new(ty: MessageType, cluster_level_raw: i32, key: Vec<u8>) -> Self {
        Message {
            ty,
            cluster_level_raw,
            key,
            ..Message::default()
        }
    }

    /// Encodes the message (no length prefix).
    pub fn encode(&self) -> Vec<u8> {
        self.encode_with_raw_closer(&[])
    }

    /// Encodes the message with `raw` closer peers (already encoded `Peer` messages)
    /// placed before `closer_peers`. Byte-identical to [`Self::encode`] on the equivalent
    /// message; lets the routing table keep each entry pre-encoded.
    pub fn encode_with_raw_closer(&self, raw: &[&[u8]]) -> Vec<u8> {
        let raw_len: usize = raw.iter().map(|b| b.len() + 4).sum();
        let mut out = Vec::with_capacity(64 + self.key.len() + raw_len);
        put_int(&mut out, 8, self.ty.0.into());
        put_int(&mut out, 80, self.cluster_level_raw.into());
        put_nonempty(&mut out, 18, &self.key);
        if let Some(r) = &self.record {
            put_bytes(&mut out, 26, &r.encode());
        }
        for b in raw {
            put_bytes(&mut out, 66, b);
        }
        for p in &self.closer_peers {
            put_bytes(&mut out, 66, &p.encode());
        }
        for p in &self.provider_peers {
            put_bytes(&mut out, 74, &p.encode());
        }
        out
    }

    /// Decodes a message; unknown fields are skipped, truncated or malformed input is an error.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader(bytes);
        let mut m = Message::default();
        while let Some(tag) = r.tag()? {
            match tag {
                8 => m.ty = MessageType(r.varint()? as i32),
                80 => m.cluster_level_raw = r.varint()? as i32,
                18 => m.key = r.bytes()?.to_vec(),
                26 => m.record = Some(WireRecord::decode(r.bytes()?)?),
                66 => m.closer_peers.push(WirePeer::decode(r.bytes()?)?),
                74 => m.provider_peers.push(WirePeer::decode(r.bytes()?)?),
                t => r.skip(t)?,
            }
        }
        Ok(m)
    }
}

/// A cursor over a protobuf buffer; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&b, rest) = self.0.split_first().ok_or(DecodeError::Truncated)?;
            self.0 = rest;
            if i == 9 && b > 1 {
                return Err(DecodeError::VarintOverflow);
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::VarintOverflow)
    }

    /// The next field tag, or `None` at the end of the buffer.
    fn tag(&mut self) -> Result<Option<u64>, DecodeError> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let t = self.varint()?;
        if t >> 3 == 0 || t >> 3 > u64::from(u32::MAX >> 3) {
            return Err(DecodeError::InvalidTag);
        }
        Ok(Some(t))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let (head, rest) = self.0.split_at_checked(n).ok_or(DecodeError::Truncated)?;
        self.0 = rest;
        Ok(head)
    }

    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.varint()?;
        self.take(usize::try_from(n).map_err(|_| DecodeError::Truncated)?)
    }

    /// Skips a field of any wire type but the deprecated groups.
    fn skip(&mut self, tag: u64) -> Result<(), DecodeError> {
        match tag & 7 {
            0 => self.varint().map(drop),
            1 => self.take(8).map(drop),
            2 => self.bytes().map(drop),
            5 => self.take(4).map(drop),
            _ => Err(DecodeError::InvalidWireType),
        }
    }
}
