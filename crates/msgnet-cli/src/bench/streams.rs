//! `msgnet bench --streams`: msgnet's long-lived `/msgnet/1.0.0` stream against
//! rust-libp2p 0.57 `request-response` (one stream per request), in the same run.
//!
//! Two `Swarm`s in one process on 127.0.0.1, one connection between them, once over
//! TCP+noise+yamux and once over QUIC, and all of it three times, with the two swarms
//! placed on tokio runtimes three ways ([`Runtimes::ALL`]): each on its own thread with a
//! single-threaded runtime (as two peers in two processes, each with a core to itself);
//! both as tasks of the caller's multi-thread runtime, sharing its workers; and the same
//! with the client swarm driven from the runtime's main thread instead of a task. On each
//! connection, two behaviours are measured one after the other, each on a fresh pair of
//! swarms:
//!
//! - msgnet: [`msgnet_libp2p::Behaviour`]; the server handles [`ECHO`] (answers every
//!   request with a 64-byte response) and [`SINK`] (one-way messages, acknowledged by the
//!   stream's SACKs);
//! - baseline: `libp2p::request_response::Behaviour` with a length-prefixed codec
//!   (`uvarint length || bytes`, the same framing msgnet's bridge speaks), [`ECHO`] with
//!   `ProtocolSupport::Full`, `max_concurrent_streams` at twice the window and a 60 s
//!   request timeout; a request is answered with 64 bytes, or with 0 bytes if its first
//!   byte marks it one-way (request-response has no one-way message: a one-way message
//!   is a 64-byte request with an empty response).
//!
//! Measured, for each: (a) the round trip of a 64-byte request and its 64-byte response,
//! one at a time, median and p99 over N after a warm-up; (b) the request rate with
//! [`WINDOW`] requests outstanding (a new one is issued as each completes), from the
//! first issued to the last completed; (c) the same for one-way 64-byte messages, counted
//! when the sender learns they were delivered (SACK, or the empty response). The server
//! swarm answers in a loop of its own; the client swarm is driven by the measuring code.
//!
//! The window is 128: below QUIC's default stream limit (256 bidirectional streams per
//! connection in libp2p-quic) and yamux's 256 unacknowledged streams, so the baseline is
//! never throttled by its transport's stream limits.

use std::fmt::Write as _;
use std::io;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{noise, tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm};

use super::libp2p_baseline::{connect, listen, Transport};
use super::{median_p99, PAYLOAD};

/// Request/response protocol of both sides.
pub const ECHO: &str = "/msgnet/bench/stream-echo/1.0.0";
/// One-way protocol of both sides.
pub const SINK: &str = "/msgnet/bench/stream-sink/1.0.0";

/// Requests (or one-way messages) outstanding at once in a rate run.
pub const WINDOW: usize = 128;

/// Give up waiting for one completion after this long.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// The 64-byte payload of every request, response and one-way message.
static PAYLOAD_BYTES: [u8; PAYLOAD] = [0xa5; PAYLOAD];

/// Run sizes.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Round trips before measuring.
    pub warmup: usize,
    /// Round trips measured.
    pub round_trips: usize,
    /// Requests in the request-rate run.
    pub requests: u64,
    /// Messages in the one-way rate run.
    pub messages: u64,
}

impl Sizes {
    /// Small runs with `quick`, else the full ones.
    pub fn new(quick: bool) -> Self {
        if quick {
            Self { warmup: 20, round_trips: 200, requests: 2_000, messages: 2_000 }
        } else {
            Self { warmup: 1_000, round_trips: 10_000, requests: 100_000, messages: 100_000 }
        }
    }
}

/// What one behaviour achieved on one connection.
#[derive(Debug, Clone, Copy, Default)]
pub struct Figures {
    /// Round trip median and p99.
    pub rtt: (Duration, Duration),
    /// Requests completed per second with [`WINDOW`] outstanding.
    pub request_rate: f64,
    /// One-way messages delivered per second with [`WINDOW`] outstanding.
    pub message_rate: f64,
}

/// msgnet and the baseline on one transport.
#[derive(Debug, Clone, Copy)]
pub struct Pairing {
    /// The transport.
    pub transport: Transport,
    /// Where the two swarms ran.
    pub runtimes: Runtimes,
    /// msgnet's long-lived stream.
    pub msgnet: Figures,
    /// rust-libp2p request-response.
    pub baseline: Figures,
}

impl Pairing {
    /// msgnet's request rate over the baseline's (target ≥ 3).
    pub fn rate_ratio(&self) -> f64 {
        ratio(self.msgnet.request_rate, self.baseline.request_rate)
    }

    /// msgnet's one-way message rate over the baseline's.
    pub fn message_ratio(&self) -> f64 {
        ratio(self.msgnet.message_rate, self.baseline.message_rate)
    }

    /// msgnet's median round trip over the baseline's (target ≤ 0.5).
    pub fn rtt_ratio(&self) -> f64 {
        ratio(self.msgnet.rtt.0.as_secs_f64(), self.baseline.rtt.0.as_secs_f64())
    }

    /// msgnet's p99 round trip over the baseline's.
    pub fn p99_ratio(&self) -> f64 {
        ratio(self.msgnet.rtt.1.as_secs_f64(), self.baseline.rtt.1.as_secs_f64())
    }
}

/// Everything measured: per [`Runtimes`] (in [`Runtimes::ALL`] order), TCP then QUIC.
#[derive(Debug, Clone)]
pub struct StreamsReport {
    /// Run sizes.
    pub sizes: Sizes,
    /// One entry per runtime arrangement and transport.
    pub pairings: Vec<Pairing>,
}

/// Run the whole benchmark: for each [`Runtimes`], TCP then QUIC.
pub async fn run(quick: bool) -> anyhow::Result<StreamsReport> {
    let sizes = Sizes::new(quick);
    let mut pairings = Vec::new();
    for runtimes in Runtimes::ALL {
        for transport in [Transport::TcpNoiseYamux, Transport::Quic] {
            let msgnet = measure(transport, sizes, runtimes, msgnet_swarm)
                .await
                .with_context(|| format!("msgnet over {} ({})", name(transport), runtimes.name()))?;
            let baseline = measure(transport, sizes, runtimes, baseline_swarm)
                .await
                .with_context(|| format!("request-response over {} ({})", name(transport), runtimes.name()))?;
            pairings.push(Pairing { transport, runtimes, msgnet, baseline });
        }
    }
    Ok(StreamsReport { sizes, pairings })
}

fn name(t: Transport) -> &'static str {
    match t {
        Transport::TcpNoiseYamux => "TCP+noise+yamux",
        Transport::Quic => "QUIC",
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        0.0
    } else {
        a / b
    }
}

// ---- the two behaviours behind one interface ----

/// What is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// 64-byte request, 64-byte response.
    Request,
    /// 64-byte one-way message.
    OneWay,
}

/// A swarm the benchmark can drive: the client issues, the server answers.
trait Side: NetworkBehaviour + Send + Sized + 'static
where
    <Self as NetworkBehaviour>::ToSwarm: Send,
{
    /// Set the server up (handlers).
    fn serve_setup(&mut self) {}
    /// React to a server-side event.
    fn serve(&mut self, event: Self::ToSwarm);
    /// Issue one request or message to `peer`.
    fn issue(&mut self, peer: PeerId, kind: Kind) -> anyhow::Result<()>;
    /// `Some(Ok)` if `event` completes one issued request or message, `Some(Err)` if it
    /// fails one, `None` if it is unrelated.
    fn completion(event: Self::ToSwarm) -> Option<anyhow::Result<()>>;
}

impl Side for msgnet_libp2p::Behaviour {
    fn serve_setup(&mut self) {
        self.handle(ECHO);
        self.handle(SINK);
    }

    fn serve(&mut self, event: msgnet_libp2p::Event) {
        if let msgnet_libp2p::Event::Message(m) = event {
            if let Some(req) = &m.request {
                let _ = self.respond(req, Ok(Bytes::from_static(&PAYLOAD_BYTES)));
            }
        }
    }

    fn issue(&mut self, peer: PeerId, kind: Kind) -> anyhow::Result<()> {
        let payload = Bytes::from_static(&PAYLOAD_BYTES);
        let r = match kind {
            Kind::Request => self.request(peer, ECHO, payload),
            Kind::OneWay => self.send(peer, SINK, payload),
        };
        r.map(drop).map_err(|e| anyhow!("msgnet issue: {e}"))
    }

    fn completion(event: msgnet_libp2p::Event) -> Option<anyhow::Result<()>> {
        match event {
            msgnet_libp2p::Event::Response { result, .. } => Some(match result {
                Ok(r) if r.len() == PAYLOAD => Ok(()),
                Ok(r) => Err(anyhow!("response of {} bytes", r.len())),
                Err(e) => Err(anyhow!("request failed: {e}")),
            }),
            msgnet_libp2p::Event::SendComplete { result, .. } => {
                Some(result.map_err(|e| anyhow!("send failed: {e}")))
            }
            _ => None,
        }
    }
}

/// The baseline: rust-libp2p request-response with [`LpCodec`].
type Baseline = request_response::Behaviour<LpCodec>;

impl Side for Baseline {
    fn serve(&mut self, event: request_response::Event<Vec<u8>, Vec<u8>>) {
        if let request_response::Event::Message {
            message: request_response::Message::Request { request, channel, .. },
            ..
        } = event
        {
            let len = if request.first() == Some(&SINK_MARK) { 0 } else { PAYLOAD };
            let _ = self.send_response(channel, PAYLOAD_BYTES[..len].to_vec());
        }
    }

    fn issue(&mut self, peer: PeerId, kind: Kind) -> anyhow::Result<()> {
        let mut req = PAYLOAD_BYTES.to_vec();
        if kind == Kind::OneWay {
            req[0] = SINK_MARK;
        }
        self.send_request(&peer, req);
        Ok(())
    }

    fn completion(event: request_response::Event<Vec<u8>, Vec<u8>>) -> Option<anyhow::Result<()>> {
        match event {
            request_response::Event::Message {
                message: request_response::Message::Response { response, .. },
                ..
            } => Some(if response.len() == PAYLOAD || response.is_empty() {
                Ok(())
            } else {
                Err(anyhow!("response of {} bytes", response.len()))
            }),
            request_response::Event::OutboundFailure { error, .. } => {
                Some(Err(anyhow!("request failed: {error}")))
            }
            _ => None,
        }
    }
}

/// First byte of a baseline one-way message (a request answered with 0 bytes); echo
/// requests start with `0xa5`. One protocol serves both, so that the baseline does not
/// pay for a second protocol in multistream-select.
const SINK_MARK: u8 = 0;

/// `uvarint length || bytes` requests and responses of at most 64 KiB.
#[derive(Debug, Clone, Default)]
pub struct LpCodec;

const MAX_LP: usize = 64 * 1024;

async fn read_lp<T: AsyncRead + Unpin>(io: &mut T) -> io::Result<Vec<u8>> {
    let mut len: usize = 0;
    for i in 0..3 {
        let mut b = [0u8; 1];
        io.read_exact(&mut b).await?;
        len |= usize::from(b[0] & 0x7f) << (7 * i);
        if b[0] & 0x80 == 0 {
            if len > MAX_LP {
                break;
            }
            let mut buf = vec![0u8; len];
            io.read_exact(&mut buf).await?;
            return Ok(buf);
        }
    }
    Err(io::Error::new(io::ErrorKind::InvalidData, "bad length prefix"))
}

async fn write_lp<T: AsyncWrite + Unpin>(io: &mut T, data: &[u8]) -> io::Result<()> {
    let mut buf = Vec::with_capacity(data.len() + 3);
    msgnet_core::wire::write_varint(&mut buf, data.len() as u64);
    buf.extend_from_slice(data);
    // request-response closes the stream after the codec wrote.
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
        req: Vec<u8>,
    ) -> io::Result<()> {
        write_lp(io, &req).await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()> {
        write_lp(io, &res).await
    }
}

// ---- swarms ----

fn build<B: NetworkBehaviour>(transport: Transport, behaviour: impl FnOnce() -> B) -> anyhow::Result<Swarm<B>> {
    let config = |c: libp2p::swarm::Config| c.with_idle_connection_timeout(Duration::from_secs(60));
    let builder = libp2p::SwarmBuilder::with_new_identity().with_tokio();
    Ok(match transport {
        Transport::Quic => builder
            .with_quic()
            .with_behaviour(|_| behaviour())
            .map_err(|e| anyhow!("behaviour: {e:?}"))?
            .with_swarm_config(config)
            .build(),
        Transport::TcpNoiseYamux => builder
            .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)
            .context("tcp transport")?
            .with_behaviour(|_| behaviour())
            .map_err(|e| anyhow!("behaviour: {e:?}"))?
            .with_swarm_config(config)
            .build(),
    })
}

fn msgnet_swarm(t: Transport) -> anyhow::Result<Swarm<msgnet_libp2p::Behaviour>> {
    build(t, || msgnet_libp2p::Behaviour::new(msgnet_libp2p::Config::default()))
}

fn baseline_swarm(t: Transport) -> anyhow::Result<Swarm<Baseline>> {
    build(t, || {
        let config = request_response::Config::default()
            .with_max_concurrent_streams(2 * WINDOW)
            .with_request_timeout(Duration::from_secs(60));
        // ECHO only: the one-way messages are marked by their first byte (`SINK_MARK`).
        request_response::Behaviour::with_codec(
            LpCodec,
            [(StreamProtocol::new(ECHO), ProtocolSupport::Full)],
            config,
        )
    })
}

// ---- the measurement ----

/// Where the two swarms of a run are polled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtimes {
    /// Each swarm on its own OS thread with its own single-threaded tokio runtime, as two
    /// peers in two processes would be: nothing of one peer waits for a worker thread
    /// busy with the other, and a peer's tasks (swarm, connection, transport drivers)
    /// hand work to each other without waking another thread.
    PerPeer,
    /// Each swarm on its own tokio multi-thread runtime (one worker per core), as two
    /// processes with `#[tokio::main]` would be: on this machine's cores, twice as many
    /// workers as cores.
    PerPeerMultiThread,
    /// Both swarms as tasks of the caller's tokio runtime (the CLI's: multi-thread, one
    /// worker per core), sharing its worker threads.
    SharedTasks,
    /// As [`SharedTasks`](Runtimes::SharedTasks), but the client swarm is driven by the
    /// calling future itself, i.e. from the thread that blocks on the runtime (the CLI's
    /// main thread, which is not one of its workers), as rust-libp2p's examples drive
    /// their swarm from `main`: every hand-over between the client swarm and its
    /// connection's tasks crosses threads.
    SharedMainThread,
}

impl Runtimes {
    /// The arrangements `msgnet bench --streams` measures, in order. Not
    /// [`PerPeerMultiThread`](Runtimes::PerPeerMultiThread): on a machine with fewer cores
    /// than twice a runtime's workers it measures the oversubscription, not the peers
    /// (`examples/rtt_profile.rs` runs it).
    pub const ALL: [Runtimes; 3] = [Runtimes::PerPeer, Runtimes::SharedTasks, Runtimes::SharedMainThread];

    /// How the report names it.
    pub fn name(self) -> &'static str {
        match self {
            Runtimes::PerPeer => "one single-threaded runtime per peer",
            Runtimes::PerPeerMultiThread => "one multi-thread runtime per peer",
            Runtimes::SharedTasks => "both peers tasks of one multi-thread runtime",
            Runtimes::SharedMainThread => "one multi-thread runtime, client swarm on the main thread",
        }
    }
}

/// Runs the future `f` makes to completion on a new OS thread with its own tokio runtime
/// (single-threaded, or multi-thread with one worker per core).
async fn on_own_thread<T, F>(multi_thread: bool, f: impl FnOnce() -> F + Send + 'static) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = anyhow::Result<T>>,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name("bench-peer".into()).spawn(move || {
        let mut builder = if multi_thread {
            tokio::runtime::Builder::new_multi_thread()
        } else {
            tokio::runtime::Builder::new_current_thread()
        };
        let result = builder
            .enable_all()
            .build()
            .context("tokio runtime")
            .and_then(|rt| rt.block_on(f()));
        let _ = tx.send(result);
    })?;
    rx.await.map_err(|_| anyhow!("peer thread panicked"))?
}

/// The server side: a swarm of `make` listening on `transport`, which reports its peer id
/// and address on `ready` and then answers until `stop` fires.
async fn serve<B: Side>(
    transport: Transport,
    make: fn(Transport) -> anyhow::Result<Swarm<B>>,
    ready: tokio::sync::oneshot::Sender<(PeerId, Multiaddr)>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> anyhow::Result<()> {
    let mut server = make(transport)?;
    server.behaviour_mut().serve_setup();
    let addr = listen(&mut server, transport).await?;
    let _ = ready.send((*server.local_peer_id(), addr));
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(()),
            event = server.select_next_some() => {
                if let SwarmEvent::Behaviour(e) = event {
                    server.behaviour_mut().serve(e);
                }
            }
        }
    }
}

/// Starts a server swarm of `make`, connects a client swarm of `make` to it, runs `job` on
/// the client, then stops both; where each runs is `runtimes`.
async fn on_pair<B, T, F>(
    transport: Transport,
    make: fn(Transport) -> anyhow::Result<Swarm<B>>,
    runtimes: Runtimes,
    job: impl FnOnce(Swarm<B>, PeerId) -> F + Send + 'static,
) -> anyhow::Result<T>
where
    B: Side,
    <B as NetworkBehaviour>::ToSwarm: Send,
    T: Send + 'static,
    F: std::future::Future<Output = anyhow::Result<T>> + Send,
{
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    let (stop, stop_rx) = tokio::sync::oneshot::channel();
    let server = match runtimes {
        Runtimes::SharedTasks | Runtimes::SharedMainThread => tokio::spawn(serve(transport, make, ready_tx, stop_rx)),
        own => tokio::spawn(on_own_thread(own == Runtimes::PerPeerMultiThread, move || {
            serve(transport, make, ready_tx, stop_rx)
        })),
    };
    let client = move || async move {
        let Ok((server_id, addr)) = ready.await else {
            return Err(anyhow!("the server stopped before listening"));
        };
        let mut client = make(transport)?;
        connect(&mut client, addr, server_id).await?;
        job(client, server_id).await
    };
    let result = match runtimes {
        Runtimes::SharedTasks => tokio::spawn(client()).await.map_err(|e| anyhow!("client task: {e}")).and_then(|r| r),
        Runtimes::SharedMainThread => client().await,
        own => on_own_thread(own == Runtimes::PerPeerMultiThread, client).await,
    };
    let _ = stop.send(());
    let served = server.await.map_err(|e| anyhow!("server task: {e}"))?;
    let result = result?;
    served.context("server")?;
    Ok(result)
}

/// Connects a fresh pair of swarms of `make` and measures.
async fn measure<B: Side>(
    transport: Transport,
    sizes: Sizes,
    runtimes: Runtimes,
    make: fn(Transport) -> anyhow::Result<Swarm<B>>,
) -> anyhow::Result<Figures>
where
    <B as NetworkBehaviour>::ToSwarm: Send,
{
    on_pair(transport, make, runtimes, move |mut client: Swarm<B>, server_id| async move {
        let client = &mut client;
        round_trips(client, server_id, sizes.warmup).await.context("warm-up")?;
        let mut samples = round_trips(client, server_id, sizes.round_trips).await.context("round trips")?;
        let rtt = median_p99(&mut samples);
        let request_rate = rate(client, server_id, Kind::Request, sizes.requests).await.context("request rate")?;
        let message_rate = rate(client, server_id, Kind::OneWay, sizes.messages).await.context("message rate")?;
        Ok(Figures { rtt, request_rate, message_rate })
    })
    .await
}

/// Round trips of one side alone, for profiling (`examples/rtt_profile.rs`): `n` measured
/// after `n / 10` of warm-up, with the process's CPU time and context switches over the
/// measured ones (Linux `/proc`; zero elsewhere).
pub async fn profile_round_trips(
    transport: Transport,
    msgnet: bool,
    runtimes: Runtimes,
    n: usize,
) -> anyhow::Result<RoundTripProfile> {
    async fn run<B: Side>(
        transport: Transport,
        make: fn(Transport) -> anyhow::Result<Swarm<B>>,
        runtimes: Runtimes,
        n: usize,
    ) -> anyhow::Result<RoundTripProfile>
    where
        <B as NetworkBehaviour>::ToSwarm: Send,
    {
        on_pair(transport, make, runtimes, move |mut client: Swarm<B>, server_id| async move {
        let client = &mut client;
            round_trips(client, server_id, n / 10).await.context("warm-up")?;
            let before = process_usage();
            let samples = round_trips(client, server_id, n).await.context("round trips")?;
            let after = process_usage();
            Ok(RoundTripProfile {
                samples,
                cpu_ticks: after.0.saturating_sub(before.0),
                context_switches: after.1.saturating_sub(before.1),
            })
        })
        .await
    }
    if msgnet {
        run(transport, msgnet_swarm, runtimes, n).await
    } else {
        run(transport, baseline_swarm, runtimes, n).await
    }
}

/// What [`profile_round_trips`] measured.
#[derive(Debug, Clone)]
pub struct RoundTripProfile {
    /// Every measured round trip, in order.
    pub samples: Vec<Duration>,
    /// User + system CPU of the process over them, in clock ticks (`USER_HZ`, 100 on Linux).
    pub cpu_ticks: u64,
    /// Voluntary + involuntary context switches of all the process's threads over them.
    pub context_switches: u64,
}

/// (user + system CPU ticks, context switches of every thread) of this process.
fn process_usage() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let ticks = field(11) + field(12);
    let mut switches = 0;
    for task in std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        switches += status
            .lines()
            .filter(|l| l.contains("ctxt_switches"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    (ticks, switches)
}

/// Waits for the next completion on the client.
async fn next_completion<B: Side>(client: &mut Swarm<B>) -> anyhow::Result<()>
where
    <B as NetworkBehaviour>::ToSwarm: Send,
{
    let wait = async {
        loop {
            match client.select_next_some().await {
                SwarmEvent::Behaviour(e) => {
                    if let Some(r) = B::completion(e) {
                        return r;
                    }
                }
                SwarmEvent::ConnectionClosed { cause, .. } => bail!("connection closed: {cause:?}"),
                _ => {}
            }
        }
    };
    tokio::time::timeout(STEP_TIMEOUT, wait)
        .await
        .map_err(|_| anyhow!("nothing completed within {STEP_TIMEOUT:?}"))?
}

/// `n` requests one at a time; their round trips.
async fn round_trips<B: Side>(client: &mut Swarm<B>, peer: PeerId, n: usize) -> anyhow::Result<Vec<Duration>>
where
    <B as NetworkBehaviour>::ToSwarm: Send,
{
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        client.behaviour_mut().issue(peer, Kind::Request)?;
        next_completion(client).await?;
        samples.push(start.elapsed());
    }
    Ok(samples)
}

/// `n` requests or messages, [`WINDOW`] outstanding; completions per second.
async fn rate<B: Side>(client: &mut Swarm<B>, peer: PeerId, kind: Kind, n: u64) -> anyhow::Result<f64>
where
    <B as NetworkBehaviour>::ToSwarm: Send,
{
    let start = Instant::now();
    let (mut issued, mut done) = (0u64, 0u64);
    while done < n {
        while issued < n && issued - done < WINDOW as u64 {
            client.behaviour_mut().issue(peer, kind)?;
            issued += 1;
        }
        next_completion(client).await?;
        done += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(if secs > 0.0 { n as f64 / secs } else { 0.0 })
}

// ---- output ----

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "MISSED"
    }
}

/// The report as a table.
pub fn table(r: &StreamsReport, cores: usize, cpu: &str, date: &str, quick: bool) -> String {
    let mut t = String::new();
    let mode = if quick { " --quick (small runs, figures indicative only)" } else { "" };
    let _ = writeln!(t, "msgnet bench --streams{mode}");
    let _ = writeln!(t, "machine: {cores} cores (nproc), {cpu}");
    let _ = writeln!(t, "date:    {date}");
    let _ = writeln!(
        t,
        "loopback 127.0.0.1, one connection per run, {PAYLOAD}-byte requests and responses, window {WINDOW}"
    );
    let _ = writeln!(
        t,
        "msgnet: msgnet-libp2p Behaviour (one long-lived /msgnet/1.0.0 stream per direction)"
    );
    let _ = writeln!(
        t,
        "baseline: rust-libp2p 0.57 request-response, length-prefixed codec (one stream per request)\n"
    );
    let _ = writeln!(t, "{:<40} {:>12} {:>12} {:>7} {:>8}", "", "msgnet", "baseline", "ratio", "target");
    for p in &r.pairings {
        let _ = writeln!(t, "{} ({})", name(p.transport), p.runtimes.name());
        let q = p.rtt_ratio();
        let _ = writeln!(
            t,
            "{:<40} {:>9.1} µs {:>9.1} µs {:>7.2} {:>8}  {}",
            format!("  round trip, median ({})", r.sizes.round_trips),
            us(p.msgnet.rtt.0),
            us(p.baseline.rtt.0),
            q,
            "≤ 0.50",
            verdict(q <= 0.5)
        );
        let _ = writeln!(
            t,
            "{:<40} {:>9.1} µs {:>9.1} µs {:>7.2}",
            "  round trip, p99",
            us(p.msgnet.rtt.1),
            us(p.baseline.rtt.1),
            p.p99_ratio()
        );
        let q = p.rate_ratio();
        let _ = writeln!(
            t,
            "{:<40} {:>7.1} k/s {:>7.1} k/s {:>7.2} {:>8}  {}",
            format!("  request rate ({} requests)", r.sizes.requests),
            p.msgnet.request_rate / 1e3,
            p.baseline.request_rate / 1e3,
            q,
            "≥ 3.00",
            verdict(q >= 3.0)
        );
        let _ = writeln!(
            t,
            "{:<40} {:>7.1} k/s {:>7.1} k/s {:>7.2}",
            format!("  one-way message rate ({})", r.sizes.messages),
            p.msgnet.message_rate / 1e3,
            p.baseline.message_rate / 1e3,
            p.message_ratio()
        );
    }
    let _ = writeln!(
        t,
        "\n(one-way: msgnet `send`, complete when the peer's SACK covers it; baseline: a request with an empty response)"
    );
    t
}

/// The report as one JSON object.
pub fn json(r: &StreamsReport, cores: usize, cpu: &str, date: &str, quick: bool) -> String {
    let fig = |f: &Figures| {
        format!(
            "{{\"rtt_median_us\":{:.3},\"rtt_p99_us\":{:.3},\"request_rate\":{:.1},\"message_rate\":{:.1}}}",
            us(f.rtt.0),
            us(f.rtt.1),
            f.request_rate,
            f.message_rate
        )
    };
    let pairings: Vec<String> = r
        .pairings
        .iter()
        .map(|p| {
            format!(
                "{{\"transport\":\"{}\",\"runtimes\":\"{}\",\"msgnet\":{},\"baseline\":{},\"ratio_rate\":{:.4},\"ratio_message_rate\":{:.4},\"ratio_rtt\":{:.4},\"ratio_rtt_p99\":{:.4}}}",
                name(p.transport),
                match p.runtimes {
                    Runtimes::PerPeer => "per_peer",
                    Runtimes::PerPeerMultiThread => "per_peer_multi_thread",
                    Runtimes::SharedTasks => "shared_tasks",
                    Runtimes::SharedMainThread => "shared_main_thread",
                },
                fig(&p.msgnet),
                fig(&p.baseline),
                p.rate_ratio(),
                p.message_ratio(),
                p.rtt_ratio(),
                p.p99_ratio()
            )
        })
        .collect();
    let cpu = cpu.replace('\\', "\\\\").replace('"', "\\\"");
    format!(
        "{{\"quick\":{quick},\"cores\":{cores},\"cpu\":\"{cpu}\",\"date\":\"{date}\",\"payload\":{PAYLOAD},\"window\":{WINDOW},\"round_trips\":{},\"requests\":{},\"messages\":{},\"transports\":[{}]}}",
        r.sizes.round_trips,
        r.sizes.requests,
        r.sizes.messages,
        pairings.join(",")
    )
}
