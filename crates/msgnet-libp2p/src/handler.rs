//! The per-connection `ConnectionHandler`: stream I/O only, no protocol logic. Public
//! because `NetworkBehaviour` exposes it; users never call it.
//!
//! It opens our `/msgnet/1.0.0` stream once, writes what the behaviour hands it (output
//! of the connection's `StreamConn`), reads the peer's `/msgnet/1.0.0` stream and hands
//! the bytes up, and runs bridge streams (one length-prefixed request, one response).
//! Every queue is bounded: writes by the behaviour's write window (acknowledged with
//! [`ToBehaviour::Written`]), bridge streams by `max_bridge_streams` per direction
//! (inbound ones beyond it are dropped; outbound ones wait in a queue bounded by the
//! behaviour's per-peer in-flight limit).

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::channel::oneshot;
use futures::future::{select, BoxFuture, Either};
use futures::stream::FuturesUnordered;
use futures::{AsyncRead, AsyncWrite, AsyncWriteExt, FutureExt, StreamExt};
use futures_timer::Delay;
use libp2p::core::upgrade::ReadyUpgrade;
use libp2p::swarm::handler::{
    ConnectionEvent, DialUpgradeError, FullyNegotiatedInbound, FullyNegotiatedOutbound,
    ProtocolsChange,
};
use libp2p::swarm::{
    ConnectionHandler, ConnectionHandlerEvent, Stream, StreamUpgradeError, SubstreamProtocol,
};
use libp2p::StreamProtocol;
use msgnet_core::{MessageId, SendError};

use crate::protocol::{read_lp, write_lp, InboundProtocols, MSGNET};

/// Bytes read from the msgnet stream per event.
const READ_CHUNK: usize = 64 * 1024;

/// Queued writes are coalesced into one stream write up to this many bytes (each stream
/// write is a muxer frame: a yamux frame, or a QUIC stream write).
const WRITE_COALESCE: usize = 64 * 1024;

/// Commands from the behaviour.
#[derive(Debug)]
pub enum FromBehaviour {
    /// Write these bytes (whole records) on our msgnet stream.
    Write(Bytes),
    /// The bridged protocols offered to inbound streams changed.
    SetProtocols(Arc<Vec<StreamProtocol>>),
    /// Open a bridge stream: write `payload`, read a response if `expect_response`.
    BridgeOut {
        /// The send or request.
        id: MessageId,
        /// The stream's protocol.
        protocol: StreamProtocol,
        /// The request bytes.
        payload: Bytes,
        /// Whether a response is read.
        expect_response: bool,
    },
    /// Answer an inbound bridge request (`payload: None`: close without an answer).
    BridgeRespond {
        /// The inbound stream.
        stream_id: u64,
        /// The response.
        payload: Option<Bytes>,
    },
}

/// Reports to the behaviour.
#[derive(Debug)]
pub enum ToBehaviour {
    /// Our msgnet stream is open: writes go out.
    OutboundReady,
    /// The peer does not speak `/msgnet/1.0.0` (negotiation failed, or identify says so).
    Unsupported,
    /// The msgnet streams failed (other than by lack of support).
    Failed(String),
    /// Bytes from the peer's msgnet stream.
    Input(Bytes),
    /// This many bytes of `Write`s were written.
    Written(usize),
    /// An outbound bridge stream finished.
    BridgeResult {
        /// The send or request.
        id: MessageId,
        /// The response (`None` for a send), or the failure.
        result: Result<Option<Bytes>, SendError>,
    },
    /// An inbound bridge stream carried a request.
    BridgeRequest {
        /// The inbound stream.
        stream_id: u64,
        /// Its protocol.
        protocol: StreamProtocol,
        /// The request bytes.
        payload: Bytes,
    },
    /// An inbound bridge request can no longer be answered (timed out).
    BridgeInboundDone {
        /// The inbound stream.
        stream_id: u64,
    },
}

/// What an outbound stream request is for.
#[derive(Debug)]
pub enum OutboundOpen {
    /// Our `/msgnet/1.0.0` stream.
    Msgnet,
    /// A bridge stream carrying `payload`.
    Bridge {
        /// The send or request.
        id: MessageId,
        /// The request bytes.
        payload: Bytes,
        /// Whether a response is read.
        expect_response: bool,
    },
}

#[derive(Debug)]
enum OutState {
    /// Not requested yet.
    Idle,
    /// Negotiating.
    Opening,
    Open(Stream),
    /// Unsupported or failed: nothing will be written.
    Done,
}

type BridgeOutFuture = BoxFuture<'static, (MessageId, Result<Option<Bytes>, SendError>)>;
type BridgeReadFuture = BoxFuture<'static, (u64, StreamProtocol, Option<(Stream, Vec<u8>)>)>;

/// Settings the behaviour passes to each handler.
#[derive(Debug, Clone)]
pub(crate) struct HandlerConfig {
    pub(crate) max_message_size: usize,
    pub(crate) max_bridge_streams: usize,
    pub(crate) bridge_timeout: Duration,
    pub(crate) keep_alive: bool,
}

/// The connection handler of [`crate::Behaviour`].
pub struct Handler {
    config: HandlerConfig,
    bridged: Arc<Vec<StreamProtocol>>,
    out: OutState,
    /// Whether msgnet support was reported (once).
    resolved: bool,
    /// Whether identify's first (complete) protocol report was seen.
    remote_reported: bool,
    write_queue: VecDeque<Bytes>,
    write_pos: usize,
    written: usize,
    needs_flush: bool,
    inbound: Option<Stream>,
    read_buf: Vec<u8>,
    events: VecDeque<ToBehaviour>,
    bridge_queue: VecDeque<(MessageId, StreamProtocol, Bytes, bool)>,
    bridge_opening: usize,
    bridge_out: FuturesUnordered<BridgeOutFuture>,
    bridge_reading: FuturesUnordered<BridgeReadFuture>,
    bridge_waiting: FuturesUnordered<BoxFuture<'static, u64>>,
    bridge_responders: HashMap<u64, oneshot::Sender<Option<Bytes>>>,
    next_stream_id: u64,
}

impl Handler {
    pub(crate) fn new(config: HandlerConfig, bridged: Arc<Vec<StreamProtocol>>) -> Self {
        Self {
            config,
            bridged,
            out: OutState::Idle,
            resolved: false,
            remote_reported: false,
            write_queue: VecDeque::new(),
            write_pos: 0,
            written: 0,
            needs_flush: false,
            inbound: None,
            read_buf: vec![0; READ_CHUNK],
            events: VecDeque::new(),
            bridge_queue: VecDeque::new(),
            bridge_opening: 0,
            bridge_out: FuturesUnordered::new(),
            bridge_reading: FuturesUnordered::new(),
            bridge_waiting: FuturesUnordered::new(),
            bridge_responders: HashMap::new(),
            next_stream_id: 0,
        }
    }

    fn bridge_in_count(&self) -> usize {
        self.bridge_reading.len() + self.bridge_waiting.len()
    }

    fn outbound_failed(&mut self, unsupported: bool, reason: String) {
        self.out = OutState::Done;
        self.write_queue.clear();
        self.write_pos = 0;
        if !self.resolved {
            self.resolved = true;
            self.events.push_back(if unsupported {
                ToBehaviour::Unsupported
            } else {
                ToBehaviour::Failed(reason)
            });
        } else if !unsupported {
            self.events.push_back(ToBehaviour::Failed(reason));
        }
    }

    fn on_inbound(&mut self, mut stream: Stream, protocol: StreamProtocol) {
        if protocol == MSGNET {
            if !self.config.keep_alive {
                stream.ignore_for_keep_alive();
            }
            // A newer stream replaces an older one (the peer reopened it).
            self.inbound = Some(stream);
            return;
        }
        if self.bridge_in_count() >= self.config.max_bridge_streams {
            tracing::debug!(%protocol, "too many inbound bridge streams; dropping one");
            return;
        }
        let id = self.next_stream_id;
        self.next_stream_id += 1;
        let max = self.config.max_message_size;
        let timeout = self.config.bridge_timeout;
        self.bridge_reading.push(
            async move {
                let read = async {
                    let req = read_lp(&mut stream, max).await?;
                    Ok::<_, std::io::Error>((stream, req))
                };
                match select(read.boxed(), Delay::new(timeout)).await {
                    Either::Left((Ok(v), _)) => (id, protocol, Some(v)),
                    _ => (id, protocol, None),
                }
            }
            .boxed(),
        );
    }

    fn on_bridge_read(&mut self, id: u64, protocol: StreamProtocol, read: Option<(Stream, Vec<u8>)>) {
        let Some((mut stream, req)) = read else {
            return; // never reported: nothing to answer
        };
        let (tx, rx) = oneshot::channel::<Option<Bytes>>();
        self.bridge_responders.insert(id, tx);
        let timeout = self.config.bridge_timeout;
        self.bridge_waiting.push(
            async move {
                if let Either::Left((Ok(Some(resp)), _)) = select(rx, Delay::new(timeout)).await {
                    let write = async {
                        write_lp(&mut stream, &resp).await?;
                        stream.close().await
                    };
                    let _ = select(write.boxed(), Delay::new(timeout)).await;
                }
                id
            }
            .boxed(),
        );
        self.events.push_back(ToBehaviour::BridgeRequest { stream_id: id, protocol, payload: Bytes::from(req) });
    }

    fn start_bridge_out(&mut self, id: MessageId, mut stream: Stream, payload: Bytes, expect: bool) {
        let max = self.config.max_message_size;
        let timeout = self.config.bridge_timeout;
        self.bridge_out.push(
            async move {
                let io = async {
                    write_lp(&mut stream, &payload).await?;
                    stream.close().await?;
                    if expect {
                        Ok::<_, std::io::Error>(Some(Bytes::from(read_lp(&mut stream, max).await?)))
                    } else {
                        Ok(None)
                    }
                };
                let result = match select(io.boxed(), Delay::new(timeout)).await {
                    Either::Left((Ok(v), _)) => Ok(v),
                    Either::Left((Err(e), _)) => Err(SendError::SessionClosed(format!("bridge stream: {e}"))),
                    Either::Right(_) => Err(SendError::TimedOut),
                };
                (id, result)
            }
            .boxed(),
        );
    }

    /// Writes queued bytes; returns an error message if the stream failed.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Option<String> {
        let OutState::Open(stream) = &mut self.out else { return None };
        if self.write_pos == 0 && self.write_queue.len() > 1 {
            coalesce(&mut self.write_queue);
        }
        while let Some(front) = self.write_queue.front() {
            let chunk = front.get(self.write_pos..).unwrap_or_default();
            match Pin::new(&mut *stream).poll_write(cx, chunk) {
                Poll::Ready(Ok(0)) => return Some("msgnet stream closed for writing".into()),
                Poll::Ready(Ok(n)) => {
                    self.write_pos += n;
                    if self.write_pos >= front.len() {
                        self.written += front.len();
                        self.write_queue.pop_front();
                        self.write_pos = 0;
                        self.needs_flush = true;
                    }
                }
                Poll::Ready(Err(e)) => return Some(format!("msgnet write: {e}")),
                Poll::Pending => break,
            }
        }
        if self.needs_flush && self.write_queue.is_empty() {
            match Pin::new(&mut *stream).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.needs_flush = false,
                Poll::Ready(Err(e)) => return Some(format!("msgnet flush: {e}")),
                Poll::Pending => {}
            }
        }
        None
    }
}

/// Merges the small chunks at the front of `queue` into one (up to [`WRITE_COALESCE`]
/// bytes), so that a burst of records costs one stream write. The byte sequence is
/// unchanged, and so is the credit: `Written` counts bytes.
fn coalesce(queue: &mut VecDeque<Bytes>) {
    let mut n = 0;
    let mut len = 0;
    for b in queue.iter() {
        if n > 0 && len + b.len() > WRITE_COALESCE {
            break;
        }
        len += b.len();
        n += 1;
    }
    if n < 2 {
        return;
    }
    let mut merged = Vec::with_capacity(len);
    for b in queue.drain(..n) {
        merged.extend_from_slice(&b);
    }
    queue.push_front(Bytes::from(merged));
}

impl ConnectionHandler for Handler {
    type FromBehaviour = FromBehaviour;
    type ToBehaviour = ToBehaviour;
    type InboundProtocol = InboundProtocols;
    type OutboundProtocol = ReadyUpgrade<StreamProtocol>;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = OutboundOpen;

    fn listen_protocol(&self) -> SubstreamProtocol<InboundProtocols, ()> {
        SubstreamProtocol::new(InboundProtocols { bridged: self.bridged.clone() }, ())
    }

    fn connection_keep_alive(&self) -> bool {
        // Open msgnet streams keep the connection by themselves (unless `keep_alive` is
        // off); this covers work that has no stream yet.
        !self.write_queue.is_empty()
            || !self.bridge_queue.is_empty()
            || self.bridge_opening > 0
            || matches!(self.out, OutState::Idle | OutState::Opening)
    }

    fn on_behaviour_event(&mut self, event: FromBehaviour) {
        match event {
            FromBehaviour::Write(bytes) => {
                if matches!(self.out, OutState::Done) {
                    // Nothing will be written: give the credit back.
                    self.written += bytes.len();
                } else {
                    self.write_queue.push_back(bytes);
                }
            }
            FromBehaviour::SetProtocols(p) => self.bridged = p,
            FromBehaviour::BridgeOut { id, protocol, payload, expect_response } => {
                self.bridge_queue.push_back((id, protocol, payload, expect_response));
            }
            FromBehaviour::BridgeRespond { stream_id, payload } => {
                if let Some(tx) = self.bridge_responders.remove(&stream_id) {
                    let _ = tx.send(payload);
                }
            }
        }
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<InboundProtocols, ReadyUpgrade<StreamProtocol>, (), OutboundOpen>,
    ) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol: (stream, protocol),
                ..
            }) => self.on_inbound(stream, protocol),
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound { protocol: mut stream, info }) => {
                match info {
                    OutboundOpen::Msgnet => {
                        if !self.config.keep_alive {
                            stream.ignore_for_keep_alive();
                        }
                        self.out = OutState::Open(stream);
                        self.resolved = true;
                        self.events.push_back(ToBehaviour::OutboundReady);
                    }
                    OutboundOpen::Bridge { id, payload, expect_response } => {
                        self.bridge_opening = self.bridge_opening.saturating_sub(1);
                        self.start_bridge_out(id, stream, payload, expect_response);
                    }
                }
            }
            ConnectionEvent::DialUpgradeError(DialUpgradeError { info, error }) => {
                let unsupported = matches!(error, StreamUpgradeError::NegotiationFailed);
                match info {
                    OutboundOpen::Msgnet => self.outbound_failed(unsupported, error.to_string()),
                    OutboundOpen::Bridge { id, .. } => {
                        self.bridge_opening = self.bridge_opening.saturating_sub(1);
                        let err = match error {
                            StreamUpgradeError::NegotiationFailed => {
                                SendError::UnsupportedProtocol(String::new())
                            }
                            StreamUpgradeError::Timeout => SendError::TimedOut,
                            e => SendError::SessionClosed(e.to_string()),
                        };
                        self.events.push_back(ToBehaviour::BridgeResult { id, result: Err(err) });
                    }
                }
            }
            ConnectionEvent::RemoteProtocolsChange(ProtocolsChange::Added(mut added)) => {
                // Identify's first report lists everything the peer offers; later ones
                // are differences.
                let list: Vec<&StreamProtocol> = added.by_ref().collect();
                let first = !std::mem::replace(&mut self.remote_reported, true);
                let lacks = first && !list.is_empty() && !list.contains(&&MSGNET);
                if lacks && !self.resolved && !matches!(self.out, OutState::Open(_)) {
                    self.resolved = true;
                    self.events.push_back(ToBehaviour::Unsupported);
                }
            }
            _ => {}
        }
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<ReadyUpgrade<StreamProtocol>, OutboundOpen, ToBehaviour>> {
        if matches!(self.out, OutState::Idle) {
            self.out = OutState::Opening;
            return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                protocol: SubstreamProtocol::new(ReadyUpgrade::new(MSGNET), OutboundOpen::Msgnet),
            });
        }
        if let Some(e) = self.events.pop_front() {
            return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(e));
        }
        if let Some(reason) = self.poll_write(cx) {
            self.outbound_failed(false, reason);
        }
        if self.written > 0 {
            let n = std::mem::take(&mut self.written);
            return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(ToBehaviour::Written(n)));
        }
        if let Some(e) = self.events.pop_front() {
            return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(e));
        }
        if let Some(stream) = self.inbound.as_mut() {
            match Pin::new(stream).poll_read(cx, &mut self.read_buf) {
                Poll::Ready(Ok(0)) => self.inbound = None,
                Poll::Ready(Ok(n)) => {
                    let bytes = Bytes::copy_from_slice(self.read_buf.get(..n).unwrap_or_default());
                    return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(ToBehaviour::Input(bytes)));
                }
                Poll::Ready(Err(e)) => {
                    tracing::debug!(error = %e, "msgnet inbound stream failed");
                    self.inbound = None;
                }
                Poll::Pending => {}
            }
        }
        if self.bridge_opening + self.bridge_out.len() < self.config.max_bridge_streams {
            if let Some((id, protocol, payload, expect_response)) = self.bridge_queue.pop_front() {
                self.bridge_opening += 1;
                return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                    protocol: SubstreamProtocol::new(
                        ReadyUpgrade::new(protocol),
                        OutboundOpen::Bridge { id, payload, expect_response },
                    )
                    .with_timeout(self.config.bridge_timeout),
                });
            }
        }
        if let Poll::Ready(Some((id, result))) = self.bridge_out.poll_next_unpin(cx) {
            return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(ToBehaviour::BridgeResult { id, result }));
        }
        while let Poll::Ready(Some((id, protocol, read))) = self.bridge_reading.poll_next_unpin(cx) {
            self.on_bridge_read(id, protocol, read);
        }
        while let Poll::Ready(Some(stream_id)) = self.bridge_waiting.poll_next_unpin(cx) {
            if self.bridge_responders.remove(&stream_id).is_some() {
                // Timed out before the behaviour answered.
                self.events.push_back(ToBehaviour::BridgeInboundDone { stream_id });
            }
        }
        if let Some(e) = self.events.pop_front() {
            return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(e));
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalesce_keeps_bytes_and_bounds_chunks() {
        let chunks: Vec<Bytes> = (0u8..10).map(|i| Bytes::from(vec![i; 100])).collect();
        let mut q: VecDeque<Bytes> = chunks.iter().cloned().collect();
        q.push_back(Bytes::from(vec![0xee; WRITE_COALESCE]));
        q.push_back(Bytes::from_static(b"tail"));
        let before: Vec<u8> = q.iter().flat_map(|b| b.to_vec()).collect();
        coalesce(&mut q);
        // The ten small chunks became one; the large one is not merged past the bound.
        assert_eq!(q.len(), 3);
        assert_eq!(q[0].len(), 1000);
        assert_eq!(q[1].len(), WRITE_COALESCE);
        let after: Vec<u8> = q.iter().flat_map(|b| b.to_vec()).collect();
        assert_eq!(after, before);
        // A single chunk is left alone.
        let mut one: VecDeque<Bytes> = VecDeque::from(vec![Bytes::from_static(b"x")]);
        coalesce(&mut one);
        assert_eq!(one, VecDeque::from(vec![Bytes::from_static(b"x")]));
    }
}
