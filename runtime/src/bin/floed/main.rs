//! `floed`, the Floe device daemon and its local commands.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod fabric;

#[derive(Debug, Parser)]
#[command(name = "floed", version, about = "The Floe device daemon")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
