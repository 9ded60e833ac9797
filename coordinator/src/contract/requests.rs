//! Request bodies. Unknown fields are refused so a typo is an error naming the field, not a
//! silently ignored setting. Optional fields the caller leaves out are not sent, so a body the
//! client builds is the body a person would write.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `POST /flows` and `PUT /flows/:id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    /// Every label must match.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Device type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_type: Option<String>,
    /// Region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// One wave of a canary-waves config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaveInput {
    /// Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Share of the post-canary pool.
    pub percentage: f64,
    /// Soak duration ("10m").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak: Option<String>,
    /// Failure threshold in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<f64>,
}

/// The `config` of `POST /deployments`; absent fields take the strategy's defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigInput {
    /// Rolling: devices per batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
    /// Rolling: soak after each batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_delay: Option<String>,
    /// Failure threshold in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<f64>,
    /// Canary share in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_percentage: Option<f64>,
    /// Canary soak.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_delay: Option<String>,
    /// Per-device deploy timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Blue-green switch delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switch_delay: Option<String>,
    /// Roll back automatically.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_rollback: Option<bool>,
    /// Evaluate health gates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<bool>,
    /// Wait for approve after the canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_approval: Option<bool>,
    /// Gate quorum in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<f64>,
    /// How long the end waits for offline devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline_grace: Option<String>,
    /// Canary-waves waves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waves: Option<Vec<WaveInput>>,
    /// Most devices deploying at once (0: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<u32>,
    /// A running deployment without progress (no target transition, no stage change) for
    /// longer than this emits a `deployment.stuck` event (default `30m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stuck_after: Option<String>,
    /// All-at-once above the size limit (10 devices): deploy to every target at once anyway
    /// (audited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
    /// Steps: cumulative percentages of the targets, rising, ending at 100 (`[5, 25, 50, 100]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<f64>>,
    /// Steps: the observation period after each step (`10m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_soak: Option<String>,
}

/// `POST /deployments`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeploymentInput {
    /// The published flow version.
    pub flow_id: String,
    /// Strategy name.
    pub strategy: String,
    /// Explicit targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_devices: Option<Vec<String>>,
    /// Or a selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Selector>,
    /// Settings.
    #[serde(default)]
    pub config: ConfigInput,
}

/// `PATCH /devices/:id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DevicePatch {
    /// Maintenance flag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<bool>,
    /// Quarantine flag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantined: Option<bool>,
}

/// `POST /devices`: allowlist a device key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceInput {
    /// The device's id.
    pub id: String,
    /// Its ed25519 public key, hex.
    pub public_key: String,
    /// Hardware type.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub device_type: Option<String>,
    /// Region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// `POST /enrollment-tokens`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenInput {
    /// Lifetime ("1h" default, at most 30 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
}

/// `POST /devices/batch`: up to 1 000 devices allowlisted in one transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceBatch {
    /// The devices.
    pub devices: Vec<DeviceInput>,
}
