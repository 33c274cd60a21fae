//! Small in-memory networks for behaviour that the big test does not cover: client mode,
//! disjoint paths, record expiry and republishing.
#![allow(clippy::unwrap_used)]

mod harness;

use harness::{lookups, Net};
use msgnet_kad::{KadConfig, KadError, Mode, QueryResult, Record};
use std::time::Duration;

#[test]
fn clients_query_but_are_neither_asked_nor_learned() {
    let mut net = Net::new(150, 3, |i| KadConfig {
        rng_seed: i as u64,
        mode: if i % 10 == 9 {
            Mode::Client
        } else {
            Mode::Server
        },
        ..KadConfig::default()
    });
    net.bootstrap_all(10);
    let clients: Vec<_> = net
        .nodes
        .iter()
        .filter(|n| !n.server)
        .map(|n| n.peer)
        .collect();
    for n in &net.nodes {
        for c in &clients {
            assert!(
                n.kad.routing_table().get(c).is_none(),
                "a client entered a routing table"
            );
        }
    }
    let now = net.now;
    let from = net.nodes[0].peer;
    assert_eq!(
        net.nodes[9].kad.handle_request(now, from, &[], &[8, 5]),
        Err(KadError::ClientMode)
    );
    // A client finds servers.
    let target = net.nodes[42].peer;
    let id = net.nodes[19].kad.find_node(now, target.to_bytes()).unwrap();
    match net.run_query(19, id) {
        Some((QueryResult::FoundPeers(p), _)) => assert!(p.iter().any(|p| p.peer == target)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn disjoint_paths_find_peers() {
    let mut net = Net::new(200, 4, |i| KadConfig {
        rng_seed: i as u64,
        disjoint_paths: true,
        ..KadConfig::default()
    });
    net.bootstrap_all(20);
    let (ok, _, _) = lookups(&mut net, 50, 10);
    assert_eq!(ok, 50);
}

#[test]
fn records_expire_unless_republished() {
    let mut net = Net::new(100, 5, |i| KadConfig {
        rng_seed: i as u64,
        record_ttl: Duration::from_secs(600),
        record_republish_interval: Some(Duration::from_secs(300)),
        record_replication_interval: None,
        ..KadConfig::default()
    });
    net.bootstrap_all(10);
    let now = net.now;
    let kept = net.nodes[1]
        .kad
        .put_value(now, Record::new(b"kept".to_vec(), b"1".to_vec()), 1)
        .unwrap();
    assert!(matches!(
        net.run_query(1, kept),
        Some((
            QueryResult::PutValue {
                quorum_met: true,
                ..
            },
            _
        ))
    ));
    // A record stored directly on others (no local publisher to republish it).
    let now = net.now;
    let put = msgnet_kad::wire::Message {
        key: b"gone".to_vec(),
        record: Some(msgnet_kad::wire::WireRecord {
            key: b"gone".to_vec(),
            value: b"2".to_vec(),
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode();
    let from = net.nodes[2].peer;
    for i in 3..30 {
        net.nodes[i]
            .kad
            .handle_request(now, from, &[], &put)
            .unwrap();
    }
    net.run_for(Duration::from_secs(1800));
    let get = |net: &mut Net, key: &[u8]| {
        let now = net.now;
        let id = net.nodes[50].kad.get_value(now, key.to_vec(), 1).unwrap();
        match net.run_query(50, id) {
            Some((QueryResult::FoundRecord { record, .. }, _)) => record,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(get(&mut net, b"kept").map(|r| r.value), Some(b"1".to_vec()));
    assert_eq!(get(&mut net, b"gone"), None);
}
