//! The OpenAPI 3.1 document of the REST API, served at `/api/v1/openapi.json`.
//!
//! It is written by hand next to the routes (rather than generated) to keep the dependency
//! tree lean for a Raspberry Pi build; a unit test checks that every route the router serves
//! is documented here.

use serde_json::{Value, json};

fn error_ref() -> Value {
    json!({"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn op(summary: &str, body: Option<&str>, ok: (&str, &str)) -> Value {
    let mut o = json!({
        "summary": summary,
        "responses": {
            ok.0: {"description": ok.1, "content": {"application/json": {"schema": {"type": "object"}}}},
            "400": error_ref(), "401": error_ref(), "404": error_ref(), "409": error_ref(),
            "413": error_ref(), "422": error_ref(), "500": error_ref(),
        },
    });
    if let Some(schema) = body {
        o["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}});
    }
    o
}

fn id_param() -> Value {
    json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}])
}

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
    ("/deployments/{id}/targets", &["get"]),
    ("/devices", &["get", "post"]),
    ("/devices/{id}", &["get", "patch"]),
    ("/devices/batch", &["post"]),
    ("/directives/pending", &["get"]),
    ("/devices/{id}/report", &["post"]),
    ("/devices/{id}/directive", &["get"]),
    ("/enrollment-tokens", &["post"]),
    ("/join-info", &["get"]),
    ("/audit", &["get"]),
];

/// The document.
pub fn document() -> Value {
    let mut paths = serde_json::Map::new();
    let with_id = |mut v: Value| {
        v["parameters"] = id_param();
        v
    };
    paths.insert("/healthz".into(), json!({"get": {"summary": "Liveness", "security": [], "responses": {"200": {"description": "ok"}}}}));
    paths.insert("/openapi.json".into(), json!({"get": {"summary": "This document", "security": [], "responses": {"200": {"description": "the OpenAPI document"}}}}));
    paths.insert("/flows".into(), json!({
        "get": op("List flows (?state=draft|published|archived&tag=x; archived hidden unless asked)", None, ("200", "{\"flows\":[Flow]}")),
        "post": op("Create a draft flow (draft-level validation)", Some("FlowInput"), ("201", "Flow")),
    }));
    paths.insert("/flows/{id}".into(), with_id(json!({
        "get": op("A flow", None, ("200", "Flow")),
        "put": op("Edit a draft (409 unless draft)", Some("FlowInput"), ("200", "Flow")),
        "delete": op("Delete a flow (409 while an unfinished deployment uses it)", None, ("204", "deleted")),
    })));
    for (path, summary, status) in [
        (
            "/flows/{id}/publish",
            "Complete validation, then build and sign the artifact",
            "200",
        ),
        ("/flows/{id}/archive", "Archive a flow", "200"),
        (
            "/flows/{id}/versions",
            "A new draft version of a published or archived flow",
            "201",
        ),
    ] {
        paths.insert(
            path.into(),
            with_id(json!({"post": op(summary, None, (status, "Flow"))})),
        );
    }
    paths.insert("/deployments".into(), json!({
        "get": op("List deployments (?status=&flow_id=)", None, ("200", "{\"deployments\":[Deployment]}")),
        "post": op("Create a pending deployment of a published flow", Some("DeploymentInput"), ("201", "Deployment")),
    }));
    paths.insert(
        "/deployments/{id}".into(),
        with_id(json!({"get": op("A deployment", None, ("200", "Deployment"))})),
    );
    for action in ["start", "pause", "resume", "approve", "rollback", "abort"] {
        paths.insert(
            format!("/deployments/{{id}}/{action}"),
            with_id(json!({"post": op(&format!("{action} a deployment (409 when its state does not allow it)"), None, ("200", "Deployment"))})),
        );
    }
    paths.insert("/deployments/{id}/targets".into(), with_id(json!({"get": op("One page of the deployment's targets in plan order (?cursor=0&limit=1000); `next` is the cursor of the next page, null after the last", None, ("200", "{\"targets\":[…],\"next\",\"total\"}"))})));
    paths.insert("/deployments/{id}/report".into(), with_id(json!({"get": op("The deployment report (?format=json|markdown)", None, ("200", "report"))})));
    paths.insert("/devices".into(), json!({
        "get": op("List devices (?region=&type=&label=k=v&online=true)", None, ("200", "{\"devices\":[Device]}")),
        "post": op("Allowlist a device key for enrollment", Some("DeviceInput"), ("201", "Device")),
    }));
    paths.insert("/devices/{id}".into(), with_id(json!({
        "get": op("A device", None, ("200", "Device")),
        "patch": op("Set maintenance / quarantine flags", Some("DevicePatch"), ("200", "Device")),
    })));
    paths.insert("/directives/pending".into(), json!({"get": op("Devices behind their current directive, by id (?after=ID&limit=1000, at most 10000); `next` is the cursor of the next page", None, ("200", "{\"devices\":[{\"device_id\",\"generation\"}],\"next\"}"))}));
    paths.insert("/devices/batch".into(), json!({"post": op("Allowlist up to 1000 devices in one transaction ({\"devices\":[DeviceInput…]}); devices registered with the same key count as existing, any other refusal refuses the batch", None, ("200", "{\"created\",\"existing\"}"))}));
    paths.insert("/devices/{id}/report".into(), with_id(json!({"post": {
        "summary": "A device's signed report (raw CBOR envelope); authenticated by the device's signature, no bearer token",
        "security": [],
        "requestBody": {"required": true, "content": {"application/cbor": {"schema": {"type": "string", "format": "binary"}}}},
        "responses": {
            "204": {"description": "accepted (committed)", "headers": {"floe-desired-generation": {
                "description": "The generation of the device's current directive (0: none); fetch /devices/{id}/directive only when it is above the one applied",
                "schema": {"type": "integer", "minimum": 0}}}},
            "400": error_ref(), "401": error_ref(),
            "503": {"description": "the report queue is full; report again later", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}},
    }})));
    paths.insert("/devices/{id}/directive".into(), with_id(json!({"get": {
        "summary": "The device's current directive post (CBOR; signed by the coordinator key), or 204",
        "security": [],
        "responses": {"200": {"description": "DirectivePost", "content": {"application/cbor": {"schema": {"type": "string", "format": "binary"}}}}, "204": {"description": "no directive"}},
    }})));
    paths.insert("/enrollment-tokens".into(), json!({"post": op("A one-time enrollment token ({\"ttl\":\"1h\"})", Some("TokenInput"), ("201", "{\"token\",\"expires_at\"}"))}));
    paths.insert("/join-info".into(), json!({"get": op("What a join string holds besides its token: the fabric addresses and the device trust store (hex of trust.cbor); 409 without a fabric", None, ("200", "{\"fabric\":[multiaddr],\"trust_store\"}"))}));
    paths.insert("/audit".into(), json!({"get": op("Audit log, newest first (?limit=100&deployment_id=&device_id=)", None, ("200", "{\"entries\":[…]}"))}));

    json!({
        "openapi": "3.1.0",
        "info": {"title": "Floe coordinator API", "version": env!("CARGO_PKG_VERSION")},
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message", "field"], "properties": {
                    "code": {"type": "string", "enum": ["bad_request", "unauthorized", "not_found", "conflict", "payload_too_large", "validation_failed", "internal"]},
                    "message": {"type": "string"},
                    "field": {"type": ["string", "null"]},
                }}}},
                "FlowInput": {"type": "object", "required": ["name", "definition"], "additionalProperties": false, "properties": {
                    "name": {"type": "string"}, "description": {"type": "string"},
                    "tags": {"type": "array", "items": {"type": "string"}}, "definition": {"type": "object"},
                }},
                "DeploymentInput": {"type": "object", "required": ["flow_id", "strategy"], "additionalProperties": false, "properties": {
                    "flow_id": {"type": "string"},
                    "strategy": {"type": "string", "enum": ["all-at-once", "rolling", "canary", "blue-green", "canary-waves"]},
                    "target_devices": {"type": "array", "items": {"type": "string"}},
                    "selector": {"type": "object", "properties": {"labels": {"type": "object"}, "device_type": {"type": "string"}, "region": {"type": "string"}}},
                    "config": {"type": "object", "additionalProperties": false, "properties": {
                        "batch_size": {"type": "integer"}, "batch_delay": {"type": "string"}, "failure_threshold": {"type": "number"},
                        "canary_percentage": {"type": "number"}, "canary_delay": {"type": "string"}, "timeout": {"type": "string"},
                        "switch_delay": {"type": "string"}, "auto_rollback": {"type": "boolean"}, "health_check": {"type": "boolean"},
                        "require_approval": {"type": "boolean"}, "quorum": {"type": "number"}, "offline_grace": {"type": "string"},
                        "waves": {"type": "array", "items": {"type": "object"}}, "max_parallel": {"type": "integer"},
                    }},
                }},
                "DeviceInput": {"type": "object", "required": ["id", "public_key"], "additionalProperties": false, "properties": {
                    "id": {"type": "string"}, "public_key": {"type": "string"}, "type": {"type": "string"},
                    "region": {"type": "string"}, "labels": {"type": "object"},
                }},
                "DevicePatch": {"type": "object", "additionalProperties": false, "properties": {"maintenance": {"type": "boolean"}, "quarantined": {"type": "boolean"}}},
                "TokenInput": {"type": "object", "additionalProperties": false, "properties": {"ttl": {"type": "string"}}},
            },
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
}
