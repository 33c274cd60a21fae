//! Nodes: one endpoint with its address, identity, event log, counters and the
//! outcomes of its sends and requests.
//!
//! This module owns what the simulator records about a node when it drains the node's
//! events ([`Node::record`]), including the auto-responder, and the node's side of the
//! hosted services (`service.rs`): which service owns which protocol, which message id
//! belongs to which service output, dispatching events to services and putting their
//! outputs through the endpoint. It calls only the endpoint's `respond`, `send`,
//! `request`, `add_address` and `sessions`; routing datagrams and timers belong to
//! `sim.rs`.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use msgnet_core::{Endpoint, Event, IncomingMessage, MessageId, PeerId, SendError};

use crate::service::{Outcome, OutputKind, Service, SessionChange};

/// Index of a node in its [`Sim`](crate::Sim). Allocated in order by `add_node`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub usize);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// Answers an inbound request: `Some(bytes)` is sent back as the response, `None` leaves
/// the request unanswered (the test may answer it with [`Sim::respond`](crate::Sim::respond)).
/// `Send`: in windowed mode ([`Sim::set_threads`](crate::Sim::set_threads)) nodes run on
/// worker threads.
pub type Responder = Box<dyn FnMut(&IncomingMessage) -> Option<Bytes> + Send>;

/// What the simulator keeps of a node's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EventLog {
    /// Every event is appended to [`Node::events`].
    #[default]
    Full,
    /// Events are only counted (and send/request outcomes kept in the outcome maps):
    /// for big runs.
    CountOnly,
}

/// Per-node counters, updated as events are drained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeCounters {
    /// Messages and requests delivered to a handler (`Event::Message`).
    pub messages_delivered: u64,
    /// Payload bytes of those.
    pub bytes_delivered: u64,
    /// Of the delivered messages, the requests.
    pub requests_received: u64,
    /// Responses sent by the auto-responder or a service.
    pub responses_sent: u64,
    /// Auto-responder or service answers the endpoint refused (`respond` returned an
    /// error).
    pub respond_errors: u64,
    /// `SendComplete` with `Ok`.
    pub sends_ok: u64,
    /// `SendComplete` with `Err`.
    pub sends_failed: u64,
    /// `Response` with `Ok`.
    pub responses_ok: u64,
    /// `Response` with `Err`.
    pub responses_failed: u64,
    /// A second outcome (`SendComplete` or `Response`) for a message id that already had
    /// one. Always a core bug.
    pub duplicate_outcomes: u64,
    /// `SessionUp` events.
    pub sessions_up: u64,
    /// `SessionDown` events.
    pub sessions_down: u64,
    /// Datagrams handed to the endpoint.
    pub datagrams_in: u64,
    /// Datagrams the endpoint emitted.
    pub datagrams_out: u64,
    /// Times the endpoint asked for a timer at or before the instant that had just
    /// fired, more than a few times in a row; the simulator then moves the timer 1 ms
    /// ahead so that time advances. Nonzero means the endpoint's timer does not settle.
    pub timer_spins: u64,
    /// Messages and requests the node's services handed to the endpoint.
    pub service_outputs: u64,
    /// Of those, the ones the endpoint refused at once (the service got the error).
    pub service_refused: u64,
    /// The same as `timer_spins`, for the services' timer.
    pub service_timer_spins: u64,
}

/// One simulated endpoint.
pub struct Node {
    /// The endpoint. Commands issued on it directly through
    /// [`Sim::node_mut`](crate::Sim::node_mut) are flushed before the next simulation
    /// step.
    pub ep: Endpoint,
    /// Its peer id.
    pub peer: PeerId,
    /// Its address.
    pub addr: SocketAddr,
    /// Its events, in order (empty in [`EventLog::CountOnly`] mode).
    pub events: Vec<Event>,
    /// Counters.
    pub counters: NodeCounters,
    /// What to keep of the events.
    pub log: EventLog,
    pub(crate) responder: Option<Responder>,
    pub(crate) down: bool,
    completions: HashMap<MessageId, Result<(), SendError>>,
    responses: HashMap<MessageId, Result<Bytes, SendError>>,
    /// The endpoint's timer.
    pub(crate) timer: TimerSlot,
    /// Hosted services, in the order they were added.
    pub(crate) services: Vec<Box<dyn Service>>,
    /// Protocol → the service that owns it.
    svc_owner: HashMap<String, usize>,
    /// Message id of a service output → (service, token). An entry leaves when its
    /// outcome arrives; the endpoint reports exactly one outcome per id.
    svc_pending: HashMap<MessageId, (usize, u64)>,
    /// The services' timer.
    pub(crate) svc_timer: TimerSlot,
}

/// Consecutive re-arms at or before the current instant after which a timer is pushed 1 ms
/// ahead (and counted), so a state machine that keeps asking for "now" cannot stall time.
const SPIN_LIMIT: u32 = 16;

/// One timer of a node in the simulator's event heap: the instant it is armed for and a
/// generation (heap entries of older generations are stale).
#[derive(Debug, Default)]
pub(crate) struct TimerSlot {
    gen: u64,
    at: Option<Duration>,
    /// Consecutive re-arms that asked for a time at or before the current instant.
    spins: u32,
}

impl TimerSlot {
    /// Arms the timer for `deadline` (virtual time since the epoch; `None` disarms) at
    /// virtual time `now`. Returns the heap entry to push (instant, generation), if a new
    /// one is needed; `spun` is incremented when a spin was broken.
    pub(crate) fn rearm(
        &mut self,
        deadline: Option<Duration>,
        now: Duration,
        spun: &mut u64,
    ) -> Option<(Duration, u64)> {
        let Some(mut at) = deadline else {
            if self.at.take().is_some() {
                self.gen += 1;
            }
            return None;
        };
        if at <= now {
            self.spins += 1;
            if self.spins > SPIN_LIMIT {
                *spun += 1;
                self.spins = 0;
                at = now + Duration::from_millis(1);
            }
        } else {
            self.spins = 0;
        }
        let at = at.max(now);
        if self.at == Some(at) {
            return None;
        }
        self.at = Some(at);
        self.gen += 1;
        Some((at, self.gen))
    }

    /// The instant the timer is armed for, if armed.
    pub(crate) fn armed(&self) -> Option<Duration> {
        self.at
    }

    /// The generation of the armed entry (changes at every re-arm and disarm).
    pub(crate) fn generation(&self) -> u64 {
        self.gen
    }

    /// A heap entry of generation `gen` came due: whether it is the armed one (then the
    /// timer is no longer armed).
    pub(crate) fn fire(&mut self, gen: u64) -> bool {
        if gen != self.gen {
            return false;
        }
        self.at = None;
        true
    }
}

/// Which of a node's two timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimerKind {
    /// The endpoint's (`Endpoint::poll_timeout`).
    Endpoint,
    /// The services' (the earliest `Service::poll_timeout`).
    Services,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("peer", &self.peer)
            .field("addr", &self.addr)
            .field("down", &self.down)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl Node {
    pub(crate) fn new(ep: Endpoint, addr: SocketAddr, log: EventLog) -> Self {
        Self {
            peer: ep.local_peer_id(),
            ep,
            addr,
            events: Vec::new(),
            counters: NodeCounters::default(),
            log,
            responder: None,
            down: false,
            completions: HashMap::new(),
            responses: HashMap::new(),
            timer: TimerSlot::default(),
            services: Vec::new(),
            svc_owner: HashMap::new(),
            svc_pending: HashMap::new(),
            svc_timer: TimerSlot::default(),
        }
    }

    /// Number of hosted services.
    pub fn services(&self) -> usize {
        self.services.len()
    }

    /// Service outputs whose outcome has not arrived yet.
    pub fn service_outputs_pending(&self) -> usize {
        self.svc_pending.len()
    }

    /// The first hosted service of type `T`.
    pub fn service<T: Service>(&self) -> Option<&T> {
        self.services
            .iter()
            .find_map(|s| s.as_ref().as_any().downcast_ref::<T>())
    }

    /// The first hosted service of type `T`, mutably. Outputs it produces are only
    /// drained at the node's next input: use [`Sim::with_service`](crate::Sim::with_service)
    /// to issue commands.
    pub(crate) fn service_mut<T: Service>(&mut self) -> Option<&mut T> {
        self.services
            .iter_mut()
            .find_map(|s| s.as_mut().as_any_mut().downcast_mut::<T>())
    }

    /// Hosts `service`: registers its protocols (those not owned yet) on the endpoint.
    pub(crate) fn add_service(&mut self, service: Box<dyn Service>) {
        let i = self.services.len();
        for p in service.protocols() {
            self.ep.register_protocol(&p);
            self.svc_owner.entry(p).or_insert(i);
        }
        self.services.push(service);
    }

    /// The earliest deadline of the services.
    pub(crate) fn service_timeout(&self) -> Option<Instant> {
        self.services.iter().filter_map(|s| s.poll_timeout()).min()
    }

    /// A heap entry of `which` timer, generation `gen`, came due at `now`: if it is the
    /// armed one, runs it (the endpoint's `handle_timeout`, or the due services') and
    /// returns true; a stale entry (re-armed or disarmed since) does nothing.
    pub(crate) fn fire_timer(&mut self, which: TimerKind, gen: u64, now: Instant) -> bool {
        match which {
            TimerKind::Endpoint if self.timer.fire(gen) => self.ep.handle_timeout(now),
            TimerKind::Services if self.svc_timer.fire(gen) => self.service_timers(now),
            _ => return false,
        }
        true
    }

    /// Hands a datagram from `from` to the endpoint.
    pub(crate) fn deliver(&mut self, now: Instant, from: SocketAddr, data: &mut [u8]) {
        self.counters.datagrams_in += 1;
        self.ep.handle_datagram(now, from, data);
    }

    /// Runs the timers of the services whose deadline has come.
    fn service_timers(&mut self, now: Instant) {
        for s in &mut self.services {
            if s.poll_timeout().is_some_and(|t| t <= now) {
                s.handle_timeout(now);
            }
        }
    }

    /// Drains everything the node has to say after an input at `now`: each transmit goes
    /// to `sent` (destination, bytes) in the endpoint's order, events are recorded (the
    /// auto-responder's and the services' answers can produce more transmits) and
    /// service outputs go through the endpoint, until nothing is left. `buf` is scratch.
    pub(crate) fn drain(
        &mut self,
        now: Instant,
        buf: &mut Vec<u8>,
        mut sent: impl FnMut(SocketAddr, &[u8]),
    ) {
        loop {
            let mut progressed = false;
            while let Some(t) = self.ep.poll_transmit(now, buf) {
                progressed = true;
                self.counters.datagrams_out += 1;
                let size = t.size.min(buf.len());
                sent(t.destination, &buf[..size]);
            }
            while let Some(ev) = self.ep.poll_event() {
                progressed = true;
                self.record(now, ev);
            }
            progressed |= self.drain_services(now);
            if !progressed {
                break;
            }
        }
    }

    /// Re-arms the endpoint's timer, then the services' (if any), at virtual time `now`
    /// (`epoch` is virtual time zero). Returns the heap entries (instant, generation)
    /// to schedule: the endpoint's, then the services'.
    #[allow(clippy::type_complexity)]
    pub(crate) fn rearm_timers(
        &mut self,
        epoch: Instant,
        now: Duration,
    ) -> (Option<(Duration, u64)>, Option<(Duration, u64)>) {
        let deadline = self
            .ep
            .poll_timeout()
            .map(|t| t.saturating_duration_since(epoch));
        let ep = self
            .timer
            .rearm(deadline, now, &mut self.counters.timer_spins);
        if self.services.is_empty() {
            return (ep, None);
        }
        let deadline = self
            .service_timeout()
            .map(|t| t.saturating_duration_since(epoch));
        (
            ep,
            self.svc_timer
                .rearm(deadline, now, &mut self.counters.service_timer_spins),
        )
    }

    /// Puts every pending service output through the endpoint; refusals go straight back
    /// to the service (which may emit more). Returns whether there was any output.
    pub(crate) fn drain_services(&mut self, now: Instant) -> bool {
        let mut any = false;
        for i in 0..self.services.len() {
            while let Some(o) = self.services[i].poll_output() {
                any = true;
                self.counters.service_outputs += 1;
                if let Some(a) = o.addr {
                    self.ep.add_address(o.peer, a);
                }
                let r = match o.kind {
                    OutputKind::Message => {
                        self.ep.send(now, o.peer, &o.protocol, o.payload, o.opts)
                    }
                    OutputKind::Request => {
                        self.ep.request(now, o.peer, &o.protocol, o.payload, o.opts)
                    }
                };
                match r {
                    Ok(id) => {
                        self.svc_pending.insert(id, (i, o.token));
                    }
                    Err(e) => {
                        self.counters.service_refused += 1;
                        let outcome = match o.kind {
                            OutputKind::Message => Outcome::Sent(Err(e)),
                            OutputKind::Request => Outcome::Response(Err(e)),
                        };
                        self.services[i].handle_outcome(now, o.token, outcome);
                    }
                }
            }
        }
        any
    }

    /// The remote address of `peer`'s session `session`.
    fn session_remote(&self, m: &IncomingMessage) -> Option<SocketAddr> {
        self.ep.session_remote(m.session)
    }

    /// Whether the node is down (see [`Sim::set_node_down`](crate::Sim::set_node_down)).
    pub fn is_down(&self) -> bool {
        self.down
    }

    /// The outcome of `send` `id`, once its `SendComplete` arrived.
    pub fn completion(&self, id: MessageId) -> Option<&Result<(), SendError>> {
        self.completions.get(&id)
    }

    /// The outcome of `request` `id`, once its `Response` arrived.
    pub fn response(&self, id: MessageId) -> Option<&Result<Bytes, SendError>> {
        self.responses.get(&id)
    }

    /// Removes and returns the outcome of `send` `id` (keeps the map small in long runs).
    pub fn take_completion(&mut self, id: MessageId) -> Option<Result<(), SendError>> {
        self.completions.remove(&id)
    }

    /// Removes and returns the outcome of `request` `id`.
    pub fn take_response(&mut self, id: MessageId) -> Option<Result<Bytes, SendError>> {
        self.responses.remove(&id)
    }

    /// Number of send outcomes held (not taken).
    pub fn completions_held(&self) -> usize {
        self.completions.len()
    }

    /// Number of request outcomes held (not taken).
    pub fn responses_held(&self) -> usize {
        self.responses.len()
    }

    /// The messages delivered to this node's handlers (from the event log).
    pub fn messages(&self) -> impl Iterator<Item = &IncomingMessage> {
        self.events.iter().filter_map(|e| match e {
            Event::Message(m) => Some(m),
            _ => None,
        })
    }

    /// Counts, answers (auto-responder) and logs one event drained from the endpoint.
    pub(crate) fn record(&mut self, now: Instant, ev: Event) {
        let c = &mut self.counters;
        match &ev {
            Event::Message(m) => {
                c.messages_delivered += 1;
                c.bytes_delivered += m.payload.len() as u64;
                if m.request.is_some() {
                    c.requests_received += 1;
                }
                let answer = if let Some(&i) = self.svc_owner.get(&*m.protocol) {
                    let remote = self.session_remote(m);
                    self.services[i].handle_message(now, m, remote)
                } else {
                    m.request
                        .as_ref()
                        .and(self.responder.as_mut())
                        .and_then(|f| f(m))
                        .map(Ok)
                };
                if let (Some(req), Some(answer)) = (&m.request, answer) {
                    match self.ep.respond(now, req, answer) {
                        Ok(()) => self.counters.responses_sent += 1,
                        Err(_) => self.counters.respond_errors += 1,
                    }
                }
            }
            Event::SendComplete { id, result } => {
                if result.is_ok() {
                    c.sends_ok += 1;
                } else {
                    c.sends_failed += 1;
                }
                if let Some((i, token)) = self.svc_pending.remove(id) {
                    self.services[i].handle_outcome(now, token, Outcome::Sent(result.clone()));
                } else if self.completions.insert(*id, result.clone()).is_some() {
                    c.duplicate_outcomes += 1;
                }
            }
            Event::Response { id, result } => {
                if result.is_ok() {
                    c.responses_ok += 1;
                } else {
                    c.responses_failed += 1;
                }
                if let Some((i, token)) = self.svc_pending.remove(id) {
                    self.services[i].handle_outcome(now, token, Outcome::Response(result.clone()));
                } else if self.responses.insert(*id, result.clone()).is_some() {
                    c.duplicate_outcomes += 1;
                }
            }
            Event::SessionUp { peer, remote, .. } => {
                c.sessions_up += 1;
                for s in &mut self.services {
                    s.handle_session(now, *peer, SessionChange::Up(*remote));
                }
            }
            Event::SessionDown { peer, .. } => {
                c.sessions_down += 1;
                for s in &mut self.services {
                    s.handle_session(now, *peer, SessionChange::Down);
                }
            }
            _ => {}
        }
        if self.log == EventLog::Full {
            self.events.push(ev);
        }
    }
}
