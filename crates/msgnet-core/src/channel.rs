//! Protocol channels: one (session, protocol, direction). The outbound half names the
//! compact protocol int (sent in INIT until a packet carrying the INIT is acknowledged)
//! and numbers reliable messages; the inbound half maps ints back to protocol ids and
//! delivers each reliable message once, holding `Ordered` ones until their turn.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;

use crate::wire;

/// Outbound channel state for one protocol.
#[derive(Debug)]
pub(crate) struct OutChannel {
    pub(crate) protocol: Arc<str>,
    pub(crate) int: u16,
    /// A packet carrying this channel's INIT was acknowledged: CONTINUATION from now on.
    pub(crate) init_acked: bool,
    next_seq: u64,
    /// Reliable sequence numbers not yet acknowledged.
    unacked: BTreeSet<u64>,
}

impl OutChannel {
    pub(crate) fn new(protocol: Arc<str>, int: u16) -> Self {
        Self { protocol, int, init_acked: false, next_seq: 0, unacked: BTreeSet::new() }
    }

    /// Assigns the next reliable sequence number.
    pub(crate) fn next_seq(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq += 1;
        self.unacked.insert(s);
        s
    }

    pub(crate) fn acked(&mut self, seq: u64) {
        self.unacked.remove(&seq);
    }

    /// The truncated encoding of `seq`: enough bytes that the receiver, which has seen
    /// everything below the lowest unacknowledged number, expands it correctly.
    pub(crate) fn truncate(&self, seq: u64) -> wire::TruncatedSeq {
        let lowest = self.unacked.first().copied().unwrap_or(self.next_seq);
        let largest_acked = lowest.checked_sub(1);
        let top = self.next_seq.saturating_sub(1).max(seq);
        let len = match wire::encode_pn_len(top, largest_acked) {
            1 => 1,
            2 => 2,
            _ => 4,
        };
        let mask = if len == 4 { u64::from(u32::MAX) } else { (1u64 << (8 * len)) - 1 };
        wire::TruncatedSeq { value: (seq & mask) as u32, len }
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
            window: window.max(1),
        }
    }

    /// Reconstructs a full sequence number from its truncated form.
    pub(crate) fn expand(&self, t: wire::TruncatedSeq) -> u64 {
        wire::decode_pn(self.largest, u64::from(t.value), usize::from(t.len))
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
        for _ in 0..100_000u64 {
            let s = out.next_seq();
            let t = out.truncate(s);
            assert_eq!(inc.expand(t), s);
            inc.delivered(s);
            out.acked(s);
        }
    }
}
