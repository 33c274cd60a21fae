//! The driver's libp2p side: the host's `Swarm` (TCP+noise+yamux and QUIC, with
//! msgnet-libp2p's behaviour beside identify and ping), how it is built and started
//! listening, and how the driver turns swarm events into completions, deliveries and
//! host events. Declared inside `driver.rs`, whose state it shares.
//!
//! The swarm is polled by the driver's own `tokio::select!` (no task of its own), so the
//! behaviour is called directly from the driver. The behaviour's address book is not used:
//! the driver dials with the addresses of the transport it chose (see
//! [`crate::network`]), so that a peer with TCP and QUIC addresses is reached on the one
//! the rule picks. A raced copy dials its transport alone and goes out on that
//! connection (`Behaviour::request_on`) once its msgnet stream is open; a peer consolidated
//! on QUIC or TCP is sent to on a ready connection of that transport (`send_on`).

use std::collections::HashSet;
use std::io;
use std::time::Duration;

use libp2p::core::transport::ListenerId;
use libp2p::futures::StreamExt;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identify, noise, ping, tcp, yamux, Swarm};
use libp2p_identity::{Keypair, PeerId};
use msgnet_core::{MessageId, SendError};
use multiaddr::{Multiaddr, Protocol};
use tracing::debug;

use super::{Driver, Stop};
use crate::command::{Cmd, Via};
use crate::host::HostEvent;
use crate::network::Transport;
use crate::HostError;

/// Agent version announced by identify.
const AGENT: &str = concat!("msgnet/", env!("CARGO_PKG_VERSION"));
/// A libp2p connection without traffic is closed after this long (the msgnet behaviour
/// keeps connections with open msgnet streams alive anyway).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `build()` waits for the swarm's listeners to report their addresses.
pub(crate) const LISTEN_TIMEOUT: Duration = Duration::from_secs(5);

/// The host's libp2p behaviours.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) msgnet: msgnet_libp2p::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
}

/// Builds the host's swarm with `keypair` (the same identity as the UDP endpoint).
pub(crate) fn build_swarm(keypair: &Keypair) -> Result<Swarm<Behaviour>, HostError> {
    let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair.clone())
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)
        .map_err(|e| HostError::Io(io::Error::other(e.to_string())))?
        .with_quic()
        .with_behaviour(|key| Behaviour {
            // The Host bounds every request with the caller's own timeout (`Host::request`), so
            // the behaviour's default 30 s cap would only cut longer ones short.
            msgnet: msgnet_libp2p::Behaviour::new(msgnet_libp2p::Config {
                request_timeout: Duration::MAX,
                ..msgnet_libp2p::Config::default()
            }),
            identify: identify::Behaviour::new(identify::Config::new(
                msgnet_libp2p::PROTOCOL.to_owned(),
                key.public(),
            )
            .with_agent_version(AGENT.to_owned())),
            ping: ping::Behaviour::new(ping::Config::new()),
        })
        .map_err(|e| HostError::Io(io::Error::other(e.to_string())))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_TIMEOUT))
        .build();
    Ok(swarm)
}

/// Starts listening on `addrs` and waits (at most [`LISTEN_TIMEOUT`]) until every listener
/// reported an address; returns the addresses, each with its listener. An unspecified IP
/// yields one address per interface, collected for a short while after the first.
pub(crate) async fn listen(
    swarm: &mut Swarm<Behaviour>,
    addrs: &[Multiaddr],
) -> Result<Vec<(Multiaddr, ListenerId)>, HostError> {
    let mut waiting = HashSet::new();
    for addr in addrs {
        let id = swarm.listen_on(addr.clone()).map_err(|e| {
            debug!(%addr, error = %e, "listen failed");
            HostError::UnsupportedAddress(addr.clone())
        })?;
        waiting.insert(id);
    }
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + LISTEN_TIMEOUT;
    let mut settle: Option<tokio::time::Instant> = None;
    loop {
        let until = if waiting.is_empty() {
            match settle {
                Some(t) => t,
                None => break,
            }
        } else {
            deadline
        };
        let Ok(event) = tokio::time::timeout_at(until, swarm.select_next_some()).await else {
            if !waiting.is_empty() {
                debug!(missing = waiting.len(), "listeners did not report an address in time");
            }
            break;
        };
        match event {
            SwarmEvent::NewListenAddr { listener_id, address } => {
                waiting.remove(&listener_id);
                out.push((address, listener_id));
                if waiting.is_empty() && settle.is_none() {
                    settle = Some(tokio::time::Instant::now() + Duration::from_millis(50));
                }
            }
            SwarmEvent::ListenerClosed { listener_id, reason, .. } if waiting.contains(&listener_id) => {
                let error = match reason {
                    Ok(()) => io::Error::other("listener closed"),
                    Err(e) => e,
                };
                return Err(HostError::Io(error));
            }
            SwarmEvent::ListenerError { listener_id, error } if waiting.contains(&listener_id) => {
                return Err(HostError::Io(error));
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The transport of a libp2p connection, from its remote address.
pub(crate) fn transport_of_conn(remote: &Multiaddr) -> Transport {
    if remote.iter().any(|p| matches!(p, Protocol::QuicV1)) {
        Transport::Quic
    } else {
        Transport::Tcp
    }
}

impl Driver {
    /// The transport of a libp2p connection to `peer`, if any.
    pub(super) fn swarm_transport(&self, peer: &PeerId) -> Option<Transport> {
        self.conns.values().find(|c| c.0 == *peer).map(|c| c.1)
    }

    /// Hands a command to the behaviour, dialing `peer` first on `transport` if there is no
    /// connection.
    pub(super) fn swarm_submit(&mut self, cmd: &Cmd, transport: Transport) -> Result<MessageId, SendError> {
        let peer = cmd.peer();
        if let Some(c) = self.ready_conn(&peer, transport) {
            let msgnet = &mut self.swarm.behaviour_mut().msgnet;
            return match cmd {
                Cmd::Send { protocol, payload, .. } => msgnet.send_on(c, protocol, payload.clone()),
                Cmd::Request { protocol, payload, .. } => msgnet.request_on(c, protocol, payload.clone()),
            };
        }
        if !self.swarm.is_connected(&peer) {
            let addrs = self.book.addrs(&peer, transport);
            if addrs.is_empty() {
                return Err(SendError::NoAddress);
            }
            let opts = DialOpts::peer_id(peer)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .addresses(addrs)
                .build();
            // Fails when a dial is under way already: the behaviour waits for its outcome.
            if let Err(e) = self.swarm.dial(opts) {
                debug!(%peer, error = %e, "dial not started");
            }
        }
        let msgnet = &mut self.swarm.behaviour_mut().msgnet;
        match cmd {
            Cmd::Send { protocol, payload, .. } => msgnet.send(peer, protocol, payload.clone()),
            Cmd::Request { protocol, payload, .. } => msgnet.request(peer, protocol, payload.clone()),
        }
    }

    /// Handles one swarm event.
    pub(super) async fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) -> Result<(), Stop> {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Msgnet(event)) => match event {
                msgnet_libp2p::Event::Message(msg) => self.deliver(msg, Via::Swarm).await?,
                msgnet_libp2p::Event::SendComplete { id, result } => {
                    self.complete(Via::Swarm, id, result.map(|()| None));
                    self.retry_backlog();
                }
                msgnet_libp2p::Event::Response { id, result } => {
                    self.complete(Via::Swarm, id, result.map(Some));
                    self.retry_backlog();
                }
                msgnet_libp2p::Event::MsgnetSupport { peer, connection, supported } => {
                debug!(%peer, ?connection, supported, "msgnet support known");
                self.race_conn_ready(connection, supported);
                self.retry_backlog();
            }
                other => debug!(event = ?other, "msgnet behaviour event"),
            },
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
                debug!(peer = %peer_id, agent = %info.agent_version, "identified");
                let _ = self.events.send(HostEvent::Identified {
                    peer: peer_id,
                    listen_addrs: info.listen_addrs,
                    protocols: info.protocols.iter().map(ToString::to_string).collect(),
                    agent_version: info.agent_version,
                });
            }
            SwarmEvent::ConnectionEstablished { peer_id, connection_id, endpoint, .. } => {
                let remote = endpoint.get_remote_address().clone();
                let transport = transport_of_conn(&remote);
                debug!(peer = %peer_id, %remote, %transport, "libp2p connection up");
                self.book.set_failed(&peer_id, transport, false);
                self.conns.insert(connection_id, (peer_id, transport, remote.clone()));
                let local = match &endpoint {
                    libp2p::core::ConnectedPoint::Listener { local_addr, .. } => Some(local_addr.clone()),
                    libp2p::core::ConnectedPoint::Dialer { .. } => None,
                };
                self.race_conn_up(connection_id, local);
                let _ = self.events.send(HostEvent::SessionUp { peer: peer_id, remote });
            }
            SwarmEvent::ConnectionClosed { peer_id, connection_id, cause, .. } => {
                let transport = self.conns.remove(&connection_id).map(|c| c.1);
                let reason = cause.map_or_else(|| "closed".to_owned(), |c| c.to_string());
                debug!(peer = %peer_id, %reason, "libp2p connection down");
                self.race_conn_gone(connection_id, Some(peer_id), transport, reason.clone());
                self.retry_backlog();
                let _ = self.events.send(HostEvent::SessionDown { peer: peer_id, reason });
            }
            SwarmEvent::OutgoingConnectionError { peer_id, connection_id, error } => {
                debug!(peer = ?peer_id, %error, "dial failed");
                self.race_conn_gone(connection_id, peer_id, None, error.to_string());
                self.retry_backlog();
            }
            _ => {}
        }
        Ok(())
    }
}
