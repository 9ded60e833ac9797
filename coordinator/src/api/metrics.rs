//! `GET /metrics`: the coordinator's figures in the Prometheus text format (0.0.4), behind the
//! bearer token like every route (Prometheus sends it with `authorization.credentials` or
//! `bearer_token_file` in its scrape config).
//!
//! Where each figure comes from, so a scrape never holds the service actor for long:
//! counters are atomics (ingest, the event bus, webhook deliveries, this module's HTTP
//! histogram); deployments by status are one `GROUP BY` on a read-only connection; targets by
//! status count the unfinished deployments' targets on the actor, O(1) per target (about a
//! millisecond per 100 000 targets).

use super::{ApiResult, AppState};
use crate::contract::{DeploymentStatus, TargetStatus};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

/// Upper bounds of the latency histogram's buckets, in seconds.
pub(super) const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// The device report route, whose refusals are counted by reason.
const REPORT_ROUTE: &str = "/api/v1/devices/{id}/report";

#[derive(Debug, Default, Clone)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// What the API measures itself: request latency by method and route template (a bounded
/// label set: only matched routes are measured) and refused device reports by reason.
#[derive(Debug, Default)]
pub(super) struct HttpMetrics {
    latency: Mutex<BTreeMap<(String, String), Histogram>>,
    /// Reports refused before the queue: malformed, unauthenticated, too large.
    refused: [AtomicU64; 3],
}

const REFUSED: [&str; 3] = ["malformed", "unauthenticated", "too_large"];

impl HttpMetrics {
    fn observe(&self, method: &str, route: &str, status: StatusCode, seconds: f64) {
        {
            let mut map = self.latency.lock().unwrap_or_else(PoisonError::into_inner);
            let h = map
                .entry((method.to_string(), route.to_string()))
                .or_default();
            h.count += 1;
            h.sum += seconds;
            for (i, le) in BUCKETS.iter().enumerate() {
                if seconds <= *le {
                    h.buckets[i] += 1;
                }
            }
        }
        if route == REPORT_ROUTE {
            let reason = match status {
                StatusCode::BAD_REQUEST => Some(0),
                StatusCode::UNAUTHORIZED => Some(1),
                StatusCode::PAYLOAD_TOO_LARGE => Some(2),
                _ => None,
            };
            if let Some(i) = reason {
                self.refused[i].fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The middleware that measures each matched request (the time to its response head; a
/// stream's body is not included).
pub(super) async fn track(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    // Methods are any token on the wire: only the ones the API uses are labels of their own.
    let method = match req.method().as_str() {
        m @ ("GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS") => m,
        _ => "other",
    }
    .to_string();
    let resp = next.run(req).await;
    if let Some(route) = route {
        st.metrics.observe(
            &method,
            &route,
            resp.status(),
            started.elapsed().as_secs_f64(),
        );
    }
    resp
}

/// A label value, escaped as the text format wants.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A metric with one label: its head, then a line per (label value, figure).
fn labelled<'a>(
    out: &mut String,
    (name, kind, help): (&str, &str, &str),
    label_name: &str,
    series: impl IntoIterator<Item = (&'a str, u64)>,
) {
    head(out, name, kind, help);
    for (value, n) in series {
        let _ = writeln!(out, "{name}{{{label_name}=\"{}\"}} {n}", label(value));
    }
}

/// `GET /metrics`.
pub(super) async fn metrics(State(st): State<AppState>) -> ApiResult {
    let deployments = st.handle.read(|s| Ok(s.deployment_counts()?)).await?;
    let (targets, rollups) = st
        .handle
        .call(|core, _| Ok((core.target_counts(), core.rollup_counters())))
        .await?;
    let ingest = st.handle.ingest_status();
    let bus = st.handle.events().stats();
    let hooks = st.handle.webhooks().stats();
    let tokens = st.limiter.stats();
    let failures = st.failures.stats();
    let mut out = String::with_capacity(8192);

    let by_status: BTreeMap<&str, u64> =
        deployments.iter().map(|(s, n)| (s.as_str(), *n)).collect();
    labelled(
        &mut out,
        ("floe_deployments", "gauge", "Deployments by status."),
        "status",
        DeploymentStatus::ALL
            .iter()
            .map(|s| (s.as_str(), by_status.get(s.as_str()).copied().unwrap_or(0))),
    );
    labelled(
        &mut out,
        (
            "floe_targets",
            "gauge",
            "Targets of unfinished deployments by status.",
        ),
        "status",
        TargetStatus::ALL
            .iter()
            .map(|s| (s.as_str(), targets.get(s.as_str()).copied().unwrap_or(0))),
    );
    head(
        &mut out,
        "floe_reports_ingested_total",
        "counter",
        "Device reports taken into the ingest queue since start.",
    );
    let _ = writeln!(out, "floe_reports_ingested_total {}", ingest.accepted);
    let refused = REFUSED
        .iter()
        .enumerate()
        .map(|(i, reason)| (*reason, st.metrics.refused[i].load(Ordering::Relaxed)));
    labelled(
        &mut out,
        (
            "floe_reports_refused_total",
            "counter",
            "Device reports refused since start, by reason.",
        ),
        "reason",
        std::iter::once(("busy", ingest.refused_busy)).chain(refused),
    );
    labelled(
        &mut out,
        (
            "floe_health_rollup_reports_total",
            "counter",
            "Health reports since start by what the group rollups did with them (counted; \
             excluded: not normal operation or no room for their group).",
        ),
        "outcome",
        [("counted", rollups.counted), ("excluded", rollups.excluded)],
    );
    head(
        &mut out,
        "floe_health_rollup_windows_dropped_total",
        "counter",
        "One-minute health rollup windows dropped before they could be written, since start.",
    );
    let _ = writeln!(
        out,
        "floe_health_rollup_windows_dropped_total {}",
        rollups.dropped_windows
    );
    labelled(
        &mut out,
        (
            "floe_api_throttled_total",
            "counter",
            "API requests answered 429 since start: a token over its rate, or an address over \
             its allowance of failed authentications.",
        ),
        "reason",
        [
            ("token_rate", tokens.throttled),
            ("failed_auth", failures.throttled),
        ],
    );
    let conns = crate::contract::ConnectionStatus::of(st.http.as_ref());
    labelled(
        &mut out,
        (
            "floe_http_connections_closed_total",
            "counter",
            "REST connections closed by the server's limits since start, by reason.",
        ),
        "reason",
        [
            ("evicted", conns.evicted),
            ("busy", conns.refused_busy),
            ("per_addr", conns.refused_per_addr),
            ("header_timeout", conns.header_timeouts),
            ("idle_timeout", conns.idle_timeouts),
            ("request_timeout", conns.request_timeouts),
            ("tls_failure", conns.tls_failures),
        ],
    );
    labelled(
        &mut out,
        (
            "floe_gate_verdicts_total",
            "counter",
            "Gate verdicts since start, by verdict.",
        ),
        "verdict",
        ["pass", "wait", "fail", "caution"]
            .iter()
            .enumerate()
            .map(|(i, v)| (*v, bus.gate_verdicts[i].load(Ordering::Relaxed))),
    );
    head(
        &mut out,
        "floe_events_published_total",
        "counter",
        "Events published since start.",
    );
    let _ = writeln!(
        out,
        "floe_events_published_total {}",
        bus.published.load(Ordering::Relaxed)
    );
    head(
        &mut out,
        "floe_event_subscribers",
        "gauge",
        "Event stream subscribers (SSE clients and webhook collectors) now.",
    );
    let _ = writeln!(
        out,
        "floe_event_subscribers {}",
        bus.subscribers.load(Ordering::Relaxed)
    );
    head(
        &mut out,
        "floe_events_dropped_clients_total",
        "counter",
        "Event subscribers dropped because they did not read, since start.",
    );
    let _ = writeln!(
        out,
        "floe_events_dropped_clients_total {}",
        bus.dropped_clients.load(Ordering::Relaxed)
    );
    labelled(
        &mut out,
        (
            "floe_webhook_deliveries_total",
            "counter",
            "Webhook delivery outcomes since start (retried counts attempts).",
        ),
        "outcome",
        [
            ("delivered", &hooks.delivered),
            ("retried", &hooks.retried),
            ("gave_up", &hooks.gave_up),
            ("dropped", &hooks.dropped),
        ]
        .map(|(outcome, n)| (outcome, n.load(Ordering::Relaxed))),
    );
    head(
        &mut out,
        "floe_http_request_duration_seconds",
        "histogram",
        "REST request latency to the response head, by method and route template.",
    );
    let latency = st
        .metrics
        .latency
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    for ((method, route), h) in &latency {
        let labels = format!("method=\"{}\",route=\"{}\"", label(method), label(route));
        for (i, le) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "floe_http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {}",
                h.buckets[i]
            );
        }
        let _ = writeln!(
            out,
            "floe_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(
            out,
            "floe_http_request_duration_seconds_sum{{{labels}}} {}",
            h.sum
        );
        let _ = writeln!(
            out,
            "floe_http_request_duration_seconds_count{{{labels}}} {}",
            h.count
        );
    }
    let mut resp = (StatusCode::OK, out).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(resp)
}
