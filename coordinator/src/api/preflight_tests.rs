//! The VALIDATE phase and the operators' routes over HTTP: a start the checklist stops answers
//! 422 with every failed item and leaves the deployment pending; overrides start it and are
//! audited; the 003 state block; `force` for a large all-at-once; abort; a publish carrying a
//! smoke test, and one naming a node the flow lacks.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::contract_tests::{TestServer, published_flow};
use crate::client::{Client, FlowInput, Method};
use serde_json::{Value, json};
use std::time::Duration;

/// `method path` with the test token and an optional JSON body: the status and the body.
fn raw(url: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    let full = format!("{url}/api/v1{path}");
    let auth = "Bearer secret";
    let resp = match (method, body) {
        ("GET", _) => agent.get(&full).header("Authorization", auth).call(),
        (_, Some(b)) => agent
            .post(&full)
            .header("Authorization", auth)
            .header("Content-Type", "application/json")
            .send(b.to_string()),
        (_, None) => agent.post(&full).header("Authorization", auth).send_empty(),
    };
    let mut resp = resp.unwrap();
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap();
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, value)
}

/// Allowlists `n` devices (never heard from) of type rpi4; their ids.
fn devices(c: &Client, n: u8, seed: u8) -> Vec<String> {
    (0..n)
        .map(|i| {
            let key = ed25519_dalek::SigningKey::from_bytes(&[seed + i; 32]);
            let id = hex::encode(key.verifying_key().to_bytes());
            c.call(
                Method::Post,
                "/devices",
                Some(&json!({"id": id, "public_key": id, "type": "rpi4", "region": "eu"})),
            )
            .unwrap();
            id
        })
        .collect()
}

fn run(url: &str) {
    let c = Client::new(url, Some("secret".into())).unwrap();
    let flow = published_flow(&c);
    let ids = devices(&c, 2, 100);
    let (status, dep) = raw(
        url,
        "POST",
        "/deployments",
        Some(&json!({"flow_id": flow, "strategy": "rolling", "target_devices": ids})),
    );
    assert_eq!(status, 201, "{dep}");
    let dep_id = dep["id"].as_str().unwrap().to_string();
    // The creation's dry run is on the deployment already.
    assert_eq!(dep["preflight"]["when"], "create", "{dep}");
    assert_eq!(dep["preflight"]["passed"], false, "{dep}");

    // The start is stopped: 422, every failed item listed with its devices.
    let start = format!("/deployments/{dep_id}/start");
    let (status, refusal) = raw(url, "POST", &start, None);
    assert_eq!(status, 422, "{refusal}");
    assert_eq!(refusal["error"]["code"], "preflight_failed");
    let failed: Vec<&str> = refusal["preflight"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["passed"] == false)
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    // Never heard from: no architecture, no figures, nothing to roll back to, no heartbeat,
    // and no device of the type ever reported health.
    assert_eq!(
        failed,
        vec![
            "architecture",
            "disk_space",
            "resource_fit",
            "rollback_target",
            "baselines",
            "connectivity"
        ],
        "{refusal:#}"
    );
    let message = refusal["error"]["message"].as_str().unwrap();
    for name in &failed {
        assert!(message.contains(name), "{message}");
    }
    let connectivity = refusal["preflight"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "connectivity")
        .unwrap();
    assert_eq!(connectivity["count"], 2);
    assert_eq!(connectivity["devices"].as_array().unwrap().len(), 2);
    let (_, d) = raw(url, "GET", &format!("/deployments/{dep_id}"), None);
    assert_eq!(d["status"], "pending");
    assert_eq!(d["phase"], "VALIDATE");
    assert_eq!(d["preflight"]["when"], "start");

    // The state block says so.
    let (status, state) = raw(url, "GET", &format!("/deployments/{dep_id}/state"), None);
    assert_eq!(status, 200, "{state}");
    let text = state["text"].as_str().unwrap();
    assert!(
        text.starts_with("<fleet-deploy-state>\nphase: VALIDATE\n"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("</fleet-deploy-state>"), "{text}");
    assert!(
        state["blockers"]
            .as_str()
            .unwrap()
            .contains("connectivity (2)"),
        "{state}"
    );

    // An unknown item is a 422 naming the field; a body with an unknown key is a 400.
    let (status, e) = raw(url, "POST", &start, Some(&json!({"override": ["disks"]})));
    assert_eq!(status, 422, "{e}");
    assert_eq!(e["error"]["field"], "override");
    let (status, _) = raw(url, "POST", &start, Some(&json!({"overide": []})));
    assert_eq!(status, 400);

    // Overriding every failed item starts it, audited with the caller and the items.
    let (status, started) = raw(url, "POST", &start, Some(&json!({"override": failed})));
    assert_eq!(status, 200, "{started}");
    assert_eq!(started["status"], "running");
    assert_eq!(started["preflight"]["passed"], true);
    assert_eq!(
        started["preflight"]["overridden"].as_array().unwrap().len(),
        failed.len()
    );
    let (_, audit) = raw(url, "GET", "/audit?limit=100", None);
    let line = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["action"] == "deployment.preflight" && l["outcome"] == "overridden")
        .unwrap_or_else(|| panic!("no override line: {audit:#}"));
    assert!(
        line["actor"].as_str().unwrap().starts_with("token:"),
        "{line}"
    );
    assert!(
        line["detail"]
            .as_str()
            .unwrap()
            .contains("overrode architecture"),
        "{line}"
    );
    // Abort rolls back what is uncommitted; a finished deployment cannot be aborted again.
    let (status, aborted) = raw(url, "POST", &format!("/deployments/{dep_id}/abort"), None);
    assert_eq!(status, 200, "{aborted}");

    // force: all-at-once above 10 devices is refused without it and accepted (audited) with it.
    let many = devices(&c, 11, 150);
    let body = |force: bool| {
        json!({"flow_id": flow, "strategy": "all-at-once", "target_devices": many,
               "config": {"force": force}})
    };
    let (status, e) = raw(url, "POST", "/deployments", Some(&body(false)));
    assert_eq!(status, 422, "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("force"),
        "{e}"
    );
    let (status, forced) = raw(url, "POST", "/deployments", Some(&body(true)));
    assert_eq!(status, 201, "{forced}");
    assert_eq!(forced["config"]["force"], true);
    // A pending deployment aborted ends at once.
    let forced_id = forced["id"].as_str().unwrap();
    let (status, aborted) = raw(
        url,
        "POST",
        &format!("/deployments/{forced_id}/abort"),
        None,
    );
    assert_eq!(status, 200, "{aborted}");
    assert_eq!(aborted["status"], "failed", "{aborted}");

    // A publish with a smoke test; one naming a node the flow lacks is refused.
    let def: Value = serde_json::from_slice(
        &std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../examples/temperature-alert.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let node = def["nodes"][0]["id"].as_str().unwrap().to_string();
    let draft = |name: &str| -> String {
        let input = FlowInput {
            name: name.into(),
            description: String::new(),
            tags: Vec::new(),
            definition: def.clone(),
        };
        let f: Value = c.create_flow(&input).unwrap().json().unwrap();
        f["id"].as_str().unwrap().to_string()
    };
    let bad = draft("bad smoke");
    let (status, e) = raw(
        url,
        "POST",
        &format!("/flows/{bad}/publish"),
        Some(&json!({"smoke_test": {"expect": [{"node": "nowhere", "payload": 1}]}})),
    );
    assert_eq!(status, 422, "{e}");
    assert_eq!(e["error"]["field"], "smoke_test.expect[0].node");
    let good = draft("good smoke");
    let (status, f) = raw(
        url,
        "POST",
        &format!("/flows/{good}/publish"),
        Some(&json!({"smoke_test": {"inject": [{"node": node, "payload": {"t": 1}}]}})),
    );
    assert_eq!(status, 200, "{f}");
    assert_eq!(f["state"], "published");
    let (_, audit) = raw(url, "GET", "/audit?limit=100", None);
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["action"] == "flow.publish"
                && l["detail"].as_str().unwrap().contains("with a smoke test")),
        "{audit:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_stopped_by_the_checklist_then_overridden_force_abort_state_and_smoke_tests() {
    let server = TestServer::start().await;
    let url = server.url.clone();
    tokio::task::spawn_blocking(move || run(&url))
        .await
        .unwrap();
    server.stop().await;
}
