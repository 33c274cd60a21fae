//! [`HostError`]: what can go wrong building a [`Host`](crate::Host) or calling its
//! non-sending methods. Send and request failures are [`SendError`](crate::SendError)s
//! from the core.

use multiaddr::Multiaddr;

/// Why a host operation (other than a send or request) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// Binding or using a socket failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The address is none of UDP (`/ip4|ip6/<ip>/udp/<port>`), QUIC
    /// (`/ip4|ip6/<ip>/udp/<port>/quic-v1`) or TCP (`/ip4|ip6/<ip>/tcp/<port>`), optionally
    /// followed by `/p2p/<peer id>` where a peer's address is expected; or it is a second
    /// UDP listen address of an address family that already has a socket; or the swarm
    /// refused to listen on it.
    #[error("unsupported address: {0}")]
    UnsupportedAddress(Multiaddr),
    /// The address has no trailing `/p2p/<peer id>`.
    #[error("address has no /p2p/<peer id>: {0}")]
    MissingPeerId(Multiaddr),
    /// The address's `/p2p/<peer id>` names a different peer than the one given.
    #[error("the address's /p2p peer id does not match the peer")]
    PeerIdMismatch,
    /// A handler for this protocol is already registered.
    #[error("a handler for protocol {0} already exists")]
    AlreadyHandled(String),
    /// The protocol id is empty or longer than 1024 bytes.
    #[error("invalid protocol id")]
    InvalidProtocol,
    /// The host is closed.
    #[error("host closed")]
    Closed,
    /// A key file could not be read, parsed or written.
    #[error("key file: {0}")]
    KeyFile(String),
}
