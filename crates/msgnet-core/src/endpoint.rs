//! The endpoint: one socket's sessions.
//!
//! It demultiplexes datagrams by their first byte (data packets by receiver index,
//! handshake packets by type), runs handshakes (`handshake.rs`), owns the session table
//! and the per-peer address book, and schedules transmissions round-robin over sessions
//! that have something to send. It may call `session`, `crypto`, `wire`.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use libp2p_identity::{Keypair, PeerId};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::channel::OutKind;
use crate::crypto::{CookieJar, LocalIdentity};
use crate::handshake::HsState;
use crate::session::{worst_fragment_overhead, worst_frame_overhead, Ctx, Session};
use crate::wire::{self, DataHeader, Frame, Packet};
use crate::{
    DropReason, EndpointConfig, EndpointStats, Event, InboundRequest, MessageId, SendError,
    SendOptions, SessionId, SessionInfo, Transmit,
};

/// Ack-eliciting packets received before an acknowledgement goes out, even in the
/// middle of a receive batch.
const ACK_EVERY: u32 = 16;

/// Longest protocol id accepted.
pub const MAX_PROTOCOL_LEN: usize = 1024;

/// Most addresses kept per peer (see [`Endpoint::add_address`]).
pub const MAX_ADDRS_PER_PEER: usize = 8;

#[derive(Debug, Default)]
pub(crate) struct PeerEntry {
    pub(crate) addrs: Vec<SocketAddr>,
    pub(crate) sessions: Vec<u32>,
    /// An address was given with `add_address`: the entry is never forgotten.
    pub(crate) pinned: bool,
}

/// One UDP socket's worth of msgnet: sessions, handshakes and channels. Sans-IO.
///
/// See the crate docs for the call order.
pub struct Endpoint {
    pub(crate) config: EndpointConfig,
    pub(crate) identity: LocalIdentity,
    pub(crate) rng: ChaCha20Rng,
    start: Instant,
    unix_start: Duration,
    pub(crate) sessions: HashMap<u32, Box<Session>>,
    by_id: HashMap<SessionId, u32>,
    pub(crate) peers: HashMap<PeerId, PeerEntry>,
    /// Unpinned peers in the order their last session ended (a peer may appear more than
    /// once, or again after a new session; such stale entries are skipped). Bounds the
    /// address book at `max_dormant_peers` peers with no session and no pinned address.
    dormant: VecDeque<PeerId>,
    pub(crate) protocols: HashSet<Arc<str>>,
    pub(crate) handshakes: HashMap<u32, HsState>,
    pub(crate) cookies: CookieJar,
    pub(crate) flood: (Instant, u32),
    /// Hash of a first packet's Noise message → the session it created (answers an
    /// identical retransmission from cache).
    pub(crate) initiations: HashMap<[u8; 32], u32>,
    /// Newest initiation timestamp accepted per peer.
    pub(crate) last_ts: HashMap<PeerId, u64>,
    pub(crate) last_sent_ts: u64,
    pub(crate) events: VecDeque<Event>,
    pub(crate) out: VecDeque<(SocketAddr, Vec<u8>)>,
    dirty: VecDeque<u32>,
    dirty_set: HashSet<u32>,
    /// The sessions' timers: `(Session::next_timeout, index)`, one entry per session that
    /// has a deadline, so `poll_timeout` and `handle_timeout` need not visit every session.
    timer_queue: BTreeSet<(Instant, u32)>,
    /// Each session's entry in `timer_queue`.
    timer_at: HashMap<u32, Instant>,
    /// Sessions with queued message units. `handle_timeout` lets them look at their
    /// pacing bucket at every timeout, as it did when it visited every session.
    queued: BTreeSet<u32>,
    /// Sessions changed during the current call, whose timer entries are brought up to
    /// date before the call returns (`refresh_timers`). Emptied by every public call.
    touched: Vec<u32>,
    pub(crate) stats: EndpointStats,
    /// Reassembly bytes reserved across sessions.
    pub(crate) reassembly_total: u64,
    next_session_id: u64,
    next_message_id: u64,
    closed: bool,
}

impl Endpoint {
    /// Creates an endpoint for `keypair`. `unix_now` is the wall-clock time (since the UNIX
    /// epoch) at `now`; it dates handshake initiations for replay protection.
    pub fn new(
        config: EndpointConfig,
        keypair: &Keypair,
        now: Instant,
        unix_now: Duration,
    ) -> Self {
        let mut rng = ChaCha20Rng::from_seed(config.rng_seed);
        let identity = LocalIdentity::new(keypair.clone(), &mut rng);
        let cookies = CookieJar::new(&mut rng, now);
        Self {
            config,
            identity,
            rng,
            start: now,
            unix_start: unix_now,
            sessions: HashMap::new(),
            by_id: HashMap::new(),
            peers: HashMap::new(),
            dormant: VecDeque::new(),
            protocols: HashSet::new(),
            handshakes: HashMap::new(),
            cookies,
            flood: (now, 0),
            initiations: HashMap::new(),
            last_ts: HashMap::new(),
            last_sent_ts: 0,
            events: VecDeque::new(),
            out: VecDeque::new(),
            dirty: VecDeque::new(),
            dirty_set: HashSet::new(),
            timer_queue: BTreeSet::new(),
            timer_at: HashMap::new(),
            queued: BTreeSet::new(),
            touched: Vec::new(),
            stats: EndpointStats::default(),
            reassembly_total: 0,
            next_session_id: 1,
            next_message_id: 1,
            closed: false,
        }
    }

    /// This endpoint's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.identity.peer_id()
    }

    /// The configuration in force.
    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    /// Largest payload one message may carry with `delivery`: messages larger than a
    /// packet are fragmented, up to [`EndpointConfig::max_message_size`] (reliable) or
    /// [`EndpointConfig::max_unreliable_message_size`] (unreliable).
    pub fn max_message_size(&self, delivery: crate::Delivery) -> usize {
        match delivery {
            crate::Delivery::Unreliable => self.config.max_unreliable_message_size,
            _ => self.config.max_message_size,
        }
    }

    /// (largest payload sent as one message frame, payload per fragment) for `protocol`.
    pub(crate) fn frag_sizes(protocol: &str, mtu: usize) -> (usize, usize) {
        let room = mtu.saturating_sub(8 + wire::TAG_LEN);
        let single = room.saturating_sub(worst_frame_overhead(protocol, room));
        let frag = room.saturating_sub(worst_fragment_overhead(protocol));
        (single, frag.max(64))
    }

    /// Reassembly memory in use across sessions, in bytes.
    pub fn reassembly_bytes(&self) -> u64 {
        self.reassembly_total
    }

    /// Counters.
    pub fn stats(&self) -> &EndpointStats {
        &self.stats
    }

    pub(crate) fn wall_nanos(&self, now: Instant) -> u64 {
        (self.unix_start + now.saturating_duration_since(self.start)).as_nanos() as u64
    }

    pub(crate) fn ctx(&mut self) -> (&mut HashMap<u32, Box<Session>>, Ctx<'_>) {
        (
            &mut self.sessions,
            Ctx {
                config: &self.config,
                events: &mut self.events,
                stats: &mut self.stats,
                protocols: &self.protocols,
                reassembly_total: &mut self.reassembly_total,
            },
        )
    }

    pub(crate) fn mark_dirty(&mut self, idx: u32) {
        self.touch(idx);
        if self.dirty_set.insert(idx) {
            self.dirty.push_back(idx);
        }
    }

    /// Notes that session `idx` may have changed: its timer entry is recomputed before
    /// the current public call returns.
    pub(crate) fn touch(&mut self, idx: u32) {
        if self.touched.last() != Some(&idx) {
            self.touched.push(idx);
        }
    }

    /// Brings the timer entries of the sessions touched since the last call up to date.
    /// Every public method that may change a session ends with it, so that
    /// [`Endpoint::poll_timeout`] (which takes `&self`) reads a current index.
    fn refresh_timers(&mut self) {
        if self.touched.is_empty() {
            return;
        }
        let mut touched = std::mem::take(&mut self.touched);
        touched.sort_unstable();
        touched.dedup();
        for &idx in &touched {
            let (deadline, queued) = match self.sessions.get_mut(&idx) {
                Some(s) => {
                    s.release_empty();
                    (s.next_timeout(&self.config), s.has_queued())
                }
                None => (None, false),
            };
            self.set_timer(idx, deadline);
            if queued {
                self.queued.insert(idx);
            } else {
                self.queued.remove(&idx);
            }
        }
        touched.clear();
        self.touched = touched;
    }

    fn set_timer(&mut self, idx: u32, deadline: Option<Instant>) {
        let old = match deadline {
            Some(t) => self.timer_at.insert(idx, t),
            None => self.timer_at.remove(&idx),
        };
        if old == deadline {
            return;
        }
        if let Some(o) = old {
            self.timer_queue.remove(&(o, idx));
        }
        if let Some(t) = deadline {
            self.timer_queue.insert((t, idx));
        }
    }

    /// Debug builds: the timer index must agree with a scan of every session.
    #[cfg(debug_assertions)]
    fn check_timers(&self) {
        let scan = self
            .sessions
            .values()
            .filter_map(|s| s.next_timeout(&self.config))
            .min();
        assert_eq!(
            self.timer_queue.first().map(|e| e.0),
            scan,
            "timer index out of date"
        );
        assert_eq!(self.timer_queue.len(), self.timer_at.len());
        for (idx, s) in &self.sessions {
            assert_eq!(
                self.timer_at.get(idx).copied(),
                s.next_timeout(&self.config),
                "session {idx}"
            );
            assert_eq!(self.queued.contains(idx), s.has_queued(), "session {idx}");
        }
        assert!(
            self.touched.is_empty(),
            "a public call returned without refreshing the timers of the sessions it changed"
        );
    }

    pub(crate) fn alloc_index(&mut self) -> u32 {
        loop {
            let i = self.rng.gen::<u32>() & wire::MAX_RECEIVER_INDEX;
            if i != 0 && !self.sessions.contains_key(&i) && !self.handshakes.contains_key(&i) {
                return i;
            }
        }
    }

    pub(crate) fn new_session_id(&mut self) -> SessionId {
        let id = SessionId(self.next_session_id);
        self.next_session_id += 1;
        id
    }

    pub(crate) fn insert_session(&mut self, s: Session) {
        let idx = s.local_index;
        self.by_id.insert(s.id, idx);
        self.peers.entry(s.peer).or_default().sessions.push(idx);
        self.sessions.insert(idx, Box::new(s));
        self.touch(idx);
    }

    /// Removes a session, failing what is pending on it with `err`.
    pub(crate) fn remove_session(&mut self, idx: u32, err: SendError) {
        self.handshakes.remove(&idx);
        self.initiations.retain(|_, v| *v != idx);
        self.set_timer(idx, None);
        self.queued.remove(&idx);
        let (sessions, mut ctx) = self.ctx();
        let Some(mut s) = sessions.remove(&idx) else {
            return;
        };
        s.fail_all(&mut ctx, &err);
        *ctx.reassembly_total = ctx.reassembly_total.saturating_sub(s.reassembly_bytes);
        self.by_id.remove(&s.id);
        if let Some(p) = self.peers.get_mut(&s.peer) {
            p.sessions.retain(|i| *i != idx);
            if p.sessions.is_empty() && !p.pinned {
                self.dormant.push_back(s.peer);
                self.forget_dormant();
            }
        }
        if s.established() {
            self.events.push_back(Event::SessionDown {
                peer: s.peer,
                session: s.id,
                reason: err.to_string(),
            });
        }
    }

    /// Forgets the peers idle longest while more than `max_dormant_peers` are queued.
    fn forget_dormant(&mut self) {
        while self.dormant.len() > self.config.max_dormant_peers {
            let Some(peer) = self.dormant.pop_front() else {
                break;
            };
            if self
                .peers
                .get(&peer)
                .is_some_and(|p| p.sessions.is_empty() && !p.pinned)
            {
                self.peers.remove(&peer);
            }
        }
    }

    // ----- inputs -------------------------------------------------------------------

    /// Feeds one received datagram. Anything malformed, unauthenticated, replayed or
    /// unexpected is dropped and counted in [`EndpointStats`] under its [`DropReason`].
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &mut [u8]) {
        self.handle_datagram_inner(now, from, data);
        self.refresh_timers();
    }

    fn handle_datagram_inner(&mut self, now: Instant, from: SocketAddr, data: &mut [u8]) {
        self.stats.rx_datagrams += 1;
        self.stats.rx_bytes += data.len() as u64;
        if self.closed {
            return;
        }
        match data.first() {
            None => self.stats.drop_packet(DropReason::Malformed),
            Some(b) if *b < 0x80 => self.handle_data(now, from, data),
            Some(_) => {
                let len = data.len();
                match Packet::parse(data) {
                    Err(_) => self.stats.drop_packet(DropReason::Malformed),
                    Ok(p) => {
                        // The parsed packet borrows `data`; handshake handling copies what it keeps.
                        let owned = OwnedHandshake::from(&p);
                        self.handle_handshake_packet(now, from, owned, len);
                    }
                }
            }
        }
    }

    fn handle_data(&mut self, now: Instant, from: SocketAddr, data: &mut [u8]) {
        let Ok((hdr, hlen)) = DataHeader::parse(data) else {
            self.stats.drop_packet(DropReason::Malformed);
            return;
        };
        let idx = hdr.receiver;
        let len = data.len() as u64;
        if self.sessions.contains_key(&idx) {
            self.touch(idx);
        }
        let (sessions, mut ctx) = self.ctx();
        let Some(s) = sessions.get_mut(&idx) else {
            ctx.stats.drop_packet(DropReason::UnknownSession);
            return;
        };
        if !s.established() {
            ctx.stats.drop_packet(DropReason::Unexpected);
            return;
        }
        let pn = s.expand_pn(hdr.pn_truncated, hdr.pn_len);
        if !s.replay_check(pn) {
            ctx.stats.drop_packet(DropReason::Replay);
            return;
        }
        let (header, sealed) = data.split_at_mut(hlen);
        let Some(plain) = s.open(pn, hdr.key_phase, header, sealed) else {
            ctx.stats.drop_packet(DropReason::Decrypt);
            return;
        };
        let sum = match Session::check_frames(plain) {
            Ok(sum) => sum,
            Err(_) => {
                ctx.stats.drop_packet(DropReason::ProtocolViolation);
                return;
            }
        };
        let newest = s.replay_check(pn) && s.expand_pn(hdr.pn_truncated, hdr.pn_len) >= pn;
        s.on_packet_received(now, pn, sum.eliciting);
        if from != s.remote && newest {
            // The peer moved (NAT rebinding): the packet authenticated and is the newest,
            // so follow it. Sessions are found by index, not by address.
            s.remote = from;
        }
        let _ = len;
        s.confirmed = true;
        let was_validated = s.validated;
        s.validated = true;
        s.process_frames(now, &mut ctx, pn, plain, sum);
        let closed = s.closed_by_peer.take();
        let peer = s.peer;
        let remote = s.remote;
        if !was_validated {
            self.handshakes.remove(&idx);
        }
        if let Some(p) = self.peers.get_mut(&peer) {
            if !p.addrs.contains(&remote) {
                p.addrs.insert(0, remote);
                p.addrs.truncate(MAX_ADDRS_PER_PEER);
            }
        }
        if let Some(reason) = closed {
            self.remove_session(
                idx,
                SendError::SessionClosed(format!("closed by peer: {reason}")),
            );
            return;
        }
        // A driver may hand over a long batch of datagrams before it polls for output;
        // acknowledge at least every ACK_EVERY ack-eliciting packets anyway, so the
        // sender's window keeps moving and its loss detection sees timely acks.
        let (sessions, mut ctx) = self.ctx();
        if let Some(s) = sessions.get_mut(&idx) {
            if s.acks_owed() >= ACK_EVERY {
                let mut buf = Vec::new();
                if let Some(n) = s.build_data_packet(now, &mut ctx, &mut buf) {
                    buf.truncate(n);
                    let dst = s.remote;
                    self.out.push_back((dst, buf));
                }
            }
        }
        self.mark_dirty(idx);
    }

    /// Runs timers; call when the instant from [`Endpoint::poll_timeout`] has passed.
    ///
    /// Visits the sessions whose deadline has come, and those with queued messages (which
    /// look at their pacing bucket), in index order. Any other session's timeout handling
    /// and transmit poll would do nothing, so the outcome is that of visiting them all.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.handshake_timers(now);
        self.refresh_timers();
        let mut idxs: Vec<u32> = self
            .timer_queue
            .range(..=(now, u32::MAX))
            .map(|&(_, idx)| idx)
            .chain(self.queued.iter().copied())
            .collect();
        idxs.sort_unstable();
        idxs.dedup();
        for idx in idxs {
            let (sessions, mut ctx) = self.ctx();
            let Some(s) = sessions.get_mut(&idx) else {
                continue;
            };
            if let Some(err) = s.on_timeout(now, &mut ctx) {
                self.remove_session(idx, err);
                continue;
            }
            self.mark_dirty(idx);
        }
        self.refresh_timers();
    }

    // ----- commands -----------------------------------------------------------------

    /// Adds an address for `peer`. A new session starts at the peer's first address: the
    /// newest one a session of the peer was seen at, else the first added. At most
    /// [`MAX_ADDRS_PER_PEER`] are kept: when full, a new one replaces the last. A peer with
    /// an added address stays in the address book (see
    /// [`EndpointConfig::max_dormant_peers`]).
    pub fn add_address(&mut self, peer: PeerId, addr: SocketAddr) {
        let e = self.peers.entry(peer).or_default();
        e.pinned = true;
        if !e.addrs.contains(&addr) {
            if e.addrs.len() >= MAX_ADDRS_PER_PEER {
                e.addrs.pop();
            }
            e.addrs.push(addr);
        }
    }

    /// Known addresses of `peer`.
    pub fn addresses(&self, peer: &PeerId) -> Vec<SocketAddr> {
        self.peers
            .get(peer)
            .map(|p| p.addrs.clone())
            .unwrap_or_default()
    }

    /// Accepts messages for `protocol`. Returns false if it was registered already.
    pub fn register_protocol(&mut self, protocol: &str) -> bool {
        self.protocols.insert(Arc::from(protocol))
    }

    /// Stops accepting messages for `protocol`: later ones are answered with RESET.
    pub fn unregister_protocol(&mut self, protocol: &str) -> bool {
        self.protocols.remove(protocol)
    }

    /// Sends a message. With a reliable [`Delivery`](crate::Delivery), the outcome arrives
    /// as [`Event::SendComplete`] once the peer acknowledged it (or it failed); an
    /// unreliable one completes when it is put in a packet.
    pub fn send(
        &mut self,
        now: Instant,
        peer: PeerId,
        protocol: &str,
        payload: Bytes,
        opts: SendOptions,
    ) -> Result<MessageId, SendError> {
        self.submit(now, peer, protocol, payload, opts, OutKind::Message)
    }

    /// Sends a request; the response (or the failure) arrives as [`Event::Response`].
    /// Requests are always delivered reliably (`Ordered` is honoured).
    pub fn request(
        &mut self,
        now: Instant,
        peer: PeerId,
        protocol: &str,
        payload: Bytes,
        mut opts: SendOptions,
    ) -> Result<MessageId, SendError> {
        if opts.delivery == crate::Delivery::Unreliable {
            opts.delivery = crate::Delivery::Reliable;
        }
        self.submit(now, peer, protocol, payload, opts, OutKind::Request(0))
    }

    fn submit(
        &mut self,
        now: Instant,
        peer: PeerId,
        protocol: &str,
        payload: Bytes,
        opts: SendOptions,
        kind: OutKind,
    ) -> Result<MessageId, SendError> {
        let r = self.submit_inner(now, peer, protocol, payload, opts, kind);
        self.refresh_timers();
        r
    }

    fn submit_inner(
        &mut self,
        now: Instant,
        peer: PeerId,
        protocol: &str,
        payload: Bytes,
        opts: SendOptions,
        kind: OutKind,
    ) -> Result<MessageId, SendError> {
        if self.closed {
            return Err(SendError::Closed);
        }
        if protocol.is_empty() || protocol.len() > MAX_PROTOCOL_LEN {
            return Err(SendError::InvalidProtocol);
        }
        let limit = self.max_message_size(opts.delivery);
        if payload.len() > limit {
            return Err(SendError::MessageTooLarge {
                size: payload.len(),
                limit,
            });
        }
        if peer == self.local_peer_id() {
            return Err(SendError::Unreachable("cannot send to self".into()));
        }
        let idx = self.session_for(now, peer)?;
        let id = MessageId(self.next_message_id);
        let deadline = now
            + if opts.delivery == crate::Delivery::Unreliable {
                self.config.unreliable_deadline
            } else {
                self.config.send_timeout
            };
        let max = self.config.max_in_flight_messages;
        let buffer = self.config.max_send_buffer;
        let s = self.sessions.get_mut(&idx).ok_or(SendError::Closed)?;
        let frag = Self::frag_sizes(protocol, s.mtu);
        if s.in_flight() >= max
            || (s.in_flight() > 0 && s.buffered_bytes() + payload.len() > buffer)
        {
            return Err(SendError::Backpressure);
        }
        s.enqueue(
            Some(id),
            Arc::from(protocol),
            kind,
            opts.delivery,
            payload,
            opts.early_data,
            deadline,
            frag,
        )?;
        self.next_message_id += 1;
        self.mark_dirty(idx);
        Ok(id)
    }

    /// The session to put a new message on: the newest established one, else one in
    /// handshake, else a new one (which starts a handshake).
    fn session_for(&mut self, now: Instant, peer: PeerId) -> Result<u32, SendError> {
        if let Some(p) = self.peers.get(&peer) {
            let best = p
                .sessions
                .iter()
                .filter_map(|i| self.sessions.get(i))
                .max_by_key(|s| (s.established(), s.initiator, s.created));
            if let Some(s) = best {
                return Ok(s.local_index);
            }
        }
        let addr = self
            .peers
            .get(&peer)
            .and_then(|p| p.addrs.first().copied())
            .ok_or(SendError::NoAddress)?;
        self.start_handshake(now, peer, addr)
    }

    /// Answers an inbound request.
    pub fn respond(
        &mut self,
        now: Instant,
        request: &InboundRequest,
        result: Result<Bytes, (u8, String)>,
    ) -> Result<(), SendError> {
        let r = self.respond_inner(now, request, result);
        self.refresh_timers();
        r
    }

    fn respond_inner(
        &mut self,
        now: Instant,
        request: &InboundRequest,
        result: Result<Bytes, (u8, String)>,
    ) -> Result<(), SendError> {
        let idx = *self
            .by_id
            .get(&request.session)
            .ok_or(SendError::UnknownRequest)?;
        let deadline = now + self.config.send_timeout;
        self.touch(idx);
        let s = self
            .sessions
            .get_mut(&idx)
            .ok_or(SendError::UnknownRequest)?;
        if !s.inbound_requests.remove(&request.request_id) {
            return Err(SendError::UnknownRequest);
        }
        let (kind, payload) = match result {
            Ok(p) => (OutKind::Response(request.request_id), p),
            Err((code, reason)) => {
                let mut v = vec![code];
                v.extend_from_slice(reason.as_bytes());
                (OutKind::ErrorResponse(request.request_id), Bytes::from(v))
            }
        };
        let limit = self.config.max_message_size;
        if payload.len() > limit {
            return Err(SendError::MessageTooLarge {
                size: payload.len(),
                limit,
            });
        }
        let s = self
            .sessions
            .get_mut(&idx)
            .ok_or(SendError::UnknownRequest)?;
        let frag = Self::frag_sizes(&request.protocol, s.mtu);
        s.enqueue(
            None,
            request.protocol.clone(),
            kind,
            crate::Delivery::Reliable,
            payload,
            true,
            deadline,
            frag,
        )?;
        self.mark_dirty(idx);
        Ok(())
    }

    /// Forgets the caller of `send`/`request` `id` (no event will report it).
    pub fn cancel(&mut self, id: MessageId) {
        let mut hit = None;
        for (idx, s) in self.sessions.iter_mut() {
            if s.cancel(id) {
                hit = Some(*idx);
                break;
            }
        }
        if let Some(idx) = hit {
            self.touch(idx);
            self.refresh_timers();
        }
    }

    /// Peers with an established session.
    pub fn peers(&self) -> Vec<PeerId> {
        let mut v: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                p.sessions
                    .iter()
                    .any(|i| self.sessions.get(i).is_some_and(|s| s.established()))
            })
            .map(|(id, _)| *id)
            .collect();
        v.sort();
        v
    }

    /// The current address of session `session`, if it exists.
    pub fn session_remote(&self, session: SessionId) -> Option<SocketAddr> {
        let idx = self.by_id.get(&session)?;
        self.sessions.get(idx).map(|s| s.remote)
    }

    /// The sessions with `peer`.
    pub fn sessions(&self, peer: &PeerId) -> Vec<SessionInfo> {
        let Some(p) = self.peers.get(peer) else {
            return Vec::new();
        };
        p.sessions
            .iter()
            .filter_map(|i| self.sessions.get(i))
            .map(|s| SessionInfo {
                id: s.id,
                remote: s.remote,
                established: s.established(),
                initiator: s.initiator,
                pattern: s.pattern,
                srtt: s.srtt(),
                packets_sent: s.packets_sent,
                packets_received: s.packets_received,
                cwnd: s.cwnd(),
                bytes_in_flight: s.bytes_in_flight(),
                mtu: s.mtu,
            })
            .collect()
    }

    /// Closes every session with `peer` (sending CLOSE); pending sends fail.
    pub fn close_peer(&mut self, now: Instant, peer: &PeerId) {
        let idxs = self
            .peers
            .get(peer)
            .map(|p| p.sessions.clone())
            .unwrap_or_default();
        for idx in idxs {
            self.send_close(now, idx, "closed by peer");
            self.remove_session(idx, SendError::SessionClosed("closed locally".into()));
        }
        self.refresh_timers();
    }

    /// Closes every session; later commands fail with [`SendError::Closed`].
    pub fn close(&mut self, now: Instant) {
        let mut idxs: Vec<u32> = self.sessions.keys().copied().collect();
        idxs.sort_unstable();
        for idx in idxs {
            self.send_close(now, idx, "endpoint closed");
            self.remove_session(idx, SendError::Closed);
        }
        self.closed = true;
        self.refresh_timers();
    }

    fn send_close(&mut self, now: Instant, idx: u32, reason: &str) {
        let (sessions, mut ctx) = self.ctx();
        let Some(s) = sessions.get_mut(&idx) else {
            return;
        };
        let mut frame = Vec::new();
        Frame::Close { code: 0, reason }.encode(&mut frame);
        let mut buf = Vec::new();
        if let Some(n) = s.seal_frames(now, &mut ctx, &frame, &mut buf) {
            buf.truncate(n);
            let dst = s.remote;
            self.out.push_back((dst, buf));
        }
    }

    // ----- outputs ------------------------------------------------------------------

    /// The next datagram to send, written to the start of `buf` (cleared first).
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        let t = self.poll_transmit_inner(now, buf);
        self.refresh_timers();
        t
    }

    fn poll_transmit_inner(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        loop {
            if let Some((dst, pkt)) = self.out.pop_front() {
                buf.clear();
                buf.extend_from_slice(&pkt);
                self.stats.tx_datagrams += 1;
                self.stats.tx_bytes += pkt.len() as u64;
                return Some(Transmit {
                    destination: dst,
                    size: pkt.len(),
                });
            }
            let idx = self.dirty.pop_front()?;
            self.dirty_set.remove(&idx);
            self.touch(idx);
            if self.handshakes.contains_key(&idx) && self.handshake_transmit(now, idx) {
                self.mark_dirty(idx);
                continue;
            }
            let (sessions, mut ctx) = self.ctx();
            let Some(s) = sessions.get_mut(&idx) else {
                continue;
            };
            if let Some(n) = s.build_data_packet(now, &mut ctx, buf) {
                let dst = s.remote;
                self.stats.tx_datagrams += 1;
                self.stats.tx_bytes += n as u64;
                self.mark_dirty(idx);
                return Some(Transmit {
                    destination: dst,
                    size: n,
                });
            }
        }
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Endpoint::handle_timeout`] must next be called.
    ///
    /// O(handshakes in progress): the sessions' deadlines are kept in an ordered index.
    pub fn poll_timeout(&self) -> Option<Instant> {
        #[cfg(debug_assertions)]
        self.check_timers();
        let t = self.handshake_next_timeout();
        match (t, self.timer_queue.first()) {
            (Some(a), Some(&(b, _))) => Some(a.min(b)),
            (a, b) => a.or(b.map(|e| e.0)),
        }
    }
}

/// A handshake packet copied out of the receive buffer.
pub(crate) enum OwnedHandshake {
    Initiation {
        pattern: wire::Pattern,
        sender: u32,
        cookie: Option<[u8; 16]>,
        noise: Vec<u8>,
    },
    Response {
        receiver: u32,
        sender: u32,
        noise: Vec<u8>,
    },
    CookieReply {
        receiver: u32,
        cookie: [u8; 16],
    },
    Finish {
        receiver: u32,
        noise: Vec<u8>,
    },
    Other,
}

impl From<&Packet<'_>> for OwnedHandshake {
    fn from(p: &Packet<'_>) -> Self {
        match p {
            Packet::Initiation {
                pattern,
                sender,
                cookie,
                noise,
                ..
            } => OwnedHandshake::Initiation {
                pattern: *pattern,
                sender: *sender,
                cookie: *cookie,
                noise: noise.to_vec(),
            },
            Packet::Response {
                receiver,
                sender,
                noise,
            } => OwnedHandshake::Response {
                receiver: *receiver,
                sender: *sender,
                noise: noise.to_vec(),
            },
            Packet::CookieReply { receiver, cookie } => OwnedHandshake::CookieReply {
                receiver: *receiver,
                cookie: *cookie,
            },
            Packet::Finish { receiver, noise } => OwnedHandshake::Finish {
                receiver: *receiver,
                noise: noise.to_vec(),
            },
            Packet::Data { .. } => OwnedHandshake::Other,
        }
    }
}
