//! Kademlia over the simulator (issue 5, the small version of `examples/kad.rs`): every
//! Kademlia message is a msgnet request through real endpoints, Noise sessions and
//! simulated links with 20-80 ms latency. Nodes join through three known nodes and look
//! up their own id; then random lookups of live nodes' ids must find them: all of them in
//! a healthy network, at least 99 % with 20 % of the nodes silently gone.

#[path = "kadnet/mod.rs"]
mod kadnet;

use kadnet::{KadNet, NetParams};

// 150 nodes (k = 20, so no table holds everyone) keep the test quick in a debug build,
// where msgnet-core itself is unoptimised; examples/kad.rs runs 10,000.
const NODES: usize = 150;
const LOOKUPS: usize = 50;

#[test]
fn lookups_find_their_target_healthy_and_with_a_fifth_gone() {
    lookups_find_their_target(0);
}

/// The same with the simulator in windowed mode on two threads.
#[test]
fn lookups_find_their_target_windowed() {
    lookups_find_their_target(2);
}

fn lookups_find_their_target(threads: usize) {
    let mut net = KadNet::new(NetParams { nodes: NODES, seed: 5, threads, ..NetParams::default() });
    assert_eq!(net.join_all(), 0, "every join lookup finishes");
    let tables: Vec<usize> = (0..NODES).map(|i| net.table_len(i)).collect();
    assert!(tables.iter().all(|&t| t >= 20), "every routing table holds at least k peers: {tables:?}");

    let healthy = net.lookups(LOOKUPS, 25);
    assert_eq!(healthy.unfinished, 0);
    assert_eq!(healthy.found, LOOKUPS, "healthy network: {healthy:?}");
    assert!(healthy.rounds.iter().all(|&r| r >= 1));
    assert!(healthy.requests.iter().all(|&m| m >= 3));

    assert_eq!(net.take_down(0.2), NODES / 5);
    let gone = net.lookups(LOOKUPS, 25);
    assert_eq!(gone.unfinished, 0);
    // At least 99 %: with 50 lookups, every one.
    assert!(gone.success_rate() >= 0.99, "20 % gone: {}/{} found ({gone:?})", gone.found, gone.count);

    // Everything went through the endpoints: no service output was refused outright, no
    // outcome was reported twice, and requests to gone nodes failed rather than hung.
    let c = net.sim.nodes().iter().map(|n| n.counters);
    let (mut refused, mut dup, mut failed) = (0, 0, 0);
    for c in c {
        refused += c.service_refused;
        dup += c.duplicate_outcomes;
        failed += c.responses_failed;
    }
    assert_eq!(refused, 0);
    assert_eq!(dup, 0);
    assert!(failed > 0, "lookups met gone nodes");
}

/// Same seed, same run: the trace hash and the lookup figures of a small Kademlia
/// network; another seed gives another run.
#[test]
fn kad_runs_are_deterministic() {
    let run = |seed| {
        let mut net = KadNet::new(NetParams { nodes: 40, seed, ..NetParams::default() });
        assert_eq!(net.join_all(), 0);
        let r = net.lookups(10, 5);
        assert_eq!(r.found, 10);
        (net.sim.trace_hash(), r.rounds, r.requests, net.join_requests)
    };
    let a = run(21);
    assert_eq!(a, run(21));
    assert_ne!(a.0, run(22).0);
}

/// Windowed mode: the same run (trace hash, lookup figures) for 1, 2 and 4 threads.
#[test]
fn kad_windowed_runs_are_the_same_for_any_thread_count() {
    let run = |threads| {
        let mut net = KadNet::new(NetParams { nodes: 40, seed: 21, threads, ..NetParams::default() });
        assert_eq!(net.join_all(), 0);
        let r = net.lookups(10, 5);
        assert_eq!(r.found, 10);
        (net.sim.trace_hash(), r.rounds, r.requests, net.join_requests, net.sim.windows())
    };
    let one = run(1);
    assert!(one.4 > 100, "ran in windows: {}", one.4);
    assert_eq!(one, run(2));
    assert_eq!(one, run(4));
}
