//! Enrollment requests (`/devices/pending`): devices that reported without a token or an
//! allowlist entry, accepted or rejected by an operator (or an enroller token).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;

use super::{ApiResult, AppState, ok, views};
use crate::contract::{PendingDevice, PendingDeviceList};
use crate::store::rfc3339;

/// `GET /devices/pending`.
pub(super) async fn list(State(st): State<AppState>) -> ApiResult {
    let pending = st.handle.call(|core, _| Ok(core.pending_devices())).await?;
    let devices = pending
        .into_iter()
        .map(|p| PendingDevice {
            id: p.id,
            device_type: p.device_type,
            arch: p.arch,
            region: p.region,
            runtime_version: p.runtime_version,
            first_seen: rfc3339(p.first_seen),
            last_seen: rfc3339(p.last_seen),
            reports: p.reports,
        })
        .collect();
    ok(StatusCode::OK, PendingDeviceList { devices })
}

/// `POST /devices/pending/{id}/accept`: the device's key goes on the allowlist; its next
/// report enrolls it.
pub(super) async fn accept(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let body = st
        .handle
        .call(move |core, now| {
            let d = core.accept_device(&id, now)?;
            Ok(views::device(&d, false, 0))
        })
        .await?;
    ok(StatusCode::CREATED, body)
}

/// `DELETE /devices/pending/{id}`.
pub(super) async fn reject(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    st.handle
        .call(move |core, now| core.reject_device(&id, now))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
