//! Device variables end to end: a real `floe serve`, three real `floed daemon` processes and
//! two real Mosquitto brokers on loopback. Values are set per device and per group through
//! the CLI and the REST API; one device also has a local `[vars]` override in its
//! `floed.toml`. One deployment of one flow then runs on every device with that device's own
//! values: each publishes on its own topic to its own broker, which the brokers show.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use floe_coordinator::client::{DeviceVars, GroupVarsChange, VarGroup, VarsChange};
use floe_tests::coordinator::{Coordinator, Device, temperature_flow, wait};
use floe_tests::{Mosquitto, Subscription};
use serde_json::{Value, json};

/// The example flow with its alert topic as a variable (`alert_topic`, default
/// `floe/alerts/default`) and the broker of `broker` as the `broker` variable's default.
fn flow(broker: &str) -> Value {
    let mut f = temperature_flow(broker);
    f["variables"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "alert_topic", "type": "string", "value": "floe/alerts/default"}));
    for node in f["nodes"].as_array_mut().unwrap() {
        if node["type"] == "mqtt_out" {
            node["config"]["topic"] = json!("${alert_topic}");
        }
    }
    f
}

/// `floe ARGS --server URL --token T`, which must succeed; its stdout.
fn floe(coord: &Coordinator, args: &[&str]) -> String {
    let out = Command::new(floe_tests::bin("floe").unwrap())
        .args(args)
        .args(["--server", &coord.url(), "--token", &coord.token()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "floe {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Topics seen on `sub` until every one of `want` was seen or `limit` passed.
fn topics_until(sub: &Subscription, want: &[&str], limit: Duration) -> BTreeSet<String> {
    let until = Instant::now() + limit;
    let mut seen = BTreeSet::new();
    while !want.iter().all(|w| seen.contains(*w)) {
        let Some(left) = until.checked_duration_since(Instant::now()) else {
            break;
        };
        if let Some(m) = sub.next(left.min(Duration::from_millis(500))) {
            seen.insert(m.topic);
        }
    }
    seen
}

#[test]
fn each_device_runs_the_flow_with_its_own_values() {
    let broker_a = Mosquitto::start().unwrap();
    let broker_b = Mosquitto::start().unwrap();
    let sub_a = Subscription::start(broker_a.port(), "#").unwrap();
    let sub_b = Subscription::start(broker_b.port(), "#").unwrap();
    let root = tempfile::tempdir().unwrap();
    let coord = Coordinator::start(root.path());
    let d0 = Device::start(&coord, root.path(), "dev-0", "eu");
    let d1 = Device::start(&coord, root.path(), "dev-1", "eu");
    // dev-2 overrides the topic locally, over what the coordinator sets for it.
    let d2 = Device::start_with(
        &coord,
        root.path(),
        "dev-2",
        "eu",
        "[vars]\nalert_topic = \"local/dev2\"\nnot_declared = 7\n",
    );
    let devices = [&d0, &d1, &d2];
    coord.wait_online(&devices, Duration::from_secs(60));

    // Group values: every rpi4 alerts on everything (threshold below any reading), on the
    // type's topic; every device labelled e2e=yes (all three) on the label's topic, which
    // wins over the type's.
    floe(
        &coord,
        &[
            "group",
            "vars",
            "set",
            "type=rpi4",
            "threshold=-100",
            "alert_topic=fleet/type",
        ],
    );
    coord
        .client
        .set_group_vars(&GroupVarsChange {
            group: VarGroup {
                label: Some("e2e=yes".into()),
                device_type: None,
            },
            set: [("alert_topic".to_string(), "label/e2e".to_string())].into(),
            unset: Vec::new(),
            secret: Default::default(),
        })
        .unwrap();
    // Device values: dev-0 its own topic (over the label's) on broker A; dev-1 broker B and
    // the label's topic; dev-2 a topic of its own that its local [vars] overrides, and the
    // flow's default broker (A).
    let a_url = broker_a.url();
    let b_url = broker_b.url();
    floe(
        &coord,
        &[
            "device",
            "vars",
            "set",
            &d0.id,
            &format!("broker={a_url}"),
            "alert_topic=site/a/dev0",
        ],
    );
    coord
        .client
        .set_device_vars(
            &d1.id,
            &VarsChange {
                set: [("broker".to_string(), b_url.clone())].into(),
                unset: Vec::new(),
                secret: Default::default(),
            },
        )
        .unwrap();
    floe(
        &coord,
        &["device", "vars", "set", &d2.id, "alert_topic=site/x/dev2"],
    );
    let listed: DeviceVars =
        serde_json::from_str(&floe(&coord, &["device", "vars", "list", &d1.id, "--json"])).unwrap();
    assert_eq!(listed.resolved["alert_topic"].value, "label/e2e");
    assert_eq!(listed.resolved["broker"].value, b_url);
    let table = floe(&coord, &["device", "vars", "list", &d1.id]);
    assert!(
        table.contains("label e2e=yes") && table.contains("type rpi4"),
        "{table}"
    );
    let groups = floe(&coord, &["group", "vars", "list"]);
    assert!(
        groups.contains("fleet/type") && groups.contains("label/e2e"),
        "{groups}"
    );

    // A value that is not text refuses at the CLI's server with the field named.
    let refused = Command::new(floe_tests::bin("floe").unwrap())
        .args(["device", "vars", "set", &d0.id, "9bad=1"])
        .args(["--server", &coord.url(), "--token", &coord.token()])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("not a valid variable name"), "{err}");

    let v1 = coord.publish("Temperature Alert", flow(&a_url));
    let dep = coord.deploy(&v1, "all-at-once", &devices, json!({"timeout": "60s"}));
    let done = coord.wait_done(&dep, Duration::from_secs(120));
    if done.status.as_str() != "completed" {
        let mut why = format!("{:?}\n", done.status_reason);
        for t in coord.targets(&dep) {
            why.push_str(&format!("target {:?}\n", t));
        }
        for d in devices {
            let log = std::fs::read_to_string(d.data.join("floed.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            why.push_str(&format!(
                "device {}: {}\n{}\n",
                d.id,
                d.status()["audit"],
                tail.join("\n")
            ));
        }
        panic!("the deployment did not complete: {why}");
    }
    for d in devices {
        wait("the device to commit", Duration::from_secs(20), || {
            (d.status()["phase"] == "idle").then_some(())
        });
        assert_eq!(d.active_version().as_deref(), Some("1.1.0"));
    }

    // Each device publishes where its values say, and nowhere else.
    let on_a = topics_until(
        &sub_a,
        &["site/a/dev0", "local/dev2"],
        Duration::from_secs(30),
    );
    let on_b = topics_until(&sub_b, &["label/e2e"], Duration::from_secs(30));
    // Keep listening a little so a device publishing where it should not has time to show.
    let mut on_a_more = topics_until(&sub_a, &["never"], Duration::from_secs(2));
    on_a_more.extend(on_a);
    let mut on_b_more = topics_until(&sub_b, &["never"], Duration::from_secs(2));
    on_b_more.extend(on_b);
    let expect_a: BTreeSet<String> = ["site/a/dev0", "local/dev2"].map(String::from).into();
    let expect_b: BTreeSet<String> = ["label/e2e"].map(String::from).into();
    assert_eq!(on_a_more, expect_a, "broker A");
    assert_eq!(on_b_more, expect_b, "broker B");

    // Every change is in the audit log, with its device or group.
    let audit = coord.client.audit(Some(500), None, None).unwrap().text;
    let log: Value = serde_json::from_str(&audit).unwrap();
    let lines: Vec<&Value> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "vars.set")
        .collect();
    let ok = lines.iter().filter(|e| e["outcome"] == "ok").count();
    assert_eq!(ok, 5, "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|e| e["outcome"] == "refused" && e["device_id"] == json!(d0.id))
    );
    assert!(lines.iter().any(|e| {
        e["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("group label e2e=yes"))
    }));
}
