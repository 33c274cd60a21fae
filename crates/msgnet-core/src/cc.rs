//! Congestion control (NewReno, RFC 9002 §7) with pacing.
//!
//! Every ack-eliciting packet counts against the congestion window, whatever it carries:
//! unreliable messages are congestion-controlled like reliable ones. Packets that only
//! acknowledge are not. A token bucket paces sending at 1.25 × cwnd / srtt with a burst of
//! ten packets, so a window's worth of data does not leave in one burst.
//!
//! Pure state: time comes in as arguments; the session calls it.

use std::time::{Duration, Instant};

/// Packets a burst may hold before pacing delays the next one.
const BURST_PACKETS: u64 = 10;

#[derive(Debug, Clone)]
pub(crate) struct Congestion {
    mss: u64,
    cwnd: u64,
    ssthresh: u64,
    in_flight: u64,
    /// Losses of packets sent before this instant belong to the current recovery.
    recovery_start: Option<Instant>,
    /// Pacing tokens, in bytes (fractional: refills every microsecond must add up).
    tokens: f64,
    last_refill: Option<Instant>,
}

impl Congestion {
    pub(crate) fn new(mss: usize) -> Self {
        let mss = mss.max(1200) as u64;
        let cwnd = (10 * mss).min(14_720.max(2 * mss));
        Self {
            mss,
            cwnd,
            ssthresh: u64::MAX,
            in_flight: 0,
            recovery_start: None,
            tokens: (BURST_PACKETS * mss) as f64,
            last_refill: None,
        }
    }

    pub(crate) fn window(&self) -> u64 {
        self.cwnd
    }

    pub(crate) fn in_flight(&self) -> u64 {
        self.in_flight
    }

    fn min_window(&self) -> u64 {
        2 * self.mss
    }

    /// Whether the window has room for a packet of `bytes`.
    pub(crate) fn window_allows(&self, bytes: usize) -> bool {
        self.in_flight + bytes as u64 <= self.cwnd
    }

    fn rate(&self, srtt: Duration) -> f64 {
        let srtt = srtt.as_secs_f64().max(1e-6);
        1.25 * self.cwnd as f64 / srtt
    }

    fn refill(&mut self, now: Instant, srtt: Duration) {
        let cap = (BURST_PACKETS * self.mss).max(self.cwnd / 4) as f64;
        match self.last_refill {
            None => self.tokens = cap,
            Some(t) => {
                let dt = now.saturating_duration_since(t).as_secs_f64();
                self.tokens = (self.tokens + self.rate(srtt) * dt).min(cap);
            }
        }
        self.last_refill = Some(now);
    }

    /// `None` if a packet of `bytes` may leave now; otherwise when it may.
    pub(crate) fn pacing_delay(&mut self, now: Instant, srtt: Duration, bytes: usize) -> Option<Instant> {
        self.refill(now, srtt);
        let bytes = bytes as f64;
        if self.tokens >= bytes {
            return None;
        }
        let missing = bytes - self.tokens;
        let wait = Duration::from_secs_f64(missing / self.rate(srtt));
        Some(now + wait.max(Duration::from_micros(1)))
    }

    pub(crate) fn on_sent(&mut self, bytes: usize) {
        self.in_flight += bytes as u64;
        self.tokens = (self.tokens - bytes as f64).max(0.0);
    }

    pub(crate) fn on_ack(&mut self, sent: Instant, bytes: usize) {
        let bytes = bytes as u64;
        self.in_flight = self.in_flight.saturating_sub(bytes);
        if self.recovery_start.is_some_and(|r| sent <= r) {
            return; // no growth for packets sent before the recovery began
        }
        if self.cwnd < self.ssthresh {
            self.cwnd += bytes;
        } else {
            self.cwnd += (self.mss * bytes / self.cwnd).max(1);
        }
    }

    /// Removes a packet from the bytes in flight without a congestion signal.
    pub(crate) fn forget(&mut self, bytes: usize) {
        self.in_flight = self.in_flight.saturating_sub(bytes as u64);
    }

    /// A packet sent at `sent` was declared lost at `now`.
    pub(crate) fn on_loss(&mut self, now: Instant, sent: Instant, bytes: usize) {
        self.in_flight = self.in_flight.saturating_sub(bytes as u64);
        if self.recovery_start.is_some_and(|r| sent <= r) {
            return; // one reduction per round trip
        }
        self.recovery_start = Some(now);
        self.cwnd = (self.cwnd / 2).max(self.min_window());
        self.ssthresh = self.cwnd;
    }

    /// The retransmission timeout fired: everything in flight is presumed lost.
    pub(crate) fn on_timeout(&mut self, now: Instant) {
        self.recovery_start = Some(now);
        self.ssthresh = (self.cwnd / 2).max(self.min_window());
        self.cwnd = self.min_window();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_start_then_halving_then_linear() {
        let t0 = Instant::now();
        let mut c = Congestion::new(1200);
        let w0 = c.window();
        c.on_sent(1200);
        c.on_ack(t0, 1200);
        assert_eq!(c.window(), w0 + 1200, "slow start grows by the bytes acked");
        let t1 = t0 + Duration::from_millis(10);
        c.on_sent(2400);
        c.on_loss(t1, t0 + Duration::from_millis(5), 1200);
        let halved = c.window();
        assert_eq!(halved, (w0 + 1200) / 2);
        c.on_loss(t1, t0 + Duration::from_millis(6), 1200);
        assert_eq!(c.window(), halved, "one reduction per recovery");
        c.on_sent(1200);
        c.on_ack(t1 + Duration::from_millis(1), 1200);
        assert!(c.window() > halved && c.window() < halved + 1200, "congestion avoidance");
        assert_eq!(c.in_flight(), 0);
    }

    #[test]
    fn pacing_spreads_a_window() {
        let t0 = Instant::now();
        let mut c = Congestion::new(1200);
        let srtt = Duration::from_millis(100);
        let mut sent = 0;
        while c.pacing_delay(t0, srtt, 1200).is_none() {
            c.on_sent(1200);
            sent += 1;
        }
        assert_eq!(sent, BURST_PACKETS, "a burst, then pacing");
        let next = c.pacing_delay(t0, srtt, 1200).unwrap();
        assert!(next > t0 && next < t0 + Duration::from_millis(20));
    }
}
