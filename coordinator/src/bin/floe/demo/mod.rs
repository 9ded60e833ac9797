//! `floe demo [--devices 12] [--strategy canary-waves]`: the whole product on one machine, with
//! nothing to install.
//!
//! It starts, all on loopback and in one temporary directory: an embedded MQTT broker, a
//! coordinator (`floe serve`, this very binary, as a child with its own data directory and a
//! free port), and N device agents (`floed daemon`, found next to this binary), each with its
//! own data directory, identity, trust store (copied from the coordinator's `DIR/trust`) and a
//! config whose flow reads a simulated DHT22. Then, through the REST client, it does what an
//! operator does: allowlists the devices, creates and publishes the Temperature Alert example,
//! deploys it with short soaks and live progress, then publishes a deliberately broken version
//! (a change node that fails on every message) and deploys it, so that the canary's health
//! gate fails and everything rolls back; it prints both reports.
//!
//! Every child is owned by a [`ChildGuard`] that stops it (SIGTERM, then SIGKILL) when dropped,
//! so an error, a failed step or Ctrl-C (a signal thread sets a flag that every wait loop
//! checks) stops everything the demo started. The temporary directory is removed at the end
//! unless `--keep` is given; the logs of every child are in it.
//!
//! The parts that belong to the coordinator's side of the fabric are isolated in
//! [`fabric_bootstrap`]: the one place that learns the coordinator's libp2p address, which
//! devices need as their bootstrap peer.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use floe_coordinator::client::{
    Client, ClientError, Deployment, DeploymentAction, DeploymentInput, DeviceFilter, DeviceInput,
    Flow, FlowInput, ReportFormat,
};
use floe_coordinator::contract::DeploymentStatus;
use serde_json::{Value, json};

use crate::config::TOKEN_FILE;
use crate::deploy::STRATEGIES;
use crate::watch::{self, Mode, WatchOptions};

mod console;
mod fleet;

/// The example flow the demo deploys.
const EXAMPLE: &str = include_str!("../../../../../examples/temperature-alert.json");
/// The file in the coordinator's data directory that lists its fabric multiaddresses, one per
/// line, each ending in `/p2p/<peer id>` (see [`fabric_bootstrap`]).
pub(crate) const FABRIC_ADDRS_FILE: &str = "fabric-addrs";
/// Most files copied from the coordinator's trust directory, and the largest one.
const MAX_TRUST_FILES: usize = 64;
const MAX_TRUST_FILE_BYTES: u64 = 1024 * 1024;
/// How often wait loops poll.
const POLL: Duration = Duration::from_millis(100);

/// Set when SIGINT or SIGTERM arrives; every wait loop checks it.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Arguments of `floe demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// How many floed processes to start.
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..=64))]
    devices: u32,
    /// The rollout strategy of both deployments.
    #[arg(long, default_value = "canary-waves", value_parser = STRATEGIES)]
    strategy: String,
    /// The soak of every stage (reference units: 3s, 1m …).
    #[arg(long, default_value = "3s")]
    soak: String,
    /// Give up when one deployment takes longer than this many seconds.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(10..=3600))]
    timeout_secs: u64,
    /// Keep the temporary directory (data and logs of every process) instead of removing it.
    #[arg(long)]
    keep: bool,
    /// After the two deployments, keep the fleet and coordinator running, print the web
    /// console's URL and a token, and run until Ctrl-C.
    #[arg(long)]
    console: bool,
}

/// One simulated device of the demo.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DemoDevice {
    /// The device id (the hex of its public key, as floed computes it).
    pub(crate) id: String,
    /// Its data directory (identity, slots, database, trust store).
    pub(crate) data_dir: PathBuf,
    /// Its floed config file.
    pub(crate) config: PathBuf,
    /// Its `/health` port.
    pub(crate) http_port: u16,
    /// Its device type.
    pub(crate) device_type: String,
    /// Its region.
    pub(crate) region: String,
}

/// Everything the demo starts and where: the one structure the steps below share.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DemoPlan {
    /// The temporary root directory.
    pub(crate) root: PathBuf,
    /// Where `floe serve` listens.
    pub(crate) server_listen: SocketAddr,
    /// Its data directory (`api-token`, `trust/`, the database).
    pub(crate) server_data: PathBuf,
    /// The embedded broker's URL, written into the flows.
    pub(crate) broker_url: String,
    /// The coordinator's fabric multiaddresses: every device's bootstrap peers.
    pub(crate) bootstrap: Vec<String>,
    /// The devices.
    pub(crate) devices: Vec<DemoDevice>,
    /// The strategy.
    pub(crate) strategy: String,
    /// The soak of every stage.
    pub(crate) soak: String,
}

/// Device types and regions the demo fleet is spread over, so that canary selection (one per
/// type, then per region) has something to choose from.
const TYPES: [&str; 2] = ["rpi4", "jetson-nano"];
const REGIONS: [&str; 3] = ["eu", "us", "ap"];

/// The floed config of one demo device: loopback listeners, the coordinator as bootstrap peer,
/// short trials so the demo moves in seconds, and the label the deployments select. The demo's
/// devices share one host, whose CPU, memory and disk are not theirs: a busy or full host
/// would make every device report degraded, and the gates (which do not count degraded devices
/// as healthy) would roll back a good version, so they read no /proc (CPU and memory "not
/// available") and mark the disk only near full.
pub(crate) fn device_config(dev: &DemoDevice, plan: &DemoPlan) -> String {
    let quote = |s: &str| toml::Value::String(s.to_string()).to_string();
    let peers: Vec<String> = plan.bootstrap.iter().map(|p| quote(p)).collect();
    format!(
        "data_dir = {data}\n\
         device_type = {ty}\n\
         arch = {arch}\n\
         region = {region}\n\
         listen = [\"/ip4/127.0.0.1/tcp/0\"]\n\
         http_listen = \"127.0.0.1:{port}\"\n\
         bootstrap_peers = [{peers}]\n\
         mdns = false\n\
         heartbeat_interval_ms = 1000\n\
         trust_store = {trust}\n\
         [labels]\n\
         demo = \"floe\"\n\
         [trial]\n\
         min_ready_seconds = 2\n\
         check_interval_ms = 200\n\
         smoke_timeout_ms = 2000\n\
         start_timeout_ms = 3000\n\
         stop_timeout_ms = 500\n\
         [health]\n\
         proc_root = {no_proc}\n\
         disk_degraded_percent = 98\n",
        data = quote(&dev.data_dir.to_string_lossy()),
        ty = quote(&dev.device_type),
        arch = quote(floe_wire::artifact::native_arch()),
        region = quote(&dev.region),
        port = dev.http_port,
        peers = peers.join(", "),
        trust = quote(&dev.data_dir.join("trust").to_string_lossy()),
        no_proc = quote(&dev.data_dir.join("no-proc").to_string_lossy()),
    )
}

fn set_variable(flow: &mut Value, name: &str, value: &str) -> Result<()> {
    let vars = flow
        .get_mut("variables")
        .and_then(Value::as_array_mut)
        .context("the example flow has no variables array")?;
    let var = vars
        .iter_mut()
        .find(|v| v.get("name").and_then(Value::as_str) == Some(name))
        .with_context(|| format!("the example flow has no variable `{name}`"))?;
    var["value"] = Value::String(value.to_string());
    Ok(())
}

/// The Temperature Alert example with a simulated DHT22 read every 500 ms and alerts sent to
/// the demo's broker.
pub(crate) fn demo_flow(broker_url: &str) -> Result<Value> {
    let mut flow: Value = serde_json::from_str(EXAMPLE).context("parsing the example flow")?;
    set_variable(&mut flow, "simulate", "true")?;
    set_variable(&mut flow, "interval", "500ms")?;
    set_variable(&mut flow, "broker", broker_url)?;
    Ok(flow)
}

/// The next version, deliberately broken: a change node between the sensor and the threshold
/// writes through a number (`payload.temperature` is a number, so `payload.temperature.celsius`
/// cannot be set) and fails on every message. The flow validates, so it publishes; on a device
/// its error rate trips the health check and the canary gate.
pub(crate) fn broken_flow(broker_url: &str) -> Result<Value> {
    let mut flow = demo_flow(broker_url)?;
    let nodes = flow
        .get_mut("nodes")
        .and_then(Value::as_array_mut)
        .context("the example flow has no nodes array")?;
    nodes.push(json!({
        "id": "n_convert", "type": "change", "name": "Convert (broken)",
        "config": {"rules": [{"action": "set", "property": "payload.temperature.celsius",
                              "value": "celsius", "value_type": "literal"}]},
        "x": 200, "y": 300
    }));
    flow["connections"] = json!([
        {"source": "n1", "target": "n_convert"},
        {"source": "n_convert", "target": "n2"},
        {"source": "n2", "target": "n3"}
    ]);
    Ok(flow)
}

/// The deployment config of the demo: the strategy's stages with `soak` each, automatic
/// rollback on, and short timeouts so a stuck step fails the demo in seconds, not minutes.
pub(crate) fn deploy_config(strategy: &str, soak: &str, devices: usize) -> Value {
    let mut c = json!({
        "auto_rollback": true,
        "health_check": true,
        "require_approval": false,
        "timeout": "60s",
        "offline_grace": "10s",
        "failure_threshold": 20
    });
    match strategy {
        "canary-waves" => {
            c["canary_percentage"] = json!(10);
            c["canary_delay"] = json!(soak);
            c["waves"] = json!([
                {"name": "wave-1", "percentage": 50, "soak": soak, "failure_threshold": 20},
                {"name": "wave-2", "percentage": 50, "soak": soak, "failure_threshold": 20}
            ]);
        }
        "canary" => {
            c["canary_percentage"] = json!(10);
            c["canary_delay"] = json!(soak);
        }
        "rolling" => {
            c["batch_size"] = json!(devices.div_ceil(3).max(1));
            c["batch_delay"] = json!(soak);
        }
        "blue-green" => {
            // Stage everywhere, then switch the canary and two waves (003), each with `soak`.
            c["switch_delay"] = json!(soak);
            c["canary_percentage"] = json!(10);
            c["canary_delay"] = json!(soak);
            c["waves"] = json!([
                {"name": "wave-1", "percentage": 50, "soak": soak, "failure_threshold": 20},
                {"name": "wave-2", "percentage": 50, "soak": soak, "failure_threshold": 20}
            ]);
        }
        "steps" => {
            c["step_soak"] = json!(soak);
        }
        _ => {}
    }
    c
}

/// The coordinator's fabric multiaddresses, which every device gets as bootstrap peers.
///
/// The coordinator writes them to `DIR/fabric-addrs` (one multiaddress ending in
/// `/p2p/<peer id>` per line) once its swarm listens; this waits up to `wait` for a non-empty
/// file. This is the single place to change if the server exposes its address another way
/// (for example a field of `GET /healthz`).
pub(crate) fn fabric_bootstrap(server_data: &Path, wait: Duration) -> Result<Vec<String>> {
    let path = server_data.join(FABRIC_ADDRS_FILE);
    let until = Instant::now() + wait;
    loop {
        check_interrupted()?;
        if let Ok(text) = std::fs::read_to_string(&path) {
            let addrs: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect();
            if let Some(bad) = addrs
                .iter()
                .find(|a| !a.starts_with('/') || !a.contains("/p2p/"))
            {
                bail!(
                    "{}: `{bad}` is not a multiaddress ending in /p2p/<peer id>",
                    path.display()
                );
            }
            if !addrs.is_empty() {
                return Ok(addrs);
            }
        }
        if Instant::now() >= until {
            bail!(
                "the coordinator did not publish its fabric address in {} within {wait:?}; \
                 devices need it as their bootstrap peer",
                path.display()
            );
        }
        std::thread::sleep(POLL);
    }
}

/// A child process that is stopped when dropped: SIGTERM, up to 3 s to exit, then SIGKILL.
#[derive(Debug)]
pub(crate) struct ChildGuard {
    name: String,
    child: Child,
    log: PathBuf,
}

impl ChildGuard {
    /// Spawns `cmd` with standard output and error appended to `log`.
    pub(crate) fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<ChildGuard> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening log file {}", log.display()))?;
        let err = out
            .try_clone()
            .with_context(|| format!("opening log file {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
        Ok(ChildGuard {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
        })
    }

    /// Fails with the end of the log when the process has already exited.
    pub(crate) fn check_running(&mut self) -> Result<()> {
        if let Ok(Some(status)) = self.child.try_wait() {
            bail!(
                "{} exited ({status}); the end of its log {}:\n{}",
                self.name,
                self.log.display(),
                log_tail(&self.log, 20)
            );
        }
        Ok(())
    }

    /// The process id.
    pub(crate) fn id(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last `n` lines of a log file (bounded read of the last 16 KiB).
fn log_tail(path: &Path, n: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return "(no log)".to_string();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
    let mut buf = Vec::new();
    let _ = f.take(16 * 1024).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

/// Sets [`INTERRUPTED`] on SIGINT or SIGTERM, from a thread with its own small runtime, so that
/// the demo unwinds and its guards stop every child.
fn watch_signals() {
    let spawned = std::thread::Builder::new()
        .name("demo-signals".into())
        .spawn(|| {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let Ok(mut term) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                else {
                    return;
                };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                INTERRUPTED.store(true, Ordering::Relaxed);
                eprintln!("floe demo: stopping (signal received)");
            });
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no signal thread: Ctrl-C will not stop the demo's children cleanly");
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .context("finding a free loopback port")?
        .port())
}

/// `floed` next to this binary.
fn floed_path() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the floe binary")?;
    let path = exe
        .parent()
        .map(|d| d.join("floed"))
        .context("the floe binary has no parent directory")?;
    if !path.is_file() {
        build_floed(&exe)?;
    }
    if !path.is_file() {
        bail!(
            "floed was not found next to floe ({}); build it with `cargo build -p floe-runtime --bin floed`",
            path.display()
        );
    }
    Ok(path)
}

/// Under `cargo run` (which builds only `floe`), builds the companion `floed` with the same
/// cargo, profile and target directory, so the README's one command works on a fresh clone.
/// Outside cargo it does nothing and the caller says how to build floed.
fn build_floed(exe: &Path) -> Result<()> {
    let (Some(cargo), Some(manifest_dir)) = (
        std::env::var_os("CARGO"),
        std::env::var_os("CARGO_MANIFEST_DIR"),
    ) else {
        return Ok(());
    };
    let Some(profile_dir) = exe.parent() else {
        return Ok(());
    };
    let Some(target_dir) = profile_dir.parent() else {
        return Ok(());
    };
    outln!("building floed next to floe (first run only) ...");
    let mut cmd = Command::new(cargo);
    cmd.current_dir(manifest_dir)
        .args([
            "build",
            "-q",
            "-p",
            "floe-runtime",
            "--bin",
            "floed",
            "--target-dir",
        ])
        .arg(target_dir);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().context("running cargo to build floed")?;
    if !status.success() {
        bail!("building floed failed ({status})");
    }
    Ok(())
}

/// Copies the regular files of the coordinator's trust directory into a device's.
fn copy_trust(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    let entries = std::fs::read_dir(from)
        .with_context(|| format!("reading trust directory {}", from.display()))?;
    let mut copied = 0usize;
    for entry in entries {
        let entry = entry.with_context(|| format!("reading trust directory {}", from.display()))?;
        let meta = entry.metadata()?;
        if !meta.is_file() {
            continue;
        }
        if meta.len() > MAX_TRUST_FILE_BYTES {
            bail!("trust file {} is larger than 1 MiB", entry.path().display());
        }
        copied += 1;
        if copied > MAX_TRUST_FILES {
            bail!(
                "trust directory {} has more than {MAX_TRUST_FILES} files",
                from.display()
            );
        }
        std::fs::copy(entry.path(), to.join(entry.file_name()))
            .with_context(|| format!("copying {}", entry.path().display()))?;
    }
    if copied == 0 {
        bail!("trust directory {} is empty", from.display());
    }
    Ok(())
}

/// Waits until `f` returns `Some`, checking the guards and the interrupt flag.
fn wait_for<T>(
    what: &str,
    limit: Duration,
    guards: &mut [&mut ChildGuard],
    mut f: impl FnMut() -> Option<T>,
) -> Result<T> {
    let until = Instant::now() + limit;
    loop {
        check_interrupted()?;
        for g in guards.iter_mut() {
            g.check_running()?;
        }
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() >= until {
            bail!("{what}: not done within {limit:?}");
        }
        std::thread::sleep(POLL);
    }
}

fn api<T>(r: Result<T, ClientError>, what: &str) -> Result<T> {
    r.map_err(anyhow::Error::new)
        .with_context(|| what.to_string())
}

pub(crate) fn run(args: DemoArgs) -> Result<ExitCode> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,rumqttd=off")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    // Refuse a bad soak before starting anything.
    floe_rollout::parse_duration(&args.soak).with_context(|| format!("--soak `{}`", args.soak))?;
    watch_signals();
    let started = Instant::now();
    let tmp = tempfile::Builder::new()
        .prefix("floe-demo-")
        .tempdir()
        .context("creating the demo's temporary directory")?;
    let root = tmp.path().to_path_buf();
    let result = demo(&args, &root, started);
    if args.keep {
        let kept = tmp.keep();
        outln!("kept {} (data and logs of every process)", kept.display());
    } else if result.is_err() {
        outln!(
            "logs were in {} (removed; --keep keeps them)",
            root.display()
        );
    }
    result
}

fn demo(args: &DemoArgs, root: &Path, started: Instant) -> Result<ExitCode> {
    let fleet::Fleet {
        broker: _broker,
        mut server,
        daemons,
        client,
        plan,
    } = fleet::start(args, root)?;
    let want = plan.devices.len();

    // Version 1: the example flow.
    let v1 = FlowInput {
        name: "Temperature Alert".into(),
        description: "Simulated DHT22 every 500 ms; alerts above 30 °C over MQTT".into(),
        tags: vec!["temperature".into(), "demo".into()],
        definition: demo_flow(&plan.broker_url)?,
    };
    let flow: Flow = api(client.create_flow(&v1), "creating the flow")?.json()?;
    let flow: Flow = api(client.publish_flow(&flow.id), "publishing the flow")?.json()?;
    outln!("published {} v{} ({})", flow.id, flow.version, flow.name);
    let ids: Vec<String> = plan.devices.iter().map(|d| d.id.clone()).collect();
    let first = deploy_and_watch(
        &client,
        &plan,
        &flow.id,
        &ids,
        args.timeout_secs,
        &mut server,
    )?;

    // Version 2: deliberately broken.
    let draft: Flow = api(client.new_flow_version(&flow.id), "making version 2")?.json()?;
    let v2 = FlowInput {
        name: "Temperature Alert".into(),
        description: "Deliberately broken: the convert node fails on every message".into(),
        tags: vec!["temperature".into(), "demo".into()],
        definition: broken_flow(&plan.broker_url)?,
    };
    api(client.update_flow(&draft.id, &v2), "editing version 2")?;
    let broken: Flow = api(client.publish_flow(&draft.id), "publishing version 2")?.json()?;
    outln!(
        "published {} v{} (deliberately broken: fails on every message)",
        broken.id,
        broken.version
    );
    let second = deploy_and_watch(
        &client,
        &plan,
        &broken.id,
        &ids,
        args.timeout_secs,
        &mut server,
    )?;

    // Where every device ended up.
    let devices = api(
        client
            .devices(
                &DeviceFilter {
                    labels: vec!["demo=floe".into()],
                    ..DeviceFilter::default()
                },
                None,
            )
            .all(),
        "listing the devices",
    )?;
    let release_of = |d: &floe_coordinator::client::Device| d.installed.as_ref().map(|i| i.release);
    let on_v1 = devices
        .iter()
        .filter(|d| release_of(d) == flow.artifact.as_ref().map(|a| a.release))
        .count();
    outln!();
    outln!(
        "demo done in {:.1}s: v{} {} ({}/{} devices), v{} {}; {on_v1}/{want} devices run v{} now",
        started.elapsed().as_secs_f64(),
        flow.version,
        first.status,
        first.completed_targets,
        first.total_targets,
        broken.version,
        second.status,
        flow.version
    );
    let ok = first.status == DeploymentStatus::Completed
        && matches!(
            second.status,
            DeploymentStatus::RolledBack | DeploymentStatus::Failed
        )
        && on_v1 == want;
    if args.console {
        console::hold(&client, &plan.server_data, &mut server)?;
    }
    drop(daemons);
    drop(server);
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Creates, starts and watches one deployment to every device, then prints its report.
fn deploy_and_watch(
    client: &Client,
    plan: &DemoPlan,
    flow_id: &str,
    ids: &[String],
    timeout_secs: u64,
    server: &mut ChildGuard,
) -> Result<Deployment> {
    let body = DeploymentInput {
        flow_id: flow_id.to_string(),
        strategy: plan.strategy.clone(),
        target_devices: Some(ids.to_vec()),
        selector: None,
        config: serde_json::from_value(deploy_config(&plan.strategy, &plan.soak, ids.len()))
            .context("the demo's deployment config")?,
    };
    let d: Deployment = api(client.create_deployment(&body), "creating the deployment")?.json()?;
    api(
        client.deployment_action(&d.id, DeploymentAction::Start),
        "starting the deployment",
    )?;
    outln!("\ndeployment {} ({}) started", d.id, plan.strategy);
    use std::io::IsTerminal;
    let opts = WatchOptions {
        interval: watch::DEFAULT_INTERVAL,
        mode: if std::io::stdout().is_terminal() {
            Mode::Bars
        } else {
            Mode::Lines
        },
        limit: Some(Duration::from_secs(timeout_secs)),
        interrupted: Some(&INTERRUPTED),
        live: true,
    };
    let result = watch::watch(client, &d.id, &opts);
    server.check_running()?;
    let done = result?;
    outln!("{}", watch::final_line(&done));
    let report = api(
        client.deployment_report(&d.id, ReportFormat::Markdown),
        "fetching the report",
    )?;
    outln!();
    crate::config::print_raw(&report.text);
    Ok(done)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn plan(root: &Path) -> DemoPlan {
        DemoPlan {
            root: root.to_path_buf(),
            server_listen: "127.0.0.1:7300".parse().unwrap(),
            server_data: root.join("coordinator"),
            broker_url: "mqtt://127.0.0.1:1883".into(),
            bootstrap: vec![
                "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWLNfzV5kHGmsKDfN1mYQ3s8hExCMFD9S3bQ3gy8G6m8yD"
                    .into(),
            ],
            devices: Vec::new(),
            strategy: "canary-waves".into(),
            soak: "3s".into(),
        }
    }

    /// The TOML and the values the demo's devices need. That `floed` accepts the file (unknown
    /// keys are refused there) is proved by the demo's end-to-end test, which starts real
    /// daemons with it; the coordinator does not link the device crate.
    #[test]
    fn device_configs_carry_each_devices_settings() {
        let dir = tempfile::tempdir().unwrap();
        let p = plan(dir.path());
        let dev = DemoDevice {
            id: "ab".repeat(32),
            data_dir: dir.path().join("devices/dev \"00\""),
            config: dir.path().join("devices/dev-00/floed.toml"),
            http_port: 9111,
            device_type: "rpi4".into(),
            region: "eu".into(),
        };
        let text = device_config(&dev, &p);
        let cfg: toml::Table = text.parse().unwrap_or_else(|e| panic!("{e}\n{text}"));
        let s = |k: &str| cfg[k].as_str().unwrap().to_string();
        assert_eq!(s("data_dir"), dev.data_dir.to_string_lossy());
        assert_eq!(s("device_type"), "rpi4");
        assert_eq!(s("region"), "eu");
        assert_eq!(cfg["labels"]["demo"].as_str(), Some("floe"));
        let peers: Vec<&str> = cfg["bootstrap_peers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(peers, p.bootstrap);
        assert_eq!(s("http_listen"), "127.0.0.1:9111");
        assert_eq!(
            s("trust_store"),
            dev.data_dir.join("trust").to_string_lossy()
        );
        assert_eq!(cfg["trial"]["min_ready_seconds"].as_integer(), Some(2));
    }

    #[test]
    fn both_demo_flows_pass_complete_validation() {
        let good = demo_flow("mqtt://127.0.0.1:1999").unwrap();
        let bad = broken_flow("mqtt://127.0.0.1:1999").unwrap();
        for flow in [&good, &bad] {
            let bytes = serde_json::to_vec(flow).unwrap();
            floe_flow::check(&bytes, floe_flow::Level::Complete)
                .unwrap_or_else(|e| panic!("{}", e.report()));
            floe_flow::validate::compile(&bytes, &[]).unwrap_or_else(|e| panic!("{}", e.report()));
        }
        let var = |f: &Value, n: &str| {
            f["variables"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == n)
                .unwrap()["value"]
                .clone()
        };
        assert_eq!(var(&good, "simulate"), json!("true"));
        assert_eq!(var(&good, "broker"), json!("mqtt://127.0.0.1:1999"));
        assert_eq!(bad["nodes"].as_array().unwrap().len(), 4);
    }

    #[tokio::test]
    async fn the_broken_flow_fails_on_every_message() {
        use floe_flow::engine::{Engine, EngineOptions};
        let bad = broken_flow("mqtt://127.0.0.1:1").unwrap();
        let compiled =
            floe_flow::validate::compile(&serde_json::to_vec(&bad).unwrap(), &[]).unwrap();
        let running = Engine::start(compiled, EngineOptions::default()).unwrap();
        tokio::time::sleep(Duration::from_millis(1600)).await;
        let report = running.stop(Duration::from_secs(2)).await;
        let convert = report.metrics.node("n_convert").unwrap();
        let readings = report.metrics.node("n1").unwrap().msgs_out;
        assert!(
            readings >= 2,
            "the simulated sensor produced {readings} readings"
        );
        assert_eq!(convert.msgs_out, 0, "nothing passes the broken node");
        assert!(convert.errors >= 2, "errors: {}", convert.errors);
    }

    #[test]
    fn deploy_configs_per_strategy() {
        let c = deploy_config("canary-waves", "3s", 12);
        assert_eq!(c["canary_delay"], json!("3s"));
        assert_eq!(c["waves"].as_array().unwrap().len(), 2);
        assert_eq!(c["auto_rollback"], json!(true));
        assert_eq!(deploy_config("rolling", "2s", 12)["batch_size"], json!(4));
        assert_eq!(deploy_config("rolling", "2s", 1)["batch_size"], json!(1));
        assert_eq!(
            deploy_config("blue-green", "2s", 3)["switch_delay"],
            json!("2s")
        );
        let bg = deploy_config("blue-green", "2s", 3);
        assert_eq!(bg["canary_delay"], json!("2s"));
        assert_eq!(bg["waves"][1]["soak"], json!("2s"));
        assert!(deploy_config("all-at-once", "2s", 3).get("waves").is_none());
        // Every strategy's config names only keys of the contract.
        let known = [
            "batch_size",
            "batch_delay",
            "failure_threshold",
            "canary_percentage",
            "canary_delay",
            "timeout",
            "switch_delay",
            "auto_rollback",
            "health_check",
            "require_approval",
            "quorum",
            "offline_grace",
            "waves",
            "max_parallel",
            "step_soak",
        ];
        for s in STRATEGIES {
            for k in deploy_config(s, "1s", 5).as_object().unwrap().keys() {
                assert!(known.contains(&k.as_str()), "{s}: unknown key {k}");
            }
        }
    }

    #[test]
    fn fabric_address_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let err = fabric_bootstrap(dir.path(), Duration::from_millis(150)).unwrap_err();
        assert!(err.to_string().contains(FABRIC_ADDRS_FILE), "{err}");
        let addr =
            "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWLNfzV5kHGmsKDfN1mYQ3s8hExCMFD9S3bQ3gy8G6m8yD";
        std::fs::write(dir.path().join(FABRIC_ADDRS_FILE), format!("\n{addr}\n")).unwrap();
        assert_eq!(
            fabric_bootstrap(dir.path(), Duration::from_millis(150)).unwrap(),
            vec![addr.to_string()]
        );
        std::fs::write(dir.path().join(FABRIC_ADDRS_FILE), "127.0.0.1:4001\n").unwrap();
        assert!(
            fabric_bootstrap(dir.path(), Duration::from_millis(150))
                .unwrap_err()
                .to_string()
                .contains("not a multiaddress")
        );
    }

    #[test]
    fn trust_files_are_copied_with_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("trust");
        std::fs::create_dir_all(from.join("subdir")).unwrap();
        assert!(
            copy_trust(&from, &dir.path().join("a"))
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        std::fs::write(from.join("release.pub"), b"k").unwrap();
        copy_trust(&from, &dir.path().join("b")).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("b/release.pub")).unwrap(),
            b"k"
        );
        assert!(!dir.path().join("b/subdir").exists());
    }

    #[test]
    fn a_guard_stops_its_child_on_drop_and_reports_an_early_exit() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let guard = ChildGuard::spawn("sleeper", cmd, &dir.path().join("s.log")).unwrap();
        let pid = nix::unistd::Pid::from_raw(i32::try_from(guard.id()).unwrap());
        let t = Instant::now();
        drop(guard);
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "SIGTERM should end sleep at once"
        );
        assert_eq!(
            nix::sys::signal::kill(pid, None),
            Err(nix::errno::Errno::ESRCH),
            "the child is gone and reaped"
        );

        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo going away; exit 3"]);
        let mut guard = ChildGuard::spawn("quitter", cmd, &dir.path().join("q.log")).unwrap();
        let err = wait_for("never", Duration::from_secs(5), &mut [&mut guard], || {
            None::<()>
        })
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("quitter exited") && text.contains("going away"),
            "{text}"
        );
    }
}
