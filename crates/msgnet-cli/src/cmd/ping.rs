//! `msgnet ping`: round trips with request/response on `/msgnet/ping/1.0.0`, printed
//! like ping(8). `msgnet listen` answers them with the request's own 32 bytes.
//!
//! The first round trip includes the handshake (msgnet carries the request in the
//! first handshake packet, so it is still one round trip for ed25519 peers).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use msgnet::Multiaddr;
use rand::RngCore;

use super::{client_host, KeyArg, PING_PROTOCOL};
use crate::output::println_flush;

/// Payload size of one ping.
pub const PING_SIZE: usize = 32;

/// Arguments of `msgnet ping`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The peer's address, ending in `/p2p/<peer id>`.
    addr: Multiaddr,
    /// Number of pings.
    #[arg(short = 'c', long = "count", default_value_t = 5)]
    count: u32,
    /// Milliseconds between pings.
    #[arg(
        short = 'i',
        long = "interval",
        default_value_t = 1000,
        value_name = "MS"
    )]
    interval: u64,
    /// Seconds to wait for each reply.
    #[arg(
        short = 'W',
        long = "timeout",
        default_value_t = 5.0,
        value_name = "SECS"
    )]
    timeout: f64,
    #[command(flatten)]
    key: KeyArg,
}

/// Ping `count` times, print each reply and a summary; exit 1 if none came back.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let timeout =
        Duration::try_from_secs_f64(args.timeout).map_err(|_| anyhow!("invalid --timeout"))?;
    let (host, peer) = client_host(args.key.keypair()?, &args.addr).await?;
    let mut rtts: Vec<Duration> = Vec::new();
    let mut sent = 0u32;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    for seq in 1..=args.count {
        if seq > 1 {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(args.interval)) => {}
                _ = &mut ctrl_c => break,
            }
        }
        let mut payload = vec![0u8; PING_SIZE];
        rand::thread_rng().fill_bytes(&mut payload);
        sent += 1;
        let start = Instant::now();
        let result = tokio::select! {
            r = host.request(peer, PING_PROTOCOL, payload.clone(), timeout) => r,
            _ = &mut ctrl_c => break,
        };
        let rtt = start.elapsed();
        match result {
            Ok(reply) if reply[..] == payload[..] => {
                println_flush(&format!(
                    "{} bytes from {peer}: seq={seq} time={:.3} ms",
                    reply.len(),
                    ms(rtt)
                ))?;
                rtts.push(rtt);
            }
            Ok(reply) => println_flush(&format!(
                "seq={seq}: wrong reply ({} bytes, not our payload)",
                reply.len()
            ))?,
            Err(e) => println_flush(&format!("seq={seq}: {e}"))?,
        }
    }
    host.close().await;

    let received = rtts.len() as u32;
    let loss = if sent == 0 {
        0.0
    } else {
        100.0 * f64::from(sent - received) / f64::from(sent)
    };
    println_flush(&format!("--- {peer} ping statistics ---"))?;
    let mut summary = format!("{sent} sent, {received} received, {loss:.0}% loss");
    if let (Some(min), Some(max)) = (rtts.iter().min(), rtts.iter().max()) {
        let avg = rtts.iter().sum::<Duration>() / received;
        summary += &format!(
            ", rtt min/avg/max = {:.3}/{:.3}/{:.3} ms",
            ms(*min),
            ms(avg),
            ms(*max)
        );
    }
    println_flush(&summary)?;
    Ok(if received == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// A duration in milliseconds, fractional.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
