//! Links: what the network does to one datagram on one directed pair of nodes.
//!
//! This module owns the link model ([`LinkParams`], [`Loss`]), the per-directed-link
//! state (the Gilbert-Elliott channel state and the FIFO serialization queue) and the
//! link counters. It decides a datagram's fate from the network RNG it is handed; it
//! never touches endpoints or the event heap (that is `sim.rs`).
//!
//! The order of effects on one datagram, as in netem: loss, then the bandwidth queue
//! (tail drop), then propagation delay (latency + jitter + reorder extra), then
//! duplication (the copy gets its own jitter and reorder delay; it does not occupy the
//! queue again: think of a duplicating switch behind the bottleneck).

use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha20Rng;

/// No datagram spends longer than this on a link (queueing and delays together); larger
/// configured delays are capped so that virtual time stays representable.
pub const MAX_DELAY: Duration = Duration::from_secs(1_000_000);

/// How a link loses datagrams. Probabilities are clamped to `[0, 1]`; NaN counts as 0.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Loss {
    /// Nothing is lost.
    #[default]
    None,
    /// Each datagram is lost independently with this probability.
    Random(f64),
    /// Bursty loss: a two-state Markov chain (good, bad), stepped once per datagram
    /// before the datagram is judged, each state with its own loss probability.
    GilbertElliott {
        /// Probability of moving from the good to the bad state, per datagram.
        p_good_to_bad: f64,
        /// Probability of moving from the bad to the good state, per datagram.
        p_bad_to_good: f64,
        /// Loss probability in the good state.
        loss_good: f64,
        /// Loss probability in the bad state.
        loss_bad: f64,
    },
}

/// Parameters of one directed link.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkParams {
    /// One-way propagation delay. Default 10 ms.
    pub latency: Duration,
    /// Extra delay drawn uniformly from `[0, jitter]` per datagram (this reorders
    /// datagrams closer together than the jitter). Default 0.
    pub jitter: Duration,
    /// Serialization rate in bits per second; `None` is infinitely fast. With a rate,
    /// datagrams wait in a FIFO queue of `queue_bytes`. `Some(0)` passes nothing.
    pub bandwidth_bps: Option<u64>,
    /// Bytes the queue holds (waiting plus being serialized, the arriving datagram
    /// included); a datagram that does not fit is tail-dropped. Only used with a
    /// bandwidth. Default 64 KiB.
    pub queue_bytes: usize,
    /// The loss model. Default none.
    pub loss: Loss,
    /// Probability that a datagram is delivered twice. Default 0.
    pub duplicate: f64,
    /// Fraction of datagrams delayed by an extra random latency drawn uniformly from
    /// `[0, reorder_extra]` (so later datagrams overtake them). Default 0.
    pub reorder: f64,
    /// Largest extra delay of a reordered datagram. Default 0.
    pub reorder_extra: Duration,
}

impl Default for LinkParams {
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(10),
            jitter: Duration::ZERO,
            bandwidth_bps: None,
            queue_bytes: 64 * 1024,
            loss: Loss::None,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_extra: Duration::ZERO,
        }
    }
}

impl LinkParams {
    /// A perfect link with this one-way latency.
    pub fn with_latency(latency: Duration) -> Self {
        Self { latency, ..Self::default() }
    }
}

/// Datagram counters of one directed link (or of all links together).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinkCounters {
    /// Datagrams handed to the link by the sending node.
    pub sent: u64,
    /// Bytes handed to the link.
    pub bytes_sent: u64,
    /// Datagrams (copies included) handed to the receiving endpoint.
    pub delivered: u64,
    /// Bytes of those.
    pub bytes_delivered: u64,
    /// Datagrams lost by the loss model.
    pub dropped_loss: u64,
    /// Datagrams tail-dropped by the bandwidth queue.
    pub dropped_queue: u64,
    /// Datagrams dropped because the sender or the receiver was down (at sending or at
    /// arrival).
    pub dropped_down: u64,
    /// Extra copies made by duplication.
    pub duplicated: u64,
}

impl LinkCounters {
    pub(crate) fn add(&mut self, o: &LinkCounters) {
        self.sent += o.sent;
        self.bytes_sent += o.bytes_sent;
        self.delivered += o.delivered;
        self.bytes_delivered += o.bytes_delivered;
        self.dropped_loss += o.dropped_loss;
        self.dropped_queue += o.dropped_queue;
        self.dropped_down += o.dropped_down;
        self.duplicated += o.duplicated;
    }
}

/// What happens to one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Lost by the loss model.
    Lost,
    /// Tail-dropped by the queue.
    QueueFull,
    /// Arrives at `at` (virtual time since the epoch), and a copy at `dup` if duplicated.
    Deliver { at: Duration, dup: Option<Duration> },
}

/// Mutable state of one directed link.
#[derive(Debug, Clone, Default)]
pub(crate) struct LinkState {
    /// Gilbert-Elliott state: true in the bad state.
    bad: bool,
    /// When the queue finishes serializing everything accepted so far.
    busy_until: Duration,
    pub(crate) counters: LinkCounters,
}

fn prob(p: f64) -> f64 {
    if p.is_nan() {
        0.0
    } else {
        p.clamp(0.0, 1.0)
    }
}

/// True with probability `p`. Draws from the RNG only when `0 < p < 1`, so a link with
/// a feature off does not shift the random stream of the others.
fn chance(rng: &mut ChaCha20Rng, p: f64) -> bool {
    let p = prob(p);
    if p <= 0.0 {
        false
    } else if p >= 1.0 {
        true
    } else {
        rng.gen::<f64>() < p
    }
}

/// Uniform in `[0, max]`.
fn uniform(rng: &mut ChaCha20Rng, max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    let hi = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.gen_range(0..=hi))
}

/// Nanoseconds to put `bytes` on a wire of `bps`.
fn serialization(bytes: u64, bps: u64) -> Duration {
    let ns = u128::from(bytes) * 8 * 1_000_000_000 / u128::from(bps.max(1));
    Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
}

/// Bytes still in the queue at `now` when it drains at `bps` until `busy_until`.
fn backlog(now: Duration, busy_until: Duration, bps: u64) -> u64 {
    let left = busy_until.saturating_sub(now).as_nanos();
    let bytes = left * u128::from(bps) / 8 / 1_000_000_000;
    u64::try_from(bytes).unwrap_or(u64::MAX)
}

impl LinkState {
    /// Decides the fate of a datagram of `size` bytes handed to the link at `now`, and
    /// counts it (except deliveries, counted on arrival).
    pub(crate) fn transmit(
        &mut self,
        p: &LinkParams,
        rng: &mut ChaCha20Rng,
        now: Duration,
        size: usize,
    ) -> Fate {
        let c = &mut self.counters;
        c.sent += 1;
        c.bytes_sent += size as u64;
        let lost = match p.loss {
            Loss::None => false,
            Loss::Random(q) => chance(rng, q),
            Loss::GilbertElliott { p_good_to_bad, p_bad_to_good, loss_good, loss_bad } => {
                let flip = if self.bad { p_bad_to_good } else { p_good_to_bad };
                if chance(rng, flip) {
                    self.bad = !self.bad;
                }
                chance(rng, if self.bad { loss_bad } else { loss_good })
            }
        };
        if lost {
            c.dropped_loss += 1;
            return Fate::Lost;
        }
        let mut departs = now;
        if let Some(bps) = p.bandwidth_bps {
            let queued = backlog(now, self.busy_until, bps);
            if bps == 0 || queued.saturating_add(size as u64) > p.queue_bytes as u64 {
                c.dropped_queue += 1;
                return Fate::QueueFull;
            }
            departs = now.max(self.busy_until).saturating_add(serialization(size as u64, bps));
            self.busy_until = departs;
        }
        let delay = |rng: &mut ChaCha20Rng| {
            let mut d = p.latency.saturating_add(uniform(rng, p.jitter));
            if chance(rng, p.reorder) {
                d = d.saturating_add(uniform(rng, p.reorder_extra));
            }
            departs.saturating_add(d).min(now.saturating_add(MAX_DELAY))
        };
        let at = delay(rng);
        let dup = if chance(rng, p.duplicate) {
            c.duplicated += 1;
            Some(delay(rng))
        } else {
            None
        };
        Fate::Deliver { at, dup }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn bandwidth_queue_serializes_and_tail_drops() {
        let p = LinkParams {
            latency: Duration::from_millis(5),
            bandwidth_bps: Some(8_000_000), // 1 byte per µs
            queue_bytes: 3000,
            ..LinkParams::default()
        };
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let mut s = LinkState::default();
        let now = Duration::from_secs(1);
        let f1 = s.transmit(&p, &mut rng, now, 1000);
        let f2 = s.transmit(&p, &mut rng, now, 1000);
        let f3 = s.transmit(&p, &mut rng, now, 1000);
        let f4 = s.transmit(&p, &mut rng, now, 1000);
        let ms = |x: u64| now + Duration::from_millis(5) + Duration::from_micros(x);
        assert_eq!(f1, Fate::Deliver { at: ms(1000), dup: None });
        assert_eq!(f2, Fate::Deliver { at: ms(2000), dup: None });
        assert_eq!(f3, Fate::Deliver { at: ms(3000), dup: None });
        assert_eq!(f4, Fate::QueueFull);
        // Once 1.5 datagrams have drained, one more fits.
        let later = now + Duration::from_micros(1500);
        assert!(matches!(s.transmit(&p, &mut rng, later, 1000), Fate::Deliver { .. }));
        assert_eq!(s.counters.dropped_queue, 1);
        assert_eq!(s.counters.sent, 5);
    }

    #[test]
    fn random_loss_rate_is_close_to_configured() {
        let p = LinkParams { loss: Loss::Random(0.3), ..LinkParams::default() };
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let mut s = LinkState::default();
        for _ in 0..10_000 {
            s.transmit(&p, &mut rng, Duration::ZERO, 100);
        }
        let lost = s.counters.dropped_loss;
        assert!((2700..3300).contains(&lost), "lost {lost}");
    }

    #[test]
    fn gilbert_elliott_loses_in_bursts() {
        let p = LinkParams {
            loss: Loss::GilbertElliott {
                p_good_to_bad: 0.02,
                p_bad_to_good: 0.2,
                loss_good: 0.0,
                loss_bad: 1.0,
            },
            ..LinkParams::default()
        };
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let mut s = LinkState::default();
        let fates: Vec<bool> =
            (0..20_000).map(|_| s.transmit(&p, &mut rng, Duration::ZERO, 100) == Fate::Lost).collect();
        let lost = fates.iter().filter(|l| **l).count();
        let bursts = fates.windows(2).filter(|w| !w[0] && w[1]).count();
        // Stationary bad share 0.02 / 0.22 ≈ 9 %; mean burst length 1 / 0.2 = 5.
        assert!((1200..2500).contains(&lost), "lost {lost}");
        let mean = lost as f64 / bursts as f64;
        assert!((3.5..6.5).contains(&mean), "mean burst {mean}");
    }

    #[test]
    fn odd_probabilities_do_not_panic() {
        let p = LinkParams {
            loss: Loss::Random(f64::NAN),
            duplicate: 7.0,
            reorder: -1.0,
            reorder_extra: Duration::MAX,
            bandwidth_bps: Some(0),
            ..LinkParams::default()
        };
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let mut s = LinkState::default();
        assert_eq!(s.transmit(&p, &mut rng, Duration::ZERO, 100), Fate::QueueFull);
        let p = LinkParams { bandwidth_bps: None, ..p };
        assert!(matches!(s.transmit(&p, &mut rng, Duration::ZERO, 100), Fate::Deliver { dup: Some(_), .. }));
    }
}
