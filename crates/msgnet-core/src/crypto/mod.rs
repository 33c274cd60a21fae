//! Cryptography: Noise handshakes bound to libp2p identities, packet protection, cookies.
