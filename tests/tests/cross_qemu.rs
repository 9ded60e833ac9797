//! The aarch64 and armv7 builds of `floed` as real devices under qemu-user: each validates the
//! example flow, joins a loopback coordinator (an amd64 `floe serve`) with `floed join`, runs
//! `floed daemon`, receives a deployment over the fabric and commits it.
//!
//! This proves the cross builds (Debian's `aarch64-linux-gnu-gcc` and `arm-linux-gnueabihf-gcc`
//! as linkers, the bundled C code compiled for the target) produce daemons that work on the
//! Raspberry Pi 4/5 and Jetson class of machine (aarch64) and on 32-bit Raspberry Pi OS (armv7),
//! talking to a coordinator of another architecture. The binaries are built with the dev profile
//! to keep the suite's time down; they are slower under emulation, so the device's trial
//! timeouts are generous. Where qemu-user, a cross compiler, a Rust target or Mosquitto is
//! missing the tests skip saying why, except under CI (`CI=true`), where they fail.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use floe_tests::Mosquitto;
use floe_tests::coordinator::{Coordinator, Device, temperature_flow, wait};
use serde_json::json;

/// One cross target.
struct Arch {
    /// The Rust target triple.
    triple: &'static str,
    /// The qemu-user program.
    qemu: &'static str,
    /// The GNU triple of the cross C library (qemu's `-L` is `/usr/<gnu>`).
    gnu: &'static str,
    /// ELF class (1: 32-bit, 2: 64-bit).
    class: u8,
    /// ELF e_machine.
    machine: u16,
    /// The `arch` a joined device reports: the manifests' name for it
    /// (`floe_wire::artifact::native_arch`), which bundles are checked against.
    rust_arch: &'static str,
}

const AARCH64: Arch = Arch {
    triple: "aarch64-unknown-linux-gnu",
    qemu: "qemu-aarch64",
    gnu: "aarch64-linux-gnu",
    class: 2,
    machine: 183,
    rust_arch: "aarch64",
};

const ARMV7: Arch = Arch {
    triple: "armv7-unknown-linux-gnueabihf",
    qemu: "qemu-arm",
    gnu: "arm-linux-gnueabihf",
    class: 1,
    machine: 40,
    rust_arch: "armv7",
};

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

fn rust_target_installed(triple: &str) -> bool {
    Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == triple)
        })
        .unwrap_or(false)
}

/// What is missing to run `arch`, if anything.
fn missing(arch: &Arch) -> Option<String> {
    if !have(arch.qemu) {
        return Some(format!(
            "{} is missing (apt-get install qemu-user)",
            arch.qemu
        ));
    }
    let gcc = format!("{}-gcc", arch.gnu);
    if !have(&gcc) {
        return Some(format!("{gcc} is missing (cross/setup.sh installs it)"));
    }
    if !rust_target_installed(arch.triple) {
        return Some(format!(
            "the Rust target {t} is not installed (rustup target add {t})",
            t = arch.triple
        ));
    }
    if !floe_tests::mosquitto_available() {
        return Some("mosquitto is not installed".into());
    }
    None
}

/// True when the test may run; skips (printing why) off CI and fails under CI.
fn can_run(arch: &Arch, test: &str) -> bool {
    let Some(reason) = missing(arch) else {
        return true;
    };
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test} cannot run under CI: {reason}"
    );
    eprintln!("SKIPPED {test}: {reason}");
    false
}

/// Builds `floed` for `arch` (dev profile) and checks its ELF header.
fn build(arch: &Arch) -> PathBuf {
    let target = target_dir();
    let status = floe_tests::cargo_command()
        .args([
            "build",
            "-q",
            "--target",
            arch.triple,
            "-p",
            "floe-runtime",
            "--bin",
            "floed",
        ])
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("run cargo");
    assert!(
        status.success(),
        "the {} build of floed failed",
        arch.triple
    );
    let floed = target.join(arch.triple).join("debug").join("floed");
    let header = std::fs::read(&floed).expect("read the cross floed");
    assert_eq!(&header[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(header[4], arch.class, "wrong ELF class for {}", arch.triple);
    assert_eq!(
        u16::from_le_bytes([header[18], header[19]]),
        arch.machine,
        "not a {} binary",
        arch.triple
    );
    floed
}

/// The command line that runs the cross `floed` under qemu.
fn launcher(arch: &Arch, floed: &Path) -> Vec<OsString> {
    vec![
        arch.qemu.into(),
        "-L".into(),
        format!("/usr/{}", arch.gnu).into(),
        floed.as_os_str().to_owned(),
    ]
}

fn run(launch: &[OsString], args: &[&std::ffi::OsStr]) -> Output {
    Command::new(&launch[0])
        .args(&launch[1..])
        .args(args)
        .output()
        .expect("run qemu")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `floed validate` accepts the example and refuses a broken flow naming the problem.
fn validates(launch: &[OsString]) {
    let root = floe_tests::workspace_root();
    let example = root.join("examples/temperature-alert.json");
    let ok = run(launch, &["validate".as_ref(), example.as_os_str()]);
    assert!(
        ok.status.success(),
        "the example was refused: {}",
        text(&ok)
    );
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "ok");

    let dir = tempfile::tempdir().expect("temp dir");
    let broken = dir.path().join("broken.json");
    std::fs::write(
        &broken,
        r#"{"nodes":[{"id":"a","type":"no_such_kind","config":{}}],"connections":[],"variables":[]}"#,
    )
    .expect("write broken flow");
    let bad = run(launch, &["validate".as_ref(), broken.as_os_str()]);
    assert_eq!(bad.status.code(), Some(1), "a broken flow must exit 1");
    assert!(text(&bad).contains("no_such_kind"), "{}", text(&bad));
}

/// The whole device life under qemu: join, run, receive a deployment, commit it.
fn joins_and_commits(arch: &Arch, test: &str) {
    if !can_run(arch, test) {
        return;
    }
    let floed = build(arch);
    let launch = launcher(arch, &floed);
    validates(&launch);

    let broker = Mosquitto::start().unwrap();
    let root = tempfile::tempdir().unwrap();
    let coord = Coordinator::start(root.path());
    let join = root.path().join("device.join");
    coord.join_file(&join, "10m");

    let dev = root.path().join("device");
    std::fs::create_dir_all(&dev).unwrap();
    let config = dev.join("floed.toml");
    let data = dev.join("data");
    // Emulated and unoptimised, the daemon starts flows more slowly than a real Pi: generous
    // start and smoke timeouts, a short trial.
    std::fs::write(
        &config,
        format!(
            "http_listen = \"127.0.0.1:{}\"\nmdns = false\nheartbeat_interval_ms = 500\n\
             [trial]\nmin_ready_seconds = 2\ncheck_interval_ms = 250\nsmoke_timeout_ms = 15000\n\
             start_timeout_ms = 20000\nstop_timeout_ms = 2000\n",
            floe_tests::net::free_port().unwrap()
        ),
    )
    .unwrap();
    let out = run(
        &launch,
        &[
            "join".as_ref(),
            join.as_os_str(),
            "--config".as_ref(),
            config.as_os_str(),
            "--data-dir".as_ref(),
            data.as_os_str(),
            "--device-type".as_ref(),
            "rpi".as_ref(),
            "--listen".as_ref(),
            "/ip4/127.0.0.1/tcp/0".as_ref(),
            "--no-start".as_ref(),
        ],
    );
    assert!(out.status.success(), "floed join failed: {}", text(&out));
    assert!(text(&out).contains("enrolled at"), "{}", text(&out));

    let device = Device::start_launched(Some(launch.clone()), &data, &config);
    coord.wait_online(&[&device], Duration::from_secs(120));
    assert_eq!(coord.device(&device.id)["arch"], arch.rust_arch);

    let flow = coord.publish("Temperature Alert", temperature_flow(&broker.url()));
    let dep = coord.deploy(&flow, "all-at-once", &[&device], json!({"timeout": "120s"}));
    let done = coord.wait_done(&dep, Duration::from_secs(240));
    if done.status != floe_coordinator::contract::DeploymentStatus::Completed {
        let log = std::fs::read_to_string(data.join("floed.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        panic!(
            "the deployment ended {:?}: {:?}; the device: {:#}; its log ends:\n{}",
            done.status,
            done.status_reason,
            coord.device(&device.id),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let s = wait("the device to commit", Duration::from_secs(60), || {
        let s = device.status();
        (s["phase"] == "idle" && s["active"].is_string() && s["last_good"] == s["active"])
            .then_some(s)
    });
    assert!(device.active_version().is_some(), "{s}");
}

#[test]
fn aarch64_floed_joins_a_coordinator_and_commits_a_deployment_under_qemu() {
    joins_and_commits(
        &AARCH64,
        "aarch64_floed_joins_a_coordinator_and_commits_a_deployment_under_qemu",
    );
}

#[test]
fn armv7_floed_joins_a_coordinator_and_commits_a_deployment_under_qemu() {
    joins_and_commits(
        &ARMV7,
        "armv7_floed_joins_a_coordinator_and_commits_a_deployment_under_qemu",
    );
}
