//! The coordinator run in-process (`floe_coordinator::server::start`) with a real SQLite file,
//! a real fabric on loopback and the REST API over real HTTP: reads of committed data answer
//! while the service actor is busy, and the ingest counters are visible in `GET /status`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use floe_coordinator::client::{Client, Method};
use floe_coordinator::loadtest::{Fleet, LoadConfig};
use floe_coordinator::server::{self, Server, ServerConfig};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

fn start(dir: &std::path::Path) -> (tokio::runtime::Runtime, Server, CancellationToken) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut config = ServerConfig::new(dir.join("coordinator"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.fabric_listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    config.mdns = false;
    // The devices never report: the checklist is recorded (its cost is part of the start
    // measured below), not enforced.
    config.preflight.enforce = false;
    let shutdown = CancellationToken::new();
    let server = rt
        .block_on(server::start(config, shutdown.clone()))
        .unwrap();
    (rt, server, shutdown)
}

fn call(c: &Client, method: Method, path: &str, body: Option<&Value>) -> Value {
    let reply = c.call(method, path, body).unwrap();
    assert!(
        reply.status < 300,
        "{path}: {} {}",
        reply.status,
        reply.text
    );
    if reply.text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&reply.text).unwrap()
    }
}

fn publish(client: &Client) -> String {
    let example =
        std::fs::read(floe_tests::workspace_root().join("examples/temperature-alert.json"))
            .unwrap();
    let definition: Value = serde_json::from_slice(&example).unwrap();
    let flow = call(
        client,
        Method::Post,
        "/flows",
        Some(&json!({"name": "Reads", "definition": definition})),
    );
    let id = flow["id"].as_str().unwrap().to_string();
    call(client, Method::Post, &format!("/flows/{id}/publish"), None);
    id
}

/// The reads that never wait for the actor, probed in turn.
const READS: [&str; 4] = [
    "/flows",
    "/devices?limit=10",
    "/devices?online=false&limit=5",
    "/health/groups?window=1h",
];

/// Times the [`READS`] in turn, one every `every`, until `busy` is cleared; returns each
/// latency.
fn probe(client: &Client, busy: &AtomicBool, every: Duration) -> Vec<Duration> {
    let mut seen = Vec::new();
    while busy.load(Ordering::Relaxed) {
        let t = Instant::now();
        let path = READS[seen.len() % READS.len()];
        let reply = client.call(Method::Get, path, None).unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text);
        seen.push(t.elapsed());
        std::thread::sleep(every);
    }
    seen
}

#[test]
fn reads_answer_while_the_actor_is_held_and_while_it_starts_a_large_deployment() {
    let root = tempfile::tempdir().unwrap();
    let (rt, server, shutdown) = start(root.path());
    let client = Client::new(&server.url(), Some(server.token().to_string())).unwrap();
    let flow_id = publish(&client);
    // A write the actor answered is visible to the next read at once (read-your-writes).
    let listed = call(&client, Method::Get, "/flows", None);
    assert_eq!(listed["flows"][0]["id"], json!(flow_id));
    assert_eq!(listed["flows"][0]["state"], json!("published"));
    let one = call(&client, Method::Get, &format!("/flows/{flow_id}"), None);
    assert!(one["artifact"]["manifest_sha256"].is_string(), "{one}");

    // 1. The actor is held for 3 s by a job. Reads answer meanwhile; a call that needs the
    // actor (the deployments list) waits for it, which is what the reads no longer do.
    let hold = Duration::from_secs(3);
    let service = server.service().clone();
    let held = rt.spawn(async move {
        service
            .call(move |_, _| {
                std::thread::sleep(hold);
                Ok(())
            })
            .await
    });
    std::thread::sleep(Duration::from_millis(100));
    let busy = AtomicBool::new(true);
    let (reads, actor_call) = std::thread::scope(|scope| {
        let reads = scope.spawn(|| probe(&client, &busy, Duration::from_millis(50)));
        let t = Instant::now();
        call(&client, Method::Get, "/deployments", None);
        let actor_call = t.elapsed();
        busy.store(false, Ordering::Relaxed);
        (reads.join().unwrap(), actor_call)
    });
    rt.block_on(held).unwrap().unwrap();
    let slowest = reads.iter().max().copied().unwrap_or_default();
    println!(
        "held the actor {hold:?}: GET /deployments took {actor_call:?}; {} reads (flows, devices, health) meanwhile, slowest {slowest:?}",
        reads.len()
    );
    assert!(
        actor_call >= Duration::from_millis(2500),
        "the hold did not hold the actor: {actor_call:?}"
    );
    assert!(
        reads.len() >= 10,
        "only {} reads in {actor_call:?}",
        reads.len()
    );
    assert!(
        slowest < Duration::from_secs(1),
        "a read waited for the actor: {slowest:?}"
    );

    // 2. A real hold: creating and starting a deployment over a fleet of devices that never
    // reported (every target marked offline in the start's one transaction).
    let n: usize = std::env::var("READS_TEST_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let mut config = LoadConfig::new(&server.url(), n);
    config.token = Some(server.token().to_string());
    let fleet = Fleet::new(config).unwrap();
    assert_eq!(fleet.allow_all().unwrap(), (n as u64, 0));
    let body = json!({
        "flow_id": flow_id,
        "strategy": "canary-waves",
        "selector": {"labels": {"loadtest": "1"}},
        "config": {
            "canary_delay": "1s", "require_approval": false, "max_parallel": 2000,
            "waves": [
                {"name": "wave-1", "percentage": 10, "soak": "1s"},
                {"name": "wave-2", "percentage": 90, "soak": "1s"}
            ]
        }
    });
    let busy = AtomicBool::new(true);
    let (reads, start_took, dep) = std::thread::scope(|scope| {
        let reads = scope.spawn(|| probe(&client, &busy, Duration::from_millis(20)));
        std::thread::sleep(Duration::from_millis(100));
        let t = Instant::now();
        let dep = call(&client, Method::Post, "/deployments", Some(&body));
        let id = dep["id"].as_str().unwrap().to_string();
        let dep = call(
            &client,
            Method::Post,
            &format!("/deployments/{id}/start"),
            None,
        );
        let took = t.elapsed();
        busy.store(false, Ordering::Relaxed);
        (reads.join().unwrap(), took, dep)
    });
    assert_eq!(dep["total_targets"], json!(n));
    assert_eq!(dep["status"], json!("running"));
    let slowest = reads.iter().max().copied().unwrap_or_default();
    println!(
        "create+start of {n} targets took {start_took:?}; {} GET /flows meanwhile, slowest {slowest:?}",
        reads.len()
    );
    assert!(reads.len() >= 3, "too few reads: {}", reads.len());
    assert!(
        slowest < start_took / 2,
        "GET /flows waited for the start: slowest {slowest:?} of a {start_took:?} start"
    );

    // 3. The ingest counters: every report the devices send is counted, none refused.
    let stop = AtomicBool::new(false);
    let before: Value = call(&client, Method::Get, "/status", None);
    let stats = fleet
        .run(Duration::from_secs(3), &stop, |_| {})
        .unwrap()
        .summary();
    let after: Value = call(&client, Method::Get, "/status", None);
    let accepted = after["ingest"]["accepted"].as_u64().unwrap()
        - before["ingest"]["accepted"].as_u64().unwrap();
    println!("status after {} reports: {after}", stats.accepted);
    assert!(stats.accepted > 0);
    assert!(
        accepted >= stats.accepted,
        "{accepted} counted, {} accepted",
        stats.accepted
    );
    assert_eq!(after["ingest"]["refused_busy"], json!(0));
    assert_eq!(after["ingest"]["queue_capacity"], json!(4096));
    assert!(after["ingest"]["queue_depth"].as_u64().unwrap() <= 4096);

    server.shutdown();
    rt.block_on(server.wait()).unwrap();
    drop(shutdown);
}
