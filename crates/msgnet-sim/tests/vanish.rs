//! A peer that vanishes without closing: reliable sends and requests to it fail within
//! the configured send timeout.

use std::time::Duration;

use msgnet_core::{Delivery, EndpointConfig, SendError, SendOptions};
use msgnet_sim::{NodeId, Sim};

const SEND_TIMEOUT: Duration = Duration::from_secs(5);

fn setup(seed: u64) -> (Sim, NodeId, NodeId) {
    let config = EndpointConfig { send_timeout: SEND_TIMEOUT, ..EndpointConfig::default() };
    let mut sim = Sim::new(seed);
    let a = sim.add_ed25519_node(config.clone());
    let b = sim.add_ed25519_node(config);
    for n in [a, b] {
        sim.register(n, "/p");
        sim.set_responder(n, |m| Some(m.payload.clone()));
    }
    sim.introduce(a, b);
    (sim, a, b)
}

#[test]
fn sends_and_requests_to_a_vanished_peer_time_out() {
    for seed in [1, 2, 3] {
        let (mut sim, a, b) = setup(seed);
        // A working session first.
        let id = sim.request(a, b, "/p", &b"hello"[..], SendOptions::default()).expect("request");
        assert!(sim.run_until(Duration::from_secs(2), |s| s.node(a).response(id).is_some()));
        assert_eq!(sim.node(a).response(id).and_then(|r| r.as_deref().ok()), Some(&b"hello"[..]));
        sim.run_for(Duration::from_millis(500));

        sim.set_node_down(b, true);
        let t0 = sim.now();
        let mut sends = Vec::new();
        for i in 0..20u8 {
            let delivery = if i % 2 == 0 { Delivery::Reliable } else { Delivery::Ordered };
            let opts = SendOptions { delivery, early_data: true };
            sends.push(sim.send(a, b, "/p", vec![i; 100], opts).expect("send"));
            sim.run_for(Duration::from_millis(50));
        }
        let req = sim.request(a, b, "/p", &b"anyone?"[..], SendOptions::default()).expect("request");
        let t_req = sim.now();

        let done = |s: &Sim| {
            sends.iter().all(|id| s.node(a).completion(*id).is_some()) && s.node(a).response(req).is_some()
        };
        let mut first_fail = None;
        let ok = sim.run_until(SEND_TIMEOUT * 3, |s| {
            if first_fail.is_none() && s.node(a).completion(sends[0]).is_some() {
                first_fail = Some(s.now());
            }
            done(s)
        });
        assert!(ok, "seed {seed}: not every send to the vanished peer completed");
        let end = sim.now();
        for id in &sends {
            assert_eq!(sim.node(a).completion(*id), Some(&Err(SendError::TimedOut)), "seed {seed}");
        }
        assert!(sim.node(a).response(req).is_some_and(|r| r.is_err()), "seed {seed}: {:?}", sim.node(a).response(req));
        // The first send fails no later than its deadline (plus scheduling slack), and
        // everything has failed by the deadline of the last one.
        let first = first_fail.unwrap_or(end) - t0;
        assert!(first <= SEND_TIMEOUT + Duration::from_millis(1), "seed {seed}: first failure after {first:?}");
        assert!(end - t_req <= SEND_TIMEOUT + Duration::from_millis(1), "seed {seed}: last failure after {:?}", end - t_req);
        println!("seed {seed}: first failure after {first:?}, all failed {:?} after t0", end - t0);
        // Nothing reached b while it was down.
        assert_eq!(sim.node(b).counters.messages_delivered, 1);
        assert!(sim.totals().dropped_down > 0);
    }
}

#[test]
fn a_peer_down_from_the_start_is_unreachable_in_bounded_time() {
    let (mut sim, a, b) = setup(9);
    sim.set_node_down(b, true);
    let bound = sim.node(a).ep.config().handshake_timeout.max(SEND_TIMEOUT) + Duration::from_millis(1);
    let s = sim.send(a, b, "/p", &b"x"[..], SendOptions::default()).expect("send");
    let r = sim.request(a, b, "/p", &b"y"[..], SendOptions::default()).expect("request");
    assert!(sim.run_until(bound, |x| x.node(a).completion(s).is_some() && x.node(a).response(r).is_some()));
    assert!(sim.node(a).completion(s).is_some_and(|r| r.is_err()));
    assert!(sim.node(a).response(r).is_some_and(|r| r.is_err()));
    assert_eq!(sim.node(b).counters.datagrams_in, 0);
}

#[test]
fn a_peer_that_comes_back_is_reachable_again() {
    let (mut sim, a, b) = setup(4);
    sim.set_node_down(b, true);
    let s = sim.send(a, b, "/p", &b"x"[..], SendOptions::default()).expect("send");
    assert!(sim.run_until(SEND_TIMEOUT * 3, |x| x.node(a).completion(s).is_some()));
    sim.set_node_down(b, false);
    let r = sim.request(a, b, "/p", &b"back"[..], SendOptions::default()).expect("request");
    assert!(sim.run_until(Duration::from_secs(5), |x| x.node(a).response(r).is_some()));
    assert_eq!(sim.node(a).response(r).and_then(|r| r.as_deref().ok()), Some(&b"back"[..]));
}
