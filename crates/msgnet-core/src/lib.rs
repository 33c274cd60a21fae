//! # msgnet-core: the sans-IO heart of msgnet
//!
//! This crate holds every piece of protocol logic below the public API and performs no
//! I/O: no sockets, no clock, no global RNG. Time comes in as `now: Instant` arguments,
//! randomness from the seeded RNG in [`EndpointConfig::rng_seed`].
//!
//! - [`wire`]: the packet and frame codec (the multipacket frames INIT, ACK, CONTINUATION,
//!   RESET and ours). `docs/wire.md` is its specification.
//! - [`crypto`]: Noise IK/XX handshakes bound to libp2p identities, packet protection,
//!   stateless cookies.
//! - [`Endpoint`]: demultiplexes one socket's datagrams into sessions, runs handshakes,
//!   bounds half-open state, enforces the anti-amplification limit, answers with cookies
//!   under load; each session carries protocol channels with reliable delivery.
//!
//! ## Call order
//!
//! A driver owns one [`Endpoint`] per socket and loops:
//!
//! 1. feed inputs: [`Endpoint::handle_datagram`] for each received datagram,
//!    [`Endpoint::handle_timeout`] when the instant from `poll_timeout` has passed, and
//!    commands ([`Endpoint::send`], [`Endpoint::request`], [`Endpoint::respond`], ...);
//! 2. drain [`Endpoint::poll_transmit`] until `None`, sending each datagram;
//! 3. drain [`Endpoint::poll_event`] until `None`;
//! 4. arm a timer for [`Endpoint::poll_timeout`].
//!
//! Every input may produce output, so steps 2-4 follow every input.

mod cc;
mod channel;
pub mod config;
pub mod crypto;
mod endpoint;
mod handshake;
mod ranges;
mod replay;
mod rtt;
mod session;
pub mod service;
pub mod error;
pub mod event;
pub mod stats;
pub mod stream;
pub mod wire;

pub use config::{Delivery, EndpointConfig, SendOptions};
pub use endpoint::{Endpoint, MAX_ADDRS_PER_PEER, MAX_PROTOCOL_LEN};
pub use error::SendError;
pub use event::{
    Event, InboundRequest, IncomingMessage, MessageId, SessionId, SessionInfo, Transmit,
};
pub use stats::{DropReason, EndpointStats};

pub use libp2p_identity::{Keypair, PeerId};
