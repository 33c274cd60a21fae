//! Handshake flows (the endpoint's half of session setup).
//!
//! - **IK** (the responder's `PeerId` is an ed25519 key, so its X25519 static key is
//!   derived from the id): Initiation carries the initiator's signed identity, a timestamp
//!   and the first messages (0-RTT); the Response carries the responder's replies. One
//!   round trip to a peer never met before. The responder then waits for the first data
//!   packet (which validates the initiator's address) before sending anything else.
//! - **XX** (any other key type): Initiation (`e`), Response (`e, ee, s, es` + the
//!   responder's identity), Finish (`s, se` + the initiator's identity, timestamp and the
//!   first messages). The responder keeps half-open state between Response and Finish.
//!
//! Retransmission: the initiator resends the *identical* Initiation (and Finish) on a
//! doubling timer. The responder recognises an identical Initiation by the hash of its
//! Noise message and answers from cache, so a lost Response never causes a second
//! session or a second delivery of 0-RTT messages. A *different* Initiation from the same
//! peer must carry a newer timestamp than the last one accepted (replay protection, as
//! WireGuard), and be within `handshake_freshness` of the responder's clock.
//!
//! Anti-amplification: before the address is validated, the responder sends at most as
//! many bytes as it received from it. Under a flood of Initiations (more than
//! `cookie_threshold_per_sec`, or a full half-open table) it answers with a stateless
//! cookie and creates nothing until an Initiation echoes a valid cookie.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::Rng;
use sha2::{Digest, Sha256};

use crate::crypto::{self, Handshake};
use crate::endpoint::{Endpoint, OwnedHandshake};
use crate::session::{Keys, Session};
use crate::wire::{self, HandshakePayload, Pattern};
use crate::{DropReason, Event, SendError};

/// Noise overhead of each message, in bytes (ephemeral 32, encrypted static 48, tag 16).
const IK1_OVERHEAD: usize = 32 + 48 + 16;
const IK2_OVERHEAD: usize = 32 + 16;
const XX2_OVERHEAD: usize = 32 + 48 + 16;
const XX3_OVERHEAD: usize = 48 + 16;

pub(crate) enum HsState {
    /// Initiator: waiting for the Response. `packet` is built lazily so that messages
    /// sent in the same instant ride together.
    InitiatorWait {
        hs: Box<Handshake>,
        packet: Option<Vec<u8>>,
        noise_start: usize,
        cookie: Option<[u8; 16]>,
        next_retry: Instant,
        retry: Duration,
        deadline: Instant,
    },
    /// Initiator (XX): Finish sent; resent until the responder answers.
    InitiatorFinish {
        packet: Vec<u8>,
        next_retry: Instant,
        retry: Duration,
        deadline: Instant,
    },
    /// Responder (IK): Initiation read; the Response waits briefly for replies to the
    /// requests it carried.
    ResponderHold {
        hs: Box<Handshake>,
        until: Instant,
        deadline: Instant,
    },
    /// Responder (IK): Response sent; waiting for the first data packet.
    ResponderWaitData {
        response: Vec<u8>,
        deadline: Instant,
    },
    /// Responder (XX): Response sent; waiting for Finish. No session exists yet.
    ResponderXx {
        hs: Box<Handshake>,
        response: Vec<u8>,
        remote_index: u32,
        amp_rx: u64,
        amp_tx: u64,
        deadline: Instant,
    },
}

impl HsState {
    fn is_responder(&self) -> bool {
        matches!(
            self,
            HsState::ResponderHold { .. }
                | HsState::ResponderWaitData { .. }
                | HsState::ResponderXx { .. }
        )
    }
}

fn seed(ep: &mut Endpoint) -> [u8; 32] {
    ep.rng.gen()
}

impl Endpoint {
    fn half_open(&self) -> usize {
        self.handshakes
            .values()
            .filter(|h| h.is_responder())
            .count()
    }

    /// Starts a handshake with `peer` at `addr`; returns the new session's index.
    pub(crate) fn start_handshake(
        &mut self,
        now: Instant,
        peer: libp2p_identity::PeerId,
        addr: SocketAddr,
    ) -> Result<u32, SendError> {
        if self.sessions.len() >= self.config.max_sessions {
            return Err(SendError::Unreachable("session table full".into()));
        }
        let s = seed(self);
        let (hs, pattern) = match crypto::x25519_static_of_peer(&peer) {
            Some(remote_static) => (
                Handshake::initiator_ik(&self.identity, &remote_static, s),
                "IK",
            ),
            None => (Handshake::initiator_xx(&self.identity, s), "XX"),
        };
        let hs = hs.map_err(|e| SendError::Unreachable(format!("handshake setup: {e}")))?;
        let idx = self.alloc_index();
        let id = self.new_session_id();
        self.insert_session(Session::new(id, idx, peer, addr, true, pattern, now));
        self.handshakes.insert(
            idx,
            HsState::InitiatorWait {
                hs: Box::new(hs),
                packet: None,
                noise_start: 0,
                cookie: None,
                next_retry: now + self.config.handshake_retry,
                retry: self.config.handshake_retry,
                deadline: now + self.config.handshake_timeout,
            },
        );
        self.mark_dirty(idx);
        Ok(idx)
    }

    fn next_timestamp(&mut self, now: Instant) -> u64 {
        let ts = self.wall_nanos(now).max(self.last_sent_ts + 1);
        self.last_sent_ts = ts;
        ts
    }

    /// Builds a pending handshake packet for session `idx`, if one is due. Returns
    /// whether a datagram was queued.
    pub(crate) fn handshake_transmit(&mut self, now: Instant, idx: u32) -> bool {
        match self.handshakes.get(&idx) {
            Some(HsState::InitiatorWait { packet: None, .. }) => self.build_initiation(now, idx),
            Some(HsState::ResponderHold { until, .. }) => {
                let ready = *until <= now
                    || self
                        .sessions
                        .get(&idx)
                        .is_some_and(|s| s.inbound_requests.is_empty());
                ready && self.build_ik_response(now, idx)
            }
            _ => false,
        }
    }

    fn build_initiation(&mut self, now: Instant, idx: u32) -> bool {
        let ts = self.next_timestamp(now);
        let identity = self.identity.identity_payload().to_vec();
        let pad_to = self.config.initiation_padding;
        let max = self.config.max_udp_payload;
        let Some(HsState::InitiatorWait {
            hs,
            packet,
            noise_start,
            cookie,
            ..
        }) = self.handshakes.get_mut(&idx)
        else {
            return false;
        };
        let (sessions, mut ctx) = (
            &mut self.sessions,
            crate::session::Ctx {
                config: &self.config,
                events: &mut self.events,
                stats: &mut self.stats,
                protocols: &self.protocols,
                reassembly_total: &mut self.reassembly_total,
            },
        );
        let Some(s) = sessions.get_mut(&idx) else {
            return false;
        };
        let mut out = Vec::with_capacity(max);
        wire::encode_initiation_header(
            &mut out,
            if s.pattern == "IK" {
                Pattern::IK
            } else {
                Pattern::XX
            },
            idx,
            cookie.as_ref(),
        );
        let header_len = out.len();
        let mut payload = Vec::new();
        if s.pattern == "IK" {
            // Identity, timestamp, then the first messages (0-RTT), padded at the front.
            let fixed = header_len
                + IK1_OVERHEAD
                + wire::varint_len(identity.len() as u64)
                + identity.len()
                + 8;
            let mut frames = Vec::new();
            s.write_frames(
                now,
                &mut ctx,
                &mut frames,
                max.saturating_sub(fixed),
                0,
                true,
                false,
            );
            let pad = pad_to.saturating_sub(fixed + frames.len());
            let mut padded = vec![0u8; pad];
            padded.extend_from_slice(&frames);
            HandshakePayload {
                identity: &identity,
                timestamp: ts,
                frames: &padded,
            }
            .encode(&mut payload);
        } else {
            payload = vec![0u8; pad_to.saturating_sub(header_len + 32)];
        }
        if hs.write_message(&payload, &mut out).is_err() {
            ctx.stats.drop_packet(DropReason::Handshake);
            return false;
        }
        *noise_start = header_len;
        *packet = Some(out.clone());
        let dst = s.remote;
        s.packets_sent += 1;
        s.last_tx = now;
        self.out.push_back((dst, out));
        true
    }

    fn build_ik_response(&mut self, now: Instant, idx: u32) -> bool {
        let Some(HsState::ResponderHold {
            mut hs, deadline, ..
        }) = self.handshakes.remove(&idx)
        else {
            return false;
        };
        let (sessions, mut ctx) = self.ctx();
        let Some(s) = sessions.get_mut(&idx) else {
            return false;
        };
        let mut out = Vec::new();
        wire::encode_response_header(&mut out, s.remote_index, idx);
        let budget = (s.amp_rx.saturating_sub(s.amp_tx) as usize).min(ctx.config.max_udp_payload);
        let fixed = out.len() + IK2_OVERHEAD + 1 + 8;
        let mut frames = Vec::new();
        s.write_frames(
            now,
            &mut ctx,
            &mut frames,
            budget.saturating_sub(fixed),
            0,
            false,
            true,
        );
        let mut payload = Vec::new();
        HandshakePayload {
            identity: &[],
            timestamp: 0,
            frames: &frames,
        }
        .encode(&mut payload);
        if hs.write_message(&payload, &mut out).is_err() {
            ctx.stats.drop_packet(DropReason::Handshake);
            return false;
        }
        let Ok(keys) = hs.into_keys() else {
            return false;
        };
        s.amp_tx += out.len() as u64;
        s.handshake_sent(Keys::new(keys.send, keys.recv, now), now);
        ctx.stats.handshakes_completed += 1;
        let (peer, sid, remote) = (s.peer, s.id, s.remote);
        self.events.push_back(Event::SessionUp {
            peer,
            session: sid,
            remote,
        });
        self.handshakes.insert(
            idx,
            HsState::ResponderWaitData {
                response: out.clone(),
                deadline,
            },
        );
        self.out.push_back((remote, out));
        true
    }

    pub(crate) fn handle_handshake_packet(
        &mut self,
        now: Instant,
        from: SocketAddr,
        p: OwnedHandshake,
        len: usize,
    ) {
        match p {
            OwnedHandshake::Initiation {
                pattern,
                sender,
                cookie,
                noise,
            } => self.on_initiation(now, from, pattern, sender, cookie, &noise, len),
            OwnedHandshake::Response {
                receiver,
                sender,
                noise,
            } => self.on_response(now, from, receiver, sender, &noise),
            OwnedHandshake::CookieReply { receiver, cookie } => self.on_cookie(receiver, cookie),
            OwnedHandshake::Finish { receiver, noise } => {
                self.on_finish(now, from, receiver, &noise, len)
            }
            OwnedHandshake::Other => self.stats.drop_packet(DropReason::Malformed),
        }
    }

    fn under_load(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.flood.0) >= Duration::from_secs(1) {
            self.flood = (now, 0);
        }
        self.flood.1 = self.flood.1.saturating_add(1);
        self.flood.1 > self.config.cookie_threshold_per_sec
            || self.half_open() >= self.config.max_half_open
    }

    #[allow(clippy::too_many_arguments)]
    fn on_initiation(
        &mut self,
        now: Instant,
        from: SocketAddr,
        pattern: Pattern,
        sender: u32,
        cookie: Option<[u8; 16]>,
        noise: &[u8],
        len: usize,
    ) {
        // An identical retransmission: answer from cache, create nothing.
        let hash: [u8; 32] = Sha256::digest(noise).into();
        if let Some(&idx) = self.initiations.get(&hash) {
            self.resend_response(idx, from, len);
            return;
        }
        if self.under_load(now) {
            let ok =
                cookie.is_some_and(|c| self.cookies.verify(now, &mut self.rng, &from, sender, &c));
            if !ok {
                let c = self.cookies.cookie(now, &mut self.rng, &from, sender);
                let mut out = Vec::new();
                wire::encode_cookie_reply(&mut out, sender, &c);
                self.out.push_back((from, out));
                self.stats.cookie_replies_sent += 1;
                self.stats.drop_packet(DropReason::CookieRequired);
                return;
            }
            if self.half_open() >= self.config.max_half_open {
                self.stats.drop_packet(DropReason::HalfOpenLimit);
                return;
            }
        }
        if self.sessions.len() >= self.config.max_sessions {
            self.stats.drop_packet(DropReason::SessionLimit);
            return;
        }
        match pattern {
            Pattern::IK => self.on_ik_initiation(now, from, sender, noise, len, hash),
            Pattern::XX => self.on_xx_initiation(now, from, sender, noise, len, hash),
            _ => self.stats.drop_packet(DropReason::Malformed),
        }
    }

    fn resend_response(&mut self, idx: u32, from: SocketAddr, len: usize) {
        let (response, amp) = match self.handshakes.get_mut(&idx) {
            Some(HsState::ResponderWaitData { response, .. }) => {
                let Some(s) = self.sessions.get_mut(&idx) else {
                    return;
                };
                s.amp_rx += len as u64;
                (response.clone(), Some((s.amp_rx, &mut s.amp_tx)))
            }
            Some(HsState::ResponderXx {
                response,
                amp_rx,
                amp_tx,
                ..
            }) => {
                *amp_rx += len as u64;
                (response.clone(), Some((*amp_rx, amp_tx)))
            }
            // Still holding the response for replies, or already validated: nothing to resend.
            _ => {
                self.stats.drop_packet(DropReason::Replay);
                return;
            }
        };
        if let Some((rx, tx)) = amp {
            if *tx + response.len() as u64 > rx {
                return; // the amplification budget is spent
            }
            *tx += response.len() as u64;
        }
        self.stats.retransmissions += 1;
        self.out.push_back((from, response));
    }

    fn on_ik_initiation(
        &mut self,
        now: Instant,
        from: SocketAddr,
        sender: u32,
        noise: &[u8],
        len: usize,
        hash: [u8; 32],
    ) {
        let sd = seed(self);
        let Ok(mut hs) = Handshake::responder_ik(&self.identity, sd) else {
            return;
        };
        let mut plain = Vec::new();
        if hs.read_message(noise, &mut plain).is_err() {
            self.stats.drop_packet(DropReason::Handshake);
            return;
        }
        let Some((peer, ts, frames)) = self.authenticate(&hs, &plain) else {
            return;
        };
        if !self.check_timestamp(now, peer, ts) {
            return;
        }
        let Ok(sum) = Session::check_frames(&frames) else {
            self.stats.drop_packet(DropReason::ProtocolViolation);
            return;
        };
        let idx = self.alloc_index();
        let id = self.new_session_id();
        let mut s = Session::new(id, idx, peer, from, false, "IK", now);
        s.remote_index = sender;
        s.amp_rx = len as u64;
        s.on_packet_received(now, 0, sum.eliciting);
        self.insert_session(s);
        self.initiations.insert(hash, idx);
        let (sessions, mut ctx) = self.ctx();
        if let Some(s) = sessions.get_mut(&idx) {
            s.process_frames(now, &mut ctx, 0, &frames, sum);
        }
        self.handshakes.insert(
            idx,
            HsState::ResponderHold {
                hs: Box::new(hs),
                until: now + self.config.max_ack_delay,
                deadline: now + self.config.handshake_timeout,
            },
        );
        self.mark_dirty(idx);
    }

    /// Verifies the identity payload of a handshake message against the Noise static
    /// key. Returns the peer, the timestamp and the frames.
    fn authenticate(
        &mut self,
        hs: &Handshake,
        plain: &[u8],
    ) -> Option<(libp2p_identity::PeerId, u64, Vec<u8>)> {
        let Ok(p) = HandshakePayload::parse(plain) else {
            self.stats.drop_packet(DropReason::Malformed);
            return None;
        };
        let Some(remote_static) = hs.remote_static() else {
            self.stats.drop_packet(DropReason::Handshake);
            return None;
        };
        let Ok(peer) = crypto::peer_of_proven_static(p.identity, &remote_static) else {
            self.stats.drop_packet(DropReason::Handshake);
            return None;
        };
        Some((peer, p.timestamp, p.frames.to_vec()))
    }

    fn check_timestamp(&mut self, now: Instant, peer: libp2p_identity::PeerId, ts: u64) -> bool {
        let wall = self.wall_nanos(now);
        let fresh = self.config.handshake_freshness.as_nanos() as u64;
        let stale = ts.abs_diff(wall) > fresh;
        let replayed = self.last_ts.get(&peer).is_some_and(|last| ts <= *last);
        if stale || replayed {
            self.stats.drop_packet(DropReason::StaleInitiation);
            return false;
        }
        if self.last_ts.len() >= 65536 {
            self.last_ts.retain(|_, t| wall.saturating_sub(*t) <= fresh);
        }
        if self.last_ts.len() < 65536 {
            self.last_ts.insert(peer, ts);
        }
        true
    }

    fn on_xx_initiation(
        &mut self,
        now: Instant,
        from: SocketAddr,
        sender: u32,
        noise: &[u8],
        len: usize,
        hash: [u8; 32],
    ) {
        if self.half_open() >= self.config.max_half_open {
            self.stats.drop_packet(DropReason::HalfOpenLimit);
            return;
        }
        let sd = seed(self);
        let Ok(mut hs) = Handshake::responder_xx(&self.identity, sd) else {
            return;
        };
        let mut ignored = Vec::new();
        if hs.read_message(noise, &mut ignored).is_err() {
            self.stats.drop_packet(DropReason::Handshake);
            return;
        }
        let idx = self.alloc_index();
        let mut out = Vec::new();
        wire::encode_response_header(&mut out, sender, idx);
        let mut payload = Vec::new();
        let identity = self.identity.identity_payload().to_vec();
        HandshakePayload {
            identity: &identity,
            timestamp: 0,
            frames: &[],
        }
        .encode(&mut payload);
        if hs.write_message(&payload, &mut out).is_err() {
            return;
        }
        let amp_tx = out.len() as u64;
        if amp_tx > len as u64 {
            // Would amplify: the initiator did not pad enough.
            self.stats.drop_packet(DropReason::Handshake);
            return;
        }
        debug_assert!(out.len() <= 9 + XX2_OVERHEAD + payload.len());
        self.initiations.insert(hash, idx);
        self.handshakes.insert(
            idx,
            HsState::ResponderXx {
                hs: Box::new(hs),
                response: out.clone(),
                remote_index: sender,
                amp_rx: len as u64,
                amp_tx,
                deadline: now + self.config.handshake_timeout,
            },
        );
        self.out.push_back((from, out));
    }

    fn on_cookie(&mut self, receiver: u32, c: [u8; 16]) {
        let Some(HsState::InitiatorWait {
            packet,
            noise_start,
            cookie,
            ..
        }) = self.handshakes.get_mut(&receiver)
        else {
            self.stats.drop_packet(DropReason::Unexpected);
            return;
        };
        *cookie = Some(c);
        let Some(old) = packet.as_ref() else { return };
        let Some(s) = self.sessions.get(&receiver) else {
            return;
        };
        let pattern = if s.pattern == "IK" {
            Pattern::IK
        } else {
            Pattern::XX
        };
        let mut out = Vec::with_capacity(old.len() + 16);
        wire::encode_initiation_header(&mut out, pattern, receiver, Some(&c));
        out.extend_from_slice(old.get(*noise_start..).unwrap_or_default());
        *noise_start = out.len() - old.len().saturating_sub(*noise_start);
        *packet = Some(out.clone());
        let dst = s.remote;
        self.out.push_back((dst, out));
    }

    fn on_response(
        &mut self,
        now: Instant,
        from: SocketAddr,
        receiver: u32,
        sender: u32,
        noise: &[u8],
    ) {
        let Some(HsState::InitiatorWait { .. }) = self.handshakes.get(&receiver) else {
            self.stats.drop_packet(DropReason::Unexpected);
            return;
        };
        let Some(HsState::InitiatorWait { mut hs, .. }) = self.handshakes.remove(&receiver) else {
            return;
        };
        let mut plain = Vec::new();
        if hs.read_message(noise, &mut plain).is_err() {
            self.stats.drop_packet(DropReason::Handshake);
            self.remove_session(receiver, SendError::Unreachable("handshake failed".into()));
            return;
        }
        let Some(expected) = self.sessions.get(&receiver).map(|s| s.peer) else {
            return;
        };
        let xx = self
            .sessions
            .get(&receiver)
            .is_some_and(|s| s.pattern == "XX");
        let frames = if xx {
            let Some((peer, _, _)) = self.authenticate(&hs, &plain) else {
                self.remove_session(receiver, SendError::Unreachable("bad identity".into()));
                return;
            };
            if peer != expected {
                self.stats.drop_packet(DropReason::Handshake);
                self.remove_session(
                    receiver,
                    SendError::Unreachable(format!("peer id mismatch: reached {peer}")),
                );
                return;
            }
            Vec::new()
        } else {
            match HandshakePayload::parse(&plain) {
                Ok(p) => p.frames.to_vec(),
                Err(_) => {
                    self.stats.drop_packet(DropReason::Malformed);
                    return;
                }
            }
        };
        let Ok(sum) = Session::check_frames(&frames) else {
            self.stats.drop_packet(DropReason::ProtocolViolation);
            return;
        };
        if xx {
            self.finish_xx(now, receiver, sender, hs);
        } else {
            let Ok(keys) = hs.into_keys() else { return };
            let (sessions, mut ctx) = self.ctx();
            let Some(s) = sessions.get_mut(&receiver) else {
                return;
            };
            s.remote_index = sender;
            s.remote = from;
            s.set_keys(Keys::new(keys.send, keys.recv, now));
            s.on_packet_received(now, 0, sum.eliciting);
            // Confirm promptly: the responder sends nothing more until it hears from us.
            s.ping_pending = true;
            s.process_frames(now, &mut ctx, 0, &frames, sum);
            ctx.stats.handshakes_completed += 1;
            let (peer, sid) = (s.peer, s.id);
            self.events.push_back(Event::SessionUp {
                peer,
                session: sid,
                remote: from,
            });
        }
        self.mark_dirty(receiver);
    }

    fn finish_xx(&mut self, now: Instant, idx: u32, sender: u32, mut hs: Box<Handshake>) {
        let ts = self.next_timestamp(now);
        let identity = self.identity.identity_payload().to_vec();
        let (sessions, mut ctx) = self.ctx();
        let Some(s) = sessions.get_mut(&idx) else {
            return;
        };
        s.remote_index = sender;
        let mut out = Vec::new();
        wire::encode_finish_header(&mut out, sender);
        let fixed =
            out.len() + XX3_OVERHEAD + wire::varint_len(identity.len() as u64) + identity.len() + 8;
        s.ping_pending = true;
        let mut frames = Vec::new();
        let limit = ctx.config.max_udp_payload.saturating_sub(fixed);
        s.write_frames(now, &mut ctx, &mut frames, limit, 0, false, false);
        let mut payload = Vec::new();
        HandshakePayload {
            identity: &identity,
            timestamp: ts,
            frames: &frames,
        }
        .encode(&mut payload);
        if hs.write_message(&payload, &mut out).is_err() {
            return;
        }
        let Ok(keys) = hs.into_keys() else { return };
        s.handshake_sent(Keys::new(keys.send, keys.recv, now), now);
        ctx.stats.handshakes_completed += 1;
        let (peer, sid, remote) = (s.peer, s.id, s.remote);
        let retry = self.config.handshake_retry;
        self.events.push_back(Event::SessionUp {
            peer,
            session: sid,
            remote,
        });
        self.handshakes.insert(
            idx,
            HsState::InitiatorFinish {
                packet: out.clone(),
                next_retry: now + retry,
                retry,
                deadline: now + self.config.handshake_timeout,
            },
        );
        self.out.push_back((remote, out));
    }

    fn on_finish(
        &mut self,
        now: Instant,
        from: SocketAddr,
        receiver: u32,
        noise: &[u8],
        len: usize,
    ) {
        if let Some(s) = self.sessions.get_mut(&receiver) {
            if !s.initiator && s.established() {
                // A retransmitted Finish: our acknowledgement was lost; acknowledge again.
                s.on_packet_received(now, 0, false);
                s.ping_pending = true;
                self.mark_dirty(receiver);
                return;
            }
        }
        let Some(HsState::ResponderXx { .. }) = self.handshakes.get(&receiver) else {
            self.stats.drop_packet(DropReason::Unexpected);
            return;
        };
        let Some(HsState::ResponderXx {
            mut hs,
            remote_index,
            ..
        }) = self.handshakes.remove(&receiver)
        else {
            return;
        };
        let mut plain = Vec::new();
        if hs.read_message(noise, &mut plain).is_err() {
            self.stats.drop_packet(DropReason::Handshake);
            return;
        }
        let Some((peer, _ts, frames)) = self.authenticate(&hs, &plain) else {
            return;
        };
        let Ok(sum) = Session::check_frames(&frames) else {
            self.stats.drop_packet(DropReason::ProtocolViolation);
            return;
        };
        let Ok(keys) = hs.into_keys() else { return };
        let id = self.new_session_id();
        let mut s = Session::new(id, receiver, peer, from, false, "XX", now);
        s.remote_index = remote_index;
        s.validated = true;
        s.amp_rx = len as u64;
        s.set_keys(Keys::new(keys.send, keys.recv, now));
        s.on_packet_received(now, 0, sum.eliciting);
        self.insert_session(s);
        self.add_address(peer, from);
        self.stats.handshakes_completed += 1;
        self.events.push_back(Event::SessionUp {
            peer,
            session: id,
            remote: from,
        });
        let (sessions, mut ctx) = self.ctx();
        if let Some(s) = sessions.get_mut(&receiver) {
            s.process_frames(now, &mut ctx, 0, &frames, sum);
        }
        self.mark_dirty(receiver);
    }

    /// Handshake retransmissions and deadlines.
    pub(crate) fn handshake_timers(&mut self, now: Instant) {
        // Most timeouts are the sessions': a scan without allocating finds out whether
        // any handshake has something to do (the same conditions as the loop below).
        let due = self.handshakes.iter().any(|(idx, h)| match h {
            HsState::InitiatorWait {
                next_retry,
                deadline,
                ..
            } => now >= *next_retry || now >= *deadline,
            HsState::InitiatorFinish {
                next_retry,
                deadline,
                ..
            } => {
                now >= *next_retry
                    || now >= *deadline
                    || self.sessions.get(idx).is_some_and(|s| s.confirmed)
            }
            HsState::ResponderHold { until, .. } => now >= *until,
            HsState::ResponderWaitData { deadline, .. } | HsState::ResponderXx { deadline, .. } => {
                now >= *deadline
            }
        });
        if !due {
            return;
        }
        let mut idxs: Vec<u32> = self.handshakes.keys().copied().collect();
        idxs.sort_unstable();
        for idx in idxs {
            let mut fail: Option<SendError> = None;
            let mut drop_state = false;
            let mut resend: Option<Vec<u8>> = None;
            let confirmed = self.sessions.get(&idx).is_some_and(|s| s.confirmed);
            match self.handshakes.get_mut(&idx) {
                Some(HsState::InitiatorWait {
                    packet,
                    next_retry,
                    retry,
                    deadline,
                    ..
                }) => {
                    if now >= *deadline {
                        fail = Some(SendError::Unreachable("handshake timed out".into()));
                    } else if now >= *next_retry {
                        resend = packet.clone();
                        *retry *= 2;
                        *next_retry = now + *retry;
                    }
                }
                Some(HsState::InitiatorFinish {
                    packet,
                    next_retry,
                    retry,
                    deadline,
                }) => {
                    if confirmed {
                        drop_state = true;
                    } else if now >= *deadline {
                        fail = Some(SendError::Unreachable("handshake not confirmed".into()));
                    } else if now >= *next_retry {
                        resend = Some(packet.clone());
                        *retry *= 2;
                        *next_retry = now + *retry;
                    }
                }
                Some(HsState::ResponderHold { until, .. }) => {
                    if now >= *until {
                        self.mark_dirty(idx);
                    }
                }
                Some(HsState::ResponderWaitData { deadline, .. }) => {
                    if now >= *deadline {
                        fail = Some(SendError::SessionClosed("initiator never confirmed".into()));
                    }
                }
                Some(HsState::ResponderXx { deadline, .. }) => {
                    if now >= *deadline {
                        drop_state = true;
                        self.initiations.retain(|_, v| *v != idx);
                    }
                }
                None => {}
            }
            if drop_state {
                self.handshakes.remove(&idx);
            }
            if let Some(err) = fail {
                self.remove_session(idx, err);
            } else if let Some(pkt) = resend {
                if let Some(s) = self.sessions.get(&idx) {
                    self.stats.retransmissions += 1;
                    self.out.push_back((s.remote, pkt));
                }
            }
        }
    }

    pub(crate) fn handshake_next_timeout(&self) -> Option<std::time::Instant> {
        let mut t: Option<Instant> = None;
        for (idx, h) in &self.handshakes {
            let x = match h {
                HsState::InitiatorWait {
                    next_retry,
                    deadline,
                    ..
                } => (*next_retry).min(*deadline),
                HsState::InitiatorFinish {
                    next_retry,
                    deadline,
                    ..
                } => {
                    if self.sessions.get(idx).is_some_and(|s| s.confirmed) {
                        continue;
                    }
                    (*next_retry).min(*deadline)
                }
                HsState::ResponderHold { until, .. } => *until,
                HsState::ResponderWaitData { deadline, .. }
                | HsState::ResponderXx { deadline, .. } => *deadline,
            };
            t = Some(t.map_or(x, |t| t.min(x)));
        }
        t
    }
}
