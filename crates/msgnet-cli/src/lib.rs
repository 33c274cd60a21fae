//! The `msgnet` command-line tool as a library, so that its benchmark (`benches/`)
//! and tests reuse the same pieces as the binary.
//!
//! - [`cmd`]: the subcommands (`id`, `listen`, `send`, `ping`, `demo`, `bench`, `dht`);
//! - [`output`]: how payloads and addresses are printed;
//! - [`bench`]: the measurement kernels shared by `msgnet bench` and `cargo bench`
//!   (msgnet and raw UDP side by side).

pub mod bench;
pub mod cmd;
pub mod output;

/// The README's Rust example, compiled and run as a doctest so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
