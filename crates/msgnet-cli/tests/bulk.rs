//! `msgnet bench --bulk` end to end: the binary runs a small bulk transfer (msgnet,
//! rust-libp2p QUIC, rust-libp2p TCP) and prints three MiB/s figures. The figures
//! themselves are not asserted.

#![allow(missing_docs, clippy::unwrap_used)]

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_msgnet");

#[test]
fn bench_bulk_quick() {
    let out = Command::new(BIN)
        .args(["bench", "--bulk", "--quick", "--mib", "8"])
        .output()
        .expect("run msgnet");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "msgnet bench --bulk failed: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
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
