//! `floed rollback --reason TEXT`: return to the last known good slot (ending a trial), or,
//! when idle, to the previous version still held in the other slot. The reason is recorded in
//! the audit log with the local user as the actor.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use floe_runtime::agent::Outcome;
use floe_runtime::config::Config;
use floe_runtime::http::{CONTROL_SOCKET, ClientError, control_request};

use super::install::{local_actor, offline_runtime, open_agent, print_outcome};

/// Arguments of `floed rollback`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) common: super::Common,
    /// Why, for the audit log.
    #[arg(long)]
    reason: String,
}

pub(crate) fn run(cfg: Config, args: &Args) -> Result<ExitCode> {
    let sock = cfg.data_dir.join(CONTROL_SOCKET);
    let body = serde_json::json!({ "reason": args.reason }).to_string();
    match control_request(
        &sock,
        "POST",
        "/rollback",
        Some(&body),
        Duration::from_secs(60),
    ) {
        Ok((200, body)) => {
            outln!("{body}");
            Ok(ExitCode::SUCCESS)
        }
        Ok((code, body)) => anyhow::bail!("floed refused the rollback ({code}): {body}"),
        Err(ClientError::NotRunning(_)) => {
            let (_lock, rt) = offline_runtime(&cfg)?;
            rt.block_on(async {
                let mut agent = open_agent(cfg).await?;
                let out = agent
                    .rollback(&local_actor(), &args.reason)
                    .await
                    .context("rolling back")?;
                agent.shutdown().await;
                let code = print_outcome(&out);
                // A requested rollback that succeeded is a success for the command.
                Ok(
                    if matches!(out, Outcome::RolledBack { slot: Some(_), .. }) {
                        ExitCode::SUCCESS
                    } else {
                        code
                    },
                )
            })
        }
        Err(e) => Err(e.into()),
    }
}
