//! `host::Dht` on real msgnet Hosts over UDP on 127.0.0.1: 100 nodes form a DHT, a value
//! and a provider record put on one node are found from every other node; plus the error
//! paths and client mode on a handful of nodes.
#![allow(missing_docs, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use cid::Cid;
use futures::StreamExt;
use msgnet::{Host, Keypair, Multiaddr};
use msgnet_kad::host::{Dht, DhtError};
use msgnet_kad::{provider_key, KadConfig, KadError, Mode, Record};

/// Guard against a hung test: far above the expected time, even on a loaded machine.
const LIMIT: Duration = Duration::from_secs(300);

async fn host() -> Host {
    let listen: Multiaddr = "/ip4/127.0.0.1/udp/0".parse().unwrap();
    Host::builder(Keypair::generate_ed25519())
        .listen(listen)
        .build()
        .await
        .unwrap()
}

fn config(mode: Mode) -> KadConfig {
    KadConfig {
        mode,
        ..KadConfig::default()
    }
}

/// `n` server nodes on loopback, not yet joined.
async fn nodes(n: usize) -> (Vec<Host>, Vec<Dht>) {
    let mut hosts = Vec::with_capacity(n);
    let mut dhts = Vec::with_capacity(n);
    for _ in 0..n {
        let h = host().await;
        dhts.push(Dht::new(&h, config(Mode::Server)).unwrap());
        hosts.push(h);
    }
    (hosts, dhts)
}

async fn join(dht: &Dht, via: &Host) {
    dht.add_address(via.local_peer_id(), via.listen_addrs()[0].clone())
        .await
        .unwrap();
    let b = dht.bootstrap().await.unwrap();
    assert!(b.table_size > 0);
}

async fn close_all(hosts: Vec<Host>, dhts: Vec<Dht>) {
    for d in &dhts {
        d.close().await;
    }
    for h in &hosts {
        h.close().await;
    }
}

fn median(mut v: Vec<u32>) -> u32 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_hosts_find_a_value_and_a_provider_from_every_node() {
    tokio::time::timeout(LIMIT, hundred_hosts())
        .await
        .expect("test finished in time");
}

async fn hundred_hosts() {
    const N: usize = 100;
    const SEEDS: usize = 5;
    let t0 = Instant::now();
    let (hosts, dhts) = nodes(N).await;

    // The first few join through node 0, then everybody else through one of them,
    // 24 at a time.
    for d in &dhts[1..SEEDS] {
        join(d, &hosts[0]).await;
    }
    let rest: Vec<usize> = (SEEDS..N).collect();
    for batch in rest.chunks(24) {
        let joins = batch.iter().map(|&i| join(&dhts[i], &hosts[i % SEEDS]));
        futures::future::join_all(joins).await;
    }
    let mut sizes = Vec::new();
    for d in &dhts {
        sizes.push(d.inspect(|k| k.routing_table().len()).await.unwrap() as u32);
    }
    println!(
        "{N} nodes joined in {:?}; routing table size median {}, min {}",
        t0.elapsed(),
        median(sizes.clone()),
        sizes.iter().min().unwrap()
    );
    assert!(sizes.iter().all(|&s| s > 0));

    // A value put on node 7.
    let key = b"/v/loopback".to_vec();
    let put = dhts[7]
        .put_value(Record::new(key.clone(), b"hundred".to_vec()), 1)
        .await
        .unwrap();
    println!("put: stored on {} peers, {:?}", put.stored, put.stats);
    assert!(put.stored >= 10, "stored on only {}", put.stored);

    // A provider record of a real CID, announced by node 13.
    let cid: Cid = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"
        .parse()
        .unwrap();
    let pkey = provider_key(&cid);
    let provided = dhts[13].start_providing(pkey.clone()).await.unwrap();
    println!("provide: sent {}, acked {}", provided.sent, provided.acked);
    assert!(provided.acked >= 10, "acked by only {}", provided.acked);
    let provider = hosts[13].local_peer_id();

    // Every other node finds both, 16 lookups at a time.
    let t1 = Instant::now();
    let lookups = futures::stream::iter((0..N).filter(|&i| i != 7 && i != 13))
        .map(|i| {
            let (d, key, pkey) = (dhts[i].clone(), key.clone(), pkey.clone());
            async move {
                let got = d.get_value(key, 1).await;
                let provs = d.get_providers(pkey).await;
                (i, got, provs)
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let (mut rounds, mut requests) = (Vec::new(), Vec::new());
    for (i, got, provs) in lookups {
        let got = got.unwrap_or_else(|e| panic!("node {i}: get_value: {e}"));
        assert_eq!(got.record.value, b"hundred", "node {i}");
        let provs = provs.unwrap_or_else(|e| panic!("node {i}: get_providers: {e}"));
        let p = provs
            .peers
            .iter()
            .find(|p| p.peer == provider)
            .unwrap_or_else(|| panic!("node {i}: provider missing from {:?}", provs.peers));
        assert_eq!(p.addrs, hosts[13].listen_addrs(), "node {i}");
        rounds.push(got.stats.rounds);
        requests.push(got.stats.requests);
        rounds.push(provs.stats.rounds);
        requests.push(provs.stats.requests);
    }
    println!(
        "{} lookups in {:?}: rounds median {}, requests median {}; total {:?}",
        rounds.len(),
        t1.elapsed(),
        median(rounds),
        median(requests),
        t0.elapsed()
    );

    // find_peer: node 50 finds node 90 and its address.
    let found = dhts[50].find_peer(hosts[90].local_peer_id()).await.unwrap();
    assert!(found.peer.addrs.contains(&hosts[90].listen_addrs()[0]));

    close_all(hosts, dhts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_and_client_mode() {
    tokio::time::timeout(LIMIT, small())
        .await
        .expect("test finished in time");
}

async fn small() {
    let (hosts, dhts) = nodes(6).await;

    // Without a bootstrap node there is nobody to ask.
    match dhts[1].bootstrap().await {
        Err(DhtError::Kad(KadError::NoKnownPeers)) => {}
        other => panic!("expected NoKnownPeers, got {other:?}"),
    }
    for d in &dhts[1..] {
        join(d, &hosts[0]).await;
    }

    // A key nobody stored.
    match dhts[2].get_value(b"/v/missing".to_vec(), 1).await {
        Err(DhtError::NotFound { stats }) => assert!(stats.requests > 0),
        other => panic!("expected NotFound, got {other:?}"),
    }
    match dhts[2].get_providers(b"no-such-key".to_vec()).await {
        Err(DhtError::NotFound { .. }) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }
    // An empty key is an invalid record.
    match dhts[2]
        .put_value(Record::new(Vec::new(), b"x".to_vec()), 1)
        .await
    {
        Err(DhtError::Kad(KadError::InvalidRecord)) => {}
        other => panic!("expected InvalidRecord, got {other:?}"),
    }

    // A client-mode node queries but serves nothing.
    let ch = host().await;
    let client = Dht::new(&ch, config(Mode::Client)).unwrap();
    join(&client, &hosts[0]).await;
    let put = client
        .put_value(Record::new(b"/v/c".to_vec(), b"from client".to_vec()), 1)
        .await
        .unwrap();
    assert_eq!(
        put.stored, 6,
        "all six servers are among the k closest: {put:?}"
    );
    let got = dhts[4].get_value(b"/v/c".to_vec(), 1).await.unwrap();
    assert_eq!(got.record.value, b"from client");
    // Servers probed the client before learning it: it answered nothing, so no routing
    // table holds it.
    for d in &dhts {
        // Wait for the probes (and any other request) to finish first.
        let deadline = Instant::now() + Duration::from_secs(30);
        while d.inspect(|k| k.requests_in_flight()).await.unwrap() > 0 {
            assert!(Instant::now() < deadline, "requests never finished");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let table = d.inspect(|k| k.routing_table().iter().map(|e| e.peer).collect::<Vec<_>>());
        let table = table.await.unwrap();
        assert!(table.len() >= 5, "{table:?}");
        assert!(!table.contains(&ch.local_peer_id()));
    }
    let reply = hosts[0]
        .request(
            ch.local_peer_id(),
            msgnet_kad::PROTOCOL,
            Vec::new(),
            Duration::from_secs(5),
        )
        .await;
    assert!(
        matches!(reply, Err(msgnet::SendError::UnsupportedProtocol(_))),
        "client mode registers no handler: {reply:?}"
    );

    // A closed Dht fails every call.
    client.close().await;
    match client.get_value(b"/v/c".to_vec(), 1).await {
        Err(DhtError::Closed(_)) => {}
        other => panic!("expected Closed, got {other:?}"),
    }
    ch.close().await;
    close_all(hosts, dhts).await;
}

fn keypair(i: u8) -> Keypair {
    // Any 32 bytes are an ed25519 secret key.
    Keypair::ed25519_from_bytes([i.wrapping_mul(37).wrapping_add(11); 32]).unwrap()
}

/// Messages delivered to the handlers of `hosts`, summed.
async fn delivered(hosts: &[Host]) -> u64 {
    let mut n = 0;
    for h in hosts {
        n += h.stats().await.messages_delivered;
    }
    n
}

/// With k = 1 most buckets are full, so most requesters cannot enter the table. Once
/// the network is built and no query runs, the nodes must fall silent: requesters
/// that cannot be learned are not probed, and none twice in a row (before the fix,
/// two such nodes probed each other forever, thousands of messages a second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_buckets_do_not_make_nodes_probe_each_other_forever() {
    const N: u8 = 10;
    let config = KadConfig {
        k: 1,
        refresh_interval: None,
        ..KadConfig::default()
    };
    let mut hosts = Vec::new();
    let mut dhts = Vec::new();
    for i in 0..N {
        let host = Host::builder(keypair(i))
            .listen("/ip4/127.0.0.1/udp/0".parse().expect("address"))
            .build()
            .await
            .expect("host");
        dhts.push(Dht::new(&host, config.clone()).expect("dht"));
        hosts.push(host);
    }
    let (id0, addr0) = (hosts[0].local_peer_id(), hosts[0].listen_addrs()[0].clone());
    for d in &dhts[1..] {
        d.add_address(id0, addr0.clone())
            .await
            .expect("add address");
        d.bootstrap().await.expect("bootstrap");
    }
    for d in &dhts {
        // Node 0 may learn nobody it can keep; a failed round is fine here.
        let _ = d.bootstrap().await;
    }
    // Let the answers to the last requests (and their probes) settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = delivered(&hosts).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = delivered(&hosts).await - before;
    assert!(
        idle <= 2 * u64::from(N),
        "{idle} messages delivered in 3 idle seconds"
    );
    for d in &dhts {
        d.close().await;
    }
    for h in &hosts {
        h.close().await;
    }
}
