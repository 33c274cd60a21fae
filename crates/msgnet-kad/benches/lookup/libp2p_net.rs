//! The baseline: a network of rust-libp2p 0.57 nodes running `libp2p-kad` over QUIC on
//! 127.0.0.1, and the fresh querier that measures one lookup.
//!
//! Network nodes run `kad` (server mode) and `identify`: libp2p-kad puts a peer that
//! dialed us into the routing table only once it knows a listen address for it, which a
//! rust-libp2p application learns from identify (the usual pattern, as in rust-libp2p's
//! `ipfs-kad` example). The querier runs `kad` alone, in client mode, so it never enters
//! anyone's routing table and the network stays the same from one lookup to the next.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::kad::{self, store::MemoryStore};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identify, Multiaddr, PeerId, Swarm, SwarmBuilder};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::{Lookup, ALPHA, K, STEP_TIMEOUT};

/// Kademlia and identify, as a rust-libp2p DHT server runs them.
#[derive(NetworkBehaviour)]
struct NodeBehaviour {
    kad: kad::Behaviour<MemoryStore>,
    identify: identify::Behaviour,
}

/// libp2p-kad's configuration for both network nodes and queriers: k and alpha as
/// msgnet's, periodic bootstrap off (the benchmark bootstraps explicitly).
fn kad_config() -> kad::Config {
    let mut c = kad::Config::new(kad::PROTOCOL_NAME);
    #[allow(clippy::unwrap_used)] // constants > 0
    c.set_replication_factor(NonZeroUsize::new(K).unwrap())
        .set_parallelism(NonZeroUsize::new(ALPHA).unwrap())
        .set_periodic_bootstrap_interval(None);
    c
}

enum Command {
    AddAddress(PeerId, Multiaddr),
    Bootstrap(oneshot::Sender<anyhow::Result<()>>),
    TableSize(oneshot::Sender<usize>),
}

/// A network node: its identity, its QUIC address and the channel to its task.
pub struct Node {
    /// Its peer id.
    pub id: PeerId,
    /// Its `/ip4/127.0.0.1/udp/N/quic-v1` address.
    pub addr: Multiaddr,
    cmd: mpsc::Sender<Command>,
    task: JoinHandle<()>,
}

impl Node {
    /// Starts a server-mode node listening on QUIC on 127.0.0.1.
    pub async fn start(keypair: Keypair) -> anyhow::Result<Node> {
        let mut swarm = SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_quic()
            .with_behaviour(|key| {
                let id = key.public().to_peer_id();
                NodeBehaviour {
                    kad: kad::Behaviour::with_config(id, MemoryStore::new(id), kad_config()),
                    identify: identify::Behaviour::new(identify::Config::new(
                        "/msgnet-bench/1".into(),
                        key.public(),
                    )),
                }
            })
            .map_err(|e| anyhow!("behaviour: {e:?}"))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(600)))
            .build();
        swarm.behaviour_mut().kad.set_mode(Some(kad::Mode::Server));
        swarm
            .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse()?)
            .context("listen")?;
        let addr = loop {
            match tokio::time::timeout(STEP_TIMEOUT, swarm.select_next_some())
                .await
                .context("no listen address")?
            {
                SwarmEvent::NewListenAddr { address, .. } => break address,
                SwarmEvent::ListenerError { error, .. } => bail!("listener: {error}"),
                _ => {}
            }
        };
        let id = *swarm.local_peer_id();
        let (cmd, rx) = mpsc::channel(16);
        let task = tokio::spawn(run(swarm, rx));
        Ok(Node {
            id,
            addr,
            cmd,
            task,
        })
    }

    /// Tells the node a peer's address (a bootstrap peer).
    pub async fn add_address(&self, peer: PeerId, addr: Multiaddr) -> anyhow::Result<()> {
        self.cmd
            .send(Command::AddAddress(peer, addr))
            .await
            .map_err(|_| anyhow!("node task ended"))
    }

    /// Runs libp2p-kad's bootstrap (own-id lookup, then bucket refreshes) to its end.
    pub async fn bootstrap(&self) -> anyhow::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Command::Bootstrap(tx))
            .await
            .map_err(|_| anyhow!("node task ended"))?;
        rx.await.map_err(|_| anyhow!("node task ended"))?
    }

    /// Number of peers in its routing table.
    pub async fn table_size(&self) -> anyhow::Result<usize> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Command::TableSize(tx))
            .await
            .map_err(|_| anyhow!("node task ended"))?;
        rx.await.map_err(|_| anyhow!("node task ended"))
    }

    /// Stops the node and waits for its task to end.
    pub async fn stop(self) {
        drop(self.cmd);
        let _ = self.task.await;
    }
}

async fn run(mut swarm: Swarm<NodeBehaviour>, mut rx: mpsc::Receiver<Command>) {
    let mut bootstraps: HashMap<kad::QueryId, oneshot::Sender<anyhow::Result<()>>> = HashMap::new();
    loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                None => break,
                Some(Command::AddAddress(peer, addr)) => {
                    swarm.behaviour_mut().kad.add_address(&peer, addr);
                }
                Some(Command::Bootstrap(reply)) => match swarm.behaviour_mut().kad.bootstrap() {
                    Ok(id) => { bootstraps.insert(id, reply); }
                    Err(e) => { let _ = reply.send(Err(anyhow!("bootstrap: {e}"))); }
                },
                Some(Command::TableSize(reply)) => {
                    let n = swarm.behaviour_mut().kad.kbuckets().map(|b| b.num_entries()).sum();
                    let _ = reply.send(n);
                }
            },
            event = swarm.select_next_some() => match event {
                SwarmEvent::Behaviour(NodeBehaviourEvent::Identify(identify::Event::Received {
                    peer_id, info, ..
                })) => {
                    if info.protocols.contains(&kad::PROTOCOL_NAME) {
                        for addr in info.listen_addrs {
                            swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                        }
                    }
                }
                SwarmEvent::Behaviour(NodeBehaviourEvent::Kad(
                    kad::Event::OutboundQueryProgressed {
                        id, result: kad::QueryResult::Bootstrap(result), step, ..
                    },
                )) => {
                    if step.last {
                        if let Some(reply) = bootstraps.remove(&id) {
                            let _ = reply.send(result.map(|_| ()).map_err(|e| anyhow!("bootstrap: {e}")));
                        }
                    }
                }
                _ => {}
            },
        }
    }
}

/// One lookup from a fresh node: a new identity and a new QUIC endpoint, knowing only
/// `known` (no connection to anyone). Returns the time from `get_closest_peers` to its
/// final result, the peers found and the query's counters.
pub async fn lookup(known: &[(PeerId, Multiaddr)], target: PeerId) -> anyhow::Result<Lookup> {
    let mut swarm = SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_quic()
        .with_behaviour(|key| {
            let id = key.public().to_peer_id();
            kad::Behaviour::with_config(id, MemoryStore::new(id), kad_config())
        })
        .map_err(|e| anyhow!("behaviour: {e:?}"))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    swarm.behaviour_mut().set_mode(Some(kad::Mode::Client));
    for (peer, addr) in known {
        swarm.behaviour_mut().add_address(peer, addr.clone());
    }
    let start = Instant::now();
    let query = swarm.behaviour_mut().get_closest_peers(target);
    let mut found = Vec::new();
    loop {
        let event = tokio::time::timeout(STEP_TIMEOUT, swarm.select_next_some())
            .await
            .context("libp2p-kad lookup did not finish")?;
        if let SwarmEvent::Behaviour(kad::Event::OutboundQueryProgressed {
            id,
            result: kad::QueryResult::GetClosestPeers(result),
            step,
            stats,
        }) = event
        {
            if id != query {
                continue;
            }
            match result {
                Ok(ok) => found.extend(ok.peers.into_iter().map(|p| p.peer_id)),
                Err(e) => bail!("libp2p-kad lookup: {e}"),
            }
            if step.last {
                return Ok(Lookup {
                    time: start.elapsed(),
                    found,
                    requests: stats.num_requests(),
                    failures: stats.num_failures(),
                });
            }
        }
    }
}
