//! How a trial ends: the commit that makes the new version the last known good, the rollback
//! to the last known good, and the operator's rollback that also reaches the previous version
//! once the device is idle.
//!
//! A rollback needs nothing from the network or from the failed version: it stops the current
//! flow, points `active` at the last known good slot (which nothing touched since its own
//! trial) and starts it. Each step is persisted with its audit entry before it is carried out.

use std::time::Instant;

use super::runner::FlowRunner;
use super::{ACTOR_FLOED, Agent, AgentError, bundle, now_ms};
use crate::control::Outcome;
use crate::crash::crash_point;
use crate::health::Functional;
use crate::slots::{SlotError, SlotName};
use crate::state::{Lifecycle, Phase};

/// Why the operator's rollback has nothing to return to.
#[derive(Debug, thiserror::Error)]
pub enum NoRollbackTarget {
    /// No version ever passed a trial on this device.
    #[error("no version was ever committed")]
    NeverCommitted,
    /// The other slot does not hold a sound version.
    #[error("the previous slot {slot} is not usable: {source}")]
    Unusable {
        /// The slot.
        slot: SlotName,
        /// Why it is not usable.
        #[source]
        source: SlotError,
    },
}

impl<R: FlowRunner> Agent<R>
where
    R::Flow: std::fmt::Debug,
{
    pub(super) async fn commit(&mut self) -> Result<Outcome, AgentError> {
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
        let next = Lifecycle::idle(Some(target), now);
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
        if let Some((name, release)) = self.release_on_commit.take() {
            self.record_release(&name, release);
        }
        tracing::info!(slot = %target, %version, "committed");
        Ok(Outcome::Committed {
            slot: target,
            version,
        })
    }

    /// Rolls back to the last known good slot: stop the current flow, point `active` at the
    /// last known good, start it. Needs nothing from the network or from the failed version.
    pub(super) async fn roll_back(
        &mut self,
        actor: &str,
        reason: &str,
    ) -> Result<Outcome, AgentError> {
        let from = self.lifecycle.target;
        let good = self.lifecycle.last_good;
        let now = now_ms();
        let started = self.audit(now, actor, "rollback", "started", reason);
        self.enter_phase(Phase::RollingBack, now, &[started])?;
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
        let next = Lifecycle::idle(good, now);
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
                    return Err(NoRollbackTarget::NeverCommitted.into());
                };
                let previous = current.other();
                let record =
                    self.slots
                        .verify(previous)
                        .map_err(|source| NoRollbackTarget::Unusable {
                            slot: previous,
                            source,
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

    /// Records a committed release so an older one is refused later (anti-rollback). A
    /// failure is logged, not returned: the version is committed either way, and only the
    /// protection against going back to an older release is weaker until the next commit.
    pub(super) fn record_release(&self, name: &str, release: u64) {
        if let Err(e) = bundle::record_committed(&self.cfg, name, release) {
            tracing::error!(error = %e, "could not record the committed release");
        }
    }
}
