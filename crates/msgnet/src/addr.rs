//! Conversions between multiaddrs and socket addresses for the UDP transport.
//!
//! The UDP transport's addresses are `/ip4/<ip>/udp/<port>` and `/ip6/<ip>/udp/<port>`,
//! optionally followed by `/p2p/<peer id>` when they name a peer.

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

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p_identity::Keypair;

    fn ma(s: &str) -> Multiaddr {
        s.parse().expect("valid multiaddr")
    }

    #[test]
    fn split_p2p_checks() {
        let peer = Keypair::generate_ed25519().public().to_peer_id();
        let full = ma(&format!("/ip6/::1/udp/4001/p2p/{peer}"));
        let (p, transport) = split_p2p(&full).expect("has /p2p");
        assert_eq!(p, peer);
        assert_eq!(transport, ma("/ip6/::1/udp/4001"));
        assert!(matches!(
            split_p2p(&ma("/ip4/1.2.3.4/udp/1")),
            Err(HostError::MissingPeerId(a)) if a == ma("/ip4/1.2.3.4/udp/1")
        ));
        assert!(matches!(split_p2p(&Multiaddr::empty()), Err(HostError::MissingPeerId(_))));

    }
}
