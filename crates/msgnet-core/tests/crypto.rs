//! Tests of the crypto module: identity binding, Noise handshakes, packet keys, cookies.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use curve25519_dalek::edwards::CompressedEdwardsY;
use curve25519_dalek::montgomery::MontgomeryPoint;
use libp2p_identity::Keypair;
use msgnet_core::crypto::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fn rng(seed: u8) -> ChaCha20Rng {
    ChaCha20Rng::from_seed([seed; 32])
}

fn ed25519_identity(seed: u8) -> LocalIdentity {
    let kp = Keypair::ed25519_from_bytes([seed; 32]).expect("valid ed25519 seed");
    LocalIdentity::new(kp, &mut rng(seed))
}

fn secp256k1_identity(seed: u8) -> LocalIdentity {
    let sk = libp2p_identity::secp256k1::SecretKey::try_from_bytes([seed; 32]).expect("sk");
    let kp: Keypair = libp2p_identity::secp256k1::Keypair::from(sk).into();
    LocalIdentity::new(kp, &mut rng(seed))
}

// ---------------------------------------------------------------- identity

#[test]
fn derived_x25519_secret_matches_converted_public() {
    for seed in 1..=8u8 {
        let kp = libp2p_identity::ed25519::Keypair::from(
            libp2p_identity::ed25519::SecretKey::try_from_bytes([seed; 32]).expect("sk"),
        );
        let secret = x25519_secret_from_ed25519(&kp);
        let public = MontgomeryPoint::mul_base_clamped(secret).to_bytes();
        assert_eq!(Some(public), x25519_public_from_ed25519(&kp.public()));
    }
}

/// libsodium's test/default/ed25519_convert.{c,exp} vector.
#[test]
fn libsodium_ed25519_convert_vector() {
    let seed = hex::decode("421151a459faeade3d247115f94aedae42318124095afabe4d1451a559faedee")
        .expect("hex");
    let kp = libp2p_identity::ed25519::Keypair::from(
        libp2p_identity::ed25519::SecretKey::try_from_bytes(seed).expect("sk"),
    );
    assert_eq!(
        hex::encode(x25519_secret_from_ed25519(&kp)),
        "8052030376d47112be7f73ed7a019293dd12ad910b654455798b4667d73de166"
    );
    assert_eq!(
        hex::encode(x25519_public_from_ed25519(&kp.public()).expect("point")),
        "f1814f0e8ff1043d8a44d25babff3cedcae6c22c3edaa48f857ae70de2baae50"
    );
}

#[test]
fn static_of_peer_for_ed25519_only() {
    let ed = ed25519_identity(1);
    assert_eq!(
        x25519_static_of_peer(&ed.peer_id()),
        Some(*ed.static_public())
    );

    let secp = secp256k1_identity(2);
    assert_eq!(x25519_static_of_peer(&secp.peer_id()), None);

    let ecdsa = LocalIdentity::new(Keypair::generate_ecdsa(), &mut rng(3));
    assert_eq!(x25519_static_of_peer(&ecdsa.peer_id()), None);
    assert_eq!(
        x25519_static_of_peer(&libp2p_identity::PeerId::random()),
        None
    );
}

#[test]
fn non_ed25519_identity_gets_random_static_from_rng() {
    let a = secp256k1_identity(5);
    let b = secp256k1_identity(5);
    assert_eq!(
        a.static_public(),
        b.static_public(),
        "drawn from the given rng"
    );
    let c = LocalIdentity::new(a.keypair().clone(), &mut rng(6));
    assert_ne!(a.static_public(), c.static_public());
}

#[test]
fn identity_payload_verifies() {
    for id in [ed25519_identity(1), secp256k1_identity(2)] {
        let key = verify_identity_payload(id.identity_payload(), id.static_public())
            .expect("valid payload");
        assert_eq!(key.to_peer_id(), id.peer_id());
    }
}

#[test]
fn identity_payload_for_other_static_fails() {
    let id = ed25519_identity(1);
    let other = ed25519_identity(2);
    assert_eq!(
        verify_identity_payload(id.identity_payload(), other.static_public()),
        Err(CryptoError::BadSignature)
    );
    // A payload signed for another static key by the same identity.
    let forged = encode_identity_payload(id.keypair(), other.static_public());
    assert_eq!(
        verify_identity_payload(&forged, id.static_public()),
        Err(CryptoError::BadSignature)
    );
}

/// The endpoint's check, for a static key the handshake proved: an ed25519 identity with
/// its derived static key is taken without its signature (the X25519 secret is the
/// signing scalar); every other binding is verified in full.
#[test]
fn peer_of_proven_static_checks_what_the_handshake_does_not_prove() {
    let id = ed25519_identity(1);
    let other = ed25519_identity(2);
    assert_eq!(
        peer_of_proven_static(id.identity_payload(), id.static_public()),
        Ok(id.peer_id())
    );
    // Signed for another static key, presented with the derived one: the holder of the
    // derived key's secret could sign anything for this identity, so it is accepted...
    let signed_for_other = encode_identity_payload(id.keypair(), other.static_public());
    assert_eq!(
        peer_of_proven_static(&signed_for_other, id.static_public()),
        Ok(id.peer_id())
    );
    // ...but the strict check still refuses it.
    assert_eq!(
        verify_identity_payload(&signed_for_other, id.static_public()),
        Err(CryptoError::BadSignature)
    );
    // An ed25519 identity claimed with a static key not derived from it needs its
    // signature over that key: someone else's payload does not carry one.
    assert_eq!(
        peer_of_proven_static(id.identity_payload(), other.static_public()),
        Err(CryptoError::BadSignature)
    );
    // A random static key signed by the identity (as other implementations may use).
    let random_static = MontgomeryPoint::mul_base_clamped([9; 32]).to_bytes();
    let signed = encode_identity_payload(id.keypair(), &random_static);
    assert_eq!(
        peer_of_proven_static(&signed, &random_static),
        Ok(id.peer_id())
    );
    assert_eq!(
        peer_of_proven_static(&signed, other.static_public()),
        Err(CryptoError::BadSignature)
    );
    // Other key types are always verified.
    let secp = secp256k1_identity(3);
    assert_eq!(
        peer_of_proven_static(secp.identity_payload(), secp.static_public()),
        Ok(secp.peer_id())
    );
    assert_eq!(
        peer_of_proven_static(secp.identity_payload(), id.static_public()),
        Err(CryptoError::BadSignature)
    );
    // Malformed payloads, and ed25519 keys that are not curve points, are refused.
    assert_eq!(
        peer_of_proven_static(&[0x0a, 0x05, 1], id.static_public()),
        Err(CryptoError::BadIdentityPayload)
    );
    let not_a_point = (2u8..)
        .map(|y| {
            let mut b = [0u8; 32];
            b[0] = y;
            b
        })
        .find(|b| CompressedEdwardsY(*b).decompress().is_none())
        .expect("some y is not on the curve");
    let mut bad_point = id.identity_payload().to_vec();
    // identity_key = tag, length 36, protobuf prefix (4 bytes), then the 32 key bytes.
    bad_point[6..38].copy_from_slice(&not_a_point);
    assert_eq!(
        peer_of_proven_static(&bad_point, id.static_public()),
        Err(CryptoError::BadIdentityPayload)
    );
}

#[test]
fn identity_payload_skips_unknown_fields() {
    let id = ed25519_identity(1);
    let mut p = id.identity_payload().to_vec();
    // field 4 (extensions), length-delimited, containing a nested message
    p.extend_from_slice(&[0x22, 0x03, 0x0a, 0x01, 0xff]);
    // field 5 varint, field 6 fixed64, field 7 fixed32
    p.extend_from_slice(&[0x28, 0x96, 0x01]);
    p.extend_from_slice(&[0x31, 1, 2, 3, 4, 5, 6, 7, 8]);
    p.extend_from_slice(&[0x3d, 1, 2, 3, 4]);
    let mut prefixed = vec![0x22, 0x00]; // empty extensions first
    prefixed.extend_from_slice(&p);
    for payload in [&p, &prefixed] {
        let key = verify_identity_payload(payload, id.static_public()).expect("valid payload");
        assert_eq!(key.to_peer_id(), id.peer_id());
    }
}

#[test]
fn identity_payload_rejects_malformed() {
    let id = ed25519_identity(1);
    let good = id.identity_payload();
    let s = id.static_public();
    // Every truncation fails, and never panics.
    for n in 0..good.len() {
        assert!(
            verify_identity_payload(&good[..n], s).is_err(),
            "truncated at {n}"
        );
    }
    // Truncated unknown fields.
    for tail in [
        &[0x22u8, 0x05, 0x00][..],
        &[0x28, 0x80],
        &[0x31, 1, 2],
        &[0x3d, 1],
    ] {
        let mut p = good.to_vec();
        p.extend_from_slice(tail);
        assert_eq!(
            verify_identity_payload(&p, s),
            Err(CryptoError::BadIdentityPayload)
        );
    }
    // Group wire types, field 0, wrong wire type for a known field, huge length.
    for bad in [
        &[0x23u8][..],
        &[0x02, 0x00],
        &[0x08, 0x01],
        &[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
    ] {
        let mut p = good.to_vec();
        p.extend_from_slice(bad);
        assert!(verify_identity_payload(&p, s).is_err());
    }
    // Garbage key bytes.
    assert_eq!(
        verify_identity_payload(&[0x0a, 0x02, 0x01, 0x02, 0x12, 0x00], s),
        Err(CryptoError::BadIdentityPayload)
    );
    // Every single-bit flip fails.
    for i in 0..good.len() * 8 {
        let mut p = good.to_vec();
        p[i / 8] ^= 1 << (i % 8);
        assert!(verify_identity_payload(&p, s).is_err(), "bit {i}");
    }
}

// ---------------------------------------------------------------- noise

/// Runs a full handshake, every message carrying a payload; returns the finished pair.
fn run(
    mut init: Handshake,
    mut resp: Handshake,
    msgs: usize,
) -> (Handshake, Handshake, Vec<Vec<u8>>) {
    let mut wire = Vec::new();
    let mut payload = Vec::new();
    for i in 0..msgs {
        let (w, r) = if i % 2 == 0 {
            (&mut init, &mut resp)
        } else {
            (&mut resp, &mut init)
        };
        assert!(w.is_my_turn());
        let sent = format!("payload {i}").into_bytes();
        let mut out = b"prefix".to_vec();
        w.write_message(&sent, &mut out).expect("write");
        assert_eq!(&out[..6], b"prefix", "write_message appends");
        let msg = out[6..].to_vec();
        assert!(msg.len() <= MAX_HANDSHAKE_MESSAGE_LEN);
        payload.extend_from_slice(b"stale");
        r.read_message(&msg, &mut payload).expect("read");
        assert_eq!(payload, sent);
        wire.push(msg);
    }
    assert!(init.is_finished() && resp.is_finished());
    assert!(init.is_initiator() && !resp.is_initiator());
    assert_eq!(init.handshake_hash(), resp.handshake_hash());
    (init, resp, wire)
}

fn check_keys(init: Handshake, resp: Handshake) {
    let ik = init.into_keys().expect("keys");
    let rk = resp.into_keys().expect("keys");
    for (a, b) in [(&ik.send, &rk.recv), (&rk.send, &ik.recv)] {
        let mut buf = b"hdr".to_vec();
        buf.extend_from_slice(b"hello");
        a.seal(7, b"hdr", &mut buf, 3).expect("seal");
        assert_eq!(b.open(7, b"hdr", &mut buf[3..]).expect("open"), b"hello");
    }
    // send and recv differ
    let mut buf = b"x".to_vec();
    ik.send.seal(0, b"", &mut buf, 0).expect("seal");
    assert!(ik.recv.open(0, b"", &mut buf).is_err());
}

#[test]
fn ik_handshake_from_peer_id() {
    let a = ed25519_identity(1);
    let b = ed25519_identity(2);
    let remote = x25519_static_of_peer(&b.peer_id()).expect("ed25519 peer");
    let init = Handshake::initiator_ik(&a, &remote, [10; 32]).expect("init");
    assert_eq!(init.remote_static(), Some(*b.static_public()));
    let resp = Handshake::responder_ik(&b, [11; 32]).expect("resp");
    assert_eq!(resp.remote_static(), None);
    let (init, resp, _) = run(init, resp, 2);
    assert_eq!(resp.remote_static(), Some(*a.static_public()));
    check_keys(init, resp);
}

#[test]
fn ik_identity_payload_in_first_message() {
    let a = ed25519_identity(1);
    let b = ed25519_identity(2);
    let mut init = Handshake::initiator_ik(&a, b.static_public(), [1; 32]).expect("init");
    let mut resp = Handshake::responder_ik(&b, [2; 32]).expect("resp");
    let mut msg = Vec::new();
    init.write_message(a.identity_payload(), &mut msg)
        .expect("write");
    let mut p = Vec::new();
    resp.read_message(&msg, &mut p).expect("read");
    let rs = resp.remote_static().expect("static known after msg1");
    let key = verify_identity_payload(&p, &rs).expect("verified");
    assert_eq!(key.to_peer_id(), a.peer_id());
}

#[test]
fn xx_handshake_with_identity_payloads() {
    for (a, b) in [
        (ed25519_identity(1), ed25519_identity(2)),
        (secp256k1_identity(3), ed25519_identity(4)),
        (ed25519_identity(5), secp256k1_identity(6)),
    ] {
        let mut init = Handshake::initiator_xx(&a, [1; 32]).expect("init");
        let mut resp = Handshake::responder_xx(&b, [2; 32]).expect("resp");
        let mut m = Vec::new();
        let mut p = Vec::new();
        init.write_message(b"hello", &mut m).expect("w1");
        resp.read_message(&m, &mut p).expect("r1");
        assert_eq!(p, b"hello");
        m.clear();
        resp.write_message(b.identity_payload(), &mut m)
            .expect("w2");
        init.read_message(&m, &mut p).expect("r2");
        let rs = init.remote_static().expect("responder static");
        assert_eq!(
            verify_identity_payload(&p, &rs).expect("ok").to_peer_id(),
            b.peer_id()
        );
        m.clear();
        init.write_message(a.identity_payload(), &mut m)
            .expect("w3");
        resp.read_message(&m, &mut p).expect("r3");
        let rs = resp.remote_static().expect("initiator static");
        assert_eq!(
            verify_identity_payload(&p, &rs).expect("ok").to_peer_id(),
            a.peer_id()
        );
        check_keys(init, resp);
    }
}

#[test]
fn xx_full_run() {
    let a = ed25519_identity(1);
    let b = secp256k1_identity(2);
    let init = Handshake::initiator_xx(&a, [3; 32]).expect("init");
    let resp = Handshake::responder_xx(&b, [4; 32]).expect("resp");
    let (init, resp, _) = run(init, resp, 3);
    check_keys(init, resp);
}

#[test]
fn ik_wrong_remote_static_fails_at_responder() {
    let a = ed25519_identity(1);
    let b = ed25519_identity(2);
    let c = ed25519_identity(3);
    let mut init = Handshake::initiator_ik(&a, c.static_public(), [1; 32]).expect("init");
    let mut resp = Handshake::responder_ik(&b, [2; 32]).expect("resp");
    let mut m = Vec::new();
    init.write_message(b"x", &mut m).expect("write");
    let mut p = vec![1, 2, 3];
    assert_eq!(resp.read_message(&m, &mut p), Err(CryptoError::Decrypt));
    assert!(p.is_empty());
}

#[test]
fn tampered_handshake_messages_fail() {
    let a = ed25519_identity(1);
    let b = ed25519_identity(2);
    let mut msg1 = Vec::new();
    Handshake::initiator_ik(&a, b.static_public(), [1; 32])
        .expect("init")
        .write_message(b"payload", &mut msg1)
        .expect("write");
    for i in 0..msg1.len() {
        let mut m = msg1.clone();
        m[i] ^= 0x01;
        let mut resp = Handshake::responder_ik(&b, [2; 32]).expect("resp");
        assert!(resp.read_message(&m, &mut Vec::new()).is_err(), "byte {i}");
    }
    // Truncations of msg1 never panic.
    for n in 0..msg1.len() {
        let mut resp = Handshake::responder_ik(&b, [2; 32]).expect("resp");
        assert!(resp.read_message(&msg1[..n], &mut Vec::new()).is_err());
    }
    // Tampered msg2 fails at the initiator.
    let mut init = Handshake::initiator_ik(&a, b.static_public(), [1; 32]).expect("init");
    let mut resp = Handshake::responder_ik(&b, [2; 32]).expect("resp");
    let mut m = Vec::new();
    init.write_message(b"", &mut m).expect("w1");
    resp.read_message(&m, &mut Vec::new()).expect("r1");
    m.clear();
    resp.write_message(b"reply", &mut m).expect("w2");
    let last = m.len() - 1;
    m[last] ^= 0x80;
    assert!(init.read_message(&m, &mut Vec::new()).is_err());
}

#[test]
fn same_seeds_give_identical_messages() {
    let transcript = |si: u8, sr: u8| {
        let a = ed25519_identity(1);
        let b = ed25519_identity(2);
        let init = Handshake::initiator_ik(&a, b.static_public(), [si; 32]).expect("init");
        let resp = Handshake::responder_ik(&b, [sr; 32]).expect("resp");
        run(init, resp, 2).2
    };
    assert_eq!(transcript(7, 8), transcript(7, 8));
    let other = transcript(9, 8);
    assert_ne!(transcript(7, 8)[0], other[0]);
}

#[test]
fn handshake_state_errors() {
    let a = ed25519_identity(1);
    let b = ed25519_identity(2);
    let mut init = Handshake::initiator_xx(&a, [1; 32]).expect("init");
    let mut resp = Handshake::responder_xx(&b, [2; 32]).expect("resp");
    // Responder cannot write first; initiator cannot read first.
    let mut out = b"keep".to_vec();
    assert!(resp.write_message(b"", &mut out).is_err());
    assert_eq!(out, b"keep");
    assert!(init.read_message(&[0; 32], &mut Vec::new()).is_err());
    // Oversized payload is an error, not a panic.
    let big = vec![0u8; MAX_HANDSHAKE_MESSAGE_LEN];
    assert!(init.write_message(&big, &mut out).is_err());
    assert_eq!(out, b"keep");
    assert!(resp
        .read_message(&vec![0u8; MAX_HANDSHAKE_MESSAGE_LEN + 1], &mut Vec::new())
        .is_err());
    // Keys only once finished.
    assert_eq!(
        init.into_keys().err(),
        Some(CryptoError::HandshakeIncomplete)
    );
}

// ---------------------------------------------------------------- cookies

#[test]
fn cookies() {
    let mut r = rng(9);
    let t0 = Instant::now();
    let mut jar = CookieJar::new(&mut r, t0);
    let addr: SocketAddr = "192.0.2.1:4000".parse().expect("addr");
    let c = jar.cookie(t0, &mut r, &addr, 7);
    assert!(jar.verify(t0, &mut r, &addr, 7, &c));
    assert!(!jar.verify(t0, &mut r, &"192.0.2.2:4000".parse().expect("a"), 7, &c));
    assert!(!jar.verify(t0, &mut r, &"192.0.2.1:4001".parse().expect("a"), 7, &c));
    assert!(!jar.verify(
        t0,
        &mut r,
        &"[::ffff:192.0.2.1]:4000".parse().expect("a"),
        7,
        &c
    ));
    assert!(!jar.verify(t0, &mut r, &addr, 8, &c));
    let mut bad = c;
    bad[15] ^= 1;
    assert!(!jar.verify(t0, &mut r, &addr, 7, &bad));

    let v6: SocketAddr = "[2001:db8::1]:443".parse().expect("addr");
    let c6 = jar.cookie(t0, &mut r, &v6, 1);
    assert!(jar.verify(t0, &mut r, &v6, 1, &c6));
    assert_ne!(c6, c);

    // Valid across one rotation, rejected after two.
    let t1 = t0 + COOKIE_SECRET_LIFETIME + Duration::from_secs(1);
    assert!(jar.verify(t1, &mut r, &addr, 7, &c));
    let c1 = jar.cookie(t1, &mut r, &addr, 7);
    assert_ne!(c1, c, "new secret after rotation");
    let t2 = t0 + COOKIE_SECRET_LIFETIME * 2 + Duration::from_secs(1);
    assert!(!jar.verify(t2, &mut r, &addr, 7, &c));
    assert!(jar.verify(t2, &mut r, &addr, 7, &c1));
}

#[test]
fn cookies_after_long_idle() {
    let mut r = rng(10);
    let t0 = Instant::now();
    let mut jar = CookieJar::new(&mut r, t0);
    let addr: SocketAddr = "198.51.100.7:9".parse().expect("addr");
    let c = jar.cookie(t0, &mut r, &addr, 1);
    // A long idle gap skips several rotations at once: the old cookie is gone.
    let later = t0 + Duration::from_secs(3600);
    assert!(!jar.verify(later, &mut r, &addr, 1, &c));
    let c2 = jar.cookie(later, &mut r, &addr, 1);
    assert!(jar.verify(later + Duration::from_secs(1), &mut r, &addr, 1, &c2));
    // Time going backwards does not panic or rotate.
    assert!(jar.verify(t0, &mut r, &addr, 1, &c2));
}

#[test]
fn types_are_send() {
    fn send<T: Send>() {}
    fn sync<T: Sync>() {}
    send::<Handshake>();
    send::<LocalIdentity>();
    sync::<LocalIdentity>();
    send::<PacketKey>();
    sync::<PacketKey>();
    send::<SessionKeys>();
    send::<CookieJar>();
    sync::<CookieJar>();
}
