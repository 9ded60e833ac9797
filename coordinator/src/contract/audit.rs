//! Audit responses.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One audit line: when, who, what, on which device or deployment, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AuditEntry {
    /// RFC 3339.
    pub at: String,
    /// `api`, `engine`, `device` or `service`.
    pub actor: String,
    /// What was done (`deployment.start`).
    pub action: String,
    /// The device concerned.
    pub device_id: Option<String>,
    /// The deployment concerned.
    pub deployment_id: Option<String>,
    /// `ok`, `refused`, `failed`, or a status.
    pub outcome: String,
    /// A sentence.
    pub detail: String,
}

/// `GET /audit`: one page, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AuditPage {
    /// The entries.
    pub entries: Vec<AuditEntry>,
    /// The cursor of the next (older) page; null after the last.
    pub next: Option<String>,
}
