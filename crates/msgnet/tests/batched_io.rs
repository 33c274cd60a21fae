//! Batched UDP I/O (GSO on send, `recvmmsg`/GRO on receive) seen from the outside: many
//! back-to-back reliable messages, one per datagram (coalescing off), all arrive exactly
//! once; and, where the kernel offers segmentation offload, the drivers' `"udp totals"`
//! debug events (target `msgnet::udp`) show that batches were used.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use msgnet::{EndpointConfig, Host, Keypair, Multiaddr, SendError};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

const GUARD: Duration = Duration::from_secs(60);

/// The message and the integer fields of one event.
#[derive(Debug, Default)]
struct Fields {
    message: String,
    numbers: HashMap<String, u64>,
}

impl Visit for Fields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.numbers.insert(field.name().to_owned(), value);
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        }
    }
}

/// Records the `msgnet::udp` events.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Fields>>>);

impl<S: Subscriber> Layer<S> for Recorder {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        self.0.lock().expect("recorder lock").push(fields);
    }
}

impl Recorder {
    /// Sum of `field` over the events with `message`, and how many there were.
    fn sum(&self, message: &str, field: &str) -> (u64, usize) {
        let events = self.0.lock().expect("recorder lock");
        let matching: Vec<&Fields> = events.iter().filter(|e| e.message == message).collect();
        (matching.iter().filter_map(|e| e.numbers.get(field)).sum(), matching.len())
    }
    fn max(&self, message: &str, field: &str) -> u64 {
        let events = self.0.lock().expect("recorder lock");
        events
            .iter()
            .filter(|e| e.message == message)
            .filter_map(|e| e.numbers.get(field).copied())
            .max()
            .unwrap_or(0)
    }
}

async fn host() -> Host {
    let listen: Multiaddr = "/ip4/127.0.0.1/udp/0".parse().expect("valid multiaddr");
    Host::builder(Keypair::generate_ed25519())
        .listen(listen)
        .config(EndpointConfig { coalesce: false, ..EndpointConfig::default() })
        .build()
        .await
        .expect("host builds")
}

// One thread: the drivers run where the scoped subscriber is set.
#[tokio::test(flavor = "current_thread")]
async fn back_to_back_datagrams_are_batched_and_arrive_exactly_once() {
    const N: u32 = 5_000;
    let recorder = Recorder::default();
    let subscriber = tracing_subscriber::registry().with(
        recorder.clone().with_filter(Targets::new().with_target("msgnet::udp", Level::DEBUG)),
    );
    let _guard = tracing::subscriber::set_default(subscriber);

    let (a, b) = (host().await, host().await);
    a.add_address(b.local_peer_id(), b.listen_addrs()[0].clone()).expect("b's address");
    let mut inbox = b.handle("/batch/1").expect("handler");
    let receiver = tokio::spawn(async move {
        let mut seen = HashSet::new();
        let mut duplicates = 0;
        while seen.len() < N as usize {
            let msg = inbox.recv().await.expect("stream open");
            assert_eq!(msg.payload.len(), 64);
            let index: [u8; 4] = msg.payload[..4].try_into().expect("4-byte index");
            if !seen.insert(u32::from_be_bytes(index)) {
                duplicates += 1;
            }
        }
        // Anything else already delivered would be a duplicate.
        tokio::task::yield_now().await;
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(100), inbox.recv()).await
        {
            duplicates += 1;
        }
        (seen, duplicates)
    });

    let peer = b.local_peer_id();
    let results: Vec<Result<(), SendError>> = tokio::time::timeout(
        GUARD,
        futures::stream::iter(0..N)
            .map(|i| {
                let mut payload = vec![0xab; 64];
                payload[..4].copy_from_slice(&i.to_be_bytes());
                a.send(peer, "/batch/1", payload)
            })
            .buffer_unordered(1024)
            .collect(),
    )
    .await
    .expect("sends done in time");
    assert!(results.iter().all(Result::is_ok), "{:?}", results.iter().find(|r| r.is_err()));
    let (seen, duplicates) =
        tokio::time::timeout(GUARD, receiver).await.expect("receives in time").expect("receiver");
    assert_eq!(duplicates, 0);
    assert_eq!(seen, (0..N).collect::<HashSet<_>>());

    let sent = a.stats().await;
    assert!(sent.tx_datagrams >= u64::from(N), "one message per datagram: {sent:?}");
    a.close().await;
    b.close().await;

    // Both drivers reported their totals when they stopped.
    let (datagrams_out, hosts) = recorder.sum("udp totals", "datagrams_out");
    assert_eq!(hosts, 2);
    assert!(datagrams_out >= u64::from(N));
    let (datagrams_in, _) = recorder.sum("udp totals", "datagrams_in");
    assert!(datagrams_in >= u64::from(N));
    if recorder.max("udp socket", "max_gso_segments") > 1 {
        let (gso_sends, _) = recorder.sum("udp totals", "gso_sends");
        let (sends, _) = recorder.sum("udp totals", "sends");
        assert!(gso_sends > 0, "GSO available but unused");
        assert!(sends < datagrams_out, "{sends} send calls for {datagrams_out} datagrams");
        if recorder.max("udp socket", "gro_segments") > 1 {
            // On loopback a GSO send reaches a GRO socket as one buffer.
            let (gro_buffers, _) = recorder.sum("udp totals", "gro_buffers");
            let (recvs, _) = recorder.sum("udp totals", "recvs");
            assert!(gro_buffers > 0, "GRO available but no coalesced buffer");
            assert!(recvs < datagrams_in, "{recvs} receive calls for {datagrams_in} datagrams");
        }
    }
    eprintln!(
        "udp totals: {:?}",
        recorder
            .0
            .lock()
            .expect("lock")
            .iter()
            .filter(|e| e.message == "udp totals")
            .collect::<Vec<_>>()
    );
}
