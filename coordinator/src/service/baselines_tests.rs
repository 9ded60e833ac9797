//! Baselines come from the health rollups (issue 15): per device type and per (type, region),
//! from the stored windows and the ones not yet written, captured at create and again at
//! start; a group without enough samples is a stated fact, judged against the absolute limits
//! or, by policy, refused at start naming it.

use super::model::{ConfigInput, DeploymentInput, DeviceInput, FlowInput};
use super::*;
use floe_rollout::{Command, DeploymentStatus};
use floe_wire::proto::DeviceReport;
use std::path::Path;

const T0: u64 = 1_800_000_000_000;
const MIN: u64 = 60_000;

use super::rollups_tests::Dev;

fn published(core: &mut Core, now: u64) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/temperature-alert.json");
    let definition = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let flow = core
        .create_flow(
            FlowInput {
                name: "Temperature Alert".into(),
                description: String::new(),
                tags: vec![],
                definition,
            },
            now,
        )
        .unwrap();
    core.publish_flow(&flow.id, now).unwrap();
    flow.id
}

/// Four rpi4 (three in eu, one in us) report every 20 s for 40 min; one jetson reports ten
/// times. Returns the core, the devices and the time after the last report.
fn fleet(dir: &Path) -> (Core, Vec<Dev>, u64) {
    let mut core = super::tests::core_with(dir, 20_000);
    let mut devs = vec![
        Dev::new(21, "rpi4", "eu"),
        Dev::new(22, "rpi4", "eu"),
        Dev::new(23, "rpi4", "eu"),
        Dev::new(24, "rpi4", "us"),
        Dev::new(25, "jetson", "eu"),
    ];
    for d in &devs {
        core.allow_device(
            DeviceInput {
                id: d.id.clone(),
                public_key: hex::encode(d.key.verifying_key().to_bytes()),
                device_type: Some(d.device_type.into()),
                region: Some(d.region.into()),
                labels: Default::default(),
            },
            T0,
        )
        .unwrap();
    }
    let mut now = T0;
    for i in 0..120u64 {
        now = T0 + i * 20_000;
        let reports: Vec<DeviceReport> = devs
            .iter_mut()
            .filter(|d| d.device_type == "rpi4" || i < 10)
            .map(|d| {
                // rpi4 in us runs slower: 4 ms against 2 ms.
                let p95 = if d.region == "us" { 4_000 } else { 2_000 };
                d.report(p95, 51_200)
            })
            .collect();
        for out in core.ingest(reports, now).unwrap() {
            out.unwrap();
        }
        core.tick(now);
    }
    (core, devs, now + 1_000)
}

fn deployment(core: &mut Core, devs: &[Dev], config: ConfigInput, now: u64) -> String {
    let flow = published(core, now);
    core.create_deployment(
        DeploymentInput {
            flow_id: flow,
            strategy: "canary-waves".into(),
            target_devices: Some(devs.iter().map(|d| d.id.clone()).collect()),
            selector: None,
            config,
        },
        now,
    )
    .unwrap()
}

#[test]
fn baselines_per_type_and_region_come_from_the_rollups() {
    let dir = tempfile::tempdir().unwrap();
    let (mut core, devs, now) = fleet(dir.path());
    // Some windows are stored, the last is not yet written: both count.
    assert!(core.store().rollups(0, u64::MAX >> 1, 1000).unwrap().len() > 10);
    let id = deployment(&mut core, &devs, ConfigInput::default(), now);
    let (set, facts, absolute) = core
        .with_deployment(&id, |doc, e| {
            let view = crate::api::views::deployment(doc, e);
            (
                e.baselines().cloned().unwrap(),
                view.baseline_facts,
                e.groups_without_baseline()
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>(),
            )
        })
        .unwrap();
    assert_eq!(set.captured_at, now);
    assert_eq!(set.window, 24 * 60 * MIN);
    let names: Vec<(String, u64)> = set.groups.iter().map(|g| (g.name(), g.samples)).collect();
    assert_eq!(
        names,
        vec![
            ("jetson".to_string(), 10),
            ("rpi4".to_string(), 480),
            ("jetson/eu".to_string(), 10),
            ("rpi4/eu".to_string(), 360),
            ("rpi4/us".to_string(), 120),
        ]
    );
    let rpi4 = set.of_type("rpi4").unwrap();
    let e = rpi4.error_rate.unwrap();
    assert!((e.mean - 0.001).abs() < 1e-12, "{e:?}");
    let p = rpi4.p95_ms.unwrap();
    assert!((p.mean - 2.5).abs() < 1e-9, "{p:?}");
    assert!(
        (p.p50 - 2.0).abs() <= 0.02 && (p.p99 - 4.0).abs() <= 0.04,
        "{p:?}"
    );
    assert!(p.stddev > 0.8 && p.stddev < 0.9, "{p:?}");
    assert_eq!(p.trend, floe_rollout::Trend::Stable);
    let m = rpi4.memory_mb.unwrap();
    assert!((m.mean - 50.0).abs() < 1e-9);
    assert!(rpi4.cpu_percent.is_none(), "devices send no CPU yet");
    let us = set.groups.iter().find(|g| g.name() == "rpi4/us").unwrap();
    assert!((us.p95_ms.unwrap().mean - 4.0).abs() < 1e-9);
    assert_eq!(
        facts,
        vec![
            "no baseline for jetson: 10 samples, 100 needed; judged against the absolute limits",
            "no baseline for jetson/eu: 10 samples, 100 needed; judged against the absolute limits",
        ]
    );
    assert_eq!(absolute, vec!["jetson"]);
    // Start captures again (later reports count) and goes on.
    assert!(core.command(&id, Command::Start, now + MIN).is_ok());
    let (captured, status) = core
        .with_deployment(&id, |_, e| (e.baselines().unwrap().captured_at, e.status()))
        .unwrap();
    assert_eq!((captured, status), (now + MIN, DeploymentStatus::Running));
    // The start's snapshot holds those baselines: a restart reads them back.
    drop(core);
    let core = super::tests::core_with(dir.path(), 20_000);
    let captured = core
        .with_deployment(&id, |_, e| e.baselines().unwrap().captured_at)
        .unwrap();
    assert_eq!(captured, now + MIN);
}

#[test]
fn the_refuse_policy_fails_the_start_naming_the_groups() {
    let dir = tempfile::tempdir().unwrap();
    let (mut core, devs, now) = fleet(dir.path());
    let config = ConfigInput {
        no_baseline: Some("refuse".into()),
        ..ConfigInput::default()
    };
    let id = deployment(&mut core, &devs, config, now);
    let err = core.command(&id, Command::Start, now).unwrap_err();
    assert!(matches!(err, ServiceError::Conflict(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("no baseline for jetson: 10 samples, 100 needed"),
        "{err}"
    );
    let status = core.with_deployment(&id, |_, e| e.status()).unwrap();
    assert_eq!(status, DeploymentStatus::Pending);
    // A bad policy name is refused at create, naming the field.
    let bad = ConfigInput {
        no_baseline: Some("sometimes".into()),
        ..ConfigInput::default()
    };
    let flow = published(&mut core, now);
    let err = core
        .create_deployment(
            DeploymentInput {
                flow_id: flow,
                strategy: "canary-waves".into(),
                target_devices: Some(vec![devs[0].id.clone()]),
                selector: None,
                config: bad,
            },
            now,
        )
        .unwrap_err();
    assert!(err.to_string().contains("config.no_baseline"), "{err}");
}
