//! What the binary's end-to-end tests share: running `msgnet` as a child process whose
//! stdout lines arrive on a channel, killed when its guard drops (even on panic).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_msgnet");

/// A running child whose stdout lines arrive on a channel; killed on drop.
pub struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// How long [`line`](Self::line) and [`wait_for`](Self::wait_for) wait.
    wait: Duration,
}

impl Running {
    /// Spawns `msgnet ARGS`; each read waits at most `wait`.
    pub fn spawn(args: &[&str], wait: Duration) -> Self {
        let mut child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn msgnet");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines, wait }
    }

    /// The next stdout line.
    pub fn line(&self) -> String {
        self.lines.recv_timeout(self.wait).expect("a line from the child in time")
    }

    /// Reads lines until one satisfies `want`; panics when the wait runs out.
    pub fn wait_for(&self, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + self.wait;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if want(&line) => return line,
                Ok(line) => seen.push(line),
                Err(_) => panic!("expected line not printed; saw {seen:?}"),
            }
        }
    }

    /// The child process (to signal or wait for it).
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `msgnet ARGS` to completion.
pub fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).stdin(Stdio::null()).output().expect("run msgnet")
}

/// Runs `msgnet ARGS` to completion, asserts it succeeded (printing its output if not),
/// and returns its standard output.
pub fn run_ok(args: &[&str]) -> String {
    let out = run(args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "msgnet {args:?} failed: {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
