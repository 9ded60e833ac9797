//! After a rollback, end to end: a real `floe serve` and real `floed` devices (and Mosquitto),
//! a canary of a version that fails once live, the deployment rolled back, the rolled-back
//! devices verified healthy on their previous version from their own reports, and the incident
//! report printed by `floe deploy report` as an operator runs it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use floe_tests::Mosquitto;
use floe_tests::coordinator::{Coordinator, Device, temperature_flow, with_fault};
use serde_json::{Value, json};

#[test]
fn a_failed_canary_is_verified_and_its_incident_printed_by_floe_deploy_report() {
    let broker = Mosquitto::start().unwrap();
    let root = tempfile::tempdir().unwrap();
    let coord = Coordinator::start_with_args(
        root.path(),
        "500ms",
        "3s",
        &["--rollback-verify-timeout", "20s"],
    );
    let devices: Vec<Device> = (0..4)
        .map(|i| {
            Device::start(
                &coord,
                root.path(),
                &format!("dev-{i}"),
                ["eu", "us"][i % 2],
            )
        })
        .collect();
    let refs: Vec<&Device> = devices.iter().collect();
    coord.wait_online(&refs, Duration::from_secs(60));

    let v1 = coord.publish("Temperature Alert", temperature_flow(&broker.url()));
    coord.deploy_completed(&v1, &refs);

    // Version 2 fails every message 2.5 s after it starts: staged, switched, then unhealthy.
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

    // The rolled-back devices report again, healthy on 1.1.0: the verification decides.
    let until = std::time::Instant::now() + Duration::from_secs(120);
    let verification = loop {
        let d: Value = coord.client.get_deployment(&dep).unwrap().json().unwrap();
        let v = d["rollback_verification"].clone();
        if v.is_object() && v["pending"] == 0 {
            break v;
        }
        if std::time::Instant::now() > until {
            let records: Vec<Value> = devices.iter().map(|x| coord.device(&x.id)).collect();
            panic!(
                "the rollback was not verified: {v:#}\ndevices: {:#}\naudit: {}",
                Value::Array(records),
                coord
                    .client
                    .audit(Some(100), Some(&dep), None)
                    .map(|r| r.text)
                    .unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    // Healthy, or degraded on 1.1.0 (floed reports "degraded" when, say, its CPU is above
    // its threshold on a busy test machine): working on the previous version either way.
    assert!(
        verification["result"] == "healthy" || verification["result"] == "degraded",
        "{verification}"
    );
    assert_eq!(verification["unhealthy"], 0, "{verification}");
    let verified = verification["healthy"].as_u64().unwrap_or(0)
        + verification["degraded"].as_u64().unwrap_or(0);
    assert!(verified >= 1, "{verification}");
    assert_eq!(verification["unverified_offline"], 0, "{verification}");

    let out = Command::new(floe_tests::bin("floe").unwrap())
        .args([
            "deploy",
            "report",
            &dep,
            "--server",
            &coord.url(),
            "--token",
            &coord.token(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for part in [
        "## Fleet Deployment Report: Temperature Alert v1.2.0",
        "**Status**: rolled_back",
        "Not started (deployment stopped)",
        "## Incident: Temperature Alert v1.2.0",
        "**Failure pattern**: ",
        "### Timeline (UTC)",
        "rollback.verify",
        "**Rollback verification** (",
    ] {
        assert!(text.contains(part), "{part:?} missing in\n{text}");
    }
    assert!(!text.contains("T+"), "absolute times only:\n{text}");
    // The devices agree: all back on 1.1.0.
    for d in &devices {
        assert_eq!(
            d.active_version().as_deref(),
            Some("1.1.0"),
            "{}",
            d.status()
        );
    }
}
