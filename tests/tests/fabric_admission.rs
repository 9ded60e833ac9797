//! Fabric admission end to end with real processes: a `floe serve` coordinator and two
//! enrolled `floed daemon` devices on loopback, and an outsider — a real `floed fabric`
//! process with its own key, not enrolled, given the coordinator's address, its trust store and
//! the id of a published artifact (what the hostile pass used to download an artifact with an
//! MQTT password in it). The devices are admitted (they get membership certificates from the
//! coordinator, report and receive directives); the outsider fetches nothing, hears no
//! directive post, and the coordinator counts and logs its refusal.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // A test fails loudly on any broken precondition.

use floe_tests::coordinator::{Coordinator, Device, temperature_flow, wait};
use floe_tests::fabric::{Node, NodeOpts};
use serde_json::json;
use std::time::{Duration, Instant};

#[test]
fn an_outsider_gets_no_artifact_and_no_directive_and_is_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let coord = Coordinator::start(root);
    let a = Device::start(&coord, root, "a", "eu");
    let b = Device::start(&coord, root, "b", "eu");
    let refs = [&a, &b];
    coord.wait_online(&refs, Duration::from_secs(60));
    // Both devices hold a certificate the coordinator issued them.
    for d in refs {
        wait("a membership certificate", Duration::from_secs(30), || {
            d.data.join("membership.cert").exists().then_some(())
        });
    }

    // A published flow (the coordinator seeds its artifact) deployed to the devices (the
    // coordinator posts their directives on gossip while they apply them).
    let flow = coord.publish("Temperature Alert", temperature_flow("mqtt://127.0.0.1:1"));
    let dep = coord.deploy(
        &flow,
        "rolling",
        &refs,
        json!({"batch_size": 1, "timeout": "60s"}),
    );
    let indexes = coord.dir.join("fabric").join("fabric-indexes");
    let id = wait("the seeded artifact", Duration::from_secs(30), || {
        std::fs::read_dir(&indexes)
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .find(|n| n.len() == 64 && n.chars().all(|c| c.is_ascii_hexdigit()))
    });

    // The outsider: a real floed fabric process, every address it could want, and the id.
    let outsider_dir = root.join("outsider");
    let mut opts = NodeOpts {
        data_dir: outsider_dir.clone(),
        bootstrap: coord.bootstrap.clone(),
        trust: Some(coord.dir.join("trust")),
        fetch: Some(id.clone()),
        ..NodeOpts::default()
    };
    opts.bootstrap.truncate(1);
    let outsider = Node::start(opts).unwrap();
    // Watch for 15 s, while directives are being posted to the devices.
    let began = Instant::now();
    while began.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(250));
    }
    let events = outsider.events();
    let got = |kind: &str| events.iter().filter(|e| e["event"] == kind).count();
    assert_eq!(got("complete"), 0, "the outsider downloaded the artifact");
    assert_eq!(got("chunk"), 0, "the outsider received chunks");
    assert_eq!(got("manifest"), 0, "the outsider received the manifest");
    // (The outsider, which runs no admission, counts the transport connection as a peer on
    // its side; what matters is that nothing flowed over it.)
    let heard: Vec<_> = events.iter().filter(|e| e["event"] == "gossip").collect();
    assert!(heard.is_empty(), "the outsider heard gossip: {heard:?}");
    assert!(
        !outsider_dir
            .join("artifacts")
            .join(format!("{id}.floe"))
            .exists(),
        "the outsider rebuilt the bundle"
    );

    // The coordinator counted and logged it; the devices kept working.
    let log = std::fs::read_to_string(root.join("coordinator.log")).unwrap();
    assert!(
        log.contains("fabric admission timed out") || log.contains("fabric admission refused"),
        "no refusal in the coordinator's log"
    );
    // The members are still on line: admitted, reporting, their directives posted.
    coord.wait_online(&refs, Duration::from_secs(30));
    let deployment = coord.deployment(&dep);
    assert_ne!(
        deployment.status,
        floe_coordinator::contract::DeploymentStatus::Pending,
        "{deployment:?}"
    );
}
