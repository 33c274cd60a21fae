//! Bulk transfer: `N` MiB from one host to another on 127.0.0.1, msgnet against
//! rust-libp2p 0.57 ([`super::libp2p_baseline`]) in the same run.
//!
//! - msgnet: two `msgnet::Host`s (UDP), the sender `send`s `N` messages of 1 MiB
//!   (`Delivery::Reliable`, the default), at most [`WINDOW`] `send` futures at once
//!   (a `send` completes when the message is acknowledged; `Backpressure` → wait 1 ms
//!   and retry); the receiver's handler counts bytes. Timed from the first `send` to the
//!   handler having counted every byte. The session is set up (handshake) before.
//! - rust-libp2p: one stream, the same bytes written in 1 MiB `write_all`s, over QUIC
//!   and over TCP+noise+yamux.
//!
//! The result is MiB/s for each and the ratios msgnet/QUIC (target ≥ 1.0) and
//! msgnet/TCP.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use futures::StreamExt;
use msgnet::{Bytes, EndpointConfig, Host, Multiaddr, SendError};

use super::libp2p_baseline::{self, Transport};

/// Size of one bulk message (and of one baseline `write_all`).
pub const CHUNK: usize = 1 << 20;

/// msgnet `send` futures in flight at once.
pub const WINDOW: usize = 8;

/// The bulk protocol.
pub const BULK: &str = "/msgnet/bench/bulk/1.0.0";

/// Give up on the msgnet run after this long.
const DEADLINE: Duration = Duration::from_secs(300);

/// What msgnet's endpoints counted during its transfer (sender and receiver).
#[derive(Debug, Clone, Copy, Default)]
pub struct MsgnetCounters {
    /// Datagrams the sender sent.
    pub sender_datagrams: u64,
    /// UDP payload bytes the sender sent.
    pub sender_bytes: u64,
    /// Packets the sender retransmitted.
    pub retransmissions: u64,
    /// Datagrams the receiver sent (acknowledgements).
    pub receiver_datagrams: u64,
    /// Packets the receiver dropped, for any reason.
    pub receiver_drops: u64,
}

/// One transfer: bytes moved and the time it took.
#[derive(Debug, Clone, Copy, Default)]
pub struct Transfer {
    /// Bytes the receiver got.
    pub bytes: u64,
    /// From the first byte sent to the last byte received.
    pub elapsed: Duration,
}

impl Transfer {
    /// MiB per second (0 when nothing was timed).
    pub fn mib_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs <= 0.0 {
            return 0.0;
        }
        self.bytes as f64 / (1u64 << 20) as f64 / secs
    }
}

/// The three measurements of one run.
#[derive(Debug, Clone, Copy, Default)]
pub struct BulkReport {
    /// MiB moved by each.
    pub mib: u64,
    /// msgnet, 1 MiB reliable messages.
    pub msgnet: Transfer,
    /// msgnet's endpoint counters over its transfer.
    pub counters: MsgnetCounters,
    /// rust-libp2p, one QUIC stream.
    pub quic: Transfer,
    /// rust-libp2p, one yamux stream over TCP+noise.
    pub tcp: Transfer,
}

/// Run all three, msgnet first.
pub async fn run(mib: u64) -> anyhow::Result<BulkReport> {
    let total = mib * CHUNK as u64;
    let (msgnet, counters) = msgnet_bulk(mib, EndpointConfig::default())
        .await
        .context("msgnet bulk transfer")?;
    let quic = libp2p_baseline::bulk(Transport::Quic, total, CHUNK)
        .await
        .context("rust-libp2p QUIC bulk transfer")?;
    let tcp = libp2p_baseline::bulk(Transport::TcpNoiseYamux, total, CHUNK)
        .await
        .context("rust-libp2p TCP bulk transfer")?;
    Ok(BulkReport {
        mib,
        msgnet,
        counters,
        quic: Transfer {
            bytes: total,
            elapsed: quic,
        },
        tcp: Transfer {
            bytes: total,
            elapsed: tcp,
        },
    })
}

/// msgnet: `count` reliable messages of [`CHUNK`] bytes, [`WINDOW`] in flight.
pub async fn msgnet_bulk(
    count: u64,
    config: EndpointConfig,
) -> anyhow::Result<(Transfer, MsgnetCounters)> {
    let config = EndpointConfig {
        max_message_size: config.max_message_size.max(CHUNK),
        ..config
    };
    let loopback: Multiaddr = "/ip4/127.0.0.1/udp/0".parse().context("address")?;
    let receiver = Host::builder(msgnet::Keypair::generate_ed25519())
        .listen(loopback.clone())
        .config(config.clone())
        .build()
        .await?;
    let sender = Host::builder(msgnet::Keypair::generate_ed25519())
        .listen(loopback)
        .config(config)
        .build()
        .await?;
    let receiver_id = receiver.local_peer_id();
    let addr = receiver
        .listen_addrs()
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("receiver has no listen address"))?;
    sender.add_address(receiver_id, addr)?;

    // The handler counts the bytes of full-size messages (the warm-up one is smaller)
    // and notes when the last one arrived.
    let total = count * CHUNK as u64;
    let got = Arc::new(AtomicU64::new(0));
    let done_at: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let mut rx = receiver.handle(BULK)?;
    let (got2, done2) = (got.clone(), done_at.clone());
    tokio::spawn(async move {
        let mut done_tx = Some(done_tx);
        while let Some(msg) = rx.recv().await {
            if msg.payload.len() != CHUNK {
                continue;
            }
            let now = got2.fetch_add(CHUNK as u64, Ordering::Relaxed) + CHUNK as u64;
            if now >= total {
                if let Ok(mut d) = done2.lock() {
                    d.get_or_insert_with(Instant::now);
                }
                if let Some(tx) = done_tx.take() {
                    let _ = tx.send(());
                }
            }
        }
    });

    // Warm-up: the handshake, and one small reliable message acknowledged.
    sender
        .send(receiver_id, BULK, Bytes::from_static(b"warm-up"))
        .await
        .map_err(|e| anyhow!("warm-up send: {e}"))?;

    let payload = Bytes::from(vec![0xa5u8; CHUNK]);
    let (s0, r0) = (sender.stats().await, receiver.stats().await);
    let start = Instant::now();
    let outcome = tokio::time::timeout(DEADLINE, async {
        let failed = futures::stream::iter(0..count)
            .map(|_| send_retrying(&sender, receiver_id, payload.clone()))
            .buffer_unordered(WINDOW)
            .filter_map(|r| futures::future::ready(r.err()))
            .collect::<Vec<_>>()
            .await;
        if let Some(e) = failed.first() {
            bail!("{} of {count} sends failed, first: {e}", failed.len());
        }
        done_rx
            .await
            .map_err(|_| anyhow!("receiver handler ended early"))
    })
    .await;
    let (s1, r1) = (sender.stats().await, receiver.stats().await);
    let counters = MsgnetCounters {
        sender_datagrams: s1.tx_datagrams.saturating_sub(s0.tx_datagrams),
        sender_bytes: s1.tx_bytes.saturating_sub(s0.tx_bytes),
        retransmissions: s1.retransmissions.saturating_sub(s0.retransmissions),
        receiver_datagrams: r1.tx_datagrams.saturating_sub(r0.tx_datagrams),
        receiver_drops: r1.dropped_total().saturating_sub(r0.dropped_total()),
    };
    sender.close().await;
    receiver.close().await;
    outcome.map_err(|_| {
        anyhow!(
            "msgnet bulk transfer did not finish in {DEADLINE:?} ({} of {total} bytes)",
            got.load(Ordering::Relaxed)
        )
    })??;
    let end = done_at
        .lock()
        .ok()
        .and_then(|d| *d)
        .ok_or_else(|| anyhow!("no end time"))?;
    let transfer = Transfer {
        bytes: got.load(Ordering::Relaxed),
        elapsed: end.saturating_duration_since(start),
    };
    Ok((transfer, counters))
}

async fn send_retrying(host: &Host, peer: msgnet::PeerId, payload: Bytes) -> Result<(), SendError> {
    loop {
        match host.send(peer, BULK, payload.clone()).await {
            Err(SendError::Backpressure) => tokio::time::sleep(Duration::from_millis(1)).await,
            other => return other,
        }
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        0.0
    } else {
        a / b
    }
}

/// The table `msgnet bench --bulk` prints.
pub fn table(r: &BulkReport, cores: usize, cpu: &str, date: &str, quick: bool) -> String {
    let mut t = String::new();
    let mode = if quick {
        " --quick (small run, figures indicative only)"
    } else {
        ""
    };
    let _ = writeln!(t, "msgnet bench --bulk{mode}");
    let _ = writeln!(t, "machine: {cores} cores (nproc), {cpu}");
    let _ = writeln!(t, "date:    {date}");
    let _ = writeln!(
        t,
        "loopback 127.0.0.1, {} MiB one way: msgnet as {} reliable 1 MiB messages ({WINDOW} in flight), rust-libp2p 0.57 as one stream\n",
        r.mib, r.mib
    );
    let _ = writeln!(t, "{:<40} {:>12} {:>10}", "", "MiB/s", "seconds");
    for (name, x) in [
        ("msgnet (UDP, Reliable messages)", &r.msgnet),
        ("rust-libp2p QUIC stream", &r.quic),
        ("rust-libp2p TCP+noise+yamux stream", &r.tcp),
    ] {
        let _ = writeln!(
            t,
            "{:<40} {:>6.1} MiB/s {:>9.3} s",
            name,
            x.mib_per_sec(),
            x.elapsed.as_secs_f64()
        );
    }
    let _ = writeln!(t);
    let q = ratio(r.msgnet.mib_per_sec(), r.quic.mib_per_sec());
    let verdict = if q >= 1.0 { "ok" } else { "MISSED" };
    let _ = writeln!(
        t,
        "{:<40} {:>12.2}   target ≥ 1.00  {verdict}",
        "ratio msgnet / rust-libp2p QUIC", q
    );
    let _ = writeln!(
        t,
        "{:<40} {:>12.2}",
        "ratio msgnet / rust-libp2p TCP",
        ratio(r.msgnet.mib_per_sec(), r.tcp.mib_per_sec())
    );
    let c = &r.counters;
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "msgnet: sender {} datagrams ({:.1} MiB UDP payload, {:.1}% over the data), {} retransmissions; receiver {} datagrams back, {} dropped",
        c.sender_datagrams,
        c.sender_bytes as f64 / (1u64 << 20) as f64,
        100.0 * ratio(c.sender_bytes as f64, r.msgnet.bytes as f64) - 100.0,
        c.retransmissions,
        c.receiver_datagrams,
        c.receiver_drops
    );
    t
}

/// The same as one JSON object.
pub fn json(r: &BulkReport, cores: usize, cpu: &str, date: &str, quick: bool) -> String {
    let x = |t: &Transfer| {
        format!(
            "{{\"bytes\":{},\"elapsed_s\":{:.6},\"mib_per_sec\":{:.2}}}",
            t.bytes,
            t.elapsed.as_secs_f64(),
            t.mib_per_sec()
        )
    };
    let cpu = cpu.replace('\\', "\\\\").replace('"', "\\\"");
    format!(
        concat!(
            "{{\"quick\":{},\"cores\":{},\"cpu\":\"{}\",\"date\":\"{}\",\"mib\":{},\"window\":{},",
            "\"msgnet\":{},\"msgnet_retransmissions\":{},\"msgnet_receiver_drops\":{},\"libp2p_quic\":{},\"libp2p_tcp\":{},",
            "\"ratio_quic\":{:.4},\"ratio_tcp\":{:.4}}}"
        ),
        quick,
        cores,
        cpu,
        date,
        r.mib,
        WINDOW,
        x(&r.msgnet),
        r.counters.retransmissions,
        r.counters.receiver_drops,
        x(&r.quic),
        x(&r.tcp),
        ratio(r.msgnet.mib_per_sec(), r.quic.mib_per_sec()),
        ratio(r.msgnet.mib_per_sec(), r.tcp.mib_per_sec()),
    )
}
