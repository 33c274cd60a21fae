//! Packet protection after the handshake: ChaCha20-Poly1305 with explicit packet numbers.
//!
//! We do not use `snow`'s transport state, so the endpoint controls nonces (packet numbers,
//! which may arrive out of order) and rekeying. The nonce is Noise's: 4 zero bytes followed
//! by the packet number as a little-endian u64. Packet number `u64::MAX` is reserved for
//! [`PacketKey::next`] (Noise REKEY) and refused by [`PacketKey::seal`] and
//! [`PacketKey::open`].
//!
//! The AEAD is `ring`'s ChaCha20-Poly1305 (RFC 8439, the cipher Noise's `ChaChaPoly`
//! names; the same one quinn uses), several times faster per packet than a portable
//! implementation. The output is byte for byte that of any RFC 8439 implementation:
//! the tests check it against `snow`'s transport messages and REKEY.

use std::fmt;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use zeroize::Zeroize;

use super::CryptoError;

/// Length of the authentication tag appended to every sealed packet.
pub const TAG_LEN: usize = 16;

/// One direction's packet protection key.
///
/// Only the 32 key bytes are kept: *ring*'s `LessSafeKey` is built for each packet
/// (for ChaCha20-Poly1305 that is a copy of the key), because a `LessSafeKey` is sized
/// for *ring*'s largest AEAD key schedule (over 500 bytes) and a session holds up to
/// three of these keys.
#[derive(Clone)]
pub struct PacketKey {
    key: [u8; 32],
}

/// The two keys of a session, oriented for the local side.
#[derive(Debug, Clone)]
pub struct SessionKeys {
    /// Protects the packets we send.
    pub send: PacketKey,
    /// Opens the packets we receive.
    pub recv: PacketKey,
}

impl PacketKey {
    /// Creates a packet key from 32 raw key bytes.
    pub fn new(key: [u8; 32]) -> Self {
        PacketKey { key }
    }

    /// *ring*'s key for this key's bytes. `None` only if *ring* refused the key, which it
    /// does for a wrong key length alone (never for 32 bytes); the caller then fails with
    /// a typed error.
    fn aead(&self) -> Option<LessSafeKey> {
        UnboundKey::new(&CHACHA20_POLY1305, &self.key)
            .ok()
            .map(LessSafeKey::new)
    }

    /// Encrypts `buf[plaintext_start..]` in place, authenticating `header` as associated
    /// data, and appends the [`TAG_LEN`]-byte tag to `buf`.
    ///
    /// # Errors
    ///
    /// [`CryptoError::Encrypt`] if `plaintext_start > buf.len()` or `pn == u64::MAX`;
    /// `buf` is then unchanged.
    pub fn seal(
        &self,
        pn: u64,
        header: &[u8],
        buf: &mut Vec<u8>,
        plaintext_start: usize,
    ) -> Result<(), CryptoError> {
        if pn == u64::MAX {
            return Err(CryptoError::Encrypt);
        }
        self.seal_raw(pn, header, buf, plaintext_start)
    }

    fn seal_raw(
        &self,
        pn: u64,
        header: &[u8],
        buf: &mut Vec<u8>,
        plaintext_start: usize,
    ) -> Result<(), CryptoError> {
        let aead = self.aead().ok_or(CryptoError::Encrypt)?;
        let plaintext = buf.get_mut(plaintext_start..).ok_or(CryptoError::Encrypt)?;
        let tag = aead
            .seal_in_place_separate_tag(nonce(pn), Aad::from(header), plaintext)
            .map_err(|_| CryptoError::Encrypt)?;
        buf.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Verifies and decrypts `sealed` (ciphertext followed by the tag) in place, with
    /// `header` as associated data, and returns the plaintext (the front of `sealed`).
    ///
    /// # Errors
    ///
    /// [`CryptoError::Decrypt`] if `sealed` is shorter than the tag, `pn == u64::MAX`, or
    /// authentication fails (the contents of `sealed` are then unspecified).
    pub fn open<'a>(
        &self,
        pn: u64,
        header: &[u8],
        sealed: &'a mut [u8],
    ) -> Result<&'a [u8], CryptoError> {
        if pn == u64::MAX || sealed.len() < TAG_LEN {
            return Err(CryptoError::Decrypt);
        }
        let aead = self.aead().ok_or(CryptoError::Decrypt)?;
        let plaintext = aead
            .open_in_place(nonce(pn), Aad::from(header), sealed)
            .map_err(|_| CryptoError::Decrypt)?;
        Ok(plaintext)
    }

    /// The next key, by Noise's REKEY: the first 32 bytes of
    /// `ENCRYPT(k, nonce = 2^64 - 1, ad = empty, 32 zero bytes)`.
    ///
    /// Both sides must switch at the same point (e.g. on a key phase bit).
    pub fn next(&self) -> PacketKey {
        let mut buf = Vec::with_capacity(32 + TAG_LEN);
        buf.resize(32, 0);
        // Encrypting 32 bytes with a valid key cannot fail; on the impossible error the
        // buffer would still be zeros, which is a deterministic (if weak) key on both sides.
        if self.seal_raw(u64::MAX, &[], &mut buf, 0).is_err() {
            buf.clear();
            buf.resize(32, 0);
        }
        let mut key = [0u8; 32];
        if let Some(k) = buf.get(..32) {
            key.copy_from_slice(k);
        }
        buf.zeroize();
        let next = PacketKey::new(key);
        key.zeroize();
        next
    }
}

impl fmt::Debug for PacketKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PacketKey").finish_non_exhaustive()
    }
}

impl Drop for PacketKey {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

/// Noise nonce: 4 zero bytes, then `pn` little-endian.
fn nonce(pn: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&pn.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> PacketKey {
        PacketKey::new([b; 32])
    }

    #[test]
    fn packet_key_holds_only_the_key_bytes() {
        // A session holds up to three keys: they must not carry ring's key schedule
        // (a `LessSafeKey` is sized for AES-GCM's, over 500 bytes).
        assert_eq!(std::mem::size_of::<PacketKey>(), 32);
        // The key built per packet is the same key: same ciphertext for the same input.
        let (a, b) = (key(9), key(9));
        let (mut x, mut y) = (b"payload".to_vec(), b"payload".to_vec());
        a.seal(7, b"h", &mut x, 0).expect("seal");
        b.seal(7, b"h", &mut y, 0).expect("seal");
        assert_eq!(x, y);
        assert_ne!(&x[..7], b"payload");
    }

    #[test]
    fn packet_round_trip() {
        let k = key(1);
        let header = b"header bytes";
        for len in [0usize, 1, 15, 16, 17, 1200] {
            let plaintext: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut buf = header.to_vec();
            buf.extend_from_slice(&plaintext);
            k.seal(42, header, &mut buf, header.len()).expect("seal");
            assert_eq!(buf.len(), header.len() + len + TAG_LEN);
            assert_eq!(&buf[..header.len()], header, "header left in clear");
            let (h, sealed) = buf.split_at_mut(header.len());
            assert_eq!(k.open(42, h, sealed).expect("open"), &plaintext[..]);
        }
    }

    #[test]
    fn packet_tampering_fails() {
        let k = key(2);
        let header = b"hdr".to_vec();
        let mut sealed = b"some plaintext".to_vec();
        k.seal(5, &header, &mut sealed, 0).expect("seal");
        for i in 0..header.len() * 8 {
            let mut h = header.clone();
            h[i / 8] ^= 1 << (i % 8);
            assert!(k.open(5, &h, &mut sealed.clone()).is_err());
        }
        for i in 0..sealed.len() * 8 {
            let mut s = sealed.clone();
            s[i / 8] ^= 1 << (i % 8);
            assert_eq!(
                k.open(5, &header, &mut s),
                Err(CryptoError::Decrypt),
                "bit {i}"
            );
        }
        assert!(k.open(6, &header, &mut sealed.clone()).is_err(), "wrong pn");
        assert!(
            key(3).open(5, &header, &mut sealed.clone()).is_err(),
            "wrong key"
        );
        for n in 0..TAG_LEN {
            assert_eq!(
                k.open(5, &header, &mut sealed[..n].to_vec()),
                Err(CryptoError::Decrypt)
            );
        }
        assert!(k.open(5, &header, &mut sealed).is_ok());
    }

    #[test]
    fn packet_bad_arguments_do_not_panic() {
        let k = key(4);
        let mut buf = vec![1, 2, 3];
        assert_eq!(k.seal(0, b"", &mut buf, 4), Err(CryptoError::Encrypt));
        assert_eq!(buf, [1, 2, 3]);
        assert_eq!(
            k.seal(u64::MAX, b"", &mut buf, 0),
            Err(CryptoError::Encrypt)
        );
        k.seal(0, b"", &mut buf, 3).expect("empty plaintext");
        assert_eq!(buf.len(), 3 + TAG_LEN);
        assert_eq!(
            k.open(u64::MAX, b"", &mut [0; 32]),
            Err(CryptoError::Decrypt)
        );
    }

    #[test]
    fn rekey_stays_in_agreement() {
        let mut send = key(5);
        let mut recv = key(5);
        for epoch in 0..4u64 {
            let mut buf = b"data".to_vec();
            send.seal(epoch, b"h", &mut buf, 0).expect("seal");
            assert_eq!(
                recv.open(epoch, b"h", &mut buf.clone()).expect("open"),
                b"data"
            );
            let old = recv.clone();
            send = send.next();
            recv = recv.next();
            assert!(
                recv.open(epoch, b"h", &mut buf.clone()).is_err(),
                "new key differs"
            );
            assert!(old.open(epoch, b"h", &mut buf).is_ok());
        }
    }

    /// Cross-check against snow: same split keys, same nonces, same REKEY.
    #[test]
    fn matches_snow_transport_and_rekey() {
        let params: snow::params::NoiseParams =
            "Noise_NN_25519_ChaChaPoly_SHA256".parse().expect("params");
        let mut i = snow::Builder::with_resolver(
            params.clone(),
            Box::new(crate::crypto::SeededResolver::new([1; 32])),
        )
        .build_initiator()
        .expect("i");
        let mut r = snow::Builder::with_resolver(
            params,
            Box::new(crate::crypto::SeededResolver::new([2; 32])),
        )
        .build_responder()
        .expect("r");
        let mut m = [0u8; 128];
        let mut p = [0u8; 128];
        let n = i.write_message(&[], &mut m).expect("w1");
        r.read_message(&m[..n], &mut p).expect("r1");
        let n = r.write_message(&[], &mut m).expect("w2");
        i.read_message(&m[..n], &mut p).expect("r2");
        let (k1, k2) = i.dangerously_get_raw_split();
        let mut it = i.into_transport_mode().expect("transport");
        let mut rt = r.into_transport_mode().expect("transport");
        let (ours_i2r, ours_r2i) = (PacketKey::new(k1), PacketKey::new(k2));

        let msg = b"cross-check";
        let mut snow_out = [0u8; 64];
        // nonce 0, before rekey, both directions
        let n = it.write_message(msg, &mut snow_out).expect("snow enc");
        let mut ours = msg.to_vec();
        ours_i2r.seal(0, b"", &mut ours, 0).expect("seal");
        assert_eq!(&snow_out[..n], &ours[..]);
        let n = rt.write_message(msg, &mut snow_out).expect("snow enc");
        let mut ours = msg.to_vec();
        ours_r2i.seal(0, b"", &mut ours, 0).expect("seal");
        assert_eq!(&snow_out[..n], &ours[..]);

        // after rekey, nonce 1
        it.rekey_outgoing();
        let n = it.write_message(msg, &mut snow_out).expect("snow enc");
        let mut ours = msg.to_vec();
        ours_i2r.next().seal(1, b"", &mut ours, 0).expect("seal");
        assert_eq!(&snow_out[..n], &ours[..]);
    }
}
