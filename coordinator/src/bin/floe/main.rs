//! `floe`, the coordinator server and the operator's CLI.

mod artifact;
mod keys;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod serve;
mod sim;

#[derive(Debug, Parser)]
#[command(name = "floe", version, about = "The Floe coordinator and CLI")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate keys and device trust stores.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Build and inspect signed artifact bundles.
    #[command(subcommand)]
    Artifact(artifact::ArtifactCommand),
    /// Simulate a deployment to a virtual fleet and print the report.
    Sim(sim::SimArgs),
    /// Run the coordinator: REST API, SQLite state, rollout engines.
    Serve(serve::ServeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Keys(command) => keys::run(command),
        Command::Artifact(command) => artifact::run(command),
        Command::Sim(args) => sim::run(args).map(|()| ExitCode::SUCCESS),
        Command::Serve(args) => serve::run(args).map(|()| ExitCode::SUCCESS),
    }
}
