//! The hostile-input suite on the coordinator (issue 16): a real `floe serve` fed what an
//! attacker would send it. Each case failed on the code before the fix: durations wrapped, a
//! leaked enrollment token bound a victim's id to an attacker's key, anyone read any device's
//! directive, a release number was reissued with other content, names carried terminal escapes
//! into operators' terminals, `floe audit | head -1` panicked, and a data directory created
//! beforehand stayed readable by every local user.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // A test fails loudly on any broken precondition.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use floe_tests::coordinator::Coordinator;
use floe_wire::proto::device_auth::{DEVICE_AUTH_HEADER, directive_path, sign_request};
use floe_wire::proto::{DeviceReport, Envelope, Facts, Fixed};
use serde_json::{Value, json};

fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

/// An API call with the coordinator's token; the status and the JSON body (or null).
fn call(c: &Coordinator, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let url = format!("{}/api/v1{path}", c.url());
    let auth = format!("Bearer {}", c.token());
    let h = http();
    let resp = match method {
        "GET" => h.get(&url).header("Authorization", &auth).call(),
        "DELETE" => h.delete(&url).header("Authorization", &auth).call(),
        _ => h
            .post(&url)
            .header("Authorization", &auth)
            .header("Content-Type", "application/json")
            .send(body.unwrap_or(json!({})).to_string()),
    }
    .unwrap();
    let status = resp.status().as_u16();
    let text = resp.into_body().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn flow_definition() -> Value {
    json!({
        "nodes": [
            {"id": "tick", "type": "inject", "name": "Tick", "config": {"payload": 1, "interval": "1s"}},
            {"id": "out", "type": "debug", "name": "Out", "config": {}}
        ],
        "connections": [{"source": "tick", "target": "out"}]
    })
}

fn hex_of(key: &SigningKey) -> String {
    hex::encode(key.verifying_key().to_bytes())
}

/// A signed report from `key` that claims the id `id`, carrying `token`.
fn report(key: &SigningKey, id: &str, token: Option<&str>) -> Vec<u8> {
    let r = DeviceReport {
        schema: 1,
        device_id: id.to_string(),
        public_key: Fixed(key.verifying_key().to_bytes()),
        seq: 1,
        facts: Facts {
            device_type: "rpi4".into(),
            arch: "aarch64".into(),
            region: "eu".into(),
            labels: Vec::new(),
            runtime_version: "0.1.0".into(),
        },
        enroll_token: token.map(str::to_string),
        active: None,
        standby: None,
        last_known_good: None,
        on_trial: false,
        applied: None,
        health: None,
    };
    Envelope::sign(&r, &[key]).unwrap().to_bytes().unwrap()
}

fn post_report(c: &Coordinator, id: &str, bytes: &[u8]) -> u16 {
    http()
        .post(format!("{}/api/v1/devices/{id}/report", c.url()))
        .header("Content-Type", "application/cbor")
        .send(bytes)
        .unwrap()
        .status()
        .as_u16()
}

fn get_directive(c: &Coordinator, id: &str, proof: Option<String>) -> u16 {
    let mut req = http().get(format!("{}{}", c.url(), directive_path(id)));
    if let Some(p) = proof {
        req = req.header(DEVICE_AUTH_HEADER, &p);
    }
    req.call().unwrap().status().as_u16()
}

fn token(c: &Coordinator) -> String {
    let (status, t) = call(c, "POST", "/enrollment-tokens", Some(json!({"ttl": "10m"})));
    assert_eq!(status, 201, "{t}");
    t["token"].as_str().unwrap().to_string()
}

#[test]
fn hostile_requests_to_a_coordinator() {
    let tmp = tempfile::tempdir().unwrap();
    // A data directory someone created beforehand, world-readable.
    let pre = tmp.path().join("coordinator");
    std::fs::create_dir_all(&pre).unwrap();
    std::fs::set_permissions(&pre, std::fs::Permissions::from_mode(0o755)).unwrap();
    let c = Coordinator::start(tmp.path());
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&c.dir), 0o700, "data directory");
    assert_eq!(mode(&c.dir.join("floe.db")), 0o600, "database");

    // Enrollment squatting: a leaked token does not bind a victim's id to another key.
    let victim = SigningKey::from_bytes(&[41; 32]);
    let attacker = SigningKey::from_bytes(&[42; 32]);
    let t = token(&c);
    let squat = report(&attacker, &hex_of(&victim), Some(&t));
    assert_eq!(post_report(&c, &hex_of(&victim), &squat), 401);
    assert_eq!(
        call(&c, "GET", &format!("/devices/{}", hex_of(&victim)), None).0,
        404
    );
    // The allowlist holds the same rule.
    let (status, body) = call(
        &c,
        "POST",
        "/devices",
        Some(json!({"id": "victim-01", "public_key": hex_of(&attacker)})),
    );
    assert_eq!(status, 422, "{body}");

    // The device enrolls under its own id; its directive answers only to its own signature.
    let device = SigningKey::from_bytes(&[43; 32]);
    let id = hex_of(&device);
    assert_eq!(post_report(&c, &id, &report(&device, &id, Some(&t))), 204);
    let now = floe_wire::clock::unix_secs();
    assert_eq!(get_directive(&c, &id, None), 401, "no proof");
    let forged = sign_request(&attacker, "GET", &directive_path(&id), now);
    assert_eq!(
        get_directive(&c, &id, Some(forged)),
        401,
        "someone else's key"
    );
    let stale = sign_request(&device, "GET", &directive_path(&id), now - 3_600);
    assert_eq!(get_directive(&c, &id, Some(stale)), 401, "an hour old");
    let own = sign_request(&device, "GET", &directive_path(&id), now);
    assert_eq!(get_directive(&c, &id, Some(own)), 204, "its own, fresh");

    // Durations that would wrap the engine's deadlines are refused naming the field and limit.
    let flow = c.publish("hostile", flow_definition());
    for field in ["canary_delay", "timeout", "batch_delay", "offline_grace"] {
        let (status, body) = call(
            &c,
            "POST",
            "/deployments",
            Some(json!({
                "flow_id": flow,
                "strategy": "rolling",
                "target_devices": [id],
                "config": {field: "18446744073709551615ms"}
            })),
        );
        let text = body.to_string();
        assert_eq!(status, 422, "{field}: {text}");
        assert!(
            text.contains(&format!("config.{field}")) && text.contains("366d"),
            "{field}: {text}"
        );
    }

    // Release numbers only grow per artifact name, across deletes.
    let v2 = c.publish_next(&flow, flow_definition());
    let (status, body) = call(&c, "DELETE", &format!("/flows/{v2}"), None);
    assert!(status < 300, "{status}: {body}");
    let v3 = c.publish_next(&flow, flow_definition());
    let (_, doc) = call(&c, "GET", &format!("/flows/{v3}"), None);
    assert_eq!(doc["version"], 3, "{doc}");

    // Control characters and oversized text are refused in names, tags and descriptions.
    for (field, body) in [
        (
            "name",
            json!({"name": "evil\u{1b}]0;pwned\u{7}", "definition": flow_definition()}),
        ),
        (
            "name",
            json!({"name": "x".repeat(201), "definition": flow_definition()}),
        ),
        (
            "description",
            json!({"name": "ok", "description": "a\u{0}b", "definition": flow_definition()}),
        ),
        (
            "tags[0]",
            json!({"name": "ok", "tags": ["\u{9b}31m"], "definition": flow_definition()}),
        ),
    ] {
        let (status, reply) = call(&c, "POST", "/flows", Some(body));
        assert_eq!(status, 422, "{field}: {reply}");
        assert!(reply.to_string().contains(field), "{field}: {reply}");
    }

    // `floe audit | head -1`: a closed stdout ends the CLI quietly, not with a panic.
    let (reader, writer) = nix::unistd::pipe().unwrap();
    drop(reader);
    let out = Command::new(floe_tests::bin("floe").unwrap())
        .args(["audit", "--server", &c.url(), "--token", &c.token()])
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Finding 9: the API token never reaches stdout (journald keeps what a service prints); the
/// first start says where the 0600 token file is instead.
#[test]
fn the_api_token_is_never_printed() {
    let tmp = tempfile::tempdir().unwrap();
    let c = Coordinator::start(tmp.path());
    let secret = c.token();
    assert!(secret.trim().len() >= 32, "{secret}");
    let secret = secret.trim().to_string();
    let log = std::fs::read_to_string(tmp.path().join("coordinator.log")).unwrap();
    assert!(
        log.contains("wrote the API token to"),
        "the first start names the token file:\n{log}"
    );
    assert!(!log.contains(&secret), "the token was printed:\n{log}");
    let mode = std::fs::metadata(tmp.path().join("coordinator/api-token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}
