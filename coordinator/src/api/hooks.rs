//! `/api/v1/hooks`: webhooks. A hook is stored and audited by the service; its deliveries run
//! in `service::webhooks`, off the actor. The secret is shown once, in the creation's answer.

use super::{ApiError, ApiResult, AppState, JsonBody, ok};
use crate::contract::{HookCreated, HookInput, HookList};
use crate::store::rfc3339;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;

pub(super) async fn create_hook(
    State(st): State<AppState>,
    JsonBody(input): JsonBody<HookInput>,
) -> ApiResult {
    // Started in the same job as the write, so a hook that is stored is running even if this
    // request goes away before the answer.
    let webhooks = st.handle.webhooks().clone();
    let runner = webhooks.clone();
    let record = st
        .handle
        .call(move |core, now| {
            let record = core.create_hook(input, now)?;
            runner.start(record.clone());
            Ok(record)
        })
        .await?;
    let secret = record.secret.clone();
    let id = record.id.clone();
    let hook = webhooks.view(&id).unwrap_or_else(|| crate::contract::Hook {
        id: record.id,
        url: record.url,
        kinds: record.kinds,
        deployment_id: record.deployment_id,
        created_at: rfc3339(record.created_at),
        queued: 0,
        dropped: 0,
    });
    ok(StatusCode::CREATED, HookCreated { hook, secret })
}

pub(super) async fn list_hooks(State(st): State<AppState>) -> ApiResult {
    ok(
        StatusCode::OK,
        HookList {
            hooks: st.handle.webhooks().list(),
        },
    )
}

pub(super) async fn delete_hook(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let webhooks = st.handle.webhooks().clone();
    st.handle
        .call(move |core, now| {
            core.delete_hook(&id, now)?;
            webhooks.stop(&id);
            Ok(())
        })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn deliveries(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    match st.handle.webhooks().deliveries(&id) {
        Some(log) => ok(StatusCode::OK, log),
        None => Err(ApiError::not_found(format!("hook {id} does not exist"))),
    }
}
