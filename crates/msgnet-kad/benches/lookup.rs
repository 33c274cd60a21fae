//! Lookup latency on a loopback network: msgnet-kad's `Dht` over msgnet UDP sessions beside
//! rust-libp2p 0.57's `libp2p-kad` over QUIC, in the same run.
//!
//! `cargo bench -p msgnet-kad --bench lookup -- [--nodes 100] [--lookups 300] [--quick]
//! [--side both|msgnet|libp2p]`
//!
//! What is measured, identically on both sides:
//!
//! - The network: `--nodes` DHT servers on 127.0.0.1 (msgnet: `msgnet::Host`s listening on
//!   `/ip4/127.0.0.1/udp/0` only, each running a `Dht`; libp2p: `Swarm`s with `kad` and
//!   `identify` listening on `/ip4/127.0.0.1/udp/0/quic-v1`), k = 20, alpha = 3, server
//!   mode, the same ed25519 identities on both sides (so the same key space). Node 0 is
//!   the bootstrap node: every other node learns its address and bootstraps, one after the
//!   other; then every node bootstraps once more so early nodes learn late ones.
//! - One lookup: a *fresh* querier (new identity, new socket, no connection to anyone, in
//!   client mode so it never enters a routing table) knowing the addresses of 3 network
//!   nodes chosen by a seeded RNG, runs FIND_NODE for a random key (a seeded ed25519 peer
//!   id): libp2p-kad's `get_closest_peers`, msgnet's `Dht::find_node`. Timed from the call to
//!   the final result; creating the querier is not timed, connection setup to every peer
//!   it contacts is (a QUIC handshake on libp2p, a Noise IK handshake on msgnet).
//! - Lookup `j` uses the same key and the same 3 known nodes on both sides; the two sides'
//!   lookups alternate (msgnet first on even `j`, libp2p first on odd) so machine load
//!   drifts affect both alike.
//! - Reported: median and p99 (nearest rank) of the lookup times, the mean number of the
//!   true k closest network nodes each lookup returned (a correctness check: both sides
//!   must do the same work), and the ratios msgnet / libp2p.
//!
//! Both sides run on one tokio multi-thread runtime with 2 worker threads.

#[path = "lookup/libp2p_net.rs"]
mod libp2p_net;
#[path = "lookup/msgnet_net.rs"]
mod msgnet_net;

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use libp2p::identity::Keypair;
use libp2p::kad::KBucketKey;
use libp2p::{Multiaddr, PeerId};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Bucket size and replication factor, both sides.
pub const K: usize = 20;
/// Lookup parallelism, both sides.
pub const ALPHA: usize = 3;
/// Longest wait for any one step (a listen address, a bootstrap, a lookup).
pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);
/// Network nodes a fresh querier knows.
const KNOWN: usize = 3;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Both,
    Msgnet,
    Libp2p,
}

struct Args {
    nodes: usize,
    lookups: usize,
    side: Side,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        nodes: 100,
        lookups: 300,
        side: Side::Both,
    };
    let mut lookups = None;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--bench" => {} // passed by `cargo bench`
            "--nodes" => args.nodes = value("--nodes")?.parse().context("--nodes")?,
            "--lookups" => lookups = Some(value("--lookups")?.parse().context("--lookups")?),
            "--quick" => args.lookups = 30,
            "--side" => {
                args.side = match value("--side")?.as_str() {
                    "both" => Side::Both,
                    "msgnet" => Side::Msgnet,
                    "libp2p" => Side::Libp2p,
                    other => bail!("--side: both, msgnet or libp2p, not {other}"),
                }
            }
            other => bail!(
                "unknown argument {other}; usage: lookup [--nodes N] [--lookups N] [--quick] [--side both|msgnet|libp2p]"
            ),
        }
    }
    if let Some(n) = lookups {
        args.lookups = n;
    }
    if args.nodes < 2 * KNOWN || args.lookups == 0 {
        bail!("need at least {} nodes and one lookup", 2 * KNOWN);
    }
    Ok(args)
}

/// What the benchmark needs of a DHT node, on either side.
trait DhtNode: Sized {
    async fn start(keypair: Keypair) -> anyhow::Result<Self>;
    fn id(&self) -> PeerId;
    fn addr(&self) -> Multiaddr;
    async fn add_address(&self, peer: PeerId, addr: Multiaddr) -> anyhow::Result<()>;
    async fn bootstrap(&self) -> anyhow::Result<()>;
    async fn table_size(&self) -> anyhow::Result<usize>;
    async fn stop(self);
    /// Diagnostic counters, see `msgnet_net::Node::diag` (zeros on libp2p).
    async fn diag(&self) -> [u64; 7] {
        [0; 7]
    }
    /// One timed lookup from a fresh querier.
    async fn lookup(known: &[(PeerId, Multiaddr)], target: PeerId) -> anyhow::Result<Lookup>;
}

impl DhtNode for libp2p_net::Node {
    async fn start(keypair: Keypair) -> anyhow::Result<Self> {
        libp2p_net::Node::start(keypair).await
    }
    fn id(&self) -> PeerId {
        self.id
    }
    fn addr(&self) -> Multiaddr {
        self.addr.clone()
    }
    async fn add_address(&self, peer: PeerId, addr: Multiaddr) -> anyhow::Result<()> {
        libp2p_net::Node::add_address(self, peer, addr).await
    }
    async fn bootstrap(&self) -> anyhow::Result<()> {
        libp2p_net::Node::bootstrap(self).await
    }
    async fn table_size(&self) -> anyhow::Result<usize> {
        libp2p_net::Node::table_size(self).await
    }
    async fn stop(self) {
        libp2p_net::Node::stop(self).await
    }
    async fn lookup(known: &[(PeerId, Multiaddr)], target: PeerId) -> anyhow::Result<Lookup> {
        libp2p_net::lookup(known, target).await
    }
}

impl DhtNode for msgnet_net::Node {
    async fn start(keypair: Keypair) -> anyhow::Result<Self> {
        msgnet_net::Node::start(keypair).await
    }
    fn id(&self) -> PeerId {
        self.id
    }
    fn addr(&self) -> Multiaddr {
        self.addr.clone()
    }
    async fn add_address(&self, peer: PeerId, addr: Multiaddr) -> anyhow::Result<()> {
        msgnet_net::Node::add_address(self, peer, addr).await
    }
    async fn bootstrap(&self) -> anyhow::Result<()> {
        msgnet_net::Node::bootstrap(self).await
    }
    async fn table_size(&self) -> anyhow::Result<usize> {
        Ok(msgnet_net::Node::table_size(self).await)
    }
    async fn stop(self) {
        msgnet_net::Node::stop(self).await
    }
    async fn diag(&self) -> [u64; 7] {
        msgnet_net::Node::diag(self).await
    }
    async fn lookup(known: &[(PeerId, Multiaddr)], target: PeerId) -> anyhow::Result<Lookup> {
        msgnet_net::lookup(known, target).await
    }
}

/// The seeded ed25519 identity number `i` of stream `stream`.
fn keypair(stream: u64, i: usize) -> Keypair {
    let mut rng = ChaCha8Rng::seed_from_u64(stream.wrapping_mul(1_000_003) ^ i as u64);
    let mut secret = [0u8; 32];
    rng.fill(&mut secret);
    #[allow(clippy::unwrap_used)] // any 32 bytes are an ed25519 secret key
    Keypair::ed25519_from_bytes(secret).unwrap()
}

/// A built network: its nodes and how long building took.
struct Net<N> {
    nodes: Vec<N>,
    built_in: Duration,
}

impl<N: DhtNode> Net<N> {
    async fn build(n: usize) -> anyhow::Result<Net<N>> {
        let t0 = Instant::now();
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            nodes.push(N::start(keypair(1, i)).await.context("starting a node")?);
        }
        let (id0, addr0) = (nodes[0].id(), nodes[0].addr());
        let show = std::env::var_os("LOOKUP_DIAG").is_some();
        for (i, node) in nodes[1..].iter().enumerate() {
            node.add_address(id0, addr0.clone()).await?;
            node.bootstrap().await.context("first bootstrap")?;
            if show && i % 10 == 9 {
                diag(&nodes).await;
                println!("diag: {} nodes joined at {:.1?}", i + 2, t0.elapsed());
            }
        }
        for node in &nodes {
            node.bootstrap().await.context("second bootstrap")?;
        }
        Ok(Net {
            nodes,
            built_in: t0.elapsed(),
        })
    }

    async fn table_sizes(&self) -> anyhow::Result<(usize, usize)> {
        let mut sizes = Vec::with_capacity(self.nodes.len());
        for node in &self.nodes {
            sizes.push(node.table_size().await?);
        }
        sizes.sort_unstable();
        Ok((sizes[0], sizes[(sizes.len() - 1) / 2]))
    }

    fn known(&self, picks: &[usize]) -> Vec<(PeerId, Multiaddr)> {
        picks
            .iter()
            .map(|&i| (self.nodes[i].id(), self.nodes[i].addr()))
            .collect()
    }

    async fn stop(self) {
        for node in self.nodes {
            node.stop().await;
        }
    }
}

/// One lookup's outcome.
pub struct Lookup {
    /// From the lookup call to its final result.
    pub time: Duration,
    /// The peers returned, closest first.
    pub found: Vec<PeerId>,
    /// Requests the lookup sent.
    pub requests: u32,
    /// Of those, the ones that failed or timed out.
    pub failures: u32,
}

/// One side's results.
#[derive(Default)]
struct Results {
    times: Vec<Duration>,
    correct: usize,
    requests: u64,
    failures: u64,
}

impl Results {
    fn record(&mut self, l: Lookup, truth: &[PeerId]) {
        self.times.push(l.time);
        self.correct += l.found.iter().take(K).filter(|p| truth.contains(p)).count();
        self.requests += u64::from(l.requests);
        self.failures += u64::from(l.failures);
    }

    /// Median and p99, nearest rank.
    fn percentiles(&self) -> (Duration, Duration) {
        let mut v = self.times.clone();
        v.sort_unstable();
        let rank = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        (rank(0.5), rank(0.99))
    }
}

/// The true k closest of `ids` to `target`.
fn k_closest(ids: &[PeerId], target: PeerId) -> Vec<PeerId> {
    let t = KBucketKey::from(target);
    let mut v: Vec<PeerId> = ids.to_vec();
    v.sort_by_key(|p| KBucketKey::from(*p).distance(&t));
    v.truncate(K);
    v
}

/// Prints, for 3 idle seconds after the build, what the msgnet nodes do (`LOOKUP_DIAG=1`).
async fn diag<N: DhtNode>(nodes: &[N]) {
    let sum = |v: Vec<[u64; 7]>| {
        v.iter().fold([0u64; 7], |mut a, x| {
            a.iter_mut().zip(x).for_each(|(a, x)| *a += x);
            a
        })
    };
    let mut prev = None;
    for _ in 0..2 {
        let mut v = Vec::with_capacity(nodes.len());
        for n in nodes {
            v.push(n.diag().await);
        }
        let max_peers = v.iter().map(|x| x[4]).max().unwrap_or(0);
        let s = sum(v);
        if let Some(p) = prev {
            let p: [u64; 7] = p;
            println!(
                "diag/s: tx {} rx {} retrans {} delivered {}; now: sessions {} (max/host {max_peers}) dht in flight {} queries {}",
                s[0] - p[0], s[1] - p[1], s[2] - p[2], s[3] - p[3], s[4], s[5], s[6]
            );
        }
        prev = Some(s);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let want_msgnet = args.side != Side::Libp2p;
    let want_libp2p = args.side != Side::Msgnet;
    println!(
        "msgnet-kad lookup bench: {} nodes on 127.0.0.1, {} lookups, k={K} alpha={ALPHA}, a fresh querier per lookup",
        args.nodes, args.lookups
    );
    let msgnet = if want_msgnet {
        let net = Net::<msgnet_net::Node>::build(args.nodes).await?;
        if std::env::var_os("LOOKUP_DIAG").is_some() {
            diag(&net.nodes).await;
        }
        let (min, med) = net.table_sizes().await?;
        println!(
            "msgnet network (UDP) built and bootstrapped in {:.1?}; routing tables min {min}, median {med}",
            net.built_in
        );
        Some(net)
    } else {
        None
    };
    let libp2p = if want_libp2p {
        let net = Net::<libp2p_net::Node>::build(args.nodes).await?;
        let (min, med) = net.table_sizes().await?;
        println!(
            "libp2p network (QUIC) built and bootstrapped in {:.1?}; routing tables min {min}, median {med}",
            net.built_in
        );
        Some(net)
    } else {
        None
    };
    let ids: Vec<PeerId> = (0..args.nodes)
        .map(|i| keypair(1, i).public().to_peer_id())
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let (mut m, mut l) = (Results::default(), Results::default());
    for j in 0..args.lookups {
        let target = keypair(2, j).public().to_peer_id();
        let truth = k_closest(&ids, target);
        let mut picks = Vec::with_capacity(KNOWN);
        while picks.len() < KNOWN {
            let i = rng.gen_range(0..args.nodes);
            if !picks.contains(&i) {
                picks.push(i);
            }
        }
        for turn in 0..2 {
            let msgnet_turn = (turn == 0) == (j % 2 == 0);
            if msgnet_turn {
                if let Some(net) = &msgnet {
                    let l = msgnet_net::Node::lookup(&net.known(&picks), target)
                        .await
                        .with_context(|| format!("msgnet lookup {j}"))?;
                    m.record(l, &truth);
                }
            } else if let Some(net) = &libp2p {
                let lookup = libp2p_net::Node::lookup(&net.known(&picks), target)
                    .await
                    .with_context(|| format!("libp2p lookup {j}"))?;
                l.record(lookup, &truth);
            }
        }
    }
    let n = args.lookups as f64;
    println!();
    println!(
        "{:<28}{:>12}{:>12}{:>22}{:>18}",
        "", "median", "p99", "true k-closest found", "requests/failed"
    );
    let mut figures = Vec::new();
    for (name, r, on) in [
        ("msgnet Dht (UDP)", &m, want_msgnet),
        ("rust-libp2p kad (QUIC)", &l, want_libp2p),
    ] {
        if on {
            let (med, p99) = r.percentiles();
            println!(
                "{name:<28}{:>12}{:>12}{:>17.1} / {K}{:>12.1} / {:.2}",
                ms(med),
                ms(p99),
                r.correct as f64 / n,
                r.requests as f64 / n,
                r.failures as f64 / n
            );
            figures.push((med, p99));
        }
    }
    if let [(mm, mp), (lm, lp)] = figures[..] {
        let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
        let (rm, rp) = (ratio(mm, lm), ratio(mp, lp));
        let verdict = |r: f64| if r <= 0.5 { "ok" } else { "MISSED" };
        println!(
            "{:<28}{rm:>12.2}{rp:>12.2}   target <= 0.50: median {}, p99 {}",
            "ratio msgnet / libp2p",
            verdict(rm),
            verdict(rp)
        );
    }
    if let Some(net) = msgnet {
        net.stop().await;
    }
    if let Some(net) = libp2p {
        net.stop().await;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}
