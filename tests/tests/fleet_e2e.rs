//! The coordinator and its devices end to end: a real `floe serve` (REST API, SQLite, fabric)
//! and real `floed daemon` processes on loopback, a real Mosquitto, artifacts and directives
//! over the libp2p fabric, reports back from the devices.
//!
//! Each test asks the device itself (`floed status --json`) where it ended up, not only the
//! coordinator: the device is the source of truth about itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use floe_tests::Mosquitto;
use floe_tests::coordinator::{Coordinator, Device, temperature_flow, wait, with_fault};
use serde_json::{Value, json};

/// Rolling config with short soaks (the reference's shape and units).
fn rolling(batch: u32) -> Value {
    json!({"batch_size": batch, "batch_delay": "1s", "timeout": "60s", "offline_grace": "30s",
           "auto_rollback": true, "health_check": true})
}

fn fleet(root: &std::path::Path, n: usize) -> (Coordinator, Vec<Device>) {
    let coord = Coordinator::start(root);
    let regions = ["eu", "us", "ap"];
    let devices: Vec<Device> = (0..n)
        .map(|i| {
            Device::start(
                &coord,
                root,
                &format!("dev-{i}"),
                regions[i % regions.len()],
            )
        })
        .collect();
    let refs: Vec<&Device> = devices.iter().collect();
    coord.wait_online(&refs, Duration::from_secs(60));
    (coord, devices)
}

fn target_statuses(targets: &[floe_coordinator::client::Target]) -> Vec<String> {
    targets.iter().map(|t| t.status.to_string()).collect()
}

/// The reference's API scenario: create → publish → rolling deployment to 3 devices → status
/// → completed, every device running the new version from its new slot.
#[test]
fn rolling_deployment_reaches_every_device_in_its_other_slot() {
    let broker = Mosquitto::start().unwrap();
    let root = tempfile::tempdir().unwrap();
    let (coord, devices) = fleet(root.path(), 3);
    let refs: Vec<&Device> = devices.iter().collect();

    let v1 = coord.publish("Temperature Alert", temperature_flow(&broker.url()));
    let dep = coord.deploy(&v1, "rolling", &refs, rolling(1));
    let done = coord.wait_done(&dep, Duration::from_secs(120));
    assert_eq!(
        done.status.as_str(),
        "completed",
        "{:?}",
        done.status_reason
    );
    let slots_v1: Vec<String> = devices
        .iter()
        .map(|d| d.status()["active"].as_str().unwrap().to_string())
        .collect();

    let v2 = coord.publish_next(&v1, temperature_flow(&broker.url()));
    let dep = coord.deploy(&v2, "rolling", &refs, rolling(1));
    // Progress is visible while it runs: the reference's response shape.
    let running = coord.deployment(&dep);
    assert_eq!(running.total_targets, 3);
    assert_eq!(running.strategy, "rolling");
    let done = coord.wait_done(&dep, Duration::from_secs(120));
    assert_eq!(
        done.status.as_str(),
        "completed",
        "{:?}",
        done.status_reason
    );
    assert_eq!(done.completed_targets, 3);
    assert_eq!(done.failed_targets, 0);
    assert!(
        target_statuses(&coord.targets(&dep))
            .iter()
            .all(|s| s == "success")
    );

    for (d, old_slot) in devices.iter().zip(&slots_v1) {
        // The last commit directive may still be on its way when the deployment completes.
        let s = wait("the device to commit v2", Duration::from_secs(20), || {
            let s = d.status();
            (s["phase"] == "idle").then_some(s)
        });
        assert_eq!(d.active_version().as_deref(), Some("1.2.0"), "{s}");
        assert_ne!(
            s["active"].as_str().unwrap(),
            old_slot,
            "v2 must run from the other slot"
        );
        assert_eq!(s["last_good"], s["active"], "v2 committed: {s}");
        assert_eq!(s["database"], "ok");
        // The registry agrees with the device.
        let reg = wait(
            "the registry to show release 2",
            Duration::from_secs(10),
            || {
                let r = coord.device(&d.id);
                (r["installed"]["release"] == json!(2)).then_some(r)
            },
        );
        assert_eq!(reg["installed"]["slot"], s["active"]);
        // The device's own figures came along (this host has /proc and a data directory on
        // a real filesystem; CPU needs two samples, temperature a thermal zone).
        let system = &reg["health"]["system"];
        let memory = system["memory_used_percent"].as_f64();
        assert!(memory.is_some_and(|m| m > 0.0 && m <= 100.0), "{reg}");
        assert!(system["disk_free_mb"].as_f64().is_some(), "{reg}");
        assert!(system["disk_used_percent"].as_f64().is_some(), "{reg}");
    }
    // The report tells the same story.
    let report = coord
        .client
        .deployment_report(&dep, floe_coordinator::client::ReportFormat::Markdown)
        .unwrap()
        .text;
    assert!(report.contains("completed"), "{report}");
}

/// A version that passes its smoke test but fails its health check once live on the canary:
/// the canary device rolls back by itself, the deployment rolls back, no other device ever
/// switches, and every device runs the previous version.
#[test]
fn failing_canary_rolls_the_deployment_back() {
    let broker = Mosquitto::start().unwrap();
    let root = tempfile::tempdir().unwrap();
    let (coord, devices) = fleet(root.path(), 4);
    let refs: Vec<&Device> = devices.iter().collect();

    let v1 = coord.publish("Temperature Alert", temperature_flow(&broker.url()));
    coord.deploy_completed(&v1, &refs);

    // Version 2: a node that starts failing every message 2.5 s after it starts, longer
    // than the smoke test, so the version is staged, switched and fails its trial.
    let bad = with_fault(
        temperature_flow(&broker.url()),
        "Regression",
        json!({"mode": "error_rate", "rate": 1.0, "after": "2500ms"}),
    );
    let v2 = coord.publish_next(&v1, bad);
    let cfg = json!({"canary_percentage": 25, "canary_delay": "4s", "timeout": "60s",
                     "auto_rollback": true, "health_check": true});
    let dep = coord.deploy(&v2, "canary", &refs, cfg);
    let done = coord.wait_done(&dep, Duration::from_secs(120));
    assert_eq!(
        done.status.as_str(),
        "rolled_back",
        "{:?}",
        done.status_reason
    );
    let targets = coord.targets(&dep);
    assert!(
        targets.iter().any(|t| t.status.as_str() == "failed"
            || t.status.as_str() == "rolled_back"
            || t.status.as_str() == "quarantined"),
        "the canary is marked: {}\naudit: {}\ncanary device: {}",
        coord.client.get_deployment(&dep).unwrap().text,
        coord
            .client
            .audit(Some(200), Some(&dep), None)
            .map(|r| r.text)
            .unwrap_or_default(),
        devices
            .iter()
            .find(|d| targets.first().is_some_and(|t| t.device_id == d.id))
            .map(|d| d.status().to_string())
            .unwrap_or_default()
    );
    assert_eq!(done.completed_targets, 0);

    for d in &devices {
        let s = d.status();
        assert_eq!(d.active_version().as_deref(), Some("1.1.0"), "{s}");
        assert_eq!(s["phase"], "idle", "{s}");
    }
    // The canary device switched and rolled itself back: its own audit log says so.
    let canary = devices
        .iter()
        .find(|d| {
            d.status()["audit"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["action"] == "rollback")
        })
        .unwrap_or_else(|| {
            let audits: Vec<String> = devices
                .iter()
                .map(|d| d.status()["audit"].to_string())
                .collect();
            panic!(
                "no device switched to v2 and rolled back: {}\n{}",
                coord.client.get_deployment(&dep).unwrap().text,
                audits.join("\n")
            )
        });
    let audit = canary.status()["audit"].clone();
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "switch" && e["detail"].as_str().unwrap().contains("1.2.0")),
        "{audit}"
    );
    let report = coord
        .client
        .deployment_report(&dep, floe_coordinator::client::ReportFormat::Markdown)
        .unwrap()
        .text;
    assert!(report.contains("rolled_back"), "{report}");
}

/// A device that is offline when its wave comes is counted offline (not failed) and caught up
/// when it returns, within the offline grace.
#[test]
fn offline_device_is_caught_up_when_it_returns() {
    let broker = Mosquitto::start().unwrap();
    let root = tempfile::tempdir().unwrap();
    let (coord, mut devices) = fleet(root.path(), 3);
    let v1 = coord.publish("Temperature Alert", temperature_flow(&broker.url()));

    devices[2].kill9();
    let gone = devices[2].id.clone();
    let mut last = Value::Null;
    let seen = floe_tests::coordinator::try_wait(Duration::from_secs(30), || {
        last = coord.device(&gone);
        (last["online"] == json!(false)).then_some(())
    });
    assert!(
        seen.is_some(),
        "the coordinator never saw the device offline: {last}"
    );
    let refs: Vec<&Device> = devices.iter().collect();
    let dep = coord.deploy(&v1, "rolling", &refs, rolling(3));
    wait(
        "the target to be counted offline",
        Duration::from_secs(60),
        || {
            let targets = coord.targets(&dep);
            let t = targets.iter().find(|t| t.device_id == gone)?;
            (t.status.as_str() == "offline" || t.status.as_str() == "skipped").then_some(())
        },
    );
    let mid = coord.deployment(&dep);
    assert_eq!(mid.failed_targets, 0, "offline is not failed");
    devices[2].restart();
    let done = coord.wait_done(&dep, Duration::from_secs(120));
    assert_eq!(done.failed_targets, 0);
    let targets = coord.targets(&dep);
    let t = targets.iter().find(|t| t.device_id == gone).unwrap();
    assert_eq!(
        t.status.as_str(),
        "success",
        "caught up after returning: {:?}",
        target_statuses(&targets)
    );
    assert_eq!(devices[2].active_version().as_deref(), Some("1.1.0"));
}

/// `kill -9` of the coordinator in the middle of a rolling deployment: after the restart it
/// carries on where it was, and every device gets each step exactly once.
#[test]
fn coordinator_restart_mid_deployment_carries_on() {
    let broker = Mosquitto::start().unwrap();
    let root = tempfile::tempdir().unwrap();
    let (mut coord, devices) = fleet(root.path(), 3);
    let refs: Vec<&Device> = devices.iter().collect();
    let v1 = coord.publish("Temperature Alert", temperature_flow(&broker.url()));
    let cfg = json!({"batch_size": 1, "batch_delay": "3s", "timeout": "60s",
                     "offline_grace": "30s", "auto_rollback": true});
    let dep = coord.deploy(&v1, "rolling", &refs, cfg);
    wait(
        "the first batch to succeed",
        Duration::from_secs(60),
        || (coord.deployment(&dep).completed_targets >= 1).then_some(()),
    );
    coord.kill9();
    std::thread::sleep(Duration::from_secs(1));
    coord.restart();
    let done = coord.wait_done(&dep, Duration::from_secs(120));
    assert_eq!(
        done.status.as_str(),
        "completed",
        "{:?}",
        done.status_reason
    );
    assert_eq!(done.completed_targets, 3);
    for d in &devices {
        assert_eq!(d.active_version().as_deref(), Some("1.1.0"));
        // No step ran twice on any device: it staged and switched to v1 exactly once (a
        // directive re-sent after the restart is recognised as already carried out).
        let audit = d.status()["audit"].clone();
        for (action, marker) in [("stage", "into"), ("switch", "->")] {
            let accepted = audit
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| {
                    e["action"] == action
                        && e["outcome"] == "started"
                        && e["detail"].as_str().unwrap().contains(marker)
                })
                .count();
            assert_eq!(
                accepted, 1,
                "{action} carried out once on {}: {audit}",
                d.id
            );
        }
    }
}

/// Devices get their directives in the coordinator's direct answers to their reports, not
/// only from gossip: with gossip re-posting set to a minute, a rolling deployment to two
/// devices still completes, and a device that was down while its directive was posted catches
/// up within seconds of coming back (DESIGN.md: "a device that was offline asks for its current
/// directive when it comes back").
#[test]
fn directives_arrive_directly_when_gossip_is_slow() {
    let broker = Mosquitto::start().unwrap();
    let root = tempfile::tempdir().unwrap();
    let coord = Coordinator::start_with_republish(root.path(), "60s");
    let mut devices: Vec<Device> = ["dev-0", "dev-1"]
        .iter()
        .map(|name| Device::start(&coord, root.path(), name, "eu"))
        .collect();
    let refs: Vec<&Device> = devices.iter().collect();
    coord.wait_online(&refs, Duration::from_secs(30));
    let v1 = coord.publish("Temperature Alert", temperature_flow(&broker.url()));

    // The second device goes down before the deployment starts; the coordinator's round posts
    // are a minute apart, so gossip cannot bring it (or the first device) the directives in
    // time.
    devices[1].kill9();
    let gone = devices[1].id.clone();
    wait(
        "the device to be seen offline",
        Duration::from_secs(20),
        || (coord.device(&gone)["online"] == json!(false)).then_some(()),
    );
    let started = std::time::Instant::now();
    let refs: Vec<&Device> = devices.iter().collect();
    let dep = coord.deploy(&v1, "rolling", &refs, rolling(2));
    wait(
        "the running device to succeed directly",
        Duration::from_secs(25),
        || {
            let targets = coord.targets(&dep);
            let t = targets.iter().find(|t| t.device_id == devices[0].id)?;
            (t.status.as_str() == "success").then_some(())
        },
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "stage, switch and commit took {:?}: not the direct path",
        started.elapsed()
    );

    devices[1].restart();
    let back = std::time::Instant::now();
    let done = coord.wait_done(&dep, Duration::from_secs(30));
    assert_eq!(
        done.status.as_str(),
        "completed",
        "{:?}",
        done.status_reason
    );
    assert_eq!(
        done.failed_targets,
        0,
        "{:?}",
        target_statuses(&coord.targets(&dep))
    );
    assert!(
        back.elapsed() < Duration::from_secs(20),
        "caught up in {:?}, not before the next gossip round",
        back.elapsed()
    );
    for d in &devices {
        let s = wait("the device to commit v1", Duration::from_secs(10), || {
            let s = d.status();
            (s["phase"] == "idle" && s["last_good"] == s["active"]).then_some(s)
        });
        assert_eq!(d.active_version().as_deref(), Some("1.1.0"), "{s}");
    }
}

/// The README's main command, shortened: `floe demo` with 3 devices deploys v1 everywhere,
/// sees the broken v2 roll back, leaves every device on v1 and stops everything it started.
#[test]
fn floe_demo_runs_end_to_end() {
    // floe demo runs the floed found next to floe.
    floe_tests::bin("floed").unwrap();
    let out = std::process::Command::new(floe_tests::bin("floe").unwrap())
        .args([
            "demo",
            "--devices",
            "3",
            "--strategy",
            "canary-waves",
            "--soak",
            "1s",
        ])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("v1 completed (3/3 devices)"), "{stdout}");
    assert!(stdout.contains("v2 rolled_back"), "{stdout}");
    assert!(stdout.contains("3/3 devices run v1 now"), "{stdout}");
    assert!(stdout.contains("## Fleet Deployment Report"), "{stdout}");
}
