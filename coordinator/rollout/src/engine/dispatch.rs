//! Directive issuing under the parallelism limit: the slots devices take while a directive
//! is out, dispatch of the current stage, and catch-up of devices that come back online.

use super::*;

/// Directive issuing under the parallelism limit, catch-up of returning devices and commits.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Dispatch {
    /// The next position in the plan's order to dispatch.
    pub(super) cursor: u32,
    /// The furthest position ever dispatched (a rollback covers up to here).
    pub(super) high_water: u32,
    /// Devices of the current stage holding a slot.
    pub(super) stage_inflight: u32,
    /// Devices holding a slot.
    pub(super) inflight: u32,
    /// Devices back online, waiting for their directive.
    pub(super) catchup: VecDeque<u32>,
    /// Caught-up devices of stages already committed, waiting for their commit.
    pub(super) commits: VecDeque<u32>,
    /// The commit sweep's position in the plan's order.
    pub(super) commit_cursor: u32,
    /// Offline devices that still have work in this deployment.
    pub(super) offline_pending: u32,
}

impl Dispatch {
    /// Whether another directive may go out under `max_parallel` (0: no limit).
    pub(super) fn has_room(&self, max_parallel: u32) -> bool {
        let limit = match max_parallel {
            0 => u32::MAX,
            m => m,
        };
        self.inflight < limit
    }

    /// `dev` takes a slot (once); `stage` is the current stage.
    pub(super) fn take(&mut self, dev: &mut Dev, stage: u32) {
        if dev.flags & F_INFLIGHT == 0 {
            dev.flags |= F_INFLIGHT;
            self.inflight += 1;
            if dev.stage == stage {
                self.stage_inflight += 1;
            }
        }
    }

    /// `dev` gives its slot back, if it holds one; `stage` is the current stage.
    pub(super) fn release(&mut self, dev: &mut Dev, stage: u32) {
        if dev.flags & F_INFLIGHT != 0 {
            dev.flags &= !F_INFLIGHT;
            dev.deadline = 0;
            self.inflight -= 1;
            if dev.stage == stage && self.stage_inflight > 0 {
                self.stage_inflight -= 1;
            }
        }
    }

    /// A stage whose devices start at `start` in the plan's order begins.
    pub(super) fn start_stage(&mut self, start: u32) {
        self.stage_inflight = 0;
        self.cursor = start;
    }

    /// The next device of the current stage (which ends at `end`), if any is left.
    pub(super) fn next_in_stage(&mut self, order: &[u32], end: u32) -> Option<u32> {
        if self.cursor >= end {
            return None;
        }
        let d = order[self.cursor as usize];
        self.cursor += 1;
        self.high_water = self.high_water.max(self.cursor);
        Some(d)
    }

    /// Whether the current stage has dispatched all its devices and they have all settled.
    pub(super) fn stage_settled(&self, end: u32) -> bool {
        self.cursor >= end && self.stage_inflight == 0
    }

    /// One past the furthest position dispatched so far.
    pub(super) fn dispatched_end(&self) -> u32 {
        self.high_water.max(self.cursor)
    }

    /// Queues `d` for catch-up, once.
    pub(super) fn queue_catchup(&mut self, d: u32, dev: &mut Dev) {
        if dev.flags & F_CATCHUP_QUEUED == 0 {
            dev.flags |= F_CATCHUP_QUEUED;
            self.catchup.push_back(d);
        }
    }

    /// The next device waiting for catch-up.
    pub(super) fn pop_catchup(&mut self, devs: &mut [Dev]) -> Option<u32> {
        let d = self.catchup.pop_front()?;
        devs[d as usize].flags &= !F_CATCHUP_QUEUED;
        Some(d)
    }

    /// Queues `d` for its commit, once.
    pub(super) fn queue_commit(&mut self, d: u32, dev: &mut Dev) {
        if dev.flags & F_COMMIT_QUEUED == 0 {
            dev.flags |= F_COMMIT_QUEUED;
            self.commits.push_back(d);
        }
    }

    /// The next device waiting for its commit.
    pub(super) fn pop_commit(&mut self, devs: &mut [Dev]) -> Option<u32> {
        let d = self.commits.pop_front()?;
        devs[d as usize].flags &= !F_COMMIT_QUEUED;
        Some(d)
    }

    /// Counts a device's change between pending-offline (`was`) and not (`is`).
    pub(super) fn offline_changed(&mut self, was: bool, is: bool) {
        if was && !is {
            self.offline_pending -= 1;
        } else if !was && is {
            self.offline_pending += 1;
        }
    }

    /// Whether devices are still waited for: offline with work left, or queued for catch-up
    /// or commit.
    pub(super) fn waiting(&self) -> bool {
        self.offline_pending > 0 || !self.catchup.is_empty() || !self.commits.is_empty()
    }
}

impl Rollout {
    /// Sends `d` its current directive again, with the same generation.
    pub(super) fn resend(&mut self, d: u32) {
        let dev = &self.devs[d as usize];
        let Some(kind) = dev.phase.current_directive() else {
            return;
        };
        let generation = dev.generation;
        self.queue.push_back(Action::Directive {
            device: d,
            generation,
            kind,
            cause: None,
        });
    }

    /// Marks a device as taking a parallelism slot with a deploy deadline.
    pub(super) fn take_slot(&mut self, d: u32) {
        self.dispatch
            .take(&mut self.devs[d as usize], self.machine.stage);
        self.arm_deadline(d);
    }

    /// Releases a device's slot (settled, failed or gone offline).
    pub(super) fn release_slot(&mut self, d: u32) {
        self.dispatch
            .release(&mut self.devs[d as usize], self.machine.stage);
    }

    /// Whether another directive may go out under the strategy's parallelism limit.
    pub(super) fn has_room(&self) -> bool {
        self.dispatch.has_room(self.plan.config.max_parallel)
    }

    /// Queues `d`, back online, for its current directive or its stage's, if it is due one.
    pub(super) fn queue_catchup(&mut self, d: u32) {
        let dev = &self.devs[d as usize];
        let due = match dev.phase {
            DevPhase::Idle => {
                dev.stage <= self.machine.stage
                    && self.machine.started_at.is_some()
                    && self.sweeps.rollback.is_none()
            }
            DevPhase::Staging
            | DevPhase::Staged
            | DevPhase::Switching
            | DevPhase::Switched
            | DevPhase::RollingBack => true,
            DevPhase::Verified
            | DevPhase::Committed
            | DevPhase::Failed
            | DevPhase::RolledBack
            | DevPhase::Quarantined
            | DevPhase::Skipped => false,
        };
        if due {
            self.dispatch.queue_catchup(d, &mut self.devs[d as usize]);
        }
    }

    /// One unit of dispatch work outside the sweeps: a queued commit of a caught-up device,
    /// a returning device's catch-up, or the next device of the current stage. Returns
    /// whether it did anything.
    pub(super) fn dispatch_step(&mut self) -> bool {
        if self.machine.status != DeploymentStatus::Pending
            && let Some(d) = self.dispatch.pop_commit(&mut self.devs)
        {
            if self.devs[d as usize].phase == DevPhase::Verified {
                self.set_phase(d, DevPhase::Committed);
                self.directive(d, DirectiveKind::Commit);
            }
            return true;
        }
        if self.machine.status != DeploymentStatus::Running || !self.has_room() {
            return false;
        }
        if let Some(d) = self.dispatch.pop_catchup(&mut self.devs) {
            self.dispatch_catchup(d);
            return true;
        }
        if self.machine.phase == Phase::Dispatching {
            let end = self.plan.stages[self.machine.stage as usize].end;
            if let Some(d) = self.dispatch.next_in_stage(&self.plan.order, end) {
                self.dispatch_device(d);
                return true;
            }
        }
        false
    }

    /// Sends `d`, the next device of the current stage, the stage's first directive (an
    /// offline device is skipped and caught up when it returns).
    pub(super) fn dispatch_device(&mut self, d: u32) {
        let mode = self.plan.stages[self.machine.stage as usize].mode;
        self.devs[d as usize].stage = self.machine.stage;
        let dev = &self.devs[d as usize];
        if dev.flags & F_OFFLINE != 0 {
            // Skip and queue (001 offline_device_policy): caught up when it returns.
            return;
        }
        match dev.phase {
            DevPhase::Staged => {
                if mode == StageMode::SwitchOnly {
                    self.take_slot(d);
                    self.set_phase(d, DevPhase::Switching);
                    self.directive(d, DirectiveKind::Switch);
                }
            }
            DevPhase::Idle => {
                self.take_slot(d);
                self.set_phase(d, DevPhase::Staging);
                self.directive(d, DirectiveKind::Stage);
            }
            DevPhase::Staging
            | DevPhase::Switching
            | DevPhase::Switched
            | DevPhase::Verified
            | DevPhase::Committed
            | DevPhase::Failed
            | DevPhase::RollingBack
            | DevPhase::RolledBack
            | DevPhase::Quarantined
            | DevPhase::Skipped => {}
        }
    }

    /// Sends `d`, back online, what it is due.
    pub(super) fn dispatch_catchup(&mut self, d: u32) {
        let dev = &self.devs[d as usize];
        if dev.flags & F_OFFLINE != 0 {
            return;
        }
        match dev.phase {
            DevPhase::Idle if dev.stage <= self.machine.stage => {
                self.take_slot(d);
                self.set_phase(d, DevPhase::Staging);
                self.directive(d, DirectiveKind::Stage);
            }
            DevPhase::Staged => {
                // Blue-green: a device staged before it went away; switch it if the stage that
                // switches it (its canary or wave) has dispatched it already.
                let switch = self.plan.stages[dev.stage as usize].mode != StageMode::StageOnly;
                if switch {
                    self.take_slot(d);
                    self.set_phase(d, DevPhase::Switching);
                    self.directive(d, DirectiveKind::Switch);
                }
            }
            DevPhase::Staging | DevPhase::Switching | DevPhase::Switched => {
                self.take_slot(d);
                self.resend(d);
            }
            DevPhase::RollingBack => {
                self.arm_deadline(d);
                self.resend(d);
            }
            DevPhase::Idle
            | DevPhase::Verified
            | DevPhase::Committed
            | DevPhase::Failed
            | DevPhase::RolledBack
            | DevPhase::Quarantined
            | DevPhase::Skipped => {}
        }
    }
}
