//! # msgnet: message orientation for libp2p
//!
//! This crate is the public API of msgnet and its tokio driver. A [`Host`] sends messages
//! and requests to peers on protocol ids and receives them through one handler per
//! protocol ([`Host::handle`]). Underneath, the sans-IO core ([`msgnet_core`]) runs Noise
//! sessions bound to libp2p identities over UDP, with reliable, ordered or unreliable
//! delivery per message; and a libp2p `Swarm` (TCP+noise+yamux and QUIC, with
//! [`msgnet_libp2p`]'s behaviour, identify and ping) carries the same messages over libp2p
//! streams. [`network`] says which transport a peer's messages take.
//!
//! ```
//! use std::time::Duration;
//! use msgnet::{Host, Keypair};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let listen: msgnet::Multiaddr = "/ip4/127.0.0.1/udp/0".parse()?;
//! let server = Host::builder(Keypair::generate_ed25519()).listen(listen.clone()).build().await?;
//! let client = Host::builder(Keypair::generate_ed25519()).listen(listen).build().await?;
//!
//! // The server answers every request on /echo/1 with the request's bytes.
//! let mut echo = server.handle("/echo/1")?;
//! tokio::spawn(async move {
//!     while let Some(msg) = echo.recv().await {
//!         let payload = msg.payload.clone();
//!         let _ = msg.respond(payload);
//!     }
//! });
//!
//! client.add_address(server.local_peer_id(), server.listen_addrs()[0].clone())?;
//! let reply = client
//!     .request(server.local_peer_id(), "/echo/1", "hello", Duration::from_secs(5))
//!     .await?;
//! assert_eq!(&reply[..], b"hello");
//!
//! client.close().await;
//! server.close().await;
//! # Ok(())
//! # }
//! ```
//!
//! ## Modules
//!
//! - [`Host`], [`HostBuilder`], [`HostEvent`] (`host.rs`): the handle and its builder.
//! - [`Incoming`], [`IncomingMessage`] (`incoming.rs`): handlers and answering requests.
//! - the driver (`driver.rs`): the task that owns the endpoint and the sockets; its docs
//!   describe queue bounds and what a slow handler does to the host.
//! - [`network`]: the transports ([`Transport`]) and the rule that picks one per peer.
//! - [`keyfile`]: persistent identities.
//! - [`service`]: runs any sans-IO message service (a [`service::Service`], e.g. Kademlia)
//!   on a [`Host`].
//! - [`multiaddr_to_socket`], [`socket_to_multiaddr`]: UDP address conversions.

mod addr;
mod command;
mod driver;
mod error;
mod host;
mod incoming;
pub mod keyfile;
pub mod network;
pub mod service;

pub use addr::{multiaddr_to_socket, socket_to_multiaddr};
pub use error::HostError;
pub use host::{Host, HostBuilder, HostEvent, DEFAULT_HANDLER_QUEUE};
pub use incoming::{Incoming, IncomingMessage};
pub use network::{ConnectionInfo, Transport};

pub use bytes::Bytes;
pub use libp2p_identity::{Keypair, PeerId};
pub use msgnet_core::{
    Delivery, DropReason, EndpointConfig, EndpointStats, SendError, SendOptions, SessionInfo,
};
pub use multiaddr::Multiaddr;
