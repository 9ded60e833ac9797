//! `floe loadtest`: N simulated devices with real keys against a running coordinator.
//!
//! The devices are allowlisted through the API, then report on a schedule, fetch their
//! directives and answer them step by step with signed reports (see
//! `floe_coordinator::loadtest`). The command prints the figures once a second and a summary
//! at the end, and fails when no report was accepted.

use crate::config::{Conn, Dirs, resolve};
use anyhow::{Context, Result, bail};
use clap::Args;
use floe_coordinator::loadtest::{Fleet, LoadConfig};
use floe_rollout::parse_duration;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// Arguments of `floe loadtest`.
#[derive(Debug, Args)]
pub(crate) struct LoadtestArgs {
    #[command(flatten)]
    conn: Conn,
    /// Number of simulated devices.
    #[arg(long, default_value_t = 100)]
    devices: usize,
    /// Mean time between two reports of an idle device (reference units: 30s, 1m).
    #[arg(long, default_value = "30s")]
    period: String,
    /// Time between two reports of a device in the middle of a deployment.
    #[arg(long, default_value = "1s")]
    active_period: String,
    /// How long to run.
    #[arg(long, default_value = "60s")]
    duration: String,
    /// Requests outstanding at once (each on its own connection: above 64, start the
    /// coordinator with `--max-connections-per-addr` at least this, or its per-address cap
    /// closes the rest).
    #[arg(long, default_value_t = 16)]
    in_flight: usize,
    /// Share of devices that fail their stage.
    #[arg(long, default_value_t = 0.0)]
    fail_rate: f64,
    /// Share of devices that turn unhealthy on the new release.
    #[arg(long, default_value_t = 0.0)]
    unhealthy_rate: f64,
    /// Share of devices that go offline after enrolling.
    #[arg(long, default_value_t = 0.0)]
    offline_rate: f64,
    /// Seed of the device keys (the same seed gives the same fleet).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Skip allowlisting (the fleet of this seed is registered already).
    #[arg(long)]
    no_allow: bool,
    /// The coordinator's trust directory: verify directives as devices do.
    #[arg(long)]
    trust: Option<PathBuf>,
}

fn duration(field: &str, text: &str) -> Result<Duration> {
    parse_duration(text)
        .map(Duration::from_millis)
        .with_context(|| format!("--{field} {text:?}"))
}

pub(crate) fn run(args: LoadtestArgs) -> Result<()> {
    let settings = resolve(&args.conn, &|k| std::env::var(k).ok(), &Dirs::from_env())?;
    let mut config = LoadConfig::new(&settings.server, args.devices);
    config.token = settings.token;
    config.period = duration("period", &args.period)?;
    config.active_period = duration("active-period", &args.active_period)?;
    config.in_flight = args.in_flight;
    config.fail_rate = args.fail_rate;
    config.unhealthy_rate = args.unhealthy_rate;
    config.offline_rate = args.offline_rate;
    config.seed = args.seed;
    if let Some(dir) = &args.trust {
        config.trust = Some(
            floe_wire::artifact::keys::load_trust(dir)
                .with_context(|| format!("loading the trust store {}", dir.display()))?,
        );
    }
    let run_for = duration("duration", &args.duration)?;
    let fleet = Fleet::new(config)?;
    let [good, fail, unhealthy, offline] = fleet.behaviours();
    outln!(
        "floe loadtest: {} devices ({good} good, {fail} failing stage, {unhealthy} unhealthy, {offline} offline) against {}",
        args.devices,
        settings.server
    );
    if !args.no_allow {
        let t0 = std::time::Instant::now();
        let (created, existing) = fleet.allow_all()?;
        outln!(
            "allowlisted {created} devices ({existing} were already) in {:.1} s",
            t0.elapsed().as_secs_f64()
        );
    }
    let stop = AtomicBool::new(false);
    let stats = fleet.run(run_for, &stop, |s| outln!("{s}"))?;
    let summary = stats.summary();
    outln!("summary: {summary}");
    for (what, count) in stats.error_kinds() {
        outln!("  {count} × {what}");
    }
    if summary.accepted == 0 {
        bail!("no report was accepted");
    }
    Ok(())
}
