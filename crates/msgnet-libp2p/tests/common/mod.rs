//! Shared test harness: swarm builders and a uvarint-length-prefixed bytes codec for
//! `request_response` (what an ordinary rust-libp2p node would write).

#![allow(dead_code)]

use std::io;
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identify, noise, ping, request_response, tcp, yamux, Multiaddr, StreamProtocol, Swarm};

/// A msgnet node: the msgnet behaviour beside identify and ping.
#[derive(NetworkBehaviour)]
pub struct Node {
    pub msgnet: msgnet_libp2p::Behaviour,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
}

/// An ordinary rust-libp2p node: identify, ping and request-response.
#[derive(NetworkBehaviour)]
pub struct Plain {
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub rr: request_response::Behaviour<LpCodec>,
}

pub const BRIDGE_TEST: StreamProtocol = StreamProtocol::new("/bridge-test/1.0.0");

fn ping_config() -> ping::Config {
    ping::Config::new().with_interval(Duration::from_millis(500))
}

pub fn msgnet_swarm() -> Swarm<Node> {
    msgnet_swarm_with(msgnet_libp2p::Config::default(), Duration::from_secs(60))
}

/// A msgnet node (TCP and QUIC) with this behaviour config and swarm idle timeout.
pub fn msgnet_swarm_with(config: msgnet_libp2p::Config, idle: Duration) -> Swarm<Node> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
        .expect("tcp")
        .with_quic()
        .with_behaviour(|key| Node {
            msgnet: msgnet_libp2p::Behaviour::new(config),
            identify: identify::Behaviour::new(identify::Config::new("/msgnet-test/1".into(), key.public())),
            ping: ping::Behaviour::new(ping_config()),
        })
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build()
}

pub fn plain_swarm() -> Swarm<Plain> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
        .expect("tcp")
        .with_quic()
        .with_behaviour(|key| Plain {
            identify: identify::Behaviour::new(identify::Config::new("/plain-test/1".into(), key.public())),
            ping: ping::Behaviour::new(ping_config()),
            rr: request_response::Behaviour::with_codec(
                LpCodec,
                [(BRIDGE_TEST, request_response::ProtocolSupport::Full)],
                request_response::Config::default(),
            ),
        })
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

/// Starts listening on `addr` and returns the bound address.
pub async fn listen<B: NetworkBehaviour>(swarm: &mut Swarm<B>, addr: &str) -> Multiaddr {
    swarm.listen_on(addr.parse().expect("addr")).expect("listen");
    loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            return address;
        }
    }
}

/// uvarint length || bytes, both ways.
#[derive(Debug, Clone, Default)]
pub struct LpCodec;

const MAX: usize = 1 << 20;

async fn read_lp<T: AsyncRead + Unpin>(io: &mut T) -> io::Result<Vec<u8>> {
    let mut len: usize = 0;
    for i in 0..4 {
        let mut b = [0u8; 1];
        io.read_exact(&mut b).await?;
        len |= usize::from(b[0] & 0x7f) << (7 * i);
        if b[0] & 0x80 == 0 {
            if len > MAX {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "too large"));
            }
            let mut buf = vec![0; len];
            io.read_exact(&mut buf).await?;
            return Ok(buf);
        }
    }
    Err(io::Error::new(io::ErrorKind::InvalidData, "bad length"))
}

async fn write_lp<T: AsyncWrite + Unpin>(io: &mut T, data: &[u8]) -> io::Result<()> {
    let mut buf = Vec::new();
    let mut n = data.len();
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            buf.push(b);
            break;
        }
        buf.push(b | 0x80);
    }
    buf.extend_from_slice(data);
    io.write_all(&buf).await?;
    io.flush().await
}

impl request_response::Codec for LpCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_lp(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_lp(io).await
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: Vec<u8>) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_lp(io, &req).await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, res: Vec<u8>) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_lp(io, &res).await
    }
}
