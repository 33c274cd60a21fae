//! Request timeouts of [`Behaviour`] ([`crate::Config::request_timeout`]).
//!
//! A request routed to libp2p (a msgnet stream, the bridge, a peer's queue or a dial)
//! gets a deadline. The deadlines sit in one queue in the order they were set, which is
//! the order they expire (one timeout for all), and one timer waits for the oldest live
//! one. Entries of requests that finished are dropped lazily (at the front, and by a
//! compaction that keeps the queue within twice the outstanding work), so a completion
//! costs nothing here. An expired request fails with [`SendError::TimedOut`]: it leaves
//! its peer's queue and its connection's `StreamConn` (a later response is dropped and
//! counted), and `finish` releases its budget. A bridge request's stream is left to the
//! handler, which drops it within `bridge_timeout`.
//!
//! May call the behaviour's bookkeeping (`peers`, `conns`, `outstanding`, `finish`).

use std::collections::{HashSet, VecDeque};
use std::task::Context;
use std::time::Instant;

use futures::FutureExt;
use futures_timer::Delay;
use libp2p::PeerId;
use msgnet_core::{MessageId, SendError};

use super::Behaviour;

/// The deadline queue and its timer.
#[derive(Debug, Default)]
pub(super) struct Timeouts {
    deadlines: VecDeque<(Instant, MessageId)>,
    /// Armed for a time no later than the front deadline (deadlines only grow); may stay
    /// armed with no deadline queued.
    timer: Option<Delay>,
    /// Late responses of connections that closed, and of bridge requests.
    pub(super) late: u64,
}

impl Behaviour {
    /// Gives request `id` its deadline (once per routing; a request routed again keeps
    /// the earlier deadline, which expires first).
    pub(super) fn arm_timeout(&mut self, id: MessageId) {
        let Some(deadline) = Instant::now().checked_add(self.config.request_timeout) else {
            return; // effectively no timeout
        };
        let t = &mut self.timeouts;
        if t.deadlines.len() >= 2 * self.outstanding.len() + 64 {
            let outstanding = &self.outstanding;
            t.deadlines.retain(|(_, id)| outstanding.contains_key(id));
        }
        t.deadlines.push_back((deadline, id));
        if t.timer.is_none() {
            // Make the swarm poll us so that the timer is armed.
            if let Some(w) = self.waker.take() {
                w.wake();
            }
        }
    }

    /// Fails the requests whose deadline passed and keeps the timer armed.
    pub(super) fn poll_timeouts(&mut self, cx: &mut Context<'_>) {
        loop {
            let now = Instant::now();
            let mut expired = Vec::new();
            while let Some(&(deadline, id)) = self.timeouts.deadlines.front() {
                if !self.outstanding.contains_key(&id) {
                    self.timeouts.deadlines.pop_front();
                    continue;
                }
                if deadline > now {
                    break;
                }
                self.timeouts.deadlines.pop_front();
                expired.push(id);
            }
            if !expired.is_empty() {
                self.expire(&expired);
            }
            // The timer is left armed when the queue empties (it then fires early, at
            // most once per `request_timeout`): arming one per request would cost a
            // wake-up of the timer thread per request.
            if self.timeouts.timer.is_none() {
                let Some(&(deadline, _)) = self.timeouts.deadlines.front() else { return };
                self.timeouts.timer = Some(Delay::new(deadline.saturating_duration_since(now)));
            }
            let Some(timer) = self.timeouts.timer.as_mut() else { return };
            if timer.poll_unpin(cx).is_pending() {
                return;
            }
            self.timeouts.timer = None; // fired: look again, re-arm for the new front
        }
    }

    fn expire(&mut self, ids: &[MessageId]) {
        let set: HashSet<MessageId> = ids.iter().copied().collect();
        let peers: HashSet<PeerId> = ids.iter().filter_map(|id| self.outstanding.get(id)).map(|o| o.peer).collect();
        let Self { peers: peer_state, conns, .. } = self;
        for peer in peers {
            let Some(p) = peer_state.get_mut(&peer) else { continue };
            p.queue.retain(|q| !set.contains(&q.id));
            for c in &p.conns {
                if let Some(conn) = conns.get_mut(c) {
                    conn.stream.abandon_requests(|id| set.contains(&id));
                }
            }
        }
        for &id in ids {
            tracing::debug!(?id, "request timed out");
            self.finish(id, Err(SendError::TimedOut));
        }
    }

    /// Cancels request `id` now, as if its deadline had passed: it leaves its queue and
    /// its connection (a later response is dropped and counted), its budget is released,
    /// and [`Event::Response`](crate::Event::Response) reports
    /// [`SendError::TimedOut`]. For callers with deadlines of their own. Returns whether
    /// `id` was an outstanding request.
    pub fn cancel(&mut self, id: MessageId) -> bool {
        if !self.outstanding.get(&id).is_some_and(|o| o.request) {
            return false;
        }
        self.expire(&[id]);
        true
    }

    /// Responses that arrived after their request had finished (timed out, or failed):
    /// dropped, and counted here since the behaviour was created.
    pub fn late_responses(&self) -> u64 {
        self.timeouts.late + self.conns.values().map(|c| c.stream.late_responses()).sum::<u64>()
    }
}
