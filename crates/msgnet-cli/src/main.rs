//! `msgnet`: the command-line face of msgnet. See `msgnet --help`.
//!
//! Every subcommand lives in its own module under [`msgnet_cli::cmd`]; this file only
//! parses the command line, starts the tokio runtime and maps errors to the exit code
//! (1, with one `error: <reason>` line on stderr).

use std::process::ExitCode;

use clap::Parser;
use msgnet_cli::cmd::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(cmd::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    };
    // Host driver tasks may still be parked on their sockets; do not wait for them.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    code
}

/// Logs go to stderr and are off unless `RUST_LOG` asks for them, so that a failing
/// `send` prints exactly one line on stderr.
fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("off"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
