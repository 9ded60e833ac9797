//! `floed install SOURCE`: install a version through the whole lifecycle (stage, smoke test,
//! switch, trial, commit or rollback) and print the outcome. This is the path for air-gapped
//! sites: the source comes from a USB stick, nothing from the network.
//!
//! With a daemon running, the request goes over its control socket and the daemon does the
//! work; otherwise this process takes the data directory's lock and runs the lifecycle itself.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use floe_runtime::agent::engine::EngineRunner;
use floe_runtime::agent::{Agent, Outcome};
use floe_runtime::config::Config;
use floe_runtime::http::{CONTROL_SOCKET, ClientError, control_request};

/// Arguments of `floed install`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) common: super::Common,
    /// A signed `.floe` bundle (verified against the trust store: signatures, anti-rollback,
    /// expiry), or, only with the developer setting `dev.allow_unsigned_install`, a staged
    /// directory (a `.version` record and the files it lists).
    source: PathBuf,
}

/// The actor recorded for local commands run in this process: `local:uid=<uid>(<name>)`, from
/// the process's real uid (never from the environment, which the caller chooses).
pub(crate) fn local_actor() -> String {
    floe_runtime::peer::Caller::this_process().actor()
}

pub(crate) fn print_outcome(outcome: &Outcome) -> ExitCode {
    match outcome {
        Outcome::Committed { slot, version } => {
            outln!("committed: {version} runs from slot {slot} and is the last known good");
            ExitCode::SUCCESS
        }
        Outcome::RolledBack { slot, reason } => {
            let slot = slot.map_or("nothing".to_string(), |s| format!("slot {s}"));
            outln!("rolled back to {slot}: {reason}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn run(cfg: Config, args: &Args) -> Result<ExitCode> {
    let source = std::fs::canonicalize(&args.source)
        .with_context(|| format!("install source {}", args.source.display()))?;
    let sock = cfg.data_dir.join(CONTROL_SOCKET);
    let body = serde_json::json!({ "source": source }).to_string();
    let t = &cfg.trial;
    let wait = t.min_ready + t.start_timeout * 2 + t.smoke_timeout + Duration::from_secs(60);
    match control_request(&sock, "POST", "/install", Some(&body), wait) {
        Ok((200, body)) => {
            let outcome: serde_json::Value = serde_json::from_str(&body).context("daemon reply")?;
            outln!("{outcome}");
            Ok(if outcome["outcome"] == "committed" {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Ok((code, body)) => anyhow::bail!("floed refused the installation ({code}): {body}"),
        Err(ClientError::NotRunning(_)) => in_process(cfg, &source),
        Err(e) => Err(e.into()),
    }
}

/// The data directory locked against a daemon, and a current-thread runtime: what the local
/// commands need to drive the agent themselves when no daemon runs. The lock is held as long
/// as the returned guard lives.
pub(crate) fn offline_runtime(
    cfg: &Config,
) -> Result<(nix::fcntl::Flock<std::fs::File>, tokio::runtime::Runtime)> {
    let lock = super::daemon::lock_data_dir(&cfg.data_dir)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    Ok((lock, rt))
}

/// Opens the agent in this process (see [`offline_runtime`]).
pub(crate) async fn open_agent(cfg: Config) -> Result<Agent<EngineRunner>> {
    Agent::open(cfg, EngineRunner::default())
        .await
        .context("opening the device state")
}

fn in_process(cfg: Config, source: &std::path::Path) -> Result<ExitCode> {
    let (_lock, rt) = offline_runtime(&cfg)?;
    rt.block_on(async {
        let interval = cfg.trial.check_interval;
        let mut agent = open_agent(cfg).await?;
        let first =
            floe_runtime::agent::main_loop::install_source(&mut agent, source, &local_actor())
                .await
                .context("installing")?;
        let outcome = match first {
            Some(o) => o,
            None => {
                outln!("switched; on trial");
                let mut ticker = tokio::time::interval(interval);
                loop {
                    ticker.tick().await;
                    if let Some(o) = agent.tick().await.context("trial")? {
                        break o;
                    }
                }
            }
        };
        let code = print_outcome(&outcome);
        agent.shutdown().await;
        Ok(code)
    })
}
