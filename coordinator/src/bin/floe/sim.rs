//! `floe sim`: drives the rollout engine against a simulated fleet in virtual time and prints
//! the "Fleet Deployment Report", the device events per second and the peak RSS.
//!
//! The engine and the simulator read no clock; this command is where wall time is measured,
//! around the run, so the throughput figure covers the engine and the simulated devices
//! together.

use anyhow::{Context, Result, bail};
use clap::Args;
use floe_coordinator::contract::DeploymentPlan;
use floe_rollout::sim::{self, Approval, SimConfig};
use floe_rollout::{StateBlock, Strategy, parse_duration};

/// Most canary picks `floe sim --json` lists (a million-device canary has 10 000).
const MAX_CANARY_ROWS: usize = 1000;
use std::time::Instant;

/// Arguments of `floe sim`.
#[derive(Debug, Args)]
pub(crate) struct SimArgs {
    /// Number of simulated devices.
    #[arg(long, default_value_t = 100)]
    devices: usize,
    /// all-at-once, rolling, canary, blue-green, canary-waves or steps.
    #[arg(long, default_value = "canary-waves")]
    strategy: String,
    /// Traffic steps in percent, e.g. 5,25,50,100 (implies --strategy steps).
    #[arg(long, value_delimiter = ',')]
    steps: Vec<f64>,
    /// Device types to spread the fleet over.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "rpi4,jetson-nano,gateway"
    )]
    device_types: Vec<String>,
    /// Regions to spread the fleet over.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "eu-west,us-east,ap-south"
    )]
    regions: Vec<String>,
    /// Share of devices on which the new version fails.
    #[arg(long, default_value_t = 0.0)]
    fail_rate: f64,
    /// Share of devices that go offline during the run.
    #[arg(long, default_value_t = 0.0)]
    offline_rate: f64,
    /// Seed for the fleet and the wave shuffle.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// auto: the simulated operator approves; manual: stop at the first approval request.
    #[arg(long, default_value = "auto")]
    approve: String,
    /// Canary soak (reference units, e.g. 30m).
    #[arg(long)]
    canary_soak: Option<String>,
    /// Soak for every wave or step (reference units).
    #[arg(long)]
    soak: Option<String>,
    /// Rolling batch size.
    #[arg(long)]
    batch_size: Option<u32>,
    /// Most devices deploying at once.
    #[arg(long)]
    max_parallel: Option<u32>,
    /// Allow all-at-once above the fleet-size limit.
    #[arg(long)]
    force: bool,
    /// Make the release this much worse in error rate (absolute fraction, e.g. 0.15).
    #[arg(long, default_value_t = 0.0)]
    bad_release_error: f64,
    /// Print JSON instead of markdown.
    #[arg(long)]
    json: bool,
}

/// Peak resident set size (VmHWM) in KiB, from /proc/self/status.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub(crate) fn run(args: SimArgs) -> Result<()> {
    let strategy = if args.steps.is_empty() {
        Strategy::parse(&args.strategy).with_context(|| {
            format!(
                "unknown strategy {:?}: use all-at-once, rolling, canary, blue-green, canary-waves or steps",
                args.strategy
            )
        })?
    } else {
        Strategy::Steps
    };
    let mut cfg = SimConfig::new(args.devices, strategy);
    if !args.steps.is_empty() {
        cfg.strategy.steps = args.steps.clone();
    }
    cfg.device_types = args.device_types;
    cfg.regions = args.regions;
    cfg.fail_rate = args.fail_rate;
    cfg.offline_rate = args.offline_rate;
    cfg.seed = args.seed;
    cfg.bad_release_error = args.bad_release_error;
    cfg.approval = match args.approve.as_str() {
        "auto" => Approval::Auto,
        "manual" => Approval::Manual,
        other => bail!("--approve {other:?}: use auto or manual"),
    };
    if let Some(s) = &args.canary_soak {
        cfg.strategy.canary_soak = parse_duration(s).context("--canary-soak")?;
    }
    if let Some(s) = &args.soak {
        let soak = parse_duration(s).context("--soak")?;
        cfg.strategy.step_soak = soak;
        cfg.strategy.batch_delay = soak;
        for w in &mut cfg.strategy.waves {
            w.soak = soak;
        }
    }
    if let Some(b) = args.batch_size {
        cfg.strategy.batch_size = b;
        if strategy == Strategy::Rolling {
            cfg.strategy.max_parallel = b;
        }
    }
    if let Some(m) = args.max_parallel {
        cfg.strategy.max_parallel = m;
    }
    cfg.strategy.force = args.force;
    let started = Instant::now();
    let prepared = sim::prepare(&cfg).context("preparing the simulation")?;
    let setup = started.elapsed().as_secs_f64();
    let out = prepared.run().context("simulation failed")?;
    let total = started.elapsed().as_secs_f64();
    // Events per second over the driving phase; setup (fleet generation, plan compilation,
    // canary selection, wave shuffle) is reported apart, as `setup_seconds`.
    let wall = total - setup;
    let events_per_sec = if wall > 0.0 {
        out.device_events as f64 / wall
    } else {
        0.0
    };
    let rss_kib = peak_rss_kib();
    tracing::info!(
        devices = args.devices,
        wall,
        events = out.device_events,
        "simulation finished"
    );
    if args.json {
        let doc = serde_json::json!({
            "report": out.report,
            "state": StateBlock::from_rollout(&out.rollout),
            "plan": DeploymentPlan::of(out.rollout.plan(), MAX_CANARY_ROWS),
            "device_events": out.device_events,
            "actions": out.actions,
            "action_digest": format!("{:016x}", out.action_digest),
            "virtual_ms": out.virtual_ms,
            "max_in_flight": out.max_in_flight,
            "halts": out.halts,
            "setup_seconds": setup,
            "run_seconds": wall,
            "wall_seconds": total,
            "device_events_per_sec": events_per_sec,
            "peak_rss_kib": rss_kib,
        });
        outln!(
            "{}",
            serde_json::to_string_pretty(&doc).context("encoding the report")?
        );
    } else {
        out!("{}", out.report.to_markdown());
        let plan =
            crate::plan_view::render(&DeploymentPlan::of(out.rollout.plan(), MAX_CANARY_ROWS));
        if !plan.is_empty() {
            outln!();
            out!("{plan}");
        }
        for (i, h) in out.halts.iter().enumerate() {
            outln!("halt {}: {h}", i + 1);
        }
        if !out.rollout.status().is_terminal() {
            outln!();
            out!("{}", StateBlock::from_rollout(&out.rollout).to_text());
        }
        outln!();
        outln!(
            "simulated {} devices: setup {:.2} s, then {} device events, {} actions in {:.2} s wall \
             ({:.0} device events/s, {:.0} including setup), virtual time {}, peak in flight {}, \
             peak RSS {} MiB, action digest {:016x}",
            args.devices,
            setup,
            out.device_events,
            out.actions,
            wall,
            events_per_sec,
            out.device_events as f64 / total.max(f64::MIN_POSITIVE),
            floe_rollout::duration::format_duration(out.virtual_ms),
            out.max_in_flight,
            rss_kib.map_or_else(|| "n/a".to_string(), |k| (k / 1024).to_string()),
            out.action_digest
        );
    }
    Ok(())
}
