//! What the endpoint reports to its driver: plain values drained with
//! [`Endpoint::poll_event`](crate::Endpoint::poll_event).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use libp2p_identity::PeerId;

use crate::SendError;

/// Local identifier of a session, unique for the endpoint's lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

/// Identifier of one `send` or `request` call, unique for the endpoint's lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub u64);

/// Names an inbound request so that it can be answered with
/// [`Endpoint::respond`](crate::Endpoint::respond).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InboundRequest {
    /// The session the request arrived on (the response goes back on it).
    pub session: SessionId,
    /// The channel's protocol.
    pub protocol: Arc<str>,
    /// The requester's request id.
    pub request_id: u64,
}

/// A message delivered to a local handler.
#[derive(Debug, Clone)]
pub struct IncomingMessage {
    /// Who sent it (authenticated by the session handshake).
    pub peer: PeerId,
    /// The session it arrived on.
    pub session: SessionId,
    /// The protocol id it was sent on.
    pub protocol: Arc<str>,
    /// The message bytes.
    pub payload: Bytes,
    /// `Some` when the sender expects a response.
    pub request: Option<InboundRequest>,
}

/// Everything the endpoint reports.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// A message or request for a registered protocol.
    Message(IncomingMessage),
    /// A `send` finished: `Ok` when the peer acknowledged it (or, for `Unreliable`, when it
    /// was handed to the network), `Err` when it failed.
    SendComplete {
        /// The id `send` returned.
        id: MessageId,
        /// The outcome.
        result: Result<(), SendError>,
    },
    /// A `request` finished with the peer's response or an error.
    Response {
        /// The id `request` returned.
        id: MessageId,
        /// The response payload, or why there is none.
        result: Result<Bytes, SendError>,
    },
    /// A session completed its handshake.
    SessionUp {
        /// The authenticated peer.
        peer: PeerId,
        /// The session.
        session: SessionId,
        /// The peer's address.
        remote: SocketAddr,
    },
    /// A session ended.
    SessionDown {
        /// The peer.
        peer: PeerId,
        /// The session.
        session: SessionId,
        /// Why it ended.
        reason: String,
    },
}

/// A datagram to send, produced by [`Endpoint::poll_transmit`](crate::Endpoint::poll_transmit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub destination: SocketAddr,
    /// Number of bytes written at the start of the caller's buffer.
    pub size: usize,
}

/// A snapshot of one session, for [`Endpoint::sessions`](crate::Endpoint::sessions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The session.
    pub id: SessionId,
    /// The peer's current address.
    pub remote: SocketAddr,
    /// Whether the handshake has completed.
    pub established: bool,
    /// Whether we started the handshake.
    pub initiator: bool,
    /// The Noise pattern used (`"IK"` or `"XX"`).
    pub pattern: &'static str,
    /// Smoothed round-trip time, if measured.
    pub srtt: Option<std::time::Duration>,
    /// Packets sent and received on the session.
    pub packets_sent: u64,
    /// Packets received.
    pub packets_received: u64,
    /// Congestion window, bytes.
    pub cwnd: u64,
    /// Bytes of ack-eliciting packets in flight.
    pub bytes_in_flight: u64,
    /// Largest UDP payload confirmed on the path (path MTU discovery).
    pub mtu: usize,
}
