//! The public handle: [`HostBuilder`], [`Host`] and [`HostEvent`].
//!
//! A [`Host`] is a cheap, cloneable handle onto one driver task (see [`crate::driver`]).
//! Every method turns into a command to that task; methods that need an answer carry a
//! oneshot for it. The handle owns no protocol state of its own besides the handler
//! registry shared with the driver (so that [`Host::handle`] can answer synchronously).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use libp2p_identity::{Keypair, PeerId};
use msgnet_core::{EndpointConfig, EndpointStats, SendError, SendOptions, SessionInfo};
use multiaddr::Multiaddr;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::driver::{self, swarm_side, Cmd, Ctl};
use crate::network::{self, ConnectionInfo, Transport, TransportStats};
use msgnet_core::wire::RACE_PROTOCOL;
use crate::incoming::{Incoming, Registry};
use crate::{addr, HostError};

/// Default bound of each protocol's inbound queue.
pub const DEFAULT_HANDLER_QUEUE: usize = 1024;
/// Bound of the command queue from host handles to the driver (sends and requests).
pub(crate) const COMMAND_QUEUE: usize = 1024;
/// Bound of the event broadcast; a receiver that lags further loses the oldest events.
const EVENT_QUEUE: usize = 256;
/// Longest protocol id accepted.
const MAX_PROTOCOL_LEN: usize = 1024;

/// A session or peer event, from [`Host::events`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostEvent {
    /// A session with `peer` completed its handshake.
    SessionUp {
        /// The authenticated peer.
        peer: PeerId,
        /// The peer's address.
        remote: Multiaddr,
    },
    /// A session with `peer` ended.
    SessionDown {
        /// The peer.
        peer: PeerId,
        /// Why it ended.
        reason: String,
    },
    /// A peer connected over libp2p (TCP or QUIC) told us who it is (the identify
    /// protocol). Its listen addresses are not added to the host's address book: pass the
    /// ones to use to [`Host::add_address`].
    Identified {
        /// The peer.
        peer: PeerId,
        /// The addresses it says it listens on.
        listen_addrs: Vec<Multiaddr>,
        /// The protocols it supports (`/msgnet/1.0.0` if it speaks msgnet over streams).
        protocols: Vec<String>,
        /// Its agent version (`msgnet/…`, `rust-libp2p/…`, `js-libp2p/…`).
        agent_version: String,
    },
}

/// Configures and starts a [`Host`]. Created by [`Host::builder`].
#[derive(Debug)]
pub struct HostBuilder {
    keypair: Keypair,
    listen: Vec<Multiaddr>,
    config: EndpointConfig,
    handler_queue: usize,
}

impl HostBuilder {
    /// Adds an address to listen on; port 0 picks a free port.
    ///
    /// - `/ip4|ip6/<ip>/udp/<port>`: msgnet's UDP packet transport. At most one address per
    ///   address family: the host has one IPv4 and/or one IPv6 socket, both feeding one
    ///   endpoint.
    /// - `/ip4|ip6/<ip>/tcp/<port>` and `/ip4|ip6/<ip>/udp/<port>/quic-v1`: libp2p's TCP
    ///   and QUIC transports, through the host's `Swarm` (any number).
    ///
    /// Without any call, the host listens on `/ip4/0.0.0.0/udp/0`, `/ip4/0.0.0.0/tcp/0`
    /// and `/ip4/0.0.0.0/udp/0/quic-v1`. Whatever it listens on, the host can dial out on
    /// every transport.
    #[must_use]
    pub fn listen(mut self, addr: Multiaddr) -> Self {
        self.listen.push(addr);
        self
    }

    /// Sets the endpoint configuration. If `config.rng_seed` is all zero (the default), it
    /// is filled from the operating system's RNG; a non-zero seed is kept (tests).
    #[must_use]
    pub fn config(mut self, config: EndpointConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets the bound of each protocol's inbound queue (default 1024, minimum 1).
    #[must_use]
    pub fn handler_queue(mut self, capacity: usize) -> Self {
        self.handler_queue = capacity.max(1);
        self
    }

    /// Binds the UDP socket(s), starts the swarm's listeners, waits (at most 5 s) until
    /// each reported its address, and spawns the driver task on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// [`HostError::UnsupportedAddress`] for a listen address of no supported shape (or
    /// with `/p2p`), a second UDP address of one family, or one the swarm refuses;
    /// [`HostError::Io`] if binding fails.
    pub async fn build(self) -> Result<Host, HostError> {
        let HostBuilder { keypair, mut listen, mut config, handler_queue } = self;
        if listen.is_empty() {
            listen = default_listen();
        }
        let mut binds: Vec<SocketAddr> = Vec::new();
        let mut swarm_listen: Vec<Multiaddr> = Vec::new();
        for addr in &listen {
            let unsupported = || HostError::UnsupportedAddress(addr.clone());
            if matches!(addr.iter().last(), Some(multiaddr::Protocol::P2p(_))) {
                return Err(unsupported());
            }
            match Transport::of(addr).ok_or_else(unsupported)? {
                Transport::Udp => {
                    let sock = addr::multiaddr_to_socket(addr)
                        .filter(|s| !binds.iter().any(|b| b.is_ipv4() == s.is_ipv4()))
                        .ok_or_else(unsupported)?;
                    binds.push(sock);
                }
                Transport::Tcp | Transport::Quic => swarm_listen.push(addr.clone()),
            }
        }
        let mut sockets = Vec::with_capacity(binds.len());
        for bind in binds {
            sockets.push(driver::bind(bind)?);
        }
        let mut listen_addrs = sockets
            .iter()
            .map(|s| s.local_addr().map(addr::socket_to_multiaddr))
            .collect::<Result<Vec<_>, _>>()?;
        let mut swarm = swarm_side::build_swarm(&keypair)?;
        let listeners = swarm_side::listen(&mut swarm, &swarm_listen).await?;
        listen_addrs.extend(listeners.iter().map(|(a, _)| a.clone()));
        if config.rng_seed == [0; 32] {
            use rand::RngCore;
            rand::rngs::OsRng.fill_bytes(&mut config.rng_seed);
        }

        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
        let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(EVENT_QUEUE);
        let registry = Arc::new(Registry::default());
        let closed = Arc::new(AtomicBool::new(false));
        let local_peer_id = keypair.public().to_peer_id();
        let has_udp = !sockets.is_empty();
        let mut driver = driver::Driver::new(
            config,
            &keypair,
            sockets,
            swarm,
            cmd_rx,
            ctl_rx,
            ctl_tx.clone(),
            registry.clone(),
            events.clone(),
            closed.clone(),
        );
        driver.enable_racing(listeners, has_udp);
        tokio::spawn(driver.run());
        tracing::debug!(peer = %local_peer_id, addrs = ?listen_addrs, "host started");
        Ok(Host {
            inner: Arc::new(Inner {
                local_peer_id,
                listen_addrs: std::sync::Mutex::new(listen_addrs),
                cmd_tx,
                ctl_tx,
                registry,
                events,
                closed,
                handler_queue,
                next_token: AtomicU64::new(0),
            }),
        })
    }
}

/// UDP, TCP and QUIC on every IPv4 interface, free ports.
fn default_listen() -> Vec<Multiaddr> {
    let udp = addr::socket_to_multiaddr(SocketAddr::from(([0, 0, 0, 0], 0)));
    let tcp = Multiaddr::empty()
        .with(multiaddr::Protocol::Ip4([0, 0, 0, 0].into()))
        .with(multiaddr::Protocol::Tcp(0));
    let quic = udp.clone().with(multiaddr::Protocol::QuicV1);
    vec![udp, tcp, quic]
}

/// A msgnet node: send messages and requests to peers, handle protocols.
///
/// Cheap to clone: every clone is a handle onto the same driver task. The driver stops
/// when [`close`](Self::close) is called or the last handle is dropped; after that every
/// send fails with [`SendError::Closed`].
#[derive(Clone)]
pub struct Host {
    inner: Arc<Inner>,
}

struct Inner {
    local_peer_id: PeerId,
    /// Updated by [`Host::remove_listener`].
    listen_addrs: std::sync::Mutex<Vec<Multiaddr>>,
    cmd_tx: mpsc::Sender<Cmd>,
    ctl_tx: mpsc::UnboundedSender<Ctl>,
    registry: Arc<Registry>,
    events: broadcast::Sender<HostEvent>,
    closed: Arc<AtomicBool>,
    handler_queue: usize,
    next_token: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: stop the driver even if `Incoming`s or unanswered
        // requests still hold the control channel open.
        let _ = self.ctl_tx.send(Ctl::Shutdown);
    }
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("peer", &self.inner.local_peer_id)
            .field("listen_addrs", &self.listen_addrs())
            .finish_non_exhaustive()
    }
}

impl Host {
    /// Starts configuring a host with the identity `keypair`.
    pub fn builder(keypair: Keypair) -> HostBuilder {
        HostBuilder {
            keypair,
            listen: Vec::new(),
            config: EndpointConfig::default(),
            handler_queue: DEFAULT_HANDLER_QUEUE,
        }
    }

    /// This host's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.inner.local_peer_id
    }

    /// Every address listened on, as of [`HostBuilder::build`] (with the actual ports),
    /// without `/p2p`: the UDP socket(s) first, reported as bound (an unspecified
    /// `0.0.0.0` stays so), then the swarm's TCP and QUIC addresses as it reported them
    /// (one per interface for an unspecified IP). Addresses removed with
    /// [`remove_listener`](Self::remove_listener) are no longer listed.
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.inner.listen_addrs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Adds an address for `peer`, optionally ending in `/p2p/<peer>`: UDP
    /// (`/ip4|ip6/…/udp/N`), QUIC (`/ip4|ip6/…/udp/N/quic-v1`) or TCP (`/ip4|ip6/…/tcp/N`).
    /// Which one a message takes is decided per peer, see [`crate::network`].
    ///
    /// # Errors
    ///
    /// [`HostError::PeerIdMismatch`] if the trailing `/p2p` names another peer;
    /// [`HostError::UnsupportedAddress`] for any other shape; [`HostError::Closed`].
    pub fn add_address(&self, peer: PeerId, addr: Multiaddr) -> Result<(), HostError> {
        let (transport, addr, sock) = network::parse_peer_addr(&peer, &addr)?;
        self.ctl(Ctl::AddAddress { peer, transport, addr, sock }).map_err(|_| HostError::Closed)
    }

    /// Splits a dialable address `<transport address>/p2p/<id>` into the peer id and the
    /// transport address.
    ///
    /// # Errors
    ///
    /// [`HostError::MissingPeerId`] if the address does not end in `/p2p/<id>`.
    pub fn dial_info(addr: &Multiaddr) -> Result<(PeerId, Multiaddr), HostError> {
        addr::split_p2p(addr)
    }

    /// Sends `payload` to `peer` on `protocol`, reliably: resolves once the peer has
    /// acknowledged it. Waits (instead of failing) while too many messages are in flight.
    ///
    /// # Errors
    ///
    /// See [`SendError`]: e.g. `UnsupportedProtocol` if the peer has no handler,
    /// `NoAddress`/`Unreachable` if it cannot be reached, `Closed` after [`close`](Self::close).
    pub fn send(
        &self,
        peer: PeerId,
        protocol: &str,
        payload: impl Into<Bytes>,
    ) -> impl std::future::Future<Output = Result<(), SendError>> + Send + 'static {
        self.send_with(peer, protocol, payload, SendOptions::default())
    }

    /// Sends with explicit [`SendOptions`] (delivery guarantee, 0-RTT permission).
    ///
    /// The message is handed to the host when this method is called, not when the
    /// returned future is first polled: sends issued one after the other keep that order
    /// (which is what [`Delivery::Ordered`](crate::Delivery::Ordered) preserves), however
    /// the futures are then awaited (`join_all`, `FuturesUnordered`, …). Only when the
    /// host's command queue is full does the future wait for room, and ordering then
    /// follows the order in which those waits complete.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub fn send_with(
        &self,
        peer: PeerId,
        protocol: &str,
        payload: impl Into<Bytes>,
        opts: SendOptions,
    ) -> impl std::future::Future<Output = Result<(), SendError>> + Send + 'static {
        let (reply, rx) = oneshot::channel();
        let cmd = Cmd::Send { peer, protocol: protocol.into(), payload: payload.into(), opts, reply };
        let pending = if self.is_closed() {
            Err(SendError::Closed)
        } else {
            match self.inner.cmd_tx.try_send(cmd) {
                Ok(()) => Ok(None),
                Err(mpsc::error::TrySendError::Full(cmd)) => Ok(Some((self.inner.cmd_tx.clone(), cmd))),
                Err(mpsc::error::TrySendError::Closed(_)) => Err(SendError::Closed),
            }
        };
        async move {
            if let Some((tx, cmd)) = pending? {
                tx.send(cmd).await.map_err(|_| SendError::Closed)?;
            }
            rx.await.unwrap_or(Err(SendError::Closed))
        }
    }

    /// Sends a request and waits for the response, at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`SendError::TimedOut`] when `timeout` passes first (the request is then cancelled);
    /// [`SendError::Remote`] when the peer's handler failed it (code 1: the handler dropped
    /// it); otherwise as [`send`](Self::send).
    pub async fn request(
        &self,
        peer: PeerId,
        protocol: &str,
        payload: impl Into<Bytes>,
        timeout: Duration,
    ) -> Result<Bytes, SendError> {
        let token = self.inner.next_token.fetch_add(1, Ordering::Relaxed);
        let (reply, rx) = oneshot::channel();
        let cmd = Cmd::Request {
            peer,
            protocol: protocol.into(),
            payload: payload.into(),
            opts: SendOptions::default(),
            token,
            reply,
        };
        let call = async {
            self.command(cmd).await?;
            rx.await.unwrap_or(Err(SendError::Closed))
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(result) => result,
            Err(_elapsed) => {
                let _ = self.ctl(Ctl::Cancel { token });
                Err(SendError::TimedOut)
            }
        }
    }

    /// Registers the handler of `protocol` and returns its stream of inbound messages.
    ///
    /// # Errors
    ///
    /// [`HostError::AlreadyHandled`] if a handler exists; [`HostError::InvalidProtocol`]
    /// for an empty id or one longer than 1024 bytes; [`HostError::Closed`].
    pub fn handle(&self, protocol: &str) -> Result<Incoming, HostError> {
        if protocol.is_empty() || protocol.len() > MAX_PROTOCOL_LEN || protocol == RACE_PROTOCOL {
            return Err(HostError::InvalidProtocol);
        }
        if self.is_closed() {
            return Err(HostError::Closed);
        }
        let (id, rx) = self
            .inner
            .registry
            .insert(protocol, self.inner.handler_queue)
            .ok_or_else(|| HostError::AlreadyHandled(protocol.to_owned()))?;
        let incoming = Incoming::new(
            protocol.to_owned(),
            id,
            rx,
            self.inner.registry.clone(),
            self.inner.ctl_tx.clone(),
        );
        self.ctl(Ctl::Register { protocol: protocol.to_owned() }).map_err(|_| HostError::Closed)?;
        Ok(incoming)
    }

    /// Removes the handler of `protocol`; its [`Incoming`] stream ends after the messages
    /// already queued. Returns whether a handler existed.
    pub fn remove_handler(&self, protocol: &str) -> bool {
        let removed = self.inner.registry.remove(protocol, None);
        if removed {
            let _ = self.ctl(Ctl::Unregister { protocol: protocol.to_owned() });
        }
        removed
    }

    /// Peers with a UDP session (established or in handshake) or a libp2p connection.
    /// Empty once closed.
    pub async fn peers(&self) -> Vec<PeerId> {
        self.query(|reply| Ctl::Peers { reply }).await.unwrap_or_default()
    }

    /// The UDP sessions with `peer`. Empty once closed. See also
    /// [`connections`](Self::connections), which lists libp2p connections too.
    pub async fn sessions(&self, peer: PeerId) -> Vec<SessionInfo> {
        self.query(|reply| Ctl::Sessions { peer, reply }).await.unwrap_or_default()
    }

    /// Every UDP session and libp2p (TCP, QUIC) connection with `peer`, with its
    /// transport. Empty once closed.
    pub async fn connections(&self, peer: PeerId) -> Vec<ConnectionInfo> {
        self.query(|reply| Ctl::Connections { peer, reply }).await.unwrap_or_default()
    }

    /// Stops listening on `addr`, one of [`listen_addrs`](Self::listen_addrs):
    ///
    /// - a UDP address: every UDP session is closed (sending CLOSE) and the UDP socket is
    ///   closed (a socket of the other address family, if any, is bound again at its
    ///   address). Without any UDP socket left, the host no longer uses UDP at all.
    /// - a TCP or QUIC address: the swarm's listener is removed (for an unspecified IP,
    ///   the one listener behind all of its per-interface addresses), and the libp2p
    ///   connections that came in through it are closed.
    ///
    /// Sends in flight on what closes fail over to the peer's other transports where it
    /// has some (see [`crate::network`]). [`listen_addrs`](Self::listen_addrs) no longer
    /// lists the address (nor, for a TCP or QUIC listener on an unspecified IP, its other
    /// per-interface addresses).
    ///
    /// # Errors
    ///
    /// [`HostError::UnsupportedAddress`] if the host does not listen on `addr`;
    /// [`HostError::Io`] if binding the kept socket again failed; [`HostError::Closed`].
    pub async fn remove_listener(&self, addr: &Multiaddr) -> Result<(), HostError> {
        let listening = self.listen_addrs();
        if !listening.contains(addr) {
            return Err(HostError::UnsupportedAddress(addr.clone()));
        }
        let keep = match Transport::of(addr) {
            Some(Transport::Udp) => listening
                .iter()
                .filter(|a| *a != addr)
                .filter_map(addr::multiaddr_to_socket)
                .collect(),
            _ => Vec::new(),
        };
        let addr = addr.clone();
        let gone = self.query(|reply| Ctl::RemoveListener { addr, keep, reply }).await.unwrap_or(Err(HostError::Closed))?;
        let mut listening = self.inner.listen_addrs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        listening.retain(|a| !gone.contains(a));
        Ok(())
    }

    /// The transport `peer`'s messages are routed on after racing consolidated it (see
    /// [`crate::network`]), if any.
    pub async fn consolidated_transport(&self, peer: PeerId) -> Option<Transport> {
        self.query(|reply| Ctl::Consolidated { peer, reply }).await.flatten()
    }

    /// Per-transport counters: messages sent and received on each transport, raced copies,
    /// duplicates dropped. All zero once closed.
    pub async fn transport_stats(&self) -> TransportStats {
        self.query(|reply| Ctl::TransportStats { reply }).await.unwrap_or_default()
    }

    /// Closes every UDP session with `peer` (sending CLOSE) and every libp2p connection
    /// to it; its pending sends fail.
    pub async fn close_peer(&self, peer: PeerId) {
        let _ = self.query(|reply| Ctl::ClosePeer { peer, reply }).await;
    }

    /// The endpoint's counters. All zero once closed.
    pub async fn stats(&self) -> EndpointStats {
        self.query(|reply| Ctl::Stats { reply }).await.unwrap_or_default()
    }

    /// Session events. A receiver that falls more than 256 events behind loses the oldest
    /// ones (`RecvError::Lagged`).
    pub fn events(&self) -> broadcast::Receiver<HostEvent> {
        self.inner.events.subscribe()
    }

    /// Closes every session (sending CLOSE) and libp2p connection, fails pending sends with
    /// [`SendError::Closed`], ends every [`Incoming`] and stops the driver. Resolves once the
    /// driver has stopped. Later calls fail with [`SendError::Closed`].
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        let _ = self.query(|reply| Ctl::Close { reply }).await;
    }

    fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::SeqCst)
    }

    fn ctl(&self, ctl: Ctl) -> Result<(), SendError> {
        self.inner.ctl_tx.send(ctl).map_err(|_| SendError::Closed)
    }

    async fn command(&self, cmd: Cmd) -> Result<(), SendError> {
        if self.is_closed() {
            return Err(SendError::Closed);
        }
        self.inner.cmd_tx.send(cmd).await.map_err(|_| SendError::Closed)
    }

    async fn query<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Ctl) -> Option<T> {
        let (reply, rx) = oneshot::channel();
        self.ctl(make(reply)).ok()?;
        rx.await.ok()
    }
}
