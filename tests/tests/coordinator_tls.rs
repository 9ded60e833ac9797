//! `floe serve --tls-cert --tls-key` (and `--tls-self-signed` with `floe --pin`) and the `floe`
//! CLI over https, as real processes: a self-signed certificate made here (rcgen), the CLI with
//! `--ca` (and `FLOE_CA`) works,
//! without it fails with a certificate error, and plain HTTP to the TLS port fails at once.
//! Named tokens through the CLI: a viewer is refused token management with its role named,
//! and a revoked token stops working.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn floe(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(floe_tests::bin("floe").unwrap());
    cmd.args(args)
        .env_remove("FLOE_TOKEN")
        .env_remove("FLOE_SERVER")
        .env_remove("FLOE_CA")
        .env("XDG_CONFIG_HOME", "/nonexistent-floe-config");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null()).output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn write_cert(dir: &Path) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    std::fs::write(dir.join("cert.pem"), ck.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), ck.key_pair.serialize_pem()).unwrap();
}

#[test]
fn the_cli_speaks_https_to_a_tls_coordinator_and_tokens_have_roles() {
    let root = tempfile::tempdir().unwrap();
    write_cert(root.path());
    let cert = root.path().join("cert.pem");
    let key = root.path().join("key.pem");
    let data = root.path().join("coordinator");
    let port = floe_tests::net::free_port().unwrap();
    let fabric = floe_tests::net::free_port().unwrap();
    let log = std::fs::File::create(root.path().join("serve.log")).unwrap();
    let _server = Killed(
        Command::new(floe_tests::bin("floe").unwrap())
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(&data)
            .args(["--fabric-listen", &format!("/ip4/127.0.0.1/tcp/{fabric}")])
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap(),
    );
    let https = format!("https://127.0.0.1:{port}");
    let ca = cert.to_str().unwrap().to_string();
    // Up: the token file is written and the API answers over https.
    let started = Instant::now();
    let admin = loop {
        let token = std::fs::read_to_string(data.join("api-token")).unwrap_or_default();
        if !token.trim().is_empty() {
            let o = floe(
                &[
                    "token",
                    "whoami",
                    "--server",
                    &https,
                    "--ca",
                    &ca,
                    "--token",
                    token.trim(),
                ],
                &[],
            );
            if o.status.success() {
                assert_eq!(
                    String::from_utf8_lossy(&o.stdout).trim(),
                    "bootstrap (admin)"
                );
                break token.trim().to_string();
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the TLS coordinator did not answer: {}",
            std::fs::read_to_string(root.path().join("serve.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // FLOE_CA works like --ca.
    let o = floe(
        &["token", "whoami", "--server", &https, "--token", &admin],
        &[("FLOE_CA", &ca)],
    );
    assert!(o.status.success(), "{}", text(&o));
    // Without the CA: a certificate error, naming the way out.
    let o = floe(
        &["token", "whoami", "--server", &https, "--token", &admin],
        &[],
    );
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr).to_lowercase();
    assert!(
        err.contains("certificate") && err.contains("--ca"),
        "{}",
        text(&o)
    );
    // Plain HTTP to the TLS port fails, and at once.
    let t = Instant::now();
    let o = floe(
        &[
            "token",
            "whoami",
            "--server",
            &format!("http://127.0.0.1:{port}"),
            "--token",
            &admin,
        ],
        &[],
    );
    assert!(!o.status.success(), "{}", text(&o));
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());

    // A viewer token: reads, but may not manage tokens; revoked, it stops working.
    let as_admin = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--server", &https, "--ca", &ca, "--token", &admin]);
        floe(&all, &[])
    };
    let o = as_admin(&[
        "token",
        "create",
        "grafana",
        "--role",
        "viewer",
        "--expires",
        "30d",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let viewer = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(viewer.starts_with("floe_"), "{}", text(&o));
    let as_viewer = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--server", &https, "--ca", &ca, "--token", &viewer]);
        floe(&all, &[])
    };
    let o = as_viewer(&["token", "whoami"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "grafana (viewer)",
        "{}",
        text(&o)
    );
    let o = as_viewer(&["flow", "list"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = as_viewer(&["token", "list"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("has role viewer"),
        "{}",
        text(&o)
    );
    let o = as_admin(&["token", "list"]);
    let listed = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        listed.contains("grafana") && listed.contains("bootstrap"),
        "{}",
        text(&o)
    );
    let o = as_admin(&["token", "revoke", "grafana"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = as_viewer(&["token", "whoami"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("unknown or revoked"),
        "{}",
        text(&o)
    );
    // The audit log names the token that made each change.
    let o = as_admin(&["audit", "--json"]);
    let audit = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        audit.contains("token:bootstrap") && audit.contains("token.revoke"),
        "{audit}"
    );
}

/// `floe serve --tls-self-signed`: the coordinator makes its certificate at first start and
/// prints the fingerprint; the CLI pinning it (`--pin`, `FLOE_PIN`) works, a wrong pin is
/// refused naming both fingerprints.
#[test]
fn a_self_signed_coordinator_is_reached_by_pinning_its_printed_fingerprint() {
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
            .args(["--tls-self-signed", "--tls-name", "coordinator.test"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap(),
    );
    let https = format!("https://127.0.0.1:{port}");
    let started = Instant::now();
    let (admin, pin) = loop {
        let token = std::fs::read_to_string(data.join("api-token")).unwrap_or_default();
        let pin = std::fs::read_to_string(data.join("tls/fingerprint")).unwrap_or_default();
        if !token.trim().is_empty() && !pin.trim().is_empty() {
            let o = floe(
                &[
                    "token",
                    "whoami",
                    "--server",
                    &https,
                    "--pin",
                    pin.trim(),
                    "--token",
                    token.trim(),
                ],
                &[],
            );
            if o.status.success() {
                assert_eq!(
                    String::from_utf8_lossy(&o.stdout).trim(),
                    "bootstrap (admin)"
                );
                break (token.trim().to_string(), pin.trim().to_string());
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the self-signed coordinator did not answer: {}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // The fingerprint the operator reads in the output is the one that works.
    let printed = std::fs::read_to_string(&log_path).unwrap();
    assert!(printed.contains(&format!("fingerprint {pin}")), "{printed}");
    let o = floe(
        &["token", "whoami", "--server", &https, "--token", &admin],
        &[("FLOE_PIN", &pin)],
    );
    assert!(o.status.success(), "{}", text(&o));
    let wrong = format!("sha256:{}", "ab".repeat(32));
    let o = floe(
        &[
            "token", "whoami", "--server", &https, "--token", &admin, "--pin", &wrong,
        ],
        &[],
    );
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&pin) && err.contains(&wrong), "{}", text(&o));
}
