//! One process, two swarms, each with the msgnet behaviour owning msgnet's UDP packet
//! transport beside TCP: the second reaches the first over UDP (no libp2p connection),
//! with the same `send`/`request` calls as over TCP.
//!
//! ```text
//! cargo run -p msgnet-libp2p --example udp_echo
//! ```

use std::error::Error;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{noise, tcp, yamux, Swarm};
use msgnet_libp2p::{Behaviour, Config, EndpointConfig, Event};

const ECHO: &str = "/echo/1";

fn swarm() -> Result<Swarm<Behaviour>, Box<dyn Error + Send + Sync>> {
    Ok(libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)?
        .with_behaviour(|key| -> Result<Behaviour, Box<dyn Error + Send + Sync>> {
            let udp = "/ip4/127.0.0.1/udp/0".parse()?;
            Ok(Behaviour::new(Config::default()).with_udp(key, &udp, EndpointConfig::default())?)
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    let mut server = swarm()?;
    let mut client = swarm()?;
    server.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
    server.behaviour_mut().handle(ECHO);

    // The server's UDP address, as identify would advertise it after
    // `server.add_external_address(addr)`.
    let server_id = *server.local_peer_id();
    let addr = server.behaviour().udp_listen_addrs().remove(0).with(Protocol::P2p(server_id));
    println!("server {server_id} on {addr}");
    client.behaviour_mut().add_address(server_id, addr);
    let id = client.behaviour_mut().request(server_id, ECHO, Bytes::from_static(b"hello over udp"))?;

    let deadline = tokio::time::sleep(Duration::from_secs(30));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            e = server.select_next_some() => {
                if let SwarmEvent::Behaviour(Event::Message(m)) = e {
                    if let Some(req) = m.request {
                        server.behaviour_mut().respond(&req, Ok(Bytes::from(m.payload.to_ascii_uppercase())))?;
                    }
                }
            }
            e = client.select_next_some() => match e {
                SwarmEvent::Behaviour(Event::Response { id: got, result }) if got == id => {
                    println!("response: {:?}", String::from_utf8_lossy(&result?));
                    let stats = client.behaviour().udp_stats().ok_or("udp off")?;
                    println!(
                        "client: {} datagrams out, {} in; libp2p connections: {}",
                        stats.tx_datagrams,
                        stats.rx_datagrams,
                        client.connected_peers().count()
                    );
                    return Ok(());
                }
                _ => {}
            },
            () = &mut deadline => return Err("no response in 30 s".into()),
        }
    }
}
