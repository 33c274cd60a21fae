//! Binding of libp2p identities to Noise X25519 static keys.
//!
//! Ed25519 identities get an X25519 static key derived from the identity key itself
//! (Edwards to Montgomery, as libsodium's `crypto_sign_ed25519_*_to_curve25519`), so a peer
//! knowing only the `PeerId` can run an IK handshake. Every static key, derived or random,
//! is additionally bound to the identity by the libp2p noise spec's signed payload:
//! `NoiseHandshakePayload { bytes identity_key = 1; bytes identity_sig = 2; }` where
//! `identity_sig = sign("noise-libp2p-static-key:" ++ static_public)`.

use std::fmt;

use curve25519_dalek::edwards::CompressedEdwardsY;
use libp2p_identity::{ed25519, Keypair, PeerId, PublicKey};
use rand_core::{CryptoRng, RngCore};
use sha2::{Digest, Sha512};
use zeroize::Zeroize;

use super::noise::StaticKey;
use super::CryptoError;

/// Prefix of the message signed by the identity key in the libp2p noise handshake payload.
pub const STATIC_KEY_SIGNATURE_PREFIX: &[u8] = b"noise-libp2p-static-key:";

/// Multihash code of the identity hash, used by `PeerId`s that embed their public key.
const IDENTITY_MULTIHASH_CODE: u64 = 0x00;

/// The protobuf encoding of an ed25519 `PublicKey` before the key bytes: `Type` (field 1)
/// = `Ed25519` (1), `Data` (field 2) of 32 bytes.
const ED25519_PUBLIC_KEY_PROTOBUF_PREFIX: [u8; 4] = [0x08, 0x01, 0x12, 0x20];

/// Protobuf tag of `identity_key` (field 1, wire type 2).
const TAG_IDENTITY_KEY: u8 = 0x0a;
/// Protobuf tag of `identity_sig` (field 2, wire type 2).
const TAG_IDENTITY_SIG: u8 = 0x12;

/// Converts an ed25519 public key to the X25519 public key of the same secret.
///
/// Returns `None` if the key does not decompress to a curve point or is of small order.
pub fn x25519_public_from_ed25519(pk: &ed25519::PublicKey) -> Option<[u8; 32]> {
    x25519_public_from_ed25519_bytes(pk.to_bytes())
}

/// [`x25519_public_from_ed25519`] of a key's 32 bytes: `None` if they do not decompress
/// to a curve point or the point is of small order.
fn x25519_public_from_ed25519_bytes(pk: [u8; 32]) -> Option<[u8; 32]> {
    let point = CompressedEdwardsY(pk).decompress()?;
    if point.is_small_order() {
        return None;
    }
    Some(point.to_montgomery().to_bytes())
}

/// Derives the X25519 secret key matching an ed25519 keypair.
///
/// As libsodium's `crypto_sign_ed25519_sk_to_curve25519`: the first 32 bytes of SHA-512 of
/// the 32-byte seed, clamped. Its X25519 public key equals
/// [`x25519_public_from_ed25519`] of the keypair's public key.
pub fn x25519_secret_from_ed25519(kp: &ed25519::Keypair) -> [u8; 32] {
    let secret = kp.secret();
    let mut digest = Sha512::digest(secret.as_ref());
    let mut out = [0u8; 32];
    out.copy_from_slice(&digest[..32]);
    digest.as_mut_slice().zeroize();
    clamp(&mut out);
    out
}

/// Returns the X25519 static key of a peer whose `PeerId` embeds an ed25519 public key.
///
/// That is the case when the `PeerId` is an identity multihash of the protobuf-encoded
/// key (all ed25519 `PeerId`s). Other key types (secp256k1, ecdsa, hashed keys) give
/// `None`: such peers must be reached with an XX handshake.
pub fn x25519_static_of_peer(peer: &PeerId) -> Option<[u8; 32]> {
    let mh = peer.as_ref();
    if mh.code() != IDENTITY_MULTIHASH_CODE {
        return None;
    }
    // The canonical encoding (the one every libp2p implementation writes): convert the key
    // bytes directly. Decoding them as a libp2p key would decompress the point once more
    // for the same answer (the key decodes exactly when the point decompresses).
    if let Some(key) = mh
        .digest()
        .strip_prefix(&ED25519_PUBLIC_KEY_PROTOBUF_PREFIX[..])
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
    {
        return x25519_public_from_ed25519_bytes(key);
    }
    let key = PublicKey::try_decode_protobuf(mh.digest()).ok()?;
    let ed = key.try_into_ed25519().ok()?;
    x25519_public_from_ed25519(&ed)
}

/// Encodes the libp2p noise handshake payload binding `static_public` to `keypair`.
///
/// The result is the protobuf `NoiseHandshakePayload` with `identity_key` (the
/// protobuf-encoded public key) and `identity_sig` (the signature of
/// `"noise-libp2p-static-key:" ++ static_public`). If the key type cannot sign (never the
/// case for ed25519, secp256k1 or ecdsa), the signature is empty and the peer will reject
/// the payload.
pub fn encode_identity_payload(keypair: &Keypair, static_public: &[u8; 32]) -> Vec<u8> {
    let key = keypair.public().encode_protobuf();
    let sig = keypair
        .sign(&signed_message(static_public))
        .unwrap_or_default();
    let mut out = Vec::with_capacity(key.len() + sig.len() + 8);
    out.push(TAG_IDENTITY_KEY);
    put_varint(&mut out, key.len() as u64);
    out.extend_from_slice(&key);
    out.push(TAG_IDENTITY_SIG);
    put_varint(&mut out, sig.len() as u64);
    out.extend_from_slice(&sig);
    out
}

/// Decodes a libp2p noise handshake payload and checks its signature over `static_public`.
///
/// Unknown fields (such as field 4, `extensions`) are skipped. Returns the remote's
/// identity public key on success.
///
/// # Errors
///
/// [`CryptoError::BadIdentityPayload`] if the protobuf is malformed or truncated, a field is
/// missing or the key does not decode; [`CryptoError::BadSignature`] if the signature does
/// not verify.
pub fn verify_identity_payload(
    bytes: &[u8],
    static_public: &[u8; 32],
) -> Result<PublicKey, CryptoError> {
    let (key, sig) = identity_fields(bytes)?;
    let public =
        PublicKey::try_decode_protobuf(key).map_err(|_| CryptoError::BadIdentityPayload)?;
    if !public.verify(&signed_message(static_public), sig) {
        return Err(CryptoError::BadSignature);
    }
    Ok(public)
}

/// The peer bound to a Noise static key the handshake has already proven the remote
/// holds (the endpoint calls this once the message carrying the payload decrypted).
///
/// As [`verify_identity_payload`], except for an ed25519 identity whose static key is the
/// one derived from it (§6.1 of docs/wire.md: every msgnet node's): its signature is not
/// checked. The X25519 secret of that static key *is* the ed25519 signing scalar, so a
/// remote proven to hold it could sign anything for that identity; the signature adds no
/// assurance, and checking it cost about a tenth of a handshake's CPU. Any other payload
/// (other key types, a random static key, a key not in its canonical encoding) is
/// verified in full.
///
/// # Errors
///
/// As [`verify_identity_payload`].
pub fn peer_of_proven_static(
    bytes: &[u8],
    static_public: &[u8; 32],
) -> Result<PeerId, CryptoError> {
    let (key, sig) = identity_fields(bytes)?;
    // The canonical ed25519 encoding: its `PeerId` is the identity multihash of exactly
    // these bytes, and the point was checked (it decompresses, not of small order) by
    // the conversion; decoding it as a libp2p key would decompress it once more.
    let raw = key
        .strip_prefix(&ED25519_PUBLIC_KEY_PROTOBUF_PREFIX[..])
        .and_then(|k| <[u8; 32]>::try_from(k).ok());
    if raw.and_then(x25519_public_from_ed25519_bytes).as_ref() == Some(static_public) {
        let mut mh = Vec::with_capacity(key.len() + 2);
        mh.extend_from_slice(&[IDENTITY_MULTIHASH_CODE as u8, key.len() as u8]);
        mh.extend_from_slice(key);
        return PeerId::from_bytes(&mh).map_err(|_| CryptoError::BadIdentityPayload);
    }
    let public =
        PublicKey::try_decode_protobuf(key).map_err(|_| CryptoError::BadIdentityPayload)?;
    if !public.verify(&signed_message(static_public), sig) {
        return Err(CryptoError::BadSignature);
    }
    Ok(public.to_peer_id())
}

/// The identity key (protobuf-encoded, not decoded) and the signature of a noise
/// handshake payload, unchecked.
fn identity_fields(bytes: &[u8]) -> Result<(&[u8], &[u8]), CryptoError> {
    let mut identity_key: Option<&[u8]> = None;
    let mut identity_sig: Option<&[u8]> = None;
    let mut rest = bytes;
    while !rest.is_empty() {
        let tag = take_varint(&mut rest).ok_or(CryptoError::BadIdentityPayload)?;
        let field = tag >> 3;
        let wire_type = tag & 7;
        if field == 0 {
            return Err(CryptoError::BadIdentityPayload);
        }
        match (field, wire_type) {
            (1, 2) => identity_key = Some(take_len_delimited(&mut rest)?),
            (2, 2) => identity_sig = Some(take_len_delimited(&mut rest)?),
            (1 | 2, _) => return Err(CryptoError::BadIdentityPayload),
            (_, 0) => {
                take_varint(&mut rest).ok_or(CryptoError::BadIdentityPayload)?;
            }
            (_, 1) => {
                take_bytes(&mut rest, 8)?;
            }
            (_, 2) => {
                take_len_delimited(&mut rest)?;
            }
            (_, 5) => {
                take_bytes(&mut rest, 4)?;
            }
            // Groups (3, 4) are deprecated; 6 and 7 are not wire types.
            _ => return Err(CryptoError::BadIdentityPayload),
        }
    }
    let key = identity_key.ok_or(CryptoError::BadIdentityPayload)?;
    let sig = identity_sig.ok_or(CryptoError::BadIdentityPayload)?;
    Ok((key, sig))
}

/// The local node's identity: its libp2p keypair and the X25519 static key bound to it.
pub struct LocalIdentity {
    keypair: Keypair,
    peer_id: PeerId,
    static_key: StaticKey,
    payload: Vec<u8>,
}

impl LocalIdentity {
    /// Builds the local identity from a libp2p keypair.
    ///
    /// Ed25519 keypairs use the static key derived from the identity key (so that peers can
    /// run IK from the `PeerId` alone); other key types get a random X25519 static key drawn
    /// from `rng`. The signed identity payload is computed once here.
    pub fn new(keypair: Keypair, rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut static_secret = match keypair.clone().try_into_ed25519() {
            Ok(ed) => x25519_secret_from_ed25519(&ed),
            Err(_) => {
                let mut s = [0u8; 32];
                rng.fill_bytes(&mut s);
                clamp(&mut s);
                s
            }
        };
        let static_key = StaticKey::new(static_secret);
        static_secret.zeroize();
        let payload = encode_identity_payload(&keypair, static_key.public());
        let peer_id = keypair.public().to_peer_id();
        LocalIdentity {
            keypair,
            peer_id,
            static_key,
            payload,
        }
    }

    /// The local `PeerId`.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The libp2p identity keypair.
    pub fn keypair(&self) -> &Keypair {
        &self.keypair
    }

    /// The X25519 static public key used in Noise handshakes.
    pub fn static_public(&self) -> &[u8; 32] {
        self.static_key.public()
    }

    /// The precomputed libp2p noise handshake payload (identity key and signature over
    /// [`static_public`](Self::static_public)).
    pub fn identity_payload(&self) -> &[u8] {
        &self.payload
    }

    /// The X25519 static key pair, for the handshake builders.
    pub(crate) fn static_key(&self) -> &StaticKey {
        &self.static_key
    }
}

impl fmt::Debug for LocalIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalIdentity")
            .field("peer_id", &self.peer_id)
            .field("static_public", &hex_short(self.static_public()))
            .finish_non_exhaustive()
    }
}

/// X25519 clamping.
fn clamp(s: &mut [u8; 32]) {
    s[0] &= 248;
    s[31] &= 127;
    s[31] |= 64;
}

fn signed_message(static_public: &[u8; 32]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(STATIC_KEY_SIGNATURE_PREFIX.len() + 32);
    msg.extend_from_slice(STATIC_KEY_SIGNATURE_PREFIX);
    msg.extend_from_slice(static_public);
    msg
}

fn hex_short(bytes: &[u8]) -> String {
    bytes.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a protobuf varint (at most 10 bytes, no overflow) from the front of `buf`.
fn take_varint(buf: &mut &[u8]) -> Option<u64> {
    let mut value: u64 = 0;
    for (i, &b) in buf.iter().enumerate().take(10) {
        let bits = u64::from(b & 0x7f);
        if i == 9 && bits > 1 {
            return None;
        }
        value |= bits << (7 * i);
        if b & 0x80 == 0 {
            *buf = buf.get(i + 1..)?;
            return Some(value);
        }
    }
    None
}

fn take_bytes<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], CryptoError> {
    if buf.len() < n {
        return Err(CryptoError::BadIdentityPayload);
    }
    let (head, tail) = buf.split_at(n);
    *buf = tail;
    Ok(head)
}

fn take_len_delimited<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], CryptoError> {
    let len = take_varint(buf).ok_or(CryptoError::BadIdentityPayload)?;
    let len = usize::try_from(len).map_err(|_| CryptoError::BadIdentityPayload)?;
    take_bytes(buf, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trip_and_limits() {
        for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            let mut s = out.as_slice();
            assert_eq!(take_varint(&mut s), Some(v));
            assert!(s.is_empty());
        }
        // Truncated, overlong and overflowing varints are rejected.
        assert_eq!(take_varint(&mut &[0x80u8][..]), None);
        assert_eq!(take_varint(&mut &[0xffu8; 11][..]), None);
        let mut overflow = vec![0xffu8; 9];
        overflow.push(0x02);
        assert_eq!(take_varint(&mut overflow.as_slice()), None);
    }
}
