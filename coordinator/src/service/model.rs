//! The service's own vocabulary: the settings it runs with and the documents it keeps. The
//! requests it accepts are the API contract's (`crate::contract`, pure data that imports
//! nothing of the service), re-exported here; the arrows run api → service → contract.

pub use crate::contract::{
    ConfigInput, DeploymentInput, DeviceInput, DevicePatch, FlowInput, Selector, WaveInput,
};
use crate::contract::{DeploymentConfig, GateVerdict};
use crate::store::SlotRecord;
use floe_rollout::{DeviceEvent, Millis};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

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

/// How long a rolled-back device has to report healthy on its previous version, by default:
/// 5 min (`service::incidents`).
pub const DEFAULT_VERIFY_TIMEOUT: Millis = 5 * 60_000;

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
    /// Events kept in memory for clients that resume (default 10 000:
    /// [`DEFAULT_EVENT_RING`](super::events::DEFAULT_EVENT_RING)).
    pub event_ring: usize,
    /// Attempts per webhook delivery before the event is given up (default 6).
    pub hook_attempts: u32,
    /// Roots an https webhook receiver's certificate must chain to (None: the system's).
    pub hook_roots: Option<super::webhooks::Roots>,
    /// Length of one health rollup window (default 1 min): the fleet's health is aggregated
    /// per device group in memory and written once per window.
    pub health_window: Millis,
    /// How long health rollups are kept (default 24 h, reference 001's baseline period).
    pub health_retention: Millis,
    /// The pre-deployment checklist's settings.
    pub preflight: super::PreflightSettings,
    /// How long a rolled-back device has to report healthy on its previous version before it
    /// counts unhealthy (or unverified when silent) (default 5 min).
    pub rollback_verify_timeout: Millis,
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
            event_ring: super::events::DEFAULT_EVENT_RING,
            hook_attempts: 6,
            hook_roots: None,
            health_window: 60_000,
            health_retention: 24 * 3_600_000,
            preflight: super::PreflightSettings::default(),
            rollback_verify_timeout: DEFAULT_VERIFY_TIMEOUT,
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
    /// The decision.
    pub verdict: GateVerdict,
    /// Why.
    pub reason: String,
    /// The checks: (name, value, limit, pass).
    pub checks: Vec<(String, f64, f64, bool)>,
    /// Each check's outcome, in the order of `checks` (empty in records written before).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outcomes: Vec<Option<floe_rollout::CheckOutcome>>,
    /// The gate's summary over its window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<floe_rollout::GateSummary>,
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
    /// The values of the flow's variables this device receives with its Stage directive,
    /// resolved when the deployment was created (see `service::vars`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vars: BTreeMap<String, String>,
    /// The values of the flow's secret variables, each sealed to this device's key when the
    /// deployment was created (never in clear here).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_vars: BTreeMap<String, floe_wire::proto::SealedValue>,
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
    pub config: DeploymentConfig,
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
    /// The pre-deployment checklist's last result (see `deployments::preflight`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preflight: Option<crate::contract::Preflight>,
}

pub use crate::contract::{IngestStatus, Status};
