//! Cryptography: Noise handshakes bound to libp2p identities, packet protection, cookies.
//!
//! - [`identity`]: the binding between a libp2p identity and the X25519 static key used in
//!   Noise (Edwards to Montgomery conversion for ed25519 keys, the libp2p noise spec's
//!   signed handshake payload) and [`LocalIdentity`].
//! - [`noise`]: IK and XX handshakes over `snow`, with all randomness drawn from a
//!   caller-provided seed ([`Handshake`], [`SeededResolver`]).
//! - [`packet_key`]: ChaCha20-Poly1305 packet protection with explicit packet numbers and
//!   Noise-style rekeying ([`PacketKey`], [`SessionKeys`]).
//! - [`cookie`]: stateless cookies for the endpoint under load ([`CookieJar`]).
//!
//! Nothing here reads the clock or a global RNG: time and randomness are always passed in.

pub mod cookie;
pub mod identity;
pub mod noise;
pub mod packet_key;

pub use cookie::{CookieJar, COOKIE_LEN, COOKIE_SECRET_LIFETIME};
pub use identity::{
    encode_identity_payload, peer_of_proven_static, verify_identity_payload,
    x25519_public_from_ed25519, x25519_secret_from_ed25519, x25519_static_of_peer, LocalIdentity,
    STATIC_KEY_SIGNATURE_PREFIX,
};
pub use noise::{
    Handshake, SeededResolver, MAX_HANDSHAKE_MESSAGE_LEN, NOISE_IK, NOISE_PROLOGUE, NOISE_XX,
};
pub use packet_key::{PacketKey, SessionKeys, TAG_LEN};

/// Errors from the cryptography module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The Noise handshake failed (bad state, malformed message, message too large, ...).
    #[error("noise handshake error: {0}")]
    Noise(String),
    /// The handshake is not finished yet, so no session keys can be derived.
    #[error("noise handshake not finished")]
    HandshakeIncomplete,
    /// The libp2p identity payload could not be decoded.
    #[error("malformed identity payload")]
    BadIdentityPayload,
    /// The identity payload's signature over the static key does not verify.
    #[error("bad identity signature over the static key")]
    BadSignature,
    /// Authenticated decryption failed (tampered, truncated, wrong key or packet number).
    #[error("decryption failed")]
    Decrypt,
    /// Encryption was refused (bad buffer offset or reserved packet number).
    #[error("encryption failed")]
    Encrypt,
    /// The key type is not supported for this operation.
    #[error("unsupported key type")]
    UnsupportedKey,
}

impl From<snow::Error> for CryptoError {
    fn from(e: snow::Error) -> Self {
        match e {
            snow::Error::Decrypt => CryptoError::Decrypt,
            other => CryptoError::Noise(other.to_string()),
        }
    }
}
