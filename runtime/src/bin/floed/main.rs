//! `floed`, the Floe device daemon and its local commands.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use floe_runtime::config::{Config, DEFAULT_CONFIG_PATH};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod daemon;
mod install;
mod rollback;
mod status;

#[derive(Debug, Parser)]
#[command(name = "floed", version, about = "The Floe device daemon")]
struct Cli {
    /// The configuration file.
    #[arg(long, global = true, env = "FLOED_CONFIG")]
    config: Option<PathBuf>,
    /// Overrides the data directory for every subcommand.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the device agent (under systemd: Type=notify).
    Daemon,
    /// Install a version through stage, smoke test, switch, trial and commit or rollback.
    Install(install::Args),
    /// Show slots, versions, trial state, health and recent audit entries.
    Status(status::Args),
    /// Return to the last known good slot, recording the reason.
    Rollback(rollback::Args),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Loads the configuration. The daemon needs the file; the local commands fall back to a
/// minimal configuration when only `--data-dir` is given and no file exists.
fn load_config(cli: &Cli, need_file: bool) -> Result<Config> {
    let explicit = cli.config.is_some();
    let path = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
    if !explicit && !need_file && !path.exists() {
        if let Some(dir) = &cli.data_dir {
            return Ok(Config::minimal(&absolute(dir)?));
        }
    }
    let data_dir = cli.data_dir.as_deref().map(absolute).transpose()?;
    Ok(Config::load(&path, data_dir.as_deref())?)
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))
}

fn run(cli: Cli) -> Result<ExitCode> {
    match &cli.command {
        Command::Daemon => daemon::run(load_config(&cli, true)?),
        Command::Install(args) => install::run(load_config(&cli, false)?, args),
        Command::Status(args) => status::run(&load_config(&cli, false)?, args),
        Command::Rollback(args) => rollback::run(load_config(&cli, false)?, args),
    }
}
