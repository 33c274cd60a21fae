//! Large messages and a slow receiver, over real UDP on 127.0.0.1.

use std::time::Duration;

use msgnet::{Bytes, EndpointConfig, Host, Keypair, Multiaddr};
use sha2::{Digest, Sha256};

async fn host(config: EndpointConfig) -> Host {
    let addr: Multiaddr = "/ip4/127.0.0.1/udp/0".parse().unwrap();
    Host::builder(Keypair::generate_ed25519()).listen(addr).config(config).build().await.unwrap()
}

async fn pair(config: EndpointConfig) -> (Host, Host) {
    let a = host(config.clone()).await;
    let b = host(config).await;
    let addr = b.listen_addrs().into_iter().next().unwrap();
    a.add_address(b.local_peer_id(), addr).unwrap();
    (a, b)
}

fn payload(len: usize, seed: u64) -> Bytes {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    Bytes::from(
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect::<Vec<u8>>(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_and_sixteen_mib_messages_round_trip_intact() {
    let config = EndpointConfig { max_message_size: 32 << 20, max_reassembly_per_session: 32 << 20, ..EndpointConfig::default() };
    let (a, b) = pair(config).await;
    let mut echo = b.handle("/big/echo/1").unwrap();
    tokio::spawn(async move {
        while let Some(m) = echo.recv().await {
            let p = m.payload.clone();
            let _ = m.respond(p);
        }
    });
    for (len, seed) in [(1usize << 20, 1u64), (16 << 20, 2)] {
        let sent = payload(len, seed);
        let digest = Sha256::digest(&sent);
        let reply = tokio::time::timeout(
            Duration::from_secs(120),
            a.request(b.local_peer_id(), "/big/echo/1", sent, Duration::from_secs(110)),
        )
        .await
        .expect("in time")
        .expect("reply");
        assert_eq!(reply.len(), len);
        assert_eq!(Sha256::digest(&reply), digest, "{len} bytes came back intact");
    }
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_does_not_read_slows_the_sender() {
    // The handler queue holds 4 messages and the handler does not read at first: the
    // sender's reliable sends stay pending (nothing is lost, nothing piles up), and
    // complete once the handler reads.
    let a = host(EndpointConfig::default()).await;
    let b = Host::builder(Keypair::generate_ed25519())
        .listen("/ip4/127.0.0.1/udp/0".parse().unwrap())
        .handler_queue(4)
        .build()
        .await
        .unwrap();
    a.add_address(b.local_peer_id(), b.listen_addrs()[0].clone()).unwrap();
    let mut rx = b.handle("/slow/1").unwrap();
    let peer = b.local_peer_id();
    let sender = a.clone();
    let sends = tokio::spawn(async move {
        let mut done = 0;
        for i in 0..200u32 {
            if sender.send(peer, "/slow/1", Bytes::from(i.to_be_bytes().to_vec())).await.is_ok() {
                done += 1;
            }
        }
        done
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!sends.is_finished(), "the sender is held back while the receiver does not read");
    let mut got = Vec::new();
    while got.len() < 200 {
        let m = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await.expect("in time").expect("message");
        got.push(u32::from_be_bytes(m.payload[..4].try_into().unwrap()));
    }
    assert_eq!(sends.await.unwrap(), 200);
    got.sort();
    assert_eq!(got, (0..200).collect::<Vec<_>>(), "every message exactly once");
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_sends_keep_call_order_however_they_are_awaited() {
    // join_all polls through FuturesUnordered and tokio's cooperative budget makes some
    // polls yield: the order must come from the calls, not from the polling.
    let (a, b) = pair(EndpointConfig::default()).await;
    let mut rx = b.handle("/ordered/1").unwrap();
    let opts = msgnet::SendOptions { delivery: msgnet::Delivery::Ordered, ..msgnet::SendOptions::default() };
    let sends: Vec<_> = (0..500u32)
        .map(|i| a.send_with(b.local_peer_id(), "/ordered/1", i.to_be_bytes().to_vec(), opts))
        .collect();
    for r in futures::future::join_all(sends).await {
        r.unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 500 {
        let m = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("in time").expect("message");
        got.push(u32::from_be_bytes(m.payload[..4].try_into().unwrap()));
    }
    assert_eq!(got, (0..500).collect::<Vec<_>>());
    a.close().await;
    b.close().await;
}
