//! Operator commands (approve, rollback, pause, resume, abort), refused input, and the state
//! block and report an operator reads.

use super::*;

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
    let block = crate::StateBlock::from_rollout(&h.r).to_text();
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
    let md = crate::Report::from_rollout(&h.r).to_markdown();
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
    let json = serde_json::to_value(crate::Report::from_rollout(&h.r)).unwrap_or_default();
    assert_eq!(json["counts"]["deployed"], 100);
    assert_eq!(json["stages"][0]["verdict"], "PASS");
}
