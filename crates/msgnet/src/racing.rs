//! The driver's transport racing and consolidation (`docs/wire.md` §7; the rule is in
//! [`crate::network`]). Declared inside `routing.rs`; shares the driver's state.
//!
//! **Sender.** A reliable send or request to a peer with no established path (no
//! established UDP session, no libp2p connection), not consolidated yet, whose payload is
//! at most [`RACE_MAX_PAYLOAD`] bytes and for which at least two transports have addresses
//! not marked failing, is *raced*: one copy per transport, each a request on
//! [`RACE_PROTOCOL`] carrying a [`RaceCopy`] with a fresh random race id and that
//! copy's transport id. The UDP copy goes to the endpoint (0-RTT if allowed); a QUIC or
//! TCP copy dials that transport alone (its own connection) and is sent on that
//! connection once its msgnet stream is open. The caller's future completes with the first
//! answer that decides it (a send: any answer; a request: the answer carrying the
//! response); the other copies' outcomes are only used for their ACKs. Commands issued
//! to that peer while its race is unresolved wait in the driver's (bounded) backlog, in
//! order, and go out on the consolidated transport once the first answer arrived (or
//! the plain way once every copy failed).
//!
//! **Receiver.** A copy is delivered unless a copy with the same race id from the same
//! peer was (a bounded set of [`SEEN_CAP`] ids per host, forgotten after [`SEEN_TTL`]).
//! Every copy is answered with a [`RaceAnswer`] whose ACK names the transport the
//! receiver prefers for this peer: UDP if any copy of the race arrived on UDP, else the
//! transport of the first copy. The receiver routes its own messages to the peer on that
//! transport from then on.
//!
//! **Consolidation.** The sender consolidates on the ACK'd transport (UDP if any ACK of
//! the race named it, else the first ACK). Both sides then put that transport first for
//! the peer (a QUIC or TCP one on a connection of that transport). When it fails (its UDP
//! session goes down, its connection closes, or a message on it fails with
//! `Unreachable`, `SessionClosed` or `TimedOut`), the consolidation is dropped and the
//! failed message is sent again on the next transport of the peer's plan.
//!
//! A peer without racing refuses the copies (`UnsupportedProtocol`): the message is then
//! sent once, the plain way.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use libp2p::core::transport::ListenerId;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::ConnectionId;
use libp2p_identity::PeerId;
use msgnet_core::wire::{transport_id, RaceAnswer, RaceCopy, RaceOutcome, RACE_PROTOCOL};
use msgnet_core::{Delivery, InboundRequest, IncomingMessage, MessageId, SendError, SendOptions, SessionId};
use multiaddr::Multiaddr;
use tokio::sync::oneshot;
use tracing::debug;

use crate::command::{Cmd, Via};
use crate::driver::Driver;
use crate::network::{self, Transport, TransportStats};
use crate::HostError;

/// Largest payload raced; larger messages go on one transport.
pub(crate) const RACE_MAX_PAYLOAD: usize = 64 * 1024;
/// Race ids remembered by a receiver (across peers); the oldest is forgotten first.
pub(crate) const SEEN_CAP: usize = 4096;
/// How long a receiver remembers a race id.
pub(crate) const SEEN_TTL: Duration = Duration::from_secs(120);
/// Peers consolidated on a transport, at most (see `Driver::consolidate`).
pub(crate) const CONSOLIDATED_CAP: usize = 4096;
/// Delivered raced requests awaiting their handler's answer, at most.
const ANSWERING_CAP: usize = 4096;

/// The racing and consolidation state of one driver.
#[derive(Default)]
pub(crate) struct Racing {
    /// The transport each peer's messages are routed on, once consolidated.
    consolidated: HashMap<PeerId, Transport>,
    races: HashMap<u64, Race>,
    /// Peers whose race is unresolved → its id.
    racing_peers: HashMap<PeerId, u64>,
    /// Copies in flight: (side, id there) → (race id, transport).
    copies: HashMap<(Via, MessageId), (u64, Transport)>,
    /// Copies waiting for their own connection: connection → (race id, transport).
    dials: HashMap<ConnectionId, (u64, Transport)>,
    /// libp2p connections whose msgnet stream is open.
    ready: HashSet<ConnectionId>,
    /// Receiver: (peer, race id) → the transport our answers name for it.
    seen: HashMap<(PeerId, u64), Transport>,
    seen_order: VecDeque<(Instant, (PeerId, u64))>,
    /// Receiver: delivered raced requests (side, session, request id) → peer.
    answering: HashMap<(Via, SessionId, u64), PeerId>,
    /// The swarm's listeners by reported address.
    listeners: HashMap<Multiaddr, ListenerId>,
    /// Inbound libp2p connections → the local (listener) address.
    inbound: HashMap<ConnectionId, Multiaddr>,
    /// A UDP listener removal waiting for the CLOSEs to be flushed.
    udp_removal: Option<UdpRemoval>,
    /// Every UDP socket was removed: UDP is left out of every plan.
    udp_closed: bool,
    stats: TransportStats,
}

/// A UDP listener removal: the sockets to bind again, the removed address, and the
/// caller (answered with the addresses no longer listened on).
type UdpRemoval = (Vec<SocketAddr>, Multiaddr, oneshot::Sender<Result<Vec<Multiaddr>, HostError>>);

struct Race {
    peer: PeerId,
    /// The caller, until answered.
    cmd: Option<Cmd>,
    protocol: String,
    payload: Bytes,
    request: bool,
    early_data: bool,
    /// Copies not finished (sent or dialing).
    outstanding: usize,
    /// The transport the answers chose (UDP if any named it, else the first).
    ack: Option<Transport>,
    /// A copy was refused: the peer does not race.
    unsupported: bool,
    last_error: Option<SendError>,
}

fn bump(map: &mut std::collections::BTreeMap<Transport, u64>, t: Transport) {
    *map.entry(t).or_default() += 1;
}

fn encode_answer(transport: u16, outcome: RaceOutcome<'_>) -> Bytes {
    let mut out = Vec::new();
    RaceAnswer { transport_id: transport, outcome }.encode(&mut out);
    Bytes::from(out)
}

impl Driver {
    /// Registers the race protocol on both sides and remembers the swarm's listeners;
    /// without a UDP socket (`has_udp` false) UDP is left out of every plan. Called once,
    /// before the driver runs.
    pub(crate) fn enable_racing(&mut self, listeners: Vec<(Multiaddr, ListenerId)>, has_udp: bool) {
        self.endpoint.register_protocol(RACE_PROTOCOL);
        self.swarm.behaviour_mut().msgnet.handle(RACE_PROTOCOL);
        self.racing.listeners = listeners.into_iter().collect();
        self.racing.udp_closed = !has_udp;
    }

    /// The plan for `peer`: the consolidated transport first, UDP left out without a
    /// socket.
    pub(in crate::driver) fn route_plan(&self, peer: &PeerId, current: Option<Transport>) -> Vec<Transport> {
        let mut plan = self.book.plan(peer, current);
        if let Some(t) = self.racing.consolidated.get(peer) {
            plan.retain(|x| x != t);
            plan.insert(0, *t);
        }
        if self.racing.udp_closed {
            plan.retain(|t| *t != Transport::Udp);
        }
        plan
    }

    /// Whether `peer`'s commands must wait for its race to resolve.
    pub(in crate::driver) fn race_unresolved(&self, peer: &PeerId) -> bool {
        self.racing.racing_peers.contains_key(peer)
    }

    pub(in crate::driver) fn udp_closed(&self) -> bool {
        self.racing.udp_closed
    }

    pub(in crate::driver) fn count_sent(&mut self, t: Transport) {
        bump(&mut self.racing.stats.sent, t);
    }

    pub(in crate::driver) fn consolidated_on(&self, peer: &PeerId) -> Option<Transport> {
        self.racing.consolidated.get(peer).copied()
    }

    /// `t` failed for `peer` while consolidated on it: the consolidation moves to the
    /// next transport of the peer's plan (if any), which later messages then use.
    pub(in crate::driver) fn consolidation_failed(&mut self, peer: &PeerId, t: Transport) {
        if self.racing.consolidated.get(peer) != Some(&t) {
            return;
        }
        self.racing.consolidated.remove(peer);
        let current = self.current_transport(peer).filter(|c| *c != t);
        let next = self.route_plan(peer, current).into_iter().find(|x| *x != t);
        debug!(%peer, failed = %t, next = ?next, "consolidated transport failed");
        if let Some(next) = next {
            self.racing.consolidated.insert(*peer, next);
        }
    }

    /// Consolidates `peer` on `t`. The table is bounded: when full, the consolidations of
    /// peers with no established path are forgotten first (their next message races again).
    fn consolidate(&mut self, peer: PeerId, t: Transport) {
        if self.racing.consolidated.len() >= CONSOLIDATED_CAP && !self.racing.consolidated.contains_key(&peer) {
            let stale: Vec<PeerId> = self
                .racing
                .consolidated
                .keys()
                .filter(|p| self.current_transport(p).is_none())
                .copied()
                .collect();
            for p in stale {
                self.racing.consolidated.remove(&p);
            }
            if self.racing.consolidated.len() >= CONSOLIDATED_CAP {
                debug!(%peer, "consolidation table full; not consolidating");
                return;
            }
        }
        self.racing.consolidated.insert(peer, t);
    }

    /// Forgets `peer`'s consolidation (`close_peer`: its pending sends fail, no fallback).
    pub(in crate::driver) fn forget_consolidation(&mut self, peer: &PeerId) {
        self.racing.consolidated.remove(peer);
    }

    /// A ready libp2p connection to `peer` on `t`, if any.
    pub(in crate::driver) fn ready_conn(&self, peer: &PeerId, t: Transport) -> Option<ConnectionId> {
        self.conns
            .iter()
            .find(|(c, (p, ct, _))| p == peer && *ct == t && self.racing.ready.contains(c))
            .map(|(c, _)| *c)
    }

    /// Races `cmd` if the rule says so (see the module docs); gives it back otherwise.
    pub(in crate::driver) fn try_race(&mut self, cmd: Cmd, current: Option<Transport>) -> Option<Cmd> {
        let peer = cmd.peer();
        if current.is_some() || self.racing.consolidated.contains_key(&peer) {
            return Some(cmd);
        }
        if (!cmd.is_request() && cmd.opts().delivery == Delivery::Unreliable)
            || cmd.payload().len() > RACE_MAX_PAYLOAD
        {
            return Some(cmd);
        }
        let candidates: Vec<Transport> = self
            .route_plan(&peer, None)
            .into_iter()
            .filter(|t| !self.book.failed(&peer, *t))
            .collect();
        if candidates.len() < 2 {
            return Some(cmd);
        }
        let race_id = loop {
            let id: u64 = rand::random();
            if !self.racing.races.contains_key(&id) {
                break id;
            }
        };
        let race = Race {
            peer,
            protocol: cmd.protocol().to_owned(),
            payload: cmd.payload().clone(),
            request: cmd.is_request(),
            early_data: cmd.opts().early_data,
            cmd: None,
            outstanding: 0,
            ack: None,
            unsupported: false,
            last_error: None,
        };
        self.racing.races.insert(race_id, race);
        let launched = candidates.iter().filter(|t| self.launch_copy(race_id, **t)).count();
        let Some(race) = self.racing.races.get_mut(&race_id) else { return Some(cmd) };
        if launched == 0 {
            self.racing.races.remove(&race_id);
            return Some(cmd);
        }
        race.outstanding = launched;
        race.cmd = Some(cmd);
        self.racing.racing_peers.insert(peer, race_id);
        self.racing.stats.races += 1;
        debug!(%peer, race = race_id, transports = ?candidates, "racing the first message");
        None
    }

    /// Sends (or dials for) the copy of race `race_id` on `t`; whether it went out.
    fn launch_copy(&mut self, race_id: u64, t: Transport) -> bool {
        let Some(r) = self.racing.races.get(&race_id) else { return false };
        let peer = r.peer;
        let mut envelope = Vec::with_capacity(r.payload.len() + r.protocol.len() + 16);
        RaceCopy { race_id, transport_id: t.id(), protocol: &r.protocol, request: r.request, payload: &r.payload }
            .encode(&mut envelope);
        let envelope = Bytes::from(envelope);
        let opts = SendOptions { delivery: Delivery::Reliable, early_data: r.early_data };
        let sent = match t {
            Transport::Udp => self
                .endpoint
                .request(Instant::now(), peer, RACE_PROTOCOL, envelope, opts)
                .map(|id| self.racing.copies.insert((Via::Udp, id), (race_id, t))),
            t => match self.ready_conn(&peer, t) {
                Some(c) => self
                    .swarm
                    .behaviour_mut()
                    .msgnet
                    .request_on(c, RACE_PROTOCOL, envelope)
                    .map(|id| self.racing.copies.insert((Via::Swarm, id), (race_id, t))),
                None => {
                    let addrs = self.book.addrs(&peer, t);
                    let opts = DialOpts::peer_id(peer).condition(PeerCondition::Always).addresses(addrs).build();
                    let c = opts.connection_id();
                    match self.swarm.dial(opts) {
                        Ok(()) => {
                            self.racing.dials.insert(c, (race_id, t));
                            Ok(None)
                        }
                        Err(e) => Err(SendError::Unreachable(e.to_string())),
                    }
                }
            },
        };
        match sent {
            Ok(_) => {
                bump(&mut self.racing.stats.sent, t);
                bump(&mut self.racing.stats.raced, t);
                true
            }
            Err(e) => {
                debug!(%peer, transport = %t, error = %e, "race copy not sent");
                false
            }
        }
    }

    /// A send or request finished: if it was a race copy, handles it and returns `true`.
    pub(in crate::driver) fn race_copy_done(&mut self, side: Via, id: MessageId, result: &Result<Option<Bytes>, SendError>) -> bool {
        let Some((race_id, t)) = self.racing.copies.remove(&(side, id)) else { return false };
        self.race_copy_outcome(race_id, t, result.clone());
        true
    }

    fn race_copy_outcome(&mut self, race_id: u64, t: Transport, result: Result<Option<Bytes>, SendError>) {
        let Some(race) = self.racing.races.get_mut(&race_id) else { return };
        race.outstanding = race.outstanding.saturating_sub(1);
        let peer = race.peer;
        let mut reached = false;
        match result {
            Ok(bytes) => {
                let bytes = bytes.unwrap_or_default();
                match RaceAnswer::decode(&bytes) {
                    Ok(answer) => {
                        reached = true;
                        let named = Transport::from_id(answer.transport_id).unwrap_or(t);
                        if race.ack.is_none() || named == Transport::Udp {
                            race.ack = Some(named);
                        }
                        let finish = match answer.outcome {
                            RaceOutcome::Taken if !race.request => Some(Ok(None)),
                            RaceOutcome::Taken => None,
                            RaceOutcome::Response(p) => Some(Ok(Some(Bytes::copy_from_slice(p)))),
                            RaceOutcome::Error { code, reason } => {
                                Some(Err(SendError::Remote { code, reason: reason.to_owned() }))
                            }
                            RaceOutcome::NoHandler => Some(Err(SendError::UnsupportedProtocol(race.protocol.clone()))),
                        };
                        if let Some(result) = finish {
                            if let Some(cmd) = race.cmd.take() {
                                cmd.finish(result);
                            }
                        }
                        if let Some(ack) = race.ack {
                            debug!(%peer, race = race_id, copy = %t, transport = %ack, "race answered");
                            self.consolidate(peer, ack);
                        }
                        if self.racing.racing_peers.get(&peer) == Some(&race_id) {
                            self.racing.racing_peers.remove(&peer);
                        }
                    }
                    Err(e) => race.last_error = Some(SendError::Unreachable(format!("malformed race answer: {e}"))),
                }
            }
            Err(SendError::UnsupportedProtocol(_)) => {
                reached = true;
                race.unsupported = true;
            }
            Err(e) => {
                if network::is_unreachable(&e) {
                    self.book.set_failed(&peer, t, true);
                }
                if let Some(race) = self.racing.races.get_mut(&race_id) {
                    race.last_error = Some(e);
                }
            }
        }
        if reached {
            self.book.set_failed(&peer, t, false);
        }
        if self.racing.races.get(&race_id).is_some_and(|r| r.outstanding == 0) {
            self.end_race(race_id);
        }
    }

    /// Every copy of `race_id` finished: a caller still waiting gets the plain send (the
    /// peer does not race) or the last error.
    fn end_race(&mut self, race_id: u64) {
        let Some(mut race) = self.racing.races.remove(&race_id) else { return };
        if self.racing.racing_peers.get(&race.peer) == Some(&race_id) {
            self.racing.racing_peers.remove(&race.peer);
        }
        let Some(cmd) = race.cmd.take() else { return };
        if race.unsupported && !cmd.abandoned() {
            debug!(peer = %race.peer, "peer does not race; sending once");
            let current = self.current_transport(&race.peer);
            let plan = self.route_plan(&race.peer, current);
            if let Some(cmd) = self.submit_plan(cmd, plan.into()) {
                self.push_backlog(cmd);
            }
            return;
        }
        let error = race.last_error.unwrap_or_else(|| match race.ack {
            Some(_) => SendError::SessionClosed("the delivered copy's transport failed".into()),
            None => SendError::Unreachable("no transport reached the peer".into()),
        });
        cmd.fail(error);
    }

    /// The request of `token` was cancelled: a race holding it stops waiting.
    pub(in crate::driver) fn cancel_race(&mut self, token: u64) {
        for race in self.racing.races.values_mut() {
            if race.cmd.as_ref().and_then(Cmd::token) == Some(token) {
                race.cmd = None;
            }
        }
    }

    // ----- swarm events ------------------------------------------------------------

    /// A libp2p connection came up (`local` is the listener address of an inbound one).
    pub(in crate::driver) fn race_conn_up(&mut self, c: ConnectionId, local: Option<Multiaddr>) {
        if let Some(local) = local {
            self.racing.inbound.insert(c, local);
        }
    }

    /// The msgnet behaviour resolved connection `c`: a copy waiting for it goes out.
    pub(in crate::driver) fn race_conn_ready(&mut self, c: ConnectionId, supported: bool) {
        if supported {
            self.racing.ready.insert(c);
        }
        let Some((race_id, t)) = self.racing.dials.remove(&c) else { return };
        if !supported {
            self.race_copy_outcome(race_id, t, Err(SendError::UnsupportedProtocol(String::new())));
            return;
        }
        let Some(r) = self.racing.races.get(&race_id) else { return };
        let mut envelope = Vec::new();
        RaceCopy { race_id, transport_id: t.id(), protocol: &r.protocol, request: r.request, payload: &r.payload }
            .encode(&mut envelope);
        match self.swarm.behaviour_mut().msgnet.request_on(c, RACE_PROTOCOL, Bytes::from(envelope)) {
            Ok(id) => {
                self.racing.copies.insert((Via::Swarm, id), (race_id, t));
            }
            Err(e) => self.race_copy_outcome(race_id, t, Err(e)),
        }
    }

    /// A dial failed or a connection closed: a copy waiting for it failed, and a
    /// consolidation on the last connection of its transport ends.
    pub(in crate::driver) fn race_conn_gone(&mut self, c: ConnectionId, peer: Option<PeerId>, t: Option<Transport>, error: String) {
        self.racing.ready.remove(&c);
        self.racing.inbound.remove(&c);
        if let Some((race_id, t)) = self.racing.dials.remove(&c) {
            self.race_copy_outcome(race_id, t, Err(SendError::Unreachable(error)));
        }
        if let (Some(peer), Some(t)) = (peer, t) {
            let others = self.conns.values().any(|(p, ct, _)| *p == peer && *ct == t);
            if !others && self.racing.consolidated.get(&peer) == Some(&t) {
                self.consolidation_failed(&peer, t);
            }
        }
    }

    /// A UDP session with `peer` went down: a consolidation on UDP ends when no
    /// established session is left, and UDP goes last in the peer's plan.
    pub(in crate::driver) fn race_udp_down(&mut self, peer: &PeerId) {
        let established = self.endpoint.sessions(peer).iter().any(|s| s.established);
        if !established && self.racing.consolidated.get(peer) == Some(&Transport::Udp) {
            self.consolidation_failed(peer, Transport::Udp);
            self.book.set_failed(peer, Transport::Udp, true);
        }
    }

    // ----- receiver ----------------------------------------------------------------

    /// The transport an inbound message arrived on, if known.
    fn arrival(&self, msg: &IncomingMessage, via: Via) -> Option<Transport> {
        match via {
            Via::Udp => Some(Transport::Udp),
            Via::Swarm => {
                let c = self.swarm.behaviour().msgnet.connection_of(msg.session)?;
                self.conns.get(&c).map(|x| x.1)
            }
        }
    }

    fn respond_via(&mut self, via: Via, request: &InboundRequest, result: Result<Bytes, (u8, String)>) {
        let sent = match via {
            Via::Udp => self.endpoint.respond(Instant::now(), request, result),
            Via::Swarm => self.swarm.behaviour_mut().msgnet.respond(request, result),
        };
        if let Err(e) = sent {
            debug!(error = %e, "race answer not sent");
        }
    }

    fn forget_old_races(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.racing.seen_order.front() {
            if now.saturating_duration_since(at) < SEEN_TTL && self.racing.seen_order.len() <= SEEN_CAP {
                break;
            }
            self.racing.seen_order.pop_front();
            self.racing.seen.remove(&key);
        }
    }

    /// Every inbound message passes here: counted, and a race copy is answered and
    /// unwrapped (the first copy of a race) or dropped (later copies). Returns what to
    /// deliver.
    pub(in crate::driver) fn race_intercept(&mut self, msg: IncomingMessage, via: Via) -> Option<IncomingMessage> {
        let arrival = self.arrival(&msg, via);
        if msg.protocol.as_ref() != RACE_PROTOCOL {
            if let Some(t) = arrival {
                bump(&mut self.racing.stats.received, t);
            }
            return Some(msg);
        }
        let request = msg.request.clone()?; // a copy is always a request
        let copy = match RaceCopy::decode(&msg.payload) {
            Ok(copy) => copy,
            Err(e) => {
                debug!(peer = %msg.peer, error = %e, "malformed race copy");
                self.respond_via(via, &request, Err((2, format!("malformed race copy: {e}"))));
                return None;
            }
        };
        let t = arrival.or_else(|| Transport::from_id(copy.transport_id)).unwrap_or(Transport::Udp);
        bump(&mut self.racing.stats.received, t);
        let peer = msg.peer;
        let key = (peer, copy.race_id);
        let now = Instant::now();
        self.forget_old_races(now);
        let previous = self.racing.seen.get(&key).copied();
        let preferred = match previous {
            Some(_) if t == Transport::Udp => Transport::Udp,
            Some(p) => p,
            None => t,
        };
        if previous.is_none() {
            self.racing.seen_order.push_back((now, key));
            self.forget_old_races(now);
        }
        self.racing.seen.insert(key, preferred);
        if self.racing.consolidated.get(&peer) != Some(&preferred) {
            debug!(%peer, race = copy.race_id, transport = %preferred, "consolidating");
            self.consolidate(peer, preferred);
        }
        self.book.set_failed(&peer, preferred, false);
        if previous.is_some() {
            self.racing.stats.duplicates += 1;
            self.respond_via(via, &request, Ok(encode_answer(preferred.id(), RaceOutcome::Taken)));
            return None;
        }
        if !self.registry.contains(copy.protocol) {
            self.respond_via(via, &request, Ok(encode_answer(preferred.id(), RaceOutcome::NoHandler)));
            return None;
        }
        let start = msg.payload.len().saturating_sub(copy.payload.len());
        let protocol: Arc<str> = Arc::from(copy.protocol);
        let is_request = copy.request;
        let inner = IncomingMessage {
            peer,
            session: msg.session,
            protocol,
            payload: msg.payload.slice(start..),
            request: is_request.then(|| request.clone()),
        };
        if is_request {
            if self.racing.answering.len() < ANSWERING_CAP {
                self.racing.answering.insert((via, request.session, request.request_id), peer);
            }
        } else {
            self.respond_via(via, &request, Ok(encode_answer(preferred.id(), RaceOutcome::Taken)));
        }
        Some(inner)
    }

    /// Wraps a handler's answer to a raced request into a [`RaceAnswer`].
    pub(in crate::driver) fn race_wrap_response(
        &mut self,
        request: &InboundRequest,
        via: Via,
        result: Result<Bytes, (u8, String)>,
    ) -> Result<Bytes, (u8, String)> {
        if request.protocol.as_ref() != RACE_PROTOCOL {
            return result;
        }
        let peer = self.racing.answering.remove(&(via, request.session, request.request_id));
        let named = peer
            .and_then(|p| self.racing.consolidated.get(&p))
            .map_or(transport_id::UNSPECIFIED, |t| t.id());
        let outcome = match &result {
            Ok(p) => RaceOutcome::Response(p),
            Err((code, reason)) => RaceOutcome::Error { code: *code, reason },
        };
        Ok(encode_answer(named, outcome))
    }

    // ----- listeners and queries -----------------------------------------------------

    /// Stops listening on `addr` (see [`Host::remove_listener`](crate::Host::remove_listener)).
    /// A UDP removal completes in [`Driver::finish_listener_removal`], once the CLOSEs
    /// went out.
    pub(in crate::driver) fn remove_listener(
        &mut self,
        addr: Multiaddr,
        keep: Vec<SocketAddr>,
        reply: oneshot::Sender<Result<Vec<Multiaddr>, HostError>>,
    ) {
        match Transport::of(&addr) {
            Some(Transport::Udp) => {
                let now = Instant::now();
                for peer in self.endpoint.peers() {
                    self.endpoint.close_peer(now, &peer);
                }
                self.racing.consolidated.retain(|_, t| *t != Transport::Udp);
                if let Some((_, old_addr, old)) = self.racing.udp_removal.replace((keep, addr, reply)) {
                    let _ = old.send(Ok(vec![old_addr]));
                }
            }
            Some(_) => {
                let Some(id) = self.racing.listeners.get(&addr).copied() else {
                    let _ = reply.send(Err(HostError::UnsupportedAddress(addr)));
                    return;
                };
                self.swarm.remove_listener(id);
                let gone: Vec<Multiaddr> =
                    self.racing.listeners.iter().filter(|(_, l)| **l == id).map(|(a, _)| a.clone()).collect();
                for a in &gone {
                    self.racing.listeners.remove(a);
                }
                let conns: Vec<ConnectionId> =
                    self.racing.inbound.iter().filter(|(_, local)| gone.contains(local)).map(|(c, _)| *c).collect();
                for c in conns {
                    debug!(connection = ?c, "closing a connection of a removed listener");
                    self.swarm.close_connection(c);
                }
                let _ = reply.send(Ok(gone));
            }
            None => {
                let _ = reply.send(Err(HostError::UnsupportedAddress(addr)));
            }
        }
    }

    /// Completes a UDP listener removal after the flush that sent the CLOSEs: the UDP
    /// sockets are dropped, and those in `keep` bound again.
    pub(in crate::driver) fn finish_listener_removal(&mut self) {
        let Some((keep, removed, reply)) = self.racing.udp_removal.take() else { return };
        self.udp = crate::driver::udp::Udp::new(Vec::new()); // drops (closes) the sockets
        let mut sockets = Vec::new();
        let mut result = Ok(vec![removed]);
        for addr in keep {
            match crate::driver::udp::bind(addr) {
                Ok(s) => sockets.push(s),
                Err(e) => result = Err(HostError::Io(e)),
            }
        }
        self.racing.udp_closed = sockets.is_empty();
        self.udp = crate::driver::udp::Udp::new(sockets);
        debug!(udp_closed = self.racing.udp_closed, "UDP listener removed");
        let _ = reply.send(result);
    }

    pub(in crate::driver) fn transport_stats(&self) -> TransportStats {
        self.racing.stats.clone()
    }
}
