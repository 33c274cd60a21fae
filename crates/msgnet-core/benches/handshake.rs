//! Cost of one Noise IK handshake, both sides.
//!
//! - `noise/ik_both_sides`: the cryptography alone, as the endpoint does it: the responder's
//!   static key from its `PeerId`, both messages written and read, the initiator's signed
//!   identity verified, both sides' session keys.
//! - `endpoint/ik_first_message`: two fresh endpoints (created outside the timing) from
//!   `send` on one to the message delivered on the other and the initiator's confirmation
//!   read by the responder: Initiation, Response, first data packet.
//! - `x25519/*`: one X25519 operation with the resolver's Dh.
//!
//! Run: `cargo bench -p msgnet-core --bench handshake`.

#![allow(missing_docs)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use msgnet_core::crypto::{
    peer_of_proven_static, x25519_static_of_peer, Handshake, LocalIdentity, SeededResolver,
};
use msgnet_core::{Endpoint, EndpointConfig, Event, Keypair, SendOptions};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use snow::params::DHChoice;
use snow::resolvers::CryptoResolver;

fn identity(seed: u8) -> LocalIdentity {
    let kp = Keypair::ed25519_from_bytes([seed; 32]).expect("ed25519 seed");
    LocalIdentity::new(kp, &mut ChaCha20Rng::from_seed([seed; 32]))
}

fn noise(c: &mut Criterion) {
    let a = identity(1);
    let b = identity(2);
    let b_peer = b.peer_id();
    let mut n = 0u64;
    let mut msg1 = Vec::new();
    let mut msg2 = Vec::new();
    let mut plain = Vec::new();
    let mut payload = a.identity_payload().to_vec();
    payload.extend_from_slice(&[0u8; 8]);
    c.bench_function("noise/ik_both_sides", |bench| {
        bench.iter(|| {
            n += 1;
            let mut s1 = [0u8; 32];
            s1[..8].copy_from_slice(&n.to_le_bytes());
            let mut s2 = s1;
            s2[31] = 1;
            let rs = x25519_static_of_peer(&b_peer).expect("ed25519 peer");
            let mut init = Handshake::initiator_ik(&a, &rs, s1).expect("init");
            let mut resp = Handshake::responder_ik(&b, s2).expect("resp");
            msg1.clear();
            init.write_message(&payload, &mut msg1).expect("msg1");
            resp.read_message(&msg1, &mut plain).expect("read msg1");
            let rs_a = resp.remote_static().expect("static");
            let id_len = a.identity_payload().len();
            let peer = peer_of_proven_static(&plain[..id_len], &rs_a).expect("identity");
            black_box(peer);
            msg2.clear();
            resp.write_message(b"", &mut msg2).expect("msg2");
            init.read_message(&msg2, &mut plain).expect("read msg2");
            black_box(init.into_keys().expect("keys"));
            black_box(resp.into_keys().expect("keys"));
        })
    });
}

fn endpoints(c: &mut Criterion) {
    let a_addr: SocketAddr = "10.0.0.1:1000".parse().expect("addr");
    let b_addr: SocketAddr = "10.0.0.2:2000".parse().expect("addr");
    let unix = Duration::from_secs(1_800_000_000);
    let mut n = 0u32;
    c.bench_function("endpoint/ik_first_message", |bench| {
        bench.iter_batched(
            || {
                n += 1;
                let now = Instant::now();
                let mut sa = [3u8; 32];
                sa[..4].copy_from_slice(&n.to_le_bytes());
                let mut sb = sa;
                sb[31] = 4;
                let ka = Keypair::ed25519_from_bytes(sa).expect("key");
                let kb = Keypair::ed25519_from_bytes(sb).expect("key");
                let cfg = |seed| EndpointConfig {
                    rng_seed: seed,
                    ..EndpointConfig::default()
                };
                let mut a = Endpoint::new(cfg(sa), &ka, now, unix);
                let mut b = Endpoint::new(cfg(sb), &kb, now, unix);
                let b_peer = kb.public().to_peer_id();
                a.add_address(b_peer, b_addr);
                b.register_protocol("/bench");
                (a, b, b_peer, now)
            },
            |(mut a, mut b, b_peer, now)| {
                a.send(
                    now,
                    b_peer,
                    "/bench",
                    Bytes::from_static(b"hello"),
                    SendOptions::default(),
                )
                .expect("send");
                let mut buf = Vec::new();
                let mut up = 0;
                let mut got = false;
                // Initiation → Response → first data packet (the confirmation).
                for _ in 0..3 {
                    while let Some(t) = a.poll_transmit(now, &mut buf) {
                        b.handle_datagram(now, a_addr, &mut buf[..t.size]);
                    }
                    black_box(a.poll_timeout());
                    while let Some(t) = b.poll_transmit(now, &mut buf) {
                        a.handle_datagram(now, b_addr, &mut buf[..t.size]);
                    }
                    black_box(b.poll_timeout());
                }
                for ep in [&mut a, &mut b] {
                    while let Some(e) = ep.poll_event() {
                        match e {
                            Event::SessionUp { .. } => up += 1,
                            Event::Message(_) => got = true,
                            _ => {}
                        }
                    }
                }
                assert!(up == 2 && got, "handshake did not complete");
                (a, b)
            },
            BatchSize::SmallInput,
        )
    });
}

fn x25519(c: &mut Criterion) {
    let resolver = SeededResolver::new([9; 32]);
    let mut dh = resolver.resolve_dh(&DHChoice::Curve25519).expect("25519");
    dh.set(&[7u8; 32]);
    let peer = identity(5);
    let mut out = [0u8; 32];
    c.bench_function("x25519/dh", |bench| {
        bench.iter(|| {
            dh.dh(black_box(peer.static_public()), &mut out)
                .expect("dh")
        })
    });
    let mut k = [1u8; 32];
    c.bench_function("x25519/set_private_key", |bench| {
        bench.iter(|| {
            k[0] = k[0].wrapping_add(1);
            dh.set(black_box(&k));
        })
    });
}

criterion_group!(benches, noise, endpoints, x25519);
criterion_main!(benches);
