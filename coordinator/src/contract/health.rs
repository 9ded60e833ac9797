//! `GET /health/groups`: the fleet's health per device group over a time window, from the
//! coordinator's health rollups (reports of normal operation only; see `service::rollups`).

use floe_rollout::rollup::MetricSummary;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One device group's health over the window: a device type in all regions (`region` null)
/// or in one region.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GroupHealth {
    /// The device type.
    pub device_type: String,
    /// The region; null for the type over every region.
    pub region: Option<String>,
    /// Rollup windows holding reports.
    pub windows: u64,
    /// Reports counted.
    pub reports: u64,
    /// Reports whose device said it was healthy.
    pub healthy: u64,
    /// … degraded.
    pub degraded: u64,
    /// … unhealthy.
    pub unhealthy: u64,
    /// Error rate as a fraction (null: no values).
    pub error_rate: Option<MetricSummary>,
    /// P95 message latency in ms (null: no values).
    pub p95_ms: Option<MetricSummary>,
    /// floed's memory in MB (null: no values).
    pub memory_mb: Option<MetricSummary>,
}

/// `GET /health/groups`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HealthGroups {
    /// Start of the span (unix ms, a window boundary).
    pub from_ms: u64,
    /// End of the span (unix ms); the window still open is not included.
    pub to_ms: u64,
    /// Length of one rollup window (ms).
    pub window_ms: u64,
    /// Per device type, then per type and region, by type then region.
    pub groups: Vec<GroupHealth>,
    /// True when the span held more rollups than one answer reads; the figures then cover
    /// the oldest part only, up to `to_ms` of the last window read.
    pub truncated: bool,
}
