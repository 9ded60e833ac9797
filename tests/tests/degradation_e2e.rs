//! A slow degradation during a canary soak, end to end (issue 15): a real `floe serve`, four
//! real `floed` devices and Mosquitto; v1 everywhere, then a canary of v2 whose flow carries the
//! test-only `fault` node in mode `error_ramp`: once live, its error rate climbs slowly, from 0
//! to 3 % over 90 s. No device ever judges itself unhealthy (floed's own limit is 5 %), no
//! threshold trigger fires (the error-rate spike is baseline + 10 %), and the window's mean
//! stays within the canary gate's limit; what gives the version away is the trend: the later
//! half of the gate's window is worse than the earlier half. The canary gate says CAUTION on
//! `error_rate`, and with no soak extension left (`caution_max_extensions: 0`; the default
//! extension is the canary's 15-minute window, too long for a test) the CAUTION is a failed
//! gate, and auto-rollback rolls the canary back. The incident report names the gate, its
//! degrading check and the canary device; no other device ever received v2.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use floe_tests::Mosquitto;
use floe_tests::coordinator::{Coordinator, Device, temperature_flow, with_fault};
use serde_json::{Value, json};

/// The example flow with a reading every 50 ms: floed measures a node's error rate over its
/// last 30 health samples (6 s here), and at 20 messages a second one error in that window is
/// under 1 %, so a rate of a few percent is measured as such and never reads as floed's own
/// limit (5 %) the way one error among 19 would.
fn fast_flow(broker: &str) -> Value {
    let mut flow = temperature_flow(broker);
    for var in flow["variables"].as_array_mut().unwrap() {
        if var["name"] == "interval" {
            var["value"] = json!("50ms");
        }
    }
    flow
}

#[test]
fn a_slow_degradation_in_the_canary_soak_is_cautioned_failed_and_rolled_back() {
    let began = Instant::now();
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

    let v1 = coord.publish("Temperature Alert", fast_flow(&broker.url()));
    coord.deploy_completed(&v1, &refs);

    // Version 2: every message passes the ramping fault node, whose error rate climbs from 0
    // when the flow starts to 3 % 90 s later.
    let bad = with_fault(
        fast_flow(&broker.url()),
        "Slow regression",
        json!({"mode": "error_ramp", "rate": 0.03, "after": "0ms", "ramp": "90s"}),
    );
    let v2 = coord.publish_next(&v1, bad);
    // An 80 s soak: the gate comes before the fleet-wide gradual_degradation trigger could
    // count three rising 30 s health checks (it would halt for an operator, 001).
    let cfg = json!({"canary_percentage": 25, "canary_delay": "80s", "timeout": "60s",
                     "auto_rollback": true, "health_check": true,
                     "caution_max_extensions": 0});
    let dep = coord.deploy(&v2, "canary", &refs, cfg);
    let done = coord.wait_done(&dep, Duration::from_secs(180));
    let d: Value = coord.client.get_deployment(&dep).unwrap().json().unwrap();
    assert_eq!(done.status.as_str(), "rolled_back", "{d:#}");

    // The canary gate's record: failed because the CAUTION could not be extended, with the
    // error-rate check degrading (within its limit) as the reason.
    let gates = d["gates"].as_array().unwrap();
    let canary_gate = gates
        .iter()
        .find(|g| g["stage"] == 0 && g["verdict"] == "fail")
        .unwrap_or_else(|| {
            panic!(
                "no failed canary gate in {gates:#?}\nstatus: {}\naudit: {}",
                d["status_reason"],
                coord
                    .client
                    .audit(Some(100), Some(&dep), None)
                    .map(|r| r.text)
                    .unwrap_or_default()
            )
        });
    println!("canary gate: {canary_gate:#}");
    let reason = canary_gate["reason"].as_str().unwrap();
    assert!(
        reason.contains("CAUTION persisted after 0 extension(s)") && reason.contains("error_rate["),
        "{canary_gate:#}"
    );
    let check = canary_gate["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str().unwrap().starts_with("error_rate["))
        .unwrap();
    assert_eq!(check["outcome"], "caution", "{canary_gate:#}");
    assert_eq!(check["pass"], true, "within its limit: {check}");
    assert!(
        check["value"].as_f64().unwrap() > 0.0,
        "errors were seen: {check}"
    );
    // No device judged itself unhealthy and no threshold trigger fired: the gate caught it.
    assert!(
        d["status_reason"]
            .as_str()
            .unwrap()
            .contains("Canary gate failed"),
        "{}",
        d["status_reason"]
    );
    assert!(
        gates.iter().all(|g| g["verdict"] != "pass"),
        "no gate passed: {gates:#?}"
    );

    // The canary was two devices (001: one per type, then one per region); every other device never received a directive of this
    // deployment and never held v2 in a slot.
    let canary: Vec<String> = d["stages"][0]["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(canary.len(), 2, "{:#}", d["stages"]);
    for t in coord.targets(&dep) {
        let want = if canary.contains(&t.device_id) {
            "rolled_back"
        } else {
            "skipped"
        };
        assert_eq!(t.status.as_str(), want, "{t:?}");
    }
    // The audit log records every directive sent: none of this deployment's went elsewhere.
    let audit: Value = serde_json::from_str(
        &coord
            .client
            .audit(Some(1000), Some(&dep), None)
            .unwrap()
            .text,
    )
    .unwrap();
    let directives: Vec<&Value> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "directive")
        .collect();
    assert!(
        directives.len() >= 4,
        "stage, switch, rollback: {directives:#?}"
    );
    for e in &directives {
        let to = e["device_id"].as_str().unwrap_or_default().to_string();
        assert!(canary.contains(&to), "a directive outside the canary: {e}");
    }
    for dev in &devices {
        let s = dev.status();
        let held_v2 = s["slots"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["version"] == "1.2.0");
        assert_eq!(held_v2, canary.contains(&dev.id), "{}: {s:#}", dev.id);
        assert_eq!(dev.active_version().as_deref(), Some("1.1.0"), "{s:#}");
    }

    // The incident report, as an operator prints it.
    let out = Command::new(floe_tests::bin("floe").unwrap())
        .args([
            "deploy",
            "incident",
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
        "## Incident: Temperature Alert v1.2.0",
        "Canary gate failed",
        "CAUTION persisted",
        "error_rate[",
        "**Failure pattern**: ",
        canary[0].as_str(),
        canary[1].as_str(),
    ] {
        assert!(text.contains(part), "{part:?} missing in\n{text}");
    }
    let took = began.elapsed();
    println!("degradation_e2e: {:.0} s", took.as_secs_f64());
    assert!(took < Duration::from_secs(300), "took {took:?}");
}
