//! `msgnet listen`: print dialable addresses, then one line per received message.
//!
//! Output, line by line and flushed per line:
//!
//! 1. every listen address with `/p2p/<id>` appended, one per line: the UDP address(es)
//!    first, then the TCP and QUIC ones (an unspecified IP printed as loopback, so that
//!    the FIRST line is dialable on this machine). By default the host listens on UDP,
//!    TCP and QUIC (`/ip4/0.0.0.0/udp/0`, `/ip4/0.0.0.0/tcp/0`,
//!    `/ip4/0.0.0.0/udp/0/quic-v1`); every line is printed before the first message line;
//! 2. then `<peer id> <protocol> <payload>` for every message and request received,
//!    payload as text when printable UTF-8, else `0x<hex>`.
//!
//! The Host registers handlers per protocol, so `listen` handles the default set
//! ([`DEFAULT_PROTOCOLS`]) plus every `--protocol`. Requests on
//! [`PING_PROTOCOL`] are answered with their own payload and not printed; with `--echo`
//! every request is answered that way; otherwise other requests fail with code 1.
//!
//! The node also serves the libp2p Kademlia DHT (`/ipfs/kad/1.0.0`, a
//! [`msgnet_kad::host::Dht`] in server mode; its requests are not printed), unless
//! `--no-dht`. With `--bootstrap ADDR` (repeatable) it joins the DHT through those nodes
//! once the addresses are printed, and prints `dht: joined, <n> peers in the routing table`
//! (or `dht: bootstrap failed: <reason>`, and keeps serving). Records and provider
//! announcements it stores for others live in memory for the life of the process.

use std::process::ExitCode;

use anyhow::{bail, Context};
use msgnet::{Host, IncomingMessage, Multiaddr};
use msgnet_kad::host::Dht;
use msgnet_kad::KadConfig;
use tokio::sync::mpsc;

use super::{KeyArg, DEFAULT_PROTOCOLS, PING_PROTOCOL};
use crate::output;

/// Arguments of `msgnet listen`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on (repeatable): `/ip4/…/udp/N` (msgnet's UDP transport),
    /// `/ip4/…/tcp/N` or `/ip4/…/udp/N/quic-v1` (libp2p). Default: UDP, TCP and QUIC on
    /// 0.0.0.0, free ports.
    #[arg(long = "listen", short = 'l', value_name = "MULTIADDR")]
    listen: Vec<Multiaddr>,
    /// Also handle this protocol (repeatable), besides /echo/1.0.0, /chat/1.0.0 and
    /// /msgnet/ping/1.0.0.
    #[arg(long = "protocol", short = 'p', value_name = "PROTOCOL")]
    protocols: Vec<String>,
    /// Answer every request with its own payload.
    #[arg(long)]
    echo: bool,
    /// Join the DHT through this node, `<address>/p2p/<peer id>` (repeatable).
    #[arg(long = "bootstrap", short = 'b', value_name = "MULTIADDR")]
    bootstrap: Vec<Multiaddr>,
    /// Do not serve the DHT.
    #[arg(long)]
    no_dht: bool,
    #[command(flatten)]
    key: KeyArg,
}

/// Run until Ctrl-C (or until stdout is closed).
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let keypair = args.key.keypair()?;
    let mut builder = Host::builder(keypair);
    // Without --listen the Host's default applies: UDP, TCP and QUIC on 0.0.0.0.
    for addr in args.listen.clone() {
        builder = builder.listen(addr);
    }
    let host = builder.build().await?;
    if args.no_dht && !args.bootstrap.is_empty() {
        bail!("--bootstrap joins the DHT: it cannot go with --no-dht");
    }
    for addr in &args.bootstrap {
        Host::dial_info(addr).with_context(|| format!("--bootstrap {addr}"))?;
    }
    let me = host.local_peer_id();
    let dht = if args.no_dht {
        None
    } else {
        // Peers on this machine dial the printed (loopback) form of unspecified addresses.
        let local_addrs = host
            .listen_addrs()
            .iter()
            .map(|a| strip_p2p(output::dialable(a, me)))
            .collect();
        let dht = Dht::new(&host, KadConfig::default()).context("serve the DHT")?;
        dht.set_local_addrs(local_addrs).await?;
        Some(dht)
    };
    let (tx, mut rx) = mpsc::channel::<IncomingMessage>(1024);
    let mut protocols: Vec<String> = DEFAULT_PROTOCOLS.iter().map(|p| p.to_string()).collect();
    for p in args.protocols {
        if !protocols.contains(&p) {
            protocols.push(p);
        }
    }
    for protocol in &protocols {
        let mut incoming = host
            .handle(protocol)
            .with_context(|| format!("handle {protocol}"))?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(msg) = incoming.recv().await {
                if tx.send(msg).await.is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);

    // Print the addresses only now that every handler exists: a peer that reads them
    // and sends at once must not find the protocol unhandled.
    for addr in host.listen_addrs() {
        output::println_flush(&output::dialable(&addr, me).to_string())?;
    }
    if let (Some(dht), false) = (&dht, args.bootstrap.is_empty()) {
        tokio::spawn(join(dht.clone(), args.bootstrap.clone()));
    }

    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let result = loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(msg) => if let Err(e) = on_message(msg, args.echo) { break Err(e) },
                None => break Ok(()),
            },
            _ = &mut ctrl_c => break Ok(()),
        }
    };
    if let Some(dht) = dht {
        dht.close().await;
    }
    host.close().await;
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // The reader of our stdout went away: that is how a pipeline ends, not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e.into()),
    }
}

/// Joins the DHT through `bootstrap` and prints how it went (one `dht:` line).
async fn join(dht: Dht, bootstrap: Vec<Multiaddr>) {
    let mut line = String::new();
    for addr in &bootstrap {
        if let Err(e) = dht.add_bootstrap(addr).await {
            line = format!("dht: bootstrap address {addr}: {e}");
        }
    }
    if line.is_empty() {
        line = match dht.bootstrap().await {
            Ok(b) => format!("dht: joined, {} peers in the routing table", b.table_size),
            Err(e) => format!("dht: bootstrap failed: {e}"),
        };
    }
    // A closed stdout ends `listen` through the message loop; nothing to do here.
    let _ = output::println_flush(&line);
}

fn strip_p2p(mut addr: Multiaddr) -> Multiaddr {
    if matches!(addr.iter().last(), Some(multiaddr::Protocol::P2p(_))) {
        addr.pop();
    }
    addr
}

/// Print one message and answer it if it is a request.
fn on_message(msg: IncomingMessage, echo: bool) -> std::io::Result<()> {
    let is_ping = msg.protocol == PING_PROTOCOL;
    if !is_ping {
        output::println_flush(&format!(
            "{} {} {}",
            msg.peer,
            msg.protocol,
            output::payload(&msg.payload)
        ))?;
    }
    if msg.is_request() {
        // A failed answer means the requester is gone; nothing to do about it here.
        let _ = if is_ping || echo {
            let payload = msg.payload.clone();
            msg.respond(payload)
        } else {
            msg.fail(1, "msgnet listen answers requests only with --echo")
        };
    }
    Ok(())
}
