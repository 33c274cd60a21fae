//! Measurement kernels shared by `msgnet bench` and `cargo bench -p msgnet-cli`.
//!
//! Each kernel exists twice, once over msgnet ([`pair`]) and once over raw UDP
//! ([`raw`]), doing the same exchange so that the two can be compared in one run:
//!
//! - a warm request/response round trip;
//! - a one-way message rate, counted at the receiver;
//! - (msgnet only) bytes on the wire per message.
//!
//! [`bulk`] (`msgnet bench --bulk`) moves N MiB one way, msgnet beside rust-libp2p
//! ([`libp2p_baseline`]) over QUIC and over TCP+noise+yamux.
//!
//! [`streams`] (`msgnet bench --streams`) compares msgnet's long-lived libp2p stream
//! (`msgnet-libp2p`) with rust-libp2p `request-response` over TCP and QUIC.

use std::time::Duration;

pub mod bulk;
pub mod libp2p_baseline;
pub mod pair;
pub mod raw;
pub mod streams;

/// Payload size of every benchmark message.
pub const PAYLOAD: usize = 64;

/// Outcome of a one-way rate run, as seen by the receiver.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rate {
    /// Messages the sender handed over successfully.
    pub sent: u64,
    /// Messages the receiver counted.
    pub received: u64,
    /// Time from the first to the last message the receiver counted.
    pub elapsed: Duration,
}

impl Rate {
    /// Messages per second at the receiver (0 when fewer than two arrived).
    pub fn per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if self.received < 2 || secs <= 0.0 {
            return 0.0;
        }
        (self.received - 1) as f64 / secs
    }

    /// Fraction of sent messages that did not arrive.
    pub fn loss(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        self.sent.saturating_sub(self.received) as f64 / self.sent as f64
    }
}

/// Median and 99th percentile of round-trip samples (sorts them in place).
pub fn median_p99(samples: &mut [Duration]) -> (Duration, Duration) {
    if samples.is_empty() {
        return (Duration::ZERO, Duration::ZERO);
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

/// Receiver-side bookkeeping of a rate run: count, first and last arrival.
#[derive(Debug, Default)]
pub struct Arrivals {
    count: u64,
    first: Option<std::time::Instant>,
    last: Option<std::time::Instant>,
}

impl Arrivals {
    /// Count one arrival now.
    pub fn hit(&mut self) {
        let now = std::time::Instant::now();
        self.count += 1;
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// Arrivals so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The rate, given what the sender sent.
    pub fn rate(&self, sent: u64) -> Rate {
        let elapsed = match (self.first, self.last) {
            (Some(f), Some(l)) => l - f,
            _ => Duration::ZERO,
        };
        Rate {
            sent,
            received: self.count,
            elapsed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let mut v: Vec<Duration> = (1..=100).rev().map(Duration::from_micros).collect();
        let (m, p) = median_p99(&mut v);
        assert_eq!(m, Duration::from_micros(51));
        assert_eq!(p, Duration::from_micros(99));
    }
}
