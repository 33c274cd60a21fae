//! The trace hash: one 64-bit fingerprint of every datagram event of a run (sent,
//! lost, tail-dropped, dropped at a down node, duplicated, delivered), with its virtual
//! time, endpoints and bytes. Two runs with the same hash did the same thing on the
//! wire. This module owns only the hash function; `sim.rs` decides what to feed it.
//!
//! The mixing function is fixed here (not `std`'s hasher), so the value is stable
//! across Rust versions and platforms.

use std::time::Duration;

/// What happened to a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Mark {
    /// Handed to a link by its sender.
    Sent = 1,
    /// Lost by the loss model.
    Lost = 2,
    /// Tail-dropped by a full queue.
    QueueFull = 3,
    /// Dropped because the sender or the receiver was down.
    Down = 4,
    /// Copied by the link (the copy is delivered separately).
    Duplicated = 5,
    /// Handed to the receiving endpoint.
    Delivered = 6,
    /// Sent to an address no node has.
    Unroutable = 7,
}

/// One datagram event, kept when [`Sim::set_trace_log`](crate::Sim::set_trace_log) is
/// on: to find where two runs that should be equal diverge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceRecord {
    /// What happened.
    pub mark: Mark,
    /// Virtual time.
    pub at: Duration,
    /// Sending node index.
    pub from: usize,
    /// Receiving node index (`usize::MAX` when unroutable).
    pub to: usize,
    /// Length of the datagram.
    pub len: usize,
    /// Hash of the datagram's bytes.
    pub digest: u64,
}

const K: u64 = 0x9E37_79B9_7F4A_7C15;

/// A running 64-bit hash.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Trace(u64);

impl Default for Trace {
    fn default() -> Self {
        Self(0xCBF2_9CE4_8422_2325)
    }
}

impl Trace {
    fn mix(&mut self, x: u64) {
        let h = (self.0 ^ x).wrapping_mul(K);
        self.0 = h ^ (h >> 29);
    }

    /// Hashes datagram contents into one word (done once per datagram when sent).
    pub(crate) fn digest(data: &[u8]) -> u64 {
        let mut t = Trace::default();
        t.mix(data.len() as u64);
        let mut chunks = data.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            t.mix(u64::from_le_bytes(w));
        }
        let mut w = [0u8; 8];
        let rest = chunks.remainder();
        w[..rest.len()].copy_from_slice(rest);
        t.mix(u64::from_le_bytes(w));
        t.0
    }

    /// Records one datagram event.
    pub(crate) fn record(&mut self, mark: Mark, at: Duration, from: usize, to: usize, digest: u64) {
        self.mix(mark as u64);
        self.mix(u64::try_from(at.as_nanos()).unwrap_or(u64::MAX));
        self.mix(from as u64);
        self.mix(to as u64);
        self.mix(digest);
    }

    pub(crate) fn value(&self) -> u64 {
        self.0
    }
}
