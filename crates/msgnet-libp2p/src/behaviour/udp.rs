//! The UDP packet transport inside [`Behaviour`], turned on with [`Behaviour::with_udp`].
//!
//! It owns one tokio `UdpSocket`, the sans-IO [`msgnet_core::Endpoint`] of that socket
//! (made with the swarm's keypair, so UDP sessions authenticate the same `PeerId` as the
//! libp2p connections) and a tokio `Sleep` for the endpoint's timer, as libp2p-mdns owns
//! its sockets and timers inside its behaviour. Everything is driven from
//! `NetworkBehaviour::poll`, following the core's call order: local work first (expired
//! timers, then `poll_transmit` written with `poll_send_to`), then remote work (at most
//! [`RECV_BATCH`] datagrams per poll, and only while the behaviour has no output waiting
//! for the swarm), then the endpoint's events, then the timer re-armed from
//! `poll_timeout`. A datagram the socket cannot take (not writable) stays in the one
//! transmit slot and the socket's waker is registered: nothing else is buffered here.
//!
//! Routing (see [`Behaviour::send`]): a peer with a UDP session, or with a UDP address
//! (from [`Behaviour::add_address`], from another behaviour such as identify through
//! `NewExternalAddrOfPeer`, or from the peer contacting us), is reached over UDP;
//! otherwise over libp2p connections as before. If the handshake cannot reach the peer
//! (`Unreachable`) and the peer has a libp2p connection or address, the send is routed
//! there instead. Inbound UDP messages are delivered as [`Event::Message`] with a
//! [`SessionId`] whose top bit is set ([`UDP_SESSION`]), so that
//! [`Behaviour::respond`] sends the answer back over UDP.
//!
//! Requests over UDP get the behaviour's request deadline (`Config::request_timeout`) as
//! on streams; the map from endpoint message ids to the behaviour's is swept of timed-out
//! ones (and they are cancelled in the endpoint) whenever it doubles. Dropping the
//! behaviour closes every session, writing the CLOSE datagrams the socket takes at once.
//!
//! It may call the endpoint, the socket and the behaviour's bookkeeping (`finish`,
//! `route`, `push`, `arm_timeout`).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{FromSwarm, ToSwarm};
use libp2p::{Multiaddr, PeerId};
use msgnet_core::{
    Endpoint, EndpointConfig, EndpointStats, InboundRequest, SendError, SessionId, SessionInfo,
    Transmit,
};
use rand::RngCore;
use tokio::io::ReadBuf;
use tokio::net::UdpSocket;

use super::{core_peer_id, libp2p_peer_id, Behaviour, Queued, ADDRESSES_PER_PEER};
use crate::Event;

mod addr;

use addr::peer_socket_addr;
pub use addr::{multiaddr_to_socket, socket_to_multiaddr};

/// Session ids of UDP sessions, as delivered in [`Event::Message`], have this bit set; the
/// rest is the endpoint's own id. Stream-side session ids count up from 0 and never reach it.
pub const UDP_SESSION: u64 = 1 << 63;
/// Most datagrams read per poll.
const RECV_BATCH: usize = 64;
/// Most datagrams written per poll.
const TX_BATCH: usize = 256;
/// Timer rounds per poll (a timer that keeps expiring yields to the swarm after these).
const TIMER_ROUNDS: usize = 8;
/// Receive buffer: the largest UDP payload.
const RX_BUF: usize = 65_536;
/// Most UDP listen addresses remembered (derived from the swarm's listen addresses when
/// the socket is bound to an unspecified address).
const MAX_LISTEN_ADDRS: usize = 32;

/// Why [`Behaviour::with_udp`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UdpError {
    /// The listen address is not `/ip4|ip6/<ip>/udp/<port>` (optionally with our own
    /// `/p2p/<id>`).
    #[error("not a msgnet UDP address (/ip4|ip6/<ip>/udp/<port>): {0}")]
    UnsupportedAddress(Multiaddr),
    /// Not called inside a tokio runtime (the socket and the timer need one, with I/O and
    /// time enabled).
    #[error("no tokio runtime: call with_udp inside one")]
    NoRuntime,
    /// The behaviour owns a UDP transport already.
    #[error("the UDP transport is enabled already")]
    AlreadyEnabled,
    /// Binding the socket failed.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// The UDP socket, its endpoint and timer, and the sends in flight on it.
pub(super) struct Udp {
    socket: UdpSocket,
    local: SocketAddr,
    endpoint: Endpoint,
    sleep: Pin<Box<tokio::time::Sleep>>,
    /// The deadline `sleep` is set to.
    armed: Option<Instant>,
    tx_buf: Vec<u8>,
    /// A datagram in `tx_buf` the socket did not take yet.
    tx_pending: Option<Transmit>,
    rx_buf: Box<[u8]>,
    /// Endpoint message id → the behaviour's send or request (kept for the fallback to the
    /// stream side; the payload is a shared `Bytes`).
    ids: HashMap<msgnet_core::MessageId, Queued>,
    /// `ids` is swept of requests that timed out in the behaviour once it reaches this.
    sweep_at: usize,
    listen_addrs: Vec<Multiaddr>,
    /// Peers given addresses, bounded by `Config::max_address_book`.
    addressed: HashSet<PeerId>,
}

impl std::fmt::Debug for Udp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Udp").field("local", &self.local).field("in_flight", &self.ids.len()).finish()
    }
}

impl Udp {
    /// Whether `peer` is reached over UDP: it has a session or a known address.
    fn reachable(&self, peer: &msgnet_core::PeerId) -> bool {
        !self.endpoint.sessions(peer).is_empty() || !self.endpoint.addresses(peer).is_empty()
    }

    /// Runs expired timers and re-arms `sleep` for the next deadline.
    fn poll_timer(&mut self, cx: &mut Context<'_>) {
        for _ in 0..TIMER_ROUNDS {
            let Some(deadline) = self.endpoint.poll_timeout() else {
                self.armed = None;
                return;
            };
            if deadline <= Instant::now() {
                self.endpoint.handle_timeout(Instant::now());
                continue;
            }
            if self.armed != Some(deadline) {
                self.sleep.as_mut().reset(tokio::time::Instant::from_std(deadline));
                self.armed = Some(deadline);
            }
            match self.sleep.as_mut().poll(cx) {
                // The next round checks the deadline against the clock (the timer's
                // granularity may fire a little early): re-arm then.
                Poll::Ready(()) => self.armed = None,
                Poll::Pending => return,
            }
        }
        cx.waker().wake_by_ref();
    }

    /// Writes the endpoint's datagrams until the socket is not writable (the datagram
    /// stays in the slot and the waker is registered) or the batch is done.
    fn poll_send(&mut self, cx: &mut Context<'_>) {
        for _ in 0..TX_BATCH {
            let transmit = match self.tx_pending {
                Some(t) => t,
                None => match self.endpoint.poll_transmit(Instant::now(), &mut self.tx_buf) {
                    Some(t) => t,
                    None => return,
                },
            };
            let Some(data) = self.tx_buf.get(..transmit.size) else {
                tracing::debug!(size = transmit.size, "transmit larger than its buffer; dropped");
                self.tx_pending = None;
                continue;
            };
            match self.socket.poll_send_to(cx, data, transmit.destination) {
                Poll::Ready(Ok(_)) => {
                    tracing::trace!(dest = %transmit.destination, len = transmit.size, "datagram out");
                    self.tx_pending = None;
                }
                // Lost like any datagram; the protocol retransmits what matters.
                Poll::Ready(Err(e)) => {
                    tracing::debug!(dest = %transmit.destination, error = %e, "send failed; datagram dropped");
                    self.tx_pending = None;
                }
                Poll::Pending => {
                    self.tx_pending = Some(transmit);
                    return;
                }
            }
        }
        cx.waker().wake_by_ref();
    }

    /// Feeds up to [`RECV_BATCH`] received datagrams to the endpoint. Returns how many.
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> usize {
        let now = Instant::now();
        let mut read = 0;
        // Errors count as calls, so that a socket that keeps failing cannot hold the poll.
        for _ in 0..RECV_BATCH {
            let mut buf = ReadBuf::new(&mut self.rx_buf);
            match self.socket.poll_recv_from(cx, &mut buf) {
                Poll::Ready(Ok(from)) => {
                    let len = buf.filled().len();
                    if let Some(data) = self.rx_buf.get_mut(..len) {
                        tracing::trace!(%from, len, "datagram in");
                        self.endpoint.handle_datagram(now, from, data);
                        read += 1;
                    }
                }
                // E.g. ICMP port unreachable surfacing as ECONNREFUSED: not fatal.
                Poll::Ready(Err(e)) => tracing::debug!(error = %e, "recv failed"),
                Poll::Pending => return read,
            }
        }
        cx.waker().wake_by_ref();
        read
    }

    fn add_listen_addr(&mut self, addr: Multiaddr) -> bool {
        if self.listen_addrs.contains(&addr) || self.listen_addrs.len() >= MAX_LISTEN_ADDRS {
            return false;
        }
        self.listen_addrs.push(addr);
        true
    }
}

/// Most CLOSE datagrams written when the transport is dropped.
const CLOSE_BUDGET: usize = 4096;

impl Drop for Udp {
    /// Closes every session, writing the CLOSE datagrams the socket takes without waiting,
    /// so that peers learn at once instead of after their idle timeout.
    fn drop(&mut self) {
        let now = Instant::now();
        self.endpoint.close(now);
        for _ in 0..CLOSE_BUDGET {
            let Some(t) = self.endpoint.poll_transmit(now, &mut self.tx_buf) else { break };
            let Some(data) = self.tx_buf.get(..t.size) else { continue };
            if self.socket.try_send_to(data, t.destination).is_err() {
                break;
            }
        }
    }
}

/// Binds a non-blocking UDP socket for tokio.
fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

fn to_udp_session(s: SessionId) -> SessionId {
    SessionId(s.0 | UDP_SESSION)
}

impl Behaviour {
    /// Adds msgnet's UDP packet transport: binds a UDP socket at `listen`
    /// (`/ip4|ip6/<ip>/udp/<port>`, port 0 for any) and runs a msgnet endpoint on it with
    /// `keypair`, which must be the swarm's identity (the one the `SwarmBuilder` hands to
    /// `with_behaviour`), so that peers see one `PeerId` on both transports.
    ///
    /// The same API then reaches peers over UDP: [`Behaviour::send`] and
    /// [`Behaviour::request`] use UDP for a peer with a UDP session or UDP address, and
    /// libp2p connections otherwise. The socket's addresses are reported as
    /// [`Event::UdpListenAddr`] and by [`Behaviour::udp_listen_addrs`]; pass them to
    /// `Swarm::add_external_address` to have identify advertise them. If
    /// `endpoint.rng_seed` is all zero (the default) it is filled from the OS RNG.
    ///
    /// Must be called inside a tokio runtime with I/O and time enabled.
    pub fn with_udp(
        mut self,
        keypair: &Keypair,
        listen: &Multiaddr,
        mut endpoint: EndpointConfig,
    ) -> Result<Self, UdpError> {
        if self.udp.is_some() {
            return Err(UdpError::AlreadyEnabled);
        }
        let local_id = keypair.public().to_peer_id();
        let addr = peer_socket_addr(&local_id, listen).ok_or_else(|| UdpError::UnsupportedAddress(listen.clone()))?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(UdpError::NoRuntime);
        }
        let socket = bind(addr).map_err(|source| UdpError::Bind { addr, source })?;
        let local = socket.local_addr().map_err(|source| UdpError::Bind { addr, source })?;
        if endpoint.rng_seed == [0; 32] {
            rand::rngs::OsRng.fill_bytes(&mut endpoint.rng_seed);
        }
        let unix_now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        let mut endpoint = Endpoint::new(endpoint, keypair, Instant::now(), unix_now);
        for protocol in &self.handlers {
            endpoint.register_protocol(protocol);
        }
        let mut udp = Udp {
            socket,
            local,
            endpoint,
            sleep: Box::pin(tokio::time::sleep(Duration::from_secs(3600))),
            armed: None,
            tx_buf: Vec::with_capacity(RX_BUF),
            tx_pending: None,
            rx_buf: vec![0; RX_BUF].into_boxed_slice(),
            ids: HashMap::new(),
            sweep_at: 64,
            listen_addrs: Vec::new(),
            addressed: HashSet::new(),
        };
        if !local.ip().is_unspecified() {
            let address = socket_to_multiaddr(local);
            udp.add_listen_addr(address.clone());
            self.push(ToSwarm::GenerateEvent(Event::UdpListenAddr { address }));
        }
        tracing::debug!(%local, "msgnet UDP transport bound");
        self.udp = Some(udp);
        Ok(self)
    }

    /// The UDP transport's addresses (`/ip4|ip6/<ip>/udp/<port>`): the bound address, or
    /// for a socket bound to an unspecified address, that port on the IP addresses of the
    /// swarm's listen addresses. Empty without [`Behaviour::with_udp`].
    pub fn udp_listen_addrs(&self) -> Vec<Multiaddr> {
        self.udp.as_ref().map(|u| u.listen_addrs.clone()).unwrap_or_default()
    }

    /// The UDP socket's local address, if the UDP transport is on.
    pub fn udp_local_addr(&self) -> Option<SocketAddr> {
        self.udp.as_ref().map(|u| u.local)
    }

    /// The UDP endpoint's counters (datagrams, drops by reason, messages delivered), if
    /// the UDP transport is on.
    pub fn udp_stats(&self) -> Option<&EndpointStats> {
        self.udp.as_ref().map(|u| u.endpoint.stats())
    }

    /// The UDP sessions with `peer`.
    pub fn udp_sessions(&self, peer: &PeerId) -> Vec<SessionInfo> {
        self.udp.as_ref().map(|u| u.endpoint.sessions(&core_peer_id(peer))).unwrap_or_default()
    }

    /// Peers with an established UDP session.
    pub fn udp_peers(&self) -> Vec<PeerId> {
        let peers = self.udp.as_ref().map(|u| u.endpoint.peers()).unwrap_or_default();
        peers.iter().map(libp2p_peer_id).collect()
    }

    /// Closes the UDP sessions with `peer` (sending CLOSE); what is pending on them fails.
    /// Its UDP addresses stay known, so a later send starts a new session.
    pub fn close_udp_peer(&mut self, peer: &PeerId) {
        if let Some(u) = self.udp.as_mut() {
            u.endpoint.close_peer(Instant::now(), &core_peer_id(peer));
            self.udp_wake();
        }
    }

    /// Gives a UDP-shaped address to the endpoint. Returns `false` if the transport is off
    /// or `addr` is not a UDP address of `peer` (the caller then treats it as a libp2p
    /// address).
    pub(super) fn udp_add_address(&mut self, peer: PeerId, addr: &Multiaddr) -> bool {
        let max_peers = self.config.max_address_book;
        let Some(udp) = self.udp.as_mut() else { return false };
        if multiaddr_to_socket(addr).is_none() {
            return false;
        }
        // A UDP address (ours, never dialled by libp2p) from here on.
        let Some(sock) = peer_socket_addr(&peer, addr) else { return true };
        if sock.is_ipv4() != udp.local.is_ipv4() {
            tracing::debug!(%peer, %addr, "UDP address of the other address family; ignored");
            return true;
        }
        let core = core_peer_id(&peer);
        if !udp.addressed.contains(&peer) && udp.addressed.len() >= max_peers {
            return true;
        }
        let known = udp.endpoint.addresses(&core);
        if known.len() >= ADDRESSES_PER_PEER || known.contains(&sock) {
            return true;
        }
        udp.addressed.insert(peer);
        udp.endpoint.add_address(core, sock);
        true
    }

    /// Starts a send or request over UDP if `peer` is reachable there; hands it back for
    /// the stream side otherwise. An error is an immediate refusal (no event follows).
    pub(super) fn udp_submit(&mut self, peer: PeerId, q: Queued) -> Result<Option<Queued>, SendError> {
        let Some(udp) = self.udp.as_mut() else { return Ok(Some(q)) };
        let core = core_peer_id(&peer);
        if !udp.reachable(&core) {
            return Ok(Some(q));
        }
        let now = Instant::now();
        let opts = q.opts;
        let r = if q.request {
            udp.endpoint.request(now, core, &q.protocol, q.payload.clone(), opts)
        } else {
            udp.endpoint.send(now, core, &q.protocol, q.payload.clone(), opts)
        };
        match r {
            Ok(ep_id) => {
                let (id, request) = (q.id, q.request);
                udp.ids.insert(ep_id, q);
                if request {
                    // The endpoint times out what is not acknowledged; a request that was
                    // but is never answered times out here, as on streams.
                    self.arm_timeout(id);
                }
                self.udp_wake();
                Ok(None)
            }
            Err(SendError::Unreachable(_) | SendError::NoAddress) if self.has_libp2p_route(&peer) => Ok(Some(q)),
            Err(e) => Err(e),
        }
    }

    /// Takes back the budget of a send that `submit` refused after counting it.
    pub(super) fn release(&mut self, id: msgnet_core::MessageId) {
        let Some(o) = self.outstanding.remove(&id) else { return };
        if let Some(p) = self.peers.get_mut(&o.peer) {
            p.in_flight = p.in_flight.saturating_sub(1);
            p.bytes = p.bytes.saturating_sub(o.bytes);
        }
        self.forget_idle_peer(o.peer);
    }

    /// Answers a request that arrived over UDP (its session id has [`UDP_SESSION`] set).
    pub(super) fn udp_respond(
        &mut self,
        req: &InboundRequest,
        result: Result<Bytes, (u8, String)>,
    ) -> Result<(), SendError> {
        let udp = self.udp.as_mut().ok_or(SendError::UnknownRequest)?;
        let inner = InboundRequest { session: SessionId(req.session.0 & !UDP_SESSION), ..req.clone() };
        udp.endpoint.respond(Instant::now(), &inner, result)?;
        self.udp_wake();
        Ok(())
    }

    /// Keeps the endpoint's protocols equal to the handlers.
    pub(super) fn udp_protocol(&mut self, protocol: &str, registered: bool) {
        if let Some(udp) = self.udp.as_mut() {
            if registered {
                udp.endpoint.register_protocol(protocol);
            } else {
                udp.endpoint.unregister_protocol(protocol);
            }
        }
    }

    /// The swarm events the UDP transport follows: peers' addresses (from identify and
    /// the like) and our listen addresses (to name the UDP port on their IPs when the
    /// socket is bound to an unspecified address).
    pub(super) fn udp_on_swarm_event(&mut self, event: &FromSwarm) {
        if self.udp.is_none() {
            return;
        }
        match event {
            FromSwarm::NewExternalAddrOfPeer(e) => {
                self.udp_add_address(e.peer_id, e.addr);
            }
            FromSwarm::NewListenAddr(e) => {
                let Some(udp) = self.udp.as_mut() else { return };
                if !udp.local.ip().is_unspecified() {
                    return;
                }
                let ip = match e.addr.iter().next() {
                    Some(Protocol::Ip4(ip)) if udp.local.is_ipv4() => std::net::IpAddr::from(ip),
                    Some(Protocol::Ip6(ip)) if udp.local.is_ipv6() => std::net::IpAddr::from(ip),
                    _ => return,
                };
                let address = socket_to_multiaddr(SocketAddr::new(ip, udp.local.port()));
                if udp.add_listen_addr(address.clone()) {
                    self.push(ToSwarm::GenerateEvent(Event::UdpListenAddr { address }));
                }
            }
            _ => {}
        }
    }

    /// Drives the UDP transport (see the module docs); outputs land in `pending`.
    pub(super) fn poll_udp(&mut self, cx: &mut Context<'_>) {
        let Some(udp) = self.udp.as_mut() else { return };
        if !self.pending.is_empty() {
            // The swarm takes those first and polls again at once; keep the socket busy
            // meanwhile, and take no remote work (bounds `pending`).
            udp.poll_send(cx);
            return;
        }
        // Local work first: timers, then what they and the last commands produced; then
        // remote work.
        udp.poll_timer(cx);
        udp.poll_send(cx);
        if udp.poll_recv(cx) > 0 {
            udp.poll_send(cx);
        }
        let events: Vec<msgnet_core::Event> = std::iter::from_fn(|| udp.endpoint.poll_event()).collect();
        for e in events {
            self.on_udp_event(e);
        }
        self.udp_sweep();
        // Inputs and completions moved the next deadline; a send issued by a completion
        // handler is written on the next poll (`wake`).
        if let Some(udp) = self.udp.as_mut() {
            udp.poll_timer(cx);
        }
    }

    fn on_udp_event(&mut self, e: msgnet_core::Event) {
        match e {
            msgnet_core::Event::Message(mut m) => {
                m.session = to_udp_session(m.session);
                if let Some(r) = m.request.as_mut() {
                    r.session = to_udp_session(r.session);
                }
                self.push(ToSwarm::GenerateEvent(Event::Message(m)));
            }
            msgnet_core::Event::SendComplete { id, result } => self.udp_complete(id, result.map(|()| None)),
            msgnet_core::Event::Response { id, result } => self.udp_complete(id, result.map(Some)),
            msgnet_core::Event::SessionUp { peer, remote, .. } => {
                tracing::debug!(%peer, %remote, "UDP session up");
                let (peer, remote) = (libp2p_peer_id(&peer), socket_to_multiaddr(remote));
                self.push(ToSwarm::GenerateEvent(Event::UdpSessionUp { peer, remote }));
            }
            msgnet_core::Event::SessionDown { peer, reason, .. } => {
                tracing::debug!(%peer, %reason, "UDP session down");
                self.push(ToSwarm::GenerateEvent(Event::UdpSessionDown { peer: libp2p_peer_id(&peer), reason }));
            }
            _ => {}
        }
    }

    /// Forgets the UDP requests that finished in the behaviour (timed out) and cancels them
    /// in the endpoint, once `ids` has grown to twice its size at the last sweep: `ids`
    /// stays within twice the outstanding UDP work.
    fn udp_sweep(&mut self) {
        let Self { udp, outstanding, .. } = self;
        let Some(udp) = udp.as_mut() else { return };
        if udp.ids.len() < udp.sweep_at {
            return;
        }
        let gone: Vec<msgnet_core::MessageId> =
            udp.ids.iter().filter(|(_, q)| !outstanding.contains_key(&q.id)).map(|(ep_id, _)| *ep_id).collect();
        for ep_id in gone {
            udp.ids.remove(&ep_id);
            udp.endpoint.cancel(ep_id);
        }
        udp.sweep_at = 2 * udp.ids.len() + 64;
    }

    /// A UDP send or request finished: report it, or if UDP could not reach the peer and a
    /// libp2p route exists, route it there.
    fn udp_complete(&mut self, ep_id: msgnet_core::MessageId, result: Result<Option<Bytes>, SendError>) {
        let Some(q) = self.udp.as_mut().and_then(|u| u.ids.remove(&ep_id)) else { return };
        if let Err(e @ (SendError::Unreachable(_) | SendError::NoAddress)) = &result {
            if let Some(peer) = self.outstanding.get(&q.id).map(|o| o.peer) {
                if self.has_libp2p_route(&peer) {
                    tracing::debug!(%peer, error = %e, "UDP cannot reach the peer; falling back to libp2p");
                    self.route(peer, q);
                    return;
                }
            }
        }
        self.finish(q.id, result);
    }

    /// Whether `peer` has a libp2p connection or a libp2p address.
    fn has_libp2p_route(&self, peer: &PeerId) -> bool {
        self.peers.get(peer).is_some_and(|p| !p.conns.is_empty()) || self.addresses.contains_key(peer)
    }

    /// Wakes the swarm's poll (a command gave the endpoint work).
    fn udp_wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}
