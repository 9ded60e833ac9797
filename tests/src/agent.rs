//! The harness of the agent's end-to-end tests: one device's `floed` (built with the test-only
//! `crash-points` and `fault-nodes` features) driven through its CLI: staging version
//! directories, writing configs, installing, running commands with a time bound, reading
//! `floed status --json` and running the daemon.
//!
//! Like [`crate::coordinator`], these helpers panic instead of returning errors: each call is a
//! step of a test, and a step that cannot happen must fail that test on the spot, as an
//! `assert!` would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Builds `floed` with the crash-point hook and the test-only `fault` node kind once per test
/// process and returns its path.
pub fn floed() -> PathBuf {
    crate::bin("floed").expect("building floed")
}

/// A flow that injects a message every 50 ms into a debug sink: runs anywhere, no hardware.
pub fn ticking_flow(tag: &str) -> String {
    serde_json::json!({
        "nodes": [
            {"id": "tick", "type": "inject", "name": "Tick", "config": {"payload": {"tag": tag}, "interval": "50ms", "once": true}},
            {"id": "out", "type": "debug", "name": "Out", "config": {"level": "debug"}}
        ],
        "connections": [{"source": "tick", "target": "out"}]
    })
    .to_string()
}

/// A flow that polls a (simulated sysfs) sensor file every 20 ms into a debug sink.
pub fn sensor_flow(path: &Path) -> String {
    serde_json::json!({
        "nodes": [
            {"id": "temp", "type": "sensor", "name": "Temp", "config": {"path": path, "interval": "20ms"}},
            {"id": "out", "type": "debug", "name": "Out", "config": {"level": "debug"}}
        ],
        "connections": [{"source": "temp", "target": "out"}]
    })
    .to_string()
}

/// Writes a staged version directory: `flow.json`, optional extra files, and `.version` with
/// the sha256 of every file.
pub fn stage(root: &Path, version: &str, flow: &str, extra: &[(&str, Vec<u8>)]) -> PathBuf {
    let dir = root.join(format!("staged-{version}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut files = BTreeMap::new();
    let mut put = |rel: &str, bytes: &[u8]| {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
        files.insert(rel.to_string(), hex::encode(Sha256::digest(bytes)));
    };
    put("flow.json", flow.as_bytes());
    for (rel, bytes) in extra {
        put(rel, bytes);
    }
    let record = serde_json::json!({"version": version, "flow": "flow.json", "files": files});
    std::fs::write(dir.join(".version"), record.to_string()).unwrap();
    dir
}

/// Writes a config for a test device with short trials and a free loopback port. The lifecycle
/// tests install unsigned staged directories, so the config turns on the developer setting
/// `dev.allow_unsigned_install`; the hostile suite checks that it is off by default.
pub fn config(root: &Path, data: &Path, min_ready_s: u64) -> PathBuf {
    let port = crate::net::free_port().unwrap();
    std::fs::create_dir_all(root).unwrap();
    let path = root.join("floed.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = \"{}\"\ndevice_type = \"test-rig\"\narch = \"{}\"\nhttp_listen = \"127.0.0.1:{port}\"\n\
             [trial]\nmin_ready_seconds = {min_ready_s}\ncheck_interval_ms = 100\nsmoke_timeout_ms = 300\n\
             start_timeout_ms = 2000\nstop_timeout_ms = 500\n\
             [dev]\nallow_unsigned_install = true\n",
            data.display(),
            floe_wire::artifact::native_arch()
        ),
    )
    .unwrap();
    path
}

/// The `http_listen` port of a config file.
pub fn http_port(config: &Path) -> u16 {
    let text = std::fs::read_to_string(config).unwrap();
    let line = text.lines().find(|l| l.starts_with("http_listen")).unwrap();
    line.rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('"')
        .parse()
        .unwrap()
}

/// Runs floed with arguments and extra environment, killing it after `limit`.
pub fn run(config: &Path, args: &[&str], env: &[(&str, &str)], limit: Duration) -> Output {
    let mut cmd = Command::new(floed());
    cmd.args(args).arg("--config").arg(config);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.env("RUST_LOG", "warn,floe_flow=error");
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawning floed");
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// `floed status --json` as JSON.
pub fn status(config: &Path) -> serde_json::Value {
    let out = run(config, &["status", "--json"], &[], Duration::from_secs(20));
    assert!(
        out.status.success(),
        "status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

/// `floed install <source>` (a staged directory or a bundle), run in-process as on an
/// air-gapped site, killed after 60 s.
pub fn install(config: &Path, source: &Path) -> Output {
    install_within(config, source, Duration::from_secs(60))
}

/// `floed install <source>`, killed after `limit`.
pub fn install_within(config: &Path, source: &Path, limit: Duration) -> Output {
    run(config, &["install", source.to_str().unwrap()], &[], limit)
}

/// Whether the status's audit log has an entry of `action` with `outcome` whose detail
/// contains `needle`.
pub fn audit_has(st: &serde_json::Value, action: &str, outcome: &str, needle: &str) -> bool {
    st["audit"].as_array().unwrap().iter().any(|a| {
        a["action"] == action
            && a["outcome"] == outcome
            && a["detail"].as_str().unwrap().contains(needle)
    })
}

/// A running daemon, stopped with SIGTERM (or killed) on drop.
#[derive(Debug)]
pub struct Daemon {
    /// The `floed daemon` process.
    pub child: Child,
}

impl Daemon {
    /// Starts `floed daemon` with this config and extra environment.
    pub fn start(config: &Path, env: &[(&str, &str)]) -> Daemon {
        let mut cmd = Command::new(floed());
        cmd.arg("daemon").arg("--config").arg(config);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.env("RUST_LOG", "warn,floe_flow=error");
        cmd.stdout(Stdio::null()).stderr(Stdio::inherit());
        Daemon {
            child: cmd.spawn().expect("spawning floed daemon"),
        }
    }

    /// Waits until the control socket answers, failing after `limit`.
    pub fn wait_ready(&mut self, data: &Path, limit: Duration) {
        let sock = data.join("floed.sock");
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(st) = self.child.try_wait().unwrap() {
                panic!("floed daemon exited early: {st}");
            }
            if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("floed daemon not ready within {limit:?}");
    }

    /// Stops the daemon with SIGTERM, killing it if it has not exited within 10 s.
    pub fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if self.child.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `floed status` until `pred` holds, failing after `limit`.
pub fn wait_status(
    config: &Path,
    limit: Duration,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let st = status(config);
        if pred(&st) {
            return st;
        }
        assert!(start.elapsed() < limit, "status never matched: {st:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The slot `active` points at.
pub fn active_slot(data: &Path) -> Option<String> {
    std::fs::read_link(data.join("active"))
        .ok()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
}

/// Files an interrupted step could leave behind.
pub fn temp_leftovers(data: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if std::fs::symlink_metadata(data.join("active.tmp")).is_ok() {
        out.push(data.join("active.tmp"));
    }
    for s in ["blue.tmp", "green.tmp"] {
        let p = data.join("slots").join(s);
        if p.exists() {
            out.push(p);
        }
    }
    out
}
