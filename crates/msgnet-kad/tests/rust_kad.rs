//! Interop with rust-libp2p 0.57's `libp2p-kad`: msgnet's `Dht` on a `msgnet::Host` and
//! ordinary rust-libp2p Kademlia nodes (kad in server mode, identify) on 127.0.0.1, in
//! both directions, over libp2p QUIC and TCP connections (msgnet's stream bridge speaks
//! `/ipfs/kad/1.0.0` to them).
//!
//! The libp2p side: `L1` (listens on TCP and QUIC) knows three more libp2p-kad servers
//! `P1..P3` (QUIC). The msgnet side: `M1`, a Host listening on UDP, TCP and QUIC running a
//! `Dht` in server mode, joined through `L1`.
//!
//! - msgnet → libp2p: `M1` provides a CID; `L1` stores the ADD_PROVIDER and its
//!   `get_providers` finds `M1`; a fresh libp2p-kad node `L2` that knows only `M1` (over
//!   TCP) finds `M1` as provider and gets `L1` among `M1`'s answer to FIND_NODE.
//! - libp2p → msgnet: `L1` provides another CID; a fresh msgnet node `M2` (client mode)
//!   that knows only `L1` finds `L1` as provider, and its FIND_NODE lookup returns the
//!   peers `L1` knows (`P1..P3`), each reached over QUIC.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use cid::Cid;
use futures::StreamExt;
use libp2p::kad::{self, store::MemoryStore};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identify, noise, tcp, yamux, Multiaddr, PeerId, Swarm, SwarmBuilder};
use msgnet::{Host, Keypair};
use msgnet_kad::host::Dht;
use msgnet_kad::{provider_key, KadConfig, Mode};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

/// Longest wait for any one step; generous for a loaded CI machine.
const STEP: Duration = Duration::from_secs(60);

#[derive(NetworkBehaviour)]
struct Behaviour {
    kad: kad::Behaviour<MemoryStore>,
    identify: identify::Behaviour,
}

type Reply<T> = oneshot::Sender<anyhow::Result<T>>;

enum Cmd {
    AddAddress(PeerId, Multiaddr),
    Bootstrap(Reply<()>),
    StartProviding(kad::RecordKey, Reply<()>),
    GetProviders(kad::RecordKey, Reply<HashSet<PeerId>>),
    GetClosestPeers(Vec<u8>, Reply<Vec<PeerId>>),
    LocalProviders(kad::RecordKey, oneshot::Sender<Vec<PeerId>>),
    Table(oneshot::Sender<Vec<PeerId>>),
}

enum Pending {
    Unit(Reply<()>),
    Providers(HashSet<PeerId>, Reply<HashSet<PeerId>>),
    Closest(Reply<Vec<PeerId>>),
}

/// A rust-libp2p node with libp2p-kad and identify, run by its own task.
struct LNode {
    id: PeerId,
    addrs: Vec<Multiaddr>,
    tx: mpsc::Sender<Cmd>,
}

impl LNode {
    async fn start(mode: kad::Mode, listen: &[&str]) -> anyhow::Result<LNode> {
        let mut swarm = SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .context("tcp")?
            .with_quic()
            .with_behaviour(|key| {
                let id = key.public().to_peer_id();
                Behaviour {
                    kad: kad::Behaviour::with_config(
                        id,
                        MemoryStore::new(id),
                        kad::Config::new(kad::PROTOCOL_NAME),
                    ),
                    identify: identify::Behaviour::new(identify::Config::new(
                        "/msgnet-interop/1".into(),
                        key.public(),
                    )),
                }
            })
            .map_err(|e| anyhow!("behaviour: {e:?}"))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
            .build();
        swarm.behaviour_mut().kad.set_mode(Some(mode));
        for l in listen {
            swarm.listen_on(l.parse()?).context("listen")?;
        }
        let mut addrs = Vec::new();
        while addrs.len() < listen.len() {
            match tokio::time::timeout(STEP, swarm.select_next_some())
                .await
                .context("no listen address")?
            {
                SwarmEvent::NewListenAddr { address, .. } => addrs.push(address),
                SwarmEvent::ListenerError { error, .. } => bail!("listener: {error}"),
                _ => {}
            }
        }
        let id = *swarm.local_peer_id();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(run(swarm, rx));
        Ok(LNode { id, addrs, tx })
    }

    /// The first listen address of the given transport (`"tcp"` or `"quic-v1"`).
    fn addr(&self, transport: &str) -> Multiaddr {
        let quic = transport == "quic-v1";
        self.addrs
            .iter()
            .find(|a| a.iter().any(|p| matches!(p, Protocol::QuicV1)) == quic)
            .cloned()
            .unwrap_or_else(|| panic!("no {transport} address in {:?}", self.addrs))
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Cmd) -> anyhow::Result<T> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| anyhow!("node task ended"))?;
        tokio::time::timeout(STEP, rx)
            .await
            .context("libp2p node did not answer in time")?
            .map_err(|_| anyhow!("node task ended"))?
    }

    async fn add_address(&self, peer: PeerId, addr: Multiaddr) {
        self.tx
            .send(Cmd::AddAddress(peer, addr))
            .await
            .expect("node task");
    }

    async fn query_local<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Cmd) -> T {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.expect("node task");
        rx.await.expect("node task")
    }
}

async fn run(mut swarm: Swarm<Behaviour>, mut rx: mpsc::Receiver<Cmd>) {
    let mut pending: HashMap<kad::QueryId, Pending> = HashMap::new();
    loop {
        tokio::select! {
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { break };
                let kad = &mut swarm.behaviour_mut().kad;
                match cmd {
                    Cmd::AddAddress(peer, addr) => { kad.add_address(&peer, addr); }
                    Cmd::Bootstrap(reply) => match kad.bootstrap() {
                        Ok(id) => { pending.insert(id, Pending::Unit(reply)); }
                        Err(e) => { let _ = reply.send(Err(anyhow!("bootstrap: {e}"))); }
                    },
                    Cmd::StartProviding(key, reply) => match kad.start_providing(key) {
                        Ok(id) => { pending.insert(id, Pending::Unit(reply)); }
                        Err(e) => { let _ = reply.send(Err(anyhow!("start_providing: {e}"))); }
                    },
                    Cmd::GetProviders(key, reply) => {
                        let id = kad.get_providers(key);
                        pending.insert(id, Pending::Providers(HashSet::new(), reply));
                    }
                    Cmd::GetClosestPeers(key, reply) => {
                        let id = kad.get_closest_peers(key);
                        pending.insert(id, Pending::Closest(reply));
                    }
                    Cmd::LocalProviders(key, reply) => {
                        use kad::store::RecordStore;
                        let v = kad.store_mut().providers(&key).into_iter().map(|r| r.provider).collect();
                        let _ = reply.send(v);
                    }
                    Cmd::Table(reply) => {
                        let v = kad.kbuckets().flat_map(|b| b.iter().map(|e| *e.node.key.preimage()).collect::<Vec<_>>()).collect();
                        let _ = reply.send(v);
                    }
                }
            }
            event = swarm.select_next_some() => match event {
                SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
                    if info.protocols.contains(&kad::PROTOCOL_NAME) {
                        for addr in info.listen_addrs {
                            swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                        }
                    }
                }
                SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed { id, result, step, .. })) => {
                    on_progress(&mut pending, id, result, step.last);
                }
                _ => {}
            },
        }
    }
}

fn on_progress(
    pending: &mut HashMap<kad::QueryId, Pending>,
    id: kad::QueryId,
    result: kad::QueryResult,
    last: bool,
) {
    let Some(p) = pending.get_mut(&id) else {
        return;
    };
    if let (
        Pending::Providers(set, _),
        kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders {
            providers, ..
        })),
    ) = (&mut *p, &result)
    {
        set.extend(providers.iter().copied());
    }
    if !last {
        return;
    }
    let Some(p) = pending.remove(&id) else { return };
    match (p, result) {
        (Pending::Unit(reply), kad::QueryResult::Bootstrap(r)) => {
            let _ = reply.send(r.map(|_| ()).map_err(|e| anyhow!("bootstrap: {e}")));
        }
        (Pending::Unit(reply), kad::QueryResult::StartProviding(r)) => {
            let _ = reply.send(r.map(|_| ()).map_err(|e| anyhow!("start_providing: {e}")));
        }
        (Pending::Providers(set, reply), kad::QueryResult::GetProviders(r)) => {
            let _ = reply.send(match r {
                Ok(_) => Ok(set),
                Err(e) => Err(anyhow!("get_providers: {e} (found {set:?})")),
            });
        }
        (Pending::Closest(reply), kad::QueryResult::GetClosestPeers(r)) => {
            let _ = reply.send(
                r.map(|ok| ok.peers.into_iter().map(|p| p.peer_id).collect())
                    .map_err(|e| anyhow!("get_closest_peers: {e}")),
            );
        }
        (_, other) => panic!("unexpected query result {other:?}"),
    }
}

/// A CID (raw codec, sha2-256) of `data`.
fn cid_of(data: &[u8]) -> Cid {
    let digest = Sha256::digest(data);
    let mh = cid::multihash::Multihash::<64>::wrap(0x12, &digest).expect("32-byte digest fits");
    Cid::new_v1(0x55, mh)
}

fn dht_config(mode: Mode) -> KadConfig {
    KadConfig {
        mode,
        ..KadConfig::default()
    }
}

async fn within<T, E: Into<anyhow::Error>>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(STEP, f)
        .await
        .with_context(|| format!("{what}: timed out"))?
        .map_err(Into::into)
        .with_context(|| what.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msgnet_dht_and_libp2p_kad_answer_each_other() -> anyhow::Result<()> {
    // The libp2p network: L1 knows P1..P3, and they know L1.
    let l1 = LNode::start(
        kad::Mode::Server,
        &["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"],
    )
    .await?;
    let mut ps = Vec::new();
    for _ in 0..3 {
        let p = LNode::start(kad::Mode::Server, &["/ip4/127.0.0.1/udp/0/quic-v1"]).await?;
        p.add_address(l1.id, l1.addr("quic-v1")).await;
        l1.add_address(p.id, p.addr("quic-v1")).await;
        ps.push(p);
    }
    l1.call(Cmd::Bootstrap).await.context("L1 bootstrap")?;
    let l1_table: HashSet<PeerId> = l1.query_local(Cmd::Table).await.into_iter().collect();
    for p in &ps {
        assert!(
            l1_table.contains(&p.id),
            "L1's routing table lacks a P node: {l1_table:?}"
        );
    }

    // M1: a msgnet Host on UDP, TCP and QUIC with a Dht server, joined through L1 (QUIC).
    let m1_host = Host::builder(Keypair::generate_ed25519())
        .listen("/ip4/127.0.0.1/udp/0".parse()?)
        .listen("/ip4/127.0.0.1/tcp/0".parse()?)
        .listen("/ip4/127.0.0.1/udp/0/quic-v1".parse()?)
        .build()
        .await?;
    let m1 = Dht::new(&m1_host, dht_config(Mode::Server))?;
    let m1_id = m1_host.local_peer_id();
    let m1_tcp = m1_host
        .listen_addrs()
        .into_iter()
        .find(|a| a.iter().any(|p| matches!(p, Protocol::Tcp(_))))
        .context("M1 has no TCP address")?;
    m1.add_address(l1.id, l1.addr("quic-v1")).await?;
    let boot = within("M1 bootstrap through L1", m1.bootstrap()).await?;
    assert!(
        boot.table_size >= 4,
        "M1 should know L1 and P1..P3 after bootstrap, knows {}",
        boot.table_size
    );
    // L1 learns M1 as a DHT server (the lookups of the next steps need it either way).
    l1.add_address(m1_id, m1_tcp.clone()).await;

    // (a) msgnet provides, libp2p-kad finds the provider.
    let cid_a = cid_of(b"provided by msgnet");
    let provided = within(
        "M1 start_providing",
        m1.start_providing(provider_key(&cid_a)),
    )
    .await?;
    assert!(
        provided.acked >= 1,
        "no libp2p peer acknowledged M1's ADD_PROVIDER: {provided:?}"
    );
    let key_a = kad::RecordKey::new(&cid_a.hash().to_bytes());
    // "Acknowledged" for a libp2p peer means the stream was written: L1's swarm stores the
    // record when it has read it, so wait for that (bounded).
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let stored = l1
            .query_local(|r| Cmd::LocalProviders(key_a.clone(), r))
            .await;
        if stored.contains(&m1_id) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "L1 did not store M1's ADD_PROVIDER: {stored:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let found = l1.call(|r| Cmd::GetProviders(key_a.clone(), r)).await?;
    assert!(
        found.contains(&m1_id),
        "L1's get_providers did not find M1: {found:?}"
    );

    // A fresh libp2p-kad node that knows only M1 (over TCP): msgnet answers its
    // GET_PROVIDERS and FIND_NODE.
    let l2 = LNode::start(kad::Mode::Client, &["/ip4/127.0.0.1/udp/0/quic-v1"]).await?;
    l2.add_address(m1_id, m1_tcp.clone()).await;
    let found = l2.call(|r| Cmd::GetProviders(key_a.clone(), r)).await?;
    assert!(
        found.contains(&m1_id),
        "L2's get_providers (through M1) did not find M1: {found:?}"
    );
    let target = PeerId::random();
    let closest: HashSet<PeerId> = l2
        .call(|r| Cmd::GetClosestPeers(target.to_bytes(), r))
        .await?
        .into_iter()
        .collect();
    assert!(
        closest.contains(&m1_id) && closest.contains(&l1.id),
        "L2's lookup through M1 should return M1 and L1: {closest:?}"
    );

    // (b) libp2p-kad provides, a fresh msgnet node that knows only L1 finds it.
    let cid_b = cid_of(b"provided by rust-libp2p");
    let key_b = kad::RecordKey::new(&cid_b.hash().to_bytes());
    l1.call(|r| Cmd::StartProviding(key_b.clone(), r))
        .await
        .context("L1 start_providing")?;
    let m2_host = Host::builder(Keypair::generate_ed25519())
        .listen("/ip4/127.0.0.1/udp/0".parse()?)
        .build()
        .await?;
    let m2 = Dht::new(&m2_host, dht_config(Mode::Client))?;
    m2.add_address(l1.id, l1.addr("quic-v1")).await?;
    let providers = within("M2 get_providers", m2.get_providers(provider_key(&cid_b))).await?;
    assert!(
        providers.peers.iter().any(|p| p.peer == l1.id),
        "M2 did not find L1 as provider: {providers:?}"
    );
    assert!(
        providers.stats.success >= 1,
        "no libp2p peer answered M2: {:?}",
        providers.stats
    );
    let found = within("M2 find_node", m2.find_node(PeerId::random().to_bytes())).await?;
    let got: HashSet<PeerId> = found.peers.iter().map(|p| p.peer).collect();
    assert!(
        got.contains(&l1.id),
        "M2's FIND_NODE result lacks L1: {got:?}"
    );
    for p in &ps {
        assert!(
            got.contains(&p.id),
            "M2's FIND_NODE result lacks {} (a peer L1 knows): {got:?}",
            p.id
        );
    }
    // Every P was reached over a libp2p QUIC connection, never known to M2 beforehand.
    for p in &ps {
        let conns = m2_host.connections(p.id).await;
        assert!(
            conns.iter().any(|c| c.transport == msgnet::Transport::Quic),
            "M2 has no QUIC connection to {}: {conns:?}",
            p.id
        );
    }

    m2.close().await;
    m2_host.close().await;
    m1.close().await;
    m1_host.close().await;
    Ok(())
}
