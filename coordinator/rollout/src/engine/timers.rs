//! Deadlines and wakeups, as typed [`Timer`]s: deploy deadlines, unreachable health endpoints,
//! the fleet-wide health-check tick, the stage machine's deadline and a rollback's grace. What
//! a due timer does is the business of its owner (the device-level ones are handled with the
//! device reports in `events`); this file only keeps them and says which is next.
//!
//! Per-device timers live in two queues ordered by time (every entry is pushed at `now` plus a
//! fixed delay, and time never runs backwards in the engine), so the next one is always at the
//! front. An entry is not removed when its device settles; it is checked against the device's
//! record when it comes due and dropped if it is stale, which keeps arming a timer O(1).

use super::*;

/// Something the engine wants to be woken for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timer {
    /// `device` must confirm its directive (or its rollback) by `at`.
    Deploy { device: u32, at: Millis },
    /// `device`'s health endpoint has been unreachable since `since`; it is rolled back once
    /// that has lasted longer than [`UNREACHABLE_LIMIT`].
    Unreachable { device: u32, since: Millis },
    /// The next fleet-wide health check.
    HealthCheck { at: Millis },
    /// The stage machine's own deadline: the end of a soak, or the progress deadline of a
    /// gate, of the catch-up or of the completion gate.
    Stage { at: Millis },
    /// The end of a rollback's wait for offline devices.
    RollbackGrace { at: Millis },
}

impl Timer {
    /// When the timer is due.
    pub(super) fn due_at(self) -> Millis {
        match self {
            Timer::Deploy { at, .. }
            | Timer::HealthCheck { at }
            | Timer::Stage { at }
            | Timer::RollbackGrace { at } => at,
            Timer::Unreachable { since, .. } => since + UNREACHABLE_LIMIT + 1,
        }
    }
}

/// The per-device timer queues and the health-check tick.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Timers {
    /// Deploy deadlines, `(device, at)`.
    pub(super) deadlines: VecDeque<(u32, Millis)>,
    /// Unreachable health endpoints, `(device, since)`.
    pub(super) unreachable: VecDeque<(u32, Millis)>,
    /// The next health-check tick, while health checks run.
    pub(super) next_check: Option<Millis>,
}

impl Timers {
    /// Arms a deploy deadline for `device` at `at`.
    pub(super) fn deploy_by(&mut self, device: u32, at: Millis) {
        self.deadlines.push_back((device, at));
    }

    /// Starts watching `device`'s unreachable health endpoint, unreachable since `since`.
    pub(super) fn watch_unreachable(&mut self, device: u32, since: Millis) {
        self.unreachable.push_back((device, since));
    }

    /// Removes and returns the next per-device timer due at `now`: deploy deadlines first,
    /// then unreachable endpoints.
    pub(super) fn pop_due(&mut self, now: Millis) -> Option<Timer> {
        if let Some(&(device, at)) = self.deadlines.front()
            && at <= now
        {
            self.deadlines.pop_front();
            return Some(Timer::Deploy { device, at });
        }
        if let Some(&(device, since)) = self.unreachable.front() {
            let t = Timer::Unreachable { device, since };
            if t.due_at() <= now {
                self.unreachable.pop_front();
                return Some(t);
            }
        }
        None
    }

    /// Whether the health check is due at `now`; if so, the next one is set `interval` later.
    pub(super) fn health_check_due(&mut self, now: Millis, interval: Millis) -> bool {
        match self.next_check {
            Some(at) if at <= now => {
                self.next_check = Some(now.saturating_add(interval));
                true
            }
            Some(_) | None => false,
        }
    }

    /// The earliest timers of each kind kept here; the health check only if `checks` (health
    /// checks are suspended while paused or rolling back).
    pub(super) fn pending(&self, checks: bool) -> impl Iterator<Item = Timer> + '_ {
        let check = self
            .next_check
            .filter(|_| checks)
            .map(|at| Timer::HealthCheck { at });
        let deploy = self
            .deadlines
            .front()
            .map(|&(device, at)| Timer::Deploy { device, at });
        let unreachable = self
            .unreachable
            .front()
            .map(|&(device, since)| Timer::Unreachable { device, since });
        check.into_iter().chain(deploy).chain(unreachable)
    }

    /// Drops every timer (the deployment is over).
    pub(super) fn clear(&mut self) {
        self.deadlines.clear();
        self.unreachable.clear();
        self.next_check = None;
    }
}
