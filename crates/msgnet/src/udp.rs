//! UDP socket I/O for the driver: binding, batched sends and batched receives.
//!
//! This module owns the host's UDP sockets (one per address family), their
//! [`quinn_udp::UdpSocketState`], the buffer of datagrams waiting to be sent and the
//! receive buffers. It knows nothing of the endpoint: the driver hands it datagrams
//! ([`Udp::send`], then [`Udp::flush`]) and takes received datagrams from it
//! ([`Udp::recv`], then [`Udp::datagram`]).
//!
//! ## Sending: segmentation offload (GSO)
//!
//! Consecutive datagrams for the same destination (out of the same socket) and of the same
//! size, the last of a run possibly shorter, are copied into one buffer and handed to the
//! kernel as one `sendmsg` with `UDP_SEGMENT`: the kernel (or the NIC) cuts it into
//! datagrams. A run ends at [`UdpSocketState::max_gso_segments`] segments or
//! [`MAX_GSO_BYTES`] bytes. Any other datagram is sent alone, one `sendmsg` each (quinn-udp
//! offers no `sendmmsg`). If the kernel refuses a batch (drivers without GSO answer `EIO`
//! or `EINVAL`; quinn-udp then disables GSO on the socket) its datagrams are sent again
//! one by one.
//!
//! ## Receiving: `recvmmsg` and receive offload (GRO)
//!
//! One [`Udp::recv`] is one `recvmmsg` of up to [`quinn_udp::BATCH_SIZE`] buffers. With
//! `UDP_GRO` a buffer may hold several datagrams of one sender, `stride` bytes apart (the
//! last possibly shorter); [`Udp::recv`] splits them and [`Udp::datagram`] yields them one
//! at a time. Each buffer holds [`SLOT`] bytes: the kernel never coalesces more than 64 KiB
//! into one buffer, and a truncated datagram fails authentication like any corrupt one.
//!
//! ## Fallback
//!
//! On platforms without these calls quinn-udp itself falls back to `sendmsg`/`recvmsg` of
//! one datagram (`max_gso_segments() == 1`, `gro_segments() == 1`). If quinn-udp cannot set
//! a socket up at all, that socket uses tokio's plain `try_send_to`/`try_recv_from`.
//!
//! ## Observability
//!
//! Every send and receive call emits a `trace` event on target `msgnet::udp` (fields
//! `datagrams`, `bytes`), and [`Udp::log_totals`] emits the totals ([`UdpStats`]) as one
//! `debug` event (message `"udp totals"`) when the driver stops.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tracing::{debug, trace};

/// Socket buffer sizes requested from the kernel (best effort).
const SOCKET_BUFFER: usize = 4 << 20;
/// Bytes per receive buffer: the largest UDP payload, and the most GRO puts in one buffer.
pub(crate) const SLOT: usize = 65_536;
/// Most bytes in one GSO send. The kernel's limit is the IP packet's (65,535 bytes with
/// headers); this stays clear of it for IPv4 and IPv6 alike.
pub(crate) const MAX_GSO_BYTES: usize = 64_000;
/// Target for log events of this module.
const TARGET: &str = "msgnet::udp";

/// Binds a non-blocking UDP socket (IPv6 sockets are v6-only) with large kernel buffers.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // Best effort: the kernel may cap these; small buffers only cost retransmissions.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// Counters of the socket calls made, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct UdpStats {
    /// Send calls that succeeded.
    pub(crate) sends: u64,
    /// Of those, sends of more than one datagram (GSO).
    pub(crate) gso_sends: u64,
    /// Datagrams sent.
    pub(crate) datagrams_out: u64,
    /// Receive calls that returned data.
    pub(crate) recvs: u64,
    /// Receive buffers that held more than one datagram (GRO).
    pub(crate) gro_buffers: u64,
    /// Datagrams received.
    pub(crate) datagrams_in: u64,
}

/// One socket and its quinn-udp state (`None`: plain tokio calls).
struct Socket {
    io: UdpSocket,
    state: Option<UdpSocketState>,
    v4: bool,
}

impl Socket {
    fn new(io: UdpSocket) -> Self {
        let v4 = io.local_addr().map(|a| a.is_ipv4()).unwrap_or(true);
        let state = match UdpSocketState::new((&io).into()) {
            Ok(state) => Some(state),
            Err(e) => {
                debug!(target: TARGET, error = %e, "quinn-udp unavailable; plain socket calls");
                None
            }
        };
        debug!(
            target: TARGET,
            local = ?io.local_addr().ok(),
            max_gso_segments = state.as_ref().map_or(1, |s| s.max_gso_segments()) as u64,
            gro_segments = state.as_ref().map_or(1, |s| s.gro_segments()) as u64,
            "udp socket"
        );
        Self { io, state, v4 }
    }

    fn max_segments(&self) -> usize {
        self.state.as_ref().map_or(1, |s| s.max_gso_segments()).max(1)
    }

    /// Largest number of receive buffers one call fills.
    fn recv_slots(&self) -> usize {
        if self.state.is_some() {
            quinn_udp::BATCH_SIZE.max(1)
        } else {
            1
        }
    }

    /// One send call; `WouldBlock` clears tokio's write readiness.
    fn try_send(
        &self,
        dest: SocketAddr,
        contents: &[u8],
        segment: Option<usize>,
    ) -> io::Result<()> {
        match &self.state {
            Some(state) => {
                let transmit = Transmit {
                    destination: dest,
                    ecn: None,
                    contents,
                    segment_size: segment,
                    src_ip: None,
                };
                self.io.try_io(Interest::WRITABLE, || state.try_send((&self.io).into(), &transmit))
            }
            None => self.io.try_send_to(contents, dest).map(drop),
        }
    }

    /// Sends, waiting while the kernel's send buffer is full.
    async fn send(
        &self,
        dest: SocketAddr,
        contents: &[u8],
        segment: Option<usize>,
    ) -> io::Result<()> {
        loop {
            match self.try_send(dest, contents, segment) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.io.writable().await?,
                result => return result,
            }
        }
    }
}

/// Datagrams waiting to be sent as one GSO batch: equal-size segments (the last possibly
/// shorter) for one destination out of one socket.
#[derive(Default)]
struct TxBatch {
    buf: Vec<u8>,
    socket: usize,
    dest: Option<SocketAddr>,
    /// Size of every segment but possibly the last.
    segment: usize,
    count: usize,
}

impl TxBatch {
    /// Whether a datagram of `len` bytes for `dest` out of `socket` can join the batch.
    fn fits(&self, socket: usize, dest: SocketAddr, len: usize, max_segments: usize) -> bool {
        self.count == 0
            || (self.socket == socket
                && self.dest == Some(dest)
                // A shorter segment ends the batch.
                && self.buf.len() == self.count * self.segment
                && len <= self.segment
                && self.count < max_segments
                && self.buf.len() + len <= MAX_GSO_BYTES)
    }

    fn push(&mut self, socket: usize, dest: SocketAddr, data: &[u8]) {
        if self.count == 0 {
            self.socket = socket;
            self.dest = Some(dest);
            self.segment = data.len();
        }
        self.buf.extend_from_slice(data);
        self.count += 1;
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.dest = None;
        self.count = 0;
    }
}

/// Receive buffers and what the last [`Udp::recv`] put in them.
struct RxBuffers {
    buf: Box<[u8]>,
    meta: Vec<RecvMeta>,
    /// Source, start and length in `buf` of each received datagram.
    datagrams: Vec<(SocketAddr, usize, usize)>,
}

/// The host's sockets, one per address family, with batched I/O.
pub(crate) struct Udp {
    sockets: Vec<Socket>,
    tx: TxBatch,
    rx: RxBuffers,
    stats: UdpStats,
}

impl Udp {
    /// Takes over bound sockets (see [`bind`]), at most one per address family.
    pub(crate) fn new(sockets: Vec<UdpSocket>) -> Self {
        let sockets: Vec<Socket> = sockets.into_iter().map(Socket::new).collect();
        let slots = sockets.iter().map(Socket::recv_slots).max().unwrap_or(1);
        Self {
            sockets,
            tx: TxBatch { buf: Vec::with_capacity(MAX_GSO_BYTES), ..TxBatch::default() },
            rx: RxBuffers {
                buf: vec![0; slots * SLOT].into_boxed_slice(),
                meta: vec![RecvMeta::default(); slots],
                datagrams: Vec::with_capacity(slots),
            },
            stats: UdpStats::default(),
        }
    }

    /// Counters since the sockets were taken over.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn stats(&self) -> UdpStats {
        self.stats
    }

    /// Emits [`UdpStats`] as one `debug` event, `"udp totals"`.
    pub(crate) fn log_totals(&self) {
        let s = self.stats;
        debug!(
            target: TARGET,
            sends = s.sends,
            gso_sends = s.gso_sends,
            datagrams_out = s.datagrams_out,
            recvs = s.recvs,
            gro_buffers = s.gro_buffers,
            datagrams_in = s.datagrams_in,
            "udp totals"
        );
    }

    /// Resolves when socket `index` may be readable; never if there is no such socket.
    pub(crate) async fn readable(&self, index: usize) -> io::Result<()> {
        match self.sockets.get(index) {
            Some(socket) => socket.io.readable().await,
            None => std::future::pending().await,
        }
    }

    /// Queues a datagram for `dest`. It joins the pending batch if it can; otherwise the
    /// pending batch is sent first (waiting while the kernel's buffer is full). Call
    /// [`flush`](Self::flush) when there is nothing more to send.
    pub(crate) async fn send(&mut self, dest: SocketAddr, data: &[u8]) {
        let Some(index) = self.sockets.iter().position(|s| s.v4 == dest.is_ipv4()) else {
            debug!(target: TARGET, %dest, "no socket of the destination's address family; dropped");
            return;
        };
        let max = self.sockets.get(index).map_or(1, Socket::max_segments);
        if !self.tx.fits(index, dest, data.len(), max) {
            self.flush().await;
        }
        self.tx.push(index, dest, data);
    }

    /// Sends the pending batch, if any.
    pub(crate) async fn flush(&mut self) {
        let (Some(dest), Some(socket)) = (self.tx.dest, self.sockets.get(self.tx.socket)) else {
            self.tx.clear();
            return;
        };
        let (count, segment, contents) = (self.tx.count, self.tx.segment, &self.tx.buf[..]);
        let gso = (count > 1).then_some(segment);
        match socket.send(dest, contents, gso).await {
            Ok(()) => {
                trace!(target: TARGET, %dest, datagrams = count, bytes = contents.len(), "sent");
                self.stats.sends += 1;
                self.stats.gso_sends += u64::from(count > 1);
                self.stats.datagrams_out += count as u64;
            }
            Err(e) if count > 1 => {
                // E.g. a driver without GSO (quinn-udp then stops using it on this socket):
                // send the segments one by one.
                debug!(target: TARGET, %dest, error = %e, count, "GSO send failed; one by one");
                for data in contents.chunks(segment.max(1)) {
                    match socket.send(dest, data, None).await {
                        Ok(()) => {
                            trace!(target: TARGET, %dest, datagrams = 1, bytes = data.len(), "sent");
                            self.stats.sends += 1;
                            self.stats.datagrams_out += 1;
                        }
                        Err(e) => {
                            debug!(target: TARGET, %dest, error = %e, "send failed; datagram dropped")
                        }
                    }
                }
            }
            // Lost like any datagram; the protocol retransmits what matters.
            Err(e) => debug!(target: TARGET, %dest, error = %e, "send failed; datagram dropped"),
        }
        self.tx.clear();
    }

    /// One receive call on socket `index` (several datagrams where the platform allows).
    /// Returns how many datagrams it read (`0` if there is no such socket); take them with
    /// [`datagram`](Self::datagram) before the next call. `WouldBlock` when there is
    /// nothing to read.
    pub(crate) fn recv(&mut self, index: usize) -> io::Result<usize> {
        let rx = &mut self.rx;
        rx.datagrams.clear();
        let Some(socket) = self.sockets.get(index) else { return Ok(0) };
        match &socket.state {
            Some(state) => {
                let mut slots = rx.buf.chunks_mut(SLOT);
                let mut bufs: [IoSliceMut<'_>; quinn_udp::BATCH_SIZE] =
                    std::array::from_fn(|_| IoSliceMut::new(slots.next().unwrap_or_default()));
                let n = socket.recv_slots().min(rx.meta.len()).min(bufs.len());
                let (bufs, meta) = (&mut bufs[..n], &mut rx.meta[..n]);
                let n = socket
                    .io
                    .try_io(Interest::READABLE, || state.recv((&socket.io).into(), bufs, meta))?;
                for (slot, meta) in rx.meta.iter().take(n).enumerate() {
                    let start = slot * SLOT;
                    let end = start + meta.len.min(SLOT);
                    let stride = if meta.stride == 0 { SLOT } else { meta.stride };
                    self.stats.gro_buffers += u64::from(meta.len > stride);
                    let mut at = start;
                    while at < end {
                        let len = stride.min(end - at);
                        rx.datagrams.push((meta.addr, at, len));
                        at += len;
                    }
                }
            }
            None => {
                let (len, from) = socket.io.try_recv_from(&mut rx.buf[..SLOT])?;
                rx.datagrams.push((from, 0, len));
            }
        }
        let count = rx.datagrams.len();
        self.stats.recvs += 1;
        self.stats.datagrams_in += count as u64;
        trace!(
            target: TARGET,
            datagrams = count,
            bytes = rx.datagrams.iter().map(|d| d.2).sum::<usize>(),
            "received"
        );
        Ok(count)
    }

    /// Datagram `i` (`0..n`) of the last [`recv`](Self::recv), with its source.
    pub(crate) fn datagram(&mut self, i: usize) -> Option<(SocketAddr, &mut [u8])> {
        let &(from, start, len) = self.rx.datagrams.get(i)?;
        Some((from, self.rx.buf.get_mut(start..start + len)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn batch_takes_equal_sizes_and_one_shorter_last() {
        let mut b = TxBatch::default();
        let d = addr(1);
        assert!(b.fits(0, d, 100, 64));
        b.push(0, d, &[1; 100]);
        assert!(b.fits(0, d, 100, 64));
        assert!(!b.fits(1, d, 100, 64), "other socket");
        assert!(!b.fits(0, addr(2), 100, 64), "other destination");
        assert!(!b.fits(0, d, 101, 64), "larger");
        assert!(!b.fits(0, d, 100, 1), "segment limit");
        b.push(0, d, &[2; 100]);
        assert!(b.fits(0, d, 40, 64));
        b.push(0, d, &[3; 40]);
        assert!(!b.fits(0, d, 40, 64), "nothing after a shorter segment");
        assert_eq!((b.count, b.segment, b.buf.len()), (3, 100, 240));
        b.clear();
        assert!(b.fits(1, addr(2), 7, 1));
    }

    #[test]
    fn batch_stays_under_the_byte_limit() {
        let mut b = TxBatch::default();
        let d = addr(1);
        let n = MAX_GSO_BYTES / 1200;
        for _ in 0..n {
            assert!(b.fits(0, d, 1200, 64));
            b.push(0, d, &[0; 1200]);
        }
        assert!(!b.fits(0, d, 1200, 64));
    }

    /// Sends 10 datagrams of 100 bytes and one of 30 (one GSO batch where the kernel
    /// allows) from one socket to another on `ip`, and checks what arrives.
    async fn gso_round(ip: std::net::IpAddr) {
        let loopback = SocketAddr::new(ip, 0);
        let Ok(a_sock) = bind(loopback) else {
            eprintln!("cannot bind {loopback}; skipped");
            return;
        };
        let a_addr = a_sock.local_addr().expect("a's address");
        let mut a = Udp::new(vec![a_sock]);
        let b_sock = bind(loopback).expect("bind b");
        let b_addr = b_sock.local_addr().expect("b's address");
        let mut b = Udp::new(vec![b_sock]);
        for i in 0..10u8 {
            a.send(b_addr, &[i; 100]).await;
        }
        a.send(b_addr, &[10; 30]).await;
        a.flush().await;
        let max = a.sockets[0].max_segments();
        assert_eq!(a.stats().datagrams_out, 11);
        assert_eq!(a.stats().sends, if max >= 11 { 1 } else { 11 });

        let mut got = Vec::new();
        while got.len() < 11 {
            b.readable(0).await.expect("readable");
            match b.recv(0) {
                Ok(n) => {
                    for i in 0..n {
                        let (from, data) = b.datagram(i).expect("datagram");
                        assert_eq!(from, a_addr);
                        got.push(data.to_vec());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("recv: {e}"),
            }
        }
        for (i, d) in got.iter().enumerate() {
            let len = if i == 10 { 30 } else { 100 };
            assert_eq!(d, &vec![i as u8; len]);
        }
        assert_eq!(b.stats().datagrams_in, 11);
        assert!(b.datagram(11).is_none());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn gso_batch_arrives_as_separate_datagrams_v4() {
        gso_round([127, 0, 0, 1].into()).await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn gso_batch_arrives_as_separate_datagrams_v6() {
        gso_round(std::net::Ipv6Addr::LOCALHOST.into()).await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn no_socket_of_the_family_drops() {
        let mut a = Udp::new(vec![bind(addr(0)).expect("bind")]);
        a.send("[::1]:9".parse().expect("v6 address"), &[0; 10]).await;
        a.flush().await;
        assert_eq!(a.stats(), UdpStats::default());
    }
}
