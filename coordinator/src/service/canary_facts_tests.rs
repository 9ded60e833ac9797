//! The registry's canary facts through the service: set by a patch (bad values refused with
//! the field named), persisted across a restart, the coordinator's own offline history, and
//! all of them changing which devices a deployment picks as its canary and what its plan says.

use super::*;
use crate::api::views;
use crate::contract::{ConfigInput, DeploymentInput, DeviceInput, DevicePatch};
use ed25519_dalek::SigningKey;
use floe_rollout::{CanaryReason, Command};
use floe_wire::proto::{DeviceReport, Facts, Fixed, HealthLevel, HealthSummary};
use std::path::Path;

const T0: u64 = 1_800_000_000_000;

fn core_at(dir: &Path) -> Core {
    super::tests::core_with(dir, 20_000)
}

/// A device of `device_type` in `region` whose key comes from `seed`.
struct Unit {
    key: SigningKey,
    id: String,
    device_type: &'static str,
    seq: u64,
}

fn unit(seed: u8, device_type: &'static str) -> Unit {
    let key = SigningKey::from_bytes(&[seed; 32]);
    let id = hex::encode(key.verifying_key().to_bytes());
    Unit {
        key,
        id,
        device_type,
        seq: 0,
    }
}

/// Allowlists `u` (if `allow`) and has it report once at `now`.
fn heard(core: &mut Core, u: &mut Unit, now: u64, allow: bool) {
    if allow {
        core.allow_device(
            DeviceInput {
                id: u.id.clone(),
                public_key: hex::encode(u.key.verifying_key().to_bytes()),
                device_type: Some(u.device_type.into()),
                region: Some("eu".into()),
                labels: Default::default(),
            },
            now,
        )
        .unwrap();
    }
    u.seq += 1;
    let report = DeviceReport {
        schema: 1,
        device_id: u.id.clone(),
        public_key: Fixed(u.key.verifying_key().to_bytes()),
        seq: u.seq,
        facts: Facts {
            device_type: u.device_type.into(),
            arch: "aarch64".into(),
            region: "eu".into(),
            labels: Vec::new(),
            runtime_version: "0.1.0".into(),
        },
        enroll_token: None,
        active: None,
        standby: None,
        last_known_good: None,
        on_trial: false,
        applied: None,
        health: Some(HealthSummary {
            status: HealthLevel::Healthy,
            flow_running: true,
            error_rate_ppm: 0,
            p95_us: 2000,
            memory_kib: 8192,
            restarts: 0,
            system: None,
        }),
    };
    core.device_report(report, now).unwrap();
}

fn patch(core: &mut Core, id: &str, p: DevicePatch, now: u64) -> Result<(), ServiceError> {
    core.patch_device(id, p, now).map(|_| ())
}

fn field_of(e: ServiceError) -> String {
    match e {
        ServiceError::Validation { field, .. } => field,
        other => panic!("not a validation error: {other}"),
    }
}

#[test]
fn canary_facts_round_trip_and_change_the_canary() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = core_at(dir.path());
    let flow = super::tests::published(&mut core, T0);
    // Nine rpi4 and three jetson: with no facts set, each type's first device is its canary.
    let mut units: Vec<Unit> = (0..12u8)
        .map(|i| unit(40 + i, if i < 9 { "rpi4" } else { "jetson" }))
        .collect();
    for u in units.iter_mut() {
        heard(&mut core, u, T0, true);
    }
    let ids: Vec<String> = units.iter().map(|u| u.id.clone()).collect();
    let by_type = |t: &str| -> Vec<String> {
        // In target order: ties in monitoring go to the earlier target.
        units
            .iter()
            .filter(|u| u.device_type == t)
            .map(|u| u.id.clone())
            .collect()
    };
    let (rpi, jetson) = (by_type("rpi4"), by_type("jetson"));

    let deploy = |core: &mut Core, now: u64| -> crate::contract::Deployment {
        let id = core
            .create_deployment(
                DeploymentInput {
                    flow_id: flow.clone(),
                    strategy: "canary".into(),
                    target_devices: Some(ids.clone()),
                    selector: None,
                    config: ConfigInput {
                        canary_percentage: Some(10.0),
                        ..ConfigInput::default()
                    },
                },
                now,
            )
            .unwrap();
        let view = core.with_deployment(&id, views::deployment).unwrap();
        core.command(&id, Command::Abort, now).unwrap();
        view
    };
    let before = deploy(&mut core, T0 + 1_000);
    let picked = |d: &crate::contract::Deployment| -> Vec<String> {
        d.plan.canary.iter().map(|c| c.device_id.clone()).collect()
    };
    // 12 devices of 2 types: one per type, the table's 2-3 (10 % is 2).
    assert_eq!(before.plan.canary.len(), 2, "{:?}", before.plan);
    assert!(picked(&before).contains(&rpi[0]) && picked(&before).contains(&jetson[0]));
    assert!(before.plan.canary.iter().all(
        |c| c.reason == CanaryReason::DeviceType && c.covers.starts_with("covers device type")
    ));

    // The operator's facts: the best-covered rpi4 is rpi[4]; rpi[3] is better still but goes
    // offline (the coordinator's history); jetson[0] is a single point of failure and
    // jetson[1] has known issues.
    let now = T0 + 2_000;
    let set = |m: Option<u8>, spof: Option<bool>, issues: Option<&str>| DevicePatch {
        monitoring: m,
        single_point_of_failure: spof,
        known_hardware_issues: issues.map(str::to_string),
        ..DevicePatch::default()
    };
    patch(&mut core, &rpi[4], set(Some(90), None, None), now).unwrap();
    patch(&mut core, &rpi[3], set(Some(100), None, None), now).unwrap();
    patch(&mut core, &jetson[0], set(None, Some(true), None), now).unwrap();
    patch(
        &mut core,
        &jetson[1],
        set(None, None, Some(" fan fails above 40 C ")),
        now,
    )
    .unwrap();
    // Refusals name the field and change nothing.
    let e = patch(&mut core, &rpi[4], set(Some(101), None, None), now).unwrap_err();
    assert_eq!(field_of(e), "monitoring");
    let e = patch(
        &mut core,
        &rpi[4],
        set(None, None, Some("bad\u{1b}[2J")),
        now,
    )
    .unwrap_err();
    assert_eq!(field_of(e), "known_hardware_issues");
    let long = "x".repeat(501);
    let e = patch(&mut core, &rpi[4], set(None, None, Some(&long)), now).unwrap_err();
    assert_eq!(field_of(e), "known_hardware_issues");
    assert_eq!(core.device(&rpi[4]).unwrap().canary.monitoring, Some(90));

    // rpi[3] falls silent: the tick marks it offline and records it; it reports again, so it
    // is online but had connectivity problems in the last 24 h.
    let silent_at = T0 + 40_000;
    for u in units.iter_mut().filter(|u| u.id != rpi[3]) {
        heard(&mut core, u, silent_at - 5_000, false);
    }
    core.tick(silent_at);
    assert!(core.device(&rpi[3]).unwrap().offline);
    let back = silent_at + 1_000;
    let u3 = units.iter_mut().find(|u| u.id == rpi[3]).unwrap();
    heard(&mut core, u3, back, false);
    assert!(!core.device(&rpi[3]).unwrap().offline);
    assert_eq!(
        core.device(&rpi[3]).unwrap().canary.offline_at,
        vec![silent_at]
    );

    // Persisted: a reopened core reads the same facts, and the API view shows them.
    drop(core);
    let mut core = core_at(dir.path());
    let d = core.device(&jetson[1]).unwrap().clone();
    assert_eq!(d.canary.known_hardware_issues, "fan fails above 40 C");
    let view = views::device(&d, true, 0);
    assert_eq!(view.known_hardware_issues, "fan fails above 40 C");
    let view = views::device(core.device(&rpi[3]).unwrap(), true, 0);
    assert_eq!(view.monitoring, Some(100));
    assert_eq!(view.offline_history.len(), 1);
    let view = views::device(core.device(&jetson[0]).unwrap(), true, 0);
    assert!(view.single_point_of_failure);

    let after = deploy(&mut core, back + 1_000);
    let p = picked(&after);
    assert_eq!(after.plan.canary.len(), 2, "{:?}", after.plan);
    assert!(p.contains(&rpi[4]), "best monitored eligible rpi4: {p:?}");
    assert!(p.contains(&jetson[2]), "the only eligible jetson: {p:?}");
    let warning = after
        .plan
        .warnings
        .iter()
        .find(|w| w.contains("3 of 12 devices are not eligible"));
    let Some(warning) = warning else {
        panic!("{:?}", after.plan.warnings)
    };
    for what in [
        "1 with known hardware issues",
        "1 with connectivity problems in the last 24 h",
        "1 single points of failure",
    ] {
        assert!(warning.contains(what), "{warning}");
    }

    // A day later the offline transition no longer counts: rpi[3] is the rpi4 canary again.
    let day = back + 24 * 3_600_000 + 1_000;
    for u in units.iter_mut() {
        heard(&mut core, u, day, false);
    }
    let later = deploy(&mut core, day);
    assert!(picked(&later).contains(&rpi[3]), "{:?}", picked(&later));
}
