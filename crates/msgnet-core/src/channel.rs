//! Protocol channels: one (session, protocol, direction). The outbound half names the
//! compact protocol int (sent in INIT until a packet carrying the INIT is acknowledged)
//! and numbers reliable messages; the inbound half maps ints back to protocol ids and
//! delivers each reliable message once, holding `Ordered` ones until their turn.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;

use crate::wire;

/// Outbound channel state for one protocol.
///
/// ## Sequence-number truncation
///
/// A reliable message's number travels in 1, 2 or 4 bytes. The receiver expands the
/// number in packet `P` around the largest number it received on the channel in packets
/// numbered below `P` (see [`InChannel::expand`]). Every packet sent before `P` carried
/// numbers ≤ `M`, the largest number sent so far, and every number below `L`, the lowest
/// unacknowledged one, arrived in such a packet; so that reference lies in `[L − 1, M]`
/// and the expansion is exact when `2^(8·len − 1) > M − L + 1`, which is how the length
/// is chosen at each transmission. Late copies of old packets expand correctly too.
#[derive(Debug)]
pub(crate) struct OutChannel {
    pub(crate) protocol: Arc<str>,
    pub(crate) int: u16,
    /// A packet carrying this channel's INIT was acknowledged: CONTINUATION from now on.
    pub(crate) init_acked: bool,
    next_seq: u64,
    /// Reliable sequence numbers not yet acknowledged.
    unacked: BTreeSet<u64>,
    /// Largest number transmitted so far.
    max_sent: Option<u64>,
}

impl OutChannel {
    pub(crate) fn new(protocol: Arc<str>, int: u16) -> Self {
        Self { protocol, int, init_acked: false, next_seq: 0, unacked: BTreeSet::new(), max_sent: None }
    }

    /// Assigns the next reliable sequence number.
    pub(crate) fn next_seq(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq += 1;
        self.unacked.insert(s);
        s
    }

    /// Records a transmission of `seq` and returns its encoding.
    pub(crate) fn on_transmit(&mut self, seq: u64) -> wire::TruncatedSeq {
        let max = self.max_sent.map_or(seq, |m| m.max(seq));
        self.max_sent = Some(max);
        let low = self.unacked.first().copied().unwrap_or(seq).min(seq);
        let span = max - low + 1;
        let len: u8 = if span < 128 {
            1
        } else if span < 32_768 {
            2
        } else {
            4
        };
        let mask = if len == 4 { u64::from(u32::MAX) } else { (1u64 << (8 * len)) - 1 };
        wire::TruncatedSeq { value: (seq & mask) as u32, len }
    }

    /// The message numbered `seq` is done (acknowledged, or refused by the peer).
    pub(crate) fn acked(&mut self, seq: u64) {
        self.unacked.remove(&seq);
    }
}

/// What the inbound half decided about one reliable message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Accept {
    /// Deliver now.
    Deliver,
    /// Already delivered (a retransmission): acknowledge, do not deliver.
    Duplicate,
    /// Ordered and early: held until the messages before it arrive.
    Held,
    /// Refused earlier (no handler): refuse again.
    Refused,
    /// Too far ahead of the window: drop without acknowledging.
    OutOfWindow,
}

/// A held ordered message waiting for its predecessors.
#[derive(Debug)]
pub(crate) struct Held<T> {
    pub(crate) item: T,
}

/// Inbound channel state for one protocol int.
#[derive(Debug)]
pub(crate) struct InChannel<T> {
    pub(crate) protocol: Arc<str>,
    /// Every sequence number below `base` was delivered.
    base: u64,
    /// `delivered[i]` is whether `base + i` was delivered.
    delivered: VecDeque<bool>,
    largest: Option<u64>,
    held: BTreeMap<u64, Held<T>>,
    /// Largest number seen per recent packet number, for expansion.
    hist: BTreeMap<u64, u64>,
    /// Largest number seen in packets pruned from `hist`.
    floor: Option<u64>,
    /// Numbers refused for want of a handler (they count as done for the window).
    refused: BTreeSet<u64>,
    window: u64,
}

impl<T> InChannel<T> {
    pub(crate) fn new(protocol: Arc<str>, window: u64) -> Self {
        Self {
            protocol,
            base: 0,
            delivered: VecDeque::new(),
            largest: None,
            held: BTreeMap::new(),
            hist: BTreeMap::new(),
            floor: None,
            refused: BTreeSet::new(),
            window: window.max(1),
        }
    }

    /// Reconstructs the full number carried in packet `pn`: around the largest number
    /// seen in packets numbered below `pn` (see [`OutChannel`]).
    pub(crate) fn expand(&self, t: wire::TruncatedSeq, pn: u64) -> u64 {
        let in_order = self.hist.last_key_value().is_none_or(|(p, _)| *p < pn);
        let reference = if in_order {
            self.largest
        } else {
            let recent = self.hist.range(..pn).map(|(_, s)| *s).max();
            match (recent, self.floor) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            }
        };
        wire::decode_pn(reference, u64::from(t.value), usize::from(t.len))
    }

    /// Records that `seq` arrived in packet `pn` (whatever becomes of it). Packets more
    /// than a replay window older than `pn` are folded into one floor value: the replay
    /// window refuses them anyway.
    pub(crate) fn note(&mut self, seq: u64, pn: u64) {
        self.note_largest(seq);
        let e = self.hist.entry(pn).or_insert(seq);
        *e = (*e).max(seq);
        let oldest = pn.saturating_sub(crate::replay::WINDOW);
        while let Some(entry) = self.hist.first_entry() {
            if *entry.key() >= oldest {
                break;
            }
            let v = entry.remove();
            self.floor = Some(self.floor.map_or(v, |f| f.max(v)));
        }
    }

    fn is_delivered(&self, seq: u64) -> bool {
        if seq < self.base {
            return true;
        }
        let i = (seq - self.base) as usize;
        self.delivered.get(i).copied().unwrap_or(false)
    }

    /// Decides what to do with reliable message `seq` (`ordered` for `Ordered` delivery).
    /// For `Held`, the caller passes the item to [`InChannel::hold`].
    pub(crate) fn accept(&self, seq: u64, ordered: bool) -> Accept {
        if self.refused.contains(&seq) {
            return Accept::Refused;
        }
        if self.is_delivered(seq) || self.held.contains_key(&seq) {
            return Accept::Duplicate;
        }
        if seq >= self.base + self.window {
            return Accept::OutOfWindow;
        }
        if ordered && seq != self.base {
            return Accept::Held;
        }
        Accept::Deliver
    }

    pub(crate) fn hold(&mut self, seq: u64, item: T) {
        self.note_largest(seq);
        self.held.insert(seq, Held { item });
    }

    /// Refuses `seq` (no handler): it counts as done for the window, and its
    /// retransmissions are refused again.
    pub(crate) fn refuse(&mut self, seq: u64) {
        if seq < self.base || seq >= self.base + self.window {
            return;
        }
        self.refused.insert(seq);
        self.mark(seq);
        let floor = self.base.saturating_sub(self.window);
        while self.refused.first().is_some_and(|s| *s < floor) {
            self.refused.pop_first();
        }
    }

    fn note_largest(&mut self, seq: u64) {
        self.largest = Some(self.largest.map_or(seq, |l| l.max(seq)));
    }

    /// Marks `seq` delivered and returns the held ordered messages that became
    /// deliverable, in order.
    pub(crate) fn delivered(&mut self, seq: u64) -> Vec<T> {
        self.note_largest(seq);
        self.mark(seq);
        let mut out = Vec::new();
        while let Some(entry) = self.held.first_entry() {
            if *entry.key() != self.base {
                break;
            }
            let (s, held) = entry.remove_entry();
            self.mark(s);
            out.push(held.item);
        }
        out
    }

    fn mark(&mut self, seq: u64) {
        if seq < self.base {
            return;
        }
        let i = (seq - self.base) as usize;
        if self.delivered.len() <= i {
            self.delivered.resize(i + 1, false);
        }
        self.delivered[i] = true;
        while self.delivered.front() == Some(&true) {
            self.delivered.pop_front();
            self.base += 1;
        }
    }

    /// Notes an unreliable message's absence of sequence (nothing to track); kept for symmetry.
    pub(crate) fn held_len(&self) -> usize {
        self.held.len()
    }
}

/// An outbound message, queued or in flight.
#[derive(Debug)]
pub(crate) struct OutMessage {
    /// The caller's id, when someone waits for the outcome.
    pub(crate) id: Option<crate::MessageId>,
    pub(crate) protocol: Arc<str>,
    pub(crate) kind: OutKind,
    pub(crate) delivery: crate::Delivery,
    pub(crate) seq: Option<u64>,
    pub(crate) payload: Bytes,
    pub(crate) early_data: bool,
    pub(crate) deadline: std::time::Instant,
    /// Set when the message is larger than a packet and travels as fragments.
    pub(crate) frag: Option<FragInfo>,
}

/// Fragmentation state of one outbound message.
#[derive(Debug)]
pub(crate) struct FragInfo {
    /// Payload bytes per fragment (the last may be shorter).
    pub(crate) size: usize,
    /// Number of fragments.
    pub(crate) count: u32,
    /// Which fragments the peer acknowledged.
    pub(crate) acked: Vec<bool>,
    pub(crate) acked_count: u32,
    /// Fragments put in packets so far (unreliable messages complete when all were).
    pub(crate) sent_count: u32,
    /// Groups the fragments of an unreliable message at the receiver.
    pub(crate) unreliable_id: u64,
}

impl FragInfo {
    pub(crate) fn new(len: usize, size: usize, unreliable_id: u64) -> Self {
        let size = size.max(1);
        let count = len.div_ceil(size).max(1) as u32;
        Self { size, count, acked: vec![false; count as usize], acked_count: 0, sent_count: 0, unreliable_id }
    }

    /// The byte range of fragment `i` in a payload of `len` bytes.
    pub(crate) fn range(&self, i: u32, len: usize) -> std::ops::Range<usize> {
        let start = (i as usize * self.size).min(len);
        start..(start + self.size).min(len)
    }
}

/// The kind of an outbound message (request ids are the session's own numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutKind {
    Message,
    Request(u64),
    Response(u64),
    ErrorResponse(u64),
}

impl OutKind {
    pub(crate) fn wire(self) -> wire::MessageKind {
        match self {
            OutKind::Message => wire::MessageKind::Message,
            OutKind::Request(r) => wire::MessageKind::Request(r),
            OutKind::Response(r) => wire::MessageKind::Response(r),
            OutKind::ErrorResponse(r) => wire::MessageKind::ErrorResponse(r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reliable_dedup_and_ordered_hold() {
        let mut ch: InChannel<u64> = InChannel::new("/p".into(), 64);
        assert_eq!(ch.accept(1, true), Accept::Held);
        ch.hold(1, 1);
        assert_eq!(ch.accept(1, true), Accept::Duplicate);
        assert_eq!(ch.accept(2, false), Accept::Deliver);
        assert!(ch.delivered(2).is_empty());
        assert_eq!(ch.accept(2, false), Accept::Duplicate);
        assert_eq!(ch.accept(0, true), Accept::Deliver);
        assert_eq!(ch.delivered(0), vec![1]);
        assert_eq!(ch.accept(0, true), Accept::Duplicate);
        assert_eq!(ch.accept(3, true), Accept::Deliver);
        assert_eq!(ch.accept(64 + 3, false), Accept::OutOfWindow);
    }

    #[test]
    fn truncation_roundtrip() {
        let mut out = OutChannel::new("/p".into(), 1);
        let mut inc: InChannel<()> = InChannel::new("/p".into(), 1 << 20);
        for pn in 0..100_000u64 {
            let s = out.next_seq();
            let t = out.on_transmit(s);
            assert_eq!(t.len, 1, "a shallow pipeline needs one byte");
            assert_eq!(inc.expand(t, pn), s);
            inc.note(s, pn);
            inc.delivered(s);
            out.acked(s);
        }
    }

    #[test]
    fn late_copies_expand_correctly() {
        // Message 0 is sent in packet 1 and delayed; it is retransmitted in packet 2 and
        // acknowledged, then 300 more messages go out one per packet. The late copy of
        // packet 1 must still expand to 0, not to 256.
        let mut out = OutChannel::new("/p".into(), 1);
        let mut inc: InChannel<()> = InChannel::new("/p".into(), 1 << 20);
        let s0 = out.next_seq();
        let late = out.on_transmit(s0);
        let again = out.on_transmit(s0);
        assert_eq!(inc.expand(again, 2), 0);
        inc.note(0, 2);
        inc.delivered(0);
        out.acked(s0);
        for pn in 3..303u64 {
            let s = out.next_seq();
            let t = out.on_transmit(s);
            assert_eq!(inc.expand(t, pn), s);
            inc.note(s, pn);
            inc.delivered(s);
            out.acked(s);
        }
        assert_eq!(inc.expand(late, 1), 0, "expanded around what preceded packet 1");
        assert_eq!(inc.accept(0, false), Accept::Duplicate);
    }
}
