//! The driver: one tokio task per [`Host`](crate::Host) that owns the sans-IO
//! [`Endpoint`] and the UDP socket(s), in quinn's model, and the host's libp2p `Swarm`
//! (TCP and QUIC; `swarm_side.rs`).
//!
//! The task loops over five inputs with `tokio::select!`: the swarm's next event
//! (`swarm_side.rs`), socket readability (receive calls
//! until [`RECV_BATCH`] datagrams or none left, each datagram fed to
//! [`Endpoint::handle_datagram`]), control
//! messages from handles, send/request commands from handles, and the endpoint's timer
//! ([`Endpoint::poll_timeout`] → [`Endpoint::handle_timeout`]). After every input it drains
//! [`Endpoint::poll_transmit`] to the sockets and [`Endpoint::poll_event`] to the waiting
//! futures, handler queues and event subscribers, following the core's call order.
//!
//! Each send or request goes to the endpoint or to the swarm's msgnet behaviour as the
//! transport rule of [`crate::network`] says (`routing.rs`), and falls back to the next
//! transport when one cannot reach the peer. Inbound messages from either side reach the
//! same handler queues, each tagged with its side so that its response goes back the way
//! the request came.
//!
//! It owns: the endpoint, the sockets, the swarm, the address book, the maps from
//! [`MessageId`] (one map per side: the ids of the two sides are independent) to the
//! waiting `send`/`request`, and the backlog of commands the endpoint refused with
//! [`SendError::Backpressure`]. It may call only the endpoint, the sockets, and the
//! channels it was built with.
//!
//! ## Two channels
//!
//! - **Commands** (`send`, `request`) travel on a bounded channel of
//!   [`COMMAND_QUEUE`](crate::host::COMMAND_QUEUE) entries. A send the endpoint refuses with
//!   `Backpressure` waits in the driver's backlog and is retried after the next completion
//!   (or timer); while the backlog holds as many entries as the channel, the driver stops
//!   reading the channel, so `send` callers wait: memory stays bounded.
//! - **Control** (register/unregister, respond, cancel, add address, queries, close) travels
//!   on an unbounded channel because it is issued from synchronous code (`Drop`, `handle`,
//!   `respond`). Each control message answers an earlier delivered message or a user call
//!   that awaits its reply, so its length is bounded by what the driver itself produced.
//!   Control is handled before any command issued after it (`add_address` then `send`
//!   works without a race).
//!
//! ## Slow handlers
//!
//! A message for a handler whose bounded queue is full makes the driver *wait* until the
//! handler takes one (still serving control messages, so responses, queries and `close`
//! proceed). Meanwhile no datagram is read: the kernel's receive buffer fills, packets are
//! dropped there and the senders retransmit under congestion control. A slow handler thus
//! backpressures every peer of this host instead of growing a queue without bound. Handlers
//! that must not stall the host should hand work to their own tasks promptly.
//!
//! ## Sockets
//!
//! One UDP socket per address family (IPv4 and/or IPv6, the IPv6 one `IPV6_V6ONLY`), both
//! feeding the one endpoint; a datagram goes out of the socket of its destination's family.
//! The sockets live behind [`udp::Udp`] (`udp.rs`), which batches: the datagrams of one
//! flush go to [`udp::Udp::send`], which groups runs of equal-size datagrams to one
//! destination into one GSO send, and one receive call may return many datagrams
//! (`recvmmsg`, GRO).

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use libp2p::swarm::ConnectionId;
use libp2p::Swarm;
use libp2p_identity::{Keypair, PeerId};
use msgnet_core::{Endpoint, EndpointConfig, Event, MessageId, SendError};
use multiaddr::Multiaddr;
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{debug, trace};

// Declared here rather than in `lib.rs` so that the driver's files stay the driver's own;
// it is `src/udp.rs`.
#[path = "udp.rs"]
pub(crate) mod udp;
pub(crate) use udp::bind;
#[path = "routing.rs"]
mod routing;
#[path = "swarm_side.rs"]
pub(crate) mod swarm_side;

pub(crate) use crate::command::{Cmd, Ctl};
use crate::command::Via;
use crate::network::{AddressBook, ConnectionInfo, Transport};
use crate::host::{HostEvent, COMMAND_QUEUE};
use crate::incoming::{IncomingMessage, Registry};
use crate::socket_to_multiaddr;

/// Receive calls stop once a wakeup has read this many datagrams, so that the driver looks
/// at its other inputs (one call may return up to [`quinn_udp::BATCH_SIZE`] buffers, each
/// holding up to 64 datagrams under GRO).
pub(crate) const RECV_BATCH: usize = 64;
/// Most queued commands taken per wakeup before the driver flushes.
pub(crate) const CMD_BATCH: usize = 256;
/// Transmit buffer: the largest UDP payload.
const TX_BUF: usize = 65_536;

/// Why the loop ends.
enum Stop {
    Close(oneshot::Sender<()>),
    Shutdown,
}

/// The state of one host's driver task.
pub(crate) struct Driver {
    endpoint: Endpoint,
    udp: udp::Udp,
    cmd_rx: mpsc::Receiver<Cmd>,
    ctl_rx: mpsc::UnboundedReceiver<Ctl>,
    /// Handed to every delivered request so that it can be answered.
    ctl_tx: mpsc::UnboundedSender<Ctl>,
    registry: Arc<Registry>,
    events: broadcast::Sender<HostEvent>,
    closed: Arc<AtomicBool>,
    tx_buf: Vec<u8>,
    swarm: Swarm<swarm_side::Behaviour>,
    book: AddressBook,
    /// Open libp2p connections: peer, transport, remote address.
    conns: HashMap<ConnectionId, (PeerId, Transport, Multiaddr)>,
    udp_pending: HashMap<MessageId, routing::Pending>,
    swarm_pending: HashMap<MessageId, routing::Pending>,
    /// Request token → its side and id there.
    tokens: HashMap<u64, (Via, MessageId)>,
    /// Commands refused with `Backpressure`, in arrival order.
    backlog: VecDeque<Cmd>,
    /// Backlog entries per peer: a peer with entries queues new commands behind them.
    backlog_peers: HashMap<PeerId, usize>,
    /// Transport racing and consolidation (`racing.rs`).
    racing: routing::Racing,
}

impl Driver {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        config: EndpointConfig,
        keypair: &Keypair,
        sockets: Vec<UdpSocket>,
        swarm: Swarm<swarm_side::Behaviour>,
        cmd_rx: mpsc::Receiver<Cmd>,
        ctl_rx: mpsc::UnboundedReceiver<Ctl>,
        ctl_tx: mpsc::UnboundedSender<Ctl>,
        registry: Arc<Registry>,
        events: broadcast::Sender<HostEvent>,
        closed: Arc<AtomicBool>,
    ) -> Self {
        let unix_now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        let endpoint = Endpoint::new(config, keypair, Instant::now(), unix_now);
        Self {
            endpoint,
            udp: udp::Udp::new(sockets),
            cmd_rx,
            ctl_rx,
            ctl_tx,
            registry,
            events,
            closed,
            tx_buf: Vec::with_capacity(TX_BUF),
            swarm,
            book: AddressBook::default(),
            conns: HashMap::new(),
            udp_pending: HashMap::new(),
            swarm_pending: HashMap::new(),
            tokens: HashMap::new(),
            backlog: VecDeque::new(),
            backlog_peers: HashMap::new(),
            racing: routing::Racing::default(),
        }
    }

    /// Runs until `close`, or until every host handle is dropped.
    pub(crate) async fn run(mut self) {
        let stop = self.run_loop().await;
        self.shutdown().await;
        if let Stop::Close(reply) = stop {
            let _ = reply.send(());
        }
    }

    async fn run_loop(&mut self) -> Stop {
        let sleep = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(sleep);
        loop {
            if let Some(stop) = self.drain_ctl() {
                return stop;
            }
            if let Some(deadline) = self.endpoint.poll_timeout() {
                if deadline <= Instant::now() {
                    if let Some(stop) = self.timeout() {
                        return stop;
                    }
                }
            }
            if let Some(stop) = self.after_input().await {
                return stop;
            }
            self.finish_listener_removal();
            let deadline = self.endpoint.poll_timeout();
            if let Some(deadline) = deadline {
                sleep.as_mut().reset(tokio::time::Instant::from_std(deadline));
            }
            let accept_commands = self.backlog.len() < COMMAND_QUEUE;
            tokio::select! {
                ctl = self.ctl_rx.recv() => match ctl {
                    Some(ctl) => if let Some(stop) = self.on_ctl(ctl) { return stop },
                    None => return Stop::Shutdown,
                },
                Ok(()) = self.udp.readable(0) => {
                    if let Some(stop) = self.receive(0) {
                        return stop;
                    }
                }
                Ok(()) = self.udp.readable(1) => {
                    if let Some(stop) = self.receive(1) {
                        return stop;
                    }
                }
                cmd = self.cmd_rx.recv(), if accept_commands => match cmd {
                    Some(cmd) => {
                        // Control sent before this command goes first (add_address, then send).
                        if let Some(stop) = self.drain_ctl() {
                            cmd.fail(SendError::Closed);
                            return stop;
                        }
                        self.on_cmd(cmd);
                        // Take what else is queued before flushing, so that small messages
                        // sent together share packets (coalescing) and the socket sees one
                        // write per packet rather than per message.
                        for _ in 0..CMD_BATCH {
                            if self.backlog.len() >= COMMAND_QUEUE {
                                break;
                            }
                            let Ok(cmd) = self.cmd_rx.try_recv() else { break };
                            if let Some(stop) = self.drain_ctl() {
                                cmd.fail(SendError::Closed);
                                return stop;
                            }
                            self.on_cmd(cmd);
                        }
                    }
                    None => return Stop::Shutdown,
                },
                event = self.swarm.select_next_some() => {
                    if let Err(stop) = self.on_swarm_event(event).await {
                        return stop;
                    }
                }
                () = &mut sleep, if deadline.is_some() => {
                    if let Some(stop) = self.timeout() {
                        return stop;
                    }
                    self.retry_backlog();
                }
            }
        }
    }

    /// Handles every control message already queued, in order.
    fn drain_ctl(&mut self) -> Option<Stop> {
        while let Ok(ctl) = self.ctl_rx.try_recv() {
            if let Some(stop) = self.on_ctl(ctl) {
                return Some(stop);
            }
        }
        None
    }

    /// Runs the endpoint's timers, reading what the sockets hold first: when the task ran
    /// late (a loaded machine), the acknowledgements waiting there must count before a
    /// retransmission timeout declares their packets lost.
    fn timeout(&mut self) -> Option<Stop> {
        for index in 0..2 {
            if let Some(stop) = self.receive(index) {
                return Some(stop);
            }
        }
        self.endpoint.handle_timeout(Instant::now());
        None
    }

    /// Reads datagrams from socket `index` into the endpoint: receive calls until one finds
    /// nothing or [`RECV_BATCH`] datagrams have been read.
    ///
    /// Control messages queued before a datagram was handled are handled before it: a
    /// datagram that a local `handle`/`remove_handler` call caused (through the peer) must
    /// meet the endpoint with that call applied.
    fn receive(&mut self, index: usize) -> Option<Stop> {
        let now = Instant::now();
        let mut read = 0;
        // Errors count as calls, so that a socket that keeps failing cannot hold the loop.
        for _ in 0..RECV_BATCH {
            if read >= RECV_BATCH {
                break;
            }
            let n = match self.udp.recv(index) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // E.g. ICMP port unreachable surfacing as ECONNREFUSED: not fatal.
                Err(e) => {
                    debug!(error = %e, "recv failed");
                    continue;
                }
            };
            read += n;
            for i in 0..n {
                if let Some(stop) = self.drain_ctl() {
                    return Some(stop);
                }
                let Some((from, data)) = self.udp.datagram(i) else { continue };
                trace!(%from, len = data.len(), "datagram in");
                self.endpoint.handle_datagram(now, from, data);
            }
        }
        None
    }

    /// The outputs that follow every input: transmits, then events; then the backlog, if
    /// completions made room, and its outputs in turn.
    async fn after_input(&mut self) -> Option<Stop> {
        loop {
            self.flush().await;
            let completed = match self.drain_events().await {
                Ok(completed) => completed,
                Err(stop) => return Some(stop),
            };
            if !(completed && self.retry_backlog()) {
                return None;
            }
        }
    }

    /// Sends every datagram the endpoint has queued, in batches where the sockets allow.
    async fn flush(&mut self) {
        loop {
            self.tx_buf.clear();
            let Some(transmit) = self.endpoint.poll_transmit(Instant::now(), &mut self.tx_buf)
            else {
                break;
            };
            let dest = transmit.destination;
            let Some(data) = self.tx_buf.get(..transmit.size) else {
                debug!(size = transmit.size, "transmit larger than its buffer; dropped");
                continue;
            };
            trace!(%dest, len = data.len(), "datagram out");
            self.udp.send(dest, data).await;
        }
        self.udp.flush().await;
    }

    /// Drains the endpoint's events. `Ok(true)` if a send or request completed.
    async fn drain_events(&mut self) -> Result<bool, Stop> {
        let mut completed = false;
        while let Some(event) = self.endpoint.poll_event() {
            match event {
                Event::Message(msg) => self.deliver(msg, Via::Udp).await?,
                Event::SendComplete { id, result } => {
                    completed = true;
                    self.complete(Via::Udp, id, result.map(|()| None));
                }
                Event::Response { id, result } => {
                    completed = true;
                    self.complete(Via::Udp, id, result.map(Some));
                }
                Event::SessionUp { peer, session, remote } => {
                    debug!(%peer, ?session, %remote, "session up");
                    let remote = socket_to_multiaddr(remote);
                    let _ = self.events.send(HostEvent::SessionUp { peer, remote });
                }
                Event::SessionDown { peer, session, reason } => {
                    completed = true;
                    self.race_udp_down(&peer);
                    debug!(%peer, ?session, %reason, "session down");
                    let _ = self.events.send(HostEvent::SessionDown { peer, reason });
                }
                other => trace!(event = ?other, "unhandled endpoint event"),
            }
        }
        Ok(completed)
    }

    /// Hands a message to its protocol's handler, waiting while the handler's queue is
    /// full (serving control messages meanwhile).
    async fn deliver(&mut self, msg: msgnet_core::IncomingMessage, via: Via) -> Result<(), Stop> {
        // Counted; a raced copy is unwrapped or, if a duplicate, dropped (`racing.rs`).
        let Some(msg) = self.race_intercept(msg, via) else { return Ok(()) };
        let protocol = msg.protocol.clone();
        let msg = IncomingMessage::new(msg, &self.ctl_tx, via);
        let Some((id, tx)) = self.registry.sender(&protocol) else {
            // Removed meanwhile: dropping `msg` answers a request with an error.
            self.unregister_if_unhandled(&protocol);
            return Ok(());
        };
        let msg = match tx.try_send(msg) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Closed(_msg)) => {
                self.handler_gone(&protocol, id);
                return Ok(());
            }
            Err(mpsc::error::TrySendError::Full(msg)) => msg,
        };
        debug!(%protocol, "handler queue full; driver waits for the handler");
        loop {
            tokio::select! {
                permit = tx.reserve() => {
                    match permit {
                        Ok(permit) => permit.send(msg),
                        Err(_) => self.handler_gone(&protocol, id),
                    }
                    return Ok(());
                }
                ctl = self.ctl_rx.recv() => match ctl {
                    Some(ctl) => {
                        if let Some(stop) = self.on_ctl(ctl) {
                            return Err(stop);
                        }
                        // E.g. responses of other handlers: send them while we wait.
                        self.flush().await;
                    }
                    None => return Err(Stop::Shutdown),
                },
            }
        }
    }

    fn handler_gone(&mut self, protocol: &str, id: u64) {
        self.registry.remove(protocol, Some(id));
        self.unregister_if_unhandled(protocol);
    }

    fn unregister_if_unhandled(&mut self, protocol: &str) {
        if !self.registry.contains(protocol) {
            self.endpoint.unregister_protocol(protocol);
            self.swarm.behaviour_mut().msgnet.remove_handler(protocol);
        }
    }

    fn on_ctl(&mut self, ctl: Ctl) -> Option<Stop> {
        let now = Instant::now();
        match ctl {
            Ctl::Register { protocol } => {
                if self.registry.contains(&protocol) {
                    self.endpoint.register_protocol(&protocol);
                    self.swarm.behaviour_mut().msgnet.handle(&protocol);
                }
            }
            Ctl::Unregister { protocol } => self.unregister_if_unhandled(&protocol),
            Ctl::Respond { request, via, result } => {
                let result = self.race_wrap_response(&request, via, result);
                let sent = match via {
                    Via::Udp => self.endpoint.respond(now, &request, result),
                    Via::Swarm => self.swarm.behaviour_mut().msgnet.respond(&request, result),
                };
                if let Err(e) = sent {
                    debug!(protocol = %request.protocol, error = %e, "response not sent");
                }
            }
            Ctl::Cancel { token } => self.cancel(token),
            Ctl::AddAddress { peer, transport, addr, sock } => {
                self.book.add(peer, transport, addr);
                if let Some(sock) = sock {
                    self.endpoint.add_address(peer, sock);
                }
            }
            Ctl::Peers { reply } => {
                let mut peers = self.endpoint.peers();
                for (peer, _, _) in self.conns.values() {
                    if !peers.contains(peer) {
                        peers.push(*peer);
                    }
                }
                let _ = reply.send(peers);
            }
            Ctl::Sessions { peer, reply } => drop(reply.send(self.endpoint.sessions(&peer))),
            Ctl::Connections { peer, reply } => drop(reply.send(self.connections(&peer))),
            Ctl::RemoveListener { addr, keep, reply } => self.remove_listener(addr, keep, reply),
            Ctl::Consolidated { peer, reply } => drop(reply.send(self.consolidated_on(&peer))),
            Ctl::TransportStats { reply } => drop(reply.send(self.transport_stats())),
            Ctl::ClosePeer { peer, reply } => {
                self.forget_consolidation(&peer);
                self.endpoint.close_peer(now, &peer);
                let _ = self.swarm.disconnect_peer_id(peer);
                let _ = reply.send(());
            }
            Ctl::Stats { reply } => drop(reply.send(self.endpoint.stats().clone())),
            Ctl::Close { reply } => return Some(Stop::Close(reply)),
            Ctl::Shutdown => return Some(Stop::Shutdown),
        }
        None
    }

    /// Every UDP session and libp2p connection with `peer`.
    fn connections(&self, peer: &PeerId) -> Vec<ConnectionInfo> {
        let udp = self.endpoint.sessions(peer).into_iter().map(|s| ConnectionInfo {
            transport: Transport::Udp,
            remote: socket_to_multiaddr(s.remote),
            established: s.established,
        });
        let swarm = self.conns.values().filter(|c| c.0 == *peer).map(|(_, t, remote)| ConnectionInfo {
            transport: *t,
            remote: remote.clone(),
            established: true,
        });
        udp.chain(swarm).collect()
    }

    fn on_cmd(&mut self, cmd: Cmd) {
        if cmd.abandoned() {
            return;
        }
        let peer = cmd.peer();
        if self.backlog_peers.contains_key(&peer) {
            self.push_backlog(cmd);
        } else if let Some(cmd) = self.submit(cmd) {
            self.push_backlog(cmd);
        }
    }

    fn push_backlog(&mut self, cmd: Cmd) {
        *self.backlog_peers.entry(cmd.peer()).or_default() += 1;
        self.backlog.push_back(cmd);
    }

    fn pop_backlog(&mut self) -> Option<Cmd> {
        let cmd = self.backlog.pop_front()?;
        if let Some(n) = self.backlog_peers.get_mut(&cmd.peer()) {
            *n -= 1;
            if *n == 0 {
                self.backlog_peers.remove(&cmd.peer());
            }
        }
        Some(cmd)
    }

    /// Retries the backlog once, in order per peer. Returns whether any entry left it.
    fn retry_backlog(&mut self) -> bool {
        let mut blocked = HashSet::new();
        let mut progressed = false;
        for _ in 0..self.backlog.len() {
            let Some(cmd) = self.pop_backlog() else { break };
            if cmd.abandoned() {
                progressed = true;
                continue;
            }
            if blocked.contains(&cmd.peer()) {
                self.push_backlog(cmd);
                continue;
            }
            match self.submit(cmd) {
                None => progressed = true,
                Some(cmd) => {
                    blocked.insert(cmd.peer());
                    self.push_backlog(cmd);
                }
            }
        }
        progressed
    }

    /// Closes the endpoint (sending CLOSE), fails everything pending with
    /// [`SendError::Closed`] and ends every handler stream.
    async fn shutdown(&mut self) {
        self.closed.store(true, Ordering::SeqCst);
        self.endpoint.close(Instant::now());
        self.flush().await;
        while let Some(event) = self.endpoint.poll_event() {
            match event {
                Event::SendComplete { id, result } => {
                    if let Some(p) = self.udp_pending.remove(&id) {
                        p.cmd.finish(result.map(|()| None));
                    }
                }
                Event::Response { id, result } => {
                    if let Some(p) = self.udp_pending.remove(&id) {
                        p.cmd.finish(result.map(Some));
                    }
                }
                Event::SessionDown { peer, reason, .. } => {
                    let _ = self.events.send(HostEvent::SessionDown { peer, reason });
                }
                _ => {}
            }
        }
        self.fail_pending(&SendError::Closed);
        // Close every libp2p connection; dropping the swarm with the driver ends them.
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in peers {
            let _ = self.swarm.disconnect_peer_id(peer);
        }

        while let Some(cmd) = self.pop_backlog() {
            cmd.fail(SendError::Closed);
        }
        self.cmd_rx.close();
        while let Ok(cmd) = self.cmd_rx.try_recv() {
            cmd.fail(SendError::Closed);
        }
        self.registry.clear();
        self.udp.log_totals();
        debug!("driver stopped");
    }
}
