//! End-to-end tests of `msgnet dht` against `msgnet listen --bootstrap` processes: what a
//! short-lived command stores is found by another command after the first exited.
//! Child processes are killed when their guard drops, even on panic.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;
use common::{run, Running};

use std::path::PathBuf;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);
const CID: &str = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi";

/// `msgnet listen` on loopback UDP, joining through `bootstrap` if given; returns it and
/// its address (first line), after its `dht:` line if it joined.
fn node(bootstrap: Option<&str>) -> (Running, String) {
    let mut args = vec!["listen", "--listen", "/ip4/127.0.0.1/udp/0"];
    if let Some(b) = bootstrap {
        args.extend(["--bootstrap", b]);
    }
    let l = Running::spawn(&args, WAIT);
    let addr = l.line();
    assert!(
        addr.starts_with("/ip4/127.0.0.1/udp/") && addr.contains("/p2p/"),
        "first line: {addr}"
    );
    if bootstrap.is_some() {
        let joined = l.line();
        assert!(joined.starts_with("dht: joined, "), "{joined}");
    }
    (l, addr)
}

/// A network of five listen nodes: the first alone, the others joining through an
/// earlier one.
fn network() -> Vec<(Running, String)> {
    let mut nodes = vec![node(None)];
    for i in 1..5 {
        let via = nodes[(i - 1) / 2].1.clone();
        nodes.push(node(Some(&via)));
    }
    nodes
}

fn ok(args: &[&str]) -> Vec<String> {
    let out = run(args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?} failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines().map(str::to_owned).collect()
}

fn key_path(tag: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("msgnet-dht-{}-{tag}.key", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

fn peer_of(addr: &str) -> &str {
    addr.rsplit("/p2p/").next().unwrap()
}

#[test]
fn put_then_get_after_the_putter_exited() {
    let nodes = network();
    let out = ok(&[
        "dht",
        "put",
        "/v/cli",
        "hello dht",
        "--bootstrap",
        &nodes[4].1,
    ]);
    // Five servers: all of them are among the k closest.
    assert!(out[0].starts_with("stored /v/cli on 5 peers ("), "{out:?}");
    let out = ok(&["dht", "get", "/v/cli", "--bootstrap", &nodes[1].1]);
    assert_eq!(out[0], "hello dht");
    assert!(out[1].starts_with("found ("), "{out:?}");

    // A missing key: one error line, exit 1.
    let out = run(&["dht", "get", "/v/none", "--bootstrap", &nodes[2].1]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: not found"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn provide_then_find_providers_after_the_provider_exited() {
    let nodes = network();
    let key = key_path("provider");
    let key = key.to_str().unwrap();
    let id = ok(&["id", "--key", key]);
    let out = ok(&[
        "dht",
        "provide",
        CID,
        "--key",
        key,
        "--bootstrap",
        &nodes[3].1,
    ]);
    assert!(
        out[0].starts_with(&format!("providing {CID} on 5 peers (")),
        "{out:?}"
    );
    let out = ok(&["dht", "find-providers", CID, "--bootstrap", &nodes[0].1]);
    assert!(
        out.iter()
            .any(|l| l.split(' ').next() == Some(id[0].as_str())),
        "provider {} not in {out:?}",
        id[0]
    );
}

#[test]
fn find_peer_prints_its_address() {
    let nodes = network();
    let target = &nodes[4].1;
    let out = ok(&[
        "dht",
        "find-peer",
        peer_of(target),
        "--bootstrap",
        &nodes[0].1,
    ]);
    assert!(out.contains(target), "{target} not in {out:?}");

    // Bad input: a clear error, no panic.
    let out = run(&[
        "dht",
        "find-peer",
        "not-a-peer-id",
        "--bootstrap",
        &nodes[0].1,
    ]);
    assert_eq!(out.status.code(), Some(2), "clap rejects the argument");
    let out = run(&["dht", "get", "k", "--bootstrap", "/ip4/127.0.0.1/udp/1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/p2p"), "{err}");
}
