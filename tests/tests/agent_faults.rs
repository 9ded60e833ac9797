//! End to end: new versions that fail in the ways field software fails, each installed into a
//! real `floed daemon` (real slots, real SQLite, the real engine) and each rolled back on its
//! own and audited: a version that fails to start once its outputs are live, one that hangs in
//! a node, one that panics in a node, and one whose error rate climbs. The failures come from
//! the test-only `fault` node kind (feature `fault-nodes`).
//!
//! Also end to end: the smoke test declared in a signed manifest (`floe artifact build
//! --smoke-test`), which refuses a version whose expected output does not come, and the
//! per-slot MQTT client ids, which let the smoke test of the standby slot connect to the same
//! Mosquitto as the live flow without knocking it off.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // A test fails loudly on any broken precondition.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use floe_tests::agent::*;
use floe_tests::{Mosquitto, Subscription, mosquitto_available};
use serde_json::json;

/// Installs with the longer limit these cases need (a smoke test runs inside the install).
fn install_slow(cfg: &Path, source: &Path) -> std::process::Output {
    install_within(cfg, source, Duration::from_secs(90))
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// Replaces the trial length in a config written by [`config`].
fn set_min_ready(cfg: &Path, seconds: u64) {
    let text = std::fs::read_to_string(cfg).unwrap();
    let start = text.find("min_ready_seconds = ").unwrap();
    let end = start + text[start..].find('\n').unwrap();
    let text = format!(
        "{}min_ready_seconds = {seconds}{}",
        &text[..start],
        &text[end..]
    );
    std::fs::write(cfg, text).unwrap();
}

/// The old version: a tick every 50 ms carrying the current time in ms (inject's default
/// payload), published to MQTT when a broker is given.
fn v1_flow(broker: Option<(&str, &str)>) -> String {
    let sink = match broker {
        Some((url, topic)) => {
            json!({"id": "out", "type": "mqtt_out", "name": "Out", "config": {"broker": url, "topic": topic}})
        }
        None => json!({"id": "out", "type": "debug", "name": "Out", "config": {"level": "debug"}}),
    };
    json!({
        "nodes": [
            {"id": "tick", "type": "inject", "name": "Tick", "config": {"interval": "50ms", "once": true}},
            sink
        ],
        "connections": [{"source": "tick", "target": "out"}]
    })
    .to_string()
}

/// The new version: a tick every 50 ms through a `fault` node into a debug sink.
fn fault_flow(fault: serde_json::Value) -> String {
    json!({
        "nodes": [
            {"id": "tick", "type": "inject", "name": "Tick", "config": {"payload": {"tag": "v2"}, "interval": "50ms", "once": true}},
            {"id": "bad", "type": "fault", "name": "Bad", "config": fault},
            {"id": "out", "type": "debug", "name": "Out", "config": {"level": "debug"}}
        ],
        "connections": [{"source": "tick", "target": "bad"}, {"source": "bad", "target": "out"}]
    })
    .to_string()
}

/// Collects the systemd notifications floed sends to `NOTIFY_SOCKET`, with their arrival time.
struct Notify {
    path: PathBuf,
    seen: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Notify {
    fn bind(dir: &Path) -> Notify {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            // Bounded: the thread ends when the test (and its temp dir) is gone or after 5 min.
            let until = Instant::now() + Duration::from_secs(300);
            while Instant::now() < until && Arc::strong_count(&s2) > 1 {
                if let Ok(n) = sock.recv(&mut buf) {
                    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                    s2.lock().unwrap().push((Instant::now(), msg));
                }
            }
        });
        Notify { path, seen }
    }

    /// The times of the watchdog pings.
    fn pings(&self) -> Vec<Instant> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, m)| m.contains("WATCHDOG=1"))
            .map(|(t, _)| *t)
            .collect()
    }
}

/// One fault case: v1 committed and running under a daemon, v2 with a `fault` node installed
/// through the daemon, then the checks every case shares. Returns the final status.
fn fault_case(fault: serde_json::Value, needle: &str) -> serde_json::Value {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg = config(tmp.path(), &data, 0);
    let broker = if mosquitto_available() {
        Some(Mosquitto::start().unwrap())
    } else {
        eprintln!("mosquitto not installed: the MQTT resume check is skipped");
        None
    };
    let url = broker.as_ref().map(Mosquitto::url);
    let v1 = v1_flow(url.as_deref().map(|u| (u, "floe/faults/v1")));
    let out = install_slow(&cfg, &stage(tmp.path(), "1.0", &v1, &[]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    set_min_ready(&cfg, 60);

    let notify = Notify::bind(tmp.path());
    let sock = notify.path.to_str().unwrap().to_string();
    // No backtraces: a panicking node would otherwise make floed symbolize one per message.
    let mut d = Daemon::start(
        &cfg,
        &[
            ("NOTIFY_SOCKET", &sock),
            ("WATCHDOG_USEC", "2000000"),
            ("RUST_BACKTRACE", "0"),
        ],
    );
    d.wait_ready(&data, Duration::from_secs(30));
    let sub = broker
        .as_ref()
        .map(|b| Subscription::start(b.port(), "floe/faults/#").unwrap());
    if let Some(sub) = &sub {
        sub.take(3, Duration::from_secs(10))
            .expect("the old flow publishes before the install");
    }

    let v2 = stage(tmp.path(), "2.0", &fault_flow(fault), &[]);
    let cfg2 = cfg.clone();
    let started = Instant::now();
    let installer = std::thread::spawn(move || install_slow(&cfg2, &v2));
    let out = installer.join().unwrap();
    let took = started.elapsed();
    let returned_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let stdout = text(&out.stdout);
    assert!(
        !out.status.success(),
        "the faulty version was not refused: {stdout} {}",
        text(&out.stderr)
    );
    // Through the daemon the outcome comes back as JSON.
    assert!(
        stdout.contains("\"outcome\":\"rolled_back\"") && stdout.contains("\"slot\":\"blue\""),
        "{stdout}"
    );
    assert!(stdout.contains(needle), "{stdout}");
    // Well inside the 60 s trial: the failure was detected, not waited out.
    assert!(took < Duration::from_secs(30), "took {took:?}");

    // The daemon is alive and answers; the old version is active again.
    assert!(d.child.try_wait().unwrap().is_none(), "floed died");
    let st = wait_status(&cfg, Duration::from_secs(10), |s| {
        s["health"]["version"] == "1.0"
    });
    assert_eq!(st["active"], "blue", "{st:#}");
    assert_eq!(st["last_good"], "blue", "{st:#}");
    assert_eq!(st["phase"], "idle", "{st:#}");
    assert_eq!(active_slot(&data).as_deref(), Some("blue"));
    // Audited, with the reason.
    assert!(
        audit_has(&st, "switch", "started", "blue -> green"),
        "{st:#}"
    );
    assert!(audit_has(&st, "rollback", "ok", needle), "{st:#}");
    // The previous slot was untouched: same version, every file still matches its hash.
    let blue = &st["slots"][0];
    assert_eq!(blue["slot"], "blue");
    assert_eq!(blue["version"], "1.0", "{st:#}");
    assert_eq!(blue["verified"], "ok", "{st:#}");
    // The old flow's output resumes on the real broker.
    if let Some(sub) = &sub {
        // Each message carries the time it was made: look for one made after the rollback.
        let until = Instant::now() + Duration::from_secs(10);
        let fresh = loop {
            let m = sub.next(Duration::from_secs(1));
            if let Some(ms) = m.as_ref().and_then(|m| m.payload.parse::<u64>().ok())
                && ms >= returned_ms
            {
                break true;
            }
            if Instant::now() >= until {
                break false;
            }
        };
        assert!(
            fresh,
            "the old flow did not publish again after the rollback"
        );
    }
    // The main loop kept pinging the watchdog throughout, the failure and the rollback included.
    let pings = notify.pings();
    assert!(pings.len() >= 2, "only {} watchdog pings", pings.len());
    assert!(
        pings.last().unwrap().elapsed() < Duration::from_secs(5),
        "the pings stopped"
    );
    let worst = pings
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    // Generous against a loaded machine; a loop blocked by the hung flow would never ping.
    assert!(
        worst < Duration::from_secs(5),
        "a watchdog gap of {worst:?}"
    );
    d.stop();
    assert_eq!(status(&cfg)["database"], "ok");
    st
}

#[test]
fn version_that_fails_to_start_once_live_is_switched_to_and_rolled_back() {
    // The muted smoke test passes; the live start claims the device and fails.
    let st = fault_case(json!({"mode": "fail_start_live"}), "failed to start");
    assert!(audit_has(&st, "smoke", "ok", "2.0"), "{st:#}");
    assert!(
        audit_has(&st, "rollback", "ok", "could not claim"),
        "{st:#}"
    );
}

#[test]
fn version_that_hangs_in_a_node_is_rolled_back_and_abandoned() {
    // After 1 s the node holds a message forever; with start_timeout 2 s it counts as hung.
    let st = fault_case(json!({"mode": "hang_after", "after": "1s"}), "stuck");
    assert!(audit_has(&st, "rollback", "ok", "node bad"), "{st:#}");
}

#[test]
fn version_that_panics_in_a_node_is_rolled_back_and_floed_survives() {
    let st = fault_case(json!({"mode": "panic_after", "after": "1s"}), "restarts");
    assert!(audit_has(&st, "rollback", "ok", "unhealthy"), "{st:#}");
}

#[test]
fn version_whose_error_rate_climbs_is_rolled_back() {
    let st = fault_case(
        json!({"mode": "error_rate", "after": "1s", "rate": 0.5}),
        "error rate",
    );
    assert!(audit_has(&st, "rollback", "ok", "node bad"), "{st:#}");
}

/// A release key and a trust store in the device's default place (`<data>/trust`), made with
/// the `floe` CLI.
fn release_key(dir: &Path, data: &Path) -> PathBuf {
    let floe = floe_tests::bin("floe").unwrap();
    for k in ["release", "coord"] {
        let o = Command::new(&floe)
            .args(["keys", "gen", "--out", k])
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(o.status.success(), "keys gen: {}", text(&o.stderr));
    }
    std::fs::create_dir_all(data).unwrap();
    let o = Command::new(&floe)
        .args([
            "keys",
            "trust-init",
            "--release-key",
            "release",
            "--coordinator-key",
            "coord",
            "--out",
        ])
        .arg(data.join("trust"))
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "trust-init: {}", text(&o.stderr));
    dir.join("release")
}

/// `floe artifact build` with a smoke-test file.
fn build_bundle(
    dir: &Path,
    key: &Path,
    version: &str,
    release: u64,
    flow: &str,
    smoke: &serde_json::Value,
) -> PathBuf {
    let flow_path = dir.join(format!("flow-{version}.json"));
    std::fs::write(&flow_path, flow).unwrap();
    let smoke_path = dir.join(format!("smoke-{version}.json"));
    std::fs::write(&smoke_path, smoke.to_string()).unwrap();
    let out = dir.join(format!("v{version}.floe"));
    let o = Command::new(floe_tests::bin("floe").unwrap())
        .args(["artifact", "build", "--name", "demo", "--version", version])
        .args(["--release", &release.to_string(), "--key"])
        .arg(key)
        .arg("--flow")
        .arg(&flow_path)
        .arg("--smoke-test")
        .arg(&smoke_path)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "artifact build: {}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("1 inputs, 1 expected outputs"),
        "{}",
        text(&o.stdout)
    );
    out
}

/// A flow that marks what enters its node `in` with `payload.checked = <mark>` and sends it to
/// the debug sink `out`.
fn checking_flow(mark: &str) -> String {
    json!({
        "nodes": [
            {"id": "in", "type": "change", "name": "In", "config": {"rules": [{"action": "set", "property": "payload.checked", "value": mark}]}},
            {"id": "out", "type": "debug", "name": "Out", "config": {"level": "debug"}}
        ],
        "connections": [{"source": "in", "target": "out"}]
    })
    .to_string()
}

fn smoke_file() -> serde_json::Value {
    json!({
        "inject": [{"node": "in", "payload": {"x": 21}}],
        "expect": [{"node": "out", "payload": {"x": 21, "checked": "yes"}}],
        "timeout_ms": 1500
    })
}

#[test]
fn signed_smoke_test_refuses_a_version_whose_output_is_wrong_and_installs_one_that_passes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg = config(tmp.path(), &data, 0);
    let key = release_key(tmp.path(), &data);
    let v1 = install_slow(&cfg, &stage(tmp.path(), "1.0.0", &v1_flow(None), &[]));
    assert!(v1.status.success(), "{}", text(&v1.stderr));

    // 2.0.0 runs and stays healthy, but its output is not what the smoke test expects.
    let wrong = build_bundle(
        tmp.path(),
        &key,
        "2.0.0",
        2,
        &checking_flow("no"),
        &smoke_file(),
    );
    let out = install_slow(&cfg, &wrong);
    assert!(!out.status.success(), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(err.contains("smoke test of 2.0.0 failed"), "{err}");
    assert!(err.contains("expected output"), "{err}");
    assert!(
        err.contains("from node out not seen within 1500 ms"),
        "{err}"
    );
    let st = status(&cfg);
    assert_eq!(st["active"], "blue");
    assert_eq!(st["last_good"], "blue");
    assert!(
        audit_has(&st, "smoke", "failed", "expected output"),
        "{st:#}"
    );
    assert!(!audit_has(&st, "switch", "started", "2.0.0"), "{st:#}");

    // 2.0.1 produces exactly what is expected: it installs and commits.
    let right = build_bundle(
        tmp.path(),
        &key,
        "2.0.1",
        3,
        &checking_flow("yes"),
        &smoke_file(),
    );
    let out = install_slow(&cfg, &right);
    assert!(
        out.status.success(),
        "{} {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let st = status(&cfg);
    assert_eq!(st["active"], "green");
    assert!(audit_has(&st, "smoke", "ok", "2.0.1"), "{st:#}");
    assert!(audit_has(&st, "commit", "ok", "2.0.1"), "{st:#}");
}

#[test]
fn smoke_test_of_the_standby_slot_does_not_knock_the_live_flow_off_the_broker() {
    if !mosquitto_available() {
        eprintln!("skipped: mosquitto is not installed");
        return;
    }
    let broker = Mosquitto::start().unwrap();
    let url = broker.url();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg = config(tmp.path(), &data, 0);
    let key = release_key(tmp.path(), &data);
    // Both versions name the same client id; each slot must still connect as itself.
    let v1 = json!({
        "nodes": [
            {"id": "tick", "type": "inject", "name": "Tick", "config": {"payload": {"tag": "v1"}, "interval": "20ms"}},
            {"id": "pub", "type": "mqtt_out", "name": "Pub", "config": {"broker": url, "topic": "floe/smoke/v1", "client_id": "shared"}}
        ],
        "connections": [{"source": "tick", "target": "pub"}]
    })
    .to_string();
    assert!(
        install_slow(&cfg, &stage(tmp.path(), "1.0.0", &v1, &[]))
            .status
            .success()
    );

    // The daemon's log shows every MQTT disconnect of the live flow.
    let log_path = tmp.path().join("floed.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = Command::new(floed())
        .arg("daemon")
        .arg("--config")
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut d = Daemon { child };
    d.wait_ready(&data, Duration::from_secs(30));
    let sub = Subscription::start(broker.port(), "floe/smoke/#").unwrap();
    sub.take(5, Duration::from_secs(10)).unwrap();

    // The smoke test of 2.0.0 waits 1 s for its delayed expected output. Its `mqtt_in` (which
    // subscribes even when outputs are muted) is connected to the same broker the whole time,
    // under the client id the live flow's `mqtt_out` was given.
    let flow = json!({
        "nodes": [
            {"id": "in", "type": "delay", "name": "In", "config": {"delay": "1s"}},
            {"id": "out", "type": "debug", "name": "Out", "config": {"level": "debug"}},
            {"id": "listen", "type": "mqtt_in", "name": "Listen", "config": {"broker": url, "topic": "floe/commands/#", "client_id": "shared"}},
            {"id": "tick", "type": "inject", "name": "Tick", "config": {"payload": {"tag": "v2"}, "interval": "20ms"}},
            {"id": "pub", "type": "mqtt_out", "name": "Pub", "config": {"broker": url, "topic": "floe/smoke/v2", "client_id": "v2-pub"}}
        ],
        "connections": [
            {"source": "in", "target": "out"},
            {"source": "listen", "target": "out"},
            {"source": "tick", "target": "pub"}
        ]
    })
    .to_string();
    let smoke = json!({
        "inject": [{"node": "in", "payload": {"x": 1}}],
        "expect": [{"node": "out", "payload": {"x": 1}}],
        "timeout_ms": 3000
    });
    let bundle = build_bundle(tmp.path(), &key, "2.0.0", 2, &flow, &smoke);
    let cfg2 = cfg.clone();
    let begun = Instant::now();
    let installer = std::thread::spawn(move || install_slow(&cfg2, &bundle));
    // From the start of the install until the switch (the first message of 2.0.0, whose
    // outputs are live only after it), the live flow keeps publishing without a pause: staging
    // and the smoke test, with its own MQTT client on the same broker, run beside it.
    let mut last = Instant::now();
    let mut worst = Duration::ZERO;
    let mut v1_count = 0;
    let switched = loop {
        let m = sub
            .next(Duration::from_secs(5))
            .expect("the live flow stopped publishing before the switch");
        if m.topic == "floe/smoke/v2" {
            break begun.elapsed();
        }
        worst = worst.max(last.elapsed());
        last = Instant::now();
        v1_count += 1;
        assert!(begun.elapsed() < Duration::from_secs(30), "no switch");
    };
    // The smoke test alone waits 1 s for its delayed output.
    assert!(
        switched >= Duration::from_secs(1),
        "switched after {switched:?}"
    );
    assert!(
        v1_count >= 20,
        "only {v1_count} live messages before the switch"
    );
    // Staging runs on the daemon's one thread, so a slow disk may pause the live flow briefly;
    // a broker takeover would cut it off (and shows in the log, checked below).
    assert!(
        worst < Duration::from_secs(2),
        "the live flow paused {worst:?} during the smoke test"
    );
    let out = installer.join().unwrap();
    assert!(
        out.status.success(),
        "{} {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    d.stop();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        !log.contains("mqtt connection lost"),
        "the live flow lost its broker connection:\n{log}"
    );
    let st = status(&cfg);
    assert!(audit_has(&st, "smoke", "ok", "2.0.0"), "{st:#}");
    assert_eq!(st["active"], "green");
}
