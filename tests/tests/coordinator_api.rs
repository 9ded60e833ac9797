//! End-to-end tests of `floe serve`: the real binary as a process, a real SQLite file in a temp
//! data directory, the REST API over loopback, and devices simulated by this test that speak
//! the real protocol (ed25519 keys generated here, signed CBOR reports, signed directive posts
//! verified against the trust store `floe serve` wrote).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ed25519_dalek::SigningKey;
use floe_wire::artifact::{keys, verify_file};
use floe_wire::proto::device_auth;
use floe_wire::proto::{
    self, Action, Applied, DeviceReport, Directive, DirectivePost, Envelope, Facts, Fixed,
    HealthLevel, HealthSummary, Manifest, Progress, SlotInfo, TrustStore,
};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

/// A running `floe serve` over a temp data directory.
struct Server {
    child: Child,
    dir: PathBuf,
    port: u16,
    token: String,
    http: ureq::Agent,
}

impl Server {
    fn start(dir: &Path) -> Server {
        let port = floe_tests::net::free_port().unwrap();
        let child = Command::new(floe_tests::bin("floe").unwrap())
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                // The simulated devices send no disk figures: the checklist is recorded only
                // (`preflight_e2e` enforces it).
                "--preflight",
                "warn",
                "--data-dir",
            ])
            .arg(dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start floe serve");
        floe_tests::net::wait_for_port(port, Duration::from_secs(60)).unwrap();
        let token = std::fs::read_to_string(dir.join("api-token"))
            .unwrap()
            .trim()
            .to_string();
        Server {
            child,
            dir: dir.to_path_buf(),
            port,
            token,
            http: agent(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/api/v1{path}", self.port)
    }

    /// A JSON request with the bearer token; returns the status and the parsed body.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let auth = format!("Bearer {}", self.token);
        let url = self.url(path);
        let resp = match (method, body) {
            ("GET", _) => self.http.get(&url).header("Authorization", &auth).call(),
            ("DELETE", _) => self.http.delete(&url).header("Authorization", &auth).call(),
            ("POST", b) => self
                .http
                .post(&url)
                .header("Authorization", &auth)
                .header("Content-Type", "application/json")
                .send(b.unwrap_or(json!({})).to_string()),
            ("PUT", b) => self
                .http
                .put(&url)
                .header("Authorization", &auth)
                .header("Content-Type", "application/json")
                .send(b.unwrap_or(json!({})).to_string()),
            ("PATCH", b) => self
                .http
                .patch(&url)
                .header("Authorization", &auth)
                .header("Content-Type", "application/json")
                .send(b.unwrap_or(json!({})).to_string()),
            (m, _) => panic!("unsupported method {m}"),
        }
        .unwrap();
        let status = resp.status().as_u16();
        let text = resp.into_body().read_to_string().unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    fn ok(&self, method: &str, path: &str, body: Option<Value>, want: u16) -> Value {
        let (status, value) = self.call(method, path, body);
        assert_eq!(status, want, "{method} {path} -> {status}: {value}");
        value
    }

    fn trust(&self) -> TrustStore {
        keys::load_trust(&self.dir.join("trust")).unwrap()
    }

    fn kill9(&mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The example flow of the repository, with the simulated sensor so it would run anywhere.
fn example_flow() -> Value {
    let path = floe_tests::workspace_root().join("examples/temperature-alert.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Sends raw request bytes and returns what comes back within a few seconds.
fn raw_request(port: u16, head: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::new();
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if out.windows(4).any(|w| w == b"\r\n\r\n") && out.ends_with(b"}") {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Steps the devices until each has applied a commit (the engine counts a target done when
/// it issues the commit; the device carries it out on its next poll).
fn settle(server: &Server, devices: &mut [Device]) {
    let trust = server.trust();
    for _ in 0..100 {
        if devices
            .iter()
            .all(|d| d.log.last().is_some_and(|(_, a)| *a == Action::Commit))
        {
            return;
        }
        for d in devices.iter_mut() {
            d.step(server, &trust);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn error_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

/// A simulated device: a real key, the real report and directive formats, slots in memory.
struct Device {
    id: String,
    key: SigningKey,
    seq: u64,
    active: Option<SlotInfo>,
    standby: Option<SlotInfo>,
    last_good: Option<SlotInfo>,
    applied: Option<Applied>,
    /// Every directive it applied: (generation, action).
    log: Vec<(u64, Action)>,
}

impl Device {
    /// A device whose key comes from `seed`; its id is the hex of that key, as every device's
    /// is (`_name` only says which one it is in the test).
    fn new(_name: &str, seed: u8) -> Device {
        let key = SigningKey::from_bytes(&[seed; 32]);
        Device {
            id: hex::encode(key.verifying_key().to_bytes()),
            key,
            seq: 1,
            active: None,
            standby: None,
            last_good: None,
            applied: None,
            log: Vec::new(),
        }
    }

    fn public_hex(&self) -> String {
        hex::encode(self.key.verifying_key().to_bytes())
    }

    fn report_bytes(&mut self) -> Vec<u8> {
        self.seq += 1;
        let report = DeviceReport {
            schema: 1,
            device_id: self.id.clone(),
            public_key: Fixed(self.key.verifying_key().to_bytes()),
            seq: self.seq,
            facts: Facts {
                device_type: "rpi4".into(),
                arch: "aarch64".into(),
                region: "eu".into(),
                labels: vec![proto::Label {
                    key: "site".into(),
                    value: "north".into(),
                }],
                runtime_version: "0.1.0".into(),
            },
            enroll_token: None,
            active: self.active.clone(),
            standby: self.standby.clone(),
            last_known_good: self.last_good.clone(),
            on_trial: false,
            applied: self.applied.clone(),
            health: Some(HealthSummary {
                status: HealthLevel::Healthy,
                flow_running: true,
                error_rate_ppm: 0,
                p95_us: 2_000,
                memory_kib: 10_240,
                restarts: 0,
                system: None,
            }),
        };
        Envelope::sign(&report, &[&self.key])
            .unwrap()
            .to_bytes()
            .unwrap()
    }

    /// Posts a signed report; returns the status.
    fn report(&mut self, server: &Server) -> u16 {
        self.report_desired(server).0
    }

    /// Posts a signed report; returns the status and, for an accepted one, the generation of
    /// the device's current directive that the answer names.
    fn report_desired(&mut self, server: &Server) -> (u16, Option<u64>) {
        let bytes = self.report_bytes();
        let resp = server
            .http
            .post(server.url(&format!("/devices/{}/report", self.id)))
            .header("Content-Type", "application/cbor")
            .send(&bytes[..])
            .unwrap();
        let desired = resp
            .headers()
            .get("floe-desired-generation")
            .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
        (resp.status().as_u16(), desired)
    }

    /// The current directive post's bytes, if any (no bearer token: devices have none; the
    /// request carries the device's own signature).
    fn directive_bytes(&self, server: &Server) -> Option<Vec<u8>> {
        let resp = server
            .http
            .get(server.url(&format!("/devices/{}/directive", self.id)))
            .header(
                device_auth::DEVICE_AUTH_HEADER,
                device_auth::sign_request(
                    &self.key,
                    "GET",
                    &device_auth::directive_path(&self.id),
                    floe_wire::clock::unix_secs(),
                ),
            )
            .call()
            .unwrap();
        match resp.status().as_u16() {
            204 => None,
            200 => Some(resp.into_body().read_to_vec().unwrap()),
            s => panic!("GET directive of {}: {s}", self.id),
        }
    }

    /// Fetches the current directive, verifies it (coordinator key) and its manifest
    /// (release key) against the trust store, carries it out if newer, and reports.
    fn step(&mut self, server: &Server, trust: &TrustStore) {
        let mut fetched = 0;
        if let Some(bytes) = self.directive_bytes(server) {
            let post = DirectivePost::from_bytes(&bytes).unwrap();
            let directive = proto::open::<Directive>(
                &post.directive.0,
                std::slice::from_ref(&trust.coordinator_key),
                1,
            )
            .expect("the directive verifies against the coordinator key")
            .value;
            assert_eq!(directive.device_id, self.id);
            let manifest = trust
                .verify_release::<Manifest>(
                    &Envelope::from_bytes::<Manifest>(&post.manifest.0).unwrap(),
                )
                .expect("the manifest verifies against the release key");
            let newer = self
                .applied
                .as_ref()
                .is_none_or(|a| directive.generation > a.generation);
            if newer {
                self.apply(&directive, &manifest.value);
            }
            fetched = directive.generation;
        }
        let (status, desired) = self.report_desired(server);
        assert_eq!(status, 204, "report of {}", self.id);
        // The answer names the current directive's generation: at least the one just fetched
        // (the report may have made the engine issue the next), 0 when there is none.
        let desired = desired.expect("an accepted report names the desired generation");
        assert!(
            desired >= fetched,
            "{} desired {desired} < fetched {fetched}",
            self.id
        );
        if desired == 0
            && let Some(bytes) = self.directive_bytes(server)
        {
            // 0 means no directive when the report was answered; the engine may issue one
            // (a tick, another device's report) before this read, but then it is a new one.
            let post = DirectivePost::from_bytes(&bytes).unwrap();
            let directive = proto::open::<Directive>(
                &post.directive.0,
                std::slice::from_ref(&trust.coordinator_key),
                1,
            )
            .unwrap()
            .value;
            assert!(
                directive.generation > fetched,
                "{}: the report said no directive, yet generation {} (fetched {fetched}) was there",
                self.id,
                directive.generation
            );
        }
    }

    fn apply(&mut self, d: &Directive, m: &Manifest) {
        let other = |s: &Option<SlotInfo>| match s.as_ref().map(|s| s.slot.as_str()) {
            Some("blue") => "green",
            _ => "blue",
        };
        let slot = SlotInfo {
            slot: other(&self.active).into(),
            name: d.artifact.name.clone(),
            release: d.artifact.release,
            version: m.version.clone(),
        };
        match d.action {
            Action::Stage => self.standby = Some(slot),
            Action::Switch => {
                let old = self.active.take();
                self.active = self.standby.take();
                self.standby = old;
            }
            Action::Commit => self.last_good = self.active.clone(),
            Action::Rollback => {
                let old = self.active.take();
                self.active = self.standby.take();
                self.standby = old;
            }
        }
        self.log.push((d.generation, d.action));
        self.applied = Some(Applied {
            generation: d.generation,
            action: d.action,
            name: d.artifact.name.clone(),
            release: d.artifact.release,
            progress: Progress::Done,
            detail: String::new(),
        });
    }
}

/// Creates and publishes the example flow; returns its id.
fn published_flow(server: &Server) -> String {
    let flow = server.ok(
        "POST",
        "/flows",
        Some(json!({"name": "Temperature Alert", "tags": ["temperature"], "definition": example_flow()})),
        201,
    );
    let id = flow["id"].as_str().unwrap().to_string();
    server.ok("POST", &format!("/flows/{id}/publish"), None, 200);
    id
}

/// Allowlists `n` devices and has each send a first report (enrollment).
fn enrolled(server: &Server, n: u8) -> Vec<Device> {
    (1..=n)
        .map(|i| {
            let mut d = Device::new(&format!("dev_{i:03}"), i);
            server.ok(
                "POST",
                "/devices",
                Some(json!({"id": d.id, "public_key": d.public_hex(), "type": "rpi4", "region": "eu"})),
                201,
            );
            assert_eq!(d.report(server), 204, "first report of {}", d.id);
            d
        })
        .collect()
}

fn rolling_deployment(server: &Server, flow: &str, devices: &[Device]) -> String {
    let ids: Vec<&str> = devices.iter().map(|d| d.id.as_str()).collect();
    let dep = server.ok(
        "POST",
        "/deployments",
        Some(json!({
            "flow_id": flow,
            "strategy": "rolling",
            "target_devices": ids,
            "config": {"batch_size": 1, "batch_delay": "1s", "timeout": "1m"},
        })),
        201,
    );
    assert_eq!(dep["status"], "pending");
    assert_eq!(dep["total_targets"], 3);
    let id = dep["id"].as_str().unwrap().to_string();
    let started = server.ok("POST", &format!("/deployments/{id}/start"), None, 200);
    assert_eq!(started["status"], "running", "{started}");
    id
}

/// Steps every device until `done` says so (bounded in time and rounds).
fn drive(
    server: &Server,
    devices: &mut [Device],
    dep: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let trust = server.trust();
    let until = Instant::now() + within;
    for _ in 0..10_000 {
        for d in devices.iter_mut() {
            d.step(server, &trust);
        }
        let v = server.ok("GET", &format!("/deployments/{dep}"), None, 200);
        if done(&v) {
            return v;
        }
        assert!(
            Instant::now() < until,
            "deployment did not get there in time: {v:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("too many rounds");
}

#[test]
fn api_errors_have_the_right_status_and_a_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());

    // Missing token: 401, except the open routes.
    let resp = server.http.get(server.url("/flows")).call().unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let v: Value = serde_json::from_str(&resp.into_body().read_to_string().unwrap()).unwrap();
    assert_eq!(error_code(&v), "unauthorized");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("Bearer"),
        "{v}"
    );
    let resp = server.http.get(server.url("/healthz")).call().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let resp = server.http.get(server.url("/openapi.json")).call().unwrap();
    let doc: Value = serde_json::from_str(&resp.into_body().read_to_string().unwrap()).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let bad = server
        .http
        .get(server.url("/flows"))
        .header("Authorization", "Bearer nope")
        .call()
        .unwrap();
    assert_eq!(bad.status().as_u16(), 401);

    // Malformed body, unknown field: 400.
    let resp = server
        .http
        .post(server.url("/flows"))
        .header("Authorization", &format!("Bearer {}", server.token))
        .send("{not json")
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let v: Value = serde_json::from_str(&resp.into_body().read_to_string().unwrap()).unwrap();
    assert_eq!(error_code(&v), "bad_request");
    let (s, v) = server.call(
        "POST",
        "/flows",
        Some(json!({"name": "x", "definition": example_flow(), "colour": "red"})),
    );
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("colour"),
        "{v}"
    );

    // Body over 1 MiB: 413, decided from the declared length before any of it is read.
    let reply = raw_request(
        server.port,
        &format!(
            "POST /api/v1/flows HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            server.token,
            2 << 20
        ),
    );
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(reply.contains("payload_too_large"), "{reply}");

    // A definition that does not validate: 422 with the path at fault.
    let mut broken = example_flow();
    broken["nodes"][1]["type"] = json!("no_such_node");
    let (s, v) = server.call(
        "POST",
        "/flows",
        Some(json!({"name": "x", "definition": broken})),
    );
    assert_eq!(s, 422, "{v}");
    assert_eq!(error_code(&v), "validation_failed");
    assert!(
        v["error"]["field"]
            .as_str()
            .unwrap()
            .starts_with("definition.nodes[n2]"),
        "{v}"
    );

    // Unknown ids: 404.
    let (s, v) = server.call("GET", "/flows/flow_0000000000", None);
    assert_eq!((s, error_code(&v)), (404, "not_found"), "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("flow_0000000000")
    );
    let (s, _) = server.call("GET", "/deployments/dep_0000000000", None);
    assert_eq!(s, 404);
    let (s, _) = server.call("GET", "/devices/nobody", None);
    assert_eq!(s, 404);

    // Editing a published flow: 409.
    let flow = published_flow(&server);
    let (s, v) = server.call(
        "PUT",
        &format!("/flows/{flow}"),
        Some(json!({"name": "y", "definition": example_flow()})),
    );
    assert_eq!((s, error_code(&v)), (409, "conflict"), "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("published"),
        "{v}"
    );

    // Deploying a draft: 409.
    let draft = server.ok("POST", &format!("/flows/{flow}/versions"), None, 201);
    let draft_id = draft["id"].as_str().unwrap();
    let mut devices = enrolled(&server, 3);
    let targets: Vec<&str> = devices.iter().map(|d| d.id.as_str()).collect();
    let (s, v) = server.call(
        "POST",
        "/deployments",
        Some(json!({"flow_id": draft_id, "strategy": "rolling", "target_devices": targets})),
    );
    assert_eq!(s, 409, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("draft"),
        "{v}"
    );
    // A bad config value: 422 naming the field; an unknown device: 404.
    let (s, v) = server.call(
        "POST",
        "/deployments",
        Some(
            json!({"flow_id": flow, "strategy": "rolling", "target_devices": targets,
                    "config": {"batch_delay": "5 fortnights"}}),
        ),
    );
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["error"]["field"], "config.batch_delay");
    let (s, _) = server.call(
        "POST",
        "/deployments",
        Some(json!({"flow_id": flow, "strategy": "rolling", "target_devices": ["ghost"]})),
    );
    assert_eq!(s, 404);

    // A report whose signature does not verify is refused, and so is a report posted under
    // another device's id.
    let mut forged = devices[0].report_bytes();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let resp = server
        .http
        .post(server.url(&format!("/devices/{}/report", devices[0].id)))
        .send(&forged[..])
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let honest = devices[0].report_bytes();
    let resp = server
        .http
        .post(server.url(&format!("/devices/{}/report", devices[1].id)))
        .send(&honest[..])
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);

    // Deleting a flow in use: 409 (a pending deployment uses it).
    let dep = rolling_deployment(&server, &flow, &devices);
    let (s, v) = server.call("DELETE", &format!("/flows/{flow}"), None);
    assert_eq!(s, 409, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains(&dep),
        "{v}"
    );
    // Starting twice: 409.
    let (s, _) = server.call("POST", &format!("/deployments/{dep}/start"), None);
    assert_eq!(s, 409);

    // Resuming a completed deployment: 409.
    drive(&server, &mut devices, &dep, Duration::from_secs(60), |v| {
        v["status"] == "completed"
    });
    let (s, v) = server.call("POST", &format!("/deployments/{dep}/resume"), None);
    assert_eq!(s, 409, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("completed"),
        "{v}"
    );
    // Now that nothing uses it, the draft can go.
    server.ok("DELETE", &format!("/flows/{draft_id}"), None, 204);
    let (s, _) = server.call("GET", &format!("/flows/{draft_id}"), None);
    assert_eq!(s, 404);
}

#[test]
fn flow_lifecycle_publishes_a_bundle_devices_accept() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(tmp.path().join("api-token"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    let created = server.ok(
        "POST",
        "/flows",
        Some(
            json!({"name": "Temperature Alert", "description": "alerts", "tags": ["temperature"],
                    "definition": example_flow()}),
        ),
        201,
    );
    let id = created["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("flow_") && id.len() == 15, "{id}");
    assert_eq!(created["state"], "draft");
    assert_eq!(created["version"], 1);
    assert_eq!(created["lineage"], id.as_str());
    assert_eq!(created["artifact"], Value::Null);
    assert_eq!(created["definition"], example_flow());
    server.ok(
        "POST",
        "/flows",
        Some(json!({"name": "Other", "tags": ["other"], "definition": example_flow()})),
        201,
    );

    // Edit the draft, then list with filters.
    let edited = server.ok(
        "PUT",
        &format!("/flows/{id}"),
        Some(json!({"name": "Temperature Alert v1", "tags": ["temperature"], "definition": example_flow()})),
        200,
    );
    assert_eq!(edited["name"], "Temperature Alert v1");
    let list = server.ok("GET", "/flows?tag=temperature", None, 200);
    assert_eq!(list["flows"].as_array().unwrap().len(), 1);
    let list = server.ok("GET", "/flows?state=draft", None, 200);
    assert_eq!(list["flows"].as_array().unwrap().len(), 2);
    let (s, _) = server.call("GET", "/flows?state=bogus", None);
    assert_eq!(s, 400);

    // Publish: a signed bundle that verifies against the trust store devices get.
    let published = server.ok("POST", &format!("/flows/{id}/publish"), None, 200);
    assert_eq!(published["state"], "published");
    assert_eq!(published["artifact"]["name"], id.as_str());
    assert_eq!(published["artifact"]["release"], 1);
    let bundle = tmp.path().join(format!("artifacts/{id}-1.floe"));
    let manifest = verify_file(&bundle, &server.trust()).expect("bundle verifies");
    assert_eq!(manifest.value.name, id);
    assert_eq!(manifest.value.release, 1);
    assert_eq!(
        manifest.digest.to_hex(),
        published["artifact"]["manifest_sha256"]
    );
    let (s, _) = server.call("POST", &format!("/flows/{id}/publish"), None);
    assert_eq!(s, 409);

    // A new version: a draft with the same lineage; then archive the first.
    let v2 = server.ok("POST", &format!("/flows/{id}/versions"), None, 201);
    assert_eq!(v2["version"], 2);
    assert_eq!(v2["parent_id"], id.as_str());
    assert_eq!(v2["lineage"], id.as_str());
    assert_eq!(v2["state"], "draft");
    let archived = server.ok("POST", &format!("/flows/{id}/archive"), None, 200);
    assert_eq!(archived["state"], "archived");
    assert!(archived["archived_at"].is_string());
    let (s, _) = server.call("POST", &format!("/flows/{id}/archive"), None);
    assert_eq!(s, 409);
    let list = server.ok("GET", "/flows", None, 200);
    assert!(
        list["flows"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["state"] != "archived")
    );
    let list = server.ok("GET", "/flows?state=archived", None, 200);
    assert_eq!(list["flows"].as_array().unwrap().len(), 1);
    let audit = server.ok("GET", "/audit?limit=50", None, 200);
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "flow.publish"),
        "{audit}"
    );
}

#[test]
fn rolling_deployment_to_three_devices_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let flow = published_flow(&server);
    let mut devices = enrolled(&server, 3);
    let listed = server.ok("GET", "/devices?label=site=north&online=true", None, 200);
    assert_eq!(listed["devices"].as_array().unwrap().len(), 3);
    let started = Instant::now();
    let dep = rolling_deployment(&server, &flow, &devices);
    // A relay (or the simulator) follows the directive feed: the first batch's device is
    // behind, its post is the very bytes it would fetch, and the cursor moves past it.
    let feed = server.ok("GET", "/directives/feed", None, 200);
    let listed = feed["devices"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{feed:#}");
    let first = devices
        .iter()
        .find(|d| d.id == listed[0]["device_id"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        listed[0]["post"].as_str().map(|p| hex::decode(p).unwrap()),
        first.directive_bytes(&server),
    );
    let cursor = feed["cursor"].as_str().unwrap();
    let after = server.ok(
        "GET",
        &format!("/directives/feed?since={cursor}"),
        None,
        200,
    );
    assert_eq!(after["devices"].as_array().unwrap().len(), 0, "{after:#}");
    assert_eq!(after["cursor"], cursor);
    // A cursor of another epoch (a restarted coordinator) starts over.
    let (epoch, _) = cursor.split_once('-').unwrap();
    let stale = format!("{}-0", if epoch == "1" { "3" } else { "1" });
    let over = server.ok("GET", &format!("/directives/feed?since={stale}"), None, 200);
    assert_eq!(over["devices"].as_array().unwrap().len(), 1, "{over:#}");
    for bad in [
        "since=nope",
        "since=1-zz",
        "limit=0",
        "limit=1001",
        "posts=true",
    ] {
        let (status, err) = server.call("GET", &format!("/directives/feed?{bad}"), None);
        assert!(status == 422 || status == 400, "{bad}: {status} {err}");
    }
    let done = drive(&server, &mut devices, &dep, Duration::from_secs(60), |v| {
        v["status"] != "running"
    });
    assert_eq!(done["status"], "completed", "{done:#}");
    assert_eq!(done["completed_targets"], 3);
    settle(&server, &mut devices);
    eprintln!(
        "rolling deployment, 3 batches of 1 with 1 s soaks, devices polling every 100 ms: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Figure: signed reports accepted per second over HTTP (each one a SQLite transaction
    // with synchronous=FULL); bounded to 200 reports.
    let t = Instant::now();
    for _ in 0..200 {
        assert_eq!(devices[0].report(&server), 204);
    }
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "200 signed reports in {secs:.2} s: {:.0} reports/s",
        200.0 / secs
    );
    assert_eq!(done["stages"].as_array().unwrap().len(), 3);
    assert!(
        done["gates"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["verdict"] == "pass")
    );
    for d in &devices {
        let actions: Vec<Action> = d.log.iter().map(|(_, a)| *a).collect();
        assert_eq!(
            actions,
            [Action::Stage, Action::Switch, Action::Commit],
            "{}",
            d.id
        );
        // Every device runs the new release from the slot it was staged into.
        let v = server.ok("GET", &format!("/devices/{}", d.id), None, 200);
        assert_eq!(v["installed"]["name"], flow.as_str());
        assert_eq!(v["installed"]["release"], 1);
        assert_eq!(v["installed"]["slot"], "blue");
    }
    let report = server
        .http
        .get(server.url(&format!("/deployments/{dep}/report?format=markdown")))
        .header("Authorization", &format!("Bearer {}", server.token))
        .call()
        .unwrap();
    assert_eq!(report.status().as_u16(), 200);
    let text = report.into_body().read_to_string().unwrap();
    assert!(text.contains("Fleet Deployment Report"), "{text}");
}

#[test]
fn a_killed_coordinator_resumes_the_deployment_where_it_was() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::start(tmp.path());
    let flow = published_flow(&server);
    let mut devices = enrolled(&server, 3);
    let dep = rolling_deployment(&server, &flow, &devices);
    // Only the first batch's device works until its batch is committed and the second batch
    // has its stage directive; nothing else moves, so no timer runs while we look and kill.
    let v = server.ok("GET", &format!("/deployments/{dep}"), None, 200);
    let first = v["stages"][0]["devices"][0].as_str().unwrap().to_string();
    let at = devices.iter().position(|d| d.id == first).unwrap();
    devices.swap(0, at);
    drive(
        &server,
        &mut devices[..1],
        &dep,
        Duration::from_secs(60),
        |v| {
            v["completed_targets"] == 1
                && server.ok("GET", &format!("/deployments/{dep}/targets"), None, 200)["targets"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|t| t["generation"] != 0)
                    .count()
                    == 2
        },
    );
    let before: Vec<Option<Vec<u8>>> = devices.iter().map(|d| d.directive_bytes(&server)).collect();
    let state = server.ok("GET", &format!("/deployments/{dep}"), None, 200);
    let targets = server.ok("GET", &format!("/deployments/{dep}/targets"), None, 200);

    server.kill9();
    let t = Instant::now();
    let server = Server::start(tmp.path());
    eprintln!(
        "restart after kill -9 to the API listening: {:.2} s",
        t.elapsed().as_secs_f64()
    );

    // Nothing lost, nothing re-issued: the same signed directives, the same stage.
    let after: Vec<Option<Vec<u8>>> = devices.iter().map(|d| d.directive_bytes(&server)).collect();
    assert_eq!(before, after, "directives changed across the restart");
    assert_eq!(after.iter().filter(|p| p.is_some()).count(), 2);
    let resumed = server.ok("GET", &format!("/deployments/{dep}"), None, 200);
    assert_eq!(resumed["status"], "running");
    assert_eq!(resumed["current_stage"], state["current_stage"]);
    assert_eq!(resumed["completed_targets"], 1);
    let resumed_targets = server.ok("GET", &format!("/deployments/{dep}/targets"), None, 200);
    assert_eq!(resumed_targets["targets"], targets["targets"]);
    assert_eq!(resumed["target_counts"], state["target_counts"]);

    let done = drive(&server, &mut devices, &dep, Duration::from_secs(60), |v| {
        v["status"] != "running"
    });
    assert_eq!(done["status"], "completed", "{done:#}");
    assert_eq!(done["completed_targets"], 3);
    settle(&server, &mut devices);
    for d in &devices {
        // Each wave ran once: one stage, one switch, one commit, generations growing.
        let actions: Vec<Action> = d.log.iter().map(|(_, a)| *a).collect();
        assert_eq!(
            actions,
            [Action::Stage, Action::Switch, Action::Commit],
            "{}",
            d.id
        );
        assert!(d.log.windows(2).all(|w| w[0].0 < w[1].0), "{:?}", d.log);
    }
}

/// Starts `floe serve` with its stdout captured and returns what it printed up to the line
/// that says it listens (bounded by lines and time), then stops it.
fn first_lines(dir: &Path) -> String {
    use std::io::{BufRead, BufReader};
    let port = floe_tests::net::free_port().unwrap();
    let mut child = Command::new(floe_tests::bin("floe").unwrap())
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut out = String::new();
        for line in BufReader::new(stdout).lines().take(50) {
            let Ok(line) = line else { break };
            let last = line.contains("listening");
            out.push_str(&line);
            out.push('\n');
            if last {
                break;
            }
        }
        let _ = tx.send(out);
    });
    let out = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    out
}

#[test]
fn the_token_and_keys_are_created_once_and_the_token_never_printed() {
    let tmp = tempfile::tempdir().unwrap();
    let first = first_lines(tmp.path());
    let token = std::fs::read_to_string(tmp.path().join("api-token")).unwrap();
    let token = token.trim();
    assert_eq!(token.len(), 64, "32 random bytes in hex");
    assert!(
        !first.contains(token),
        "the token never goes to stdout (journald keeps it):\n{first}"
    );
    assert!(
        first.contains("wrote the API token to") && first.contains("api-token"),
        "the first start names the token file:\n{first}"
    );
    assert!(
        first.contains("trust.cbor"),
        "and where the trust store is:\n{first}"
    );
    for key in [
        "keys/release/floe.key",
        "keys/coordinator/floe.key",
        "trust/trust.cbor",
    ] {
        assert!(tmp.path().join(key).exists(), "{key}");
    }
    let release = std::fs::read(tmp.path().join("keys/release/floe.key")).unwrap();
    let second = first_lines(tmp.path());
    assert!(second.contains("listening"), "{second}");
    assert!(
        !second.contains(token) && !second.contains("wrote the API token"),
        "later starts keep the token and say nothing of it:\n{second}"
    );
    assert_eq!(
        std::fs::read(tmp.path().join("keys/release/floe.key")).unwrap(),
        release,
        "keys are kept"
    );
}
