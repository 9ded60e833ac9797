//! `floed join` against a coordinator that serves only https, as real processes: `floe serve
//! --tls-self-signed`, the operator's `floe enroll-token create --join` (over https, pinned),
//! whose string carries https:// addresses and the certificate's pin, and `floed join` on a
//! fresh device directory that enrolls with it. A string whose pin is not the coordinator's is
//! refused naming both fingerprints, writes nothing and spends no token; a string without a
//! pin is refused unless `--ca` names a certificate the coordinator's chains to.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use floe_coordinator::client::Client;
use floe_tests::coordinator::pre_join_config;
use floe_wire::join::JoinDoc;
use floe_wire::proto::Fixed;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A fresh device directory with the site's settings; the config file and the data dir.
fn device_dir(root: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("floed.toml");
    std::fs::write(
        &config,
        pre_join_config(floe_tests::net::free_port().unwrap()),
    )
    .unwrap();
    (config, dir.join("data"))
}

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
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--no-start",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `doc` with `change` applied, written to `path` as a join string.
fn rewrite(doc: &JoinDoc, path: &Path, change: impl FnOnce(&mut JoinDoc)) {
    let mut d = doc.clone();
    change(&mut d);
    std::fs::write(path, d.encode().unwrap()).unwrap();
}

#[test]
fn a_device_joins_a_https_only_coordinator_by_its_pin_and_a_wrong_pin_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("coordinator");
    let port = floe_tests::net::free_port().unwrap();
    let fabric = floe_tests::net::free_port().unwrap();
    let log_path = root.path().join("serve.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let _server = Killed(
        Command::new(floe_tests::bin("floe").unwrap())
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(&data)
            .args(["--fabric-listen", &format!("/ip4/127.0.0.1/tcp/{fabric}")])
            .arg("--tls-self-signed")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap(),
    );
    let https = format!("https://127.0.0.1:{port}");
    let started = Instant::now();
    let (admin, pin, client) = loop {
        let token = std::fs::read_to_string(data.join("api-token")).unwrap_or_default();
        let pin = std::fs::read_to_string(data.join("tls/fingerprint")).unwrap_or_default();
        if !token.trim().is_empty() && !pin.trim().is_empty() {
            let c = Client::with_pin(&https, Some(token.trim().into()), pin.trim()).unwrap();
            if c.healthz().is_ok() && data.join("fabric-addrs").exists() {
                break (token.trim().to_string(), pin.trim().to_string(), c);
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the https coordinator did not answer: {}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // Plain HTTP is not served at all.
    let plain = Client::new(&format!("http://127.0.0.1:{port}"), None).unwrap();
    assert!(
        plain.healthz().is_err(),
        "the coordinator answers plain HTTP"
    );

    let join_file = |name: &str| {
        let path = root.path().join(name);
        let o = Command::new(floe_tests::bin("floe").unwrap())
            .args(["enroll-token", "create", "--join", "--ttl", "10m", "--out"])
            .arg(&path)
            .args(["--server", &https, "--pin", &pin, "--token", &admin])
            .env_remove("FLOE_TOKEN")
            .env_remove("FLOE_SERVER")
            .env_remove("FLOE_PIN")
            .env("XDG_CONFIG_HOME", "/nonexistent-floe-config")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "enroll-token create --join: {}",
            text(&o)
        );
        let doc = JoinDoc::decode(
            std::fs::read_to_string(&path).unwrap().trim(),
            floe_wire::clock::unix_ms(),
        )
        .unwrap();
        (path, doc)
    };

    // The operator's string: https addresses and the certificate's pin.
    let (good_path, good) = join_file("pi-1.join");
    assert_eq!(good.coordinators, vec![https.clone()]);
    assert_eq!(good.tls_pin_text().as_deref(), Some(pin.as_str()));

    // A string whose pin is not the coordinator's certificate: refused, naming both, with
    // no file written and the token not spent.
    let (spare_path, spare) = join_file("pi-2.join");
    let wrong_path = root.path().join("wrong-pin.join");
    rewrite(&spare, &wrong_path, |d| d.tls_pin = Some(Fixed([0xab; 32])));
    let (config2, data2) = device_dir(root.path(), "pi-2");
    let before = std::fs::read_to_string(&config2).unwrap();
    let o = floed_join(&wrong_path, &config2, &data2, &[]);
    assert!(
        !o.status.success(),
        "a wrong pin was accepted: {}",
        text(&o)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    let wrong = format!("sha256:{}", "ab".repeat(32));
    assert!(err.contains(&pin) && err.contains(&wrong), "{}", text(&o));
    assert_eq!(std::fs::read_to_string(&config2).unwrap(), before);
    assert!(
        !data2.join("trust").exists(),
        "a refused join wrote the trust store"
    );

    // The right string enrolls over https.
    let (config1, data1) = device_dir(root.path(), "pi-1");
    let o = floed_join(&good_path, &config1, &data1, &[]);
    assert!(o.status.success(), "floed join failed: {}", text(&o));
    assert!(
        text(&o).contains(&format!("enrolled at {https}")),
        "{}",
        text(&o)
    );
    assert!(
        text(&o).contains(&format!("coordinator certificate {pin}")),
        "{}",
        text(&o)
    );
    let key = floe_wire::identity::load_or_generate(&data1).unwrap();
    let id = floe_wire::identity::device_id(&key);
    let reg: serde_json::Value = client.get_device(&id).unwrap().json().unwrap();
    assert!(reg["enrolled_at"].is_string(), "enrolled at join: {reg}");
    assert_eq!(reg["type"], "rpi4");

    // The same https string without its pin: refused before anything is sent (the token is
    // still unspent), saying to give --ca; with the coordinator's certificate as --ca it
    // enrolls.
    let unpinned_path = root.path().join("unpinned.join");
    rewrite(&spare, &unpinned_path, |d| d.tls_pin = None);
    let o = floed_join(&unpinned_path, &config2, &data2, &[]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--ca"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read_to_string(&config2).unwrap(), before);
    let ca = data.join("tls/cert.pem");
    let o = floed_join(
        &unpinned_path,
        &config2,
        &data2,
        &["--ca", ca.to_str().unwrap()],
    );
    assert!(o.status.success(), "join with --ca failed: {}", text(&o));
    assert!(text(&o).contains("enrolled at https://"), "{}", text(&o));
    let key2 = floe_wire::identity::load_or_generate(&data2).unwrap();
    let reg: serde_json::Value = client
        .get_device(&floe_wire::identity::device_id(&key2))
        .unwrap()
        .json()
        .unwrap();
    assert!(reg["enrolled_at"].is_string(), "{reg}");
    drop(spare_path);

    // A CA file the coordinator's certificate does not chain to is refused, not taken as an
    // outage: a third device, its own fresh token.
    let (_, third) = join_file("pi-3.join");
    let third_path = root.path().join("pi-3-unpinned.join");
    rewrite(&third, &third_path, |d| d.tls_pin = None);
    let other_ca = root.path().join("other-ca.pem");
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    std::fs::write(&other_ca, ck.cert.pem()).unwrap();
    let (config3, data3) = device_dir(root.path(), "pi-3");
    let o = floed_join(
        &third_path,
        &config3,
        &data3,
        &["--ca", other_ca.to_str().unwrap()],
    );
    assert!(
        !o.status.success(),
        "an untrusted certificate was accepted: {}",
        text(&o)
    );
    assert!(!data3.join("trust").exists(), "{}", text(&o));
}
