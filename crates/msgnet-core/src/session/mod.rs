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

use crate::cc::Congestion;
use crate::channel::{Accept, FragInfo, InChannel, OutChannel, OutKind, OutMessage};
use crate::crypto::PacketKey;
use crate::ranges::RangeSet;
use crate::replay::ReplayWindow;
use crate::rtt::RttEstimator;
use crate::wire::{self, Frame, Frames, MessageFrame, ResetCode, Sack};

mod recv;
mod send;
use crate::{
    Delivery, DropReason, EndpointConfig, EndpointStats, Event, InboundRequest, IncomingMessage,
    MessageId, SendError, SessionId,
};

/// Longest retransmission timeout, however many timeouts in a row.
const MAX_RTO: Duration = Duration::from_secs(60);

/// Path MTU search (DPLPMTUD-style, RFC 8899): binary search between the confirmed size
/// and the configured ceiling, one probe in flight, three tries per size.
#[derive(Debug, Default)]
struct Pmtu {
    lo: usize,
    hi: usize,
    in_flight: Option<usize>,
    tries: u32,
    started: bool,
    /// The ceiling itself was probed (it is tried first: most paths carry it).
    top_tried: bool,
}

impl Pmtu {
    fn start(&mut self, lo: usize, hi: usize) {
        if !self.started {
            *self = Pmtu {
                lo,
                hi,
                in_flight: None,
                tries: 0,
                started: true,
                top_tried: false,
            };
        }
    }

    /// The next size to probe, if the search goes on and no probe is out.
    fn next(&self) -> Option<usize> {
        if !self.started || self.in_flight.is_some() || self.hi <= self.lo {
            return None;
        }
        if !self.top_tried {
            return Some(self.hi);
        }
        if self.hi <= self.lo + 16 {
            return None;
        }
        Some((self.lo + self.hi).div_ceil(2).max(self.lo + 1))
    }

    fn sent(&mut self, size: usize) {
        self.in_flight = Some(size);
    }

    fn acked(&mut self, size: usize) {
        self.lo = self.lo.max(size);
        self.in_flight = None;
        self.tries = 0;
    }

    fn lost(&mut self, size: usize) {
        self.in_flight = None;
        self.tries += 1;
        if self.tries >= 3 {
            self.top_tried = true;
            self.hi = size.saturating_sub(1);
            self.tries = 0;
        }
    }
}

/// Shared endpoint state a session may touch while it works.
pub(crate) struct Ctx<'a> {
    pub(crate) config: &'a EndpointConfig,
    pub(crate) events: &'a mut VecDeque<Event>,
    pub(crate) stats: &'a mut EndpointStats,
    pub(crate) protocols: &'a HashSet<Arc<str>>,
    /// Reassembly bytes reserved across the endpoint.
    pub(crate) reassembly_total: &'a mut u64,
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
    /// Set on a path MTU probe: its size.
    probe: Option<usize>,
    /// (message key, fragment index, protocol int whose INIT this packet carried).
    messages: Vec<(u64, u32, Option<u16>)>,
    /// Bytes of the packet (for congestion control).
    size: usize,
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
    seq: Option<wire::TruncatedSeq>,
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
    cc: Congestion,
    /// Path MTU: the confirmed UDP payload size, and the search state.
    pub(crate) mtu: usize,
    pmtu: Pmtu,
    /// Pacing holds payload until this instant.
    pacing_until: Option<Instant>,
    out_channels: HashMap<Arc<str>, OutChannel>,
    out_by_int: HashMap<u16, Arc<str>>,
    next_int: u16,
    in_channels: HashMap<u16, InChannel<HeldMsg>>,
    messages: BTreeMap<u64, OutMessage>,
    queued: HashSet<(u64, u32)>,
    next_msg_key: u64,
    queue: VecDeque<(u64, u32)>,
    next_unreliable_id: u64,
    /// Sum of the payload sizes in `messages`.
    buffered: usize,
    /// Partially received fragmented messages.
    reassembly: HashMap<(u16, recv::PartialKey), recv::Partial>,
    /// Bytes reserved by `reassembly`.
    pub(crate) reassembly_bytes: u64,
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
            cc: Congestion::new(1200),
            mtu: 1200,
            pmtu: Pmtu::default(),
            pacing_until: None,
            out_channels: HashMap::new(),
            out_by_int: HashMap::new(),
            next_int: 1,
            in_channels: HashMap::new(),
            messages: BTreeMap::new(),
            queued: HashSet::new(),
            next_msg_key: 0,
            queue: VecDeque::new(),
            next_unreliable_id: 1,
            buffered: 0,
            reassembly: HashMap::new(),
            reassembly_bytes: 0,
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

    /// Frees the storage of the containers that are empty: a `BTreeMap` keeps its last
    /// node (over a kilobyte here) and a `HashMap` or `VecDeque` its table when emptied,
    /// and most sessions sit idle between exchanges. Called after every input that
    /// touched the session; an empty container costs nothing to check.
    pub(crate) fn release_empty(&mut self) {
        if self.sent.is_empty() {
            self.sent = BTreeMap::new();
        }
        if self.messages.is_empty() {
            self.messages = BTreeMap::new();
        }
        fn shrink_map<K: Eq + std::hash::Hash, V>(m: &mut HashMap<K, V>) {
            if m.is_empty() && m.capacity() > 0 {
                m.shrink_to_fit();
            }
        }
        fn shrink_set<K: Eq + std::hash::Hash>(m: &mut HashSet<K>) {
            if m.is_empty() && m.capacity() > 0 {
                m.shrink_to_fit();
            }
        }
        fn shrink_deque<T>(q: &mut VecDeque<T>) {
            if q.is_empty() && q.capacity() > 0 {
                *q = VecDeque::new();
            }
        }
        shrink_set(&mut self.queued);
        shrink_set(&mut self.inbound_requests);
        shrink_map(&mut self.pending_requests);
        shrink_map(&mut self.reassembly);
        shrink_deque(&mut self.queue);
        shrink_deque(&mut self.control);
    }

    /// Ack-eliciting packets received since the last acknowledgement went out.
    pub(crate) fn acks_owed(&self) -> u32 {
        self.eliciting_since_ack
    }

    pub(crate) fn cwnd(&self) -> u64 {
        self.cc.window()
    }

    pub(crate) fn bytes_in_flight(&self) -> u64 {
        self.cc.in_flight()
    }

    pub(crate) fn srtt(&self) -> Option<Duration> {
        self.rtt.srtt()
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.messages.len()
    }

    fn take_message(&mut self, key: u64) -> Option<OutMessage> {
        let m = self.messages.remove(&key)?;
        self.buffered = self.buffered.saturating_sub(m.payload.len());
        Some(m)
    }

    /// Payload bytes of the messages not yet acknowledged.
    pub(crate) fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    // ----- commands -----------------------------------------------------------------

    /// Queues a message. Reliable messages get the channel's next sequence number now,
    /// so `Ordered` order is the order of this call. `frag_size` is (the largest payload
    /// that travels as one message frame, the payload per fragment otherwise).
    pub(crate) fn enqueue(
        &mut self,
        id: Option<MessageId>,
        protocol: Arc<str>,
        kind: OutKind,
        delivery: Delivery,
        payload: Bytes,
        early_data: bool,
        deadline: Instant,
        frag_size: (usize, usize),
    ) -> Result<(), SendError> {
        if !self.out_channels.contains_key(&protocol) {
            if self.next_int == u16::MAX {
                return Err(SendError::Backpressure);
            }
            let int = self.next_int;
            self.next_int += 1;
            self.out_by_int.insert(int, protocol.clone());
            self.out_channels
                .insert(protocol.clone(), OutChannel::new(protocol.clone(), int));
        }
        let seq = match delivery {
            Delivery::Unreliable => None,
            _ => self
                .out_channels
                .get_mut(&protocol)
                .map(OutChannel::next_seq),
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
        let frag = (payload.len() > frag_size.0).then(|| {
            let id = if seq.is_none() {
                self.next_unreliable_id += 1;
                self.next_unreliable_id - 1
            } else {
                0
            };
            FragInfo::new(payload.len(), frag_size.1, id)
        });
        let units = frag.as_ref().map_or(1, |f| f.count);
        self.buffered += payload.len();
        self.messages.insert(
            key,
            OutMessage {
                id,
                protocol,
                kind,
                delivery,
                seq,
                payload,
                early_data,
                deadline,
                frag,
            },
        );
        for i in 0..units {
            self.queue.push_back((key, i));
            self.queued.insert((key, i));
        }
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
        self.buffered = 0;
        for (_, m) in std::mem::take(&mut self.messages) {
            fail_message(ctx, &m, err.clone());
        }
        self.queue.clear();
        self.queued.clear();
        let mut pending: Vec<(u64, MessageId)> = self.pending_requests.drain().collect();
        pending.sort();
        for (_, id) in pending {
            ctx.events.push_back(Event::Response {
                id,
                result: Err(err.clone()),
            });
        }
    }

    fn on_sack(&mut self, now: Instant, ctx: &mut Ctx<'_>, sack: &Sack) {
        let Some(largest) = sack.largest() else {
            return;
        };
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

        let mut rtt_sample = None;
        if let Some((_, p)) = newly.iter().find(|(pn, _)| *pn == largest) {
            if p.ack_eliciting {
                let delay = Duration::from_micros(sack.delay_us).min(ctx.config.max_ack_delay);
                let rtt = now.saturating_duration_since(p.time);
                self.rtt.update(rtt, delay);
                rtt_sample = Some(rtt);
            }
        }
        self.rto_backoff = 0;
        self.confirmed = true;
        let newest = newly.iter().map(|(pn, _)| *pn).max().unwrap_or(largest);
        self.cc.on_ack_received(newest, rtt_sample, self.next_pn);
        for (_, p) in &newly {
            if p.size > 0 {
                self.cc.on_ack(p.time, p.size);
            }
            if let Some(size) = p.probe {
                self.pmtu.acked(size);
                self.mtu = self.mtu.max(size);
            }
        }
        for (_, p) in newly {
            let inits = p
                .messages
                .iter()
                .filter_map(|(_, _, i)| *i)
                .chain(p.inits.iter().copied());
            for int in inits {
                if let Some(ch) = self
                    .out_by_int
                    .get(&int)
                    .and_then(|pr| self.out_channels.get_mut(pr))
                {
                    ch.init_acked = true;
                }
            }
            for (key, frag, _) in p.messages {
                self.unit_acked(ctx, key, frag);
            }
        }
        self.detect_loss(now, ctx);
    }

    /// One unit (a whole message, or one fragment) was acknowledged.
    fn unit_acked(&mut self, ctx: &mut Ctx<'_>, key: u64, frag: u32) {
        let Some(m) = self.messages.get_mut(&key) else {
            return;
        };
        if let Some(f) = m.frag.as_mut() {
            match f.acked.get_mut(frag as usize) {
                Some(a) if !*a => {
                    *a = true;
                    f.acked_count += 1;
                }
                _ => return,
            }
            if self.queued.remove(&(key, frag)) {
                self.queue.retain(|u| *u != (key, frag));
            }
            if f.acked_count < f.count {
                return;
            }
        }
        self.message_acked(ctx, key);
    }

    fn message_acked(&mut self, ctx: &mut Ctx<'_>, key: u64) {
        let Some(m) = self.take_message(key) else {
            return;
        };
        self.unqueue(key);
        if let (Some(seq), Some(ch)) = (m.seq, self.out_channels.get_mut(&m.protocol)) {
            ch.acked(seq);
        }
        match (m.kind, m.id) {
            (OutKind::Request(_), _) | (_, None) => {}
            (_, Some(id)) => ctx
                .events
                .push_back(Event::SendComplete { id, result: Ok(()) }),
        }
    }

    /// Removes every queued unit of message `key`.
    fn unqueue(&mut self, key: u64) {
        let before = self.queued.len();
        self.queued.retain(|(k, _)| *k != key);
        if self.queued.len() != before {
            self.queue.retain(|(k, _)| *k != key);
        }
    }

    fn requeue(&mut self, key: u64, frag: u32) {
        let Some(m) = self.messages.get(&key) else {
            return;
        };
        if m.frag
            .as_ref()
            .is_some_and(|f| f.acked.get(frag as usize) == Some(&true))
        {
            return;
        }
        if self.queued.insert((key, frag)) {
            self.queue.push_front((key, frag));
        }
    }

    /// Declares lost the packets sent well before a later acknowledged one.
    fn detect_loss(&mut self, now: Instant, ctx: &mut Ctx<'_>) {
        let Some(largest) = self.largest_acked else {
            return;
        };
        let delay = self.rtt.loss_delay();
        let lost: Vec<u64> = self
            .sent
            .range(..largest)
            .filter(|(pn, p)| **pn + 3 <= largest || p.time + delay <= now)
            .map(|(pn, _)| *pn)
            .collect();
        for pn in lost {
            self.packet_lost(now, ctx, pn);
        }
    }

    fn packet_lost(&mut self, now: Instant, ctx: &mut Ctx<'_>, pn: u64) {
        let Some(p) = self.sent.remove(&pn) else {
            return;
        };
        if let Some(size) = p.probe {
            // A lost probe says the path is narrower, not congested (RFC 8899 §4.4).
            self.cc.forget(p.size);
            self.pmtu.lost(size);
            return;
        }
        if p.size > 0 {
            self.cc.on_loss(now, p.time, p.size);
        }
        // Counted only when something is sent again (unreliable content is not).
        if !p.messages.is_empty() || p.ping {
            ctx.stats.retransmissions += 1;
        }
        for (key, frag, _) in p.messages.into_iter().rev() {
            self.requeue(key, frag);
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
        let rto =
            self.rtt.rto(ctx_config.max_ack_delay) * 2u32.saturating_pow(self.rto_backoff.min(10));
        Some(oldest.time + rto.min(MAX_RTO))
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
        consider(self.messages.values().map(|m| m.deadline).min());
        consider(self.reassembly_deadline());
        if !self.queue.is_empty() || self.ping_pending {
            consider(self.pacing_until);
        }
        if self.established() {
            consider(Some(self.last_tx + config.keepalive_interval));
            consider(Some(self.last_rx + config.idle_timeout));
        }
        t
    }

    /// Runs timers. Returns `Some(reason)` when the session must close.
    pub(crate) fn on_timeout(&mut self, now: Instant, ctx: &mut Ctx<'_>) -> Option<SendError> {
        self.expire_reassembly(now, ctx);
        // Unreliable messages past their deadline are dropped; a reliable one past its
        // deadline means the peer is unresponsive: the session closes.
        let expired: Vec<(u64, bool)> = self
            .messages
            .iter()
            .filter(|(_, m)| m.deadline <= now)
            .map(|(k, m)| (*k, m.delivery == Delivery::Unreliable))
            .collect();
        for (key, unreliable) in expired {
            if !unreliable {
                return Some(SendError::TimedOut);
            }
            if let Some(m) = self.take_message(key) {
                self.unqueue(key);
                fail_message(ctx, &m, SendError::TimedOut);
            }
        }
        if self.established() && now >= self.last_rx + ctx.config.idle_timeout {
            return Some(SendError::SessionClosed("idle timeout".into()));
        }
        if let Some(d) = self.rto_deadline(ctx.config) {
            if d <= now {
                // RFC 9002 §6.2: the first two timeouts only probe (a PING, which
                // congestion control does not hold back) and declare nothing lost:
                // acknowledgements that were merely late (a loaded host) then cost
                // nothing, and the probe's acknowledgement lets loss detection find what
                // was really lost. The third in a row (four timeout periods without an
                // acknowledgement: persistent congestion, RFC 9002 §7.6) presumes
                // everything old lost and collapses the window.
                self.ping_pending = true;
                if self.rto_backoff >= 2 {
                    let rto = self.rtt.rto(ctx.config.max_ack_delay);
                    let lost: Vec<u64> = self
                        .sent
                        .iter()
                        .filter(|(_, p)| p.time + rto <= now)
                        .map(|(pn, _)| *pn)
                        .collect();
                    let any = !lost.is_empty();
                    for pn in lost {
                        self.packet_lost(now, ctx, pn);
                    }
                    if any {
                        self.cc.on_timeout(now);
                    }
                }
                self.rto_backoff += 1;
            }
        }
        if self.established() && now >= self.last_tx + ctx.config.keepalive_interval {
            self.ping_pending = true;
        }
        None
    }

    /// Installs keys after the handshake.
    pub(crate) fn set_keys(&mut self, keys: Keys) {
        self.keys = Some(keys);
    }

    /// Our last handshake message, which carried packet 0's frames, was sent now: installs
    /// the keys, counts the packet and starts packet 0's loss timer with the keys.
    pub(crate) fn handshake_sent(&mut self, keys: Keys, now: Instant) {
        self.set_keys(keys);
        if let Some(p) = self.sent.get_mut(&0) {
            p.time = now;
        }
        self.packets_sent += 1;
        self.last_tx = now;
    }

    /// Whether message units wait in the send queue.
    pub(crate) fn has_queued(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Whether an `Ordered` message is held (test and metrics aid).
    #[allow(dead_code)]
    pub(crate) fn held_messages(&self) -> usize {
        self.in_channels.values().map(InChannel::held_len).sum()
    }
}

fn fail_message(ctx: &mut Ctx<'_>, m: &OutMessage, err: SendError) {
    let Some(id) = m.id else { return };
    match m.kind {
        OutKind::Request(_) => ctx.events.push_back(Event::Response {
            id,
            result: Err(err),
        }),
        _ => ctx.events.push_back(Event::SendComplete {
            id,
            result: Err(err),
        }),
    }
}

/// A message frame header as large as `protocol` allows: INIT, the largest protocol int,
/// a 4-byte sequence number, a large request id, an explicit length.
fn worst_message_frame(protocol: &str) -> MessageFrame<'_> {
    MessageFrame {
        init: Some(wire::Init {
            transport_id: 0,
            protocol,
        }),
        protocol_int: u16::MAX,
        ordered: false,
        seq: Some(wire::TruncatedSeq {
            value: u32::MAX,
            len: 4,
        }),
        kind: wire::MessageKind::Request(u64::from(u32::MAX) * 16),
        payload: &[],
        explicit_len: true,
    }
}

/// Bytes of a FRAGMENT frame's header in the worst case for `protocol`.
pub(crate) fn worst_fragment_overhead(protocol: &str) -> usize {
    let f = wire::FragmentFrame {
        total_len: wire::MAX_FRAGMENTED_LEN,
        offset: wire::MAX_FRAGMENTED_LEN,
        unreliable_id: u64::from(u32::MAX) * 16,
        message: worst_message_frame(protocol),
    };
    f.header_len() + 3
}

/// Bytes of a message frame's header in the worst case for `protocol` (INIT, 4-byte
/// sequence number, large request id, the length of `payload_len`).
pub(crate) fn worst_frame_overhead(protocol: &str, payload_len: usize) -> usize {
    worst_message_frame(protocol).header_len() + wire::varint_len(payload_len as u64)
}
