//! `floed run --flow FILE [--var name=value]... [--mqtt URL]`: runs one flow in the foreground
//! until Ctrl-C or SIGTERM, then stops it with a clean drain.
//!
//! It runs on a current-thread tokio runtime: a flow on a Pi is I/O-bound, and one thread keeps
//! the idle footprint of the daemon small (a few MB of RSS).

use anyhow::{Context, Result, bail};
use floe_flow::CompiledFlow;
use floe_flow::engine::{Engine, EngineOptions, FlowMetrics};
use floe_flow::validate::Invalid;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Largest flow file read, checked before parsing.
const MAX_FLOW_BYTES: u64 = 4 << 20;

/// Arguments of `floed run`.
#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// The flow definition (JSON).
    #[arg(long)]
    flow: PathBuf,
    /// Overrides a flow variable: `--var threshold=28`. Repeatable.
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
    vars: Vec<(String, String)>,
    /// Replaces the broker of every MQTT node: `mqtt://host:port`.
    #[arg(long, value_name = "URL")]
    mqtt: Option<String>,
    /// How long a stop may take to drain in-flight messages.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    drain: Duration,
}

/// Why a command-line value was refused (clap shows the message).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ArgError {
    /// A `--var` without a name or without `=`.
    #[error("`{0}` is not NAME=VALUE")]
    NotAVar(String),
    /// The number of a duration does not parse.
    #[error("`{text}` is not a duration like 500ms or 20s")]
    NotADuration {
        /// The value given.
        text: String,
        /// The parse error.
        source: std::num::ParseFloatError,
    },
    /// The unit of a duration is not one of ms, s, m, h.
    #[error("`{text}`: unknown unit `{unit}` (use ms, s, m or h)")]
    Unit {
        /// The value given.
        text: String,
        /// The unit given.
        unit: String,
    },
    /// The duration is negative or too large.
    #[error("`{text}` is out of range")]
    Range {
        /// The value given.
        text: String,
        /// The conversion error.
        source: std::time::TryFromFloatSecsError,
    },
}

/// Parses `name=value`.
pub(crate) fn parse_var(s: &str) -> Result<(String, String), ArgError> {
    match s.split_once('=') {
        Some((n, v)) if !n.is_empty() => Ok((n.to_string(), v.to_string())),
        _ => Err(ArgError::NotAVar(s.to_string())),
    }
}

/// Parses `250ms`, `5s`, `2m`, `1h`, or a plain number of seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, ArgError> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num.parse().map_err(|source| ArgError::NotADuration {
        text: s.to_string(),
        source,
    })?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(ArgError::Unit {
                text: s.to_string(),
                unit: unit.to_string(),
            });
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|source| ArgError::Range {
        text: s.to_string(),
        source,
    })
}

/// Installs a readable tracing subscriber on stderr (`RUST_LOG` overrides the level).
pub(crate) fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// Reads a flow file, refusing files above the size cap without reading them whole.
pub(crate) fn read_flow(path: &Path) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_FLOW_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() as u64 > MAX_FLOW_BYTES {
        bail!("{}: larger than {} bytes", path.display(), MAX_FLOW_BYTES);
    }
    Ok(bytes)
}

/// Validates and compiles, turning validation problems into one readable error.
pub(crate) fn compile(bytes: &[u8], vars: &[(String, String)], what: &str) -> Result<CompiledFlow> {
    floe_flow::validate::compile(bytes, vars).map_err(|e| match e {
        Invalid::Problems(ps) => {
            let lines: Vec<String> = ps
                .iter()
                .map(|p| {
                    if p.field.is_empty() {
                        format!("  {}: {}", p.subject, p.message)
                    } else {
                        format!("  {}: {}: {}", p.subject, p.field, p.message)
                    }
                })
                .collect();
            anyhow::anyhow!("{what} is not a valid flow:\n{}", lines.join("\n"))
        }
        other => anyhow::anyhow!("{what}: {other}"),
    })
}

/// Points every MQTT node at `url`.
pub(crate) fn override_broker(flow: &mut CompiledFlow, url: &str) -> usize {
    let mut n = 0;
    for node in &mut flow.nodes {
        if node.kind == "mqtt_out" || node.kind == "mqtt_in" {
            node.config
                .insert("broker".into(), serde_json::Value::String(url.to_string()));
            n += 1;
        }
    }
    n
}

/// Logs the final counters, one line per node.
pub(crate) fn log_metrics(m: &FlowMetrics) {
    for n in &m.nodes {
        tracing::info!(
            node = %n.id, kind = %n.kind, msgs_in = n.msgs_in, msgs_out = n.msgs_out,
            errors = n.errors, panics = n.panics, dropped = n.dropped,
            last_error = n.last_error.as_deref().unwrap_or(""),
            "node totals"
        );
    }
}

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM).
pub(crate) async fn shutdown_signal() -> Result<&'static str> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => { r.context("waiting for Ctrl-C")?; Ok("SIGINT") }
        _ = term.recv() => Ok("SIGTERM"),
    }
}

pub(crate) fn run(args: RunArgs) -> Result<ExitCode> {
    init_tracing("info");
    let bytes = read_flow(&args.flow)?;
    let mut flow = compile(&bytes, &args.vars, &args.flow.display().to_string())?;
    if let Some(url) = &args.mqtt {
        let n = override_broker(&mut flow, url);
        tracing::info!(broker = %url, nodes = n, "MQTT broker overridden");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the runtime")?;
    rt.block_on(async move {
        let nodes = flow.nodes.len();
        let running = Engine::start(flow, EngineOptions::default()).context("starting the flow")?;
        tracing::info!(flow = %args.flow.display(), nodes, "flow running; Ctrl-C or SIGTERM stops it");
        let why = shutdown_signal().await?;
        tracing::info!(signal = why, "stopping: draining in-flight messages");
        let report = running.stop(args.drain).await;
        log_metrics(&report.metrics);
        if report.drained {
            tracing::info!(elapsed_ms = report.elapsed.as_millis() as u64, "stopped cleanly");
            Ok(ExitCode::SUCCESS)
        } else {
            tracing::warn!(aborted = ?report.aborted, "drain deadline passed; aborted nodes");
            Ok(ExitCode::from(3))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_vars() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("20s").unwrap(), Duration::from_secs(20));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(parse_var("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert!(parse_var("novalue").is_err());
        assert!(parse_var("=x").is_err());
    }
}
