//! A 2,000-node in-memory network: bootstrap, lookups, 20 % silent failures, records and
//! providers. Prints rounds and messages per lookup.
#![allow(clippy::unwrap_used)]

mod harness;

use cid::Cid;
use harness::{lookups, percentiles, Net};
use msgnet_kad::{provider_key, KadConfig, QueryResult, Record};
use std::time::Duration;

fn config(i: usize) -> KadConfig {
    KadConfig {
        rng_seed: i as u64,
        ..KadConfig::default()
    }
}

#[test]
fn two_thousand_nodes() {
    // KAD_NET_N overrides the size for quick local runs.
    let n: usize = std::env::var("KAD_NET_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let t0 = std::time::Instant::now();
    let mut net = Net::new(n, 7, config);
    net.bootstrap_all(200);
    let boot_msgs = net.messages;
    let sizes: Vec<u32> = net
        .nodes
        .iter()
        .map(|n| n.kad.routing_table().len() as u32)
        .collect();
    let (med, p99) = percentiles(sizes);
    println!("bootstrap: {boot_msgs} messages for {n} nodes in {:?} (wall); routing table size median {med}, p99 {p99}", t0.elapsed());

    // 200 lookups of existing peer ids: all succeed.
    let (ok, rounds, msgs) = lookups(&mut net, 200, 20);
    report(&net, "healthy", ok, 200, rounds, msgs);
    assert_eq!(ok, 200, "every lookup of an existing peer finds it");

    // A value put on one node is found from others.
    let putter = net.random_node(true);
    let now = net.now;
    let id = net.nodes[putter]
        .kad
        .put_value(now, Record::new(b"/v/hello".to_vec(), b"world".to_vec()), 3)
        .unwrap();
    match net.run_query(putter, id) {
        Some((
            QueryResult::PutValue {
                stored,
                quorum_met: true,
            },
            _,
        )) => println!("put: stored on {stored}"),
        other => panic!("put failed: {other:?}"),
    }
    for _ in 0..10 {
        let getter = net.random_node(true);
        let now = net.now;
        let id = net.nodes[getter]
            .kad
            .get_value(now, b"/v/hello".to_vec(), 1)
            .unwrap();
        match net.run_query(getter, id) {
            Some((
                QueryResult::FoundRecord {
                    record: Some(r), ..
                },
                _,
            )) => assert_eq!(r.value, b"world"),
            other => panic!("get failed: {other:?}"),
        }
    }

    // A provider of a real CID is found from others.
    let cid: Cid = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"
        .parse()
        .unwrap();
    let key = provider_key(&cid);
    let provider = net.random_node(true);
    let now = net.now;
    let id = net.nodes[provider]
        .kad
        .add_provider(now, key.clone())
        .unwrap();
    match net.run_query(provider, id) {
        Some((QueryResult::AddProvider { sent, acked }, _)) => {
            assert!(sent >= 10, "sent to {sent}");
            assert_eq!(acked, sent, "every live node acknowledges");
        }
        other => panic!("add_provider failed: {other:?}"),
    }
    net.run_for(Duration::from_secs(1));
    for _ in 0..10 {
        let seeker = net.random_node(true);
        let now = net.now;
        let id = net.nodes[seeker]
            .kad
            .get_providers(now, key.clone())
            .unwrap();
        match net.run_query(seeker, id) {
            Some((QueryResult::Providers(p), _)) => {
                assert!(p
                    .iter()
                    .any(|p| p.peer == net.nodes[provider].peer && !p.addrs.is_empty()))
            }
            other => panic!("get_providers failed: {other:?}"),
        }
    }

    // 20 % of the nodes go silent; lookups of live peers still succeed.
    for _ in 0..n / 5 {
        let i = net.random_node(true);
        net.nodes[i].alive = false;
    }
    let (ok, rounds, msgs) = lookups(&mut net, 200, 20);
    report(&net, "20% gone", ok, 200, rounds, msgs);
    assert!(
        ok >= 198,
        "{ok}/200 lookups succeeded with 20% of nodes gone"
    );
}

fn report(net: &Net, what: &str, ok: usize, n: usize, rounds: Vec<u32>, msgs: Vec<u32>) {
    println!(
        "  [virtual time {:?}, {} messages in total]",
        net.now - net.start,
        net.messages
    );
    let mean = |v: &[u32]| v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len().max(1) as f64;
    let (rm, rp) = (mean(&rounds), percentiles(rounds.clone()));
    let (mm, mp) = (mean(&msgs), percentiles(msgs.clone()));
    println!(
        "{what}: {ok}/{n} found; rounds mean {rm:.2} median {} p99 {}; messages mean {mm:.1} median {} p99 {}",
        rp.0, rp.1, mp.0, mp.1
    );
}
