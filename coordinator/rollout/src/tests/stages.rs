//! Stage outcomes: failed canaries and gates, wave and batch failure thresholds, full
//! rollbacks that wait for device rollbacks in flight, and gates without a quorum.

use super::*;

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
