//! Crash safety: `floed` is killed with SIGKILL (through the `crash-points` hook,
//! `FLOE_CRASH_AT=<step>`) at every step of stage, smoke test, switch, trial, commit and
//! rollback, then started again. Each time: `active` points at a fully verified slot, the
//! database passes `PRAGMA integrity_check`, the audit log tells a consistent story, no
//! temporary file remains, and the device ends on the version the step implies.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // A test fails loudly on any broken precondition.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;

use floe_tests::agent::*;

/// (crash point, the command that reaches it, the slot and version the device must end on).
const STEPS: &[(&str, &str, &str, &str)] = &[
    ("stage:persisted", "install", "blue", "1.0"),
    ("stage:filled", "install", "blue", "1.0"),
    ("stage:old-removed", "install", "blue", "1.0"),
    ("stage:renamed", "install", "blue", "1.0"),
    ("stage:done", "install", "blue", "1.0"),
    ("smoke:persisted", "install", "blue", "1.0"),
    ("switch:persisted", "install", "green", "2.0"),
    ("switch:old-stopped", "install", "green", "2.0"),
    ("switch:tmp-link", "install", "green", "2.0"),
    ("switch:renamed", "install", "green", "2.0"),
    ("switch:started", "install", "green", "2.0"),
    ("trial:started", "install", "green", "2.0"),
    ("trial:tick", "install", "green", "2.0"),
    ("commit:before", "install", "green", "2.0"),
    ("commit:after", "install", "green", "2.0"),
    ("rollback:persisted", "rollback", "blue", "1.0"),
    ("rollback:relinked", "rollback", "blue", "1.0"),
];

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

fn check_step(
    base: &Path,
    staged_v2: &Path,
    step: &str,
    command: &str,
    slot: &str,
    version: &str,
    root: &Path,
) {
    let dir = root.join(step.replace(':', "_"));
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("data");
    copy_dir(base, &data);
    let cfg = config(&dir, &data, 1);
    let args: Vec<&str> = match command {
        "install" => vec!["install", staged_v2.to_str().unwrap()],
        _ => vec!["rollback", "--reason", "crash test"],
    };
    let out = run(
        &cfg,
        &args,
        &[("FLOE_CRASH_AT", step)],
        Duration::from_secs(60),
    );
    assert_eq!(
        out.status.signal(),
        Some(9),
        "{step}: floed was not killed at the crash point: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );

    // Restart: the daemon recovers, finishes or undoes the step, and settles.
    let mut d = Daemon::start(&cfg, &[]);
    d.wait_ready(&data, Duration::from_secs(20));
    let st = wait_status(&cfg, Duration::from_secs(20), |s| s["phase"] == "idle");
    d.stop();

    let st_after = status(&cfg);
    assert_eq!(st_after["phase"], "idle", "{step}");
    let active = active_slot(&data).unwrap_or_default();
    assert_eq!(active, slot, "{step}: {st:#}");
    assert_eq!(st_after["last_good"], slot, "{step}");
    let view = st_after["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["slot"] == slot)
        .unwrap()
        .clone();
    assert_eq!(
        view["verified"], "ok",
        "{step}: active slot not verified: {view}"
    );
    assert_eq!(view["version"], version, "{step}: {st_after:#}");
    assert_eq!(st["health"]["version"], version, "{step}: {st:#}");
    assert_eq!(st_after["database"], "ok", "{step}");
    assert!(
        temp_leftovers(&data).is_empty(),
        "{step}: {:?}",
        temp_leftovers(&data)
    );

    // The audit log tells a consistent story: every step that started was finished, undone
    // or resumed, and the story ends where the device is.
    let audit: Vec<(String, String, String)> = st_after["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["action"].as_str().unwrap().to_string(),
                a["outcome"].as_str().unwrap().to_string(),
                a["detail"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let last_stage_start = audit
        .iter()
        .rposition(|(a, o, _)| a == "stage" && o == "started");
    if command == "install" {
        let i = last_stage_start.unwrap_or_else(|| panic!("{step}: no stage start in {audit:?}"));
        let after = &audit[i + 1..];
        let ended_on_blue = after
            .iter()
            .any(|(a, o, _)| (a == "stage" || a == "smoke") && o == "interrupted");
        let committed = after.iter().any(|(a, o, _)| a == "commit" && o == "ok");
        if slot == "blue" {
            assert!(ended_on_blue && !committed, "{step}: {after:?}");
        } else {
            assert!(committed && !ended_on_blue, "{step}: {after:?}");
            if step != "commit:after" {
                assert!(
                    after.iter().any(|(a, o, _)| a == "trial" && o == "resumed"),
                    "{step}: {after:?}"
                );
            }
        }
    } else {
        let i = audit
            .iter()
            .rposition(|(a, o, _)| a == "rollback" && o == "started")
            .unwrap();
        assert!(
            audit[i + 1..]
                .iter()
                .any(|(a, o, _)| a == "rollback" && o == "resumed"),
            "{step}: {audit:?}"
        );
    }
}

#[test]
fn sigkill_at_every_step_leaves_a_consistent_device() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // Base A: 1.0 committed in blue. Base B: 1.0 in blue, then 2.0 committed in green.
    let base_a = root.join("base-a/data");
    let cfg_a = config(&root.join("base-a"), &base_a, 0);
    let v1 = stage(root, "1.0", &ticking_flow("v1"), &[]);
    let v2 = stage(
        root,
        "2.0",
        &ticking_flow("v2"),
        &[("files/model.bin", vec![3u8; 256 * 1024])],
    );
    let out = run(
        &cfg_a,
        &["install", v1.to_str().unwrap()],
        &[],
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let base_b = root.join("base-b/data");
    copy_dir(&base_a, &base_b);
    let cfg_b = config(&root.join("base-b"), &base_b, 0);
    let out = run(
        &cfg_b,
        &["install", v2.to_str().unwrap()],
        &[],
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Four workers over the steps keep the test short on two cores.
    let steps: Vec<_> = STEPS.to_vec();
    let chunks: Vec<Vec<_>> = steps
        .chunks(steps.len().div_ceil(4))
        .map(<[_]>::to_vec)
        .collect();
    std::thread::scope(|s| {
        for chunk in chunks {
            let (base_a, base_b, v2, root) = (&base_a, &base_b, &v2, root);
            s.spawn(move || {
                for (step, command, slot, version) in chunk {
                    let base = if command == "install" { base_a } else { base_b };
                    check_step(base, v2, step, command, slot, version, root);
                }
            });
        }
    });
}
