//! Sans-IO message services on a [`Host`]: [`ServiceHandle::spawn`] runs any [`Service`]
//! (a protocol state machine that sees messages only, such as Kademlia) on one tokio task.
//!
//! The task owns the service and calls it as the simulator (`msgnet-sim`) calls its
//! services:
//!
//! - it registers a handler for each protocol given to [`ServiceHandle::spawn`]; every
//!   inbound message goes to [`Service::handle_message`] with the sender's datagram
//!   addresses (the remote addresses of its UDP sessions and QUIC connections, which are
//!   the addresses it listens on; TCP remotes are not); for a request, the returned
//!   [`Reply`] is sent back (`None`: the request is dropped, which fails it);
//! - every [`Output`] goes out with [`Host::request`] or [`Host::send`] (at most
//!   [`Output::timeout`]) after its addresses were given to [`Host::add_address`]; its
//!   outcome goes to [`Service::handle_outcome`] under the output's token, exactly once;
//! - a timer follows [`Service::poll_timeout`] and calls [`Service::handle_timeout`];
//! - after every input, [`Service::poll_output`] and [`Service::poll_done`] are drained
//!   and the timer re-armed;
//! - [`ServiceHandle::call`] runs a closure on the service (state, hints);
//!   [`ServiceHandle::command`] starts a command (e.g. a lookup) and waits until the
//!   service reports it done.
//!
//! Queues: calls ([`CALL_QUEUE`]); inbound messages waiting for their sender's addresses
//! ([`MAX_INBOUND`]; beyond it the host backpressures); outputs in flight and commands
//! waiting to be done (bounded by what the service emits and accepts); addresses handed to
//! the host ([`ADDR_CACHE`] peers). The task ends
//! on [`ServiceHandle::close`] or when the last handle is dropped; the handlers are then
//! removed. The host stays open.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use futures::stream::{select_all, FuturesUnordered, SelectAll};
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};

use crate::{Bytes, Host, HostError, Incoming, IncomingMessage, Multiaddr, PeerId, Transport};
pub use msgnet_core::service::{Outcome, OutputKind, Reply};
use msgnet_core::SendError;
use multiaddr::Protocol;

/// Bound of the call queue from handles to the task.
pub const CALL_QUEUE: usize = 64;

/// Most inbound messages waiting for their sender's addresses.
pub const MAX_INBOUND: usize = 256;

/// Most peers whose addresses the task remembers having given to the host.
pub const ADDR_CACHE: usize = 4096;

/// Addresses remembered per peer.
const ADDRS_PER_PEER: usize = 64;

/// A message a service wants sent.
#[derive(Debug, Clone)]
pub struct Output {
    /// Chosen by the service; handed back with the outcome.
    pub token: u64,
    /// Destination.
    pub peer: PeerId,
    /// Addresses for `peer` to give the host first (may be empty if it knows better).
    pub addrs: Vec<Multiaddr>,
    /// Protocol id.
    pub protocol: String,
    /// Payload.
    pub payload: Bytes,
    /// Message or request.
    pub kind: OutputKind,
    /// The outcome is [`SendError::TimedOut`] if the response (or the acknowledgement of a
    /// message) has not come after this long.
    pub timeout: Duration,
}

/// A sans-IO protocol state machine run by [`ServiceHandle::spawn`]. Every method takes
/// the current instant; see the module docs for the call order.
pub trait Service: Send + 'static {
    /// What a finished command hands back (see [`ServiceHandle::command`]).
    type Done: Send + 'static;

    /// An inbound message or request from `msg.peer`, reachable at `remote` (its datagram
    /// listen addresses, possibly none). For a request, `Some` is sent back.
    fn handle_message(
        &mut self,
        now: Instant,
        msg: &IncomingMessage,
        remote: &[Multiaddr],
    ) -> Option<Reply>;

    /// The outcome of the output with `token`.
    fn handle_outcome(&mut self, now: Instant, token: u64, outcome: Outcome);

    /// The deadline from [`Service::poll_timeout`] has passed (may be called late, never
    /// early).
    fn handle_timeout(&mut self, now: Instant);

    /// When to call [`Service::handle_timeout`] next.
    fn poll_timeout(&self) -> Option<Instant>;

    /// The next message to send.
    fn poll_output(&mut self) -> Option<Output>;

    /// The next finished command: its id (as returned to [`ServiceHandle::command`]) and
    /// its outcome.
    fn poll_done(&mut self) -> Option<(u64, Self::Done)>;
}

/// The host's listen addresses that peers can dial, for a service to announce as its own:
/// those with an unspecified IP (`0.0.0.0`, `::`) are left out.
pub fn dialable_listen_addrs(host: &Host) -> Vec<Multiaddr> {
    let unspecified = |p: Protocol| match p {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    };
    let listen = host.listen_addrs().into_iter();
    listen.filter(|a| !a.iter().any(unspecified)).collect()
}

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Commands waiting to be done, by id.
type Waiting<S> = HashMap<u64, oneshot::Sender<<S as Service>::Done>>;

/// A closure run on the task.
type RunFn<S> = Box<dyn FnOnce(&mut S, Instant, &mut Waiting<S>) + Send>;

/// What a handle asks of the task: run a closure, or stop (and say so once stopped).
enum Call<S: Service> {
    Run(RunFn<S>),
    Close(oneshot::Sender<()>),
}

/// A handle onto the task running a [`Service`] on a [`Host`]. Cheap to clone: clones
/// share one task.
pub struct ServiceHandle<S: Service> {
    tx: mpsc::Sender<Call<S>>,
}

impl<S: Service> Clone for ServiceHandle<S> {
    fn clone(&self) -> Self {
        ServiceHandle {
            tx: self.tx.clone(),
        }
    }
}

impl<S: Service> std::fmt::Debug for ServiceHandle<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceHandle").finish_non_exhaustive()
    }
}

/// The task is gone ([`ServiceHandle::close`], or every handle was dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("service closed")]
pub struct Closed;

impl<S: Service> ServiceHandle<S> {
    /// Starts a task on the current tokio runtime that runs `service` on `host`, handling
    /// `protocols` (none: the service only sends).
    /// Errors: as [`Host::handle`] (a handler exists, invalid protocol id, host closed).
    pub fn spawn(host: &Host, protocols: &[&str], service: S) -> Result<Self, HostError> {
        let incoming: Vec<Incoming> = protocols
            .iter()
            .map(|p| host.handle(p))
            .collect::<Result<_, _>>()?;
        let (tx, rx) = mpsc::channel(CALL_QUEUE);
        let task = Task {
            service,
            host: host.clone(),
            incoming: select_all(incoming),
            inbound: FuturesUnordered::new(),
            outbound: FuturesUnordered::new(),
            known_addrs: HashMap::new(),
            waiting: HashMap::new(),
        };
        tokio::spawn(task.run(rx));
        Ok(ServiceHandle { tx })
    }

    /// Runs `f` on the service (its outputs are sent right after) and returns its result.
    /// Errors: [`Closed`].
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut S) -> T + Send + 'static,
    ) -> Result<T, Closed> {
        self.run(|s, _, _| f(s)).await
    }

    /// Runs `start` on the service with the current instant (the task's clock, as for every
    /// other call into the service); if it started a command (`Ok(id)`), waits until the
    /// service reports command `id` done ([`Service::poll_done`]) and returns its outcome.
    /// Errors: [`Closed`], also if the task stops before the command is done.
    pub async fn command<E: Send + 'static>(
        &self,
        start: impl FnOnce(&mut S, Instant) -> Result<u64, E> + Send + 'static,
    ) -> Result<Result<S::Done, E>, Closed> {
        let (done, rx) = oneshot::channel();
        let started =
            self.run(move |s, now, waiting| start(s, now).map(|id| waiting.insert(id, done)));
        match started.await? {
            Ok(_) => rx.await.map(Ok).map_err(|_| Closed),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut S, Instant, &mut Waiting<S>) -> T + Send + 'static,
    ) -> Result<T, Closed> {
        let (reply, rx) = oneshot::channel();
        let run = Box::new(move |s: &mut S, now: Instant, waiting: &mut Waiting<S>| {
            let _ = reply.send(f(s, now, waiting));
        });
        self.tx.send(Call::Run(run)).await.map_err(|_| Closed)?;
        rx.await.map_err(|_| Closed)
    }

    /// Stops the task (the handlers are removed, the service dropped); resolves once it
    /// stopped. Later calls fail with [`Closed`].
    pub async fn close(&self) {
        let (stopped, rx) = oneshot::channel();
        if self.tx.send(Call::Close(stopped)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

struct Task<S: Service> {
    service: S,
    host: Host,
    incoming: SelectAll<Incoming>,
    /// Inbound messages waiting for their sender's addresses.
    inbound: FuturesUnordered<BoxFut<(IncomingMessage, Vec<Multiaddr>)>>,
    outbound: FuturesUnordered<BoxFut<(u64, Outcome)>>,
    /// Addresses given to the host (at most [`ADDR_CACHE`] peers).
    known_addrs: HashMap<PeerId, HashSet<Multiaddr>>,
    waiting: Waiting<S>,
}

impl<S: Service> Task<S> {
    async fn run(mut self, mut calls: mpsc::Receiver<Call<S>>) {
        // Without a deadline the timer is parked an hour ahead: an elapsed `Sleep` stays
        // ready, so it must be re-armed every turn, not only when the service has one.
        let parked = || tokio::time::Instant::now() + Duration::from_secs(3600);
        let sleep = tokio::time::sleep_until(parked());
        tokio::pin!(sleep);
        let stopped = loop {
            self.flush();
            let deadline = self.service.poll_timeout();
            sleep
                .as_mut()
                .reset(deadline.map_or_else(parked, tokio::time::Instant::from_std));
            // An empty `SelectAll` (no handler, or the host closed) is always ready.
            let accept = !self.incoming.is_empty() && self.inbound.len() < MAX_INBOUND;
            tokio::select! {
                call = calls.recv() => match call {
                    Some(Call::Run(f)) => f(&mut self.service, Instant::now(), &mut self.waiting),
                    Some(Call::Close(stopped)) => break Some(stopped),
                    None => break None,
                },
                Some(msg) = self.incoming.next(), if accept => self.accept(msg),
                Some((msg, addrs)) = self.inbound.next(), if !self.inbound.is_empty() => {
                    self.deliver(msg, &addrs);
                }
                Some((token, outcome)) = self.outbound.next(), if !self.outbound.is_empty() => {
                    self.service.handle_outcome(Instant::now(), token, outcome);
                }
                () = &mut sleep => self.service.handle_timeout(Instant::now()),
            }
        };
        // Dropping the `Incoming`s removes the handlers.
        drop(self);
        if let Some(stopped) = stopped {
            let _ = stopped.send(());
        }
    }

    /// An inbound message: look up the sender's addresses first.
    fn accept(&mut self, msg: IncomingMessage) {
        let host = self.host.clone();
        self.inbound.push(Box::pin(async move {
            // A session still finishing its handshake (0-RTT) has the peer's address too.
            let mut addrs: Vec<Multiaddr> = host
                .connections(msg.peer)
                .await
                .into_iter()
                .filter(|c| matches!(c.transport, Transport::Udp | Transport::Quic))
                .map(|c| c.remote)
                .collect();
            addrs.dedup();
            (msg, addrs)
        }));
    }

    fn deliver(&mut self, msg: IncomingMessage, addrs: &[Multiaddr]) {
        let reply = self.service.handle_message(Instant::now(), &msg, addrs);
        // A failed answer means the requester is gone: nothing to do. An unanswered
        // request is failed when `msg` is dropped.
        let _ = match reply {
            Some(Ok(payload)) if msg.is_request() => msg.respond(payload),
            Some(Err((code, reason))) if msg.is_request() => msg.fail(code, &reason),
            _ => Ok(()),
        };
    }

    /// Gives `addrs` of `peer` to the host unless already given.
    fn tell_host(&mut self, peer: PeerId, addrs: &[Multiaddr]) {
        if self.known_addrs.len() >= ADDR_CACHE && !self.known_addrs.contains_key(&peer) {
            self.known_addrs.clear();
        }
        let known = self.known_addrs.entry(peer).or_default();
        for a in addrs {
            if known.len() < ADDRS_PER_PEER && known.insert(a.clone()) {
                // Addresses of a shape the host does not speak are skipped.
                let _ = self.host.add_address(peer, a.clone());
            }
        }
    }

    /// Sends the service's outputs and answers the commands it finished.
    fn flush(&mut self) {
        while let Some((id, done)) = self.service.poll_done() {
            if let Some(waiter) = self.waiting.remove(&id) {
                let _ = waiter.send(done);
            }
        }
        while let Some(out) = self.service.poll_output() {
            self.tell_host(out.peer, &out.addrs);
            let (host, token, timeout) = (self.host.clone(), out.token, out.timeout);
            if out.kind == OutputKind::Request {
                self.outbound.push(Box::pin(async move {
                    let r = host.request(out.peer, &out.protocol, out.payload, timeout);
                    (token, Outcome::Response(r.await))
                }));
                continue;
            }
            // The message is handed to the host now; the future waits for the ack.
            let send = host.send(out.peer, &out.protocol, out.payload);
            self.outbound.push(Box::pin(async move {
                let r = tokio::time::timeout(timeout, send).await;
                (token, Outcome::Sent(r.unwrap_or(Err(SendError::TimedOut))))
            }));
        }
    }
}
