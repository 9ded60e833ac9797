//! What the agent does at start-up, before it runs anything: clean up after a crash, let
//! [`lifecycle::recover`] decide how to finish or undo the step that was interrupted, persist
//! that decision with its audit entries, and only then carry it out.
//!
//! The decision itself is a pure function of the persisted row, the `active` link and the
//! slots' hashes (see [`lifecycle`]); this file is the part with side effects, kept apart so
//! that the order "persist, then act" is visible in one place.

use std::time::Instant;

use super::lifecycle::{self, Recovery, TrialTracker};
use super::runner::FlowRunner;
use super::{ACTOR_FLOED, Agent, AgentError, now_ms};
use crate::crash::crash_point;
use crate::slots::SlotName;

impl<R: FlowRunner> Agent<R>
where
    R::Flow: std::fmt::Debug,
{
    /// Recovers from whatever a crash interrupted and starts the flow of the slot that should
    /// run (see the module documentation).
    pub(super) async fn recover(&mut self, now: i64) -> Result<(), AgentError> {
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
        let verify = move |s: SlotName| slots.verify(s).map(|_| ());
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
}
