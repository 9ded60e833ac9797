//! The hostile-input suite on the device (issue 16): real `floed` processes fed what an attacker
//! or a careless operator would feed them. Each case failed on the code before the fix: the
//! config loaded and later wrapped or panicked, an unsigned directory installed, the caller chose
//! its audit actor, the data directory stayed world-readable, `floed status | head` panicked.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // A test fails loudly on any broken precondition.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use floe_tests::agent::*;

const DEV_SETTING: &str = "[dev]\nallow_unsigned_install = true\n";

/// The harness config without the developer setting: what a field device runs.
fn field_config(root: &Path, data: &Path) -> std::path::PathBuf {
    let cfg = config(root, data, 1);
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.contains(DEV_SETTING));
    std::fs::write(&cfg, text.replace(DEV_SETTING, "")).unwrap();
    cfg
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// `floed status` on a config: every bad value is refused at load with an error naming the key
/// (and, for bounds, the limit), never a panic and never accepted.
#[test]
fn config_values_out_of_bounds_are_refused_at_load_naming_key_and_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg = config(tmp.path(), &data, 1);
    let base = std::fs::read_to_string(&cfg).unwrap();
    let huge = i64::MAX;
    let cases: Vec<(String, &str, &str)> = vec![
        (
            format!("fetch_timeout_seconds = {huge}\n{base}"),
            "fetch_timeout_seconds",
            "86400",
        ),
        (
            base.replace(
                "min_ready_seconds = 1",
                &format!("min_ready_seconds = {huge}"),
            ),
            "trial.min_ready_seconds",
            "604800",
        ),
        (
            format!("{base}[health]\ntemperature_unhealthy_celsius = nan\n"),
            "health.temperature_unhealthy_celsius",
            "",
        ),
        (
            format!("{base}[health]\ntemperature_degraded_celsius = -inf\n"),
            "health.temperature_degraded_celsius",
            "",
        ),
        (
            format!("region = \"{}\"\n{base}", "r".repeat(65)),
            "region",
            "64",
        ),
        (
            format!("region = \"eu\\u001b]0;owned\\u0007\"\n{base}"),
            "region",
            "control character",
        ),
        (
            format!("labels = {{ site = \"north\\nsouth\" }}\n{base}"),
            "labels",
            "control character",
        ),
    ];
    for (text, key, limit) in cases {
        std::fs::write(&cfg, &text).unwrap();
        let out = run(&cfg, &["status", "--json"], &[], Duration::from_secs(20));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{key}: {err}");
        assert!(!err.contains("panicked"), "{key}: {err}");
        assert!(err.contains(key) && err.contains(limit), "{key}: {err}");
    }
}

/// An unsigned directory is refused by default, the refusal is audited, nothing is installed,
/// and the data directory and database are private afterwards even though they were created
/// world-readable beforehand.
#[test]
fn unsigned_install_is_refused_by_default_and_the_data_directory_is_made_private() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(data.join("floed.db"), b"").unwrap();
    std::fs::set_permissions(
        data.join("floed.db"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let cfg = field_config(tmp.path(), &data);

    let out = install(&cfg, &stage(tmp.path(), "1.0", &ticking_flow("v1"), &[]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("dev.allow_unsigned_install"), "{err}");
    let st = status(&cfg);
    assert!(st["active"].is_null(), "{st:#}");
    assert!(audit_has(&st, "install", "refused", "unsigned"), "{st:#}");

    assert_eq!(mode(&data), 0o700, "data directory");
    assert_eq!(mode(&data.join("floed.db")), 0o600, "state database");
}

/// The control socket takes the caller from the kernel: the audit actor is the real uid (the
/// environment's USER is ignored), a request naming its own actor is refused, and a local user
/// who is neither root, the daemon's user nor in the operator group may not roll back even when
/// it can reach the socket.
#[test]
fn control_socket_knows_its_caller_and_refuses_non_operators() {
    if !nix::unistd::Uid::effective().is_root() {
        panic!("this test runs a command as another user and needs root");
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg = config(tmp.path(), &data, 0);
    let mut d = Daemon::start(&cfg, &[]);
    d.wait_ready(&data, Duration::from_secs(30));

    let out = run(
        &cfg,
        &[
            "install",
            stage(tmp.path(), "1.0", &ticking_flow("v1"), &[])
                .to_str()
                .unwrap(),
        ],
        &[("USER", "mallory"), ("SUDO_USER", "mallory")],
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = status(&cfg);
    let actors: Vec<&str> = st["audit"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "switch")
        .map(|a| a["actor"].as_str().unwrap())
        .collect();
    assert!(!actors.is_empty(), "{st:#}");
    assert!(
        actors.iter().all(|a| a.starts_with("local:uid=0")),
        "{actors:?}"
    );

    // Caller-chosen actors are refused outright.
    let sock = data.join("floed.sock");
    let (code, body) = floe_runtime::http::control_request(
        &sock,
        "POST",
        "/rollback",
        Some(r#"{"reason":"x","actor":"coordinator:dep_1"}"#),
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(code, 422, "{body}");

    // A stranger who can reach the socket (as a member of its group could) is refused.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o711)).unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(floed())
        .args(["rollback", "--reason", "stranger", "--config"])
        .arg(&cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("setpriv is part of util-linux");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a stranger rolled back: {err}");
    assert!(
        err.contains("403") && err.contains("may not change"),
        "{err}"
    );
    let st = status(&cfg);
    assert_eq!(st["active"], "blue", "{st:#}");
    assert!(!audit_has(&st, "rollback", "ok", "stranger"), "{st:#}");
    d.stop();
}

/// `floed status | head`: a closed stdout ends the command quietly, not with a panic (101).
#[test]
fn status_into_a_closed_pipe_does_not_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg = config(tmp.path(), &data, 0);
    let out = install(&cfg, &stage(tmp.path(), "1.0", &ticking_flow("v1"), &[]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (reader, writer) = nix::unistd::pipe().unwrap();
    drop(reader);
    let out = Command::new(floed())
        .args(["status", "--config"])
        .arg(&cfg)
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
