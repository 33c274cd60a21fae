//! Errors, split by cause: API misuse, the peer, the network.

/// Why a send or request failed. Every failure of a reliable send is one of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The peer has no handler for this protocol (it answered RESET).
    #[error("peer does not support protocol {0}")]
    UnsupportedProtocol(String),
    /// No address is known for the peer and no session exists.
    #[error("no known address for peer")]
    NoAddress,
    /// The handshake did not complete (no answer, or the peer's identity did not match).
    #[error("peer unreachable: {0}")]
    Unreachable(String),
    /// The message was not acknowledged (or the request not answered) in time.
    #[error("timed out")]
    TimedOut,
    /// The session closed before the message was acknowledged.
    #[error("session closed: {0}")]
    SessionClosed(String),
    /// The message does not fit the largest message the transport carries.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    MessageTooLarge {
        /// Size of the refused message.
        size: usize,
        /// Largest size accepted.
        limit: usize,
    },
    /// The protocol id is empty or longer than 1024 bytes.
    #[error("invalid protocol id")]
    InvalidProtocol,
    /// Too many messages are in flight to this peer; retry after some complete.
    #[error("too many messages in flight")]
    Backpressure,
    /// The remote handler failed the request (or dropped it without replying).
    #[error("remote error {code}: {reason}")]
    Remote {
        /// Error code chosen by the remote (1: handler dropped the request).
        code: u8,
        /// Human-readable reason.
        reason: String,
    },
    /// The endpoint is closed.
    #[error("endpoint closed")]
    Closed,
    /// Responding to a request that is unknown or already answered.
    #[error("unknown request")]
    UnknownRequest,
}
