//! Blue-green as 003 lays it out, in virtual time: every device staged in its standby slot,
//! then the canary switched and gated, then the rest switched wave by wave with a gate
//! between waves; a failure in a wave switches that wave back and halts, a failure in the
//! canary switches the canary back and nothing else is ever switched; a device that stages
//! late still waits for its own wave.

use super::*;
use crate::engine::GateVerdict;
use crate::plan::StageMode;

fn blue_green(n: usize) -> H {
    H::new(StrategyConfig::defaults(Strategy::BlueGreen), n)
}

/// The devices of stage `s`, by the plan's order.
fn stage_devices(h: &H, s: usize) -> Vec<u32> {
    let spec = &h.r.plan().stages[s];
    h.r.plan().order[spec.start as usize..spec.end as usize].to_vec()
}

/// When each device was first sent `kind`.
fn first(h: &H, kind: DirectiveKind) -> HashMap<u32, Millis> {
    let mut at = HashMap::new();
    for (t, a) in &h.log {
        if let Action::Directive {
            device, kind: k, ..
        } = a
            && *k == kind
        {
            at.entry(*device).or_insert(*t);
        }
    }
    at
}

/// When stage `s`'s gate passed.
fn passed(h: &H, s: u32) -> Option<Millis> {
    h.log.iter().find_map(|(t, a)| match a {
        Action::Gate(GateVerdict {
            stage,
            verdict: Verdict::Pass,
            ..
        }) if *stage == s => Some(*t),
        _ => None,
    })
}

#[test]
fn the_canary_switches_first_then_each_wave_after_the_previous_gate() {
    let mut h = blue_green(40);
    let stages = h.r.plan().stages.clone();
    assert_eq!(stages.len(), 5, "stage, canary, three waves: {stages:?}");
    assert!(stages[1..].iter().all(|s| s.mode == StageMode::SwitchOnly));
    assert!(h.cmd(Command::Start).is_ok());
    h.run_to_end();
    assert_eq!(
        h.r.status(),
        DeploymentStatus::Completed,
        "{:?}",
        h.r.pause_reason()
    );
    // Everything is staged at once, before anything switches.
    let staged = first(&h, DirectiveKind::Stage);
    assert_eq!(staged.len(), 40);
    assert!(staged.values().all(|t| *t == 0));
    let switched = first(&h, DirectiveKind::Switch);
    assert_eq!(switched.len(), 40);
    // The canary after the switch delay; each later stage only after the previous gate.
    for d in stage_devices(&h, 1) {
        assert_eq!(switched[&d], 10 * MINUTE, "canary device {d}");
    }
    for s in 2..stages.len() {
        let gate = passed(&h, s as u32 - 1);
        let Some(gate) = gate else {
            panic!("stage {} never passed its gate", s - 1)
        };
        for d in stage_devices(&h, s) {
            assert!(
                switched[&d] >= gate,
                "{} switched before the gate",
                stages[s].name
            );
        }
        // The previous stage's soak lies between its switches and this stage's.
        let prev_last = stage_devices(&h, s - 1)
            .iter()
            .map(|d| switched[d])
            .max()
            .unwrap_or(0);
        let this_first = stage_devices(&h, s)
            .iter()
            .map(|d| switched[d])
            .min()
            .unwrap_or(0);
        assert!(
            this_first >= prev_last + stages[s - 1].soak,
            "{}: {this_first} < {prev_last} + soak",
            stages[s].name
        );
    }
    // Never the whole fleet in one step.
    let mut by_time: HashMap<Millis, usize> = HashMap::new();
    for t in switched.values() {
        *by_time.entry(*t).or_default() += 1;
    }
    assert!(by_time.values().all(|c| *c < 40), "{by_time:?}");
    assert_eq!(h.directives(DirectiveKind::Commit).len(), 40);
}

#[test]
fn a_failing_wave_is_switched_back_and_halts_and_later_waves_never_switch() {
    let mut h = blue_green(40);
    let wave2 = stage_devices(&h, 3);
    let wave3 = stage_devices(&h, 4);
    let bad = wave2[0];
    let mut inner = healthy_responder();
    h.respond = Box::new(move |d, kind, now| {
        if d == bad && kind == DirectiveKind::Switch {
            return vec![
                dev(d, DeviceEvent::Switched),
                dev(d, DeviceEvent::Unhealthy),
            ];
        }
        inner(d, kind, now)
    });
    assert!(h.cmd(Command::Start).is_ok());
    h.run_to_end();
    assert_eq!(
        h.r.status(),
        DeploymentStatus::Paused,
        "a wave breach halts"
    );
    let reason = h.r.pause_reason().unwrap_or_default().to_string();
    assert!(reason.contains("wave-2 (switch) rolled back"), "{reason}");
    let rolled = first(&h, DirectiveKind::Rollback);
    for d in &wave2 {
        assert!(
            rolled.contains_key(d),
            "wave-2 device {d} was not switched back"
        );
    }
    let switched = first(&h, DirectiveKind::Switch);
    assert!(wave3.iter().all(|d| !switched.contains_key(d)));
    // The canary and wave 1 keep the new version.
    for d in stage_devices(&h, 1).iter().chain(&stage_devices(&h, 2)) {
        assert_eq!(h.r.target_status(*d), Some(TargetStatus::Success));
        assert!(!rolled.contains_key(d));
    }
    // The operator rolls everything back: switched devices switch back, nobody is staged again.
    assert!(h.cmd(Command::Rollback).is_ok());
    h.run_to_end();
    assert_eq!(h.r.status(), DeploymentStatus::RolledBack);
    let rolled = first(&h, DirectiveKind::Rollback);
    for d in switched.keys() {
        assert!(
            rolled.contains_key(d),
            "device {d} switched but not switched back"
        );
    }
    assert!(
        wave3.iter().all(|d| !rolled.contains_key(d)),
        "never switched"
    );
    assert_eq!(
        h.directives(DirectiveKind::Stage).len(),
        40,
        "no second transfer"
    );
}

#[test]
fn a_failing_canary_switches_only_the_canary_back() {
    let mut h = blue_green(40);
    let canary = h.r.plan().canary.clone();
    let bad = canary[0];
    let mut inner = healthy_responder();
    h.respond = Box::new(move |d, kind, now| {
        if d == bad && kind == DirectiveKind::Switch {
            return vec![
                dev(d, DeviceEvent::Switched),
                dev(d, DeviceEvent::Unhealthy),
            ];
        }
        inner(d, kind, now)
    });
    assert!(h.cmd(Command::Start).is_ok());
    h.run_to_end();
    assert_eq!(h.r.status(), DeploymentStatus::RolledBack);
    let switched = first(&h, DirectiveKind::Switch);
    let mut got: Vec<u32> = switched.keys().copied().collect();
    got.sort_unstable();
    let mut want = canary.clone();
    want.sort_unstable();
    assert_eq!(got, want, "only the canary ever switched");
    let rolled = first(&h, DirectiveKind::Rollback);
    assert!(canary.iter().all(|d| rolled.contains_key(d)));
    assert_eq!(
        rolled.len(),
        canary.len(),
        "staged devices need no rollback"
    );
}

#[test]
fn a_device_that_stages_late_waits_for_its_own_wave() {
    let mut h = blue_green(40);
    let wave3 = stage_devices(&h, 4);
    let late = wave3[0];
    assert!(h.send(dev(late, DeviceEvent::Offline)).is_ok());
    assert!(h.cmd(Command::Start).is_ok());
    // Back during wave 1's soak (the canary switches at 10 min, its gate at 40 min).
    h.run_until(45 * MINUTE);
    assert!(h.send(dev(late, DeviceEvent::Online)).is_ok());
    let staged = first(&h, DirectiveKind::Stage);
    assert_eq!(staged.get(&late), Some(&(45 * MINUTE)), "staged on return");
    assert!(
        !first(&h, DirectiveKind::Switch).contains_key(&late),
        "not switched yet"
    );
    h.run_to_end();
    assert_eq!(
        h.r.status(),
        DeploymentStatus::Completed,
        "{:?}",
        h.r.pause_reason()
    );
    let switched = first(&h, DirectiveKind::Switch);
    let wave2_gate = passed(&h, 3).unwrap_or(Millis::MAX);
    assert!(switched[&late] >= wave2_gate, "switched with wave 3");
}
