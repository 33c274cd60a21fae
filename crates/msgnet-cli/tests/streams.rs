//! `msgnet bench --streams` end to end: the binary runs small runs of msgnet's libp2p
//! stream and of rust-libp2p request-response over TCP and QUIC, with the two peers on
//! tokio runtimes three ways, and prints one JSON
//! object. The figures themselves are not asserted (speed is the benchmark's business),
//! only that every run completed and produced positive figures.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::run_ok;

/// The numbers following every `"key":` in `json`.
fn numbers(json: &str, key: &str) -> Vec<f64> {
    let pat = format!("\"{key}\":");
    json.match_indices(&pat)
        .filter_map(|(i, _)| {
            let rest = &json[i + pat.len()..];
            let end = rest.find([',', '}']).unwrap_or(rest.len());
            rest[..end].parse().ok()
        })
        .collect()
}

#[test]
fn bench_streams_quick_json() {
    let stdout = run_ok(&["bench", "--streams", "--quick", "--json"]);
    assert!(stdout.contains("\"transport\":\"TCP+noise+yamux\""), "{stdout}");
    assert!(stdout.contains("\"transport\":\"QUIC\""), "{stdout}");
    for runtimes in ["per_peer", "shared_tasks", "shared_main_thread"] {
        assert_eq!(stdout.matches(&format!("\"runtimes\":\"{runtimes}\"")).count(), 2, "{stdout}");
    }
    // Three runtime arrangements × two transports × (msgnet, baseline).
    for key in ["rtt_median_us", "request_rate", "message_rate"] {
        let v = numbers(&stdout, key);
        assert_eq!(v.len(), 12, "{key}: {stdout}");
        assert!(v.iter().all(|x| x.is_finite() && *x > 0.0), "{key}: {v:?}");
    }
    assert_eq!(numbers(&stdout, "ratio_rate").len(), 6, "{stdout}");
}
