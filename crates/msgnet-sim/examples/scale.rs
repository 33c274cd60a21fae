//! Many endpoints on one virtual clock: each sends requests to random others and every
//! request must be answered.
//!
//! `cargo run --release -p msgnet-sim --example scale -- [nodes] [requests-per-node] [seed]`

use std::time::{Duration, Instant};

use msgnet_core::{EndpointConfig, SendOptions};
use msgnet_sim::{EventLog, LinkParams, NodeId, Sim};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

fn arg(i: usize, default: u64) -> u64 {
    std::env::args().nth(i).and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn main() {
    let nodes = arg(1, 1000).max(2) as usize;
    let per_node = arg(2, 5) as usize;
    let seed = arg(3, 1);
    let wall = Instant::now();
    let mut sim = Sim::new(seed);
    sim.set_event_log(EventLog::CountOnly);
    sim.set_default_link(LinkParams {
        latency: Duration::from_millis(20),
        jitter: Duration::from_millis(10),
        ..LinkParams::default()
    });
    let ids: Vec<NodeId> = (0..nodes).map(|_| sim.add_ed25519_node(EndpointConfig::default())).collect();
    for &n in &ids {
        sim.register(n, "/ask");
        sim.set_responder(n, |m| Some(m.payload.clone()));
    }
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut pending = Vec::new();
    for &a in &ids {
        for _ in 0..per_node {
            let mut b = ids[rng.gen_range(0..nodes)];
            if b == a {
                b = ids[(a.0 + 1) % nodes];
            }
            sim.introduce(a, b);
            match sim.request(a, b, "/ask", format!("{a}->{b}").into_bytes(), SendOptions::default()) {
                Ok(id) => pending.push((a, id)),
                Err(e) => eprintln!("request refused: {e}"),
            }
        }
    }
    let total = pending.len();
    let (mut ok, mut failed) = (0usize, 0usize);
    while !pending.is_empty() && sim.now() < Duration::from_secs(120) {
        sim.run_for(Duration::from_millis(100));
        pending.retain(|(a, id)| match sim.node(*a).response(*id) {
            None => true,
            Some(r) => {
                if r.is_ok() {
                    ok += 1;
                } else {
                    failed += 1;
                }
                false
            }
        });
    }
    let t = sim.totals();
    println!("nodes:        {nodes}");
    println!("requests:     {total} ({ok} answered, {failed} failed, {} pending)", pending.len());
    println!("datagrams:    {} delivered", t.delivered);
    println!("events:       {}", sim.steps());
    println!("virtual time: {:?}", sim.now());
    println!("wall time:    {:?}", wall.elapsed());
    println!("trace hash:   {:016x}", sim.trace_hash());
}
