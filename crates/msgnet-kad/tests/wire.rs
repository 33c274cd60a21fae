//! Byte-exact protobuf vectors for every message type (hand-assembled from the proto
//! definition and rust-libp2p's encoder rules), decoding robustness and round trips.
#![allow(clippy::unwrap_used)]

use msgnet_kad::wire::{ConnectionType, Message, MessageType, WirePeer, WireRecord};
use msgnet_kad::{DecodeError, KadConfig, Kademlia, Record};
use proptest::prelude::*;
use std::time::Instant;

fn h(s: &str) -> Vec<u8> {
    hex::decode(s.replace(' ', "")).unwrap()
}

/// `/ip4/1.2.3.4/tcp/4001` in binary form.
const ADDR: &str = "04 01020304 06 0fa1";

fn peer(id: &[u8], connection: ConnectionType) -> WirePeer {
    WirePeer {
        id: id.to_vec(),
        addrs: vec![h(ADDR)],
        connection,
    }
}

fn check(msg: &Message, bytes: &str) {
    let expected = h(bytes);
    assert_eq!(hex::encode(msg.encode()), hex::encode(&expected));
    assert_eq!(&Message::decode(&expected).unwrap(), msg);
}

#[test]
fn ping() {
    check(
        &Message {
            ty: MessageType::PING,
            ..Default::default()
        },
        "08 05",
    );
}

#[test]
fn find_node_request_and_response() {
    let req = Message {
        ty: MessageType::FIND_NODE,
        cluster_level_raw: 10,
        key: b"hello".to_vec(),
        ..Default::default()
    };
    check(&req, "08 04 50 0a 12 05 68656c6c6f");
    let resp = Message {
        ty: MessageType::FIND_NODE,
        cluster_level_raw: 9,
        closer_peers: vec![peer(&[0xaa, 0xbb, 0xcc, 0xdd], ConnectionType::CONNECTED)],
        ..Default::default()
    };
    // Peer: id (0a 04 ..), addr (12 08 ..), connection (18 01) = 18 bytes.
    check(
        &resp,
        &format!("08 04 50 09 42 12 0a 04 aabbccdd 12 08 {ADDR} 18 01"),
    );
}

#[test]
fn put_value_has_no_type_field() {
    let rec = WireRecord {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
        ..Default::default()
    };
    let req = Message {
        ty: MessageType::PUT_VALUE,
        key: b"k".to_vec(),
        record: Some(rec),
        ..Default::default()
    };
    check(&req, "12 01 6b 1a 06 0a 01 6b 12 01 76");
}

#[test]
fn get_value_request_and_response() {
    check(
        &Message {
            ty: MessageType::GET_VALUE,
            cluster_level_raw: 10,
            key: b"k".to_vec(),
            ..Default::default()
        },
        "08 01 50 0a 12 01 6b",
    );
    let rec = WireRecord {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
        time_received: "t".into(),
        publisher: vec![0x01],
        ttl: 100,
    };
    let resp = Message {
        ty: MessageType::GET_VALUE,
        cluster_level_raw: 9,
        record: Some(rec),
        closer_peers: vec![peer(&[0x01], ConnectionType::NOT_CONNECTED)],
        ..Default::default()
    };
    // Record: key, value, timeReceived (42), publisher (tag 5330 = d2 29), ttl (tag 6216 = c8 30).
    check(
        &resp,
        &format!(
            "08 01 50 09 1a 10 0a016b 120176 2a0174 d22901 01 c83064 42 0d 0a0101 1208 {ADDR}"
        ),
    );
}

#[test]
fn providers() {
    let add = Message {
        ty: MessageType::ADD_PROVIDER,
        cluster_level_raw: 10,
        key: vec![0x12, 0x20],
        provider_peers: vec![peer(&[0x07], ConnectionType::NOT_CONNECTED)],
        ..Default::default()
    };
    check(
        &add,
        &format!("08 02 50 0a 12 02 1220 4a 0d 0a0107 1208 {ADDR}"),
    );
    let get = Message {
        ty: MessageType::GET_PROVIDERS,
        cluster_level_raw: 10,
        key: vec![0x12],
        ..Default::default()
    };
    check(&get, "08 03 50 0a 12 01 12");
    let resp = Message {
        ty: MessageType::GET_PROVIDERS,
        cluster_level_raw: 9,
        closer_peers: vec![peer(&[0x01], ConnectionType::CAN_CONNECT)],
        provider_peers: vec![peer(&[0x02], ConnectionType::CANNOT_CONNECT)],
        ..Default::default()
    };
    check(
        &resp,
        &format!("08 03 50 09 42 0f 0a0101 1208 {ADDR} 1802 4a 0f 0a0102 1208 {ADDR} 1803"),
    );
}

#[test]
fn pre_encoded_closer_peers_are_byte_identical() {
    let a = peer(&[0x01], ConnectionType::NOT_CONNECTED);
    let b = peer(&[0x02], ConnectionType::NOT_CONNECTED);
    let full = Message {
        ty: MessageType::GET_PROVIDERS,
        cluster_level_raw: 9,
        closer_peers: vec![a.clone(), b.clone()],
        provider_peers: vec![b.clone()],
        ..Default::default()
    };
    let (ra, rb) = (a.encode(), b.encode());
    let partial = Message {
        closer_peers: vec![],
        ..full.clone()
    };
    assert_eq!(partial.encode_with_raw_closer(&[&ra, &rb]), full.encode());
}

#[test]
fn negative_int32_is_ten_bytes() {
    let m = Message {
        ty: MessageType::FIND_NODE,
        cluster_level_raw: -1,
        ..Default::default()
    };
    check(&m, "08 04 50 ffffffffffffffffff01");
}

#[test]
fn go_field_order_and_unknown_fields_decode() {
    // go-libp2p writes clusterLevelRaw (field 10) last; add unknown fields of every wire type.
    let bytes =
        h("08 04 12 01 6b 50 01 b8 06 05 c1 06 0102030405060708 ca 06 02 abcd d5 06 01020304");
    let m = Message::decode(&bytes).unwrap();
    assert_eq!(m.ty, MessageType::FIND_NODE);
    assert_eq!(m.key, b"k");
    assert_eq!(m.cluster_level_raw, 1);
}

#[test]
fn unknown_enum_values_survive() {
    let m = Message::decode(&h("08 2a")).unwrap();
    assert_eq!(m.ty, MessageType(42));
    assert_eq!(m.encode(), h("08 2a"));
}

#[test]
fn malformed_input_is_an_error() {
    assert_eq!(
        Message::decode(&h("12 05 6868")),
        Err(DecodeError::Truncated)
    );
    assert_eq!(Message::decode(&h("08")), Err(DecodeError::Truncated));
    assert_eq!(
        Message::decode(&h("08 ffffffffffffffffff7f")),
        Err(DecodeError::VarintOverflow)
    );
    assert_eq!(Message::decode(&h("00 01")), Err(DecodeError::InvalidTag));
    assert_eq!(
        Message::decode(&h("0b 0c")),
        Err(DecodeError::InvalidWireType)
    );
    assert_eq!(
        Message::decode(&h("1a 03 2a 01 ff")),
        Err(DecodeError::InvalidUtf8)
    );
}

#[test]
fn node_emits_and_answers_exact_bytes() {
    let now = Instant::now();
    let a = libp2p_identity::Keypair::ed25519_from_bytes([1; 32])
        .unwrap()
        .public()
        .to_peer_id();
    let b = libp2p_identity::Keypair::ed25519_from_bytes([2; 32])
        .unwrap()
        .public()
        .to_peer_id();
    let addr: multiaddr::Multiaddr = "/ip4/1.2.3.4/tcp/4001".parse().unwrap();
    let mut node = Kademlia::new(a, KadConfig::default(), now);
    node.add_address(b, addr.clone());
    node.find_node(now, b"hello".to_vec()).unwrap();
    let req = node.poll_request().unwrap();
    assert_eq!(req.peer, b);
    assert_eq!(req.addrs, vec![addr]);
    assert_eq!(req.bytes, h("08 04 50 0a 12 05 68656c6c6f"));

    // PING answers PING; PUT_VALUE echoes key and record; GET_VALUE returns it with a TTL.
    assert_eq!(
        node.handle_request(now, b, &[], &h("08 05")).unwrap(),
        Some(h("08 05"))
    );
    let put = h("12 01 6b 1a 06 0a 01 6b 12 01 76");
    assert_eq!(node.handle_request(now, b, &[], &put).unwrap(), Some(put));
    assert_eq!(
        node.record(b"k"),
        Some(&Record::new(b"k".to_vec(), b"v".to_vec()))
    );
    let got = Message::decode(
        &node
            .handle_request(now, b, &[], &h("08 01 50 0a 12 01 6b"))
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        got.record.as_ref().map(|r| r.value.as_slice()),
        Some(&b"v"[..])
    );
    assert_eq!(got.record.map(|r| r.ttl), Some(48 * 3600));
    // Garbage is an error, counted; nothing panics.
    assert!(node.handle_request(now, b, &[], &h("0b")).is_err());
    assert_eq!(node.stats().malformed, 1);
}

fn arb_peer() -> impl Strategy<Value = WirePeer> {
    (
        prop::collection::vec(any::<u8>(), 0..40),
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..20), 0..3),
        0..4i32,
    )
        .prop_map(|(id, addrs, c)| WirePeer {
            id,
            addrs,
            connection: ConnectionType(c),
        })
}

fn arb_message() -> impl Strategy<Value = Message> {
    let rec = (
        prop::collection::vec(any::<u8>(), 0..20),
        prop::collection::vec(any::<u8>(), 0..50),
        "[a-z0-9:-]{0,20}",
        prop::collection::vec(any::<u8>(), 0..10),
        any::<u32>(),
    )
        .prop_map(|(key, value, time_received, publisher, ttl)| WireRecord {
            key,
            value,
            time_received,
            publisher,
            ttl,
        });
    (
        any::<i32>(),
        any::<i32>(),
        prop::collection::vec(any::<u8>(), 0..40),
        prop::option::of(rec),
        prop::collection::vec(arb_peer(), 0..4),
        prop::collection::vec(arb_peer(), 0..4),
    )
        .prop_map(
            |(ty, cl, key, record, closer_peers, provider_peers)| Message {
                ty: MessageType(ty),
                cluster_level_raw: cl,
                key,
                record,
                closer_peers,
                provider_peers,
            },
        )
}

proptest! {
    #[test]
    fn round_trip(m in arb_message()) {
        prop_assert_eq!(Message::decode(&m.encode()).unwrap(), m);
    }

    #[test]
    fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = Message::decode(&bytes);
    }

    #[test]
    fn server_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let now = Instant::now();
        let a = libp2p_identity::Keypair::ed25519_from_bytes([1; 32]).unwrap().public().to_peer_id();
        let mut node = Kademlia::new(a, KadConfig::default(), now);
        let _ = node.handle_request(now, a, &[], &bytes);
    }
}
