//! End-to-end tests of the `msgnet` binary: each spawns the built binary and reads what
//! it prints. Child processes are killed when their guard drops, even on panic.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;
use common::{run, Running};

use std::path::PathBuf;
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// `msgnet listen` on loopback; returns it and its dialable address (first line).
fn listen(extra: &[&str]) -> (Running, String) {
    let mut args = vec!["listen", "--listen", "/ip4/127.0.0.1/udp/0"];
    args.extend_from_slice(extra);
    let l = Running::spawn(&args, WAIT);
    let addr = l.line();
    assert!(
        addr.starts_with("/ip4/127.0.0.1/udp/") && addr.contains("/p2p/"),
        "first line: {addr}"
    );
    (l, addr)
}

/// `msgnet listen` on one loopback address of another transport (`/tcp/0` or
/// `/udp/0/quic-v1`); returns it and its dialable address.
fn listen_on(addr: &str, extra: &[&str]) -> (Running, String) {
    let mut args = vec!["listen", "--listen", addr];
    args.extend_from_slice(extra);
    let l = Running::spawn(&args, WAIT);
    let line = l.line();
    let prefix = addr.trim_end_matches("/quic-v1").trim_end_matches('0');
    assert!(line.starts_with(prefix) && line.contains("/p2p/"), "first line: {line}");
    if addr.ends_with("/quic-v1") {
        assert!(line.contains("/quic-v1/p2p/"), "{line}");
    }
    (l, line)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A fresh key file path under cargo's per-target temp dir.
fn key_path(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("msgnet-cli-{}-{tag}-{n}.key", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

#[test]
fn id_is_stable_with_a_key_file() {
    let key = key_path("id");
    let key = key.to_str().unwrap();
    let a = run(&["id", "--key", key]);
    assert!(a.status.success(), "{}", stderr(&a));
    let id = stdout(&a).trim().to_string();
    assert!(id.starts_with("12D3KooW"), "an ed25519 peer id: {id}");
    let b = run(&["id", "--key", key]);
    assert_eq!(stdout(&b).trim(), id);
    let fresh = run(&["id"]);
    assert!(fresh.status.success());
    assert_ne!(stdout(&fresh).trim(), id, "without --key, a fresh identity");
}

#[test]
fn listen_prints_what_send_sends() {
    let (l, addr) = listen(&[]);
    let key = key_path("send");
    let key = key.to_str().unwrap();
    let sender = stdout(&run(&["id", "--key", key])).trim().to_string();
    let out = run(&["send", &addr, "/chat/1.0.0", "hello there", "--key", key]);
    assert!(out.status.success(), "send failed: {}", stderr(&out));
    let expected = format!("{sender} /chat/1.0.0 hello there");
    l.wait_for(|line| line == expected);
}

#[test]
fn request_to_echo_prints_the_reply() {
    let (l, addr) = listen(&["--echo", "--protocol", "/test/echo/1"]);
    let out = run(&["send", &addr, "/test/echo/1", "ping me back", "--request"]);
    assert!(
        out.status.success(),
        "send --request failed: {}",
        stderr(&out)
    );
    assert_eq!(stdout(&out).trim(), "ping me back");
    l.wait_for(|line| line.ends_with(" /test/echo/1 ping me back"));
}

#[test]
fn unhandled_protocol_fails_with_one_error_line() {
    let (_l, addr) = listen(&[]);
    let out = run(&["send", &addr, "/x/1", "anyone?"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "one line on stderr: {err:?}");
    assert!(err.starts_with("error: "), "{err:?}");
    assert!(err.contains("/x/1"), "{err:?}");
}

#[test]
fn ping_three_times() {
    let (_l, addr) = listen(&[]);
    let out = run(&["ping", &addr, "-c", "3", "--interval", "50"]);
    let text = stdout(&out);
    assert!(out.status.success(), "ping failed: {text}{}", stderr(&out));
    for seq in 1..=3 {
        assert!(text.contains(&format!("seq={seq} time=")), "{text}");
    }
    assert!(text.contains("32 bytes from "), "{text}");
    assert!(
        text.contains("3 sent, 3 received, 0% loss, rtt min/avg/max = "),
        "{text}"
    );
}

#[test]
fn demo_runs_its_sections() {
    let out = run(&["demo"]);
    let text = stdout(&out);
    assert!(out.status.success(), "demo failed: {text}{}", stderr(&out));
    for section in msgnet_cli::cmd::demo::SECTIONS {
        assert!(
            text.contains(section.title),
            "section {:?} missing:\n{text}",
            section.title
        );
    }
    assert!(text.contains("UnsupportedProtocol"), "{text}");
}

#[test]
fn bench_quick_prints_ratios() {
    let out = run(&["bench", "--quick"]);
    let text = stdout(&out);
    assert!(out.status.success(), "bench failed: {text}{}", stderr(&out));
    assert!(text.contains("round trip, median"), "{text}");
    assert!(text.contains("one-way rate"), "{text}");
    assert!(text.contains("wire bytes per message"), "{text}");
    assert!(text.contains("ratio"), "{text}");
    let json = run(&["bench", "--quick", "--json"]);
    assert!(
        json.status.success(),
        "bench --json failed: {}",
        stderr(&json)
    );
    let j = stdout(&json);
    assert!(
        j.trim_start().starts_with('{') && j.contains("\"ratio_median\""),
        "{j}"
    );
}

#[test]
fn default_listen_prints_udp_tcp_and_quic() {
    let l = Running::spawn(&["listen"], WAIT);
    let first = l.line();
    assert!(first.starts_with("/ip4/127.0.0.1/udp/") && first.contains("/p2p/"), "{first}");
    let mut lines = vec![first];
    while !(lines.iter().any(|a| a.contains("/tcp/")) && lines.iter().any(|a| a.contains("/quic-v1/")))
    {
        lines.push(l.line());
    }
    assert!(lines.iter().all(|a| a.contains("/p2p/")), "{lines:?}");
    // The TCP address printed is dialable.
    let tcp = lines.iter().find(|a| a.starts_with("/ip4/127.0.0.1/tcp/")).expect("loopback tcp");
    let out = run(&["send", tcp, "/chat/1.0.0", "over the default tcp"]);
    assert!(out.status.success(), "send failed: {}", stderr(&out));
    l.wait_for(|line| line.ends_with(" /chat/1.0.0 over the default tcp"));
}

#[test]
fn send_over_tcp() {
    let (l, addr) = listen_on("/ip4/127.0.0.1/tcp/0", &[]);
    let out = run(&["send", &addr, "/chat/1.0.0", "hello over tcp"]);
    assert!(out.status.success(), "send failed: {}", stderr(&out));
    l.wait_for(|line| line.ends_with(" /chat/1.0.0 hello over tcp"));
}

#[test]
fn send_over_quic() {
    let (l, addr) = listen_on("/ip4/127.0.0.1/udp/0/quic-v1", &[]);
    let out = run(&["send", &addr, "/chat/1.0.0", "hello over quic"]);
    assert!(out.status.success(), "send failed: {}", stderr(&out));
    l.wait_for(|line| line.ends_with(" /chat/1.0.0 hello over quic"));
}

#[test]
fn request_over_tcp_and_quic() {
    for addr in ["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"] {
        let (_l, dial) = listen_on(addr, &["--echo", "--protocol", "/test/echo/1"]);
        let out = run(&["send", &dial, "/test/echo/1", "round trip", "--request"]);
        assert!(out.status.success(), "request over {addr} failed: {}", stderr(&out));
        assert_eq!(stdout(&out).trim(), "round trip");
    }
}

#[test]
fn unhandled_protocol_over_tcp_fails_with_one_error_line() {
    let (_l, addr) = listen_on("/ip4/127.0.0.1/tcp/0", &[]);
    let out = run(&["send", &addr, "/x/1", "anyone?"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "one line on stderr: {err:?}");
    assert!(err.starts_with("error: ") && err.contains("/x/1"), "{err:?}");
}
