//! Round trips only, for profiling (`perf`, `/usr/bin/time -v`): the round-trip part of
//! `msgnet bench --streams` (msgnet-cli), on its own and for one side at a time, so that
//! context switches, syscalls and CPU can be counted per round trip.
//!
//! `cargo run --release -p msgnet-libp2p --example rtt_profile -- [msgnet|baseline] [quic|tcp] [N]`
//!
//! Two swarms in one process on 127.0.0.1 (tokio multi-thread runtime, as the CLI), a
//! 64-byte request and a 64-byte response, one at a time: N round trips after N/10 of
//! warm-up. Prints the median and p99, and the process's CPU time and context switches
//! per measured round trip (from `/proc/self/stat` and `/proc/self/status`).

use std::io;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{noise, tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm};

const ECHO: &str = "/msgnet/bench/stream-echo/1.0.0";
static PAYLOAD: [u8; 64] = [0xa5; 64];

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The two sides behind one interface (as in msgnet-cli's bench).
trait Side: NetworkBehaviour + Send + Sized + 'static
where
    <Self as NetworkBehaviour>::ToSwarm: Send,
{
    fn make() -> Self;
    fn serve(&mut self, event: Self::ToSwarm);
    fn issue(&mut self, peer: PeerId);
    fn done(event: Self::ToSwarm) -> bool;
}

impl Side for msgnet_libp2p::Behaviour {
    fn make() -> Self {
        let mut b = msgnet_libp2p::Behaviour::new(msgnet_libp2p::Config::default());
        b.handle(ECHO);
        b
    }
    fn serve(&mut self, event: msgnet_libp2p::Event) {
        if let msgnet_libp2p::Event::Message(m) = event {
            if let Some(req) = &m.request {
                let _ = self.respond(req, Ok(Bytes::from_static(&PAYLOAD)));
            }
        }
    }
    fn issue(&mut self, peer: PeerId) {
        let _ = self.request(peer, ECHO, Bytes::from_static(&PAYLOAD));
    }
    fn done(event: msgnet_libp2p::Event) -> bool {
        matches!(event, msgnet_libp2p::Event::Response { result: Ok(_), .. })
    }
}

#[derive(Debug, Clone, Default)]
struct LpCodec;

async fn read_lp<T: AsyncRead + Unpin>(io: &mut T) -> io::Result<Vec<u8>> {
    let mut b = [0u8; 1];
    io.read_exact(&mut b).await?;
    if b[0] & 0x80 != 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "long"));
    }
    let mut buf = vec![0u8; usize::from(b[0])];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_lp<T: AsyncWrite + Unpin>(io: &mut T, data: &[u8]) -> io::Result<()> {
    let mut buf = vec![data.len() as u8];
    buf.extend_from_slice(data);
    io.write_all(&buf).await
}

impl request_response::Codec for LpCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;
    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        read_lp(io).await
    }
    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        read_lp(io).await
    }
    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        r: Vec<u8>,
    ) -> io::Result<()> {
        write_lp(io, &r).await
    }
    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        r: Vec<u8>,
    ) -> io::Result<()> {
        write_lp(io, &r).await
    }
}

type Baseline = request_response::Behaviour<LpCodec>;

impl Side for Baseline {
    fn make() -> Self {
        let config = request_response::Config::default()
            .with_max_concurrent_streams(256)
            .with_request_timeout(Duration::from_secs(60));
        request_response::Behaviour::with_codec(
            LpCodec,
            [(StreamProtocol::new(ECHO), ProtocolSupport::Full)],
            config,
        )
    }
    fn serve(&mut self, event: request_response::Event<Vec<u8>, Vec<u8>>) {
        if let request_response::Event::Message {
            message: request_response::Message::Request { channel, .. },
            ..
        } = event
        {
            let _ = self.send_response(channel, PAYLOAD.to_vec());
        }
    }
    fn issue(&mut self, peer: PeerId) {
        self.send_request(&peer, PAYLOAD.to_vec());
    }
    fn done(event: request_response::Event<Vec<u8>, Vec<u8>>) -> bool {
        matches!(
            event,
            request_response::Event::Message {
                message: request_response::Message::Response { .. },
                ..
            }
        )
    }
}

fn build<B: Side>(quic: bool) -> Res<Swarm<B>>
where
    <B as NetworkBehaviour>::ToSwarm: Send,
{
    let config = |c: libp2p::swarm::Config| c.with_idle_connection_timeout(Duration::from_secs(60));
    let builder = libp2p::SwarmBuilder::with_new_identity().with_tokio();
    Ok(if quic {
        builder
            .with_quic()
            .with_behaviour(|_| B::make())?
            .with_swarm_config(config)
            .build()
    } else {
        builder
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )?
            .with_behaviour(|_| B::make())?
            .with_swarm_config(config)
            .build()
    })
}

/// (user+system CPU ticks, voluntary + involuntary context switches) of this process.
fn usage() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks = fields
        .get(11)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    // Every thread's (`/proc/self/status` is the main thread's only).
    let mut switches = 0;
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        switches += status
            .lines()
            .filter(|l| l.contains("ctxt_switches"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    (ticks, switches)
}

async fn run<B: Side>(quic: bool, n: usize) -> Res<()>
where
    <B as NetworkBehaviour>::ToSwarm: Send,
{
    let mut server = build::<B>(quic)?;
    let listen: Multiaddr = if quic {
        "/ip4/127.0.0.1/udp/0/quic-v1"
    } else {
        "/ip4/127.0.0.1/tcp/0"
    }
    .parse()?;
    server.listen_on(listen)?;
    let server_id = *server.local_peer_id();
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = server.select_next_some().await {
            break address;
        }
    };
    let server_task = tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(e) = server.select_next_some().await {
                server.behaviour_mut().serve(e);
            }
        }
    });
    let mut client = build::<B>(quic)?;
    client.dial(addr)?;
    loop {
        if let SwarmEvent::ConnectionEstablished { peer_id, .. } = client.select_next_some().await {
            if peer_id == server_id {
                break;
            }
        }
    }
    let mut samples = Vec::with_capacity(n);
    let mut before = usage();
    for i in 0..n + n / 10 {
        if i == n / 10 {
            before = usage();
        }
        let start = Instant::now();
        client.behaviour_mut().issue(server_id);
        loop {
            if let SwarmEvent::Behaviour(e) = client.select_next_some().await {
                if B::done(e) {
                    break;
                }
            }
        }
        if i >= n / 10 {
            samples.push(start.elapsed());
        }
    }
    let after = usage();
    server_task.abort();
    samples.sort();
    let at = |q: f64| {
        samples
            .get(((samples.len() as f64 * q) as usize).min(samples.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let tick_us = 1e6 / 100.0; // USER_HZ
    let slow: Vec<u64> = samples
        .iter()
        .filter(|d| d.as_micros() > 300)
        .map(|d| d.as_micros() as u64)
        .collect();
    if std::env::var_os("RTT_SLOW").is_some() {
        println!("{} round trips over 300 µs: {:?}", slow.len(), slow);
    }
    println!(
        "median {:.1} µs  p99 {:.1} µs  CPU {:.1} µs/rtt  context switches {:.2}/rtt",
        at(0.5).as_secs_f64() * 1e6,
        at(0.99).as_secs_f64() * 1e6,
        (after.0 - before.0) as f64 * tick_us / n as f64,
        (after.1 - before.1) as f64 / n as f64,
    );
    Ok(())
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let side = args.get(1).map(String::as_str).unwrap_or("msgnet");
    let quic = args.get(2).map(String::as_str).unwrap_or("quic") == "quic";
    let n: usize = args.get(3).and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        match side {
            "baseline" => run::<Baseline>(quic, n).await,
            _ => run::<msgnet_libp2p::Behaviour>(quic, n).await,
        }
    })
}
