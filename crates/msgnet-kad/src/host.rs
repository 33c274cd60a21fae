//! [`Dht`]: the [`Kademlia`] state machine running on a [`msgnet::Host`] (feature `host`).
//!
//! A [`Dht`] is a cloneable handle onto a [`msgnet::service`] task that runs the
//! [`Kademlia`] as a [`Service`] on [`PROTOCOL`] only, so it talks to msgnet nodes and,
//! through the host's stream bridge, to libp2p DHT nodes alike. The task (generic, in
//! `msgnet`) registers the handler (server mode only), hands every request to
//! [`Kademlia::handle_request`] (with the requester's datagram addresses if it is in the
//! routing table, see below), sends every
//! [`OutboundRequest`](crate::OutboundRequest) with [`Host::request`] (one-way
//! ADD_PROVIDER with [`Host::send`], whose acknowledgement is its response) and follows
//! [`Kademlia::poll_timeout`]. Each command's future resolves with its query's outcome;
//! ADD_PROVIDER once every announcement was acknowledged or failed, so a short-lived
//! process has its record stored before it exits.
//!
//! A requester not yet in the routing table is learned only after it answered a probe
//! ([`Kademlia::probe`]): the host does not say which protocols a peer serves, and
//! client-mode nodes answer nothing. UDP and QUIC remote addresses are listen addresses,
//! TCP ones are not, so TCP requesters are learned only when we query them ourselves.
//!
//! The queues are the task's (see [`msgnet::service`]) and Kademlia's. The task ends on
//! [`Dht::close`] or when the last handle is dropped; waiting commands then fail with
//! [`DhtError::Closed`]. The host stays open (close it separately).
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

use std::time::Instant;

use libp2p_identity::PeerId;
use msgnet::service::{dialable_listen_addrs, Closed, Outcome, Output, OutputKind, Reply};
use msgnet::service::{Service, ServiceHandle};
use msgnet::{Host, HostError, IncomingMessage};
use multiaddr::{Multiaddr, Protocol};

use crate::{
    KadConfig, KadError, KadEvent, Kademlia, Mode, PeerInfo, QueryId, QueryResult, QueryStats,
    Record, RequestId, PROTOCOL,
};

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
    Closed(#[from] Closed),
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

/// A Kademlia DHT node on a [`Host`]. See the module docs.
///
/// Cheap to clone: clones share one task. Each query method sends one command and waits
/// for the query's outcome (at most [`KadConfig::query_timeout`], after which the query
/// finishes with what it has).
#[derive(Clone, Debug)]
pub struct Dht {
    host: Host,
    task: ServiceHandle<Kademlia>,
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
        let protocols: &[&str] = match kad.mode {
            Mode::Server => &[PROTOCOL],
            Mode::Client => &[],
        };
        // This module is the I/O side: it reads the clock and hands the instant in (here and,
        // through `ServiceHandle`, on every call); the state machine reads none.
        let mut kademlia = Kademlia::new(local, kad, Instant::now());
        kademlia.set_local_addrs(dialable_listen_addrs(host));
        let task = ServiceHandle::spawn(host, protocols, kademlia)?;
        Ok(Dht {
            host: host.clone(),
            task,
        })
    }

    /// Our addresses as peers should dial them, sent in provider records and used by
    /// peers that learn us (replacing the default of [`new`](Self::new)).
    /// Errors: [`DhtError::Closed`].
    pub async fn set_local_addrs(&self, addrs: Vec<Multiaddr>) -> Result<(), DhtError> {
        Ok(self.task.call(|k| k.set_local_addrs(addrs)).await?)
    }

    /// A known address of a DHT server (a bootstrap node): given to the host and to the
    /// routing table. `addr` may end in `/p2p/<peer>`.
    /// Errors: [`DhtError::Host`] if the host refuses the address; [`DhtError::Closed`].
    pub async fn add_address(&self, peer: PeerId, addr: Multiaddr) -> Result<(), DhtError> {
        self.host.add_address(peer, addr.clone())?;
        let mut bare = addr;
        if matches!(bare.iter().last(), Some(Protocol::P2p(_))) {
            bare.pop();
        }
        Ok(self.task.call(move |k| k.add_address(peer, bare)).await?)
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
            (QueryResult::Bootstrapped { table_size }, stats) if stats.success > 0 => {
                Ok(Bootstrapped { table_size, stats })
            }
            (_, stats) => Err(DhtError::NotFound { stats }),
        }
    }

    /// Finds the k peers closest to `key` (any bytes; a peer id's bytes for a peer).
    /// Errors: [`DhtError::NotFound`] if no peer answered; [`DhtError::Kad`]; [`DhtError::Closed`].
    pub async fn find_node(&self, key: Vec<u8>) -> Result<FoundPeers, DhtError> {
        self.find_peers(|kad, now| kad.find_node(now, key)).await
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
        let (result, stats) = self.query(get).await?;
        match result {
            QueryResult::FoundRecord {
                record: Some(record),
                quorum_met,
            } => Ok(FoundRecord {
                record,
                quorum_met,
                stats,
            }),
            _ => Err(DhtError::NotFound { stats }),
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
        let (result, stats) = self.query(put).await?;
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
            (QueryResult::AddProvider { sent, acked }, stats) if acked > 0 => {
                Ok(Provided { sent, acked, stats })
            }
            (_, stats) => Err(DhtError::QuorumFailed {
                stored: 0,
                quorum: 1,
                stats,
            }),
        }
    }

    /// Finds providers of `key` (for a CID: [`crate::provider_key`]).
    /// Errors: [`DhtError::NotFound`] if none was found; [`DhtError::Kad`]; [`DhtError::Closed`].
    pub async fn get_providers(&self, key: Vec<u8>) -> Result<FoundPeers, DhtError> {
        self.find_peers(|kad, now| kad.get_providers(now, key))
            .await
    }

    /// Runs `f` on the state machine and returns its result: to read its routing table,
    /// counters ([`Kademlia::stats`]), running queries and requests, stored records.
    /// Errors: [`DhtError::Closed`].
    pub async fn inspect<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Kademlia) -> T + Send + 'static,
    ) -> Result<T, DhtError> {
        Ok(self.task.call(|k| f(k)).await?)
    }

    /// Stops the task (in server mode the handler is removed); waiting commands fail
    /// with [`DhtError::Closed`]. The host stays open. Resolves once the task stopped.
    pub async fn close(&self) {
        self.task.close().await;
    }

    /// Runs a `find_node` or `get_providers` query: [`DhtError::NotFound`] if it found no
    /// peer.
    async fn find_peers(
        &self,
        start: impl FnOnce(&mut Kademlia, Instant) -> Result<QueryId, KadError> + Send + 'static,
    ) -> Result<FoundPeers, DhtError> {
        match self.query(start).await? {
            (QueryResult::FoundPeers(peers) | QueryResult::Providers(peers), stats)
                if !peers.is_empty() =>
            {
                Ok(FoundPeers { peers, stats })
            }
            (_, stats) => Err(DhtError::NotFound { stats }),
        }
    }

    /// Starts a query on the task and waits for its outcome.
    async fn query(
        &self,
        start: impl FnOnce(&mut Kademlia, Instant) -> Result<QueryId, KadError> + Send + 'static,
    ) -> Result<(QueryResult, QueryStats), DhtError> {
        let start = move |k: &mut Kademlia, now| start(k, now).map(|id| id.0);
        Ok(self.task.command(start).await??)
    }
}

impl Service for Kademlia {
    type Done = (QueryResult, QueryStats);

    fn handle_message(
        &mut self,
        now: Instant,
        msg: &IncomingMessage,
        remote: &[Multiaddr],
    ) -> Option<Reply> {
        // A requester already in the routing table is refreshed with `remote`; an
        // unknown one is probed.
        let known = self.routing_table().get(&msg.peer).is_some();
        if !known {
            self.probe(now, msg.peer, remote.to_vec());
        }
        let from = if known { remote } else { &[] };
        match self.handle_request(now, msg.peer, from, &msg.payload) {
            Ok(Some(bytes)) => Some(Ok(bytes.into())),
            // No response (ADD_PROVIDER sent as a request): the request is dropped, which
            // a bridged stream turns into a close.
            Ok(None) => None,
            Err(e) => Some(Err((REFUSED_CODE, e.to_string()))),
        }
    }

    fn handle_outcome(&mut self, now: Instant, token: u64, outcome: Outcome) {
        // A one-way ADD_PROVIDER's acknowledgement is its (empty) response.
        self.handle_response(now, RequestId(token), outcome.payload());
    }

    fn handle_timeout(&mut self, now: Instant) {
        Kademlia::handle_timeout(self, now);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Kademlia::poll_timeout(self)
    }

    fn poll_output(&mut self) -> Option<Output> {
        let req = self.poll_request()?;
        Some(Output {
            token: req.id.0,
            peer: req.peer,
            addrs: req.addrs,
            protocol: PROTOCOL.to_string(),
            payload: req.bytes.into(),
            kind: match req.expects_response {
                true => OutputKind::Request,
                false => OutputKind::Message,
            },
            timeout: self.config.request_timeout,
        })
    }

    fn poll_done(&mut self) -> Option<(u64, Self::Done)> {
        let KadEvent::QueryFinished { id, result, stats } = self.poll_event()?;
        Some((id.0, (result, stats)))
    }
}
