//! Offline devices: skipped and queued, never failed, caught up when they return.

use super::*;

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
