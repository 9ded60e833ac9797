//! End to end: keys, trust store, `floe artifact build` / `inspect` and `floed artifact
//! verify` / `import`, run as real processes on real files.

#![allow(clippy::expect_used, clippy::unwrap_used)] // A test fails loudly on any broken precondition.

use floe_tests::workspace_root;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin(name: &str) -> PathBuf {
    floe_tests::bin(name).expect("building the workspace binaries")
}

fn run(name: &str, args: &[&str], cwd: &Path) -> Output {
    Command::new(bin(name))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("spawning")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A working directory with a release key, a coordinator key, a trust store and a files dir.
fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for k in ["release", "coord", "stranger"] {
        let o = run("floe", &["keys", "gen", "--out", k], d);
        assert!(o.status.success(), "keys gen: {}", stderr(&o));
    }
    let o = run(
        "floe",
        &[
            "keys",
            "trust-init",
            "--release-key",
            "release",
            "--coordinator-key",
            "coord",
            "--out",
            "trust",
        ],
        d,
    );
    assert!(o.status.success(), "trust-init: {}", stderr(&o));
    std::fs::create_dir_all(d.join("files/models")).unwrap();
    let model: Vec<u8> = (0..2_500_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(d.join("files/models/detector.bin"), model).unwrap();
    std::fs::write(d.join("files/settings.toml"), b"threshold = 30\n").unwrap();
    dir
}

fn build(d: &Path, out: &str, key: &str) -> Output {
    let flow = workspace_root().join("examples/temperature-alert.json");
    run(
        "floe",
        &[
            "artifact",
            "build",
            "--flow",
            flow.to_str().unwrap(),
            "--version",
            "1.4.0",
            "--key",
            key,
            "--files",
            "files",
            "--release",
            "12",
            "--out",
            out,
        ],
        d,
    )
}

#[test]
fn keys_gen_writes_a_private_key_0600_and_never_overwrites() {
    let dir = setup();
    let key = dir.path().join("release/floe.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let before = std::fs::read(&key).unwrap();
    let o = run("floe", &["keys", "gen", "--out", "release"], dir.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("refusing to overwrite"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(&key).unwrap(), before);
}

#[test]
fn build_inspect_verify_import() {
    let dir = setup();
    let d = dir.path();
    let o = build(d, "a.floe", "release");
    assert!(o.status.success(), "build: {}", stderr(&o));

    let o = run("floe", &["artifact", "inspect", "a.floe", "--json"], d);
    assert!(o.status.success(), "inspect: {}", stderr(&o));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["name"], "temperature-alert");
    assert_eq!(json["version"], "1.4.0");
    assert_eq!(json["release"], 12);
    // No --chunk-size: about 512 chunks, at least 128 KiB (a 2.5 MB payload: the floor).
    assert_eq!(json["chunk_size"], 128 << 10);
    let paths: Vec<&str> = json["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["flow.json", "models/detector.bin", "settings.toml"]);
    let size = json["size"].as_u64().unwrap();
    assert_eq!(
        json["chunks"].as_array().unwrap().len() as u64,
        size.div_ceil(128 << 10)
    );
    let text = run("floe", &["artifact", "inspect", "a.floe"], d);
    assert!(
        stdout(&text).contains("temperature-alert 1.4.0 (release 12)"),
        "{}",
        stdout(&text)
    );

    let o = run(
        "floed",
        &["artifact", "verify", "a.floe", "--trust", "trust"],
        d,
    );
    assert_eq!(o.status.code(), Some(0), "verify: {}", stderr(&o));
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.starts_with("ok: temperature-alert 1.4.0 release 12, "),
        "{out}"
    );
    assert!(
        out.contains(json["manifest_sha256"].as_str().unwrap()),
        "{out}"
    );

    let o = run(
        "floed",
        &[
            "artifact",
            "import",
            "a.floe",
            "--trust",
            "trust",
            "--data-dir",
            "data",
        ],
        d,
    );
    assert!(o.status.success(), "import: {}", stderr(&o));
    for chunk in json["chunks"].as_array().unwrap() {
        let hex = chunk.as_str().unwrap();
        assert!(
            d.join("data/chunks").join(&hex[..2]).join(hex).is_file(),
            "chunk {hex} not stored"
        );
    }
}

/// `floe artifact build --smoke-test` carries the test in the signed manifest, and `inspect`
/// shows it.
#[test]
fn build_carries_a_smoke_test_in_the_manifest() {
    let dir = setup();
    let d = dir.path();
    std::fs::write(
        d.join("smoke.json"),
        r#"{"inject":[{"node":"n2","payload":{"temperature":35}}],
            "expect":[{"node":"n3","payload":{"temperature":35}}],"timeout_ms":1500}"#,
    )
    .unwrap();
    let flow = workspace_root().join("examples/temperature-alert.json");
    let o = run(
        "floe",
        &[
            "artifact",
            "build",
            "--flow",
            flow.to_str().unwrap(),
            "--version",
            "1.0.0",
            "--key",
            "release",
            "--out",
            "s.floe",
            "--smoke-test",
            "smoke.json",
        ],
        d,
    );
    assert!(o.status.success(), "build: {}", stderr(&o));
    let o = run("floe", &["artifact", "inspect", "s.floe", "--json"], d);
    assert!(o.status.success(), "inspect: {}", stderr(&o));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["smoke_test"]["timeout_ms"], 1500, "{json}");
    assert_eq!(json["smoke_test"]["inject"][0]["node"], "n2", "{json}");
    // A malformed smoke test is refused with the file named, and nothing is written.
    std::fs::write(d.join("bad.json"), r#"{"inject":"nope"}"#).unwrap();
    let o = run(
        "floe",
        &[
            "artifact",
            "build",
            "--flow",
            flow.to_str().unwrap(),
            "--version",
            "1.0.0",
            "--key",
            "release",
            "--out",
            "b.floe",
            "--smoke-test",
            "bad.json",
        ],
        d,
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("bad.json"), "{}", stderr(&o));
    assert!(!d.join("b.floe").exists());
}

#[test]
fn verify_refuses_with_exit_1_and_the_reason() {
    let dir = setup();
    let d = dir.path();
    assert!(build(d, "good.floe", "release").status.success());
    let good = std::fs::read(d.join("good.floe")).unwrap();

    // The payload ends the file: find which chunk a byte 1 000 000 from the end falls in.
    let o = run("floe", &["artifact", "inspect", "good.floe", "--json"], d);
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let (size, chunk_size) = (
        json["size"].as_u64().unwrap(),
        json["chunk_size"].as_u64().unwrap(),
    );
    let bad_chunk = (size - 1_000_000) / chunk_size;
    let corrupt_reason = format!("chunk {bad_chunk} is corrupt");
    let mut corrupt = good.clone();
    let at = corrupt.len() - 1_000_000;
    corrupt[at] ^= 0x40;
    std::fs::write(d.join("corrupt.floe"), corrupt).unwrap();
    std::fs::write(d.join("short.floe"), &good[..good.len() - 10]).unwrap();
    assert!(build(d, "stranger.floe", "stranger").status.success());

    for (file, reason) in [
        ("corrupt.floe", corrupt_reason.as_str()),
        ("short.floe", "truncated bundle"),
        ("stranger.floe", "signature by unknown key"),
        ("missing.floe", "No such file"),
    ] {
        let o = run(
            "floed",
            &["artifact", "verify", file, "--trust", "trust"],
            d,
        );
        assert_eq!(o.status.code(), Some(1), "{file}: {}", stdout(&o));
        assert!(stderr(&o).contains(reason), "{file}: {}", stderr(&o));
        assert!(stdout(&o).is_empty(), "{file}: {}", stdout(&o));
    }
}

#[test]
fn build_refuses_a_flow_that_fails_complete_validation() {
    let dir = setup();
    let d = dir.path();
    std::fs::write(
        d.join("broken.json"),
        br#"{"nodes":[{"id":"n1","type":"no_such_kind"}]}"#,
    )
    .unwrap();
    let o = run(
        "floe",
        &[
            "artifact",
            "build",
            "--flow",
            "broken.json",
            "--version",
            "1.0.0",
            "--key",
            "release",
            "--out",
            "b.floe",
        ],
        d,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("does not pass complete validation"),
        "{}",
        stderr(&o)
    );
    assert!(!d.join("b.floe").exists());
}

#[test]
fn two_of_two_threshold_needs_both_release_keys() {
    let dir = setup();
    let d = dir.path();
    let o = run(
        "floe",
        &[
            "keys",
            "trust-init",
            "--release-key",
            "release",
            "--release-key",
            "stranger",
            "--coordinator-key",
            "coord",
            "--threshold",
            "2",
            "--out",
            "trust2",
        ],
        d,
    );
    assert!(o.status.success(), "trust-init: {}", stderr(&o));
    assert!(build(d, "one.floe", "release").status.success());
    let flow = workspace_root().join("examples/temperature-alert.json");
    let o = run(
        "floe",
        &[
            "artifact",
            "build",
            "--flow",
            flow.to_str().unwrap(),
            "--version",
            "1.4.0",
            "--key",
            "release",
            "--key",
            "stranger",
            "--release",
            "12",
            "--out",
            "two.floe",
        ],
        d,
    );
    assert!(o.status.success(), "build: {}", stderr(&o));

    let o = run(
        "floed",
        &["artifact", "verify", "one.floe", "--trust", "trust2"],
        d,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("1 of 2 distinct trusted keys signed"),
        "{}",
        stderr(&o)
    );
    let o = run(
        "floed",
        &["artifact", "verify", "two.floe", "--trust", "trust2"],
        d,
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // A threshold above the number of keys is refused when the store is made.
    let o = run(
        "floe",
        &[
            "keys",
            "trust-init",
            "--release-key",
            "release",
            "--coordinator-key",
            "coord",
            "--threshold",
            "2",
            "--out",
            "bad",
        ],
        d,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("threshold 2 must be between 1 and the 1 release keys"),
        "{}",
        stderr(&o)
    );
}
