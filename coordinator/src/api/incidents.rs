//! `GET /deployments/{id}/incident`: the incident report of a failed or rolled-back
//! deployment (JSON, or markdown with `?format=markdown`); 404 naming the deployment's status
//! for any other deployment.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;

use super::{ApiResult, AppState, ok, query};

pub(super) async fn deployment_incident(
    State(st): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let markdown = super::wants_markdown(&query(q, &["format"])?)?;
    let report = st
        .handle
        .call(move |core, now| core.incident_report(&id, now))
        .await?;
    if markdown {
        let mut resp = report.to_markdown().into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/markdown; charset=utf-8"),
        );
        return Ok(resp);
    }
    ok(StatusCode::OK, report)
}
