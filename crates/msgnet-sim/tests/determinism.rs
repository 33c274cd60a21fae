//! Same seed, same run: the trace hash and every node's event sequence.
//!
//! Several sessions per endpoint are covered too: the core once iterated `std` `HashMap`s
//! (random per-process order) when several timers fired at the same instant, and
//! `timer_order_with_two_peers` is the minimal reproduction of that bug, fixed since.

use std::time::Duration;

use msgnet_core::{Delivery, EndpointConfig, SendOptions};
use msgnet_sim::{EventLog, LinkParams, Loss, Sim};

/// Six nodes over a lossy, duplicating, reordering network with a bandwidth bottleneck
/// on one link. With `peers == 1` each node talks to one other (one session each);
/// with 3, each talks to three (several sessions per endpoint).
fn scenario(seed: u64, log: EventLog, peers: usize) -> (u64, Vec<String>, Sim) {
    let mut sim = Sim::new(seed);
    sim.set_event_log(log);
    sim.set_trace_log(true);
    sim.set_default_link(LinkParams {
        latency: Duration::from_millis(15),
        jitter: Duration::from_millis(5),
        loss: Loss::Random(0.1),
        duplicate: 0.05,
        reorder: 0.2,
        reorder_extra: Duration::from_millis(30),
        ..LinkParams::default()
    });
    let config = EndpointConfig { send_timeout: Duration::from_secs(30), ..EndpointConfig::default() };
    let n: Vec<_> = (0..6).map(|_| sim.add_ed25519_node(config.clone())).collect();
    sim.set_link(n[0], n[1], LinkParams {
        bandwidth_bps: Some(2_000_000),
        queue_bytes: 8 * 1200,
        ..LinkParams::default()
    });
    for &a in &n {
        sim.register(a, "/x");
        sim.register(a, "/y");
        sim.set_responder(a, |m| Some(m.payload.slice(..m.payload.len().min(16))));
        for &b in &n {
            if a != b {
                sim.introduce(a, b);
            }
        }
    }
    for round in 0..5u32 {
        for (i, &a) in n.iter().enumerate() {
            for k in 1..=peers {
                let b = if peers == 1 { n[i ^ 1] } else { n[(i + k) % n.len()] };
                let delivery = [Delivery::Reliable, Delivery::Ordered, Delivery::Unreliable][(k + i) % 3];
                let opts = SendOptions { delivery, early_data: true };
                let _ = sim.send(a, b, "/x", vec![round as u8; 200 + 50 * k], opts);
                let _ = sim.request(a, b, "/y", vec![i as u8; 100], SendOptions::default());
            }
        }
        sim.run_for(Duration::from_millis(120));
    }
    sim.run_for(Duration::from_secs(5));
    let events = sim
        .nodes()
        .iter()
        .map(|node| node.events.iter().map(|e| format!("{e:?}")).collect::<Vec<_>>().join("\n"))
        .collect();
    (sim.trace_hash(), events, sim)
}

/// Panics with the first datagram event where two runs differ, if they do.
fn assert_same_trace(a: &Sim, b: &Sim) {
    let (x, y) = (a.trace_log(), b.trace_log());
    if let Some(i) = (0..x.len().max(y.len())).find(|i| x.get(*i) != y.get(*i)) {
        panic!(
            "runs diverge at datagram event {i} of {}/{}:\n  {:?}\n  {:?}\nbefore: {:?}",
            x.len(),
            y.len(),
            x.get(i),
            y.get(i),
            &x[i.saturating_sub(3)..i]
        );
    }
    assert_eq!(a.trace_hash(), b.trace_hash());
}

#[test]
fn same_seed_same_run() {
    same_run(1);
}

#[test]

fn same_seed_same_run_several_sessions_per_endpoint() {
    for _ in 0..5 {
        same_run(3);
    }
}

fn same_run(peers: usize) {
    let (h1, e1, s1) = scenario(42, EventLog::Full, peers);
    let (h2, e2, s2) = scenario(42, EventLog::Full, peers);
    assert_same_trace(&s1, &s2);
    assert_eq!(s1.totals(), s2.totals());
    assert_eq!(s1.now(), s2.now());
    assert_eq!(s1.steps(), s2.steps());
    for (i, (a, b)) in e1.iter().zip(&e2).enumerate() {
        assert_eq!(a, b, "node {i}: event sequences differ");
    }
    assert_eq!(h1, h2, "trace hashes differ");
    // Something happened, and the network did its worst.
    let t = s1.totals();
    assert!(t.delivered > 100 && t.dropped_loss > 0 && t.duplicated > 0, "{t:?}");
    assert!(s1.nodes().iter().all(|n| n.counters.responses_ok > 0));
}

#[test]
fn event_log_mode_does_not_change_the_run() {
    let (h1, _, s1) = scenario(7, EventLog::Full, 1);
    let (h2, e2, s2) = scenario(7, EventLog::CountOnly, 1);
    assert_same_trace(&s1, &s2);
    assert_eq!(h1, h2);
    assert!(e2.iter().all(String::is_empty));
    for (a, b) in s1.nodes().iter().zip(s2.nodes()) {
        assert_eq!(a.counters, b.counters);
    }
}

#[test]
fn different_seed_different_run() {
    let (h1, e1, _) = scenario(1, EventLog::Full, 3);
    let (h2, e2, _) = scenario(2, EventLog::Full, 3);
    assert_ne!(h1, h2);
    assert_ne!(e1, e2);
}

/// Minimal reproduction of the core's ordering bug: one node starts handshakes with two
/// peers that never answer; at the first retransmission (250 ms) it emits both
/// initiations in `HashMap` order, which differs between runs.
#[test]
fn timer_order_with_two_peers() {
    let run = || {
        let mut sim = Sim::new(5);
        sim.set_trace_log(true);
        let n: Vec<_> = (0..3).map(|_| sim.add_ed25519_node(EndpointConfig::default())).collect();
        sim.set_node_down(n[1], true);
        sim.set_node_down(n[2], true);
        sim.introduce(n[0], n[1]);
        sim.introduce(n[0], n[2]);
        let _ = sim.send(n[0], n[1], "/x", &b"1"[..], SendOptions::default());
        let _ = sim.send(n[0], n[2], "/x", &b"2"[..], SendOptions::default());
        sim.run_for(Duration::from_millis(300));
        sim
    };
    let first = run();
    for _ in 0..10 {
        assert_same_trace(&first, &run());
    }
}
