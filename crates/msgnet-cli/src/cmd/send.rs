//! `msgnet send`: one reliable message (or request) to one peer.
//!
//! Exits 0 only once the peer acknowledged the message (the Host's `send` resolved
//! `Ok`); with `--request`, once the reply arrived, which is printed like `listen`
//! prints payloads. Any failure is one `error: <reason>` line on stderr and exit code 1,
//! the reason being the Host's typed error (e.g. `peer does not support protocol /x/1`).
//!
//! The address decides the transport: msgnet's UDP sessions, or a libp2p connection over
//! TCP or QUIC (the Host dials out on any of them whatever it listens on).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::anyhow;
use msgnet::Multiaddr;

use super::{client_host, KeyArg};
use crate::output;

/// Arguments of `msgnet send`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The peer's address, ending in `/p2p/<peer id>`: UDP (`/ip4/…/udp/N/p2p/…`), TCP
    /// (`/ip4/…/tcp/N/p2p/…`) or QUIC (`/ip4/…/udp/N/quic-v1/p2p/…`).
    addr: Multiaddr,
    /// Protocol id, e.g. `/chat/1.0.0`.
    protocol: String,
    /// The message (UTF-8 text; with --hex, hex digits).
    message: String,
    /// Send a request and print the reply.
    #[arg(long)]
    request: bool,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    timeout: f64,
    /// The message is hex (an optional 0x prefix).
    #[arg(long)]
    hex: bool,
    #[command(flatten)]
    key: KeyArg,
}

/// Send, wait for the acknowledgement (or reply), exit.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let payload = output::parse_payload(&args.message, args.hex)?;
    let timeout =
        Duration::try_from_secs_f64(args.timeout).map_err(|_| anyhow!("invalid --timeout"))?;
    let (host, peer) = client_host(args.key.keypair()?, &args.addr).await?;
    let result = if args.request {
        match host.request(peer, &args.protocol, payload, timeout).await {
            Ok(reply) => {
                output::println_flush(&output::payload(&reply)).map_err(anyhow::Error::from)
            }
            Err(e) => Err(e.into()),
        }
    } else {
        match tokio::time::timeout(timeout, host.send(peer, &args.protocol, payload)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(anyhow!(msgnet::SendError::TimedOut)),
        }
    };
    host.close().await;
    result.map(|()| ExitCode::SUCCESS)
}
