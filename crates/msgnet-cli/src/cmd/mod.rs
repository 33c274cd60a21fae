//! The subcommands, one module each, and what they share (identity, client hosts).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use msgnet::{Host, Keypair, Multiaddr, PeerId};

pub mod bench;
pub mod demo;
pub mod dht;
pub mod id;
pub mod listen;
pub mod ping;
pub mod send;

/// The protocol `msgnet ping` speaks and `msgnet listen` always answers (echo).
pub const PING_PROTOCOL: &str = "/msgnet/ping/1.0.0";
/// Protocols `msgnet listen` handles without being asked.
pub const DEFAULT_PROTOCOLS: &[&str] = &["/echo/1.0.0", "/chat/1.0.0", PING_PROTOCOL];

/// msgnet: message orientation for libp2p.
#[derive(Debug, Parser)]
#[command(name = "msgnet", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the peer id of the identity (from --key, else a fresh one).
    Id(id::Args),
    /// Listen for messages and print them, one line each.
    Listen(listen::Args),
    /// Send one message (or request) to a peer; exit 0 once the peer acknowledged it.
    Send(send::Args),
    /// Measure round trips to a peer with request/response on /msgnet/ping/1.0.0.
    Ping(ping::Args),
    /// Four nodes in one process, showing what msgnet does.
    Demo(demo::Args),
    /// Measure msgnet against raw UDP on loopback.
    Bench(bench::Args),
    /// The libp2p Kademlia DHT: put, get, provide, find-providers, find-peer.
    Dht(dht::Args),
}

/// Run one parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Id(a) => id::run(a).await,
        Command::Listen(a) => listen::run(a).await,
        Command::Send(a) => send::run(a).await,
        Command::Ping(a) => ping::run(a).await,
        Command::Demo(a) => demo::run(a).await,
        Command::Bench(a) => bench::run(a).await,
        Command::Dht(a) => dht::run(a).await,
    }
}

/// The `--key FILE` option every subcommand takes.
#[derive(Debug, Clone, clap::Args)]
pub struct KeyArg {
    /// Identity key file: loaded if it exists, else created with a new ed25519 key.
    /// Without it, a fresh ed25519 identity is used for this run only.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
}

impl KeyArg {
    /// The identity: from the key file, or a fresh ed25519 keypair.
    pub fn keypair(&self) -> anyhow::Result<Keypair> {
        match &self.key {
            Some(path) => load_key(path),
            None => Ok(Keypair::generate_ed25519()),
        }
    }
}

fn load_key(path: &Path) -> anyhow::Result<Keypair> {
    msgnet::keyfile::load_or_create(path).with_context(|| format!("key file {}", path.display()))
}

/// A host that dials out to `target`: it listens on an ephemeral port of the matching
/// address family, knows the target's address, and returns the target's peer id.
pub async fn client_host(keypair: Keypair, target: &Multiaddr) -> anyhow::Result<(Host, PeerId)> {
    let (peer, addr) = Host::dial_info(target)?;
    let listen: Multiaddr = if crate::output::is_ip6(&addr) {
        "/ip6/::/udp/0"
    } else {
        "/ip4/0.0.0.0/udp/0"
    }
    .parse()
    .context("listen address")?;
    let host = Host::builder(keypair).listen(listen).build().await?;
    host.add_address(peer, addr)?;
    Ok((host, peer))
}
