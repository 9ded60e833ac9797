//! The rollout state machine.
//!
//! One [`Rollout`] is one deployment. Inputs go in through [`Rollout::handle_input`]; decisions
//! come out of [`Rollout::poll_action`]; [`Rollout::poll_timeout`] says when to call
//! `handle_input(now, Input::Tick)` next. Timers due at `now` are processed by every
//! `handle_input`, whatever the input, so a caller that is late with a tick loses nothing.
//!
//! Per device the engine keeps a small record (phase, status, generation, last metrics, the
//! times of the last three restarts). Directives carry a per-device generation that only grows,
//! which is the protocol's desired-state rule: a device that comes back from offline is simply
//! sent its current directive again.
//!
//! Lifecycle of a stage: dispatch (under the parallelism limit, offline devices skipped and
//! queued) → soak → gate (quorum, then the 001 checks over ALL devices deployed so far) →
//! commit → optional approval → next stage. Triggers (001 "Automatic Rollback Triggers") run
//! beside this: per device on every health report, per stage on every failure, fleet-wide on
//! every health-check tick.
//!
//! The output queue is bounded: an input that would push it past [`MAX_QUEUED_ACTIONS`] is
//! refused with [`RolloutError::Backlog`] until the caller drains `poll_action`. Work that is
//! proportional to the fleet (dispatch, commits, rollbacks, final statuses) is not queued at
//! all: it is produced lazily, one device at a time, as `poll_action` is called.

mod device;
mod persist;
mod types;

pub use types::{
    Action, Check, Command, DeploymentStatus, DeviceEvent, DirectiveKind, GateVerdict,
    HealthReport, HealthStatus, Input, RollbackCause, RolloutError, StageResult, StatusCounts,
    TargetStatus, Verdict,
};

use super::plan::{Breach, GateKind, Plan, StageKind, StageMode};
use super::{MINUTE, Millis};
use device::*;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// The most actions waiting in the output queue before inputs are refused.
pub const MAX_QUEUED_ACTIONS: usize = 65_536;
/// Crash loop: this many restarts ...
pub const CRASH_LOOP_RESTARTS: usize = 3;
/// ... within this window (001: restarts > 3 in 5 minutes; 003: 3+ restarts in 5 min).
pub const CRASH_LOOP_WINDOW: Millis = 5 * MINUTE;
/// Health endpoint unreachable for longer than this rolls the device back (001).
pub const UNREACHABLE_LIMIT: Millis = 2 * MINUTE;
/// Memory growth per 10 minutes above which the device is rolled back (001 `memory_leak`).
pub const MEMORY_LEAK_PER_10M: f64 = 0.05;
/// Memory growth per 10 minutes the canary gate tolerates (001 `memory_trend`).
pub const MEMORY_TREND_PER_10M: f64 = 0.01;
/// Error rate over baseline (absolute) that rolls everything back (001 `error_rate_spike`).
pub const ERROR_SPIKE: f64 = 0.10;
/// P95 latency multiple of baseline that halts for assessment (001 `latency_spike`).
pub const LATENCY_SPIKE: f64 = 2.0;
/// A p95 rise smaller than this (in ms) never fails a latency check or counts as a spike,
/// whatever its ratio to the baseline. The reference gives ratios only (20 % or 30 % over the
/// baseline, a spike at twice it); devices report the slowest node's p95 processing time,
/// which for a simple flow is tens of microseconds, where scheduling noise alone moves it by
/// more than 30 % and a ratio would roll back healthy versions.
pub const LATENCY_SLACK_MS: f64 = 1.0;

/// The highest p95 a latency check allows: `multiple` times the baseline, and never less than
/// the baseline plus [`LATENCY_SLACK_MS`].
pub fn latency_limit(baseline_ms: f64, multiple: f64) -> f64 {
    (baseline_ms * multiple).max(baseline_ms + LATENCY_SLACK_MS)
}
/// Consecutive rising checks that halt for assessment (001 `gradual_degradation`).
pub const TREND_CHECKS: u8 = 3;

/// Running sums over the reporting, active devices of one device group, in fixed point
/// (see [`fixed`]) so adding and removing a device's report is exact: floating-point sums
/// would drift with the order of updates and break "same state, same future" after a restore.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct GroupAgg {
    n: u64,
    error_rate: u128,
    p95_ms: u128,
    memory_mb: u128,
}

/// A device group's index and its mean error rate, p95 and memory.
type GroupMeans = (usize, f64, f64, f64);

/// Fixed-point scale of the aggregates: a millionth of a unit.
const FIXED: f64 = 1e6;

/// A metric in fixed point (metrics are validated finite and bounded on input).
fn fixed(x: f32) -> u128 {
    (f64::from(x) * FIXED).round() as u128
}

/// Upper bounds of accepted metrics: an error rate is a fraction; a day of latency and a
/// petabyte of memory are beyond any device.
const METRIC_LIMITS: [f32; 3] = [1.0, 86_400_000.0, 1e9];

/// Where the current stage is.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
enum Phase {
    /// Not started.
    Prepare,
    /// Sending directives for the current stage.
    Dispatching,
    /// All devices settled; soaking until the given time.
    Soaking { until: Millis },
    /// Evaluating the gate; pause at `deadline` if still without quorum.
    Gating { deadline: Millis },
    /// Committing the stage's devices after its gate passed.
    Committing,
    /// Waiting for an operator's approve.
    AwaitingApproval,
    /// The stage is done (or cancelled); resume or the next step moves to the next stage.
    StageDone,
    /// After the last stage: waiting for offline devices until `deadline`.
    CatchUp { deadline: Millis },
    /// Evaluating the completion gate.
    Completing { deadline: Millis },
    /// Rolling back (see `RollbackSweep`).
    RollingBack,
    /// Writing final target statuses.
    Finalizing,
    /// Nothing left to do.
    Done,
}

/// What a rollback covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Scope {
    /// Every device with the new version: ends `rolled_back`.
    All,
    /// One stage: ends paused for a human.
    Stage(u32),
    /// Every uncommitted device (abort): ends `failed`.
    Uncommitted,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RollbackSweep {
    scope: Scope,
    cursor: u32,
    end: u32,
    /// Devices waiting for their `RolledBack` report.
    waiting: u32,
    /// Until when offline devices are waited for.
    grace_until: Millis,
    reason: String,
}

/// The stage machine's own state: where the deployment is and what it has said about itself.
#[derive(Debug, Clone, PartialEq)]
struct Machine {
    status: DeploymentStatus,
    phase: Phase,
    created_at: Millis,
    started_at: Option<Millis>,
    ended_at: Option<Millis>,
    stage: u32,
    stages: Vec<StageResult>,
    last_gate: Option<(u32, Verdict)>,
    pause_reason: Option<String>,
    status_reason: String,
    last_action: String,
    completion_verdict: Option<Verdict>,
}

/// Directive issuing under the parallelism limit, catch-up of returning devices and commits.
#[derive(Debug, Clone, Default, PartialEq)]
struct Dispatch {
    cursor: u32,
    high_water: u32,
    stage_inflight: u32,
    inflight: u32,
    catchup: VecDeque<u32>,
    commits: VecDeque<u32>,
    commit_cursor: u32,
    offline_pending: u32,
}

/// Deadlines and wakeups.
#[derive(Debug, Clone, Default, PartialEq)]
struct Timers {
    deadlines: VecDeque<(u32, Millis)>,
    unreachable: VecDeque<(u32, Millis)>,
    next_check: Option<Millis>,
}

/// Health aggregation.
#[derive(Debug, Clone, Default, PartialEq)]
struct Health {
    groups: Vec<GroupAgg>,
    restarts_recent: VecDeque<(u32, Millis)>,
    trend_last: Option<f64>,
    trend_rises: u8,
    active: u64,
    mem_warn: u64,
    health_delta: Option<[f64; 3]>,
}

/// Sweeps.
#[derive(Debug, Clone, Default, PartialEq)]
struct Sweeps {
    rollback: Option<RollbackSweep>,
    final_cursor: u32,
}

/// The rollout engine. See the module documentation.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(from = "persist::State")]
pub struct Rollout {
    plan: Plan,
    now: Millis,
    devs: Vec<Dev>,
    queue: VecDeque<Action>,
    machine: Machine,
    dispatch: Dispatch,
    timers: Timers,
    health: Health,
    sweeps: Sweeps,
}

impl Rollout {
    /// A pending deployment of `plan`, created at `now`.
    pub fn new(plan: Plan, now: Millis) -> Rollout {
        let n = plan.len();
        let mut devs = vec![Dev::default(); n];
        // Blue-green's two stages cover the same devices; a device belongs to the first stage
        // that names it until a later stage dispatches it.
        for (i, s) in plan.stages.iter().enumerate().rev() {
            for pos in s.start..s.end {
                devs[plan.order[pos as usize] as usize].stage = i as u32;
            }
        }
        let stages = plan
            .stages
            .iter()
            .map(|s| StageResult {
                devices: s.len(),
                ..StageResult::default()
            })
            .collect();
        let groups = vec![GroupAgg::default(); plan.types.len()];
        Rollout {
            plan,
            now,
            devs,
            queue: VecDeque::new(),
            machine: Machine {
                status: DeploymentStatus::Pending,
                phase: Phase::Prepare,
                created_at: now,
                started_at: None,
                ended_at: None,
                stage: 0,
                stages,
                last_gate: None,
                pause_reason: None,
                status_reason: "created".into(),
                last_action: "deployment created".into(),
                completion_verdict: None,
            },
            dispatch: Dispatch::default(),
            timers: Timers::default(),
            health: Health {
                groups,
                ..Health::default()
            },
            sweeps: Sweeps::default(),
        }
    }

    /// The plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The deployment status.
    pub fn status(&self) -> DeploymentStatus {
        self.machine.status
    }

    /// A target's status.
    pub fn target_status(&self, device: u32) -> Option<TargetStatus> {
        let d = self.devs.get(device as usize)?;
        Some(status_of(d.phase, d.flags))
    }

    /// Why the deployment has its current status (the reason of the last status change).
    pub fn status_reason(&self) -> &str {
        &self.machine.status_reason
    }

    /// Why the deployment is paused, if it is.
    pub fn pause_reason(&self) -> Option<&str> {
        self.machine.pause_reason.as_deref()
    }

    /// The current stage index.
    pub fn current_stage(&self) -> u32 {
        self.machine.stage
    }

    /// Per-stage results.
    pub fn stage_results(&self) -> &[StageResult] {
        &self.machine.stages
    }

    /// Devices currently deploying (directive sent, not settled, online).
    pub fn in_flight(&self) -> u32 {
        self.dispatch.inflight
    }

    /// Whether the deployment waits for an operator's approve.
    pub fn awaiting_approval(&self) -> bool {
        self.machine.phase == Phase::AwaitingApproval
    }

    /// When it started and ended.
    pub fn times(&self) -> (Millis, Option<Millis>, Option<Millis>) {
        (
            self.machine.created_at,
            self.machine.started_at,
            self.machine.ended_at,
        )
    }

    /// Mean error-rate, p95 and memory deltas against baseline (fractions of baseline for
    /// p95 and memory, absolute for error rate) at the last gate evaluation.
    pub fn health_delta(&self) -> Option<[f64; 3]> {
        self.health.health_delta
    }

    /// The last action taken, as a sentence (for the state block).
    pub fn last_action(&self) -> &str {
        &self.machine.last_action
    }

    /// Whether a rollback is under way.
    pub fn rolling_back(&self) -> bool {
        self.sweeps.rollback.is_some()
    }

    /// The phase name for the state block (003: PREPARE | CANARY | VERIFY | ROLLOUT | CONFIRM).
    pub fn phase_name(&self) -> &'static str {
        let kind = self
            .plan
            .stages
            .get(self.machine.stage as usize)
            .map(|s| s.kind);
        match self.machine.phase {
            Phase::Prepare => "PREPARE",
            Phase::Soaking { .. }
            | Phase::Gating { .. }
            | Phase::AwaitingApproval
            | Phase::Committing => "VERIFY",
            Phase::CatchUp { .. } | Phase::Completing { .. } | Phase::Finalizing | Phase::Done => {
                "CONFIRM"
            }
            Phase::RollingBack => "ROLLBACK",
            _ if kind == Some(StageKind::Canary) => "CANARY",
            _ => "ROLLOUT",
        }
    }

    /// The earliest time the engine wants a `Tick`, or `None` if it waits only for input.
    pub fn poll_timeout(&self) -> Option<Millis> {
        if self.machine.status.is_terminal() && self.machine.phase == Phase::Done {
            return None;
        }
        let mut t: Option<Millis> = None;
        let mut at = |x: Millis| t = Some(t.map_or(x, |y| y.min(x)));
        // Fleet-wide triggers are checked only while running: a paused deployment waits for
        // its operator, and a rollback is already the strongest answer.
        if let Some(c) = self.timers.next_check
            && self.machine.status == DeploymentStatus::Running
            && self.sweeps.rollback.is_none()
        {
            at(c);
        }
        if let Some((_, d)) = self.timers.deadlines.front() {
            at(*d);
        }
        if let Some((_, d)) = self.timers.unreachable.front() {
            at(d + UNREACHABLE_LIMIT + 1);
        }
        if self.machine.status == DeploymentStatus::Running {
            match self.machine.phase {
                Phase::Soaking { until } => at(until),
                Phase::Gating { deadline }
                | Phase::CatchUp { deadline }
                | Phase::Completing { deadline } => at(deadline),
                _ => {}
            }
        }
        if let Some(rb) = &self.sweeps.rollback
            && rb.waiting > 0
        {
            at(rb.grace_until);
        }
        t
    }

    /// Feeds one input at `now`. Timers due at `now` are processed first.
    pub fn handle_input(&mut self, now: Millis, input: Input) -> Result<(), RolloutError> {
        if self.queue.len() >= MAX_QUEUED_ACTIONS {
            return Err(RolloutError::Backlog(self.queue.len()));
        }
        self.now = self.now.max(now);
        match input {
            Input::Device { device, event } => {
                self.check_device(device)?;
                self.run_timers();
                self.on_device(device, event);
            }
            Input::Health { device, report } => {
                self.check_device(device)?;
                for ((field, value), limit) in [
                    ("error_rate", report.error_rate),
                    ("p95_ms", report.p95_ms),
                    ("memory_mb", report.memory_mb),
                ]
                .into_iter()
                .zip(METRIC_LIMITS)
                {
                    if !value.is_finite() || !(0.0..=limit).contains(&value) {
                        return Err(RolloutError::Metric {
                            device,
                            field,
                            value,
                        });
                    }
                }
                self.run_timers();
                self.on_health(device, report);
            }
            Input::Command(c) => {
                self.on_command(c)?;
                self.run_timers();
            }
            Input::Tick => self.run_timers(),
        }
        self.advance();
        Ok(())
    }

    /// The next decision, or `None` when there is nothing to do until the next input.
    pub fn poll_action(&mut self) -> Option<Action> {
        loop {
            if let Some(a) = self.queue.pop_front() {
                return Some(a);
            }
            if self.lazy_step() || self.advance_once() {
                continue;
            }
            return None;
        }
    }

    fn check_device(&self, device: u32) -> Result<(), RolloutError> {
        if (device as usize) < self.devs.len() {
            Ok(())
        } else {
            Err(RolloutError::UnknownDevice(device))
        }
    }

    fn audit(&mut self, event: String) {
        self.machine.last_action = event.clone();
        self.queue.push_back(Action::Audit {
            at: self.now,
            event,
        });
    }

    fn set_status(&mut self, status: DeploymentStatus, reason: String) {
        if self.machine.status == status {
            return;
        }
        self.machine.status = status;
        if status.is_terminal() {
            self.machine.ended_at = Some(self.now);
            self.timers.next_check = None;
        }
        self.machine.pause_reason = if status == DeploymentStatus::Paused {
            Some(reason.clone())
        } else {
            None
        };
        self.machine.last_action = format!("deployment {}: {reason}", status.as_str());
        self.machine.status_reason = reason.clone();
        self.queue.push_back(Action::Deployment { status, reason });
    }

    /// Updates the phase of `d` and emits its target status if that changed.
    fn set_phase(&mut self, d: u32, phase: DevPhase) {
        let was_active = self.devs[d as usize].phase.active();
        let was_pending = self.devs[d as usize].pending_offline();
        let dev = &mut self.devs[d as usize];
        dev.phase = phase;
        let is_pending = dev.pending_offline();
        if was_pending && !is_pending {
            self.dispatch.offline_pending -= 1;
        } else if !was_pending && is_pending {
            self.dispatch.offline_pending += 1;
        }
        let now_active = phase.active();
        if was_active && !now_active {
            self.health.active -= 1;
            self.drop_metrics(d);
            let dev = &mut self.devs[d as usize];
            if dev.flags & F_MEM_WARN != 0 {
                dev.flags &= !F_MEM_WARN;
                self.health.mem_warn -= 1;
            }
        } else if !was_active && now_active {
            self.health.active += 1;
        }
        self.emit_status(d);
    }

    fn emit_status(&mut self, d: u32) {
        let dev = &mut self.devs[d as usize];
        let s = status_of(dev.phase, dev.flags);
        if dev.status != status_code(s) {
            dev.status = status_code(s);
            self.queue.push_back(Action::Target {
                device: d,
                status: s,
            });
        }
    }

    fn directive(&mut self, d: u32, kind: DirectiveKind) {
        self.directive_because(d, kind, None);
    }

    /// Sends a new directive to `d` (its generation grows), with the cause of a device-level
    /// rollback if it is one.
    fn directive_because(&mut self, d: u32, kind: DirectiveKind, cause: Option<RollbackCause>) {
        let dev = &mut self.devs[d as usize];
        dev.generation += 1;
        let generation = dev.generation;
        self.queue.push_back(Action::Directive {
            device: d,
            generation,
            kind,
            cause,
        });
    }

    fn resend(&mut self, d: u32) {
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

    fn drop_metrics(&mut self, d: u32) {
        let dev = &mut self.devs[d as usize];
        if dev.flags & F_REPORTED != 0 {
            dev.flags &= !F_REPORTED;
            let g = &mut self.health.groups[self.plan.device_type[d as usize] as usize];
            g.n -= 1;
            g.error_rate -= fixed(dev.error_rate);
            g.p95_ms -= fixed(dev.p95_ms);
            g.memory_mb -= fixed(dev.memory_mb);
        }
    }

    fn add_metrics(&mut self, d: u32) {
        let dev = &mut self.devs[d as usize];
        dev.flags |= F_REPORTED;
        let g = &mut self.health.groups[self.plan.device_type[d as usize] as usize];
        g.n += 1;
        g.error_rate += fixed(dev.error_rate);
        g.p95_ms += fixed(dev.p95_ms);
        g.memory_mb += fixed(dev.memory_mb);
    }

    /// Marks a device as taking a parallelism slot with a deploy deadline.
    fn take_slot(&mut self, d: u32) {
        let deadline = self.now + self.plan.config.timeout;
        let dev = &mut self.devs[d as usize];
        if dev.flags & F_INFLIGHT == 0 {
            dev.flags |= F_INFLIGHT;
            self.dispatch.inflight += 1;
            if dev.stage == self.machine.stage {
                self.dispatch.stage_inflight += 1;
            }
        }
        dev.deadline = deadline;
        self.timers.deadlines.push_back((d, deadline));
    }

    /// Releases a device's slot (settled, failed or gone offline).
    fn release_slot(&mut self, d: u32) {
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

    fn max_parallel(&self) -> u32 {
        match self.plan.config.max_parallel {
            0 => u32::MAX,
            m => m,
        }
    }

    fn on_device(&mut self, d: u32, event: DeviceEvent) {
        let phase = self.devs[d as usize].phase;
        match event {
            DeviceEvent::Offline => {
                let dev = &mut self.devs[d as usize];
                if dev.flags & F_OFFLINE != 0 {
                    return;
                }
                dev.flags |= F_OFFLINE;
                if dev.pending_offline() {
                    self.dispatch.offline_pending += 1;
                }
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
                if was_pending {
                    self.dispatch.offline_pending -= 1;
                }
                self.emit_status(d);
                self.queue_catchup(d);
            }
            DeviceEvent::Staged => {
                if phase != DevPhase::Staging {
                    return;
                }
                self.set_phase(d, DevPhase::Staged);
                let stage_only = self
                    .plan
                    .stages
                    .get(self.devs[d as usize].stage as usize)
                    .is_some_and(|s| s.mode == StageMode::StageOnly)
                    && self.devs[d as usize].stage == self.machine.stage;
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
                    self.timers.unreachable.push_back((d, self.now));
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

    /// A device's rollback ended (rolled back, quarantined or failed): the sweep stops waiting
    /// for it if it was waiting.
    fn rollback_settled(&mut self, d: u32) {
        let dev = &mut self.devs[d as usize];
        if dev.flags & F_SWEEP_WAIT == 0 {
            return;
        }
        dev.flags &= !F_SWEEP_WAIT;
        if let Some(rb) = &mut self.sweeps.rollback {
            rb.waiting = rb.waiting.saturating_sub(1);
        }
    }

    fn queue_catchup(&mut self, d: u32) {
        let dev = &mut self.devs[d as usize];
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
        if due && dev.flags & F_CATCHUP_QUEUED == 0 {
            dev.flags |= F_CATCHUP_QUEUED;
            self.dispatch.catchup.push_back(d);
        }
    }

    fn verified(&mut self, d: u32) {
        self.release_slot(d);
        self.set_phase(d, DevPhase::Verified);
        let dev = &self.devs[d as usize];
        if dev.stage < self.machine.stage && dev.flags & F_COMMIT_QUEUED == 0 {
            // A caught-up device of an earlier, already committed stage.
            self.devs[d as usize].flags |= F_COMMIT_QUEUED;
            self.dispatch.commits.push_back(d);
        }
    }

    fn device_rollback(&mut self, d: u32, why: RollbackCause) {
        self.release_slot(d);
        self.devs[d as usize].flags |= F_QUARANTINE_ON_ROLLBACK;
        self.set_phase(d, DevPhase::RollingBack);
        self.directive_because(d, DirectiveKind::Rollback, Some(why));
        // A device-level rollback is never held back by the parallelism limit (it is not a
        // deployment), but it has a deadline: a device that never confirms ends failed.
        if self.devs[d as usize].flags & F_OFFLINE == 0 {
            let deadline = self.now + self.plan.config.timeout;
            self.devs[d as usize].deadline = deadline;
            self.timers.deadlines.push_back((d, deadline));
        }
        self.count_failure(d);
    }

    fn count_failure(&mut self, d: u32) {
        let s = self.devs[d as usize].stage;
        let Some(res) = self.machine.stages.get_mut(s as usize) else {
            return;
        };
        res.failed += 1;
        if s != self.machine.stage
            || self.sweeps.rollback.is_some()
            || self.machine.status.is_terminal()
        {
            return;
        }
        let spec = &self.plan.stages[s as usize];
        let share = f64::from(res.failed) / f64::from(res.devices.max(1));
        if share > spec.failure_threshold {
            let reason = format!(
                "{}: {} of {} devices failed ({:.1}%, threshold {:.1}%)",
                spec.name,
                res.failed,
                res.devices,
                share * 100.0,
                spec.failure_threshold * 100.0
            );
            match spec.on_breach {
                Breach::RollbackAll => self.start_rollback(Scope::All, reason),
                Breach::RollbackStageAndHalt => self.start_rollback(Scope::Stage(s), reason),
                Breach::Halt => self.halt(reason),
            }
        }
    }

    fn halt(&mut self, reason: String) {
        if self.machine.status == DeploymentStatus::Running {
            self.audit(format!("halt: {reason}"));
            self.set_status(DeploymentStatus::Paused, reason);
        }
    }

    fn on_health(&mut self, d: u32, r: HealthReport) {
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
        // Memory trend against the first report after the switch.
        let mut leak = false;
        let mut warn = false;
        if dev.memory0 <= 0.0 {
            dev.memory0 = r.memory_mb;
            dev.memory0_at = now;
        } else if now - dev.memory0_at >= 10 * MINUTE && dev.memory0 > 0.0 {
            let per10 = (f64::from(r.memory_mb) / f64::from(dev.memory0) - 1.0)
                * (10 * MINUTE) as f64
                / (now - dev.memory0_at) as f64;
            leak = per10 > MEMORY_LEAK_PER_10M;
            warn = per10 >= MEMORY_TREND_PER_10M;
        }
        let had_warn = dev.flags & F_MEM_WARN != 0;
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
        self.add_metrics(d);
        if r.status == HealthStatus::Healthy && phase == DevPhase::Switched {
            self.verified(d);
        }
    }

    fn on_command(&mut self, c: Command) -> Result<(), RolloutError> {
        let status = self.machine.status;
        let refuse = |reason: &str| {
            Err(RolloutError::Command {
                command: c,
                status,
                reason: reason.to_string(),
            })
        };
        if status.is_terminal() {
            return refuse("the deployment has ended; create a new deployment instead");
        }
        match c {
            Command::Start => {
                if status != DeploymentStatus::Pending {
                    return refuse("it has already started");
                }
                self.machine.started_at = Some(self.now);
                self.set_status(DeploymentStatus::Running, "started by operator".into());
                self.audit(format!(
                    "start: {} to {} devices, {} stages",
                    self.plan.config.strategy.name(),
                    self.plan.len(),
                    self.plan.stages.len()
                ));
                self.timers.next_check = Some(self.now + self.plan.config.health_check_interval);
                self.begin_stage(0);
            }
            Command::Pause => {
                if status != DeploymentStatus::Running {
                    return refuse("only a running deployment can be paused");
                }
                if self.sweeps.rollback.is_some() {
                    return refuse("a rollback is in progress and cannot be paused");
                }
                self.audit("pause by operator".into());
                self.set_status(DeploymentStatus::Paused, "paused by operator".into());
            }
            Command::Resume => {
                if status != DeploymentStatus::Paused {
                    return refuse("only a paused deployment can be resumed");
                }
                self.health.trend_last = None;
                self.health.trend_rises = 0;
                self.machine.last_gate = None;
                if let Phase::Gating { .. } = self.machine.phase {
                    self.machine.phase = Phase::Gating {
                        deadline: self.now + self.plan.config.timeout,
                    };
                }
                if let Phase::Completing { .. } = self.machine.phase {
                    self.machine.phase = Phase::Completing {
                        deadline: self.now + self.plan.config.timeout,
                    };
                }
                if let Phase::Soaking { until } = self.machine.phase {
                    self.machine.phase = Phase::Soaking {
                        until: until.max(self.now),
                    };
                }
                self.audit("resume by operator".into());
                self.set_status(DeploymentStatus::Running, "resumed by operator".into());
            }
            Command::Approve => {
                if self.machine.phase != Phase::AwaitingApproval {
                    return refuse("nothing is waiting for approval");
                }
                if status != DeploymentStatus::Running {
                    return refuse("resume the deployment first");
                }
                self.audit(format!(
                    "approve after {}",
                    self.stage_name(self.machine.stage)
                ));
                self.machine.phase = Phase::StageDone;
            }
            Command::Rollback => {
                if status == DeploymentStatus::Pending {
                    return refuse("nothing has been deployed yet; abort it instead");
                }
                if self
                    .sweeps
                    .rollback
                    .as_ref()
                    .is_some_and(|r| r.scope == Scope::All)
                {
                    return refuse("a full rollback is already in progress");
                }
                self.start_rollback(Scope::All, "rollback by operator".into());
            }
            Command::Abort => {
                if self
                    .sweeps
                    .rollback
                    .as_ref()
                    .is_some_and(|r| r.scope != Scope::Stage(self.machine.stage))
                {
                    return refuse("a rollback is already in progress");
                }
                if status == DeploymentStatus::Pending {
                    self.audit("abort before start".into());
                    self.set_status(DeploymentStatus::Failed, "aborted before start".into());
                    self.machine.phase = Phase::Finalizing;
                    return Ok(());
                }
                self.start_rollback(Scope::Uncommitted, "aborted by operator".into());
            }
        }
        Ok(())
    }

    fn stage_name(&self, s: u32) -> String {
        self.plan
            .stages
            .get(s as usize)
            .map_or_else(|| format!("stage {s}"), |st| st.name.clone())
    }

    fn begin_stage(&mut self, s: u32) {
        self.machine.stage = s;
        self.dispatch.stage_inflight = 0;
        let spec = &self.plan.stages[s as usize];
        self.dispatch.cursor = spec.start;
        self.machine.stages[s as usize].started_at = Some(self.now);
        self.machine.phase = Phase::Dispatching;
        self.machine.last_gate = None;
        let name = spec.name.clone();
        let len = spec.len();
        self.audit(format!("begin {name}: {len} devices"));
    }

    fn start_rollback(&mut self, scope: Scope, reason: String) {
        let (start, end) = match scope {
            Scope::Stage(s) => {
                let spec = &self.plan.stages[s as usize];
                (spec.start, spec.end)
            }
            _ => (0, self.dispatch.high_water.max(self.dispatch.cursor)),
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
            grace_until: self.now + self.plan.config.offline_grace,
            reason,
        });
        // A pause does not stop a rollback: directives to go back are always sent.
        if self.machine.status == DeploymentStatus::Paused {
            self.set_status(DeploymentStatus::Running, format!("{what} in progress"));
        }
        self.machine.phase = Phase::RollingBack;
    }

    /// One unit of lazy work. Returns whether it did anything.
    fn lazy_step(&mut self) -> bool {
        if self.machine.phase == Phase::RollingBack {
            return self.rollback_step();
        }
        if self.machine.phase == Phase::Committing {
            return self.commit_step();
        }
        if self.machine.phase == Phase::Finalizing {
            return self.final_step();
        }
        if let Some(d) = self.dispatch.commits.front().copied()
            && self.machine.status != DeploymentStatus::Pending
        {
            self.dispatch.commits.pop_front();
            self.devs[d as usize].flags &= !F_COMMIT_QUEUED;
            if self.devs[d as usize].phase == DevPhase::Verified {
                self.set_phase(d, DevPhase::Committed);
                self.directive(d, DirectiveKind::Commit);
            }
            return true;
        }
        if self.machine.status != DeploymentStatus::Running {
            return false;
        }
        if self.dispatch.inflight >= self.max_parallel() {
            return false;
        }
        if let Some(d) = self.dispatch.catchup.pop_front() {
            self.devs[d as usize].flags &= !F_CATCHUP_QUEUED;
            self.dispatch_catchup(d);
            return true;
        }
        if self.machine.phase == Phase::Dispatching
            || matches!(self.machine.phase, Phase::CatchUp { .. })
        {
            let end = self.plan.stages[self.machine.stage as usize].end;
            if self.machine.phase == Phase::Dispatching && self.dispatch.cursor < end {
                let d = self.plan.order[self.dispatch.cursor as usize];
                self.dispatch.cursor += 1;
                self.dispatch.high_water = self.dispatch.high_water.max(self.dispatch.cursor);
                self.dispatch_device(d);
                return true;
            }
        }
        false
    }

    fn dispatch_device(&mut self, d: u32) {
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

    fn dispatch_catchup(&mut self, d: u32) {
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
                let deadline = self.now + self.plan.config.timeout;
                self.devs[d as usize].deadline = deadline;
                self.timers.deadlines.push_back((d, deadline));
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

    fn rollback_step(&mut self) -> bool {
        let Some(rb) = self.sweeps.rollback.clone() else {
            return false;
        };
        // Devices that return during a rollback get their rollback directive again.
        if let Some(d) = self.dispatch.catchup.front().copied() {
            self.dispatch.catchup.pop_front();
            self.devs[d as usize].flags &= !F_CATCHUP_QUEUED;
            if self.devs[d as usize].phase == DevPhase::RollingBack {
                self.resend(d);
            }
            return true;
        }
        if rb.cursor < rb.end {
            if self.dispatch.inflight >= self.max_parallel() {
                return false;
            }
            let d = self.plan.order[rb.cursor as usize];
            if let Some(r) = &mut self.sweeps.rollback {
                r.cursor += 1;
            }
            let dev = &self.devs[d as usize];
            let phase = dev.phase;
            // A device already rolling back on its own account (a device-level rollback that
            // started before the sweep) gets no second directive, but the sweep waits for it,
            // so the deployment does not end while it is still on the new version.
            if phase == DevPhase::RollingBack {
                if self.devs[d as usize].flags & F_SWEEP_WAIT == 0 {
                    self.devs[d as usize].flags |= F_SWEEP_WAIT;
                    if let Some(r) = &mut self.sweeps.rollback {
                        r.waiting += 1;
                    }
                }
                return true;
            }
            let target = match rb.scope {
                Scope::All | Scope::Stage(_) => {
                    phase.in_flight() || phase.active() || phase == DevPhase::Staged
                }
                Scope::Uncommitted => phase.in_flight() || phase == DevPhase::Verified,
            };
            // In blue-green a device staged but never switched has nothing to switch back.
            if phase == DevPhase::Staged
                && self.plan.stages[dev.stage as usize].mode == StageMode::StageOnly
            {
                self.release_slot(d);
                self.set_phase(d, DevPhase::RolledBack);
                return true;
            }
            if target {
                self.release_slot(d);
                self.devs[d as usize].flags &= !F_QUARANTINE_ON_ROLLBACK;
                self.set_phase(d, DevPhase::RollingBack);
                self.directive(d, DirectiveKind::Rollback);
                if self.devs[d as usize].flags & F_OFFLINE == 0 {
                    self.take_slot(d);
                }
                if self.devs[d as usize].flags & F_SWEEP_WAIT == 0 {
                    self.devs[d as usize].flags |= F_SWEEP_WAIT;
                    if let Some(r) = &mut self.sweeps.rollback {
                        r.waiting += 1;
                    }
                }
            } else if phase == DevPhase::Idle && matches!(rb.scope, Scope::Stage(_)) {
                self.set_phase(d, DevPhase::Skipped);
            }
            return true;
        }
        if rb.waiting > 0 && self.now < rb.grace_until {
            return false;
        }
        // Done (or the grace for offline devices has passed).
        self.sweeps.rollback = None;
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
        true
    }

    fn commit_step(&mut self) -> bool {
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

    fn final_step(&mut self) -> bool {
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
                self.set_phase(d, to);
                if to == DevPhase::Committed && p != DevPhase::Committed {
                    self.directive(d, DirectiveKind::Commit);
                }
                let was_pending = self.devs[d as usize].pending_offline();
                self.devs[d as usize].flags &= !F_OFFLINE;
                if was_pending {
                    self.dispatch.offline_pending -= 1;
                }
                self.emit_status(d);
            }
            return true;
        }
        self.machine.phase = Phase::Done;
        self.timers.deadlines.clear();
        self.timers.unreachable.clear();
        self.dispatch.catchup.clear();
        self.timers.next_check = None;
        let s = self.machine.status;
        self.audit(format!("deployment ended: {}", s.as_str()));
        true
    }

    /// Processes every timer due at `self.now`.
    fn run_timers(&mut self) {
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

    /// Per-group mean metrics over reporting active devices, and the fleet's mean deltas.
    fn aggregates(&self) -> (Vec<GroupMeans>, Option<[f64; 3]>) {
        let mut out = Vec::new();
        let mut n = 0.0;
        let mut sum = [0.0f64; 3];
        for (i, g) in self.health.groups.iter().enumerate() {
            if g.n == 0 {
                continue;
            }
            let k = g.n as f64;
            let mean = |sum: u128| sum as f64 / FIXED / k;
            let (e, p, m) = (mean(g.error_rate), mean(g.p95_ms), mean(g.memory_mb));
            out.push((i, e, p, m));
            let b = &self.plan.baselines[i];
            sum[0] += (e - b.error_rate) * k;
            sum[1] += if b.p95_ms > 0.0 {
                (p / b.p95_ms - 1.0) * k
            } else {
                0.0
            };
            sum[2] += if b.memory_mb > 0.0 {
                (m / b.memory_mb - 1.0) * k
            } else {
                0.0
            };
            n += k;
        }
        let delta = (n > 0.0).then(|| [sum[0] / n, sum[1] / n, sum[2] / n]);
        (out, delta)
    }

    /// 001 threshold and trend triggers over all deployed devices, each health-check tick.
    fn fleet_triggers(&mut self, trend: bool) {
        if !self.plan.config.health_check {
            return;
        }
        let (groups, delta) = self.aggregates();
        for (i, e, p, _) in &groups {
            let b = self.plan.baselines[*i];
            if *e > b.error_rate + ERROR_SPIKE {
                let reason = format!(
                    "error_rate_spike: {} error rate {:.2}% > baseline {:.2}% + 10%",
                    self.plan.types[*i],
                    e * 100.0,
                    b.error_rate * 100.0
                );
                if self.plan.config.auto_rollback {
                    self.start_rollback(Scope::All, reason);
                } else {
                    self.halt(reason);
                }
                return;
            }
            if b.p95_ms > 0.0 && *p > latency_limit(b.p95_ms, LATENCY_SPIKE) {
                let reason = format!(
                    "latency_spike: {} p95 {:.0} ms > 2 x baseline {:.0} ms; halt and assess",
                    self.plan.types[*i], p, b.p95_ms
                );
                self.halt(reason);
                return;
            }
        }
        if let Some([e, _, _]) = delta
            && trend
        {
            if let Some(last) = self.health.trend_last {
                if e > last + self.plan.config.trend_min_step {
                    self.health.trend_rises += 1;
                } else {
                    self.health.trend_rises = 0;
                }
            }
            self.health.trend_last = Some(e);
            if self.health.trend_rises >= TREND_CHECKS {
                self.health.trend_rises = 0;
                self.halt(format!(
                    "gradual_degradation: error rate rose {TREND_CHECKS} checks in a row to {:+.2}% over \
                     baseline; halt and assess",
                    e * 100.0
                ));
            }
        }
    }

    /// Evaluates a gate over all devices deployed so far.
    fn evaluate(&mut self, gate: GateKind) -> GateVerdict {
        let stage = self.machine.stage;
        // With health checks off (000 allows it) gates only wait for devices to settle.
        if gate == GateKind::Staged || !self.plan.config.health_check {
            return GateVerdict {
                stage,
                gate,
                verdict: Verdict::Pass,
                checks: Vec::new(),
                reason: "devices settled".into(),
            };
        }
        let judged = self.health.active;
        let reported: u64 = self.health.groups.iter().map(|g| g.n).sum();
        let need = ((judged as f64) * self.plan.config.quorum_percent / 100.0).ceil() as u64;
        if judged == 0 || reported < need {
            return GateVerdict {
                stage,
                gate,
                verdict: Verdict::Wait,
                checks: Vec::new(),
                reason: format!(
                    "quorum: {reported} of {judged} deployed devices reported, {need} needed ({}%)",
                    self.plan.config.quorum_percent
                ),
            };
        }
        let (groups, delta) = self.aggregates();
        self.health.health_delta = delta;
        let (err_add, p95_mul, crash_window) = match gate {
            GateKind::Canary => (0.02, 1.2, 30 * MINUTE),
            GateKind::Wave => (0.05, 1.3, 10 * MINUTE),
            _ => (0.02, f64::INFINITY, 0),
        };
        let mut checks = Vec::new();
        for (i, e, p, _) in &groups {
            let b = self.plan.baselines[*i];
            let t = &self.plan.types[*i];
            checks.push(Check {
                name: format!("error_rate[{t}]"),
                value: *e,
                limit: b.error_rate + err_add,
                pass: *e <= b.error_rate + err_add,
            });
            if p95_mul.is_finite() && b.p95_ms > 0.0 {
                checks.push(Check {
                    name: format!("latency_p95[{t}]"),
                    value: *p,
                    limit: latency_limit(b.p95_ms, p95_mul),
                    pass: *p <= latency_limit(b.p95_ms, p95_mul),
                });
            }
        }
        // The healthy share is over the devices there is news from: reporting devices and
        // failures so far. Offline devices are not failures; the quorum covers silence.
        let failed: u64 = self
            .machine
            .stages
            .iter()
            .map(|s| u64::from(s.failed))
            .sum();
        let healthy_share = reported as f64 / (reported + failed) as f64;
        match gate {
            GateKind::Canary => {
                checks.push(Check {
                    name: "memory_trend".into(),
                    value: self.health.mem_warn as f64,
                    limit: 0.0,
                    pass: self.health.mem_warn == 0,
                });
                checks.push(Check {
                    name: "application_health".into(),
                    value: healthy_share,
                    limit: 1.0,
                    pass: failed == 0 && reported == judged,
                });
            }
            GateKind::Wave => checks.push(Check {
                name: "device_health".into(),
                value: healthy_share,
                limit: 0.95,
                pass: healthy_share >= 0.95,
            }),
            _ => {
                let coverage = self.health.active as f64 / self.plan.len() as f64;
                checks.push(Check {
                    name: "fleet_coverage".into(),
                    value: coverage,
                    limit: 0.95,
                    pass: coverage >= 0.95,
                });
                checks.push(Check {
                    name: "device_health".into(),
                    value: healthy_share,
                    limit: 0.98,
                    pass: healthy_share >= 0.98,
                });
            }
        }
        if crash_window > 0 {
            let now = self.now;
            while self
                .health
                .restarts_recent
                .front()
                .is_some_and(|(_, t)| *t + crash_window < now)
            {
                self.health.restarts_recent.pop_front();
            }
            let crashes = self
                .health
                .restarts_recent
                .iter()
                .filter(|(d, _)| self.devs[*d as usize].phase.active())
                .count();
            checks.push(Check {
                name: "crash_count".into(),
                value: crashes as f64,
                limit: 0.0,
                pass: crashes == 0,
            });
        }
        let failing: Vec<&str> = checks
            .iter()
            .filter(|c| !c.pass)
            .map(|c| c.name.as_str())
            .collect();
        let (verdict, reason) = if failing.is_empty() {
            (Verdict::Pass, "all checks pass".to_string())
        } else {
            (Verdict::Fail, format!("failing: {}", failing.join(", ")))
        };
        GateVerdict {
            stage,
            gate,
            verdict,
            checks,
            reason,
        }
    }

    fn emit_gate(&mut self, v: &GateVerdict) {
        if self.machine.last_gate != Some((v.stage, v.verdict)) {
            self.machine.last_gate = Some((v.stage, v.verdict));
            self.queue.push_back(Action::Gate(v.clone()));
        }
    }

    /// Moves the stage machine forward as far as the state allows.
    fn advance(&mut self) {
        for _ in 0..8 {
            if !self.advance_once() {
                return;
            }
        }
    }

    fn advance_once(&mut self) -> bool {
        if self.machine.status != DeploymentStatus::Running {
            return false;
        }
        let now = self.now;
        match self.machine.phase {
            Phase::Dispatching => {
                let spec = &self.plan.stages[self.machine.stage as usize];
                if self.dispatch.cursor < spec.end || self.dispatch.stage_inflight > 0 {
                    return false;
                }
                let until = now + spec.soak;
                self.machine.stages[self.machine.stage as usize].soak_started_at = Some(now);
                self.machine.phase = Phase::Soaking { until };
                true
            }
            Phase::Soaking { until } => {
                if now < until {
                    return false;
                }
                self.machine.phase = Phase::Gating {
                    deadline: now + self.plan.config.timeout,
                };
                true
            }
            Phase::Gating { deadline } => {
                // Threshold triggers outrank a gate verdict: a fleet-wide error spike rolls
                // everything back even if it shows up first at a gate.
                self.fleet_triggers(false);
                if self.machine.status != DeploymentStatus::Running
                    || self.machine.phase == Phase::RollingBack
                {
                    return true;
                }
                let spec = self.plan.stages[self.machine.stage as usize].clone();
                let v = self.evaluate(spec.gate);
                self.emit_gate(&v);
                match v.verdict {
                    Verdict::Pass => {
                        let name = spec.name.clone();
                        self.audit(format!("{name} gate passed"));
                        let r = &mut self.machine.stages[self.machine.stage as usize];
                        r.verdict = Some(Verdict::Pass);
                        r.ended_at = Some(now);
                        if spec.mode == StageMode::StageOnly {
                            self.machine.phase = Phase::StageDone;
                        } else {
                            self.dispatch.commit_cursor = spec.start;
                            self.machine.phase = Phase::Committing;
                        }
                        true
                    }
                    Verdict::Fail => {
                        let r = &mut self.machine.stages[self.machine.stage as usize];
                        r.verdict = Some(Verdict::Fail);
                        r.ended_at = Some(now);
                        let reason = format!("{} gate failed: {}", spec.name, v.reason);
                        if spec.on_breach == Breach::RollbackAll {
                            self.start_rollback(Scope::All, reason);
                        } else {
                            self.halt(reason);
                        }
                        true
                    }
                    Verdict::Wait => {
                        if now >= deadline {
                            self.halt(format!(
                                "{} gate: progress deadline passed, {}",
                                spec.name, v.reason
                            ));
                            return true;
                        }
                        false
                    }
                }
            }
            Phase::StageDone => {
                let next = self.machine.stage + 1;
                if (next as usize) < self.plan.stages.len() {
                    self.begin_stage(next);
                } else {
                    self.machine.phase = Phase::CatchUp {
                        deadline: now + self.plan.config.offline_grace,
                    };
                }
                true
            }
            Phase::CatchUp { deadline } => {
                let waiting = self.devs_waiting_catchup();
                if (waiting || self.dispatch.inflight > 0) && now < deadline {
                    return false;
                }
                self.machine.phase = Phase::Completing {
                    deadline: now + self.plan.config.timeout,
                };
                true
            }
            Phase::Completing { deadline } => {
                let v = self.evaluate(GateKind::Completion);
                self.emit_gate(&v);
                match v.verdict {
                    Verdict::Pass => {
                        self.machine.completion_verdict = Some(Verdict::Pass);
                        self.audit("completion gate passed".into());
                        self.set_status(DeploymentStatus::Completed, "all gates passed".into());
                        self.machine.phase = Phase::Finalizing;
                        self.sweeps.final_cursor = 0;
                        true
                    }
                    Verdict::Fail => {
                        self.machine.completion_verdict = Some(Verdict::Fail);
                        self.halt(format!("completion gate failed: {}", v.reason));
                        true
                    }
                    Verdict::Wait => {
                        if now >= deadline {
                            self.halt(format!(
                                "completion gate: progress deadline passed, {}",
                                v.reason
                            ));
                            return true;
                        }
                        false
                    }
                }
            }
            _ => false,
        }
    }

    fn devs_waiting_catchup(&self) -> bool {
        self.dispatch.offline_pending > 0
            || !self.dispatch.catchup.is_empty()
            || !self.dispatch.commits.is_empty()
    }

    /// Counts of targets by status (O(fleet); for reports, not hot paths).
    pub fn counts(&self) -> StatusCounts {
        let mut c = StatusCounts::default();
        for d in &self.devs {
            match status_of(d.phase, d.flags) {
                TargetStatus::Pending => c.pending += 1,
                TargetStatus::Deploying => c.deploying += 1,
                TargetStatus::Success => c.success += 1,
                TargetStatus::Failed => c.failed += 1,
                TargetStatus::Offline => c.offline += 1,
                TargetStatus::Skipped => c.skipped += 1,
                TargetStatus::RolledBack => c.rolled_back += 1,
                TargetStatus::Quarantined => c.quarantined += 1,
            }
            if d.phase.active() && d.flags & F_REPORTED != 0 {
                c.healthy += 1;
            }
        }
        c
    }

    /// The completion gate's verdict, once evaluated.
    pub fn completion_verdict(&self) -> Option<Verdict> {
        self.machine.completion_verdict
    }

    /// A sentence on what the engine waits for next (for the state block).
    pub fn next_action(&self) -> String {
        match (self.machine.status, self.machine.phase) {
            (DeploymentStatus::Pending, _) => "start".into(),
            (DeploymentStatus::Paused, _) => "operator: resume, rollback or abort".into(),
            (_, Phase::AwaitingApproval) => {
                format!(
                    "operator approval after {}",
                    self.stage_name(self.machine.stage)
                )
            }
            (_, Phase::Dispatching) => format!("deploy {}", self.stage_name(self.machine.stage)),
            (_, Phase::Soaking { until }) => {
                format!(
                    "soak {} until t={until}ms",
                    self.stage_name(self.machine.stage)
                )
            }
            (_, Phase::Gating { .. }) => format!("{} gate", self.stage_name(self.machine.stage)),
            (_, Phase::CatchUp { .. }) => "catch up offline devices".into(),
            (_, Phase::Completing { .. }) => "completion gate".into(),
            (_, Phase::RollingBack) => "finish rollback".into(),
            (s, _) if s.is_terminal() => "none".into(),
            _ => "continue".into(),
        }
    }
}
