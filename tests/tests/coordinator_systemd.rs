//! The coordinator as a systemd service: `systemd/floe.service` passes `systemd-analyze
//! verify`, its sysusers/tmpfiles snippets create the user and a private data directory, and a
//! real `floe serve` speaks the notify protocol the unit relies on (`Type=notify`,
//! `WatchdogSec=`): `READY=1` only once the API answers, `WATCHDOG=1` at half the watchdog
//! period, `STOPPING=1` on SIGTERM. The notify socket is a Unix datagram socket this test binds,
//! which is exactly what systemd hands a service in `NOTIFY_SOCKET`.
//!
//! Skips, saying why, where systemd's tools are missing; under `CI=true` that fails instead.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // A test fails loudly on any broken precondition.

use std::net::{Ipv4Addr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// False (after saying why) when `tool` is missing and this is not CI; panics under CI.
fn require(tool: &str) -> bool {
    let ok = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{tool} is missing under CI (.ci/run installs it)"
        );
        eprintln!("SKIP: {tool} is not installed");
    }
    ok
}

#[test]
fn floe_unit_verifies_with_its_hardening() {
    if !require("systemd-analyze") {
        return;
    }
    let unit = std::fs::read_to_string(repo().join("systemd/floe.service")).unwrap();
    for needed in [
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=",
        "Restart=always",
        "ExecStart=/usr/bin/floe serve --data-dir /var/lib/floe-coordinator ",
        "User=floe-coordinator",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/floe-coordinator",
    ] {
        assert!(unit.contains(needed), "floe.service lacks {needed}");
    }
    // The same hardening as floed.service: every hardening line of the device unit (all but
    // its paths, user and device-specific lines) is in the coordinator's unit too.
    let floed = std::fs::read_to_string(repo().join("systemd/floed.service")).unwrap();
    let hardening = floed
        .lines()
        .skip_while(|l| !l.starts_with("ProtectSystem="))
        .take_while(|l| !l.starts_with('['))
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter(|l| !l.starts_with("ReadWritePaths="));
    let mut checked = 0;
    for line in hardening {
        assert!(
            unit.lines().any(|l| l == line),
            "floe.service lacks floed.service's `{line}`"
        );
        checked += 1;
    }
    assert!(
        checked >= 15,
        "found only {checked} hardening lines in floed.service"
    );

    let floe = floe_tests::bin("floe").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("floe.service");
    std::fs::write(&copy, unit.replace("/usr/bin/floe", floe.to_str().unwrap())).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify failed or warned:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn coordinator_sysusers_and_tmpfiles_make_a_private_data_dir() {
    if !require("systemd-sysusers") || !require("systemd-tmpfiles") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    for (tool, extra, file) in [
        (
            "systemd-sysusers",
            None,
            "systemd/sysusers.d/floe-coordinator.conf",
        ),
        (
            "systemd-tmpfiles",
            Some("--create"),
            "systemd/tmpfiles.d/floe-coordinator.conf",
        ),
    ] {
        let mut cmd = Command::new(tool);
        cmd.arg(format!("--root={}", root.path().display()));
        if let Some(extra) = extra {
            cmd.arg(extra);
        }
        let out = cmd.arg(repo().join(file)).output().unwrap();
        assert!(
            out.status.success(),
            "{tool}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    use std::os::unix::fs::MetadataExt;
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).unwrap();
    let entry: Vec<&str> = passwd
        .lines()
        .find(|l| l.starts_with("floe-coordinator:"))
        .expect("the floe-coordinator user")
        .split(':')
        .collect();
    assert_eq!(entry[5], "/var/lib/floe-coordinator");
    assert_eq!(entry[6], "/usr/sbin/nologin");
    let meta = std::fs::metadata(root.path().join("var/lib/floe-coordinator")).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o700, "the keys and token are private");
    assert_eq!(meta.uid(), entry[2].parse::<u32>().unwrap());
}

/// Reads notify messages until one equals `what`; returns every message seen on the way.
fn wait_for(sock: &UnixDatagram, what: &str, limit: Duration) -> Vec<String> {
    let until = Instant::now() + limit;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < until {
        sock.set_read_timeout(Some(until - Instant::now() + Duration::from_millis(1)))
            .unwrap();
        match sock.recv(&mut buf) {
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                let hit = text.lines().any(|l| l == what);
                seen.push(text);
                if hit {
                    return seen;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("reading the notify socket: {e}"),
        }
    }
    panic!("no {what} within {limit:?}; saw {seen:?}");
}

#[test]
fn floe_serve_notifies_ready_feeds_the_watchdog_and_says_stopping() {
    let floe = floe_tests::bin("floe").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let sock_path = tmp.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let port = floe_tests::net::free_port().unwrap();
    let fabric = floe_tests::net::free_port().unwrap();
    let mut child = Command::new(&floe)
        .arg("serve")
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--fabric-listen", &format!("/ip4/127.0.0.1/tcp/{fabric}")])
        .arg("--no-mdns")
        .env("NOTIFY_SOCKET", &sock_path)
        // 400 ms: pings every 200 ms.
        .env("WATCHDOG_USEC", "400000")
        .env_remove("WATCHDOG_PID")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());

    let before = wait_for(&sock, "READY=1", Duration::from_secs(60));
    assert!(
        before.iter().all(|m| !m.contains("WATCHDOG=1")),
        "a watchdog ping before READY=1: {before:?}"
    );
    // READY=1 means up: the API is bound by then and the database and keys exist.
    assert!(
        TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok(),
        "READY=1 was sent before the API listened"
    );
    assert!(tmp.path().join("data/api-token").exists());
    assert!(tmp.path().join("data/trust/trust.cbor").exists());

    // At half the period: about 10 pings in 2 s. At least 5 proves it is periodic; at most 15
    // proves it is not a busy loop.
    let start = Instant::now();
    let mut pings = 0;
    let mut buf = [0u8; 4096];
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    while start.elapsed() < Duration::from_secs(2) {
        if let Ok(n) = sock.recv(&mut buf) {
            pings += String::from_utf8_lossy(&buf[..n])
                .lines()
                .filter(|l| *l == "WATCHDOG=1")
                .count();
        }
    }
    assert!(
        (5..=15).contains(&pings),
        "{pings} watchdog pings in 2 s with a 400 ms watchdog"
    );

    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    wait_for(&sock, "STOPPING=1", Duration::from_secs(15));
    let until = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < until,
            "floe serve did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "floe serve exited with {status}");
}

#[test]
fn floe_serve_without_systemd_runs_as_before() {
    // No NOTIFY_SOCKET: notifications are no-ops and the server serves normally.
    let floe = floe_tests::bin("floe").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let port = floe_tests::net::free_port().unwrap();
    let fabric = floe_tests::net::free_port().unwrap();
    let mut child = Command::new(&floe)
        .arg("serve")
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--fabric-listen", &format!("/ip4/127.0.0.1/tcp/{fabric}")])
        .arg("--no-mdns")
        .env_remove("NOTIFY_SOCKET")
        .env("WATCHDOG_USEC", "400000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let up = floe_tests::net::wait_for_port(port, Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    let alive = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    up.unwrap();
    assert!(alive, "floe serve exited without a notify socket");
}
