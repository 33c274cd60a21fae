//! A thousand endpoints: each sends a few requests to random others (every one needs a
//! handshake), and every request is answered.

use std::time::{Duration, Instant};

use msgnet_core::{EndpointConfig, MessageId, SendOptions};
use msgnet_sim::{EventLog, LinkParams, NodeId, Sim};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

const NODES: usize = 1000;
const REQUESTS: usize = 3;

#[test]
fn thousand_nodes_all_requests_answered() {
    let wall = Instant::now();
    let mut sim = Sim::new(2024);
    sim.set_event_log(EventLog::CountOnly);
    sim.set_default_link(LinkParams {
        latency: Duration::from_millis(20),
        jitter: Duration::from_millis(10),
        ..LinkParams::default()
    });
    let ids: Vec<NodeId> = (0..NODES).map(|_| sim.add_ed25519_node(EndpointConfig::default())).collect();
    for &n in &ids {
        sim.register(n, "/ask");
        sim.set_responder(n, |m| {
            let mut v = b"re:".to_vec();
            v.extend_from_slice(&m.payload);
            Some(v.into())
        });
    }
    let setup = wall.elapsed();
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let mut pending: Vec<(NodeId, MessageId, Vec<u8>)> = Vec::new();
    for &a in &ids {
        for k in 0..REQUESTS {
            let b = loop {
                let b = ids[rng.gen_range(0..NODES)];
                if b != a {
                    break b;
                }
            };
            sim.introduce(a, b);
            let body = format!("{a}->{b}#{k}").into_bytes();
            let id = sim.request(a, b, "/ask", body.clone(), SendOptions::default()).expect("request");
            pending.push((a, id, body));
        }
    }
    let total = pending.len();
    let mut answered = 0;
    while !pending.is_empty() && sim.now() < Duration::from_secs(30) {
        sim.run_for(Duration::from_millis(100));
        pending.retain(|(a, id, body)| match sim.node(*a).response(*id) {
            None => true,
            Some(Ok(r)) => {
                assert_eq!(&r[..3], b"re:");
                assert_eq!(&r[3..], &body[..]);
                answered += 1;
                false
            }
            Some(Err(e)) => panic!("request {id:?} from {a} failed: {e}"),
        });
    }
    let elapsed = wall.elapsed();
    let t = sim.totals();
    println!(
        "{NODES} nodes, {total} requests, {answered} answered; {:?} virtual; wall {elapsed:?} (setup {setup:?}); \
         {} steps, {} datagrams",
        sim.now(),
        sim.steps(),
        t.delivered
    );
    assert_eq!(answered, total, "{} requests unanswered", pending.len());
    let up: u64 = sim.nodes().iter().map(|n| n.counters.sessions_up).sum();
    assert!(up >= total as u64, "sessions up {up}");
    // Then 30 s of idle sessions (ACKs, keepalives) on the lazily armed timers.
    let idle = Instant::now();
    let steps = sim.steps();
    sim.run_for(Duration::from_secs(30));
    println!("30 s idle virtual: {} more steps, wall {:?}", sim.steps() - steps, idle.elapsed());
    let down: u64 = sim.nodes().iter().map(|n| n.counters.sessions_down).sum();
    assert_eq!(down, 0, "sessions closed while idle");
    let spins: u64 = sim.nodes().iter().map(|n| n.counters.timer_spins).sum();
    assert_eq!(spins, 0);
}
