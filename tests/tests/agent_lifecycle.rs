//! End-to-end lifecycle of the device agent with real `floed` processes, real SQLite files,
//! real slots and the real flow engine: install and commit, the health endpoint, the
//! operator's rollback, and automatic rollbacks (error rate climbing on live data, a version
//! that cannot start, a crash loop while on trial).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // A test fails loudly on any broken precondition.

use std::io::{Read, Write};
use std::time::Duration;

use floe_tests::agent::*;

fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

#[test]
fn install_commit_health_metrics_and_operator_rollback() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg = config(tmp.path(), &data, 1);
    // No daemon: the install runs in-process, as on an air-gapped site.
    let out = install(&cfg, &stage(tmp.path(), "1.0", &ticking_flow("v1"), &[]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("committed"));
    assert_eq!(active_slot(&data).as_deref(), Some("blue"));

    let mut d = Daemon::start(&cfg, &[]);
    d.wait_ready(&data, Duration::from_secs(20));
    let port = http_port(&cfg);
    let st = wait_status(&cfg, Duration::from_secs(10), |s| {
        s["health"]["checks"]["application.flow"]["status"] == "healthy"
    });
    assert_eq!(st["phase"], "idle");
    let (code, body) = http_get(port, "/health");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(health["version"], "1.0");
    assert!(
        health["status"] == "healthy" || health["status"] == "degraded",
        "{health}"
    );
    for layer in [
        "connectivity.heartbeat",
        "system.memory",
        "application.error_rate",
        "functional.smoke",
    ] {
        assert!(
            health["checks"][layer].is_object(),
            "missing {layer}: {health}"
        );
    }
    let (code, metrics) = http_get(port, "/metrics");
    assert_eq!(code, 200);
    assert!(metrics.contains("floe_flow_running 1"), "{metrics}");
    assert!(
        metrics.contains("floe_node_received_total{node=\"out\"}"),
        "{metrics}"
    );

    // Through the daemon this time.
    let out = install(&cfg, &stage(tmp.path(), "2.0", &ticking_flow("v2"), &[]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = status(&cfg);
    assert_eq!(st["active"], "green");
    assert_eq!(st["last_good"], "green");
    assert_eq!(
        st["slots"][0]["version"], "1.0",
        "the old slot is untouched: {st:#}"
    );
    assert_eq!(st["slots"][0]["verified"], "ok");
    assert!(http_get(port, "/health").1.contains("\"version\":\"2.0\""));

    let out = run(
        &cfg,
        &["rollback", "--reason", "operator saw bad readings"],
        &[],
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = status(&cfg);
    assert_eq!(st["active"], "blue");
    assert_eq!(st["last_good"], "blue");
    assert!(
        audit_has(&st, "rollback", "ok", "operator saw bad readings"),
        "{st:#}"
    );
    let actor = st["audit"].as_array().unwrap().last().unwrap()["actor"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(actor.starts_with("local:"), "{actor}");
    d.stop();
    assert_eq!(status(&cfg)["database"], "ok");
}

#[test]
fn version_whose_error_rate_climbs_on_live_data_is_rolled_back() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg = config(tmp.path(), &data, 1);
    assert!(
        install(&cfg, &stage(tmp.path(), "1.0", &ticking_flow("v1"), &[]))
            .status
            .success()
    );
    // Rewrite the config with a long trial so the failure shows during it.
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("min_ready_seconds = 1", "min_ready_seconds = 30");
    std::fs::write(&cfg, text).unwrap();
    let sensor = tmp.path().join("sys/temp1_input");
    std::fs::create_dir_all(sensor.parent().unwrap()).unwrap();
    std::fs::write(&sensor, "21500\n").unwrap();
    let mut d = Daemon::start(&cfg, &[]);
    d.wait_ready(&data, Duration::from_secs(20));
    let v2 = stage(tmp.path(), "2.0", &sensor_flow(&sensor), &[]);
    let cfg2 = cfg.clone();
    let installer = std::thread::spawn(move || install(&cfg2, &v2));
    wait_status(&cfg, Duration::from_secs(20), |s| s["phase"] == "trial");
    // The (simulated) sensor starts returning garbage: every read is an error.
    std::fs::write(&sensor, "EIO garbage\n").unwrap();
    let out = installer.join().unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("rolled_back") || stdout.contains("rolled back"),
        "{stdout}"
    );
    let st = status(&cfg);
    assert_eq!(st["active"], "blue");
    assert_eq!(st["phase"], "idle");
    assert!(audit_has(&st, "rollback", "ok", "error rate"), "{st:#}");
    assert!(st["health"]["version"] == "1.0", "{st:#}");
    d.stop();
}

#[test]
fn version_that_cannot_start_is_never_activated() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg = config(tmp.path(), &data, 0);
    assert!(
        install(&cfg, &stage(tmp.path(), "1.0", &ticking_flow("v1"), &[]))
            .status
            .success()
    );
    let broken =
        r#"{"nodes":[{"id":"a","type":"no_such_kind","name":"A","config":{}}],"connections":[]}"#;
    let out = install(&cfg, &stage(tmp.path(), "2.0", broken, &[]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("smoke test of 2.0 failed"), "{err}");
    let st = status(&cfg);
    assert_eq!(st["active"], "blue");
    assert_eq!(st["last_good"], "blue");
    assert!(audit_has(&st, "smoke", "failed", ""), "{st:#}");
}

#[test]
fn crash_loop_on_trial_rolls_back_without_the_network() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg = config(tmp.path(), &data, 0);
    assert!(
        install(&cfg, &stage(tmp.path(), "1.0", &ticking_flow("v1"), &[]))
            .status
            .success()
    );
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("min_ready_seconds = 0", "min_ready_seconds = 600");
    std::fs::write(&cfg, text).unwrap();
    let mut d = Daemon::start(&cfg, &[]);
    d.wait_ready(&data, Duration::from_secs(20));
    let v2 = stage(tmp.path(), "2.0", &ticking_flow("v2"), &[]);
    let cfg2 = cfg.clone();
    let installer = std::thread::spawn(move || install(&cfg2, &v2));
    wait_status(&cfg, Duration::from_secs(20), |s| s["phase"] == "trial");
    // Power cuts (SIGKILL) while 2.0 is on trial: the third restart within 5 minutes starts on
    // the last known good slot.
    let mut pid = d.child.id();
    drop(d);
    let _ = installer.join();
    for restart in 1..=3 {
        let mut d = Daemon::start(&cfg, &[]);
        assert_ne!(d.child.id(), pid);
        pid = d.child.id();
        d.wait_ready(&data, Duration::from_secs(20));
        let st = status(&cfg);
        if restart < 3 {
            assert_eq!(st["phase"], "trial", "restart {restart}: {st:#}");
            assert_eq!(st["active"], "green");
            drop(d); // SIGKILL
        } else {
            assert_eq!(st["phase"], "idle", "{st:#}");
            assert_eq!(st["active"], "blue");
            assert!(
                audit_has(&st, "rollback", "automatic", "crash loop"),
                "{st:#}"
            );
            d.stop();
        }
    }
}

#[test]
fn status_answers_at_once_while_a_smoke_test_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg = config(tmp.path(), &data, 1);
    let out = install(&cfg, &stage(tmp.path(), "1.0", &ticking_flow("v1"), &[]));
    assert!(out.status.success());
    let mut d = Daemon::start(&cfg, &[]);
    d.wait_ready(&data, Duration::from_secs(20));

    // Version 2 waits up to 6 s in its smoke test for an output the flow never sends.
    let dir = stage(tmp.path(), "2.0", &ticking_flow("v2"), &[]);
    let record_path = dir.join(".version");
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record_path).unwrap()).unwrap();
    record["smoke_expect"] = serde_json::json!([{"node": "out", "payload": {"never": true}}]);
    record["smoke_timeout_ms"] = serde_json::json!(6000);
    std::fs::write(&record_path, record.to_string()).unwrap();
    let cfg2 = cfg.clone();
    let installer = std::thread::spawn(move || install(&cfg2, &dir));

    // Every status answer comes at once, and one of them shows the smoke test under way
    // (before, the daemon answered only after the smoke test had ended).
    let start = std::time::Instant::now();
    let seen = loop {
        let asked = std::time::Instant::now();
        let st = status(&cfg);
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "status took {:?} during the smoke test",
            asked.elapsed()
        );
        if st["phase"] == "smoke" {
            break st;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "never saw the smoke test: {st:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(seen["active"], "blue", "{seen:#}");
    assert!(seen["health"]["status"].is_string(), "{seen:#}");
    // The install still ends as the smoke test decides: refused, version 1 still active.
    let out = installer.join().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not seen within 6000 ms"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(status(&cfg)["active"], "blue");
    d.stop();
}
