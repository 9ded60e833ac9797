//! Bodies that belong to no resource: errors and the health check.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorDetail {
    /// `bad_request`, `unauthorized`, `not_found`, `conflict`, `payload_too_large`,
    /// `validation_failed`, `busy` or `internal`.
    pub code: String,
    /// A sentence naming what is wrong.
    pub message: String,
    /// The field at fault (`config.batch_delay`), when one is.
    pub field: Option<String>,
}

/// Every error answer: `{"error":{"code","message","field"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Healthz {
    /// Always `ok` while the server answers.
    pub status: String,
}

/// The ingest path's figures since start (`GET /api/v1/status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IngestStatus {
    /// Device reports taken into the queue.
    pub accepted: u64,
    /// Device reports refused with 503 because the queue was full.
    pub refused_busy: u64,
    /// Reports waiting in the queue now.
    pub queue_depth: usize,
    /// The queue's bound.
    pub queue_capacity: usize,
    /// Most reports applied in one transaction.
    pub batch_max: usize,
}

/// The per-token rate limit's figures since start (`GET /api/v1/status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RateLimitStatus {
    /// Requests answered 429.
    pub throttled: u64,
    /// Idle buckets dropped to keep the table bounded.
    pub evicted: u64,
    /// Buckets held now (one per token seen recently).
    pub buckets: u64,
    /// Requests answered 429 because their address had too many failed authentications.
    #[serde(default)]
    pub failed_auth_throttled: u64,
}

/// The REST listener's connection figures since start (`GET /api/v1/status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ConnectionStatus {
    /// Connections open now.
    pub open: u64,
    /// Connections accepted and served.
    pub accepted: u64,
    /// Open connections closed to make room for a new one at the connection cap.
    pub evicted: u64,
    /// New connections closed because every open one stayed busy.
    pub refused_busy: u64,
    /// New connections closed at accept because their address held its per-address cap.
    pub refused_per_addr: u64,
    /// Connections closed because their request head (or TLS handshake) was not done in time.
    pub header_timeouts: u64,
    /// Kept-alive connections closed after waiting too long for a next request.
    pub idle_timeouts: u64,
    /// Requests answered 503 at the request timeout.
    pub request_timeouts: u64,
    /// Failed TLS handshakes.
    pub tls_failures: u64,
}

/// `GET /api/v1/status`: the coordinator's own figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Status {
    /// The ingest path.
    pub ingest: IngestStatus,
    /// The per-token rate limit (absent from coordinators older than it).
    #[serde(default)]
    pub rate_limit: RateLimitStatus,
    /// The REST listener's connections (absent from coordinators older than it, and zero
    /// from a router served without the listener, as in tests).
    #[serde(default)]
    pub connections: ConnectionStatus,
}

impl ConnectionStatus {
    /// The figures of `http` (`None`: all zero).
    pub fn of(http: Option<&floe_httpd::Server>) -> Self {
        let Some(http) = http else {
            return ConnectionStatus::default();
        };
        let s = http.stats();
        ConnectionStatus {
            open: http.open_connections() as u64,
            accepted: s.accepted,
            evicted: s.evicted,
            refused_busy: s.refused,
            refused_per_addr: s.refused_per_addr,
            header_timeouts: s.header_timeouts,
            idle_timeouts: s.idle_timeouts,
            request_timeouts: s.request_timeouts,
            tls_failures: s.tls_failures,
        }
    }
}
