//! Scenario and property tests of the rollout engine.
//!
//! The harness answers directives at once (device replies take no virtual time) through a
//! responder the test chooses, and jumps time to the engine's next timeout. Each scenario
//! checks what an operator relies on: who got which directive, the statuses, and the verdicts.
//!
//! Files: this one holds the harness; the scenarios are grouped by topic in its children.

mod blue_green;
mod gates;
mod offline;
mod operator;
mod persisted;
mod properties;
mod report;
mod signals;
mod stages;
mod strategies;
mod triggers;

use super::engine::{
    Action, Command, DeploymentStatus, DeviceEvent, DirectiveKind, HealthReport, HealthStatus,
    Input, SystemFigures, latency_limit,
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
        system: SystemFigures::default(),
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
    /// Devices on the new version send their last report again this often (0: never), as
    /// real devices report periodically; the gates judge the reports in their windows.
    report_every: Millis,
    next_round: Millis,
    last: Vec<Option<HealthReport>>,
    /// What a device reports in a round at a time (None: its last report again).
    reporter: Option<Reporter>,
}

/// A device's periodic report at a time.
type Reporter = Box<dyn FnMut(u32, Millis) -> HealthReport>;

impl H {
    fn new(cfg: StrategyConfig, n: usize) -> H {
        H {
            r: Rollout::new(plan(cfg, n), 0),
            now: 0,
            log: Vec::new(),
            respond: healthy_responder(),
            max_in_flight: 0,
            report_every: MINUTE,
            next_round: 0,
            last: vec![None; n],
            reporter: None,
        }
    }

    /// Remembers a device's report, to send again every `report_every`.
    fn note(&mut self, input: &Input) {
        if let Input::Health { device, report } = input {
            let d = *device as usize;
            if self.last.len() <= d {
                self.last.resize(d + 1, None);
            }
            self.last[d] = Some(*report);
        }
    }

    /// Every device on the new version reports again (its last report).
    fn report_round(&mut self) {
        for d in 0..self.last.len() {
            let Some(mut report) = self.last[d] else {
                continue;
            };
            if let Some(f) = self.reporter.as_mut() {
                report = f(d as u32, self.now);
            }
            if matches!(
                self.r.target_status(d as u32),
                Some(TargetStatus::Deploying | TargetStatus::Success)
            ) && let Err(e) = self.send(Input::Health {
                device: d as u32,
                report,
            }) {
                panic!("report refused: {e}");
            }
        }
    }

    fn send(&mut self, input: Input) -> Result<(), RolloutError> {
        self.note(&input);
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
                self.note(&i);
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
            if self.report_every > 0 && self.next_round < t {
                self.now = self.now.max(self.next_round);
                self.next_round = self.now + self.report_every;
                self.report_round();
                continue;
            }
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

fn canary_waves(n: usize) -> H {
    H::new(StrategyConfig::defaults(Strategy::CanaryWaves), n)
}
