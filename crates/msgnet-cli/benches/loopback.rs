//! Criterion: a warm 64-byte request/response round trip on loopback, msgnet beside raw
//! UDP doing the same exchange, in one group so that criterion reports both.

#![allow(missing_docs)]

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use msgnet::Bytes;
use msgnet_cli::bench::pair::Pair;
use msgnet_cli::bench::{raw, PAYLOAD};

fn round_trip(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let pair = rt.block_on(Pair::new()).expect("msgnet hosts");
    let server = rt
        .block_on(raw::EchoServer::spawn())
        .expect("raw echo server");
    let mut client = rt
        .block_on(raw::EchoClient::connect(server.addr()))
        .expect("raw client");
    let payload = Bytes::from(vec![0x5au8; PAYLOAD]);
    let raw_payload = [0x5au8; PAYLOAD];
    // Warm both up (the handshake is not part of a warm round trip).
    rt.block_on(pair.round_trips(100)).expect("msgnet warm-up");
    rt.block_on(raw::round_trips(&mut client, 100))
        .expect("raw warm-up");

    let mut group = c.benchmark_group("round_trip_64B");
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("msgnet", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    pair.round_trip(payload.clone())
                        .await
                        .expect("msgnet round trip");
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("raw_udp", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    client
                        .round_trip(&raw_payload)
                        .await
                        .expect("raw round trip");
                }
                start.elapsed()
            })
        })
    });
    group.finish();
    rt.block_on(pair.close());
}

criterion_group!(benches, round_trip);
criterion_main!(benches);
