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

pub mod bundle;
pub mod crash;
pub mod directive;
pub mod engine;
pub mod lifecycle;
pub mod main_loop;
pub mod runner;

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::FutureExt;
use serde::Serialize;

use crate::config::Config;
use crate::health::{
    self, AgentCounters, AppAssessment, AppWindow, Connectivity, Functional, HealthReport,
    SystemProbe,
};
use crate::slots::{SlotError, SlotName, Slots, VersionRecord};
use crate::state::{AuditEntry, Lifecycle, Phase, State, StateError};
use crash::crash_point;
use floe_wire::identity::{self, IdentityError};
use lifecycle::{Recovery, TrialTracker, Verdict};
use runner::{FlowRunner, RunningFlow, StartSpec};

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
        /// Why it failed.
        reason: String,
    },
    /// A `.floe` bundle failed verification or may not be installed here.
    #[error(transparent)]
    Bundle(#[from] bundle::BundleInstallError),
    /// There is nothing to roll back to.
    #[error("nothing to roll back to: {0}")]
    NoRollbackTarget(String),
}

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

/// The wall-clock time in milliseconds since the epoch (only for records; trials use
/// monotonic time).
pub fn now_ms() -> i64 {
    i64::try_from(floe_wire::clock::unix_ms()).unwrap_or(i64::MAX)
}

/// What `floed status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct StatusView {
    /// The device id.
    pub device: String,
    /// Where `active` points.
    pub active: Option<SlotName>,
    /// The lifecycle phase.
    pub phase: &'static str,
    /// The last known good slot.
    pub last_good: Option<SlotName>,
    /// The slot on trial or being installed.
    pub target: Option<SlotName>,
    /// Restarts counted by the crash-loop guard during the current trial.
    pub trial_restarts: usize,
    /// Both slots.
    pub slots: Vec<SlotView>,
    /// The latest health report, when the daemon runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthReport>,
    /// The result of `PRAGMA integrity_check` on the state database (`ok` when sound).
    pub database: String,
    /// The newest audit entries.
    pub audit: Vec<AuditView>,
}

/// One slot in the status.
#[derive(Debug, Clone, Serialize)]
pub struct SlotView {
    /// The slot.
    pub slot: SlotName,
    /// The version recorded in the database.
    pub version: Option<String>,
    /// Whether the files match their hashes now (`ok`, or the reason they do not).
    pub verified: String,
}

/// One audit entry in the status.
#[derive(Debug, Clone, Serialize)]
pub struct AuditView {
    /// Milliseconds since the epoch.
    pub at_ms: i64,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// How it ended.
    pub outcome: String,
    /// Detail.
    pub detail: String,
}

/// Reads the status from disk without a running daemon (the database is opened read-only).
pub fn read_status(data_dir: &Path, audit_limit: usize) -> Result<StatusView, AgentError> {
    read_status_with_health(data_dir, None, audit_limit)
}

/// [`read_status`] with a health report to show (the running daemon's latest), for the
/// daemon's own `GET /status`: it reads the state read-only, so it never waits for the main
/// loop.
pub fn read_status_with_health(
    data_dir: &Path,
    health: Option<HealthReport>,
    audit_limit: usize,
) -> Result<StatusView, AgentError> {
    let state = State::open_read_only(data_dir)?;
    let slots = Slots::open_existing(data_dir);
    status_from(&state, &slots, device_of(data_dir), health, audit_limit)
}

fn device_of(data_dir: &Path) -> String {
    std::fs::read(data_dir.join(identity::IDENTITY_FILE))
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
        .map(|seed| identity::device_id(&ed25519_dalek::SigningKey::from_bytes(&seed)))
        .unwrap_or_else(|| "unknown".to_string())
}

fn status_from(
    state: &State,
    slots: &Slots,
    device: String,
    health: Option<HealthReport>,
    audit_limit: usize,
) -> Result<StatusView, AgentError> {
    let l = state.lifecycle()?;
    let mut views = Vec::new();
    for rec in state.slots()? {
        let verified = match slots.verify(rec.slot) {
            Ok(_) => "ok".to_string(),
            Err(e) => e.to_string(),
        };
        views.push(SlotView {
            slot: rec.slot,
            version: rec.version,
            verified,
        });
    }
    let audit = state
        .audit_log(audit_limit)?
        .into_iter()
        .map(|a| AuditView {
            at_ms: a.at_ms,
            actor: a.actor,
            action: a.action,
            outcome: a.outcome,
            detail: a.detail,
        })
        .collect();
    Ok(StatusView {
        device,
        active: slots.active().ok().flatten(),
        phase: l.phase.as_str(),
        last_good: l.last_good,
        target: l.target,
        trial_restarts: l.trial_boots.len(),
        slots: views,
        health,
        database: state.integrity_check()?,
        audit,
    })
}

/// The device agent. See the module documentation.
#[derive(Debug)]
pub struct Agent<R: FlowRunner> {
    cfg: Config,
    device: String,
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
        std::fs::create_dir_all(&data).map_err(|source| AgentError::DataDir {
            path: data.clone(),
            source,
        })?;
        let key = identity::load_or_generate(&data)?;
        let device = identity::device_id(&key);
        let now = now_ms();
        let state = State::open(&data, now)?;
        let slots = Slots::open(&data)?;
        let lifecycle = state.lifecycle()?;
        let probe = SystemProbe::new(&cfg.health.proc_root, &cfg.health.sys_root, &data);
        let mut agent = Agent {
            cfg,
            device,
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

    async fn recover(&mut self, now: i64) -> Result<(), AgentError> {
        let cleanup = self.slots.cleanup()?;
        let mut entries = Vec::new();
        if cleanup.removed_tmp_link {
            entries.push(self.audit(
                now,
                ACTOR_FLOED,
                "recover",
                "cleaned",
                "removed a stale active.tmp link",
            ));
        }
        if cleanup.removed_assembly {
            entries.push(self.audit(
                now,
                ACTOR_FLOED,
                "recover",
                "cleaned",
                "removed an interrupted artifact assembly directory",
            ));
        }
        for s in &cleanup.removed_staging {
            entries.push(self.audit(
                now,
                ACTOR_FLOED,
                "recover",
                "cleaned",
                &format!("removed the interrupted staging directory of {s}"),
            ));
        }
        let link = match self.slots.active() {
            Ok(l) => l,
            Err(e) => {
                entries.push(self.audit(now, ACTOR_FLOED, "recover", "refused", &e.to_string()));
                None
            }
        };
        let slots = self.slots.clone();
        let verify = move |s: SlotName| slots.verify(s).map(|_| ()).map_err(|e| e.to_string());
        let plan: Recovery =
            lifecycle::recover(&self.lifecycle, link, &verify, now, &self.cfg.trial);
        for n in &plan.notes {
            tracing::warn!(action = n.action, outcome = n.outcome, detail = %n.detail, "recovery");
            entries.push(self.audit(now, ACTOR_FLOED, n.action, n.outcome, &n.detail));
        }
        if let Some(slot) = plan.forget {
            self.slots.clear(slot)?;
            self.state.set_slot(slot, None, now, None)?;
        }
        self.state.transition(&plan.lifecycle, &entries)?;
        let was_rollback = plan.notes.iter().any(|n| n.action == "rollback");
        if was_rollback {
            self.counters.rollbacks += 1;
        }
        self.lifecycle = plan.lifecycle;
        if let Some(slot) = plan.relink {
            self.slots.switch_active(slot)?;
        }
        crash_point("recover:relinked");
        if let Some(slot) = plan.run {
            match self.start_slot(slot, false).await {
                Ok((flow, record)) => {
                    self.flow = Some(flow);
                    self.running_version = Some(record.version);
                    if plan.trial {
                        self.trial = Some(TrialTracker::new(Instant::now()));
                    }
                }
                Err(reason) if plan.trial => {
                    self.roll_back(
                        ACTOR_FLOED,
                        &format!("trial version failed to start after a restart: {reason}"),
                    )
                    .await?;
                }
                Err(reason) => {
                    let e = self.audit(
                        now_ms(),
                        ACTOR_FLOED,
                        "start",
                        "failed",
                        &format!("{slot}: {reason}"),
                    );
                    self.state.audit(&e)?;
                }
            }
        }
        Ok(())
    }

    /// Verifies and starts a slot's flow, bounding the start with a timeout and catching a
    /// panic, so a new version that hangs or panics while starting cannot take floed down.
    async fn start_slot(
        &mut self,
        slot: SlotName,
        muted: bool,
    ) -> Result<(R::Flow, VersionRecord), String> {
        let record = self.slots.verify(slot).map_err(|e| e.to_string())?;
        let dir = self.slots.dir(slot);
        let flow = self.start_verified(slot, &dir, &record, muted).await?;
        Ok((flow, record))
    }

    /// Starts a verified slot's flow. The start timeout is also the bound after which a node
    /// that holds a message without taking the next one counts as hung: both say how long a
    /// step of a new version may take before floed gives up on it.
    async fn start_verified(
        &mut self,
        slot: SlotName,
        dir: &Path,
        record: &VersionRecord,
        muted: bool,
    ) -> Result<R::Flow, String> {
        let limit = self.cfg.trial.start_timeout;
        let spec = StartSpec {
            slot_dir: dir,
            record,
            muted,
            slot,
            device: &self.device,
            stuck_after: limit,
        };
        let fut = AssertUnwindSafe(self.runner.start(spec)).catch_unwind();
        match tokio::time::timeout(limit, fut).await {
            Err(_) => Err(format!(
                "did not start within {} ms (hung)",
                limit.as_millis()
            )),
            Ok(Err(panic)) => Err(format!(
                "panicked while starting: {}",
                panic_message(&*panic)
            )),
            Ok(Ok(Err(e))) => Err(e.to_string()),
            Ok(Ok(Ok(flow))) => Ok(flow),
        }
    }

    async fn stop_flow(&mut self) {
        if let Some(flow) = self.flow.take() {
            let deadline = self.cfg.trial.stop_timeout;
            if AssertUnwindSafe(flow.stop(deadline))
                .catch_unwind()
                .await
                .is_err()
            {
                tracing::warn!("the flow panicked while stopping");
            }
        }
        self.running_version = None;
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

    async fn commit(&mut self) -> Result<Outcome, AgentError> {
        let Some(target) = self.lifecycle.target else {
            return Err(AgentError::Busy("trial without a target"));
        };
        let version = self.lifecycle.target_version.clone().unwrap_or_default();
        let elapsed = self
            .trial
            .as_ref()
            .map(|t| t.elapsed(Instant::now()))
            .unwrap_or_default();
        crash_point("commit:before");
        let now = now_ms();
        let next = Lifecycle {
            phase: Phase::Idle,
            last_good: Some(target),
            target: None,
            target_version: None,
            since_ms: now,
            trial_boots: Vec::new(),
        };
        let entry = self.audit(
            now,
            ACTOR_FLOED,
            "commit",
            "ok",
            &format!(
                "{target} ({version}) healthy for {}s; it is the last known good",
                elapsed.as_secs()
            ),
        );
        self.state.transition(&next, &[entry])?;
        self.lifecycle = next;
        self.trial = None;
        crash_point("commit:after");
        if let Some((name, release)) = self.release_on_commit.take()
            && let Err(e) = bundle::record_committed(&self.cfg, &name, release)
        {
            tracing::error!(error = %e, "could not record the committed release");
        }
        tracing::info!(slot = %target, %version, "committed");
        Ok(Outcome::Committed {
            slot: target,
            version,
        })
    }

    /// Rolls back to the last known good slot: stop the current flow, point `active` at the
    /// last known good, start it. Needs nothing from the network or from the failed version.
    async fn roll_back(&mut self, actor: &str, reason: &str) -> Result<Outcome, AgentError> {
        let from = self.lifecycle.target;
        let good = self.lifecycle.last_good;
        let now = now_ms();
        let mut rolling = self.lifecycle.clone();
        rolling.phase = Phase::RollingBack;
        rolling.since_ms = now;
        let started = self.audit(now, actor, "rollback", "started", reason);
        self.state.transition(&rolling, &[started])?;
        self.lifecycle = rolling;
        self.trial = None;
        crash_point("rollback:persisted");
        self.stop_flow().await;
        let mut outcome_detail = format!(
            "from {} to {}: {reason}",
            from.map_or("-", SlotName::as_str),
            good.map_or("nothing", SlotName::as_str)
        );
        let mut ok = true;
        if let Some(g) = good {
            self.slots.switch_active(g)?;
            crash_point("rollback:relinked");
            match self.start_slot(g, false).await {
                Ok((flow, record)) => {
                    self.flow = Some(flow);
                    self.running_version = Some(record.version);
                }
                Err(e) => {
                    ok = false;
                    outcome_detail.push_str(&format!("; the last known good failed to start: {e}"));
                }
            }
        }
        let now = now_ms();
        let next = Lifecycle {
            phase: Phase::Idle,
            last_good: good,
            target: None,
            target_version: None,
            since_ms: now,
            trial_boots: Vec::new(),
        };
        let entry = self.audit(
            now,
            actor,
            "rollback",
            if ok { "ok" } else { "failed" },
            &outcome_detail,
        );
        self.state.transition(&next, &[entry])?;
        self.lifecycle = next;
        self.window.reset();
        self.functional = Functional::NotRun;
        self.counters.rollbacks += 1;
        self.sample();
        tracing::warn!(reason, "rolled back");
        Ok(Outcome::RolledBack {
            slot: good,
            reason: reason.to_string(),
        })
    }

    /// The operator's rollback. On trial it ends the trial on the last known good slot. When
    /// idle, it returns to the previous version still held in the other slot (which nothing
    /// touched since), and that slot becomes the last known good.
    pub async fn rollback(&mut self, actor: &str, reason: &str) -> Result<Outcome, AgentError> {
        match self.lifecycle.phase {
            Phase::Trial | Phase::Switching => self.roll_back(actor, reason).await,
            Phase::Idle => {
                let Some(current) = self.lifecycle.last_good else {
                    return Err(AgentError::NoRollbackTarget(
                        "no version was ever committed".into(),
                    ));
                };
                let previous = current.other();
                let record = self.slots.verify(previous).map_err(|e| {
                    AgentError::NoRollbackTarget(format!(
                        "the previous slot {previous} is not usable: {e}"
                    ))
                })?;
                // Treat it as a rollback from `current` to `previous`.
                let mut l = self.lifecycle.clone();
                l.last_good = Some(previous);
                l.target = Some(current);
                l.target_version = self.running_version.clone();
                self.lifecycle = l;
                let out = self
                    .roll_back(actor, &format!("{reason} (back to {})", record.version))
                    .await?;
                Ok(out)
            }
            other => Err(AgentError::Busy(other.as_str())),
        }
    }

    /// Installs a signed `.floe` bundle: verified against the trust store and checked by the
    /// install decision before anything touches a slot. Its release is recorded (for
    /// anti-rollback) when the trial commits.
    pub async fn install_bundle(
        &mut self,
        path: &Path,
        actor: &str,
    ) -> Result<Option<Outcome>, AgentError> {
        if self.lifecycle.phase != Phase::Idle {
            return Err(AgentError::Busy(self.lifecycle.phase.as_str()));
        }
        let prepared = match bundle::prepare(path, &self.cfg, &self.device) {
            Ok(p) => p,
            Err(e) => {
                let entry = self.audit(now_ms(), actor, "verify", "failed", &e.to_string());
                self.state.audit(&entry)?;
                return Err(e.into());
            }
        };
        let slots = self.slots.clone();
        let record = prepared.record.clone();
        let name = prepared.manifest.name.clone();
        let release = prepared.manifest.release;
        self.release_on_commit = Some((name, release));
        let out = self
            .install_with(&record, actor, move |slot| {
                slots
                    .stage_with(slot, &prepared.record, |staging| {
                        bundle::fill(&prepared, staging)
                    })
                    .map(|_| ())
            })
            .await;
        if !matches!(out, Ok(None)) {
            self.release_on_commit = None;
        }
        out
    }

    /// Installs a staged directory (a version record and its files) through the whole
    /// lifecycle up to the start of the trial. The trial then ends in [`Agent::tick`].
    pub async fn install_dir(
        &mut self,
        source: &Path,
        actor: &str,
    ) -> Result<Option<Outcome>, AgentError> {
        let slots = self.slots.clone();
        let src = source.to_path_buf();
        let record = crate::slots::read_staged_record(source)?;
        self.install_with(&record, actor, move |slot| {
            slots.stage_from_dir(slot, &src).map(|_| ())
        })
        .await
    }

    /// Installs a version: `stage` fills the standby slot (it receives the slot name), then the
    /// smoke test, the switch and the start of the trial follow. An error before the switch
    /// leaves the device on its current version. If the new flow fails to start after the
    /// switch, the rollback happens at once and this returns its outcome; otherwise it returns
    /// `None` and the trial is running ([`Agent::on_trial`]).
    pub async fn install_with<F>(
        &mut self,
        record: &VersionRecord,
        actor: &str,
        stage: F,
    ) -> Result<Option<Outcome>, AgentError>
    where
        F: FnOnce(SlotName) -> Result<(), SlotError>,
    {
        if self.lifecycle.phase != Phase::Idle {
            return Err(AgentError::Busy(self.lifecycle.phase.as_str()));
        }
        let current = self.lifecycle.last_good;
        let target = current.map_or(SlotName::Blue, SlotName::other);
        let version = record.version.clone();

        // Stage.
        let now = now_ms();
        let mut l = self.lifecycle.clone();
        l.phase = Phase::Staging;
        l.target = Some(target);
        l.target_version = Some(version.clone());
        l.since_ms = now;
        let e = self.audit(
            now,
            actor,
            "stage",
            "started",
            &format!("{version} into {target}"),
        );
        self.state.transition(&l, &[e])?;
        self.lifecycle = l;
        crash_point("stage:persisted");
        if let Err(err) = stage(target) {
            self.abort_install(actor, "stage", &err.to_string(), true)?;
            return Err(err.into());
        }
        crash_point("stage:done");
        if let Err(reason) = self
            .record_staged_and_smoke(actor, target, &version)
            .await?
        {
            return Err(AgentError::Smoke { version, reason });
        }

        // Switch. The boot counter (empty) is persisted before anything changes.
        let now = now_ms();
        let mut l = self.lifecycle.clone();
        l.phase = Phase::Switching;
        l.since_ms = now;
        l.trial_boots = Vec::new();
        let detail = format!(
            "{} -> {target} ({version})",
            current.map_or("nothing", SlotName::as_str)
        );
        let e = self.audit(now, actor, "smoke", "ok", &format!("{version} in {target}"));
        let e2 = self.audit(now, actor, "switch", "started", &detail);
        self.state.transition(&l, &[e, e2])?;
        self.lifecycle = l;
        crash_point("switch:persisted");
        let record = match self.slots.verify(target) {
            Ok(r) => r,
            Err(e) => {
                // Changed on disk since staging: nothing was switched yet.
                self.abort_install(actor, "switch", &e.to_string(), false)?;
                return Err(e.into());
            }
        };
        self.switch_and_start_trial(actor, target, &record, &version, &detail)
            .await
    }

    /// After a successful stage, shared by `floed install` and coordinator directives: records
    /// the staged version (slot row, phase Smoke, audit) and runs the smoke test with the old
    /// flow still serving. A failed smoke test has already been aborted and audited when its
    /// reason is returned as `Ok(Err(reason))`.
    async fn record_staged_and_smoke(
        &mut self,
        actor: &str,
        target: SlotName,
        version: &str,
    ) -> Result<Result<(), String>, AgentError> {
        let now = now_ms();
        let mut l = self.lifecycle.clone();
        l.phase = Phase::Smoke;
        l.since_ms = now;
        let e = self.audit(
            now,
            actor,
            "stage",
            "ok",
            &format!("{version} staged and verified in {target}"),
        );
        self.state.set_slot(target, Some(version), now, None)?;
        self.state.transition(&l, &[e])?;
        self.lifecycle = l;
        crash_point("smoke:persisted");
        if let Err(reason) = self.smoke(target).await {
            self.abort_install(actor, "smoke", &reason, false)?;
            return Ok(Err(reason));
        }
        Ok(Ok(()))
    }

    /// The switch itself, shared by `floed install` and coordinator directives: stop the old
    /// flow, swap the `active` link, start the new flow from its verified slot, and begin the
    /// trial. Any failure after the old flow stopped rolls back to the last known good.
    /// The lifecycle row already says `Switching` (persisted by the caller).
    async fn switch_and_start_trial(
        &mut self,
        actor: &str,
        target: SlotName,
        record: &VersionRecord,
        version: &str,
        detail: &str,
    ) -> Result<Option<Outcome>, AgentError> {
        let dir = self.slots.dir(target);
        let gap_start = Instant::now();
        self.stop_flow().await;
        crash_point("switch:old-stopped");
        if let Err(e) = self.slots.switch_active(target) {
            // The old flow is stopped; the rollback restarts it from the last known good.
            let out = self
                .roll_back(
                    ACTOR_FLOED,
                    &format!("switching the active link failed: {e}"),
                )
                .await?;
            return Ok(Some(out));
        }
        let started = self.start_verified(target, &dir, record, false).await;
        let gap = gap_start.elapsed();
        match started {
            Ok(flow) => {
                self.flow = Some(flow);
                self.running_version = Some(version.to_string());
            }
            Err(reason) => {
                let out = self
                    .roll_back(ACTOR_FLOED, &format!("{version} failed to start: {reason}"))
                    .await?;
                return Ok(Some(out));
            }
        }
        crash_point("switch:started");
        self.counters.switches += 1;
        self.counters.last_switch_gap = Some(gap.as_secs_f64());
        self.window.reset();
        self.sample();

        // Trial.
        let now = now_ms();
        let mut l = self.lifecycle.clone();
        l.phase = Phase::Trial;
        l.since_ms = now;
        let e = self.audit(
            now,
            actor,
            "switch",
            "ok",
            &format!(
                "{detail}; gap {} us; trial of {}s",
                gap.as_micros(),
                self.cfg.trial.min_ready.as_secs()
            ),
        );
        self.state.transition(&l, &[e])?;
        self.lifecycle = l;
        self.trial = Some(TrialTracker::new(Instant::now()));
        crash_point("trial:started");
        Ok(None)
    }

    /// Ends an installation that failed before the switch: the device stays where it was.
    fn abort_install(
        &mut self,
        actor: &str,
        step: &str,
        reason: &str,
        forget: bool,
    ) -> Result<(), AgentError> {
        let now = now_ms();
        if forget && let Some(t) = self.lifecycle.target {
            // The slot's old content may be gone or partial; it holds nothing usable now.
            if let Err(e) = self.slots.clear(t) {
                tracing::warn!(error = %e, "could not empty the standby slot");
            }
            if let Err(e) = self.state.set_slot(t, None, now, None) {
                tracing::warn!(error = %e, "could not record the emptied standby slot");
            }
        }
        let next = Lifecycle {
            phase: Phase::Idle,
            last_good: self.lifecycle.last_good,
            target: None,
            target_version: None,
            since_ms: now,
            trial_boots: Vec::new(),
        };
        let e = self.audit(now, actor, step, "failed", reason);
        self.state.transition(&next, &[e])?;
        self.lifecycle = next;
        Ok(())
    }

    /// The smoke test: start the staged flow with outputs muted, inject the declared test
    /// input, require every declared output within the manifest's timeout, and require the
    /// flow to run without errors or restarts for the settle time.
    async fn smoke(&mut self, target: SlotName) -> Result<(), String> {
        let (mut flow, record) = self.start_slot(target, true).await?;
        let result = self.observe_smoke(&mut flow, &record).await;
        let deadline = self.cfg.trial.stop_timeout;
        if AssertUnwindSafe(flow.stop(deadline))
            .catch_unwind()
            .await
            .is_err()
        {
            tracing::warn!("the smoke-tested flow panicked while stopping");
        }
        self.functional = match &result {
            Ok(()) if record.smoke.is_empty() && record.smoke_expect.is_empty() => {
                Functional::NoTestInput
            }
            Ok(()) => Functional::Passed,
            Err(e) => Functional::Failed(e.clone()),
        };
        result
    }

    async fn observe_smoke(
        &self,
        flow: &mut R::Flow,
        record: &VersionRecord,
    ) -> Result<(), String> {
        // The manifest's timeout bounds the wait for expected outputs. It is capped (20 s) so
        // that a manifest cannot hold the main loop past the systemd watchdog.
        let expect_limit = record
            .smoke_timeout_ms
            .map_or(self.cfg.trial.smoke_timeout, Duration::from_millis)
            .min(Duration::from_millis(
                floe_wire::proto::manifest::MAX_SMOKE_TIMEOUT_MS,
            ));
        let start = Instant::now();
        for input in &record.smoke {
            let inject =
                AssertUnwindSafe(flow.inject(&input.node, input.payload.clone())).catch_unwind();
            match tokio::time::timeout(expect_limit, inject).await {
                Err(_) => return Err(format!("injecting into {} timed out", input.node)),
                Ok(Err(p)) => {
                    return Err(format!("panicked on test input: {}", panic_message(&*p)));
                }
                Ok(Ok(Err(e))) => return Err(e.to_string()),
                Ok(Ok(Ok(()))) => {}
            }
        }
        let settle = self.cfg.trial.smoke_timeout.min(Duration::from_millis(500));
        let mut pending: Vec<&crate::slots::SmokeInput> = record.smoke_expect.iter().collect();
        let mut seen = 0usize;
        let mut last_seen: Option<runner::SinkOutput> = None;
        let mut window = AppWindow::default();
        loop {
            for out in flow.drain_outputs(SMOKE_DRAIN_BATCH) {
                seen += 1;
                pending.retain(|want| {
                    !(want.node == out.node && payload_matches(&want.payload, &out.payload))
                });
                last_seen = Some(out);
            }
            let a = window.push(flow.snapshot());
            if !a.latest.running {
                return Err(a
                    .latest
                    .stopped_reason
                    .unwrap_or_else(|| "the flow stopped".into()));
            }
            if let Some((node, rate)) = &a.worst_error_rate {
                return Err(format!(
                    "node {node} failed on {:.0}% of its messages",
                    rate * 100.0
                ));
            }
            if a.restarts > 0 {
                return Err(format!("{} node restarts", a.restarts));
            }
            let elapsed = start.elapsed();
            if !pending.is_empty() && elapsed >= expect_limit {
                let want = pending[0];
                let last = last_seen.as_ref().map_or_else(
                    || "none".to_string(),
                    |o| format!("{} from {}", truncate(&o.payload.to_string(), 200), o.node),
                );
                return Err(format!(
                    "expected output {} from node {} not seen within {} ms ({} of {} expectations unmet; {seen} outputs seen, last: {last})",
                    truncate(&want.payload.to_string(), 200),
                    want.node,
                    expect_limit.as_millis(),
                    pending.len(),
                    record.smoke_expect.len(),
                ));
            }
            if pending.is_empty() && elapsed >= settle {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the flow (daemon shutdown). The lifecycle row is left as it is, so a trial
    /// resumes (and counts a restart) at the next start.
    pub async fn shutdown(mut self) {
        self.stop_flow().await;
    }
}

/// How many sink outputs the smoke test takes from the flow per look.
const SMOKE_DRAIN_BATCH: usize = 256;

/// Whether an output payload satisfies a smoke-test expectation: an expected object matches
/// an object that has every key given with a matching value (extra keys allowed, recursively);
/// any other expected value must be equal.
pub fn payload_matches(want: &serde_json::Value, got: &serde_json::Value) -> bool {
    match (want, got) {
        (serde_json::Value::Object(w), serde_json::Value::Object(g)) => w
            .iter()
            .all(|(k, wv)| g.get(k).is_some_and(|gv| payload_matches(wv, gv))),
        (serde_json::Value::Number(w), serde_json::Value::Number(g)) => w.as_f64() == g.as_f64(),
        _ => want == got,
    }
}

#[cfg(test)]
mod smoke_match_tests {
    use super::payload_matches;
    use serde_json::json;

    #[test]
    fn expected_objects_match_supersets_and_other_values_match_exactly() {
        let got = json!({"x": 21, "checked": "yes", "meta": {"a": 1, "b": 2}});
        assert!(payload_matches(&json!({"checked": "yes"}), &got));
        assert!(payload_matches(&json!({"x": 21.0, "meta": {"b": 2}}), &got));
        assert!(payload_matches(&json!({}), &got));
        assert!(!payload_matches(&json!({"checked": "no"}), &got));
        assert!(!payload_matches(&json!({"missing": null}), &got));
        assert!(!payload_matches(&json!({"meta": {"c": 3}}), &got));
        assert!(payload_matches(&json!([1, 2]), &json!([1, 2])));
        assert!(!payload_matches(&json!([1]), &json!([1, 2])));
        assert!(!payload_matches(&json!("21"), &json!(21)));
        assert!(payload_matches(&json!(2), &json!(2.0)));
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

#[cfg(test)]
mod tests;
