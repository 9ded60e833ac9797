//! What the coordinator stores and reads back: the engine's persisted layout, which must not
//! change under a deployment in progress, the cause a device-level rollback carries for the
//! audit log, and the spellings the REST API and the store use.

use super::*;
use crate::engine::RollbackCause;
use crate::names::UnknownName;
use crate::plan::{GateKind, StageKind};
use crate::sim::Approval;
use std::fmt::Display;
use std::str::FromStr;

/// Engine states written by the engine before its state was grouped into sub-states (commit
/// 5004eab), by the simulator on 12 devices with canary-waves and manual approval: one
/// waiting for the approval after the canary, one rolled back (30 % failures, 20 % offline).
const AWAITING_APPROVAL: &str = include_str!("persisted-awaiting-approval.json");
const ROLLED_BACK: &str = include_str!("persisted-rolled-back.json");

fn simulated(fail_rate: f64, offline_rate: f64) -> Rollout {
    let mut cfg = SimConfig::new(12, Strategy::CanaryWaves);
    cfg.fail_rate = fail_rate;
    cfg.offline_rate = offline_rate;
    cfg.approval = Approval::Manual;
    sim::run(&cfg).unwrap().rollout
}

/// Whether two JSON documents are the same up to the last bit of their floats.
fn same_document(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y || (x - y).abs() <= 1e-12 * x.abs().max(y.abs()),
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_document(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((kx, x), (ky, y))| kx == ky && same_document(x, y))
        }
        _ => a == b,
    }
}

/// Loading keeps every field: written back, a stored state is the same document. (Floats are
/// compared to the last bit: serde_json's default float parsing may land one ulp off, so a
/// float can print differently after a load; that was so before the split too.)
#[test]
fn stored_states_load_with_every_field() {
    for stored in [AWAITING_APPROVAL, ROLLED_BACK] {
        let r: Rollout = serde_json::from_str(stored).unwrap();
        let written: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        let doc: serde_json::Value = serde_json::from_str(stored).unwrap();
        assert!(same_document(&written, &doc), "{written}\n{doc}");
    }
}

#[test]
fn the_engine_still_writes_the_stored_layout_byte_for_byte_and_reaches_the_same_states() {
    let r = simulated(0.0, 0.0);
    assert_eq!(
        serde_json::to_string(&r).unwrap(),
        AWAITING_APPROVAL.trim_end()
    );
    // Since the report counts devices skipped while offline apart from devices never started,
    // a skipped offline device keeps one more flag bit (1 << 15); the layout is the same, and
    // without that bit so is every value.
    let r = simulated(0.3, 0.2);
    let mut written: serde_json::Value =
        serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    let mut marked = 0;
    for d in written["devs"].as_array_mut().unwrap() {
        let flags = d["flags"].as_u64().unwrap();
        if flags & (1 << 15) != 0 {
            marked += 1;
            d["flags"] = (flags & !(1 << 15)).into();
        }
    }
    assert!(marked > 0, "the 20 % offline devices include skipped ones");
    let doc: serde_json::Value = serde_json::from_str(ROLLED_BACK).unwrap();
    assert!(same_document(&written, &doc), "{written}\n{doc}");
}

#[test]
fn a_stored_state_goes_on_after_loading() {
    let mut r: Rollout = serde_json::from_str(AWAITING_APPROVAL).unwrap();
    assert!(r.awaiting_approval());
    assert!(r.handle_input(0, Input::Command(Command::Approve)).is_ok());
    let mut stages = 0;
    while let Some(a) = r.poll_action() {
        if matches!(a, Action::Audit { ref event, .. } if event.starts_with("begin ")) {
            stages += 1;
        }
    }
    assert_eq!(stages, 1, "approve begins the next stage");
    assert_eq!(r.current_stage(), 1);
}

/// The rollback directives of a rollback sweep carry no cause: the deployment's audit events
/// explain them (device-level causes are checked with their triggers).
#[test]
fn sweep_rollback_directives_carry_no_cause() {
    let mut h = canary_waves(100);
    assert!(h.cmd(Command::Start).is_ok());
    h.run_until(MINUTE);
    assert!(h.cmd(Command::Rollback).is_ok());
    h.run_to_end();
    assert_eq!(h.r.status(), DeploymentStatus::RolledBack);
    let causes: Vec<Option<RollbackCause>> = h
        .log
        .iter()
        .filter_map(|(_, a)| match a {
            Action::Directive {
                kind: DirectiveKind::Rollback,
                cause,
                ..
            } => Some(*cause),
            _ => None,
        })
        .collect();
    assert!(!causes.is_empty());
    assert!(causes.iter().all(Option::is_none), "{causes:?}");
}

/// Checks that `values` are spelled as serde spells them and parse back.
fn spelled_as_serde<T>(values: &[T])
where
    T: Copy + PartialEq + std::fmt::Debug + Display + FromStr<Err = UnknownName> + serde::Serialize,
{
    for v in values {
        assert_eq!(serde_json::to_string(v).unwrap(), format!("\"{v}\""));
        assert_eq!(v.to_string().parse::<T>(), Ok(*v));
    }
    let err = "no-such-value".parse::<T>().unwrap_err();
    assert!(err.to_string().contains(&values[0].to_string()), "{err}");
}

#[test]
fn public_enums_are_spelled_as_serde_spells_them() {
    spelled_as_serde(DeploymentStatus::ALL);
    spelled_as_serde(TargetStatus::ALL);
    spelled_as_serde(Command::ALL);
    spelled_as_serde(DeviceEvent::ALL);
    spelled_as_serde(HealthStatus::ALL);
    spelled_as_serde(DirectiveKind::ALL);
    spelled_as_serde(Verdict::ALL);
    spelled_as_serde(RollbackCause::ALL);
    spelled_as_serde(GateKind::ALL);
    spelled_as_serde(StageKind::ALL);
    spelled_as_serde(Strategy::ALL);
}

/// The coordinator logs the inputs it feeds and replays them after a restart, skipping the
/// ones [`Rollout::ignores`] names. Two engines, one fed everything and one fed only what it
/// does not ignore, must decide the same things and, after every input both took, be in the
/// same state: a skipped input changes nothing.
#[test]
fn skipping_ignored_inputs_changes_nothing() {
    let mut cfg = StrategyConfig::defaults(Strategy::CanaryWaves);
    cfg.require_approval = false;
    let n = 40;
    let mut all = Rollout::new(plan(cfg.clone(), n), 0);
    let mut lean = Rollout::new(plan(cfg, n), 0);
    let mut skipped = 0usize;
    let mut taken = 0usize;
    let mut queue: Vec<Input> = vec![Input::Command(Command::Start)];
    let mut now: Millis = 0;
    let mut respond = healthy_responder();
    let mut feed = |now: Millis,
                    input: Input,
                    all: &mut Rollout,
                    lean: &mut Rollout,
                    queue: &mut Vec<Input>| {
        let ignored = lean.ignores(now, &input);
        all.handle_input(now, input).unwrap();
        let mut a_actions = Vec::new();
        while let Some(a) = all.poll_action() {
            a_actions.push(a);
        }
        if ignored {
            assert!(
                a_actions.is_empty(),
                "an ignored input produced {a_actions:?}"
            );
            return (1, 0);
        }
        lean.handle_input(now, input).unwrap();
        let mut b_actions = Vec::new();
        while let Some(a) = lean.poll_action() {
            b_actions.push(a);
        }
        assert_eq!(a_actions, b_actions);
        for a in &b_actions {
            if let Action::Directive { device, kind, .. } = a {
                queue.extend(respond(*device, *kind, now));
            }
        }
        let a = serde_json::to_value(&*all).unwrap();
        let b = serde_json::to_value(&*lean).unwrap();
        assert!(same_document(&a, &b), "the engines diverged at {now}");
        (0, 1)
    };
    for _ in 0..2_000 {
        // Every device reports its health every 30 s of virtual time, most of them while the
        // new version has not reached them (those reports are ignored).
        for d in 0..n as u32 {
            queue.push(Input::Health {
                device: d,
                report: good(),
            });
        }
        if lean.poll_timeout().is_some_and(|t| t <= now) {
            queue.push(Input::Tick);
        }
        while !queue.is_empty() {
            for input in std::mem::take(&mut queue) {
                let (s, t) = feed(now, input, &mut all, &mut lean, &mut queue);
                skipped += s;
                taken += t;
            }
        }
        if lean.status().is_terminal() {
            break;
        }
        now += 30_000;
    }
    assert_eq!(lean.status(), DeploymentStatus::Completed);
    assert!(skipped > taken, "skipped {skipped}, taken {taken}");
}
