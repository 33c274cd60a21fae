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

use crate::driver::{self, Cmd, Ctl};
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

/// A session event, from [`Host::events`].
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
    /// Adds a UDP address to listen on (`/ip4/<ip>/udp/<port>` or `/ip6/<ip>/udp/<port>`;
    /// port 0 picks a free port). At most one address per address family is supported:
    /// the host has one IPv4 and/or one IPv6 socket, both feeding one endpoint.
    /// Without any call, the host listens on `/ip4/0.0.0.0/udp/0`.
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

    /// Binds the UDP socket(s) and spawns the driver task on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// [`HostError::UnsupportedAddress`] for a non-UDP listen address or a second address
    /// of one family; [`HostError::Io`] if binding fails.
    pub async fn build(self) -> Result<Host, HostError> {
        let HostBuilder { keypair, mut listen, mut config, handler_queue } = self;
        if listen.is_empty() {
            listen.push(socket_default());
        }
        let mut binds: Vec<SocketAddr> = Vec::new();
        for addr in &listen {
            let sock = addr::multiaddr_to_socket(addr)
                .filter(|s| !binds.iter().any(|b| b.is_ipv4() == s.is_ipv4()))
                .filter(|_| !matches!(addr.iter().last(), Some(multiaddr::Protocol::P2p(_))))
                .ok_or_else(|| HostError::UnsupportedAddress(addr.clone()))?;
            binds.push(sock);
        }
        let mut sockets = Vec::with_capacity(binds.len());
        for bind in binds {
            sockets.push(driver::bind(bind)?);
        }
        let listen_addrs = sockets
            .iter()
            .map(|s| s.local_addr().map(addr::socket_to_multiaddr))
            .collect::<Result<Vec<_>, _>>()?;
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
        let driver = driver::Driver::new(
            config,
            &keypair,
            sockets,
            cmd_rx,
            ctl_rx,
            ctl_tx.clone(),
            registry.clone(),
            events.clone(),
            closed.clone(),
        );
        tokio::spawn(driver.run());
        tracing::debug!(peer = %local_peer_id, addrs = ?listen_addrs, "host started");
        Ok(Host {
            inner: Arc::new(Inner {
                local_peer_id,
                listen_addrs,
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

fn socket_default() -> Multiaddr {
    addr::socket_to_multiaddr(SocketAddr::from(([0, 0, 0, 0], 0)))
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
    listen_addrs: Vec<Multiaddr>,
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
            .field("listen_addrs", &self.inner.listen_addrs)
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

    /// The bound addresses (with the actual port), without `/p2p`. An unspecified
    /// address (`0.0.0.0`) is reported as bound.
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.inner.listen_addrs.clone()
    }

    /// Adds an address for `peer`: a UDP address, optionally ending in `/p2p/<peer>`.
    ///
    /// # Errors
    ///
    /// [`HostError::PeerIdMismatch`] if the trailing `/p2p` names another peer;
    /// [`HostError::UnsupportedAddress`] for a non-UDP address; [`HostError::Closed`].
    pub fn add_address(&self, peer: PeerId, addr: Multiaddr) -> Result<(), HostError> {
        let sock = addr::peer_socket_addr(&peer, &addr)?;
        self.ctl(Ctl::AddAddress { peer, addr: sock }).map_err(|_| HostError::Closed)
    }

    /// Splits a dialable address `<udp address>/p2p/<id>` into the peer id and the
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
    pub async fn send(
        &self,
        peer: PeerId,
        protocol: &str,
        payload: impl Into<Bytes>,
    ) -> Result<(), SendError> {
        self.send_with(peer, protocol, payload, SendOptions::default()).await
    }

    /// Sends with explicit [`SendOptions`] (delivery guarantee, 0-RTT permission).
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub async fn send_with(
        &self,
        peer: PeerId,
        protocol: &str,
        payload: impl Into<Bytes>,
        opts: SendOptions,
    ) -> Result<(), SendError> {
        let (reply, rx) = oneshot::channel();
        let cmd = Cmd::Send { peer, protocol: protocol.into(), payload: payload.into(), opts, reply };
        self.command(cmd).await?;
        rx.await.unwrap_or(Err(SendError::Closed))
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
        if protocol.is_empty() || protocol.len() > MAX_PROTOCOL_LEN {
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

    /// Peers with a session (established or in handshake). Empty once closed.
    pub async fn peers(&self) -> Vec<PeerId> {
        self.query(|reply| Ctl::Peers { reply }).await.unwrap_or_default()
    }

    /// The sessions with `peer`. Empty once closed.
    pub async fn sessions(&self, peer: PeerId) -> Vec<SessionInfo> {
        self.query(|reply| Ctl::Sessions { peer, reply }).await.unwrap_or_default()
    }

    /// Closes every session with `peer` (sending CLOSE); its pending sends fail.
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

    /// Closes every session (sending CLOSE), fails pending sends with
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
