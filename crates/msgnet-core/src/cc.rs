//! Congestion control (NewReno, RFC 9002 §7) with HyStart++ (RFC 9406) and pacing.
//!
//! Every ack-eliciting packet counts against the congestion window, whatever it carries:
//! unreliable messages are congestion-controlled like reliable ones. Packets that only
//! acknowledge are not.
//!
//! ## Pacing
//!
//! A token bucket paces sending at 1.25 × cwnd / srtt. Its depth (the largest burst) is
//! what the pacing rate delivers in [`BURST_INTERVAL`], between [`MIN_BURST_PACKETS`] and
//! [`MAX_BURST_PACKETS`] packets (quinn's pacer does the same): a driver's timer fires
//! about a millisecond late at best, so finer pacing is impossible anyway, and refusing
//! the burst would leave the link idle while the timer runs. At a 100 ms RTT the burst is
//! 2 % of the window (a window leaves spread over the round trip); at a 100 µs RTT it is
//! the cap, and the window, not the pacer, limits what is in flight.
//!
//! ## Leaving slow start: HyStart++
//!
//! Slow start doubles the window every round trip until a loss. On a fast path with a
//! deep queue in front of the receiver (loopback into a receive socket buffer), the window
//! then reaches twice what the path holds before the first drop, and the drops come in
//! whole GSO batches. HyStart++ (RFC 9406) leaves slow start earlier, on delay: it keeps
//! the smallest RTT sample of each round (a round ends when a packet sent after it began
//! is acknowledged) and, once a round has [`N_RTT_SAMPLE`] samples, compares its minimum
//! with the previous round's. When it has grown by `clamp(last / 8, 4 ms, 16 ms)`, a queue
//! is building: Conservative Slow Start (CSS) grows the window at a quarter of the slow
//! start rate for at most [`CSS_ROUNDS`] rounds, then congestion avoidance takes over. A
//! CSS round whose minimum falls back below the RTT that triggered it means the exit was
//! spurious: slow start resumes. Only the first slow start uses it (RFC 9406 §4.3): after
//! a loss or a timeout, the `ssthresh` that slow start learned ends it. The pacer makes
//! the RFC's burst limit `L` infinite (§4.2): every acknowledged byte counts.
//!
//! ## Retransmission timeouts
//!
//! The session's timer probes first (RFC 9002 §6.2) and calls
//! [`on_timeout`](Congestion::on_timeout) only when nothing has been acknowledged for
//! several timeout periods (persistent congestion, §7.6): the window then collapses.
//!
//! Pure state: time comes in as arguments; the session calls it.

use std::time::{Duration, Instant};

/// A burst may hold what the pacing rate delivers in this long (within the bounds below).
const BURST_INTERVAL: Duration = Duration::from_millis(2);
/// Packets a burst may always hold.
const MIN_BURST_PACKETS: u64 = 10;
/// Packets a burst may hold at most, however fast the pacing rate.
const MAX_BURST_PACKETS: u64 = 256;

/// HyStart++: the smallest RTT increase that ends slow start (RFC 9406 §4.3).
const MIN_RTT_THRESH: Duration = Duration::from_millis(4);
/// HyStart++: the largest RTT increase slow start waits for.
const MAX_RTT_THRESH: Duration = Duration::from_millis(16);
/// HyStart++: the RTT threshold is the last round's minimum divided by this (in bounds).
const MIN_RTT_DIVISOR: u32 = 8;
/// HyStart++: RTT samples a round needs before its minimum is compared.
const N_RTT_SAMPLE: u32 = 8;
/// HyStart++: Conservative Slow Start grows the window this many times slower.
const CSS_GROWTH_DIVISOR: u64 = 4;
/// HyStart++: rounds of Conservative Slow Start before congestion avoidance.
const CSS_ROUNDS: u32 = 5;

/// Where HyStart++ (RFC 9406) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The first slow start, watching the RTT.
    SlowStart,
    /// Conservative Slow Start: the RTT grew past the threshold.
    Css {
        /// The round minimum that triggered it (`cssBaselineMinRtt`).
        baseline: Duration,
        /// Rounds ended since it began (the partial first one counts).
        rounds: u32,
    },
    /// HyStart++ is over: congestion avoidance, or a later slow start after a loss or
    /// a timeout (which `ssthresh` ends).
    Off,
}

/// HyStart++ state: rounds and their minimum RTTs.
#[derive(Debug, Clone)]
struct HyStart {
    phase: Phase,
    /// The round ends when a packet numbered at least this is acknowledged (`windowEnd`);
    /// `None` before the first acknowledgement.
    window_end: Option<u64>,
    /// Minimum RTT of the previous round (`lastRoundMinRTT`; `None` is infinity).
    last_round_min: Option<Duration>,
    /// Minimum RTT of this round so far (`currentRoundMinRTT`).
    round_min: Option<Duration>,
    /// RTT samples in this round (`rttSampleCount`).
    samples: u32,
}

impl HyStart {
    fn new() -> Self {
        Self { phase: Phase::SlowStart, window_end: None, last_round_min: None, round_min: None, samples: 0 }
    }
}

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
    hystart: HyStart,
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
            tokens: (MIN_BURST_PACKETS * mss) as f64,
            last_refill: None,
            hystart: HyStart::new(),
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

    /// Whether the window limits the sender: at least half of it in flight in slow start
    /// (which doubles it per round trip), all but three packets in congestion avoidance
    /// (Linux's `tcp_is_cwnd_limited`). The window grows only then (RFC 9002 §7.8): an
    /// application-limited sender would otherwise grow it without bound and, once it has
    /// more to send, burst far beyond what the path ever carried.
    fn cwnd_limited(&self) -> bool {
        if self.cwnd < self.ssthresh {
            self.in_flight.saturating_mul(2) >= self.cwnd
        } else {
            self.in_flight + 3 * self.mss >= self.cwnd
        }
    }

    fn rate(&self, srtt: Duration) -> f64 {
        let srtt = srtt.as_secs_f64().max(1e-6);
        1.25 * self.cwnd as f64 / srtt
    }

    /// Depth of the token bucket: [`BURST_INTERVAL`] at the pacing rate, in bounds.
    fn burst(&self, srtt: Duration) -> f64 {
        let min = (MIN_BURST_PACKETS * self.mss) as f64;
        let max = (MAX_BURST_PACKETS * self.mss) as f64;
        (self.rate(srtt) * BURST_INTERVAL.as_secs_f64()).clamp(min, max)
    }

    fn refill(&mut self, now: Instant, srtt: Duration) {
        let cap = self.burst(srtt);
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
        let limited = self.cwnd_limited();
        self.in_flight = self.in_flight.saturating_sub(bytes);
        if self.recovery_start.is_some_and(|r| sent <= r) {
            return; // no growth for packets sent before the recovery began
        }
        if !limited {
            return; // the sender does not use the window: acks say nothing about a larger one
        }
        if self.cwnd < self.ssthresh {
            self.cwnd += match self.hystart.phase {
                Phase::Css { .. } => (bytes / CSS_GROWTH_DIVISOR).max(1),
                Phase::SlowStart | Phase::Off => bytes,
            };
        } else {
            self.cwnd += (self.mss * bytes / self.cwnd).max(1);
        }
    }

    /// HyStart++: one acknowledgement arrived; call before its packets go through
    /// [`on_ack`](Self::on_ack) (a round's first acknowledgement belongs to it). `largest`
    /// is the largest packet number it newly acknowledged, `rtt` its RTT sample if it gave
    /// one (the raw sample, send to acknowledgement), `next_pn` the number the next packet
    /// sent will carry.
    pub(crate) fn on_ack_received(&mut self, largest: u64, rtt: Option<Duration>, next_pn: u64) {
        let h = &mut self.hystart;
        if h.phase == Phase::Off {
            return;
        }
        if h.window_end.is_none_or(|end| largest >= end) {
            // A new round: what is sent from now on ends it when acknowledged.
            h.window_end = Some(next_pn);
            h.last_round_min = h.round_min;
            h.round_min = None;
            h.samples = 0;
            if let Phase::Css { baseline, rounds } = h.phase {
                let rounds = rounds + 1;
                if rounds >= CSS_ROUNDS {
                    h.phase = Phase::Off;
                    self.ssthresh = self.cwnd;
                    return;
                }
                h.phase = Phase::Css { baseline, rounds };
            }
        }
        let Some(rtt) = rtt else { return };
        h.round_min = Some(h.round_min.map_or(rtt, |m| m.min(rtt)));
        h.samples += 1;
        if h.samples < N_RTT_SAMPLE {
            return;
        }
        let Some(current) = h.round_min else { return };
        match h.phase {
            Phase::SlowStart => {
                let Some(last) = h.last_round_min else { return };
                let thresh = (last / MIN_RTT_DIVISOR).clamp(MIN_RTT_THRESH, MAX_RTT_THRESH);
                if current >= last + thresh {
                    h.phase = Phase::Css { baseline: current, rounds: 0 };
                }
            }
            // Only a round that began in CSS judges the exit: within the round that
            // entered it, the minimum only falls back to where it came from.
            Phase::Css { baseline, rounds } if rounds >= 1 => {
                if current < baseline {
                    h.phase = Phase::SlowStart; // the exit was spurious
                }
            }
            Phase::Css { .. } | Phase::Off => {}
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
        self.hystart.phase = Phase::Off;
    }

    /// Persistent congestion: nothing acknowledged for several timeout periods, and
    /// everything old presumed lost (each packet reported with [`on_loss`](Self::on_loss)).
    pub(crate) fn on_timeout(&mut self, now: Instant) {
        self.recovery_start = Some(now);
        self.ssthresh = (self.cwnd / 2).max(self.min_window());
        self.cwnd = self.min_window();
        self.hystart.phase = Phase::Off;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The virtual clock's origin. `Instant` has no constructor, so the tests read the
    /// clock once here; everything after it is `t0 + Duration` (virtual time).
    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn slow_start_then_halving_then_linear() {
        let t0 = t0();
        let mut c = Congestion::new(1200);
        let w0 = c.window();
        c.on_sent(w0 as usize);
        c.on_ack(t0, 1200);
        assert_eq!(c.window(), w0 + 1200, "slow start grows by the bytes acked");
        c.forget(w0 as usize - 1200);
        let t1 = t0 + Duration::from_millis(10);
        c.on_sent(2400);
        c.on_loss(t1, t0 + Duration::from_millis(5), 1200);
        let halved = c.window();
        assert_eq!(halved, (w0 + 1200) / 2);
        c.on_loss(t1, t0 + Duration::from_millis(6), 1200);
        assert_eq!(c.window(), halved, "one reduction per recovery");
        c.on_sent(halved as usize);
        c.on_ack(t1 + Duration::from_millis(1), 1200);
        assert!(c.window() > halved && c.window() < halved + 1200, "congestion avoidance");
        c.forget(halved as usize - 1200);
        assert_eq!(c.in_flight(), 0);
    }

    #[test]
    fn an_application_limited_sender_does_not_grow_the_window() {
        let t0 = t0();
        let mut c = Congestion::new(1200);
        let w0 = c.window();
        // One packet at a time in flight: far below half the window.
        for _ in 0..100 {
            c.on_sent(1200);
            c.on_ack(t0, 1200);
        }
        assert_eq!(c.window(), w0);
        // A full window in flight: slow start resumes.
        c.on_sent(w0 as usize);
        c.on_ack(t0, 1200);
        assert_eq!(c.window(), w0 + 1200);
    }

    #[test]
    fn pacing_spreads_a_window() {
        let t0 = t0();
        let mut c = Congestion::new(1200);
        let srtt = Duration::from_millis(100);
        let mut sent = 0;
        while c.pacing_delay(t0, srtt, 1200).is_none() {
            c.on_sent(1200);
            sent += 1;
        }
        assert_eq!(sent, MIN_BURST_PACKETS, "a burst, then pacing");
        let next = c.pacing_delay(t0, srtt, 1200).unwrap();
        assert!(next > t0 && next < t0 + Duration::from_millis(20));
    }

    /// Grows the window in slow start to at least `bytes`.
    fn grown(bytes: u64) -> Congestion {
        let t0 = t0();
        let mut c = Congestion::new(1200);
        while c.window() < bytes {
            let w = c.window() as usize;
            c.on_sent(w);
            c.on_ack(t0, w);
        }
        c
    }

    /// Packets that leave at `t0` before pacing holds one back.
    fn burst_at(c: &mut Congestion, t0: Instant, srtt: Duration) -> u64 {
        let mut sent = 0;
        while c.pacing_delay(t0, srtt, 1200).is_none() && sent < 10_000 {
            c.on_sent(1200);
            sent += 1;
        }
        sent
    }

    #[test]
    fn burst_is_two_milliseconds_of_the_rate_within_bounds() {
        let t0 = t0();
        // A 1,536,000-byte window at 100 ms: 19.2 MB/s; 2 ms of it, 38.4 kB, is 32 packets.
        let mut c = grown(1_200_000);
        assert_eq!(c.window(), 1_536_000);
        assert_eq!(burst_at(&mut c, t0, Duration::from_millis(100)), 32);
        // The same window at 100 µs: the cap, not the whole window.
        let mut c = grown(1_200_000);
        assert_eq!(burst_at(&mut c, t0, Duration::from_micros(100)), MAX_BURST_PACKETS);
        // After the burst, tokens come back at the rate: 1 ms at 100 µs is a full burst.
        let later = t0 + Duration::from_millis(1);
        assert_eq!(burst_at(&mut c, later, Duration::from_micros(100)), MAX_BURST_PACKETS);
    }

    /// A sender on a virtual clock for HyStart++ that keeps its window full: each
    /// acknowledgement (one per packet, with an RTT sample) lets new packets out, which
    /// form the next round.
    struct Flow {
        c: Congestion,
        next_pn: u64,
        in_flight: std::collections::VecDeque<u64>,
        t: Instant,
    }

    impl Flow {
        fn new() -> Self {
            let mut f = Self {
                c: Congestion::new(1200),
                next_pn: 1,
                in_flight: Default::default(),
                t: t0(),
            };
            f.fill();
            f
        }

        fn fill(&mut self) {
            while self.c.window_allows(1200) {
                self.c.on_sent(1200);
                self.in_flight.push_back(self.next_pn);
                self.next_pn += 1;
            }
        }

        /// One round: every packet in flight acknowledged after `rtt`, the `i`th
        /// acknowledgement with the RTT sample `sample(i)`. Returns the window growth.
        fn round_by(&mut self, rtt: Duration, sample: impl Fn(u64) -> Option<Duration>) -> u64 {
            let before = self.c.window();
            let sent = self.t;
            self.t += rtt;
            let round: Vec<u64> = self.in_flight.drain(..).collect();
            for (i, pn) in round.into_iter().enumerate() {
                self.c.on_ack_received(pn, sample(i as u64), self.next_pn);
                self.c.on_ack(sent, 1200);
                self.fill();
            }
            self.c.window() - before
        }

        /// One round, the first `samples` acknowledgements with the RTT sample `rtt`.
        fn round_with(&mut self, rtt: Duration, samples: u64) -> u64 {
            self.round_by(rtt, |i| (i < samples).then_some(rtt))
        }

        fn round(&mut self, rtt: Duration) -> u64 {
            self.round_with(rtt, u64::MAX)
        }

        /// Every packet in flight declared lost now.
        fn lose_all(&mut self) {
            for _ in self.in_flight.drain(..) {
                self.c.on_loss(self.t, self.t, 1200);
            }
        }
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn hystart_leaves_slow_start_when_the_rtt_grows_then_css_then_avoidance() {
        let mut f = Flow::new();
        let w0 = f.c.window();
        assert_eq!(f.round(10 * MS), w0, "slow start doubles");
        assert_eq!(f.round(10 * MS), 2 * w0);
        // +3 ms at 10 ms is below the 4 ms floor of the threshold: still slow start.
        assert_eq!(f.round(13 * MS), 4 * w0);
        assert_eq!(f.c.hystart.phase, Phase::SlowStart);
        // +4 ms: Conservative Slow Start from the eighth sample on, a quarter the growth.
        let n = u64::from(N_RTT_SAMPLE);
        let w = f.c.window();
        let grown = f.round(17 * MS);
        assert!(matches!(f.c.hystart.phase, Phase::Css { baseline, .. } if baseline == 17 * MS));
        let packets = w / 1200;
        assert_eq!(grown, (n - 1) * 1200 + (packets - n + 1) * 300);
        // The partial round counted: four more, with the RTT steady, then avoidance.
        for _ in 0..CSS_ROUNDS - 1 {
            let w = f.c.window();
            assert!(f.c.window() < f.c.ssthresh);
            assert_eq!(f.round(17 * MS), w / 1200 * 300, "CSS grows by a quarter per round");
        }
        // The next round's first acknowledgement ends CSS: ssthresh is the window.
        let w = f.c.window();
        f.round(17 * MS);
        assert_eq!(f.c.hystart.phase, Phase::Off);
        assert_eq!(f.c.ssthresh, w);
        assert!(f.c.window() - w < 2 * 1200, "congestion avoidance: about a packet per round");
    }

    #[test]
    fn hystart_threshold_is_an_eighth_of_the_rtt_within_4_and_16_ms() {
        // 80 ms: the threshold is 10 ms; +9 ms stays in slow start, +10 ms leaves.
        let step = |base: Duration, rtt: Duration| {
            let mut f = Flow::new();
            f.round(base);
            f.round(base);
            f.round(rtt);
            f.c.hystart.phase
        };
        assert_eq!(step(80 * MS, 89 * MS), Phase::SlowStart);
        assert!(matches!(step(80 * MS, 90 * MS), Phase::Css { .. }));
        // 400 ms: an eighth is 50 ms, capped at 16 ms.
        assert_eq!(step(400 * MS, 415 * MS), Phase::SlowStart);
        assert!(matches!(step(400 * MS, 416 * MS), Phase::Css { .. }));
        // 1 ms: an eighth is 125 µs, raised to 4 ms.
        assert_eq!(step(MS, 4 * MS), Phase::SlowStart);
        assert!(matches!(step(MS, 5 * MS), Phase::Css { .. }));
    }

    #[test]
    fn hystart_needs_eight_samples_in_a_round() {
        let mut f = Flow::new();
        f.round(10 * MS);
        f.round(10 * MS);
        let w = f.c.window();
        // Only seven samples in a round that doubles the window: no verdict.
        assert_eq!(f.round_with(50 * MS, u64::from(N_RTT_SAMPLE) - 1), w);
        assert_eq!(f.c.hystart.phase, Phase::SlowStart);
    }

    #[test]
    fn hystart_resumes_slow_start_when_the_rtt_falls_back() {
        let mut f = Flow::new();
        f.round(10 * MS);
        f.round(10 * MS);
        f.round(20 * MS);
        assert!(matches!(f.c.hystart.phase, Phase::Css { .. }));
        // The next round's minimum is below the 20 ms baseline: the exit was spurious.
        // Its first seven acknowledgements grow at the CSS rate, the rest at full rate.
        let n = u64::from(N_RTT_SAMPLE);
        let w = f.c.window();
        let grown = f.round(12 * MS);
        assert_eq!(f.c.hystart.phase, Phase::SlowStart);
        let packets = w / 1200;
        assert_eq!(grown, (n - 1) * 300 + (packets - n + 1) * 1200);
        let w = f.c.window();
        assert_eq!(f.round(12 * MS), w, "slow start doubles again");
    }

    #[test]
    fn hystart_does_not_resume_within_the_round_that_entered_css() {
        let mut f = Flow::new();
        f.round(10 * MS);
        f.round(10 * MS);
        // The eighth sample (20 ms) enters CSS; later ones fall to 15 ms, below that
        // baseline but still a queue (above 10 + 4 ms): CSS holds.
        f.round_by(20 * MS, |i| Some(if i < 8 { 20 * MS } else { 15 * MS }));
        assert!(matches!(f.c.hystart.phase, Phase::Css { baseline, rounds: 0 } if baseline == 20 * MS));
        let w = f.c.window();
        assert_eq!(f.round_with(20 * MS, 7), w / 1200 * 300, "a whole CSS round");
        assert!(matches!(f.c.hystart.phase, Phase::Css { rounds: 1, .. }));
    }

    #[test]
    fn a_loss_ends_hystart_and_later_slow_starts_ignore_the_rtt() {
        let mut f = Flow::new();
        for _ in 0..5 {
            f.round(10 * MS);
        }
        let w = f.c.window();
        f.lose_all();
        assert_eq!(f.c.hystart.phase, Phase::Off);
        assert_eq!(f.c.window(), w / 2);
        // After a timeout, slow start runs up to ssthresh whatever the RTT does.
        f.c.on_timeout(f.t);
        assert!(f.c.window() < f.c.ssthresh);
        let ssthresh = f.c.ssthresh;
        f.t += 100 * MS;
        f.fill();
        let mut rtt = 10 * MS;
        while 2 * f.c.window() <= ssthresh {
            let w = f.c.window();
            rtt *= 2;
            assert_eq!(f.round(rtt), w, "slow start doubles");
        }
    }

    #[test]
    fn persistent_congestion_collapses_the_window() {
        let t0 = t0();
        let mut c = grown(120_000);
        c.on_sent(24_000);
        c.on_timeout(t0 + Duration::from_millis(200));
        assert_eq!(c.window(), c.min_window());
    }
}
