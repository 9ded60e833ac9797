//! The aarch64 build of `floed` runs the example flow's validation under `qemu-aarch64`.
//!
//! This proves the cross build (Debian's `aarch64-linux-gnu-gcc` as linker, the bundled C code
//! compiled for the target) produces a binary that works on the Raspberry Pi 4/5 and Jetson
//! class of machine. It skips, saying why, where qemu-user, the cross compiler or the Rust
//! target are missing; CI installs all three.

#![allow(clippy::expect_used, clippy::unwrap_used)] // A test fails loudly on any broken precondition.

use std::path::{Path, PathBuf};
use std::process::Command;

const TRIPLE: &str = "aarch64-unknown-linux-gnu";

/// The target directory this test binary was built into (`<target>/debug/deps/<test>`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.ancestors()
        .nth(3)
        .expect("test binary lives in <target>/<profile>/deps")
        .to_path_buf()
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn rust_target_installed() -> bool {
    Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == TRIPLE)
        })
        .unwrap_or(false)
}

/// The reason to skip, if any.
fn skip_reason() -> Option<String> {
    if !have("qemu-aarch64") {
        return Some("qemu-aarch64 is missing (apt-get install qemu-user)".into());
    }
    if !have("aarch64-linux-gnu-gcc") {
        return Some("aarch64-linux-gnu-gcc is missing (cross/setup.sh installs it)".into());
    }
    if !rust_target_installed() {
        return Some(format!(
            "the Rust target {TRIPLE} is not installed (rustup target add {TRIPLE})"
        ));
    }
    None
}

#[test]
fn aarch64_floed_validates_the_example_under_qemu() {
    if let Some(reason) = skip_reason() {
        eprintln!("SKIPPED aarch64_floed_validates_the_example_under_qemu: {reason}");
        return;
    }
    let root = floe_tests::workspace_root();
    let target = target_dir();
    let status = floe_tests::cargo_command()
        .args([
            "build",
            "-q",
            "--target",
            TRIPLE,
            "-p",
            "floe-runtime",
            "--bin",
            "floed",
        ])
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("run cargo");
    assert!(status.success(), "the aarch64 build of floed failed");

    let floed = target.join(TRIPLE).join("debug").join("floed");
    let header = std::fs::read(&floed).expect("read the aarch64 floed");
    // ELF, 64-bit, e_machine = EM_AARCH64 (183) at offset 18, little endian.
    assert_eq!(&header[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(header[4], 2, "not a 64-bit ELF");
    assert_eq!(
        u16::from_le_bytes([header[18], header[19]]),
        183,
        "not an aarch64 binary"
    );

    let run = |file: &Path| {
        Command::new("qemu-aarch64")
            .args(["-L", "/usr/aarch64-linux-gnu"])
            .arg(&floed)
            .arg("validate")
            .arg(file)
            .output()
            .expect("run qemu-aarch64")
    };

    let ok = run(&root.join("examples/temperature-alert.json"));
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "aarch64 floed refused the example: {stdout}{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(stdout.trim(), "ok");

    // The same binary must also refuse a broken flow with exit 1 and name the problem.
    let dir = tempfile::tempdir().expect("temp dir");
    let broken = dir.path().join("broken.json");
    std::fs::write(
        &broken,
        r#"{"nodes":[{"id":"a","type":"no_such_kind","config":{}}],"connections":[],"variables":[]}"#,
    )
    .expect("write broken flow");
    let bad = run(&broken);
    assert_eq!(bad.status.code(), Some(1), "a broken flow must exit 1");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&bad.stdout),
        String::from_utf8_lossy(&bad.stderr)
    );
    assert!(
        text.contains("no_such_kind"),
        "the problem must be named: {text}"
    );
}
