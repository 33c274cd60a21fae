//! Noise IK and XX handshakes over `snow`, deterministic for a given seed.
//!
//! `snow` draws ephemeral keys from its resolver's RNG; [`SeededResolver`] hands out a
//! `ChaCha20Rng` seeded by the caller, so this module never touches the OS RNG and a
//! handshake is reproducible. Hash and cipher are `snow`'s default ones. X25519 gives the
//! results of `snow`'s default (curve25519-dalek) faster: key pairs and DH run on
//! AWS-LC's X25519 (through `aws-lc-rs`), and the local static key comes parsed from the
//! [`LocalIdentity`] (once per identity) instead of being derived again for every
//! handshake. The bytes on the wire are those of plain `snow` (see
//! `tests/noise_vectors.rs`).
//!
//! The handshake does not build identity payloads itself: callers pass
//! [`LocalIdentity::identity_payload`] (possibly followed by their own data) as the payload
//! of the messages that carry the identity, and check the remote's with
//! [`verify_identity_payload`](super::verify_identity_payload).
//!
//! Note on IK: the payload of the first message is encrypted to the responder's static
//! key but is replayable (no responder contribution yet); only idempotent data may ride
//! in it, and the endpoint must refuse replays of the first message itself.

use std::cell::Cell;
use std::fmt;
use std::sync::{Arc, OnceLock};

use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey, X25519};
use curve25519_dalek::montgomery::MontgomeryPoint;
use zeroize::Zeroize;

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use snow::params::{CipherChoice, DHChoice, HashChoice, NoiseParams};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use snow::{Builder, HandshakeState};

use super::identity::LocalIdentity;
use super::packet_key::{PacketKey, SessionKeys};
use super::CryptoError;

/// Noise protocol name of the IK handshake (responder's static key known in advance).
pub const NOISE_IK: &str = "Noise_IK_25519_ChaChaPoly_SHA256";
/// Noise protocol name of the XX handshake (fallback for peers whose static key is unknown).
pub const NOISE_XX: &str = "Noise_XX_25519_ChaChaPoly_SHA256";
/// Prologue mixed into every msgnet handshake.
pub const NOISE_PROLOGUE: &[u8] = b"msgnet/1";
/// Maximum length of one Noise message.
pub const MAX_HANDSHAKE_MESSAGE_LEN: usize = 65535;

/// Upper bound on the bytes a handshake message adds to its payload (e, encrypted s, tag).
const HANDSHAKE_OVERHEAD: usize = 128;

/// A `snow` crypto resolver whose RNG is a `ChaCha20Rng` seeded by the caller.
///
/// Hash and cipher come from [`DefaultResolver`]. X25519 gives the default resolver's
/// results, on AWS-LC (faster), and a local static key pair given with
/// [`with_static`](Self::with_static) spares the derivation of its public key. The RNG is
/// handed out once (snow asks for it once per handshake); later requests get `None`.
pub struct SeededResolver {
    rng: Cell<Option<ChaCha20Rng>>,
    /// The local static key pair, if known in advance.
    static_pair: Option<StaticKey>,
}

impl SeededResolver {
    /// Creates a resolver whose RNG is `ChaCha20Rng::from_seed(seed)`.
    pub fn new(seed: [u8; 32]) -> Self {
        SeededResolver {
            rng: Cell::new(Some(ChaCha20Rng::from_seed(seed))),
            static_pair: None,
        }
    }

    /// As [`new`](Self::new), for handshakes whose local static key is `local`'s: its
    /// X25519 public key and parsed private key are taken from `local` rather than
    /// computed again.
    pub fn with_static(seed: [u8; 32], local: &LocalIdentity) -> Self {
        SeededResolver {
            rng: Cell::new(Some(ChaCha20Rng::from_seed(seed))),
            static_pair: Some(local.static_key().clone()),
        }
    }
}

/// An X25519 key pair computed once: the secret, its public key and AWS-LC's parsed form
/// of the secret (`None` if AWS-LC refused it; DH then runs on curve25519-dalek). The
/// secret is wiped on drop; the parsed key is shared, not copied, between handshakes.
#[derive(Clone)]
pub(crate) struct StaticKey {
    secret: [u8; 32],
    public: [u8; 32],
    parsed: Option<Arc<PrivateKey>>,
}

impl StaticKey {
    /// The key pair of the X25519 secret `secret` (clamped by X25519 itself).
    pub(crate) fn new(secret: [u8; 32]) -> Self {
        let parsed = PrivateKey::from_private_key(&X25519, &secret).ok();
        let public = parsed
            .as_ref()
            .and_then(|key| key.compute_public_key().ok())
            .and_then(|public| <[u8; 32]>::try_from(public.as_ref()).ok())
            .unwrap_or_else(|| MontgomeryPoint::mul_base_clamped(secret).to_bytes());
        StaticKey {
            secret,
            public,
            parsed: parsed.map(Arc::new),
        }
    }

    pub(crate) fn secret(&self) -> &[u8; 32] {
        &self.secret
    }

    pub(crate) fn public(&self) -> &[u8; 32] {
        &self.public
    }

    /// X25519 (RFC 7748) of this secret and the point `u`.
    ///
    /// AWS-LC (s2n-bignum's X25519 on x86-64 and Arm, about 1.5 times as fast as *ring*'s
    /// and 2.2 times curve25519-dalek's Montgomery ladder here) and curve25519-dalek
    /// implement RFC 7748 exactly: clamped scalar, top bit of `u` ignored, non-canonical
    /// `u` reduced. AWS-LC refuses an all-zero result (a small-order `u`); curve25519-dalek
    /// then gives the answer snow's default resolver gives.
    fn dh(&self, u: &[u8; 32]) -> [u8; 32] {
        let shared = self.parsed.as_ref().and_then(|key| {
            let peer = UnparsedPublicKey::new(&X25519, u);
            agreement::agree(key, peer, (), |s| <[u8; 32]>::try_from(s).map_err(|_| ())).ok()
        });
        shared.unwrap_or_else(|| MontgomeryPoint(*u).mul_clamped(self.secret).to_bytes())
    }
}

impl Drop for StaticKey {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

/// X25519 with the results of `snow`'s default resolver, on AWS-LC: a fresh key pair
/// costs one base-point multiplication, a known key pair (the local static key) none.
struct Dh25519 {
    key: Option<StaticKey>,
    known: Option<StaticKey>,
}

impl Dh25519 {
    fn set_secret(&mut self, secret: [u8; 32]) {
        self.key = Some(match &self.known {
            Some(known) if ct_eq(known.secret(), &secret) => known.clone(),
            _ => StaticKey::new(secret),
        });
    }
}

/// Constant-time equality of two keys.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Dh for Dh25519 {
    fn name(&self) -> &'static str {
        "25519"
    }

    fn pub_len(&self) -> usize {
        32
    }

    fn priv_len(&self) -> usize {
        32
    }

    fn set(&mut self, privkey: &[u8]) {
        // snow passes `priv_len` bytes; anything shorter is zero-padded, as snow does.
        let mut bytes = [0u8; 32];
        let n = privkey.len().min(32);
        if let (Some(dst), Some(src)) = (bytes.get_mut(..n), privkey.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.set_secret(bytes);
        bytes.zeroize();
    }

    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        let mut bytes = [0u8; 32];
        rng.try_fill_bytes(&mut bytes)?;
        self.set_secret(bytes);
        bytes.zeroize();
        Ok(())
    }

    fn pubkey(&self) -> &[u8] {
        self.key.as_ref().map_or(&[0; 32], |k| k.public())
    }

    fn privkey(&self) -> &[u8] {
        self.key.as_ref().map_or(&[0; 32], |k| k.secret())
    }

    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        let point: [u8; 32] = pubkey
            .get(..32)
            .and_then(|p| p.try_into().ok())
            .ok_or(snow::Error::Dh)?;
        let key = self.key.as_ref().ok_or(snow::Error::Dh)?;
        let shared = key.dh(&point);
        let n = out.len().min(32);
        match (out.get_mut(..n), shared.get(..n)) {
            (Some(dst), Some(src)) => dst.copy_from_slice(src),
            _ => return Err(snow::Error::Dh),
        }
        Ok(())
    }
}

impl fmt::Debug for SeededResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeededResolver").finish_non_exhaustive()
    }
}

struct SeededRandom(ChaCha20Rng);

impl Random for SeededRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoResolver for SeededResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        self.rng
            .take()
            .map(|rng| Box::new(SeededRandom(rng)) as Box<dyn Random>)
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        match choice {
            DHChoice::Curve25519 => Some(Box::new(Dh25519 {
                key: None,
                known: self.static_pair.clone(),
            })),
            other => DefaultResolver.resolve_dh(other),
        }
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

/// One side of a Noise IK or XX handshake.
pub struct Handshake {
    state: HandshakeState,
}

impl fmt::Debug for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handshake")
            .field("initiator", &self.state.is_initiator())
            .field("finished", &self.state.is_handshake_finished())
            .finish_non_exhaustive()
    }
}

impl Handshake {
    /// Starts an IK handshake as initiator towards a responder with static key
    /// `remote_static` (e.g. from [`x25519_static_of_peer`](super::x25519_static_of_peer)).
    ///
    /// # Errors
    ///
    /// [`CryptoError::Noise`] if `snow` refuses the parameters.
    pub fn initiator_ik(
        local: &LocalIdentity,
        remote_static: &[u8; 32],
        seed: [u8; 32],
    ) -> Result<Self, CryptoError> {
        let state = builder(NOISE_IK, local, seed)?
            .remote_public_key(remote_static)?
            .build_initiator()?;
        Ok(Handshake { state })
    }

    /// Starts an XX handshake as initiator.
    ///
    /// # Errors
    ///
    /// [`CryptoError::Noise`] if `snow` refuses the parameters.
    pub fn initiator_xx(local: &LocalIdentity, seed: [u8; 32]) -> Result<Self, CryptoError> {
        let state = builder(NOISE_XX, local, seed)?.build_initiator()?;
        Ok(Handshake { state })
    }

    /// Starts an IK handshake as responder.
    ///
    /// # Errors
    ///
    /// [`CryptoError::Noise`] if `snow` refuses the parameters.
    pub fn responder_ik(local: &LocalIdentity, seed: [u8; 32]) -> Result<Self, CryptoError> {
        let state = builder(NOISE_IK, local, seed)?.build_responder()?;
        Ok(Handshake { state })
    }

    /// Starts an XX handshake as responder.
    ///
    /// # Errors
    ///
    /// [`CryptoError::Noise`] if `snow` refuses the parameters.
    pub fn responder_xx(local: &LocalIdentity, seed: [u8; 32]) -> Result<Self, CryptoError> {
        let state = builder(NOISE_XX, local, seed)?.build_responder()?;
        Ok(Handshake { state })
    }

    /// Writes the next handshake message carrying `payload`, appending it to `out`.
    ///
    /// The message is at most [`MAX_HANDSHAKE_MESSAGE_LEN`] bytes. On error `out` is left
    /// as it was.
    ///
    /// # Errors
    ///
    /// [`CryptoError::Noise`] if it is not our turn, the handshake is finished or the
    /// message would be too large.
    pub fn write_message(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), CryptoError> {
        let start = out.len();
        let room = payload
            .len()
            .saturating_add(HANDSHAKE_OVERHEAD)
            .min(MAX_HANDSHAKE_MESSAGE_LEN);
        out.resize(start.saturating_add(room), 0);
        let written = match out.get_mut(start..) {
            Some(buf) => self.state.write_message(payload, buf),
            None => Err(snow::Error::Input),
        };
        match written {
            Ok(n) => {
                out.truncate(start.saturating_add(n));
                Ok(())
            }
            Err(e) => {
                out.truncate(start);
                Err(e.into())
            }
        }
    }

    /// Reads the peer's next handshake message, replacing the contents of `payload_out` with
    /// its payload.
    ///
    /// # Errors
    ///
    /// [`CryptoError::Decrypt`] if the message was tampered with or encrypted for another
    /// static key, [`CryptoError::Noise`] if it is malformed or out of turn. On error
    /// `payload_out` is empty.
    pub fn read_message(
        &mut self,
        msg: &[u8],
        payload_out: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        payload_out.clear();
        if msg.len() > MAX_HANDSHAKE_MESSAGE_LEN {
            return Err(CryptoError::Noise("handshake message too long".into()));
        }
        payload_out.resize(msg.len(), 0);
        match self.state.read_message(msg, payload_out) {
            Ok(n) => {
                payload_out.truncate(n);
                Ok(())
            }
            Err(e) => {
                payload_out.clear();
                Err(e.into())
            }
        }
    }

    /// The remote's static X25519 key, once known (from the start for an IK initiator).
    pub fn remote_static(&self) -> Option<[u8; 32]> {
        self.state
            .get_remote_static()
            .and_then(|s| <[u8; 32]>::try_from(s).ok())
    }

    /// Whether all handshake messages have been written and read.
    pub fn is_finished(&self) -> bool {
        self.state.is_handshake_finished()
    }

    /// Whether this side started the handshake.
    pub fn is_initiator(&self) -> bool {
        self.state.is_initiator()
    }

    /// Whether the next step is ours to write (rather than to read).
    pub fn is_my_turn(&self) -> bool {
        self.state.is_my_turn()
    }

    /// The handshake hash `h` so far (the channel binding once finished).
    pub fn handshake_hash(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        let h = self.state.get_handshake_hash();
        let n = h.len().min(32);
        if let (Some(dst), Some(src)) = (out.get_mut(..n), h.get(..n)) {
            dst.copy_from_slice(src);
        }
        out
    }

    /// Finishes the handshake and returns the session keys, oriented for this side.
    ///
    /// # Errors
    ///
    /// [`CryptoError::HandshakeIncomplete`] if messages remain to be exchanged.
    pub fn into_keys(mut self) -> Result<SessionKeys, CryptoError> {
        if !self.state.is_handshake_finished() {
            return Err(CryptoError::HandshakeIncomplete);
        }
        // (initiator -> responder, responder -> initiator)
        let (mut i2r, mut r2i) = self.state.dangerously_get_raw_split();
        let keys = if self.state.is_initiator() {
            SessionKeys {
                send: PacketKey::new(i2r),
                recv: PacketKey::new(r2i),
            }
        } else {
            SessionKeys {
                send: PacketKey::new(r2i),
                recv: PacketKey::new(i2r),
            }
        };
        zeroize::Zeroize::zeroize(&mut i2r);
        zeroize::Zeroize::zeroize(&mut r2i);
        Ok(keys)
    }
}

/// The parsed protocol names, parsed once.
fn params(pattern: &str) -> Result<NoiseParams, CryptoError> {
    static IK: OnceLock<Option<NoiseParams>> = OnceLock::new();
    static XX: OnceLock<Option<NoiseParams>> = OnceLock::new();
    let cell = match pattern {
        NOISE_IK => &IK,
        NOISE_XX => &XX,
        other => return Ok(other.parse()?),
    };
    match cell.get_or_init(|| pattern.parse().ok()) {
        Some(p) => Ok(p.clone()),
        None => Ok(pattern.parse()?),
    }
}

fn builder<'a>(
    pattern: &str,
    local: &'a LocalIdentity,
    seed: [u8; 32],
) -> Result<Builder<'a>, CryptoError> {
    let resolver = SeededResolver::with_static(seed, local);
    Ok(Builder::with_resolver(params(pattern)?, Box::new(resolver))
        .prologue(NOISE_PROLOGUE)?
        .local_private_key(local.static_key().secret())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS-LC takes every 32-byte secret, so DH never silently runs on the slower
    /// fallback; its public keys and shared secrets are curve25519-dalek's.
    #[test]
    fn key_pairs_run_on_aws_lc() {
        let mut rng = ChaCha20Rng::from_seed([7; 32]);
        let mut other = [0u8; 32];
        rng.fill_bytes(&mut other);
        let other = StaticKey::new(other);
        for _ in 0..50 {
            let mut secret = [0u8; 32];
            rng.fill_bytes(&mut secret);
            let key = StaticKey::new(secret);
            assert!(key.parsed.is_some());
            assert_eq!(
                key.public(),
                &MontgomeryPoint::mul_base_clamped(secret).to_bytes()
            );
            let shared = key.dh(other.public());
            assert_eq!(shared, other.dh(key.public()));
            let dalek = MontgomeryPoint(*other.public()).mul_clamped(secret);
            assert_eq!(shared, dalek.to_bytes());
        }
    }
}
