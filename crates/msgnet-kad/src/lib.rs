//! msgnet-kad: Kademlia on messages, wire-compatible with the libp2p kad-dht
//! (`/ipfs/kad/1.0.0`), as a sans-IO state machine.
//!
//! The service sees request and response *messages* only: no sockets, sessions, streams,
//! clocks or global randomness. Every input takes `now`; randomness comes from a ChaCha20
//! RNG seeded from [`KadConfig::rng_seed`]. Every queue is bounded.
//!
//! # Call order
//!
//! 1. Create a [`Kademlia`] with [`Kademlia::new`], tell it its own dialable addresses with
//!    [`Kademlia::set_local_addrs`] and some bootstrap peers with [`Kademlia::add_address`].
//! 2. Feed inputs as they happen:
//!    - an inbound request on `/ipfs/kad/1.0.0` → [`Kademlia::handle_request`]; send the
//!      returned bytes back as the response (`Ok(None)`: send nothing, ADD_PROVIDER has no
//!      response; `Err`: close/reset the exchange);
//!    - the response to (or failure of) an [`OutboundRequest`] →
//!      [`Kademlia::handle_response`] with the request's [`RequestId`];
//!    - the deadline from [`Kademlia::poll_timeout`] has passed → [`Kademlia::handle_timeout`];
//!    - a host that cannot tell whether a requester serves [`PROTOCOL`] passes `&[]` as
//!      its addresses to `handle_request` and, if it is not in the routing table, its
//!      addresses to [`Kademlia::probe`].
//! 3. Issue commands ([`Kademlia::bootstrap`], [`Kademlia::find_node`],
//!    [`Kademlia::get_value`], [`Kademlia::put_value`], [`Kademlia::add_provider`],
//!    [`Kademlia::get_providers`]); each returns a [`QueryId`].
//! 4. After every input or command, drain [`Kademlia::poll_request`] (send each request
//!    to its peer; if [`OutboundRequest::expects_response`] is false it is a one-way
//!    message, whose acknowledgement is its response) and [`Kademlia::poll_event`], then
//!    re-arm the timer from [`Kademlia::poll_timeout`].
//!
//! The host owns framing (on libp2p streams an unsigned-varint length before each message,
//! one request and one response per stream). Kademlia expires its own requests after
//! [`KadConfig::request_timeout`].
//!
//! In [`Mode::Server`] the node answers requests; in [`Mode::Client`] it refuses them
//! ([`KadError::ClientMode`]): the host should not advertise [`PROTOCOL`] for it, and
//! passes `&[]` as a client requester's addresses to `handle_request`, so that peers
//! never learn clients into their routing tables.
//!
//! With the `host` feature (default), [`host::Dht`] runs this state machine on a
//! `msgnet::Host` with async results. Modules: [`key`] (distance), [`wire`] (protobuf),
//! [`table`] (k-buckets), [`iter`] (lookups), [`record`] (records, providers, stores),
//! `kad` (the state machine) and `server` (answering requests).

pub mod error;
#[cfg(feature = "host")]
pub mod host;
pub mod iter;
mod kad;
pub mod key;
pub mod record;
mod server;
pub mod table;
pub mod wire;

pub use error::{DecodeError, KadError};
pub use kad::Kademlia;
pub use record::{provider_key, AcceptAll, PeerInfo, Record, Validator};

use libp2p_identity::PeerId;
use multiaddr::Multiaddr;
use std::sync::Arc;
use std::time::Duration;

/// The protocol id the service speaks.
pub const PROTOCOL: &str = "/ipfs/kad/1.0.0";

/// Whether the node answers requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Queries only; does not answer requests.
    Client,
    /// Queries and answers.
    Server,
}

/// Configuration. [`Default`] gives libp2p's usual values.
#[derive(Clone, Debug)]
pub struct KadConfig {
    /// Bucket size and replication factor (20).
    pub k: usize,
    /// Lookup parallelism (3).
    pub alpha: usize,
    /// S/Kademlia disjoint paths: when true a lookup runs `alpha` disjoint paths.
    pub disjoint_paths: bool,
    /// Client or server.
    pub mode: Mode,
    /// An unanswered request fails after this long (10 s).
    pub request_timeout: Duration,
    /// A query finishes with what it has after this long (60 s).
    pub query_timeout: Duration,
    /// Lifetime of records we store for others (48 h).
    pub record_ttl: Duration,
    /// Lifetime of provider records (48 h).
    pub provider_ttl: Duration,
    /// Re-put records we published (22 h); `None` disables.
    pub record_republish_interval: Option<Duration>,
    /// Re-put records stored for others to the current k closest (1 h); `None` disables.
    pub record_replication_interval: Option<Duration>,
    /// Re-announce keys we provide (22 h); `None` disables.
    pub provider_republish_interval: Option<Duration>,
    /// Refresh stale buckets and look up our own id (10 min); `None` disables.
    pub refresh_interval: Option<Duration>,
    /// Records kept (1024).
    pub max_records: usize,
    /// Largest record value accepted (64 KiB).
    pub max_value_size: usize,
    /// Provider keys kept (1024).
    pub max_provider_keys: usize,
    /// Providers kept per key, and providers that end a GET_PROVIDERS lookup (20).
    pub max_providers_per_key: usize,
    /// Largest message accepted (1 MiB).
    pub max_message_size: usize,
    /// Concurrent queries (64), counting finished ones whose event was not taken yet;
    /// internal republish jobs use at most half.
    pub max_queries: usize,
    /// Decides which records are valid and which is best.
    pub validator: Arc<dyn Validator>,
    /// Seed of the ChaCha20 RNG (refresh targets).
    pub rng_seed: u64,
}

impl Default for KadConfig {
    fn default() -> Self {
        let h = Duration::from_secs(3600);
        KadConfig {
            k: 20,
            alpha: 3,
            disjoint_paths: false,
            mode: Mode::Server,
            request_timeout: Duration::from_secs(10),
            query_timeout: Duration::from_secs(60),
            record_ttl: 48 * h,
            provider_ttl: 48 * h,
            record_republish_interval: Some(22 * h),
            record_replication_interval: Some(h),
            provider_republish_interval: Some(22 * h),
            refresh_interval: Some(Duration::from_secs(600)),
            max_records: 1024,
            max_value_size: 64 * 1024,
            max_provider_keys: 1024,
            max_providers_per_key: 20,
            max_message_size: 1 << 20,
            max_queries: 64,
            validator: Arc::new(AcceptAll),
            rng_seed: 0,
        }
    }
}

/// Identifies a query started by a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueryId(pub u64);

/// Identifies an outbound request; hand it back with [`Kademlia::handle_response`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// A message to send to a peer on [`PROTOCOL`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundRequest {
    /// Report the response under this id.
    pub id: RequestId,
    /// Destination.
    pub peer: PeerId,
    /// Addresses known for it (may be empty if the host knows better).
    pub addrs: Vec<Multiaddr>,
    /// The protobuf message.
    pub bytes: Vec<u8>,
    /// False for ADD_PROVIDER, which has no response: send it as a one-way message and
    /// report the host's acknowledgement of it as the response `Some(&[])`.
    pub expects_response: bool,
}

/// Counters of one query.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueryStats {
    /// Requests sent.
    pub requests: u32,
    /// Requests answered.
    pub success: u32,
    /// Requests failed or timed out.
    pub failure: u32,
    /// Lookup rounds: the largest hop count of a queried peer.
    pub rounds: u32,
    /// Time from start to finish.
    pub duration: Duration,
    /// The query hit [`KadConfig::query_timeout`].
    pub timed_out: bool,
}

/// The outcome of a query.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueryResult {
    /// `bootstrap` finished (own-id lookup and bucket refresh).
    Bootstrapped {
        /// Routing table size afterwards.
        table_size: usize,
    },
    /// `find_node`: the k closest peers that answered, closest first.
    FoundPeers(Vec<PeerInfo>),
    /// `get_value`: the best valid record found, if any.
    FoundRecord {
        /// The record selected by the validator.
        record: Option<Record>,
        /// At least `quorum` peers (counting ourselves) returned a valid record.
        quorum_met: bool,
    },
    /// `put_value`: how many of the k closest stored it.
    PutValue {
        /// Peers that acknowledged the PUT_VALUE.
        stored: usize,
        /// `stored >= quorum`.
        quorum_met: bool,
    },
    /// `add_provider`: to how many of the k closest ADD_PROVIDER was sent, and delivered.
    AddProvider {
        /// Peers the announcement was sent to.
        sent: usize,
        /// Of those, the ones whose host acknowledged it (for libp2p peers reached through
        /// a stream bridge: the stream was written).
        acked: usize,
    },
    /// `get_providers`: providers found (including ourselves if we provide).
    Providers(Vec<PeerInfo>),
}

/// Something the application may want to know.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KadEvent {
    /// A query finished.
    QueryFinished {
        /// Its id.
        id: QueryId,
        /// Its outcome.
        result: QueryResult,
        /// Its counters.
        stats: QueryStats,
    },
}

/// Node-wide counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KadStats {
    /// Inbound requests handled.
    pub requests_in: u64,
    /// Outbound requests issued.
    pub requests_out: u64,
    /// Malformed protobufs received (requests or responses).
    pub malformed: u64,
    /// Well-formed but invalid requests or records refused.
    pub invalid: u64,
    /// Responses for unknown or expired request ids.
    pub unexpected_responses: u64,
}
