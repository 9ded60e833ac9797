//! `config.triggers` of `POST /deployments`: the limits and windows of the triggers that fire
//! from devices' system figures. Every field is optional; an absent one keeps the reference
//! default (`floe_rollout::TriggerConfig`: memory 90 %, thermal limit 85 °C with a 10 °C margin
//! and a 15 min horizon, disk floor 256 MB, 95 % used, empty within 1 h, unreachable on 10 %
//! of a wave for 1 min, trends over 30 min, CPU baseline + 20 points up to 90 %).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Trigger limits a deployment sets; durations are strings like `15m`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerInput {
    /// `memory_high`: memory in use (percent) above which the current wave is rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_high_percent: Option<f64>,
    /// `thermal_escalation`: the thermal limit, °C.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thermal_limit_c: Option<f64>,
    /// `thermal_escalation`: how far below the limit a rising temperature counts, °C.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thermal_margin_c: Option<f64>,
    /// `thermal_escalation`: fires when the limit would be reached within this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thermal_horizon: Option<String>,
    /// `disk_anomaly`: free space below this many MB fires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_free_floor_mb: Option<f64>,
    /// `disk_anomaly`: used space at or above this percentage fires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_used_max_percent: Option<f64>,
    /// `disk_anomaly`: falling free space fires when it would run out within this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_exhaust_horizon: Option<String>,
    /// Trend windows (temperature, disk, the memory leak).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trend_window: Option<String>,
    /// `health_unreachable_share`: share of the wave (percent) above which it is rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable_wave_percent: Option<f64>,
    /// `cpu_bounds`: the highest mean CPU (percent) a gate allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_max_percent: Option<f64>,
}
