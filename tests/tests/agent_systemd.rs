//! The systemd files pass systemd's own checks: `systemd-analyze verify` on the unit (with
//! `ExecStart` pointed at the freshly built `floed`, because verify insists the binary exists),
//! and `systemd-sysusers` / `systemd-tmpfiles` applied to a scratch root.
//!
//! Skips, saying why, where systemd's tools are not installed.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // A test fails loudly on any broken precondition.

use std::path::Path;
use std::process::Command;

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

#[test]
fn floed_unit_verifies_with_its_hardening() {
    if !have("systemd-analyze") {
        eprintln!("SKIP: systemd-analyze is not installed");
        return;
    }
    let unit = std::fs::read_to_string(repo().join("systemd/floed.service")).unwrap();
    for needed in [
        "Type=notify",
        "WatchdogSec=",
        "Restart=always",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/floe",
        "NoNewPrivileges=true",
        "User=floe",
        "ExecStart=/usr/bin/floed ",
    ] {
        assert!(unit.contains(needed), "floed.service lacks {needed}");
    }
    let floed = floe_tests::agent::floed();
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("floed.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/bin/floed", floed.to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify failed or warned:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A unit with a misspelled directive must fail the same check, or the check proves nothing.
    let broken = tmp.path().join("broken.service");
    std::fs::write(
        &broken,
        unit.replace("/usr/bin/floed", floed.to_str().unwrap())
            .replace("Type=notify", "Type=notifyy"),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&broken)
        .output()
        .unwrap();
    assert!(
        !out.status.success() || String::from_utf8_lossy(&out.stderr).contains("notifyy"),
        "a broken unit verified cleanly"
    );
}

#[test]
fn sysusers_and_tmpfiles_create_the_user_groups_and_data_dir() {
    if !have("systemd-sysusers") || !have("systemd-tmpfiles") {
        eprintln!("SKIP: systemd-sysusers or systemd-tmpfiles is not installed");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    let out = Command::new("systemd-sysusers")
        .arg(format!("--root={}", root.path().display()))
        .arg(repo().join("systemd/sysusers.d/floe.conf"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let group = std::fs::read_to_string(root.path().join("etc/group")).unwrap();
    for g in ["gpio", "i2c", "spi", "dialout", "iio"] {
        assert!(
            group
                .lines()
                .any(|l| l.starts_with(&format!("{g}:")) && l.ends_with("floe")),
            "floe is not in group {g}: {group}"
        );
    }
    let out = Command::new("systemd-tmpfiles")
        .arg("--create")
        .arg(format!("--root={}", root.path().display()))
        .arg(repo().join("systemd/tmpfiles.d/floe.conf"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(root.path().join("var/lib/floe")).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o750);
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).unwrap();
    let uid: u32 = passwd
        .lines()
        .find(|l| l.starts_with("floe:"))
        .and_then(|l| l.split(':').nth(2))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(meta.uid(), uid, "the data dir belongs to floe");
}
