//! A loopback fleet for the coordinator's end-to-end tests and the fleet benchmark: one real
//! `floe serve` (REST API, SQLite, fabric) and N real `floed daemon` processes that bootstrap to
//! it, each with its own temp data directory, identity and trust store, running flows with
//! simulated sensors and publishing to a real Mosquitto.
//!
//! Unlike the rest of this library, these helpers panic instead of returning errors: each call
//! is a step of a test, and a step that cannot happen must fail that test on the spot with the
//! step named, as an `assert!` would. Processes are killed on drop, so a failing test leaves
//! none behind.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use floe_coordinator::client::{Client, Deployment, DeviceInput, FlowInput, Target};
use serde_json::{Value, json};

/// The example flow every test deploys.
const EXAMPLE: &str = include_str!("../../examples/temperature-alert.json");

/// A `floe serve` process.
#[derive(Debug)]
pub struct Coordinator {
    child: Option<Child>,
    /// Its data directory.
    pub dir: PathBuf,
    /// REST port.
    pub port: u16,
    /// Fabric port (fixed, so a restarted coordinator is found at the same address).
    pub fabric_port: u16,
    /// Authenticated client.
    pub client: Client,
    /// The fabric multiaddrs devices bootstrap to.
    pub bootstrap: Vec<String>,
    /// `--republish`: how often the outbox is posted on gossip again.
    pub republish: String,
    /// `--offline-after`: how long a silent device stays online.
    pub offline_after: String,
    /// Further `floe serve` arguments.
    pub extra: Vec<String>,
}

impl Coordinator {
    /// Starts `floe serve` under `root/coordinator` and waits until the API answers and the
    /// fabric address is written.
    pub fn start(root: &Path) -> Coordinator {
        Coordinator::start_with_republish(root, "500ms")
    }

    /// Like [`Coordinator::start`], with `--republish` set to `republish` (a long one leaves
    /// devices to get their directives from the direct answers to their reports).
    pub fn start_with_republish(root: &Path, republish: &str) -> Coordinator {
        Coordinator::start_configured(root, republish, "3s")
    }

    /// Like [`Coordinator::start`], with `--republish` and `--offline-after` given (a fleet
    /// that reports every 30 s needs a longer offline time than the tests' 3 s).
    pub fn start_configured(root: &Path, republish: &str, offline_after: &str) -> Coordinator {
        Coordinator::start_with_args(root, republish, offline_after, &[])
    }

    /// Like [`Coordinator::start_configured`], with further `floe serve` arguments
    /// (`--max-connections 8`).
    pub fn start_with_args(
        root: &Path,
        republish: &str,
        offline_after: &str,
        extra: &[&str],
    ) -> Coordinator {
        let dir = root.join("coordinator");
        let port = crate::net::free_port().unwrap();
        let fabric_port = crate::net::free_port().unwrap();
        let extra: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
        let child = spawn_server(&dir, port, fabric_port, republish, offline_after, &extra);
        let anon = Client::new(&format!("http://127.0.0.1:{port}"), None).unwrap();
        wait("the coordinator API", Duration::from_secs(60), || {
            anon.healthz().ok()
        });
        let token = std::fs::read_to_string(dir.join("api-token")).unwrap();
        let client = Client::new(
            &format!("http://127.0.0.1:{port}"),
            Some(token.trim().into()),
        )
        .unwrap();
        let bootstrap = read_addrs(&dir);
        Coordinator {
            child: Some(child),
            dir,
            port,
            fabric_port,
            client,
            bootstrap,
            republish: republish.to_string(),
            offline_after: offline_after.to_string(),
            extra,
        }
    }

    /// The REST API's base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The API token the coordinator wrote.
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.dir.join("api-token"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// The process id of the running coordinator.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the coordinator with SIGKILL, as a crash or power cut would.
    pub fn kill9(&mut self) {
        kill9(&mut self.child);
    }

    /// Starts it again on the same data directory and ports.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "kill it first");
        let _ = std::fs::remove_file(self.dir.join("fabric-addrs"));
        self.child = Some(spawn_server(
            &self.dir,
            self.port,
            self.fabric_port,
            &self.republish,
            &self.offline_after,
            &self.extra,
        ));
        let client = &self.client;
        wait(
            "the restarted coordinator API",
            Duration::from_secs(60),
            || client.healthz().ok(),
        );
        self.bootstrap = read_addrs(&self.dir);
    }

    /// Creates and publishes a flow; returns its id.
    pub fn publish(&self, name: &str, definition: Value) -> String {
        let flow: Value = self
            .client
            .create_flow(&FlowInput {
                name: name.into(),
                description: String::new(),
                tags: vec!["e2e".into()],
                definition,
            })
            .unwrap()
            .json()
            .unwrap();
        let id = flow["id"].as_str().unwrap().to_string();
        self.client.publish_flow(&id).unwrap();
        id
    }

    /// Makes the next version of a published flow with `definition`, publishes it, returns
    /// its id.
    pub fn publish_next(&self, from: &str, definition: Value) -> String {
        let draft: Value = self.client.new_flow_version(from).unwrap().json().unwrap();
        let id = draft["id"].as_str().unwrap().to_string();
        self.client
            .update_flow(
                &id,
                &FlowInput {
                    name: draft["name"].as_str().unwrap().into(),
                    description: String::new(),
                    tags: vec!["e2e".into()],
                    definition,
                },
            )
            .unwrap();
        self.client.publish_flow(&id).unwrap();
        id
    }

    /// Creates and starts a deployment; returns its id.
    pub fn deploy(&self, flow: &str, strategy: &str, devices: &[&Device], config: Value) -> String {
        let ids: Vec<&str> = devices.iter().map(|d| d.id.as_str()).collect();
        let d: Value = self
            .client
            .create_deployment(
                &serde_json::from_value(json!({
                    "flow_id": flow, "strategy": strategy, "target_devices": ids, "config": config
                }))
                .unwrap(),
            )
            .unwrap()
            .json()
            .unwrap();
        let id = d["id"].as_str().unwrap().to_string();
        self.client
            .deployment_action(&id, floe_coordinator::client::DeploymentAction::Start)
            .unwrap();
        id
    }

    /// The deployment as the API shows it.
    pub fn deployment(&self, id: &str) -> Deployment {
        self.client.get_deployment(id).unwrap().json().unwrap()
    }

    /// Every target of the deployment, in plan order (following the pages).
    pub fn targets(&self, id: &str) -> Vec<Target> {
        self.client.targets(id, None).all().unwrap()
    }

    /// Deploys `flow` to `devices` all at once and waits until it has completed (the fleet's
    /// known-good first version, before the version a test breaks).
    pub fn deploy_completed(&self, flow: &str, devices: &[&Device]) {
        let done = self.wait_done(
            &self.deploy(flow, "all-at-once", devices, json!({"timeout": "60s"})),
            Duration::from_secs(120),
        );
        assert_eq!(
            done.status.as_str(),
            "completed",
            "{:?}",
            done.status_reason
        );
    }

    /// Waits until the deployment is terminal.
    pub fn wait_done(&self, id: &str, limit: Duration) -> Deployment {
        let until = Instant::now() + limit;
        loop {
            if let Ok(r) = self.client.get_deployment(id)
                && let Ok(d) = r.json::<Deployment>()
                && d.is_terminal()
            {
                return d;
            }
            assert!(
                Instant::now() < until,
                "deployment {id} not finished within {limit:?}: {}",
                self.client
                    .get_deployment(id)
                    .map(|r| r.text)
                    .unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs `floe enroll-token create --join --out <out>` against this coordinator (the CLI
    /// as an operator runs it) and returns the join string it wrote.
    pub fn join_file(&self, out: &Path, ttl: &str) -> String {
        let run = Command::new(crate::bin("floe").unwrap())
            .args(["enroll-token", "create", "--join", "--ttl", ttl, "--out"])
            .arg(out)
            .args(["--server", &self.url(), "--token", &self.token()])
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "floe enroll-token create --join failed: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        std::fs::read_to_string(out).unwrap().trim().to_string()
    }

    /// The registry's view of a device.
    pub fn device(&self, id: &str) -> Value {
        self.client.get_device(id).unwrap().json().unwrap()
    }

    /// Waits until the registry shows `n` devices online.
    pub fn wait_online(&self, devices: &[&Device], limit: Duration) {
        wait("devices online", limit, || {
            devices
                .iter()
                .all(|d| self.device(&d.id)["online"] == json!(true))
                .then_some(())
        });
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Kills a child with SIGKILL and reaps it, if it runs.
fn kill9(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

fn spawn_server(
    dir: &Path,
    port: u16,
    fabric_port: u16,
    republish: &str,
    offline_after: &str,
    extra: &[String],
) -> Child {
    std::fs::create_dir_all(dir).unwrap();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.with_extension("log"))
        .unwrap();
    Command::new(crate::bin("floe").unwrap())
        .arg("serve")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir)
        .args([
            "--fabric-listen",
            &format!("/ip4/127.0.0.1/tcp/{fabric_port}"),
            "--offline-after",
            offline_after,
            "--republish",
            republish,
        ])
        .args(extra)
        // Fresh devices have nothing to roll back to and may not report disk figures: the
        // harness records the pre-flight unless a test asks for `--preflight enforce`.
        .args(if extra.iter().any(|a| a == "--preflight") {
            &[][..]
        } else {
            &["--preflight", "warn"][..]
        })
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap()
}

fn read_addrs(dir: &Path) -> Vec<String> {
    wait(
        "the coordinator's fabric address",
        Duration::from_secs(30),
        || {
            let text = std::fs::read_to_string(dir.join("fabric-addrs")).ok()?;
            let addrs: Vec<String> = text.lines().map(str::to_string).collect();
            (!addrs.is_empty()).then_some(addrs)
        },
    )
}

/// A `floed daemon` process.
#[derive(Debug)]
pub struct Device {
    child: Option<Child>,
    /// The program and leading arguments that run `floed` (a `qemu-<arch>` line for a cross
    /// build); `None` runs the host build.
    launcher: Option<Vec<std::ffi::OsString>>,
    /// The device id (hex of its public key).
    pub id: String,
    /// Its data directory.
    pub data: PathBuf,
    /// Its config file.
    pub config: PathBuf,
}

impl Device {
    /// Creates a device under `root/devices/<name>`, allowlists its key at the coordinator and
    /// starts its daemon.
    pub fn start(coord: &Coordinator, root: &Path, name: &str, region: &str) -> Device {
        Device::start_with(coord, root, name, region, "")
    }

    /// [`Device::start`] with `extra` appended to its `floed.toml` (for example a `[vars]`
    /// table of local values).
    pub fn start_with(
        coord: &Coordinator,
        root: &Path,
        name: &str,
        region: &str,
        extra: &str,
    ) -> Device {
        let data = root.join("devices").join(name);
        std::fs::create_dir_all(data.join("trust")).unwrap();
        let key = floe_wire::identity::load_or_generate(&data).unwrap();
        let id = floe_wire::identity::device_id(&key);
        for entry in std::fs::read_dir(coord.dir.join("trust")).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), data.join("trust").join(entry.file_name())).unwrap();
        }
        // The devices of a test share this host: their whole-device CPU and memory figures
        // would be the host's (a CI runner at 100 % while it compiles, which floed rates
        // degraded, and gates do not count degraded devices as healthy). Each gets a /proc of
        // a device at rest instead: its CPU is unknown (the counters never move) and a
        // quarter of its memory is in use (so the pre-flight's memory item has a figure).
        let proc_root = data.join("host-proc");
        std::fs::create_dir_all(&proc_root).unwrap();
        std::fs::write(proc_root.join("stat"), "cpu  100 0 100 800 0 0 0 0 0 0\n").unwrap();
        std::fs::write(
            proc_root.join("meminfo"),
            "MemTotal:        4000000 kB\nMemFree:         2000000 kB\nMemAvailable:    3000000 kB\n",
        )
        .unwrap();
        let quote = |s: &str| toml_string(s);
        let peers: Vec<String> = coord.bootstrap.iter().map(|p| quote(p)).collect();
        let config = data.join("floed.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = {data}\ndevice_type = \"rpi4\"\narch = {arch}\nregion = {region}\n\
                 listen = [\"/ip4/127.0.0.1/tcp/0\"]\nhttp_listen = \"127.0.0.1:{port}\"\n\
                 bootstrap_peers = [{peers}]\nmdns = false\nheartbeat_interval_ms = 500\n\
                 trust_store = {trust}\n[labels]\ne2e = \"yes\"\n[trial]\nmin_ready_seconds = 2\n\
                 check_interval_ms = 200\nsmoke_timeout_ms = 1500\nstart_timeout_ms = 3000\n\
                 stop_timeout_ms = 500\n{health}{extra}",
                data = quote(&data.to_string_lossy()),
                arch = quote(floe_wire::artifact::native_arch()),
                region = quote(region),
                // The host's disk is not theirs either: marked degraded only near full. A test
                // that sets `[health]` keeps its own.
                health = if extra.contains("[health]") {
                    String::new()
                } else {
                    format!(
                        "[health]\nproc_root = {}\ndisk_degraded_percent = 98\n",
                        quote(&proc_root.to_string_lossy())
                    )
                },
                port = crate::net::free_port().unwrap(),
                peers = peers.join(", "),
                trust = quote(&data.join("trust").to_string_lossy()),
            ),
        )
        .unwrap();
        coord
            .client
            .allow_device(&DeviceInput {
                id: id.clone(),
                public_key: id.clone(),
                device_type: Some("rpi4".into()),
                region: Some(region.into()),
                labels: [("e2e".to_string(), "yes".to_string())].into(),
            })
            .unwrap();
        let mut d = Device {
            child: None,
            launcher: None,
            id,
            data,
            config,
        };
        d.restart();
        d
    }

    /// Starts the daemon of a device configured some other way (`floed join`): `config` names
    /// `data`, where its identity already is.
    pub fn start_configured(data: &Path, config: &Path) -> Device {
        Device::start_launched(None, data, config)
    }

    /// Like [`Device::start_configured`], running `floed` through `launcher` (for example
    /// `["qemu-arm", "-L", "/usr/arm-linux-gnueabihf", "<floed>"]`) when given.
    pub fn start_launched(
        launcher: Option<Vec<std::ffi::OsString>>,
        data: &Path,
        config: &Path,
    ) -> Device {
        let key = floe_wire::identity::load_or_generate(data).unwrap();
        let mut d = Device {
            child: None,
            launcher,
            id: floe_wire::identity::device_id(&key),
            data: data.to_path_buf(),
            config: config.to_path_buf(),
        };
        d.restart();
        d
    }

    /// The process id of the running daemon.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the daemon with SIGKILL (the device goes offline).
    pub fn kill9(&mut self) {
        kill9(&mut self.child);
    }

    /// Starts the daemon (again).
    pub fn restart(&mut self) {
        assert!(self.child.is_none());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.join("floed.log"))
            .unwrap();
        let mut cmd = match &self.launcher {
            Some(l) => {
                let mut c = Command::new(&l[0]);
                c.args(&l[1..]);
                c
            }
            None => Command::new(crate::bin("floed").unwrap()),
        };
        self.child = Some(
            cmd.arg("daemon")
                .arg("--config")
                .arg(&self.config)
                .env("RUST_LOG", "info,floe_flow=warn")
                .stdin(Stdio::null())
                .stdout(Stdio::from(log.try_clone().unwrap()))
                .stderr(Stdio::from(log))
                .spawn()
                .unwrap(),
        );
    }

    /// `floed status --json`: the device's own word about itself.
    pub fn status(&self) -> Value {
        let out = Command::new(crate::bin("floed").unwrap())
            .args(["status", "--json", "--config"])
            .arg(&self.config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "floed status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The version of the active slot, from the device itself.
    pub fn active_version(&self) -> Option<String> {
        let s = self.status();
        let active = s["active"].as_str()?.to_string();
        s["slots"]
            .as_array()?
            .iter()
            .find(|x| x["slot"] == json!(active))
            .and_then(|x| x["version"].as_str().map(str::to_string))
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A device configuration as a site might start it before `floed join`: test-friendly trial
/// and health settings and the local HTTP port, no fleet keys (the join adds those). Like
/// [`Device::start`]'s devices it reads no host /proc: the test host's load is not its own.
pub fn pre_join_config(http_port: u16) -> String {
    format!(
        "# Site settings, kept by floed join.\nhttp_listen = \"127.0.0.1:{http_port}\"\nmdns = false\n\
         heartbeat_interval_ms = 500\n[trial]\nmin_ready_seconds = 2\ncheck_interval_ms = 200\n\
         smoke_timeout_ms = 1500\nstart_timeout_ms = 3000\nstop_timeout_ms = 500\n\
         [health]\nproc_root = \"/nonexistent/floe-e2e-no-proc\"\ndisk_degraded_percent = 98\n"
    )
}

fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Polls `f` until it returns Some, or gives None after `limit`.
pub fn try_wait<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let until = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= until {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls `f` until it returns Some, or panics after `limit` naming `what`.
pub fn wait<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The Temperature Alert example with a simulated sensor every 300 ms, publishing to `broker`.
/// `flow` (the example's shape: n1 → n2 → n3) with a test-only `fault` node named `name`,
/// configured with `config`, between n1 and n2: every message passes it.
pub fn with_fault(mut flow: Value, name: &str, config: Value) -> Value {
    flow["nodes"].as_array_mut().unwrap().push(json!({
        "id": "nfault", "type": "fault", "name": name, "config": config, "x": 0, "y": 0
    }));
    flow["connections"] = json!([
        {"source": "n1", "target": "nfault"},
        {"source": "nfault", "target": "n2"},
        {"source": "n2", "target": "n3"}
    ]);
    flow
}

pub fn temperature_flow(broker: &str) -> Value {
    let mut flow: Value = serde_json::from_str(EXAMPLE).unwrap();
    for var in flow["variables"].as_array_mut().unwrap() {
        match var["name"].as_str().unwrap() {
            "simulate" => var["value"] = json!("true"),
            "interval" => var["value"] = json!("300ms"),
            "broker" => var["value"] = json!(broker),
            _ => {}
        }
    }
    flow
}
