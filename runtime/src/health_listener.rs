//! The health endpoint's router with the listener's own counters: `/health` as
//! [`crate::http::health_router`] serves it, and `/metrics` followed by what the listener's
//! limits did (connections open, and closed by reason: evicted for room, refused while every
//! connection was busy, over the per-address cap, past a timeout), so a scraper sees its own
//! address being turned away.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::watch;

use crate::control::Published;

/// The health router whose `/metrics` ends with `server`'s counters.
pub fn router(published: watch::Receiver<Arc<Published>>, server: floe_httpd::Server) -> Router {
    let metrics = Router::new()
        .route("/metrics", get(metrics))
        .with_state((published.clone(), server));
    crate::http::health_only_router(published).merge(metrics)
}

/// The listener's counters in the Prometheus text format.
pub fn listener_metrics(server: &floe_httpd::Server) -> String {
    let s = server.stats();
    let mut out = String::with_capacity(1024);
    let _ = writeln!(
        out,
        "# HELP floe_http_connections_open Connections open on the health endpoint now."
    );
    let _ = writeln!(out, "# TYPE floe_http_connections_open gauge");
    let _ = writeln!(
        out,
        "floe_http_connections_open {}",
        server.open_connections()
    );
    let _ = writeln!(
        out,
        "# HELP floe_http_connections_closed_total Health endpoint connections closed by its limits since start, by reason."
    );
    let _ = writeln!(out, "# TYPE floe_http_connections_closed_total counter");
    for (reason, n) in [
        ("evicted", s.evicted),
        ("busy", s.refused),
        ("per_addr", s.refused_per_addr),
        ("header_timeout", s.header_timeouts),
        ("idle_timeout", s.idle_timeouts),
        ("request_timeout", s.request_timeouts),
    ] {
        let _ = writeln!(
            out,
            "floe_http_connections_closed_total{{reason=\"{reason}\"}} {n}"
        );
    }
    out
}

async fn metrics(
    State((rx, server)): State<(watch::Receiver<Arc<Published>>, floe_httpd::Server)>,
) -> Response {
    let p = rx.borrow().clone();
    let mut text = p.metrics.clone();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&listener_metrics(&server));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::health::HealthReport;
    use tower::ServiceExt;

    #[tokio::test]
    async fn metrics_end_with_the_listeners_counters_and_health_still_answers() {
        let (_tx, rx) = watch::channel(Arc::new(Published {
            report: HealthReport::starting(""),
            metrics: "floe_health_status 1\n".into(),
        }));
        let server = floe_httpd::Server::new(floe_httpd::Limits::device()).unwrap();
        let app = router(rx, server);
        let resp = app
            .clone()
            .oneshot(
                axum::http::Request::get("/metrics")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.starts_with("floe_health_status 1\n"), "{text}");
        assert!(
            text.contains("floe_http_connections_closed_total{reason=\"per_addr\"} 0"),
            "{text}"
        );
        assert!(text.contains("floe_http_connections_open 0"), "{text}");
        let resp = app
            .oneshot(
                axum::http::Request::get("/health")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert!(resp.status().as_u16() == 200 || resp.status().as_u16() == 503);
    }
}
