//! `msgnet demo`: four nodes in one process (alice, bob, carol, dave on 127.0.0.1),
//! walking through what msgnet does, in short sections.
//!
//! The demo is a list of [`Section`]s run in order over one [`Demo`]; a new feature adds
//! a section function and one line to [`SECTIONS`].

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use msgnet::{Host, Multiaddr, PeerId, SendError};
use tokio::sync::mpsc;

use crate::output::dialable;

/// `println!` that ignores a closed stdout (`msgnet demo | head` must not panic).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// Arguments of `msgnet demo` (none yet).
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Replies to a request with a greeting naming both sides.
const HELLO: &str = "/demo/hello/1.0.0";
/// A message passed on around the ring, each node appending its name.
const RING: &str = "/demo/ring/1.0.0";
/// Messages counted by the receiver.
const COUNT: &str = "/demo/count/1.0.0";
/// Nobody handles this one.
const NOPE: &str = "/demo/nope/1.0.0";
/// Answers with the length and a checksum of what it got.
const BIG: &str = "/demo/big/1.0.0";
/// Ordered messages, checked for order by the receiver.
const ORDERED: &str = "/demo/ordered/1.0.0";
/// Timeout of every request in the demo.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Messages each node sends to its successor in the ring burst.
const BURST: usize = 250;

/// One node of the demo.
pub struct Node {
    /// Its name.
    pub name: &'static str,
    /// Its host.
    pub host: Host,
    /// Its dialable address, with `/p2p/<id>`.
    pub addr: Multiaddr,
    /// Messages received on [`COUNT`].
    pub counted: Arc<AtomicU64>,
}

/// The demo's state, shared by all sections.
pub struct Demo {
    /// alice, bob, carol, dave.
    pub nodes: Vec<Node>,
    /// Trails of ring messages that came back to their origin.
    ring_done: mpsc::Receiver<String>,
}

/// What a section function returns.
pub type SectionFuture<'a> = Pin<Box<dyn Future<Output = anyhow::Result<()>> + 'a>>;

/// One section of the demo: a title and the code that prints it.
pub struct Section {
    /// Printed as the section header.
    pub title: &'static str,
    /// Runs the section.
    pub run: for<'a> fn(&'a mut Demo) -> SectionFuture<'a>,
}

/// The sections, in order.
pub const SECTIONS: &[Section] = &[
    Section {
        title: "identities and addresses",
        run: identities,
    },
    Section {
        title: "a cold request: alice -> bob, one round trip",
        run: cold_request,
    },
    Section {
        title: "messages around the ring",
        run: ring,
    },
    Section {
        title: "request fan-out: alice -> everyone",
        run: fan_out,
    },
    Section {
        title: "a protocol nobody handles",
        run: unsupported,
    },
    Section {
        title: "large messages and ordered delivery",
        run: large_and_ordered,
    },
    Section {
        title: "one peer on three transports: racing, consolidation, fallback",
        run: transports,
    },
    Section {
        title: "a small DHT: put/get and provide/find-providers",
        run: dht,
    },
    Section {
        title: "stats per node",
        run: stats,
    },
];

/// Start the nodes, run every section, close the nodes.
pub async fn run(_args: Args) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mut demo = Demo::start().await?;
    for (i, section) in SECTIONS.iter().enumerate() {
        say!("\n== {}. {} ==", i + 1, section.title);
        (section.run)(&mut demo)
            .await
            .with_context(|| format!("section {:?}", section.title))?;
    }
    for node in &demo.nodes {
        node.host.close().await;
    }
    say!(
        "\ndemo done in {:.0} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    Ok(ExitCode::SUCCESS)
}

impl Demo {
    /// Start four hosts on 127.0.0.1, teach each the others' addresses, register the
    /// demo's handlers.
    pub async fn start() -> anyhow::Result<Self> {
        let mut nodes = Vec::new();
        for name in ["alice", "bob", "carol", "dave"] {
            let host = Host::builder(msgnet::Keypair::generate_ed25519())
                .listen("/ip4/127.0.0.1/udp/0".parse().context("address")?)
                .build()
                .await?;
            let listen = host
                .listen_addrs()
                .into_iter()
                .next()
                .ok_or_else(|| anyhow!("{name} has no address"))?;
            let addr = dialable(&listen, host.local_peer_id());
            nodes.push(Node {
                name,
                host,
                addr,
                counted: Arc::default(),
            });
        }
        for a in &nodes {
            for b in &nodes {
                if a.name != b.name {
                    let (peer, addr) = Host::dial_info(&b.addr)?;
                    a.host.add_address(peer, addr)?;
                }
            }
        }
        let names: Arc<HashMap<PeerId, &'static str>> = Arc::new(
            nodes
                .iter()
                .map(|n| (n.host.local_peer_id(), n.name))
                .collect(),
        );
        let (done_tx, ring_done) = mpsc::channel(16);
        for (i, node) in nodes.iter().enumerate() {
            let next = nodes[(i + 1) % nodes.len()].host.local_peer_id();
            spawn_handlers(node, next, names.clone(), done_tx.clone())?;
        }
        Ok(Self { nodes, ring_done })
    }

    fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or(&self.nodes[0])
    }
}

/// The handlers of one node: HELLO answers, RING passes on to `next`, COUNT counts.
fn spawn_handlers(
    node: &Node,
    next: PeerId,
    names: Arc<HashMap<PeerId, &'static str>>,
    done: mpsc::Sender<String>,
) -> anyhow::Result<()> {
    let me = node.name;
    let name = move |p: &PeerId| names.get(p).copied().unwrap_or("stranger");

    let mut hello = node.host.handle(HELLO)?;
    let n = name.clone();
    tokio::spawn(async move {
        while let Some(msg) = hello.recv().await {
            let reply = format!("hello {}, {me} here", n(&msg.peer));
            let _ = msg.respond(reply);
        }
    });

    let mut ring = node.host.handle(RING)?;
    let host = node.host.clone();
    tokio::spawn(async move {
        while let Some(msg) = ring.recv().await {
            let trail = format!("{} -> {me}", String::from_utf8_lossy(&msg.payload));
            say!(
                "  {me:<5} got it from {:<5}  trail: {trail}",
                name(&msg.peer)
            );
            if trail.starts_with(me) {
                let _ = done.send(trail).await;
            } else if let Err(e) = host.send(next, RING, trail).await {
                say!("  {me:<5} could not pass it on: {e}");
            }
        }
    });

    let mut count = node.host.handle(COUNT)?;
    let counted = node.counted.clone();
    tokio::spawn(async move {
        while count.recv().await.is_some() {
            counted.fetch_add(1, Ordering::Relaxed);
        }
    });
    Ok(())
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn identities(d: &mut Demo) -> SectionFuture<'_> {
    Box::pin(async move {
        for n in &d.nodes {
            say!("  {:<5} {}", n.name, n.addr);
        }
        say!("  each node knows the others' addresses; no session exists yet");
        Ok(())
    })
}

fn cold_request(d: &mut Demo) -> SectionFuture<'_> {
    Box::pin(async move {
        let (alice, bob) = (&d.node("alice").host, d.node("bob").host.local_peer_id());
        let start = Instant::now();
        let reply = alice.request(bob, HELLO, "hi bob", TIMEOUT).await?;
        let cold = start.elapsed();
        say!("  alice asks bob on {HELLO} (no session yet)");
        say!(
            "  reply {:?} after {}, handshake included",
            String::from_utf8_lossy(&reply),
            ms(cold)
        );
        for s in alice.sessions(bob).await {
            let srtt = s.srtt.map(ms).unwrap_or_else(|| "n/a".into());
            say!(
                "  session {:?}: {} handshake, alice {}, remote {}, srtt {srtt}",
                s.id,
                s.pattern,
                if s.initiator {
                    "initiated"
                } else {
                    "responded"
                },
                s.remote
            );
        }
        let start = Instant::now();
        alice.request(bob, HELLO, "again", TIMEOUT).await?;
        say!(
            "  the same request on the warm session: {}",
            ms(start.elapsed())
        );
        Ok(())
    })
}

fn ring(d: &mut Demo) -> SectionFuture<'_> {
    Box::pin(async move {
        let alice = &d.node("alice").host;
        let bob = d.node("bob").host.local_peer_id();
        let start = Instant::now();
        alice.send(bob, RING, "alice").await?;
        let trail = tokio::time::timeout(TIMEOUT, d.ring_done.recv())
            .await
            .map_err(|_| anyhow!("the ring message did not come back"))?
            .ok_or_else(|| anyhow!("ring handler gone"))?;
        say!(
            "  one lap, {} hops, back at alice in {}: {trail}",
            d.nodes.len(),
            ms(start.elapsed())
        );

        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for (i, node) in d.nodes.iter().enumerate() {
            let next = d.nodes[(i + 1) % d.nodes.len()].host.local_peer_id();
            for k in 0..BURST {
                let host = node.host.clone();
                tasks.spawn(async move { host.send(next, COUNT, format!("message {k}")).await });
            }
        }
        let mut failed = 0;
        while let Some(r) = tasks.join_next().await {
            if !matches!(r, Ok(Ok(()))) {
                failed += 1;
            }
        }
        let total = BURST * d.nodes.len();
        say!(
            "  then {BURST} reliable messages from every node to the next at once: {} of {total} acknowledged in {}",
            total - failed,
            ms(start.elapsed())
        );
        let counts: Vec<String> = d
            .nodes
            .iter()
            .map(|n| format!("{} {}", n.name, n.counted.load(Ordering::Relaxed)))
            .collect();
        say!("  received: {}", counts.join(", "));
        Ok(())
    })
}

fn fan_out(d: &mut Demo) -> SectionFuture<'_> {
    Box::pin(async move {
        let alice = d.node("alice").host.clone();
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for node in d.nodes.iter().filter(|n| n.name != "alice") {
            let (alice, peer, name) = (alice.clone(), node.host.local_peer_id(), node.name);
            let warm = !alice.sessions(peer).await.is_empty();
            tasks.spawn(async move {
                let t = Instant::now();
                let r = alice.request(peer, HELLO, "hello everyone", TIMEOUT).await;
                (name, warm, r, t.elapsed())
            });
        }
        let mut replies = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            replies.push(joined?);
        }
        replies.sort_by_key(|r| r.0);
        for (name, warm, r, t) in replies {
            let session = if warm { "warm" } else { "cold" };
            match r {
                Ok(reply) => say!(
                    "  {name:<5} ({session}) {:?} in {}",
                    String::from_utf8_lossy(&reply),
                    ms(t)
                ),
                Err(e) => say!("  {name:<5} ({session}) failed: {e}"),
            }
        }
        say!(
            "  all three answered in {} (requests in parallel)",
            ms(start.elapsed())
        );
        Ok(())
    })
}

fn unsupported(d: &mut Demo) -> SectionFuture<'_> {
    Box::pin(async move {
        let alice = &d.node("alice").host;
        let bob = d.node("bob").host.local_peer_id();
        let start = Instant::now();
        match alice.send(bob, NOPE, "anyone?").await {
            Err(e @ SendError::UnsupportedProtocol(_)) => {
                say!(
                    "  alice.send(bob, {NOPE:?}) -> Err({e:?}) after {}",
                    ms(start.elapsed())
                );
                say!("  error message: {e}");
            }
            Err(e) => return Err(anyhow!("expected UnsupportedProtocol, got {e:?}")),
            Ok(()) => return Err(anyhow!("a send on an unhandled protocol succeeded")),
        }
        Ok(())
    })
}

/// FNV-1a, to compare a large payload on both sides.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

fn large_and_ordered(d: &mut Demo) -> SectionFuture<'_> {
    Box::pin(async move {
        let alice = d.node("alice").host.clone();
        let carol = d.node("carol").host.clone();
        let dave = d.node("dave").host.clone();
        let mut big = carol.handle(BIG)?;
        tokio::spawn(async move {
            while let Some(m) = big.recv().await {
                let reply = format!("{} bytes, checksum {:016x}", m.payload.len(), fnv(&m.payload));
                let _ = m.respond(reply);
            }
        });
        let payload: Vec<u8> = (0..3u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
        let expected = format!("{} bytes, checksum {:016x}", payload.len(), fnv(&payload));
        let started = Instant::now();
        let reply = alice
            .request(carol.local_peer_id(), BIG, payload, Duration::from_secs(30))
            .await?;
        say!(
            "  alice -> carol: a 3 MiB request, sent as fragments and reassembled; carol saw {} in {}",
            String::from_utf8_lossy(&reply),
            ms(started.elapsed())
        );
        say!(
            "  checksum {}",
            if reply.as_ref() == expected.as_bytes() { "matches alice's" } else { "DIFFERS" }
        );
        if let Some(s) = alice.sessions(carol.local_peer_id()).await.first() {
            say!("  session: path MTU {} bytes (discovered), congestion window {} bytes", s.mtu, s.cwnd);
        }
        let mut ordered = dave.handle(ORDERED)?;
        let n = 200u32;
        let collector = tokio::spawn(async move {
            let mut got = Vec::new();
            while got.len() < n as usize {
                let Some(m) = ordered.recv().await else { break };
                let mut b = [0u8; 4];
                b.copy_from_slice(m.payload.get(..4).unwrap_or(&[0; 4]));
                got.push(u32::from_be_bytes(b));
            }
            got
        });
        let opts = msgnet::SendOptions { delivery: msgnet::Delivery::Ordered, ..msgnet::SendOptions::default() };
        // Issued in order (each send is handed to the host when called), awaited together.
        let sends: Vec<_> = (0..n)
            .map(|i| alice.send_with(dave.local_peer_id(), ORDERED, i.to_be_bytes().to_vec(), opts))
            .collect();
        futures::future::try_join_all(sends).await?;
        let got = collector.await?;
        let in_order = got.len() == n as usize && got.windows(2).all(|w| w[0] < w[1]);
        say!(
            "  alice -> dave: {n} Ordered messages sent at once; dave received {} {}",
            got.len(),
            if in_order { "in order" } else { "OUT OF ORDER" }
        );
        Ok(())
    })
}

/// Nodes of the demo's DHT.
/// The transports section's protocol: requests answered with the payload.
const ECHO3: &str = "/demo/echo3/1.0.0";

/// erin knows frank on UDP, TCP and QUIC: the first request races over all three, both
/// settle on one, and when frank stops listening there, the next requests go over another.
fn transports(_d: &mut Demo) -> SectionFuture<'_> {
    Box::pin(async move {
        use msgnet::Transport;
        let mut hosts = Vec::new();
        for _ in 0..2 {
            let mut b = Host::builder(msgnet::Keypair::generate_ed25519());
            for a in ["/ip4/127.0.0.1/udp/0", "/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"] {
                b = b.listen(a.parse().context("address")?);
            }
            hosts.push(b.build().await?);
        }
        let (erin, frank) = (&hosts[0], &hosts[1]);
        let mut echo = frank.handle(ECHO3)?;
        let served = Arc::new(AtomicU64::new(0));
        let count = served.clone();
        tokio::spawn(async move {
            while let Some(msg) = echo.recv().await {
                count.fetch_add(1, Ordering::Relaxed);
                let reply = msg.payload.clone();
                let _ = msg.respond(reply);
            }
        });
        let names: Vec<String> = frank
            .listen_addrs()
            .iter()
            .map(|a| Transport::of(a).map_or("?", Transport::as_str).to_owned())
            .collect();
        for addr in frank.listen_addrs() {
            erin.add_address(frank.local_peer_id(), addr)?;
        }
        say!("erin knows frank on {}", names.join(", "));
        let peer = frank.local_peer_id();
        erin.request(peer, ECHO3, "first", TIMEOUT * 5).await?;
        let (es, fs) = (erin.transport_stats().await, frank.transport_stats().await);
        let raced: Vec<String> = [Transport::Udp, Transport::Quic, Transport::Tcp]
            .iter()
            .map(|t| format!("{} {}", t.as_str(), es.raced_on(*t)))
            .collect();
        let chosen = erin.consolidated_transport(peer).await;
        say!(
            "first request raced: copies {}; frank handled it {} time(s), dropped {} duplicate(s)",
            raced.join(", "),
            served.load(Ordering::Relaxed),
            fs.duplicates
        );
        say!("both settled on {}", chosen.map_or("nothing", Transport::as_str));
        for i in 0..20 {
            erin.request(peer, ECHO3, format!("more {i}"), TIMEOUT * 5).await?;
        }
        let after = erin.transport_stats().await;
        say!(
            "20 more requests: sent on udp {}, quic {}, tcp {} (all copies counted)",
            after.sent_on(Transport::Udp),
            after.sent_on(Transport::Quic),
            after.sent_on(Transport::Tcp)
        );
        if let Some(t) = chosen {
            if let Some(addr) = frank.listen_addrs().into_iter().find(|a| Transport::of(a) == Some(t)) {
                frank.remove_listener(&addr).await?;
                say!("frank stops listening on {}", t.as_str());
                for i in 0..20 {
                    erin.request(peer, ECHO3, format!("after {i}"), TIMEOUT * 5).await?;
                }
                let now_on = erin.consolidated_transport(peer).await;
                say!(
                    "20 requests after that all answered; now on {}; frank handled {} in all",
                    now_on.map_or("nothing", Transport::as_str),
                    served.load(Ordering::Relaxed)
                );
            }
        }
        for h in &hosts {
            h.close().await;
        }
        Ok(())
    })
}

const DHT_NODES: usize = 20;

/// A DHT of [`DHT_NODES`] fresh hosts (not the four demo nodes): join, put/get,
/// provide/find-providers, with each lookup's rounds, requests and time.
fn dht(_d: &mut Demo) -> SectionFuture<'_> {
    Box::pin(async move {
        use msgnet_kad::host::Dht;
        use msgnet_kad::{provider_key, KadConfig, QueryStats, Record};

        let figures = |s: &QueryStats| {
            format!(
                "{} round(s), {} requests, {}",
                s.rounds,
                s.requests,
                ms(s.duration)
            )
        };
        let t0 = Instant::now();
        let mut hosts = Vec::new();
        let mut dhts = Vec::new();
        for _ in 0..DHT_NODES {
            let host = Host::builder(msgnet::Keypair::generate_ed25519())
                .listen("/ip4/127.0.0.1/udp/0".parse().context("address")?)
                .build()
                .await?;
            dhts.push(Dht::new(&host, KadConfig::default())?);
            hosts.push(host);
        }
        // Nodes 1-4 join through node 0, the others through one of those, concurrently.
        let join = |i: usize, via: usize| {
            let (dht, via) = (dhts[i].clone(), hosts[via].clone());
            async move {
                dht.add_address(via.local_peer_id(), via.listen_addrs()[0].clone())
                    .await?;
                dht.bootstrap().await
            }
        };
        for i in 1..5 {
            join(i, 0).await?;
        }
        futures::future::try_join_all((5..DHT_NODES).map(|i| join(i, i % 5))).await?;
        let mut sizes = Vec::new();
        for d in &dhts {
            sizes.push(d.inspect(|k| k.routing_table().len()).await?);
        }
        sizes.sort_unstable();
        say!(
            "  {DHT_NODES} nodes joined in {}; routing tables hold {}-{} peers",
            ms(t0.elapsed()),
            sizes[0],
            sizes[sizes.len() - 1]
        );

        let key = b"/demo/greeting".to_vec();
        let put = dhts[3]
            .put_value(Record::new(key.clone(), b"hello, DHT".to_vec()), 1)
            .await?;
        say!(
            "  node 3 put /demo/greeting: stored on {} peers ({})",
            put.stored,
            figures(&put.stats)
        );
        let got = dhts[17].get_value(key, 1).await?;
        say!(
            "  node 17 get /demo/greeting: {:?} ({})",
            String::from_utf8_lossy(&got.record.value),
            figures(&got.stats)
        );

        let cid: cid::Cid = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"
            .parse()
            .context("cid")?;
        let provided = dhts[5].start_providing(provider_key(&cid)).await?;
        say!(
            "  node 5 provides {cid}: announced to {} peers ({})",
            provided.acked,
            figures(&provided.stats)
        );
        let found = dhts[11].get_providers(provider_key(&cid)).await?;
        let is_5 = found
            .peers
            .iter()
            .any(|p| p.peer == hosts[5].local_peer_id());
        anyhow::ensure!(is_5, "node 5 is not among the providers found");
        say!(
            "  node 11 find-providers: {} provider(s), node 5 among them ({})",
            found.peers.len(),
            figures(&found.stats)
        );
        for d in &dhts {
            d.close().await;
        }
        for h in &hosts {
            h.close().await;
        }
        Ok(())
    })
}

fn stats(d: &mut Demo) -> SectionFuture<'_> {
    Box::pin(async move {
        say!(
            "  {:<5} {:>7} {:>9} {:>7} {:>9} {:>9} {:>10} {:>7}  drops",
            "node",
            "rx pkts",
            "rx bytes",
            "tx pkts",
            "tx bytes",
            "delivered",
            "handshakes",
            "retrans"
        );
        for n in &d.nodes {
            let s = n.host.stats().await;
            let drops: Vec<String> = s
                .drops()
                .map(|(reason, count)| format!("{reason} {count}"))
                .collect();
            say!(
                "  {:<5} {:>7} {:>9} {:>7} {:>9} {:>9} {:>10} {:>7}  {}",
                n.name,
                s.rx_datagrams,
                s.rx_bytes,
                s.tx_datagrams,
                s.tx_bytes,
                s.messages_delivered,
                s.handshakes_completed,
                s.retransmissions,
                if drops.is_empty() {
                    "none".to_string()
                } else {
                    drops.join(", ")
                }
            );
        }
        Ok(())
    })
}
