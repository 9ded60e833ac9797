//! Tests of the API's own decisions: which routes are open, error mapping.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use axum::http::Method;

fn open_route(method: &Method, path: &str) -> bool {
    auth::rule_for(method, path) == Some(auth::Rule::Open)
}

#[test]
fn only_health_openapi_the_console_and_the_device_routes_are_open() {
    assert!(open_route(&Method::GET, "/api/v1/healthz"));
    assert!(open_route(&Method::GET, "/healthz"));
    assert!(open_route(&Method::GET, "/api/v1/openapi.json"));
    assert!(open_route(&Method::POST, "/api/v1/devices/dev_1/report"));
    assert!(open_route(&Method::GET, "/api/v1/devices/dev_1/directive"));
    assert!(!open_route(&Method::GET, "/api/v1/devices/dev_1/report"));
    assert!(!open_route(
        &Method::POST,
        "/api/v1/devices/dev_1/directive"
    ));
    assert!(!open_route(&Method::GET, "/api/v1/devices/dev_1"));
    assert!(!open_route(&Method::POST, "/api/v1/devices/a/report/x"));
    assert!(!open_route(&Method::GET, "/api/v1/flows"));
    assert!(!open_route(&Method::PATCH, "/api/v1/devices/dev_1"));
    assert!(!open_route(&Method::GET, "/api/v1/whoami"));
    // The console's page and assets hold no data; everything they fetch needs the token.
    assert!(open_route(&Method::GET, "/"));
    assert!(open_route(&Method::GET, "/assets/index-abc.js"));
    assert!(!open_route(&Method::POST, "/"));
    assert!(!open_route(&Method::GET, "/api/v1/strategies"));
}

#[test]
fn service_errors_map_to_the_contract_codes() {
    let cases = [
        (
            ServiceError::NotFound {
                what: "flow",
                id: "flow_1".into(),
            },
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            ServiceError::Conflict("no".into()),
            StatusCode::CONFLICT,
            "conflict",
        ),
        (
            ServiceError::Validation {
                field: "config.timeout".into(),
                message: "bad".into(),
            },
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            ServiceError::BadRequest("x".into()),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            ServiceError::Refused("who".into()),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            ServiceError::Closed,
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
        ),
    ];
    for (err, status, code) in cases {
        let e = ApiError::from(err);
        assert_eq!((e.status, e.code), (status, code), "{}", e.message);
    }
    let e = ApiError::from(ServiceError::Validation {
        field: "config.timeout".into(),
        message: "bad".into(),
    });
    assert_eq!(e.field.as_deref(), Some("config.timeout"));
}
