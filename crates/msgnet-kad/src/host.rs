//! [`Dht`]: the [`Kademlia`] state machine running on a [`msgnet::Host`] (feature `host`).
//!
//! A [`Dht`] is a cloneable handle onto one tokio task that owns the [`Kademlia`] and
//! drives it with the host's message API on [`PROTOCOL`] only, so it talks to msgnet nodes
//! and, through the host's stream bridge, to libp2p DHT nodes alike:
//!
//! - in [`Mode::Server`] the task registers the [`PROTOCOL`] handler and answers every
//!   request with [`Kademlia::handle_request`]; the requester's address is taken from
//!   [`Host::connections`] (UDP and QUIC remote addresses are listen addresses, TCP ones
//!   are not, so TCP requesters are learned only when we query them ourselves);
//! - every [`OutboundRequest`](crate::OutboundRequest) goes out with [`Host::request`]
//!   (one-way ADD_PROVIDER with [`Host::send`]) after its addresses were given to
//!   [`Host::add_address`]; the outcome goes back to [`Kademlia::handle_response`];
//! - a tokio timer follows [`Kademlia::poll_timeout`];
//! - each command's future resolves with its query's outcome; ADD_PROVIDER once the host
//!   acknowledged or failed every announcement, so a short-lived process has its record
//!   stored before it exits.
//!
//! A requester not yet in the routing table is learned only after it answered a probe
//! (FIND_NODE of our id) on [`PROTOCOL`]: the host does not say which protocols a peer
//! serves, and client-mode nodes answer nothing. A requester is probed only if its bucket
//! could take it, and at most once per [`CHECK_AFTER`].
//!
//! Queues: commands ([`COMMAND_QUEUE`]); inbound requests waiting for their requester's
//! address ([`MAX_INBOUND`]; beyond it the host backpressures); outbound requests (bounded
//! by [`KadConfig::max_queries`]); addresses handed to the host ([`ADDR_CACHE`] peers).
//! The task ends on [`Dht::close`] or when the last handle is dropped; waiting commands
//! then fail with [`DhtError::Closed`]. The host stays open (close it separately).
//!
//! ```
//! use msgnet::{Host, Keypair};
//! use msgnet_kad::host::Dht;
//! use msgnet_kad::{KadConfig, Record};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let listen: msgnet::Multiaddr = "/ip4/127.0.0.1/udp/0".parse()?;
//! let a = Host::builder(Keypair::generate_ed25519()).listen(listen.clone()).build().await?;
//! let b = Host::builder(Keypair::generate_ed25519()).listen(listen).build().await?;
//! let dht_a = Dht::new(&a, KadConfig::default())?;
//! let dht_b = Dht::new(&b, KadConfig::default())?;
//!
//! // b joins through a.
//! dht_b.add_address(a.local_peer_id(), a.listen_addrs()[0].clone()).await?;
//! dht_b.bootstrap().await?;
//!
//! let put = dht_b.put_value(Record::new(b"/v/greeting".to_vec(), b"hello".to_vec()), 1).await?;
//! assert_eq!(put.stored, 1);
//! let got = dht_a.get_value(b"/v/greeting".to_vec(), 1).await?;
//! assert_eq!(got.record.value, b"hello");
//!
//! dht_a.close().await;
//! dht_b.close().await;
//! a.close().await;
//! b.close().await;
//! # Ok(())
//! # }
//! ```

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use libp2p_identity::PeerId;
use msgnet::{Bytes, Host, HostError, Incoming, IncomingMessage, SendError, Transport};
use multiaddr::{Multiaddr, Protocol};
use tokio::sync::{mpsc, oneshot};

use crate::table::CHECK_AFTER;
use crate::wire::{Message, MessageType};
use crate::{
    KadConfig, KadError, KadEvent, KadStats, Kademlia, Mode, PeerInfo, QueryId, QueryResult,
    QueryStats, Record, RequestFailure, RequestId, PROTOCOL,
};

/// Most peers whose addresses the task remembers having given to the host.
pub const ADDR_CACHE: usize = 4096;

/// Bound of the command queue from handles to the task.
pub const COMMAND_QUEUE: usize = 64;

/// Most inbound requests waiting for their requester's address.
pub const MAX_INBOUND: usize = 256;

/// Most requesters probed at once (see `Task::answer`).
const MAX_PROBES: usize = 64;

/// A requester is probed at most once in this long (see `Task::probe`).
const PROBE_AGAIN: Duration = CHECK_AFTER;

/// Error code of a request the service refused (malformed, invalid, client mode).
const REFUSED_CODE: u8 = 2;

/// Why a [`Dht`] call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DhtError {
    /// Kademlia refused the command (no known peers, too many queries, invalid record,
    /// store full).
    #[error(transparent)]
    Kad(#[from] KadError),
    /// The host refused (registering the handler, an address).
    #[error(transparent)]
    Host(#[from] HostError),
    /// The lookup finished without finding what was asked for (no record, no provider,
    /// not the peer).
    #[error("not found (after {} requests in {} rounds)", .stats.requests, .stats.rounds)]
    NotFound {
        /// The lookup's counters.
        stats: QueryStats,
    },
    /// Fewer peers than asked for stored the record or the provider announcement.
    #[error("stored on {stored} peers, {quorum} required")]
    QuorumFailed {
        /// Peers that acknowledged.
        stored: usize,
        /// Peers required.
        quorum: usize,
        /// The query's counters.
        stats: QueryStats,
    },
    /// The DHT task has stopped ([`Dht::close`], or it was dropped).
    #[error("dht closed")]
    Closed,
}

/// Outcome of [`Dht::bootstrap`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Bootstrapped {
    /// Routing table size afterwards.
    pub table_size: usize,
    /// The query's counters (the last of its lookups).
    pub stats: QueryStats,
}

/// Outcome of [`Dht::find_node`] and [`Dht::get_providers`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FoundPeers {
    /// `find_node`: the k closest peers that answered, closest first. `get_providers`: the
    /// providers found (ourselves included if we provide the key), at most
    /// [`KadConfig::max_providers_per_key`].
    pub peers: Vec<PeerInfo>,
    /// The lookup's counters.
    pub stats: QueryStats,
}

/// Outcome of [`Dht::find_peer`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FoundPeer {
    /// The peer and the addresses the lookup learned for it.
    pub peer: PeerInfo,
    /// The lookup's counters.
    pub stats: QueryStats,
}

/// Outcome of [`Dht::get_value`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FoundRecord {
    /// The best valid record found.
    pub record: Record,
    /// At least `quorum` peers (counting ourselves) returned a valid record.
    pub quorum_met: bool,
    /// The lookup's counters.
    pub stats: QueryStats,
}

/// Outcome of [`Dht::put_value`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PutRecord {
    /// Peers (among the k closest) that acknowledged the PUT_VALUE.
    pub stored: usize,
    /// The query's counters.
    pub stats: QueryStats,
}

/// Outcome of [`Dht::start_providing`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Provided {
    /// Peers (among the k closest) the ADD_PROVIDER announcement was sent to.
    pub sent: usize,
    /// Of those, the ones whose host acknowledged the message (for libp2p peers reached
    /// through the stream bridge: the stream was written).
    pub acked: usize,
    /// The query's counters.
    pub stats: QueryStats,
}

/// Node-wide figures, from [`Dht::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DhtStats {
    /// Peers in the routing table.
    pub table_size: usize,
    /// Queries running.
    pub active_queries: usize,
    /// Outbound requests in flight on the host.
    pub requests_in_flight: usize,
    /// Kademlia's counters.
    pub kad: KadStats,
}

/// What a finished query hands back to its command: its outcome, its counters and (for
/// ADD_PROVIDER) how many announcements the host acknowledged.
type Finished = (QueryResult, QueryStats, usize);

type Reply<T> = oneshot::Sender<Result<T, DhtError>>;

/// A command from a handle, run by the task.
type Cmd = Box<dyn FnOnce(&mut Task) + Send>;

/// A command waiting for its query to finish and for the host to acknowledge (or fail)
/// the query's one-way ADD_PROVIDER messages.
struct Waiter {
    reply: Reply<Finished>,
    finished: Option<(QueryResult, QueryStats)>,
    unacked: usize,
    acked: usize,
}

/// A Kademlia DHT node on a [`Host`]. See the module docs.
///
/// Cheap to clone: clones share one task. Each query method sends one command and waits
/// for the query's outcome (at most [`KadConfig::query_timeout`], after which the query
/// finishes with what it has).
#[derive(Clone, Debug)]
pub struct Dht {
    tx: mpsc::Sender<Cmd>,
}

impl Dht {
    /// Starts the DHT task on `host` (on the current tokio runtime). In server mode
    /// ([`KadConfig::mode`]) this registers the [`PROTOCOL`] handler. A zero
    /// [`KadConfig::rng_seed`] is replaced by one derived from the host's peer id, so that
    /// nodes differ. Our addresses (sent in provider records, used by peers that learn us)
    /// are the host's listen addresses except those with an unspecified IP (`0.0.0.0`,
    /// `::`), which no peer can dial, until [`set_local_addrs`](Self::set_local_addrs).
    /// Errors: [`DhtError::Host`] if the handler cannot be registered (another one exists, or the
    /// host is closed).
    pub fn new(host: &Host, mut kad: KadConfig) -> Result<Dht, DhtError> {
        let local = host.local_peer_id();
        if kad.rng_seed == 0 {
            let id = local.to_bytes();
            let tail = id.len().saturating_sub(8);
            let seed: [u8; 8] = id[tail..].try_into().unwrap_or_default();
            kad.rng_seed = u64::from_le_bytes(seed) | 1;
        }
        let incoming = match kad.mode {
            Mode::Server => Some(host.handle(PROTOCOL)?),
            Mode::Client => None,
        };
        let mut kademlia = Kademlia::new(local, kad, Instant::now());
        let listen = host.listen_addrs().into_iter();
        kademlia.set_local_addrs(listen.filter(|a| !is_unspecified(a)).collect());
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let task = Task {
            kad: kademlia,
            host: host.clone(),
            incoming,
            inbound: FuturesUnordered::new(),
            outbound: FuturesUnordered::new(),
            waiting: HashMap::new(),
            known_addrs: HashMap::new(),
            probing: HashSet::new(),
            probed: HashMap::new(),
            closed: None,
        };
        tokio::spawn(task.run(rx));
        Ok(Dht { tx })
    }

    /// Our addresses as peers should dial them, sent in provider records and used by
    /// peers that learn us (replacing the default of [`new`](Self::new)).
    /// Errors: [`DhtError::Closed`].
    pub async fn set_local_addrs(&self, addrs: Vec<Multiaddr>) -> Result<(), DhtError> {
        self.call(|task| task.kad.set_local_addrs(addrs)).await
    }

    /// A known address of a DHT server (a bootstrap node): given to the host and to the
    /// routing table. `addr` may end in `/p2p/<peer>`.
    /// Errors: [`DhtError::Host`] if the host refuses the address; [`DhtError::Closed`].
    pub async fn add_address(&self, peer: PeerId, addr: Multiaddr) -> Result<(), DhtError> {
        self.call(move |task| {
            task.host.add_address(peer, addr.clone())?;
            let mut bare = addr;
            if matches!(bare.iter().last(), Some(Protocol::P2p(_))) {
                bare.pop();
            }
            task.kad.add_address(peer, bare);
            Ok(())
        })
        .await?
    }

    /// Adds a bootstrap node given as `<address>/p2p/<peer id>`; returns its peer id.
    /// Errors: [`DhtError::Host`] (with [`HostError::MissingPeerId`]) without `/p2p`; as
    /// [`add_address`](Self::add_address).
    pub async fn add_bootstrap(&self, addr: &Multiaddr) -> Result<PeerId, DhtError> {
        let (peer, bare) = Host::dial_info(addr)?;
        self.add_address(peer, bare).await?;
        Ok(peer)
    }

    /// Joins the DHT: looks up our own id, then refreshes every bucket.
    /// Errors: [`KadError::NoKnownPeers`] (as [`DhtError::Kad`]) without bootstrap addresses;
    /// [`DhtError::NotFound`] if no peer answered; [`DhtError::Closed`].
    pub async fn bootstrap(&self) -> Result<Bootstrapped, DhtError> {
        match self.query(|kad, now| kad.bootstrap(now)).await? {
            (QueryResult::Bootstrapped { table_size }, stats, _) if stats.success > 0 => {
                Ok(Bootstrapped { table_size, stats })
            }
            (_, stats, _) => Err(DhtError::NotFound { stats }),
        }
    }

    /// Finds the k peers closest to `key` (any bytes; a peer id's bytes for a peer).
    /// Errors: [`DhtError::NotFound`] if no peer answered; [`DhtError::Kad`]; [`DhtError::Closed`].
    pub async fn find_node(&self, key: Vec<u8>) -> Result<FoundPeers, DhtError> {
        match self.query(|kad, now| kad.find_node(now, key)).await? {
            (QueryResult::FoundPeers(peers), stats, _) if !peers.is_empty() => {
                Ok(FoundPeers { peers, stats })
            }
            (_, stats, _) => Err(DhtError::NotFound { stats }),
        }
    }

    /// Finds `peer` and its addresses: a [`find_node`](Self::find_node) for its id that
    /// succeeds if the peer itself answered. The addresses are also given to the host, so
    /// the peer can be sent to right away.
    /// Errors: [`DhtError::NotFound`] if the lookup did not reach the peer; as `find_node`.
    pub async fn find_peer(&self, peer: PeerId) -> Result<FoundPeer, DhtError> {
        let FoundPeers { peers, stats } = self.find_node(peer.to_bytes()).await?;
        match peers.into_iter().find(|p| p.peer == peer) {
            Some(peer) => Ok(FoundPeer { peer, stats }),
            None => Err(DhtError::NotFound { stats }),
        }
    }

    /// Finds the record under `key`, asking until `quorum` peers (counting ourselves)
    /// returned a valid one or the lookup ends (quorum 1: the first valid record); the
    /// validator picks the best.
    /// Errors: [`DhtError::NotFound`] if no peer returned a valid record; [`DhtError::Kad`];
    /// [`DhtError::Closed`]. Finding fewer than `quorum` copies is not an error: see
    /// [`FoundRecord::quorum_met`].
    pub async fn get_value(&self, key: Vec<u8>, quorum: usize) -> Result<FoundRecord, DhtError> {
        let get = move |kad: &mut Kademlia, now| kad.get_value(now, key, quorum);
        match self.query(get).await? {
            (
                QueryResult::FoundRecord {
                    record: Some(record),
                    quorum_met,
                },
                stats,
                _,
            ) => Ok(FoundRecord {
                record,
                quorum_met,
                stats,
            }),
            (_, stats, _) => Err(DhtError::NotFound { stats }),
        }
    }

    /// Stores `record` locally and on the k closest peers; succeeds once at least
    /// `quorum` (at least 1) of them acknowledged. Resolves after every PUT_VALUE was
    /// answered or failed.
    /// Errors: [`DhtError::QuorumFailed`] if fewer peers stored it; [`DhtError::Kad`] (invalid
    /// record, store full); [`DhtError::Closed`].
    pub async fn put_value(&self, record: Record, quorum: usize) -> Result<PutRecord, DhtError> {
        let quorum = quorum.max(1);
        let put = move |kad: &mut Kademlia, now| kad.put_value(now, record, quorum);
        let (result, stats, _) = self.query(put).await?;
        match result {
            QueryResult::PutValue { stored, .. } if stored >= quorum => {
                Ok(PutRecord { stored, stats })
            }
            QueryResult::PutValue { stored, .. } => Err(DhtError::QuorumFailed {
                stored,
                quorum,
                stats,
            }),
            _ => Err(DhtError::NotFound { stats }),
        }
    }

    /// Announces us as a provider of `key` (for a CID: [`crate::provider_key`]) to the k
    /// closest peers; resolves once every announcement was acknowledged or failed, and
    /// succeeds if at least one was acknowledged. Re-announced every
    /// [`KadConfig::provider_republish_interval`] while the task runs.
    /// Errors: [`DhtError::QuorumFailed`] if no peer acknowledged; [`DhtError::Kad`];
    /// [`DhtError::Closed`].
    pub async fn start_providing(&self, key: Vec<u8>) -> Result<Provided, DhtError> {
        match self.query(|kad, now| kad.add_provider(now, key)).await? {
            (QueryResult::AddProvider { sent }, stats, acked) if acked > 0 => {
                Ok(Provided { sent, acked, stats })
            }
            (_, stats, _) => Err(DhtError::QuorumFailed {
                stored: 0,
                quorum: 1,
                stats,
            }),
        }
    }

    /// Finds providers of `key` (for a CID: [`crate::provider_key`]).
    /// Errors: [`DhtError::NotFound`] if none was found; [`DhtError::Kad`]; [`DhtError::Closed`].
    pub async fn get_providers(&self, key: Vec<u8>) -> Result<FoundPeers, DhtError> {
        match self.query(|kad, now| kad.get_providers(now, key)).await? {
            (QueryResult::Providers(peers), stats, _) if !peers.is_empty() => {
                Ok(FoundPeers { peers, stats })
            }
            (_, stats, _) => Err(DhtError::NotFound { stats }),
        }
    }

    /// Node-wide figures (routing table size, running queries, counters).
    /// Errors: [`DhtError::Closed`].
    pub async fn stats(&self) -> Result<DhtStats, DhtError> {
        self.call(|task| DhtStats {
            table_size: task.kad.routing_table().len(),
            active_queries: task.kad.active_queries(),
            requests_in_flight: task.outbound.len(),
            kad: task.kad.stats(),
        })
        .await
    }

    /// The peers of the routing table with their addresses.
    /// Errors: [`DhtError::Closed`].
    pub async fn routing_table(&self) -> Result<Vec<PeerInfo>, DhtError> {
        self.call(|task| {
            let entries = task.kad.routing_table().iter();
            entries
                .map(|e| PeerInfo::new(e.peer, e.addrs.clone()))
                .collect()
        })
        .await
    }

    /// Stops the task (in server mode the handler is removed); waiting commands fail
    /// with [`DhtError::Closed`]. The host stays open. Resolves once the task stopped.
    pub async fn close(&self) {
        let (stopped, rx) = oneshot::channel();
        let _ = self.call(|task| task.closed = Some(stopped)).await;
        let _ = rx.await;
    }

    /// Runs `f` on the task and returns its result.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Task) -> T + Send + 'static,
    ) -> Result<T, DhtError> {
        let (reply, rx) = oneshot::channel();
        let cmd: Cmd = Box::new(move |task| {
            let _ = reply.send(f(task));
        });
        self.tx.send(cmd).await.map_err(|_| DhtError::Closed)?;
        rx.await.map_err(|_| DhtError::Closed)
    }

    /// Starts a query on the task and waits for its outcome.
    async fn query(
        &self,
        start: impl FnOnce(&mut Kademlia, Instant) -> Result<QueryId, KadError> + Send + 'static,
    ) -> Result<Finished, DhtError> {
        let (reply, rx) = oneshot::channel();
        self.call(move |task| match start(&mut task.kad, Instant::now()) {
            Ok(id) => {
                let waiter = Waiter {
                    reply,
                    finished: None,
                    unacked: 0,
                    acked: 0,
                };
                task.waiting.insert(id, waiter);
            }
            Err(e) => {
                let _ = reply.send(Err(e.into()));
            }
        })
        .await?;
        rx.await.map_err(|_| DhtError::Closed)?
    }
}

fn is_unspecified(a: &Multiaddr) -> bool {
    a.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    })
}

/// How a host failure maps onto Kademlia's view.
fn failure(e: &SendError) -> RequestFailure {
    match e {
        SendError::TimedOut => RequestFailure::Timeout,
        SendError::UnsupportedProtocol(_) | SendError::Remote { .. } => RequestFailure::Refused,
        _ => RequestFailure::Unreachable,
    }
}

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;

enum Done {
    Response(RequestId, Result<Bytes, SendError>),
    /// A one-way message of a query was acknowledged (true) or failed.
    OneWay(Option<QueryId>, bool),
    /// The probe of a requester: `Some(addrs)` if it answered (it is a server).
    Probe(PeerId, Option<Vec<Multiaddr>>),
}

struct Task {
    kad: Kademlia,
    host: Host,
    incoming: Option<Incoming>,
    /// Inbound messages waiting for their requester's addresses.
    inbound: FuturesUnordered<BoxFut<(IncomingMessage, Vec<Multiaddr>)>>,
    outbound: FuturesUnordered<BoxFut<Done>>,
    waiting: HashMap<QueryId, Waiter>,
    /// Addresses given to the host (at most [`ADDR_CACHE`] peers).
    known_addrs: HashMap<PeerId, HashSet<Multiaddr>>,
    /// Requesters being probed (at most [`MAX_PROBES`]).
    probing: HashSet<PeerId>,
    /// When each requester was last probed (at most [`ADDR_CACHE`] peers).
    probed: HashMap<PeerId, Instant>,
    /// Set by [`Dht::close`]: told once the task stopped.
    closed: Option<oneshot::Sender<()>>,
}

impl Task {
    async fn run(mut self, mut cmds: mpsc::Receiver<Cmd>) {
        // Without a deadline the timer is parked an hour ahead: an elapsed `Sleep` stays
        // ready, so it must be re-armed every turn, not only when Kademlia has a deadline.
        let parked = || tokio::time::Instant::now() + Duration::from_secs(3600);
        let sleep = tokio::time::sleep_until(parked());
        tokio::pin!(sleep);
        while self.closed.is_none() {
            self.flush();
            let deadline = self.kad.poll_timeout();
            sleep
                .as_mut()
                .reset(deadline.map_or_else(parked, tokio::time::Instant::from_std));
            let accept = self.inbound.len() < MAX_INBOUND;
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    Some(cmd) => cmd(&mut self),
                    None => break,
                },
                msg = next_incoming(&mut self.incoming, accept) => match msg {
                    Some(msg) => self.accept(msg),
                    // The host closed: no more inbound requests.
                    None => self.incoming = None,
                },
                Some((msg, addrs)) = self.inbound.next(), if !self.inbound.is_empty() => {
                    self.answer(msg, &addrs);
                }
                Some(done) = self.outbound.next(), if !self.outbound.is_empty() => {
                    self.done(done);
                }
                () = &mut sleep => self.kad.handle_timeout(Instant::now()),
            }
        }
        // Dropping `incoming` removes the handler; dropping the waiters fails their calls.
        let closed = self.closed.take();
        drop(self);
        if let Some(stopped) = closed {
            let _ = stopped.send(());
        }
    }

    /// An inbound message: look up the requester's address first.
    fn accept(&mut self, msg: IncomingMessage) {
        let host = self.host.clone();
        self.inbound.push(Box::pin(async move {
            // The message came over one of these: a session still finishing its handshake
            // (0-RTT) has the peer's address too.
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

    /// Answers an inbound request. A requester already in the routing table is refreshed
    /// with `addrs`; an unknown one is probed (see the module docs).
    fn answer(&mut self, msg: IncomingMessage, addrs: &[Multiaddr]) {
        let known = self.kad.routing_table().get(&msg.peer).is_some();
        if !known && !addrs.is_empty() {
            self.probe(msg.peer, addrs.to_vec());
        }
        let from_addrs = if known { addrs } else { &[] };
        let result = self
            .kad
            .handle_request(Instant::now(), msg.peer, from_addrs, &msg.payload);
        if !msg.is_request() {
            return;
        }
        // A failed answer means the requester is gone: nothing to do.
        let _ = match result {
            Ok(Some(bytes)) => msg.respond(bytes),
            // No response (ADD_PROVIDER sent as a request): dropping the message answers
            // with an error, which a bridged stream turns into a close.
            Ok(None) => Ok(()),
            Err(e) => msg.fail(REFUSED_CODE, &e.to_string()),
        };
    }

    /// Probes `peer` unless that cannot change the routing table: its bucket is full of
    /// entries seen within [`CHECK_AFTER`] (the table would drop it), or it was probed
    /// within [`PROBE_AGAIN`]. Without these limits two nodes whose buckets are full probe
    /// each other forever: each probe is a request from a peer the other does not know,
    /// which it answers with a probe in turn.
    fn probe(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        let now = Instant::now();
        let recently = |t: &Instant| now < *t + PROBE_AGAIN;
        if self.probing.len() >= MAX_PROBES
            || self.probing.contains(&peer)
            || !self.kad.routing_table().could_insert(&peer, now)
            || self.probed.get(&peer).is_some_and(recently)
        {
            return;
        }
        if self.probed.len() >= ADDR_CACHE && !self.probed.contains_key(&peer) {
            self.probed.retain(|_, t| recently(t));
            if self.probed.len() >= ADDR_CACHE {
                self.probed.clear();
            }
        }
        self.probed.insert(peer, now);
        self.probing.insert(peer);
        // FIND_NODE of our own id, as Kademlia's liveness checks do: every implementation
        // answers it (not all answer PING).
        let me = self.kad.local_peer_id().to_bytes();
        let ping = Message::new(MessageType::FIND_NODE, 0, me).encode();
        let host = self.host.clone();
        let timeout = self.kad.config.request_timeout;
        self.outbound.push(Box::pin(async move {
            let ok = host.request(peer, PROTOCOL, ping, timeout).await.is_ok();
            Done::Probe(peer, ok.then_some(addrs))
        }));
    }

    fn done(&mut self, done: Done) {
        match done {
            Done::Probe(peer, answered) => {
                self.probing.remove(&peer);
                for a in answered.into_iter().flatten() {
                    self.kad.add_address(peer, a);
                }
            }
            Done::Response(id, result) => {
                let result = match &result {
                    Ok(b) => Ok(&b[..]),
                    Err(e) => Err(failure(e)),
                };
                self.kad.handle_response(Instant::now(), id, result);
            }
            Done::OneWay(Some(id), ok) => {
                if let Some(w) = self.waiting.get_mut(&id) {
                    w.unacked -= 1;
                    w.acked += usize::from(ok);
                    self.reply(id);
                }
            }
            Done::OneWay(None, _) => {}
        }
    }

    /// Answers the command waiting for query `id` once the query finished and the host
    /// acknowledged or failed all its one-way messages.
    fn reply(&mut self, id: QueryId) {
        let ready = |w: &Waiter| w.finished.is_some() && w.unacked == 0;
        if !self.waiting.get(&id).is_some_and(ready) {
            return;
        }
        if let Some(Waiter {
            reply,
            finished: Some((result, stats)),
            acked,
            ..
        }) = self.waiting.remove(&id)
        {
            let _ = reply.send(Ok((result, stats, acked)));
        }
    }

    /// Gives `addrs` of `peer` to the host unless already given.
    fn tell_host(&mut self, peer: PeerId, addrs: &[Multiaddr]) {
        if self.known_addrs.len() >= ADDR_CACHE && !self.known_addrs.contains_key(&peer) {
            self.known_addrs.clear();
        }
        let known = self.known_addrs.entry(peer).or_default();
        for a in addrs {
            if known.len() < 64 && known.insert(a.clone()) {
                // Addresses of a shape the host does not speak are skipped.
                let _ = self.host.add_address(peer, a.clone());
            }
        }
    }

    /// Sends Kademlia's requests, hands finished queries to their commands.
    fn flush(&mut self) {
        while let Some(req) = self.kad.poll_request() {
            self.tell_host(req.peer, &req.addrs);
            let (host, peer, id) = (self.host.clone(), req.peer, req.id);
            let timeout = self.kad.config.request_timeout;
            if req.expects_response {
                self.outbound.push(Box::pin(async move {
                    let r = host.request(peer, PROTOCOL, req.bytes, timeout).await;
                    Done::Response(id, r)
                }));
                continue;
            }
            if let Some(w) = req.query.and_then(|q| self.waiting.get_mut(&q)) {
                w.unacked += 1;
            }
            // The message is handed to the host now; the future waits for the ack.
            let send = host.send(peer, PROTOCOL, req.bytes);
            self.outbound.push(Box::pin(async move {
                let ok = matches!(tokio::time::timeout(timeout, send).await, Ok(Ok(())));
                Done::OneWay(req.query, ok)
            }));
        }
        while let Some(ev) = self.kad.poll_event() {
            if let KadEvent::QueryFinished { id, result, stats } = ev {
                if let Some(w) = self.waiting.get_mut(&id) {
                    w.finished = Some((result, stats));
                    self.reply(id);
                }
            }
        }
    }
}

/// The next inbound message; pending while `accept` is false or there is no handler.
async fn next_incoming(incoming: &mut Option<Incoming>, accept: bool) -> Option<IncomingMessage> {
    match incoming.as_mut() {
        Some(i) if accept => i.recv().await,
        _ => std::future::pending().await,
    }
}
