//! End-to-end tests of `floe sim`: the real binary, run as a process, against simulated fleets.

// Test code: a failed unwrap is a failed test, which is what it should be.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// The `floe` binary of this tree, built once per test process.
fn floe() -> PathBuf {
    floe_tests::bin("floe").expect("build floe")
}

fn sim(args: &[&str]) -> Output {
    let out = Command::new(floe()).arg("sim").args(args).output();
    assert!(out.is_ok(), "running floe sim: {out:?}");
    out.unwrap_or_else(|_| unreachable!())
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = sim(&all);
    assert!(
        out.status.success(),
        "floe sim failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed = serde_json::from_slice(&out.stdout);
    assert!(
        parsed.is_ok(),
        "floe sim --json printed invalid JSON:\n{}",
        stdout(&out)
    );
    parsed.unwrap_or_default()
}

#[test]
fn same_seed_gives_the_same_action_log_and_a_different_seed_does_not() {
    let args = [
        "--devices",
        "400",
        "--strategy",
        "canary-waves",
        "--fail-rate",
        "0.01",
        "--offline-rate",
        "0.05",
        "--seed",
        "7",
    ];
    let a = json(&args);
    let b = json(&args);
    assert_eq!(a["action_digest"], b["action_digest"]);
    assert_eq!(a["actions"], b["actions"]);
    assert_eq!(a["report"], b["report"]);
    let mut other = args.to_vec();
    other[9] = "8";
    let c = json(&other);
    assert_ne!(a["action_digest"], c["action_digest"]);
    // The figures the benchmark relies on are present.
    assert!(a["device_events"].as_u64().is_some_and(|n| n >= 400));
    assert!(a["device_events_per_sec"].as_f64().is_some_and(|r| r > 0.0));
    assert!(a["peak_rss_kib"].as_u64().is_some_and(|k| k > 0));
    let counts = &a["report"]["counts"];
    let total: u64 = [
        "deployed",
        "skipped",
        "not_started",
        "quarantined",
        "rolled_back",
        "in_progress",
    ]
    .iter()
    .filter_map(|k| counts[k].as_u64())
    .sum();
    assert_eq!(total, 400, "every device is counted once: {counts}");
    assert_eq!(
        counts["in_progress"], 0,
        "every device ends in a terminal status"
    );
}

#[test]
fn every_strategy_prints_the_fleet_deployment_report() {
    for (strategy, extra) in [
        ("all-at-once", vec!["--devices", "8"]),
        ("rolling", vec!["--devices", "60"]),
        ("canary", vec!["--devices", "60"]),
        ("blue-green", vec!["--devices", "30"]),
        ("canary-waves", vec!["--devices", "120"]),
    ] {
        let mut args = vec!["--strategy", strategy];
        args.extend(extra);
        let out = sim(&args);
        let text = stdout(&out);
        assert!(
            out.status.success(),
            "{strategy}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("## Fleet Deployment Report"),
            "{strategy}:\n{text}"
        );
        assert!(
            text.contains(&format!("**Strategy**: {strategy}")),
            "{strategy}:\n{text}"
        );
        assert!(
            text.contains("| Wave | Devices | Failed | Soak | Verdict |"),
            "{strategy}:\n{text}"
        );
        assert!(
            text.contains("**Status**: completed"),
            "{strategy} on a healthy fleet:\n{text}"
        );
        assert!(text.contains("device events/s"), "{strategy}:\n{text}");
    }
    let steps = json(&["--devices", "100", "--steps", "5,25,50,100"]);
    assert_eq!(steps["report"]["strategy"], "steps");
    assert_eq!(steps["report"]["stages"].as_array().map(Vec::len), Some(4));
    assert_eq!(steps["report"]["status"], "completed");
}

#[test]
fn blue_green_switches_the_canary_then_waves_and_warns_above_500_devices() {
    let v = json(&["--devices", "600", "--strategy", "blue-green"]);
    assert_eq!(v["report"]["status"], "completed", "{v:#}");
    let stages = v["report"]["stages"].as_array().unwrap();
    let names: Vec<&str> = stages.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "Stage (green)",
            "Canary (switch)",
            "wave-1 (switch)",
            "wave-2 (switch)",
            "wave-3 (switch)"
        ],
        "{v:#}"
    );
    for s in &stages[1..] {
        assert!(s["devices"].as_u64().unwrap() < 600, "{s}");
    }
    let warnings = v["plan"]["warnings"].as_array().unwrap();
    assert!(
        warnings.iter().any(|w| w
            .as_str()
            .unwrap()
            .contains("\"Fleets larger than 500 devices (coordination overhead)\"")),
        "{warnings:?}"
    );
    let canary = v["plan"]["canary"].as_array().unwrap();
    for t in ["rpi4", "jetson-nano", "gateway"] {
        assert!(
            canary
                .iter()
                .any(|c| c["type"] == t && c["reason"] == "device_type"),
            "{t}: {canary:?}"
        );
    }
    let text = stdout(&sim(&["--devices", "600", "--strategy", "blue-green"]));
    assert!(text.contains("| Canary (switch) |"), "{text}");
    assert!(text.contains("covers device type gateway"), "{text}");
    assert!(
        text.contains("plan warning: blue-green to 600 devices"),
        "{text}"
    );
}

#[test]
fn all_at_once_on_a_large_fleet_is_refused_unless_forced() {
    let out = sim(&["--devices", "50", "--strategy", "all-at-once"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("all-at-once to 50 devices refused") && err.contains("force"),
        "{err}"
    );
    let forced = sim(&["--devices", "50", "--strategy", "all-at-once", "--force"]);
    assert!(forced.status.success());
}

#[test]
fn a_bad_release_is_rolled_back_at_the_canary() {
    let v = json(&[
        "--devices",
        "500",
        "--strategy",
        "canary-waves",
        "--bad-release-error",
        "0.15",
    ]);
    assert_eq!(v["report"]["status"], "rolled_back");
    let stages = v["report"]["stages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(stages[0]["name"], "Canary");
    assert_eq!(stages[0]["verdict"], "ROLLED BACK");
    for wave in &stages[1..] {
        assert_eq!(
            wave["verdict"], "-",
            "no wave starts after a failed canary: {wave}"
        );
    }
    assert_eq!(v["report"]["counts"]["deployed"], 0);
}

#[test]
fn manual_approval_stops_at_the_canary_with_a_state_block() {
    let out = sim(&[
        "--devices",
        "200",
        "--strategy",
        "canary-waves",
        "--approve",
        "manual",
    ]);
    let text = stdout(&out);
    assert!(out.status.success());
    assert!(text.contains("<fleet-deploy-state>"), "{text}");
    assert!(
        text.contains("blockers: awaiting operator approval"),
        "{text}"
    );
    assert!(text.contains("**Status**: running"), "{text}");
}

#[test]
fn bad_arguments_get_clear_errors() {
    let out = sim(&["--strategy", "yolo"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown strategy \"yolo\""));
    let out = sim(&["--soak", "5 minutes"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--soak"));
    let out = sim(&["--fail-rate", "2"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("rates must lie in [0, 1]"));
}

/// A canary that fails stops the deployment: the devices it never reached are "not started",
/// and only devices that were offline are "skipped (unreachable)" (issue 15: 4 990 of 5 000
/// were counted unreachable before).
#[test]
fn a_failed_canary_counts_never_started_devices_apart_from_unreachable_ones() {
    let a = json(&[
        "--devices",
        "2000",
        "--strategy",
        "canary-waves",
        "--fail-rate",
        "1",
        "--offline-rate",
        "0.05",
        "--seed",
        "3",
    ]);
    let report = &a["report"];
    assert_ne!(report["status"], "completed", "{report}");
    let counts = &report["counts"];
    let not_started = counts["not_started"].as_u64().unwrap_or(0);
    let skipped = counts["skipped"].as_u64().unwrap_or(0);
    assert!(not_started > 1500, "{counts}");
    assert!(
        skipped < 200,
        "only offline devices are unreachable: {counts}"
    );
}
