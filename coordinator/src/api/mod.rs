//! The REST API under `/api/v1` (axum), as the contract shared with the CLI describes it.
//!
//! Why it is shaped this way:
//! - Handlers are thin: they parse and check the request, then hand a closure to the service
//!   actor ([`ServiceHandle::call`]) that does the work against the one owner of the state and
//!   hands back the answer as the contract's typed value (`crate::contract`), so a response is
//!   always one consistent snapshot; the handler serialises it, off the actor.
//!   Reads of committed data alone (flows, the audit log) go to a read-only connection
//!   instead ([`ServiceHandle::read`], one read transaction: also one snapshot), so they
//!   never wait for the actor.
//! - Lists that grow with the fleet are paged (`contract::paging`): `?cursor=&limit=`, an
//!   opaque cursor, `next` in the answer, a stable order; a bad limit or cursor is a 400.
//! - Every error is `{"error":{"code","message","field"}}` with its status: malformed input
//!   is refused here (400, 413), state conflicts and validation by the service (409, 422).
//!   Bodies are capped at [`MAX_BODY`] before they are parsed.
//! - Bearer auth covers every route except the health check, the OpenAPI document and the two
//!   device routes (`POST /devices/:id/report`, `GET /devices/:id/directive`): a device has no
//!   API token; its report is authenticated by its own signature, and a directive post is
//!   signed by the coordinator and carries nothing secret.

pub mod auth;
mod directives;
mod events;
mod health;
mod hooks;
mod incidents;
mod join;
mod metrics;
mod pending;
mod preflight;
#[cfg(test)]
mod preflight_tests;
pub mod ratelimit;
mod strategies;
pub mod tokens;
pub mod types;
mod vars;
pub mod views;

pub use directives::{MAX_FEED_PAGE, MAX_PENDING_PAGE};
pub use join::JoinSource;

use crate::contract::paging::{self, PageError};
use crate::service::model::Status;
use crate::service::{ServiceError, ServiceHandle, reads};
use crate::store::{AuditFilter, rfc3339};
use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use floe_rollout::parse_duration;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::sync::Arc;
use types::{
    AuditPage, BatchResult, DeploymentInput, DeploymentPage, DeviceBatch, DeviceInput, DevicePage,
    DevicePatch, EnrollToken, ErrorBody, ErrorDetail, FlowInput, FlowList, FlowState, Healthz,
    TargetPage, TokenInput,
};

/// The largest request body accepted (1 MiB); larger bodies get 413.
pub const MAX_BODY: usize = 1 << 20;
/// The longest enrollment token lifetime (30 days).
pub const MAX_TOKEN_TTL: u64 = 30 * 24 * 3_600_000;

/// An API error: status, code, message and the field at fault.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(message = %self.message, "request failed");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
                field: self.field,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::NotFound { .. } => ApiError::not_found(e.to_string()),
            ServiceError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            ServiceError::Validation { field, message } => ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code: "validation_failed",
                message: format!("{field}: {message}"),
                field: Some(field),
            },
            ServiceError::BadRequest(m) => ApiError::bad_request(m),
            ServiceError::Refused(_) | ServiceError::Unauthenticated(_) => {
                ApiError::unauthorized(e.to_string())
            }
            ServiceError::Busy => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", e.to_string())
            }
            // Everything else is the coordinator's own failure: a store, a file, a signature.
            _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
        }
    }
}

impl From<PageError> for ApiError {
    fn from(e: PageError) -> Self {
        let field = match &e {
            PageError::Limit(_) => "limit",
            PageError::Cursor { .. } => "cursor",
        };
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message: e.to_string(),
            field: Some(field.to_string()),
        }
    }
}

type ApiResult = Result<Response, ApiError>;

/// A JSON body: size-capped, parsed with unknown fields refused, errors in the API's shape.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = raw_body(req, state).await?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))
    }
}

async fn raw_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large()
        } else {
            ApiError::bad_request(format!("unreadable request body: {}", e.body_text()))
        }
    })
}

/// Query parameters, checked against the names a route knows.
fn query(
    q: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
    known: &[&str],
) -> Result<HashMap<String, String>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(format!("bad query: {}", e.body_text())))?;
    if let Some(k) = q.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "unknown query parameter {k:?}; known: {}",
            known.join(", ")
        )));
    }
    Ok(q)
}

#[derive(Clone)]
struct AppState {
    handle: ServiceHandle,
    tokens: Arc<tokens::TokenTable>,
    limiter: Arc<ratelimit::Limiter>,
    /// Failed authentications per client address.
    failures: Arc<ratelimit::Limiter>,
    join: Option<Arc<JoinSource>>,
    metrics: Arc<metrics::HttpMetrics>,
    /// The listener serving this router, for its connection figures.
    http: Option<floe_httpd::Server>,
}

/// The API's settings beyond the service: the rate limits.
#[derive(Debug, Clone, Copy)]
pub struct ApiOptions {
    /// Every token's allowance (`floe serve --rate-limit`, `--rate-burst`).
    pub rate: ratelimit::RateLimit,
    /// Each client address's allowance of failed authentications (`floe serve
    /// --auth-fail-limit`, `--auth-fail-burst`).
    pub auth_failures: ratelimit::RateLimit,
}

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            rate: ratelimit::RateLimit::default(),
            auth_failures: ratelimit::DEFAULT_AUTH_FAILURES,
        }
    }
}

/// Serialises a typed answer (here, in the handler's task: never on the service actor).
fn ok<T: Serialize>(status: StatusCode, body: T) -> ApiResult {
    Ok((status, Json(body)).into_response())
}

/// The page a list request asks for: the position after its cursor (if any) and its limit.
fn page_of(q: &HashMap<String, String>, list: &str) -> Result<(Option<String>, usize), ApiError> {
    let limit = paging::limit(q.get("limit").map(String::as_str))?;
    let after = q
        .get("cursor")
        .map(|c| paging::position(list, c))
        .transpose()?;
    Ok((after, limit))
}

/// A numeric position after a cursor of `list` (0 without one), and the limit.
fn numeric_page_of(q: &HashMap<String, String>, list: &str) -> Result<(u64, usize), ApiError> {
    let limit = paging::limit(q.get("limit").map(String::as_str))?;
    let after = match q.get("cursor") {
        Some(c) => paging::numeric_position(list, c)?,
        None => 0,
    };
    Ok((after, limit))
}

/// `?format=`: `json` (the default) or `markdown`; anything else is refused naming it.
fn wants_markdown(q: &HashMap<String, String>) -> Result<bool, ApiError> {
    match q.get("format").map(String::as_str) {
        None | Some("json") => Ok(false),
        Some("markdown") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "format must be json or markdown, not {other:?}"
        ))),
    }
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the request body is larger than {MAX_BODY} bytes"),
    )
}

/// The API router. `token` is the bootstrap (admin) token; named tokens come from the store.
pub fn router(handle: ServiceHandle, token: String) -> Router {
    router_with_join(handle, token, None)
}

/// The API router with `GET /join-info` answered from `join` (without it, that route answers
/// 409: a coordinator without a fabric cannot be joined).
pub fn router_with_join(handle: ServiceHandle, token: String, join: Option<JoinSource>) -> Router {
    router_with_options(handle, token, join, ApiOptions::default())
}

/// [`router_with_join`] with `options` (the rate limit).
pub fn router_with_options(
    handle: ServiceHandle,
    token: String,
    join: Option<JoinSource>,
    options: ApiOptions,
) -> Router {
    router_with_http(handle, token, join, options, None)
}

/// [`router_with_options`] whose `/status` and `/metrics` include `http`'s connection figures.
pub fn router_with_http(
    handle: ServiceHandle,
    token: String,
    join: Option<JoinSource>,
    options: ApiOptions,
    http: Option<floe_httpd::Server>,
) -> Router {
    let state = AppState {
        http,
        handle,
        tokens: Arc::new(tokens::TokenTable::new(&token, floe_wire::clock::unix_ms())),
        limiter: Arc::new(ratelimit::Limiter::new(options.rate)),
        failures: Arc::new(ratelimit::Limiter::new(options.auth_failures)),
        join: join.map(Arc::new),
        metrics: Arc::default(),
    };
    let api = Router::new()
        .route("/healthz", get(healthz))
        .route("/openapi.json", get(openapi))
        .route("/flows", post(create_flow).get(list_flows))
        .route(
            "/flows/{id}",
            get(get_flow).put(update_flow).delete(delete_flow),
        )
        .route("/flows/{id}/publish", post(preflight::publish))
        .route("/flows/{id}/archive", post(archive_flow))
        .route("/flows/{id}/versions", post(new_version))
        .route(
            "/deployments",
            post(create_deployment).get(list_deployments),
        )
        .route("/deployments/{id}", get(get_deployment))
        .route("/deployments/{id}/report", get(deployment_report))
        .route(
            "/deployments/{id}/incident",
            get(incidents::deployment_incident),
        )
        .route("/deployments/{id}/targets", get(deployment_targets))
        .route("/deployments/{id}/start", post(preflight::start))
        .route("/deployments/{id}/state", get(preflight::state))
        .route("/deployments/{id}/{command}", post(deployment_command))
        .route("/devices", get(list_devices).post(allow_device))
        .route("/devices/batch", post(allow_devices))
        .route("/devices/pending", get(pending::list))
        .route(
            "/devices/pending/{id}",
            axum::routing::delete(pending::reject),
        )
        .route("/devices/pending/{id}/accept", post(pending::accept))
        .route("/devices/{id}", get(get_device).patch(patch_device))
        .route("/devices/{id}/report", post(device_report))
        .route("/devices/{id}/directive", get(device_directive))
        .route(
            "/devices/{id}/vars",
            get(vars::get_device_vars).put(vars::put_device_vars),
        )
        .route(
            "/group-vars",
            get(vars::get_group_vars).put(vars::put_group_vars),
        )
        .route("/directives/pending", get(directives::pending_directives))
        .route("/directives/feed", get(directives::directive_feed))
        .route("/enrollment-tokens", post(create_token))
        .route("/join-info", get(join::join_info))
        .route("/strategies", get(strategies::list))
        .route("/audit", get(audit))
        .route("/status", get(status))
        .route("/health/groups", get(health::group_health))
        .route("/tokens", get(tokens::list).post(tokens::create))
        .route("/tokens/{name}", axum::routing::delete(tokens::revoke))
        .route("/whoami", get(tokens::whoami))
        .route("/events", get(events::events))
        .route("/hooks", post(hooks::create_hook).get(hooks::list_hooks))
        .route("/hooks/{id}", axum::routing::delete(hooks::delete_hook))
        .route("/hooks/{id}/deliveries", get(hooks::deliveries))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics::metrics))
        .nest("/api/v1", api)
        .merge(crate::console::router())
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(middleware::from_fn_with_state(state.clone(), auth::auth))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

async fn healthz() -> Json<Healthz> {
    Json(Healthz {
        status: "ok".into(),
    })
}

async fn openapi() -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}

// Flows.

async fn create_flow(
    State(st): State<AppState>,
    JsonBody(input): JsonBody<FlowInput>,
) -> ApiResult {
    let body = st
        .handle
        .call(move |core, now| {
            let f = core.create_flow(input, now)?;
            Ok(views::flow(&f, None))
        })
        .await?;
    ok(StatusCode::CREATED, body)
}

async fn list_flows(
    State(st): State<AppState>,
    q: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let q = query(q, &["state", "tag"])?;
    let state = q
        .get("state")
        .map(|s| s.parse::<FlowState>())
        .transpose()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let tag = q.get("tag").cloned();
    // Read from the last commit, not through the actor: it answers while the actor is busy.
    let body = st
        .handle
        .read(move |store| {
            let flows = reads::flows(store, state, tag.as_deref())?;
            let mut out = Vec::with_capacity(flows.len());
            for f in &flows {
                out.push(views::flow(f, store.artifact_info(&f.id)?.as_ref()));
            }
            Ok(FlowList { flows: out })
        })
        .await?;
    ok(StatusCode::OK, body)
}

async fn flow_response(
    st: &AppState,
    id: String,
    status: StatusCode,
    f: impl FnOnce(
        &mut crate::service::Core,
        &str,
        u64,
    ) -> Result<crate::store::FlowRecord, ServiceError>
    + Send
    + 'static,
) -> ApiResult {
    let body = st
        .handle
        .call(move |core, now| {
            let flow = f(core, &id, now)?;
            Ok(views::flow(&flow, core.artifact_of(&flow.id)?.as_ref()))
        })
        .await?;
    ok(status, body)
}

async fn get_flow(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let body = st
        .handle
        .read(move |store| {
            let f = reads::flow(store, &id)?;
            Ok(views::flow(&f, store.artifact_info(&f.id)?.as_ref()))
        })
        .await?;
    ok(StatusCode::OK, body)
}

async fn update_flow(
    State(st): State<AppState>,
    Path(id): Path<String>,
    JsonBody(input): JsonBody<FlowInput>,
) -> ApiResult {
    flow_response(&st, id, StatusCode::OK, move |core, id, now| {
        core.update_flow(id, input, now)
    })
    .await
}

async fn delete_flow(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    st.handle
        .call(move |core, now| core.delete_flow(&id, now))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn archive_flow(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    flow_response(&st, id, StatusCode::OK, |core, id, now| {
        core.archive_flow(id, now)
    })
    .await
}

async fn new_version(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    flow_response(&st, id, StatusCode::CREATED, |core, id, now| {
        core.new_version(id, now)
    })
    .await
}

// Deployments.

async fn create_deployment(
    State(st): State<AppState>,
    JsonBody(input): JsonBody<DeploymentInput>,
) -> ApiResult {
    let body = st
        .handle
        .call(move |core, now| {
            let id = core.create_deployment(input, now)?;
            core.with_deployment(&id, views::deployment)
        })
        .await?;
    ok(StatusCode::CREATED, body)
}

/// `GET /deployments?status=&flow_id=&cursor=&limit=`: one page in creation order.
async fn list_deployments(
    State(st): State<AppState>,
    q: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let q = query(q, &["status", "flow_id", "cursor", "limit"])?;
    if let Some(s) = q.get("status") {
        s.parse::<floe_rollout::DeploymentStatus>()
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    let (after, limit) = numeric_page_of(&q, "deployments")?;
    let status = q.get("status").cloned();
    let flow = q.get("flow_id").cloned();
    let body = st
        .handle
        .call(move |core, _| {
            let mut ids =
                core.deployment_ids_page(after, status.as_deref(), flow.as_deref(), limit + 1)?;
            let more = ids.len() > limit;
            ids.truncate(limit);
            let next = ids
                .last()
                .filter(|_| more)
                .map(|(pos, _)| paging::cursor("deployments", &pos.to_string()));
            let mut deployments = Vec::with_capacity(ids.len());
            for (_, id) in &ids {
                deployments.push(core.with_deployment(id, views::deployment)?);
            }
            Ok(DeploymentPage { deployments, next })
        })
        .await?;
    ok(StatusCode::OK, body)
}

/// `GET /deployments/:id/targets?cursor=&limit=`: one page of a deployment's targets in
/// plan order.
async fn deployment_targets(
    State(st): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let q = query(q, &["cursor", "limit"])?;
    let list = format!("targets:{id}");
    let (after, limit) = numeric_page_of(&q, &list)?;
    // A targets cursor names the plan index its page starts at.
    let from = usize::try_from(after).unwrap_or(usize::MAX);
    let body = st
        .handle
        .call(move |core, _| {
            core.with_deployment(&id, |doc, engine| {
                let (targets, more) = views::targets(doc, engine, from, limit);
                let end = from.saturating_add(targets.len());
                TargetPage {
                    next: more.then(|| paging::cursor(&list, &end.to_string())),
                    targets,
                    total: doc.targets.len() as u64,
                }
            })
        })
        .await?;
    ok(StatusCode::OK, body)
}

async fn get_deployment(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let body = st
        .handle
        .call(move |core, _| {
            let mut d = core.with_deployment(&id, views::deployment)?;
            d.rollback_verification = core.rollback_verification(&id)?;
            Ok(d)
        })
        .await?;
    ok(StatusCode::OK, body)
}

async fn deployment_command(
    State(st): State<AppState>,
    Path((id, command)): Path<(String, String)>,
) -> ApiResult {
    let Ok(command) = command.parse::<floe_rollout::Command>() else {
        return Err(ApiError::not_found(format!(
            "no deployment action {command:?}; use start, pause, resume, approve, rollback or abort"
        )));
    };
    let body = st
        .handle
        .call(move |core, now| {
            core.command(&id, command, now)?;
            core.with_deployment(&id, views::deployment)
        })
        .await?;
    ok(StatusCode::OK, body)
}

async fn deployment_report(
    State(st): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let markdown = wants_markdown(&query(q, &["format"])?)?;
    let report = st
        .handle
        .call(move |core, _| {
            let (flow_id, version, created, (report, baselines)) =
                core.with_deployment(&id, |d, e| {
                    (
                        d.flow_id.clone(),
                        d.artifact.version.clone(),
                        d.created_at,
                        views::report_with_baselines(e),
                    )
                })?;
            // The engine runs on the coordinator's wall clock (unix ms): absolute times.
            let name = core.flow(&flow_id).map_or(flow_id, |f| f.name);
            Ok((
                report.for_flow(&name, &version).at_wall_clock(created),
                baselines,
            ))
        })
        .await?;
    if markdown {
        let (report, baselines) = report;
        let mut resp = (report.to_markdown() + &baselines).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/markdown; charset=utf-8"),
        );
        return Ok(resp);
    }
    ok(StatusCode::OK, report.0)
}

// Devices.

async fn list_devices(
    State(st): State<AppState>,
    q: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let q = query(q, &["region", "type", "label", "online", "cursor", "limit"])?;
    let (after, limit) = page_of(&q, "devices")?;
    let label = match q.get("label") {
        Some(l) => match l.split_once('=') {
            Some((k, v)) => Some((k.to_string(), v.to_string())),
            None => {
                return Err(ApiError::bad_request(format!(
                    "label must be key=value, not {l:?}"
                )));
            }
        },
        None => None,
    };
    let online = match q.get("online").map(String::as_str) {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(o) => {
            return Err(ApiError::bad_request(format!(
                "online must be true or false, not {o:?}"
            )));
        }
    };
    let filter = reads::DeviceFilter {
        region: q.get("region").cloned(),
        device_type: q.get("type").cloned(),
        label,
        online,
    };
    // Off the actor: the last committed registry, streamed by id until the page is full and
    // one more match says another page follows.
    let (rows, more) = st
        .handle
        .read(move |store| reads::devices_page(store, &filter, after.as_deref(), limit))
        .await?;
    let devices: Vec<_> = rows
        .iter()
        .map(|(d, generation)| views::device(d, reads::online(d), *generation))
        .collect();
    let next = devices
        .last()
        .filter(|_| more)
        .map(|last| paging::cursor("devices", &last.id));
    ok(StatusCode::OK, DevicePage { devices, next })
}

async fn get_device(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let (d, generation) = st
        .handle
        .read(move |store| reads::device(store, &id))
        .await?;
    ok(
        StatusCode::OK,
        views::device(&d, reads::online(&d), generation),
    )
}

async fn patch_device(
    State(st): State<AppState>,
    Path(id): Path<String>,
    JsonBody(patch): JsonBody<DevicePatch>,
) -> ApiResult {
    let body = st
        .handle
        .call(move |core, now| {
            let d = core.patch_device(&id, patch, now)?;
            Ok(views::device(
                &d,
                core.online(&d),
                core.desired_generation(&d.id),
            ))
        })
        .await?;
    ok(StatusCode::OK, body)
}

async fn allow_device(
    State(st): State<AppState>,
    JsonBody(input): JsonBody<DeviceInput>,
) -> ApiResult {
    let body = st
        .handle
        .call(move |core, now| {
            let d = core.allow_device(input, now)?;
            Ok(views::device(&d, false, 0))
        })
        .await?;
    ok(StatusCode::CREATED, body)
}

/// Most devices one `POST /devices/batch` allowlists.
pub const MAX_DEVICE_BATCH: usize = 1000;

/// `POST /devices/batch`: allowlists up to [`MAX_DEVICE_BATCH`] devices in one transaction.
async fn allow_devices(
    State(st): State<AppState>,
    JsonBody(batch): JsonBody<DeviceBatch>,
) -> ApiResult {
    if batch.devices.is_empty() || batch.devices.len() > MAX_DEVICE_BATCH {
        return Err(ApiError::from(ServiceError::Validation {
            field: "devices".into(),
            message: format!(
                "{} devices; a batch holds 1 to {MAX_DEVICE_BATCH}",
                batch.devices.len()
            ),
        }));
    }
    let body = st
        .handle
        .call(move |core, now| {
            let (created, existing) = core.allow_devices(batch.devices, now)?;
            Ok(BatchResult {
                created: created as u64,
                existing: existing as u64,
            })
        })
        .await?;
    ok(StatusCode::OK, body)
}

/// `POST /devices/:id/report`: a device's signed report envelope (raw CBOR), verified here
/// against the key it names; enrollment and the key binding are the service's decision.
async fn device_report(
    State(st): State<AppState>,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult {
    let bytes = raw_body(req, &()).await?;
    let report = floe_wire::proto::open_report(&bytes)
        .map_err(|e| ApiError::unauthorized(format!("the report does not verify: {e}")))?;
    if report.device_id != id {
        return Err(ApiError::bad_request(format!(
            "the report is from device {:?}, posted to {id:?}",
            report.device_id
        )));
    }
    let desired = st.handle.device_report(report).await?;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut()
        .insert(DESIRED_GENERATION, HeaderValue::from(desired));
    Ok(resp)
}

/// The header of a report's answer that carries the generation of the device's current
/// directive (0: none), so a device fetches `GET /devices/{id}/directive` only when behind.
pub const DESIRED_GENERATION: &str = "floe-desired-generation";

/// `GET /devices/:id/directive`: the device's current directive post (CBOR), or 204. Only the
/// device itself may read it: the request carries its signature
/// (`floe_wire::proto::device_auth`).
async fn device_directive(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> ApiResult {
    let proof = headers
        .get(floe_wire::proto::device_auth::DEVICE_AUTH_HEADER)
        .map(|v| v.to_str().unwrap_or_default().to_string());
    let post = st
        .handle
        .call(move |core, now| core.device_directive(&id, proof.as_deref(), now))
        .await?;
    Ok(match post {
        Some((_, bytes)) => {
            let mut resp = bytes.into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/cbor"),
            );
            resp
        }
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

async fn create_token(State(st): State<AppState>, req: Request) -> ApiResult {
    let bytes = raw_body(req, &()).await?;
    let input: TokenInput = if bytes.iter().all(u8::is_ascii_whitespace) {
        TokenInput::default()
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))?
    };
    let ttl = match &input.ttl {
        Some(t) => parse_duration(t).map_err(|e| {
            ApiError::from(ServiceError::Validation {
                field: "ttl".into(),
                message: e.to_string(),
            })
        })?,
        None => 3_600_000,
    };
    if ttl == 0 || ttl > MAX_TOKEN_TTL {
        return Err(ServiceError::Validation {
            field: "ttl".into(),
            message: "a token lives between 1 ms and 30 days".into(),
        }
        .into());
    }
    let (token, expires) = st
        .handle
        .call(move |core, now| core.create_token(ttl, now))
        .await?;
    ok(
        StatusCode::CREATED,
        EnrollToken {
            token,
            expires_at: rfc3339(expires),
            expires_at_ms: expires,
        },
    )
}

/// `GET /audit?deployment_id=&device_id=&cursor=&limit=`: one page, newest first.
async fn audit(
    State(st): State<AppState>,
    q: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let q = query(q, &["limit", "cursor", "deployment_id", "device_id"])?;
    let limit = paging::limit(q.get("limit").map(String::as_str))?;
    let before = q
        .get("cursor")
        .map(|c| paging::numeric_position("audit", c))
        .transpose()?;
    let filter = AuditFilter {
        // One more than the page, to know whether another follows.
        limit: u32::try_from(limit + 1).unwrap_or(u32::MAX),
        deployment_id: q.get("deployment_id").cloned(),
        device_id: q.get("device_id").cloned(),
        before,
    };
    let mut rows = st
        .handle
        .read(move |store| reads::audit(store, &filter))
        .await?;
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next = rows
        .last()
        .filter(|_| more)
        .map(|(seq, _)| paging::cursor("audit", &seq.to_string()));
    let entries = rows.iter().map(|(_, a)| views::audit(a)).collect();
    ok(StatusCode::OK, AuditPage { entries, next })
}

/// `GET /status`: the ingest path's counters, read without the actor.
async fn status(State(st): State<AppState>) -> Json<Status> {
    let limits = st.limiter.stats();
    let failures = st.failures.stats();
    Json(Status {
        ingest: st.handle.ingest_status(),
        rate_limit: types::RateLimitStatus {
            throttled: limits.throttled,
            evicted: limits.evicted,
            buckets: limits.buckets as u64,
            failed_auth_throttled: failures.throttled,
        },
        connections: types::ConnectionStatus::of(st.http.as_ref()),
    })
}

#[cfg(test)]
mod contract_tests;
#[cfg(test)]
mod paging_tests;
#[cfg(test)]
mod roles_tests;
#[cfg(test)]
mod tests;
