//! `/devices/{id}/vars` and `/group-vars`: values of flow variables per device and per group
//! (see `service::vars` for the precedence and when a device receives them).

use crate::contract::{GroupVarsChange, VarsChange};
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::{ApiResult, AppState, JsonBody, ok};

pub(super) async fn get_device_vars(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult {
    let body = st.handle.call(move |core, _| core.device_vars(&id)).await?;
    ok(StatusCode::OK, body)
}

pub(super) async fn put_device_vars(
    State(st): State<AppState>,
    Path(id): Path<String>,
    JsonBody(change): JsonBody<VarsChange>,
) -> ApiResult {
    let body = st
        .handle
        .call(move |core, now| core.set_device_vars(&id, change, now))
        .await?;
    ok(StatusCode::OK, body)
}

pub(super) async fn get_group_vars(State(st): State<AppState>) -> ApiResult {
    let body = st.handle.call(move |core, _| core.group_vars()).await?;
    ok(StatusCode::OK, body)
}

pub(super) async fn put_group_vars(
    State(st): State<AppState>,
    JsonBody(change): JsonBody<GroupVarsChange>,
) -> ApiResult {
    let body = st
        .handle
        .call(move |core, now| core.set_group_vars(change, now))
        .await?;
    ok(StatusCode::OK, body)
}
