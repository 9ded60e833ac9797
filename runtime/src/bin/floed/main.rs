//! `floed`, the Floe device daemon and its local commands.

mod artifact;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod demo;
mod fabric;
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
    /// Run a fabric-only node: join the swarm, seed or fetch artifacts, print events.
    Fabric(fabric::FabricArgs),
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
        Command::Fabric(args) => {
            init_tracing();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(fabric::run(args))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Logs go to stderr (stdout carries JSON events), filtered by `RUST_LOG` (default `info`).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
