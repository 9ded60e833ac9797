//! Installing a version: stage it into the standby slot, smoke-test it beside the live flow,
//! switch to it, and start its trial.
//!
//! `floed install` (a staged directory or a signed `.floe` bundle) comes in through
//! [`Agent::install_with`]; a coordinator directive stages and switches in two directives but
//! reuses the same persisted steps from here ([`Agent::persist_staging`],
//! [`Agent::record_staged_and_smoke`], [`Agent::switch_and_start_trial`],
//! [`Agent::abort_install`]), so both paths have the same crash safety. Every step is written
//! to the state database with its audit entry before it is carried out; an error before the
//! switch leaves the device on its current version.

use std::path::Path;
use std::time::Instant;

use super::lifecycle::TrialTracker;
use super::runner::FlowRunner;
use super::smoke::SmokeError;
use super::{ACTOR_FLOED, Agent, AgentError, bundle, now_ms};
use crate::control::Outcome;
use crate::crash::crash_point;
use crate::slots::{SlotError, SlotName, VersionRecord, read_staged_record};
use crate::state::{Lifecycle, Phase};

impl<R: FlowRunner> Agent<R>
where
    R::Flow: std::fmt::Debug,
{
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
    ///
    /// Nothing about such a directory is signed, so it is refused (and the refusal audited)
    /// unless the developer setting `dev.allow_unsigned_install` is on; each use is audited.
    pub async fn install_dir(
        &mut self,
        source: &Path,
        actor: &str,
    ) -> Result<Option<Outcome>, AgentError> {
        if !self.cfg.dev.allow_unsigned_install {
            let err = AgentError::UnsignedRefused(source.to_path_buf());
            let entry = self.audit(now_ms(), actor, "install", "refused", &err.to_string());
            self.state.audit(&entry)?;
            return Err(err);
        }
        let entry = self.audit(
            now_ms(),
            actor,
            "install",
            "unsigned",
            &format!(
                "unsigned directory {} installed under the developer setting dev.allow_unsigned_install",
                source.display()
            ),
        );
        self.state.audit(&entry)?;
        let slots = self.slots.clone();
        let src = source.to_path_buf();
        let record = read_staged_record(source)?;
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

        self.persist_staging(actor, target, &version)?;
        if let Err(err) = stage(target) {
            self.abort_install(actor, "stage", &err.to_string(), true)?;
            return Err(err.into());
        }
        crash_point("stage:done");
        if let Err(reason) = self
            .record_staged_and_smoke(actor, target, &version)
            .await?
        {
            return Err(AgentError::Smoke {
                version,
                reason: Box::new(reason),
            });
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

    /// The first persisted step of an installation: the lifecycle row says `Staging` into
    /// `target`, with its audit entry, before anything touches the slot. Shared by
    /// `floed install` and coordinator directives.
    pub(super) fn persist_staging(
        &mut self,
        actor: &str,
        target: SlotName,
        version: &str,
    ) -> Result<(), AgentError> {
        let now = now_ms();
        let mut l = self.lifecycle.clone();
        l.phase = Phase::Staging;
        l.target = Some(target);
        l.target_version = Some(version.to_string());
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
        Ok(())
    }

    /// After a successful stage, shared by `floed install` and coordinator directives: records
    /// the staged version (slot row, phase Smoke, audit) and runs the smoke test with the old
    /// flow still serving. A failed smoke test has already been aborted and audited when its
    /// reason is returned as `Ok(Err(reason))`.
    pub(super) async fn record_staged_and_smoke(
        &mut self,
        actor: &str,
        target: SlotName,
        version: &str,
    ) -> Result<Result<(), SmokeError>, AgentError> {
        let now = now_ms();
        let e = self.audit(
            now,
            actor,
            "stage",
            "ok",
            &format!("{version} staged and verified in {target}"),
        );
        self.state.set_slot(target, Some(version), now, None)?;
        self.enter_phase(Phase::Smoke, now, &[e])?;
        crash_point("smoke:persisted");
        if let Err(reason) = self.smoke(target).await {
            self.abort_install(actor, "smoke", &reason.to_string(), false)?;
            return Ok(Err(reason));
        }
        Ok(Ok(()))
    }

    /// The switch itself, shared by `floed install` and coordinator directives: stop the old
    /// flow, swap the `active` link, start the new flow from its verified slot, and begin the
    /// trial. Any failure after the old flow stopped rolls back to the last known good.
    /// The lifecycle row already says `Switching` (persisted by the caller).
    pub(super) async fn switch_and_start_trial(
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
        self.enter_phase(Phase::Trial, now, &[e])?;
        self.trial = Some(TrialTracker::new(Instant::now()));
        crash_point("trial:started");
        Ok(None)
    }

    /// Ends an installation that failed before the switch: the device stays where it was.
    pub(super) fn abort_install(
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
        let next = Lifecycle::idle(self.lifecycle.last_good, now);
        let e = self.audit(now, actor, step, "failed", reason);
        self.state.transition(&next, &[e])?;
        self.lifecycle = next;
        Ok(())
    }
}
