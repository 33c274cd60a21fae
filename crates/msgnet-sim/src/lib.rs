//! # msgnet-sim: a deterministic discrete-event simulator for msgnet endpoints
//!
//! Many [`msgnet_core::Endpoint`]s on one virtual clock, joined by simulated links with
//! latency, jitter, a bandwidth bottleneck with a tail-drop queue, random or bursty
//! (Gilbert-Elliott) loss, duplication and reordering, in the spirit of str0m's
//! `netem` and quinn-proto's test `Pair`. No sockets, no sleeping, no real clock (one
//! `Instant::now()` for the epoch), no global RNG: the same seed and the same calls
//! give the same run, byte for byte, which [`Sim::trace_hash`] checks. By default the
//! event loop is sequential; [`Sim::set_threads`] runs it in lookahead windows on
//! several threads, with the same run for any thread count.
//!
//! - `sim`: [`Sim`], the event heap, routing and the public test API; `sim/window.rs`
//!   the windowed (parallel) mode;
//! - `link`: [`LinkParams`], [`Loss`], per-link state and counters;
//! - `node`: [`Node`], its event log, counters and send/request outcome maps;
//! - `service`: [`Service`], sans-IO protocols (Kademlia, pubsub, ...) hosted on nodes
//!   with [`Sim::add_service`] and driven through the nodes' endpoints;
//! - `trace`: the run fingerprint.
//!
//! Besides raw sends and requests, nodes host [`Service`]s: sans-IO protocol state
//! machines that see messages only (Kademlia now, pubsub later). The simulator calls them
//! at the right virtual instants and puts their outputs through the node's real endpoint;
//! `tests/kadnet/mod.rs` runs `msgnet_kad::Kademlia` this way and `examples/kad.rs`
//! runs 10,000 such nodes.
//!
//! ```
//! use std::time::Duration;
//! use msgnet_core::{EndpointConfig, SendOptions};
//! use msgnet_sim::Sim;
//!
//! let mut sim = Sim::new(7);
//! let a = sim.add_ed25519_node(EndpointConfig::default());
//! let b = sim.add_ed25519_node(EndpointConfig::default());
//! sim.register(b, "/echo");
//! sim.set_responder(b, |m| Some(m.payload.clone()));
//! sim.introduce(a, b);
//! let id = sim.request(a, b, "/echo", &b"hi"[..], SendOptions::default()).unwrap();
//! assert!(sim.run_until(Duration::from_secs(1), |s| s.node(a).response(id).is_some()));
//! assert_eq!(sim.node(a).response(id).unwrap().as_deref().ok(), Some(&b"hi"[..]));
//! ```

mod link;
mod node;
mod service;
mod sim;
mod trace;

pub use link::{LinkCounters, LinkParams, Loss, MAX_DELAY};
pub use node::{EventLog, Node, NodeCounters, NodeId, Responder};
pub use service::{AsAny, Outcome, Output, OutputKind, Reply, Service, SessionChange};
pub use sim::{Sim, UNIX_START};
pub use trace::{Mark, TraceRecord};
