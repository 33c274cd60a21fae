//! Two msgnet hosts on loopback, a server and a client, with the handlers the
//! benchmarks need:
//!
//! - [`ECHO`]: requests answered with their own payload;
//! - [`SINK`]: messages counted (the receiver side of the rate run);
//! - [`PING`] / [`PONG`]: unreliable ping-pong, each message alone in its packet, for
//!   the bytes-on-the-wire figure.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use futures::StreamExt;
use msgnet::{EndpointConfig, 
    Bytes, Delivery, EndpointStats, Host, Incoming, Multiaddr, PeerId, SendError, SendOptions,
};

use super::{Arrivals, Rate, PAYLOAD};

/// Request/response echo protocol.
pub const ECHO: &str = "/msgnet/bench/echo/1.0.0";
/// Counting sink protocol.
pub const SINK: &str = "/msgnet/bench/sink/1.0.0";
/// Unreliable ping (client to server).
pub const PING: &str = "/msgnet/bench/ping/1.0.0";
/// Unreliable pong (server to client).
pub const PONG: &str = "/msgnet/bench/pong/1.0.0";

/// Timeout of one benchmark request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends in flight at once in a rate run.
pub const WINDOW: usize = 1024;

/// The server and client hosts.
pub struct Pair {
    /// Answers [`ECHO`], counts [`SINK`], answers [`PING`] with [`PONG`].
    pub server: Host,
    /// Sends.
    pub client: Host,
    /// The server's peer id.
    pub server_id: PeerId,
    sink: Arc<Mutex<Arrivals>>,
    pongs_sent: Arc<AtomicU64>,
    pong_rx: Incoming,
}

/// Bytes on the wire per message.
#[derive(Debug, Clone, Copy, Default)]
pub struct WireCost {
    /// Messages sent (both directions).
    pub messages: u64,
    /// UDP payload bytes sent for them (both hosts).
    pub bytes: u64,
    /// Datagrams sent for them (both hosts).
    pub datagrams: u64,
}

impl WireCost {
    /// Average UDP payload bytes per message beyond the message itself.
    pub fn overhead(&self, payload: usize) -> f64 {
        if self.messages == 0 {
            return 0.0;
        }
        self.bytes as f64 / self.messages as f64 - payload as f64
    }

    /// Datagrams per message.
    pub fn datagrams_per_message(&self) -> f64 {
        if self.messages == 0 {
            return 0.0;
        }
        self.datagrams as f64 / self.messages as f64
    }

    /// The cost between two stats snapshots of both hosts.
    pub fn between(
        before: (&EndpointStats, &EndpointStats),
        after: (&EndpointStats, &EndpointStats),
        messages: u64,
    ) -> Self {
        let bytes = (after.0.tx_bytes + after.1.tx_bytes)
            .saturating_sub(before.0.tx_bytes + before.1.tx_bytes);
        let datagrams = (after.0.tx_datagrams + after.1.tx_datagrams)
            .saturating_sub(before.0.tx_datagrams + before.1.tx_datagrams);
        Self {
            messages,
            bytes,
            datagrams,
        }
    }
}

impl Pair {
    /// Start both hosts on `127.0.0.1` and introduce the client to the server.
    pub async fn new() -> anyhow::Result<Self> {
        Self::with_config(EndpointConfig::default()).await
    }

    /// Both hosts with `config` (e.g. coalescing off).
    pub async fn with_config(config: EndpointConfig) -> anyhow::Result<Self> {
        let loopback: Multiaddr = "/ip4/127.0.0.1/udp/0".parse().context("address")?;
        let server = Host::builder(msgnet::Keypair::generate_ed25519())
            .listen(loopback.clone())
            .config(config.clone())
            .handler_queue(8192)
            .build()
            .await?;
        let client = Host::builder(msgnet::Keypair::generate_ed25519())
            .listen(loopback)
            .config(config)
            .handler_queue(8192)
            .build()
            .await?;
        let server_id = server.local_peer_id();
        let addr = server
            .listen_addrs()
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("server has no listen address"))?;
        client.add_address(server_id, addr)?;

        let mut echo = server.handle(ECHO)?;
        tokio::spawn(async move {
            while let Some(msg) = echo.recv().await {
                let payload = msg.payload.clone();
                let _ = msg.respond(payload);
            }
        });

        let sink = Arc::new(Mutex::new(Arrivals::default()));
        let mut sink_rx = server.handle(SINK)?;
        let arrivals = sink.clone();
        tokio::spawn(async move {
            while let Some(_msg) = sink_rx.recv().await {
                if let Ok(mut a) = arrivals.lock() {
                    a.hit();
                }
            }
        });

        let pongs_sent = Arc::new(AtomicU64::new(0));
        let mut ping_rx = server.handle(PING)?;
        let (srv, count) = (server.clone(), pongs_sent.clone());
        tokio::spawn(async move {
            while let Some(msg) = ping_rx.recv().await {
                if srv
                    .send_with(msg.peer, PONG, msg.payload, unreliable())
                    .await
                    .is_ok()
                {
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let pong_rx = client.handle(PONG)?;

        Ok(Self {
            server,
            client,
            server_id,
            sink,
            pongs_sent,
            pong_rx,
        })
    }

    /// One request/response round trip with a [`PAYLOAD`]-byte payload.
    pub async fn round_trip(&self, payload: Bytes) -> Result<(), SendError> {
        self.client
            .request(self.server_id, ECHO, payload, REQUEST_TIMEOUT)
            .await
            .map(drop)
    }

    /// Time `n` round trips, one sample each.
    pub async fn round_trips(&self, n: usize) -> Result<Vec<Duration>, SendError> {
        let payload = Bytes::from(vec![0x5au8; PAYLOAD]);
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            let start = Instant::now();
            self.round_trip(payload.clone()).await?;
            samples.push(start.elapsed());
        }
        Ok(samples)
    }

    /// Both hosts' stats, (server, client).
    pub async fn stats(&self) -> (EndpointStats, EndpointStats) {
        (self.server.stats().await, self.client.stats().await)
    }

    /// One-way rate: `n` messages of [`PAYLOAD`] bytes from client to server with
    /// `delivery`, [`WINDOW`] in flight, counted by the server's handler. Waits until all
    /// arrived, or until nothing arrived for 500 ms after the last send completed.
    pub async fn one_way(&self, n: u64, delivery: Delivery) -> Rate {
        self.one_way_window(n, delivery, WINDOW).await
    }

    /// [`Pair::one_way`] with at most `window` messages in flight.
    pub async fn one_way_window(&self, n: u64, delivery: Delivery, window: usize) -> Rate {
        if let Ok(mut a) = self.sink.lock() {
            *a = Arrivals::default();
        }
        let payload = Bytes::from(vec![0xa5u8; PAYLOAD]);
        let opts = SendOptions {
            delivery,
            ..SendOptions::default()
        };
        let sent = futures::stream::iter(0..n)
            .map(|_| self.send_retrying(payload.clone(), opts))
            .buffer_unordered(window)
            .filter(|ok| futures::future::ready(*ok))
            .count()
            .await as u64;
        let mut last_count = 0;
        let mut last_change = Instant::now();
        loop {
            let count = self.sink.lock().map(|a| a.count()).unwrap_or(0);
            if count >= sent || last_change.elapsed() > Duration::from_millis(500) {
                break;
            }
            if count != last_count {
                last_count = count;
                last_change = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.sink.lock().map(|a| a.rate(sent)).unwrap_or_default()
    }

    /// A send to the sink, retried while the Host says `Backpressure`. `true` if sent.
    async fn send_retrying(&self, payload: Bytes, opts: SendOptions) -> bool {
        loop {
            match self
                .client
                .send_with(self.server_id, SINK, payload.clone(), opts)
                .await
            {
                Ok(()) => return true,
                Err(SendError::Backpressure) => tokio::time::sleep(Duration::from_millis(1)).await,
                Err(_) => return false,
            }
        }
    }

    /// Bytes on the wire per message: `rounds` unreliable ping-pongs, waiting for each
    /// pong before the next ping, so that every message travels alone in its packet.
    /// A lost ping or pong costs a 200 ms wait and is still counted as sent.
    pub async fn wire_cost(&mut self, rounds: u64) -> anyhow::Result<WireCost> {
        // Make sure the session is up (and warm) before counting.
        self.round_trip(Bytes::from_static(b"warm-up")).await?;
        tokio::time::sleep(Duration::from_millis(20)).await; // let delayed acks go out
        let (s0, c0) = self.stats().await;
        let pongs0 = self.pongs_sent.load(Ordering::Relaxed);
        let payload = Bytes::from(vec![0x3cu8; PAYLOAD]);
        let mut pings = 0u64;
        for _ in 0..rounds {
            if self
                .client
                .send_with(self.server_id, PING, payload.clone(), unreliable())
                .await
                .is_ok()
            {
                pings += 1;
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), self.pong_rx.recv()).await;
        }
        let (s1, c1) = self.stats().await;
        let pongs = self.pongs_sent.load(Ordering::Relaxed) - pongs0;
        Ok(WireCost::between((&s0, &c0), (&s1, &c1), pings + pongs))
    }

    /// One-way reliable messages with their wire cost: run this on a pair built with
    /// coalescing off, so that every message travels alone in its packet. Returns the
    /// rate, the sender's bytes (the messages) and the receiver's (its acknowledgements).
    pub async fn one_way_wire(
        &mut self,
        n: u64,
        window: usize,
    ) -> anyhow::Result<(Rate, WireCost, WireCost)> {
        self.round_trip(Bytes::from_static(b"warm-up")).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (s0, c0) = self.stats().await;
        let rate = self.one_way_window(n, Delivery::Reliable, window).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (s1, c1) = self.stats().await;
        let zero = EndpointStats::default();
        let sent = rate.received;
        Ok((
            rate,
            WireCost::between((&c0, &zero), (&c1, &zero), sent),
            WireCost::between((&s0, &zero), (&s1, &zero), sent),
        ))
    }

    /// Close both hosts.
    pub async fn close(&self) {
        self.client.close().await;
        self.server.close().await;
    }
}

/// `SendOptions` for an unreliable datagram.
pub fn unreliable() -> SendOptions {
    SendOptions {
        delivery: Delivery::Unreliable,
        ..SendOptions::default()
    }
}
