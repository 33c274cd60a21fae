//! Kademlia interop with js-libp2p 3's `@libp2p/kad-dht` from npm (`interop/js/node.mjs
//! --dht`: server mode, `/ipfs/kad/1.0.0`), run with the machine's Node.js. Needs
//! `npm ci --prefix interop/js`; without Node.js or the modules the test fails and says so.
//!
//! A [`Dht`] on a [`Host`] (TCP, so every kad exchange goes through the host's stream
//! bridge) and the js node, both DHT servers:
//!
//! - the js node answers msgnet's FIND_NODE (bootstrap, `find_peer`) and GET_PROVIDERS
//!   (a record only the js node holds);
//! - msgnet's ADD_PROVIDER reaches the js node, whose `findProviders` then finds msgnet;
//! - msgnet answers the js node's FIND_NODE (`getClosestPeers`) and stores the js node's
//!   ADD_PROVIDER, which msgnet's `get_providers` returns once the js node has stopped.

#[path = "../../../interop/js/harness.rs"]
mod js;

use std::time::Duration;

use cid::Cid;
use js::{to_hex, JsNode};
use msgnet::{Host, Keypair, Multiaddr, PeerId};
use msgnet_kad::host::Dht;
use msgnet_kad::{provider_key, KadConfig};
use multihash::Multihash;
use sha2::{Digest, Sha256};

/// A CIDv1 (raw codec, sha2-256) of `data`, as the js node parses it.
fn cid_of(data: &[u8]) -> Cid {
    let digest = Sha256::digest(data);
    Cid::new_v1(
        0x55,
        Multihash::<64>::wrap(0x12, &digest).expect("multihash"),
    )
}

/// Waits (polling the js node's routing table) until `peer` is in it.
async fn js_table_contains(jsn: &mut JsNode, peer: &str) {
    for round in 0..120 {
        let tag = format!("t{round}");
        jsn.command(&format!("routing-table {tag}"));
        let line = jsn
            .expect(|l| l.event == "routing-table" && l.get("tag").as_deref() == Some(&*tag))
            .await;
        if line.list("peers").iter().any(|p| p == peer) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!(
        "msgnet never entered the js node's routing table\n{}",
        jsn.transcript()
    );
}

#[tokio::test]
async fn js_kad_dht_server() {
    let mut jsn = JsNode::spawn(&["--dht"]).await;
    let js_peer: PeerId = jsn.peer.parse().expect("js peer id");
    let (_, js_addr) =
        Host::dial_info(&jsn.addr.parse::<Multiaddr>().expect("js addr")).expect("js /p2p");

    // A record only the js node holds: provided before anyone knows it.
    let js_only = cid_of(b"provided by js before msgnet joined");
    jsn.command(&format!("provide v1 {js_only}"));
    jsn.expect(|l| l.event == "provided").await;

    let host = Host::builder(Keypair::generate_ed25519())
        .listen("/ip4/127.0.0.1/tcp/0".parse().expect("addr"))
        .build()
        .await
        .expect("host");
    let host_id = host.local_peer_id();
    let dht = Dht::new(&host, KadConfig::default()).expect("dht");
    dht.add_address(js_peer, js_addr.clone())
        .await
        .expect("add js");

    // FIND_NODE, answered by js.
    let boot = dht
        .bootstrap()
        .await
        .unwrap_or_else(|e| panic!("bootstrap: {e}\n{}", jsn.transcript()));
    assert!(boot.table_size >= 1, "{boot:?}");
    let table = dht.inspect(|k| k.routing_table().iter().map(|e| e.peer).collect::<Vec<_>>());
    let table = table.await.expect("table");
    assert!(
        table.contains(&js_peer),
        "js not in msgnet's table: {table:?}"
    );
    let found = dht
        .find_peer(js_peer)
        .await
        .unwrap_or_else(|e| panic!("find_peer: {e}\n{}", jsn.transcript()));
    assert!(
        found.peer.addrs.contains(&js_addr),
        "js's FIND_NODE answer lacks {js_addr}: {found:?}"
    );

    // GET_PROVIDERS, answered by js from its own store.
    let got = dht
        .get_providers(provider_key(&js_only))
        .await
        .unwrap_or_else(|e| panic!("get_providers: {e}\n{}", jsn.transcript()));
    let js_provider = got.peers.iter().find(|p| p.peer == js_peer);
    let js_provider = js_provider.unwrap_or_else(|| panic!("js not among the providers: {got:?}"));
    assert!(
        js_provider.addrs.contains(&js_addr),
        "{js_provider:?} lacks {js_addr}"
    );

    // ADD_PROVIDER from msgnet; the js node finds msgnet as the provider.
    let ours = cid_of(b"provided by msgnet");
    let provided = dht
        .start_providing(provider_key(&ours))
        .await
        .unwrap_or_else(|e| panic!("start_providing: {e}\n{}", jsn.transcript()));
    assert!(provided.acked >= 1, "{provided:?}");
    jsn.command(&format!("find-providers f1 {ours}"));
    let mut found_msgnet = None;
    loop {
        let line = jsn
            .expect(|l| matches!(l.event.as_str(), "provider" | "providers-done"))
            .await;
        if line.event == "providers-done" {
            break;
        }
        if line.field("peer") == host_id.to_string() {
            found_msgnet = Some(line.list("addrs"));
        }
    }
    let addrs = found_msgnet.unwrap_or_else(|| {
        panic!(
            "js did not find msgnet's provider record\n{}",
            jsn.transcript()
        )
    });
    let host_addr = host.listen_addrs()[0].to_string();
    assert!(
        addrs.contains(&host_addr),
        "msgnet's provider addrs {addrs:?} lack {host_addr}"
    );

    // The js node queries msgnet: FIND_NODE (getClosestPeers) ...
    js_table_contains(&mut jsn, &host_id.to_string()).await;
    let key = cid_of(b"a key near nobody in particular").hash().to_bytes();
    jsn.command(&format!("closest c1 {}", to_hex(&key)));
    let mut closest = Vec::new();
    loop {
        let line = jsn
            .expect(|l| matches!(l.event.as_str(), "closest" | "closest-done"))
            .await;
        if line.event == "closest-done" {
            break;
        }
        closest.push(line.field("peer"));
    }
    assert!(
        closest.contains(&host_id.to_string()),
        "msgnet did not answer js's FIND_NODE: {closest:?}"
    );

    // ... and ADD_PROVIDER, which msgnet stores and then returns.
    let theirs = cid_of(b"provided by js after msgnet joined");
    jsn.command(&format!("provide v2 {theirs}"));
    jsn.expect(|l| l.event == "provided" && l.get("tag").as_deref() == Some("v2"))
        .await;
    let stats = dht.inspect(|k| k.stats()).await.expect("stats");
    assert!(
        stats.requests_in >= 2,
        "msgnet served no kad requests: {stats:?}"
    );
    assert_eq!(stats.malformed, 0, "{stats:?}");
    // Stop the js node: the provider record can now come from msgnet's own store only.
    drop(jsn);
    let got = dht
        .get_providers(provider_key(&theirs))
        .await
        .expect("get_providers from msgnet's store");
    assert!(got.peers.iter().any(|p| p.peer == js_peer), "{got:?}");

    dht.close().await;
    host.close().await;
}
