//! A fleet of real `floed fabric` processes for the end-to-end tests and the benchmark.
//!
//! Each node is a child process with its own temp data dir; its stdout (JSON lines, one event
//! each) is read by a thread into a bounded log that tests wait on. Nodes are killed when
//! dropped, so a failing test leaves no process behind. Nodes can run inside a network namespace
//! (see [`crate::netns`]) by naming it.

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Most events kept per node; later ones are counted but not kept.
pub const MAX_EVENTS: usize = 200_000;

/// The `floed` binary of this build profile, built once per test process by
/// [`crate::bin`] (same profile and target dir as the tests).
pub fn floed_bin() -> Result<PathBuf> {
    crate::bin("floed")
}

/// How to start one node.
#[derive(Debug, Clone, Default)]
pub struct NodeOpts {
    /// Its data directory (kept between restarts of the same node).
    pub data_dir: PathBuf,
    /// Listen address; loopback TCP on a free port when empty.
    pub listen: Option<String>,
    /// Bootstrap multiaddrs.
    pub bootstrap: Vec<String>,
    /// A signed bundle (`X.floe`) to seed; needs `trust`.
    pub seed: Option<PathBuf>,
    /// A raw file to seed (nodes without a trust store).
    pub seed_raw: Option<PathBuf>,
    /// Chunk size for a raw seed.
    pub chunk_size: Option<u32>,
    /// The trust store (directory holding `trust.cbor`): the node deals in signed bundles.
    pub trust: Option<PathBuf>,
    /// An artifact id to fetch at start.
    pub fetch: Option<String>,
    /// Central-pull mode.
    pub central_pull: bool,
    /// Fault injection: serve corrupted chunks.
    pub fault_corrupt: bool,
    /// Upload slots.
    pub upload_slots: Option<usize>,
    /// Run inside this network namespace.
    pub netns: Option<String>,
    /// Test only: hold what the node reads from TCP this many ms (link delay without netem).
    pub read_delay_ms: Option<u32>,
}

struct Log {
    events: Vec<Value>,
    closed: bool,
}

/// A running `floed fabric` process.
#[derive(Debug)]
pub struct Node {
    child: Child,
    stdin: Option<ChildStdin>,
    log: Arc<(Mutex<Log>, Condvar)>,
    /// The node's peer id.
    pub peer_id: String,
    /// Its first listen address, with `/p2p/<peer id>`.
    pub addr: String,
    /// Its options (to restart it).
    pub opts: NodeOpts,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Log({} events)", self.events.len())
    }
}

impl Node {
    /// Starts a node and waits until it listens.
    pub fn start(opts: NodeOpts) -> Result<Node> {
        let bin = floed_bin()?;
        let mut cmd = match &opts.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        cmd.arg("fabric")
            .arg("--data-dir")
            .arg(&opts.data_dir)
            .args(["--json-events", "--listen"])
            .arg(
                opts.listen
                    .clone()
                    .unwrap_or_else(|| "/ip4/127.0.0.1/tcp/0".into()),
            );
        for b in &opts.bootstrap {
            cmd.args(["--bootstrap", b]);
        }
        if let Some(seed) = &opts.seed {
            cmd.arg("--seed").arg(seed);
        }
        if let Some(seed) = &opts.seed_raw {
            cmd.arg("--seed-raw").arg(seed);
        }
        if let Some(trust) = &opts.trust {
            cmd.arg("--trust").arg(trust);
        }
        if let Some(c) = opts.chunk_size {
            cmd.args(["--chunk-size", &c.to_string()]);
        }
        if let Some(id) = &opts.fetch {
            cmd.args(["--fetch", id]);
        }
        if opts.central_pull {
            cmd.arg("--central-pull");
        }
        if opts.fault_corrupt {
            cmd.arg("--fault-corrupt-chunks");
        }
        if let Some(n) = opts.upload_slots {
            cmd.args(["--upload-slots", &n.to_string()]);
        }
        if let Some(ms) = opts.read_delay_ms {
            cmd.args(["--fault-read-delay-ms", &ms.to_string()]);
        }
        cmd.env(
            "RUST_LOG",
            std::env::var("FLOE_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let stdin = child.stdin.take();
        let log = Arc::new((
            Mutex::new(Log {
                events: Vec::new(),
                closed: false,
            }),
            Condvar::new(),
        ));
        let reader_log = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Ok(value) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                let (lock, cvar) = &*reader_log;
                if let Ok(mut log) = lock.lock() {
                    if log.events.len() < MAX_EVENTS {
                        log.events.push(value);
                    }
                    cvar.notify_all();
                }
            }
            let (lock, cvar) = &*reader_log;
            if let Ok(mut log) = lock.lock() {
                log.closed = true;
            }
            cvar.notify_all();
        });
        let mut node = Node {
            child,
            stdin,
            log,
            peer_id: String::new(),
            addr: String::new(),
            opts,
        };
        let ready = node.wait_for(Duration::from_secs(30), |e| e["event"] == "ready")?;
        node.peer_id = ready["peer_id"].as_str().unwrap_or_default().to_string();
        let listening = node.wait_for(Duration::from_secs(30), |e| e["event"] == "listening")?;
        node.addr = listening["addr"].as_str().unwrap_or_default().to_string();
        Ok(node)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends one command line on stdin.
    pub fn send(&mut self, line: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().ok_or_else(|| anyhow!("stdin closed"))?;
        writeln!(stdin, "{line}").context("writing to the node's stdin")?;
        stdin.flush().context("flushing the node's stdin")
    }

    /// A copy of every event so far.
    pub fn events(&self) -> Vec<Value> {
        self.log
            .0
            .lock()
            .map(|l| l.events.clone())
            .unwrap_or_default()
    }

    /// Waits for the first event (from the start) matching `pred`.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Result<Value> {
        self.wait_for_nth(timeout, 0, pred)
    }

    /// Waits for an event matching `pred` at position `from` or later in the log.
    pub fn wait_for_nth(
        &self,
        timeout: Duration,
        from: usize,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        let (lock, cvar) = &*self.log;
        let mut log = lock.lock().map_err(|_| anyhow!("log poisoned"))?;
        loop {
            if let Some(found) = log.events.iter().skip(from).find(|e| pred(e)) {
                return Ok(found.clone());
            }
            if log.closed {
                bail!("node {} exited before the awaited event", self.peer_id);
            }
            let now = Instant::now();
            if now >= deadline {
                bail!("timed out after {timeout:?} on node {}", self.peer_id);
            }
            log = cvar
                .wait_timeout(log, deadline - now)
                .map_err(|_| anyhow!("log poisoned"))?
                .0;
        }
    }

    /// Number of events logged so far.
    pub fn event_count(&self) -> usize {
        self.log.0.lock().map(|l| l.events.len()).unwrap_or(0)
    }

    /// Asks for a stats event and returns it.
    pub fn stats(&mut self) -> Result<Value> {
        let from = self.event_count();
        self.send("stats")?;
        self.wait_for_nth(Duration::from_secs(10), from, |e| e["event"] == "stats")
    }

    /// Kills the process (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the `complete` event of `id` and returns it.
    pub fn wait_complete(&self, id: &str, timeout: Duration) -> Result<Value> {
        self.wait_for(timeout, |e| e["event"] == "complete" && e["id"] == id)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A signed bundle made with the real `floe` CLI, and the trust store that accepts it.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The `.floe` file.
    pub path: PathBuf,
    /// The trust directory (holding `trust.cbor`).
    pub trust: PathBuf,
    /// The bundle's exact bytes (what every node must rebuild).
    pub bytes: Vec<u8>,
}

fn floe(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new(crate::bin("floe")?)
        .args(args)
        .current_dir(dir)
        .output()
        .context("running floe")?;
    if !out.status.success() {
        bail!(
            "floe {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Makes a release key, a trust store and a signed bundle under `dir` with `floe keys` and
/// `floe artifact build`: the example flow plus a `payload.bin` of `payload_len`
/// pseudo-random bytes (from `seed`), in chunks of `chunk_size`.
pub fn signed_bundle(dir: &Path, payload_len: usize, seed: u64, chunk_size: u32) -> Result<Bundle> {
    std::fs::create_dir_all(dir.join("files"))?;
    write_artifact(&dir.join("files/payload.bin"), payload_len, seed)?;
    floe(dir, &["keys", "gen", "--out", "release"])?;
    floe(dir, &["keys", "gen", "--out", "coord"])?;
    floe(
        dir,
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
    )?;
    let flow = crate::workspace_root().join("examples/temperature-alert.json");
    let flow = flow.to_string_lossy();
    let chunk = chunk_size.to_string();
    floe(
        dir,
        &[
            "artifact",
            "build",
            "--flow",
            &flow,
            "--version",
            "1.0.0",
            "--key",
            "release",
            "--files",
            "files",
            "--release",
            "1",
            "--chunk-size",
            &chunk,
            "--out",
            "a.floe",
        ],
    )?;
    let path = dir.join("a.floe");
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Bundle {
        path,
        trust: dir.join("trust"),
        bytes,
    })
}

/// Writes `len` bytes of deterministic pseudo-random data to `path`.
pub fn write_artifact(path: &Path, len: usize, seed: u64) -> Result<Vec<u8>> {
    let mut x = seed | 1;
    let data: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    std::fs::write(path, &data).with_context(|| format!("writing {}", path.display()))?;
    Ok(data)
}
