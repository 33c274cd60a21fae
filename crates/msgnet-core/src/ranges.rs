//! A bounded set of received packet numbers as disjoint ranges, for building SACK frames.

use std::collections::VecDeque;

/// Inclusive ranges in ascending order; at most `cap` of them (the oldest are forgotten).
#[derive(Debug, Clone)]
pub(crate) struct RangeSet {
    ranges: VecDeque<(u64, u64)>,
    cap: usize,
}

impl RangeSet {
    pub(crate) fn new(cap: usize) -> Self {
        Self { ranges: VecDeque::new(), cap: cap.max(1) }
    }

    pub(crate) fn insert(&mut self, pn: u64) {
        // Fast path: extends the newest range.
        if let Some(last) = self.ranges.back_mut() {
            if pn == last.1 + 1 {
                last.1 = pn;
                return;
            }
            if pn > last.1 + 1 {
                self.ranges.push_back((pn, pn));
                self.trim();
                return;
            }
        } else {
            self.ranges.push_back((pn, pn));
            return;
        }
        // Slow path: somewhere in the middle.
        let idx = self.ranges.partition_point(|r| r.1 + 1 < pn);
        match self.ranges.get(idx).copied() {
            Some((lo, hi)) if pn >= lo && pn <= hi => {}
            Some((lo, hi)) if pn + 1 == lo => {
                self.ranges[idx] = (pn, hi);
                self.merge_prev(idx);
            }
            Some((lo, _)) if pn == self.ranges[idx].1 + 1 => {
                self.ranges[idx] = (lo, pn);
                self.merge_next(idx);
            }
            _ => {
                self.ranges.insert(idx, (pn, pn));
                self.trim();
            }
        }
    }

    fn merge_prev(&mut self, idx: usize) {
        if idx > 0 && self.ranges[idx - 1].1 + 1 >= self.ranges[idx].0 {
            let (lo, _) = self.ranges[idx - 1];
            self.ranges[idx].0 = lo;
            self.ranges.remove(idx - 1);
        }
    }

    fn merge_next(&mut self, idx: usize) {
        if idx + 1 < self.ranges.len() && self.ranges[idx].1 + 1 >= self.ranges[idx + 1].0 {
            let (_, hi) = self.ranges[idx + 1];
            self.ranges[idx].1 = hi;
            self.ranges.remove(idx + 1);
        }
    }

    fn trim(&mut self) {
        while self.ranges.len() > self.cap {
            self.ranges.pop_front();
        }
    }

    /// Up to `n` ranges, newest first, as (smallest, largest).
    pub(crate) fn newest(&self, n: usize) -> Vec<(u64, u64)> {
        self.ranges.iter().rev().take(n).copied().collect()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_and_orders() {
        let mut s = RangeSet::new(8);
        for pn in [1, 2, 3, 7, 5, 6, 10, 4] {
            s.insert(pn);
        }
        assert_eq!(s.newest(8), vec![(10, 10), (1, 7)]);
        s.insert(9);
        s.insert(8);
        assert_eq!(s.newest(8), vec![(1, 10)]);
    }

    #[test]
    fn bounded() {
        let mut s = RangeSet::new(3);
        for pn in (0..20).step_by(2) {
            s.insert(pn);
        }
        assert_eq!(s.newest(10), vec![(18, 18), (16, 16), (14, 14)]);
    }
}
