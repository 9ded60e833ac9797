//! The REST layer's own JSON request types (the contract in docs: /api/v1). Unknown fields are
//! refused so a typo in a request is a 400 naming the field, not a silently ignored setting.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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

/// `POST /enrollment-tokens`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenInput {
    /// Lifetime ("1h" default).
    pub ttl: Option<String>,
}
