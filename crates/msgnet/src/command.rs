//! The messages from handles to the driver: [`Cmd`] (sends and requests, on a bounded
//! channel) and [`Ctl`] (everything else, on an unbounded one; see the driver's docs for
//! why each is bounded). Plain data; owns nothing else.

use std::net::SocketAddr;

use bytes::Bytes;
use multiaddr::Multiaddr;
use libp2p_identity::PeerId;
use msgnet_core::{EndpointStats, InboundRequest, SendError, SendOptions, SessionInfo};
use tokio::sync::oneshot;

use crate::network::{ConnectionInfo, Transport, TransportStats};
use crate::HostError;

/// A send or request from a host handle.
pub(crate) enum Cmd {
    Send {
        peer: PeerId,
        protocol: String,
        payload: Bytes,
        opts: SendOptions,
        reply: oneshot::Sender<Result<(), SendError>>,
    },
    Request {
        peer: PeerId,
        protocol: String,
        payload: Bytes,
        opts: SendOptions,
        /// Chosen by the handle, to cancel the request on timeout.
        token: u64,
        reply: oneshot::Sender<Result<Bytes, SendError>>,
    },
}

impl Cmd {
    pub(crate) fn peer(&self) -> PeerId {
        match self {
            Cmd::Send { peer, .. } | Cmd::Request { peer, .. } => *peer,
        }
    }

    pub(crate) fn protocol(&self) -> &str {
        match self {
            Cmd::Send { protocol, .. } | Cmd::Request { protocol, .. } => protocol,
        }
    }

    pub(crate) fn payload(&self) -> &Bytes {
        match self {
            Cmd::Send { payload, .. } | Cmd::Request { payload, .. } => payload,
        }
    }

    pub(crate) fn opts(&self) -> SendOptions {
        match self {
            Cmd::Send { opts, .. } | Cmd::Request { opts, .. } => *opts,
        }
    }

    pub(crate) fn is_request(&self) -> bool {
        matches!(self, Cmd::Request { .. })
    }

    /// The cancellation token of a request.
    pub(crate) fn token(&self) -> Option<u64> {
        match self {
            Cmd::Send { .. } => None,
            Cmd::Request { token, .. } => Some(*token),
        }
    }

    /// Whether the caller stopped waiting (dropped its future).
    pub(crate) fn abandoned(&self) -> bool {
        match self {
            Cmd::Send { reply, .. } => reply.is_closed(),
            Cmd::Request { reply, .. } => reply.is_closed(),
        }
    }

    /// Answers the caller: a send ignores a response payload, a request's missing one is
    /// empty.
    pub(crate) fn finish(self, result: Result<Option<Bytes>, SendError>) {
        match self {
            Cmd::Send { reply, .. } => drop(reply.send(result.map(drop))),
            Cmd::Request { reply, .. } => drop(reply.send(result.map(Option::unwrap_or_default))),
        }
    }

    pub(crate) fn fail(self, error: SendError) {
        match self {
            Cmd::Send { reply, .. } => drop(reply.send(Err(error))),
            Cmd::Request { reply, .. } => drop(reply.send(Err(error))),
        }
    }
}

/// Which side of the driver delivered an inbound message (and takes its response).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Via {
    /// The UDP endpoint.
    Udp,
    /// The libp2p swarm (TCP or QUIC).
    Swarm,
}

/// Everything else from handles, `Incoming`s and `IncomingMessage`s.
pub(crate) enum Ctl {
    Register { protocol: String },
    Unregister { protocol: String },
    Respond { request: InboundRequest, via: Via, result: Result<Bytes, (u8, String)> },
    Cancel { token: u64 },
    AddAddress { peer: PeerId, transport: Transport, addr: Multiaddr, sock: Option<SocketAddr> },
    Peers { reply: oneshot::Sender<Vec<PeerId>> },
    Sessions { peer: PeerId, reply: oneshot::Sender<Vec<SessionInfo>> },
    Connections { peer: PeerId, reply: oneshot::Sender<Vec<ConnectionInfo>> },
    ClosePeer { peer: PeerId, reply: oneshot::Sender<()> },
    /// Stop listening on `addr`; for UDP, `keep` are the UDP sockets to bind again (the
    /// other address family's).
    RemoveListener { addr: Multiaddr, keep: Vec<SocketAddr>, reply: oneshot::Sender<Result<Vec<Multiaddr>, HostError>> },
    /// The transport the driver routes `peer`'s messages on after consolidation.
    Consolidated { peer: PeerId, reply: oneshot::Sender<Option<Transport>> },
    TransportStats { reply: oneshot::Sender<TransportStats> },
    Stats { reply: oneshot::Sender<EndpointStats> },
    Close { reply: oneshot::Sender<()> },
    /// The last host handle was dropped.
    Shutdown,
}

