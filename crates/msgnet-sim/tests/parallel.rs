//! Windowed mode (`Sim::set_threads`): the same seed gives the same run for 1, 2 and 4
//! worker threads; it delivers what the sequential loop delivers; zero-latency links
//! keep the loop sequential.

use std::collections::BTreeMap;
use std::time::Duration;

use msgnet_core::{EndpointConfig, MessageId, SendOptions};
use msgnet_sim::{EventLog, LinkCounters, LinkParams, Loss, NodeId, Sim, TraceRecord};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

const NODES: usize = 50;
const REQUESTS: usize = 4;

/// 20 ms ± 10 ms links, 5 % loss, 2 % duplication, 10 % reordered by up to 30 ms.
fn lossy_link() -> LinkParams {
    LinkParams {
        latency: Duration::from_millis(20),
        jitter: Duration::from_millis(10),
        loss: Loss::Random(0.05),
        duplicate: 0.02,
        reorder: 0.1,
        reorder_extra: Duration::from_millis(30),
        ..LinkParams::default()
    }
}

/// The same without loss, duplication or reordering (jitter stays).
fn clean_link() -> LinkParams {
    LinkParams {
        latency: Duration::from_millis(20),
        jitter: Duration::from_millis(10),
        ..LinkParams::default()
    }
}

/// What a run did.
#[derive(Debug, PartialEq)]
struct Run {
    hash: u64,
    trace: Vec<TraceRecord>,
    totals: LinkCounters,
    steps: u64,
    /// (requester, request id) → answer payload, for every answered request.
    answered: BTreeMap<(usize, MessageId), Vec<u8>>,
    failed: usize,
    windows: u64,
}

/// `NODES` nodes, each sending `REQUESTS` reliable requests to random others, in two
/// waves (the second issued between windows, after 300 ms), answered with the payload
/// prefixed by the responder's index; one node has a slower link to another (an
/// override) and a bandwidth bottleneck.
fn network(seed: u64, threads: usize, link: LinkParams) -> Run {
    let mut sim = Sim::new(seed);
    sim.set_threads(threads);
    sim.set_event_log(EventLog::CountOnly);
    sim.set_trace_log(true);
    sim.set_default_link(link.clone());
    let config = EndpointConfig {
        send_timeout: Duration::from_secs(60),
        ..EndpointConfig::default()
    };
    let ids: Vec<NodeId> = (0..NODES)
        .map(|_| sim.add_ed25519_node(config.clone()))
        .collect();
    sim.set_link(
        ids[0],
        ids[1],
        LinkParams {
            latency: Duration::from_millis(45),
            bandwidth_bps: Some(1_000_000),
            ..link
        },
    );
    for (i, &n) in ids.iter().enumerate() {
        sim.register(n, "/ask");
        sim.set_responder(n, move |m| {
            let mut v = vec![i as u8];
            v.extend_from_slice(&m.payload);
            Some(v.into())
        });
    }
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut pending: Vec<(NodeId, MessageId, Vec<u8>, usize)> = Vec::new();
    for wave in 0..2 {
        for &a in &ids {
            for k in 0..REQUESTS / 2 {
                let b = loop {
                    let b = rng.gen_range(0..NODES);
                    if b != a.0 {
                        break b;
                    }
                };
                sim.introduce(a, ids[b]);
                let body = format!("{a}->{b}#{wave}.{k}").into_bytes();
                let id = sim
                    .request(a, ids[b], "/ask", body.clone(), SendOptions::default())
                    .expect("request");
                pending.push((a, id, body, b));
            }
        }
        sim.run_for(Duration::from_millis(300));
    }
    let all = pending.clone();
    // Predicate checked between windows in windowed mode.
    sim.run_until(Duration::from_secs(120), |s| {
        pending
            .iter()
            .all(|(a, id, _, _)| s.node(*a).response(*id).is_some())
    });
    sim.run_for(Duration::from_secs(1));
    let mut answered = BTreeMap::new();
    let mut failed = 0;
    for (a, id, body, b) in all {
        match sim.node(a).response(id) {
            Some(Ok(r)) => {
                assert_eq!(r[0] as usize, b, "answered by the addressee");
                assert_eq!(&r[1..], &body[..], "the request's own answer");
                answered.insert((a.0, id), r.to_vec());
            }
            Some(Err(_)) => failed += 1,
            None => panic!("request {id:?} of {a} has no outcome after two virtual minutes"),
        }
    }
    Run {
        hash: sim.trace_hash(),
        trace: sim.trace_log().to_vec(),
        totals: sim.totals(),
        steps: sim.steps(),
        answered,
        failed,
        windows: sim.windows(),
    }
}

/// Panics with the first datagram event where two runs differ, if they do.
fn assert_same(a: &Run, b: &Run, what: &str) {
    if let Some(i) =
        (0..a.trace.len().max(b.trace.len())).find(|&i| a.trace.get(i) != b.trace.get(i))
    {
        panic!(
            "{what}: runs diverge at datagram event {i}: {:?} vs {:?}",
            a.trace.get(i),
            b.trace.get(i)
        );
    }
    assert_eq!(a, b, "{what}");
}

#[test]
fn same_seed_same_run_for_1_2_and_4_threads() {
    let one = network(9, 1, lossy_link());
    assert!(one.windows > 50, "ran in windows: {}", one.windows);
    // The network did its worst, and the requests still got through.
    let t = one.totals;
    assert!(
        t.delivered > 1000 && t.dropped_loss > 0 && t.duplicated > 0,
        "{t:?}"
    );
    assert_eq!(one.failed, 0);
    assert_eq!(one.answered.len(), NODES * REQUESTS);
    for threads in [2, 4] {
        assert_same(
            &one,
            &network(9, threads, lossy_link()),
            &format!("1 vs {threads} threads"),
        );
    }
    // Another seed is another run.
    assert_ne!(one.hash, network(10, 2, lossy_link()).hash);
}

#[test]
fn windowed_mode_delivers_what_the_sequential_loop_delivers() {
    for (link, what) in [(clean_link(), "lossless"), (lossy_link(), "lossy")] {
        let seq = network(4, 0, link.clone());
        let win = network(4, 2, link);
        assert_eq!(seq.windows, 0);
        assert!(win.windows > 10, "{what}: {} windows", win.windows);
        // Every request answered (by the right node, with its own answer: checked in
        // `network`), in both modes: the same set of completed requests.
        assert_eq!(seq.failed, 0, "{what}");
        assert_eq!(win.failed, 0, "{what}");
        assert_eq!(seq.answered.len(), NODES * REQUESTS, "{what}");
        assert_eq!(seq.answered, win.answered, "{what}");
        if what == "lossless" {
            assert_eq!(
                win.totals.dropped_loss + win.totals.dropped_queue + win.totals.duplicated,
                0
            );
            assert_eq!(
                win.totals.sent, win.totals.delivered,
                "every datagram arrived"
            );
        }
    }
}

#[test]
fn zero_latency_links_keep_the_loop_sequential() {
    let zero = LinkParams {
        latency: Duration::ZERO,
        jitter: Duration::from_millis(3),
        ..LinkParams::default()
    };
    let seq = network(6, 0, zero.clone());
    let win = network(6, 2, zero);
    assert_eq!(win.windows, 0, "no lookahead, no windows");
    assert_same(
        &seq,
        &win,
        "zero latency: windowed mode is the sequential loop",
    );
    assert_eq!(seq.answered.len(), NODES * REQUESTS);

    // One zero-latency override is enough.
    let mut sim = Sim::new(1);
    let a = sim.add_ed25519_node(EndpointConfig::default());
    let b = sim.add_ed25519_node(EndpointConfig::default());
    assert_eq!(sim.lookahead(), Duration::from_millis(10));
    sim.set_link(b, a, LinkParams::with_latency(Duration::from_millis(3)));
    assert_eq!(sim.lookahead(), Duration::from_millis(3));
    sim.set_link(a, b, LinkParams::with_latency(Duration::ZERO));
    assert_eq!(sim.lookahead(), Duration::ZERO);
    sim.clear_link(a, b);
    assert_eq!(sim.lookahead(), Duration::from_millis(3));
}

/// The crate's doc example, in windowed mode: `run_until` stops between windows once
/// the answer is there, and the clock is where the last window ended.
#[test]
fn run_until_stops_between_windows() {
    let mut sim = Sim::new(7);
    sim.set_threads(2);
    let a = sim.add_ed25519_node(EndpointConfig::default());
    let b = sim.add_ed25519_node(EndpointConfig::default());
    sim.register(b, "/echo");
    sim.set_responder(b, |m| Some(m.payload.clone()));
    sim.introduce(a, b);
    let id = sim
        .request(a, b, "/echo", &b"hi"[..], SendOptions::default())
        .expect("request");
    assert!(sim.run_until(Duration::from_secs(1), |s| s.node(a).response(id).is_some()));
    assert_eq!(
        sim.node(a).response(id).and_then(|r| r.as_deref().ok()),
        Some(&b"hi"[..])
    );
    assert!(sim.windows() > 0);
    // Handshake (one round trip, 1-RTT data in the initiation) and answer: 2 × 10 ms
    // links, at most one more window (10 ms) past it.
    assert!(
        sim.now() >= Duration::from_millis(20) && sim.now() < Duration::from_millis(60),
        "{:?}",
        sim.now()
    );
    // A time-out leaves the clock at the limit.
    let before = sim.now();
    assert!(!sim.run_until(Duration::from_millis(500), |_| false));
    assert_eq!(sim.now(), before + Duration::from_millis(500));
}
