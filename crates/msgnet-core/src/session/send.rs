//! The send path of a session: choosing frames for a packet (RESETs, SACK, PING,
//! messages and fragments, coalesced), sealing, rekeying.

use super::*;

impl Session {
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
        self.write_frames_gated(now, ctx, out, limit, pn, early_only, force_ack, true)
    }

    /// [`Session::write_frames`], with `allow_payload` false when congestion control
    /// holds back everything but acknowledgements and RESETs.
    #[allow(clippy::too_many_arguments)]
    fn write_frames_gated(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        out: &mut Vec<u8>,
        limit: usize,
        pn: u64,
        early_only: bool,
        force_ack: bool,
        allow_payload: bool,
    ) -> bool {
        let start = out.len();
        let room = |out: &Vec<u8>| limit.saturating_sub(out.len() - start);
        let mut sent = SentPacket {
            time: now,
            ack_eliciting: false,
            messages: Vec::new(),
            inits: Vec::new(),
            ping: false,
            size: 0,
            probe: None,
        };
        while let Some(c) = self.control.front().cloned() {
            let Control::Reset(int, code, seq) = c;
            let f = Frame::Reset { protocol_int: int, code, seq };
            if f.encoded_len() > room(out) {
                break;
            }
            f.encode(out);
            self.control.pop_front();
        }
        let other = (allow_payload && (!self.queue.is_empty() || self.ping_pending)) || out.len() > start;
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
        if allow_payload && self.ping_pending && room(out) >= 1 {
            Frame::Ping.encode(out);
            self.ping_pending = false;
            sent.ping = true;
            sent.ack_eliciting = true;
        }
        let mut last: Option<Planned> = None;
        let mut unreliable_done: Vec<u64> = Vec::new();
        while let Some(&(key, frag)) = self.queue.front() {
            if !allow_payload || (last.is_some() && !ctx.config.coalesce) {
                break;
            }
            let Some(m) = self.messages.get(&key) else {
                self.queue.pop_front();
                self.queued.remove(&(key, frag));
                continue;
            };
            // Fragmented messages never ride in 0-RTT.
            if early_only && (!m.early_data || m.frag.is_some()) {
                break;
            }
            let Some(ch) = self.out_channels.get_mut(&m.protocol) else {
                self.queue.pop_front();
                self.queued.remove(&(key, frag));
                continue;
            };
            // Worst-case room check before committing the number's encoding.
            let probe = wire::TruncatedSeq { value: 0, len: 4 };
            let probe_len = match &m.frag {
                None => message_frame(m, ch, m.seq.map(|_| probe), true).encoded_len(),
                Some(f) => {
                    let r = f.range(frag, m.payload.len());
                    wire::FragmentFrame {
                        total_len: m.payload.len() as u64,
                        offset: r.start as u64,
                        unreliable_id: f.unreliable_id,
                        message: MessageFrame {
                            payload: m.payload.get(r).unwrap_or_default(),
                            ..message_frame(m, ch, m.seq.map(|_| probe), true)
                        },
                    }
                    .encoded_len()
                }
            };
            if probe_len > room(out) {
                break;
            }
            let seq_t = m.seq.map(|s| ch.on_transmit(s));
            let ch = &*ch;
            let init_int = (!ch.init_acked).then_some(ch.int);
            let start_at = out.len();
            match &m.frag {
                None => {
                    let frame = message_frame(m, ch, seq_t, true);
                    frame.encode(out);
                    last = Some(Planned { key, init_int, start: start_at, seq: seq_t });
                }
                Some(f) => {
                    let mut message = message_frame(m, ch, seq_t, true);
                    message.payload = m.payload.get(f.range(frag, m.payload.len())).unwrap_or_default();
                    let frame = wire::FragmentFrame {
                        total_len: m.payload.len() as u64,
                        offset: f.range(frag, m.payload.len()).start as u64,
                        unreliable_id: f.unreliable_id,
                        message,
                    };
                    frame.encode(out);
                    last = None;
                }
            }
            self.queue.pop_front();
            self.queued.remove(&(key, frag));
            sent.ack_eliciting = true;
            if m.delivery == Delivery::Unreliable {
                if let Some(int) = init_int {
                    if !sent.inits.contains(&int) {
                        sent.inits.push(int);
                    }
                }
                let done = match self.messages.get_mut(&key).and_then(|m| m.frag.as_mut()) {
                    Some(f) => {
                        f.sent_count += 1;
                        f.sent_count >= f.count
                    }
                    None => true,
                };
                if done {
                    unreliable_done.push(key);
                }
            } else {
                sent.messages.push((key, frag, init_int));
            }
        }
        // The last frame carries no explicit length when it is a message frame.
        if let Some(p) = last {
            if let Some(m) = self.messages.get(&p.key) {
                if let Some(ch) = self.out_channels.get(&m.protocol) {
                    let mut frame = message_frame(m, ch, p.seq, false);
                    frame.init =
                        p.init_int.map(|_| wire::Init { transport_id: 0, protocol: &ch.protocol });
                    out.truncate(p.start);
                    frame.encode(out);
                }
            }
        }
        // Unreliable messages are done once (all their fragments are) in a packet.
        for key in unreliable_done {
            if let Some(m) = self.take_message(key) {
                self.unqueue(key);
                if let (Some(id), false) = (m.id, matches!(m.kind, OutKind::Request(_))) {
                    ctx.events.push_back(Event::SendComplete { id, result: Ok(()) });
                }
            }
        }
        if out.len() == start {
            return false;
        }
        if sent.ack_eliciting || !sent.messages.is_empty() {
            self.sent.insert(pn, sent); // size 0: only data packets count for congestion
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
        // Congestion control and pacing gate everything ack-eliciting but a pending PING
        // (a timeout's probe or a keepalive), whose packet may leave at once and take data
        // along (RFC 9002 §7.5: probes are not blocked by congestion control).
        let mut allow = true;
        if !self.queue.is_empty() && !self.ping_pending {
            let size = self.mtu;
            if !self.cc.window_allows(size) {
                allow = false;
            } else if let Some(t) = self.cc.pacing_delay(now, self.rtt.get(), size) {
                allow = false;
                self.pacing_until = Some(t);
            } else {
                self.pacing_until = None;
            }
        }
        self.pmtu.start(self.mtu, ctx.config.max_udp_payload_probe.max(self.mtu));
        let probe = self
            .pmtu
            .next()
            .filter(|size| self.confirmed && self.cc.window_allows(*size));
        let payload = allow && self.has_payload_to_send();
        if !payload && probe.is_none() && self.control.is_empty() && !self.ack_due(now, ctx.config) {
            return None;
        }
        self.maybe_rekey(now, ctx.config);
        if let Some(size) = probe {
            if let Some(n) = self.build_probe(now, ctx, buf, size) {
                return Some(n);
            }
        }
        let pn = self.next_pn;
        let hlen = self.write_header(buf)?;
        let limit = self.mtu.saturating_sub(hlen + wire::TAG_LEN);
        if !self.write_frames_gated(now, ctx, buf, limit, pn, false, false, allow) {
            buf.clear();
            return None;
        }
        let n = self.seal_and_count(now, buf, hlen)?;
        if let Some(p) = self.sent.get_mut(&pn) {
            p.size = n;
            self.cc.on_sent(n);
        }
        Some(n)
    }

    /// Writes the data packet header for the next packet number into `buf` (cleared
    /// first); returns its length.
    fn write_header(&self, buf: &mut Vec<u8>) -> Option<usize> {
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
        Some(buf.len())
    }

    /// Seals `buf` (header of `hlen` bytes, then frames) with the next packet number and
    /// counts the packet as sent; returns its length.
    fn seal_and_count(&mut self, now: Instant, buf: &mut Vec<u8>, hlen: usize) -> Option<usize> {
        let pn = self.next_pn;
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
        let hlen = self.write_header(buf)?;
        buf.extend_from_slice(frames);
        self.seal_and_count(now, buf, hlen)
    }

    /// A path MTU probe: PING and PADDING, exactly `size` bytes of UDP payload.
    fn build_probe(&mut self, now: Instant, ctx: &mut Ctx<'_>, buf: &mut Vec<u8>, size: usize) -> Option<usize> {
        let mut frames = Vec::with_capacity(size);
        Frame::Ping.encode(&mut frames);
        let pn = self.next_pn;
        let pn_len = wire::encode_pn_len(pn, self.largest_acked);
        let overhead = 4 + pn_len + wire::TAG_LEN;
        frames.resize(size.checked_sub(overhead)?.max(1), 0);
        let n = self.seal_frames(now, ctx, &frames, buf)?;
        self.sent.insert(
            pn,
            SentPacket {
                time: now,
                ack_eliciting: true,
                messages: Vec::new(),
                inits: Vec::new(),
                ping: false,
                size: n,
                probe: Some(size),
            },
        );
        self.cc.on_sent(n);
        self.pmtu.sent(size);
        Some(n)
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

}

/// The frame for a message (with INIT while the channel's INIT is unacknowledged).
fn message_frame<'m>(
    m: &'m OutMessage,
    ch: &'m OutChannel,
    seq: Option<wire::TruncatedSeq>,
    explicit_len: bool,
) -> MessageFrame<'m> {
    MessageFrame {
        init: (!ch.init_acked).then_some(wire::Init { transport_id: 0, protocol: &ch.protocol }),
        protocol_int: ch.int,
        ordered: m.delivery == Delivery::Ordered,
        seq,
        kind: m.kind.wire(),
        payload: &m.payload,
        explicit_len,
    }
}

