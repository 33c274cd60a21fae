//! Sliding replay window over packet numbers (RFC 6479 style, as WireGuard).
//!
//! A packet number is accepted once: numbers already seen, or older than the window, are
//! refused. The check (`check`) runs before decryption and the update (`mark`) only after
//! the packet authenticated, so forged packets cannot move the window.

/// Window size in packet numbers.
pub(crate) const WINDOW: u64 = 2048;
const WORDS: usize = (WINDOW / 64) as usize;

#[derive(Debug, Clone)]
pub(crate) struct ReplayWindow {
    /// Largest packet number marked, if any.
    top: Option<u64>,
    /// Bit `pn % WINDOW` is set when `pn` (within `top - WINDOW + 1 ..= top`) was seen.
    bits: [u64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self { top: None, bits: [0; WORDS] }
    }
}

impl ReplayWindow {
    fn bit(pn: u64) -> (usize, u64) {
        let i = pn % WINDOW;
        ((i / 64) as usize, 1u64 << (i % 64))
    }

    /// Whether `pn` may be accepted (not seen, not too old).
    pub(crate) fn check(&self, pn: u64) -> bool {
        match self.top {
            None => true,
            Some(top) if pn > top => true,
            Some(top) if top - pn >= WINDOW => false,
            Some(_) => {
                let (w, m) = Self::bit(pn);
                self.bits.get(w).is_some_and(|word| word & m == 0)
            }
        }
    }

    /// Records `pn` as seen. Call only after `check(pn)` and authentication.
    pub(crate) fn mark(&mut self, pn: u64) {
        match self.top {
            None => {
                self.bits = [0; WORDS];
                self.top = Some(pn);
            }
            Some(top) if pn > top => {
                if pn - top >= WINDOW {
                    self.bits = [0; WORDS];
                } else {
                    for p in top + 1..pn {
                        let (w, m) = Self::bit(p);
                        if let Some(word) = self.bits.get_mut(w) {
                            *word &= !m;
                        }
                    }
                }
                self.top = Some(pn);
            }
            Some(_) => {}
        }
        let (w, m) = Self::bit(pn);
        if let Some(word) = self.bits.get_mut(w) {
            *word |= m;
        }
    }

    /// Largest packet number seen.
    pub(crate) fn largest(&self) -> Option<u64> {
        self.top
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_once_and_refuses_old() {
        let mut w = ReplayWindow::default();
        for pn in [0, 1, 5, 3, 2] {
            assert!(w.check(pn));
            w.mark(pn);
            assert!(!w.check(pn));
        }
        assert!(w.check(4));
        w.mark(10_000);
        assert!(!w.check(4), "older than the window");
        assert!(w.check(10_000 - WINDOW + 1));
        assert!(!w.check(10_000 - WINDOW));
        assert!(!w.check(10_000));
    }

    #[test]
    fn jump_clears_stale_bits() {
        let mut w = ReplayWindow::default();
        w.mark(1);
        w.mark(1 + WINDOW); // same bit index as 1
        assert!(!w.check(1 + WINDOW));
        assert!(w.check(WINDOW), "bits between the old and new top are clear");
        w.mark(1 + 2 * WINDOW + 5);
        assert!(w.check(1 + 2 * WINDOW));
    }
}
