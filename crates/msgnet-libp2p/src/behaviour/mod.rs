//! [`Behaviour`]: routing, per-peer queues and one [`StreamConn`] per connection.
//!
//! The behaviour owns every connection's message-layer state, so the API is synchronous
//! and a driver can call it directly; handlers only move bytes. Per connection the
//! msgnet status goes `Pending` → `Ready` (our `/msgnet/1.0.0` stream is open),
//! `Unsupported` (the bridge is used) or `Failed`. A send picks a `Ready` connection; while
//! any is `Pending` it waits in the peer's queue; with only `Unsupported` ones it uses the
//! bridge; with no connection it dials and waits.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::task::Waker;

use bytes::Bytes;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, DialError, NotifyHandler, ToSwarm};
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use msgnet_core::stream::{StreamConn, PROTOCOL};
use msgnet_core::{InboundRequest, MessageId, SendError, SendOptions, SessionId};

use crate::handler::{FromBehaviour, Handler, HandlerConfig};
use crate::{Config, Event};

/// Addresses remembered per peer.
const ADDRESSES_PER_PEER: usize = 8;

/// libp2p 0.57 uses `libp2p-identity` 0.3 while msgnet-core is on 0.2: the same
/// multihash bytes, two Rust types. Converts at the boundary until the workspace moves to
/// 0.3 (the conversion cannot fail for a valid `PeerId`).
pub fn core_peer_id(peer: &PeerId) -> msgnet_core::PeerId {
    msgnet_core::PeerId::from_bytes(&peer.to_bytes()).unwrap_or_else(|_| msgnet_core::PeerId::random())
}

/// The inverse of [`core_peer_id`].
pub fn libp2p_peer_id(peer: &msgnet_core::PeerId) -> PeerId {
    PeerId::from_bytes(&peer.to_bytes()).unwrap_or_else(|_| PeerId::random())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Pending,
    Ready,
    Unsupported,
    Failed,
}

#[derive(Debug)]
struct Conn {
    peer: PeerId,
    status: Status,
    stream: StreamConn,
    bridge_session: SessionId,
    /// Bytes handed to the handler and not yet reported written.
    in_handler: usize,
    /// Inbound bridge requests awaiting `respond`.
    bridge_in: HashSet<u64>,
}

#[derive(Debug)]
struct Queued {
    id: MessageId,
    protocol: Arc<str>,
    payload: Bytes,
    request: bool,
    /// Used on UDP; a stream carries every message reliably and in order.
    opts: SendOptions,
}

#[derive(Debug, Default)]
struct Peer {
    conns: Vec<ConnectionId>,
    queue: VecDeque<Queued>,
    dialing: bool,
    in_flight: usize,
    bytes: usize,
}

#[derive(Debug)]
struct Outstanding {
    peer: PeerId,
    protocol: Arc<str>,
    bytes: usize,
    request: bool,
    /// The connection of a bridge stream carrying it.
    bridge_conn: Option<ConnectionId>,
}

/// msgnet's message API as a `NetworkBehaviour`. See the [crate docs](crate).
pub struct Behaviour {
    config: Config,
    handlers: HashSet<Arc<str>>,
    bridged: Arc<Vec<StreamProtocol>>,
    next_message_id: u64,
    next_session: u64,
    peers: HashMap<PeerId, Peer>,
    conns: HashMap<ConnectionId, Conn>,
    /// Session id → (connection, is the bridge session).
    sessions: HashMap<SessionId, (ConnectionId, bool)>,
    outstanding: HashMap<MessageId, Outstanding>,
    addresses: HashMap<PeerId, Vec<Multiaddr>>,
    pending: VecDeque<ToSwarm<Event, FromBehaviour>>,
    waker: Option<Waker>,
    /// The UDP packet transport, if [`Behaviour::with_udp`] turned it on.
    udp: Option<udp::Udp>,
    /// Request deadlines ([`Config::request_timeout`]).
    timeouts: timeout::Timeouts,
}

impl Behaviour {
    /// A behaviour with no handlers.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            handlers: HashSet::new(),
            bridged: Arc::new(Vec::new()),
            next_message_id: 0,
            next_session: 0,
            peers: HashMap::new(),
            conns: HashMap::new(),
            sessions: HashMap::new(),
            outstanding: HashMap::new(),
            addresses: HashMap::new(),
            pending: VecDeque::new(),
            waker: None,
            udp: None,
            timeouts: timeout::Timeouts::default(),
        }
    }

    /// Registers a handler: messages and requests for `protocol` are delivered as
    /// [`Event::Message`], and ordinary libp2p peers may open bridge streams with it (when
    /// it is a valid libp2p protocol id, starting with `/`). Returns `false` if it was
    /// registered already.
    pub fn handle(&mut self, protocol: &str) -> bool {
        let added = self.handlers.insert(Arc::from(protocol));
        if added {
            self.udp_protocol(protocol, true);
            self.update_bridged();
        }
        added
    }

    /// Unregisters a handler; later messages for it are refused (`UnsupportedProtocol` at
    /// the sender). Returns whether it was registered.
    pub fn remove_handler(&mut self, protocol: &str) -> bool {
        let removed = self.handlers.remove(protocol);
        if removed {
            self.udp_protocol(protocol, false);
            self.update_bridged();
        }
        removed
    }

    /// Remembers an address to dial `peer` at (at most 8 per peer, and
    /// [`Config::max_address_book`] peers). With the UDP transport on
    /// ([`Behaviour::with_udp`]), `/ip4|ip6/<ip>/udp/<port>` addresses (no `/quic-v1`;
    /// optionally `/p2p/<peer>`) are the UDP transport's: later sends to `peer` use UDP.
    pub fn add_address(&mut self, peer: PeerId, addr: Multiaddr) {
        if self.udp_add_address(peer, &addr) {
            return; // `/ip4|ip6/../udp/<port>`: the UDP transport's
        }
        if !self.addresses.contains_key(&peer) && self.addresses.len() >= self.config.max_address_book {
            return;
        }
        let list = self.addresses.entry(peer).or_default();
        if !list.contains(&addr) {
            if list.len() >= ADDRESSES_PER_PEER {
                list.remove(0);
            }
            list.push(addr);
        }
    }

    /// Whether `peer` speaks `/msgnet/1.0.0`: `Some(true)` if a connection has its msgnet
    /// stream open, `Some(false)` if every resolved connection lacks it, `None` if unknown.
    pub fn supports_msgnet(&self, peer: &PeerId) -> Option<bool> {
        let p = self.peers.get(peer)?;
        let statuses: Vec<Status> = p.conns.iter().filter_map(|c| self.conns.get(c)).map(|c| c.status).collect();
        if statuses.contains(&Status::Ready) {
            Some(true)
        } else if statuses.contains(&Status::Unsupported) {
            Some(false)
        } else {
            None
        }
    }

    /// Sends a one-way message. The outcome arrives as [`Event::SendComplete`]: `Ok` once
    /// the peer acknowledged it. Errors here are immediate refusals (invalid protocol,
    /// too large, [`SendError::Backpressure`]); no event follows them.
    ///
    /// With the UDP transport on, a peer with a UDP session or a known UDP address is
    /// reached over UDP (falling back to libp2p if the UDP handshake cannot reach it and
    /// a libp2p connection or address exists); other peers over libp2p connections.
    pub fn send(&mut self, peer: PeerId, protocol: &str, payload: Bytes) -> Result<MessageId, SendError> {
        self.submit(peer, protocol, payload, false, SendOptions::default())
    }

    /// Sends a one-way message with explicit [`SendOptions`] (delivery guarantee, 0-RTT
    /// permission), as `msgnet::Host::send_with` does. Over UDP the
    /// endpoint applies them as on a `Host` (an [`Unreliable`](msgnet_core::Delivery)
    /// message completes once handed to the socket, an `Ordered` one is delivered in
    /// order with the other `Ordered` messages of its protocol). Over a libp2p connection
    /// every message is carried reliably and in order on the one stream, which meets every
    /// guarantee; it completes when the peer acknowledged it. Otherwise as
    /// [`Behaviour::send`].
    pub fn send_with(
        &mut self,
        peer: PeerId,
        protocol: &str,
        payload: Bytes,
        opts: SendOptions,
    ) -> Result<MessageId, SendError> {
        self.submit(peer, protocol, payload, false, opts)
    }

    /// Sends a request; the response (or failure) arrives as [`Event::Response`]. Errors
    /// here are immediate refusals, as for [`Behaviour::send`].
    pub fn request(&mut self, peer: PeerId, protocol: &str, payload: Bytes) -> Result<MessageId, SendError> {
        self.submit(peer, protocol, payload, true, SendOptions::default())
    }

    /// Sends a request with explicit [`SendOptions`]; see [`Behaviour::send_with`]. A
    /// request is always carried reliably: `Unreliable` counts as `Reliable`, as on a
    /// `Host`'s endpoint.
    pub fn request_with(
        &mut self,
        peer: PeerId,
        protocol: &str,
        payload: Bytes,
        opts: SendOptions,
    ) -> Result<MessageId, SendError> {
        self.submit(peer, protocol, payload, true, opts)
    }

    /// Sends a one-way message on connection `c` only, which must be a ready msgnet
    /// connection (its `/msgnet/1.0.0` stream open: [`Event::MsgnetSupport`] said
    /// `supported`). The outcome arrives as for [`Behaviour::send`]. Errors: as `send`, and
    /// [`SendError::Unreachable`] if `c` is not ready. For drivers that pick the transport
    /// themselves (msgnet's Host races and consolidates transports).
    pub fn send_on(&mut self, c: ConnectionId, protocol: &str, payload: Bytes) -> Result<MessageId, SendError> {
        self.submit_on(c, protocol, payload, false)
    }

    /// Sends a request on connection `c` only; see [`Behaviour::send_on`] and
    /// [`Behaviour::request`].
    pub fn request_on(&mut self, c: ConnectionId, protocol: &str, payload: Bytes) -> Result<MessageId, SendError> {
        self.submit_on(c, protocol, payload, true)
    }

    /// The connection whose msgnet streams carry `session` (the session of an
    /// [`IncomingMessage`](msgnet_core::IncomingMessage) from this behaviour).
    pub fn connection_of(&self, session: SessionId) -> Option<ConnectionId> {
        self.sessions.get(&session).map(|&(c, _)| c)
    }

    /// Checks a send or request to `peer` against the protocol rules, the size limit and
    /// the peer's budget, then takes a message id for it and records it as outstanding.
    fn admit(&mut self, peer: PeerId, protocol: &str, bytes: usize, request: bool) -> Result<(MessageId, Arc<str>), SendError> {
        if protocol.is_empty() || protocol.len() > msgnet_core::MAX_PROTOCOL_LEN {
            return Err(SendError::InvalidProtocol);
        }
        let limit = self.config.stream.max_message_size;
        if bytes > limit {
            return Err(SendError::MessageTooLarge { size: bytes, limit });
        }
        let p = self.peers.entry(peer).or_default();
        if p.in_flight >= self.config.max_in_flight_per_peer
            || (p.in_flight > 0 && p.bytes + bytes > self.config.max_pending_bytes_per_peer)
        {
            return Err(SendError::Backpressure);
        }
        p.in_flight += 1;
        p.bytes += bytes;
        let id = MessageId(self.next_message_id);
        self.next_message_id += 1;
        let protocol: Arc<str> = Arc::from(protocol);
        self.outstanding
            .insert(id, Outstanding { peer, protocol: protocol.clone(), bytes, request, bridge_conn: None });
        Ok((id, protocol))
    }

    fn submit_on(&mut self, c: ConnectionId, protocol: &str, payload: Bytes, request: bool) -> Result<MessageId, SendError> {
        let peer = match self.conns.get(&c) {
            Some(conn) if conn.status == Status::Ready => conn.peer,
            _ => return Err(SendError::Unreachable("no ready msgnet connection".into())),
        };
        let (id, protocol) = self.admit(peer, protocol, payload.len(), request)?;
        if request {
            self.arm_timeout(id);
        }
        if let Some(conn) = self.conns.get_mut(&c) {
            let r = if request {
                conn.stream.request(id, &protocol, payload)
            } else {
                conn.stream.send(id, &protocol, payload)
            };
            if let Err(e) = r {
                self.finish(id, Err(e));
            }
        }
        self.flush_conn(c);
        Ok(id)
    }

    /// Answers an inbound request: `Ok(payload)` or `Err((code, reason))`. Over the
    /// bridge an error response closes the stream without an answer.
    pub fn respond(
        &mut self,
        req: &InboundRequest,
        result: Result<Bytes, (u8, String)>,
    ) -> Result<(), SendError> {
        if req.session.0 & udp::UDP_SESSION != 0 {
            return self.udp_respond(req, result);
        }
        let &(c, bridge) = self.sessions.get(&req.session).ok_or(SendError::UnknownRequest)?;
        let conn = self.conns.get_mut(&c).ok_or(SendError::UnknownRequest)?;
        if !bridge {
            conn.stream.respond(req, result)?;
            self.flush_conn(c);
            return Ok(());
        }
        if let Ok(p) = &result {
            let limit = self.config.stream.max_message_size;
            if p.len() > limit {
                return Err(SendError::MessageTooLarge { size: p.len(), limit });
            }
        }
        if !conn.bridge_in.remove(&req.request_id) {
            return Err(SendError::UnknownRequest);
        }
        let peer = conn.peer;
        self.notify(peer, c, FromBehaviour::BridgeRespond { stream_id: req.request_id, payload: result.ok() });
        Ok(())
    }

    fn submit(
        &mut self,
        peer: PeerId,
        protocol: &str,
        payload: Bytes,
        request: bool,
        opts: SendOptions,
    ) -> Result<MessageId, SendError> {
        let (id, protocol) = self.admit(peer, protocol, payload.len(), request)?;
        match self.udp_submit(peer, Queued { id, protocol, payload, request, opts }) {
            Ok(Some(q)) => self.route(peer, q),
            Ok(None) => {}
            Err(e) => {
                self.release(id);
                return Err(e);
            }
        }
        Ok(id)
    }

    /// Puts `q` on the best connection to `peer`, queues it, or dials.
    fn route(&mut self, peer: PeerId, q: Queued) {
        if q.request {
            self.arm_timeout(q.id);
        }
        let (mut ready, mut pending, mut unsupported, mut failed) = (None, false, None, false);
        for c in self.peers.get(&peer).map(|p| p.conns.as_slice()).unwrap_or_default() {
            match self.conns.get(c).map(|c| c.status) {
                Some(Status::Ready) => {
                    ready = Some(*c);
                    break;
                }
                Some(Status::Pending) => pending = true,
                Some(Status::Unsupported) => unsupported = unsupported.or(Some(*c)),
                Some(Status::Failed) => failed = true,
                None => {}
            }
        }
        if let Some(c) = ready {
            let Some(conn) = self.conns.get_mut(&c) else { return };
            let r = if q.request {
                conn.stream.request(q.id, &q.protocol, q.payload)
            } else {
                conn.stream.send(q.id, &q.protocol, q.payload)
            };
            if let Err(e) = r {
                self.finish(q.id, Err(e));
            }
            self.flush_conn(c);
        } else if pending {
            self.peers.entry(peer).or_default().queue.push_back(q);
        } else if let Some(c) = unsupported {
            let Ok(protocol) = StreamProtocol::try_from_owned(q.protocol.to_string()) else {
                self.finish(q.id, Err(SendError::InvalidProtocol));
                return;
            };
            if let Some(o) = self.outstanding.get_mut(&q.id) {
                o.bridge_conn = Some(c);
            }
            let event = FromBehaviour::BridgeOut { id: q.id, protocol, payload: q.payload, expect_response: q.request };
            self.notify(peer, c, event);
        } else if failed {
            self.finish(q.id, Err(SendError::SessionClosed("msgnet failed on every connection".into())));
        } else {
            let p = self.peers.entry(peer).or_default();
            p.queue.push_back(q);
            if !p.dialing {
                p.dialing = true;
                self.push(ToSwarm::Dial { opts: DialOpts::peer_id(peer).build() });
            }
        }
    }

    /// Routes everything queued for `peer` again (a connection's status changed).
    fn drain_queue(&mut self, peer: PeerId) {
        let queue = self.peers.get_mut(&peer).map(|p| std::mem::take(&mut p.queue)).unwrap_or_default();
        for q in queue {
            self.route(peer, q);
        }
    }

    /// Fails everything queued for `peer`.
    fn fail_queue(&mut self, peer: PeerId, err: SendError) {
        let queue = self.peers.get_mut(&peer).map(|p| std::mem::take(&mut p.queue)).unwrap_or_default();
        for q in queue {
            self.finish(q.id, Err(err.clone()));
        }
    }

    /// Reports the outcome of send or request `id` and releases its budget. A send's
    /// result ignores the payload.
    fn finish(&mut self, id: MessageId, result: Result<Option<Bytes>, SendError>) {
        let Some(o) = self.outstanding.remove(&id) else {
            if matches!(result, Ok(Some(_))) {
                self.timeouts.late += 1; // a bridge response after the request timed out
            }
            return;
        };
        if let Some(p) = self.peers.get_mut(&o.peer) {
            p.in_flight = p.in_flight.saturating_sub(1);
            p.bytes = p.bytes.saturating_sub(o.bytes);
        }
        let result = result.map_err(|e| match e {
            SendError::UnsupportedProtocol(p) if p.is_empty() => SendError::UnsupportedProtocol(o.protocol.to_string()),
            e => e,
        });
        self.push(ToSwarm::GenerateEvent(if o.request {
            Event::Response { id, result: result.map(Option::unwrap_or_default) }
        } else {
            Event::SendComplete { id, result: result.map(drop) }
        }));
        self.forget_idle_peer(o.peer);
    }

    fn forget_idle_peer(&mut self, peer: PeerId) {
        if self.peers.get(&peer).is_some_and(|p| p.conns.is_empty() && p.queue.is_empty() && p.in_flight == 0 && !p.dialing) {
            self.peers.remove(&peer);
        }
    }

    /// Drains a connection's events and hands its output to the handler (within the
    /// write window, once our stream is open).
    fn flush_conn(&mut self, c: ConnectionId) {
        let Some(conn) = self.conns.get_mut(&c) else { return };
        let mut events = Vec::new();
        while let Some(e) = conn.stream.poll_event() {
            events.push(e);
        }
        let mut writes = Vec::new();
        if conn.status == Status::Ready {
            while conn.in_handler < self.config.write_window {
                let Some(bytes) = conn.stream.poll_output() else { break };
                conn.in_handler += bytes.len();
                writes.push(bytes);
            }
        }
        let peer = conn.peer;
        for bytes in writes {
            self.notify(peer, c, FromBehaviour::Write(bytes));
        }
        for e in events {
            match e {
                msgnet_core::Event::Message(m) => self.push(ToSwarm::GenerateEvent(Event::Message(m))),
                msgnet_core::Event::SendComplete { id, result } => self.finish(id, result.map(|()| None)),
                msgnet_core::Event::Response { id, result } => self.finish(id, result.map(Some)),
                _ => {}
            }
        }
    }

    fn ensure_conn(&mut self, peer: PeerId, c: ConnectionId) -> bool {
        if self.conns.contains_key(&c) {
            return false;
        }
        let session = SessionId(self.next_session);
        let bridge_session = SessionId(self.next_session + 1);
        self.next_session += 2;
        let mut stream_config = self.config.stream.clone();
        stream_config.max_in_flight = stream_config.max_in_flight.max(self.config.max_in_flight_per_peer);
        stream_config.max_output = stream_config
            .max_output
            .max(self.config.max_pending_bytes_per_peer + stream_config.max_message_size);
        self.conns.insert(
            c,
            Conn {
                peer,
                status: Status::Pending,
                stream: StreamConn::new(session, core_peer_id(&peer), stream_config),
                bridge_session,
                in_handler: 0,
                bridge_in: HashSet::new(),
            },
        );
        self.sessions.insert(session, (c, false));
        self.sessions.insert(bridge_session, (c, true));
        let p = self.peers.entry(peer).or_default();
        p.conns.push(c);
        true
    }

    fn set_status(&mut self, c: ConnectionId, status: Status) {
        let Some(conn) = self.conns.get_mut(&c) else { return };
        let old = conn.status;
        if old == status || old == Status::Failed {
            return;
        }
        conn.status = status;
        let peer = conn.peer;
        match status {
            Status::Ready | Status::Unsupported if old == Status::Pending => {
                self.push(ToSwarm::GenerateEvent(Event::MsgnetSupport {
                    peer,
                    connection: c,
                    supported: status == Status::Ready,
                }));
            }
            _ => {}
        }
        self.flush_conn(c);
        self.drain_queue(peer);
    }

    fn on_connection_closed(&mut self, peer: PeerId, c: ConnectionId) {
        if let Some(mut conn) = self.conns.remove(&c) {
            self.timeouts.late += conn.stream.late_responses();
            conn.stream.fail_all(SendError::SessionClosed("connection closed".into()));
            self.sessions.remove(&conn.stream.session());
            self.sessions.remove(&conn.bridge_session);
            let events: Vec<_> = std::iter::from_fn(|| conn.stream.poll_event()).collect();
            for e in events {
                match e {
                    msgnet_core::Event::SendComplete { id, result } => self.finish(id, result.map(|()| None)),
                    msgnet_core::Event::Response { id, result } => self.finish(id, result.map(Some)),
                    _ => {}
                }
            }
        }
        let bridged: Vec<MessageId> =
            self.outstanding.iter().filter(|(_, o)| o.bridge_conn == Some(c)).map(|(id, _)| *id).collect();
        for id in bridged {
            self.finish(id, Err(SendError::SessionClosed("connection closed".into())));
        }
        if let Some(p) = self.peers.get_mut(&peer) {
            p.conns.retain(|x| *x != c);
        }
        let orphaned = self.peers.get(&peer).is_some_and(|p| p.conns.is_empty() && !p.dialing);
        if orphaned {
            self.fail_queue(peer, SendError::Unreachable("connection closed".into()));
        } else {
            self.drain_queue(peer);
        }
        self.forget_idle_peer(peer);
    }

    fn on_dial_failure(&mut self, peer: PeerId, error: &DialError) {
        if matches!(error, DialError::DialPeerConditionFalse(_)) {
            return; // another dial or a connection exists; its outcome drains the queue
        }
        if let Some(p) = self.peers.get_mut(&peer) {
            p.dialing = false;
            if p.conns.is_empty() {
                self.fail_queue(peer, SendError::Unreachable(error.to_string()));
            }
        }
        self.forget_idle_peer(peer);
    }

    fn update_bridged(&mut self) {
        let mut list: Vec<StreamProtocol> = self
            .handlers
            .iter()
            .filter(|p| &***p != PROTOCOL)
            .filter_map(|p| StreamProtocol::try_from_owned(p.to_string()).ok())
            .collect();
        list.sort_by(|a, b| a.as_ref().cmp(b.as_ref()));
        self.bridged = Arc::new(list);
        let targets: Vec<(PeerId, ConnectionId)> = self.conns.iter().map(|(c, conn)| (conn.peer, *c)).collect();
        for (peer, c) in targets {
            self.notify(peer, c, FromBehaviour::SetProtocols(self.bridged.clone()));
        }
    }

    fn notify(&mut self, peer_id: PeerId, c: ConnectionId, event: FromBehaviour) {
        self.push(ToSwarm::NotifyHandler { peer_id, handler: NotifyHandler::One(c), event });
    }

    fn push(&mut self, e: ToSwarm<Event, FromBehaviour>) {
        self.pending.push_back(e);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    fn new_handler(&self) -> Handler {
        Handler::new(
            HandlerConfig {
                max_message_size: self.config.stream.max_message_size,
                max_bridge_streams: self.config.max_bridge_streams,
                bridge_timeout: self.config.bridge_timeout,
                keep_alive: self.config.keep_alive,
            },
            self.bridged.clone(),
        )
    }
}

mod swarm;
mod timeout;
pub(crate) mod udp;
