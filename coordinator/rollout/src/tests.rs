//! Scenario and property tests of the rollout engine.
//!
//! The harness answers directives at once (device replies take no virtual time) through a
//! responder the test chooses, and jumps time to the engine's next timeout. Each scenario
//! checks what an operator relies on: who got which directive, the statuses, and the verdicts.

use super::engine::{
    Action, Command, DeploymentStatus, DeviceEvent, DirectiveKind, HealthReport, HealthStatus,
    Input, latency_limit,
};
use super::plan::{Baseline, Plan, Strategy, StrategyConfig, TargetFlags, TargetSpec};
use super::sim::{self, SimConfig};
use super::{MINUTE, Millis, Rollout, RolloutError, TargetStatus, Verdict};
use proptest::prelude::*;
use std::collections::HashMap;

const TYPES: [&str; 2] = ["pi", "jetson"];

fn baselines() -> HashMap<String, Baseline> {
    TYPES
        .iter()
        .map(|t| {
            (
                t.to_string(),
                Baseline {
                    error_rate: 0.01,
                    p95_ms: 100.0,
                    memory_mb: 200.0,
                },
            )
        })
        .collect()
}

fn plan(cfg: StrategyConfig, n: usize) -> Plan {
    let targets = (0..n).map(|i| TargetSpec {
        id: format!("d{i}"),
        device_type: TYPES[i % 2].to_string(),
        region: ["eu", "us"][(i / 2) % 2].to_string(),
        flags: TargetFlags::default(),
        monitoring: (i % 5) as u8,
    });
    match Plan::new("flow v2", cfg, targets, &baselines(), 42) {
        Ok(p) => p,
        Err(e) => panic!("plan: {e}"),
    }
}

fn good() -> HealthReport {
    HealthReport {
        status: HealthStatus::Healthy,
        error_rate: 0.01,
        p95_ms: 100.0,
        memory_mb: 200.0,
        restarts: 0,
    }
}

/// What a simulated device answers to a directive, at once.
type Responder = Box<dyn FnMut(u32, DirectiveKind, Millis) -> Vec<Input>>;

fn healthy_responder() -> Responder {
    Box::new(|d, kind, _| match kind {
        DirectiveKind::Stage => vec![dev(d, DeviceEvent::Staged)],
        DirectiveKind::Switch => vec![
            dev(d, DeviceEvent::Switched),
            Input::Health {
                device: d,
                report: good(),
            },
        ],
        DirectiveKind::Rollback => vec![dev(d, DeviceEvent::RolledBack)],
        DirectiveKind::Commit => vec![],
    })
}

/// Devices that do as told and, once switched, report `report`.
fn reports_after_switch(report: HealthReport) -> Responder {
    Box::new(move |d, kind, _| match kind {
        DirectiveKind::Stage => vec![dev(d, DeviceEvent::Staged)],
        DirectiveKind::Switch => vec![
            dev(d, DeviceEvent::Switched),
            Input::Health { device: d, report },
        ],
        DirectiveKind::Rollback => vec![dev(d, DeviceEvent::RolledBack)],
        DirectiveKind::Commit => vec![],
    })
}

fn dev(device: u32, event: DeviceEvent) -> Input {
    Input::Device { device, event }
}

struct H {
    r: Rollout,
    now: Millis,
    log: Vec<(Millis, Action)>,
    respond: Responder,
    max_in_flight: u32,
}

impl H {
    fn new(cfg: StrategyConfig, n: usize) -> H {
        H {
            r: Rollout::new(plan(cfg, n), 0),
            now: 0,
            log: Vec::new(),
            respond: healthy_responder(),
            max_in_flight: 0,
        }
    }

    fn send(&mut self, input: Input) -> Result<(), RolloutError> {
        self.r.handle_input(self.now, input)?;
        self.drain();
        Ok(())
    }

    fn cmd(&mut self, c: Command) -> Result<(), RolloutError> {
        self.send(Input::Command(c))
    }

    fn drain(&mut self) {
        let mut pending: Vec<Input> = Vec::new();
        loop {
            while let Some(a) = self.r.poll_action() {
                if let Action::Directive { device, kind, .. } = &a {
                    pending.extend((self.respond)(*device, *kind, self.now));
                }
                self.log.push((self.now, a));
            }
            self.max_in_flight = self.max_in_flight.max(self.r.in_flight());
            if pending.is_empty() {
                return;
            }
            for i in std::mem::take(&mut pending) {
                if let Err(e) = self.r.handle_input(self.now, i) {
                    panic!("input refused: {e}");
                }
                while let Some(a) = self.r.poll_action() {
                    if let Action::Directive { device, kind, .. } = &a {
                        pending.extend((self.respond)(*device, *kind, self.now));
                    }
                    self.log.push((self.now, a));
                }
                self.max_in_flight = self.max_in_flight.max(self.r.in_flight());
            }
        }
    }

    /// Runs timers until `until` (or until the engine has nothing scheduled).
    fn run_until(&mut self, until: Millis) {
        let mut steps = 0;
        while let Some(t) = self.r.poll_timeout() {
            if t > until {
                break;
            }
            steps += 1;
            assert!(steps < 1_000_000, "livelock");
            self.now = self.now.max(t);
            if let Err(e) = self.send(Input::Tick) {
                panic!("tick refused: {e}");
            }
        }
        self.now = self.now.max(until);
    }

    fn run_to_end(&mut self) {
        self.run_until(Millis::MAX / 2);
    }

    fn directives(&self, kind: DirectiveKind) -> Vec<u32> {
        self.log
            .iter()
            .filter_map(|(_, a)| match a {
                Action::Directive {
                    device, kind: k, ..
                } if *k == kind => Some(*device),
                _ => None,
            })
            .collect()
    }

    fn statuses(&self) -> Vec<TargetStatus> {
        (0..self.r.plan().len() as u32)
            .filter_map(|d| self.r.target_status(d))
            .collect()
    }

    fn all(&self, s: TargetStatus) -> bool {
        self.statuses().iter().all(|x| *x == s)
    }

    fn stage_of_first_directive_to_non_canary(&self) -> bool {
        let canary = &self.r.plan().canary;
        self.directives(DirectiveKind::Stage)
            .iter()
            .any(|d| !canary.contains(d))
    }
}

#[test]
fn every_strategy_completes_on_a_healthy_fleet() {
    for (strategy, n) in [
        (Strategy::AllAtOnce, 8),
        (Strategy::Rolling, 25),
        (Strategy::Canary, 30),
        (Strategy::BlueGreen, 10),
        (Strategy::CanaryWaves, 100),
        (Strategy::Steps, 40),
    ] {
        let mut cfg = StrategyConfig::defaults(strategy);
        cfg.require_approval = false;
        let mut h = H::new(cfg, n);
        assert!(h.cmd(Command::Start).is_ok());
        h.run_to_end();
        assert_eq!(
            h.r.status(),
            DeploymentStatus::Completed,
            "{strategy:?}: {:?}",
            h.r.pause_reason()
        );
        assert!(h.all(TargetStatus::Success), "{strategy:?}");
        assert_eq!(
            h.directives(DirectiveKind::Commit).len(),
            n,
            "{strategy:?}: one commit per device"
        );
        assert!(h.directives(DirectiveKind::Rollback).is_empty());
        if strategy == Strategy::Rolling {
            assert!(
                h.max_in_flight <= 10,
                "rolling had {} deploying",
                h.max_in_flight
            );
        }
    }
}

#[test]
fn rolling_waits_the_batch_delay_between_batches() {
    let mut h = H::new(StrategyConfig::defaults(Strategy::Rolling), 25);
    assert!(h.cmd(Command::Start).is_ok());
    h.run_to_end();
    let stage_times: Vec<Millis> = h
        .log
        .iter()
        .filter_map(|(t, a)| {
            matches!(
                a,
                Action::Directive {
                    kind: DirectiveKind::Stage,
                    ..
                }
            )
            .then_some(*t)
        })
        .collect();
    assert_eq!(stage_times[0], 0);
    assert_eq!(
        stage_times[10],
        5 * MINUTE,
        "batch 2 begins after the 5 min batch delay"
    );
    assert_eq!(stage_times[20], 10 * MINUTE);
}

#[test]
fn blue_green_stages_everywhere_then_switches_after_the_delay() {
    let mut h = H::new(StrategyConfig::defaults(Strategy::BlueGreen), 10);
    assert!(h.cmd(Command::Start).is_ok());
    h.run_to_end();
    let last_stage = h.log.iter().rposition(|(_, a)| {
        matches!(
            a,
            Action::Directive {
                kind: DirectiveKind::Stage,
                ..
            }
        )
    });
    let first_switch = h.log.iter().position(|(_, a)| {
        matches!(
            a,
            Action::Directive {
                kind: DirectiveKind::Switch,
                ..
            }
        )
    });
    assert!(
        last_stage < first_switch,
        "every device is staged before any switch"
    );
    let switch_at = first_switch.map(|i| h.log[i].0);
    assert_eq!(
        switch_at,
        Some(10 * MINUTE),
        "switch after the 10 min switch delay"
    );
    assert_eq!(h.r.status(), DeploymentStatus::Completed);
}

#[test]
fn blue_green_rollback_switches_back_without_transfer() {
    let mut h = H::new(StrategyConfig::defaults(Strategy::BlueGreen), 6);
    h.respond = Box::new(|d, kind, _| match kind {
        DirectiveKind::Stage => vec![dev(d, DeviceEvent::Staged)],
        DirectiveKind::Switch if d == 3 => vec![
            dev(d, DeviceEvent::Switched),
            dev(d, DeviceEvent::Unhealthy),
        ],
        DirectiveKind::Switch => vec![
            dev(d, DeviceEvent::Switched),
            Input::Health {
                device: d,
                report: good(),
            },
        ],
        DirectiveKind::Rollback => vec![dev(d, DeviceEvent::RolledBack)],
        DirectiveKind::Commit => vec![],
    });
    assert!(h.cmd(Command::Start).is_ok());
    h.run_to_end();
    assert_eq!(h.r.status(), DeploymentStatus::RolledBack);
    // Six stage directives only (no re-transfer); every switched device got a rollback.
    assert_eq!(h.directives(DirectiveKind::Stage).len(), 6);
    let switched = h.directives(DirectiveKind::Switch);
    let mut rolled = h.directives(DirectiveKind::Rollback);
    rolled.sort_unstable();
    rolled.dedup();
    for d in switched {
        assert!(
            rolled.contains(&d),
            "device {d} switched but was not switched back"
        );
    }
    assert!(h.statuses().iter().all(|s| s.is_terminal()));
}

fn canary_waves(n: usize) -> H {
    H::new(StrategyConfig::defaults(Strategy::CanaryWaves), n)
}

#[test]
fn a_failed_canary_rolls_back_and_never_reaches_wave_1() {
    let mut h = canary_waves(200);
    let bad = h.r.plan().canary[0];
    h.respond = Box::new(move |d, kind, _| match kind {
        DirectiveKind::Stage if d == bad => vec![dev(d, DeviceEvent::Failed)],
        DirectiveKind::Stage => vec![dev(d, DeviceEvent::Staged)],
        DirectiveKind::Switch => vec![
            dev(d, DeviceEvent::Switched),
            Input::Health {
                device: d,
                report: good(),
            },
        ],
        DirectiveKind::Rollback => vec![dev(d, DeviceEvent::RolledBack)],
        DirectiveKind::Commit => vec![],
    });
    assert!(h.cmd(Command::Start).is_ok());
    h.run_to_end();
    assert_eq!(h.r.status(), DeploymentStatus::RolledBack);
    assert!(!h.stage_of_first_directive_to_non_canary());
    assert_eq!(h.r.target_status(bad), Some(TargetStatus::Failed));
    assert!(h.statuses().iter().all(|s| s.is_terminal()));
}

/// A canary that switches and then reports unhealthy gets a device-level rollback, which
/// trips the canary threshold and starts the full rollback. The deployment must wait for that
/// device's rollback to be confirmed: it may not end while the device still runs the new
/// version, and the device ends quarantined (its own failure), not skipped.
#[test]
fn full_rollback_waits_for_a_device_rollback_already_in_flight() {
    let mut h = H::new(StrategyConfig::defaults(Strategy::Canary), 20);
    let canary = h.r.plan().canary.clone();
    let bad = canary[0];
    h.respond = Box::new(move |d, kind, _| match kind {
        DirectiveKind::Stage => vec![dev(d, DeviceEvent::Staged)],
        DirectiveKind::Switch if d == bad => vec![
            dev(d, DeviceEvent::Switched),
            Input::Health {
                device: d,
                report: HealthReport {
                    status: HealthStatus::Unhealthy,
                    ..good()
                },
            },
        ],
        DirectiveKind::Switch => vec![
            dev(d, DeviceEvent::Switched),
            Input::Health {
                device: d,
                report: good(),
            },
        ],
        // The bad canary confirms its rollback only later (below).
        DirectiveKind::Rollback if d == bad => vec![],
        DirectiveKind::Rollback => vec![dev(d, DeviceEvent::RolledBack)],
        DirectiveKind::Commit => vec![],
    });
    assert!(h.cmd(Command::Start).is_ok());
    h.run_until(10_000);
    assert!(h.directives(DirectiveKind::Rollback).contains(&bad));
    assert!(
        !h.r.status().is_terminal(),
        "ended as {:?} while the canary has not confirmed its rollback",
        h.r.status()
    );
    assert!(h.send(dev(bad, DeviceEvent::RolledBack)).is_ok());
    h.run_to_end();
    assert_eq!(h.r.status(), DeploymentStatus::RolledBack);
    assert_eq!(h.r.target_status(bad), Some(TargetStatus::Quarantined));
    assert!(h.statuses().iter().all(|s| s.is_terminal()));
}

#[test]
fn canary_gate_failure_on_metrics_rolls_back_everything() {
    let mut h = canary_waves(200);
    // Error rate baseline + 3 %: over the canary gate's +2 %, under the +10 % spike.
    h.respond = reports_after_switch(HealthReport {
        error_rate: 0.04,
        ..good()
    });
    assert!(h.cmd(Command::Start).is_ok());
    h.run_to_end();
    assert_eq!(h.r.status(), DeploymentStatus::RolledBack);
    let gate = h.log.iter().find_map(|(t, a)| match a {
        Action::Gate(v) if v.verdict == Verdict::Fail => Some((*t, v.reason.clone())),
        _ => None,
    });
    let (t, reason) = gate.unwrap_or_default();
    assert_eq!(t, 30 * MINUTE, "judged after the 30 min canary soak");
    assert!(reason.contains("error_rate"), "{reason}");
    assert!(!h.stage_of_first_directive_to_non_canary());
}

#[test]
fn approval_is_required_after_the_canary_and_wrong_commands_are_refused() {
    let mut h = canary_waves(100);
    // Pending: only start and abort fit.
    for c in [
        Command::Resume,
        Command::Approve,
        Command::Pause,
        Command::Rollback,
    ] {
        let e = h.cmd(c).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("pending"), "{c}: {e}");
    }
    assert!(h.cmd(Command::Start).is_ok());
    assert!(h.cmd(Command::Start).is_err());
    assert!(
        h.cmd(Command::Approve).is_err(),
        "nothing awaits approval during the canary"
    );
    h.run_until(40 * MINUTE);
    assert!(h.r.awaiting_approval());
    assert!(
        h.log
            .iter()
            .any(|(_, a)| matches!(a, Action::ApprovalRequired { stage: 0 }))
    );
    assert!(
        !h.stage_of_first_directive_to_non_canary(),
        "no wave before approval"
    );
    // Pause while waiting, approve is refused until resumed.
    assert!(h.cmd(Command::Pause).is_ok());
    assert!(h.cmd(Command::Pause).is_err());
    assert!(h.cmd(Command::Approve).is_err());
    assert!(h.cmd(Command::Resume).is_ok());
    assert!(h.cmd(Command::Approve).is_ok());
    assert!(h.stage_of_first_directive_to_non_canary());
    h.run_to_end();
    assert_eq!(h.r.status(), DeploymentStatus::Completed);
    for c in [
        Command::Start,
        Command::Pause,
        Command::Resume,
        Command::Approve,
        Command::Rollback,
        Command::Abort,
    ] {
        let e = h.cmd(c).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("completed deployment"), "{c}: {e}");
    }
}

#[test]
fn operator_rollback_works_at_every_phase() {
    // Times chosen to land in: canary dispatch, canary soak, approval wait, wave-1 soak,
    // wave-3 soak.
    for at in [0, 10 * MINUTE, 35 * MINUTE, 45 * MINUTE, 80 * MINUTE] {
        let mut cfg = StrategyConfig::defaults(Strategy::CanaryWaves);
        cfg.max_parallel = 5;
        let mut h = H::new(cfg, 100);
        assert!(h.cmd(Command::Start).is_ok());
        h.run_until(at);
        if h.r.awaiting_approval() && at > 40 * MINUTE {
            assert!(h.cmd(Command::Approve).is_ok());
            h.run_until(at + 5 * MINUTE);
        }
        assert!(h.cmd(Command::Rollback).is_ok(), "rollback at {at}");
        assert!(
            h.cmd(Command::Rollback).is_err(),
            "a second rollback is refused"
        );
        h.run_to_end();
        assert_eq!(h.r.status(), DeploymentStatus::RolledBack, "at {at}");
        assert!(
            h.statuses()
                .iter()
                .all(|s| matches!(s, TargetStatus::RolledBack | TargetStatus::Skipped))
        );
    }
}

#[test]
fn pause_stops_new_directives_and_resume_continues() {
    let mut cfg = StrategyConfig::defaults(Strategy::Rolling);
    cfg.batch_size = 5;
    cfg.max_parallel = 5;
    let mut h = H::new(cfg, 20);
    assert!(h.cmd(Command::Start).is_ok());
    assert!(h.cmd(Command::Pause).is_ok());
    let before = h.directives(DirectiveKind::Stage).len();
    h.run_until(60 * MINUTE);
    assert_eq!(
        h.directives(DirectiveKind::Stage).len(),
        before,
        "no new stage while paused"
    );
    assert_eq!(h.r.status(), DeploymentStatus::Paused);
    assert!(h.cmd(Command::Resume).is_ok());
    h.run_to_end();
    assert_eq!(h.r.status(), DeploymentStatus::Completed);
}

#[test]
fn abort_rolls_back_uncommitted_devices_and_fails() {
    let mut h = canary_waves(100);
    assert!(h.cmd(Command::Start).is_ok());
    h.run_until(40 * MINUTE);
    assert!(h.cmd(Command::Approve).is_ok());
    h.run_until(41 * MINUTE);
    assert!(h.cmd(Command::Abort).is_ok());
    h.run_to_end();
    assert_eq!(h.r.status(), DeploymentStatus::Failed);
    let canary = h.r.plan().canary.clone();
    for d in canary {
        assert_eq!(
            h.r.target_status(d),
            Some(TargetStatus::Success),
            "committed canary keeps the version"
        );
    }
    assert!(h.statuses().iter().all(|s| s.is_terminal()));
}

#[test]
fn crash_loop_rolls_back_that_device_only() {
    // Device 34 is in batch 4: one quarantined device of 60 keeps the gates'
    // healthy shares (at least 97.5 %) above 95 % and, at completion, 98 %.
    let mut h = H::new(StrategyConfig::defaults(Strategy::Rolling), 60);
    h.respond = Box::new(|d, kind, _| match kind {
        DirectiveKind::Stage => vec![dev(d, DeviceEvent::Staged)],
        DirectiveKind::Switch if d == 34 => vec![dev(d, DeviceEvent::Switched)],
        DirectiveKind::Switch => vec![
            dev(d, DeviceEvent::Switched),
            Input::Health {
                device: d,
                report: good(),
            },
        ],
        DirectiveKind::Rollback => vec![dev(d, DeviceEvent::RolledBack)],
        DirectiveKind::Commit => vec![],
    });
    assert!(h.cmd(Command::Start).is_ok());
    h.run_until(15 * MINUTE);
    assert_eq!(h.r.target_status(34), Some(TargetStatus::Deploying));
    for (i, restarts) in [1u32, 2, 3].into_iter().enumerate() {
        h.now = 15 * MINUTE + (i as Millis + 1) * MINUTE;
        let report = HealthReport {
            status: HealthStatus::Degraded,
            restarts,
            ..good()
        };
        assert!(h.send(Input::Health { device: 34, report }).is_ok());
    }
    assert_eq!(h.directives(DirectiveKind::Rollback), vec![34]);
    assert_eq!(h.r.target_status(34), Some(TargetStatus::Quarantined));
    h.run_to_end();
    assert_eq!(
        h.r.status(),
        DeploymentStatus::Completed,
        "{:?}",
        h.r.pause_reason()
    );
    assert_eq!(h.r.target_status(34), Some(TargetStatus::Quarantined));
    assert_eq!(h.r.stage_results()[3].failed, 1);
}

#[test]
fn restarts_spread_over_more_than_five_minutes_are_not_a_crash_loop() {
    let mut h = H::new(StrategyConfig::defaults(Strategy::Rolling), 10);
    h.respond = Box::new(|d, kind, _| match kind {
        DirectiveKind::Stage => vec![dev(d, DeviceEvent::Staged)],
        DirectiveKind::Switch => vec![dev(d, DeviceEvent::Switched)],
        _ => vec![],
    });
    assert!(h.cmd(Command::Start).is_ok());
    for (i, restarts) in [1u32, 2, 3].into_iter().enumerate() {
        h.now = i as Millis * 3 * MINUTE;
        let report = HealthReport {
            status: HealthStatus::Degraded,
            restarts,
            ..good()
        };
        assert!(h.send(Input::Health { device: 4, report }).is_ok());
    }
    assert!(h.directives(DirectiveKind::Rollback).is_empty());
}

#[test]
fn unreachable_health_endpoint_for_over_two_minutes_rolls_back_the_device() {
    let mut h = H::new(StrategyConfig::defaults(Strategy::Rolling), 10);
    assert!(h.cmd(Command::Start).is_ok());
    assert!(h.send(dev(2, DeviceEvent::HealthUnreachable)).is_ok());
    h.run_until(2 * MINUTE);
    assert!(
        h.directives(DirectiveKind::Rollback).is_empty(),
        "exactly 2 min is not over 2 min"
    );
    h.run_until(2 * MINUTE + 1);
    assert_eq!(h.directives(DirectiveKind::Rollback), vec![2]);
    // A device that recovers in time is left alone.
    let mut h = H::new(StrategyConfig::defaults(Strategy::Rolling), 10);
    assert!(h.cmd(Command::Start).is_ok());
    assert!(h.send(dev(3, DeviceEvent::HealthUnreachable)).is_ok());
    h.now = MINUTE;
    assert!(
        h.send(Input::Health {
            device: 3,
            report: good()
        })
        .is_ok()
    );
    h.run_until(10 * MINUTE);
    assert!(h.directives(DirectiveKind::Rollback).is_empty());
}

#[test]
fn wave_failures_over_threshold_roll_back_the_wave_and_halt_for_a_human() {
    let mut cfg = StrategyConfig::defaults(Strategy::CanaryWaves);
    cfg.require_approval = false;
    let mut h = H::new(cfg, 200);
    let wave1: Vec<u32> = {
        let p = h.r.plan();
        let s = &p.stages[1];
        p.order[s.start as usize..s.end as usize].to_vec()
    };
    // Three wave-1 devices fail to stage: 3 of 30 = 10 % > 5 %.
    let bad: Vec<u32> = wave1[..3].to_vec();
    let bad2 = bad.clone();
    h.respond = Box::new(move |d, kind, _| match kind {
        DirectiveKind::Stage if bad2.contains(&d) => vec![dev(d, DeviceEvent::Failed)],
        DirectiveKind::Stage => vec![dev(d, DeviceEvent::Staged)],
        DirectiveKind::Switch => vec![
            dev(d, DeviceEvent::Switched),
            Input::Health {
                device: d,
                report: good(),
            },
        ],
        DirectiveKind::Rollback => vec![dev(d, DeviceEvent::RolledBack)],
        DirectiveKind::Commit => vec![],
    });
    assert!(h.cmd(Command::Start).is_ok());
    h.run_until(10 * 60 * MINUTE);
    assert_eq!(h.r.status(), DeploymentStatus::Paused);
    let reason = h.r.pause_reason().unwrap_or_default().to_string();
    assert!(reason.contains("wave-1 rolled back"), "{reason}");
    for d in &wave1 {
        let s = h.r.target_status(*d);
        assert!(
            matches!(
                s,
                Some(TargetStatus::RolledBack | TargetStatus::Failed | TargetStatus::Skipped)
            ),
            "{d}: {s:?}"
        );
    }
    // Canary devices keep the new version; wave 2 has not started.
    let wave2_start = h.r.plan().stages[2].start as usize;
    let w2 = h.r.plan().order[wave2_start];
    assert_eq!(h.r.target_status(w2), Some(TargetStatus::Pending));
    // The human decides to continue: waves 2 and 3 deploy, but with wave 1 rolled back only
    // 85 % of the fleet has the version, so the completion gate (coverage >= 95 %) halts.
    assert!(h.cmd(Command::Resume).is_ok());
    h.run_to_end();
    assert_eq!(h.r.target_status(w2), Some(TargetStatus::Success));
    assert_eq!(h.r.status(), DeploymentStatus::Paused);
    let reason = h.r.pause_reason().unwrap_or_default().to_string();
    assert!(
        reason.contains("completion gate failed") && reason.contains("fleet_coverage"),
        "{reason}"
    );
    assert!(h.cmd(Command::Abort).is_ok());
    h.run_to_end();
    assert_eq!(h.r.status(), DeploymentStatus::Failed);
    assert_eq!(
        h.r.target_status(w2),
        Some(TargetStatus::Success),
        "committed devices keep the version"
    );
}

#[test]
fn fleet_error_spike_rolls_back_everything() {
    let mut cfg = StrategyConfig::defaults(Strategy::Rolling);
    cfg.batch_size = 5;
    cfg.max_parallel = 5;
    let mut h = H::new(cfg, 20);
    assert!(h.cmd(Command::Start).is_ok());
    h.run_until(12 * MINUTE);
    // Every deployed device now reports baseline + 12 %, and so do the next ones.
    let bad = HealthReport {
        error_rate: 0.13,
        ..good()
    };
    h.respond = Box::new(move |d, kind, _| match kind {
        DirectiveKind::Stage => vec![dev(d, DeviceEvent::Staged)],
        DirectiveKind::Switch => vec![
            dev(d, DeviceEvent::Switched),
            Input::Health {
                device: d,
                report: bad,
            },
        ],
        DirectiveKind::Rollback => vec![dev(d, DeviceEvent::RolledBack)],
        DirectiveKind::Commit => vec![],
    });
    for d in 0..20u32 {
        if matches!(
            h.r.target_status(d),
            Some(TargetStatus::Success | TargetStatus::Deploying)
        ) {
            assert!(
                h.send(Input::Health {
                    device: d,
                    report: bad
                })
                .is_ok()
            );
        }
    }
    h.run_to_end();
    assert_eq!(
        h.r.status(),
        DeploymentStatus::RolledBack,
        "{:?}",
        h.r.pause_reason()
    );
    assert!(h.log.iter().any(
        |(_, a)| matches!(a, Action::Audit { event, .. } if event.contains("error_rate_spike"))
    ));
}

#[test]
fn latency_spike_halts_for_assessment() {
    let mut cfg = StrategyConfig::defaults(Strategy::Rolling);
    cfg.batch_size = 5;
    cfg.max_parallel = 5;
    let mut h = H::new(cfg, 20);
    assert!(h.cmd(Command::Start).is_ok());
    h.run_until(MINUTE);
    for d in 0..5u32 {
        let report = HealthReport {
            p95_ms: 250.0,
            ..good()
        };
        assert!(h.send(Input::Health { device: d, report }).is_ok());
    }
    h.run_until(2 * MINUTE);
    assert_eq!(h.r.status(), DeploymentStatus::Paused);
    assert!(
        h.r.pause_reason()
            .unwrap_or_default()
            .contains("latency_spike")
    );
    assert!(
        h.directives(DirectiveKind::Rollback).is_empty(),
        "halt, not rollback"
    );
}

#[test]
fn sub_millisecond_latency_noise_neither_fails_a_gate_nor_halts() {
    // A simple flow: baseline p95 24 us. Devices then report 60 us, 2.5 times the baseline
    // (over the wave gate's +30 % and the 2x spike) but 36 us in absolute terms.
    let tiny: HashMap<String, Baseline> = TYPES
        .iter()
        .map(|t| {
            let b = Baseline {
                error_rate: 0.01,
                p95_ms: 0.024,
                memory_mb: 200.0,
            };
            (t.to_string(), b)
        })
        .collect();
    let targets = (0..10).map(|i| TargetSpec {
        id: format!("d{i}"),
        device_type: TYPES[i % 2].to_string(),
        region: "eu".to_string(),
        flags: TargetFlags::default(),
        monitoring: 0,
    });
    let mut cfg = StrategyConfig::defaults(Strategy::Rolling);
    cfg.batch_size = 5;
    cfg.max_parallel = 5;
    let plan = Plan::new("flow v2", cfg, targets, &tiny, 42).unwrap();
    let mut h = H::new(StrategyConfig::defaults(Strategy::Rolling), 1);
    h.r = Rollout::new(plan, 0);
    h.respond = reports_after_switch(HealthReport {
        p95_ms: 0.060,
        ..good()
    });
    assert!(h.cmd(Command::Start).is_ok());
    h.run_to_end();
    assert_eq!(h.r.status(), DeploymentStatus::Completed);
    // A rise past the slack still fails: 1.2 ms over a 24 us baseline.
    assert!(0.024 + 1.2 > latency_limit(0.024, 1.3));
    assert_eq!(latency_limit(100.0, 1.3), 130.0);
    assert_eq!(latency_limit(0.024, 2.0), 1.024);
}

#[test]
fn memory_leak_rolls_back_the_affected_device() {
    let mut h = H::new(StrategyConfig::defaults(Strategy::Rolling), 10);
    h.respond = Box::new(|d, kind, _| match kind {
        DirectiveKind::Stage => vec![dev(d, DeviceEvent::Staged)],
        DirectiveKind::Switch => vec![dev(d, DeviceEvent::Switched)],
        DirectiveKind::Rollback => vec![dev(d, DeviceEvent::RolledBack)],
        _ => vec![],
    });
    assert!(h.cmd(Command::Start).is_ok());
    for d in 0..10u32 {
        assert!(
            h.send(Input::Health {
                device: d,
                report: good()
            })
            .is_ok()
        );
    }
    h.now = 10 * MINUTE;
    // Device 1 grew 6 % in 10 minutes (> 5 %), device 2 grew 3 % (tolerated by the trigger).
    let leak = HealthReport {
        memory_mb: 212.0,
        ..good()
    };
    let mild = HealthReport {
        memory_mb: 206.0,
        ..good()
    };
    assert!(
        h.send(Input::Health {
            device: 1,
            report: leak
        })
        .is_ok()
    );
    assert!(
        h.send(Input::Health {
            device: 2,
            report: mild
        })
        .is_ok()
    );
    assert_eq!(h.directives(DirectiveKind::Rollback), vec![1]);
    assert_eq!(h.r.target_status(1), Some(TargetStatus::Quarantined));
}

#[test]
fn rising_error_rate_over_three_checks_halts() {
    let mut cfg = StrategyConfig::defaults(Strategy::Rolling);
    cfg.batch_delay = 60 * MINUTE;
    let mut h = H::new(cfg, 10);
    assert!(h.cmd(Command::Start).is_ok());
    for (k, rate) in [0.012f32, 0.015, 0.018, 0.021].into_iter().enumerate() {
        h.run_until((k as Millis + 1) * 30_000 - 1);
        for d in 0..10u32 {
            let report = HealthReport {
                error_rate: rate,
                ..good()
            };
            assert!(h.send(Input::Health { device: d, report }).is_ok());
        }
        h.run_until((k as Millis + 1) * 30_000);
    }
    assert_eq!(h.r.status(), DeploymentStatus::Paused);
    assert!(
        h.r.pause_reason()
            .unwrap_or_default()
            .contains("gradual_degradation")
    );
}

#[test]
fn offline_devices_are_skipped_queued_and_caught_up_never_failed() {
    let mut cfg = StrategyConfig::defaults(Strategy::Rolling);
    cfg.batch_size = 5;
    cfg.max_parallel = 5;
    let mut h = H::new(cfg, 20);
    assert!(h.send(dev(2, DeviceEvent::Offline)).is_ok());
    assert!(h.send(dev(17, DeviceEvent::Offline)).is_ok());
    assert!(h.cmd(Command::Start).is_ok());
    assert!(
        !h.directives(DirectiveKind::Stage).contains(&2),
        "offline device is skipped"
    );
    assert_eq!(h.r.target_status(2), Some(TargetStatus::Offline));
    h.run_until(7 * MINUTE);
    assert!(h.send(dev(2, DeviceEvent::Online)).is_ok());
    assert!(
        h.directives(DirectiveKind::Stage).contains(&2),
        "caught up on return"
    );
    h.run_to_end();
    assert_eq!(
        h.r.status(),
        DeploymentStatus::Completed,
        "{:?}",
        h.r.pause_reason()
    );
    assert_eq!(h.r.target_status(2), Some(TargetStatus::Success));
    assert_eq!(
        h.r.target_status(17),
        Some(TargetStatus::Skipped),
        "never returned: skipped, not failed"
    );
    assert!(h.r.stage_results().iter().all(|s| s.failed == 0));
}

#[test]
fn a_device_that_goes_offline_mid_deploy_gets_its_directive_again() {
    let mut h = H::new(StrategyConfig::defaults(Strategy::AllAtOnce), 4);
    h.respond = Box::new(|d, kind, _| match kind {
        DirectiveKind::Stage if d == 1 => vec![dev(d, DeviceEvent::Offline)],
        DirectiveKind::Stage => vec![dev(d, DeviceEvent::Staged)],
        DirectiveKind::Switch => vec![
            dev(d, DeviceEvent::Switched),
            Input::Health {
                device: d,
                report: good(),
            },
        ],
        _ => vec![],
    });
    assert!(h.cmd(Command::Start).is_ok());
    let first_gen = h.log.iter().find_map(|(_, a)| match a {
        Action::Directive {
            device: 1,
            generation,
            ..
        } => Some(*generation),
        _ => None,
    });
    h.respond = healthy_responder();
    h.now = 20 * MINUTE;
    assert!(h.send(dev(1, DeviceEvent::Online)).is_ok());
    let stages_to_1 = h.log.iter().filter(|(_, a)| matches!(a, Action::Directive { device: 1, kind: DirectiveKind::Stage, generation, .. } if Some(*generation) == first_gen)).count();
    assert_eq!(
        stages_to_1, 2,
        "the same directive, same generation, sent again"
    );
    h.run_to_end();
    assert_eq!(h.r.status(), DeploymentStatus::Completed);
}

#[test]
fn without_a_quorum_the_gate_waits_and_pauses_at_the_deadline() {
    let mut cfg = StrategyConfig::defaults(Strategy::CanaryWaves);
    cfg.require_approval = false;
    let mut h = H::new(cfg, 100);
    assert!(h.cmd(Command::Start).is_ok());
    h.run_until(40 * MINUTE);
    // Wave 1 is deploying; take most devices that have the version offline.
    let deployed: Vec<u32> = (0..100u32)
        .filter(|d| {
            matches!(
                h.r.target_status(*d),
                Some(TargetStatus::Success | TargetStatus::Deploying)
            )
        })
        .collect();
    for d in deployed.iter().skip(2) {
        assert!(h.send(dev(*d, DeviceEvent::Offline)).is_ok());
    }
    h.run_until(24 * 60 * MINUTE);
    assert_eq!(h.r.status(), DeploymentStatus::Paused);
    let reason = h.r.pause_reason().unwrap_or_default().to_string();
    assert!(
        reason.contains("quorum") && reason.contains("deadline"),
        "{reason}"
    );
    assert!(
        h.log
            .iter()
            .any(|(_, a)| matches!(a, Action::Gate(v) if v.verdict == Verdict::Wait))
    );
    // Offline devices are not failures.
    assert!(h.r.stage_results().iter().all(|s| s.failed == 0));
}

#[test]
fn bad_input_is_refused_with_a_reason() {
    let mut h = H::new(StrategyConfig::defaults(Strategy::Rolling), 3);
    assert_eq!(
        h.send(dev(99, DeviceEvent::Staged)),
        Err(RolloutError::UnknownDevice(99))
    );
    let report = HealthReport {
        error_rate: f32::NAN,
        ..good()
    };
    let e = h
        .send(Input::Health { device: 0, report })
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("error_rate"), "{e}");
}

#[test]
fn state_block_and_report_follow_the_templates() {
    let mut h = canary_waves(100);
    assert!(h.cmd(Command::Start).is_ok());
    h.run_until(40 * MINUTE);
    let block = super::StateBlock::from_rollout(&h.r).to_text();
    for field in [
        "<fleet-deploy-state>",
        "phase: VERIFY",
        "fleet_total: 100",
        "rollback_available: true",
        "blockers: awaiting operator approval",
    ] {
        assert!(block.contains(field), "{field} missing in\n{block}");
    }
    assert!(h.cmd(Command::Approve).is_ok());
    h.run_to_end();
    let md = super::Report::from_rollout(&h.r).to_markdown();
    for field in [
        "## Fleet Deployment Report: flow v2",
        "**Strategy**: canary-waves",
        "| Deployed (healthy) | 100 | 100.0% |",
        "| Canary |",
        "| wave-3 |",
        "**Health Delta**",
    ] {
        assert!(md.contains(field), "{field} missing in\n{md}");
    }
    let json = serde_json::to_value(super::Report::from_rollout(&h.r)).unwrap_or_default();
    assert_eq!(json["counts"]["deployed"], 100);
    assert_eq!(json["stages"][0]["verdict"], "PASS");
}

/// A deterministic responder with failures and offline devices chosen by hash.
fn chaos_responder(seed: u64) -> Responder {
    Box::new(move |d, kind, _| {
        let h = (u64::from(d) ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56;
        match kind {
            DirectiveKind::Stage if h < 8 => vec![dev(d, DeviceEvent::Failed)],
            DirectiveKind::Stage if h < 16 => vec![dev(d, DeviceEvent::Offline)],
            DirectiveKind::Stage => vec![dev(d, DeviceEvent::Staged)],
            DirectiveKind::Switch if h < 20 => vec![
                dev(d, DeviceEvent::Switched),
                dev(d, DeviceEvent::Unhealthy),
            ],
            DirectiveKind::Switch => vec![
                dev(d, DeviceEvent::Switched),
                Input::Health {
                    device: d,
                    report: good(),
                },
            ],
            DirectiveKind::Rollback => vec![dev(d, DeviceEvent::RolledBack)],
            DirectiveKind::Commit => vec![],
        }
    })
}

fn strategy_of(i: u8) -> Strategy {
    [
        Strategy::AllAtOnce,
        Strategy::Rolling,
        Strategy::Canary,
        Strategy::BlueGreen,
        Strategy::CanaryWaves,
        Strategy::Steps,
    ][usize::from(i) % 6]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// The simulator's invariants: bounded parallelism, no wave after a failed canary, every
    /// device terminal, and the same seed giving the same actions.
    #[test]
    fn simulated_runs_keep_the_invariants(
        n in 1usize..160,
        s in 0u8..6,
        fail in 0.0f64..0.2,
        offline in 0.0f64..0.2,
        seed in 0u64..1000,
    ) {
        let strategy = strategy_of(s);
        let mut cfg = SimConfig::new(n, strategy);
        cfg.strategy.force = true;
        cfg.fail_rate = fail;
        cfg.offline_rate = offline;
        cfg.seed = seed;
        cfg.max_resumes = 1;
        let out = match sim::run(&cfg) {
            Ok(o) => o,
            Err(sim::SimError::Plan(super::PlanError::NoEligibleCanary)) => return Ok(()),
            Err(e) => return Err(TestCaseError::fail(format!("{e}"))),
        };
        let limit = match cfg.strategy.max_parallel { 0 => u32::MAX, m => m };
        prop_assert!(out.max_in_flight <= limit, "{} in flight > {}", out.max_in_flight, limit);
        prop_assert!(!out.stage_after_failed_canary);
        prop_assert!(out.rollout.status().is_terminal(), "{:?} {:?}", out.rollout.status(), out.rollout.pause_reason());
        for d in 0..n as u32 {
            let st = out.rollout.target_status(d);
            prop_assert!(st.is_some_and(TargetStatus::is_terminal), "device {} ends {:?}", d, st);
        }
        let again = sim::run(&cfg).map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(out.action_digest, again.action_digest);
        prop_assert_eq!(out.actions, again.actions);
    }

    /// Serialize → deserialize at any step gives the same future.
    #[test]
    fn state_survives_a_round_trip_at_any_step(
        n in 2usize..60,
        s in 0u8..6,
        cut in 0usize..120,
        seed in 0u64..1000,
    ) {
        let mut cfg = StrategyConfig::defaults(strategy_of(s));
        cfg.force = true;
        cfg.require_approval = false;
        cfg.max_parallel = cfg.max_parallel.min(7);
        let targets = (0..n).map(|i| TargetSpec {
            id: format!("d{i}"),
            device_type: TYPES[i % 2].to_string(),
            region: "eu".to_string(),
            flags: TargetFlags::default(),
            monitoring: 1,
        });
        let plan = Plan::new("a", cfg, targets, &baselines(), seed).map_err(|e| TestCaseError::fail(format!("{e}")))?;
        // Reference run, with a snapshot taken after `cut` ticks.
        let mut a = H { r: Rollout::new(plan, 0), now: 0, log: Vec::new(), respond: chaos_responder(seed), max_in_flight: 0 };
        prop_assert!(a.cmd(Command::Start).is_ok());
        let mut snapshot: Option<(String, Millis, usize)> = None;
        let mut ticks = 0usize;
        loop {
            if ticks == cut {
                let bytes = serde_json::to_string(&a.r).map_err(|e| TestCaseError::fail(e.to_string()))?;
                snapshot = Some((bytes, a.now, a.log.len()));
            }
            let Some(t) = a.r.poll_timeout() else { break };
            a.now = a.now.max(t);
            prop_assert!(a.send(Input::Tick).is_ok());
            ticks += 1;
            prop_assert!(ticks < 100_000, "livelock");
        }
        let Some((bytes, now, logged)) = snapshot else { return Ok(()) };
        let restored: Rollout = serde_json::from_str(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut b = H { r: restored, now, log: Vec::new(), respond: chaos_responder(seed), max_in_flight: 0 };
        while let Some(t) = b.r.poll_timeout() {
            b.now = b.now.max(t);
            prop_assert!(b.send(Input::Tick).is_ok());
        }
        prop_assert_eq!(&a.log[logged..], &b.log[..]);
        prop_assert_eq!(a.r, b.r);
    }
}

#[test]
fn traffic_steps_roll_back_everything_when_a_later_step_fails() {
    // 002: 5 → 25 → 50 → 100 %, and a "no" at any health decision rolls back.
    let mut h = H::new(StrategyConfig::defaults(Strategy::Steps), 40);
    let order = h.r.plan().order.clone();
    let sizes: Vec<u32> = h.r.plan().stages.iter().map(|s| s.end).collect();
    assert_eq!(
        sizes,
        vec![2, 10, 20, 40],
        "cumulative ceil(5, 25, 50, 100 % of 40)"
    );
    let bad = order[5]; // In the 25 % step.
    h.respond = Box::new(move |d, kind, _| match kind {
        DirectiveKind::Stage => vec![dev(d, DeviceEvent::Staged)],
        DirectiveKind::Switch if d == bad => vec![
            dev(d, DeviceEvent::Switched),
            dev(d, DeviceEvent::Unhealthy),
        ],
        DirectiveKind::Switch => vec![
            dev(d, DeviceEvent::Switched),
            Input::Health {
                device: d,
                report: good(),
            },
        ],
        DirectiveKind::Rollback => vec![dev(d, DeviceEvent::RolledBack)],
        DirectiveKind::Commit => vec![],
    });
    assert!(h.cmd(Command::Start).is_ok());
    h.run_to_end();
    assert_eq!(h.r.status(), DeploymentStatus::RolledBack);
    assert_eq!(
        h.r.target_status(order[0]),
        Some(TargetStatus::RolledBack),
        "the first step is rolled back too"
    );
    assert_eq!(
        h.r.target_status(order[30]),
        Some(TargetStatus::Skipped),
        "the 100 % step never started"
    );
}

#[test]
fn rolling_batch_over_twenty_percent_failures_rolls_back_the_batch_and_halts() {
    let mut h = H::new(StrategyConfig::defaults(Strategy::Rolling), 30);
    // Batch 2 is devices 10..20; three failures are 30 % > 20 %.
    h.respond = Box::new(|d, kind, _| match kind {
        DirectiveKind::Stage if (10..13).contains(&d) => vec![dev(d, DeviceEvent::Failed)],
        DirectiveKind::Stage => vec![dev(d, DeviceEvent::Staged)],
        DirectiveKind::Switch => vec![
            dev(d, DeviceEvent::Switched),
            Input::Health {
                device: d,
                report: good(),
            },
        ],
        DirectiveKind::Rollback => vec![dev(d, DeviceEvent::RolledBack)],
        DirectiveKind::Commit => vec![],
    });
    assert!(h.cmd(Command::Start).is_ok());
    h.run_to_end();
    assert_eq!(h.r.status(), DeploymentStatus::Paused);
    assert!(
        h.r.pause_reason()
            .unwrap_or_default()
            .contains("batch-2 rolled back")
    );
    assert_eq!(
        h.r.target_status(0),
        Some(TargetStatus::Success),
        "batch 1 keeps the version"
    );
    assert_eq!(
        h.r.target_status(25),
        Some(TargetStatus::Pending),
        "batch 3 waits for a human"
    );
    // The human rolls everything back.
    assert!(h.cmd(Command::Rollback).is_ok());
    h.run_to_end();
    assert_eq!(h.r.status(), DeploymentStatus::RolledBack);
    assert_eq!(h.r.target_status(0), Some(TargetStatus::RolledBack));
    assert!(h.statuses().iter().all(|s| s.is_terminal()));
}

#[test]
fn with_health_checks_off_stages_pass_once_devices_settle() {
    let mut cfg = StrategyConfig::defaults(Strategy::Rolling);
    cfg.health_check = false;
    let mut h = H::new(cfg, 12);
    h.respond = Box::new(|d, kind, _| match kind {
        DirectiveKind::Stage => vec![dev(d, DeviceEvent::Staged)],
        DirectiveKind::Switch => vec![dev(d, DeviceEvent::Switched), dev(d, DeviceEvent::Healthy)],
        _ => vec![],
    });
    assert!(h.cmd(Command::Start).is_ok());
    h.run_to_end();
    assert_eq!(
        h.r.status(),
        DeploymentStatus::Completed,
        "{:?}",
        h.r.pause_reason()
    );
    assert!(h.all(TargetStatus::Success));
}
