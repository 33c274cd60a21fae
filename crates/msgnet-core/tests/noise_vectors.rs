//! Known-answer tests of the Noise handshakes: the bytes on the wire for fixed identities
//! and seeds, recorded from the implementation that delegated every primitive to `snow`'s
//! default resolver, and a byte-for-byte cross-check against plain `snow` (its default
//! resolver, the same seeded RNG) in both roles. A change to the primitives (for speed)
//! must leave every handshake byte unchanged.

use curve25519_dalek::montgomery::MontgomeryPoint;
use libp2p_identity::Keypair;
use msgnet_core::crypto::*;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use std::cell::Cell;

fn ed25519_identity(seed: u8) -> LocalIdentity {
    let kp = Keypair::ed25519_from_bytes([seed; 32]).expect("valid ed25519 seed");
    LocalIdentity::new(kp, &mut ChaCha20Rng::from_seed([seed; 32]))
}

fn secp256k1_identity(seed: u8) -> LocalIdentity {
    let sk = libp2p_identity::secp256k1::SecretKey::try_from_bytes([seed; 32]).expect("sk");
    let kp: Keypair = libp2p_identity::secp256k1::Keypair::from(sk).into();
    LocalIdentity::new(kp, &mut ChaCha20Rng::from_seed([seed; 32]))
}

/// One side of a handshake: ours, or plain snow's.
trait Side {
    fn write(&mut self, payload: &[u8]) -> Vec<u8>;
    fn read(&mut self, msg: &[u8]) -> Vec<u8>;
    fn hash(&self) -> Vec<u8>;
}

impl Side for Handshake {
    fn write(&mut self, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_message(payload, &mut out).expect("write");
        out
    }
    fn read(&mut self, msg: &[u8]) -> Vec<u8> {
        let mut p = Vec::new();
        self.read_message(msg, &mut p).expect("read");
        p
    }
    fn hash(&self) -> Vec<u8> {
        self.handshake_hash().to_vec()
    }
}

/// Plain snow with its default resolver; only the RNG is seeded (as msgnet's).
struct PlainResolver(Cell<Option<ChaCha20Rng>>);

struct PlainRandom(ChaCha20Rng);

impl Random for PlainRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoResolver for PlainResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        self.0
            .take()
            .map(|r| Box::new(PlainRandom(r)) as Box<dyn Random>)
    }
    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        DefaultResolver.resolve_dh(choice)
    }
    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }
    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

struct Plain(snow::HandshakeState);

fn plain(
    pattern: &str,
    local: &[u8; 32],
    remote: Option<&[u8; 32]>,
    seed: [u8; 32],
    initiator: bool,
) -> Plain {
    let resolver = PlainResolver(Cell::new(Some(ChaCha20Rng::from_seed(seed))));
    let mut b = snow::Builder::with_resolver(pattern.parse().expect("params"), Box::new(resolver))
        .prologue(NOISE_PROLOGUE)
        .expect("prologue")
        .local_private_key(local)
        .expect("key");
    if let Some(r) = remote {
        b = b.remote_public_key(r).expect("remote");
    }
    Plain(
        if initiator {
            b.build_initiator()
        } else {
            b.build_responder()
        }
        .expect("build"),
    )
}

impl Side for Plain {
    fn write(&mut self, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; payload.len() + 200];
        let n = self.0.write_message(payload, &mut out).expect("write");
        out.truncate(n);
        out
    }
    fn read(&mut self, msg: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; msg.len()];
        let n = self.0.read_message(msg, &mut out).expect("read");
        out.truncate(n);
        out
    }
    fn hash(&self) -> Vec<u8> {
        self.0.get_handshake_hash().to_vec()
    }
}

/// Runs `msgs` messages between `i` and `r`; returns SHA-256 over every message and the
/// final handshake hash.
fn transcript(i: &mut dyn Side, r: &mut dyn Side, msgs: usize, payload: &[u8]) -> String {
    let mut h = Sha256::new();
    for n in 0..msgs {
        let (w, rd): (&mut dyn Side, &mut dyn Side) = if n % 2 == 0 {
            (&mut *i, &mut *r)
        } else {
            (&mut *r, &mut *i)
        };
        let mut p = payload.to_vec();
        p.push(n as u8);
        let msg = w.write(&p);
        assert_eq!(rd.read(&msg), p);
        h.update((msg.len() as u32).to_be_bytes());
        h.update(&msg);
    }
    let hh = i.hash();
    assert_eq!(hh, r.hash());
    h.update(&hh);
    hex::encode(h.finalize())
}

/// Our IK handshake between ed25519 identities `a` → `b` with fixed seeds.
fn ours_ik(a: &LocalIdentity, b: &LocalIdentity, s: u8) -> String {
    let rs = x25519_static_of_peer(&b.peer_id()).expect("ed25519");
    let mut i = Handshake::initiator_ik(a, &rs, [s; 32]).expect("init");
    let mut r = Handshake::responder_ik(b, [s.wrapping_add(1); 32]).expect("resp");
    transcript(&mut i, &mut r, 2, a.identity_payload())
}

fn ours_xx(a: &LocalIdentity, b: &LocalIdentity, s: u8) -> String {
    let mut i = Handshake::initiator_xx(a, [s; 32]).expect("init");
    let mut r = Handshake::responder_xx(b, [s.wrapping_add(1); 32]).expect("resp");
    transcript(&mut i, &mut r, 3, b"xx payload")
}

#[test]
fn ik_known_answer() {
    let (a, b) = (ed25519_identity(1), ed25519_identity(2));
    assert_eq!(ours_ik(&a, &b, 10), IK_1_2_10);
    assert_eq!(ours_ik(&b, &a, 77), IK_2_1_77);
}

#[test]
fn xx_known_answer() {
    let (a, b) = (ed25519_identity(1), secp256k1_identity(3));
    assert_eq!(ours_xx(&a, &b, 20), XX_1_3_20);
    assert_eq!(ours_xx(&b, &a, 99), XX_3_1_99);
}

/// Ours against plain snow, in every role combination, for many identities and seeds:
/// identical transcripts.
#[test]
fn ik_and_xx_match_plain_snow() {
    for k in 0..24u8 {
        let a = ed25519_identity(k.wrapping_mul(7).wrapping_add(1));
        let b = if k % 3 == 0 {
            secp256k1_identity(k + 1)
        } else {
            ed25519_identity(k.wrapping_mul(11).wrapping_add(2))
        };
        let (si, sr) = ([k; 32], [k ^ 0x5a; 32]);
        let rs = *b.static_public();
        let sk = |id: &LocalIdentity| -> [u8; 32] {
            // The static secret is not public: derive it again as the identity does.
            let kp = id.keypair().clone().try_into_ed25519().expect("ed25519");
            x25519_secret_from_ed25519(&kp)
        };
        let a_sk = sk(&a);
        // IK: all four combinations give one transcript.
        if k % 3 != 0 {
            let b_sk = sk(&b);
            let mut results = Vec::new();
            for (our_i, our_r) in [(true, true), (true, false), (false, true), (false, false)] {
                let mut i: Box<dyn Side> = if our_i {
                    Box::new(Handshake::initiator_ik(&a, &rs, si).expect("init"))
                } else {
                    Box::new(plain(NOISE_IK, &a_sk, Some(&rs), si, true))
                };
                let mut r: Box<dyn Side> = if our_r {
                    Box::new(Handshake::responder_ik(&b, sr).expect("resp"))
                } else {
                    Box::new(plain(NOISE_IK, &b_sk, None, sr, false))
                };
                results.push(transcript(&mut *i, &mut *r, 2, b"ik"));
            }
            assert!(
                results.windows(2).all(|w| w[0] == w[1]),
                "IK transcripts differ: {results:?}"
            );
        }
        // XX with our initiator against plain snow's responder and vice versa (the
        // responder's key need not be ed25519: only ours needs the secret).
        let ours = {
            let mut i = Handshake::initiator_xx(&a, si).expect("init");
            let mut resp = Handshake::responder_xx(&b, sr).expect("resp");
            transcript(&mut i, &mut resp, 3, b"xx")
        };
        if k % 3 != 0 {
            let b_sk = sk(&b);
            let mut i = plain(NOISE_XX, &a_sk, None, si, true);
            let mut r = plain(NOISE_XX, &b_sk, None, sr, false);
            assert_eq!(transcript(&mut i, &mut r, 3, b"xx"), ours);
        }
        let mut r = Handshake::responder_xx(&b, sr).expect("resp");
        let mut i = plain(NOISE_XX, &a_sk, None, si, true);
        assert_eq!(transcript(&mut i, &mut r, 3, b"xx"), ours);
    }
}

/// The resolver's X25519 against snow's default one: the same public keys (set and
/// generated) and the same shared secrets, for many keys and points, including points
/// on the twist, with the top bit set, non-canonical and of small order.
#[test]
fn dh_matches_snow_default() {
    let mut rng = ChaCha20Rng::from_seed([42; 32]);
    let id = ed25519_identity(9);
    for (n, resolver) in [
        SeededResolver::new([1; 32]),
        SeededResolver::with_static([2; 32], &id),
    ]
    .into_iter()
    .enumerate()
    {
        for i in 0..1000u32 {
            let mut ours = resolver.resolve_dh(&DHChoice::Curve25519).expect("25519");
            let mut theirs = DefaultResolver
                .resolve_dh(&DHChoice::Curve25519)
                .expect("25519");
            assert_eq!(ours.name(), theirs.name());
            assert_eq!(
                (ours.pub_len(), ours.priv_len()),
                (theirs.pub_len(), theirs.priv_len())
            );
            let mut k = [0u8; 32];
            rng.fill_bytes(&mut k);
            if i % 2 == 0 {
                ours.set(&k);
                theirs.set(&k);
            } else {
                let seed = [i as u8; 32];
                ours.generate(&mut PlainRandom(ChaCha20Rng::from_seed(seed)))
                    .expect("gen");
                theirs
                    .generate(&mut PlainRandom(ChaCha20Rng::from_seed(seed)))
                    .expect("gen");
            }
            assert_eq!(ours.pubkey(), theirs.pubkey(), "resolver {n} key {i}");
            assert_eq!(ours.privkey(), theirs.privkey());
            let mut point = [0u8; 32];
            rng.fill_bytes(&mut point);
            match i % 5 {
                0 => point = MontgomeryPoint::mul_base_clamped(point).to_bytes(), // on the curve
                1 => point[31] |= 0x80,
                2 => point = [0xff; 32],            // non-canonical (>= p)
                3 if i % 3 == 0 => point = [0; 32], // small order: all-zero output
                _ => {}
            }
            let (mut a, mut b) = ([1u8; 32], [2u8; 32]);
            ours.dh(&point, &mut a).expect("dh");
            theirs.dh(&point, &mut b).expect("dh");
            assert_eq!(a, b, "resolver {n} dh {i}");
        }
    }
    // The identity's own static key: the known public key is used, and is right.
    let resolver = SeededResolver::with_static([3; 32], &id);
    let mut ours = resolver.resolve_dh(&DHChoice::Curve25519).expect("25519");
    let kp = id.keypair().clone().try_into_ed25519().expect("ed25519");
    let secret = x25519_secret_from_ed25519(&kp);
    ours.set(&secret);
    assert_eq!(ours.pubkey(), id.static_public());
    let mut theirs = DefaultResolver
        .resolve_dh(&DHChoice::Curve25519)
        .expect("25519");
    theirs.set(&secret);
    assert_eq!(ours.pubkey(), theirs.pubkey());
    // A short point is an error, not a panic.
    assert!(ours.dh(&[9u8; 31], &mut [0u8; 32]).is_err());
}

/// `x25519_static_of_peer` on identity-multihash peer ids with the canonical ed25519 key
/// encoding and arbitrary key bytes (valid keys, points that do not decompress, small
/// order points) agrees with decoding the key through libp2p first.
#[test]
fn static_of_peer_matches_libp2p_decoding() {
    fn via_libp2p(digest: &[u8]) -> Option<[u8; 32]> {
        let key = libp2p_identity::PublicKey::try_decode_protobuf(digest).ok()?;
        x25519_public_from_ed25519(&key.try_into_ed25519().ok()?)
    }
    let mut rng = ChaCha20Rng::from_seed([7; 32]);
    let (mut some, mut none) = (0, 0);
    for i in 0..400u32 {
        let mut key = [0u8; 32];
        match i % 4 {
            0 => {
                key = Keypair::generate_ed25519()
                    .try_into_ed25519()
                    .expect("ed")
                    .public()
                    .to_bytes()
            }
            1 => key[0] = 1, // the identity point: small order
            _ => rng.fill_bytes(&mut key),
        }
        let mut digest = vec![0x08, 0x01, 0x12, 0x20];
        digest.extend_from_slice(&key);
        let mut bytes = vec![0x00, digest.len() as u8];
        bytes.extend_from_slice(&digest);
        let peer = libp2p_identity::PeerId::from_bytes(&bytes).expect("identity multihash");
        let got = x25519_static_of_peer(&peer);
        assert_eq!(got, via_libp2p(&digest), "key {i}");
        if got.is_some() {
            some += 1
        } else {
            none += 1
        }
    }
    assert!(
        some > 100 && none > 100,
        "both outcomes exercised: {some} {none}"
    );
}

// SHA-256 of every message (length-prefixed) and the final handshake hash, recorded
// with snow's default resolver.
const IK_1_2_10: &str = "fc616ae57baf5fd9d65abdaf2ebdf4c1682f445796e83466932aac6da6b90555";
const IK_2_1_77: &str = "ad5f9c73dc1fc5bbad24b904fe0666967183fa843b8fde1dffcb6cfe779ec66d";
const XX_1_3_20: &str = "e5f1ed39b41e12fb9d1e383d8a7ddfe225807c6e94fe648cc8b2399c3afd6c57";
const XX_3_1_99: &str = "871406b88d5252b58a1d658595eb11b7126e1a64665d3c9cc53acefe5e796d88";
