//! [`StreamConn`]: the message API over one libp2p connection's pair of `/msgnet/1.0.0`
//! streams. See the [module docs](super) for the wire rules and the call order.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use libp2p_identity::PeerId;

use crate::wire::{Frame, Frames, Init, MessageFrame, MessageKind, ResetCode, Sack};
use crate::{Event, InboundRequest, IncomingMessage, MessageId, SendError, SessionId};

use super::record::{encode_record, RecordDecoder, MAX_RECORD_LEN};
use super::{StreamConfig, StreamError, BUSY_CODE, MAX_FRAME_OVERHEAD, SACK_EVERY};

/// A sent message awaiting the peer's acknowledgement (by stream index).
#[derive(Debug)]
struct Unacked {
    int: u16,
    what: Waiting,
}

#[derive(Debug, Clone, Copy)]
enum Waiting {
    /// A `send`: completes on acknowledgement.
    Send(MessageId),
    /// A `request` with this request id: completes on its response.
    Request(u64),
    /// A response of ours: nothing waits, but a RESET must find nothing to fail.
    Response,
}

/// A request awaiting its response.
#[derive(Debug)]
struct PendingRequest {
    id: MessageId,
    protocol: Arc<str>,
}

/// The message layer of one libp2p connection, both directions, sans-IO.
///
/// Created by the driver when the connection is established; fed with the bytes of the
/// peer's `/msgnet/1.0.0` stream; its output is written to ours.
#[derive(Debug)]
pub struct StreamConn {
    session: SessionId,
    peer: PeerId,
    config: StreamConfig,

    // Outbound direction.
    out_ints: HashMap<Arc<str>, u16>,
    next_int: u16,
    /// Stream index of the next message frame we write.
    next_index: u64,
    unacked: BTreeMap<u64, Unacked>,
    unacked_sends: usize,
    requests: HashMap<u64, PendingRequest>,
    next_request_id: u64,
    /// Frames of the record being built.
    record: Vec<u8>,
    /// Finished records (with their length prefixes), not yet handed out.
    ready: Vec<u8>,

    // Inbound direction.
    decoder: RecordDecoder,
    in_ints: HashMap<u16, Arc<str>>,
    /// Message frames received so far (the next inbound stream index).
    received: u64,
    /// `received` as of the last SACK we wrote.
    sacked: u64,
    /// A one-way message arrived since the last SACK: its sender waits for the SACK.
    sack_now: bool,
    inbound_requests: HashSet<u64>,
    /// Responses that arrived for requests of ours no longer pending.
    late_responses: u64,

    events: VecDeque<Event>,
    /// Why the conversation ended, once it did.
    closed: Option<String>,
    /// It ended by a CLOSE either way: later input is ignored, not an error.
    ignore_input: bool,
}

impl StreamConn {
    /// A connection with `peer`, reported in events as `session`.
    pub fn new(session: SessionId, peer: PeerId, config: StreamConfig) -> Self {
        Self {
            session,
            peer,
            decoder: RecordDecoder::new(MAX_RECORD_LEN),
            config: StreamConfig {
                max_message_size: config.max_message_size.min(MAX_RECORD_LEN - MAX_FRAME_OVERHEAD),
                ..config
            },
            out_ints: HashMap::new(),
            next_int: 1,
            next_index: 0,
            unacked: BTreeMap::new(),
            unacked_sends: 0,
            requests: HashMap::new(),
            next_request_id: 0,
            record: Vec::new(),
            ready: Vec::new(),
            in_ints: HashMap::new(),
            received: 0,
            sacked: 0,
            sack_now: false,
            inbound_requests: HashSet::new(),
            late_responses: 0,
            events: VecDeque::new(),
            closed: None,
            ignore_input: false,
        }
    }

    /// The session id given at creation.
    pub fn session(&self) -> SessionId {
        self.session
    }

    /// The remote peer.
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// Sends and requests awaiting acknowledgement or response.
    pub fn in_flight(&self) -> usize {
        self.unacked_sends + self.requests.len()
    }

    /// Responses that arrived for requests of ours that were no longer pending (given up
    /// with [`StreamConn::abandon_requests`], or failed): dropped, counted here.
    pub fn late_responses(&self) -> u64 {
        self.late_responses
    }

    /// Output bytes not yet drained by [`StreamConn::poll_output`].
    pub fn output_len(&self) -> usize {
        self.record.len() + self.ready.len()
    }

    /// Whether the driver should read more input: false while too much output or too
    /// many events are undrained (finish local work before taking new remote work).
    pub fn wants_input(&self) -> bool {
        self.closed.is_none()
            && self.output_len() < self.config.max_output
            && self.events.len() < self.config.max_events
    }

    /// `Some(reason)` once the conversation ended (CLOSE either way, or an input error).
    pub fn closed(&self) -> Option<&str> {
        self.closed.as_deref()
    }

    /// Sends a one-way message; completes with [`Event::SendComplete`] when the peer
    /// acknowledged it.
    pub fn send(&mut self, id: MessageId, protocol: &str, payload: Bytes) -> Result<(), SendError> {
        self.check_send(protocol, payload.len(), true)?;
        let index = self.write_message(protocol, MessageKind::Message, &payload)?;
        self.unacked.insert(index, Unacked { int: self.int_of(protocol), what: Waiting::Send(id) });
        self.unacked_sends += 1;
        Ok(())
    }

    /// Sends a request; completes with [`Event::Response`].
    pub fn request(&mut self, id: MessageId, protocol: &str, payload: Bytes) -> Result<(), SendError> {
        self.check_send(protocol, payload.len(), true)?;
        let rid = self.next_request_id;
        let index = self.write_message(protocol, MessageKind::Request(rid), &payload)?;
        self.next_request_id += 1;
        self.unacked.insert(index, Unacked { int: self.int_of(protocol), what: Waiting::Request(rid) });
        self.requests.insert(rid, PendingRequest { id, protocol: Arc::from(protocol) });
        Ok(())
    }

    /// Answers an inbound request delivered by this connection: `Ok(payload)`, or
    /// `Err((code, reason))` for an error response.
    pub fn respond(
        &mut self,
        req: &InboundRequest,
        result: Result<Bytes, (u8, String)>,
    ) -> Result<(), SendError> {
        if req.session != self.session || !self.inbound_requests.contains(&req.request_id) {
            return Err(SendError::UnknownRequest);
        }
        let (kind, payload) = match result {
            Ok(p) => (MessageKind::Response(req.request_id), p),
            Err((code, reason)) => {
                (MessageKind::ErrorResponse(req.request_id), error_payload(code, &reason))
            }
        };
        self.check_send(&req.protocol, payload.len(), false)?;
        let index = self.write_message(&req.protocol, kind, &payload)?;
        self.unacked.insert(index, Unacked { int: self.int_of(&req.protocol), what: Waiting::Response });
        self.inbound_requests.remove(&req.request_id);
        Ok(())
    }

    /// Gives up on the pending requests whose id `abandon` picks (the driver's timeout):
    /// they leave the in-flight count, no event is reported for them, and a response
    /// arriving later is dropped and counted in [`StreamConn::late_responses`]. Nothing
    /// is written (the protocol has no cancel frame). Returns how many were abandoned.
    /// One pass over the pending requests, however many are abandoned.
    pub fn abandon_requests(&mut self, abandon: impl Fn(MessageId) -> bool) -> usize {
        let before = self.requests.len();
        self.requests.retain(|_, r| !abandon(r.id));
        before - self.requests.len()
    }

    /// Ends the conversation: writes CLOSE and fails everything pending with
    /// [`SendError::Closed`].
    pub fn close(&mut self, code: u64, reason: &str) {
        if self.closed.is_some() {
            return;
        }
        self.push_frame(&Frame::Close { code, reason });
        self.closed = Some(format!("closed locally: {reason}"));
        self.ignore_input = true;
        self.fail_all(SendError::Closed);
    }

    /// The connection is gone: every pending send and request fails with `err`, and
    /// later commands fail with [`SendError::SessionClosed`].
    pub fn fail_all(&mut self, err: SendError) {
        if self.closed.is_none() {
            self.closed = Some(err.to_string());
        }
        let unacked = std::mem::take(&mut self.unacked);
        for u in unacked.into_values() {
            if let Waiting::Send(id) = u.what {
                self.events.push_back(Event::SendComplete { id, result: Err(err.clone()) });
            }
        }
        self.unacked_sends = 0;
        let mut requests: Vec<_> = self.requests.drain().collect();
        requests.sort_by_key(|(rid, _)| *rid);
        for (_, r) in requests {
            self.events.push_back(Event::Response { id: r.id, result: Err(err.clone()) });
        }
        self.inbound_requests.clear();
    }

    /// Feeds bytes read from the peer's stream (any chunking). A partial record is kept
    /// for the next call. An error is fatal: everything pending fails, a CLOSE is
    /// written, and later input returns [`StreamError::Closed`] (as after
    /// [`StreamConn::fail_all`]). Input after a CLOSE (either side's) is ignored.
    pub fn handle_input(
        &mut self,
        bytes: &[u8],
        handlers: &impl Fn(&str) -> bool,
    ) -> Result<(), StreamError> {
        if self.closed.is_some() {
            return if self.ignore_input { Ok(()) } else { Err(StreamError::Closed) };
        }
        let mut decoder = std::mem::take(&mut self.decoder);
        let result = decoder.feed(bytes, |record| self.handle_record(record, handlers));
        self.decoder = decoder;
        if let Err(e) = &result {
            tracing::debug!(peer = %self.peer, error = %e, "msgnet stream input rejected");
            self.push_frame(&Frame::Close { code: 1, reason: &e.to_string() });
            self.closed = Some(e.to_string());
            self.fail_all(SendError::SessionClosed(format!("protocol error: {e}")));
        }
        result
    }

    /// The next bytes to write on our outbound stream (whole records), or `None`. A SACK
    /// for everything received so far is appended when the count advanced and a one-way
    /// message waits for it, or [`SACK_EVERY`] messages are unacknowledged, or other
    /// frames are written anyway (requests and responses complete by responses, so their
    /// SACK rides on the next output: see the [module docs](super)).
    pub fn poll_output(&mut self) -> Option<Bytes> {
        let unsacked = self.received - self.sacked;
        if unsacked > 0
            && (self.sack_now || unsacked >= SACK_EVERY || !self.record.is_empty() || !self.ready.is_empty())
        {
            self.sack_now = false;
            let sack = Sack { delay_us: 0, ranges: vec![(0, self.received - 1)] };
            self.push_frame(&Frame::Sack(sack));
            self.sacked = self.received;
        }
        self.finish_record();
        if self.ready.is_empty() {
            return None;
        }
        Some(Bytes::from(std::mem::take(&mut self.ready)))
    }

    /// The next event, or `None`.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ---- outbound helpers ----

    fn check_send(&self, protocol: &str, len: usize, tracked: bool) -> Result<(), SendError> {
        if let Some(reason) = &self.closed {
            return Err(SendError::SessionClosed(reason.clone()));
        }
        if protocol.is_empty() || protocol.len() > crate::wire::MAX_PROTOCOL_LEN {
            return Err(SendError::InvalidProtocol);
        }
        if len > self.config.max_message_size {
            return Err(SendError::MessageTooLarge { size: len, limit: self.config.max_message_size });
        }
        if tracked && self.in_flight() >= self.config.max_in_flight {
            return Err(SendError::Backpressure);
        }
        if self.output_len() > 0 && self.output_len() + len > self.config.max_output {
            return Err(SendError::Backpressure);
        }
        if !self.out_ints.contains_key(protocol) && self.next_int == 0 {
            // All 65535 ints are bound.
            return Err(SendError::Backpressure);
        }
        Ok(())
    }

    fn int_of(&self, protocol: &str) -> u16 {
        self.out_ints.get(protocol).copied().unwrap_or(0)
    }

    /// Writes one message frame (INIT the first time a protocol is used) and returns its
    /// stream index. Preconditions checked by `check_send`.
    fn write_message(&mut self, protocol: &str, kind: MessageKind, payload: &[u8]) -> Result<u64, SendError> {
        let (int, init) = match self.out_ints.get(protocol) {
            Some(&int) => (int, None),
            None => {
                let int = self.next_int;
                self.next_int = self.next_int.wrapping_add(1);
                self.out_ints.insert(Arc::from(protocol), int);
                (int, Some(Init { transport_id: 0, protocol }))
            }
        };
        let frame = MessageFrame {
            init,
            protocol_int: int,
            ordered: false,
            seq: None,
            kind,
            payload,
            explicit_len: true,
        };
        if frame.validate().is_err() {
            return Err(SendError::InvalidProtocol);
        }
        self.push_frame(&Frame::Message(frame));
        let index = self.next_index;
        self.next_index += 1;
        Ok(index)
    }

    /// Appends a frame to the current record, starting a new record when it would
    /// exceed [`MAX_RECORD_LEN`].
    fn push_frame(&mut self, frame: &Frame<'_>) {
        if self.record.len() + frame.encoded_len() > MAX_RECORD_LEN {
            self.finish_record();
        }
        frame.encode(&mut self.record);
    }

    fn finish_record(&mut self) {
        if !self.record.is_empty() {
            encode_record(&mut self.ready, &self.record);
            self.record.clear();
        }
    }

    // ---- inbound ----

    fn handle_record(&mut self, record: &[u8], handlers: &impl Fn(&str) -> bool) -> Result<(), StreamError> {
        if self.closed.is_some() {
            return Ok(()); // after the peer's CLOSE
        }
        let frames = Frames::new(record).collect::<Result<Vec<_>, _>>()?;
        let mut sacks = Vec::new();
        for frame in frames {
            match frame {
                Frame::Padding(_) | Frame::Ping | Frame::Ack { .. } | Frame::Race { .. } => {}
                Frame::Sack(s) => sacks.push(s),
                Frame::Reset { protocol_int, code, seq } => self.on_reset(protocol_int, code, seq),
                Frame::Close { code, reason } => {
                    self.closed = Some(format!("peer closed: {code} {reason}"));
                    self.ignore_input = true;
                    self.fail_all(SendError::SessionClosed(format!("peer closed: {reason}")));
                    break;
                }
                Frame::Message(m) => self.on_message(m, handlers)?,
                // Records carry whole messages (up to the record limit); fragments are a
                // packet-transport device. (Added by the lead with the FRAGMENT frame.)
                Frame::Fragment(_) => return Err(StreamError::Protocol("FRAGMENT on a stream")),
            }
        }
        for s in sacks {
            self.on_sack(&s)?;
        }
        if self.output_len() > self.config.max_output.saturating_mul(2) {
            return Err(StreamError::OutputOverflow);
        }
        Ok(())
    }

    fn on_message(&mut self, m: MessageFrame<'_>, handlers: &impl Fn(&str) -> bool) -> Result<(), StreamError> {
        let index = self.received;
        self.received += 1;
        let int = m.protocol_int;
        let protocol = match (m.init, self.in_ints.get(&int)) {
            (Some(init), Some(p)) if &**p != init.protocol => {
                return Err(StreamError::Protocol("protocol int rebound"));
            }
            (_, Some(p)) => p.clone(),
            (Some(init), None) => {
                if self.in_ints.len() >= self.config.max_inbound_protocols {
                    return Err(StreamError::Protocol("too many protocols"));
                }
                let p: Arc<str> = Arc::from(init.protocol);
                self.in_ints.insert(int, p.clone());
                p
            }
            (None, None) => {
                self.push_frame(&Frame::Reset {
                    protocol_int: int,
                    code: ResetCode::UNKNOWN_PROTOCOL_INT,
                    seq: Some(index),
                });
                return Ok(());
            }
        };
        let payload = Bytes::copy_from_slice(m.payload);
        match m.kind {
            MessageKind::Response(rid) | MessageKind::ErrorResponse(rid) => {
                let matches = self.requests.get(&rid).is_some_and(|r| r.protocol == protocol);
                if !matches {
                    // Unknown, abandoned or failed already: ignore (count the late ones).
                    if rid < self.next_request_id && !self.requests.contains_key(&rid) {
                        self.late_responses += 1;
                    }
                    return Ok(());
                }
                let Some(r) = self.requests.remove(&rid) else { return Ok(()) };
                let result = match m.kind {
                    MessageKind::Response(_) => Ok(payload),
                    _ => {
                        let code = payload.first().copied().unwrap_or(0);
                        let reason =
                            String::from_utf8_lossy(payload.get(1..).unwrap_or_default()).into_owned();
                        Err(SendError::Remote { code, reason })
                    }
                };
                self.events.push_back(Event::Response { id: r.id, result });
            }
            MessageKind::Message | MessageKind::Request(_) => {
                if m.kind == MessageKind::Message {
                    self.sack_now = true; // the sender completes on our SACK
                }
                if !handlers(&protocol) {
                    self.push_frame(&Frame::Reset {
                        protocol_int: int,
                        code: ResetCode::NO_HANDLER,
                        seq: Some(index),
                    });
                    return Ok(());
                }
                let request = match m.kind {
                    MessageKind::Request(rid) => {
                        if self.inbound_requests.len() >= self.config.max_inbound_requests
                            || self.inbound_requests.contains(&rid)
                        {
                            self.refuse_request(&protocol, rid);
                            return Ok(());
                        }
                        self.inbound_requests.insert(rid);
                        Some(InboundRequest { session: self.session, protocol: protocol.clone(), request_id: rid })
                    }
                    _ => None,
                };
                self.events.push_back(Event::Message(IncomingMessage {
                    peer: self.peer,
                    session: self.session,
                    protocol,
                    payload,
                    request,
                }));
            }
        }
        Ok(())
    }

    /// Answers a request we cannot take (too many unanswered, or a duplicate id) with an
    /// error response.
    fn refuse_request(&mut self, protocol: &Arc<str>, rid: u64) {
        let payload = error_payload(BUSY_CODE, "busy");
        if let Ok(index) = self.write_message(protocol, MessageKind::ErrorResponse(rid), &payload) {
            let int = self.int_of(protocol);
            self.unacked.insert(index, Unacked { int, what: Waiting::Response });
        }
    }

    fn on_reset(&mut self, int: u16, code: ResetCode, seq: Option<u64>) {
        let Some(index) = seq else { return };
        if self.unacked.get(&index).is_none_or(|u| u.int != int) {
            return;
        }
        let Some(u) = self.unacked.remove(&index) else { return };
        let Some(protocol) = self.out_ints.iter().find(|(_, &i)| i == int).map(|(p, _)| p.to_string())
        else {
            return;
        };
        tracing::debug!(peer = %self.peer, %protocol, %code, index, "message refused by peer");
        let err = SendError::UnsupportedProtocol(protocol);
        match u.what {
            Waiting::Send(id) => {
                self.unacked_sends -= 1;
                self.events.push_back(Event::SendComplete { id, result: Err(err) });
            }
            Waiting::Request(rid) => {
                if let Some(r) = self.requests.remove(&rid) {
                    self.events.push_back(Event::Response { id: r.id, result: Err(err) });
                }
            }
            Waiting::Response => {}
        }
    }

    fn on_sack(&mut self, sack: &Sack) -> Result<(), StreamError> {
        if sack.largest().is_some_and(|l| l >= self.next_index) {
            return Err(StreamError::Protocol("SACK of an unsent message"));
        }
        for &(lo, hi) in &sack.ranges {
            if lo > hi {
                continue;
            }
            while let Some(entry) = self.unacked.range(lo..=hi).next() {
                let index = *entry.0;
                let Some(u) = self.unacked.remove(&index) else { break };
                if let Waiting::Send(id) = u.what {
                    self.unacked_sends -= 1;
                    self.events.push_back(Event::SendComplete { id, result: Ok(()) });
                }
            }
        }
        Ok(())
    }
}

/// The payload of an error response: `code || reason`.
fn error_payload(code: u8, reason: &str) -> Bytes {
    let mut v = Vec::with_capacity(1 + reason.len());
    v.push(code);
    v.extend_from_slice(reason.as_bytes());
    Bytes::from(v)
}
