//! `msgnet id`: print the peer id.

use std::process::ExitCode;

use super::KeyArg;

/// Arguments of `msgnet id`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    key: KeyArg,
}

/// Print the peer id of the identity, one line.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let keypair = args.key.keypair()?;
    crate::output::println_flush(&keypair.public().to_peer_id().to_string())?;
    Ok(ExitCode::SUCCESS)
}
