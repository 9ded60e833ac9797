//! `floed`, the Floe device daemon and its local commands.

mod artifact;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod demo;
mod run;
mod validate;

#[derive(Debug, Parser)]
#[command(name = "floed", version, about = "The Floe device daemon")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a flow in the foreground until Ctrl-C or SIGTERM.
    Run(run::RunArgs),
    /// Run the temperature-alert example against an embedded MQTT broker.
    Demo(demo::DemoArgs),
    /// Check a flow definition file and list every problem it has.
    Validate(validate::Args),
    /// Verify and import signed artifact bundles.
    #[command(subcommand)]
    Artifact(artifact::ArtifactCommand),
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
        Command::Run(args) => run::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Validate(args) => validate::run(&args),
        Command::Artifact(command) => artifact::run(command),
    }
}
