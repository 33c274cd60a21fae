//! The measured side: `msgnet::Host`s listening on UDP only (`/ip4/127.0.0.1/udp/0`),
//! each running a `msgnet_kad::host::Dht`, and the fresh querier that measures one lookup.

use std::time::Instant;

use anyhow::Context;
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use msgnet::Host;
use msgnet_kad::host::Dht;
use msgnet_kad::{KadConfig, Mode};

use crate::{Lookup, ALPHA, K, STEP_TIMEOUT};

/// The Dht configuration of network nodes (`Server`) and queriers (`Client`): k and alpha
/// as libp2p-kad's, periodic refresh off (the benchmark bootstraps explicitly).
fn config(mode: Mode) -> KadConfig {
    KadConfig {
        k: K,
        alpha: ALPHA,
        mode,
        refresh_interval: None,
        ..KadConfig::default()
    }
}

async fn host(keypair: Keypair) -> anyhow::Result<Host> {
    Host::builder(keypair)
        .listen("/ip4/127.0.0.1/udp/0".parse()?)
        .build()
        .await
        .context("building a host")
}

/// A network node: a host and its Dht in server mode.
pub struct Node {
    /// Its peer id.
    pub id: PeerId,
    /// Its `/ip4/127.0.0.1/udp/N` address.
    pub addr: Multiaddr,
    host: Host,
    dht: Dht,
}

impl Node {
    /// Starts a server-mode node listening on UDP on 127.0.0.1.
    pub async fn start(keypair: Keypair) -> anyhow::Result<Node> {
        let host = host(keypair).await?;
        let dht = Dht::new(&host, config(Mode::Server))?;
        let addr = host
            .listen_addrs()
            .first()
            .cloned()
            .context("host has no address")?;
        Ok(Node {
            id: host.local_peer_id(),
            addr,
            host,
            dht,
        })
    }

    /// Tells the node a peer's address (a bootstrap peer).
    pub async fn add_address(&self, peer: PeerId, addr: Multiaddr) -> anyhow::Result<()> {
        self.dht.add_address(peer, addr).await?;
        Ok(())
    }

    /// Runs the Dht's bootstrap (own-id lookup, then bucket refreshes) to its end.
    pub async fn bootstrap(&self) -> anyhow::Result<()> {
        tokio::time::timeout(STEP_TIMEOUT, self.dht.bootstrap())
            .await
            .context("bootstrap did not finish")??;
        Ok(())
    }

    /// Number of peers in its routing table (0 if the Dht stopped).
    pub async fn table_size(&self) -> usize {
        let size = self.dht.inspect(|k| k.routing_table().len());
        size.await.unwrap_or(0)
    }

    /// Diagnostic counters (`LOOKUP_DIAG=1`): datagrams out, in, retransmissions,
    /// messages delivered, peers with a session, Dht requests in flight, queries active.
    pub async fn diag(&self) -> [u64; 7] {
        let s = self.host.stats().await;
        let peers = self.host.peers().await.len() as u64;
        let d = self
            .dht
            .inspect(|k| (k.requests_in_flight(), k.active_queries()));
        let (in_flight, active) = d.await.unwrap_or_default();
        [
            s.tx_datagrams,
            s.rx_datagrams,
            s.retransmissions,
            s.messages_delivered,
            peers,
            in_flight as u64,
            active as u64,
        ]
    }

    /// Stops the Dht and the host.
    pub async fn stop(self) {
        self.dht.close().await;
        self.host.close().await;
    }
}

/// One lookup from a fresh node: a new identity and a new UDP socket, knowing only
/// `known` (no session with anyone). Returns the time from `find_node` to its result, the
/// peers found and the lookup's counters.
pub async fn lookup(known: &[(PeerId, Multiaddr)], target: PeerId) -> anyhow::Result<Lookup> {
    let host = host(Keypair::generate_ed25519()).await?;
    let dht = Dht::new(&host, config(Mode::Client))?;
    for (peer, addr) in known {
        dht.add_address(*peer, addr.clone()).await?;
    }
    let start = Instant::now();
    let result = tokio::time::timeout(STEP_TIMEOUT, dht.find_node(target.to_bytes())).await;
    let elapsed = start.elapsed();
    dht.close().await;
    host.close().await;
    let found = result.context("msgnet lookup did not finish")??;
    Ok(Lookup {
        time: elapsed,
        found: found.peers.into_iter().map(|p| p.peer).collect(),
        requests: found.stats.requests,
        failures: found.stats.failure,
    })
}
