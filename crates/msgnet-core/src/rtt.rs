//! Round-trip time estimation (RFC 6298 / RFC 9002 §5) and the retransmission timeout.

use std::time::Duration;

const INITIAL_RTT: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub(crate) struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
    min_rtt: Duration,
    latest: Duration,
}

impl Default for RttEstimator {
    fn default() -> Self {
        Self { srtt: None, rttvar: INITIAL_RTT / 2, min_rtt: Duration::MAX, latest: INITIAL_RTT }
    }
}

impl RttEstimator {
    /// Feeds one sample: `rtt` measured from send to ack, `ack_delay` reported by the peer.
    pub(crate) fn update(&mut self, rtt: Duration, ack_delay: Duration) {
        self.latest = rtt;
        self.min_rtt = self.min_rtt.min(rtt);
        // Subtract the peer's ack delay unless that would go below the minimum RTT.
        let adjusted = if rtt >= self.min_rtt + ack_delay { rtt - ack_delay } else { rtt };
        match self.srtt {
            None => {
                self.srtt = Some(adjusted);
                self.rttvar = adjusted / 2;
            }
            Some(srtt) => {
                let diff = srtt.abs_diff(adjusted);
                self.rttvar = (self.rttvar * 3 + diff) / 4;
                self.srtt = Some((srtt * 7 + adjusted) / 8);
            }
        }
    }

    pub(crate) fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// Smoothed RTT, or the initial guess before any sample.
    pub(crate) fn get(&self) -> Duration {
        self.srtt.unwrap_or(INITIAL_RTT)
    }

    /// Retransmission timeout: srtt + max(4·rttvar, 1 ms) + the peer's max ack delay.
    pub(crate) fn rto(&self, max_ack_delay: Duration) -> Duration {
        self.get() + (self.rttvar * 4).max(Duration::from_millis(1)) + max_ack_delay
    }

    /// Time after which a packet sent before a later acknowledged one is deemed lost.
    pub(crate) fn loss_delay(&self) -> Duration {
        (self.get().max(self.latest) * 9 / 8).max(Duration::from_millis(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converges() {
        let mut r = RttEstimator::default();
        for _ in 0..50 {
            r.update(Duration::from_millis(20), Duration::ZERO);
        }
        let s = r.srtt().unwrap_or_default();
        assert!(s >= Duration::from_millis(19) && s <= Duration::from_millis(21), "{s:?}");
        assert!(r.rto(Duration::from_millis(10)) < Duration::from_millis(40));
    }
}
