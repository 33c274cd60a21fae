//! 10,000 Kademlia nodes in one process: sequential bootstrap, then 1,000 lookups of
//! random existing peer ids, then again with 20 % of the nodes silently gone. Prints the
//! success rate, rounds and messages per lookup (median and p99).
//!
//! `cargo run --release -p msgnet-kad --example kad_scale [nodes] [lookups]`

#[path = "../tests/harness/mod.rs"]
mod harness;

use harness::{lookups, percentiles, Net};
use msgnet_kad::KadConfig;
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1).map(|a| {
        a.parse::<usize>()
            .unwrap_or_else(|_| panic!("not a number: {a}"))
    });
    let n = args.next().unwrap_or(10_000);
    let count = args.next().unwrap_or(1_000);
    let t0 = Instant::now();
    let mut net = Net::new(n, 42, |i| KadConfig {
        rng_seed: i as u64,
        ..KadConfig::default()
    });
    net.bootstrap_all(500);
    let sizes: Vec<u32> = net
        .nodes
        .iter()
        .map(|x| x.kad.routing_table().len() as u32)
        .collect();
    let (med, p99) = percentiles(sizes);
    println!(
        "{n} nodes bootstrapped in {:.1?} (wall): {} messages ({:.0} per node); routing table median {med}, p99 {p99}",
        t0.elapsed(),
        net.messages,
        net.messages as f64 / n as f64
    );
    let t1 = Instant::now();
    let (ok, rounds, msgs) = lookups(&mut net, count, 50);
    print("healthy", ok, count, rounds, msgs, t1);
    for _ in 0..n / 5 {
        let i = net.random_node(true);
        net.nodes[i].alive = false;
    }
    let t2 = Instant::now();
    let (ok, rounds, msgs) = lookups(&mut net, count, 50);
    print("20% gone", ok, count, rounds, msgs, t2);
    println!("total wall time {:.1?}", t0.elapsed());
}

fn print(what: &str, ok: usize, count: usize, rounds: Vec<u32>, msgs: Vec<u32>, since: Instant) {
    let mean = |v: &[u32]| v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len().max(1) as f64;
    let (rm, mm) = (mean(&rounds), mean(&msgs));
    let ((r50, r99), (m50, m99)) = (percentiles(rounds), percentiles(msgs));
    println!(
        "{what}: {ok}/{count} lookups found the target ({:.1}%) in {:.1?}; rounds mean {rm:.2} median {r50} p99 {r99}; \
         messages mean {mm:.1} median {m50} p99 {m99}",
        100.0 * ok as f64 / count as f64,
        since.elapsed()
    );
}
