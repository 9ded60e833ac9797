//! The device agent: it installs a new flow version into the standby slot, smoke-tests it,
//! switches to it, watches the trial, and commits or rolls back on its own.
//!
//! The [`Agent`] owns the state database, the slots, the running flow and the health samples.
//! It is driven by one task (the daemon's main loop, or `floed install` when no daemon runs),
//! so it needs no locks: every method takes `&mut self`. Each lifecycle step is persisted in
//! the database before it is carried out, together with its audit entry, and
//! [`lifecycle::recover`] decides at the next start how to finish or undo a step that a crash
//! interrupted. Rollback only uses what is already on the device: the last known good slot,
//! which nothing touches until the next deployment.
//!
//! `Agent` is one type whose `impl` blocks are split by concern, one file each, so every
//! file can be read on its own: `start` (a flow's bounded, panic-safe start and stop),
//! `recover` (start-up after a crash), `smoke` (the smoke test), `install` (the persisted
//! steps up to the trial, shared by `floed install` and coordinator directives), `trial`
//! (commit and rollback), and [`directive`] (the coordinator's directives and the device
//! report). This file holds the type, its errors, health sampling and the tick. What the
//! control socket sends and receives is [`crate::control`]'s, so the agent does not know HTTP.

pub mod bundle;
pub mod directive;
pub mod engine;
pub mod lifecycle;
pub mod main_loop;
pub mod runner;

mod install;
mod recover;
pub mod secrets;
mod smoke;
mod start;
mod trial;

use std::path::PathBuf;
use std::time::Instant;

pub use crate::control::Outcome;
pub use smoke::{SmokeError, payload_matches};
pub use start::StartError;
pub use trial::NoRollbackTarget;

use crate::config::Config;
use crate::crash::crash_point;
use crate::health::{
    self, AgentCounters, AppAssessment, AppWindow, Connectivity, Functional, HealthReport,
    SystemProbe, SystemSample,
};
use crate::slots::{SlotError, Slots};
use crate::state::{AuditEntry, Lifecycle, Phase, State, StateError};
use floe_wire::identity::{self, IdentityError};
use lifecycle::{TrialTracker, Verdict};
use runner::{FlowRunner, RunningFlow};

/// The actor recorded for decisions floed takes on its own.
pub const ACTOR_FLOED: &str = "floed";

/// Why an agent operation failed. A failed health gate is not an error: it ends in a rollback
/// that the outcome reports.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Creating or opening the data directory failed.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The data directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Loading the device identity failed.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The state database failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// A slot operation failed (staging, verification, switching the link).
    #[error(transparent)]
    Slot(#[from] SlotError),
    /// Another installation is in progress.
    #[error("an installation is already in progress (phase {0})")]
    Busy(&'static str),
    /// The smoke test failed; the device stays on its current version.
    #[error("smoke test of {version} failed: {reason}")]
    Smoke {
        /// The version tested.
        version: String,
        /// Why it failed (boxed: a missed expectation quotes payloads).
        #[source]
        reason: Box<SmokeError>,
    },
    /// A `.floe` bundle failed verification or may not be installed here.
    #[error(transparent)]
    Bundle(#[from] bundle::BundleInstallError),
    /// An unsigned directory was offered while `dev.allow_unsigned_install` is off.
    #[error(
        "refused to install the unsigned directory {}: only signed .floe bundles install \
         (the developer setting dev.allow_unsigned_install is off)",
        .0.display()
    )]
    UnsignedRefused(PathBuf),
    /// There is nothing to roll back to.
    #[error("nothing to roll back to: {0}")]
    NoRollbackTarget(#[from] NoRollbackTarget),
}

/// The wall-clock time in milliseconds since the epoch (only for records; trials use
/// monotonic time).
pub fn now_ms() -> i64 {
    i64::try_from(floe_wire::clock::unix_ms()).unwrap_or(i64::MAX)
}

/// The device agent. See the module documentation.
#[derive(Debug)]
pub struct Agent<R: FlowRunner> {
    cfg: Config,
    device: String,
    /// Opens the secret values of a slot's record when its flow starts.
    opener: secrets::Opener,
    state: State,
    slots: Slots,
    runner: R,
    flow: Option<R::Flow>,
    running_version: Option<String>,
    lifecycle: Lifecycle,
    trial: Option<TrialTracker>,
    window: AppWindow,
    assessment: AppAssessment,
    probe: SystemProbe,
    system: SystemSample,
    functional: Functional,
    counters: AgentCounters,
    report: HealthReport,
    last_heartbeat: Option<Instant>,
    peers: usize,
    release_on_commit: Option<(String, u64)>,
}

impl<R: FlowRunner> Agent<R>
where
    R::Flow: std::fmt::Debug,
{
    /// Opens the data directory, recovers from whatever a crash interrupted, and starts the
    /// flow of the slot that should run.
    pub async fn open(cfg: Config, runner: R) -> Result<Agent<R>, AgentError> {
        let data = cfg.data_dir.clone();
        // Keys, the release table and flows live here: owner only, at every start.
        floe_wire::fsutil::private_dir(&data).map_err(|source| AgentError::DataDir {
            path: data.clone(),
            source,
        })?;
        let key = identity::load_or_generate(&data)?;
        let device = identity::device_id(&key);
        let opener = secrets::Opener::new(key);
        let now = now_ms();
        let state = State::open(&data, now)?;
        let slots = Slots::open(&data)?;
        let lifecycle = state.lifecycle()?;
        let probe = SystemProbe::new(&cfg.health.proc_root, &cfg.health.sys_root, &data);
        let mut agent = Agent {
            cfg,
            device,
            opener,
            state,
            slots,
            runner,
            flow: None,
            running_version: None,
            lifecycle,
            trial: None,
            window: AppWindow::default(),
            assessment: AppAssessment::default(),
            probe,
            system: SystemSample::default(),
            functional: Functional::NotRun,
            counters: AgentCounters::default(),
            report: HealthReport::starting(""),
            last_heartbeat: None,
            peers: 0,
            release_on_commit: None,
        };
        agent.recover(now).await?;
        agent.sample();
        Ok(agent)
    }

    fn audit(
        &self,
        now: i64,
        actor: &str,
        action: &str,
        outcome: &str,
        detail: &str,
    ) -> AuditEntry {
        AuditEntry::new(now, actor, action, &self.device, outcome, detail)
    }

    /// Moves the step in progress to `phase` at `now`: the row is persisted with its audit
    /// entries first, and only then adopted.
    fn enter_phase(
        &mut self,
        phase: Phase,
        now: i64,
        entries: &[AuditEntry],
    ) -> Result<(), AgentError> {
        let mut l = self.lifecycle.clone();
        l.phase = phase;
        l.since_ms = now;
        self.state.transition(&l, entries)?;
        self.lifecycle = l;
        Ok(())
    }

    /// The device id.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The latest health report.
    pub fn report(&self) -> &HealthReport {
        &self.report
    }

    /// The persisted lifecycle row.
    pub fn lifecycle(&self) -> &Lifecycle {
        &self.lifecycle
    }

    /// Whether a trial is running.
    pub fn on_trial(&self) -> bool {
        self.trial.is_some()
    }

    /// The metrics in Prometheus text format.
    pub fn metrics_text(&self) -> String {
        let mut counters = self.counters.clone();
        counters.rss_bytes = health::self_rss_bytes();
        health::metrics_text(&self.report, &self.assessment, &counters)
    }

    /// Records a coordinator heartbeat (from the p2p layer).
    pub fn note_heartbeat(&mut self, at: Instant, peers: usize) {
        self.last_heartbeat = Some(at);
        self.peers = peers;
    }

    /// Samples all four layers and refreshes the report.
    pub fn sample(&mut self) -> &HealthReport {
        let snap = match &self.flow {
            Some(f) => f.snapshot(),
            None => health::AppSnapshot {
                running: false,
                stopped_reason: Some("no flow installed or running".to_string()),
                ..Default::default()
            },
        };
        self.assessment = self.window.push(snap);
        let sys = self.probe.sample();
        let conn = Connectivity {
            coordinator_age: self.last_heartbeat.map(|t| t.elapsed()),
            peers: self.peers,
        };
        let version = self.running_version.clone().unwrap_or_default();
        self.report = health::evaluate(
            &self.cfg.health,
            &version,
            self.running_version.as_deref(),
            &conn,
            &sys,
            &self.assessment,
            &self.functional,
        );
        self.system = sys;
        &self.report
    }

    /// One step of the main loop: samples health and, on trial, decides whether to commit or
    /// roll back. Returns the outcome when a trial ended.
    pub async fn tick(&mut self) -> Result<Option<Outcome>, AgentError> {
        self.sample();
        let Some(trial) = self.trial.as_mut() else {
            return Ok(None);
        };
        let app = self.report.application_status();
        let running = self.assessment.latest.running;
        let problems = self.report.problems();
        crash_point("trial:tick");
        match trial.judge(Instant::now(), running, app, &problems, &self.cfg.trial) {
            Verdict::Continue => Ok(None),
            Verdict::Commit => self.commit().await.map(Some),
            Verdict::RollBack(reason) => self.roll_back(ACTOR_FLOED, &reason).await.map(Some),
        }
    }

    /// Stops the flow (daemon shutdown). The lifecycle row is left as it is, so a trial
    /// resumes (and counts a restart) at the next start.
    pub async fn shutdown(mut self) {
        self.stop_flow().await;
    }
}

#[cfg(test)]
mod tests;
