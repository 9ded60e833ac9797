//! The sweeps that walk the fleet lazily, one device per `poll_action`: the rollback sweep
//! (fleet, wave or abort), the commit sweep after a passed gate, and the final sweep that
//! writes every target's last status.

use super::*;

/// A rollback under way: it walks the plan's order from `cursor` to `end`, one device per
/// step under the parallelism limit, then waits for the rollbacks it sent to settle (offline
/// devices until `grace_until`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct RollbackSweep {
    /// What it covers.
    pub(super) scope: Scope,
    /// The next position in the plan's order.
    pub(super) cursor: u32,
    /// One past the last position it covers.
    pub(super) end: u32,
    /// Devices waiting for their `RolledBack` report.
    pub(super) waiting: u32,
    /// Until when offline devices are waited for.
    pub(super) grace_until: Millis,
    /// Why it started (the deployment's status reason when it ends).
    pub(super) reason: String,
}

impl RollbackSweep {
    /// The next device to sweep, if the walk is not over.
    fn next(&mut self, order: &[u32]) -> Option<u32> {
        if self.cursor >= self.end {
            return None;
        }
        let d = order[self.cursor as usize];
        self.cursor += 1;
        Some(d)
    }

    /// Whether the walk is over.
    fn walked(&self) -> bool {
        self.cursor >= self.end
    }

    /// The sweep waits for `dev`'s rollback to settle (counted once).
    fn wait_for(&mut self, dev: &mut Dev) {
        if dev.flags & F_SWEEP_WAIT == 0 {
            dev.flags |= F_SWEEP_WAIT;
            self.waiting += 1;
        }
    }

    /// Whether the sweep can end at `now`: nothing left to wait for, or the grace is over.
    fn finished(&self, now: Millis) -> bool {
        self.walked() && (self.waiting == 0 || now >= self.grace_until)
    }
}

/// The sweeps' state: the rollback under way, if any, and the final sweep's position.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Sweeps {
    pub(super) rollback: Option<RollbackSweep>,
    pub(super) final_cursor: u32,
}

impl Rollout {
    /// Starts a rollback of `scope`; the sweep runs lazily from `poll_action`.
    pub(super) fn start_rollback(&mut self, scope: Scope, reason: String) {
        let (start, end) = match scope {
            Scope::Stage(s) => {
                let spec = &self.plan.stages[s as usize];
                (spec.start, spec.end)
            }
            Scope::All | Scope::Uncommitted => (0, self.dispatch.dispatched_end()),
        };
        if let Scope::Stage(s) = scope {
            self.machine.stages[s as usize].rolled_back = true;
        } else {
            for (i, r) in self.machine.stages.iter_mut().enumerate() {
                if i as u32 <= self.machine.stage && r.started_at.is_some() && scope == Scope::All {
                    r.rolled_back = true;
                }
            }
        }
        let what = match scope {
            Scope::All => "full fleet rollback",
            Scope::Stage(_) => "wave rollback",
            Scope::Uncommitted => "abort: rolling back uncommitted devices",
        };
        self.audit(format!("{what}: {reason}"));
        self.sweeps.rollback = Some(RollbackSweep {
            scope,
            cursor: start,
            end,
            waiting: 0,
            grace_until: self.now.saturating_add(self.plan.config.offline_grace),
            reason,
        });
        // A pause does not stop a rollback: directives to go back are always sent.
        if self.machine.status == DeploymentStatus::Paused {
            self.set_status(DeploymentStatus::Running, format!("{what} in progress"));
        }
        self.machine.phase = Phase::RollingBack;
    }

    /// A device's rollback ended (rolled back, quarantined or failed): the sweep stops waiting
    /// for it if it was waiting.
    pub(super) fn rollback_settled(&mut self, d: u32) {
        let dev = &mut self.devs[d as usize];
        if dev.flags & F_SWEEP_WAIT == 0 {
            return;
        }
        dev.flags &= !F_SWEEP_WAIT;
        if let Some(rb) = &mut self.sweeps.rollback {
            rb.waiting = rb.waiting.saturating_sub(1);
        }
    }

    /// One step of the rollback sweep. Returns whether it did anything.
    pub(super) fn rollback_step(&mut self) -> bool {
        let Some(scope) = self.sweeps.rollback.as_ref().map(|rb| rb.scope) else {
            return false;
        };
        // Devices that return during a rollback get their rollback directive again.
        if let Some(d) = self.dispatch.pop_catchup(&mut self.devs) {
            if self.devs[d as usize].phase == DevPhase::RollingBack {
                self.resend(d);
            }
            return true;
        }
        if self.sweeps.rollback.as_ref().is_some_and(|rb| !rb.walked()) {
            if !self.has_room() {
                return false;
            }
            let order = &self.plan.order;
            if let Some(d) = self.sweeps.rollback.as_mut().and_then(|rb| rb.next(order)) {
                self.sweep_device(d, scope);
            }
            return true;
        }
        let now = self.now;
        match self.sweeps.rollback.take() {
            Some(rb) if rb.finished(now) => {
                self.finish_rollback(rb);
                true
            }
            other => {
                self.sweeps.rollback = other;
                false
            }
        }
    }

    /// Rolls `d` back if the sweep's scope covers it.
    fn sweep_device(&mut self, d: u32, scope: Scope) {
        let dev = &self.devs[d as usize];
        let phase = dev.phase;
        // A device already rolling back on its own account (a device-level rollback that
        // started before the sweep) gets no second directive, but the sweep waits for it,
        // so the deployment does not end while it is still on the new version.
        if phase == DevPhase::RollingBack {
            self.sweep_waits_for(d);
            return;
        }
        // In blue-green a device staged but never switched has nothing to switch back (its
        // stage is the staging one, or the canary or wave that was to switch it).
        if phase == DevPhase::Staged && self.plan.stages[dev.stage as usize].mode != StageMode::Full
        {
            self.release_slot(d);
            self.set_phase(d, DevPhase::RolledBack);
            return;
        }
        if scope.covers(phase) {
            self.release_slot(d);
            self.devs[d as usize].flags &= !F_QUARANTINE_ON_ROLLBACK;
            self.set_phase(d, DevPhase::RollingBack);
            self.directive(d, DirectiveKind::Rollback);
            if self.devs[d as usize].flags & F_OFFLINE == 0 {
                self.take_slot(d);
            }
            self.sweep_waits_for(d);
        } else if phase == DevPhase::Idle && matches!(scope, Scope::Stage(_)) {
            self.mark_skipped_offline(d);
            self.set_phase(d, DevPhase::Skipped);
        }
    }

    /// Remembers that a device about to be skipped is offline (unreachable), before the
    /// final sweep clears its offline bit.
    fn mark_skipped_offline(&mut self, d: u32) {
        let dev = &mut self.devs[d as usize];
        if dev.flags & F_OFFLINE != 0 {
            dev.flags |= F_SKIPPED_OFFLINE;
        }
    }

    fn sweep_waits_for(&mut self, d: u32) {
        if let Some(rb) = &mut self.sweeps.rollback {
            rb.wait_for(&mut self.devs[d as usize]);
        }
    }

    /// The rollback is over (or the grace for offline devices has passed): the deployment
    /// ends rolled back or failed, or, after a wave rollback, pauses for a human.
    fn finish_rollback(&mut self, rb: RollbackSweep) {
        let count = self.machine.stages.iter().filter(|s| s.rolled_back).count();
        match rb.scope {
            Scope::All => {
                self.audit(format!(
                    "full fleet rollback complete ({count} stages rolled back)"
                ));
                self.set_status(DeploymentStatus::RolledBack, rb.reason);
                self.machine.phase = Phase::Finalizing;
                self.sweeps.final_cursor = 0;
            }
            Scope::Uncommitted => {
                self.set_status(DeploymentStatus::Failed, rb.reason);
                self.machine.phase = Phase::Finalizing;
                self.sweeps.final_cursor = 0;
            }
            Scope::Stage(s) => {
                self.machine.stages[s as usize].verdict = Some(Verdict::Fail);
                self.machine.stages[s as usize].ended_at = Some(self.now);
                self.machine.phase = Phase::StageDone;
                let name = self.stage_name(s);
                let reason = format!(
                    "{name} rolled back ({}); a human decides: resume continues with the next \
                     stage, rollback rolls back everything, abort ends the deployment",
                    rb.reason
                );
                self.audit(format!("{name} rolled back; halted for a human decision"));
                self.set_status(DeploymentStatus::Paused, reason);
            }
        }
    }

    /// One step of the commit sweep after the current stage's gate passed.
    pub(super) fn commit_step(&mut self) -> bool {
        let spec = &self.plan.stages[self.machine.stage as usize];
        if self.dispatch.commit_cursor < spec.end {
            let d = self.plan.order[self.dispatch.commit_cursor as usize];
            self.dispatch.commit_cursor += 1;
            if self.devs[d as usize].phase == DevPhase::Verified {
                self.set_phase(d, DevPhase::Committed);
                self.directive(d, DirectiveKind::Commit);
            }
            return true;
        }
        let s = self.machine.stage;
        if self.plan.stages[s as usize].approval_after
            && self.machine.stage + 1 < self.plan.stages.len() as u32
        {
            self.machine.phase = Phase::AwaitingApproval;
            let name = self.stage_name(s);
            self.audit(format!("{name} passed; waiting for approval"));
            self.queue.push_back(Action::ApprovalRequired { stage: s });
        } else {
            self.machine.phase = Phase::StageDone;
        }
        true
    }

    /// One step of the final sweep, which gives every target its last status.
    pub(super) fn final_step(&mut self) -> bool {
        if self.sweeps.final_cursor < self.devs.len() as u32 {
            let d = self.sweeps.final_cursor;
            self.sweeps.final_cursor += 1;
            let p = self.devs[d as usize].phase;
            if !status_of(p, 0).is_terminal() || self.devs[d as usize].flags & F_OFFLINE != 0 {
                // Devices on the new version keep it (they passed the fleet's gates or, after
                // an abort, were committed); everything else never got it.
                let to = match p {
                    DevPhase::Verified | DevPhase::Switched | DevPhase::Committed => {
                        DevPhase::Committed
                    }
                    DevPhase::RollingBack
                    | DevPhase::Staging
                    | DevPhase::Staged
                    | DevPhase::Switching
                    | DevPhase::Idle => DevPhase::Skipped,
                    DevPhase::Failed
                    | DevPhase::RolledBack
                    | DevPhase::Quarantined
                    | DevPhase::Skipped => p,
                };
                self.release_slot(d);
                if to == DevPhase::Skipped {
                    self.mark_skipped_offline(d);
                }
                self.set_phase(d, to);
                if to == DevPhase::Committed && p != DevPhase::Committed {
                    self.directive(d, DirectiveKind::Commit);
                }
                let was_pending = self.devs[d as usize].pending_offline();
                self.devs[d as usize].flags &= !F_OFFLINE;
                self.dispatch.offline_changed(was_pending, false);
                self.emit_status(d);
            }
            return true;
        }
        self.machine.phase = Phase::Done;
        self.timers.clear();
        self.dispatch.catchup.clear();
        let s = self.machine.status;
        self.audit(format!("deployment ended: {}", s.as_str()));
        true
    }
}
