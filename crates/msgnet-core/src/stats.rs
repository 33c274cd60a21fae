//! Counters: every dropped packet is counted under its reason.

use std::fmt;

/// Why an incoming datagram (or part of it) was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DropReason {
    /// Could not be parsed (truncated, bad varint, unknown packet type, trailing bytes).
    Malformed,
    /// A data packet for a receiver index that names no session.
    UnknownSession,
    /// AEAD authentication failed (forged, bit-flipped, or wrong key).
    Decrypt,
    /// A packet number already seen or older than the replay window.
    Replay,
    /// A handshake packet that failed (bad Noise message, bad identity signature,
    /// wrong peer id, wrong state).
    Handshake,
    /// A first packet whose timestamp is not newer than the last one seen from that
    /// peer, or outside the freshness window.
    StaleInitiation,
    /// A first packet that arrived under load without a valid cookie (answered with a
    /// cookie reply instead).
    CookieRequired,
    /// The half-open table is full.
    HalfOpenLimit,
    /// The session table is full.
    SessionLimit,
    /// The decrypted frames violated the protocol (bad protocol int, bad sequence).
    ProtocolViolation,
    /// A handshake response or cookie for a handshake we did not start.
    Unexpected,
    /// A fragment that would exceed the reassembly memory bounds.
    ReassemblyLimit,
}

impl DropReason {
    /// All reasons, in counter order.
    pub const ALL: [DropReason; 12] = [
        DropReason::Malformed,
        DropReason::UnknownSession,
        DropReason::Decrypt,
        DropReason::Replay,
        DropReason::Handshake,
        DropReason::StaleInitiation,
        DropReason::CookieRequired,
        DropReason::HalfOpenLimit,
        DropReason::SessionLimit,
        DropReason::ProtocolViolation,
        DropReason::Unexpected,
        DropReason::ReassemblyLimit,
    ];

    fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }

    /// Short snake_case name, as printed in metrics.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::UnknownSession => "unknown_session",
            DropReason::Decrypt => "decrypt",
            DropReason::Replay => "replay",
            DropReason::Handshake => "handshake",
            DropReason::StaleInitiation => "stale_initiation",
            DropReason::CookieRequired => "cookie_required",
            DropReason::HalfOpenLimit => "half_open_limit",
            DropReason::SessionLimit => "session_limit",
            DropReason::ProtocolViolation => "protocol_violation",
            DropReason::Unexpected => "unexpected",
            DropReason::ReassemblyLimit => "reassembly_limit",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Endpoint-wide counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Datagrams received.
    pub rx_datagrams: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Datagrams sent.
    pub tx_datagrams: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Messages delivered to handlers.
    pub messages_delivered: u64,
    /// Handshakes completed (either role).
    pub handshakes_completed: u64,
    /// Cookie replies sent.
    pub cookie_replies_sent: u64,
    /// Retransmitted packets (handshake and data).
    pub retransmissions: u64,
    drops: [u64; DropReason::ALL.len()],
}

impl EndpointStats {
    /// Count one drop.
    pub fn drop_packet(&mut self, reason: DropReason) {
        self.drops[reason.index()] += 1;
    }
    /// Drops counted under `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()]
    }
    /// Drops under every reason.
    pub fn dropped_total(&self) -> u64 {
        self.drops.iter().sum()
    }
    /// `(reason, count)` for every reason with a non-zero count.
    pub fn drops(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|r| (*r, self.dropped(*r))).filter(|(_, n)| *n > 0)
    }
}
