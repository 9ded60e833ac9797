//! The stage state machine: operator commands, the lifecycle of a stage (dispatch, soak,
//! gate, commit, approval) and what a stage's failures lead to.

use super::*;

/// The stage machine's own state: where the deployment is and what it has said about itself.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Machine {
    pub(super) status: DeploymentStatus,
    pub(super) phase: Phase,
    pub(super) created_at: Millis,
    pub(super) started_at: Option<Millis>,
    pub(super) ended_at: Option<Millis>,
    pub(super) stage: u32,
    pub(super) stages: Vec<StageResult>,
    pub(super) last_gate: Option<(u32, Verdict)>,
    pub(super) pause_reason: Option<String>,
    pub(super) status_reason: String,
    pub(super) last_action: String,
    pub(super) completion_verdict: Option<Verdict>,
}

impl Rollout {
    /// Applies the fleet-wide triggers (001 thresholds and, on health-check ticks, the trend).
    pub(super) fn apply_fleet_triggers(&mut self, trend: bool) {
        if self.fleet_system_triggers() {
            return;
        }
        match self.health.fleet_triggers(&self.plan, trend) {
            Some(Trigger::RollbackAll(reason)) => self.start_rollback(Scope::All, reason),
            Some(Trigger::Halt(reason)) => self.halt(reason),
            None => {}
        }
    }

    /// Evaluates `gate` for the current stage over all devices deployed so far.
    pub(super) fn evaluate_gate(&mut self, gate: GateKind) -> GateVerdict {
        let mut v = self.health.evaluate(
            &self.plan,
            &self.devs,
            (self.machine.stage, gate),
            self.now,
            &self.machine.stages,
        );
        self.system_checks(&mut v);
        v
    }

    pub(super) fn on_command(&mut self, c: Command) -> Result<(), RolloutError> {
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
                if let Some(why) = self.baseline_refusal() {
                    return refuse(&why);
                }
                self.machine.started_at = Some(self.now);
                self.set_status(DeploymentStatus::Running, "started by operator".into());
                self.audit(format!(
                    "start: {} to {} devices, {} stages",
                    self.plan.config.strategy.name(),
                    self.plan.len(),
                    self.plan.stages.len()
                ));
                self.timers.next_check = Some(
                    self.now
                        .saturating_add(self.plan.config.health_check_interval),
                );
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
                        deadline: self.now.saturating_add(self.plan.config.timeout),
                    };
                }
                if let Phase::Completing { .. } = self.machine.phase {
                    self.machine.phase = Phase::Completing {
                        deadline: self.now.saturating_add(self.plan.config.timeout),
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

    pub(super) fn begin_stage(&mut self, s: u32) {
        self.machine.stage = s;
        let spec = &self.plan.stages[s as usize];
        self.dispatch.start_stage(spec.start);
        self.machine.stages[s as usize].started_at = Some(self.now);
        self.machine.phase = Phase::Dispatching;
        self.machine.last_gate = None;
        let name = spec.name.clone();
        let len = spec.len();
        self.audit(format!("begin {name}: {len} devices"));
    }

    pub(super) fn count_failure(&mut self, d: u32) {
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

    pub(super) fn halt(&mut self, reason: String) {
        if self.machine.status == DeploymentStatus::Running {
            self.audit(format!("halt: {reason}"));
            self.set_status(DeploymentStatus::Paused, reason);
        }
    }

    pub(super) fn emit_gate(&mut self, v: &GateVerdict) {
        if self.machine.last_gate != Some((v.stage, v.verdict)) {
            self.machine.last_gate = Some((v.stage, v.verdict));
            self.queue.push_back(Action::Gate(v.clone()));
        }
    }

    /// Moves the stage machine forward as far as the state allows.
    pub(super) fn advance(&mut self) {
        for _ in 0..8 {
            if !self.advance_once() {
                return;
            }
        }
    }

    pub(super) fn advance_once(&mut self) -> bool {
        if self.machine.status != DeploymentStatus::Running {
            return false;
        }
        let now = self.now;
        match self.machine.phase {
            Phase::Dispatching => {
                let spec = &self.plan.stages[self.machine.stage as usize];
                if !self.dispatch.stage_settled(spec.end) {
                    return false;
                }
                let until = now.saturating_add(spec.soak);
                self.machine.stages[self.machine.stage as usize].soak_started_at = Some(now);
                self.machine.phase = Phase::Soaking { until };
                true
            }
            Phase::Soaking { until } => {
                if now < until {
                    return false;
                }
                self.machine.phase = Phase::Gating {
                    deadline: now.saturating_add(self.plan.config.timeout),
                };
                true
            }
            Phase::Gating { deadline } => {
                // Threshold triggers outrank a gate verdict: a fleet-wide error spike rolls
                // everything back even if it shows up first at a gate.
                self.apply_fleet_triggers(false);
                if self.machine.status != DeploymentStatus::Running
                    || self.machine.phase == Phase::RollingBack
                {
                    return true;
                }
                let spec = self.plan.stages[self.machine.stage as usize].clone();
                let v = self.evaluate_gate(spec.gate);
                let v = self.caution_or_fail(v);
                self.emit_gate(&v);
                match v.verdict {
                    Verdict::Caution => {
                        let until = self.extend_for_caution(&v, &spec.name);
                        self.machine.phase = Phase::Soaking { until };
                        true
                    }
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
                        deadline: now.saturating_add(self.plan.config.offline_grace),
                    };
                }
                true
            }
            Phase::CatchUp { deadline } => {
                let waiting = self.dispatch.waiting();
                if (waiting || self.dispatch.inflight > 0) && now < deadline {
                    return false;
                }
                self.machine.phase = Phase::Completing {
                    deadline: now.saturating_add(self.plan.config.timeout),
                };
                true
            }
            Phase::Completing { deadline } => {
                if self.health.gates.recheck_at.is_some_and(|t| now < t) {
                    return false;
                }
                if self.health.gates.recheck_at.take().is_some() {
                    // A CAUTION recheck: the progress deadline starts again.
                    self.machine.phase = Phase::Completing {
                        deadline: now.saturating_add(self.plan.config.timeout),
                    };
                    return true;
                }
                let v = self.evaluate_gate(GateKind::Completion);
                let v = self.caution_or_fail(v);
                self.emit_gate(&v);
                match v.verdict {
                    Verdict::Caution => {
                        let until = self.extend_for_caution(&v, "completion");
                        self.health.gates.recheck_at = Some(until);
                        self.machine.phase = Phase::Completing { deadline: until };
                        true
                    }
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
            // Dispatch, commits, rollbacks and the final sweep move on in `poll_action`; the
            // rest wait for an operator or have nothing left to do.
            Phase::Prepare
            | Phase::Committing
            | Phase::AwaitingApproval
            | Phase::RollingBack
            | Phase::Finalizing
            | Phase::Done => false,
        }
    }
}
