//! The audit log: reading it with filters, and the lenient view of an entry.

use super::error::ClientError;
use super::transport::{Client, Method, Reply, query};
use serde::Deserialize;

impl Client {
    /// `GET /audit?limit=&deployment_id=&device_id=`.
    pub fn audit(
        &self,
        limit: Option<u32>,
        deployment_id: Option<&str>,
        device_id: Option<&str>,
    ) -> Result<Reply, ClientError> {
        let limit = limit.map(|l| l.to_string());
        let q = query(&[
            ("limit", limit.as_deref()),
            ("deployment_id", deployment_id),
            ("device_id", device_id),
        ]);
        self.call(Method::Get, &format!("/audit{q}"), None)
    }
}

/// One audit entry.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct AuditEntry {
    /// When.
    pub at: String,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// Device concerned.
    pub device_id: Option<String>,
    /// Deployment concerned.
    pub deployment_id: Option<String>,
    /// Outcome.
    pub outcome: String,
    /// Detail.
    pub detail: String,
}

/// `{"entries":[…]}`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct AuditList {
    /// The entries.
    pub entries: Vec<AuditEntry>,
}
