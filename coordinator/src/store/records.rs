//! The records the store reads and writes: flows, artifacts, devices, deployments, desired
//! directives and audit lines, as the service sees them.

use crate::contract::{FlowState, HealthLevel};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A flow version as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowRecord {
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
    /// Version in the lineage, from 1.
    pub version: u64,
    /// The id of the lineage's first version.
    pub lineage: String,
    /// The version this one was made from.
    pub parent_id: Option<String>,
    /// The flow JSON as posted.
    pub definition: serde_json::Value,
    /// Unix milliseconds.
    pub created_at: u64,
    /// Unix milliseconds.
    pub updated_at: u64,
    /// Unix milliseconds.
    pub published_at: Option<u64>,
    /// Unix milliseconds.
    pub archived_at: Option<u64>,
}

/// A published artifact.
#[derive(Debug, Clone, PartialEq)]
pub struct ArtifactRecord {
    /// The flow version it was built from.
    pub flow_id: String,
    /// Artifact name (the lineage id).
    pub name: String,
    /// Release number (the flow version).
    pub release: u64,
    /// Semantic version string.
    pub version: String,
    /// SHA-256 of the manifest payload, hex.
    pub manifest_sha256: String,
    /// Payload size in bytes.
    pub size: u64,
    /// Chunk size of the manifest.
    pub chunk_size: u32,
    /// The `.floe` bundle on disk.
    pub bundle_path: String,
    /// The signed manifest envelope's bytes.
    pub manifest: Vec<u8>,
    /// The payload bytes (what the chunks cover).
    pub payload: Vec<u8>,
    /// Unix milliseconds.
    pub created_at: u64,
}

/// An artifact's description without its bytes (for listings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactInfo {
    /// Artifact name (the lineage id).
    pub name: String,
    /// Release number.
    pub release: u64,
    /// Semantic version string.
    pub version: String,
    /// SHA-256 of the manifest payload, hex.
    pub manifest_sha256: String,
    /// Payload size in bytes.
    pub size: u64,
}

/// What a slot holds, as the device reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotRecord {
    /// Artifact name.
    pub name: String,
    /// Release.
    pub release: u64,
    /// Semantic version.
    pub version: String,
    /// `blue` or `green`.
    pub slot: String,
}

/// The last health summary of a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthRecord {
    /// Overall level.
    pub status: HealthLevel,
    /// Fraction.
    pub error_rate: f64,
    /// Milliseconds.
    pub p95_ms: f64,
    /// MB.
    pub memory_mb: f64,
    /// Restarts since the last switch.
    pub restarts: u32,
    /// Whether a flow runs.
    pub flow_running: bool,
    /// CPU, memory use, temperature, disk and the functional check, where the device sent them.
    #[serde(default)]
    pub system: floe_rollout::SystemFigures,
}

/// The newest directive a device reported it accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedRecord {
    /// Directive generation.
    pub generation: u64,
    /// `stage`, `switch`, `commit`, `rollback`.
    pub action: String,
    /// `working`, `done`, `failed`, `rolled_back`.
    pub progress: String,
    /// Why, when it failed.
    pub detail: String,
}

/// A device in the registry (allowlisted, or enrolled).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// The device's own id.
    pub id: String,
    /// Its ed25519 public key, hex.
    pub public_key: String,
    /// Hardware type.
    pub device_type: String,
    /// CPU architecture.
    pub arch: String,
    /// Region.
    pub region: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// floed version.
    pub runtime_version: String,
    /// The active slot.
    pub installed: Option<SlotRecord>,
    /// The standby slot.
    pub standby: Option<SlotRecord>,
    /// The last committed release.
    pub last_known_good: Option<SlotRecord>,
    /// Whether the active slot is on trial.
    pub on_trial: bool,
    /// Last health.
    pub health: Option<HealthRecord>,
    /// The newest directive the device accepted.
    pub applied: Option<AppliedRecord>,
    /// Unix milliseconds of the last accepted report.
    pub last_seen: Option<u64>,
    /// The last accepted report's sequence number.
    pub last_seq: u64,
    /// Whether the service counts it offline.
    pub offline: bool,
    /// Operator flag.
    pub maintenance: bool,
    /// Operator flag (or set by a deployment's device-level trigger).
    pub quarantined: bool,
    /// When the operator allowlisted it (unix ms).
    pub added_at: u64,
    /// When its first report was accepted (unix ms).
    pub enrolled_at: Option<u64>,
    /// What canary selection reads besides the flags above (absent in older documents).
    #[serde(default)]
    pub canary: super::CanaryFacts,
}

/// One audit line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Unix milliseconds.
    pub at: u64,
    /// `api`, `engine`, `device`, `service`.
    pub actor: String,
    /// What was done.
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

/// A device's desired directive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredRecord {
    /// The device.
    pub device_id: String,
    /// The directive's generation.
    pub generation: u64,
    /// The deployment that issued it.
    pub deployment_id: String,
    /// The unsigned directive as JSON (so it can be re-signed with a fresh time).
    pub directive: String,
    /// The encoded `DirectivePost`.
    pub post: Vec<u8>,
    /// Unix seconds of the signed directive's `issued_at`.
    pub issued_at: u64,
}

/// A stored deployment: the service's document and the engine's serialised state.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentRow {
    /// `dep_<10 hex>`.
    pub id: String,
    /// The flow deployed.
    pub flow_id: String,
    /// The status (mirrors the engine's).
    pub status: String,
    /// Unix milliseconds.
    pub created_at: u64,
    /// The service's document (JSON).
    pub doc: String,
    /// The engine state (JSON).
    pub engine: String,
}

/// Filters of the audit listing.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Most entries returned (newest first).
    pub limit: u32,
    /// Only this deployment.
    pub deployment_id: Option<String>,
    /// Only this device.
    pub device_id: Option<String>,
    /// Only lines older than this position (a page's cursor; see [`Store::audit_page`]).
    pub before: Option<u64>,
}
