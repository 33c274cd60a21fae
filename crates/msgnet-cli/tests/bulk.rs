//! `msgnet bench --bulk` end to end: the binary runs a small bulk transfer (msgnet,
//! rust-libp2p QUIC, rust-libp2p TCP) and prints three MiB/s figures. The figures
//! themselves are not asserted.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::run_ok;

#[test]
fn bench_bulk_quick() {
    let stdout = run_ok(&["bench", "--bulk", "--quick", "--mib", "8"]);
    let figures: Vec<f64> = stdout
        .lines()
        .filter_map(|l| {
            let (before, _) = l.split_once(" MiB/s")?;
            before.split_whitespace().last()?.parse().ok()
        })
        .collect();
    assert_eq!(figures.len(), 3, "three MiB/s figures expected:\n{stdout}");
    assert!(
        figures.iter().all(|f| f.is_finite() && *f > 0.0),
        "positive figures expected: {figures:?}\n{stdout}"
    );
    assert!(
        stdout.contains("ratio msgnet / rust-libp2p QUIC"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ratio msgnet / rust-libp2p TCP"),
        "{stdout}"
    );
}
