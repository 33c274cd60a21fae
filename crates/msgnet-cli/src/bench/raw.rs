//! The raw UDP baseline: the same exchanges as [`super::pair`] with one `send_to` per
//! datagram and no protocol at all.

use std::io;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use super::{Arrivals, Rate, PAYLOAD};

/// A tokio task echoing every datagram back to its sender.
#[derive(Debug)]
pub struct EchoServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl EchoServer {
    /// Bind `127.0.0.1:0` and start echoing.
    pub async fn spawn() -> io::Result<Self> {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        let addr = socket.local_addr()?;
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                if socket.send_to(&buf[..n], from).await.is_err() {
                    break;
                }
            }
        });
        Ok(Self { addr, task })
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A client doing request/response round trips against an [`EchoServer`].
#[derive(Debug)]
pub struct EchoClient {
    socket: UdpSocket,
    server: SocketAddr,
    buf: Vec<u8>,
}

impl EchoClient {
    /// Bind `127.0.0.1:0` and aim at `server`.
    pub async fn connect(server: SocketAddr) -> io::Result<Self> {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        Ok(Self {
            socket,
            server,
            buf: vec![0u8; 2048],
        })
    }

    /// One round trip: send `payload`, wait for the echo (resending after 1 s).
    pub async fn round_trip(&mut self, payload: &[u8]) -> io::Result<()> {
        loop {
            self.socket.send_to(payload, self.server).await?;
            match tokio::time::timeout(Duration::from_secs(1), self.socket.recv_from(&mut self.buf))
                .await
            {
                Ok(Ok((n, from))) if from == self.server && n == payload.len() => return Ok(()),
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => return Err(e),
                Err(_) => continue,
            }
        }
    }
}

/// Time `n` round trips (each sample one round trip) on a warm client.
pub async fn round_trips(client: &mut EchoClient, n: usize) -> io::Result<Vec<Duration>> {
    let payload = [0x5au8; PAYLOAD];
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        client.round_trip(&payload).await?;
        samples.push(start.elapsed());
    }
    Ok(samples)
}

/// One-way rate: a blocking loop of `n` `send_to`s on one thread, a receiver counting
/// datagrams on another. The receiver stops 300 ms after the last arrival once the
/// sender is done. Runs on OS threads, outside any async runtime.
pub fn one_way(n: u64) -> io::Result<Rate> {
    let receiver = StdUdpSocket::bind("127.0.0.1:0")?;
    receiver.set_read_timeout(Some(Duration::from_millis(300)))?;
    let to = receiver.local_addr()?;
    let sender = StdUdpSocket::bind("127.0.0.1:0")?;
    let recv_thread = std::thread::spawn(move || {
        let mut arrivals = Arrivals::default();
        let mut buf = [0u8; 2048];
        let mut idle_since: Option<Instant> = None;
        loop {
            match receiver.recv_from(&mut buf) {
                Ok(_) => {
                    arrivals.hit();
                    idle_since = None;
                }
                Err(_) => {
                    // Timed out: give up once nothing arrived for a while (the first
                    // datagram may take a moment to come when the machine is busy).
                    let since = *idle_since.get_or_insert_with(Instant::now);
                    if arrivals.count() > 0 || since.elapsed() > Duration::from_secs(3) {
                        break;
                    }
                }
            }
        }
        arrivals
    });
    let payload = [0x5au8; PAYLOAD];
    let mut sent = 0u64;
    for _ in 0..n {
        // ENOBUFS and friends: a datagram the kernel refused is simply not sent.
        if sender.send_to(&payload, to).is_ok() {
            sent += 1;
        }
    }
    let arrivals = recv_thread
        .join()
        .map_err(|_| io::Error::other("receiver thread panicked"))?;
    Ok(arrivals.rate(sent))
}
