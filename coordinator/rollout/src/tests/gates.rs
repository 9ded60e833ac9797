//! Gates over their windows (issue 15): 001's windows and minimum samples, CAUTION with
//! bounded soak extensions, the no-baseline policy, degraded devices, "no new failed
//! devices", the gate record's percentiles and counts, and snapshot/restore of the windows.

use super::*;
use crate::baseline::{BaselineMetric, BaselineSet, GroupBaseline};
use crate::engine::{CheckOutcome, GateVerdict};
use crate::gates::NoBaseline;

fn cw(n: usize) -> H {
    let mut cfg = StrategyConfig::defaults(Strategy::CanaryWaves);
    cfg.require_approval = false;
    H::new(cfg, n)
}

fn gates(h: &H) -> Vec<(Millis, GateVerdict)> {
    h.log
        .iter()
        .filter_map(|(t, a)| match a {
            Action::Gate(v) => Some((*t, v.clone())),
            _ => None,
        })
        .collect()
}

fn canary_gates(h: &H) -> Vec<(Millis, GateVerdict)> {
    gates(h).into_iter().filter(|(_, v)| v.stage == 0).collect()
}

fn outcome(v: &GateVerdict, prefix: &str) -> Option<CheckOutcome> {
    v.checks
        .iter()
        .find(|c| c.name.starts_with(prefix))
        .and_then(|c| c.outcome)
}

/// Every canary device reports `f(minute)`; everyone else reports `good()`.
fn canary_reports(h: &mut H, f: impl Fn(Millis) -> HealthReport + 'static) {
    let canary = h.r.plan().canary.clone();
    h.reporter = Some(Box::new(move |d, now| {
        if canary.contains(&d) {
            f(now / MINUTE)
        } else {
            good()
        }
    }));
}

fn with_error(e: f32) -> HealthReport {
    HealthReport {
        error_rate: e,
        ..good()
    }
}

#[test]
fn the_canary_error_window_is_fifteen_minutes() {
    // Errors over baseline + 2 % for the first 10 minutes only: outside the window at 30 min.
    let mut h = cw(40);
    canary_reports(&mut h, |m| with_error(if m < 10 { 0.05 } else { 0.01 }));
    assert!(h.cmd(Command::Start).is_ok());
    h.run_until(40 * MINUTE);
    let g = canary_gates(&h);
    let (_, last) = g.last().unwrap();
    assert_eq!(last.verdict, Verdict::Pass, "{last:?}");
    let summary = last.summary.as_ref().unwrap();
    assert_eq!(summary.window_ms, 15 * MINUTE);
    // The same errors in the last 15 minutes fail it.
    let mut h = cw(40);
    canary_reports(&mut h, |m| with_error(if m >= 20 { 0.05 } else { 0.01 }));
    assert!(h.cmd(Command::Start).is_ok());
    h.run_to_end();
    let g = canary_gates(&h);
    let (_, last) = g.last().unwrap();
    assert_eq!(last.verdict, Verdict::Fail, "{last:?}");
    assert_eq!(outcome(last, "error_rate["), Some(CheckOutcome::Fail));
    assert_eq!(h.r.status(), DeploymentStatus::RolledBack);
}

#[test]
fn without_enough_reports_in_the_window_the_gate_waits_then_halts() {
    // Devices report once, at the switch: nothing is in the window at the gate.
    let mut cfg = StrategyConfig::defaults(Strategy::CanaryWaves);
    cfg.require_approval = false;
    // Long enough after a resume for 10 minutes of reports (the memory trend's minimum).
    cfg.timeout = 30 * MINUTE;
    let mut h = H::new(cfg, 40);
    h.report_every = 0;
    assert!(h.cmd(Command::Start).is_ok());
    h.run_until(60 * MINUTE);
    let g = canary_gates(&h);
    let (_, first) = &g[0];
    assert_eq!(first.verdict, Verdict::Wait, "{first:?}");
    assert!(first.reason.contains("not computable"), "{}", first.reason);
    assert_eq!(
        outcome(first, "error_rate["),
        Some(CheckOutcome::NotComputable)
    );
    assert!(
        first
            .checks
            .iter()
            .all(|c| !c.pass || c.outcome != Some(CheckOutcome::NotComputable))
    );
    assert_eq!(h.r.status(), DeploymentStatus::Paused);
    assert!(
        h.r.pause_reason()
            .unwrap_or_default()
            .contains("progress deadline"),
        "{:?}",
        h.r.pause_reason()
    );
    // Reports come back: resumed, the gate computes and passes.
    h.report_every = MINUTE;
    h.next_round = h.now;
    assert!(h.cmd(Command::Resume).is_ok());
    h.run_until(h.now + 20 * MINUTE);
    let g = canary_gates(&h);
    assert_eq!(g.last().unwrap().1.verdict, Verdict::Pass, "{g:?}");
}

#[test]
fn a_degrading_canary_is_cautioned_then_passes_once_stable() {
    // The error rate steps up within the limit (1 % → 2 %, limit 3 %) at 25 min, then stays.
    let mut h = cw(40);
    canary_reports(&mut h, |m| with_error(if m < 25 { 0.010 } else { 0.020 }));
    assert!(h.cmd(Command::Start).is_ok());
    h.run_until(70 * MINUTE);
    let g = canary_gates(&h);
    let verdicts: Vec<Verdict> = g.iter().map(|(_, v)| v.verdict).collect();
    assert_eq!(verdicts, vec![Verdict::Caution, Verdict::Pass], "{g:?}");
    let (t0, c) = &g[0];
    let (t1, p) = &g[1];
    assert_eq!(outcome(c, "error_rate["), Some(CheckOutcome::Caution));
    assert_eq!(
        t1 - t0,
        15 * MINUTE,
        "extended by the canary's 15 min window"
    );
    assert_eq!(p.summary.as_ref().unwrap().extensions, 1);
    assert!(h.log.iter().any(
        |(_, a)| matches!(a, Action::Audit { event, .. } if event.contains("soak extended by 15 min (1 of 2)"))
    ));
    h.run_to_end();
    assert_eq!(h.r.status(), DeploymentStatus::Completed);
}

#[test]
fn a_canary_that_keeps_degrading_fails_after_the_last_extension() {
    // The error rate rises 0.02 % a minute: within the limit until the end, but rising.
    let mut h = cw(40);
    canary_reports(&mut h, |m| with_error(0.010 + 0.0002 * m as f32));
    assert!(h.cmd(Command::Start).is_ok());
    h.run_to_end();
    let g = canary_gates(&h);
    let verdicts: Vec<Verdict> = g.iter().map(|(_, v)| v.verdict).collect();
    assert_eq!(
        verdicts,
        vec![Verdict::Caution, Verdict::Caution, Verdict::Fail],
        "{g:?}"
    );
    let (_, fail) = g.last().unwrap();
    assert!(
        fail.reason
            .contains("CAUTION persisted after 2 extension(s)"),
        "{}",
        fail.reason
    );
    assert_eq!(h.r.status(), DeploymentStatus::RolledBack);
    assert!(!h.stage_of_first_directive_to_non_canary());
}

#[test]
fn canary_memory_growth_over_one_percent_per_ten_minutes_is_a_caution() {
    // 1.5 % per 10 min: under the 5 % leak trigger, over 001's canary memory trend.
    let mut h = cw(40);
    canary_reports(&mut h, |m| HealthReport {
        memory_mb: 200.0 * (1.0 + 0.0015 * m as f32),
        ..good()
    });
    assert!(h.cmd(Command::Start).is_ok());
    h.run_until(31 * MINUTE);
    let g = canary_gates(&h);
    let (_, first) = &g[0];
    assert_eq!(first.verdict, Verdict::Caution, "{first:?}");
    let c = first
        .checks
        .iter()
        .find(|c| c.name.starts_with("memory_trend["))
        .unwrap();
    assert!((c.value - 0.015).abs() < 0.002, "{c:?}");
    assert_eq!(c.limit, 0.01);
    assert!(h.directives(DirectiveKind::Rollback).is_empty());
}

fn metric(mean: f64, samples: u64) -> BaselineMetric {
    crate::baseline::flat(mean, samples)
}

fn group(t: &str, region: Option<&str>, samples: u64, e: f64) -> GroupBaseline {
    GroupBaseline {
        device_type: t.into(),
        region: region.map(str::to_string),
        samples,
        needed: 100,
        error_rate: Some(metric(e, samples)),
        p95_ms: Some(metric(100.0, samples)),
        memory_mb: Some(metric(200.0, samples)),
        cpu_percent: None,
    }
}

/// "pi" has 5 samples (no baseline), "jetson" 500.
fn set_without_pi() -> BaselineSet {
    BaselineSet {
        captured_at: 0,
        window: 24 * 60 * MINUTE,
        min_samples: 100,
        groups: vec![group("jetson", None, 500, 0.01), group("pi", None, 5, 0.01)],
        truncated: false,
    }
}

#[test]
fn a_group_without_a_baseline_is_judged_against_the_absolute_limits() {
    let mut h = cw(40);
    assert!(h.r.set_baselines(set_without_pi()).is_ok());
    assert_eq!(h.r.groups_without_baseline(), vec!["pi"]);
    // pi devices: 4 % errors (over a 1 % baseline + 2 %, under the absolute 5 %).
    h.reporter = Some(Box::new(|d, _| {
        if TYPES[d as usize % 2] == "pi" {
            with_error(0.04)
        } else {
            good()
        }
    }));
    assert!(h.cmd(Command::Start).is_ok());
    h.run_until(40 * MINUTE);
    let g = canary_gates(&h);
    let (_, v) = g.last().unwrap();
    assert_eq!(v.verdict, Verdict::Pass, "{v:?}");
    let pi = v
        .checks
        .iter()
        .find(|c| c.name == "error_rate[pi] (absolute)")
        .unwrap_or_else(|| panic!("{v:?}"));
    assert_eq!(pi.limit, 0.05);
    assert!(v.checks.iter().any(|c| c.name == "memory[pi] (absolute)"));
    assert_eq!(v.summary.as_ref().unwrap().absolute, vec!["pi".to_string()]);
    // Memory past the absolute 1024 MB fails it (from the first report on, so it is not a
    // leak: the leak trigger compares with the first report after the switch).
    let mut h = cw(40);
    assert!(h.r.set_baselines(set_without_pi()).is_ok());
    let report = |d: u32| {
        if TYPES[d as usize % 2] == "pi" {
            HealthReport {
                memory_mb: 2000.0,
                ..good()
            }
        } else {
            good()
        }
    };
    h.respond = Box::new(move |d, kind, _| match kind {
        DirectiveKind::Stage => vec![dev(d, DeviceEvent::Staged)],
        DirectiveKind::Switch => vec![
            dev(d, DeviceEvent::Switched),
            Input::Health {
                device: d,
                report: report(d),
            },
        ],
        DirectiveKind::Rollback => vec![dev(d, DeviceEvent::RolledBack)],
        DirectiveKind::Commit => vec![],
    });
    assert!(h.cmd(Command::Start).is_ok());
    h.run_to_end();
    let g = canary_gates(&h);
    let (_, v) = g.last().unwrap();
    assert_eq!(v.verdict, Verdict::Fail, "{v:?}");
    assert_eq!(outcome(v, "memory[pi]"), Some(CheckOutcome::Fail));
}

#[test]
fn the_refuse_policy_stops_the_start_naming_the_groups() {
    let mut cfg = StrategyConfig::defaults(Strategy::CanaryWaves);
    cfg.gates.no_baseline = NoBaseline::Refuse;
    let mut h = H::new(cfg.clone(), 20);
    assert!(h.r.set_baselines(set_without_pi()).is_ok());
    let err = h.cmd(Command::Start).unwrap_err().to_string();
    assert!(
        err.contains("no baseline for pi: 5 samples, 100 needed"),
        "{err}"
    );
    assert_eq!(h.r.status(), DeploymentStatus::Pending);
    // With every group's baseline, it starts.
    let mut h = H::new(cfg, 20);
    let mut set = set_without_pi();
    set.groups[1].samples = 300;
    assert!(h.r.set_baselines(set).is_ok());
    assert!(h.cmd(Command::Start).is_ok());
    // Baselines are fixed once started.
    assert!(h.r.set_baselines(set_without_pi()).is_err());
}

#[test]
fn a_region_with_its_own_baseline_is_judged_against_it() {
    // pi in eu normally runs at 5 % errors; elsewhere 1 %. A pi/eu canary at 5 % passes.
    let mut h = cw(40);
    let mut set = set_without_pi();
    set.groups[1].samples = 500;
    set.groups.push(group("pi", Some("eu"), 200, 0.05));
    assert!(h.r.set_baselines(set).is_ok());
    let eu_pi: Vec<u32> = (0..40u32)
        .filter(|&i| i % 2 == 0 && (i / 2) % 2 == 0)
        .collect();
    let eu = eu_pi.clone();
    h.reporter = Some(Box::new(move |d, _| {
        if eu.contains(&d) {
            with_error(0.05)
        } else {
            good()
        }
    }));
    assert!(h.cmd(Command::Start).is_ok());
    h.run_to_end();
    assert_eq!(h.r.status(), DeploymentStatus::Completed, "{:?}", gates(&h));
    let (_, last) = gates(&h).pop().unwrap();
    let names: Vec<&str> = last.checks.iter().map(|c| c.name.as_str()).collect();
    assert!(names.contains(&"error_rate[pi/eu]"), "{names:?}");
}

#[test]
fn degraded_devices_are_not_healthy() {
    let mut h = cw(40);
    canary_reports(&mut h, |_| HealthReport {
        status: HealthStatus::Degraded,
        ..good()
    });
    assert!(h.cmd(Command::Start).is_ok());
    h.run_to_end();
    let g = canary_gates(&h);
    let (_, v) = g.last().unwrap();
    assert_eq!(v.verdict, Verdict::Fail, "{v:?}");
    assert_eq!(outcome(v, "application_health"), Some(CheckOutcome::Fail));
    let s = v.summary.as_ref().unwrap();
    assert_eq!(s.degraded, s.deployed);
    assert_eq!(s.healthy, 0);
    assert_eq!(h.r.status(), DeploymentStatus::RolledBack);
}

#[test]
fn a_wave_gate_fails_when_a_device_of_an_earlier_stage_failed_since_the_last_check() {
    let mut h = cw(40);
    let victim = h.r.plan().canary[0];
    // The canary passes at ~30 min; during wave 1 one canary device turns unhealthy.
    h.reporter = Some(Box::new(move |d, now| {
        if d == victim && now > 35 * MINUTE {
            HealthReport {
                status: HealthStatus::Unhealthy,
                ..good()
            }
        } else {
            good()
        }
    }));
    assert!(h.cmd(Command::Start).is_ok());
    h.run_until(3 * 60 * MINUTE);
    let g = gates(&h);
    let (_, wave1) = g.iter().find(|(_, v)| v.stage == 1).unwrap();
    assert_eq!(wave1.verdict, Verdict::Fail, "{wave1:?}");
    assert_eq!(
        outcome(wave1, "new_failed_devices"),
        Some(CheckOutcome::Fail)
    );
    assert_eq!(wave1.summary.as_ref().unwrap().new_failed, 1);
    assert_eq!(h.r.status(), DeploymentStatus::Paused);
    assert!(
        h.r.pause_reason()
            .unwrap_or_default()
            .contains("new_failed_devices")
    );
}

#[test]
fn gate_records_carry_latency_percentiles_and_device_counts() {
    let mut h = cw(40);
    // Canary latencies 100 ms and 300 ms: P50 near 100, P99 near 300.
    let canary = h.r.plan().canary.clone();
    let slow = canary[0];
    canary_reports(&mut h, move |_| good());
    h.reporter = Some(Box::new(move |d, _| {
        if d == slow {
            HealthReport {
                p95_ms: 110.0,
                ..good()
            }
        } else {
            good()
        }
    }));
    assert!(h.cmd(Command::Start).is_ok());
    h.run_until(40 * MINUTE);
    let (_, v) = canary_gates(&h).pop().unwrap();
    assert_eq!(v.verdict, Verdict::Pass, "{v:?}");
    let s = v.summary.unwrap();
    assert_eq!(s.deployed, canary.len() as u64);
    assert_eq!(s.healthy, canary.len() as u64);
    assert_eq!((s.degraded, s.failed, s.new_failed), (0, 0, 0));
    assert!(s.samples >= 15 * canary.len() as u64, "{s:?}");
    let p99 = s.latency_p99_ms.unwrap();
    assert!((p99 - 110.0).abs() / 110.0 < 0.03, "{s:?}");
    let p50 = s.latency_p50_ms.unwrap();
    let expect = if canary.len() > 2 { 100.0 } else { p50 };
    assert!((p50 - expect).abs() / expect < 0.03, "{s:?}");
    assert!(s.latency_p95_ms.unwrap() >= p50);
}

#[test]
fn windows_and_caution_state_survive_a_snapshot() {
    let reporter = || -> Reporter {
        Box::new(|_, now| with_error(if now / MINUTE < 25 { 0.010 } else { 0.020 }))
    };
    let mut a = cw(40);
    a.reporter = Some(reporter());
    assert!(a.cmd(Command::Start).is_ok());
    // Inside the CAUTION extension: windows full, one extension used.
    a.run_until(38 * MINUTE);
    assert!(
        canary_gates(&a)
            .iter()
            .any(|(_, v)| v.verdict == Verdict::Caution)
    );
    let text = serde_json::to_string(&a.r).unwrap();
    let mut b = cw(40);
    b.r = serde_json::from_str(&text).unwrap();
    assert_eq!(serde_json::to_string(&b.r).unwrap(), text);
    b.now = a.now;
    b.next_round = a.next_round;
    b.last = a.last.clone();
    b.reporter = Some(reporter());
    let logged = a.log.len();
    a.run_to_end();
    b.run_to_end();
    assert_eq!(&a.log[logged..], &b.log[..]);
    assert_eq!(a.r, b.r);
    assert_eq!(a.r.status(), DeploymentStatus::Completed);
}

#[test]
fn the_simulator_completes_a_healthy_fleet_and_stops_a_bad_release_at_the_canary() {
    let cfg = SimConfig::new(300, Strategy::CanaryWaves);
    let out = sim::run(&cfg).unwrap();
    assert_eq!(out.rollout.status(), DeploymentStatus::Completed);
    assert_eq!(out.rollout.counts().success, 300);
    let mut bad = SimConfig::new(300, Strategy::CanaryWaves);
    bad.bad_release_error = 0.05;
    let out = sim::run(&bad).unwrap();
    assert_eq!(out.rollout.status(), DeploymentStatus::RolledBack);
    assert_eq!(out.rollout.stage_results()[0].verdict, Some(Verdict::Fail));
    assert!(out.rollout.stage_results()[1].started_at.is_none());
}

#[test]
fn a_canary_soak_under_ten_minutes_shows_the_memory_trend_as_not_measured() {
    let mut cfg = StrategyConfig::defaults(Strategy::CanaryWaves);
    cfg.require_approval = false;
    cfg.canary_soak = 5 * MINUTE;
    let mut h = H::new(cfg, 40);
    assert!(h.cmd(Command::Start).is_ok());
    h.run_until(7 * MINUTE);
    let (_, v) = canary_gates(&h).pop().unwrap();
    assert_eq!(v.verdict, Verdict::Pass, "{v:?}");
    let c = v
        .checks
        .iter()
        .find(|c| c.name.starts_with("memory_trend["))
        .unwrap();
    assert!(c.name.ends_with("(soak under 10 min)"), "{c:?}");
    assert_eq!(c.outcome, Some(CheckOutcome::NotMeasured));
}

/// A canary whose soak (4 min) is shorter than half the gate's 15-minute window.
fn short_soak(caution_max_extensions: u32) -> H {
    let mut cfg = StrategyConfig::defaults(Strategy::CanaryWaves);
    cfg.require_approval = false;
    cfg.canary_soak = 4 * MINUTE;
    cfg.gates.caution_max_extensions = caution_max_extensions;
    let mut h = H::new(cfg, 40);
    // Reports every 20 s, so the soak's minutes each have several.
    h.report_every = 20 * crate::SECOND;
    h
}

#[test]
fn a_short_soak_still_sees_a_degrading_trend() {
    // The error rate climbs 0.15 % a minute from 1 %: within the limit (3 %) for the whole
    // soak, too slow a step for the 30 s gradual_degradation trigger, but rising. With the
    // halves split at the middle of the 15-minute window, a 4-minute soak put every report in
    // the later half and the gate passed; they are split over the reports' own span now.
    let mut h = short_soak(2);
    canary_reports(&mut h, |m| with_error(0.010 + 0.0015 * m as f32));
    assert!(h.cmd(Command::Start).is_ok());
    h.run_until(6 * MINUTE);
    let g = canary_gates(&h);
    let (_, first) = g.first().unwrap();
    assert_eq!(first.verdict, Verdict::Caution, "{first:?}");
    assert_eq!(outcome(first, "error_rate["), Some(CheckOutcome::Caution));
    assert_eq!(h.r.status(), DeploymentStatus::Running);
    assert!(!h.stage_of_first_directive_to_non_canary());

    // With no extension allowed the CAUTION fails the gate, and the canary is rolled back.
    let mut h = short_soak(0);
    canary_reports(&mut h, |m| with_error(0.010 + 0.0015 * m as f32));
    assert!(h.cmd(Command::Start).is_ok());
    h.run_to_end();
    let g = canary_gates(&h);
    let (_, first) = g.first().unwrap();
    assert_eq!(first.verdict, Verdict::Fail, "{first:?}");
    assert!(
        first
            .reason
            .contains("CAUTION persisted after 0 extension(s)"),
        "{}",
        first.reason
    );
    assert_eq!(outcome(first, "error_rate["), Some(CheckOutcome::Caution));
    assert_eq!(h.r.status(), DeploymentStatus::RolledBack);
    assert!(!h.stage_of_first_directive_to_non_canary());
}

#[test]
fn a_short_soak_of_a_steady_canary_passes() {
    // Flat error rate, and noise that does not trend: no CAUTION from the shorter span.
    let mut h = short_soak(0);
    canary_reports(&mut h, |m| {
        with_error(if m % 2 == 0 { 0.0105 } else { 0.0100 })
    });
    assert!(h.cmd(Command::Start).is_ok());
    h.run_until(6 * MINUTE);
    let g = canary_gates(&h);
    let (_, first) = g.first().unwrap();
    assert_eq!(first.verdict, Verdict::Pass, "{first:?}");
}

/// Past the quorum, a canary device that switched and said healthy but has not sent its
/// metrics yet is not unhealthy: `application_health` cannot be computed and the gate waits
/// for it (it used to fail the canary); once it reports, the gate passes.
#[test]
fn a_canary_device_without_metrics_yet_makes_the_gate_wait_not_fail() {
    let mut h = cw(200);
    let canary = h.r.plan().canary.clone();
    assert!(canary.len() >= 5, "{canary:?}");
    let late = canary[0];
    h.respond = Box::new(move |d, kind, _| match kind {
        DirectiveKind::Stage => vec![dev(d, DeviceEvent::Staged)],
        DirectiveKind::Switch if d == late => {
            vec![dev(d, DeviceEvent::Switched), dev(d, DeviceEvent::Healthy)]
        }
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
    h.run_until(35 * MINUTE);
    let g = canary_gates(&h);
    let (_, v) = g.last().expect("a canary gate");
    assert_eq!(v.verdict, Verdict::Wait, "{v:?}");
    assert_eq!(
        outcome(v, "application_health"),
        Some(CheckOutcome::NotComputable),
        "{v:?}"
    );
    assert_eq!(h.r.status(), DeploymentStatus::Running);
    assert!(h.directives(DirectiveKind::Rollback).is_empty());
    // Its metrics arrive: the canary passes.
    let at = h.now;
    assert!(
        h.send(Input::Health {
            device: late,
            report: good(),
        })
        .is_ok()
    );
    h.run_until(at + 5 * MINUTE);
    assert!(
        canary_gates(&h)
            .iter()
            .any(|(_, v)| v.verdict == Verdict::Pass),
        "{:?}",
        canary_gates(&h).last()
    );
    assert!(h.directives(DirectiveKind::Rollback).is_empty());
}
