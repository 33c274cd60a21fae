//! Addresses of the UDP packet transport: `/ip4/<ip>/udp/<port>` and
//! `/ip6/<ip>/udp/<port>`, optionally followed by `/p2p/<peer id>` when they name a peer.
//! Anything after `/udp/<port>` other than one `/p2p/` (such as `/quic-v1`, which is
//! libp2p's QUIC) is not ours.
//!
//! These are the rules of `msgnet::addr` (the msgnet crate), copied here because msgnet
//! depends on this crate and not the other way round; msgnet could re-export these.

use std::net::{IpAddr, SocketAddr};

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

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

/// `addr` as a UDP address of `peer`: `None` if it is not a UDP address or its trailing
/// `/p2p/<id>` names another peer.
pub(crate) fn peer_socket_addr(peer: &PeerId, addr: &Multiaddr) -> Option<SocketAddr> {
    if let Some(Protocol::P2p(id)) = addr.iter().last() {
        if id != *peer {
            return None;
        }
    }
    multiaddr_to_socket(addr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::identity::Keypair;

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
        assert_eq!(socket_to_multiaddr("10.1.2.3:77".parse().expect("socket addr")), ma("/ip4/10.1.2.3/udp/77"));
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
    fn peer_checks() {
        let peer = Keypair::generate_ed25519().public().to_peer_id();
        let other = Keypair::generate_ed25519().public().to_peer_id();
        let full = ma(&format!("/ip6/::1/udp/4001/p2p/{peer}"));
        assert_eq!(peer_socket_addr(&peer, &full), Some("[::1]:4001".parse().expect("a")));
        assert_eq!(peer_socket_addr(&other, &full), None);
        assert_eq!(peer_socket_addr(&other, &ma("/ip4/1.2.3.4/udp/1")), Some("1.2.3.4:1".parse().expect("a")));
        assert_eq!(peer_socket_addr(&peer, &ma("/ip4/1.2.3.4/tcp/1")), None);
        assert_eq!(peer_socket_addr(&peer, &ma(&format!("/ip4/1.2.3.4/udp/1/quic-v1/p2p/{peer}"))), None);
    }
}
