//! The endpoint: one socket's sessions. (skeleton: bodies arrive with the core)

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use libp2p_identity::{Keypair, PeerId};

use crate::{
    EndpointConfig, EndpointStats, Event, InboundRequest, MessageId, SendError, SendOptions,
    SessionInfo, Transmit,
};

/// One UDP socket's worth of msgnet: sessions, handshakes and channels. Sans-IO.
pub struct Endpoint {
    stats: EndpointStats,
}

#[allow(unused_variables, missing_docs, clippy::unused_self)]
impl Endpoint {
    /// Creates an endpoint for `keypair`. `unix_now` is the wall-clock time (since the UNIX
    /// epoch) at `now`; it dates handshake initiations for replay protection.
    pub fn new(config: EndpointConfig, keypair: &Keypair, now: Instant, unix_now: Duration) -> Self {
        unimplemented!()
    }
    pub fn local_peer_id(&self) -> PeerId { unimplemented!() }
    /// Largest payload one message may carry.
    pub fn max_message_size(&self) -> usize { unimplemented!() }
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &mut [u8]) { unimplemented!() }
    pub fn handle_timeout(&mut self, now: Instant) { unimplemented!() }
    pub fn add_address(&mut self, peer: PeerId, addr: SocketAddr) { unimplemented!() }
    pub fn register_protocol(&mut self, protocol: &str) -> bool { unimplemented!() }
    pub fn unregister_protocol(&mut self, protocol: &str) -> bool { unimplemented!() }
    pub fn send(&mut self, now: Instant, peer: PeerId, protocol: &str, payload: Bytes, opts: SendOptions) -> Result<MessageId, SendError> { unimplemented!() }
    pub fn request(&mut self, now: Instant, peer: PeerId, protocol: &str, payload: Bytes, opts: SendOptions) -> Result<MessageId, SendError> { unimplemented!() }
    pub fn respond(&mut self, now: Instant, request: &InboundRequest, result: Result<Bytes, (u8, String)>) -> Result<(), SendError> { unimplemented!() }
    pub fn cancel(&mut self, id: MessageId) { unimplemented!() }
    pub fn peers(&self) -> Vec<PeerId> { unimplemented!() }
    pub fn sessions(&self, peer: &PeerId) -> Vec<SessionInfo> { unimplemented!() }
    pub fn close_peer(&mut self, now: Instant, peer: &PeerId) { unimplemented!() }
    pub fn close(&mut self, now: Instant) { unimplemented!() }
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> { unimplemented!() }
    pub fn poll_event(&mut self) -> Option<Event> { unimplemented!() }
    pub fn poll_timeout(&self) -> Option<Instant> { unimplemented!() }
    pub fn stats(&self) -> &EndpointStats { &self.stats }
}
