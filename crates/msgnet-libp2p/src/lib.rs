//! # msgnet-libp2p: msgnet's message API over rust-libp2p stream transports
//!
//! [`Behaviour`] is a `NetworkBehaviour` that users add to their own `Swarm`, beside
//! identify, ping, kad or anything else. It gives the swarm msgnet's message API:
//! [`Behaviour::send`], [`Behaviour::request`], [`Behaviour::handle`],
//! [`Behaviour::remove_handler`] and [`Behaviour::respond`], with outcomes reported as
//! `SwarmEvent::Behaviour(`[`Event`]`)`.
//!
//! ## On the wire
//!
//! Per connection, each side negotiates [`PROTOCOL`] (`/msgnet/1.0.0`) **once** with
//! multistream-select, on one long-lived outbound stream on which it only writes; the
//! peer's outbound stream is our inbound one. Frames flow on them as length-prefixed
//! records, as specified in [`msgnet_core::stream`], which is also the sans-IO state
//! machine ([`msgnet_core::stream::StreamConn`]) that this crate drives: one per
//! connection, owned by the behaviour. No stream is opened per message and no protocol is
//! negotiated per message; protocols are bound by INIT frames.
//!
//! ## The stream bridge
//!
//! Peers that do not speak `/msgnet/1.0.0` (its negotiation failed on the connection, or
//! identify reported the peer's protocols without it) are reached through the **bridge**,
//! for libp2p protocols made of one request and one response on a fresh stream, each
//! `uvarint length || bytes` (kad-dht, request-response with a length-prefixed codec, and
//! the like): [`Behaviour::request`] opens a stream with the protocol id, writes the
//! request, half-closes, reads the response. [`Behaviour::send`] does the same without
//! reading a response. A protocol registered with [`Behaviour::handle`] is also offered to
//! ordinary libp2p peers: an inbound stream of that protocol is read as one request and
//! delivered as [`Event::Message`] with `request: Some(..)`; the response given to
//! [`Behaviour::respond`] is written length-prefixed and the stream closed (an error
//! response closes it without writing). Bridge streams are bounded per connection and
//! time out after [`Config::bridge_timeout`].
//!
//! ## Driving it
//!
//! The behaviour is a plain value inside the swarm: call its methods through
//! `swarm.behaviour_mut()` and poll the swarm. Sends to a peer without a connection dial
//! it (`ToSwarm::Dial`, with addresses from [`Behaviour::add_address`] and any other
//! behaviour) and wait in a bounded per-peer queue; they fail with
//! [`SendError::Unreachable`] if the dial fails.
//!
//! Module map: `behaviour` (routing, queues, the `StreamConn`s), `handler` (the
//! per-connection `ConnectionHandler`: stream I/O only), `protocol` (upgrades and
//! length-prefixed I/O of the bridge).

mod behaviour;
pub mod handler;
mod protocol;

use std::time::Duration;

use bytes::Bytes;
use libp2p::swarm::ConnectionId;
use libp2p::PeerId;

pub use behaviour::{core_peer_id, libp2p_peer_id, Behaviour};
pub use msgnet_core::stream::{StreamConfig, PROTOCOL};
pub use msgnet_core::{InboundRequest, IncomingMessage, MessageId, SendError, SessionId};

/// Settings of a [`Behaviour`].
#[derive(Debug, Clone)]
pub struct Config {
    /// Limits of each connection's message layer.
    pub stream: StreamConfig,
    /// Most sends and requests per peer awaiting their outcome (queued, in flight, or
    /// waiting for a response); beyond it `send` and `request` return
    /// [`SendError::Backpressure`].
    pub max_in_flight_per_peer: usize,
    /// Most payload bytes per peer awaiting their outcome.
    pub max_pending_bytes_per_peer: usize,
    /// Output bytes handed to a connection's handler and not yet written to the stream.
    pub write_window: usize,
    /// Most concurrent bridge streams per connection and direction.
    pub max_bridge_streams: usize,
    /// A bridge stream (either direction) not finished within this time is dropped.
    pub bridge_timeout: Duration,
    /// Keep a connection open while its `/msgnet/1.0.0` streams are (messages can arrive
    /// at any time). When `false` the connection is kept only while work is pending, and
    /// the swarm's idle timeout applies.
    pub keep_alive: bool,
    /// Most peers whose addresses [`Behaviour::add_address`] remembers (8 per peer).
    pub max_address_book: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            stream: StreamConfig::default(),
            max_in_flight_per_peer: 4096,
            max_pending_bytes_per_peer: 32 << 20,
            write_window: 1 << 20,
            max_bridge_streams: 64,
            bridge_timeout: Duration::from_secs(30),
            keep_alive: true,
            max_address_book: 4096,
        }
    }
}

/// What the behaviour reports to the swarm (`SwarmEvent::Behaviour`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// A message or request for a registered protocol (over msgnet or the bridge). Answer
    /// requests with [`Behaviour::respond`].
    Message(IncomingMessage),
    /// A `send` finished: `Ok` when the peer acknowledged it (over the bridge: when the
    /// stream was written and closed), `Err` when it failed.
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
        /// The response, or why there is none.
        result: Result<Bytes, SendError>,
    },
    /// Whether a connection's peer speaks `/msgnet/1.0.0` became known.
    MsgnetSupport {
        /// The peer.
        peer: PeerId,
        /// The connection.
        connection: ConnectionId,
        /// `true`: messages flow on the msgnet streams; `false`: requests use the bridge.
        supported: bool,
    },
}
