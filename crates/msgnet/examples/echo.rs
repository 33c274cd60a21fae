//! Two hosts on loopback: one serves `/echo/1`, the other sends it a message and a request.
//!
//! Run with `cargo run -p msgnet --example echo`.

use std::time::Duration;

use msgnet::{Host, Keypair, Multiaddr};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listen: Multiaddr = "/ip4/127.0.0.1/udp/0".parse()?;
    let server = Host::builder(Keypair::generate_ed25519()).listen(listen.clone()).build().await?;
    let client = Host::builder(Keypair::generate_ed25519()).listen(listen).build().await?;
    println!("server {} on {:?}", server.local_peer_id(), server.listen_addrs());

    let mut echo = server.handle("/echo/1")?;
    tokio::spawn(async move {
        while let Some(msg) = echo.recv().await {
            println!("server got {:?} from {}", msg.payload, msg.peer);
            if msg.is_request() {
                let payload = msg.payload.clone();
                let _ = msg.respond(payload);
            }
        }
    });

    client.add_address(server.local_peer_id(), server.listen_addrs()[0].clone())?;
    client.send(server.local_peer_id(), "/echo/1", "a message").await?;
    let reply = client
        .request(server.local_peer_id(), "/echo/1", "a request", Duration::from_secs(5))
        .await?;
    println!("client got reply {reply:?}");
    println!("client stats: {:?}", client.stats().await);

    client.close().await;
    server.close().await;
    Ok(())
}
