//! `floed run` and `floed demo` as real processes: a flow that publishes to a real Mosquitto,
//! a clean stop on SIGTERM, the idle memory of the daemon, a bad flow, and the demo.

// Test code: helpers outside #[test] functions may unwrap and panic like the tests do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use floe_tests::{
    Mosquitto, Subscription, bin, mosquitto_available, proc_status_kb, workspace_root,
};
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

macro_rules! need_mosquitto {
    () => {
        if !mosquitto_available() {
            eprintln!("skipping: {} is not installed", floe_tests::MOSQUITTO);
            return;
        }
    };
}

/// Sends SIGTERM and waits (bounded) for the exit; returns (success, stderr).
fn terminate(mut child: Child) -> (bool, String) {
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let until = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > until {
            let _ = child.kill();
            panic!("floed did not exit within 15 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    (status.success(), err)
}

const ALERT_FLOW: &str = r#"{
  "nodes": [
    {"id": "tick", "type": "inject", "name": "tick",
     "config": {"payload": {"temperature": 31.5}, "interval": "100ms", "topic": "t"}},
    {"id": "hot", "type": "switch", "name": "threshold",
     "config": {"property": "payload.temperature", "rules": [{"op": "gt", "value": "${threshold}"}]}},
    {"id": "out", "type": "mqtt_out", "name": "alert",
     "config": {"broker": "mqtt://127.0.0.1:1", "topic": "floe/run/alerts", "qos": 1}}
  ],
  "connections": [{"source": "tick", "target": "hot"}, {"source": "hot", "target": "out"}],
  "variables": [{"name": "threshold", "type": "number", "value": "40"}]
}"#;

#[test]
fn run_publishes_with_overrides_and_stops_cleanly_on_sigterm() {
    need_mosquitto!();
    let broker = Mosquitto::start().unwrap();
    let sub = Subscription::start(broker.port(), "floe/run/#").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let flow = dir.path().join("alert.json");
    std::fs::write(&flow, ALERT_FLOW).unwrap();
    // The flow's own threshold (40) would stop every message; --var lowers it, and --mqtt
    // replaces the unreachable broker in the file.
    let child = Command::new(bin("floed").unwrap())
        .arg("run")
        .arg("--flow")
        .arg(&flow)
        .args(["--var", "threshold=30", "--mqtt", &broker.url()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let got = sub.take(3, Duration::from_secs(15)).unwrap();
    assert!(
        got.iter()
            .all(|s| s.topic == "floe/run/alerts" && s.payload == r#"{"temperature":31.5}"#),
        "{got:?}"
    );
    let (ok, stderr) = terminate(child);
    assert!(ok, "floed run failed: {stderr}");
    assert!(stderr.contains("stopped cleanly"), "{stderr}");
    assert!(stderr.contains("SIGTERM"), "{stderr}");
}

#[test]
fn run_idle_memory_with_the_example_flow_stays_small() {
    need_mosquitto!();
    let broker = Mosquitto::start().unwrap();
    let child = Command::new(bin("floed").unwrap())
        .arg("run")
        .arg("--flow")
        .arg(workspace_root().join("examples/temperature-alert.json"))
        .args([
            "--var",
            "simulate=true",
            "--var",
            "interval=2s",
            "--mqtt",
            &broker.url(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let rss = proc_status_kb(child.id(), "VmRSS:").expect("floed is running");
    let anon = proc_status_kb(child.id(), "RssAnon:").expect("floed is running");
    let (ok, stderr) = terminate(child);
    assert!(ok, "{stderr}");
    eprintln!("floed run idle VmRSS: {rss} kB, of which anonymous (heap, stacks): {anon} kB");
    // The 10 MB target is for the release binary and is measured by the pipeline benchmark. A
    // test binary's resident code pages depend on the profile (the debug floed is hundreds of
    // MB with debug info), so the test guards what the process itself allocates.
    assert!(
        anon <= 8 * 1024,
        "idle anonymous memory {anon} kB is above 8 MB"
    );
}

#[test]
fn run_rejects_a_bad_flow_with_the_problem_named() {
    let dir = tempfile::tempdir().unwrap();
    let flow = dir.path().join("bad.json");
    std::fs::write(&flow, ALERT_FLOW.replace("\"switch\"", "\"swtich\"")).unwrap();
    let out = Command::new(bin("floed").unwrap())
        .arg("run")
        .arg("--flow")
        .arg(&flow)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hot") && err.contains("swtich"), "{err}");
    let missing = Command::new(bin("floed").unwrap())
        .args(["run", "--flow", "/nonexistent/flow.json"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/flow.json"));
}

#[test]
fn demo_prints_the_alerts_it_publishes_and_a_summary() {
    let out = Command::new(bin("floed").unwrap())
        .args(["demo", "--duration", "7s"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let alerts: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("floe/alerts/temperature {"))
        .collect();
    // The simulated temperature passes 30 °C after about 3.5 s and stays above it.
    assert!(alerts.len() >= 3, "{stdout}");
    for a in &alerts {
        let json: serde_json::Value = serde_json::from_str(a.split_once(' ').unwrap().1).unwrap();
        assert!(json["temperature"].as_f64().unwrap() > 30.0, "{a}");
    }
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("demo summary:"))
        .expect("summary line");
    assert!(
        summary.contains(&format!("{} alerts published", alerts.len())),
        "{summary}"
    );
    assert!(summary.contains("clean (drained)"), "{summary}");
}
