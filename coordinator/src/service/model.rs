//! The service's own vocabulary: the requests it accepts and the documents it keeps. They live
//! here, not in `api`, so the arrow runs one way (the REST layer uses the service, never the
//! reverse); the REST layer re-exports the request types as its JSON contract. Unknown fields
//! of a request are refused so a typo is an error naming the field, not a silently ignored
//! setting.

use crate::store::SlotRecord;
use floe_rollout::{DeviceEvent, Millis};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// `POST /flows` and `PUT /flows/:id`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowInput {
    /// Display name.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The flow JSON.
    pub definition: serde_json::Value,
}

/// A device selector of `POST /deployments`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    /// Every label must match.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Device type.
    pub device_type: Option<String>,
    /// Region.
    pub region: Option<String>,
}

/// One wave of a canary-waves config.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaveInput {
    /// Name.
    pub name: Option<String>,
    /// Share of the post-canary pool.
    pub percentage: f64,
    /// Soak duration ("10m").
    pub soak: Option<String>,
    /// Failure threshold in percent.
    pub failure_threshold: Option<f64>,
}

/// The `config` of `POST /deployments`; absent fields take the strategy's defaults.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigInput {
    /// Rolling: devices per batch.
    pub batch_size: Option<u32>,
    /// Rolling: soak after each batch.
    pub batch_delay: Option<String>,
    /// Failure threshold in percent.
    pub failure_threshold: Option<f64>,
    /// Canary share in percent.
    pub canary_percentage: Option<f64>,
    /// Canary soak.
    pub canary_delay: Option<String>,
    /// Per-device deploy timeout.
    pub timeout: Option<String>,
    /// Blue-green switch delay.
    pub switch_delay: Option<String>,
    /// Roll back automatically.
    pub auto_rollback: Option<bool>,
    /// Evaluate health gates.
    pub health_check: Option<bool>,
    /// Wait for approve after the canary.
    pub require_approval: Option<bool>,
    /// Gate quorum in percent.
    pub quorum: Option<f64>,
    /// How long the end waits for offline devices.
    pub offline_grace: Option<String>,
    /// Canary-waves waves.
    pub waves: Option<Vec<WaveInput>>,
    /// Most devices deploying at once (0: no limit).
    pub max_parallel: Option<u32>,
}

/// `POST /deployments`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentInput {
    /// The published flow version.
    pub flow_id: String,
    /// Strategy name.
    pub strategy: String,
    /// Explicit targets.
    pub target_devices: Option<Vec<String>>,
    /// Or a selector.
    pub selector: Option<Selector>,
    /// Settings.
    #[serde(default)]
    pub config: ConfigInput,
}

/// `PATCH /devices/:id`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevicePatch {
    /// Maintenance flag.
    pub maintenance: Option<bool>,
    /// Quarantine flag.
    pub quarantined: Option<bool>,
}

/// `POST /devices`: allowlist a device key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceInput {
    /// The device's id.
    pub id: String,
    /// Its ed25519 public key, hex.
    pub public_key: String,
    /// Hardware type.
    #[serde(rename = "type")]
    pub device_type: Option<String>,
    /// Region.
    pub region: Option<String>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// How long a device may stay silent before it counts as offline, by default: 90 s.
///
/// A device that reports every `p` and is counted offline after `p` flips offline whenever one
/// report comes a little late (30 000 simulated devices reporting every 30 s against a 30 s
/// limit flipped 38 547 times in two minutes, each flip an audit line and an engine input).
/// The limit has to be several report periods: `floed` reports every 10 s by default
/// (`heartbeat_interval_ms`), a large fleet is run at one report per 30 s (the 3 333
/// reports/s at 100 000 devices), and 90 s is three missed reports of the slower cadence and
/// nine of the default one. The reference documents set no figure; they ask that offline
/// devices are tracked apart and never treated as failed, which a late report must not undo.
pub const DEFAULT_OFFLINE_AFTER: Millis = 90_000;

/// Settings of the service.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The data directory (bundles go to `DIR/artifacts/`).
    pub data_dir: PathBuf,
    /// A device that has not reported for this long counts as offline (default 90 s:
    /// [`DEFAULT_OFFLINE_AFTER`]).
    pub offline_after: Millis,
    /// How long a signed directive stays valid, in seconds (default 1 h); it is re-signed
    /// when older than half of this.
    pub directive_ttl_secs: u64,
    /// How long a published artifact's manifest stays valid, in days (default 365).
    pub artifact_ttl_days: u64,
    /// Engine inputs logged between two snapshots of a deployment (default 20 000; at least
    /// twice the deployment's targets, so a snapshot's cost per input does not grow with it).
    pub snapshot_every: u64,
}

impl ServiceConfig {
    /// The defaults for a data directory.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            offline_after: DEFAULT_OFFLINE_AFTER,
            directive_ttl_secs: 3600,
            artifact_ttl_days: 365,
            snapshot_every: 20_000,
        }
    }
}

/// One directive post a device still has to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The device.
    pub device_id: String,
    /// The directive's generation.
    pub generation: u64,
    /// The encoded [`DirectivePost`].
    pub post: Vec<u8>,
}

/// A published artifact, for seeding into the fabric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactBlob {
    /// Artifact name (the lineage id).
    pub name: String,
    /// Release number.
    pub release: u64,
    /// The signed manifest envelope's bytes.
    pub manifest: Vec<u8>,
    /// The payload the chunks cover.
    pub payload: Vec<u8>,
    /// The manifest's chunk size.
    pub chunk_size: u32,
}

/// A gate verdict as kept in a deployment's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateRecord {
    /// Stage index.
    pub stage: u32,
    /// Gate name.
    pub gate: String,
    /// `pass`, `wait`, `fail`.
    pub verdict: String,
    /// Why.
    pub reason: String,
    /// The checks: (name, value, limit, pass).
    pub checks: Vec<(String, f64, f64, bool)>,
    /// Unix ms.
    pub at: Millis,
}

/// The service's view of one target of a deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetTrack {
    /// The device.
    pub device_id: String,
    /// The generation of the newest directive this deployment issued to it (0: none yet).
    pub generation: u64,
    /// Its kind (`stage`, `switch`, `commit`, `rollback`).
    pub kind: Option<String>,
    /// Events already fed to the engine for `generation`.
    pub fed: Vec<DeviceEvent>,
    /// What the device ran before the deployment (the rollback target).
    pub previous: Option<SlotRecord>,
    /// The device's last word on the directive, when it failed.
    pub detail: String,
}

/// The artifact a deployment rolls out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactSummary {
    /// Name.
    pub name: String,
    /// Release.
    pub release: u64,
    /// Semantic version.
    pub version: String,
    /// Manifest digest, hex.
    pub manifest_sha256: String,
}

/// The service's document of a deployment (the engine's state is stored beside it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentDoc {
    /// `dep_<10 hex>`.
    pub id: String,
    /// The flow version.
    pub flow_id: String,
    /// What is rolled out.
    pub artifact: ArtifactSummary,
    /// Strategy name.
    pub strategy: String,
    /// The request as it was posted.
    pub request: serde_json::Value,
    /// The config with defaults filled in, as the API shows it.
    pub config: serde_json::Value,
    /// Status (mirrors the engine).
    pub status: String,
    /// Why.
    pub status_reason: String,
    /// Unix ms.
    pub created_at: Millis,
    /// Unix ms.
    pub started_at: Option<Millis>,
    /// Unix ms.
    pub completed_at: Option<Millis>,
    /// Gate verdicts, oldest first (the last [`MAX_GATES`](super::MAX_GATES)).
    pub gates: Vec<GateRecord>,
    /// Per target, in plan order.
    pub targets: Vec<TargetTrack>,
}

/// The ingest path's figures since start (`GET /api/v1/status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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

/// `GET /api/v1/status`: the coordinator's own figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Status {
    /// The ingest path.
    pub ingest: IngestStatus,
}
