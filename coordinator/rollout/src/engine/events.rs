//! What happens to one device: its reports (what each means for its phase), the device-level
//! triggers (crash loop, memory leak, unhealthy, health endpoint unreachable, deploy timeout)
//! that roll it back and quarantine it, and the timeout sweep that runs before every input and
//! fires those of its timers that are due (and the fleet-wide health check).

use super::*;

impl Rollout {
    pub(super) fn on_device(&mut self, d: u32, event: DeviceEvent) {
        let phase = self.devs[d as usize].phase;
        match event {
            DeviceEvent::Offline => {
                let dev = &mut self.devs[d as usize];
                if dev.flags & F_OFFLINE != 0 {
                    return;
                }
                dev.flags |= F_OFFLINE;
                let is_pending = dev.pending_offline();
                self.dispatch.offline_changed(false, is_pending);
                // A rollback directive stands while the device is away; it is re-sent when the
                // device returns, like any other current directive.
                self.release_slot(d);
                self.drop_metrics(d);
                self.emit_status(d);
            }
            DeviceEvent::Online => {
                let dev = &mut self.devs[d as usize];
                if dev.flags & F_OFFLINE == 0 {
                    return;
                }
                let was_pending = dev.pending_offline();
                dev.flags &= !F_OFFLINE;
                self.dispatch.offline_changed(was_pending, false);
                self.emit_status(d);
                self.queue_catchup(d);
            }
            DeviceEvent::Staged => {
                if phase != DevPhase::Staging {
                    return;
                }
                self.set_phase(d, DevPhase::Staged);
                // A device stays staged until the stage that switches it has dispatched it
                // (blue-green: its canary or wave; until then its stage is the staging one).
                let stage_only = self
                    .plan
                    .stages
                    .get(self.devs[d as usize].stage as usize)
                    .is_some_and(|s| s.mode == StageMode::StageOnly);
                if stage_only || self.sweeps.rollback.is_some() {
                    self.release_slot(d);
                } else {
                    self.set_phase(d, DevPhase::Switching);
                    self.directive(d, DirectiveKind::Switch);
                }
            }
            DeviceEvent::Switched => {
                if phase == DevPhase::Switching || phase == DevPhase::Staged {
                    let dev = &mut self.devs[d as usize];
                    dev.restarts = 0;
                    dev.restart_at = [0; CRASH_LOOP_RESTARTS];
                    dev.memory0 = 0.0;
                    self.set_phase(d, DevPhase::Switched);
                }
            }
            DeviceEvent::Healthy => {
                self.devs[d as usize].flags &= !F_UNREACHABLE;
                if phase == DevPhase::Switched {
                    self.verified(d);
                }
            }
            DeviceEvent::Unhealthy => {
                if phase.active() {
                    self.device_rollback(d, RollbackCause::Unhealthy);
                }
            }
            DeviceEvent::HealthUnreachable => {
                let dev = &mut self.devs[d as usize];
                if phase.active() && dev.flags & F_UNREACHABLE == 0 {
                    dev.flags |= F_UNREACHABLE;
                    dev.unreachable_since = self.now;
                    self.timers.watch_unreachable(d, self.now);
                }
            }
            DeviceEvent::Failed => match phase {
                DevPhase::Staging | DevPhase::Staged | DevPhase::Switching => {
                    self.release_slot(d);
                    self.set_phase(d, DevPhase::Failed);
                    self.count_failure(d);
                }
                DevPhase::Switched | DevPhase::Verified | DevPhase::Committed => {
                    self.device_rollback(d, RollbackCause::FailedAfterSwitch)
                }
                DevPhase::RollingBack => {
                    self.release_slot(d);
                    self.set_phase(d, DevPhase::Failed);
                    self.rollback_settled(d);
                }
                DevPhase::Idle
                | DevPhase::Failed
                | DevPhase::RolledBack
                | DevPhase::Quarantined
                | DevPhase::Skipped => {}
            },
            DeviceEvent::RolledBack => match phase {
                DevPhase::RollingBack => {
                    self.release_slot(d);
                    let q = self.devs[d as usize].flags & F_QUARANTINE_ON_ROLLBACK != 0;
                    self.set_phase(
                        d,
                        if q {
                            DevPhase::Quarantined
                        } else {
                            DevPhase::RolledBack
                        },
                    );
                    self.rollback_settled(d);
                }
                DevPhase::Switched
                | DevPhase::Verified
                | DevPhase::Committed
                | DevPhase::Switching => {
                    // The device rolled itself back (its own watchdog): it wins, and this is a
                    // failure of its stage.
                    self.release_slot(d);
                    self.set_phase(d, DevPhase::Quarantined);
                    self.count_failure(d);
                }
                DevPhase::Idle
                | DevPhase::Staging
                | DevPhase::Staged
                | DevPhase::Failed
                | DevPhase::RolledBack
                | DevPhase::Quarantined
                | DevPhase::Skipped => {}
            },
        }
    }

    pub(super) fn verified(&mut self, d: u32) {
        self.release_slot(d);
        self.set_phase(d, DevPhase::Verified);
        let dev = &self.devs[d as usize];
        if dev.stage < self.machine.stage {
            // A caught-up device of an earlier, already committed stage.
            self.dispatch.queue_commit(d, &mut self.devs[d as usize]);
        }
    }

    pub(super) fn device_rollback(&mut self, d: u32, why: RollbackCause) {
        self.release_slot(d);
        self.devs[d as usize].flags |= F_QUARANTINE_ON_ROLLBACK;
        self.set_phase(d, DevPhase::RollingBack);
        self.directive_because(d, DirectiveKind::Rollback, Some(why));
        // A device-level rollback is never held back by the parallelism limit (it is not a
        // deployment), but it has a deadline: a device that never confirms ends failed.
        if self.devs[d as usize].flags & F_OFFLINE == 0 {
            self.arm_deadline(d);
        }
        self.count_failure(d);
    }

    pub(super) fn on_health(&mut self, d: u32, r: HealthReport) {
        let now = self.now;
        let phase = self.devs[d as usize].phase;
        if !phase.active() {
            return;
        }
        if self.devs[d as usize].flags & F_OFFLINE != 0 {
            return;
        }
        self.drop_metrics(d);
        let dev = &mut self.devs[d as usize];
        dev.flags &= !F_UNREACHABLE;
        dev.error_rate = r.error_rate;
        dev.p95_ms = r.p95_ms;
        dev.memory_mb = r.memory_mb;
        // Crash loop: record the time of each new restart, keep the last three.
        let mut new_restarts = r.restarts.saturating_sub(dev.restarts);
        dev.restarts = dev.restarts.max(r.restarts);
        let mut restarted = false;
        while new_restarts > 0 {
            dev.restart_at.rotate_left(1);
            dev.restart_at[CRASH_LOOP_RESTARTS - 1] = now;
            new_restarts -= 1;
            restarted = true;
        }
        let crash_loop = dev.restart_at[0] != 0 && now - dev.restart_at[0] <= CRASH_LOOP_WINDOW;
        // Memory trend against an anchor: the first report after the switch, moved to the
        // newest report once it is the trend window (001: 30 min) old, so growth is judged
        // over the last 10 to 30 minutes, not diluted by a long flat start. Between a move
        // and the next 10 minutes the warning keeps its last value.
        let mut leak = false;
        let had_warn = dev.flags & F_MEM_WARN != 0;
        let mut warn = had_warn;
        if dev.memory0 <= 0.0 {
            dev.memory0 = r.memory_mb;
            dev.memory0_at = now;
        } else if now - dev.memory0_at >= 10 * MINUTE && dev.memory0 > 0.0 {
            let per10 = (f64::from(r.memory_mb) / f64::from(dev.memory0) - 1.0)
                * (10 * MINUTE) as f64
                / (now - dev.memory0_at) as f64;
            leak = per10 > MEMORY_LEAK_PER_10M;
            warn = per10 >= MEMORY_TREND_PER_10M;
            if now - dev.memory0_at >= self.plan.config.triggers.trend_window {
                dev.memory0 = r.memory_mb;
                dev.memory0_at = now;
            }
        }
        if warn && !had_warn {
            dev.flags |= F_MEM_WARN;
            self.health.mem_warn += 1;
        } else if !warn && had_warn {
            dev.flags &= !F_MEM_WARN;
            self.health.mem_warn -= 1;
        }
        if restarted {
            if self.health.restarts_recent.len() >= self.devs.len().max(16) {
                self.health.restarts_recent.pop_front();
            }
            self.health.restarts_recent.push_back((d, now));
        }
        if crash_loop {
            self.device_rollback(d, RollbackCause::CrashLoop);
            return;
        }
        if leak {
            self.device_rollback(d, RollbackCause::MemoryLeak);
            return;
        }
        if r.status == HealthStatus::Unhealthy {
            self.device_rollback(d, RollbackCause::Unhealthy);
            return;
        }
        if self.system_triggers(d, &r.system) {
            return;
        }
        self.record_for_gates(d, &r);
        self.add_metrics(d);
        if r.status == HealthStatus::Healthy && phase == DevPhase::Switched {
            self.verified(d);
        }
    }
}

impl Rollout {
    /// Processes every timer due at `self.now`.
    pub(super) fn run_timers(&mut self) {
        let now = self.now;
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                Timer::Deploy { device, at } => self.deploy_deadline(device, at),
                Timer::Unreachable { device, since } => self.unreachable_too_long(device, since),
                Timer::HealthCheck { .. } | Timer::Stage { .. } | Timer::RollbackGrace { .. } => {}
            }
        }
        if self.machine.status == DeploymentStatus::Running
            && self
                .timers
                .health_check_due(now, self.plan.config.health_check_interval)
            && self.sweeps.rollback.is_none()
        {
            self.apply_fleet_triggers(true);
        }
    }

    /// A deploy deadline came: a device still deploying (or rolling back) at its latest
    /// deadline, and online, has failed.
    fn deploy_deadline(&mut self, d: u32, at: Millis) {
        let dev = &self.devs[d as usize];
        let watched = dev.flags & F_INFLIGHT != 0 || dev.phase == DevPhase::RollingBack;
        if dev.deadline != at || !watched || dev.flags & F_OFFLINE != 0 {
            return;
        }
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

    /// A health endpoint stayed unreachable past the limit: the device is rolled back, unless
    /// it has answered since or is no longer on the new version.
    fn unreachable_too_long(&mut self, d: u32, since: Millis) {
        let dev = &self.devs[d as usize];
        if dev.flags & F_UNREACHABLE != 0 && dev.unreachable_since == since && dev.phase.active() {
            self.devs[d as usize].flags &= !F_UNREACHABLE;
            self.device_rollback(d, RollbackCause::HealthUnreachable);
        }
    }
}
