//! The vocabulary the control surfaces and the main loop share: the commands an operator sends
//! over the control socket, how an installation or rollback ended, and what the loop publishes
//! after every sample.
//!
//! It is its own module so that `http` (which receives commands and shows outcomes)
//! and `agent` (which carries them out) both depend on it and not on each other: the
//! HTTP handlers never touch the agent, and the agent knows nothing of HTTP.

use std::path::PathBuf;

use serde::Serialize;
use tokio::sync::oneshot;

use crate::health::HealthReport;
use crate::slots::SlotName;

/// How an installation (or a rollback) ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The new version passed its trial and is the last known good.
    Committed {
        /// The slot.
        slot: SlotName,
        /// The version.
        version: String,
    },
    /// The new version failed and the last known good runs again.
    RolledBack {
        /// The slot running now (None if there was no previous version).
        slot: Option<SlotName>,
        /// Why.
        reason: String,
    },
}

/// The answer to a control command: the outcome, or why the command could not be carried
/// out, as the sentence the operator reads (it is the body of the HTTP 409 answer).
pub type Reply = oneshot::Sender<Result<Outcome, String>>;

/// A command for the main loop, with the channel for its reply.
#[derive(Debug)]
pub enum Command {
    /// Install a staged directory or artifact; the reply comes when the trial has ended.
    Install {
        /// The staged directory or `.floe` file.
        source: PathBuf,
        /// Who asked.
        actor: String,
        /// The outcome, or why it could not start.
        reply: Reply,
    },
    /// Roll back to the last known good slot.
    Rollback {
        /// Who asked.
        actor: String,
        /// Why.
        reason: String,
        /// The outcome.
        reply: Reply,
    },
}

/// What the main loop publishes after every sample.
#[derive(Debug, Clone)]
pub struct Published {
    /// The health report.
    pub report: HealthReport,
    /// The metrics text.
    pub metrics: String,
}
