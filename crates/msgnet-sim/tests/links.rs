//! The link model seen through whole endpoints: a bandwidth bottleneck with a
//! tail-drop queue in one direction only, latency, and the counters.

mod common;

use std::time::Duration;

use common::*;
use msgnet_core::{Delivery, EndpointConfig, SendOptions};
use msgnet_sim::{LinkParams, Sim};

fn reliable(_: u32) -> Delivery {
    Delivery::Reliable
}

#[test]
fn bottleneck_paces_a_bulk_transfer_and_tail_drops_recover() {
    let (mut sim, n) = mesh(11, 2, lossy_config(), &["/bulk"]);
    let bps = 1_000_000;
    sim.set_link(n[0], n[1], LinkParams {
        latency: Duration::from_millis(20),
        bandwidth_bps: Some(bps),
        queue_bytes: 16 * 1200,
        ..LinkParams::default()
    });
    let mut fl = vec![Flow::new(n[0], n[1], "/bulk", reliable, 600)];
    let t0 = sim.now();
    drive(&mut sim, &mut fl, 256, Duration::from_millis(10), Duration::from_secs(300));
    let took = sim.now() - t0;
    assert_eq!(fl[0].ok, 600, "failed: {:?}", &fl[0].failed[..fl[0].failed.len().min(3)]);
    let fwd = sim.link_counters(n[0], n[1]);
    let back = sim.link_counters(n[1], n[0]);
    // Every byte that crossed the bottleneck took its serialization time.
    let floor = Duration::from_secs_f64(fwd.bytes_delivered as f64 * 8.0 / bps as f64);
    assert!(took >= floor, "took {took:?}, serialization alone needs {floor:?}");
    // The override is one-way: the reverse link has no queue and no bandwidth limit.
    assert_eq!(back.dropped_queue, 0);
    assert_eq!(back.dropped_loss, 0);
    assert_eq!(fwd.dropped_loss, 0);
    assert!(fwd.dropped_queue > 0, "the queue never overflowed");
    assert_eq!(sim.totals().sent, fwd.sent + back.sent);
    println!("600 × ~160 B over 1 Mbit/s: {took:?} (floor {floor:?}); queue drops {}", fwd.dropped_queue);
}

#[test]
fn latency_sets_the_round_trip() {
    let mut sim = Sim::new(3);
    sim.set_default_link(LinkParams::with_latency(Duration::from_millis(40)));
    let a = sim.add_ed25519_node(EndpointConfig::default());
    let b = sim.add_ed25519_node(EndpointConfig::default());
    sim.register(b, "/echo");
    sim.set_responder(b, |m| Some(m.payload.clone()));
    sim.introduce(a, b);
    let id = sim.request(a, b, "/echo", &b"ping"[..], SendOptions::default()).expect("request");
    assert!(sim.run_until(Duration::from_secs(5), |s| s.node(a).response(id).is_some()));
    // 0-RTT: the request rides in the first packet, the answer in the second.
    assert_eq!(sim.now(), Duration::from_millis(80));
    assert_eq!(sim.node(b).counters.requests_received, 1);
    assert_eq!(sim.node(b).counters.responses_sent, 1);
    assert_eq!(sim.node(a).counters.responses_ok, 1);
    assert_eq!(sim.unroutable(), 0);
}
