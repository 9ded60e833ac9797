//! The OpenAPI 3.1 document of the REST API, served at `/api/v1/openapi.json`.
//!
//! The paths and their words are written here next to the route table; every request and
//! response body schema is derived (schemars) from the contract's types
//! (`crate::contract`), the same types the handlers answer with and the client reads, so the
//! document cannot drift from them. OpenAPI 3.1 uses JSON Schema 2020-12, which is what the
//! derived schemas are. A test in `api/tests` calls every route of a real service and
//! validates each answer against this document.

use crate::contract::{
    ApiTokenCreated, ApiTokenInput, ApiTokenList, DeviceVars, HealthGroups, PendingDeviceList,
    WhoAmI,
};
use crate::contract::{
    AuditPage, BatchResult, Deployment, DeploymentInput, DeploymentPage, Device, DeviceBatch,
    DeviceInput, DevicePage, DevicePatch, EnrollToken, ErrorBody, FeedPage, Flow, FlowInput,
    FlowList, GroupVars, GroupVarsChange, GroupVarsList, Healthz, IncidentReport, JoinInfo,
    PendingPage, Report, Status, StrategyList, TargetPage, TokenInput, VarsChange,
};
use crate::contract::{DeliveryLog, Event, HookCreated, HookInput, HookList};
mod preflight;

use schemars::generate::{Contract, SchemaSettings};
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value, json};

/// The paths the router serves under `/api/v1`, as (path, methods).
pub const PATHS: &[(&str, &[&str])] = &[
    ("/healthz", &["get"]),
    ("/openapi.json", &["get"]),
    ("/flows", &["get", "post"]),
    ("/flows/{id}", &["get", "put", "delete"]),
    ("/flows/{id}/publish", &["post"]),
    ("/flows/{id}/archive", &["post"]),
    ("/flows/{id}/versions", &["post"]),
    ("/deployments", &["get", "post"]),
    ("/deployments/{id}", &["get"]),
    ("/deployments/{id}/start", &["post"]),
    ("/deployments/{id}/pause", &["post"]),
    ("/deployments/{id}/resume", &["post"]),
    ("/deployments/{id}/approve", &["post"]),
    ("/deployments/{id}/rollback", &["post"]),
    ("/deployments/{id}/abort", &["post"]),
    ("/deployments/{id}/report", &["get"]),
    ("/deployments/{id}/incident", &["get"]),
    ("/deployments/{id}/targets", &["get"]),
    ("/deployments/{id}/state", &["get"]),
    ("/devices", &["get", "post"]),
    ("/devices/{id}", &["get", "patch"]),
    ("/devices/batch", &["post"]),
    ("/devices/pending", &["get"]),
    ("/devices/pending/{id}", &["delete"]),
    ("/devices/pending/{id}/accept", &["post"]),
    ("/directives/pending", &["get"]),
    ("/directives/feed", &["get"]),
    ("/devices/{id}/report", &["post"]),
    ("/devices/{id}/directive", &["get"]),
    ("/devices/{id}/vars", &["get", "put"]),
    ("/group-vars", &["get", "put"]),
    ("/enrollment-tokens", &["post"]),
    ("/join-info", &["get"]),
    ("/strategies", &["get"]),
    ("/audit", &["get"]),
    ("/status", &["get"]),
    ("/events", &["get"]),
    ("/hooks", &["get", "post"]),
    ("/hooks/{id}", &["delete"]),
    ("/hooks/{id}/deliveries", &["get"]),
    ("/health/groups", &["get"]),
    ("/tokens", &["get", "post"]),
    ("/tokens/{name}", &["delete"]),
    ("/whoami", &["get"]),
];

/// Schemas of request bodies (as they deserialise) and of responses (as they serialise),
/// collected under `#/components/schemas`.
struct Schemas {
    requests: SchemaGenerator,
    responses: SchemaGenerator,
}

impl Schemas {
    fn new() -> Self {
        let settings = |contract: Contract| {
            SchemaSettings::draft2020_12().with(|s| {
                s.definitions_path = "/components/schemas".into();
                s.meta_schema = None;
                s.contract = contract;
            })
        };
        Self {
            requests: SchemaGenerator::new(settings(Contract::Deserialize)),
            responses: SchemaGenerator::new(settings(Contract::Serialize)),
        }
    }

    fn request<T: JsonSchema>(&mut self) -> Value {
        self.requests.subschema_for::<T>().to_value()
    }

    fn response<T: JsonSchema>(&mut self) -> Value {
        self.responses.subschema_for::<T>().to_value()
    }

    fn into_components(mut self) -> Map<String, Value> {
        let mut all = self.requests.take_definitions(true);
        all.extend(self.responses.take_definitions(true));
        all
    }
}

fn error_response(s: &mut Schemas, description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": s.response::<ErrorBody>()}}})
}

/// The error answers every protected JSON route can give.
fn errors(s: &mut Schemas, o: &mut Map<String, Value>) {
    for (code, text) in [
        ("400", "malformed request, bad query, limit or cursor"),
        ("401", "missing, unknown, revoked or expired bearer token"),
        (
            "403",
            "the token's role may not do this; the message names the role and what is needed",
        ),
        (
            "429",
            "the token is over its rate limit; `Retry-After` says when to try again",
        ),
        ("404", "no such thing"),
        ("409", "the state does not allow it"),
        ("413", "the body is over 1 MiB"),
        ("422", "a value does not validate; `field` names it"),
        ("500", "the coordinator failed"),
    ] {
        o.insert(code.into(), error_response(s, text));
    }
}

/// An operation answering `status` with a JSON body of `T`, taking `body` when given.
fn op<T: JsonSchema>(
    s: &mut Schemas,
    summary: &str,
    body: Option<Value>,
    status: &str,
    what: &str,
    params: Vec<Value>,
) -> Value {
    let mut responses = Map::new();
    responses.insert(
        status.into(),
        json!({"description": what, "content": {"application/json": {"schema": s.response::<T>()}}}),
    );
    errors(s, &mut responses);
    let mut o = json!({"summary": summary, "responses": responses});
    if let Some(schema) = body {
        o["requestBody"] =
            json!({"required": true, "content": {"application/json": {"schema": schema}}});
    }
    if !params.is_empty() {
        o["parameters"] = Value::Array(params);
    }
    o
}

fn q(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": {"type": "string"}})
}

fn paging() -> Vec<Value> {
    vec![
        q(
            "cursor",
            "the `next` of the previous page, unchanged (opaque); absent for the first page",
        ),
        json!({"name": "limit", "in": "query", "required": false,
               "description": "items per page, 1 to 1000 (default 100)",
               "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}}),
    ]
}

fn with_id(mut v: Value) -> Value {
    v["parameters"] =
        json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}]);
    v
}

/// The document.
pub fn document() -> Value {
    let mut s = Schemas::new();
    let mut paths = Map::new();
    paths.insert(
        "/healthz".into(),
        json!({"get": {"summary": "Liveness", "security": [], "responses": {"200": {
            "description": "ok", "content": {"application/json": {"schema": s.response::<Healthz>()}}}}}}),
    );
    paths.insert(
        "/openapi.json".into(),
        json!({"get": {"summary": "This document", "security": [], "responses": {"200": {
            "description": "the OpenAPI document", "content": {"application/json": {"schema": {"type": "object"}}}}}}}),
    );
    let flow_input = s.request::<FlowInput>();
    paths.insert("/flows".into(), json!({
        "get": op::<FlowList>(&mut s, "List flows (archived hidden unless asked for)", None, "200", "the flows",
            vec![q("state", "draft, published or archived"), q("tag", "only flows with this tag")]),
        "post": op::<Flow>(&mut s, "Create a draft flow (draft-level validation)", Some(flow_input.clone()), "201", "the draft", vec![]),
    }));
    let mut delete_responses = Map::new();
    delete_responses.insert("204".into(), json!({"description": "deleted"}));
    errors(&mut s, &mut delete_responses);
    paths.insert("/flows/{id}".into(), with_id(json!({
        "get": op::<Flow>(&mut s, "A flow", None, "200", "the flow", vec![]),
        "put": op::<Flow>(&mut s, "Edit a draft (409 unless draft)", Some(flow_input), "200", "the edited draft", vec![]),
        "delete": {"summary": "Delete a flow (409 while an unfinished deployment uses it)", "responses": delete_responses},
    })));
    let publish = preflight::publish(&mut s);
    paths.insert(
        "/flows/{id}/publish".into(),
        with_id(json!({ "post": publish })),
    );
    for (path, summary, status) in [
        ("/flows/{id}/archive", "Archive a flow", "200"),
        (
            "/flows/{id}/versions",
            "A new draft version of a published or archived flow",
            "201",
        ),
    ] {
        let o = op::<Flow>(&mut s, summary, None, status, "the flow", vec![]);
        paths.insert(path.into(), with_id(json!({ "post": o })));
    }
    let mut list_params = vec![
        q(
            "status",
            "pending, running, paused, completed, failed or rolled_back",
        ),
        q("flow_id", "only deployments of this flow version"),
    ];
    list_params.extend(paging());
    let dep_input = s.request::<DeploymentInput>();
    paths.insert("/deployments".into(), json!({
        "get": op::<DeploymentPage>(&mut s, "List deployments, oldest first, one page at a time", None, "200", "one page", list_params),
        "post": op::<Deployment>(&mut s, "Create a pending deployment of a published flow", Some(dep_input), "201", "the deployment", vec![]),
    }));
    let o = op::<Deployment>(
        &mut s,
        "A deployment; its targets are counted here and listed by /targets",
        None,
        "200",
        "the deployment",
        vec![],
    );
    paths.insert("/deployments/{id}".into(), with_id(json!({ "get": o })));
    let start = preflight::start(&mut s);
    paths.insert(
        "/deployments/{id}/start".into(),
        with_id(json!({ "post": start })),
    );
    let state = preflight::state(&mut s);
    paths.insert(
        "/deployments/{id}/state".into(),
        with_id(json!({ "get": state })),
    );
    for action in ["pause", "resume", "approve", "rollback", "abort"] {
        let o = op::<Deployment>(
            &mut s,
            &format!("{action} a deployment (409 when its state does not allow it)"),
            None,
            "200",
            "the deployment",
            vec![],
        );
        paths.insert(
            format!("/deployments/{{id}}/{action}"),
            with_id(json!({ "post": o })),
        );
    }
    let o = op::<TargetPage>(
        &mut s,
        "One page of the deployment's targets in plan order",
        None,
        "200",
        "one page",
        paging(),
    );
    paths.insert(
        "/deployments/{id}/targets".into(),
        with_id(json!({ "get": o })),
    );
    let mut report = op::<Report>(
        &mut s,
        "The deployment report",
        None,
        "200",
        "the report (JSON), or its markdown with ?format=markdown",
        vec![q("format", "json (default) or markdown")],
    );
    report["responses"]["200"]["content"]["text/markdown"] = json!({"schema": {"type": "string"}});
    paths.insert(
        "/deployments/{id}/report".into(),
        with_id(json!({ "get": report })),
    );
    let mut incident = op::<IncidentReport>(
        &mut s,
        "The incident report of a failed or rolled-back deployment (404 for any other)",
        None,
        "200",
        "the report (JSON), or its markdown with ?format=markdown",
        vec![q("format", "json (default) or markdown")],
    );
    incident["responses"]["200"]["content"]["text/markdown"] =
        json!({"schema": {"type": "string"}});
    paths.insert(
        "/deployments/{id}/incident".into(),
        with_id(json!({ "get": incident })),
    );
    let mut device_params = vec![
        q("region", "only this region"),
        q("type", "only this device type"),
        q("label", "key=value; only devices with this label"),
        q("online", "true or false"),
    ];
    device_params.extend(paging());
    let device_input = s.request::<DeviceInput>();
    paths.insert("/devices".into(), json!({
        "get": op::<DevicePage>(&mut s, "List devices by id, one page at a time", None, "200", "one page", device_params),
        "post": op::<Device>(&mut s, "Allowlist a device key for enrollment", Some(device_input), "201", "the device", vec![]),
    }));
    let patch = s.request::<DevicePatch>();
    paths.insert("/devices/{id}".into(), with_id(json!({
        "get": op::<Device>(&mut s, "A device", None, "200", "the device", vec![]),
        "patch": op::<Device>(&mut s, "Set maintenance / quarantine flags", Some(patch), "200", "the device", vec![]),
    })));
    let change = s.request::<VarsChange>();
    paths.insert("/devices/{id}/vars".into(), with_id(json!({
        "get": op::<DeviceVars>(&mut s, "A device's own values of flow variables and what it resolves to now (device over label group over device-type group)", None, "200", "the values", vec![]),
        "put": op::<DeviceVars>(&mut s, "Set and unset a device's own values (names by the flow rule, values at most 256 bytes of text, 16 per device); `secret` values are stored encrypted, delivered sealed to the device's key and shown as <secret>; audited (names only for secrets)", Some(change), "200", "the values", vec![]),
    })));
    let change = s.request::<GroupVarsChange>();
    paths.insert("/group-vars".into(), json!({
        "get": op::<GroupVarsList>(&mut s, "Every group (label key=value or device type) holding values of flow variables", None, "200", "the groups", vec![]),
        "put": op::<GroupVars>(&mut s, "Set and unset one group's values (`secret` ones stored encrypted and shown as <secret>); audited", Some(change), "200", "the group's values", vec![]),
    }));
    let o = op::<PendingPage>(
        &mut s,
        "Devices behind their current directive, by id; `next` is the `after` of the next page",
        None,
        "200",
        "one page",
        vec![
            q("after", "a device id; the page starts after it"),
            json!({"name": "limit", "in": "query", "required": false,
                   "schema": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 1000}}),
        ],
    );
    paths.insert("/directives/pending".into(), json!({ "get": o }));
    let o = op::<FeedPage>(
        &mut s,
        "Directives issued after the cursor that their device has not applied, in issue order, each with its signed post in hex; `cursor` is where to continue (a cursor from before a restart starts over)",
        None,
        "200",
        "one page",
        vec![
            q(
                "since",
                "a cursor this route gave (EPOCH-SEQ in hex); absent: from the start",
            ),
            json!({"name": "limit", "in": "query", "required": false,
                   "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 1000}}),
        ],
    );
    paths.insert("/directives/feed".into(), json!({ "get": o }));
    let batch = s.request::<DeviceBatch>();
    let o = op::<BatchResult>(
        &mut s,
        "Allowlist up to 1000 devices in one transaction; devices registered with the same key count as existing, any other refusal refuses the batch",
        Some(batch),
        "200",
        "how many were added",
        vec![],
    );
    paths.insert("/devices/batch".into(), json!({ "post": o }));
    let busy = error_response(&mut s, "the report queue is full; report again later");
    let (bad, unauthorized) = (
        error_response(&mut s, "the report names another device"),
        error_response(&mut s, "the report does not verify or is refused"),
    );
    paths.insert("/devices/{id}/report".into(), with_id(json!({"post": {
        "summary": "A device's signed report (raw CBOR envelope); authenticated by the device's signature, no bearer token",
        "security": [],
        "requestBody": {"required": true, "content": {"application/cbor": {"schema": {"type": "string", "format": "binary"}}}},
        "responses": {
            "204": {"description": "accepted (committed)", "headers": {"floe-desired-generation": {
                "description": "The generation of the device's current directive (0: none); fetch /devices/{id}/directive only when it is above the one applied",
                "schema": {"type": "integer", "minimum": 0}}}},
            "400": bad, "401": unauthorized, "503": busy},
    }})));
    paths.insert("/devices/{id}/directive".into(), with_id(json!({"get": {
        "summary": "The device's current directive post (CBOR; signed by the coordinator key), or 204; only for the device itself",
        "security": [],
        "parameters": [{"name": "floe-device-auth", "in": "header", "required": true, "schema": {"type": "string"}, "description": "<unix seconds>.<hex ed25519 signature by the device's key over \"floe-sig-v1\\0device-request\\0GET /api/v1/devices/{id}/directive\\n<unix seconds>\">, within 120 s of the coordinator's clock"}],
        "responses": {"200": {"description": "DirectivePost", "content": {"application/cbor": {"schema": {"type": "string", "format": "binary"}}}}, "204": {"description": "no directive"}, "401": {"description": "missing, stale or foreign signature"}},
    }})));
    let o = op::<PendingDeviceList>(
        &mut s,
        "Devices that reported without an enrollment token or an allowlist entry, oldest first (held in memory, at most 1 000)",
        None,
        "200",
        "the requests",
        vec![],
    );
    paths.insert("/devices/pending".into(), json!({ "get": o }));
    let o = op::<Device>(
        &mut s,
        "Accept a device's request: its key goes on the allowlist with the facts it reported, and its next report enrolls it (audited)",
        None,
        "201",
        "the allowlisted device",
        vec![],
    );
    paths.insert(
        "/devices/pending/{id}/accept".into(),
        with_id(json!({ "post": o })),
    );
    let mut reject = Map::new();
    reject.insert(
        "204".into(),
        json!({"description": "dropped; a device that keeps reporting asks again"}),
    );
    errors(&mut s, &mut reject);
    paths.insert(
        "/devices/pending/{id}".into(),
        with_id(json!({"delete": {
            "summary": "Reject a device's request (audited)",
            "responses": reject,
        }})),
    );
    let token = s.request::<TokenInput>();
    let o = op::<EnrollToken>(
        &mut s,
        "A one-time enrollment token",
        Some(token),
        "201",
        "the token",
        vec![],
    );
    paths.insert("/enrollment-tokens".into(), json!({ "post": o }));
    let mut audit_params = vec![
        q("deployment_id", "only this deployment"),
        q("device_id", "only this device"),
    ];
    audit_params.extend(paging());
    let o = op::<AuditPage>(
        &mut s,
        "The audit log, newest first, one page at a time",
        None,
        "200",
        "one page",
        audit_params,
    );
    paths.insert("/audit".into(), json!({ "get": o }));
    let o = op::<Status>(
        &mut s,
        "The coordinator's own figures since start (the ingest path's counters)",
        None,
        "200",
        "the figures",
        vec![],
    );
    paths.insert("/status".into(), json!({ "get": o }));
    let o = op::<StrategyList>(
        &mut s,
        "The deployment strategies, each with the defaults a deployment request fills in",
        None,
        "200",
        "every strategy",
        vec![],
    );
    paths.insert("/strategies".into(), json!({ "get": o }));
    let o = op::<JoinInfo>(
        &mut s,
        "What a join string holds besides its token: the fabric addresses and the device trust store (hex of trust.cbor); 409 without a fabric",
        None,
        "200",
        "the join information",
        vec![],
    );
    paths.insert("/join-info".into(), json!({ "get": o }));
    let o = op::<HealthGroups>(
        &mut s,
        "The fleet's health per device type and per type and region over the closed rollup windows of the last `window` (reports of normal operation only: not on trial, rolling back, quarantined or in maintenance)",
        None,
        "200",
        "the groups",
        vec![
            q(
                "window",
                "how far back, a duration such as 1h (default 24h, at most 30 days)",
            ),
            q("device_type", "only this device type"),
        ],
    );
    paths.insert("/health/groups".into(), json!({ "get": o }));
    let list = op::<ApiTokenList>(
        &mut s,
        "Every named API token and the bootstrap token, by name, without secrets (admin)",
        None,
        "200",
        "the tokens",
        vec![],
    );
    let input = s.request::<ApiTokenInput>();
    let create = op::<ApiTokenCreated>(
        &mut s,
        "A named API token with a role and an optional lifetime; its secret is in this answer only (admin)",
        Some(input),
        "201",
        "the token and its secret",
        vec![],
    );
    paths.insert("/tokens".into(), json!({ "get": list, "post": create }));
    let mut revoke = Map::new();
    revoke.insert(
        "204".into(),
        json!({"description": "revoked; the token stops working at once"}),
    );
    errors(&mut s, &mut revoke);
    paths.insert("/tokens/{name}".into(), json!({"delete": {
        "summary": "Revokes a named API token (admin); the bootstrap token is not revocable here (409)",
        "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
        "responses": revoke,
    }}));
    let o = op::<WhoAmI>(
        &mut s,
        "The caller's token: its name and role (any token)",
        None,
        "200",
        "the caller",
        vec![],
    );
    paths.insert("/whoami".into(), json!({ "get": o }));

    let event = s.response::<Event>();
    let mut o = op::<Event>(
        &mut s,
        "Live events as Server-Sent Events: each `id:` (the event id), `event:` (its kind) and `data:` (the Event JSON); a `:` comment every 15 s. Resume with the Last-Event-ID header (or ?after=): the events after it, or a `reset` event first when they are no longer kept (reload state). A client that does not read is dropped (its stream ends)",
        None,
        "200",
        "the stream",
        vec![
            q("deployment", "only events of this deployment"),
            q(
                "kind",
                "comma-separated kinds, or prefixes ending in '.' (deployment.)",
            ),
            q(
                "after",
                "an event id to resume after (the Last-Event-ID header wins)",
            ),
            json!({"name": "Last-Event-ID", "in": "header", "required": false, "schema": {"type": "string"}, "description": "the id of the last event received"}),
        ],
    );
    o["responses"]["200"] = json!({"description": "the stream (text/event-stream); each data: line is an Event", "content": {"text/event-stream": {"schema": event}}});
    paths.insert("/events".into(), json!({ "get": o }));
    let hook_input = s.request::<HookInput>();
    paths.insert("/hooks".into(), json!({
        "get": op::<HookList>(&mut s, "Every webhook, oldest first, with its queue depth and drops", None, "200", "the hooks", vec![]),
        "post": op::<HookCreated>(&mut s, "Register a webhook: matching events are POSTed to its URL, signed X-Floe-Signature: sha256=<hex HMAC-SHA256(secret, body)>, with X-Floe-Event and X-Floe-Delivery; retried with backoff; the secret is in this answer only; audited", Some(hook_input), "201", "the hook and its secret", vec![]),
    }));
    let mut del = op::<HookList>(
        &mut s,
        "Delete a webhook (audited)",
        None,
        "204",
        "deleted",
        vec![],
    );
    del["responses"]["204"] = json!({"description": "deleted"});
    paths.insert("/hooks/{id}".into(), with_id(json!({ "delete": del })));
    paths.insert("/hooks/{id}/deliveries".into(), with_id(json!({
        "get": op::<DeliveryLog>(&mut s, "A webhook's recent delivery attempts and drops (the last 200, newest first; memory only)", None, "200", "the log", vec![]),
    })));

    let mut schemas = s.into_components();
    let _ = schemas.insert(
        "DirectivePost".into(),
        json!({"type": "string", "format": "binary", "description": "floe-wire's DirectivePost, CBOR"}),
    );
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Floe coordinator API", "version": env!("CARGO_PKG_VERSION")},
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas,
        },
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn every_route_is_documented_with_its_methods() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        for (path, methods) in PATHS {
            let item = &doc["paths"][*path];
            assert!(item.is_object(), "{path} is not documented");
            for m in *methods {
                assert!(item[*m].is_object(), "{m} {path} is not documented");
            }
        }
        assert_eq!(doc["paths"].as_object().unwrap().len(), PATHS.len());
    }

    /// Every JSON body of every operation resolves to a schema with properties or a known
    /// shape, and every `$ref` names a schema the document has: no placeholder
    /// `{"type":"object"}` bodies (except the document itself) and no dangling references.
    #[test]
    fn every_json_body_has_a_real_schema_and_every_ref_resolves() {
        let doc = document();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let resolve = |v: &Value| -> Value {
            match v["$ref"].as_str() {
                Some(r) => {
                    let name = r.strip_prefix("#/components/schemas/").expect(r);
                    schemas
                        .get(name)
                        .unwrap_or_else(|| panic!("{r} dangles"))
                        .clone()
                }
                None => v.clone(),
            }
        };
        for (path, item) in doc["paths"].as_object().unwrap() {
            if path == "/openapi.json" {
                continue;
            }
            for (method, o) in item.as_object().unwrap() {
                if method == "parameters" {
                    continue;
                }
                let mut bodies = vec![];
                for (_, r) in o["responses"].as_object().unwrap() {
                    if let Some(s) = r.pointer("/content/application~1json/schema") {
                        bodies.push(s.clone());
                    }
                }
                if let Some(s) = o.pointer("/requestBody/content/application~1json/schema") {
                    bodies.push(s.clone());
                }
                for b in bodies {
                    let s = resolve(&b);
                    assert!(
                        s["properties"].is_object(),
                        "{method} {path}: a body without properties: {s}"
                    );
                }
            }
        }
        let text = doc.to_string();
        for part in text.split("\"$ref\":\"").skip(1) {
            let r = part.split('"').next().unwrap();
            let name = r.strip_prefix("#/components/schemas/").expect(r);
            assert!(schemas.contains_key(name), "{r} dangles");
        }
        for name in [
            "Flow",
            "Deployment",
            "Device",
            "TargetPage",
            "Report",
            "ErrorBody",
        ] {
            assert!(schemas.contains_key(name), "{name} missing");
        }
    }
}
