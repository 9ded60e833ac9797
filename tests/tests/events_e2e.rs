//! Live events, webhooks and metrics against a real `floe serve` with simulated devices (the
//! loadtest fleet, real keys, over the REST API):
//! - the SSE stream: a client that reads some events, disconnects and resumes with
//!   `Last-Event-ID` gets exactly what it missed (compared with a client that stayed), and a
//!   client that never reads does not hold the service back nor grow the server's memory;
//! - a webhook on a local receiver (axum on 127.0.0.1:0): every delivery's signature verifies
//!   with the secret, a 500 is retried and then delivered, the deployment's events arrive in
//!   order across the retry, and the delivery log shows the attempts;
//! - `/metrics` parses as Prometheus text and its counts move with the deployment;
//! - `floe deploy status --watch` follows the deployment to the end;
//! - streams end at the server's request timeout and a client that reconnects after its last
//!   id misses nothing; after a restart a resume from before it gets a `reset` first.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use floe_coordinator::client::{Client, Method};
use floe_coordinator::contract::{DeliveryLog, Event, EventKind, HookCreated, HookInput};
use floe_coordinator::loadtest::{Fleet, LoadConfig};
use floe_tests::coordinator::{Coordinator, wait};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
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

/// What the receiver saw: every attempt (headers that matter, body, the status it answered).
#[derive(Debug, Clone)]
struct Attempt {
    signature: String,
    kind: String,
    delivery: String,
    body: Vec<u8>,
    answered: u16,
}

#[derive(Clone, Default)]
struct Receiver {
    attempts: Arc<Mutex<Vec<Attempt>>>,
    seen: Arc<AtomicU32>,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let n = r.seen.fetch_add(1, Ordering::SeqCst);
    // The very first delivery fails once: it must be retried, and nothing after it may
    // overtake it.
    let status = if n == 0 {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    let h = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    r.attempts.lock().unwrap().push(Attempt {
        signature: h("x-floe-signature"),
        kind: h("x-floe-event"),
        delivery: h("x-floe-delivery"),
        body: body.to_vec(),
        answered: status.as_u16(),
    });
    status
}

/// Starts the receiver on its own runtime thread; returns its URL and what it records.
fn start_receiver() -> (String, Receiver) {
    let recv = Receiver::default();
    let state = recv.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let app = Router::new()
                .route("/hook", post(receive))
                .with_state(state);
            axum::serve(listener, app).await.unwrap();
        });
    });
    let addr = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    (format!("http://{addr}/hook"), recv)
}

/// Reads `deployment.`, `target.` and `gate.` events until `until` says stop (or the limit);
/// returns them in arrival order.
fn read_events(
    c: &Client,
    after: Option<u64>,
    limit: Duration,
    mut until: impl FnMut(&Event) -> bool,
) -> Vec<Event> {
    let started = Instant::now();
    let mut out = Vec::new();
    let stream = c
        .events(None, &["deployment.", "target.", "gate."], after)
        .unwrap();
    for e in stream {
        let e = e.unwrap();
        let stop = until(&e);
        out.push(e);
        if stop || started.elapsed() > limit {
            break;
        }
    }
    out
}

fn finished(e: &Event) -> bool {
    e.kind == EventKind::DeploymentStatus
        && matches!(
            e.data["status"].as_str(),
            Some("completed" | "failed" | "rolled_back")
        )
}

/// Parses the Prometheus text format strictly enough to catch a malformed line: `# HELP` and
/// `# TYPE` comments, then `name{label="value",...} number` samples; returns the samples.
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    let mut typed = std::collections::BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().unwrap();
            let kind = parts.next().unwrap();
            assert!(
                ["counter", "gauge", "histogram"].contains(&kind),
                "bad type line {line:?}"
            );
            typed.insert(name.to_string());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(!line.starts_with('#'), "stray comment {line:?}");
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line:?}"));
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("value of {line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "metric name {name:?}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                let inner = labels
                    .strip_prefix('{')
                    .and_then(|l| l.strip_suffix('}'))
                    .unwrap_or_else(|| panic!("labels of {line:?}"));
                for pair in inner.split("\",") {
                    let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("{line:?}"));
                    assert!(k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
                    assert!(!v.contains('\n'));
                }
            }
        }
        let base = name
            .strip_suffix("_bucket")
            .or_else(|| name.strip_suffix("_sum"))
            .or_else(|| name.strip_suffix("_count"))
            .filter(|b| typed.contains(*b))
            .unwrap_or(name);
        assert!(typed.contains(base), "{name} has no # TYPE line");
        samples.insert(series.to_string(), v);
    }
    samples
}

fn metrics(server: &Coordinator) -> BTreeMap<String, f64> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("{}/metrics", server.url());
    let anon = agent.get(&url).call().unwrap();
    assert_eq!(anon.status().as_u16(), 401, "/metrics needs the token");
    let mut resp = agent
        .get(&url)
        .header("Authorization", format!("Bearer {}", server.token()))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let ct = resp
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    parse_metrics(&resp.body_mut().read_to_string().unwrap())
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn events_resume_exactly_webhooks_deliver_signed_in_order_and_metrics_count() {
    let root = tempfile::tempdir().unwrap();
    let server = Coordinator::start_configured(root.path(), "2s", "30s");
    let c = &server.client;
    let (hook_url, recv) = start_receiver();
    let created: HookCreated = c
        .create_hook(&HookInput {
            url: hook_url,
            kinds: vec!["deployment.".into(), "target.".into(), "gate.".into()],
            deployment_id: None,
        })
        .unwrap()
        .json()
        .unwrap();

    let mut config = LoadConfig::new(&server.url(), 20);
    config.token = Some(server.token());
    config.period = Duration::from_secs(2);
    config.active_period = Duration::from_secs(1);
    config.trust = Some(floe_wire::artifact::keys::load_trust(&server.dir.join("trust")).unwrap());
    let fleet = Fleet::new(config).unwrap();
    fleet.allow_all().unwrap();
    let stop = AtomicBool::new(false);
    fleet.run(Duration::from_secs(3), &stop, |_| {}).unwrap();
    let before = metrics(&server);

    // A client that never reads: connected and silent for the whole run.
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    write!(
        slow,
        "GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        server.token()
    )
    .unwrap();
    let pid = server.pid().unwrap();
    let rss_before = rss_kib(pid);

    // The reference client reads everything; the other reads five events, goes away and
    // comes back with the last id it saw.
    let whole = {
        let c = c.clone();
        std::thread::spawn(move || read_events(&c, None, Duration::from_secs(180), finished))
    };
    let parted = {
        let c = c.clone();
        std::thread::spawn(move || {
            let mut n = 0;
            let first = read_events(&c, None, Duration::from_secs(180), |_| {
                n += 1;
                n == 5
            });
            std::thread::sleep(Duration::from_millis(1500));
            let last = first.last().unwrap().id;
            let rest = read_events(&c, Some(last), Duration::from_secs(180), finished);
            (first, rest)
        })
    };
    std::thread::sleep(Duration::from_millis(300));

    let example =
        std::fs::read(floe_tests::workspace_root().join("examples/temperature-alert.json"))
            .unwrap();
    let definition: Value = serde_json::from_slice(&example).unwrap();
    let flow = call(
        c,
        Method::Post,
        "/flows",
        Some(&json!({"name": "Events", "definition": definition})),
    );
    let flow_id = flow["id"].as_str().unwrap().to_string();
    call(c, Method::Post, &format!("/flows/{flow_id}/publish"), None);
    let dep = call(
        c,
        Method::Post,
        "/deployments",
        Some(&json!({
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
        })),
    );
    let dep_id = dep["id"].as_str().unwrap().to_string();
    call(
        c,
        Method::Post,
        &format!("/deployments/{dep_id}/start"),
        None,
    );

    // `floe deploy status --watch` follows it on the event stream.
    let watch = std::process::Command::new(floe_tests::bin("floe").unwrap())
        .args(["deploy", "status", &dep_id, "--watch", "--server"])
        .arg(server.url())
        .args(["--token", &server.token()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    let stop = AtomicBool::new(false);
    let started = Instant::now();
    fleet
        .run(Duration::from_secs(150), &stop, |_| {
            let d = call(c, Method::Get, &format!("/deployments/{dep_id}"), None);
            if matches!(
                d["status"].as_str(),
                Some("completed" | "failed" | "rolled_back")
            ) {
                stop.store(true, Ordering::Relaxed);
            }
        })
        .unwrap();
    let took = started.elapsed();
    let d = call(c, Method::Get, &format!("/deployments/{dep_id}"), None);
    assert_eq!(d["status"], "completed", "{d:#}");
    println!("deployment of 20 simulated devices completed in {took:?}");

    // Resume: exactly the events the reference client saw, none twice, none missing.
    let whole = whole.join().unwrap();
    let (first, rest) = parted.join().unwrap();
    assert!(whole.iter().any(finished), "{whole:#?}");
    let resumed: Vec<u64> = first.iter().chain(rest.iter()).map(|e| e.id).collect();
    let reference: Vec<u64> = whole.iter().map(|e| e.id).collect();
    assert_eq!(resumed, reference, "a resumed client saw other events");
    assert!(rest.iter().all(|e| e.kind != EventKind::Reset));
    for w in reference.windows(2) {
        assert!(w[0] < w[1], "ids grow");
    }
    let kinds: std::collections::HashSet<EventKind> = whole.iter().map(|e| e.kind).collect();
    for k in [
        EventKind::DeploymentStatus,
        EventKind::DeploymentStage,
        EventKind::GateVerdict,
        EventKind::TargetTransition,
    ] {
        assert!(kinds.contains(&k), "no {k} in {kinds:?}");
    }
    println!("{} events of the deployment streamed", whole.len());

    // The silent client held nothing back and the server's memory stayed flat.
    let rss_after = rss_kib(pid);
    println!("coordinator RSS {rss_before} KiB before, {rss_after} KiB after");
    assert!(
        rss_after < rss_before + 32 * 1024,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );
    drop(slow);

    // The webhook got every event of the deployment, signed, in order, the first after a 500.
    let want: Vec<u64> = whole
        .iter()
        .filter(|e| e.deployment_id.as_deref() == Some(dep_id.as_str()))
        .map(|e| e.id)
        .collect();
    let attempts = wait("the webhook deliveries", Duration::from_secs(60), || {
        let a = recv.attempts.lock().unwrap().clone();
        let delivered: Vec<u64> = a
            .iter()
            .filter(|a| a.answered == 200)
            .map(|a| serde_json::from_slice::<Event>(&a.body).unwrap().id)
            .filter(|id| want.contains(id))
            .collect();
        (delivered.len() >= want.len()).then_some(a)
    });
    let key = created.secret.as_bytes();
    for a in &attempts {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(&a.body);
        let expect = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(a.signature, expect, "signature of {}", a.delivery);
        let e: Event = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(a.kind, e.kind.as_str());
        assert!(a.delivery.starts_with(&format!("{}-", e.id)));
    }
    assert_eq!(attempts[0].answered, 500);
    let first_id = serde_json::from_slice::<Event>(&attempts[0].body)
        .unwrap()
        .id;
    let retried = serde_json::from_slice::<Event>(&attempts[1].body).unwrap();
    assert_eq!(
        retried.id, first_id,
        "the failed event is retried before any other"
    );
    assert_eq!(attempts[1].delivery, format!("{first_id}-2"));
    let delivered: Vec<u64> = attempts
        .iter()
        .filter(|a| a.answered == 200)
        .map(|a| serde_json::from_slice::<Event>(&a.body).unwrap().id)
        .collect();
    for w in delivered.windows(2) {
        assert!(w[0] < w[1], "deliveries in order: {delivered:?}");
    }
    let of_dep: Vec<u64> = delivered
        .iter()
        .copied()
        .filter(|id| want.contains(id))
        .collect();
    assert_eq!(of_dep, want, "every event of the deployment, in order");
    let log: DeliveryLog = c.hook_deliveries(&created.hook.id).unwrap().json().unwrap();
    let oldest = log.deliveries.last().unwrap();
    assert_eq!(
        (
            oldest.event_id,
            oldest.attempt,
            oldest.outcome.as_str(),
            oldest.status
        ),
        (first_id, 1, "failed", Some(500)),
        "{log:#?}"
    );

    // The CLI: add, list, the delivery log, remove.
    let floe = |args: &[&str]| {
        let out = std::process::Command::new(floe_tests::bin("floe").unwrap())
            .args(args)
            .args(["--server", &server.url(), "--token", &server.token()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "floe {args:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let added = floe(&[
        "hook",
        "add",
        "http://127.0.0.1:9/x",
        "--kind",
        "device.offline",
    ]);
    let cli_hook = added
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("{added}"))
        .to_string();
    assert!(
        cli_hook.starts_with("hook_") && added.contains("secret "),
        "{added}"
    );
    let listed = floe(&["hook", "list"]);
    assert!(
        listed.contains(&cli_hook) && listed.contains(&created.hook.id),
        "{listed}"
    );
    let log_text = floe(&["hook", "deliveries", &created.hook.id]);
    assert!(
        log_text.contains("delivered") && log_text.contains("failed"),
        "{log_text}"
    );
    floe(&["hook", "rm", &cli_hook]);
    assert!(!floe(&["hook", "list"]).contains(&cli_hook));

    // Metrics moved with the deployment.
    let after = metrics(&server);
    let get = |m: &BTreeMap<String, f64>, k: &str| m.get(k).copied().unwrap_or(0.0);
    assert_eq!(get(&after, "floe_deployments{status=\"completed\"}"), 1.0);
    assert!(
        get(&after, "floe_reports_ingested_total") > get(&before, "floe_reports_ingested_total")
    );
    assert!(get(&after, "floe_gate_verdicts_total{verdict=\"pass\"}") >= 1.0);
    // Every health report went through the group rollups, counted or left out.
    let rolled = |m: &BTreeMap<String, f64>| {
        get(m, "floe_health_rollup_reports_total{outcome=\"counted\"}")
            + get(m, "floe_health_rollup_reports_total{outcome=\"excluded\"}")
    };
    assert!(rolled(&after) > rolled(&before), "{after:#?}");
    for reason in ["token_rate", "failed_auth"] {
        let series = format!("floe_api_throttled_total{{reason=\"{reason}\"}}");
        assert!(after.contains_key(&series), "{series} missing: {after:#?}");
    }
    assert!(
        get(
            &after,
            "floe_webhook_deliveries_total{outcome=\"delivered\"}"
        ) >= want.len() as f64
    );
    assert!(get(&after, "floe_webhook_deliveries_total{outcome=\"retried\"}") >= 1.0);
    let route = "floe_http_request_duration_seconds_count{method=\"GET\",route=\"/api/v1/deployments/{id}\"}";
    assert!(get(&after, route) > get(&before, route), "{after:#?}");

    // The watch saw the end.
    let out = watch.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("completed"), "{stdout}");
}

/// The server ends a stream at its request timeout; a client that opens it again after the
/// last event it saw misses nothing, across many reconnects, while devices go offline and
/// come back (`device.*` events) and a client that never reads is let go.
#[test]
fn streams_end_at_the_request_timeout_and_reconnecting_clients_miss_nothing() {
    const DEVICES: usize = 200;
    const CYCLES: usize = 3;
    let root = tempfile::tempdir().unwrap();
    let mut server =
        Coordinator::start_with_args(root.path(), "2s", "2s", &["--request-timeout", "3s"]);
    let client = server.client.clone();
    let c = &client;
    let mut config = LoadConfig::new(&server.url(), DEVICES);
    config.token = Some(server.token());
    config.period = Duration::from_millis(500);
    config.active_period = Duration::from_millis(500);
    let fleet = Fleet::new(config).unwrap();
    fleet.allow_all().unwrap();

    let mut silent = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    write!(
        silent,
        "GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        server.token()
    )
    .unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let c = c.clone();
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut seen: Vec<Event> = Vec::new();
            let mut opens = 0;
            let mut lasted = Vec::new();
            let started = Instant::now();
            while !done.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(240) {
                let last = seen.last().map(|e| e.id);
                opens += 1;
                let Ok(stream) = c.events(None, &["device."], last) else {
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                };
                let opened = Instant::now();
                for e in stream {
                    let Ok(e) = e else { break };
                    seen.push(e);
                }
                lasted.push(opened.elapsed().as_millis());
            }
            println!("streams lasted {lasted:?} ms");
            (seen, opens)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let rounds = |what: &str| {
        let stop = AtomicBool::new(false);
        let s = fleet.run(Duration::from_secs(2), &stop, |_| {}).unwrap();
        assert!(
            s.summary().accepted >= DEVICES as u64,
            "{what}: {}",
            s.summary()
        );
    };
    let offline = || {
        wait("every device offline", Duration::from_secs(30), || {
            let page = call(c, Method::Get, "/devices?online=true&limit=1", None);
            page["devices"].as_array().unwrap().is_empty().then_some(())
        })
    };
    for i in 0..CYCLES {
        rounds(&format!("cycle {i}"));
        offline();
    }
    rounds("last");
    offline();
    // Let the reader catch up, then stop it at its next reconnect.
    std::thread::sleep(Duration::from_secs(4));
    done.store(true, Ordering::Relaxed);
    let (seen, opens) = reader.join().unwrap();
    let count = |k: EventKind| seen.iter().filter(|e| e.kind == k).count();
    println!("{} device events over {opens} stream openings", seen.len());
    assert!(
        opens >= 3,
        "the server ended the stream at its request timeout: {opens}"
    );
    assert_eq!(count(EventKind::Reset), 0);
    assert_eq!(count(EventKind::DeviceOffline), DEVICES * (CYCLES + 1));
    assert_eq!(count(EventKind::DeviceOnline), DEVICES * (CYCLES + 1));
    for w in seen.windows(2) {
        assert!(w[0].id < w[1].id, "no event twice, in order");
    }
    // The silent client was let go: only the ones connected now are counted.
    let subscribers = wait("the silent client let go", Duration::from_secs(30), || {
        let m = metrics(&server);
        let n = m.get("floe_event_subscribers").copied().unwrap_or(-1.0);
        (n == 0.0).then_some(n)
    });
    assert_eq!(subscribers, 0.0);
    drop(silent);

    // Events do not survive a restart: a client resuming from before it gets a `reset`
    // first, and the ids after it are higher than any before.
    let last = seen.last().unwrap().id;
    server.kill9();
    server.restart();
    let mut stream = c.events(None, &[], Some(last)).unwrap();
    let first = stream.next().unwrap().unwrap();
    assert_eq!(first.kind, EventKind::Reset, "{first:?}");
    assert!(first.id > last, "ids keep growing across restarts");
    let stop = AtomicBool::new(false);
    fleet.run(Duration::from_secs(2), &stop, |_| {}).unwrap();
    let next = stream.next().unwrap().unwrap();
    assert_eq!(next.kind, EventKind::DeviceOnline, "{next:?}");
    assert!(next.id > first.id);
}
