//! The contract test: a real service behind the real router on loopback, every route called
//! through the crate's own client, and every JSON answer validated against the OpenAPI
//! document the server serves. The document's object schemas are made strict here
//! (`additionalProperties: false`), so an answer carrying a field the contract's types do not
//! declare fails, and so does one missing a field they require or spelling an enum another way.
//! The test also checks that every documented route was called, and that paging refuses bad
//! limits and cursors with a 400 naming them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::client::{Client, ClientError, Method};
use crate::contract::{
    AuditPage, ConfigInput, Deployment, DeploymentInput, DeploymentPage, DevicePage, FlowInput,
    TargetPage,
};
use crate::loadtest::{Behaviour, VirtualDevice};
use crate::service::{Core, ServiceConfig, spawn};
use crate::store::Store;
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::Path;
use tokio_util::sync::CancellationToken;

/// Makes every object schema with `properties` refuse other properties.
fn strict(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if m.contains_key("properties") && !m.contains_key("additionalProperties") {
                m.insert("additionalProperties".into(), Value::Bool(false));
            }
            for (_, child) in m.iter_mut() {
                strict(child);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(strict),
        _ => {}
    }
}

/// Validates answers against the served document and remembers which routes were checked.
struct Contract {
    doc: Value,
    components: Value,
    checked: BTreeSet<(String, String)>,
}

impl Contract {
    fn new(doc: Value) -> Self {
        let mut components = doc["components"].clone();
        strict(&mut components);
        Contract {
            doc,
            components,
            checked: BTreeSet::new(),
        }
    }

    /// Checks `body`, the answer to `method path` with `status`, against the document; `path`
    /// is the documented template (`/flows/{id}`).
    fn check(&mut self, method: &str, path: &str, status: u16, body: &Value) {
        self.check_as(method, path, status, body, "application~1json");
    }

    /// Checks `body` against the schema of the answer's `media` type (`~1` for `/`).
    fn check_as(&mut self, method: &str, path: &str, status: u16, body: &Value, media: &str) {
        let op = &self.doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is not in the document");
        let response = &op["responses"][status.to_string()];
        assert!(
            response.is_object(),
            "{method} {path} answered {status}, which the document does not list"
        );
        let Some(schema) = response.pointer(&format!("/content/{media}/schema")) else {
            assert!(
                body.is_null(),
                "{method} {path} {status} has a body the document does not describe: {body}"
            );
            self.checked.insert((method.into(), path.into()));
            return;
        };
        let mut full = json!({"$schema": "https://json-schema.org/draft/2020-12/schema",
                              "components": self.components.clone()});
        if let Value::Object(m) = schema {
            for (k, v) in m {
                full[k] = v.clone();
            }
        }
        strict(&mut full);
        let validator = jsonschema::validator_for(&full)
            .unwrap_or_else(|e| panic!("{method} {path}: the schema does not compile: {e}"));
        let errors: Vec<String> = validator
            .iter_errors(body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {path} {status}: the answer does not match the document:\n{}\nanswer: {body:#}",
            errors.join("\n")
        );
        self.checked.insert((method.into(), path.into()));
    }
}

/// The plan view of a canary over 12 devices of two types, one of them excluded.
fn canary_plan() -> crate::contract::DeploymentPlan {
    use floe_rollout::{Plan, Strategy, StrategyConfig, TargetFlags, TargetSpec};
    let mut cfg = StrategyConfig::defaults(Strategy::Canary);
    cfg.health_check = false;
    let targets = (0..12).map(|i| TargetSpec {
        id: format!("d{i}"),
        device_type: ["rpi4", "jetson"][i % 2].into(),
        region: "eu".into(),
        flags: TargetFlags {
            single_point_of_failure: i == 0,
            ..TargetFlags::default()
        },
        monitoring: 50,
    });
    let plan = Plan::new("a", cfg, targets, &Default::default(), 1).unwrap();
    crate::contract::DeploymentPlan::of(&plan, 100)
}

/// Calls `method url` (`url` relative to /api/v1) and checks the answer under the template
/// `path`; returns the body (null for an empty one).
fn call(
    c: &Client,
    contract: &mut Contract,
    method: Method,
    url: &str,
    path: &str,
    body: Option<&Value>,
) -> Value {
    let m = match method {
        Method::Get => "get",
        Method::Post => "post",
        Method::Put => "put",
        Method::Patch => "patch",
        Method::Delete => "delete",
    };
    let (status, value) = match c.call(method, url, body) {
        Ok(r) if r.text.is_empty() => (r.status, Value::Null),
        Ok(r) => (r.status, serde_json::from_str(&r.text).unwrap()),
        Err(ClientError::Api {
            status,
            code,
            message,
            field,
        }) => (
            status,
            json!({"error": {"code": code, "message": message, "field": field}}),
        ),
        Err(e) => panic!("{m} {url}: {e}"),
    };
    contract.check(m, path, status, &value);
    value
}

fn core_at(dir: &Path) -> Core {
    let store = Store::open(&dir.join("floe.db")).unwrap();
    Core::new(
        store,
        ServiceConfig::new(dir.to_path_buf()),
        SigningKey::from_bytes(&[1; 32]),
        SigningKey::from_bytes(&[2; 32]),
    )
    .unwrap()
}

fn example() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/temperature-alert.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// A real service behind the real router on a loopback port, for tests that talk HTTP.
pub(super) struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub(super) url: String,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    actor: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    /// Starts the service on a fresh data directory; the bearer token is `secret`.
    pub(super) async fn start() -> TestServer {
        TestServer::start_with(super::ApiOptions::default()).await
    }

    /// [`TestServer::start`] with `options` (a rate limit).
    pub(super) async fn start_with(options: super::ApiOptions) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let shutdown = CancellationToken::new();
        let (handle, actor) = spawn(core_at(dir.path()), shutdown.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        // The trust store `floe serve` would write for these keys, for `GET /join-info`.
        let trust_dir = dir.path().join("trust");
        let store = floe_wire::proto::TrustStore::new(
            vec![floe_wire::proto::TrustedKey::new(floe_wire::proto::Fixed(
                SigningKey::from_bytes(&[1; 32]).verifying_key().to_bytes(),
            ))],
            floe_wire::proto::TrustedKey::new(floe_wire::proto::Fixed(
                SigningKey::from_bytes(&[2; 32]).verifying_key().to_bytes(),
            )),
        );
        floe_wire::artifact::keys::write_trust(&trust_dir, &store).unwrap();
        let join = super::JoinSource {
            trust_dir,
            fabric: vec!["/ip4/127.0.0.1/tcp/7301/p2p/12D3KooWExample".into()],
            tls_pin: Some(format!("sha256:{}", "ab".repeat(32))),
        };
        let app = super::router_with_options(handle, "secret".into(), Some(join), options);
        let stop = shutdown.clone();
        let server = tokio::spawn(async move {
            // Like floe-httpd, the peer's address reaches the handlers as ConnectInfo.
            let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        });
        TestServer {
            url,
            shutdown,
            server,
            actor,
            _dir: dir,
        }
    }

    /// A client with the token.
    pub(super) fn client(&self) -> Client {
        Client::new(&self.url, Some("secret".into())).unwrap()
    }

    /// Stops the server and the actor.
    pub(super) async fn stop(self) {
        self.shutdown.cancel();
        self.server.await.unwrap().unwrap();
        self.actor.await.unwrap();
    }
}

/// A published flow's id.
pub(super) fn published_flow(c: &Client) -> String {
    let input = FlowInput {
        name: "Temperature Alert".into(),
        description: String::new(),
        tags: Vec::new(),
        definition: example(),
    };
    let flow: Value = c.create_flow(&input).unwrap().json().unwrap();
    let id = flow["id"].as_str().unwrap().to_string();
    c.publish_flow(&id).unwrap();
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_what_the_openapi_document_says() {
    let server = TestServer::start().await;
    let url = server.url.clone();
    let covered = tokio::task::spawn_blocking(move || exercise(&url))
        .await
        .unwrap();
    server.stop().await;

    let mut missing = Vec::new();
    for (path, methods) in crate::openapi::PATHS {
        for m in *methods {
            if !covered.contains(&(m.to_string(), path.to_string())) {
                missing.push(format!("{m} {path}"));
            }
        }
    }
    assert!(missing.is_empty(), "routes not exercised: {missing:?}");
}

/// Calls every route; returns the (method, path) pairs whose answers were checked.
fn exercise(server: &str) -> BTreeSet<(String, String)> {
    let c = Client::new(server, Some("secret".into())).unwrap();
    let doc: Value = c
        .call(Method::Get, "/openapi.json", None)
        .unwrap()
        .json()
        .unwrap();
    let mut k = Contract::new(doc);
    k.checked.insert(("get".into(), "/openapi.json".into()));
    let k = &mut k;
    use Method::{Delete, Get, Patch, Post, Put};

    call(&c, k, Get, "/healthz", "/healthz", None);

    // Flows: a draft, edited, published, a new version archived, a scratch flow deleted.
    let input = serde_json::to_value(FlowInput {
        name: "Temperature Alert".into(),
        description: "alerts".into(),
        tags: vec!["t".into()],
        definition: example(),
    })
    .unwrap();
    let flow = call(&c, k, Post, "/flows", "/flows", Some(&input));
    let id = flow["id"].as_str().unwrap().to_string();
    call(&c, k, Get, "/flows?state=draft", "/flows", None);
    call(&c, k, Get, &format!("/flows/{id}"), "/flows/{id}", None);
    call(
        &c,
        k,
        Put,
        &format!("/flows/{id}"),
        "/flows/{id}",
        Some(&input),
    );
    let published = call(
        &c,
        k,
        Post,
        &format!("/flows/{id}/publish"),
        "/flows/{id}/publish",
        None,
    );
    assert_eq!(published["state"], "published");
    let v2 = call(
        &c,
        k,
        Post,
        &format!("/flows/{id}/versions"),
        "/flows/{id}/versions",
        None,
    );
    let v2 = v2["id"].as_str().unwrap().to_string();
    call(
        &c,
        k,
        Post,
        &format!("/flows/{v2}/archive"),
        "/flows/{id}/archive",
        None,
    );
    let scratch = call(&c, k, Post, "/flows", "/flows", Some(&input));
    let scratch = scratch["id"].as_str().unwrap().to_string();
    call(
        &c,
        k,
        Delete,
        &format!("/flows/{scratch}"),
        "/flows/{id}",
        None,
    );
    let gone = call(
        &c,
        k,
        Get,
        &format!("/flows/{scratch}"),
        "/flows/{id}",
        None,
    );
    assert_eq!(gone["error"]["code"], "not_found");

    // Devices: three allowlisted one by one, two in a batch; one reports.
    let mut devices: Vec<VirtualDevice> = (0..5u8)
        .map(|i| VirtualDevice::new([i + 10; 32], "rpi4", "eu", Behaviour::Good))
        .collect();
    // The first reports its system figures, so the device view's `health.system` is checked
    // against the schema with values in it.
    devices[0] = VirtualDevice::new([10; 32], "rpi4", "eu", Behaviour::Good).with_system(
        floe_wire::proto::SystemSummary {
            cpu_permille: Some(250),
            memory_permille: Some(400),
            temperature_mc: Some(51_000),
            throttled: Some(false),
            disk_free_mb: Some(9_000),
            disk_used_permille: Some(350),
            functional_ok: Some(true),
        },
    );
    for d in &devices[..3] {
        let body =
            json!({"id": d.id(), "public_key": d.public_hex(), "type": "rpi4", "region": "eu"});
        call(&c, k, Post, "/devices", "/devices", Some(&body));
    }
    let batch: Vec<Value> = devices[3..]
        .iter()
        .map(
            |d| json!({"id": d.id(), "public_key": d.public_hex(), "type": "rpi4", "region": "eu"}),
        )
        .collect();
    let added = call(
        &c,
        k,
        Post,
        "/devices/batch",
        "/devices/batch",
        Some(&json!({"devices": batch})),
    );
    assert_eq!(added["created"], 2);
    for d in devices.iter_mut() {
        let report = d.report(floe_wire::clock::unix_ms()).unwrap();
        let url = format!("{server}/api/v1/devices/{}/report", d.id());
        let answer = ureq::post(&url)
            .header("Content-Type", "application/cbor")
            .send(&report[..])
            .unwrap();
        assert_eq!(answer.status().as_u16(), 204);
        k.checked
            .insert(("post".into(), "/devices/{id}/report".into()));
    }
    // Two devices nobody registered report anyway: refused, and listed as pending; one is
    // accepted (its next report enrolls it), the other rejected.
    let send = |d: &mut VirtualDevice| {
        let report = d.report(floe_wire::clock::unix_ms()).unwrap();
        let url = format!("{server}/api/v1/devices/{}/report", d.id());
        let mut answer = ureq::post(&url)
            .config()
            .http_status_as_error(false)
            .build()
            .header("Content-Type", "application/cbor")
            .send(&report[..])
            .unwrap();
        let status = answer.status().as_u16();
        (
            status,
            answer.body_mut().read_to_string().unwrap_or_default(),
        )
    };
    let mut asking: Vec<VirtualDevice> = (0..2u8)
        .map(|i| VirtualDevice::new([i + 40; 32], "jetson", "us", Behaviour::Good))
        .collect();
    for d in asking.iter_mut() {
        let (status, text) = send(d);
        assert_eq!(status, 401, "{text}");
        assert!(
            text.contains("pending") && text.contains("floe device accept"),
            "{text}"
        );
    }
    let pending = call(&c, k, Get, "/devices/pending", "/devices/pending", None);
    let listed: Vec<&str> = pending["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert!(
        listed.contains(&asking[0].id()) && listed.contains(&asking[1].id()),
        "{pending}"
    );
    let (a, b) = (asking[0].id().to_string(), asking[1].id().to_string());
    let accepted = call(
        &c,
        k,
        Post,
        &format!("/devices/pending/{a}/accept"),
        "/devices/pending/{id}/accept",
        None,
    );
    assert_eq!(accepted["type"], "jetson", "{accepted}");
    assert_eq!(
        send(&mut asking[0]).0,
        204,
        "accepted: its next report enrolls it"
    );
    call(
        &c,
        k,
        Delete,
        &format!("/devices/pending/{b}"),
        "/devices/pending/{id}",
        None,
    );
    let again = call(
        &c,
        k,
        Delete,
        &format!("/devices/pending/{b}"),
        "/devices/pending/{id}",
        None,
    );
    assert_eq!(again["error"]["code"], "not_found", "{again}");
    let pending = call(&c, k, Get, "/devices/pending", "/devices/pending", None);
    assert_eq!(pending["devices"], json!([]), "{pending}");
    let audit = call(&c, k, Get, "/audit?limit=20", "/audit", None);
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(
        actions.contains(&"device.accept") && actions.contains(&"device.reject"),
        "{actions:?}"
    );
    let first_id = devices[0].id().to_string();
    let one = call(
        &c,
        k,
        Get,
        &format!("/devices/{first_id}"),
        "/devices/{id}",
        None,
    );
    assert_eq!(one["health"]["status"], "healthy");
    assert_eq!(one["health"]["system"]["cpu_percent"], 25.0);
    assert_eq!(one["health"]["system"]["functional_ok"], true);
    let patch = json!({"maintenance": false, "monitoring": 80, "single_point_of_failure": true,
                       "known_hardware_issues": "fan"});
    let patched = call(
        &c,
        k,
        Patch,
        &format!("/devices/{first_id}"),
        "/devices/{id}",
        Some(&patch),
    );
    assert_eq!(patched["monitoring"], 80, "{patched}");
    assert_eq!(patched["single_point_of_failure"], true);
    assert_eq!(patched["known_hardware_issues"], "fan");
    let bad = json!({"monitoring": 101});
    let refused = call(
        &c,
        k,
        Patch,
        &format!("/devices/{first_id}"),
        "/devices/{id}",
        Some(&bad),
    );
    assert_eq!(refused["error"]["field"], "monitoring", "{refused}");
    let patch = json!({"single_point_of_failure": false, "known_hardware_issues": ""});
    call(
        &c,
        k,
        Patch,
        &format!("/devices/{first_id}"),
        "/devices/{id}",
        Some(&patch),
    );
    // Variables: a device's own values, a device-type group's, a label group's; refusals
    // name the field; the deployment below carries what they resolve to.
    let vars_url = format!("/devices/{first_id}/vars");
    let set = json!({"set": {"threshold": "41", "broker": "mqtt://10.0.0.7:1883"}});
    let mine = call(&c, k, Put, &vars_url, "/devices/{id}/vars", Some(&set));
    assert_eq!(mine["values"]["threshold"], "41");
    let group =
        json!({"group": {"device_type": "rpi4"}, "set": {"threshold": "35", "interval": "5s"}});
    let g = call(&c, k, Put, "/group-vars", "/group-vars", Some(&group));
    assert_eq!(g["values"]["interval"], "5s");
    let group = json!({"group": {"label": "site=plant-3"}, "set": {"interval": "1s"}});
    call(&c, k, Put, "/group-vars", "/group-vars", Some(&group));
    let groups = call(&c, k, Get, "/group-vars", "/group-vars", None);
    assert_eq!(groups["groups"].as_array().unwrap().len(), 2);
    let mine = call(&c, k, Get, &vars_url, "/devices/{id}/vars", None);
    assert_eq!(mine["resolved"]["threshold"]["value"], "41");
    assert_eq!(mine["resolved"]["threshold"]["source"], "device");
    assert_eq!(mine["resolved"]["interval"]["source"], "device_type");
    assert_eq!(mine["resolved"]["interval"]["group"], "rpi4");
    let bad = json!({"set": {"threshold": "a\u{1b}[2J"}});
    let refused = call(&c, k, Put, &vars_url, "/devices/{id}/vars", Some(&bad));
    assert_eq!(refused["error"]["code"], "validation_failed");
    assert_eq!(refused["error"]["field"], "set.threshold");
    let bad = json!({"group": {"label": "no-equals-sign"}, "set": {"x": "1"}});
    let refused = call(&c, k, Put, "/group-vars", "/group-vars", Some(&bad));
    assert_eq!(refused["error"]["field"], "group.label");
    // A secret value: accepted, then shown only as set (response checked against the schema).
    let secret = json!({"secret": {"mqtt_pass": "Contract-Secret-1"}});
    let mine = call(&c, k, Put, &vars_url, "/devices/{id}/vars", Some(&secret));
    assert_eq!(mine["values"]["mqtt_pass"], "<secret>");
    assert_eq!(mine["secret"], json!(["mqtt_pass"]));
    assert_eq!(mine["resolved"]["mqtt_pass"]["secret"], true);
    assert!(!mine.to_string().contains("Contract-Secret-1"));
    let group = json!({"group": {"device_type": "rpi4"}, "secret": {"token": "Contract-Secret-2"}});
    let g = call(&c, k, Put, "/group-vars", "/group-vars", Some(&group));
    assert_eq!(g["values"]["token"], "<secret>");
    assert!(!g.to_string().contains("Contract-Secret-2"));
    let unknown = call(&c, k, Get, "/devices/00ff/vars", "/devices/{id}/vars", None);
    assert_eq!(unknown["error"]["code"], "not_found");
    let page = call(&c, k, Get, "/devices?limit=2", "/devices", None);
    assert_eq!(page["devices"].as_array().unwrap().len(), 2);
    call(
        &c,
        k,
        Post,
        "/enrollment-tokens",
        "/enrollment-tokens",
        Some(&json!({"ttl": "1h"})),
    );

    // A deployment: created, listed, paged, started, paused, resumed, approved (refused),
    // rolled back, aborted (refused once finished), reported.
    let dep = DeploymentInput {
        flow_id: id.clone(),
        strategy: "rolling".into(),
        target_devices: Some(devices.iter().map(|d| d.id().to_string()).collect()),
        selector: None,
        config: ConfigInput {
            batch_size: Some(2),
            ..ConfigInput::default()
        },
    };
    let dep = call(
        &c,
        k,
        Post,
        "/deployments",
        "/deployments",
        Some(&serde_json::to_value(dep).unwrap()),
    );
    let dep_id = dep["id"].as_str().unwrap().to_string();
    assert_eq!(dep["target_counts"]["pending"], 5);
    assert!(
        dep.get("targets").is_none(),
        "targets are paged, not embedded"
    );
    call(&c, k, Get, "/deployments?limit=1", "/deployments", None);
    // A pending deployment has no incident report: 404 naming its status.
    let none = call(
        &c,
        k,
        Get,
        &format!("/deployments/{dep_id}/incident"),
        "/deployments/{id}/incident",
        None,
    );
    assert_eq!(none["error"]["code"], "not_found", "{none}");
    assert!(
        none["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("pending") && m.contains("failed or rolled-back")),
        "{none}"
    );
    let got = call(
        &c,
        k,
        Get,
        &format!("/deployments/{dep_id}"),
        "/deployments/{id}",
        None,
    );
    // The same answer with a canary plan's picks and warnings (a rolling plan has none).
    let mut with_canary = got.clone();
    with_canary["plan"] = serde_json::to_value(canary_plan()).unwrap();
    assert!(with_canary["plan"]["canary"][0]["covers"].is_string());
    assert!(with_canary["plan"]["warnings"][0].is_string());
    k.check("get", "/deployments/{id}", 200, &with_canary);
    let t = call(
        &c,
        k,
        Get,
        &format!("/deployments/{dep_id}/targets?limit=2"),
        "/deployments/{id}/targets",
        None,
    );
    assert_eq!(t["total"], 5);
    // The checklist stops the start (the virtual devices report no disk or memory figures
    // and have nothing to roll back to), naming every failed item; overriding them starts it.
    let start_url = format!("/deployments/{dep_id}/start");
    let refused = call(&c, k, Post, &start_url, "/deployments/{id}/start", None);
    assert_eq!(refused["error"]["code"], "preflight_failed", "{refused}");
    let state_url = format!("/deployments/{dep_id}/state");
    let state = call(&c, k, Get, &state_url, "/deployments/{id}/state", None);
    assert_eq!(state["phase"], "VALIDATE", "{state}");
    let all = json!({"override": crate::service::PREFLIGHT_ITEMS});
    let started = call(
        &c,
        k,
        Post,
        &start_url,
        "/deployments/{id}/start",
        Some(&all),
    );
    assert_eq!(started["preflight"]["when"], "start", "{started}");
    for action in ["pause", "resume", "approve", "rollback", "abort"] {
        let path = format!("/deployments/{{id}}/{action}");
        call(
            &c,
            k,
            Post,
            &format!("/deployments/{dep_id}/{action}"),
            &path,
            None,
        );
    }
    let report = call(
        &c,
        k,
        Get,
        &format!("/deployments/{dep_id}/report"),
        "/deployments/{id}/report",
        None,
    );
    assert!(report["fleet_total"].is_number(), "{report}");
    assert!(report["title"].is_string(), "{report}");
    // A directive is CBOR, signed by the coordinator: read it as a device does. The started
    // deployment sent the first batch theirs; the others have none (204).
    let mut with_directive = 0;
    for d in devices.iter_mut() {
        let url = format!("{server}/api/v1/devices/{}/directive", d.id());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut answer = ureq::get(&url)
            .header("floe-device-auth", &d.directive_auth(now))
            .call()
            .unwrap();
        match answer.status().as_u16() {
            200 => {
                assert_eq!(
                    answer.headers().get("content-type").unwrap(),
                    "application/cbor"
                );
                let post = answer.body_mut().read_to_vec().unwrap();
                let outcome = d.apply_post(&post, None).unwrap();
                assert!(
                    matches!(outcome, crate::loadtest::Outcome::New(_)),
                    "{outcome:?}"
                );
                with_directive += 1;
            }
            204 => {}
            other => panic!("GET {url}: {other}"),
        }
    }
    assert!(with_directive >= 1, "no device had a directive");
    // The devices carry out their rollback directives and report until the deployment is
    // rolled back; then it has its incident report.
    for _ in 0..50 {
        let d: Deployment = c.get_deployment(&dep_id).unwrap().json().unwrap();
        if d.status.is_terminal() {
            break;
        }
        for d in devices.iter_mut() {
            let now = floe_wire::clock::unix_ms();
            let url = format!("{server}/api/v1/devices/{}/directive", d.id());
            let mut answer = ureq::get(&url)
                .header("floe-device-auth", &d.directive_auth(now / 1000))
                .call()
                .unwrap();
            if answer.status().as_u16() == 200 {
                let post = answer.body_mut().read_to_vec().unwrap();
                d.apply_post(&post, None).unwrap();
            }
            let report = d.report(now).unwrap();
            let url = format!("{server}/api/v1/devices/{}/report", d.id());
            ureq::post(&url)
                .header("Content-Type", "application/cbor")
                .send(&report[..])
                .unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let incident = call(
        &c,
        k,
        Get,
        &format!("/deployments/{dep_id}/incident"),
        "/deployments/{id}/incident",
        None,
    );
    assert_eq!(incident["deployment_id"], dep_id.as_str(), "{incident}");
    assert_eq!(incident["status"], "rolled_back", "{incident}");
    assert_eq!(incident["affected"]["targets"], 5, "{incident}");
    k.checked
        .insert(("get".into(), "/devices/{id}/directive".into()));
    call(
        &c,
        k,
        Get,
        "/directives/pending?limit=10",
        "/directives/pending",
        None,
    );
    let feed = call(
        &c,
        k,
        Get,
        "/directives/feed?limit=10",
        "/directives/feed",
        None,
    );
    assert!(feed["cursor"].is_string(), "{feed}");
    let join = call(&c, k, Get, "/join-info", "/join-info", None);
    assert_eq!(join["fabric"].as_array().map(Vec::len), Some(1), "{join}");
    assert!(join["trust_store"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(
        join["tls_pin"]
            .as_str()
            .is_some_and(|p| p.starts_with("sha256:")),
        "{join}"
    );
    let health = call(
        &c,
        k,
        Get,
        "/health/groups?window=1h",
        "/health/groups",
        None,
    );
    assert!(health["groups"].is_array(), "{health}");
    let status = call(&c, k, Get, "/status", "/status", None);
    assert!(
        status["ingest"]["queue_capacity"].as_u64() > Some(0),
        "{status}"
    );
    let strategies = call(&c, k, Get, "/strategies", "/strategies", None);
    let waves = strategies["strategies"]
        .as_array()
        .and_then(|l| l.iter().find(|s| s["name"] == "canary-waves"))
        .unwrap_or_else(|| panic!("no canary-waves in {strategies}"));
    assert_eq!(waves["config"]["canary_percentage"], 3.0, "{waves}");
    assert_eq!(waves["config"]["waves"].as_array().map(Vec::len), Some(3));
    let audit = call(&c, k, Get, "/audit?limit=3", "/audit", None);
    assert_eq!(audit["entries"].as_array().unwrap().len(), 3);
    assert!(audit["next"].is_string());

    // Bad limits and cursors: 400 naming what is wrong, in the error shape.
    for url in [
        "/devices?limit=0",
        "/devices?limit=1001",
        "/devices?cursor=zz",
        "/audit?limit=x",
        "/deployments?cursor=00",
    ] {
        let path = url.split('?').next().unwrap();
        let e = call(&c, k, Get, url, path, None);
        assert_eq!(e["error"]["code"], "bad_request", "{url}: {e}");
    }
    let other = call(&c, k, Get, "/audit?limit=1", "/audit", None);
    let foreign = other["next"].as_str().unwrap();
    let e = call(
        &c,
        k,
        Get,
        &format!("/devices?cursor={foreign}"),
        "/devices",
        None,
    );
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a cursor of devices"),
        "{e}"
    );
    assert_eq!(e["error"]["field"], "cursor");

    // The typed pages read back through the client's iterators.
    let all = c.devices(&Default::default(), Some(2)).all().unwrap();
    assert_eq!(all.len(), 6, "five allowlisted and the accepted one");
    let deps = c.deployments(None, None, Some(1)).all().unwrap();
    assert_eq!(deps.len(), 1);
    let _: Deployment = c.get_deployment(&dep_id).unwrap().json().unwrap();
    let _: DevicePage = c.list_devices(&Default::default()).unwrap().json().unwrap();
    let _: DeploymentPage = c.list_deployments(None, None).unwrap().json().unwrap();
    let _: AuditPage = c.audit(Some(5), None, None).unwrap().json().unwrap();
    let _: TargetPage = c
        .call(Get, &format!("/deployments/{dep_id}/targets"), None)
        .unwrap()
        .json()
        .unwrap();

    // Named tokens, whoami, and the 403 a role without the right gets.
    let created = call(
        &c,
        k,
        Post,
        "/tokens",
        "/tokens",
        Some(&json!({"name": "watcher", "role": "viewer", "expires": "30d"})),
    );
    let secret = created["token"].as_str().unwrap().to_string();
    call(&c, k, Get, "/tokens", "/tokens", None);
    let me = call(&c, k, Get, "/whoami", "/whoami", None);
    assert_eq!(me["name"], "bootstrap");
    let viewer = Client::new(server, Some(secret)).unwrap();
    let e = call(&viewer, k, Post, "/tokens", "/tokens", Some(&json!({})));
    assert_eq!(e["error"]["code"], "forbidden", "{e}");
    call(&c, k, Delete, "/tokens/watcher", "/tokens/{name}", None);
    let e = call(&viewer, k, Get, "/whoami", "/whoami", None);
    assert_eq!(e["error"]["code"], "unauthorized", "{e}");

    // Webhooks: create (the secret shown once), list, the delivery log, delete; refusals
    // name the field.
    let created = call(
        &c,
        k,
        Post,
        "/hooks",
        "/hooks",
        Some(&json!({"url": "http://127.0.0.1:9/hook", "kinds": ["deployment.", "gate.verdict"]})),
    );
    let hook_id = created["hook"]["id"].as_str().unwrap().to_string();
    assert_eq!(created["secret"].as_str().unwrap().len(), 64, "{created}");
    for (bad, field) in [
        (json!({"url": "ftp://example.com/"}), "url"),
        (
            json!({"url": "http://127.0.0.1:9/", "kinds": ["deploy"]}),
            "kinds",
        ),
        (
            json!({"url": "http://127.0.0.1:9/", "deployment_id": "dep_none"}),
            "deployment_id",
        ),
    ] {
        let e = call(&c, k, Post, "/hooks", "/hooks", Some(&bad));
        assert_eq!(e["error"]["field"], field, "{e}");
    }
    let hooks = call(&c, k, Get, "/hooks", "/hooks", None);
    assert_eq!(hooks["hooks"].as_array().unwrap().len(), 1, "{hooks}");
    assert!(
        hooks["hooks"][0].get("secret").is_none(),
        "the secret is shown once"
    );
    let log_path = format!("/hooks/{hook_id}/deliveries");
    call(&c, k, Get, &log_path, "/hooks/{id}/deliveries", None);
    call(
        &c,
        k,
        Delete,
        &format!("/hooks/{hook_id}"),
        "/hooks/{id}",
        None,
    );
    let e = call(&c, k, Get, &log_path, "/hooks/{id}/deliveries", None);
    assert_eq!(e["error"]["code"], "not_found");
    let e = call(
        &c,
        k,
        Delete,
        &format!("/hooks/{hook_id}"),
        "/hooks/{id}",
        None,
    );
    assert_eq!(e["error"]["code"], "not_found");

    // Events: a bad filter is a 400; a resume from a position no longer kept starts with a
    // `reset` event, in the documented shape.
    let e = call(&c, k, Get, "/events?kind=deploy", "/events", None);
    assert_eq!(e["error"]["code"], "bad_request", "{e}");
    let mut stream = c.events(None, &[], Some(0)).unwrap();
    let first = stream.next().unwrap().unwrap();
    assert_eq!(first.kind, crate::contract::EventKind::Reset, "{first:?}");
    k.check_as(
        "get",
        "/events",
        200,
        &serde_json::to_value(&first).unwrap(),
        "text~1event-stream",
    );
    k.checked.clone()
}

/// The check is not vacuous: against the strict document, an answer with a field the types do
/// not declare fails, so does one missing a required field or spelling an enum another way.
#[test]
#[should_panic(expected = "does not match the document")]
fn an_undeclared_field_fails_the_check() {
    let mut k = Contract::new(crate::openapi::document());
    k.check("get", "/healthz", 200, &json!({"status": "ok"}));
    k.check(
        "get",
        "/healthz",
        200,
        &json!({"status": "ok", "uptime": 3}),
    );
}

#[test]
fn missing_fields_and_other_spellings_fail_the_check() {
    let doc = crate::openapi::document();
    let token = json!({"token": "t", "expires_at": "2026-11-22T03:00:00Z", "expires_at_ms": 1_795_316_400_000u64});
    let flows = json!({"flows": []});
    for (path, method, status, bad) in [
        ("/enrollment-tokens", "post", 201, json!({"token": "t"})),
        ("/flows", "get", 200, json!({"flows": [{"id": "f"}]})),
        ("/audit", "get", 200, json!({"entries": []})),
    ] {
        let result = std::panic::catch_unwind(|| {
            Contract::new(doc.clone()).check(method, path, status, &bad);
        });
        assert!(result.is_err(), "{method} {path} accepted {bad}");
    }
    let mut k = Contract::new(doc.clone());
    k.check("post", "/enrollment-tokens", 201, &token);
    k.check("get", "/flows", 200, &flows);
    let deployment_status = std::panic::catch_unwind(|| {
        let mut k = Contract::new(doc.clone());
        let mut t = json!({"targets": [{"device_id": "d", "status": "Success", "stage": 0,
                                        "generation": 0, "detail": ""}],
                           "next": null, "total": 1});
        k.check("get", "/deployments/{id}/targets", 200, &t);
        t["targets"][0]["status"] = json!("success");
        k.check("get", "/deployments/{id}/targets", 200, &t);
    });
    assert!(
        deployment_status.is_err(),
        "an enum spelled another way passed"
    );
}
