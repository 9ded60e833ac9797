//! Directive issuing under the parallelism limit: the slots devices take while a directive
//! is out, dispatch of the current stage, and catch-up of devices that come back online.

use super::*;

/// Directive issuing under the parallelism limit, catch-up of returning devices and commits.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Dispatch {
    pub(super) cursor: u32,
    pub(super) high_water: u32,
    pub(super) stage_inflight: u32,
    pub(super) inflight: u32,
    pub(super) catchup: VecDeque<u32>,
    pub(super) commits: VecDeque<u32>,
    pub(super) commit_cursor: u32,
    pub(super) offline_pending: u32,
}

impl Rollout {
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
        let dev = &mut self.devs[d as usize];
        if dev.flags & F_INFLIGHT == 0 {
            dev.flags |= F_INFLIGHT;
            self.dispatch.inflight += 1;
            if dev.stage == self.machine.stage {
                self.dispatch.stage_inflight += 1;
            }
        }
        self.arm_deadline(d);
    }

    /// Releases a device's slot (settled, failed or gone offline).
    pub(super) fn release_slot(&mut self, d: u32) {
        let dev = &mut self.devs[d as usize];
        if dev.flags & F_INFLIGHT != 0 {
            dev.flags &= !F_INFLIGHT;
            dev.deadline = 0;
            self.dispatch.inflight -= 1;
            if dev.stage == self.machine.stage && self.dispatch.stage_inflight > 0 {
                self.dispatch.stage_inflight -= 1;
            }
        }
    }

    pub(super) fn max_parallel(&self) -> u32 {
        match self.plan.config.max_parallel {
            0 => u32::MAX,
            m => m,
        }
    }

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
                // Blue-green: a device staged before it went away; switch it if the stage says so.
                let switch =
                    self.plan.stages[self.machine.stage as usize].mode != StageMode::StageOnly;
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
