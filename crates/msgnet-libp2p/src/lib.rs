//! # msgnet-libp2p: msgnet's message API over rust-libp2p stream transports and UDP
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
//! ## The UDP packet transport
//!
//! [`Behaviour::with_udp`] adds msgnet's own packet transport to the same behaviour, so
//! one `Swarm` speaks both: the behaviour binds a UDP socket and runs a sans-IO
//! [`msgnet_core::Endpoint`] on it with the swarm's keypair (Noise sessions bound to the
//! same `PeerId`), driven from `NetworkBehaviour::poll` as libp2p-mdns drives its sockets.
//! Its addresses are `/ip4|ip6/<ip>/udp/<port>` (no `/quic-v1`, which is libp2p's QUIC),
//! optionally with `/p2p/<id>`; see [`multiaddr_to_socket`].
//!
//! - **Routing.** A send or request goes over UDP when the peer has a UDP session or a
//!   known UDP address (given to [`Behaviour::add_address`], reported by another
//!   behaviour such as identify as `NewExternalAddrOfPeer`, or learnt when the peer
//!   contacted us), else over libp2p connections as above. If the UDP handshake cannot
//!   reach the peer and it has a libp2p connection or address, the send moves there.
//!   Messages on different transports are not ordered with respect to each other.
//! - **Delivery guarantees.** [`Behaviour::send_with`] and [`Behaviour::request_with`]
//!   take [`SendOptions`]: over UDP the endpoint applies them as a `msgnet::Host` does
//!   ([`Delivery::Unreliable`] datagrams, `Reliable`, `Ordered` per protocol; 0-RTT or
//!   not); over a libp2p stream every message is reliable and in order anyway.
//! - **Inbound.** UDP messages and requests arrive as the same [`Event::Message`]; their
//!   [`SessionId`] has the [`UDP_SESSION`] bit set, and [`Behaviour::respond`] answers over
//!   UDP. Outcomes are [`Event::SendComplete`] and [`Event::Response`], as on streams;
//!   a peer that does not answer fails with [`SendError::Unreachable`] after the
//!   endpoint's `handshake_timeout`.
//! - **Addresses.** The socket's addresses are [`Event::UdpListenAddr`] and
//!   [`Behaviour::udp_listen_addrs`] (for a socket bound to `0.0.0.0`/`::`, its port on
//!   the IPs of the swarm's listen addresses); `Swarm::add_external_address` makes
//!   identify advertise them, and a peer's identify then hands them to its msgnet
//!   behaviour. Sessions are reported as [`Event::UdpSessionUp`] / [`Event::UdpSessionDown`],
//!   counters by [`Behaviour::udp_stats`].
//! - **Bounds.** At most 64 datagrams are read per poll, and none while events wait for
//!   the swarm; a datagram the socket cannot take waits in one slot with the socket's
//!   waker registered. The endpoint bounds its own queues ([`EndpointConfig`]).
//! - **Closing.** Dropping the behaviour (the swarm) closes its UDP sessions: peers get
//!   CLOSE at once rather than waiting for their idle timeout.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use libp2p::{noise, tcp, yamux};
//! use msgnet_libp2p::{Behaviour, Config, EndpointConfig};
//!
//! let mut swarm = libp2p::SwarmBuilder::with_new_identity()
//!     .with_tokio()
//!     .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)?
//!     .with_behaviour(|key| -> Result<Behaviour, Box<dyn std::error::Error + Send + Sync>> {
//!         let udp = "/ip4/0.0.0.0/udp/0".parse()?;
//!         Ok(Behaviour::new(Config::default()).with_udp(key, &udp, EndpointConfig::default())?)
//!     })?
//!     .build();
//! swarm.listen_on("/ip4/0.0.0.0/tcp/0".parse()?)?;
//! swarm.behaviour_mut().handle("/chat/1");
//! # Ok(()) }
//! ```
//!
//! Module map: `behaviour` (routing, queues, the `StreamConn`s), `behaviour::udp` (the UDP
//! socket, endpoint and timer), `handler` (the per-connection `ConnectionHandler`: stream
//! I/O only), `protocol` (upgrades and length-prefixed I/O of the bridge).

mod behaviour;
pub mod handler;
mod protocol;

use std::time::Duration;

use bytes::Bytes;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};

pub use behaviour::udp::{multiaddr_to_socket, socket_to_multiaddr, UdpError, UDP_SESSION};
pub use behaviour::{core_peer_id, libp2p_peer_id, Behaviour};
pub use msgnet_core::{DropReason, EndpointConfig, EndpointStats, SessionInfo};
pub use msgnet_core::stream::{StreamConfig, PROTOCOL};
pub use msgnet_core::{Delivery, InboundRequest, IncomingMessage, MessageId, SendError, SendOptions, SessionId};

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
    /// A request over libp2p connections (msgnet stream or bridge; counted from when it
    /// is routed there, so queueing and dialing included) without a response within this
    /// time fails with [`SendError::TimedOut`] and its bookkeeping is released; a response
    /// arriving later is dropped and counted ([`Behaviour::late_responses`]). Requests
    /// over the UDP transport get this deadline too (and their endpoint's `send_timeout`
    /// bounds the wait for an acknowledgement). `Duration::MAX` disables it.
    pub request_timeout: Duration,
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
            request_timeout: Duration::from_secs(30),
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
    /// The UDP transport ([`Behaviour::with_udp`]) listens on a new address. Pass it to
    /// `Swarm::add_external_address` to have identify advertise it.
    UdpListenAddr {
        /// `/ip4|ip6/<ip>/udp/<port>`.
        address: Multiaddr,
    },
    /// A UDP session with a peer completed its handshake.
    UdpSessionUp {
        /// The authenticated peer.
        peer: PeerId,
        /// Its address, `/ip4|ip6/<ip>/udp/<port>`.
        remote: Multiaddr,
    },
    /// A UDP session ended (idle, closed by either side, or failed).
    UdpSessionDown {
        /// The peer.
        peer: PeerId,
        /// Why it ended.
        reason: String,
    },
}
