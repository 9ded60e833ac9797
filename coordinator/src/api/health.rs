//! `GET /health/groups`: the fleet's health per device group, read from the stored health
//! rollups without the actor.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use floe_wire::clock::unix_ms;

use super::{ApiError, ApiResult, AppState, ok, query};
use crate::service::reads;

/// The longest span one answer covers (30 days; the retention usually keeps less).
const MAX_SPAN_MS: u64 = 30 * 24 * 3_600_000;

pub(super) async fn group_health(
    State(st): State<AppState>,
    q: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let q = query(q, &["window", "device_type"])?;
    let span = match q.get("window") {
        None => 24 * 3_600_000,
        Some(w) => floe_rollout::parse_duration(w)
            .map_err(|e| ApiError::bad_request(format!("window: {e}")))?,
    };
    if span == 0 || span > MAX_SPAN_MS {
        return Err(ApiError::bad_request(format!(
            "window: {span} ms is not between 1 ms and 30 days"
        )));
    }
    let window = st.handle.health_window();
    let now = unix_ms();
    // Closed windows only: the one still open is in memory, not yet written.
    let to = now - now % window;
    let from = to.saturating_sub(span.div_ceil(window) * window);
    let device_type = q.get("device_type").cloned();
    let body = st
        .handle
        .read(move |store| reads::group_health(store, from, to, window, device_type.as_deref()))
        .await?;
    ok(StatusCode::OK, body)
}
