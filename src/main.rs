//! The `hookci` binary: parses arguments, sets up tracing, runs a command.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = hookci::cli::Cli::parse();
    hookci::logging::init();
    hookci::cli::run(cli)
}
