//! The driver's routing: which side (UDP endpoint or swarm) takes a send or request, the
//! fallback to the next transport when one cannot reach the peer (or the consolidated
//! one fails), and the completion of the waiting futures. The rule itself is in
//! [`crate::network`]; racing and consolidation in `racing.rs`. Declared inside
//! `driver.rs`, whose state it shares.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;
use libp2p_identity::PeerId;
use msgnet_core::{MessageId, SendError};
use tracing::debug;

use super::Driver;
use crate::command::{Cmd, Via};
use crate::network::{self, Transport};

#[path = "racing.rs"]
mod racing;
pub(crate) use racing::Racing;

/// A send or request in flight on one side, with the transports still to try.
pub(crate) struct Pending {
    pub(crate) cmd: Cmd,
    pub(crate) transport: Transport,
    pub(crate) rest: VecDeque<Transport>,
    /// Sent on the peer's consolidated transport: any transport failure falls back.
    pub(crate) consolidated: bool,
}

fn via(t: Transport) -> Via {
    if t == Transport::Udp {
        Via::Udp
    } else {
        Via::Swarm
    }
}

impl Driver {
    /// The transport of an established session or connection with `peer`, UDP first.
    pub(super) fn current_transport(&self, peer: &PeerId) -> Option<Transport> {
        if self.endpoint.sessions(peer).iter().any(|s| s.established) {
            return Some(Transport::Udp);
        }
        self.swarm_transport(peer)
    }

    /// Hands a command to the transport the rule picks; returns it if refused with
    /// `Backpressure`.
    ///
    /// A peer whose race is unresolved gets nothing new until it is (the command is given
    /// back and waits in the backlog); a first message to a peer known on several
    /// transports is raced (`racing.rs`).
    pub(super) fn submit(&mut self, cmd: Cmd) -> Option<Cmd> {
        let peer = cmd.peer();
        if self.race_unresolved(&peer) {
            return Some(cmd);
        }
        let current = self.current_transport(&peer);
        let cmd = self.try_race(cmd, current)?;
        let plan = self.route_plan(&peer, current);
        if plan.is_empty() && self.udp_closed() {
            cmd.fail(SendError::NoAddress);
            return None;
        }
        self.submit_plan(cmd, plan.into())
    }

    /// Tries the transports of `plan` in order until one accepts the command.
    fn submit_plan(&mut self, cmd: Cmd, mut plan: VecDeque<Transport>) -> Option<Cmd> {
        let mut transport = plan.pop_front().unwrap_or(Transport::Udp);
        loop {
            let result = match transport {
                Transport::Udp => self.udp_submit(&cmd),
                t => self.swarm_submit(&cmd, t),
            };
            match result {
                Ok(id) => {
                    self.count_sent(transport);
                    let side = via(transport);
                    if let Cmd::Request { token, .. } = &cmd {
                        self.tokens.insert(*token, (side, id));
                    }
                    let consolidated = self.consolidated_on(&cmd.peer()) == Some(transport);
                    let pending = Pending { cmd, transport, rest: plan, consolidated };
                    match side {
                        Via::Udp => self.udp_pending.insert(id, pending),
                        Via::Swarm => self.swarm_pending.insert(id, pending),
                    };
                    return None;
                }
                Err(SendError::Backpressure) => return Some(cmd),
                Err(e) => {
                    if network::is_unreachable(&e) {
                        if let Some(next) = plan.pop_front() {
                            debug!(peer = %cmd.peer(), from = %transport, to = %next, error = %e, "falling back");
                            self.book.set_failed(&cmd.peer(), transport, true);
                            transport = next;
                            continue;
                        }
                    }
                    cmd.fail(e);
                    return None;
                }
            }
        }
    }

    fn udp_submit(&mut self, cmd: &Cmd) -> Result<MessageId, SendError> {
        let now = Instant::now();
        match cmd {
            Cmd::Send { peer, protocol, payload, opts, .. } => {
                self.endpoint.send(now, *peer, protocol, payload.clone(), *opts)
            }
            Cmd::Request { peer, protocol, payload, opts, .. } => {
                self.endpoint.request(now, *peer, protocol, payload.clone(), *opts)
            }
        }
    }

    /// A send or request of side `side` finished: answer its caller, or, if its transport
    /// could not reach the peer and another is left, send it there.
    pub(super) fn complete(&mut self, side: Via, id: MessageId, result: Result<Option<Bytes>, SendError>) {
        if self.race_copy_done(side, id, &result) {
            return;
        }
        let pending = match side {
            Via::Udp => self.udp_pending.remove(&id),
            Via::Swarm => self.swarm_pending.remove(&id),
        };
        let Some(Pending { cmd, transport, mut rest, consolidated }) = pending else { return };
        if let Cmd::Request { token, .. } = &cmd {
            self.tokens.remove(token);
        }
        let peer = cmd.peer();
        // Sent on the consolidated transport, and the peer is still consolidated (not
        // `close_peer`d): any transport failure falls back.
        let consolidated = consolidated && self.consolidated_on(&peer).is_some();
        match &result {
            Err(e) if network::is_unreachable(e) || (consolidated && network::is_transport_failure(e)) => {
                self.book.set_failed(&peer, transport, true);
                self.consolidation_failed(&peer, transport);
                if consolidated {
                    // The peer's plan as it is now (the new consolidated transport first),
                    // without what failed: whatever else reaches it (a race's receiver
                    // knows no address of the peer, only its sessions and connections).
                    let current = self.current_transport(&peer).filter(|t| *t != transport);
                    rest = self
                        .route_plan(&peer, current)
                        .into_iter()
                        .filter(|t| *t != transport && !self.book.failed(&peer, *t))
                        .collect();
                }
                if !cmd.abandoned() {
                    if let Some(next) = rest.front() {
                        debug!(%peer, from = %transport, to = %next, error = %e, "falling back");
                        if let Some(cmd) = self.submit_plan(cmd, rest) {
                            self.push_backlog(cmd);
                        }
                        return;
                    }
                }
            }
            Ok(_) => self.book.set_failed(&peer, transport, false),
            Err(_) => {}
        }
        cmd.finish(result);
    }

    /// Cancels the request of `token` (its caller timed out).
    pub(super) fn cancel(&mut self, token: u64) {
        let Some((side, id)) = self.tokens.remove(&token) else {
            self.cancel_race(token);
            return;
        };
        match side {
            Via::Udp => {
                self.udp_pending.remove(&id);
                self.endpoint.cancel(id);
            }
            // The behaviour releases the request's state; the `TimedOut` outcome it reports
            // finds no entry here and is dropped.
            Via::Swarm => {
                self.swarm_pending.remove(&id);
                self.swarm.behaviour_mut().msgnet.cancel(id);
            }
        }
    }

    /// Fails everything in flight on either side with `error`, without fallback.
    pub(super) fn fail_pending(&mut self, error: &SendError) {
        for (_, p) in self.udp_pending.drain().chain(self.swarm_pending.drain()) {
            p.cmd.fail(error.clone());
        }
        self.tokens.clear();
    }
}
