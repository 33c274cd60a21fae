//! The swarm side of [`Behaviour`]: the `NetworkBehaviour` impl and the handling of
//! handler reports.

use std::task::{Context, Poll};

use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::swarm::{
    ConnectionClosed, ConnectionDenied, ConnectionId, DialFailure, FromSwarm, NetworkBehaviour,
    THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};
use msgnet_core::{InboundRequest, IncomingMessage, SendError};

use super::{core_peer_id, Behaviour, Status};
use crate::handler::{FromBehaviour, Handler, ToBehaviour};
use crate::Event;

impl Behaviour {
    fn on_handler_event(&mut self, peer: PeerId, c: ConnectionId, event: ToBehaviour) {
        self.ensure_conn(peer, c);
        match event {
            ToBehaviour::OutboundReady => self.set_status(c, Status::Ready),
            ToBehaviour::Unsupported => self.set_status(c, Status::Unsupported),
            ToBehaviour::Failed(reason) => {
                tracing::debug!(%peer, %reason, "msgnet streams failed");
                if let Some(conn) = self.conns.get_mut(&c) {
                    conn.stream.fail_all(SendError::SessionClosed(reason));
                }
                self.set_status(c, Status::Failed);
                self.flush_conn(c);
            }
            ToBehaviour::Input(bytes) => {
                let Self { conns, handlers, .. } = self;
                let Some(conn) = conns.get_mut(&c) else { return };
                if let Err(e) = conn.stream.handle_input(&bytes, &|p: &str| handlers.contains(p)) {
                    tracing::debug!(%peer, error = %e, "msgnet stream input rejected");
                    let ready = conn.status == Status::Ready;
                    self.flush_conn(c); // writes our CLOSE
                    if let Some(conn) = self.conns.get_mut(&c) {
                        conn.status = if ready { Status::Failed } else { conn.status };
                    }
                    return;
                }
                self.flush_conn(c);
            }
            ToBehaviour::Written(n) => {
                if let Some(conn) = self.conns.get_mut(&c) {
                    conn.in_handler = conn.in_handler.saturating_sub(n);
                }
                self.flush_conn(c);
            }
            ToBehaviour::BridgeResult { id, result } => self.finish(id, result),
            ToBehaviour::BridgeRequest { stream_id, protocol, payload } => {
                let Some(conn) = self.conns.get_mut(&c) else { return };
                let Some(proto) = self.handlers.get(protocol.as_ref()).cloned() else {
                    self.notify(peer, c, FromBehaviour::BridgeRespond { stream_id, payload: None });
                    return;
                };
                conn.bridge_in.insert(stream_id);
                let session = conn.bridge_session;
                self.push(ToSwarm::GenerateEvent(Event::Message(IncomingMessage {
                    peer: core_peer_id(&peer),
                    session,
                    protocol: proto.clone(),
                    payload,
                    request: Some(InboundRequest { session, protocol: proto, request_id: stream_id }),
                })));
            }
            ToBehaviour::BridgeInboundDone { stream_id } => {
                if let Some(conn) = self.conns.get_mut(&c) {
                    conn.bridge_in.remove(&stream_id);
                }
            }
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Event;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.new_handler())
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _: ConnectionId,
        maybe_peer: Option<PeerId>,
        _: &[Multiaddr],
        _: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        Ok(maybe_peer.and_then(|p| self.addresses.get(&p).cloned()).unwrap_or_default())
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.new_handler())
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        self.udp_on_swarm_event(&event);
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                self.ensure_conn(e.peer_id, e.connection_id);
                if let Some(p) = self.peers.get_mut(&e.peer_id) {
                    p.dialing = false;
                }
            }
            FromSwarm::ConnectionClosed(ConnectionClosed { peer_id, connection_id, .. }) => {
                self.on_connection_closed(peer_id, connection_id);
            }
            FromSwarm::DialFailure(DialFailure { peer_id: Some(peer), error, .. }) => {
                self.on_dial_failure(peer, error);
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(&mut self, peer: PeerId, c: ConnectionId, event: THandlerOutEvent<Self>) {
        self.on_handler_event(peer, c, event);
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        self.poll_udp(cx);
        self.poll_timeouts(cx);
        if let Some(e) = self.pending.pop_front() {
            return Poll::Ready(e);
        }
        self.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}
