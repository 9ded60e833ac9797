//! End-to-end tests of `floed validate`: the real binary on real files, asserting exit codes
//! and that each message names the problem.

// Test code: a failed unwrap is a failed test, which is what it should be.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The `floed` binary of this tree, built once per test process.
fn floed() -> PathBuf {
    floe_tests::bin("floed").expect("build floed")
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/temperature-alert.json")
}

fn validate(args: &[&str], file: &Path) -> Output {
    let bin = floed();
    let started = Instant::now();
    let out = Command::new(bin)
        .arg("validate")
        .args(args)
        .arg(file)
        .output()
        .expect("run floed validate");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "floed validate took too long"
    );
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write(dir: &Path, name: &str, contents: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// Asserts exit code 1, no panic, and that stderr names the problem.
#[track_caller]
fn assert_refused(out: &Output, needle: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains(needle),
        "`{needle}` not in stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "floed panicked: {stderr}");
}

const REFERENCE: &str = r#"{
  "nodes": [
    {"id": "n1", "type": "dht", "name": "DHT22 Sensor", "config": {}, "x": 100, "y": 200},
    {"id": "n2", "type": "switch", "name": "Threshold", "config": {}, "x": 300, "y": 200},
    {"id": "n3", "type": "mqtt_out", "name": "Alert", "config": {}, "x": 500, "y": 200}
  ],
  "connections": [{"source": "n1", "target": "n2"}, {"source": "n2", "target": "n3"}],
  "variables": [{"name": "threshold", "type": "number", "value": "30"}]
}"#;

const PROBLEMS: &str = r#"{
  "nodes": [
    {"id": "n1", "type": "dht", "config": {"interva1": "2s"}},
    {"id": "n2", "type": "switch", "config": {"rules": [{"op": "regex", "value": "(unclosed"}]}},
    {"id": "n3", "type": "mqtt_out", "config": {"broker": "mqtt://127.0.0.1:1883", "qos": "${q}"}}
  ],
  "connections": [{"source": "n1", "target": "n2"}, {"source": "n2", "target": "n9"}],
  "variables": [{"name": "q", "type": "string", "value": "1"}]
}"#;

#[test]
fn valid_example_prints_ok_and_exits_0() {
    let out = validate(&[], &example());
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "ok");
}

#[test]
fn reference_example_passes_as_draft_and_fails_as_complete() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "reference.json", REFERENCE.as_bytes());
    let draft = validate(&["--draft"], &file);
    assert_eq!(draft.status.code(), Some(0));
    assert_eq!(text(&draft.stdout).trim(), "ok");

    let complete = validate(&[], &file);
    assert_eq!(complete.status.code(), Some(1));
    let stdout = text(&complete.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with("node n2: config.rules: missing"),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("node n3: config.broker: missing"),
        "{stdout}"
    );
}

#[test]
fn problem_file_lists_every_problem_one_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "problems.json", PROBLEMS.as_bytes());
    let out = validate(&[], &file);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    for expected in [
        "node n1: config.interva1: unknown field; did you mean `interval`?",
        "node n2: config.rules[0].value: invalid regular expression",
        "node n3: config.qos: `${q}` is the string variable `q`",
        "connection 1: target: dangling connection: no node has the id `n9`",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(expected)),
            "`{expected}` not in:\n{stdout}"
        );
    }
    assert_eq!(stdout.lines().count(), 4, "{stdout}");
}

#[test]
fn json_output_is_machine_readable() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "problems.json", PROBLEMS.as_bytes());
    let out = validate(&["--json"], &file);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(report["ok"], Value::Bool(false));
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 4);
    assert!(
        problems
            .iter()
            .any(|p| p["subject"] == "node n1" && p["field"] == "config.interva1")
    );
    assert!(
        problems
            .iter()
            .all(|p| p["message"].as_str().is_some_and(|m| !m.is_empty()))
    );

    let ok = validate(&["--json"], &example());
    assert_eq!(ok.status.code(), Some(0));
    let report: Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(report["ok"], Value::Bool(true));
    assert_eq!(report["problems"], serde_json::json!([]));

    let missing = validate(&["--json"], &dir.path().join("absent.json"));
    assert_eq!(missing.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&missing.stdout).unwrap();
    assert_eq!(report["problems"][0]["subject"], "input");
}

#[test]
fn not_json_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "flow.yaml", b"nodes:\n  - id: n1\n");
    assert_refused(&validate(&[], &file), "not valid JSON");
}

#[test]
fn truncated_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let whole = std::fs::read(example()).unwrap();
    let file = write(dir.path(), "truncated.json", &whole[..whole.len() * 2 / 3]);
    assert_refused(&validate(&[], &file), "truncated");
}

#[test]
fn hundred_megabyte_file_is_refused_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.json");
    // A sparse file: 100 MB long without writing 100 MB to the disk.
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(100 * 1024 * 1024).unwrap();
    drop(file);
    floed();
    let started = Instant::now();
    let out = validate(&[], &path);
    assert_refused(&out, "larger than the 4194304-byte limit");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn ten_thousand_deep_nesting_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut deep = String::from("{\"nodes\":");
    deep.push_str(&"[".repeat(10_000));
    deep.push_str(&"]".repeat(10_000));
    deep.push('}');
    let file = write(dir.path(), "deep.json", deep.as_bytes());
    assert_refused(&validate(&[], &file), "more than 64 levels deep");
}

#[test]
fn missing_file_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-flow.json");
    let out = validate(&[], &path);
    assert_refused(&out, &path.display().to_string());
    assert!(text(&out.stderr).contains("No such file"));
}

#[test]
fn usage_errors_exit_2() {
    let out = Command::new(floed()).arg("validate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
