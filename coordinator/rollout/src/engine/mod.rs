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
//!
//! Files. [`Rollout`] owns its state in parts, each in its own file with the handlers that
//! change it, and itself only dispatches (inputs to handlers, lazy work to the part whose
//! turn it is) and keeps the few primitives every part uses (statuses, directives, audit):
//! - `types`: the public vocabulary (inputs, actions, statuses, errors) and its spellings;
//! - `device`: the per-device record and the device phase, a one-byte enum;
//! - `phase`: where the stage machine is, and what a rollback covers;
//! - `machine`: the stage state machine (operator commands, soak, gates, approval);
//! - `dispatch`: directives under the parallelism limit, catch-up and queued commits;
//! - `timers`: typed deadlines and wakeups, and which is next;
//! - `health`: per-group running aggregates, fleet-wide triggers and gate evaluation;
//! - `sweeps`: the lazy rollback, commit and final sweeps over the fleet;
//! - `events`: device and health reports, the device-level triggers, and the timeout sweep
//!   run before every input;
//! - `persist`: the persisted layout, kept field for field as it was when the state was one
//!   flat struct, so stored deployments load across the change.

mod device;
mod dispatch;
mod events;
mod gate_record;
mod health;
mod machine;
mod persist;
mod phase;
mod sweeps;
mod timers;
mod triggers;
mod types;
mod window;

pub use gate_record::{CheckOutcome, GateSummary};
pub use triggers::{cpu_check, cpu_limit};
pub use types::{
    Action, Check, Command, DeploymentStatus, DeviceEvent, DirectiveKind, GateVerdict,
    HealthReport, HealthStatus, Input, RollbackCause, RolloutError, StageResult, StatusCounts,
    SystemFigures, TargetStatus, Verdict,
};

use super::plan::{Breach, GateKind, Plan, StageKind, StageMode};
use super::{MINUTE, Millis};
use device::*;
use dispatch::Dispatch;
use health::{GroupAgg, Health, Trigger};
use machine::Machine;
use phase::{Phase, Scope};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use sweeps::{RollbackSweep, Sweeps};
use timers::{Timer, Timers};

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
    signals: triggers::Signals,
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
        let gates = window::GateState::for_plan(&plan);
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
                gates,
                ..Health::default()
            },
            sweeps: Sweeps::default(),
            signals: triggers::Signals::default(),
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

    /// The stage a target belongs to (O(1); blue-green's devices move to the switch stage
    /// when it dispatches them).
    pub fn target_stage(&self, device: u32) -> Option<u32> {
        self.devs.get(device as usize).map(|d| d.stage)
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
            Phase::Dispatching | Phase::StageDone if kind == Some(StageKind::Canary) => "CANARY",
            Phase::Dispatching | Phase::StageDone => "ROLLOUT",
        }
    }

    /// The earliest time the engine wants a `Tick`, or `None` if it waits only for input.
    pub fn poll_timeout(&self) -> Option<Millis> {
        if self.machine.status.is_terminal() && self.machine.phase == Phase::Done {
            return None;
        }
        let running = self.machine.status == DeploymentStatus::Running;
        // Fleet-wide triggers are checked only while running: a paused deployment waits for
        // its operator, and a rollback is already the strongest answer.
        let checks = running && self.sweeps.rollback.is_none();
        let stage = running
            .then(|| self.machine.phase.deadline())
            .flatten()
            .map(|at| Timer::Stage { at });
        let grace = self
            .sweeps
            .rollback
            .as_ref()
            .filter(|rb| rb.waiting > 0)
            .map(|rb| Timer::RollbackGrace { at: rb.grace_until });
        self.timers
            .pending(checks)
            .chain(stage)
            .chain(grace)
            .map(Timer::due_at)
            .min()
    }

    /// Whether feeding `input` at `now` would leave the engine exactly as it is: no timer is
    /// due, no action is waiting to be drained, and the input is a health report of a device
    /// that is not running the new version (or is offline), which [`Rollout::handle_input`]
    /// drops. The coordinator persists the inputs it feeds and replays them after a restart;
    /// an input this says is ignored needs no record, because skipping it changes nothing.
    /// It is conservative: `false` means "may change state", never "will".
    pub fn ignores(&self, now: Millis, input: &Input) -> bool {
        if !self.queue.is_empty() || self.poll_timeout().is_some_and(|t| t <= now) {
            return false;
        }
        match *input {
            Input::Health { device, .. } => self
                .devs
                .get(device as usize)
                .is_some_and(|d| !d.phase.active() || d.flags & device::F_OFFLINE != 0),
            // Already unreachable, or not on the new version: `on_device` does nothing.
            Input::Device {
                device,
                event: DeviceEvent::HealthUnreachable,
            } => self
                .devs
                .get(device as usize)
                .is_some_and(|d| !d.phase.active() || d.flags & device::F_UNREACHABLE != 0),
            Input::Device { .. } | Input::Command(_) | Input::Tick => false,
        }
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
                health::check_report(device, &report)?;
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
        self.dispatch.offline_changed(was_pending, is_pending);
        let now_active = phase.active();
        if was_active && !now_active {
            self.health.active -= 1;
            self.drop_metrics(d);
            self.signals.forget(d);
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

    /// The name of stage `s` as the plan spells it.
    fn stage_name(&self, s: u32) -> String {
        self.plan
            .stages
            .get(s as usize)
            .map_or_else(|| format!("stage {s}"), |st| st.name.clone())
    }

    /// Gives `d` a deploy deadline of the strategy's timeout from now; only its latest
    /// deadline counts.
    fn arm_deadline(&mut self, d: u32) {
        let at = self.now.saturating_add(self.plan.config.timeout);
        self.devs[d as usize].deadline = at;
        self.timers.deploy_by(d, at);
    }

    /// Takes `d`'s last report out of the health aggregates.
    fn drop_metrics(&mut self, d: u32) {
        let group = self.judged_as(d);
        self.health.remove(group, &mut self.devs[d as usize]);
    }

    /// Puts `d`'s last report into the health aggregates.
    fn add_metrics(&mut self, d: u32) {
        let group = self.judged_as(d);
        self.health.add(group, &mut self.devs[d as usize]);
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

    /// One unit of lazy work. Returns whether it did anything.
    fn lazy_step(&mut self) -> bool {
        match self.machine.phase {
            Phase::RollingBack => self.rollback_step(),
            Phase::Committing => self.commit_step(),
            Phase::Finalizing => self.final_step(),
            Phase::Prepare
            | Phase::Dispatching
            | Phase::Soaking { .. }
            | Phase::Gating { .. }
            | Phase::AwaitingApproval
            | Phase::StageDone
            | Phase::CatchUp { .. }
            | Phase::Completing { .. }
            | Phase::Done => self.dispatch_step(),
        }
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

    /// Skipped targets that were offline (unreachable) when skipped; the other skipped ones
    /// were never started because the deployment stopped first (O(fleet)).
    pub fn skipped_unreachable(&self) -> u64 {
        self.devs
            .iter()
            .filter(|d| d.phase == DevPhase::Skipped && d.flags & F_SKIPPED_OFFLINE != 0)
            .count() as u64
    }

    /// A target's last health report on the new version (error rate, p95 ms, memory MB), kept
    /// after its rollback (reports after it do not reach these figures); `None` when it sent
    /// none (all three zero). For incident reports.
    pub fn last_new_version_health(&self, device: u32) -> Option<[f32; 3]> {
        let d = self.devs.get(device as usize)?;
        let m = [d.error_rate, d.p95_ms, d.memory_mb];
        m.iter().any(|v| *v != 0.0).then_some(m)
    }

    /// Whether a target was skipped while offline (see [`Rollout::skipped_unreachable`]).
    pub fn target_unreachable(&self, device: u32) -> bool {
        self.devs
            .get(device as usize)
            .is_some_and(|d| d.flags & F_SKIPPED_OFFLINE != 0)
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
            (
                DeploymentStatus::Completed
                | DeploymentStatus::Failed
                | DeploymentStatus::RolledBack,
                _,
            ) => "none".into(),
            (
                DeploymentStatus::Running,
                Phase::Prepare
                | Phase::Committing
                | Phase::StageDone
                | Phase::Finalizing
                | Phase::Done,
            ) => "continue".into(),
        }
    }
}
