//! Test harness for the js-libp2p node in `interop/js` (`node.mjs`), shared by the Rust
//! interop tests (included with `#[path = ".../interop/js/harness.rs"] mod js;`).
//!
//! [`JsNode::spawn`] runs `node --import ./polyfill.mjs node.mjs <args>` in `interop/js`,
//! waits for its `listening` and `ready` lines and returns a handle that reads its event
//! lines ([`JsNode::recv`], [`JsNode::expect`]) and writes commands to its stdin
//! ([`JsNode::command`]). The line format is documented at the top of `node.mjs`.
//!
//! Missing `interop/js/node_modules` are installed with `npm ci` (the pinned lockfile) on
//! first use; missing Node.js or a failed install fails the test with a message that says
//! what to run; it never passes silently. The child is killed when the handle is
//! dropped (also on panic), and it exits by itself when its stdin closes, so it cannot
//! outlive the test process.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

/// How long to wait for the node to start (npm modules load slowly on a busy machine).
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Most event lines buffered between the reader thread and the test.
const LINE_QUEUE: usize = 4096;
/// Most stderr bytes kept for failure messages (the tail).
const STDERR_KEEP: usize = 16 * 1024;

/// What to run when the npm modules are missing.
pub const SETUP_HINT: &str = "run `npm ci --prefix interop/js` (from the repository root; needs Node.js >= 20 and npm)";

/// One event line of `node.mjs`: `<event> key=value ...`, values percent-decoded.
#[derive(Debug, Clone)]
pub struct Line {
    /// The event name (first word).
    pub event: String,
    fields: Vec<(String, String)>,
    /// The line as printed.
    pub raw: String,
}

impl Line {
    fn parse(raw: &str) -> Line {
        let mut words = raw.split(' ');
        let event = words.next().unwrap_or_default().to_owned();
        let fields = words
            .filter_map(|w| w.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Line { event, fields, raw: raw.to_owned() }
    }

    /// The decoded value of `key`.
    pub fn get(&self, key: &str) -> Option<String> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| percent_decode(v))
    }

    /// The decoded value of `key`; panics (naming the line) when absent.
    pub fn field(&self, key: &str) -> String {
        self.get(key).unwrap_or_else(|| panic!("js line without `{key}`: {}", self.raw))
    }

    /// The decoded items of the comma-separated list `key` (empty when absent or empty).
    pub fn list(&self, key: &str) -> Vec<String> {
        match self.fields.iter().find(|(k, _)| k == key) {
            Some((_, v)) if !v.is_empty() => v.split(',').map(percent_decode).collect(),
            _ => Vec::new(),
        }
    }

    /// The hex-decoded bytes of `key`; panics (naming the line) when absent or not hex.
    pub fn bytes(&self, key: &str) -> Vec<u8> {
        let v = self.field(key);
        from_hex(&v).unwrap_or_else(|| panic!("js line with non-hex `{key}`: {}", self.raw))
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Some(v) = s.get(i + 1..i + 3).and_then(from_hex) {
                out.push(v[0]);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Lowercase or uppercase hex to bytes; `None` if not hex.
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    let nibble = |c: u8| char::from(c).to_digit(16).and_then(|d| u8::try_from(d).ok());
    s.as_bytes()
        .chunks(2)
        .map(|pair| match pair {
            [hi, lo] => Some(nibble(*hi)? << 4 | nibble(*lo)?),
            _ => None,
        })
        .collect()
}

/// Bytes to lowercase hex.
pub fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A running `node.mjs`.
pub struct JsNode {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<Line>,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// Its peer id (base58).
    pub peer: String,
    /// Its TCP listen address, with `/p2p/<peer>`.
    pub addr: String,
    /// Every line received so far (for failure messages).
    pub seen: Vec<String>,
}

/// The `interop/js` directory.
pub fn js_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../interop/js")
}

/// Fails the test, with what to do, unless `node` runs and `interop/js/node_modules` holds
/// the installed packages.
pub fn require_node() -> PathBuf {
    let dir = js_dir();
    match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "`node --version` failed ({}): install Node.js >= 20, then {SETUP_HINT}",
            out.status
        ),
        Err(e) => panic!("Node.js (`node`) not found ({e}): install Node.js >= 20, then {SETUP_HINT}"),
    }
    const MODULES: [&str; 3] = ["libp2p", "@libp2p/kad-dht", "@chainsafe/libp2p-noise"];
    let installed = |dir: &PathBuf| {
        MODULES.iter().all(|m| dir.join("node_modules").join(m).join("package.json").is_file())
    };
    if !installed(&dir) {
        // A fresh checkout: install the pinned modules once (tests of one binary run on
        // several threads; `.ci/run` installs them beforehand anyway).
        static INSTALL: Mutex<()> = Mutex::new(());
        let _guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
        if !installed(&dir) {
            let status = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--prefix"])
                .arg(&dir)
                .stdout(Stdio::null())
                .status();
            match status {
                Ok(s) if s.success() => {}
                Ok(s) => panic!("`npm ci` in {} failed ({s}): {SETUP_HINT}", dir.display()),
                Err(e) => panic!("npm not found ({e}): {SETUP_HINT}"),
            }
        }
    }
    for module in MODULES {
        if !dir.join("node_modules").join(module).join("package.json").is_file() {
            panic!("{} lacks the npm module {module}: {SETUP_HINT}", dir.join("node_modules").display());
        }
    }
    dir
}

impl JsNode {
    /// Starts `node.mjs` with `args` and waits for its `ready` line.
    pub async fn spawn(args: &[&str]) -> JsNode {
        let dir = require_node();
        let mut child = Command::new("node")
            .args(["--import", "./polyfill.mjs", "node.mjs"])
            .args(args)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning node in {}: {e}", dir.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr_pipe = child.stderr.take().expect("piped stderr");
        let stdin = child.stdin.take();

        let (tx, lines) = mpsc::channel(LINE_QUEUE);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.blocking_send(Line::parse(&line)).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let keep = stderr.clone();
        std::thread::spawn(move || {
            let mut pipe = stderr_pipe;
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut kept = keep.lock().unwrap_or_else(|e| e.into_inner());
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > STDERR_KEEP {
                    let cut = kept.len() - STDERR_KEEP;
                    kept.drain(..cut);
                }
            }
        });

        let mut node = JsNode { child, stdin, lines, stderr, peer: String::new(), addr: String::new(), seen: Vec::new() };
        let mut addr = None;
        let ready = node
            .expect_within(START_TIMEOUT, |l| {
                if l.event == "listening" && addr.is_none() {
                    addr = l.get("addr");
                }
                l.event == "ready"
            })
            .await;
        node.peer = ready.field("peer");
        node.addr = addr.unwrap_or_else(|| panic!("js node printed no `listening` line: {}", node.transcript()));
        node
    }

    /// The next line; panics on EOF (the node exited) or on a `fatal` line.
    pub async fn recv(&mut self) -> Line {
        match self.lines.recv().await {
            Some(line) => {
                self.seen.push(line.raw.clone());
                if line.event == "fatal" {
                    panic!("js node failed: {}\n{}", line.field("message"), self.transcript());
                }
                line
            }
            None => {
                let status = self.child.try_wait().ok().flatten();
                panic!("js node exited ({status:?})\n{}", self.transcript());
            }
        }
    }

    /// Reads lines until `pred` accepts one (returned), at most `timeout`. Panics on
    /// timeout, on an `error` line and as [`recv`](Self::recv).
    pub async fn expect_within(&mut self, timeout: Duration, mut pred: impl FnMut(&Line) -> bool) -> Line {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let line = match tokio::time::timeout_at(deadline, self.recv()).await {
                Ok(line) => line,
                Err(_) => panic!("timed out after {timeout:?} waiting for the js node\n{}", self.transcript()),
            };
            if line.event == "error" {
                panic!("js node reported an error: {}\n{}", line.raw, self.transcript());
            }
            if pred(&line) {
                return line;
            }
        }
    }

    /// [`expect_within`](Self::expect_within) with 60 s.
    pub async fn expect(&mut self, pred: impl FnMut(&Line) -> bool) -> Line {
        self.expect_within(Duration::from_secs(60), pred).await
    }

    /// Writes one command line to the node's stdin.
    pub fn command(&mut self, cmd: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        if let Err(e) = stdin.write_all(format!("{cmd}\n").as_bytes()).and_then(|()| stdin.flush()) {
            panic!("writing `{cmd}` to the js node: {e}\n{}", self.transcript());
        }
    }

    /// Every line seen and the tail of stderr, for failure messages.
    pub fn transcript(&self) -> String {
        let stderr = self.stderr.lock().map(|s| String::from_utf8_lossy(&s).into_owned()).unwrap_or_default();
        format!("--- js stdout ---\n{}\n--- js stderr (tail) ---\n{stderr}", self.seen.join("\n"))
    }
}

impl Drop for JsNode {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
