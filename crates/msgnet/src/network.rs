//! `Network`: which transport carries the messages to a peer.
//!
//! A [`Host`](crate::Host) speaks three transports: msgnet's own UDP packet transport
//! (`/ip4|ip6/…/udp/N`), and libp2p streams over QUIC (`/ip4|ip6/…/udp/N/quic-v1`) and
//! TCP+noise+yamux (`/ip4|ip6/…/tcp/N`) through the host's `Swarm`. This module keeps the
//! per-peer address book of all three and answers, per send or request, which transports
//! to try and in which order (the *plan*).
//!
//! ## The rule
//!
//! 0. If the peer is **consolidated** on a transport (see *Racing* below), that transport
//!    comes first (a QUIC or TCP one on a ready connection of that transport).
//! 1. If the peer has an **established UDP session**, UDP comes first; else, if it has a
//!    **libp2p connection**, that connection's transport (QUIC or TCP) comes first. A peer
//!    that reached us (without us knowing any address of it) is answered that way.
//! 2. Then every transport for which an address of the peer is known, in the order
//!    **UDP, QUIC, TCP**, except that a transport which recently failed to reach the peer
//!    (see 3) goes after the ones that did not.
//! 3. The message goes out on the first transport of the plan. If that transport fails to
//!    reach the peer ([`SendError::Unreachable`] or [`SendError::NoAddress`], i.e. the
//!    handshake or the dial failed), the *same* message is sent on the next transport of the
//!    plan, and the failed transport is remembered as failing for this peer until a later
//!    success on it or a new address for it. Only when the plan is exhausted does the call
//!    fail, with the last transport's error. Other errors (e.g.
//!    [`SendError::UnsupportedProtocol`], a timeout after the peer was reached) are final,
//!    except on the consolidated transport (see *Fallback*).
//! 4. With nothing known at all, the UDP endpoint is asked, which fails with
//!    [`SendError::NoAddress`]. A host without a UDP socket (it did not listen on UDP, or
//!    its UDP listener was removed with
//!    [`Host::remove_listener`](crate::Host::remove_listener)) leaves UDP out of every
//!    plan, and fails with [`SendError::NoAddress`] when nothing else is left.
//!
//! ## Racing
//!
//! A reliable send or request (at most 64 KiB) to a peer with no established path (rule
//! 1 finds nothing) and no consolidation, with addresses on at least two transports not
//! marked failing, is **raced**: one copy goes out on each of them at once (UDP: a new
//! session, 0-RTT if allowed; QUIC/TCP: a connection dialled for that transport alone),
//! all copies sharing a random race id, each naming its transport (`docs/wire.md` §7).
//! The receiver delivers the first copy, drops the others, and answers every copy with an
//! ACK naming the transport it prefers: UDP if a copy arrived on UDP, else the first copy's.
//! The caller's future completes with the first answer (a request: with the answer that
//! carries the response); the other copies only contribute their ACKs. Messages sent to the
//! peer while its race is unresolved wait, in order, in the driver's bounded backlog until
//! the first answer, then go out on the consolidated transport.
//!
//! ## Consolidation and fallback
//!
//! After the ACKs both sides route the peer's messages on the ACK'd transport (UDP if any
//! ACK named it, else the first ACK's): the sender from the answers, the receiver from
//! the copies, so both converge on the same transport. The other paths the race opened
//! stay open (idle) for a fast fallback. When the consolidated transport fails (its UDP
//! session goes down, its last connection closes, or a message on it fails with
//! `Unreachable`, `SessionClosed` or `TimedOut`), consolidation moves to the next transport
//! of the peer's plan and the message that failed is sent again there: reliable sends are
//! delivered or fail visibly, never lost silently (a retry after a failure that came too
//! late to tell whether the peer got the message is at-least-once).
//! [`Host::close_peer`](crate::Host::close_peer) ends the consolidation first, so that its
//! pending sends fail instead of moving.
//!
//! [`Host::transport_stats`](crate::Host::transport_stats) counts messages per transport,
//! races and dropped duplicates; [`Host::consolidated_transport`](crate::Host::consolidated_transport)
//! tells the consolidated transport.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;

use libp2p_identity::PeerId;
use msgnet_core::SendError;
use multiaddr::{Multiaddr, Protocol};

use crate::addr;

/// One of the host's transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    /// msgnet's own secure sessions over UDP.
    Udp,
    /// libp2p over QUIC (`/quic-v1`).
    Quic,
    /// libp2p over TCP with noise and yamux.
    Tcp,
}

impl Transport {
    /// A short lowercase name: `"udp"`, `"quic"` or `"tcp"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Quic => "quic",
            Transport::Tcp => "tcp",
        }
    }

    /// The transport's id on the wire (INIT `transport_id`, ACK): 1 UDP, 2 QUIC, 3 TCP
    /// (`docs/wire.md` §7).
    pub fn id(self) -> u16 {
        use msgnet_core::wire::transport_id;
        match self {
            Transport::Udp => transport_id::UDP,
            Transport::Quic => transport_id::QUIC,
            Transport::Tcp => transport_id::TCP,
        }
    }

    /// The transport of a wire id; `None` for 0 (unspecified) and unknown ids.
    pub fn from_id(id: u16) -> Option<Transport> {
        use msgnet_core::wire::transport_id;
        match id {
            transport_id::UDP => Some(Transport::Udp),
            transport_id::QUIC => Some(Transport::Quic),
            transport_id::TCP => Some(Transport::Tcp),
            _ => None,
        }
    }

    /// The transport an address belongs to (`/p2p/<id>` at the end is allowed), or `None`
    /// for any other shape.
    pub fn of(addr: &Multiaddr) -> Option<Transport> {
        if addr::multiaddr_to_socket(addr).is_some() {
            return Some(Transport::Udp);
        }
        let mut iter = addr.iter();
        if !matches!(iter.next()?, Protocol::Ip4(_) | Protocol::Ip6(_)) {
            return None;
        }
        let t = match iter.next()? {
            Protocol::Tcp(_) => Transport::Tcp,
            Protocol::Udp(_) => match iter.next()? {
                Protocol::QuicV1 => Transport::Quic,
                _ => return None,
            },
            _ => return None,
        };
        match iter.next() {
            None => Some(t),
            Some(Protocol::P2p(_)) if iter.next().is_none() => Some(t),
            Some(_) => None,
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One connection or session with a peer, from [`Host::connections`](crate::Host::connections).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// The transport.
    pub transport: Transport,
    /// The peer's address on it.
    pub remote: Multiaddr,
    /// Whether it is usable now (UDP: handshake complete; libp2p: always, once listed).
    pub established: bool,
}

/// Per-transport counters of a host, from
/// [`Host::transport_stats`](crate::Host::transport_stats).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransportStats {
    /// Sends and requests handed to each transport (every raced copy counts).
    pub sent: BTreeMap<Transport, u64>,
    /// Messages and requests received on each transport, raced copies included (their
    /// duplicates too).
    pub received: BTreeMap<Transport, u64>,
    /// Raced copies sent on each transport.
    pub raced: BTreeMap<Transport, u64>,
    /// Races this host started.
    pub races: u64,
    /// Raced copies this host received and dropped because another copy of the same
    /// message had arrived first.
    pub duplicates: u64,
}

impl TransportStats {
    /// `sent` on `t` (0 if none).
    pub fn sent_on(&self, t: Transport) -> u64 {
        self.sent.get(&t).copied().unwrap_or(0)
    }

    /// `received` on `t` (0 if none).
    pub fn received_on(&self, t: Transport) -> u64 {
        self.received.get(&t).copied().unwrap_or(0)
    }

    /// `raced` on `t` (0 if none).
    pub fn raced_on(&self, t: Transport) -> u64 {
        self.raced.get(&t).copied().unwrap_or(0)
    }
}

/// Per-peer addresses by transport, and the transports that failed recently.
#[derive(Debug, Default)]
pub(crate) struct AddressBook {
    peers: HashMap<PeerId, PeerAddrs>,
}

#[derive(Debug, Default)]
struct PeerAddrs {
    /// Addresses in the order they were added (without `/p2p`).
    addrs: Vec<(Transport, Multiaddr)>,
    failed: HashSet<Transport>,
}

/// Most addresses remembered per peer; the oldest goes first.
const ADDRS_PER_PEER: usize = 16;

impl AddressBook {
    /// Remembers `addr` (already validated) of `peer`. A new address clears the
    /// transport's failure mark.
    pub(crate) fn add(&mut self, peer: PeerId, transport: Transport, addr: Multiaddr) {
        let entry = self.peers.entry(peer).or_default();
        entry.failed.remove(&transport);
        if !entry.addrs.iter().any(|(_, a)| *a == addr) {
            if entry.addrs.len() >= ADDRS_PER_PEER {
                entry.addrs.remove(0);
            }
            entry.addrs.push((transport, addr));
        }
    }

    /// The known addresses of `peer` on `transport`.
    pub(crate) fn addrs(&self, peer: &PeerId, transport: Transport) -> Vec<Multiaddr> {
        self.peers
            .get(peer)
            .map(|p| p.addrs.iter().filter(|(t, _)| *t == transport).map(|(_, a)| a.clone()).collect())
            .unwrap_or_default()
    }

    /// Whether `transport` is marked as failing for `peer`.
    pub(crate) fn failed(&self, peer: &PeerId, transport: Transport) -> bool {
        self.peers.get(peer).is_some_and(|p| p.failed.contains(&transport))
    }

    /// Marks `transport` as failing (or not) for `peer`.
    pub(crate) fn set_failed(&mut self, peer: &PeerId, transport: Transport, failed: bool) {
        if let Some(p) = self.peers.get_mut(peer) {
            if failed {
                p.failed.insert(transport);
            } else {
                p.failed.remove(&transport);
            }
        }
    }

    /// The transports to try for `peer`, best first (see the module docs). `current` is
    /// the transport of an established session or connection, if any.
    pub(crate) fn plan(&self, peer: &PeerId, current: Option<Transport>) -> Vec<Transport> {
        let mut plan: Vec<Transport> = current.into_iter().collect();
        if let Some(p) = self.peers.get(peer) {
            let mut known: Vec<Transport> = p.addrs.iter().map(|(t, _)| *t).collect();
            known.sort_by_key(|t| (p.failed.contains(t), *t));
            known.dedup();
            for t in known {
                if !plan.contains(&t) {
                    plan.push(t);
                }
            }
        }
        plan
    }
}

/// Whether an error means "this transport could not reach the peer": try the next one.
pub(crate) fn is_unreachable(e: &SendError) -> bool {
    matches!(e, SendError::Unreachable(_) | SendError::NoAddress)
}

/// Whether an error means "this transport failed while carrying the message" (its
/// session or connection closed, or it went unanswered): on a peer's consolidated
/// transport the message is retried on the next one (see the module docs).
pub(crate) fn is_transport_failure(e: &SendError) -> bool {
    is_unreachable(e) || matches!(e, SendError::SessionClosed(_) | SendError::TimedOut)
}

/// Checks that `addr` can name `peer` (a trailing `/p2p` must match) and says which
/// transport it is for; returns the address without `/p2p`, and for UDP the socket address.
pub(crate) fn parse_peer_addr(
    peer: &PeerId,
    addr: &Multiaddr,
) -> Result<(Transport, Multiaddr, Option<SocketAddr>), crate::HostError> {
    let mut bare = addr.clone();
    if let Some(Protocol::P2p(id)) = addr.iter().last() {
        if id != *peer {
            return Err(crate::HostError::PeerIdMismatch);
        }
        bare.pop();
    }
    let transport = Transport::of(&bare).ok_or_else(|| crate::HostError::UnsupportedAddress(addr.clone()))?;
    Ok((transport, bare.clone(), addr::multiaddr_to_socket(&bare)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ma(s: &str) -> Multiaddr {
        s.parse().expect("multiaddr")
    }

    #[test]
    fn classifies_addresses() {
        assert_eq!(Transport::of(&ma("/ip4/1.2.3.4/udp/5")), Some(Transport::Udp));
        assert_eq!(Transport::of(&ma("/ip4/1.2.3.4/udp/5/quic-v1")), Some(Transport::Quic));
        assert_eq!(Transport::of(&ma("/ip6/::1/tcp/5")), Some(Transport::Tcp));
        assert_eq!(Transport::of(&ma("/dns4/x.org/tcp/5")), None);
        assert_eq!(Transport::of(&ma("/ip4/1.2.3.4/udp/5/quic")), None);
        assert_eq!(Transport::of(&ma("/ip4/1.2.3.4/tcp/5/ws")), None);
    }

    #[test]
    fn plan_order() {
        let peer = libp2p_identity::Keypair::generate_ed25519().public().to_peer_id();
        let mut book = AddressBook::default();
        assert!(book.plan(&peer, None).is_empty());
        book.add(peer, Transport::Tcp, ma("/ip4/1.2.3.4/tcp/1"));
        assert_eq!(book.plan(&peer, None), vec![Transport::Tcp]);
        book.add(peer, Transport::Quic, ma("/ip4/1.2.3.4/udp/1/quic-v1"));
        book.add(peer, Transport::Udp, ma("/ip4/1.2.3.4/udp/2"));
        assert_eq!(book.plan(&peer, None), vec![Transport::Udp, Transport::Quic, Transport::Tcp]);
        assert_eq!(
            book.plan(&peer, Some(Transport::Tcp)),
            vec![Transport::Tcp, Transport::Udp, Transport::Quic]
        );
        book.set_failed(&peer, Transport::Udp, true);
        assert_eq!(book.plan(&peer, None), vec![Transport::Quic, Transport::Tcp, Transport::Udp]);
        book.add(peer, Transport::Udp, ma("/ip4/1.2.3.4/udp/3"));
        assert_eq!(book.plan(&peer, None)[0], Transport::Udp);
    }
}
