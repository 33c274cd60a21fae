//! [`Dht`]: the [`Kademlia`] state machine running on a [`msgnet::Host`] (feature `host`).
//!
//! A [`Dht`] is a cheap, cloneable handle onto one tokio task that owns the [`Kademlia`]
//! and drives it with the host's message API on [`PROTOCOL`] only, so it talks to msgnet
//! nodes (over UDP sessions or libp2p connections) and, through the host's stream bridge,
//! to ordinary libp2p DHT nodes alike:
//!
//! - in [`Mode::Server`] the task registers the `/ipfs/kad/1.0.0` handler and answers every
//!   inbound request with [`Kademlia::handle_request`]; the requester's address is taken
//!   from [`Host::connections`] (a UDP session's or QUIC connection's remote address is the
//!   peer's listen address; a TCP connection's is not, so TCP requesters are not learned
//!   from their requests). In [`Mode::Client`] no handler is registered;
//! - every [`OutboundRequest`] goes out with [`Host::request`] (one-way ADD_PROVIDER with
//!   [`Host::send`]), after its addresses were given to the host with
//!   [`Host::add_address`]; the response or failure goes back to
//!   [`Kademlia::handle_response`];
//! - a tokio timer follows [`Kademlia::poll_timeout`] → [`Kademlia::handle_timeout`];
//! - commands from handles start queries; each command's future resolves with the query's
//!   outcome. An ADD_PROVIDER query resolves once the host reports every announcement it
//!   sent as acknowledged or failed, so that a short-lived process that announced and
//!   exits has its record stored.
//!
//! Queues: commands travel on a bounded channel ([`DhtConfig::command_queue`]); inbound
//! requests waiting for their requester's address are at most
//! [`DhtConfig::max_inbound`] (beyond it the task stops taking requests from the host,
//! which then backpressures, see `msgnet`'s driver docs); outbound requests in flight are
//! bounded by Kademlia's own limits ([`KadConfig::max_queries`] queries of α (or k)
//! requests each, plus k stores); the addresses already handed to the host are remembered
//! for at most [`ADDR_CACHE`] peers.
//!
//! The task ends when [`Dht::close`] is called or the last handle is dropped; the host
//! stays open (close it separately; the task's clone of the [`Host`] keeps the host's
//! driver running until then). Every waiting command then fails with [`DhtError::Closed`].
//!
//! A requester that is not in the routing table yet is learned only after it answered a
//! request on [`PROTOCOL`] (FIND_NODE of our own id) (the host does not say which protocols a peer serves, so this
//! probe keeps client-mode nodes, which answer nothing, out of routing tables). A requester
//! is probed only if its bucket could take it, and at most once per
//! [`CHECK_AFTER`](crate::table::CHECK_AFTER). A peer
//! that asks us over TCP is learned only when we query it ourselves (its connection's
//! address is not its listen address).
//!
//! ```
//! use msgnet::{Host, Keypair};
//! use msgnet_kad::host::{Dht, DhtConfig};
//! use msgnet_kad::Record;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let listen: msgnet::Multiaddr = "/ip4/127.0.0.1/udp/0".parse()?;
//! let a = Host::builder(Keypair::generate_ed25519()).listen(listen.clone()).build().await?;
//! let b = Host::builder(Keypair::generate_ed25519()).listen(listen).build().await?;
//! let dht_a = Dht::new(&a, DhtConfig::default())?;
//! let dht_b = Dht::new(&b, DhtConfig::default())?;
//!
//! // b joins through a.
//! dht_b.add_address(a.local_peer_id(), a.listen_addrs()[0].clone()).await?;
//! dht_b.bootstrap().await?;
//!
//! let put = dht_b.put_value(Record::new(b"/v/greeting".to_vec(), b"hello".to_vec())).await?;
//! assert_eq!(put.stored, 1);
//! let got = dht_a.get_value(b"/v/greeting".to_vec()).await?;
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
use multiaddr::Multiaddr;
use tokio::sync::{mpsc, oneshot};

use crate::wire::Message;
use crate::{
    KadConfig, KadError, KadEvent, KadStats, Kademlia, Mode, OutboundRequest, PeerInfo, QueryId,
    QueryResult, QueryStats, Record, RequestFailure, RequestId, PROTOCOL,
};

/// Most peers whose addresses the task remembers having given to the host.
pub const ADDR_CACHE: usize = 4096;

/// Most requesters probed at once (see `Task::answer`).
const MAX_PROBES: usize = 64;

/// A requester is probed at most once in this long (see `Task::probe`).
const PROBE_AGAIN: Duration = crate::table::CHECK_AFTER;

/// Error code of a request the service refused (malformed, invalid, client mode).
const REFUSED_CODE: u8 = 2;

/// Configuration of a [`Dht`].
#[derive(Clone, Debug)]
pub struct DhtConfig {
    /// The Kademlia configuration ([`KadConfig::mode`] decides whether the handler is
    /// registered). A zero [`KadConfig::rng_seed`] is replaced by one derived from the
    /// host's peer id, so that nodes differ.
    pub kad: KadConfig,
    /// Our addresses as peers should dial them, sent in provider records and used by
    /// peers that learn us. `None`: the host's listen addresses, except those with an
    /// unspecified IP (`0.0.0.0`, `::`), which no peer can dial.
    pub local_addrs: Option<Vec<Multiaddr>>,
    /// Bound of the command queue from handles to the task (64).
    pub command_queue: usize,
    /// Inbound requests waiting for their requester's address (256).
    pub max_inbound: usize,
}

impl Default for DhtConfig {
    fn default() -> Self {
        DhtConfig {
            kad: KadConfig::default(),
            local_addrs: None,
            command_queue: 64,
            max_inbound: 256,
        }
    }
}

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

/// Outcome of [`Dht::find_node`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FoundPeers {
    /// The k closest peers that answered, closest first.
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

/// Outcome of [`Dht::get_providers`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FoundProviders {
    /// Providers found (ourselves included if we provide the key), at most
    /// [`KadConfig::max_providers_per_key`].
    pub providers: Vec<PeerInfo>,
    /// The lookup's counters.
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

/// What a finished query hands back to its command.
struct Finished {
    result: QueryResult,
    stats: QueryStats,
    /// ADD_PROVIDER: announcements acknowledged.
    acked: usize,
}

type Reply<T> = oneshot::Sender<Result<T, DhtError>>;

enum Query {
    Bootstrap,
    FindNode(Vec<u8>),
    GetValue(Vec<u8>, usize),
    PutValue(Record, usize),
    AddProvider(Vec<u8>),
    GetProviders(Vec<u8>),
}

enum Cmd {
    Query(Query, Reply<Finished>),
    AddAddress(PeerId, Multiaddr, Reply<()>),
    Stats(oneshot::Sender<DhtStats>),
    Table(oneshot::Sender<Vec<PeerInfo>>),
    Close(oneshot::Sender<()>),
}

/// A Kademlia DHT node on a [`Host`]. See the module docs.
///
/// Cheap to clone: clones share one task. Each query method sends one command and waits
/// for the query's outcome (at most [`KadConfig::query_timeout`], after which the query
/// finishes with what it has).
#[derive(Clone, Debug)]
pub struct Dht {
    tx: mpsc::Sender<Cmd>,
    local: PeerId,
    host: Host,
}

impl Dht {
    /// Starts the DHT task on `host` (on the current tokio runtime). In server mode this
    /// registers the [`PROTOCOL`] handler.
    ///
    /// # Errors
    ///
    /// [`DhtError::Host`] if the handler cannot be registered (another one exists, or the
    /// host is closed).
    pub fn new(host: &Host, config: DhtConfig) -> Result<Dht, DhtError> {
        let DhtConfig {
            mut kad,
            local_addrs,
            command_queue,
            max_inbound,
        } = config;
        let local = host.local_peer_id();
        if kad.rng_seed == 0 {
            let b = local.to_bytes();
            let tail = &b[b.len().saturating_sub(8)..];
            let mut seed = [0u8; 8];
            seed[..tail.len()].copy_from_slice(tail);
            kad.rng_seed = u64::from_le_bytes(seed) | 1;
        }
        let incoming = match kad.mode {
            Mode::Server => Some(host.handle(PROTOCOL)?),
            Mode::Client => None,
        };
        let request_timeout = kad.request_timeout;
        let kademlia_k = kad.k;
        let mut kademlia = Kademlia::new(local, kad, Instant::now());
        let addrs = local_addrs.unwrap_or_else(|| {
            host.listen_addrs()
                .into_iter()
                .filter(|a| !is_unspecified(a))
                .collect()
        });
        kademlia.set_local_addrs(addrs);
        let (tx, rx) = mpsc::channel(command_queue.max(1));
        let task = Task {
            kad: kademlia,
            host: host.clone(),
            request_timeout,
            incoming,
            max_inbound: max_inbound.max(1),
            inbound: FuturesUnordered::new(),
            outbound: FuturesUnordered::new(),
            waiting: HashMap::new(),
            groups: HashMap::new(),
            next_group: 0,
            known_addrs: HashMap::new(),
            probing: HashSet::new(),
            probed: HashMap::new(),
            k: kademlia_k,
        };
        tokio::spawn(task.run(rx));
        Ok(Dht {
            tx,
            local,
            host: host.clone(),
        })
    }

    /// Our peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local
    }

    /// The host this DHT runs on.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// A known address of a DHT server (a bootstrap node): given to the host and to the
    /// routing table. `addr` may end in `/p2p/<peer>`.
    ///
    /// # Errors
    ///
    /// [`DhtError::Host`] if the host refuses the address; [`DhtError::Closed`].
    pub async fn add_address(&self, peer: PeerId, addr: Multiaddr) -> Result<(), DhtError> {
        let (reply, rx) = oneshot::channel();
        self.call(Cmd::AddAddress(peer, addr, reply), rx).await?
    }

    /// Adds a bootstrap node given as `<address>/p2p/<peer id>`; returns its peer id.
    ///
    /// # Errors
    ///
    /// [`DhtError::Host`] (with [`HostError::MissingPeerId`]) without `/p2p`; as
    /// [`add_address`](Self::add_address).
    pub async fn add_bootstrap(&self, addr: &Multiaddr) -> Result<PeerId, DhtError> {
        let (peer, bare) = Host::dial_info(addr)?;
        self.add_address(peer, bare).await?;
        Ok(peer)
    }

    /// Joins the DHT: looks up our own id, then refreshes every bucket.
    ///
    /// # Errors
    ///
    /// [`KadError::NoKnownPeers`] (as [`DhtError::Kad`]) without bootstrap addresses;
    /// [`DhtError::NotFound`] if no peer answered; [`DhtError::Closed`].
    pub async fn bootstrap(&self) -> Result<Bootstrapped, DhtError> {
        let f = self.query(Query::Bootstrap).await?;
        match f.result {
            QueryResult::Bootstrapped { table_size } if f.stats.success > 0 => Ok(Bootstrapped {
                table_size,
                stats: f.stats,
            }),
            _ => Err(DhtError::NotFound { stats: f.stats }),
        }
    }

    /// Finds the k peers closest to `key` (any bytes; a peer id's bytes for a peer).
    ///
    /// # Errors
    ///
    /// [`DhtError::NotFound`] if no peer answered; [`DhtError::Kad`]; [`DhtError::Closed`].
    pub async fn find_node(&self, key: Vec<u8>) -> Result<FoundPeers, DhtError> {
        let f = self.query(Query::FindNode(key)).await?;
        match f.result {
            QueryResult::FoundPeers(peers) if !peers.is_empty() => Ok(FoundPeers {
                peers,
                stats: f.stats,
            }),
            _ => Err(DhtError::NotFound { stats: f.stats }),
        }
    }

    /// Finds `peer` and its addresses: a [`find_node`](Self::find_node) for its id that
    /// succeeds if the peer itself answered. The addresses are also given to the host, so
    /// the peer can be sent to right away.
    ///
    /// # Errors
    ///
    /// [`DhtError::NotFound`] if the lookup did not reach the peer; as `find_node`.
    pub async fn find_peer(&self, peer: PeerId) -> Result<FoundPeer, DhtError> {
        let found = self.find_node(peer.to_bytes()).await?;
        match found.peers.into_iter().find(|p| p.peer == peer) {
            Some(info) => Ok(FoundPeer {
                peer: info,
                stats: found.stats,
            }),
            None => Err(DhtError::NotFound { stats: found.stats }),
        }
    }

    /// Finds the record under `key`; finishes at the first valid record (quorum 1).
    ///
    /// # Errors
    ///
    /// [`DhtError::NotFound`] if no peer returned a valid record; [`DhtError::Kad`];
    /// [`DhtError::Closed`].
    pub async fn get_value(&self, key: Vec<u8>) -> Result<FoundRecord, DhtError> {
        self.get_value_with_quorum(key, 1).await
    }

    /// Finds the record under `key`, asking until `quorum` peers (counting ourselves)
    /// returned a valid one or the lookup ends; the validator picks the best.
    ///
    /// # Errors
    ///
    /// As [`get_value`](Self::get_value). Finding fewer than `quorum` copies is not an
    /// error: see [`FoundRecord::quorum_met`].
    pub async fn get_value_with_quorum(
        &self,
        key: Vec<u8>,
        quorum: usize,
    ) -> Result<FoundRecord, DhtError> {
        let f = self.query(Query::GetValue(key, quorum)).await?;
        match f.result {
            QueryResult::FoundRecord {
                record: Some(record),
                quorum_met,
            } => Ok(FoundRecord {
                record,
                quorum_met,
                stats: f.stats,
            }),
            _ => Err(DhtError::NotFound { stats: f.stats }),
        }
    }

    /// Stores `record` locally and on the k closest peers; succeeds once at least one of
    /// them acknowledged. Resolves after every PUT_VALUE was answered or failed.
    ///
    /// # Errors
    ///
    /// [`DhtError::QuorumFailed`] if no peer stored it; [`DhtError::Kad`] (invalid
    /// record, store full); [`DhtError::Closed`].
    pub async fn put_value(&self, record: Record) -> Result<PutRecord, DhtError> {
        self.put_value_with_quorum(record, 1).await
    }

    /// As [`put_value`](Self::put_value), requiring `quorum` acknowledgements.
    ///
    /// # Errors
    ///
    /// As [`put_value`](Self::put_value).
    pub async fn put_value_with_quorum(
        &self,
        record: Record,
        quorum: usize,
    ) -> Result<PutRecord, DhtError> {
        let quorum = quorum.max(1);
        let f = self.query(Query::PutValue(record, quorum)).await?;
        match f.result {
            QueryResult::PutValue { stored, .. } if stored >= quorum => Ok(PutRecord {
                stored,
                stats: f.stats,
            }),
            QueryResult::PutValue { stored, .. } => Err(DhtError::QuorumFailed {
                stored,
                quorum,
                stats: f.stats,
            }),
            _ => Err(DhtError::Closed),
        }
    }

    /// Announces us as a provider of `key` (for a CID: [`crate::provider_key`]) to the k
    /// closest peers; resolves once every announcement was acknowledged or failed, and
    /// succeeds if at least one was acknowledged. Re-announced every
    /// [`KadConfig::provider_republish_interval`] while the task runs.
    ///
    /// # Errors
    ///
    /// [`DhtError::QuorumFailed`] if no peer acknowledged; [`DhtError::Kad`];
    /// [`DhtError::Closed`].
    pub async fn start_providing(&self, key: Vec<u8>) -> Result<Provided, DhtError> {
        let f = self.query(Query::AddProvider(key)).await?;
        match f.result {
            QueryResult::AddProvider { sent } if f.acked > 0 => Ok(Provided {
                sent,
                acked: f.acked,
                stats: f.stats,
            }),
            _ => Err(DhtError::QuorumFailed {
                stored: 0,
                quorum: 1,
                stats: f.stats,
            }),
        }
    }

    /// Another name for [`start_providing`](Self::start_providing) (the message is
    /// ADD_PROVIDER).
    ///
    /// # Errors
    ///
    /// As [`start_providing`](Self::start_providing).
    pub async fn add_provider(&self, key: Vec<u8>) -> Result<Provided, DhtError> {
        self.start_providing(key).await
    }

    /// Finds providers of `key` (for a CID: [`crate::provider_key`]).
    ///
    /// # Errors
    ///
    /// [`DhtError::NotFound`] if none was found; [`DhtError::Kad`]; [`DhtError::Closed`].
    pub async fn get_providers(&self, key: Vec<u8>) -> Result<FoundProviders, DhtError> {
        let f = self.query(Query::GetProviders(key)).await?;
        match f.result {
            QueryResult::Providers(providers) if !providers.is_empty() => Ok(FoundProviders {
                providers,
                stats: f.stats,
            }),
            _ => Err(DhtError::NotFound { stats: f.stats }),
        }
    }

    /// Node-wide figures (routing table size, running queries, counters).
    ///
    /// # Errors
    ///
    /// [`DhtError::Closed`].
    pub async fn stats(&self) -> Result<DhtStats, DhtError> {
        let (reply, rx) = oneshot::channel();
        self.call(Cmd::Stats(reply), rx).await
    }

    /// Number of peers in the routing table.
    ///
    /// # Errors
    ///
    /// [`DhtError::Closed`].
    pub async fn routing_table_size(&self) -> Result<usize, DhtError> {
        Ok(self.stats().await?.table_size)
    }

    /// The peers of the routing table with their addresses.
    ///
    /// # Errors
    ///
    /// [`DhtError::Closed`].
    pub async fn routing_table(&self) -> Result<Vec<PeerInfo>, DhtError> {
        let (reply, rx) = oneshot::channel();
        self.call(Cmd::Table(reply), rx).await
    }

    /// Stops the task (in server mode the handler is removed); waiting commands fail
    /// with [`DhtError::Closed`]. The host stays open. Resolves once the task stopped.
    pub async fn close(&self) {
        let (reply, rx) = oneshot::channel();
        let _ = self.call(Cmd::Close(reply), rx).await;
    }

    async fn query(&self, q: Query) -> Result<Finished, DhtError> {
        let (reply, rx) = oneshot::channel();
        self.call(Cmd::Query(q, reply), rx).await?
    }

    async fn call<T>(&self, cmd: Cmd, rx: oneshot::Receiver<T>) -> Result<T, DhtError> {
        self.tx.send(cmd).await.map_err(|_| DhtError::Closed)?;
        rx.await.map_err(|_| DhtError::Closed)
    }
}

fn is_unspecified(a: &Multiaddr) -> bool {
    a.iter().any(|p| match p {
        multiaddr::Protocol::Ip4(ip) => ip.is_unspecified(),
        multiaddr::Protocol::Ip6(ip) => ip.is_unspecified(),
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
    OneWay(u64, bool),
    /// The probe of a requester: `Some(addrs)` if it answered (it is a server).
    Probe(PeerId, Option<Vec<Multiaddr>>),
}

/// The one-way ADD_PROVIDER sends of one key issued in one flush, and the command waiting
/// for them.
struct Group {
    pending: usize,
    acked: usize,
    waiter: Option<(Reply<Finished>, QueryResult, QueryStats)>,
}

struct Task {
    kad: Kademlia,
    host: Host,
    request_timeout: Duration,
    incoming: Option<Incoming>,
    max_inbound: usize,
    inbound: FuturesUnordered<BoxFut<(IncomingMessage, Vec<Multiaddr>)>>,
    outbound: FuturesUnordered<BoxFut<Done>>,
    waiting: HashMap<QueryId, (Reply<Finished>, Option<Vec<u8>>)>,
    groups: HashMap<u64, Group>,
    next_group: u64,
    known_addrs: HashMap<PeerId, HashSet<Multiaddr>>,
    /// Requesters being probed (at most [`MAX_PROBES`]).
    probing: HashSet<PeerId>,
    /// When each requester was last probed (at most [`ADDR_CACHE`] peers).
    probed: HashMap<PeerId, Instant>,
    /// Bucket size.
    k: usize,
}

impl Task {
    async fn run(mut self, mut cmds: mpsc::Receiver<Cmd>) {
        // Without a deadline the timer is parked an hour ahead: an elapsed `Sleep` stays
        // ready, so it must be re-armed every turn, not only when Kademlia has a deadline.
        let parked = || tokio::time::Instant::now() + Duration::from_secs(3600);
        let sleep = tokio::time::sleep_until(parked());
        tokio::pin!(sleep);
        let mut closed: Option<oneshot::Sender<()>> = None;
        loop {
            self.flush();
            let deadline = self.kad.poll_timeout().map_or_else(parked, tokio::time::Instant::from_std);
            sleep.as_mut().reset(deadline);
            let accept = self.inbound.len() < self.max_inbound;
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    None => break,
                    Some(Cmd::Close(reply)) => {
                        closed = Some(reply);
                        break;
                    }
                    Some(cmd) => self.command(cmd),
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
        drop(self);
        if let Some(reply) = closed {
            let _ = reply.send(());
        }
    }

    fn command(&mut self, cmd: Cmd) {
        let now = Instant::now();
        match cmd {
            Cmd::Query(q, reply) => {
                let mut key = None;
                let started = match q {
                    Query::Bootstrap => self.kad.bootstrap(now),
                    Query::FindNode(k) => self.kad.find_node(now, k),
                    Query::GetValue(k, quorum) => self.kad.get_value(now, k, quorum),
                    Query::PutValue(r, quorum) => self.kad.put_value(now, r, quorum),
                    Query::AddProvider(k) => {
                        key = Some(k.clone());
                        self.kad.add_provider(now, k)
                    }
                    Query::GetProviders(k) => self.kad.get_providers(now, k),
                };
                match started {
                    Ok(id) => {
                        self.waiting.insert(id, (reply, key));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            Cmd::AddAddress(peer, addr, reply) => {
                let result = self.host.add_address(peer, addr.clone()).map(|()| {
                    let mut bare = addr;
                    if matches!(bare.iter().last(), Some(multiaddr::Protocol::P2p(_))) {
                        bare.pop();
                    }
                    self.kad.add_address(peer, bare);
                });
                let _ = reply.send(result.map_err(DhtError::from));
            }
            Cmd::Stats(reply) => {
                let _ = reply.send(DhtStats {
                    table_size: self.kad.routing_table().len(),
                    active_queries: self.kad.active_queries(),
                    requests_in_flight: self.outbound.len(),
                    kad: self.kad.stats(),
                });
            }
            Cmd::Table(reply) => {
                let peers = self
                    .kad
                    .routing_table()
                    .iter()
                    .map(|e| PeerInfo {
                        peer: e.peer,
                        addrs: e.addrs.clone(),
                    })
                    .collect();
                let _ = reply.send(peers);
            }
            Cmd::Close(_) => {}
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
    /// with `addrs`; an unknown one is learned only once it answered a request on
    /// [`PROTOCOL`] (a probe: FIND_NODE of our id), so that client-mode nodes, which do not serve the
    /// protocol, never enter the table (the host does not say which protocols a peer
    /// serves).
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
    /// entries seen within [`CHECK_AFTER`](crate::table::CHECK_AFTER) (the table would
    /// drop it), or it was probed within [`PROBE_AGAIN`]. Without these limits two nodes
    /// whose buckets are full probe each other forever: each probe is a request from a
    /// peer the other does not know, which it answers with a probe in turn.
    fn probe(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        let now = Instant::now();
        if self.probing.len() >= MAX_PROBES
            || self.probing.contains(&peer)
            || !self.could_learn(&peer, now)
            || self
                .probed
                .get(&peer)
                .is_some_and(|t| now < *t + PROBE_AGAIN)
        {
            return;
        }
        if self.probed.len() >= ADDR_CACHE && !self.probed.contains_key(&peer) {
            self.probed.retain(|_, t| now < *t + PROBE_AGAIN);
            if self.probed.len() >= ADDR_CACHE {
                self.probed.clear();
            }
        }
        self.probed.insert(peer, now);
        self.probing.insert(peer);
        // FIND_NODE of our own id, as Kademlia's liveness checks do: every implementation
        // answers it (not all answer PING).
        let ping = Message {
            ty: crate::wire::MessageType::FIND_NODE,
            key: self.kad.local_peer_id().to_bytes(),
            ..Message::default()
        }
        .encode();
        let host = self.host.clone();
        let timeout = self.request_timeout;
        self.outbound.push(Box::pin(async move {
            let ok = host.request(peer, PROTOCOL, ping, timeout).await.is_ok();
            Done::Probe(peer, ok.then_some(addrs))
        }));
    }

    /// Whether the routing table could take `peer` now: its bucket has room or its
    /// oldest entry is due for a liveness check (as [`crate::table::RoutingTable::insert`]
    /// decides).
    fn could_learn(&self, peer: &PeerId, now: Instant) -> bool {
        let table = self.kad.routing_table();
        let Some(b) = table.bucket_index(&crate::key::KeyHash::of_peer(peer)) else {
            return false;
        };
        let bucket = table.bucket(b);
        bucket.len() < self.k
            || bucket
                .iter()
                .map(|e| e.last_seen)
                .min()
                .is_some_and(|oldest| now >= oldest + crate::table::CHECK_AFTER)
    }

    fn done(&mut self, done: Done) {
        match done {
            Done::Probe(peer, answered) => {
                self.probing.remove(&peer);
                if let Some(addrs) = answered {
                    for a in addrs {
                        self.kad.add_address(peer, a);
                    }
                }
            }
            Done::Response(id, result) => {
                let result = match &result {
                    Ok(b) => Ok(&b[..]),
                    Err(e) => Err(failure(e)),
                };
                self.kad.handle_response(Instant::now(), id, result);
            }
            Done::OneWay(g, ok) => {
                let Some(group) = self.groups.get_mut(&g) else {
                    return;
                };
                group.pending -= 1;
                group.acked += usize::from(ok);
                if group.pending == 0 {
                    if let Some(group) = self.groups.remove(&g) {
                        if let Some((reply, result, stats)) = group.waiter {
                            let acked = group.acked;
                            let _ = reply.send(Ok(Finished {
                                result,
                                stats,
                                acked,
                            }));
                        }
                    }
                }
            }
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
        // Key of the one-way announcements → their group, for this flush only.
        let mut flush_groups: HashMap<Vec<u8>, u64> = HashMap::new();
        while let Some(req) = self.kad.poll_request() {
            let OutboundRequest {
                id,
                peer,
                addrs,
                bytes,
                expects_response,
            } = req;
            self.tell_host(peer, &addrs);
            if expects_response {
                let host = self.host.clone();
                let timeout = self.request_timeout;
                self.outbound.push(Box::pin(async move {
                    let r = host.request(peer, PROTOCOL, bytes, timeout).await;
                    Done::Response(id, r)
                }));
            } else {
                let key = Message::decode(&bytes).map(|m| m.key).unwrap_or_default();
                let g = *flush_groups.entry(key).or_insert_with(|| {
                    self.next_group += 1;
                    self.next_group
                });
                let group = self.groups.entry(g).or_insert(Group {
                    pending: 0,
                    acked: 0,
                    waiter: None,
                });
                group.pending += 1;
                // The message is handed to the host now; the future waits for the ack.
                let send = self.host.send(peer, PROTOCOL, bytes);
                let timeout = self.request_timeout;
                self.outbound.push(Box::pin(async move {
                    let ok = matches!(tokio::time::timeout(timeout, send).await, Ok(Ok(())));
                    Done::OneWay(g, ok)
                }));
            }
        }
        while let Some(ev) = self.kad.poll_event() {
            let KadEvent::QueryFinished { id, result, stats } = ev else {
                continue;
            };
            let Some((reply, key)) = self.waiting.remove(&id) else {
                continue;
            };
            let group = key.and_then(|k| flush_groups.get(&k).copied());
            match group.and_then(|g| self.groups.get_mut(&g)) {
                Some(group) => group.waiter = Some((reply, result, stats)),
                None => {
                    let _ = reply.send(Ok(Finished {
                        result,
                        stats,
                        acked: 0,
                    }));
                }
            }
        }
        // Groups nobody waits for (republishing) are not tracked.
        for g in flush_groups.values() {
            if self.groups.get(g).is_some_and(|g| g.waiter.is_none()) {
                self.groups.remove(g);
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

#[cfg(test)]
mod tests {
    use super::*;
    use msgnet::Keypair;

    fn keypair(i: u8) -> Keypair {
        #[allow(clippy::unwrap_used)] // any 32 bytes are an ed25519 secret key
        Keypair::ed25519_from_bytes([i.wrapping_mul(37).wrapping_add(11); 32]).unwrap()
    }

    /// Messages delivered to the handlers of `hosts`, summed.
    async fn delivered(hosts: &[Host]) -> u64 {
        let mut n = 0;
        for h in hosts {
            n += h.stats().await.messages_delivered;
        }
        n
    }

    /// With k = 1 most buckets are full, so most requesters cannot enter the table. Once
    /// the network is built and no query runs, the nodes must fall silent: requesters
    /// that cannot be learned are not probed, and none twice in a row (before the fix,
    /// two such nodes probed each other forever, thousands of messages a second).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn full_buckets_do_not_make_nodes_probe_each_other_forever() {
        const N: u8 = 10;
        let config = DhtConfig {
            kad: KadConfig {
                k: 1,
                refresh_interval: None,
                ..KadConfig::default()
            },
            ..DhtConfig::default()
        };
        let mut hosts = Vec::new();
        let mut dhts = Vec::new();
        for i in 0..N {
            let host = Host::builder(keypair(i))
                .listen("/ip4/127.0.0.1/udp/0".parse().expect("address"))
                .build()
                .await
                .expect("host");
            dhts.push(Dht::new(&host, config.clone()).expect("dht"));
            hosts.push(host);
        }
        let (id0, addr0) = (hosts[0].local_peer_id(), hosts[0].listen_addrs()[0].clone());
        for d in &dhts[1..] {
            d.add_address(id0, addr0.clone())
                .await
                .expect("add address");
            d.bootstrap().await.expect("bootstrap");
        }
        for d in &dhts {
            // Node 0 may learn nobody it can keep; a failed round is fine here.
            let _ = d.bootstrap().await;
        }
        // Let the answers to the last requests (and their probes) settle.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let before = delivered(&hosts).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let idle = delivered(&hosts).await - before;
        assert!(
            idle <= 2 * u64::from(N),
            "{idle} messages delivered in 3 idle seconds"
        );
        for d in &dhts {
            d.close().await;
        }
        for h in &hosts {
            h.close().await;
        }
    }
}
