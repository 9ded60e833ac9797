//! Each strategy end to end on a healthy fleet, and the strategy-specific shapes: rolling
//! batch delays, blue-green staging then switching, traffic steps, health checks off.

use super::*;

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
