//! Bearer authentication of the REST API: which routes are open (health, the OpenAPI
//! document, the device routes that carry their own signatures) and the check of every other
//! request's token.

use super::{ApiError, AppState, MAX_BODY, too_large};
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Constant-time comparison, so the token cannot be guessed byte by byte from timings.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(super) fn open_route(method: &axum::http::Method, path: &str) -> bool {
    let path = path.trim_end_matches('/');
    if path == "/healthz"
        || path == "/api/v1/healthz"
        || path == "/api/v1/openapi.json"
        || path == "/openapi.json"
    {
        return true;
    }
    let Some(rest) = path.strip_prefix("/api/v1/devices/") else {
        return false;
    };
    let mut parts = rest.split('/');
    let (_, tail, extra) = (parts.next(), parts.next(), parts.next());
    extra.is_none()
        && matches!(
            (method.as_str(), tail),
            ("POST", Some("report")) | ("GET", Some("directive"))
        )
}

pub(super) async fn auth(State(st): State<AppState>, req: Request, next: Next) -> Response {
    // A declared length over the cap is refused before any of the body is read.
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return too_large().into_response();
    }
    if open_route(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(t) if same(t.trim().as_bytes(), st.token.as_bytes()) => next.run(req).await,
        Some(_) => ApiError::unauthorized("the bearer token is not valid").into_response(),
        None => ApiError::unauthorized(
            "missing Authorization: Bearer <token> header (the token is in DATA_DIR/api-token)",
        )
        .into_response(),
    }
}

