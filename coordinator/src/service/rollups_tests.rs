//! Health rollups in the service: reports of normal operation are aggregated per device group
//! in memory, written once per window by the tick (not per report), survive a restart, and
//! read back per type and per type × region.

use super::*;
use crate::contract::{DeviceInput, DevicePatch, HealthGroups};
use ed25519_dalek::SigningKey;
use floe_wire::proto::{
    Action, Applied, DeviceReport, Facts, Fixed, HealthLevel, HealthSummary, Progress,
};
use std::path::Path;

const T0: u64 = 1_800_000_000_000;
const MIN: u64 = 60_000;

fn core_at(dir: &Path) -> Core {
    super::tests::core_with(dir, 20_000)
}

/// A simulated device that signs its own reports (the baselines tests use it too).
pub(super) struct Dev {
    pub(super) key: SigningKey,
    pub(super) id: String,
    pub(super) device_type: &'static str,
    pub(super) region: &'static str,
    seq: u64,
}

impl Dev {
    pub(super) fn new(seed: u8, device_type: &'static str, region: &'static str) -> Dev {
        let key = SigningKey::from_bytes(&[seed; 32]);
        let id = hex::encode(key.verifying_key().to_bytes());
        Dev {
            key,
            id,
            device_type,
            region,
            seq: 0,
        }
    }

    /// A healthy report with an error rate of 1 000 ppm.
    pub(super) fn report(&mut self, p95_us: u32, memory_kib: u32) -> DeviceReport {
        self.seq += 1;
        DeviceReport {
            schema: 1,
            device_id: self.id.clone(),
            public_key: Fixed(self.key.verifying_key().to_bytes()),
            seq: self.seq,
            facts: Facts {
                device_type: self.device_type.into(),
                arch: "aarch64".into(),
                region: self.region.into(),
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
                error_rate_ppm: 1000,
                p95_us,
                memory_kib,
                restarts: 0,
                system: None,
            }),
        }
    }
}

fn allow(core: &mut Core, dev: &Dev) {
    core.allow_device(
        DeviceInput {
            id: dev.id.clone(),
            public_key: hex::encode(dev.key.verifying_key().to_bytes()),
            device_type: Some(dev.device_type.into()),
            region: Some(dev.region.into()),
            labels: Default::default(),
        },
        T0,
    )
    .unwrap();
}

fn rows(core: &Core) -> usize {
    core.store().rollups(0, u64::MAX >> 1, 1000).unwrap().len()
}

fn health(core: &Core, from: u64, to: u64, device_type: Option<&str>) -> HealthGroups {
    reads::group_health(core.store(), from, to, MIN, device_type).unwrap()
}

#[test]
fn reports_are_rolled_up_per_group_and_written_once_per_window() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = core_at(dir.path());
    let mut devs = vec![
        Dev::new(11, "rpi4", "eu"),
        Dev::new(12, "rpi4", "eu"),
        Dev::new(13, "rpi4", "us"),
        Dev::new(14, "jetson", "eu"),
    ];
    for d in &devs {
        allow(&mut core, d);
    }
    // Ten reports each in the first minute: nothing is written while the window is open.
    for i in 0..10u64 {
        let now = T0 + i * 5_000;
        let reports: Vec<DeviceReport> = devs
            .iter_mut()
            .enumerate()
            .map(|(k, d)| d.report(2_000 + 1_000 * k as u32, 50_000 + i as u32 * 1024))
            .collect();
        for out in core.ingest(reports, now).unwrap() {
            out.unwrap();
        }
        core.tick(now);
    }
    assert_eq!(rows(&core), 0, "an open window is not written per report");
    assert_eq!(core.rollup_counters().counted, 40);
    // The tick after the window's end writes one row per (type, region).
    core.tick(T0 + MIN + 1);
    assert_eq!(rows(&core), 3);
    core.tick(T0 + MIN + 2_000);
    assert_eq!(rows(&core), 3, "written once");

    let h = health(&core, T0 - T0 % MIN, T0 + 2 * MIN, None);
    let names: Vec<(String, Option<String>, u64)> = h
        .groups
        .iter()
        .map(|g| (g.device_type.clone(), g.region.clone(), g.reports))
        .collect();
    assert_eq!(
        names,
        vec![
            ("jetson".into(), None, 10),
            ("jetson".into(), Some("eu".into()), 10),
            ("rpi4".into(), None, 30),
            ("rpi4".into(), Some("eu".into()), 20),
            ("rpi4".into(), Some("us".into()), 10),
        ]
    );
    let rpi_eu = &h.groups[3];
    let p95 = rpi_eu.p95_ms.unwrap();
    // Devices 0 and 1 report 2 ms and 3 ms.
    assert!((p95.mean - 2.5).abs() < 1e-9, "{p95:?}");
    assert!(
        (p95.p50 - 2.0).abs() <= 0.02 && (p95.p99 - 3.0).abs() <= 0.03,
        "{p95:?}"
    );
    let err = rpi_eu.error_rate.unwrap();
    assert!((err.mean - 0.001).abs() < 1e-12);
    assert_eq!(rpi_eu.healthy, 20);
    let only = health(&core, T0 - T0 % MIN, T0 + 2 * MIN, Some("jetson"));
    assert_eq!(only.groups.len(), 2);

    // A restart keeps what was written.
    drop(core);
    let core = core_at(dir.path());
    assert_eq!(rows(&core), 3);
}

#[test]
fn reports_outside_normal_operation_are_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = core_at(dir.path());
    let mut devs: Vec<Dev> = (0..4).map(|i| Dev::new(20 + i, "rpi4", "eu")).collect();
    for d in &devs {
        allow(&mut core, d);
    }
    core.patch_device(
        &devs[2].id,
        DevicePatch {
            maintenance: Some(true),
            ..DevicePatch::default()
        },
        T0,
    )
    .unwrap();
    let mut trial = devs[0].report(9_000, 1);
    trial.on_trial = true;
    let mut rolling_back = devs[1].report(9_000, 1);
    rolling_back.applied = Some(Applied {
        generation: 1,
        action: Action::Rollback,
        name: "f".into(),
        release: 1,
        progress: Progress::Working,
        detail: String::new(),
    });
    let maintenance = devs[2].report(9_000, 1);
    let normal = devs[3].report(1_000, 1024);
    for out in core
        .ingest(vec![trial, rolling_back, maintenance, normal], T0)
        .unwrap()
    {
        out.unwrap();
    }
    let c = core.rollup_counters();
    assert_eq!((c.counted, c.excluded), (1, 3));
    core.tick(T0 + MIN);
    let h = health(&core, 0, u64::MAX >> 1, None);
    let p95 = h.groups[0].p95_ms.unwrap();
    assert_eq!(p95.samples, 1);
    assert!(
        (p95.p99 - 1.0).abs() < 0.01,
        "only the normal report counts: {p95:?}"
    );
}
