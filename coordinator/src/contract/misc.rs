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

/// `GET /api/v1/status`: the coordinator's own figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Status {
    /// The ingest path.
    pub ingest: IngestStatus,
    /// The per-token rate limit (absent from coordinators older than it).
    #[serde(default)]
    pub rate_limit: RateLimitStatus,
}
