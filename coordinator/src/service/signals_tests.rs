//! A device's system figures reach the registry and the API's device view; a targeted device
//! that keeps reporting without a health summary is found health-unreachable by the service
//! and rolled back after 2 minutes, while a silent one only goes offline.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::core;
use super::model::{ConfigInput, DeploymentInput};
use super::tests::{Dev, T0, allow, core_at, published, status};
use floe_rollout::{DeploymentStatus, TargetStatus};
use floe_wire::proto::{Action, DeviceReport, SystemSummary};

fn with_figures(r: &mut DeviceReport) {
    if let Some(h) = r.health.as_mut() {
        h.system = Some(SystemSummary {
            cpu_permille: Some(425),
            memory_permille: Some(612),
            temperature_mc: Some(58_250),
            throttled: Some(false),
            disk_free_mb: Some(12_345),
            disk_used_permille: Some(401),
            functional_ok: None,
        });
    }
}

fn without_health(r: &mut DeviceReport) {
    r.health = None;
}

#[test]
fn system_figures_reach_the_registry_and_the_device_view() {
    let tmp = tempfile::tempdir().unwrap();
    let mut core = core_at(tmp.path());
    let mut d = Dev::new("a", 31);
    allow(&mut core, &mut d, T0);
    // Before any figure: unknown, not zero.
    let before = core.device(&d.id).unwrap().health.clone().unwrap();
    assert_eq!(before.system, floe_rollout::SystemFigures::default());
    d.edit = Some(with_figures);
    let r = d.report();
    core.device_report(r, T0 + 1_000).unwrap();
    let record = core.device(&d.id).unwrap().clone();
    let s = record.health.as_ref().unwrap().system;
    assert_eq!(s.cpu_percent, Some(42.5));
    assert_eq!(s.memory_used_percent, Some(61.2));
    assert_eq!(s.temperature_c, Some(58.25));
    assert_eq!(s.throttled, Some(false));
    assert_eq!(s.disk_free_mb, Some(12_345.0));
    assert_eq!(s.disk_used_percent, Some(40.1));
    assert_eq!(s.functional_ok, None);
    let view = crate::api::views::device(&record, true, 0);
    let json = serde_json::to_value(&view).unwrap();
    assert_eq!(json["health"]["system"]["cpu_percent"], 42.5);
    assert_eq!(json["health"]["system"]["temperature_c"], 58.25);
    assert!(json["health"]["system"].get("functional_ok").is_none());
}

/// Eleven devices deployed in one wave (`rolling`, a batch of 11, a 10-minute soak), all
/// switched and healthy; then the first one's reports are shaped by `edit` (or it falls
/// silent) for `secs` seconds of 10-second rounds. One device of eleven is 9 % of the wave,
/// under the wave's 10 % trigger, so what happens to it is its own trigger's doing.
fn deployed_then(
    edit: Option<fn(&mut DeviceReport)>,
    silent: bool,
    secs: u64,
) -> (Vec<Dev>, String, core::Core) {
    let tmp = tempfile::tempdir().unwrap();
    let mut core = core_at(tmp.path());
    let mut now = T0;
    let flow = published(&mut core, now);
    let mut devs: Vec<Dev> = (0..11).map(|i| Dev::new("d", 40 + i)).collect();
    for d in devs.iter_mut() {
        allow(&mut core, d, now);
    }
    let dep = core
        .create_deployment(
            DeploymentInput {
                flow_id: flow.clone(),
                strategy: "rolling".into(),
                target_devices: Some(devs.iter().map(|d| d.id.clone()).collect()),
                selector: None,
                config: ConfigInput {
                    batch_size: Some(11),
                    batch_delay: Some("10m".into()),
                    ..ConfigInput::default()
                },
            },
            now,
        )
        .unwrap();
    core.command(&dep, floe_rollout::Command::Start, now)
        .unwrap();
    for _ in 0..4 {
        for d in devs.iter_mut() {
            d.step(&mut core, now);
        }
        now += 500;
        core.tick(now);
    }
    for d in &devs {
        let actions: Vec<Action> = d.log.iter().map(|(_, a)| *a).collect();
        assert_eq!(actions, [Action::Stage, Action::Switch], "{actions:?}");
    }
    devs[0].edit = edit;
    let end = now + secs * 1000;
    while now < end {
        now += 10_000;
        for (i, d) in devs.iter_mut().enumerate() {
            if !(silent && i == 0) {
                d.step(&mut core, now);
            }
        }
        core.tick(now);
    }
    std::mem::forget(tmp);
    (devs, dep, core)
}

#[test]
fn reports_without_health_for_over_two_minutes_roll_the_device_back() {
    let index = |core: &core::Core, dep: &str, id: &str| {
        core.with_deployment(dep, |_, e| {
            (0..e.plan().len() as u32).find(|&i| e.plan().ids[i as usize] == id)
        })
        .unwrap()
        .unwrap()
    };
    // 110 s without a health summary: not yet.
    let (devs, dep, core) = deployed_then(Some(without_health), false, 110);
    assert!(devs[0].rollbacks.is_empty());
    let i = index(&core, &dep, &devs[0].id);
    let target = core
        .with_deployment(&dep, |_, e| e.target_status(i))
        .unwrap();
    assert_eq!(target, Some(TargetStatus::Deploying));
    // Past 2 minutes: rolled back (and quarantined) by the coordinator's own view; the
    // others go on.
    let (devs, dep, core) = deployed_then(Some(without_health), false, 150);
    assert_eq!(devs[0].rollbacks.len(), 1, "{:?}", devs[0].log);
    let i = index(&core, &dep, &devs[0].id);
    let target = core
        .with_deployment(&dep, |_, e| e.target_status(i))
        .unwrap();
    assert_eq!(target, Some(TargetStatus::Quarantined));
    assert!(devs[1..].iter().all(|d| d.rollbacks.is_empty()));
    assert_eq!(status(&core, &dep), DeploymentStatus::Running);
}

#[test]
fn a_silent_device_goes_offline_and_is_not_rolled_back() {
    let (devs, dep, core) = deployed_then(None, true, 240);
    assert!(devs.iter().all(|d| d.rollbacks.is_empty()));
    let offline = core
        .with_deployment(&dep, |_, e| e.counts().offline)
        .unwrap();
    assert_eq!(offline, 1);
}
