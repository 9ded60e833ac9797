//! `floed`, the Floe device daemon and its local commands.

// `out!` and `outln!`: stdout that survives a closed pipe (floe_wire::stdout).
#[macro_use]
extern crate floe_wire;

mod artifact;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use floe_runtime::config::{Config, DEFAULT_CONFIG_PATH};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod daemon;
#[cfg(feature = "demo")]
mod demo;
mod fabric;
mod install;
mod join;
mod rollback;
mod run;
mod status;
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
    #[cfg(feature = "demo")]
    Demo(demo::DemoArgs),
    /// Check a flow definition file and list every problem it has.
    Validate(validate::Args),
    /// Verify and import signed artifact bundles.
    #[command(subcommand)]
    Artifact(artifact::ArtifactCommand),
    /// Run a fabric-only node: join the swarm, seed or fetch artifacts, print events.
    Fabric(fabric::FabricArgs),
    /// Run the device agent (under systemd: Type=notify).
    Daemon(Common),
    /// Join a fleet with a join string from `floe enroll-token create --join`: write the
    /// config and trust store, enroll, start the service.
    Join(join::Args),
    /// Install a version through stage, smoke test, switch, trial and commit or rollback.
    Install(install::Args),
    /// Show slots, versions, trial state, health and recent audit entries.
    Status(status::Args),
    /// Return to the last known good slot, recording the reason.
    Rollback(rollback::Args),
}

/// The options every agent subcommand takes.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Common {
    /// The configuration file.
    #[arg(long, env = "FLOED_CONFIG")]
    config: Option<PathBuf>,
    /// Overrides the data directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
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

/// Logs to stderr (journald picks it up under systemd), filtered by `RUST_LOG`.
fn init_agent_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
}

/// Loads the configuration. The daemon needs the file; the local commands fall back to a
/// minimal configuration when only `--data-dir` is given and no file exists.
fn load_config(common: &Common, need_file: bool) -> Result<Config> {
    init_agent_logging();
    let explicit = common.config.is_some();
    let path = common
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
    if !explicit && !need_file && !path.exists() {
        if let Some(dir) = &common.data_dir {
            return Ok(Config::minimal(&absolute(dir)?));
        }
    }
    let data_dir = common.data_dir.as_deref().map(absolute).transpose()?;
    Ok(Config::load(&path, data_dir.as_deref())?)
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Run(args) => run::run(args),
        #[cfg(feature = "demo")]
        Command::Demo(args) => demo::run(args),
        Command::Validate(args) => validate::run(&args),
        Command::Artifact(command) => artifact::run(command),
        Command::Fabric(args) => {
            init_tracing();
            // One thread, like the daemon: the swarm is one task, and hashing and disk work go
            // to the blocking pool either way.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(fabric::run(args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Join(args) => join::run(args),
        Command::Daemon(common) => daemon::run(load_config(&common, true)?),
        Command::Install(args) => install::run(load_config(&args.common, false)?, &args),
        Command::Status(args) => status::run(&load_config(&args.common, false)?, &args),
        Command::Rollback(args) => rollback::run(load_config(&args.common, false)?, &args),
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
