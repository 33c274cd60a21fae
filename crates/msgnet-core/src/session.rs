//! One secure session with one peer: packet numbers, the replay window, keys and
//! rekeying, acknowledgements, loss recovery, keepalive, and the protocol channels.
//!
//! The session owns everything after the handshake keys exist; the handshake itself is
//! driven by the endpoint (`handshake.rs`), which hands the session its keys and feeds it
//! the frames that rode in handshake packets (packet number 0 of each direction).
//! It may call: `wire`, `crypto::PacketKey`, `channel`, `rtt`, `replay`, `ranges`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use libp2p_identity::PeerId;

use crate::channel::{Accept, InChannel, OutChannel, OutKind, OutMessage};
use crate::crypto::PacketKey;
use crate::ranges::RangeSet;
use crate::replay::ReplayWindow;
use crate::rtt::RttEstimator;
use crate::wire::{self, Frame, Frames, MessageFrame, ResetCode, Sack};
use crate::{
    Delivery, DropReason, EndpointConfig, EndpointStats, Event, InboundRequest, IncomingMessage,
    MessageId, SendError, SessionId,
};

/// Shared endpoint state a session may touch while it works.
pub(crate) struct Ctx<'a> {
    pub(crate) config: &'a EndpointConfig,
    pub(crate) events: &'a mut VecDeque<Event>,
    pub(crate) stats: &'a mut EndpointStats,
    pub(crate) protocols: &'a HashSet<Arc<str>>,
}

/// Packet protection keys of an established session.
pub(crate) struct Keys {
    send: PacketKey,
    send_phase: bool,
    send_count: u64,
    send_since: Instant,
    recv: PacketKey,
    recv_phase: bool,
    recv_prev: Option<PacketKey>,
}

impl Keys {
    pub(crate) fn new(send: PacketKey, recv: PacketKey, now: Instant) -> Self {
        Self {
            send,
            send_phase: false,
            send_count: 0,
            send_since: now,
            recv,
            recv_phase: false,
            recv_prev: None,
        }
    }
}

/// What one sent packet carried, kept until it is acknowledged or declared lost.
#[derive(Debug)]
struct SentPacket {
    time: Instant,
    ack_eliciting: bool,
    /// (message key, protocol int whose INIT this packet carried).
    messages: Vec<(u64, Option<u16>)>,
    /// Channels whose INIT rode in this packet on an unreliable message.
    inits: Vec<u16>,
    ping: bool,
}

/// A held `Ordered` message.
#[derive(Debug)]
pub(crate) struct HeldMsg {
    payload: Bytes,
    kind: wire::MessageKind,
}

/// Control frames waiting to go out.
#[derive(Debug, Clone)]
enum Control {
    Reset(u16, ResetCode, Option<u64>),
}

/// A frame chosen for the packet being built, kept to re-encode the last one without
/// its explicit length.
struct Planned {
    key: u64,
    init_int: Option<u16>,
    start: usize,
}

/// One session.
pub(crate) struct Session {
    pub(crate) id: SessionId,
    pub(crate) local_index: u32,
    pub(crate) remote_index: u32,
    pub(crate) peer: PeerId,
    pub(crate) remote: SocketAddr,
    pub(crate) initiator: bool,
    pub(crate) pattern: &'static str,
    pub(crate) keys: Option<Keys>,
    /// The peer's address is validated: we may send it anything. An initiator chose the
    /// address; a responder validates it when the first authenticated data packet (IK)
    /// or the Finish message (XX) arrives.
    pub(crate) validated: bool,
    /// Initiator: an authenticated packet came back after the handshake.
    pub(crate) confirmed: bool,
    /// Bytes received from / sent to the peer's address while not validated.
    pub(crate) amp_rx: u64,
    pub(crate) amp_tx: u64,
    next_pn: u64,
    largest_acked: Option<u64>,
    replay: ReplayWindow,
    rx_ranges: RangeSet,
    ack_pending: bool,
    eliciting_since_ack: u32,
    ack_deadline: Option<Instant>,
    largest_rx_time: Option<Instant>,
    sent: BTreeMap<u64, SentPacket>,
    rtt: RttEstimator,
    rto_backoff: u32,
    out_channels: HashMap<Arc<str>, OutChannel>,
    out_by_int: HashMap<u16, Arc<str>>,
    next_int: u16,
    in_channels: HashMap<u16, InChannel<HeldMsg>>,
    messages: BTreeMap<u64, OutMessage>,
    queued: HashSet<u64>,
    next_msg_key: u64,
    queue: VecDeque<u64>,
    control: VecDeque<Control>,
    pub(crate) ping_pending: bool,
    /// The peer sent CLOSE with this reason.
    pub(crate) closed_by_peer: Option<String>,
    pending_requests: HashMap<u64, MessageId>,
    next_request_id: u64,
    /// Inbound requests delivered and not yet answered.
    pub(crate) inbound_requests: HashSet<u64>,
    pub(crate) last_rx: Instant,
    pub(crate) last_tx: Instant,
    pub(crate) created: Instant,
    pub(crate) packets_sent: u64,
    pub(crate) packets_received: u64,
}

impl Session {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: SessionId,
        local_index: u32,
        peer: PeerId,
        remote: SocketAddr,
        initiator: bool,
        pattern: &'static str,
        now: Instant,
    ) -> Self {
        Self {
            id,
            local_index,
            remote_index: 0,
            peer,
            remote,
            initiator,
            pattern,
            keys: None,
            validated: initiator,
            confirmed: !initiator,
            amp_rx: 0,
            amp_tx: 0,
            next_pn: 1, // packet number 0 is the handshake packet carrying frames
            largest_acked: None,
            replay: ReplayWindow::default(),
            rx_ranges: RangeSet::new(32),
            ack_pending: false,
            eliciting_since_ack: 0,
            ack_deadline: None,
            largest_rx_time: None,
            sent: BTreeMap::new(),
            rtt: RttEstimator::default(),
            rto_backoff: 0,
            out_channels: HashMap::new(),
            out_by_int: HashMap::new(),
            next_int: 1,
            in_channels: HashMap::new(),
            messages: BTreeMap::new(),
            queued: HashSet::new(),
            next_msg_key: 0,
            queue: VecDeque::new(),
            control: VecDeque::new(),
            ping_pending: false,
            closed_by_peer: None,
            pending_requests: HashMap::new(),
            next_request_id: 0,
            inbound_requests: HashSet::new(),
            last_rx: now,
            last_tx: now,
            created: now,
            packets_sent: 0,
            packets_received: 0,
        }
    }

    pub(crate) fn established(&self) -> bool {
        self.keys.is_some()
    }

    pub(crate) fn srtt(&self) -> Option<Duration> {
        self.rtt.srtt()
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.messages.len()
    }

    // ----- commands -----------------------------------------------------------------

    /// Queues a message. Reliable messages get the channel's next sequence number now,
    /// so `Ordered` order is the order of this call.
    pub(crate) fn enqueue(
        &mut self,
        id: Option<MessageId>,
        protocol: Arc<str>,
        kind: OutKind,
        delivery: Delivery,
        payload: Bytes,
        early_data: bool,
        deadline: Instant,
    ) -> Result<(), SendError> {
        if !self.out_channels.contains_key(&protocol) {
            if self.next_int == u16::MAX {
                return Err(SendError::Backpressure);
            }
            let int = self.next_int;
            self.next_int += 1;
            self.out_by_int.insert(int, protocol.clone());
            self.out_channels.insert(protocol.clone(), OutChannel::new(protocol.clone(), int));
        }
        let seq = match delivery {
            Delivery::Unreliable => None,
            _ => self.out_channels.get_mut(&protocol).map(OutChannel::next_seq),
        };
        let kind = match kind {
            OutKind::Request(_) => {
                let rid = self.next_request_id;
                self.next_request_id += 1;
                if let Some(id) = id {
                    self.pending_requests.insert(rid, id);
                }
                OutKind::Request(rid)
            }
            k => k,
        };
        let key = self.next_msg_key;
        self.next_msg_key += 1;
        self.messages.insert(
            key,
            OutMessage { id, protocol, kind, delivery, seq, payload, early_data, deadline },
        );
        self.queue.push_back(key);
        self.queued.insert(key);
        Ok(())
    }

    /// Forgets a request's caller (after its per-call timeout).
    pub(crate) fn cancel(&mut self, id: MessageId) -> bool {
        let before = self.pending_requests.len();
        self.pending_requests.retain(|_, v| *v != id);
        let mut found = before != self.pending_requests.len();
        for m in self.messages.values_mut() {
            if m.id == Some(id) {
                m.id = None;
                found = true;
            }
        }
        found
    }

    /// Fails everything pending with `err`.
    pub(crate) fn fail_all(&mut self, ctx: &mut Ctx<'_>, err: &SendError) {
        for (_, m) in std::mem::take(&mut self.messages) {
            fail_message(ctx, &m, err.clone());
        }
        self.queue.clear();
        self.queued.clear();
        for (_, id) in self.pending_requests.drain() {
            ctx.events.push_back(Event::Response { id, result: Err(err.clone()) });
        }
    }

    // ----- receiving ----------------------------------------------------------------

    /// Whether the packet number may be new (cheap check before decryption).
    pub(crate) fn replay_check(&self, pn: u64) -> bool {
        self.replay.check(pn)
    }

    /// Expands a truncated packet number.
    pub(crate) fn expand_pn(&self, truncated: u32, len: usize) -> u64 {
        wire::decode_pn(self.replay.largest(), u64::from(truncated), len)
    }

    /// Decrypts a data packet in place; rotates receive keys on a new key phase.
    pub(crate) fn open<'b>(
        &mut self,
        pn: u64,
        phase: bool,
        header: &[u8],
        sealed: &'b mut [u8],
    ) -> Option<&'b [u8]> {
        let keys = self.keys.as_mut()?;
        if phase == keys.recv_phase {
            return keys.recv.open(pn, header, sealed).ok();
        }
        // A new phase (the peer rekeyed) or a late packet from the previous one. Try the
        // next key on a copy so a failure leaves `sealed` intact for the second attempt.
        let next = keys.recv.next();
        let mut copy = sealed.to_vec();
        if next.open(pn, header, &mut copy).is_ok() {
            let old = std::mem::replace(&mut keys.recv, next);
            keys.recv_prev = Some(old);
            keys.recv_phase = phase;
            let n = copy.len().saturating_sub(wire::TAG_LEN);
            let out = sealed.get_mut(..n)?;
            out.copy_from_slice(copy.get(..n)?);
            return Some(out);
        }
        let prev = keys.recv_prev.as_ref()?;
        prev.open(pn, header, sealed).ok()
    }

    /// Records an authenticated packet (data packet or handshake packet 0).
    pub(crate) fn on_packet_received(&mut self, now: Instant, pn: u64, ack_eliciting: bool) {
        self.replay.mark(pn);
        self.rx_ranges.insert(pn);
        self.packets_received += 1;
        self.last_rx = now;
        if self.replay.largest() == Some(pn) {
            self.largest_rx_time = Some(now);
        }
        if ack_eliciting {
            self.ack_pending = true;
            self.eliciting_since_ack += 1;
            if self.ack_deadline.is_none() {
                self.ack_deadline = Some(now);
            }
        }
    }

    /// Validates the frames of an authenticated packet without acting on them.
    /// Returns whether the packet is ack-eliciting.
    pub(crate) fn check_frames(plain: &[u8]) -> Result<bool, wire::WireError> {
        let mut eliciting = false;
        for f in Frames::new(plain) {
            eliciting |= f?.is_ack_eliciting();
        }
        Ok(eliciting)
    }

    /// Acts on the frames of an authenticated, already checked packet.
    pub(crate) fn process_frames(&mut self, now: Instant, ctx: &mut Ctx<'_>, plain: &[u8]) {
        // RESETs first (they fail the refused messages), then acknowledgements (the packet
        // that carried a refused message is acknowledged too), then the rest.
        for frame in Frames::new(plain) {
            if let Ok(Frame::Reset { protocol_int, code, seq }) = frame {
                self.on_reset(ctx, protocol_int, code, seq);
            }
        }
        for frame in Frames::new(plain) {
            if let Ok(Frame::Sack(sack)) = frame {
                self.on_sack(now, ctx, &sack);
            }
        }
        for frame in Frames::new(plain) {
            let Ok(frame) = frame else { return };
            match frame {
                Frame::Padding(_) | Frame::Ping | Frame::Ack { .. } | Frame::Sack(_) | Frame::Reset { .. } => {}
                Frame::Close { reason, .. } => {
                    self.closed_by_peer = Some(reason.to_owned());
                }
                Frame::Message(m) => {
                    if let Err(reason) = self.on_message(now, ctx, &m) {
                        ctx.stats.drop_packet(reason);
                    }
                }
            }
        }
    }

    fn on_message(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        m: &MessageFrame<'_>,
    ) -> Result<(), DropReason> {
        let int = m.protocol_int;
        let window = ctx.config.max_in_flight_messages as u64 * 2;
        let protocol = match (m.init, self.in_channels.get(&int)) {
            (Some(init), Some(ch)) if &*ch.protocol != init.protocol => {
                return Err(DropReason::ProtocolViolation)
            }
            (_, Some(ch)) => ch.protocol.clone(),
            (Some(init), None) => {
                if self.in_channels.len() >= usize::from(u16::MAX) {
                    return Err(DropReason::ProtocolViolation);
                }
                let p: Arc<str> = ctx
                    .protocols
                    .get(init.protocol)
                    .cloned()
                    .unwrap_or_else(|| Arc::from(init.protocol));
                self.in_channels.insert(int, InChannel::new(p.clone(), window));
                p
            }
            (None, None) => {
                self.control.push_back(Control::Reset(int, ResetCode::UNKNOWN_PROTOCOL_INT, None));
                return Ok(());
            }
        };
        let is_response =
            matches!(m.kind, wire::MessageKind::Response(_) | wire::MessageKind::ErrorResponse(_));
        let Some(ch) = self.in_channels.get_mut(&int) else { return Ok(()) };
        let seq = m.seq.map(|t| ch.expand(t));
        // A retransmission of something already delivered is only acknowledged, even if
        // the handler has gone since.
        if seq.is_some_and(|s| ch.accept(s, m.ordered) == Accept::Duplicate) {
            return Ok(());
        }
        if !is_response && !ctx.protocols.contains(&protocol) {
            // Not marked delivered: a retransmission is answered with RESET again.
            self.control.push_back(Control::Reset(int, ResetCode::NO_HANDLER, seq));
            return Ok(());
        }
        let _ = now;
        let Some(ch) = self.in_channels.get_mut(&int) else { return Ok(()) };
        let Some(seq) = seq else {
            self.deliver(ctx, protocol, m.kind, Bytes::copy_from_slice(m.payload));
            return Ok(());
        };
        match ch.accept(seq, m.ordered) {
            Accept::Duplicate => Ok(()),
            Accept::OutOfWindow => Err(DropReason::ProtocolViolation),
            Accept::Held => {
                ch.hold(seq, HeldMsg { payload: Bytes::copy_from_slice(m.payload), kind: m.kind });
                Ok(())
            }
            Accept::Deliver => {
                let released = ch.delivered(seq);
                self.deliver(ctx, protocol.clone(), m.kind, Bytes::copy_from_slice(m.payload));
                for h in released {
                    self.deliver(ctx, protocol.clone(), h.kind, h.payload);
                }
                Ok(())
            }
        }
    }

    fn deliver(
        &mut self,
        ctx: &mut Ctx<'_>,
        protocol: Arc<str>,
        kind: wire::MessageKind,
        payload: Bytes,
    ) {
        match kind {
            wire::MessageKind::Message | wire::MessageKind::Request(_) => {
                let request = match kind {
                    wire::MessageKind::Request(rid) => {
                        self.inbound_requests.insert(rid);
                        Some(InboundRequest {
                            session: self.id,
                            protocol: protocol.clone(),
                            request_id: rid,
                        })
                    }
                    _ => None,
                };
                ctx.stats.messages_delivered += 1;
                ctx.events.push_back(Event::Message(IncomingMessage {
                    peer: self.peer,
                    session: self.id,
                    protocol,
                    payload,
                    request,
                }));
            }
            wire::MessageKind::Response(rid) => {
                if let Some(id) = self.pending_requests.remove(&rid) {
                    ctx.events.push_back(Event::Response { id, result: Ok(payload) });
                }
            }
            wire::MessageKind::ErrorResponse(rid) => {
                if let Some(id) = self.pending_requests.remove(&rid) {
                    let code = payload.first().copied().unwrap_or(0);
                    let reason = String::from_utf8_lossy(payload.get(1..).unwrap_or_default())
                        .into_owned();
                    ctx.events
                        .push_back(Event::Response { id, result: Err(SendError::Remote { code, reason }) });
                }
            }
        }
    }

    fn on_reset(&mut self, ctx: &mut Ctx<'_>, int: u16, code: ResetCode, seq: Option<u64>) {
        let Some(protocol) = self.out_by_int.get(&int).cloned() else { return };
        if code == ResetCode::UNKNOWN_PROTOCOL_INT {
            // The peer lost the mapping: send INIT again and retransmit.
            if let Some(ch) = self.out_channels.get_mut(&protocol) {
                ch.init_acked = false;
            }
            let keys: Vec<u64> = self
                .messages
                .iter()
                .filter(|(_, m)| m.protocol == protocol)
                .map(|(k, _)| *k)
                .collect();
            for k in keys {
                self.requeue(k);
            }
            return;
        }
        // No handler: the refused message fails (an unreliable one has nothing to fail).
        let Some(seq) = seq else { return };
        let Some(key) = self
            .messages
            .iter()
            .find(|(_, m)| m.protocol == protocol && m.seq == Some(seq))
            .map(|(k, _)| *k)
        else {
            return;
        };
        if let Some(m) = self.messages.remove(&key) {
            if self.queued.remove(&key) {
                self.queue.retain(|k| *k != key);
            }
            if let Some(ch) = self.out_channels.get_mut(&protocol) {
                ch.acked(seq);
            }
            if let OutKind::Request(rid) = m.kind {
                self.pending_requests.remove(&rid);
            }
            fail_message(ctx, &m, SendError::UnsupportedProtocol(protocol.to_string()));
        }
    }

    fn on_sack(&mut self, now: Instant, ctx: &mut Ctx<'_>, sack: &Sack) {
        let Some(largest) = sack.largest() else { return };
        let mut newly: Vec<(u64, SentPacket)> = Vec::new();
        for &(lo, hi) in &sack.ranges {
            let pns: Vec<u64> = self.sent.range(lo..=hi).map(|(pn, _)| *pn).collect();
            for pn in pns {
                if let Some(p) = self.sent.remove(&pn) {
                    newly.push((pn, p));
                }
            }
        }
        if newly.is_empty() {
            return;
        }
        self.largest_acked = Some(self.largest_acked.map_or(largest, |l| l.max(largest)));
        if let Some((_, p)) = newly.iter().find(|(pn, _)| *pn == largest) {
            if p.ack_eliciting {
                let delay = Duration::from_micros(sack.delay_us).min(ctx.config.max_ack_delay);
                self.rtt.update(now.saturating_duration_since(p.time), delay);
            }
        }
        self.rto_backoff = 0;
        self.confirmed = true;
        for (_, p) in newly {
            let inits = p.messages.iter().filter_map(|(_, i)| *i).chain(p.inits.iter().copied());
            for int in inits {
                if let Some(ch) = self.out_by_int.get(&int).and_then(|pr| self.out_channels.get_mut(pr)) {
                    ch.init_acked = true;
                }
            }
            for (key, _) in p.messages {
                self.message_acked(ctx, key);
            }
        }
        self.detect_loss(now, ctx);
    }

    fn message_acked(&mut self, ctx: &mut Ctx<'_>, key: u64) {
        let Some(m) = self.messages.remove(&key) else { return };
        if self.queued.remove(&key) {
            self.queue.retain(|k| *k != key);
        }
        if let (Some(seq), Some(ch)) = (m.seq, self.out_channels.get_mut(&m.protocol)) {
            ch.acked(seq);
        }
        match (m.kind, m.id) {
            (OutKind::Request(_), _) | (_, None) => {}
            (_, Some(id)) => ctx.events.push_back(Event::SendComplete { id, result: Ok(()) }),
        }
    }

    fn requeue(&mut self, key: u64) {
        if self.messages.contains_key(&key) && self.queued.insert(key) {
            self.queue.push_front(key);
        }
    }

    /// Declares lost the packets sent well before a later acknowledged one.
    fn detect_loss(&mut self, now: Instant, ctx: &mut Ctx<'_>) {
        let Some(largest) = self.largest_acked else { return };
        let delay = self.rtt.loss_delay();
        let lost: Vec<u64> = self
            .sent
            .range(..largest)
            .filter(|(pn, p)| **pn + 3 <= largest || p.time + delay <= now)
            .map(|(pn, _)| *pn)
            .collect();
        for pn in lost {
            self.packet_lost(ctx, pn);
        }
    }

    fn packet_lost(&mut self, ctx: &mut Ctx<'_>, pn: u64) {
        let Some(p) = self.sent.remove(&pn) else { return };
        if p.ack_eliciting {
            ctx.stats.retransmissions += 1;
        }
        for (key, _) in p.messages.into_iter().rev() {
            self.requeue(key);
        }
        if p.ping {
            self.ping_pending = true;
        }
    }

    // ----- timers -------------------------------------------------------------------

    fn rto_deadline(&self, ctx_config: &EndpointConfig) -> Option<Instant> {
        if !self.established() {
            return None;
        }
        let oldest = self.sent.values().find(|p| p.ack_eliciting)?;
        let rto = self.rtt.rto(ctx_config.max_ack_delay) * 2u32.saturating_pow(self.rto_backoff.min(10));
        Some(oldest.time + rto)
    }

    /// The earliest instant at which the session needs `on_timeout`.
    pub(crate) fn next_timeout(&self, config: &EndpointConfig) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut consider = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        if self.ack_pending && self.can_send_data() {
            consider(self.ack_deadline.map(|d| d + config.max_ack_delay));
        }
        consider(self.rto_deadline(config));
        consider(self.messages.values().next().map(|m| m.deadline));
        if self.established() {
            consider(Some(self.last_tx + config.keepalive_interval));
            consider(Some(self.last_rx + config.idle_timeout));
        }
        t
    }

    /// Runs timers. Returns `Some(reason)` when the session must close.
    pub(crate) fn on_timeout(&mut self, now: Instant, ctx: &mut Ctx<'_>) -> Option<SendError> {
        if let Some(m) = self.messages.values().next() {
            if m.deadline <= now {
                return Some(SendError::TimedOut);
            }
        }
        if self.established() && now >= self.last_rx + ctx.config.idle_timeout {
            return Some(SendError::SessionClosed("idle timeout".into()));
        }
        if let Some(d) = self.rto_deadline(ctx.config) {
            if d <= now {
                let rto = self.rtt.rto(ctx.config.max_ack_delay);
                let lost: Vec<u64> = self
                    .sent
                    .iter()
                    .filter(|(_, p)| p.time + rto <= now)
                    .map(|(pn, _)| *pn)
                    .collect();
                for pn in lost {
                    self.packet_lost(ctx, pn);
                }
                self.rto_backoff += 1;
            }
        }
        if self.established() && now >= self.last_tx + ctx.config.keepalive_interval {
            self.ping_pending = true;
        }
        None
    }

    // ----- sending ------------------------------------------------------------------

    pub(crate) fn can_send_data(&self) -> bool {
        self.keys.is_some() && self.validated
    }

    fn ack_due(&self, now: Instant, config: &EndpointConfig) -> bool {
        self.ack_pending
            && (self.eliciting_since_ack >= 2
                || self.ack_deadline.is_some_and(|d| d + config.max_ack_delay <= now))
    }

    /// Whether anything but an acknowledgement is waiting.
    pub(crate) fn has_payload_to_send(&self) -> bool {
        !self.queue.is_empty() || !self.control.is_empty() || self.ping_pending
    }

    /// Writes frames into `out` (at most `limit` bytes) for packet `pn`. With
    /// `early_only`, only messages allowed in 0-RTT are taken. Returns whether anything
    /// was written.
    pub(crate) fn write_frames(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        out: &mut Vec<u8>,
        limit: usize,
        pn: u64,
        early_only: bool,
        force_ack: bool,
    ) -> bool {
        let start = out.len();
        let room = |out: &Vec<u8>| limit.saturating_sub(out.len() - start);
        let mut sent =
            SentPacket { time: now, ack_eliciting: false, messages: Vec::new(), inits: Vec::new(), ping: false };
        while let Some(c) = self.control.front().cloned() {
            let Control::Reset(int, code, seq) = c;
            let f = Frame::Reset { protocol_int: int, code, seq };
            if f.encoded_len() > room(out) {
                break;
            }
            f.encode(out);
            self.control.pop_front();
        }
        let other = !self.queue.is_empty() || self.ping_pending || out.len() > start;
        if self.ack_pending && (other || force_ack || self.ack_due(now, ctx.config)) && !self.rx_ranges.is_empty() {
            let delay = self
                .largest_rx_time
                .map_or(0, |t| now.saturating_duration_since(t).as_micros() as u64);
            let mut sack = Sack { delay_us: delay, ranges: self.rx_ranges.newest(32) };
            while Frame::Sack(sack.clone()).encoded_len() > room(out) && sack.ranges.len() > 1 {
                sack.ranges.pop();
            }
            let f = Frame::Sack(sack);
            if f.encoded_len() <= room(out) {
                f.encode(out);
                self.ack_pending = false;
                self.eliciting_since_ack = 0;
                self.ack_deadline = None;
            }
        }
        if self.ping_pending && room(out) >= 1 {
            Frame::Ping.encode(out);
            self.ping_pending = false;
            sent.ping = true;
            sent.ack_eliciting = true;
        }
        let mut last: Option<Planned> = None;
        let mut unreliable: Vec<u64> = Vec::new();
        while let Some(&key) = self.queue.front() {
            if last.is_some() && !ctx.config.coalesce {
                break;
            }
            let Some(m) = self.messages.get(&key) else {
                self.queue.pop_front();
                self.queued.remove(&key);
                continue;
            };
            if early_only && !m.early_data {
                break;
            }
            let Some(ch) = self.out_channels.get(&m.protocol) else {
                self.queue.pop_front();
                continue;
            };
            let frame = message_frame(m, ch, true);
            if frame.encoded_len() > room(out) {
                break;
            }
            let init_int = (!ch.init_acked).then_some(ch.int);
            last = Some(Planned { key, init_int, start: out.len() });
            frame.encode(out);
            self.queue.pop_front();
            self.queued.remove(&key);
            sent.ack_eliciting = true;
            if m.delivery == Delivery::Unreliable {
                unreliable.push(key);
                if let Some(int) = init_int {
                    if !sent.inits.contains(&int) {
                        sent.inits.push(int);
                    }
                }
            } else {
                sent.messages.push((key, init_int));
            }
        }
        // The last frame carries no explicit length when it is a message frame.
        if let Some(p) = last {
            if let Some(m) = self.messages.get(&p.key) {
                if let Some(ch) = self.out_channels.get(&m.protocol) {
                    let mut frame = message_frame(m, ch, false);
                    frame.init =
                        p.init_int.map(|_| wire::Init { transport_id: 0, protocol: &ch.protocol });
                    out.truncate(p.start);
                    frame.encode(out);
                }
            }
        }
        // Unreliable messages are done once they are in a packet.
        for key in unreliable {
            if let Some(m) = self.messages.remove(&key) {
                if let (Some(id), false) = (m.id, matches!(m.kind, OutKind::Request(_))) {
                    ctx.events.push_back(Event::SendComplete { id, result: Ok(()) });
                }
            }
        }
        if out.len() == start {
            return false;
        }
        if sent.ack_eliciting || !sent.messages.is_empty() {
            self.sent.insert(pn, sent);
        }
        true
    }

    /// Builds the next data packet into `buf` (cleared first). Returns its length.
    pub(crate) fn build_data_packet(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        buf: &mut Vec<u8>,
    ) -> Option<usize> {
        if !self.can_send_data() {
            return None;
        }
        if !self.has_payload_to_send() && !self.ack_due(now, ctx.config) {
            return None;
        }
        self.maybe_rekey(now, ctx.config);
        let keys = self.keys.as_ref()?;
        let pn = self.next_pn;
        let pn_len = wire::encode_pn_len(pn, self.largest_acked);
        let mask = if pn_len >= 4 { u64::from(u32::MAX) } else { (1u64 << (8 * pn_len)) - 1 };
        let header = wire::DataHeader {
            key_phase: keys.send_phase,
            receiver: self.remote_index,
            pn_truncated: (pn & mask) as u32,
            pn_len,
        };
        buf.clear();
        header.encode(buf);
        let hlen = buf.len();
        let limit = ctx.config.max_udp_payload.saturating_sub(hlen + wire::TAG_LEN);
        if !self.write_frames(now, ctx, buf, limit, pn, false, false) {
            buf.clear();
            return None;
        }
        let mut aad = [0u8; 8];
        let aad = {
            let a = aad.get_mut(..hlen)?;
            a.copy_from_slice(buf.get(..hlen)?);
            &*a
        };
        let keys = self.keys.as_mut()?;
        if keys.send.seal(pn, aad, buf, hlen).is_err() {
            buf.clear();
            return None;
        }
        keys.send_count += 1;
        self.next_pn += 1;
        self.packets_sent += 1;
        self.last_tx = now;
        Some(buf.len())
    }

    /// Seals the given encoded frames into a data packet (used for CLOSE). Returns the
    /// packet length in `buf`.
    pub(crate) fn seal_frames(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        frames: &[u8],
        buf: &mut Vec<u8>,
    ) -> Option<usize> {
        if !self.can_send_data() {
            return None;
        }
        self.maybe_rekey(now, ctx.config);
        let keys = self.keys.as_mut()?;
        let pn = self.next_pn;
        let pn_len = wire::encode_pn_len(pn, self.largest_acked);
        let mask = if pn_len >= 4 { u64::from(u32::MAX) } else { (1u64 << (8 * pn_len)) - 1 };
        let header = wire::DataHeader {
            key_phase: keys.send_phase,
            receiver: self.remote_index,
            pn_truncated: (pn & mask) as u32,
            pn_len,
        };
        buf.clear();
        header.encode(buf);
        let hlen = buf.len();
        let aad = buf.clone();
        buf.extend_from_slice(frames);
        keys.send.seal(pn, &aad, buf, hlen).ok()?;
        keys.send_count += 1;
        self.next_pn += 1;
        self.packets_sent += 1;
        self.last_tx = now;
        Some(buf.len())
    }

    fn maybe_rekey(&mut self, now: Instant, config: &EndpointConfig) {
        let Some(keys) = self.keys.as_mut() else { return };
        if keys.send_count >= config.rekey_after_packets
            || now.saturating_duration_since(keys.send_since) >= config.rekey_after_time
        {
            keys.send = keys.send.next();
            keys.send_phase = !keys.send_phase;
            keys.send_count = 0;
            keys.send_since = now;
        }
    }

    /// Installs keys after the handshake.
    pub(crate) fn set_keys(&mut self, keys: Keys) {
        self.keys = Some(keys);
    }

    /// Marks the packet-0 frames the session sent in a handshake message as sent now
    /// (their loss timer starts with the keys).
    pub(crate) fn restart_handshake_packet_clock(&mut self, now: Instant) {
        if let Some(p) = self.sent.get_mut(&0) {
            p.time = now;
        }
    }

    /// Whether an `Ordered` message is held (test and metrics aid).
    #[allow(dead_code)]
    pub(crate) fn held_messages(&self) -> usize {
        self.in_channels.values().map(InChannel::held_len).sum()
    }
}

/// The frame for a message (with INIT while the channel's INIT is unacknowledged).
fn message_frame<'m>(m: &'m OutMessage, ch: &'m OutChannel, explicit_len: bool) -> MessageFrame<'m> {
    MessageFrame {
        init: (!ch.init_acked)
            .then_some(wire::Init { transport_id: 0, protocol: &ch.protocol }),
        protocol_int: ch.int,
        ordered: m.delivery == Delivery::Ordered,
        seq: m.seq.map(|s| ch.truncate(s)),
        kind: m.kind.wire(),
        payload: &m.payload,
        explicit_len,
    }
}

fn fail_message(ctx: &mut Ctx<'_>, m: &OutMessage, err: SendError) {
    let Some(id) = m.id else { return };
    match m.kind {
        OutKind::Request(_) => ctx.events.push_back(Event::Response { id, result: Err(err) }),
        _ => ctx.events.push_back(Event::SendComplete { id, result: Err(err) }),
    }
}

/// Bytes of a message frame's header in the worst case for `protocol` (INIT, 4-byte
/// sequence number, largest request id, 3-byte length).
pub(crate) fn worst_frame_overhead(protocol: &str, payload_len: usize) -> usize {
    let f = MessageFrame {
        init: Some(wire::Init { transport_id: 0, protocol }),
        protocol_int: u16::MAX,
        ordered: false,
        seq: Some(wire::TruncatedSeq { value: u32::MAX, len: 4 }),
        kind: wire::MessageKind::Request(u64::from(u32::MAX) * 16),
        payload: &[],
        explicit_len: true,
    };
    f.header_len() + wire::varint_len(payload_len as u64)
}
