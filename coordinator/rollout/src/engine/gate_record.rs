//! What a gate record says beyond its checks (issue 15): each check's outcome (a check the
//! gate could not compute says so, and the gate does not pass on it), and the gate's summary
//! over its window: reports, latency percentiles across all deployed devices, healthy /
//! degraded / failed counts, new failures since the last check, CAUTION extensions.

use crate::Millis;
use crate::names::spelled;
use serde::{Deserialize, Serialize};

/// How one check came out.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckOutcome {
    /// Within its limit and not degrading.
    Pass,
    /// Past its limit.
    Fail,
    /// Within its limit but degrading over the window (001: extend the soak, recheck).
    Caution,
    /// Not enough reports in the window (or no figure) to compute it: the gate waits.
    NotComputable,
    /// Shown, not judged: devices do not send the figure, or (CPU) no baseline says what is
    /// expected.
    NotMeasured,
}

spelled!(CheckOutcome, "check outcome", {
    Pass => "pass",
    Fail => "fail",
    Caution => "caution",
    NotComputable => "not_computable",
    NotMeasured => "not_measured",
});

/// A gate's view of all devices deployed so far, over its window.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GateSummary {
    /// The gate's main window (error rate), ms.
    pub window_ms: Millis,
    /// Health reports received in that window from deployed devices.
    pub samples: u64,
    /// P50 of the reported P95 latencies in the window, ms (within 2.5 %).
    pub latency_p50_ms: Option<f64>,
    /// P95 of them, ms.
    pub latency_p95_ms: Option<f64>,
    /// P99 of them, ms.
    pub latency_p99_ms: Option<f64>,
    /// Devices on the new version (deployed so far, still on it).
    pub deployed: u64,
    /// Of those, reporting healthy.
    pub healthy: u64,
    /// Reporting degraded (not counted healthy).
    pub degraded: u64,
    /// Failed, quarantined or timed out in this deployment so far.
    pub failed: u64,
    /// Devices of earlier, already gated stages that failed since the last gate decided.
    pub new_failed: u64,
    /// Times a CAUTION verdict extended this gate's soak.
    pub extensions: u32,
    /// Groups judged against the absolute limits for want of a baseline.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub absolute: Vec<String>,
}
