//! The receive path of a session: decryption with key phases, acknowledgement
//! bookkeeping, frame processing, delivery to handlers (once, in order where asked),
//! reassembly of fragmented messages, RESET handling.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use super::*;

/// Identifies a message being reassembled within its channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum PartialKey {
    Seq(u64),
    Unreliable(u64),
}

/// A message being reassembled.
#[derive(Debug)]
pub(crate) struct Partial {
    buf: Vec<u8>,
    /// Offsets (and lengths) of the fragments received.
    pieces: BTreeMap<u64, u64>,
    got: u64,
    deadline: Instant,
    /// Reliable partials live while fragments keep coming; unreliable ones have a fixed
    /// deadline and are dropped whole if incomplete.
    progress_extends: bool,
    timeout: Duration,
}

/// What [`Session::check_frames`] learned about a packet's frames.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FrameSummary {
    /// Some frame asks for an acknowledgement.
    pub(crate) eliciting: bool,
    /// The packet carries RESET frames.
    resets: bool,
    /// The packet carries SACK frames.
    sacks: bool,
}

impl Session {
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

    /// Validates the frames of an authenticated packet without acting on them, and notes
    /// what [`process_frames`](Self::process_frames) needs to know about them.
    pub(crate) fn check_frames(plain: &[u8]) -> Result<FrameSummary, wire::WireError> {
        let mut sum = FrameSummary::default();
        for f in Frames::new(plain) {
            let f = f?;
            sum.eliciting |= f.is_ack_eliciting();
            sum.resets |= matches!(f, Frame::Reset { .. });
            sum.sacks |= matches!(f, Frame::Sack(_));
        }
        Ok(sum)
    }

    /// Acts on the frames of an authenticated packet, checked by
    /// [`check_frames`](Self::check_frames) into `sum`.
    pub(crate) fn process_frames(&mut self, now: Instant, ctx: &mut Ctx<'_>, pn: u64, plain: &[u8], sum: FrameSummary) {
        // RESETs first (they fail the refused messages), then acknowledgements (the packet
        // that carried a refused message is acknowledged too), then the rest. Passes over
        // frame kinds the packet does not carry are skipped (most data packets have none).
        if sum.resets {
            for frame in Frames::new(plain) {
                if let Ok(Frame::Reset { protocol_int, code, seq }) = frame {
                    self.on_reset(ctx, protocol_int, code, seq);
                }
            }
        }
        if sum.sacks {
            for frame in Frames::new(plain) {
                if let Ok(Frame::Sack(sack)) = frame {
                    self.on_sack(now, ctx, &sack);
                }
            }
        }
        for frame in Frames::new(plain) {
            let Ok(frame) = frame else { return };
            match frame {
                Frame::Padding(_) | Frame::Ping | Frame::Ack { .. } | Frame::Race { .. } | Frame::Sack(_) | Frame::Reset { .. } => {}
                Frame::Close { reason, .. } => {
                    self.closed_by_peer = Some(reason.to_owned());
                }
                Frame::Message(m) => {
                    if let Err(reason) = self.on_message(ctx, pn, &m) {
                        ctx.stats.drop_packet(reason);
                    }
                }
                Frame::Fragment(f) => {
                    if let Err(reason) = self.on_fragment(now, ctx, pn, &f) {
                        ctx.stats.drop_packet(reason);
                    }
                }
            }
        }
    }

    /// Resolves a message frame's channel and decides whether to go on: `None` when the
    /// frame is answered already (a duplicate is only acknowledged; no handler → RESET;
    /// unknown int → RESET), else the protocol and the expanded sequence number.
    fn admit(
        &mut self,
        ctx: &mut Ctx<'_>,
        pn: u64,
        m: &MessageFrame<'_>,
    ) -> Result<Option<(Arc<str>, Option<u64>)>, DropReason> {
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
                return Ok(None);
            }
        };
        let is_response =
            matches!(m.kind, wire::MessageKind::Response(_) | wire::MessageKind::ErrorResponse(_));
        let Some(ch) = self.in_channels.get_mut(&int) else { return Ok(None) };
        let seq = m.seq.map(|t| ch.expand(t, pn));
        if let Some(s) = seq {
            ch.note(s, pn);
            match ch.accept(s, m.ordered) {
                // A retransmission of something already delivered is only acknowledged,
                // even if the handler has gone since.
                Accept::Duplicate => return Ok(None),
                Accept::Refused => {
                    self.control.push_back(Control::Reset(int, ResetCode::NO_HANDLER, seq));
                    return Ok(None);
                }
                _ => {}
            }
        }
        if !is_response && !ctx.protocols.contains(&protocol) {
            // Refused, not delivered: a retransmission is answered with RESET again.
            if let Some(s) = seq {
                ch.refuse(s);
            }
            self.control.push_back(Control::Reset(int, ResetCode::NO_HANDLER, seq));
            return Ok(None);
        }
        Ok(Some((protocol, seq)))
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, pn: u64, m: &MessageFrame<'_>) -> Result<(), DropReason> {
        let Some((protocol, seq)) = self.admit(ctx, pn, m)? else { return Ok(()) };
        let payload = Bytes::copy_from_slice(m.payload);
        self.accept(ctx, m.protocol_int, protocol, seq, m.ordered, m.kind, payload)
    }

    /// Delivers a whole message once (holding an early `Ordered` one).
    #[allow(clippy::too_many_arguments)]
    fn accept(
        &mut self,
        ctx: &mut Ctx<'_>,
        int: u16,
        protocol: Arc<str>,
        seq: Option<u64>,
        ordered: bool,
        kind: wire::MessageKind,
        payload: Bytes,
    ) -> Result<(), DropReason> {
        let Some(seq) = seq else {
            self.deliver(ctx, protocol, kind, payload);
            return Ok(());
        };
        let Some(ch) = self.in_channels.get_mut(&int) else { return Ok(()) };
        match ch.accept(seq, ordered) {
            Accept::Duplicate | Accept::Refused => Ok(()),
            Accept::OutOfWindow => Err(DropReason::ProtocolViolation),
            Accept::Held => {
                ch.hold(seq, HeldMsg { payload, kind });
                Ok(())
            }
            Accept::Deliver => {
                let released = ch.delivered(seq);
                self.deliver(ctx, protocol.clone(), kind, payload);
                for h in released {
                    self.deliver(ctx, protocol.clone(), h.kind, h.payload);
                }
                Ok(())
            }
        }
    }

    /// One fragment: reassemble (within the memory bounds), deliver when complete.
    fn on_fragment(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        pn: u64,
        f: &wire::FragmentFrame<'_>,
    ) -> Result<(), DropReason> {
        let m = &f.message;
        let Some((protocol, seq)) = self.admit(ctx, pn, m)? else { return Ok(()) };
        let key = (m.protocol_int, match seq {
            Some(s) => PartialKey::Seq(s),
            None => PartialKey::Unreliable(f.unreliable_id),
        });
        let total = f.total_len;
        if !self.reassembly.contains_key(&key) {
            let limit = if seq.is_some() {
                ctx.config.max_message_size
            } else {
                ctx.config.max_unreliable_message_size
            };
            if total > limit as u64 {
                return Err(DropReason::ProtocolViolation);
            }
            let session_limit = ctx.config.max_reassembly_per_session.max(ctx.config.max_message_size) as u64;
            if self.reassembly_bytes + total > session_limit
                || *ctx.reassembly_total + total > ctx.config.max_reassembly_total as u64
            {
                return Err(DropReason::ReassemblyLimit);
            }
            let timeout = if seq.is_some() {
                ctx.config.reassembly_timeout
            } else {
                ctx.config.unreliable_reassembly_timeout
            };
            self.reassembly_bytes += total;
            *ctx.reassembly_total += total;
            self.reassembly.insert(key, Partial {
                buf: vec![0; total as usize],
                pieces: BTreeMap::new(),
                got: 0,
                deadline: now + timeout,
                progress_extends: seq.is_some(),
                timeout,
            });
        }
        let Some(p) = self.reassembly.get_mut(&key) else { return Ok(()) };
        if p.buf.len() as u64 != total {
            return Err(DropReason::ProtocolViolation);
        }
        let off = f.offset as usize;
        if p.pieces.contains_key(&f.offset) {
            return Ok(()); // a retransmitted fragment
        }
        let Some(dst) = p.buf.get_mut(off..off + m.payload.len()) else {
            return Err(DropReason::ProtocolViolation);
        };
        dst.copy_from_slice(m.payload);
        p.pieces.insert(f.offset, m.payload.len() as u64);
        p.got += m.payload.len() as u64;
        if p.progress_extends {
            p.deadline = now + p.timeout;
        }
        if p.got < total {
            return Ok(());
        }
        let Some(done) = self.reassembly.remove(&key) else { return Ok(()) };
        self.reassembly_bytes -= total;
        *ctx.reassembly_total -= total;
        self.accept(ctx, m.protocol_int, protocol, seq, m.ordered, m.kind, Bytes::from(done.buf))
    }

    /// Drops partial messages past their deadline; returns the earliest remaining one.
    pub(crate) fn expire_reassembly(&mut self, now: Instant, ctx: &mut Ctx<'_>) {
        let before = self.reassembly_bytes;
        self.reassembly.retain(|_, p| p.deadline > now);
        let kept: u64 = self.reassembly.values().map(|p| p.buf.len() as u64).sum();
        self.reassembly_bytes = kept;
        *ctx.reassembly_total -= before - kept;
    }

    pub(crate) fn reassembly_deadline(&self) -> Option<Instant> {
        self.reassembly.values().map(|p| p.deadline).min()
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
                let units = self.messages.get(&k).and_then(|m| m.frag.as_ref()).map_or(1, |f| f.count);
                for i in 0..units {
                    self.requeue(k, i);
                }
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
        if let Some(m) = self.take_message(key) {
            self.unqueue(key);
            if let Some(ch) = self.out_channels.get_mut(&protocol) {
                ch.acked(seq);
            }
            if let OutKind::Request(rid) = m.kind {
                self.pending_requests.remove(&rid);
            }
            fail_message(ctx, &m, SendError::UnsupportedProtocol(protocol.to_string()));
        }
    }

}
