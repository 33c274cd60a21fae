//! Endpoint configuration. Plain data; every field has a documented default.

use std::time::Duration;

/// How a message is delivered. Chosen per send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Delivery {
    /// A datagram: may be lost, never duplicated. `send` resolves once the message is
    /// handed to the socket.
    Unreliable,
    /// Delivered exactly once, in any order, or the sender's call fails with an error.
    /// `send` resolves when the peer has acknowledged the message.
    #[default]
    Reliable,
    /// Reliable, and delivered in order with the other `Ordered` messages of the same
    /// (peer, protocol) channel.
    Ordered,
}

/// Options for one send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendOptions {
    /// The delivery guarantee.
    pub delivery: Delivery,
    /// Whether the message may ride in the first handshake packet (0-RTT) when no session
    /// exists yet. 0-RTT data is protected against replay by the responder's per-peer
    /// timestamp check (see `docs/wire.md`, "Replay of the first packet"), which holds
    /// except across a responder restart inside the freshness window. Set this to `false`
    /// for messages that must never be processed twice under any circumstances.
    pub early_data: bool,
}

impl Default for SendOptions {
    fn default() -> Self {
        Self { delivery: Delivery::Reliable, early_data: true }
    }
}

/// Configuration of an [`Endpoint`](crate::Endpoint).
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Seed of the endpoint's RNG (ephemeral keys, receiver indices, cookie secrets).
    /// The driver fills it from the OS RNG; tests fix it for determinism.
    pub rng_seed: [u8; 32],
    /// Largest UDP payload sent before path MTU discovery. Default 1200.
    pub max_udp_payload: usize,
    /// Largest UDP payload path MTU discovery probes for (binary search from
    /// `max_udp_payload` up to this; equal values turn probing off). Default 1452 (an
    /// Ethernet path over IPv6). Datagrams are sent with "don't fragment": a probe too
    /// large for the path is lost, never fragmented.
    pub max_udp_payload_probe: usize,
    /// Pad the initiation packet up to this many bytes so that the responder's
    /// anti-amplification budget can carry a reply in the response packet. Default 1200.
    pub initiation_padding: usize,
    /// Interval of idle keepalive PINGs on a session with nothing else to send. Default 15 s.
    pub keepalive_interval: Duration,
    /// A session that hears nothing for this long is closed. Default 60 s.
    pub idle_timeout: Duration,
    /// Give up a handshake after this long. Default 10 s.
    pub handshake_timeout: Duration,
    /// First retransmission timeout of a handshake packet (doubles each time). Default 250 ms.
    pub handshake_retry: Duration,
    /// A reliable message not acknowledged within this time fails with
    /// `SendError::TimedOut`. Default 10 s.
    pub send_timeout: Duration,
    /// Rekey after this many packets sent with one key. Default 2^32.
    pub rekey_after_packets: u64,
    /// Rekey after a key has been in use this long. Default 120 s.
    pub rekey_after_time: Duration,
    /// A first packet whose timestamp differs from the responder's clock by more than
    /// this is refused as stale (bounds replay across restarts). Default 120 s.
    pub handshake_freshness: Duration,
    /// At most this many half-open handshakes (responder side) at once. Default 1024.
    pub max_half_open: usize,
    /// Above this many first packets per second the responder answers with a cookie
    /// and creates no state until the cookie comes back. Default 1000.
    pub cookie_threshold_per_sec: u32,
    /// At most this many sessions. Default 65536.
    pub max_sessions: usize,
    /// At most this many peers in the address book that have no session and no address
    /// given with [`Endpoint::add_address`](crate::Endpoint::add_address): peers known only
    /// because they contacted us. When one more goes idle (its last session ends), the
    /// one idle longest is forgotten, addresses and all; a later send to it then fails
    /// with `SendError::NoAddress` until an address is added. Default 4096.
    pub max_dormant_peers: usize,
    /// At most this many unacknowledged reliable messages per session; sends beyond it
    /// are refused with `SendError::Backpressure` so the caller waits. Default 4096.
    pub max_in_flight_messages: usize,
    /// Largest acknowledgement delay. Default 10 ms.
    pub max_ack_delay: Duration,
    /// Largest reliable message (fragmented and reassembled). Default 4 MiB; up to 4 GiB.
    pub max_message_size: usize,
    /// Largest unreliable message; dropped whole if a fragment is missing at its
    /// deadline. Default 64 KiB.
    pub max_unreliable_message_size: usize,
    /// Reassembly memory one session may hold (at least `max_message_size` is always
    /// allowed). Default 8 MiB.
    pub max_reassembly_per_session: usize,
    /// Reassembly memory the whole endpoint may hold. Default 64 MiB.
    pub max_reassembly_total: usize,
    /// A reliable partial message that receives no fragment for this long is dropped
    /// (its sender then fails the send). Default 30 s.
    pub reassembly_timeout: Duration,
    /// An unreliable fragmented message incomplete this long after its first fragment is
    /// dropped whole. Default 2 s.
    pub unreliable_reassembly_timeout: Duration,
    /// An unreliable message not entirely handed to the network this long after `send`
    /// is dropped (its `send` fails with `TimedOut`): unreliable data is never sent
    /// late. Default 2 s.
    pub unreliable_deadline: Duration,
    /// Bytes of unacknowledged outbound payload per session before `send` reports
    /// `Backpressure` (a single message larger than this is still accepted when nothing
    /// else is in flight). Default 64 MiB.
    pub max_send_buffer: usize,
    /// Put several queued messages into one packet. Default true; false sends one
    /// message per datagram (for measurements against one `sendto` per datagram).
    pub coalesce: bool,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            rng_seed: [0; 32],
            max_udp_payload: 1200,
            max_udp_payload_probe: 1452,
            initiation_padding: 1200,
            keepalive_interval: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            handshake_retry: Duration::from_millis(250),
            send_timeout: Duration::from_secs(10),
            rekey_after_packets: 1 << 32,
            rekey_after_time: Duration::from_secs(120),
            handshake_freshness: Duration::from_secs(120),
            max_half_open: 1024,
            cookie_threshold_per_sec: 1000,
            max_sessions: 65536,
            max_dormant_peers: 4096,
            max_in_flight_messages: 4096,
            max_ack_delay: Duration::from_millis(10),
            coalesce: true,
            max_message_size: 4 << 20,
            max_unreliable_message_size: 64 << 10,
            max_reassembly_per_session: 8 << 20,
            max_reassembly_total: 64 << 20,
            reassembly_timeout: Duration::from_secs(30),
            unreliable_reassembly_timeout: Duration::from_secs(2),
            max_send_buffer: 64 << 20,
            unreliable_deadline: Duration::from_secs(2),
        }
    }
}
