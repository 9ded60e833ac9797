//! The VALIDATE phase and the operators' routes that go with it: `POST
//! /deployments/{id}/start` (an optional body naming checklist items to override; a failed
//! checklist answers 422 with every failed item), `GET /deployments/{id}/state` (reference
//! 003's state block) and `POST /flows/{id}/publish` (an optional body carrying the flow's
//! smoke test into the signed manifest).

use super::AppState;
use super::{ApiError, ApiResult, flow_response, ok, raw_body, views};
use crate::contract::{ErrorDetail, PreflightRefusal, PublishInput, StartInput};
use crate::service::StartOutcome;
use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::de::DeserializeOwned;

/// An optional JSON body: empty (or only whitespace) is the default value.
async fn optional_body<T: DeserializeOwned + Default>(
    req: Request,
    st: &AppState,
) -> Result<T, ApiError> {
    let bytes = raw_body(req, st).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))
}

/// `POST /deployments/{id}/start`.
pub(super) async fn start(
    State(st): State<AppState>,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult {
    let input: StartInput = optional_body(req, &st).await?;
    let outcome = st
        .handle
        .call(
            move |core, now| match core.start(&id, &input.overrides, now)? {
                StartOutcome::Started => Ok(Ok(core.with_deployment(&id, views::deployment)?)),
                StartOutcome::Refused(p) => Ok(Err(p)),
            },
        )
        .await?;
    match outcome {
        Ok(deployment) => ok(StatusCode::OK, deployment),
        Err(preflight) => {
            let body = PreflightRefusal {
                error: ErrorDetail {
                    code: "preflight_failed".into(),
                    message: preflight.summary(),
                    field: None,
                },
                preflight: Some(*preflight),
            };
            Ok((StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response())
        }
    }
}

/// `GET /deployments/{id}/state`.
pub(super) async fn state(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let body = st
        .handle
        .call(move |core, _| core.with_deployment(&id, crate::service::state_block))
        .await?;
    ok(StatusCode::OK, body)
}

/// `POST /flows/{id}/publish`.
pub(super) async fn publish(
    State(st): State<AppState>,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult {
    let input: PublishInput = optional_body(req, &st).await?;
    flow_response(&st, id, StatusCode::OK, move |core, id, now| {
        core.publish_flow_with(id, input.smoke_test.as_ref(), now)
    })
    .await
}
