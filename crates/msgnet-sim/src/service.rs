//! Services: sans-IO protocol state machines (Kademlia, pubsub, ...) hosted on sim nodes.
//!
//! A [`Service`] sees messages only, as it would on a real host: inbound messages and
//! requests on the protocols it claims, the outcome of its own sends and requests, and
//! session changes; it asks for a timer with [`Service::poll_timeout`] and emits
//! [`Output`]s. The simulator (`sim.rs`) calls it at the right virtual instants and puts
//! its outputs through the node's real [`msgnet_core::Endpoint`], so every message
//! crosses real sessions (Noise handshakes, encryption, acknowledgements) and simulated
//! links. The node-side bookkeeping (which service owns a protocol, which message id
//! belongs to which service output) is in `node.rs`.
//!
//! # Call order (what the simulator guarantees)
//!
//! - An inbound message on a claimed protocol → [`Service::handle_message`]; for a
//!   request, the returned [`Reply`] is sent back as the response (`None`: no answer,
//!   the requester's request eventually fails).
//! - The outcome of an [`Output`] → [`Service::handle_outcome`] with the output's token,
//!   exactly once: at once if the endpoint refused it (no address, backpressure, ...),
//!   else when the endpoint reports `SendComplete` / `Response`.
//! - A session to a peer came up or went down → [`Service::handle_session`].
//! - The instant from [`Service::poll_timeout`] has come → [`Service::handle_timeout`].
//! - After every input (and after [`Sim::with_service`](crate::Sim::with_service)),
//!   [`Service::poll_output`] is drained and the timer re-armed.
//!
//! Services are called in a fixed order (node order of events, service order within a
//! node), so a run with services is as deterministic as one without.

use std::any::Any;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
pub use msgnet_core::service::{Outcome, OutputKind, Reply};
use msgnet_core::{IncomingMessage, PeerId, SendOptions};

/// A message a service wants sent.
#[derive(Debug, Clone)]
pub struct Output {
    /// Chosen by the service; handed back with the outcome.
    pub token: u64,
    /// Destination.
    pub peer: PeerId,
    /// An address for `peer` to give the endpoint first (the service's own knowledge,
    /// e.g. from a routing table); `None` if the endpoint should know it already.
    pub addr: Option<SocketAddr>,
    /// Protocol id.
    pub protocol: String,
    /// Payload.
    pub payload: Bytes,
    /// Delivery options.
    pub opts: SendOptions,
    /// Message or request.
    pub kind: OutputKind,
}

/// A session change reported to services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionChange {
    /// A session to the peer completed its handshake; the peer is at this address.
    Up(SocketAddr),
    /// A session to the peer ended.
    Down,
}

/// Downcasting support, implemented for every `'static` type (so services need not).
pub trait AsAny: Any {
    /// `self` as `&dyn Any`.
    fn as_any(&self) -> &dyn Any;
    /// `self` as `&mut dyn Any`.
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Any> AsAny for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// A sans-IO protocol state machine hosted on a node. See the module docs for the call
/// order. Every method takes the virtual `now`; a service must read no clock and use no
/// global randomness, or runs stop being reproducible. `Send`: in windowed mode
/// ([`Sim::set_threads`](crate::Sim::set_threads)) nodes run on worker threads, several
/// nodes at once, so services of different nodes must not share mutable state.
pub trait Service: AsAny + Send {
    /// The protocols this service handles; the simulator registers them on the node's
    /// endpoint when the service is added. A protocol belongs to at most one service of
    /// a node (the first added wins).
    fn protocols(&self) -> Vec<String>;

    /// An inbound message or request on one of [`Service::protocols`], from `msg.peer`,
    /// whose session's remote address is `remote` (the peer's listen address in the
    /// simulator). For a request, `Some` is sent back as the response.
    fn handle_message(
        &mut self,
        now: Instant,
        msg: &IncomingMessage,
        remote: Option<SocketAddr>,
    ) -> Option<Reply>;

    /// The outcome of the output with `token`.
    fn handle_outcome(&mut self, now: Instant, token: u64, outcome: Outcome);

    /// A session to `peer` came up or went down.
    fn handle_session(&mut self, now: Instant, peer: PeerId, change: SessionChange) {
        let _ = (now, peer, change);
    }

    /// The deadline from [`Service::poll_timeout`] has passed (may be called late, never
    /// early).
    fn handle_timeout(&mut self, now: Instant) {
        let _ = now;
    }

    /// When to call [`Service::handle_timeout`] next.
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// The next message to send.
    fn poll_output(&mut self) -> Option<Output>;
}
