//! One-command enrollment end to end: a real `floe serve`, the operator's `floe enroll-token
//! create --join`, `floed join` on a fresh device directory, then a real `floed daemon` that
//! comes online in the registry and commits a deployment.
//!
//! Besides the happy path it checks what a field install relies on: joining twice changes
//! nothing, a spent token, an expired string and another fleet's string are refused with a
//! message that says so, and a refused join writes no file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use floe_tests::Mosquitto;
use floe_tests::coordinator::{Coordinator, Device, pre_join_config, temperature_flow, wait};
use floe_wire::join::JoinDoc;
use floe_wire::proto::{ByteBuf, Envelope, Fixed, TrustStore, TrustedKey};
use serde_json::json;

fn floed_join(join: &Path, config: &Path, data: &Path, extra: &[&str]) -> Output {
    Command::new(floe_tests::bin("floed").unwrap())
        .arg("join")
        .arg(join)
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .args([
            "--device-type",
            "rpi4",
            "--region",
            "eu",
            "--label",
            "e2e=yes",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--no-start",
        ])
        .args(extra)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A join string like `real`'s but with another fleet's trust store.
fn foreign(real: &JoinDoc) -> String {
    let k = |s: u8| {
        TrustedKey::new(Fixed(
            ed25519_dalek::SigningKey::from_bytes(&[s; 32])
                .verifying_key()
                .to_bytes(),
        ))
    };
    let store = TrustStore::new(vec![k(201)], k(202));
    let mut doc = real.clone();
    doc.trust = ByteBuf(Envelope::sign(&store, &[]).unwrap().to_bytes().unwrap());
    doc.encode().unwrap()
}

#[test]
fn a_device_joins_with_one_command_comes_online_and_commits_a_deployment() {
    if !floe_tests::mosquitto_available() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "mosquitto is missing under CI"
        );
        eprintln!("SKIPPED: mosquitto is not installed");
        return;
    }
    let broker = Mosquitto::start().unwrap();
    let root = tempfile::tempdir().unwrap();
    let coord = Coordinator::start(root.path());

    // The operator's side.
    let join_path = root.path().join("pi-1.join");
    let join = coord.join_file(&join_path, "10m");
    assert!(join.starts_with("floe-join:1:"), "{join}");
    let mode = std::fs::metadata(&join_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the join file holds a token");
    let doc = JoinDoc::decode(&join, floe_wire::clock::unix_ms()).unwrap();
    assert_eq!(doc.coordinators, vec![coord.url()]);
    assert_eq!(doc.fabric, coord.bootstrap);
    assert_eq!(
        doc.trust.0,
        std::fs::read(coord.dir.join("trust/trust.cbor")).unwrap()
    );

    // The device's side: a site config without fleet keys, then one command.
    let dev_dir = root.path().join("pi-1");
    std::fs::create_dir_all(&dev_dir).unwrap();
    let config = dev_dir.join("floed.toml");
    let data = dev_dir.join("data");
    std::fs::write(
        &config,
        pre_join_config(floe_tests::net::free_port().unwrap()),
    )
    .unwrap();
    let out = floed_join(&join_path, &config, &data, &[]);
    assert!(out.status.success(), "floed join failed: {}", text(&out));
    assert!(text(&out).contains("enrolled at"), "{}", text(&out));
    assert!(
        text(&out).contains("floed daemon --config"),
        "{}",
        text(&out)
    );

    let key = floe_wire::identity::load_or_generate(&data).unwrap();
    let id = floe_wire::identity::device_id(&key);
    let reg = coord.device(&id);
    assert!(reg["enrolled_at"].is_string(), "enrolled at join: {reg}");
    assert_eq!(reg["type"], "rpi4");
    assert_eq!(reg["region"], "eu");
    let written = std::fs::read_to_string(&config).unwrap();
    assert!(
        written.contains("# Site settings, kept by floed join."),
        "{written}"
    );
    assert!(written.contains("min_ready_seconds = 2"), "{written}");
    assert!(
        !written.contains(&doc.token),
        "a spent token is not kept: {written}"
    );
    assert_eq!(
        std::fs::read(data.join("trust/trust.cbor")).unwrap(),
        doc.trust.0
    );

    // Idempotent: the same string again changes nothing.
    let again = floed_join(&join_path, &config, &data, &[]);
    assert!(
        again.status.success(),
        "second join failed: {}",
        text(&again)
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), written);

    // Another fleet's string is refused without --force, and nothing changes.
    let other = root.path().join("other.join");
    std::fs::write(&other, foreign(&doc)).unwrap();
    let refused = floed_join(&other, &config, &data, &[]);
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("another fleet") && text(&refused).contains("--force"),
        "{}",
        text(&refused)
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), written);
    assert_eq!(
        std::fs::read(data.join("trust/trust.cbor")).unwrap(),
        doc.trust.0
    );

    // The token is spent: a second fresh device with the same string is refused by the
    // coordinator, and no config is written for it.
    let second = root.path().join("pi-2");
    let spent = floed_join(
        &join_path,
        &second.join("floed.toml"),
        &second.join("data"),
        &[],
    );
    assert!(!spent.status.success());
    assert!(
        text(&spent).contains("refused the enrollment") && text(&spent).contains("token"),
        "{}",
        text(&spent)
    );
    assert!(!second.join("floed.toml").exists());
    assert!(!second.join("data/trust").exists());

    // An expired string is refused before anything is done.
    let mut old = doc.clone();
    old.expires_at_ms = floe_wire::clock::unix_ms() - 120_000;
    let expired_path = root.path().join("expired.join");
    std::fs::write(&expired_path, old.encode().unwrap()).unwrap();
    let third = root.path().join("pi-3");
    let expired = floed_join(
        &expired_path,
        &third.join("floed.toml"),
        &third.join("data"),
        &[],
    );
    assert!(!expired.status.success());
    assert!(text(&expired).contains("expired"), "{}", text(&expired));
    assert!(!third.exists(), "nothing is written for an expired string");

    // The joined device runs: online in the registry, then a deployment commits on it.
    let device = Device::start_configured(&data, &config);
    assert_eq!(device.id, id);
    coord.wait_online(&[&device], Duration::from_secs(60));
    let flow = coord.publish("Temperature Alert", temperature_flow(&broker.url()));
    let dep = coord.deploy(&flow, "all-at-once", &[&device], json!({"timeout": "60s"}));
    let done = coord.wait_done(&dep, Duration::from_secs(120));
    assert_eq!(
        done.status,
        floe_coordinator::contract::DeploymentStatus::Completed,
        "{:?}",
        done.status_reason
    );
    let s = wait("the device to commit", Duration::from_secs(20), || {
        let s = device.status();
        (s["phase"] == "idle" && s["last_good"] == s["active"] && s["active"].is_string())
            .then_some(s)
    });
    assert!(device.active_version().is_some(), "{s}");
    let reg = wait(
        "the registry to show the release",
        Duration::from_secs(10),
        || {
            let r = coord.device(&device.id);
            (r["installed"]["slot"] == s["active"]).then_some(r)
        },
    );
    assert_eq!(reg["online"], json!(true));
}
