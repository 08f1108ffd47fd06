//! The `hookci` binary: parses arguments, sets up tracing, runs a command.

use clap::Parser;
use std::io::IsTerminal;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = hookci::cli::Cli::parse();
    let filter = EnvFilter::try_from_env("HOOKCI_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    hookci::cli::run(cli)
}
