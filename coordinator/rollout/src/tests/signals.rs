//! The triggers that fire from devices' system figures (`engine/triggers.rs`): each fires at
//! its limit and not below, and acts on its scope (one device, the current wave, or a halt
//! naming the affected devices), in virtual time.

use super::*;
use crate::baseline::{BaselineSet, GroupBaseline};
use crate::engine::{CheckOutcome, RollbackCause, cpu_check, cpu_limit};
use crate::plan::{GateKind, TriggerConfig};

fn figures(f: impl FnOnce(&mut SystemFigures)) -> HealthReport {
    let mut system = SystemFigures::default();
    f(&mut system);
    HealthReport { system, ..good() }
}

fn report(h: &mut H, device: u32, at: Millis, r: HealthReport) {
    h.now = h.now.max(at);
    if let Err(e) = h.send(Input::Health { device, report: r }) {
        panic!("health refused: {e}");
    }
}

/// Rolling in four batches of five over 20 devices; at 7 min the first batch is committed and
/// the second (stage 1) is soaking.
fn rolling_in_batches(auto_rollback: bool) -> H {
    let mut cfg = StrategyConfig::defaults(Strategy::Rolling);
    cfg.batch_size = 5;
    cfg.max_parallel = 5;
    cfg.auto_rollback = auto_rollback;
    let mut h = H::new(cfg, 20);
    assert!(h.cmd(Command::Start).is_ok());
    h.run_until(7 * MINUTE);
    assert_eq!(h.r.current_stage(), 1);
    h
}

fn stage_devices(h: &H, s: usize) -> Vec<u32> {
    let spec = &h.r.plan().stages[s];
    let mut v = h.r.plan().order[spec.start as usize..spec.end as usize].to_vec();
    v.sort_unstable();
    v
}

fn sorted(mut v: Vec<u32>) -> Vec<u32> {
    v.sort_unstable();
    v
}

#[test]
fn a_failed_functional_check_rolls_back_that_device_only() {
    let mut h = rolling_in_batches(true);
    let d = stage_devices(&h, 1)[0];
    let now = h.now;
    // Known good is not a trigger.
    report(&mut h, d, now, figures(|s| s.functional_ok = Some(true)));
    assert!(h.directives(DirectiveKind::Rollback).is_empty());
    report(
        &mut h,
        d,
        now + 1,
        figures(|s| s.functional_ok = Some(false)),
    );
    assert_eq!(h.directives(DirectiveKind::Rollback), vec![d]);
    assert!(h.log.iter().any(|(_, a)| matches!(
        a,
        Action::Directive {
            kind: DirectiveKind::Rollback,
            cause: Some(RollbackCause::FunctionalCheck),
            ..
        }
    )));
    assert_eq!(h.r.target_status(d), Some(TargetStatus::Quarantined));
    assert_eq!(h.r.status(), DeploymentStatus::Running);
}

#[test]
fn memory_above_90_percent_on_any_deployed_device_rolls_back_the_current_wave() {
    // A device of the committed first batch is over the limit: the current wave (batch 2) is
    // rolled back, not the device's own batch (003: "rollback current wave").
    let mut h = rolling_in_batches(true);
    let first = stage_devices(&h, 0);
    let now = h.now;
    report(
        &mut h,
        first[0],
        now,
        figures(|s| s.memory_used_percent = Some(90.0)),
    );
    assert!(
        h.directives(DirectiveKind::Rollback).is_empty(),
        "90 % is not above 90 %"
    );
    report(
        &mut h,
        first[0],
        now + 1,
        figures(|s| s.memory_used_percent = Some(90.5)),
    );
    h.run_until(now + 5 * MINUTE);
    assert_eq!(
        sorted(h.directives(DirectiveKind::Rollback)),
        stage_devices(&h, 1)
    );
    assert_eq!(h.r.status(), DeploymentStatus::Paused);
    let reason = h.r.pause_reason().unwrap_or_default().to_string();
    assert!(reason.contains("memory_high"), "{reason}");
    assert!(
        reason.contains(&h.r.plan().ids[first[0] as usize]),
        "{reason}"
    );
    for d in first {
        assert_eq!(h.r.target_status(d), Some(TargetStatus::Success));
    }
}

#[test]
fn memory_high_without_auto_rollback_halts() {
    let mut h = rolling_in_batches(false);
    let d = stage_devices(&h, 1)[2];
    let now = h.now;
    report(
        &mut h,
        d,
        now,
        figures(|s| s.memory_used_percent = Some(97.0)),
    );
    assert!(h.directives(DirectiveKind::Rollback).is_empty());
    assert_eq!(h.r.status(), DeploymentStatus::Paused);
    assert!(
        h.r.pause_reason()
            .unwrap_or_default()
            .contains("memory_high")
    );
}

#[test]
fn thermal_escalation_halts_and_names_the_affected_devices() {
    let mut h = rolling_in_batches(true);
    let [a, b] = [stage_devices(&h, 0)[1], stage_devices(&h, 1)[3]];
    let t0 = h.now;
    // Warm but far from the limit, and rising slowly: nothing.
    report(&mut h, a, t0, figures(|s| s.temperature_c = Some(70.0)));
    report(
        &mut h,
        a,
        t0 + 10 * MINUTE,
        figures(|s| s.temperature_c = Some(72.0)),
    );
    assert_eq!(h.r.status(), DeploymentStatus::Running);
    // Within the margin but so slow it would take hours: nothing.
    report(&mut h, b, t0, figures(|s| s.temperature_c = Some(76.0)));
    report(
        &mut h,
        b,
        t0 + 10 * MINUTE,
        figures(|s| s.temperature_c = Some(76.5)),
    );
    assert_eq!(
        h.r.status(),
        DeploymentStatus::Running,
        "{:?}",
        h.r.pause_reason()
    );
    // Device a climbs 6 °C in 2 min to 78 °C: it reaches 85 °C within 15 min.
    report(
        &mut h,
        a,
        t0 + 12 * MINUTE,
        figures(|s| s.temperature_c = Some(78.0)),
    );
    assert_eq!(h.r.status(), DeploymentStatus::Paused);
    let reason = h.r.pause_reason().unwrap_or_default().to_string();
    let ida = h.r.plan().ids[a as usize].clone();
    assert!(
        reason.starts_with(&format!(
            "thermal_escalation on 1 device(s): {ida} (78.0 C rising"
        )),
        "{reason}"
    );
    assert!(
        h.directives(DirectiveKind::Rollback).is_empty(),
        "halt, not rollback"
    );
    // Resumed: device b then goes over the limit itself; both are named.
    assert!(h.cmd(Command::Resume).is_ok());
    report(
        &mut h,
        b,
        t0 + 13 * MINUTE,
        figures(|s| s.temperature_c = Some(85.0)),
    );
    let reason = h.r.pause_reason().unwrap_or_default().to_string();
    let idb = h.r.plan().ids[b as usize].clone();
    assert!(
        reason.starts_with(&format!(
            "thermal_escalation on 2 device(s): {idb} (85.0 C >= limit 85.0 C), {ida}"
        )),
        "{reason}"
    );
}

#[test]
fn disk_anomalies_halt_below_the_floor_and_when_space_falls_fast() {
    // Below the floor.
    let mut h = rolling_in_batches(true);
    let d = stage_devices(&h, 1)[0];
    let now = h.now;
    report(&mut h, d, now, figures(|s| s.disk_free_mb = Some(256.0)));
    assert_eq!(
        h.r.status(),
        DeploymentStatus::Running,
        "the floor itself is fine"
    );
    report(
        &mut h,
        d,
        now + 1,
        figures(|s| s.disk_free_mb = Some(255.0)),
    );
    assert_eq!(h.r.status(), DeploymentStatus::Paused);
    let reason = h.r.pause_reason().unwrap_or_default().to_string();
    assert!(
        reason.starts_with("disk_anomaly on 1 device(s)"),
        "{reason}"
    );
    assert!(reason.contains("255 MB free < floor 256 MB"), "{reason}");

    // Almost full.
    let mut h = rolling_in_batches(true);
    let now = h.now;
    report(
        &mut h,
        d,
        now,
        figures(|s| s.disk_used_percent = Some(95.0)),
    );
    assert_eq!(h.r.status(), DeploymentStatus::Paused);

    // Falling: 1 000 MB in 10 min with 4 000 MB left empties the disk in 40 min.
    let mut h = rolling_in_batches(true);
    let now = h.now;
    let (slow, fast) = (stage_devices(&h, 0)[0], stage_devices(&h, 1)[1]);
    // A big disk losing the same amount would last 8 h, and a small loss is noise.
    report(
        &mut h,
        slow,
        now,
        figures(|s| s.disk_free_mb = Some(50_000.0)),
    );
    report(
        &mut h,
        fast,
        now,
        figures(|s| s.disk_free_mb = Some(5_000.0)),
    );
    report(
        &mut h,
        slow,
        now + 10 * MINUTE,
        figures(|s| s.disk_free_mb = Some(49_000.0)),
    );
    report(
        &mut h,
        fast,
        now + 10 * MINUTE,
        figures(|s| s.disk_free_mb = Some(4_990.0)),
    );
    assert_eq!(
        h.r.status(),
        DeploymentStatus::Running,
        "{:?}",
        h.r.pause_reason()
    );
    report(
        &mut h,
        fast,
        now + 12 * MINUTE,
        figures(|s| s.disk_free_mb = Some(4_000.0)),
    );
    assert_eq!(h.r.status(), DeploymentStatus::Paused);
    let reason = h.r.pause_reason().unwrap_or_default().to_string();
    assert!(reason.contains("free space falling"), "{reason}");
    assert!(reason.contains(&h.r.plan().ids[fast as usize]), "{reason}");
    assert!(h.directives(DirectiveKind::Rollback).is_empty());
}

#[test]
fn health_unreachable_on_more_than_ten_percent_of_a_wave_rolls_it_back() {
    // Two batches of ten: one unreachable device of ten is 10 %, not over it.
    let mut cfg = StrategyConfig::defaults(Strategy::Rolling);
    cfg.batch_size = 10;
    cfg.max_parallel = 10;
    let mut h = H::new(cfg.clone(), 20);
    // Only the events below: a device's periodic health report would say its endpoint
    // answers again.
    h.report_every = 0;
    assert!(h.cmd(Command::Start).is_ok());
    let wave = stage_devices(&h, 0);
    h.now = 10_000;
    assert!(h.send(dev(wave[0], DeviceEvent::HealthUnreachable)).is_ok());
    h.run_until(MINUTE);
    assert!(h.directives(DirectiveKind::Rollback).is_empty());
    assert_eq!(h.r.status(), DeploymentStatus::Running);
    // A second one: 20 % > 10 %, the wave is rolled back at the next health check, long
    // before the devices' own 2 minutes are up.
    assert!(h.send(dev(wave[1], DeviceEvent::HealthUnreachable)).is_ok());
    // Repeats change nothing (the coordinator need not log them).
    assert!(h.r.ignores(h.now, &dev(wave[1], DeviceEvent::HealthUnreachable)));
    assert!(!h.r.ignores(h.now, &dev(wave[2], DeviceEvent::HealthUnreachable)));
    // Counted once each has lasted a minute.
    h.run_until(MINUTE + 50_000);
    assert!(h.directives(DirectiveKind::Rollback).is_empty());
    h.run_until(2 * MINUTE + 30_000);
    assert_eq!(sorted(h.directives(DirectiveKind::Rollback)), wave);
    h.run_until(5 * MINUTE);
    assert_eq!(h.r.status(), DeploymentStatus::Paused);
    let reason = h.r.pause_reason().unwrap_or_default().to_string();
    assert!(
        reason.contains("health_unreachable_share: 2 of 10 devices"),
        "{reason}"
    );
    // The second batch was never touched: it waits for a human's decision.
    for d in stage_devices(&h, 1) {
        assert_eq!(h.r.target_status(d), Some(TargetStatus::Pending));
    }
}

fn canary_gate(report: HealthReport) -> H {
    canary_gate_with(report, None)
}

/// [`canary_gate`] with baselines captured before the start.
fn canary_gate_with(report: HealthReport, baselines: Option<BaselineSet>) -> H {
    let mut h = H::new(StrategyConfig::defaults(Strategy::Canary), 20);
    if let Some(set) = baselines {
        assert!(h.r.set_baselines(set).is_ok());
    }
    h.respond = reports_after_switch(report);
    assert!(h.cmd(Command::Start).is_ok());
    h.run_until(31 * MINUTE);
    h
}

fn canary_verdict(h: &H) -> GateVerdict {
    let found = h.log.iter().find_map(|(_, a)| match a {
        Action::Gate(v) if v.gate == GateKind::Canary && v.verdict != Verdict::Wait => {
            Some(v.clone())
        }
        _ => None,
    });
    match found {
        Some(v) => v,
        None => panic!("no canary verdict in {:?}", h.log),
    }
}

use crate::engine::GateVerdict;

#[test]
fn the_canary_gate_checks_throttling_and_disk_and_cpu_needs_a_baseline() {
    let ok = canary_verdict(&canary_gate(figures(|s| {
        s.cpu_percent = Some(60.0);
        s.throttled = Some(false);
        s.disk_free_mb = Some(8_000.0);
    })));
    assert_eq!(ok.verdict, Verdict::Pass, "{}", ok.reason);
    assert!(
        ok.checks
            .iter()
            .any(|c| c.name == "thermal_throttling" && c.pass)
    );

    // A saturated CPU is no failure without a baseline to say what is expected: the gate
    // shows it as not judged...
    let busy = canary_verdict(&canary_gate(figures(|s| s.cpu_percent = Some(95.0))));
    assert_eq!(busy.verdict, Verdict::Pass, "{}", busy.reason);
    let cpu = busy.checks.iter().find(|c| c.name == "cpu[pi]");
    assert_eq!(
        cpu.and_then(|c| c.outcome),
        Some(CheckOutcome::NotMeasured),
        "{:?}",
        busy.checks
    );
    // ... and with a CPU baseline it is judged: baseline 30 % + 20 points.
    let judged_run = canary_gate_with(
        figures(|s| s.cpu_percent = Some(95.0)),
        Some(cpu_baselines(30.0)),
    );
    // The report's health delta carries CPU: 95 % against a 30 % baseline.
    let delta = crate::report::Report::from_rollout(&judged_run.r).health_delta;
    assert_eq!(delta.and_then(|d| d.cpu_pp), Some(65.0), "{delta:?}");
    assert_eq!(judged_run.r.cpu_delta_pp(), Some(65.0));
    let judged = canary_verdict(&judged_run);
    assert_eq!(judged.verdict, Verdict::Fail, "{:?}", judged.checks);
    let cpu = judged.checks.iter().find(|c| c.name == "cpu[pi]");
    assert_eq!(
        cpu.map(|c| (c.value, c.limit, c.pass)),
        Some((95.0, 50.0, false))
    );
    assert!(judged.reason.contains("cpu[pi]"), "{}", judged.reason);

    let hot = canary_verdict(&canary_gate(figures(|s| s.throttled = Some(true))));
    assert_eq!(hot.verdict, Verdict::Fail);
    assert!(hot.reason.contains("thermal_throttling"), "{}", hot.reason);

    // (A disk anomaly halts the deployment at once, before any gate: see the disk test.)

    // Devices that send no figures: the gate is as before, and CPU is unknown in the report.
    let quiet = canary_gate(good());
    assert_eq!(quiet.r.cpu_delta_pp(), None);
    let none = canary_verdict(&quiet);
    assert_eq!(none.verdict, Verdict::Pass, "{}", none.reason);
}

#[test]
fn cpu_bounds_follow_the_baseline_and_never_pass_the_ceiling() {
    let cfg = TriggerConfig::default();
    assert_eq!(cpu_limit(None, &cfg), 90.0);
    assert_eq!(cpu_limit(Some(30.0), &cfg), 50.0);
    assert_eq!(cpu_limit(Some(85.0), &cfg), 90.0);
    assert!(cpu_check("pi", 50.0, Some(30.0), &cfg).pass);
    let c = cpu_check("pi", 50.1, Some(30.0), &cfg);
    assert!(!c.pass);
    assert_eq!(c.name, "cpu[pi]");
}

#[test]
fn trigger_state_survives_a_store_and_load() {
    let mut h = rolling_in_batches(true);
    let d = stage_devices(&h, 1)[0];
    let now = h.now;
    report(
        &mut h,
        d,
        now,
        figures(|s| {
            s.temperature_c = Some(70.0);
            s.cpu_percent = Some(40.0);
        }),
    );
    let stored = match serde_json::to_string(&h.r) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    let mut back: Rollout = match serde_json::from_str(&stored) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(back, h.r);
    // The anchor came along: the same climb fires on the loaded engine.
    let hot = figures(|s| s.temperature_c = Some(80.0));
    assert!(
        back.handle_input(
            now + 3 * MINUTE,
            Input::Health {
                device: d,
                report: hot
            }
        )
        .is_ok()
    );
    assert_eq!(back.status(), DeploymentStatus::Paused);
}

#[test]
fn a_memory_leak_that_starts_late_is_judged_over_the_last_30_minutes() {
    let mut cfg = StrategyConfig::defaults(Strategy::Rolling);
    cfg.batch_delay = 240 * MINUTE;
    let mut h = H::new(cfg, 10);
    assert!(h.cmd(Command::Start).is_ok());
    let memory = |mb: f32| HealthReport {
        memory_mb: mb,
        ..good()
    };
    // An hour flat at 200 MB, reported every 5 minutes.
    for k in 0..=12u64 {
        for d in [1, 2] {
            report(&mut h, d, k * 5 * MINUTE, memory(200.0));
        }
    }
    // Then device 1 grows 6 % per 10 minutes and device 2 grows 4 %: over the whole hour and
    // ten minutes that is under 1 % per 10 minutes, but over the last window it is a leak.
    report(&mut h, 2, 65 * MINUTE, memory(204.0));
    report(&mut h, 1, 65 * MINUTE, memory(206.0));
    assert!(h.directives(DirectiveKind::Rollback).is_empty());
    report(&mut h, 2, 70 * MINUTE, memory(208.0));
    report(&mut h, 1, 70 * MINUTE, memory(212.0));
    assert_eq!(h.directives(DirectiveKind::Rollback), vec![1]);
    assert!(h.log.iter().any(|(_, a)| matches!(
        a,
        Action::Directive {
            device: 1,
            cause: Some(RollbackCause::MemoryLeak),
            ..
        }
    )));
    assert_eq!(h.r.status(), DeploymentStatus::Running);
}

/// Baselines for both device types of the harness with `cpu` percent of CPU, and the figures
/// of [`good`] otherwise.
fn cpu_baselines(cpu: f64) -> BaselineSet {
    let metric = |mean: f64| crate::baseline::flat(mean, 500);
    let group = |t: &str| GroupBaseline {
        device_type: t.into(),
        region: None,
        samples: 500,
        needed: 100,
        error_rate: Some(metric(0.01)),
        p95_ms: Some(metric(100.0)),
        memory_mb: Some(metric(200.0)),
        cpu_percent: Some(metric(cpu)),
    };
    BaselineSet {
        captured_at: 0,
        window: 24 * 60 * MINUTE,
        min_samples: 100,
        groups: vec![group("pi"), group("jetson")],
        truncated: false,
    }
}
