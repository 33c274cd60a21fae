//! Errors, split by cause: malformed input, a peer that misbehaved, API misuse.

/// Why a protobuf could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The buffer ended inside a field.
    #[error("truncated protobuf")]
    Truncated,
    /// A varint longer than ten bytes or above 2^64.
    #[error("varint overflow")]
    VarintOverflow,
    /// Field number zero or out of range.
    #[error("invalid field tag")]
    InvalidTag,
    /// A group (wire types 3 and 4) or an undefined wire type.
    #[error("invalid wire type")]
    InvalidWireType,
    /// `timeReceived` was not UTF-8.
    #[error("invalid UTF-8 in string field")]
    InvalidUtf8,
}

/// Errors returned by [`crate::Kademlia`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KadError {
    /// Malformed protobuf from the network (counted in [`crate::KadStats::malformed`]).
    #[error("malformed message: {0}")]
    Malformed(#[from] DecodeError),
    /// A message larger than [`crate::KadConfig::max_message_size`].
    #[error("message too large")]
    TooLarge,
    /// A well-formed message the protocol does not allow here (unknown type, missing key,
    /// missing record, a provider that is not the sender).
    #[error("invalid request: {0}")]
    InvalidRequest(&'static str),
    /// The validator rejected a record, or it exceeds the size limit.
    #[error("invalid record")]
    InvalidRecord,
    /// The record or provider store is full.
    #[error("store full")]
    StoreFull,
    /// In client mode we do not answer requests.
    #[error("client mode: not serving requests")]
    ClientMode,
    /// The routing table is empty: add a bootstrap address first.
    #[error("no known peers")]
    NoKnownPeers,
    /// [`crate::KadConfig::max_queries`] queries are running (or wait for their event to
    /// be taken).
    #[error("too many queries")]
    TooManyQueries,
}
