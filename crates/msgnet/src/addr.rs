//! Conversions between multiaddrs and socket addresses for the UDP transport.
//!
//! The UDP transport's addresses are `/ip4/<ip>/udp/<port>` and `/ip6/<ip>/udp/<port>`,
//! optionally followed by `/p2p/<peer id>` when they name a peer.

use std::net::{IpAddr, SocketAddr};

use libp2p_identity::PeerId;
use multiaddr::{Multiaddr, Protocol};

use crate::HostError;

/// Converts `/ip4|ip6/<ip>/udp/<port>` (with an optional trailing `/p2p/<id>`, which is
/// ignored) to a socket address. Any other shape yields `None`.
pub fn multiaddr_to_socket(addr: &Multiaddr) -> Option<SocketAddr> {
    let mut iter = addr.iter();
    let ip: IpAddr = match iter.next()? {
        Protocol::Ip4(ip) => ip.into(),
        Protocol::Ip6(ip) => ip.into(),
        _ => return None,
    };
    let port = match iter.next()? {
        Protocol::Udp(port) => port,
        _ => return None,
    };
    match iter.next() {
        None => {}
        Some(Protocol::P2p(_)) if iter.next().is_none() => {}
        Some(_) => return None,
    }
    Some(SocketAddr::new(ip, port))
}

/// Converts a socket address to `/ip4|ip6/<ip>/udp/<port>`.
pub fn socket_to_multiaddr(addr: SocketAddr) -> Multiaddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) => Protocol::Ip4(ip),
        IpAddr::V6(ip) => Protocol::Ip6(ip),
    };
    Multiaddr::empty().with(ip).with(Protocol::Udp(addr.port()))
}

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
    fn ip4_and_ip6_round_trip() {
        for s in ["127.0.0.1:4001", "[::1]:9", "0.0.0.0:0", "[2001:db8::5]:65535"] {
            let sock: SocketAddr = s.parse().expect("socket addr");
            let addr = socket_to_multiaddr(sock);
            assert_eq!(multiaddr_to_socket(&addr), Some(sock), "{addr}");
        }
        assert_eq!(
            socket_to_multiaddr("10.1.2.3:77".parse().expect("socket addr")),
            ma("/ip4/10.1.2.3/udp/77")
        );
    }

    #[test]
    fn trailing_p2p_is_ignored_and_other_shapes_refused() {
        let peer = Keypair::generate_ed25519().public().to_peer_id();
        let with_p2p = ma(&format!("/ip4/127.0.0.1/udp/5/p2p/{peer}"));
        assert_eq!(multiaddr_to_socket(&with_p2p), Some("127.0.0.1:5".parse().expect("addr")));
        for bad in [
            "/ip4/127.0.0.1/tcp/5",
            "/ip4/127.0.0.1",
            "/dns4/example.com/udp/5",
            "/ip4/127.0.0.1/udp/5/quic-v1",
            "/udp/5",
        ] {
            assert_eq!(multiaddr_to_socket(&ma(bad)), None, "{bad}");
        }
        let p2p_then_more = ma(&format!("/ip4/127.0.0.1/udp/5/p2p/{peer}/udp/6"));
        assert_eq!(multiaddr_to_socket(&p2p_then_more), None);
        assert_eq!(multiaddr_to_socket(&Multiaddr::empty()), None);
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
