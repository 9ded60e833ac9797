//! The device simulator against a real coordinator, at a small N: 60 simulated devices with
//! real keys are allowlisted in one batch, report, and carry a canary+waves deployment to
//! `completed` through the REST API alone; then a second deployment whose new version makes
//! some devices fail their stage is refused by its canary gate. This is the path the
//! `coordinator_scale` benchmark drives at 100 000 devices.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use floe_coordinator::client::{Client, Method};
use floe_coordinator::loadtest::{Fleet, LoadConfig};
use floe_tests::coordinator::Coordinator;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn call(c: &Client, method: Method, path: &str, body: Option<&Value>) -> Value {
    let reply = c
        .call(method, path, body)
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    if reply.text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&reply.text).unwrap()
    }
}

/// Publishes the example flow (a new version each call) and deploys it to every simulated
/// device with canary+waves and 1 s soaks; returns the deployment id.
fn deploy(c: &Client, name: &str) -> String {
    let example =
        std::fs::read(floe_tests::workspace_root().join("examples/temperature-alert.json"))
            .unwrap();
    let definition: Value = serde_json::from_slice(&example).unwrap();
    let flow = call(
        c,
        Method::Post,
        "/flows",
        Some(&json!({"name": name, "definition": definition})),
    );
    let flow_id = flow["id"].as_str().unwrap().to_string();
    call(c, Method::Post, &format!("/flows/{flow_id}/publish"), None);
    let body = json!({
        "flow_id": flow_id,
        "strategy": "canary-waves",
        "selector": {"labels": {"loadtest": "1"}},
        "config": {
            "canary_delay": "1s", "timeout": "60s", "require_approval": false,
            "waves": [
                {"name": "wave-1", "percentage": 50, "soak": "1s"},
                {"name": "wave-2", "percentage": 50, "soak": "1s"}
            ]
        }
    });
    let dep = call(c, Method::Post, "/deployments", Some(&body));
    let id = dep["id"].as_str().unwrap().to_string();
    call(c, Method::Post, &format!("/deployments/{id}/start"), None);
    id
}

/// Drives the fleet until the deployment is finished (or `limit`); returns its last state.
fn drive(fleet: &Fleet, c: &Client, dep: &str, limit: Duration) -> Value {
    let stop = AtomicBool::new(false);
    let mut last = Value::Null;
    let stats = fleet
        .run(limit, &stop, |_| {
            let d = call(c, Method::Get, &format!("/deployments/{dep}"), None);
            if matches!(
                d["status"].as_str(),
                Some("completed" | "failed" | "rolled_back" | "paused")
            ) {
                stop.store(true, Ordering::Relaxed);
            }
            last = d;
        })
        .unwrap();
    let s = stats.summary();
    assert_eq!(s.errors, 0, "{:?}", stats.error_kinds());
    assert_eq!(s.refused_busy + s.refused_other, 0, "{s}");
    last
}

#[test]
fn simulated_devices_carry_a_deployment_through_the_api_and_a_bad_one_is_stopped() {
    let root = tempfile::tempdir().unwrap();
    let server = Coordinator::start_configured(root.path(), "2s", "30s");
    let c = &server.client;
    let mut config = LoadConfig::new(&server.url(), 60);
    config.token = Some(server.token());
    config.period = Duration::from_secs(2);
    config.active_period = Duration::from_secs(1);
    config.trust = Some(floe_wire::artifact::keys::load_trust(&server.dir.join("trust")).unwrap());
    let fleet = Fleet::new(config.clone()).unwrap();
    assert_eq!(fleet.allow_all().unwrap(), (60, 0));
    // Allowlisting again is idempotent: the same keys count as existing.
    assert_eq!(fleet.allow_all().unwrap(), (0, 60));
    let listed = call(c, Method::Get, "/devices", None);
    assert_eq!(listed["devices"].as_array().unwrap().len(), 60);

    // Every device reports once, so the registry knows them online.
    let stop = AtomicBool::new(false);
    let warm = fleet.run(Duration::from_secs(3), &stop, |_| {}).unwrap();
    assert!(warm.summary().accepted >= 60, "{}", warm.summary());

    let t0 = Instant::now();
    let dep = deploy(c, "Loadtest good");
    let done = drive(&fleet, c, &dep, Duration::from_secs(120));
    assert_eq!(done["status"], "completed", "{done:#}");
    assert_eq!(done["completed_targets"], 60, "{done:#}");
    assert_eq!(done["target_counts"]["success"], 60, "{done:#}");
    assert!(
        done.get("targets").is_none(),
        "targets are paged, not embedded"
    );
    // The devices' own word: every one reports the new release as its last known good. The
    // engine completes when it has sent the last commits, so the last devices' reports of
    // them may still be on their way: the fleet runs on (bounded) until they arrive.
    let release = done["artifact"]["release"].as_u64().unwrap();
    let committed = |devices: &Value| {
        devices["devices"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["last_known_good"]["release"].as_u64() == Some(release))
            .count()
    };
    let stop = AtomicBool::new(false);
    fleet
        .run(Duration::from_secs(15), &stop, |_| {
            if committed(&call(c, Method::Get, "/devices", None)) == 60 {
                stop.store(true, Ordering::Relaxed);
            }
        })
        .unwrap();
    let devices = call(c, Method::Get, "/devices", None);
    assert_eq!(committed(&devices), 60, "{devices:#}");
    eprintln!(
        "60 simulated devices completed canary+waves in {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    // A second fleet view of the same keys where a third of the devices fail their stage:
    // the canary sees failures and the deployment does not complete.
    let mut bad = config;
    bad.fail_rate = 0.34;
    let bad_fleet = Fleet::new(bad).unwrap();
    let dep = deploy(c, "Loadtest bad");
    let end = drive(&bad_fleet, c, &dep, Duration::from_secs(120));
    assert_ne!(end["status"], "completed", "{end:#}");
    assert!(end["failed_targets"].as_u64().unwrap() > 0, "{end:#}");
}
