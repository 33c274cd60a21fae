//! `msgnet dht`: one DHT operation from a short-lived client node, then exit.
//!
//! Every subcommand starts a host (UDP, an ephemeral port on the bootstrap address's
//! family: loopback if the first bootstrap address is loopback, else unspecified), runs a
//! [`Dht`] in client mode (it asks, it does not serve), adds the `--bootstrap` nodes and
//! runs one query through them:
//!
//! - `put KEY VALUE`: stores the record on the k closest nodes; exits once every one of
//!   them acknowledged or failed. Prints `stored <key> on <n> peers (<figures>)`.
//! - `get KEY`: prints the value (as `listen` prints payloads), then the figures.
//! - `provide CID`: announces this node (its `--key` identity) as a provider of the CID to
//!   the k closest nodes; exits once the announcements were acknowledged. Prints
//!   `providing <cid> on <n> peers (<figures>)`.
//! - `find-providers CID`: one line per provider: `<peer id>` then its addresses.
//! - `find-peer PEER_ID`: the peer's addresses with `/p2p/<id>`, one per line.
//!
//! Figures: `<rounds> rounds, <requests> requests, <ms> ms`. Nothing found, no bootstrap
//! node reachable, or a quorum not met is one `error: <reason>` line on stderr, exit 1.
//! Records stored by a short-lived command live on the nodes that stored them
//! ([`msgnet_kad::KadConfig::record_ttl`], 48 h), not on the command's own node.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use cid::Cid;
use msgnet::{Host, Multiaddr, PeerId};
use msgnet_kad::host::Dht;
use msgnet_kad::{provider_key, KadConfig, Mode, QueryStats, Record};
use multiaddr::Protocol;

use super::KeyArg;
use crate::output;

/// Arguments of `msgnet dht`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The operation.
    #[command(subcommand)]
    op: Op,
}

/// The options every `dht` subcommand takes.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// A DHT node to start from, `<address>/p2p/<peer id>` (repeatable; at least one),
    /// e.g. a line printed by `msgnet listen`.
    #[arg(
        long = "bootstrap",
        short = 'b',
        value_name = "MULTIADDR",
        required = true
    )]
    bootstrap: Vec<Multiaddr>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    timeout: f64,
    #[command(flatten)]
    key: KeyArg,
}

#[derive(Debug, clap::Subcommand)]
enum Op {
    /// Store KEY = VALUE on the k closest nodes.
    Put {
        /// The record's key (UTF-8).
        #[arg(value_name = "KEY")]
        name: String,
        /// The record's value (UTF-8).
        value: String,
        #[command(flatten)]
        common: Common,
    },
    /// Find the value stored under KEY and print it.
    Get {
        /// The record's key (UTF-8).
        #[arg(value_name = "KEY")]
        name: String,
        #[command(flatten)]
        common: Common,
    },
    /// Announce this node (its --key identity) as a provider of CID.
    Provide {
        /// The content id, e.g. `bafy…`.
        cid: Cid,
        #[command(flatten)]
        common: Common,
    },
    /// Find the providers of CID, one line each.
    FindProviders {
        /// The content id.
        cid: Cid,
        #[command(flatten)]
        common: Common,
    },
    /// Find a peer's addresses.
    FindPeer {
        /// The peer id.
        peer: PeerId,
        #[command(flatten)]
        common: Common,
    },
}

/// Run one operation, print its result, exit.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let common = match &args.op {
        Op::Put { common, .. }
        | Op::Get { common, .. }
        | Op::Provide { common, .. }
        | Op::FindProviders { common, .. }
        | Op::FindPeer { common, .. } => common.clone(),
    };
    let timeout =
        Duration::try_from_secs_f64(common.timeout).map_err(|_| anyhow!("invalid --timeout"))?;
    let (host, dht) = start(&common).await?;
    let result = match tokio::time::timeout(timeout, op(&dht, args.op)).await {
        Ok(r) => r,
        Err(_) => Err(anyhow!("timed out after {} s", common.timeout)),
    };
    dht.close().await;
    host.close().await;
    result.map(|()| ExitCode::SUCCESS)
}

/// A client-mode DHT on a fresh host that knows the bootstrap nodes.
async fn start(common: &Common) -> anyhow::Result<(Host, Dht)> {
    let first = common
        .bootstrap
        .first()
        .ok_or_else(|| anyhow!("at least one --bootstrap address is needed"))?;
    let listen = client_listen(first)?;
    let host = Host::builder(common.key.keypair()?)
        .listen(listen)
        .build()
        .await?;
    let config = KadConfig {
        mode: Mode::Client,
        ..KadConfig::default()
    };
    let dht = Dht::new(&host, config)?;
    for addr in &common.bootstrap {
        dht.add_bootstrap(addr)
            .await
            .with_context(|| format!("--bootstrap {addr}"))?;
    }
    Ok((host, dht))
}

/// The UDP address a client listens on: loopback for a loopback bootstrap node (so that
/// the addresses it announces are dialable there), else the unspecified address.
pub fn client_listen(bootstrap: &Multiaddr) -> anyhow::Result<Multiaddr> {
    let s = match bootstrap.iter().next() {
        Some(Protocol::Ip4(ip)) if ip.is_loopback() => "/ip4/127.0.0.1/udp/0",
        Some(Protocol::Ip6(ip)) if ip.is_loopback() => "/ip6/::1/udp/0",
        Some(Protocol::Ip6(_)) => "/ip6/::/udp/0",
        _ => "/ip4/0.0.0.0/udp/0",
    };
    s.parse().context("listen address")
}

/// `<rounds> rounds, <requests> requests, <ms> ms`.
pub fn figures(stats: &QueryStats) -> String {
    format!(
        "{} rounds, {} requests, {} ms",
        stats.rounds,
        stats.requests,
        stats.duration.as_millis()
    )
}

fn say(line: &str) -> anyhow::Result<()> {
    output::println_flush(line).map_err(anyhow::Error::from)
}

async fn op(dht: &Dht, op: Op) -> anyhow::Result<()> {
    match op {
        Op::Put {
            name: key, value, ..
        } => {
            if key.is_empty() {
                bail!("the key must not be empty");
            }
            let put = dht
                .put_value(Record::new(key.as_bytes(), value.as_bytes()), 1)
                .await?;
            say(&format!(
                "stored {key} on {} peers ({})",
                put.stored,
                figures(&put.stats)
            ))
        }
        Op::Get { name: key, .. } => {
            let got = dht.get_value(key.into_bytes(), 1).await?;
            say(&output::payload(&got.record.value))?;
            say(&format!("found ({})", figures(&got.stats)))
        }
        Op::Provide { cid, .. } => {
            let p = dht.start_providing(provider_key(&cid)).await?;
            say(&format!(
                "providing {cid} on {} peers ({})",
                p.acked,
                figures(&p.stats)
            ))
        }
        Op::FindProviders { cid, .. } => {
            let found = dht.get_providers(provider_key(&cid)).await?;
            for p in &found.peers {
                let mut line = p.peer.to_string();
                for a in &p.addrs {
                    line.push(' ');
                    line.push_str(&a.to_string());
                }
                say(&line)?;
            }
            Ok(())
        }
        Op::FindPeer { peer, .. } => {
            let found = dht.find_peer(peer).await?;
            if found.peer.addrs.is_empty() {
                say(&peer.to_string())?;
            }
            for a in &found.peer.addrs {
                say(&output::dialable(a, peer).to_string())?;
            }
            Ok(())
        }
    }
}
