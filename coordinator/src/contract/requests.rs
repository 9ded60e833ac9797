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
    /// Blue-green: delay between everything staged and the canary's switch.
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
    /// The waves of canary-waves, and of blue-green (which switches in them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waves: Option<Vec<WaveInput>>,
    /// Most devices deploying at once (0: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<u32>,
    /// Limits and windows of the triggers that fire from devices' system figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers: Option<super::TriggerInput>,
    /// A running deployment without progress (no target transition, no stage change) for
    /// longer than this emits a `deployment.stuck` event (default `30m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stuck_after: Option<String>,
    /// How far back baselines are read from the health rollups (default `24h`, 001).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_window: Option<String>,
    /// Reports a device group needs in that window for a baseline (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_min_samples: Option<u64>,
    /// A group without a baseline: `absolute` (judged against `abs_*`, the default) or
    /// `refuse` (start fails naming the groups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_baseline: Option<String>,
    /// Absolute error-rate limit for groups without a baseline, a fraction (default 0.05).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abs_error_rate: Option<f64>,
    /// Absolute P95 latency limit, ms (default 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abs_p95_ms: Option<f64>,
    /// Absolute memory limit, MB (default 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abs_memory_mb: Option<f64>,
    /// Reports each group needs inside a gate check's window (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate_min_samples: Option<u64>,
    /// Times a CAUTION verdict extends a soak before the gate fails (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caution_max_extensions: Option<u32>,
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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DevicePatch {
    /// Maintenance flag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<bool>,
    /// Quarantine flag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantined: Option<bool>,
    /// The device is a single point of failure at its site: never picked as a canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub single_point_of_failure: Option<bool>,
    /// Known hardware issues in words (at most 500 bytes; `""` clears): never a canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_hardware_issues: Option<String>,
    /// Monitoring coverage 0-100; canaries are the best-covered devices of their type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100))]
    pub monitoring: Option<u8>,
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
