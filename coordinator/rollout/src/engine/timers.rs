//! The timeout sweeps: deploy deadlines, unreachable health endpoints and the fleet-wide
//! health-check tick, all processed before any input at its `now`.

use super::*;

/// Deadlines and wakeups.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Timers {
    pub(super) deadlines: VecDeque<(u32, Millis)>,
    pub(super) unreachable: VecDeque<(u32, Millis)>,
    pub(super) next_check: Option<Millis>,
}

impl Rollout {
    /// Processes every timer due at `self.now`.
    pub(super) fn run_timers(&mut self) {
        let now = self.now;
        while let Some((d, deadline)) = self.timers.deadlines.front().copied() {
            if deadline > now {
                break;
            }
            self.timers.deadlines.pop_front();
            let dev = &self.devs[d as usize];
            let watched = dev.flags & F_INFLIGHT != 0 || dev.phase == DevPhase::RollingBack;
            if dev.deadline == deadline && watched && dev.flags & F_OFFLINE == 0 {
                if dev.phase == DevPhase::RollingBack {
                    // A rollback that does not report back: the device is failed.
                    self.release_slot(d);
                    self.set_phase(d, DevPhase::Failed);
                    self.rollback_settled(d);
                } else if dev.phase.in_flight() {
                    self.release_slot(d);
                    self.devs[d as usize].flags |= F_QUARANTINE_ON_ROLLBACK;
                    self.set_phase(d, DevPhase::Failed);
                    self.directive_because(
                        d,
                        DirectiveKind::Rollback,
                        Some(RollbackCause::DeployTimeout),
                    );
                    self.count_failure(d);
                }
            }
        }
        while let Some((d, since)) = self.timers.unreachable.front().copied() {
            if since + UNREACHABLE_LIMIT >= now {
                break;
            }
            self.timers.unreachable.pop_front();
            let dev = &self.devs[d as usize];
            if dev.flags & F_UNREACHABLE != 0
                && dev.unreachable_since == since
                && dev.phase.active()
            {
                self.devs[d as usize].flags &= !F_UNREACHABLE;
                self.device_rollback(d, RollbackCause::HealthUnreachable);
            }
        }
        if let Some(c) = self.timers.next_check
            && c <= now
            && self.machine.status == DeploymentStatus::Running
        {
            let interval = self.plan.config.health_check_interval;
            self.timers.next_check = Some(now + interval);
            if self.machine.status == DeploymentStatus::Running && self.sweeps.rollback.is_none() {
                self.fleet_triggers(true);
            }
        }
    }
}
