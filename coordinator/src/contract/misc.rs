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
