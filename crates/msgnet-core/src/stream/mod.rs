//! Multipacket frames over a reliable, ordered byte stream (libp2p streams).
//!
//! On libp2p stream transports (TCP+noise+yamux, QUIC) msgnet negotiates
//! `/msgnet/1.0.0` once per connection with multistream-select, and each side opens one
//! long-lived outbound stream on which it writes and never reads. The peer's outbound
//! stream is our inbound one. This module is the sans-IO state machine for one such
//! connection, both directions: [`StreamConn`]. It performs no I/O, reads no clock and
//! uses no randomness; it calls only [`crate::wire`] and the shared event/error types.
//!
//! ## Bytes on the stream
//!
//! Each direction is a sequence of **records**: an unsigned LEB128 length
//! (`uvarint`, minimal, at most [`MAX_RECORD_LEN`] = 1 MiB; larger is
//! [`StreamError::RecordTooLarge`]) followed by that many bytes of coalesced frames in the
//! codec of `docs/wire.md` §4. A record that fails to decode is fatal for the connection
//! (there is no way to resynchronise a byte stream). An empty record is allowed and
//! ignored.
//!
//! ## Frames on a stream (differences from UDP, `docs/wire.md` §6.6)
//!
//! - Message frames are unordered-typed, carry **no sequence number** (S = 0; the stream
//!   is reliable and ordered), and carry an explicit payload length. A sequence number
//!   sent by a peer is ignored. The first message of a protocol in a direction is an INIT
//!   (protocol string, int, `transport_id` 0); later ones are CONTINUATIONs, since a
//!   reliable stream cannot lose the INIT.
//! - Every message frame (any kind) received gets the next **stream index** 0, 1, 2, ….
//!   The receiver acknowledges with a SACK with one range `(0, count − 1)` on its own
//!   outbound stream, written lazily by [`StreamConn::poll_output`] (a burst of input
//!   costs one SACK): after an input batch that contained a one-way message, once
//!   [`SACK_EVERY`] messages are unacknowledged, and otherwise on the next output it
//!   writes anyway. A sent message completes (`Event::SendComplete { Ok }`) when a SACK
//!   covers its index; a request completes when its response arrives, so requests and
//!   responses need no SACK of their own: theirs rides on the response or the next
//!   request (one write per direction per round trip), and the peer's bookkeeping of
//!   unacknowledged requests and responses stays below [`SACK_EVERY`].
//! - A message or request for a protocol without a handler is answered with
//!   `RESET { protocol_int, NO_HANDLER, seq: Some(index) }`; the sender fails exactly that
//!   message with [`SendError::UnsupportedProtocol`](crate::SendError::UnsupportedProtocol). A CONTINUATION for an unbound int is
//!   answered with `RESET { UNKNOWN_PROTOCOL_INT, seq: Some(index) }` and fails the same
//!   way. Within a record RESETs are applied before SACKs. A RESET is always written
//!   before the SACK that covers its message.
//! - CLOSE ends the conversation: everything pending fails with
//!   [`SendError::SessionClosed`](crate::SendError::SessionClosed) and later input is ignored. PING, PADDING and ACK
//!   (transport consolidation, not used yet) are accepted and ignored.
//!
//! ## Call order
//!
//! 1. inputs: [`StreamConn::handle_input`] with bytes read from the inbound stream (any
//!    chunking), and commands ([`StreamConn::send`], [`StreamConn::request`],
//!    [`StreamConn::respond`]);
//! 2. drain [`StreamConn::poll_output`] and write the bytes to the outbound stream, in
//!    order;
//! 3. drain [`StreamConn::poll_event`];
//! 4. when the connection ends, [`StreamConn::fail_all`].
//!
//! ## Bounds
//!
//! Partial input is buffered up to one record. Messages awaiting acknowledgement or a
//! response are capped by [`StreamConfig::max_in_flight`], output bytes not yet drained by
//! [`StreamConfig::max_output`] (commands get [`SendError::Backpressure`](crate::SendError::Backpressure); output caused by
//! peer input beyond twice the cap is [`StreamError::OutputOverflow`]), unanswered inbound
//! requests by [`StreamConfig::max_inbound_requests`] (beyond it a request is answered with
//! an error response, code 2), and protocols bound by the peer by
//! [`StreamConfig::max_inbound_protocols`]. A driver should stop reading while
//! [`StreamConn::wants_input`] is false.

mod conn;
mod record;
#[cfg(test)]
mod tests;

pub use conn::StreamConn;
pub use record::{encode_record, RecordDecoder, MAX_RECORD_LEN};

use crate::wire::WireError;

/// The multistream-select protocol id of the message layer.
pub const PROTOCOL: &str = "/msgnet/1.0.0";

/// Largest frame header a message frame may need (INIT with a 1024-byte protocol, request
/// id and length), rounded up.
pub const MAX_FRAME_OVERHEAD: usize = 1100;

/// Most received messages a [`StreamConn`] leaves unacknowledged while it has nothing
/// else to write (requests and responses; a one-way message is acknowledged at once).
pub const SACK_EVERY: u64 = 32;

/// Error-response code used when the receiver has too many unanswered requests.
pub const BUSY_CODE: u8 = 2;

/// Limits of one [`StreamConn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConfig {
    /// Largest payload accepted by `send`, `request` and `respond`; at most
    /// [`MAX_RECORD_LEN`] − [`MAX_FRAME_OVERHEAD`].
    pub max_message_size: usize,
    /// Most sends and requests awaiting acknowledgement or response.
    pub max_in_flight: usize,
    /// Most output bytes buffered before commands get `Backpressure`.
    pub max_output: usize,
    /// Most inbound requests awaiting [`StreamConn::respond`].
    pub max_inbound_requests: usize,
    /// Most protocol ints the peer may bind.
    pub max_inbound_protocols: usize,
    /// [`StreamConn::wants_input`] is false while this many events are undrained.
    pub max_events: usize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            max_message_size: MAX_RECORD_LEN - MAX_FRAME_OVERHEAD,
            max_in_flight: 4096,
            max_output: 8 << 20,
            max_inbound_requests: 4096,
            max_inbound_protocols: 1024,
            max_events: 4096,
        }
    }
}

/// Why the stream's input was rejected. Every error is fatal for the connection: the
/// [`StreamConn`] fails everything pending and writes a CLOSE.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// A record's frames did not decode.
    #[error("malformed frames: {0}")]
    Wire(#[from] WireError),
    /// A record length prefix above [`MAX_RECORD_LEN`] (or longer than 3 bytes).
    #[error("record of {0} bytes exceeds 1 MiB")]
    RecordTooLarge(u64),
    /// The peer broke a rule of the stream protocol; the string says which.
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    /// The peer caused more output than the limit while we could not write it.
    #[error("output buffer overflow (peer not reading)")]
    OutputOverflow,
    /// Input after the connection failed or was closed locally.
    #[error("stream connection closed")]
    Closed,
}
