//! The fleet simulator without the coordinator's CLI: `cargo run --release -p floe-rollout
//! --example sim_bench -- DEVICES STRATEGY [FAIL_RATE OFFLINE_RATE [STATE_JSON]]`.
//!
//! It exists so the engine's speed, memory and behaviour can be measured from this crate alone
//! (the `floe sim` command needs the whole coordinator and its network stack built). It prints
//! the same figures as `floe sim` (setup and run wall time, device events per second, peak
//! RSS) and the action digest, which is equal for equal behaviour; with a fifth argument it
//! also writes the final engine state as JSON, to compare persisted formats across versions.

use floe_rollout::Strategy;
use floe_rollout::sim::{self, Approval, SimConfig};
use std::error::Error;
use std::time::Instant;

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str);
    let devices: usize = arg(0).unwrap_or("1000000").parse()?;
    let name = arg(1).unwrap_or("canary-waves");
    let strategy = Strategy::parse(name).ok_or_else(|| format!("unknown strategy {name:?}"))?;
    let mut cfg = SimConfig::new(devices, strategy);
    cfg.fail_rate = arg(2).unwrap_or("0").parse()?;
    cfg.offline_rate = arg(3).unwrap_or("0").parse()?;
    if std::env::var_os("SIM_MANUAL").is_some() {
        cfg.approval = Approval::Manual;
    }
    let started = Instant::now();
    let prepared = sim::prepare(&cfg)?;
    let setup = started.elapsed().as_secs_f64();
    let out = prepared.run()?;
    let total = started.elapsed().as_secs_f64();
    let wall = total - setup;
    println!(
        "{devices} devices {name}: setup {setup:.2} s, {} device events, {} actions in {wall:.2} s \
         ({:.0} events/s), status {}, peak RSS {} MiB, action digest {:016x}",
        out.device_events,
        out.actions,
        out.device_events as f64 / wall.max(f64::MIN_POSITIVE),
        out.rollout.status(),
        peak_rss_kib().map_or_else(|| "n/a".to_string(), |k| (k / 1024).to_string()),
        out.action_digest
    );
    if let Some(path) = arg(4) {
        std::fs::write(path, serde_json::to_string(&out.rollout)?)?;
    }
    Ok(())
}

/// Peak resident set size (VmHWM) in KiB, on Linux.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
