//! Delivery guarantees under a hostile network: loss (random and bursty), duplication
//! and heavy reordering, thousands of messages, several seeds.

mod common;

use std::time::{Duration, Instant};

use common::*;
use msgnet_core::Delivery;
use msgnet_sim::{LinkParams, Loss, Sim};

const SEEDS: [u64; 3] = [1, 2, 3];
const PROTOCOLS: [&str; 3] = ["/ord", "/rel", "/mix"];

fn ordered(_: u32) -> Delivery {
    Delivery::Ordered
}
fn reliable(_: u32) -> Delivery {
    Delivery::Reliable
}
fn mixed(i: u32) -> Delivery {
    if matches!(i % 3, 0) {
        Delivery::Reliable
    } else {
        Delivery::Ordered
    }
}
fn unreliable(_: u32) -> Delivery {
    Delivery::Unreliable
}

/// Several pairs, both directions, Ordered, Reliable and mixed channels.
fn flows(sim: &Sim, per_flow: u32) -> Vec<Flow> {
    let n: Vec<_> = sim.node_ids().collect();
    vec![
        Flow::new(n[0], n[1], "/ord", ordered, per_flow),
        Flow::new(n[1], n[0], "/ord", ordered, per_flow),
        Flow::new(n[0], n[1], "/rel", reliable, per_flow),
        Flow::new(n[2], n[3], "/mix", mixed, per_flow),
        Flow::new(n[3], n[2], "/rel", reliable, per_flow),
        Flow::new(n[1], n[2], "/ord", ordered, per_flow),
        Flow::new(n[3], n[0], "/mix", mixed, per_flow),
    ]
}

/// Every message completed Ok, was delivered exactly once, and every Ordered
/// subsequence arrived in order.
fn check_reliable(sim: &Sim, flows: &[Flow]) {
    let r = received(sim, flows);
    for (fi, f) in flows.iter().enumerate() {
        assert!(f.failed.is_empty(), "seed {}: flow {fi} failures {:?}", sim.seed(), &f.failed[..f.failed.len().min(5)]);
        assert_eq!(f.ok, f.total, "seed {}: flow {fi} completed {} of {}", sim.seed(), f.ok, f.total);
        let missing: Vec<u32> = (0..f.total).filter(|s| !r.count.contains_key(&(fi, *s))).collect();
        let dups: Vec<u32> = (0..f.total).filter(|s| r.count.get(&(fi, *s)).is_some_and(|c| *c > 1)).collect();
        if !missing.is_empty() || !dups.is_empty() {
            eprintln!("seed {}: flow {fi} ({:?}) missing {missing:?} duplicated {dups:?}", sim.seed(), f.protocol);
        }
        for seq in 0..f.total {
            let c = r.count.get(&(fi, seq)).copied().unwrap_or(0);
            assert_eq!(c, 1, "seed {}: flow {fi} message {seq} delivered {c} times", sim.seed());
        }
        let want: Vec<u32> = (0..f.total).filter(|i| (f.pattern)(*i) == Delivery::Ordered).collect();
        let got = r.ordered.get(&fi).cloned().unwrap_or_default();
        assert_eq!(got, want, "seed {}: flow {fi} Ordered messages out of order", sim.seed());
    }
    for id in sim.node_ids() {
        assert_eq!(sim.node(id).counters.duplicate_outcomes, 0);
    }
}

fn run_reliable(seed: u64, link: LinkParams, per_flow: u32) {
    let t = Instant::now();
    let (mut sim, _) = mesh(seed, 4, lossy_config(), &PROTOCOLS);
    sim.set_default_link(link);
    let mut fl = flows(&sim, per_flow);
    drive(&mut sim, &mut fl, 64, Duration::from_millis(20), Duration::from_secs(600));
    check_reliable(&sim, &fl);
    let tot = sim.totals();
    println!(
        "seed {seed}: {} messages in {:?} virtual, {:?} wall; datagrams sent {} lost {} duplicated {}",
        fl.iter().map(|f| f.total).sum::<u32>(),
        sim.now(),
        t.elapsed(),
        tot.sent,
        tot.dropped_loss,
        tot.duplicated
    );
    assert!(tot.dropped_loss > 0 && tot.duplicated > 0, "the link did nothing");
}

#[test]
fn reliable_and_ordered_survive_loss_duplication_reordering() {
    for seed in SEEDS {
        run_reliable(seed, hostile_link(), 500);
    }
}

#[test]
fn reliable_and_ordered_survive_bursty_loss() {
    let link = LinkParams {
        loss: Loss::GilbertElliott { p_good_to_bad: 0.05, p_bad_to_good: 0.25, loss_good: 0.01, loss_bad: 0.9 },
        duplicate: 0.05,
        reorder: 0.2,
        reorder_extra: Duration::from_millis(30),
        ..LinkParams::default()
    };
    for seed in SEEDS {
        run_reliable(seed + 100, link.clone(), 400);
    }
}

#[test]
fn unreliable_is_never_duplicated() {
    for seed in SEEDS {
        let (mut sim, n) = mesh(seed, 2, lossy_config(), &PROTOCOLS);
        sim.set_default_link(LinkParams { loss: Loss::Random(0.1), ..hostile_link() });
        let mut fl = vec![
            Flow::new(n[0], n[1], "/rel", unreliable, 2000),
            Flow::new(n[1], n[0], "/mix", unreliable, 2000),
        ];
        drive(&mut sim, &mut fl, 64, Duration::from_millis(5), Duration::from_secs(600));
        sim.run_for(Duration::from_secs(1));
        let r = received(&sim, &fl);
        for (fi, f) in fl.iter().enumerate() {
            // An unreliable message still queued at its deadline is dropped (never sent
            // late) and its send fails with TimedOut; no other failure is allowed.
            assert!(
                f.failed.iter().all(|(_, e)| *e == msgnet_core::SendError::TimedOut),
                "seed {seed}: unreliable sends failed otherwise: {:?}",
                &f.failed[..f.failed.len().min(5)]
            );
            let got = (0..f.total).filter(|s| r.count.contains_key(&(fi, *s))).count();
            for ((g, seq), c) in &r.count {
                assert!(*g != fi || *c == 1, "seed {seed}: unreliable message {seq} of flow {fi} delivered {c} times");
            }
            // 10 % loss per datagram: most arrive.
            let sent = f.total - f.failed.len() as u32;
            assert!(got as u32 > sent / 2, "seed {seed}: flow {fi} only {got} of {sent} sent arrived");
            println!("seed {seed}: flow {fi}: {got} of {} unreliable messages arrived", f.total);
        }
        assert!(sim.totals().duplicated > 10, "the links duplicated datagrams");
    }
}
