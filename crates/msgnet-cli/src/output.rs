//! Printing: payloads as text or hex, dialable addresses.

use std::io::Write;

use msgnet::PeerId;
use multiaddr::{Multiaddr, Protocol};

/// A payload as UTF-8 when it is valid and printable (no control characters other than
/// tab), else `0x` followed by lowercase hex. The empty payload prints as `""`.
pub fn payload(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "\"\"".to_string();
    }
    match std::str::from_utf8(bytes) {
        Ok(s) if s.chars().all(|c| !c.is_control() || c == '\t') => s.to_string(),
        _ => format!("0x{}", hex::encode(bytes)),
    }
}

/// Parse a message given on the command line: with `hex_input`, hex digits (an optional
/// `0x` prefix); otherwise the UTF-8 bytes of the argument.
pub fn parse_payload(arg: &str, hex_input: bool) -> anyhow::Result<Vec<u8>> {
    if hex_input {
        let digits = arg.strip_prefix("0x").unwrap_or(arg);
        return hex::decode(digits).map_err(|e| anyhow::anyhow!("invalid hex message: {e}"));
    }
    Ok(arg.as_bytes().to_vec())
}

/// Make a listen address dialable from this machine and append `/p2p/<peer>`:
/// an unspecified IP (`0.0.0.0`, `::`) becomes the loopback address.
pub fn dialable(addr: &Multiaddr, peer: PeerId) -> Multiaddr {
    let mut out = Multiaddr::empty();
    let mut has_p2p = false;
    for p in addr.iter() {
        match p {
            Protocol::Ip4(ip) if ip.is_unspecified() => {
                out.push(Protocol::Ip4([127, 0, 0, 1].into()))
            }
            Protocol::Ip6(ip) if ip.is_unspecified() => {
                out.push(Protocol::Ip6(std::net::Ipv6Addr::LOCALHOST))
            }
            Protocol::P2p(_) => {
                has_p2p = true;
                out.push(p)
            }
            other => out.push(other),
        }
    }
    if !has_p2p {
        out.push(Protocol::P2p(peer));
    }
    out
}

/// Whether the address is an IPv6 one (the client then binds an IPv6 socket).
pub fn is_ip6(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::Ip6(_)))
}

/// Write one line to stdout and flush it, so that a pipe reader sees it at once.
/// Fails when stdout is closed (the reader went away).
pub fn println_flush(line: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_text_or_hex() {
        assert_eq!(payload(b"hello world"), "hello world");
        assert_eq!(payload(&[0xff, 0x00]), "0xff00");
        assert_eq!(payload(b"a\nb"), "0x610a62");
        assert_eq!(payload(b""), "\"\"");
    }

    #[test]
    fn dialable_replaces_unspecified() {
        let peer = libp2p_identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id();
        let a: Multiaddr = "/ip4/0.0.0.0/udp/4001".parse().expect("addr");
        assert_eq!(
            dialable(&a, peer).to_string(),
            format!("/ip4/127.0.0.1/udp/4001/p2p/{peer}")
        );
    }
}
