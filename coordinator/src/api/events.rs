//! `GET /api/v1/events`: the service's events as Server-Sent Events (`id:`, `event:`, `data:`
//! with the event's JSON; a `:` comment every 15 s keeps idle connections open).
//!
//! - Filters: `?deployment=ID` (events naming that deployment) and `?kind=a,b` (kinds, or
//!   prefixes ending in `.` such as `deployment.`).
//! - Resume: the `Last-Event-ID` header (or `?after=ID`) continues after that event with
//!   nothing missed and nothing repeated, as long as it is still in the coordinator's ring of
//!   recent events; otherwise the stream starts with a `reset` event (reload state).
//! - Each client has a bounded buffer ([`CLIENT_BUFFER`] events); a client that does not read
//!   is dropped (its stream ends) and counted, and the service never waits on it.
//! - The REST server (`floe-httpd`) ends every response at its request timeout, a stream too
//!   (60 s and 5 s to write, by default): clients open it again with the last id they saw.
//!   This also bounds how long a client that does not read holds its connection.
//! - Bearer token as every route: the console reads the stream with `fetch` and the
//!   `Authorization` header, so no token is ever accepted in the query string.

use super::{ApiError, ApiResult, AppState, query};
use crate::contract::KindFilter;
use crate::service::events::{CLIENT_BUFFER, Filter, Start};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

/// How often an idle stream gets a keep-alive comment.
pub(super) const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The position a request resumes after: `Last-Event-ID` wins over `?after=`.
fn resume_from(headers: &HeaderMap, q: &HashMap<String, String>) -> Result<Start, ApiError> {
    let (given, name) = match headers.get("last-event-id") {
        Some(v) => (
            Some(
                v.to_str()
                    .map_err(|_| ApiError::bad_request("Last-Event-ID is not text"))?
                    .to_string(),
            ),
            "Last-Event-ID",
        ),
        None => (q.get("after").cloned(), "after"),
    };
    match given.as_deref().map(str::trim) {
        None | Some("") => Ok(Start::Now),
        Some(v) => v.parse::<u64>().map(Start::After).map_err(|_| {
            ApiError::bad_request(format!(
                "{name} must be an event id (a non-negative integer), not {v:?}"
            ))
        }),
    }
}

pub(super) async fn events(
    State(st): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let q = query(q, &["deployment", "kind", "after"])?;
    let kinds = KindFilter::parse(q.get("kind").map(String::as_str).unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("kind: {e}")))?;
    let deployment = q.get("deployment").filter(|d| !d.is_empty()).cloned();
    let start = resume_from(&headers, &q)?;
    let sub = st
        .handle
        .events()
        .subscribe(start, Filter { kinds, deployment }, CLIENT_BUFFER);
    let stream = futures::stream::unfold(sub.events, |mut rx| async move {
        let e = rx.recv().await?;
        let sse = match serde_json::to_string(&*e) {
            Ok(json) => SseEvent::default()
                .id(e.id.to_string())
                .event(e.kind.as_str())
                .data(json),
            // An event is plain data and always encodes; should it not, say so in the stream.
            Err(err) => {
                SseEvent::default().comment(format!("event {} did not encode: {err}", e.id))
            }
        };
        Some((Ok::<_, Infallible>(sse), rx))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}
