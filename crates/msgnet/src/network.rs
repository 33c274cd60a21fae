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
//!    [`SendError::UnsupportedProtocol`], a timeout after the peer was reached) are final.
//! 4. With nothing known at all, the UDP endpoint is asked, which fails with
//!    [`SendError::NoAddress`].
//!
//! Messages are never sent on two transports at once: racing the first message over every
//! known transport (INIT transport ids and ACK consolidation, as the design describes) is
//! a later step.

use std::collections::{HashMap, HashSet};
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
