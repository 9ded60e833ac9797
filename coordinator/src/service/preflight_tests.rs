//! Tests of the VALIDATE phase on a real store: each checklist item failing and passing, a
//! start stopped with every failed item listed and the deployment left pending, an override
//! that starts it (audited with the caller and the items), `force` for a large all-at-once
//! (audited), and a flow published with a smoke test carrying it into the signed manifest.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::model::{ConfigInput, DeploymentInput, DeviceInput, FlowInput};
use super::*;
use crate::contract::{Preflight, PreflightItem, SmokeTestInput};
use crate::store::{AuditFilter, AuditRecord, Store};
use ed25519_dalek::SigningKey;
use floe_rollout::{Command, DeploymentStatus, SystemFigures};
use floe_wire::proto::{
    DeviceReport, Facts, Fixed, HealthLevel, HealthSummary, SlotInfo, manifest::Manifest,
};
use std::path::Path;

const T0: u64 = 1_800_000_000_000;

fn core(dir: &Path) -> Core {
    let store = Store::open(&dir.join("floe.db")).unwrap();
    let mut config = ServiceConfig::new(dir.to_path_buf());
    config.offline_after = 30_000;
    Core::new(
        store,
        config,
        SigningKey::from_bytes(&[1; 32]),
        SigningKey::from_bytes(&[2; 32]),
    )
    .unwrap()
}

fn example() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/temperature-alert.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn publish(core: &mut Core, smoke: Option<&SmokeTestInput>) -> String {
    let flow = core
        .create_flow(
            FlowInput {
                name: "Temperature Alert".into(),
                description: String::new(),
                tags: vec![],
                definition: example(),
            },
            T0,
        )
        .unwrap();
    core.publish_flow_with(&flow.id, smoke, T0).unwrap();
    flow.id
}

/// A device of `device_type` with key `seed`, allowlisted; when `report`, it reports once
/// (aarch64, healthy, running release 1 of `old`).
fn device(core: &mut Core, seed: u8, device_type: &str, report: bool) -> String {
    let key = SigningKey::from_bytes(&[seed; 32]);
    let id = hex::encode(key.verifying_key().to_bytes());
    core.allow_device(
        DeviceInput {
            id: id.clone(),
            public_key: id.clone(),
            device_type: Some(device_type.into()),
            region: Some("eu".into()),
            labels: Default::default(),
        },
        T0,
    )
    .unwrap();
    if report {
        let slot = SlotInfo {
            slot: "blue".into(),
            name: "old".into(),
            release: 1,
            version: "1.1.0".into(),
        };
        let r = DeviceReport {
            schema: 1,
            device_id: id.clone(),
            public_key: Fixed(key.verifying_key().to_bytes()),
            seq: 1,
            facts: Facts {
                device_type: device_type.into(),
                arch: "aarch64".into(),
                region: "eu".into(),
                labels: Vec::new(),
                runtime_version: "0.1.0".into(),
            },
            enroll_token: None,
            active: Some(slot.clone()),
            standby: None,
            last_known_good: Some(slot),
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
        core.device_report(r, T0).unwrap();
    }
    id
}

/// Sets the system figures a device's last report would carry (devices send them once the
/// wire carries them; the registry keeps them on the health record).
fn figures(core: &mut Core, id: &str, disk_free_mb: Option<f32>, memory: Option<f32>) {
    let mut d = core.device(id).unwrap().clone();
    let h = d.health.as_mut().expect("the device reported health");
    h.system = SystemFigures {
        disk_free_mb,
        memory_used_percent: memory,
        ..SystemFigures::default()
    };
    core.install_device(d);
}

fn create(core: &mut Core, flow: &str, ids: &[&String], strategy: &str) -> String {
    core.create_deployment(
        DeploymentInput {
            flow_id: flow.into(),
            strategy: strategy.into(),
            target_devices: Some(ids.iter().map(|s| s.to_string()).collect()),
            selector: None,
            // A device type with one health report of normal operation has a baseline here
            // (the rollups' open window counts), so `baselines` follows who reported.
            config: ConfigInput {
                baseline_min_samples: Some(1),
                ..ConfigInput::default()
            },
        },
        T0,
    )
    .unwrap()
}

fn preflight(core: &Core, id: &str) -> Preflight {
    core.with_deployment(id, |d, _| d.preflight.clone())
        .unwrap()
        .expect("a checklist result")
}

fn item<'a>(p: &'a Preflight, name: &str) -> &'a PreflightItem {
    p.items.iter().find(|i| i.name == name).unwrap()
}

/// The names of the failed items.
fn failed(p: &Preflight) -> Vec<&str> {
    p.items
        .iter()
        .filter(|i| !i.passed)
        .map(|i| i.name.as_str())
        .collect()
}

fn audit(core: &Core, dep: &str) -> Vec<AuditRecord> {
    core.audit_entries(&AuditFilter {
        limit: 100,
        deployment_id: Some(dep.into()),
        device_id: None,
        before: None,
    })
    .unwrap()
}

#[test]
fn each_item_fails_on_its_own_and_all_pass_when_the_fleet_is_ready() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = core(dir.path());
    let flow = publish(&mut core, None);
    let a = device(&mut core, 11, "rpi4", true);
    let b = device(&mut core, 12, "rpi4", true);
    let ready = |core: &mut Core| {
        for id in [&a, &b] {
            figures(core, id, Some(500.0), Some(40.0));
        }
    };
    ready(&mut core);
    // Everything holds: the dry run at creation lists nine passed items.
    let dep = create(&mut core, &flow, &[&a, &b], "rolling");
    let p = preflight(&core, &dep);
    assert_eq!(p.when, "create");
    assert_eq!(p.items.len(), 9);
    assert!(p.passed, "{p:?}");
    assert!(
        item(&p, "device_type")
            .detail
            .contains("no constraint declared"),
        "{p:?}"
    );
    assert!(
        item(&p, "canary_coverage")
            .detail
            .contains("not applicable")
    );
    assert!(
        item(&p, "artifact_integrity")
            .detail
            .contains("signatures verified")
    );
    core.command(&dep, Command::Abort, T0).unwrap();

    // One fault at a time, each failing its own item only, naming the device.
    type Fault = fn(&mut crate::store::DeviceRecord, u64);
    let faults: [(&str, Fault, &str); 5] = [
        (
            "disk_space",
            |d, _| d.health.as_mut().unwrap().system.disk_free_mb = Some(0.0001),
            "MB free",
        ),
        (
            "resource_fit",
            |d, _| d.health.as_mut().unwrap().system.memory_used_percent = Some(95.0),
            "95% memory in use",
        ),
        ("architecture", |d, _| d.arch = "mips".into(), "(mips)"),
        (
            "rollback_target",
            |d, _| {
                d.installed = None;
                d.last_known_good = None;
            },
            "",
        ),
        (
            "connectivity",
            |d, now| d.last_seen = Some(now - 10 * 60_000),
            "silent 10m",
        ),
    ];
    for (name, fault, says) in faults {
        ready(&mut core);
        let mut d = core.device(&b).unwrap().clone();
        fault(&mut d, T0);
        core.install_device(d);
        let dep = create(&mut core, &flow, &[&a, &b], "rolling");
        let p = preflight(&core, &dep);
        assert_eq!(failed(&p), vec![name], "{p:?}");
        let i = item(&p, name);
        assert_eq!(i.count, 1);
        assert!(i.devices[0].starts_with(b.as_str()), "{i:?}");
        assert!(i.devices[0].contains(says), "{i:?}");
        core.command(&dep, Command::Abort, T0).unwrap();
        // Undo the fault for the next round.
        let mut d = core.device(&b).unwrap().clone();
        d.arch = "aarch64".into();
        d.last_seen = Some(T0);
        let slot = crate::store::SlotRecord {
            name: "old".into(),
            release: 1,
            version: "1.1.0".into(),
            slot: "blue".into(),
        };
        d.installed = Some(slot.clone());
        d.last_known_good = Some(slot);
        core.install_device(d);
    }

    // A device type no device ever reported health for has no baseline; when its only device
    // may not be a canary (known hardware issues), the canary leaves that type uncovered.
    ready(&mut core);
    let c = device(&mut core, 13, "jetson", false);
    let mut d = core.device(&c).unwrap().clone();
    d.canary.known_hardware_issues = "fan".into();
    core.install_device(d);
    let dep = create(&mut core, &flow, &[&a, &b, &c], "canary");
    let p = preflight(&core, &dep);
    assert_eq!(
        item(&p, "baselines").devices,
        vec!["jetson (0 samples, 1 needed)".to_string()]
    );
    assert!(!item(&p, "canary_coverage").passed, "{p:?}");
    assert_eq!(item(&p, "canary_coverage").count, 1);
    core.command(&dep, Command::Abort, T0).unwrap();

    // The artifact on disk no longer verifies: integrity fails, and architecture and device
    // type say they were not checked.
    let record = core.store().artifact(&flow).unwrap().unwrap();
    let mut bytes = std::fs::read(&record.bundle_path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&record.bundle_path, bytes).unwrap();
    let dep = create(&mut core, &flow, &[&a, &b], "rolling");
    let p = preflight(&core, &dep);
    assert_eq!(
        failed(&p),
        vec!["artifact_integrity", "architecture", "device_type"],
        "{p:?}"
    );
    assert!(
        item(&p, "artifact_integrity")
            .detail
            .contains("does not verify"),
        "{p:?}"
    );
}

#[test]
fn a_failed_checklist_stops_the_start_and_an_override_starts_it_audited() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = core(dir.path());
    let flow = publish(&mut core, None);
    let a = device(&mut core, 21, "rpi4", true);
    let b = device(&mut core, 22, "rpi4", true);
    let silent = device(&mut core, 23, "rpi4", false);
    figures(&mut core, &a, Some(500.0), Some(40.0));
    // b never sent its disk figure.
    figures(&mut core, &b, None, Some(40.0));
    let dep = create(&mut core, &flow, &[&a, &b, &silent], "rolling");
    core.set_caller("token:alice");
    let StartOutcome::Refused(p) = core.start(&dep, &[], T0 + 1000).unwrap() else {
        panic!("the start was not refused");
    };
    assert_eq!(p.when, "start");
    assert!(!p.passed && p.enforced);
    // Every failed item, with its devices: the silent device has no architecture, no figures,
    // nothing to roll back to and no heartbeat; b has no disk figure.
    assert_eq!(
        failed(&p),
        vec![
            "architecture",
            "disk_space",
            "resource_fit",
            "rollback_target",
            "connectivity"
        ]
    );
    assert_eq!(item(&p, "disk_space").count, 2);
    assert!(
        item(&p, "disk_space")
            .devices
            .iter()
            .any(|d| d.starts_with(b.as_str()))
    );
    assert_eq!(
        item(&p, "connectivity").devices,
        vec![format!("{silent} (never reported)")]
    );
    let summary = p.summary();
    for name in failed(&p) {
        assert!(summary.contains(name), "{summary}");
    }
    // The deployment stays pending, in VALIDATE, with the result stored and audited.
    let (status, phase, stored) = core
        .with_deployment(&dep, |d, e| {
            (e.status(), phase_name(d, e), d.preflight.clone())
        })
        .unwrap();
    assert_eq!(status, DeploymentStatus::Pending);
    assert_eq!(phase, "VALIDATE");
    assert_eq!(stored.as_ref(), Some(&*p));
    let state = core.with_deployment(&dep, state_block).unwrap();
    assert!(state.blockers.contains("disk_space (2)"), "{state:?}");
    assert!(state.text.contains("phase: VALIDATE"), "{}", state.text);
    let lines = audit(&core, &dep);
    let refused = lines
        .iter()
        .find(|l| l.action == "deployment.preflight")
        .unwrap();
    assert_eq!(refused.outcome, "refused");
    assert_eq!(refused.actor, "token:alice");
    assert!(
        refused.detail.contains("connectivity"),
        "{}",
        refused.detail
    );
    // A start through the generic command is refused the same way.
    let e = core.command(&dep, Command::Start, T0 + 1000).unwrap_err();
    assert!(e.to_string().contains("pre-flight failed"), "{e}");

    // An override that names no item is refused, naming it.
    let e = core
        .start(&dep, &["disk".to_string()], T0 + 2000)
        .unwrap_err();
    assert!(
        e.to_string().contains("\"disk\" is not a checklist item"),
        "{e}"
    );
    // Overriding only some items is not enough.
    let some = vec!["disk_space".to_string()];
    assert!(matches!(
        core.start(&dep, &some, T0 + 2000).unwrap(),
        StartOutcome::Refused(_)
    ));
    // Overriding every failed item starts it; the override is audited with caller and items.
    let all: Vec<String> = failed(&p).iter().map(|s| s.to_string()).collect();
    assert_eq!(
        core.start(&dep, &all, T0 + 3000).unwrap(),
        StartOutcome::Started
    );
    let p = preflight(&core, &dep);
    assert!(p.passed);
    assert_eq!(p.overridden, all);
    assert!(item(&p, "disk_space").overridden && !item(&p, "baselines").overridden);
    assert_eq!(
        core.with_deployment(&dep, |_, e| e.status()).unwrap(),
        DeploymentStatus::Running
    );
    let lines = audit(&core, &dep);
    let overridden = lines
        .iter()
        .find(|l| l.action == "deployment.preflight" && l.outcome == "overridden")
        .unwrap();
    assert_eq!(overridden.actor, "token:alice");
    assert!(
        overridden
            .detail
            .contains("token:alice overrode architecture, disk_space, resource_fit, rollback_target, connectivity"),
        "{}",
        overridden.detail
    );
    // Starting again goes to the engine, which says why not.
    let e = core.start(&dep, &[], T0 + 4000).unwrap_err();
    assert!(matches!(e, ServiceError::Conflict(_)), "{e}");
}

#[test]
fn not_enforced_the_checklist_is_recorded_and_the_start_goes_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("floe.db")).unwrap();
    let mut config = ServiceConfig::new(dir.path().to_path_buf());
    config.preflight.enforce = false;
    let mut core = Core::new(
        store,
        config,
        SigningKey::from_bytes(&[1; 32]),
        SigningKey::from_bytes(&[2; 32]),
    )
    .unwrap();
    let flow = publish(&mut core, None);
    let a = device(&mut core, 31, "rpi4", true);
    let dep = create(&mut core, &flow, &[&a], "rolling");
    assert_eq!(core.start(&dep, &[], T0).unwrap(), StartOutcome::Started);
    let p = preflight(&core, &dep);
    assert!(!p.passed && !p.enforced);
    let lines = audit(&core, &dep);
    assert!(
        lines
            .iter()
            .any(|l| l.action == "deployment.preflight" && l.outcome == "failed (not enforced)")
    );
}

#[test]
fn all_at_once_above_the_limit_needs_force_and_force_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = core(dir.path());
    let flow = publish(&mut core, None);
    let ids: Vec<String> = (0..11)
        .map(|i| device(&mut core, 40 + i, "rpi4", false))
        .collect();
    let input = |force: Option<bool>| DeploymentInput {
        flow_id: flow.clone(),
        strategy: "all-at-once".into(),
        target_devices: Some(ids.clone()),
        selector: None,
        config: ConfigInput {
            force,
            ..ConfigInput::default()
        },
    };
    let e = core.create_deployment(input(None), T0).unwrap_err();
    assert!(e.to_string().contains("\"force\": true"), "{e}");
    let dep = core.create_deployment(input(Some(true)), T0).unwrap();
    assert!(core.with_deployment(&dep, |d, _| d.config.force).unwrap());
    let lines = audit(&core, &dep);
    let forced = lines
        .iter()
        .find(|l| l.action == "deployment.force")
        .unwrap();
    assert_eq!(forced.outcome, "forced");
    assert!(forced.detail.contains("11 devices"), "{}", forced.detail);
}

#[test]
fn the_steps_strategy_takes_its_steps_and_soak_from_the_request() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = core(dir.path());
    let flow = publish(&mut core, None);
    let ids: Vec<String> = (0..20)
        .map(|i| device(&mut core, 60 + i, "rpi4", false))
        .collect();
    let input = |steps: Vec<f64>| DeploymentInput {
        flow_id: flow.clone(),
        strategy: "steps".into(),
        target_devices: Some(ids.clone()),
        selector: None,
        config: ConfigInput {
            steps: Some(steps),
            step_soak: Some("2m".into()),
            ..ConfigInput::default()
        },
    };
    let dep = core
        .create_deployment(input(vec![10.0, 50.0, 100.0]), T0)
        .unwrap();
    let (steps, soak, stages) = core
        .with_deployment(&dep, |d, e| {
            (
                d.config.steps.clone(),
                d.config.step_soak.clone(),
                e.plan().stages.len(),
            )
        })
        .unwrap();
    assert_eq!(steps, vec![10.0, 50.0, 100.0]);
    assert_eq!(soak, "2m");
    assert_eq!(stages, 3);
    core.command(&dep, Command::Abort, T0).unwrap();
    let e = core
        .create_deployment(input(vec![50.0, 10.0]), T0)
        .unwrap_err();
    assert!(e.to_string().contains("config.steps"), "{e}");
}

#[test]
fn a_smoke_test_published_with_the_flow_is_in_its_signed_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = core(dir.path());
    let def = example();
    let first = def["nodes"][0]["id"].as_str().unwrap().to_string();
    let smoke: SmokeTestInput = serde_json::from_value(serde_json::json!({
        "inject": [{"node": first, "payload": {"temperature": 35}}],
        "timeout_ms": 3000
    }))
    .unwrap();
    let flow = publish(&mut core, Some(&smoke));
    let record = core.store().artifact(&flow).unwrap().unwrap();
    let reader = floe_wire::artifact::BundleReader::open(Path::new(&record.bundle_path)).unwrap();
    let trust = floe_wire::proto::TrustStore::new(
        vec![floe_wire::proto::TrustedKey::new(Fixed(
            SigningKey::from_bytes(&[1; 32]).verifying_key().to_bytes(),
        ))],
        floe_wire::proto::TrustedKey::new(Fixed(
            SigningKey::from_bytes(&[2; 32]).verifying_key().to_bytes(),
        )),
    );
    let manifest: Manifest = reader.verify(&trust, |_, _, _| Ok(())).unwrap().value;
    let carried = manifest
        .smoke_test
        .expect("the manifest carries the smoke test");
    assert_eq!(carried.inject[0].node, first);
    assert_eq!(carried.inject[0].payload, r#"{"temperature":35}"#);
    assert_eq!(carried.timeout_ms, 3000);
    // A smoke test naming a node the flow lacks is refused before anything is built.
    let bad: SmokeTestInput = serde_json::from_value(serde_json::json!({
        "expect": [{"node": "nowhere", "payload": 1}]
    }))
    .unwrap();
    let draft = core
        .create_flow(
            FlowInput {
                name: "Other".into(),
                description: String::new(),
                tags: vec![],
                definition: def,
            },
            T0,
        )
        .unwrap();
    let e = core
        .publish_flow_with(&draft.id, Some(&bad), T0)
        .unwrap_err();
    assert!(e.to_string().contains("smoke_test.expect[0].node"), "{e}");
    assert_eq!(
        core.flow(&draft.id).unwrap().state,
        crate::contract::FlowState::Draft
    );
}

#[test]
fn a_device_type_the_manifest_does_not_declare_fails_naming_the_device_and_its_type() {
    use super::deployments::preflight::{
        PreflightSettings, artifact_check, checklist, trust_store,
    };
    let dir = tempfile::tempdir().unwrap();
    let mut core = core(dir.path());
    let flow = publish(&mut core, None);
    let pi = device(&mut core, 91, "rpi4", true);
    let jetson = device(&mut core, 92, "jetson", true);
    let dep = create(&mut core, &flow, &[&pi, &jetson], "rolling");
    // Publishing declares no device types; a manifest that declares rpi4 only.
    let trust = trust_store(
        dir.path(),
        SigningKey::from_bytes(&[1; 32]).verifying_key(),
        SigningKey::from_bytes(&[2; 32]).verifying_key(),
    );
    let mut check = artifact_check(core.store(), &flow, &trust);
    check.manifest.as_mut().unwrap().device_types = vec!["rpi4".into()];
    let registry = super::registry::Registry::load(core.store(), 30_000).unwrap();
    let items = core
        .with_deployment(&dep, |_, e| {
            checklist(
                e.plan(),
                e.baselines(),
                &registry,
                &check,
                &PreflightSettings::default(),
                T0,
            )
        })
        .unwrap();
    let dtype = items.iter().find(|i| i.name == "device_type").unwrap();
    assert!(!dtype.passed);
    assert_eq!(dtype.devices, vec![format!("{jetson} (jetson)")]);
    assert!(dtype.detail.contains("(rpi4)"), "{}", dtype.detail);
    assert!(
        items
            .iter()
            .find(|i| i.name == "architecture")
            .unwrap()
            .passed
    );
}
