//! The coordinator on the fabric, end to end: a coordinator [`Link`] in this process and three
//! real `floed daemon` processes on loopback (temp data dirs, a simulated sysfs sensor, mDNS
//! off, bootstrapped to the coordinator). Directives are signed here with a real coordinator
//! key and carried by gossip; artifacts are real signed bundles whose chunks the devices fetch
//! from the coordinator's seed. The test walks v1 in (stage, switch), v2 in (stage, switch,
//! commit), then a coordinator rollback to v1 with the chunk stores deleted (so nothing can
//! come from the network), and checks that a directive signed by an untrusted key and one with
//! a stale generation are refused and audited, that a device restarted mid-way reports the
//! generation it had reached, and that a v3 whose sensor fails after the switch is rolled back
//! by every device on its own and reported as such.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // A test fails loudly on any broken precondition.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use floe_coordinator::link::{self, Link, LinkConfig};
use floe_wire::artifact::bundle::HEADER_LEN;
use floe_wire::artifact::{self, BuildSpec, keys};
use floe_wire::proto::directive::DIRECTIVE_SCHEMA;
use floe_wire::proto::report::POST_SCHEMA;
use floe_wire::proto::{
    Action, ArtifactRef, ByteBuf, DeviceReport, Digest, Directive, DirectivePost, Envelope,
    Progress, TrustStore, TrustedKey,
};

const CHUNK: u32 = 64 * 1024;

/// Fabric admission for the in-test coordinator, as `floe serve` has it: its own coordinator
/// certificate, and an issuer that gives a device a certificate for a self-signed report sent
/// by the device itself (the registry's enrollment is the service's, not in this test).
fn admit_with(lc: &mut LinkConfig, coord: &SigningKey) {
    use floe_fabric::admission::{Admission, IssueRequest};
    use floe_wire::proto::membership::{self, Role};
    let identity = libp2p::identity::Keypair::generate_ed25519();
    let public = identity.public().try_into_ed25519().unwrap().to_bytes();
    let now = floe_wire::clock::unix_secs();
    let mut admission = Admission::new(TrustedKey::new(floe_wire::proto::Fixed(
        coord.verifying_key().to_bytes(),
    )));
    admission.certificate = Some(
        membership::issue(
            coord,
            floe_wire::proto::Fixed(public),
            Role::Coordinator,
            now,
            3600,
        )
        .unwrap(),
    );
    let signer = coord.clone();
    admission.issuer = Some(Arc::new(move |request| {
        let (key, role) = match request {
            IssueRequest::Own { public_key } => (public_key, Role::Coordinator),
            IssueRequest::Peer {
                presented: Some(_), ..
            } => return Ok(None),
            IssueRequest::Peer {
                peer,
                public_key,
                report,
                ..
            } => {
                let report = report.ok_or("no report")?;
                link::admit_direct(peer, &report).map_err(|e| e.to_string())?;
                (public_key, Role::Device)
            }
        };
        let now = floe_wire::clock::unix_secs();
        membership::issue(&signer, floe_wire::proto::Fixed(key), role, now, 3600)
            .map(Some)
            .map_err(|e| e.to_string())
    }));
    lc.identity = Some(identity);
    lc.admission = Some(admission);
}

struct Artifact {
    name: String,
    release: u64,
    digest: Digest,
    envelope: Vec<u8>,
}

struct Device {
    data: PathBuf,
    cfg: PathBuf,
    id: String,
    child: Option<Child>,
}

impl Device {
    fn start(&mut self, floed: &Path) {
        let child = Command::new(floed)
            .arg("daemon")
            .arg("--config")
            .arg(&self.cfg)
            .env("RUST_LOG", "warn,floe_flow=error")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning floed daemon");
        self.child = Some(child);
        let sock = self.data.join("floed.sock");
        let start = Instant::now();
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("floed daemon exited early: {st}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "daemon not ready"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if child.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    fn status(&self, floed: &Path) -> serde_json::Value {
        let out = Command::new(floed)
            .args(["status", "--json", "--config"])
            .arg(&self.cfg)
            .env("RUST_LOG", "error")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn flow(sensor: &Path, tag: &str) -> Vec<u8> {
    serde_json::json!({
        "nodes": [
            {"id": "temp", "type": "sensor", "name": format!("Temp {tag}"), "config": {"path": sensor, "interval": "20ms"}},
            {"id": "out", "type": "debug", "name": "Out", "config": {"level": "debug"}}
        ],
        "connections": [{"source": "temp", "target": "out"}]
    })
    .to_string()
    .into_bytes()
}

/// Builds a signed bundle (the flow plus a 200 KB model file, so the fetch has several
/// chunks) and returns what the coordinator needs: the manifest envelope, the payload, and the
/// verified digest.
fn build(
    root: &Path,
    trust: &TrustStore,
    release_key: &SigningKey,
    version: &str,
    release: u64,
    flow_bytes: &[u8],
) -> (Artifact, Vec<u8>) {
    let files = root.join(format!("files-{release}"));
    std::fs::create_dir_all(&files).unwrap();
    let model: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(31).wrapping_add(release as u32)) as u8)
        .collect();
    std::fs::write(files.join("model.bin"), model).unwrap();
    let now = floe_wire::clock::unix_secs();
    let mut spec = BuildSpec::new("temperature-alert", version, release, now, now + 86_400);
    spec.chunk_size = Some(CHUNK);
    let out = root.join(format!("v{release}.floe"));
    artifact::build(&spec, flow_bytes, Some(&files), &[release_key], &out).unwrap();
    let verified = artifact::verify_file(&out, trust).unwrap();
    let reader = artifact::BundleReader::open(&out).unwrap();
    let envelope = reader.envelope_bytes.clone();
    let all = std::fs::read(&out).unwrap();
    let payload = all[HEADER_LEN as usize + envelope.len()..].to_vec();
    (
        Artifact {
            name: verified.value.name.clone(),
            release,
            digest: verified.digest,
            envelope,
        },
        payload,
    )
}

fn post_bytes(
    key: &SigningKey,
    device: &str,
    generation: u64,
    action: Action,
    art: &Artifact,
) -> Vec<u8> {
    let now = floe_wire::clock::unix_secs();
    let d = Directive {
        schema: DIRECTIVE_SCHEMA,
        device_id: device.to_string(),
        generation,
        action,
        artifact: ArtifactRef {
            name: art.name.clone(),
            release: art.release,
            manifest_sha256: art.digest,
        },
        issued_at: now,
        expires: now + 600,
        vars: Default::default(),
        secret_vars: Default::default(),
    };
    let env = Envelope::sign(&d, &[key]).unwrap().to_bytes().unwrap();
    DirectivePost {
        schema: POST_SCHEMA,
        directive: ByteBuf(env),
        manifest: ByteBuf(art.envelope.clone()),
    }
    .to_bytes()
    .unwrap()
}

type Reports = Arc<Mutex<HashMap<String, DeviceReport>>>;

struct Harness {
    rt: tokio::runtime::Runtime,
    link: Link,
    reports: Reports,
    coord: SigningKey,
}

impl Harness {
    fn report(&self, device: &str) -> Option<DeviceReport> {
        self.reports.lock().unwrap().get(device).cloned()
    }

    fn reached(&self, device: &str, generation: u64, action: Action, progress: Progress) -> bool {
        self.report(device)
            .and_then(|r| r.applied)
            .is_some_and(|a| {
                a.generation == generation && a.action == action && a.progress == progress
            })
    }

    /// Posts a freshly signed directive to every device in `devices` about once a second (as
    /// the service's loop would) until each reports it done, failing after `limit`.
    fn drive(
        &self,
        devices: &[&Device],
        generation: u64,
        action: Action,
        art: &Artifact,
        limit: Duration,
    ) {
        self.drive_to(devices, generation, action, art, Progress::Done, limit);
    }

    /// Like [`Harness::drive`], until every device reports `want`.
    fn drive_to(
        &self,
        devices: &[&Device],
        generation: u64,
        action: Action,
        art: &Artifact,
        want: Progress,
        limit: Duration,
    ) {
        let start = Instant::now();
        loop {
            let pending: Vec<&&Device> = devices
                .iter()
                .filter(|d| !self.reached(&d.id, generation, action, want))
                .collect();
            if pending.is_empty() {
                return;
            }
            for d in &pending {
                if let Some(a) = self.report(&d.id).and_then(|r| r.applied)
                    && a.generation == generation
                    && a.progress != want
                    && matches!(
                        a.progress,
                        Progress::Failed | Progress::RolledBack | Progress::Done
                    )
                {
                    panic!("{} reached {a:?}", d.id);
                }
            }
            assert!(
                start.elapsed() < limit,
                "generation {generation} {action:?} not done within {limit:?}: {:#?}",
                pending
                    .iter()
                    .map(|d| self.report(&d.id).map(|r| r.applied))
                    .collect::<Vec<_>>()
            );
            for d in &pending {
                let bytes = post_bytes(&self.coord, &d.id, generation, action, art);
                self.rt
                    .block_on(self.link.post(&d.id, generation, bytes))
                    .unwrap();
            }
            std::thread::sleep(Duration::from_millis(700));
        }
    }
}

fn audit_has(st: &serde_json::Value, outcome: &str, needle: &str) -> bool {
    st["audit"].as_array().unwrap().iter().any(|a| {
        a["actor"] == "coordinator"
            && a["outcome"] == outcome
            && a["detail"].as_str().unwrap().contains(needle)
    })
}

fn slot_version(st: &serde_json::Value, slot: &str) -> Option<String> {
    st["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["slot"] == slot)
        .and_then(|s| s["version"].as_str().map(str::to_string))
}

#[test]
fn coordinator_directs_three_devices_over_the_fabric() {
    let began = Instant::now();
    let floed = floe_tests::bin("floed").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();

    // Keys and the devices' trust store.
    for k in ["release", "coordinator", "rogue"] {
        keys::generate(&root.join("keys").join(k)).unwrap();
    }
    let release_key = keys::load_signing_key(&root.join("keys/release")).unwrap();
    let coord = keys::load_signing_key(&root.join("keys/coordinator")).unwrap();
    let rogue = keys::load_signing_key(&root.join("keys/rogue")).unwrap();
    let trust = TrustStore::new(
        vec![TrustedKey::new(
            keys::load_public_key(&root.join("keys/release")).unwrap(),
        )],
        TrustedKey::new(keys::load_public_key(&root.join("keys/coordinator")).unwrap()),
    );
    let trust_dir = root.join("trust");
    keys::write_trust(&trust_dir, &trust).unwrap();

    // The simulated sensor, and the two releases.
    let sensor = root.join("sys/temp1_input");
    std::fs::create_dir_all(sensor.parent().unwrap()).unwrap();
    std::fs::write(&sensor, "21500\n").unwrap();
    let (v1, p1) = build(root, &trust, &release_key, "1.0.0", 1, &flow(&sensor, "v1"));
    let (v2, p2) = build(root, &trust, &release_key, "2.0.0", 2, &flow(&sensor, "v2"));

    // The coordinator's link, in this process.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let token = tokio_util::sync::CancellationToken::new();
    let mut lc = LinkConfig::new(root.join("coordinator"));
    lc.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    lc.mdns = false;
    lc.republish = Duration::from_millis(500);
    admit_with(&mut lc, &coord);
    let (link, mut rx) = rt.block_on(link::spawn(lc, token.clone())).unwrap();
    rt.block_on(link.seed(&v1.envelope, p1, CHUNK)).unwrap();
    rt.block_on(link.seed(&v2.envelope, p2, CHUNK)).unwrap();
    let reports: Reports = Arc::default();
    let sink = reports.clone();
    rt.spawn(async move {
        while let Some(r) = rx.recv().await {
            sink.lock().unwrap().insert(r.device_id.clone(), r);
        }
    });
    let start = Instant::now();
    let coord_addr = loop {
        if let Some(a) = rt.block_on(link.listen_addrs()).unwrap().first() {
            break a.to_string();
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "link never listened"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let h = Harness {
        rt,
        link,
        reports,
        coord,
    };

    // Three devices bootstrapped to the coordinator.
    let mut devices: Vec<Device> = (0..3)
        .map(|i| {
            let dir = root.join(format!("dev{i}"));
            let data = dir.join("data");
            std::fs::create_dir_all(&data).unwrap();
            let port = floe_tests::net::free_port().unwrap();
            let cfg = dir.join("floed.toml");
            std::fs::write(
                &cfg,
                format!(
                    "data_dir = \"{}\"\ndevice_type = \"test-rig\"\narch = \"{}\"\n\
                     http_listen = \"127.0.0.1:{port}\"\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\n\
                     bootstrap_peers = [\"{coord_addr}\"]\ntrust_store = \"{}\"\nmdns = false\n\
                     heartbeat_interval_ms = 500\nenroll_token = \"tok-{i}\"\n\
                     [trial]\nmin_ready_seconds = 1\ncheck_interval_ms = 100\n\
                     smoke_timeout_ms = 300\nstart_timeout_ms = 2000\nstop_timeout_ms = 500\n",
                    data.display(),
                    floe_wire::artifact::native_arch(),
                    trust_dir.display()
                ),
            )
            .unwrap();
            let key = floe_wire::identity::load_or_generate(&data).unwrap();
            Device {
                id: floe_wire::identity::device_id(&key),
                data,
                cfg,
                child: None,
            }
        })
        .collect();
    for d in &mut devices {
        d.start(&floed);
    }
    // Every device reports by itself (heartbeat), self-signed, with its enrollment token.
    let start = Instant::now();
    while !devices.iter().all(|d| h.report(&d.id).is_some()) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no reports from every device"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let first = h.report(&devices[1].id).unwrap();
    assert_eq!(first.enroll_token.as_deref(), Some("tok-1"));
    assert_eq!(first.applied, None);
    assert_eq!(first.active, None);

    let all: Vec<&Device> = devices.iter().collect();
    let limit = Duration::from_secs(20);
    // v1 in: stage (fetched over the fabric), then switch and trial.
    h.drive(&all, 1, Action::Stage, &v1, limit);
    h.drive(&all, 2, Action::Switch, &v1, limit);
    // v2 staged everywhere.
    h.drive(&all, 3, Action::Stage, &v2, limit);
    for d in &devices {
        let r = h.report(&d.id).unwrap();
        assert_eq!(r.active.as_ref().unwrap().release, 1, "{r:?}");
        assert_eq!(r.standby.as_ref().unwrap().release, 2, "{r:?}");
    }

    // A device restarted mid-way (staged, not switched) reports the generation it reached and
    // does not apply it again.
    let stopped_at = u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    devices[0].stop();
    let stages_before = count_audit(&devices[0].status(&floed), "stage", "ok");
    devices[0].start(&floed);
    let start = Instant::now();
    loop {
        if let Some(r) = h.report(&devices[0].id)
            && r.seq > stopped_at
        {
            let a = r.applied.unwrap();
            assert_eq!(
                (a.generation, a.action, a.progress),
                (3, Action::Stage, Progress::Done)
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no report after the restart"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    h.rt.block_on(h.link.post(
        &devices[0].id,
        3,
        post_bytes(&h.coord, &devices[0].id, 3, Action::Stage, &v2),
    ))
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        count_audit(&devices[0].status(&floed), "stage", "ok"),
        stages_before,
        "the re-sent generation was applied again"
    );

    // Switch to v2 and commit.
    let all: Vec<&Device> = devices.iter().collect();
    h.drive(&all, 4, Action::Switch, &v2, limit);
    h.drive(&all, 5, Action::Commit, &v2, limit);
    for d in &devices {
        let st = d.status(&floed);
        let r = h.report(&d.id).unwrap();
        let active = st["active"].as_str().unwrap().to_string();
        assert_eq!(
            slot_version(&st, &active).as_deref(),
            Some("2.0.0"),
            "{st:#}"
        );
        assert_eq!(st["last_good"].as_str(), Some(active.as_str()));
        assert_eq!(r.active.as_ref().unwrap().slot, active);
        assert_eq!(r.active.as_ref().unwrap().release, 2);
        assert_eq!(r.last_known_good.as_ref().unwrap().release, 2);
        assert!(!r.on_trial);
        assert!(r.health.unwrap().flow_running);
        // v1 is still there, untouched, in the other slot.
        let other = if active == "blue" { "green" } else { "blue" };
        assert_eq!(slot_version(&st, other).as_deref(), Some("1.0.0"));
    }

    // Rollback to v1 with every chunk store gone: nothing may come from the network.
    for d in &devices {
        std::fs::remove_dir_all(d.data.join("chunks")).unwrap();
    }
    h.drive(&all, 6, Action::Rollback, &v1, limit);
    for d in &devices {
        let st = d.status(&floed);
        let active = st["active"].as_str().unwrap().to_string();
        assert_eq!(
            slot_version(&st, &active).as_deref(),
            Some("1.0.0"),
            "{st:#}"
        );
        assert_eq!(h.report(&d.id).unwrap().active.unwrap().release, 1);
    }

    // A directive signed by an untrusted key is refused and audited.
    let forged = post_bytes(&rogue, &devices[1].id, 7, Action::Stage, &v2);
    h.rt.block_on(h.link.post(&devices[1].id, 7, forged))
        .unwrap();
    // A validly signed directive with a stale generation is refused and audited.
    h.rt.block_on(h.link.withdraw(&devices[2].id)).unwrap();
    let stale = post_bytes(&h.coord, &devices[2].id, 4, Action::Switch, &v2);
    h.rt.block_on(h.link.post(&devices[2].id, 4, stale))
        .unwrap();
    let start = Instant::now();
    loop {
        let forged_seen = audit_has(&devices[1].status(&floed), "refused", "signature");
        let stale_seen = audit_has(&devices[2].status(&floed), "refused", "not newer");
        if forged_seen && stale_seen {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "refusals not audited (forged {forged_seen}, stale {stale_seen})"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for d in &devices[1..] {
        let a = h.report(&d.id).unwrap().applied.unwrap();
        assert_eq!((a.generation, a.action), (6, Action::Rollback));
    }

    // v3 passes its smoke test, then its sensor starts failing on live data after the switch:
    // every device rolls back by itself and reports it.
    let sensor3 = root.join("sys/temp3_input");
    std::fs::write(&sensor3, "22000\n").unwrap();
    let (v3, p3) = build(
        root,
        &trust,
        &release_key,
        "3.0.0",
        3,
        &flow(&sensor3, "v3"),
    );
    h.rt.block_on(h.link.seed(&v3.envelope, p3, CHUNK)).unwrap();
    h.drive(&all, 8, Action::Stage, &v3, limit);
    std::fs::write(&sensor3, "EIO garbage\n").unwrap();
    h.drive_to(&all, 9, Action::Switch, &v3, Progress::RolledBack, limit);
    for d in &devices {
        let st = d.status(&floed);
        let active = st["active"].as_str().unwrap().to_string();
        assert_eq!(
            slot_version(&st, &active).as_deref(),
            Some("1.0.0"),
            "{st:#}"
        );
        let a = h.report(&d.id).unwrap().applied.unwrap();
        assert!(a.detail.contains("error rate"), "{a:?}");
    }

    let stats = h.rt.block_on(h.link.stats()).unwrap();
    assert_eq!(stats.reports_refused, 0, "{stats:?}");

    for d in &mut devices {
        d.stop();
        assert_eq!(d.status(&floed)["database"], "ok");
    }
    token.cancel();
    eprintln!("directive_fabric: {:.1} s", began.elapsed().as_secs_f64());
}

fn count_audit(st: &serde_json::Value, action: &str, outcome: &str) -> usize {
    st["audit"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == action && a["outcome"] == outcome)
        .count()
}
