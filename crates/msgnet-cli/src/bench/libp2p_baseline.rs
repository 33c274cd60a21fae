//! Baseline of the bulk-transfer benchmark: rust-libp2p (the `libp2p` crate, 0.57)
//! moving the same bytes over ONE stream, over QUIC or over TCP+noise+yamux.
//!
//! Two `Swarm`s on 127.0.0.1 with the `libp2p-stream` behaviour (nothing else): the
//! receiver accepts [`PROTOCOL`] and reads until EOF, the sender dials, waits for the
//! connection, opens one stream and writes `total` bytes in 1 MiB `write_all`s, then
//! closes it. Timed from just before the first write to the moment the receiver has read
//! the last byte (connection setup and stream negotiation are not counted, as the msgnet
//! side does not count its handshake either).

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{noise, tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm};

/// The stream protocol of the baseline.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/msgnet/bench/bulk-baseline/1.0.0");

/// Give up on a run after this long.
const DEADLINE: Duration = Duration::from_secs(300);

/// Which rust-libp2p transport to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// QUIC (`/udp/0/quic-v1`), quinn under the hood.
    Quic,
    /// TCP with noise encryption and yamux multiplexing.
    TcpNoiseYamux,
}

impl Transport {
    /// An address on 127.0.0.1 with a port the OS picks.
    pub(crate) fn listen_addr(self) -> Multiaddr {
        let s = match self {
            Transport::Quic => "/ip4/127.0.0.1/udp/0/quic-v1",
            Transport::TcpNoiseYamux => "/ip4/127.0.0.1/tcp/0",
        };
        #[allow(clippy::unwrap_used)] // constant, valid addresses
        s.parse().unwrap()
    }
}

fn swarm(transport: Transport) -> anyhow::Result<Swarm<libp2p_stream::Behaviour>> {
    let config = |c: libp2p::swarm::Config| c.with_idle_connection_timeout(Duration::from_secs(60));
    let builder = libp2p::SwarmBuilder::with_new_identity().with_tokio();
    Ok(match transport {
        Transport::Quic => builder
            .with_quic()
            .with_behaviour(|_| libp2p_stream::Behaviour::new())
            .map_err(|e| anyhow!("behaviour: {e:?}"))?
            .with_swarm_config(config)
            .build(),
        Transport::TcpNoiseYamux => builder
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .context("tcp transport")?
            .with_behaviour(|_| libp2p_stream::Behaviour::new())
            .map_err(|e| anyhow!("behaviour: {e:?}"))?
            .with_swarm_config(config)
            .build(),
    })
}

/// Makes `swarm` listen on `transport` on 127.0.0.1 and returns its address, polling
/// only `swarm`.
pub(crate) async fn listen<B: NetworkBehaviour>(swarm: &mut Swarm<B>, transport: Transport) -> anyhow::Result<Multiaddr> {
    swarm.listen_on(transport.listen_addr()).context("listen")?;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), swarm.select_next_some())
            .await
            .context("did not start listening")?
        {
            SwarmEvent::NewListenAddr { address, .. } => return Ok(address),
            SwarmEvent::ListenerError { error, .. } => bail!("listener: {error}"),
            _ => {}
        }
    }
}

/// Dials `peer` at `addr` from `swarm` and polls `swarm` until the connection is up.
pub(crate) async fn connect<B: NetworkBehaviour>(swarm: &mut Swarm<B>, addr: Multiaddr, peer: PeerId) -> anyhow::Result<()> {
    swarm.dial(addr).context("dial")?;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), swarm.select_next_some())
            .await
            .context("no connection")?
        {
            SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == peer => return Ok(()),
            SwarmEvent::OutgoingConnectionError { error, .. } => bail!("dial: {error}"),
            _ => {}
        }
    }
}

/// Move `total` bytes over one stream of `transport`; the time from the first write
/// to the last byte read.
pub async fn bulk(transport: Transport, total: u64, chunk: usize) -> anyhow::Result<Duration> {
    // Receiver: listen, learn its address, then drive it in the background.
    let mut receiver = swarm(transport)?;
    let mut incoming = receiver
        .behaviour()
        .new_control()
        .accept(PROTOCOL)
        .map_err(|e| anyhow!("accept: {e}"))?;
    let receiver_id = *receiver.local_peer_id();
    let addr = listen(&mut receiver, transport).await?;
    let receiver_task = tokio::spawn(async move {
        loop {
            receiver.select_next_some().await;
        }
    });

    let reader = tokio::spawn(async move {
        let (_peer, mut stream) = incoming
            .next()
            .await
            .ok_or_else(|| anyhow!("no inbound stream"))?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0u64;
        let mut done_at = None;
        loop {
            let n = stream.read(&mut buf).await.context("read")?;
            if n == 0 {
                break;
            }
            got += n as u64;
            if got >= total && done_at.is_none() {
                done_at = Some(Instant::now());
            }
        }
        match done_at {
            Some(at) if got == total => Ok(at),
            _ => Err(anyhow!("receiver read {got} of {total} bytes")),
        }
    });

    // Sender: dial, wait for the connection, then drive it in the background.
    let mut sender = swarm(transport)?;
    let mut control = sender.behaviour().new_control();
    connect(&mut sender, addr, receiver_id).await?;
    let sender_task = tokio::spawn(async move {
        loop {
            sender.select_next_some().await;
        }
    });

    let result = tokio::time::timeout(DEADLINE, async {
        let mut stream = control
            .open_stream(receiver_id, PROTOCOL)
            .await
            .map_err(|e| anyhow!("open stream: {e}"))?;
        let data = vec![0xa5u8; chunk];
        let start = Instant::now();
        let mut left = total;
        while left > 0 {
            let n = left.min(chunk as u64) as usize;
            stream.write_all(&data[..n]).await.context("write")?;
            left -= n as u64;
        }
        stream.close().await.context("close")?;
        let end = reader.await.context("reader task")??;
        Ok::<_, anyhow::Error>(end.saturating_duration_since(start))
    })
    .await;
    receiver_task.abort();
    sender_task.abort();
    result.map_err(|_| anyhow!("rust-libp2p bulk transfer did not finish in {DEADLINE:?}"))?
}
