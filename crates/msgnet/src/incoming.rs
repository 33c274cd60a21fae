//! Handler side of the Host API: [`Incoming`] (one protocol's stream of inbound messages)
//! and [`IncomingMessage`] (one message, with the means to answer it if it is a request).
//!
//! Owns the handler registry shared with the driver: a map from protocol id to the
//! bounded queue of that protocol's handler. Dropping an [`Incoming`] removes its entry and
//! tells the driver to unregister the protocol; dropping an unanswered request answers it
//! with error code 1 so that the requester fails fast instead of timing out.

use std::collections::HashMap;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use libp2p_identity::PeerId;
use msgnet_core::{InboundRequest, SendError};
use tokio::sync::mpsc;

use crate::command::Via;
use crate::driver::Ctl;

/// Error code sent when a request is dropped without an answer.
pub(crate) const DROPPED_CODE: u8 = 1;
/// Reason sent when a request is dropped without an answer.
pub(crate) const DROPPED_REASON: &str = "handler dropped the request";

/// One registered handler: its identity (to tell a handler from its replacement) and queue.
pub(crate) struct HandlerEntry {
    pub(crate) id: u64,
    pub(crate) tx: mpsc::Sender<IncomingMessage>,
}

/// Protocol id → handler. Shared by host handles, `Incoming`s and the driver.
#[derive(Default)]
pub(crate) struct Registry {
    next_id: AtomicU64,
    map: Mutex<HashMap<String, HandlerEntry>>,
}

impl Registry {
    pub(crate) fn lock(&self) -> MutexGuard<'_, HashMap<String, HandlerEntry>> {
        // A panic while holding this lock cannot leave the map inconsistent (every
        // critical section is a single insert/remove/lookup), so poisoning is ignored.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Inserts a handler for `protocol` unless one exists; returns its id and queue.
    pub(crate) fn insert(
        &self,
        protocol: &str,
        capacity: usize,
    ) -> Option<(u64, mpsc::Receiver<IncomingMessage>)> {
        let mut map = self.lock();
        if map.contains_key(protocol) {
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(capacity.max(1));
        map.insert(protocol.to_owned(), HandlerEntry { id, tx });
        Some((id, rx))
    }

    /// Removes the handler of `protocol` if it is the one with `id` (any, if `None`).
    pub(crate) fn remove(&self, protocol: &str, id: Option<u64>) -> bool {
        let mut map = self.lock();
        match map.get(protocol) {
            Some(entry) if id.is_none_or(|id| id == entry.id) => {
                map.remove(protocol);
                true
            }
            _ => false,
        }
    }

    /// The queue of `protocol`'s handler, if any.
    pub(crate) fn sender(&self, protocol: &str) -> Option<(u64, mpsc::Sender<IncomingMessage>)> {
        self.lock().get(protocol).map(|e| (e.id, e.tx.clone()))
    }

    pub(crate) fn contains(&self, protocol: &str) -> bool {
        self.lock().contains_key(protocol)
    }

    pub(crate) fn clear(&self) {
        let drained: Vec<_> = self.lock().drain().collect();
        drop(drained); // outside the lock: dropping queues drops messages, which may respond
    }
}

/// The inbound messages of one protocol, returned by [`Host::handle`](crate::Host::handle).
///
/// A [`Stream`](futures::Stream) of [`IncomingMessage`]s; [`Incoming::recv`] is the same as
/// an `async fn`. The stream ends when the handler is removed
/// ([`Host::remove_handler`](crate::Host::remove_handler)) or the host closes. Dropping it
/// removes the handler: the peer's later sends on this protocol then fail with
/// [`SendError::UnsupportedProtocol`].
///
/// The queue is bounded ([`HostBuilder::handler_queue`](crate::HostBuilder::handler_queue));
/// a handler that does not keep up stalls the host's driver, see the crate docs.
pub struct Incoming {
    protocol: String,
    id: u64,
    rx: mpsc::Receiver<IncomingMessage>,
    registry: Arc<Registry>,
    ctl: mpsc::UnboundedSender<Ctl>,
}

impl Incoming {
    pub(crate) fn new(
        protocol: String,
        id: u64,
        rx: mpsc::Receiver<IncomingMessage>,
        registry: Arc<Registry>,
        ctl: mpsc::UnboundedSender<Ctl>,
    ) -> Self {
        Self { protocol, id, rx, registry, ctl }
    }

    /// The protocol id this handler serves.
    pub fn protocol(&self) -> &str {
        &self.protocol
    }

    /// The next message, or `None` once the handler is removed or the host closed.
    pub async fn recv(&mut self) -> Option<IncomingMessage> {
        self.rx.recv().await
    }
}

impl futures::Stream for Incoming {
    type Item = IncomingMessage;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().rx.poll_recv(cx)
    }
}

impl fmt::Debug for Incoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming").field("protocol", &self.protocol).finish_non_exhaustive()
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if self.registry.remove(&self.protocol, Some(self.id)) {
            let _ = self.ctl.send(Ctl::Unregister { protocol: std::mem::take(&mut self.protocol) });
        }
        // Messages still queued are dropped with the receiver; unanswered requests among
        // them answer themselves with an error (see `Responder`'s `Drop`).
    }
}

/// One inbound message (or request) delivered to a handler.
///
/// If it is a request ([`is_request`](Self::is_request)), answer it with
/// [`respond`](Self::respond) or [`fail`](Self::fail). Dropping an unanswered request sends
/// an error response (code 1, "handler dropped the request").
pub struct IncomingMessage {
    /// The sender, authenticated by the session handshake.
    pub peer: PeerId,
    /// The protocol id the message was sent on.
    pub protocol: String,
    /// The message bytes.
    pub payload: Bytes,
    responder: Option<Responder>,
}

impl IncomingMessage {
    pub(crate) fn new(
        msg: msgnet_core::IncomingMessage,
        ctl: &mpsc::UnboundedSender<Ctl>,
        via: Via,
    ) -> Self {
        Self {
            peer: msg.peer,
            protocol: msg.protocol.to_string(),
            payload: msg.payload,
            responder: msg.request.map(|request| Responder { request: Some(request), via, ctl: ctl.clone() }),
        }
    }

    /// Whether the sender expects a response.
    pub fn is_request(&self) -> bool {
        self.responder.is_some()
    }

    /// Answers the request with `payload`.
    ///
    /// # Errors
    ///
    /// [`SendError::UnknownRequest`] if this message is not a request;
    /// [`SendError::Closed`] if the host is closed.
    pub fn respond(mut self, payload: impl Into<Bytes>) -> Result<(), SendError> {
        match self.responder.take() {
            Some(responder) => responder.send(Ok(payload.into())),
            None => Err(SendError::UnknownRequest),
        }
    }

    /// Fails the request: the requester's call returns
    /// [`SendError::Remote`]` { code, reason }`.
    ///
    /// # Errors
    ///
    /// As [`respond`](Self::respond).
    pub fn fail(mut self, code: u8, reason: &str) -> Result<(), SendError> {
        match self.responder.take() {
            Some(responder) => responder.send(Err((code, reason.to_owned()))),
            None => Err(SendError::UnknownRequest),
        }
    }
}

impl fmt::Debug for IncomingMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IncomingMessage")
            .field("peer", &self.peer)
            .field("protocol", &self.protocol)
            .field("payload_len", &self.payload.len())
            .field("is_request", &self.is_request())
            .finish()
    }
}

/// The answering half of an inbound request; answers with an error when dropped unused.
struct Responder {
    request: Option<InboundRequest>,
    /// The side the request came from; the response goes back the same way.
    via: Via,
    ctl: mpsc::UnboundedSender<Ctl>,
}

impl Responder {
    fn send(mut self, result: Result<Bytes, (u8, String)>) -> Result<(), SendError> {
        let request = self.request.take().ok_or(SendError::UnknownRequest)?;
        self.ctl.send(Ctl::Respond { request, via: self.via, result }).map_err(|_| SendError::Closed)
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if let Some(request) = self.request.take() {
            let result = Err((DROPPED_CODE, DROPPED_REASON.to_owned()));
            let _ = self.ctl.send(Ctl::Respond { request, via: self.via, result });
        }
    }
}
