//! Flow responses.

use super::enums::FlowState;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The artifact a published flow version was built into.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FlowArtifact {
    /// The artifact name (the lineage id).
    pub name: String,
    /// The release number (the flow version).
    pub release: u64,
    /// The semantic version string.
    pub version: String,
    /// SHA-256 of the manifest payload, hex.
    pub manifest_sha256: String,
    /// Payload size in bytes.
    pub size: u64,
}

/// A flow version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Flow {
    /// `flow_<10 hex>`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Lifecycle state.
    pub state: FlowState,
    /// Version number in its lineage, from 1.
    pub version: u64,
    /// The id of the lineage's first version.
    pub lineage: String,
    /// The version this one was made from.
    pub parent_id: Option<String>,
    /// The flow JSON as posted.
    pub definition: serde_json::Value,
    /// Set once published.
    pub artifact: Option<FlowArtifact>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// RFC 3339, once published.
    pub published_at: Option<String>,
    /// RFC 3339, once archived.
    pub archived_at: Option<String>,
}

/// `GET /flows`. Flows are operator-made and few, so the list is not paged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FlowList {
    /// The flows, by lineage and version.
    pub flows: Vec<Flow>,
}
