//! Conversions between multiaddrs and socket addresses for the UDP transport.
//!
//! The UDP transport's addresses are `/ip4/<ip>/udp/<port>` and `/ip6/<ip>/udp/<port>`,
//! optionally followed by `/p2p/<peer id>` when they name a peer.

use std::net::SocketAddr;

use libp2p_identity::PeerId;
use multiaddr::{Multiaddr, Protocol};

use crate::HostError;

// The UDP address rules are msgnet-libp2p's (its behaviour can own the UDP transport
// too): one definition for both.
pub use msgnet_libp2p::{multiaddr_to_socket, socket_to_multiaddr};

/// Splits `<transport address>/p2p/<id>` into the peer id and the transport address.
pub(crate) fn split_p2p(addr: &Multiaddr) -> Result<(PeerId, Multiaddr), HostError> {
    let mut transport = addr.clone();
    match transport.pop() {
        Some(Protocol::P2p(peer)) => Ok((peer, transport)),
        _ => Err(HostError::MissingPeerId(addr.clone())),
    }
}

/// Checks `addr` as an address of `peer` and converts it to a socket address: a trailing
/// `/p2p/<id>` must name `peer`; the rest must be a UDP address.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn peer_socket_addr(peer: &PeerId, addr: &Multiaddr) -> Result<SocketAddr, HostError> {
    if let Some(Protocol::P2p(id)) = addr.iter().last() {
        if id != *peer {
            return Err(HostError::PeerIdMismatch);
        }
    }
    multiaddr_to_socket(addr).ok_or_else(|| HostError::UnsupportedAddress(addr.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p_identity::Keypair;

    fn ma(s: &str) -> Multiaddr {
        s.parse().expect("valid multiaddr")
    }

    #[test]
    fn split_p2p_and_peer_checks() {
        let peer = Keypair::generate_ed25519().public().to_peer_id();
        let other = Keypair::generate_ed25519().public().to_peer_id();
        let full = ma(&format!("/ip6/::1/udp/4001/p2p/{peer}"));
        let (p, transport) = split_p2p(&full).expect("has /p2p");
        assert_eq!(p, peer);
        assert_eq!(transport, ma("/ip6/::1/udp/4001"));
        assert!(matches!(
            split_p2p(&ma("/ip4/1.2.3.4/udp/1")),
            Err(HostError::MissingPeerId(a)) if a == ma("/ip4/1.2.3.4/udp/1")
        ));
        assert!(matches!(split_p2p(&Multiaddr::empty()), Err(HostError::MissingPeerId(_))));

        assert_eq!(peer_socket_addr(&peer, &full).expect("ok"), "[::1]:4001".parse().expect("a"));
        assert!(matches!(peer_socket_addr(&other, &full), Err(HostError::PeerIdMismatch)));
        assert!(matches!(
            peer_socket_addr(&peer, &ma("/ip4/1.2.3.4/tcp/1")),
            Err(HostError::UnsupportedAddress(_))
        ));
    }
}
