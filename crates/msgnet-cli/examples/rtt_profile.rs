//! Round trips only, for profiling (`perf`, `/usr/bin/time -v`): the round-trip part of
//! `msgnet bench --streams`, for one side at a time, so that context switches, syscalls
//! and CPU can be counted per round trip.
//!
//! `cargo run --release -p msgnet-cli --example rtt_profile -- [msgnet|baseline] [quic|tcp] [N] [per-peer|per-peer-mt|tasks|main]`
//!
//! Two swarms in one process on 127.0.0.1 (each on its own thread and single-threaded
//! runtime with `per-peer`, the default; each on its own multi-thread runtime with
//! `per-peer-mt`; with `tasks` both tasks of one multi-thread runtime; with `main` the
//! client swarm on that runtime's main thread; see [`Runtimes`]), a
//! 64-byte request and a 64-byte response, one at a time: N round trips after N/10 of
//! warm-up. Prints the median and p99, and the process's CPU time and context switches per
//! measured round trip. `RTT_SLOW=1` also lists the round trips over 300 µs.

use std::time::Duration;

use msgnet_cli::bench::libp2p_baseline::Transport;
use msgnet_cli::bench::streams::{profile_round_trips, Runtimes};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let msgnet = match args.get(1).map_or("msgnet", String::as_str) {
        "msgnet" => true,
        "baseline" => false,
        other => anyhow::bail!("side must be msgnet or baseline, not {other}"),
    };
    let transport = match args.get(2).map_or("quic", String::as_str) {
        "quic" => Transport::Quic,
        "tcp" => Transport::TcpNoiseYamux,
        other => anyhow::bail!("transport must be quic or tcp, not {other}"),
    };
    let n: usize = args.get(3).map_or(Ok(20_000), |v| v.parse())?;
    let runtimes = match args.get(4).map_or("per-peer", String::as_str) {
        "per-peer" => Runtimes::PerPeer,
        "per-peer-mt" => Runtimes::PerPeerMultiThread,
        "tasks" => Runtimes::SharedTasks,
        "main" => Runtimes::SharedMainThread,
        other => anyhow::bail!("runtimes must be per-peer, per-peer-mt, tasks or main, not {other}"),
    };
    anyhow::ensure!(n > 0, "N must be at least 1");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut p = rt.block_on(profile_round_trips(transport, msgnet, runtimes, n))?;
    if std::env::var_os("RTT_SLOW").is_some() {
        let slow: Vec<u128> =
            p.samples.iter().filter(|d| **d > Duration::from_micros(300)).map(Duration::as_micros).collect();
        println!("{} round trips over 300 µs: {slow:?}", slow.len());
    }
    p.samples.sort_unstable();
    let at = |q: f64| p.samples[((p.samples.len() as f64 * q) as usize).min(p.samples.len() - 1)];
    let tick_us = 1e6 / 100.0; // USER_HZ
    println!(
        "median {:.1} µs  p99 {:.1} µs  CPU {:.1} µs/rtt  context switches {:.2}/rtt",
        at(0.5).as_secs_f64() * 1e6,
        at(0.99).as_secs_f64() * 1e6,
        p.cpu_ticks as f64 * tick_us / n as f64,
        p.context_switches as f64 / n as f64,
    );
    Ok(())
}
