//! The VALIDATE phase over real devices: a `floe serve --preflight enforce` and real `floed`
//! daemons on loopback. The first deployment to fresh devices is stopped by the checklist
//! (they have nothing to roll back to), stays pending in VALIDATE with no directive sent, and
//! starts once the operator overrides the failed items with the CLI (audited); the next
//! deployment finds a rollback target on every device.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use floe_coordinator::client::ClientError;
use floe_coordinator::contract::{DeploymentInput, StartInput};
use floe_tests::Mosquitto;
use floe_tests::coordinator::{Coordinator, Device, temperature_flow, wait};
use serde_json::{Value, json};

fn create(coord: &Coordinator, flow: &str, devices: &[&Device]) -> String {
    let ids: Vec<&str> = devices.iter().map(|d| d.id.as_str()).collect();
    let input: DeploymentInput = serde_json::from_value(json!({
        "flow_id": flow, "strategy": "rolling", "target_devices": ids,
        // Baselines from what the devices reported since they started (every 500 ms): a few
        // reports of normal operation per device type are enough here (001 asks 24 h).
        "config": {"batch_size": 1, "batch_delay": "1s", "timeout": "60s", "offline_grace": "30s",
                   "baseline_min_samples": 3}
    }))
    .unwrap();
    let d: Value = coord
        .client
        .create_deployment(&input)
        .unwrap()
        .json()
        .unwrap();
    d["id"].as_str().unwrap().to_string()
}

/// The names of the failed items of a deployment's checklist.
fn failed_items(coord: &Coordinator, dep: &str) -> Vec<String> {
    let d = coord.deployment(dep);
    d.preflight
        .unwrap()
        .items
        .iter()
        .filter(|i| !i.passed)
        .map(|i| i.name.clone())
        .collect()
}

#[test]
fn a_preflight_stops_a_deployment_over_real_devices_until_overridden() {
    let broker = Mosquitto::start().unwrap();
    let root = tempfile::tempdir().unwrap();
    let coord =
        Coordinator::start_with_args(root.path(), "500ms", "3s", &["--preflight", "enforce"]);
    let devices: Vec<Device> = (0..2)
        .map(|i| Device::start(&coord, root.path(), &format!("dev-{i}"), "eu"))
        .collect();
    let refs: Vec<&Device> = devices.iter().collect();
    coord.wait_online(&refs, Duration::from_secs(60));

    let v1 = coord.publish("Temperature Alert", temperature_flow(&broker.url()));
    let dep = create(&coord, &v1, &refs);
    let refused = coord
        .client
        .start_deployment(&dep, &StartInput::default())
        .unwrap_err();
    let ClientError::Api {
        status,
        code,
        message,
        ..
    } = refused
    else {
        panic!("not an API refusal: {refused}");
    };
    assert_eq!(
        (status, code.as_str()),
        (422, "preflight_failed"),
        "{message}"
    );
    let failed = failed_items(&coord, &dep);
    // Fresh devices have nothing to return to; the devices are online and reporting, and the
    // artifact verifies. (Whether they have a baseline yet depends on how many health
    // reports of normal operation reached the rollups: the override below covers it.)
    assert!(
        failed.contains(&"rollback_target".to_string()),
        "{failed:?}"
    );
    for ok in ["artifact_integrity", "architecture", "connectivity"] {
        assert!(!failed.contains(&ok.to_string()), "{ok} failed: {message}");
    }
    for name in &failed {
        assert!(message.contains(name.as_str()), "{message}");
    }
    let d = coord.deployment(&dep);
    assert_eq!(d.status.as_str(), "pending");
    assert_eq!(d.phase, "VALIDATE");
    assert_eq!(d.target_counts.pending, 2);
    // Nothing was sent: the devices stay idle with nothing installed.
    std::thread::sleep(Duration::from_secs(2));
    for dev in &devices {
        let s = dev.status();
        assert_eq!(s["phase"], "idle", "{s}");
        assert!(dev.active_version().is_none(), "{s}");
    }

    // The operator's CLI: the state block shows VALIDATE; a start with the overrides starts it.
    let floe = floe_tests::bin("floe").unwrap();
    let cli = |args: &[&str]| {
        let out = Command::new(&floe)
            .args([
                "deploy",
                "--server",
                &coord.url(),
                "--token",
                &coord.token(),
            ])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, state, err) = cli(&["state", &dep]);
    assert!(ok, "{err}");
    assert!(state.contains("phase: VALIDATE"), "{state}");
    let (ok, out, err) = cli(&["start", &dep]);
    assert!(!ok, "a refused start exits non-zero: {out}");
    assert!(
        out.contains("rollback_target") && err.contains("--override"),
        "{out}\n{err}"
    );
    let overrides = failed.join(",");
    let (ok, out, err) = cli(&["start", &dep, "--override", &overrides]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("start → running"), "{out}");
    let done = coord.wait_done(&dep, Duration::from_secs(120));
    assert_eq!(
        done.status.as_str(),
        "completed",
        "{:?}",
        done.status_reason
    );
    let audit = coord
        .client
        .call(
            floe_coordinator::client::Method::Get,
            "/audit?limit=200",
            None,
        )
        .unwrap()
        .text;
    assert!(audit.contains("\"outcome\":\"overridden\""), "{audit}");

    // The next version finds a release to return to on every device. The operator aborts it
    // with the CLI before its start.
    let v2 = coord.publish_next(&v1, temperature_flow(&broker.url()));
    let dep2 = create(&coord, &v2, &refs);
    let failed = failed_items(&coord, &dep2);
    assert!(
        !failed.contains(&"rollback_target".to_string()),
        "{failed:?}"
    );
    let (ok, out, err) = cli(&["abort", &dep2]);
    assert!(ok && out.contains("abort → failed"), "{out}\n{err}");

    // The steps strategy from the CLI.
    let mut create_steps = vec!["create", "--flow", &v2, "--strategy", "steps"];
    create_steps.extend(["--steps", "50,100", "--soak", "1s"]);
    for d in &devices {
        create_steps.extend(["--device", d.id.as_str()]);
    }
    create_steps.push("--json");
    let (ok, out, err) = cli(&create_steps);
    assert!(ok, "{out}\n{err}");
    let steps: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(steps["config"]["steps"], json!([50.0, 100.0]), "{steps}");
    assert_eq!(steps["config"]["step_soak"], "1s");
    assert_eq!(steps["stages"].as_array().unwrap().len(), 2, "{steps}");
    let (ok, _, err) = cli(&["abort", steps["id"].as_str().unwrap()]);
    assert!(ok, "{err}");

    // A version published with a smoke test through the API path (`floe flow publish
    // --smoke-test`) whose expected output never comes: the devices run it before switching,
    // refuse the version, and stay on v1.
    let draft: Value = coord.client.new_flow_version(&v1).unwrap().json().unwrap();
    let v3 = draft["id"].as_str().unwrap().to_string();
    coord
        .client
        .update_flow(
            &v3,
            &serde_json::from_value(json!({"name": "Temperature Alert",
                "definition": temperature_flow(&broker.url())}))
            .unwrap(),
        )
        .unwrap();
    let smoke = root.path().join("smoke.json");
    std::fs::write(
        &smoke,
        r#"{"inject": [{"node": "n2", "payload": {"temperature": 99}}],
            "expect": [{"node": "n3", "payload": {"temperature": -1}}], "timeout_ms": 1500}"#,
    )
    .unwrap();
    let out = Command::new(&floe)
        .args(["flow", "--server", &coord.url(), "--token", &coord.token()])
        .args(["publish", &v3, "--smoke-test"])
        .arg(&smoke)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dep3 = create(&coord, &v3, &refs);
    let overrides = failed_items(&coord, &dep3);
    coord
        .client
        .start_deployment(&dep3, &StartInput { overrides })
        .unwrap();
    // The first batch's device fails its stage (the batch rolls back and the deployment
    // waits for a human).
    let details = wait("a device to fail v3", Duration::from_secs(120), || {
        let targets = coord.targets(&dep3);
        targets
            .iter()
            .any(|t| t.status.as_str() == "failed")
            .then(|| targets.into_iter().map(|t| t.detail).collect::<Vec<_>>())
    });
    assert!(
        details.iter().any(|d| d.contains("smoke")),
        "no device reported its smoke test: {details:?}"
    );
    let d = coord.deployment(&dep3);
    assert_eq!(d.completed_targets, 0, "{:?}", d.status_reason);
    for dev in &devices {
        assert_eq!(
            dev.active_version().as_deref(),
            Some("1.1.0"),
            "{}",
            dev.status()
        );
    }
}
