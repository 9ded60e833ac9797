//! `floed status`: slots, versions, trial state, health and recent audit entries, from the
//! running daemon or, when none runs, read-only from the data directory.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use floe_runtime::config::Config;
use floe_runtime::http::{CONTROL_SOCKET, ClientError, STATUS_AUDIT, control_request};
use floe_runtime::status::{StatusView, read_status};
use floe_wire::text::for_terminal;

/// Arguments of `floed status`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) common: super::Common,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(cfg: &Config, args: &Args) -> Result<ExitCode> {
    let sock = cfg.data_dir.join(CONTROL_SOCKET);
    let json: serde_json::Value =
        match control_request(&sock, "GET", "/status", None, Duration::from_secs(10)) {
            Ok((200, body)) => serde_json::from_str(&body).context("daemon reply")?,
            Ok((code, body)) => anyhow::bail!("floed answered {code}: {body}"),
            Err(ClientError::NotRunning(_)) => {
                let view: StatusView = read_status(&cfg.data_dir, STATUS_AUDIT)
                    .with_context(|| format!("reading the state in {}", cfg.data_dir.display()))?;
                serde_json::to_value(&view).context("encoding the status")?
            }
            Err(e) => return Err(e.into()),
        };
    if args.json {
        outln!("{json}");
        return Ok(ExitCode::SUCCESS);
    }
    // Versions, details and actors can carry text from outside (a manifest, a flow's error):
    // escaped, never sent raw to the terminal.
    let s = |v: &serde_json::Value| for_terminal(v.as_str().unwrap_or("-")).into_owned();
    outln!("device:     {}", s(&json["device"]));
    outln!("active:     {}", s(&json["active"]));
    outln!("phase:      {}", s(&json["phase"]));
    outln!("last good:  {}", s(&json["last_good"]));
    if !json["target"].is_null() {
        outln!(
            "target:     {} (restarts on trial: {})",
            s(&json["target"]),
            json["trial_restarts"]
        );
    }
    for slot in json["slots"].as_array().into_iter().flatten() {
        outln!(
            "slot {:<6} version {:<12} verified: {}",
            s(&slot["slot"]),
            s(&slot["version"]),
            s(&slot["verified"])
        );
    }
    if let Some(h) = json.get("health") {
        outln!("health:     {}", s(&h["status"]));
        for (name, c) in h["checks"].as_object().into_iter().flatten() {
            let name = for_terminal(name);
            outln!("  {name:<24} {:<10} {}", s(&c["status"]), s(&c["detail"]));
        }
    }
    outln!("audit (newest last):");
    for a in json["audit"].as_array().into_iter().flatten() {
        outln!(
            "  {} {} {} {}: {}",
            a["at_ms"],
            s(&a["actor"]),
            s(&a["action"]),
            s(&a["outcome"]),
            s(&a["detail"])
        );
    }
    Ok(ExitCode::SUCCESS)
}
