//! The one home of the end-to-end tests' harnesses: every test file under `tests/` and every
//! benchmark under `examples/` starts its processes through this library, so a harness is
//! written once and a fix to it reaches every test.
//!
//! - this file: locating and building the workspace's binaries, and a real Mosquitto broker;
//! - [`net`]: free loopback ports and waiting for a listener;
//! - [`agent`]: one `floed` device driven through its CLI (install, status, daemon);
//! - [`fabric`]: a fleet of `floed fabric` processes (the libp2p swarm on its own);
//! - [`coordinator`]: a real `floe serve` with real `floed daemon` devices bootstrapped to it;
//! - [`netns`]: network namespaces with shaped links for the fabric fleet.
//!
//! Binaries are built on first use (`cargo build -q --bin NAME -p PACKAGE`, same profile and
//! target directory as the running test), once per test process, because `cargo test` does not
//! promise to build other packages' binaries before this crate's tests run.

use anyhow::{Context, Result, bail};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Where Mosquitto is installed on the test machines.
pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The profile directory of the running test (`target/debug`), from the test executable's path
/// (`target/debug/deps/<test>`).
fn profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the test executable")?;
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .context("the test executable has no profile directory")
}

/// A `cargo` command for nested builds from a test, run in the workspace root.
///
/// The per-package variables cargo set for this test process are dropped: build scripts that
/// track them (ring's tracks `CARGO_MANIFEST_DIR`) would otherwise make the nested build, and
/// every later top-level build, rebuild the binary's whole dependency tree.
pub fn cargo_command() -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut cmd = Command::new(cargo);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_PKG_")
            || matches!(
                key.as_ref(),
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "OUT_DIR"
            )
        {
            cmd.env_remove(key.as_ref());
        }
    }
    cmd.current_dir(workspace_root());
    cmd
}

/// The path of a workspace binary (`floed`, `floe`), built once per test process. `floed` is
/// built with the test features `crash-points` and `fault-nodes`, and `floe` with
/// `fault-nodes`, so both sides know the test-only node kind.
///
/// `FLOE_TEST_FLOED` / `FLOE_TEST_FLOE` name a prebuilt binary to run instead (benchmarks use
/// it to measure a production build, or a copy of one on another filesystem).
pub fn bin(name: &str) -> Result<PathBuf> {
    let given = format!("FLOE_TEST_{}", name.to_ascii_uppercase());
    if let Some(path) = std::env::var_os(&given) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("{given}={} is not a file", path.display());
        }
        return Ok(path);
    }
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let built = BUILT.get_or_init(|| Mutex::new(HashMap::new()));
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.get(name) {
        return Ok(p.clone());
    }
    let package = match name {
        "floed" => "floe-runtime",
        "floe" => "floe-coordinator",
        other => bail!("unknown binary {other}"),
    };
    let dir = profile_dir()?;
    let target_dir = dir.parent().context("no target directory")?;
    let mut cmd = cargo_command();
    cmd.args(["build", "-q", "--bin", name, "-p", package, "--target-dir"])
        .arg(target_dir);
    if dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    if name == "floed" {
        // Every end-to-end test runs the same floed: with the crash-point hook (inert unless
        // FLOE_CRASH_AT is set) and the test-only `fault` node kind (used only by flows that
        // name it). One feature set means one build, instead of a rebuild each time a test
        // binary with other features runs.
        cmd.args(["--features", "crash-points,fault-nodes,fault-injection"]);
    }
    if name == "floe" {
        // The coordinator validates flows with the same node kinds the test floed knows.
        cmd.args(["--features", "fault-nodes"]);
    }
    let st = cmd.status().context("running cargo build")?;
    if !st.success() {
        bail!("cargo build --bin {name} failed ({st})");
    }
    let path = dir.join(name);
    if !path.exists() {
        bail!("{} missing after the build", path.display());
    }
    built.insert(name.to_string(), path.clone());
    Ok(path)
}

/// True when Mosquitto is installed; tests that need it print why they skip otherwise.
pub fn mosquitto_available() -> bool {
    Path::new(MOSQUITTO).exists()
}

/// A real Mosquitto broker on a loopback port, with its config in a temp dir. Killed on drop.
#[derive(Debug)]
pub struct Mosquitto {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Mosquitto {
    /// Starts a broker on a free loopback port.
    pub fn start() -> Result<Mosquitto> {
        Self::start_on(net::free_port()?)
    }

    /// Starts a broker on this loopback port.
    pub fn start_on(port: u16) -> Result<Mosquitto> {
        let dir = tempfile::tempdir()?;
        let mut m = Mosquitto {
            port,
            dir,
            child: None,
        };
        m.restart()?;
        Ok(m)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mqtt://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Kills the broker (as a crash would) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the broker again on the same port (stopping it first if it runs).
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        let conf = self.dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\n",
                self.port
            ),
        )?;
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {MOSQUITTO}"))?;
        self.child = Some(child);
        net::wait_for_port(self.port, Duration::from_secs(10))
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A message seen by a [`Subscription`].
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    /// The topic.
    pub topic: String,
    /// The payload as text.
    pub payload: String,
    /// Whether the broker flagged it as retained.
    pub retain: bool,
}

/// A subscriber on a broker, run by `mosquitto_sub`, a real MQTT client of its own.
#[derive(Debug)]
pub struct Subscription {
    child: Child,
    rx: std::sync::mpsc::Receiver<Seen>,
    /// Messages that arrived before the probe (retained ones), in order.
    early: Mutex<std::collections::VecDeque<Seen>>,
}

/// Most messages a subscription keeps from before its probe arrived (the oldest go first).
const EARLY_LIMIT: usize = 10_000;

impl Subscription {
    /// Subscribes to `filter` and returns once the subscription is confirmed: the helper
    /// publishes a probe on a topic under `floe-test-probe/` and waits to see it.
    pub fn start(port: u16, filter: &str) -> Result<Subscription> {
        use std::io::BufRead;
        let probe = format!("floe-test-probe/{}", net::free_port()?);
        let mut child = Command::new("mosquitto_sub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-q",
                "1",
                "-F",
                "%r %t %p",
            ])
            .args(["-t", filter, "-t", &probe])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting mosquitto_sub")?;
        let out = child.stdout.take().context("mosquitto_sub stdout")?;
        let (tx, rx) = std::sync::mpsc::sync_channel(10_000);
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let mut parts = line.splitn(3, ' ');
                let retain = parts.next() == Some("1");
                let topic = parts.next().unwrap_or("").to_string();
                let payload = parts.next().unwrap_or("").to_string();
                if tx
                    .send(Seen {
                        topic,
                        payload,
                        retain,
                    })
                    .is_err()
                {
                    return;
                }
            }
        });
        let sub = Subscription {
            child,
            rx,
            early: Mutex::new(std::collections::VecDeque::new()),
        };
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let _ = Command::new("mosquitto_pub")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-t",
                    &probe,
                    "-m",
                    "probe",
                ])
                .status();
            // Wait up to 500 ms for this probe, then publish another: the first one can be
            // lost when it beats the subscription, and a busy topic must not keep this loop
            // from ever sending a second probe.
            let round = Instant::now() + Duration::from_millis(500);
            while let Some(left) = round.checked_duration_since(Instant::now()) {
                let Ok(s) = sub.rx.recv_timeout(left) else {
                    break;
                };
                if s.topic == probe {
                    return Ok(sub);
                }
                let mut early = sub.early.lock().unwrap_or_else(|e| e.into_inner());
                if early.len() >= EARLY_LIMIT {
                    early.pop_front();
                }
                early.push_back(s);
            }
            if Instant::now() >= until {
                bail!("mosquitto_sub on port {port} did not see its probe within 10 s");
            }
        }
    }

    /// The next message on the subscribed filter (probes skipped), or `None` after `within`.
    pub fn next(&self, within: Duration) -> Option<Seen> {
        if let Some(s) = self
            .early
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
        {
            return Some(s);
        }
        let until = Instant::now() + within;
        loop {
            let left = until.checked_duration_since(Instant::now())?;
            match self.rx.recv_timeout(left) {
                Ok(s) if s.topic.starts_with("floe-test-probe/") => continue,
                Ok(s) => return Some(s),
                Err(_) => return None,
            }
        }
    }

    /// Collects `n` messages, failing after `within`.
    pub fn take(&self, n: usize, within: Duration) -> Result<Vec<Seen>> {
        let until = Instant::now() + within;
        let mut got = Vec::with_capacity(n);
        while got.len() < n {
            let left = until.saturating_duration_since(Instant::now());
            match self.next(left) {
                Some(s) => got.push(s),
                None => bail!(
                    "got {} of {n} messages within {within:?}: {got:?}",
                    got.len()
                ),
            }
        }
        Ok(got)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Publishes one message with `mosquitto_pub`.
pub fn publish(port: u16, topic: &str, payload: &str) -> Result<()> {
    let st = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-t",
            topic,
            "-m",
            payload,
        ])
        .status()
        .context("running mosquitto_pub")?;
    if !st.success() {
        bail!("mosquitto_pub failed ({st})");
    }
    Ok(())
}

/// A field of `/proc/<pid>/status` in kB (`VmRSS:`, `VmHWM:`).
pub fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// CPU time (user + system) of a process so far, in seconds (`None` once it is gone).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    Some(ticks as f64 / hz)
}

pub mod agent;
pub mod coordinator;
pub mod fabric;
pub mod kill9;
pub mod net;
pub mod netns;
