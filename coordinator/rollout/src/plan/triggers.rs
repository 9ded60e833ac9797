//! The limits and windows of the triggers that fire from devices' system figures
//! (`engine/triggers.rs`), with the reference documents' defaults where they give a number and
//! a stated rule where they give only a name.
//!
//! | trigger | condition (defaults) | scope | action | source |
//! |---|---|---|---|---|
//! | `memory_leak` (in `engine/events.rs`) | the flow's memory grows > 5 % per 10 min, measured over the last 10–30 min (`trend_window`) | the device | roll it back (quarantine) | 001 |
//! | `memory_high` | memory in use > 90 % on any deployed device | current wave | roll back the wave (halt without auto-rollback) | 003 |
//! | `thermal_escalation` | at or above 85 °C, or within 10 °C of it and rising fast enough to reach it within 15 min (measured over at least 2 min) | affected devices, named | halt and assess | 001 |
//! | `disk_anomaly` | free space under 256 MB, used ≥ 95 %, or falling (≥ 64 MB lost, measured over at least 10 min) at a rate that empties the disk within 1 h | affected devices, named | halt and assess | 001 soak "no disk space consumption anomalies" |
//! | `functional_check` | the device's functional check (layer 4) failed | the device | roll it back (quarantine) | 003 layer 4 |
//! | `health_unreachable_share` | health unreachable (for at least 1 min each) on > 10 % of the current wave's devices | current wave | roll back the wave (halt without auto-rollback) | 003 |
//! | `cpu_bounds` (gate check) | the group's mean CPU ≤ its baseline + 20 points, and never above 90 % | every gate, groups with a CPU baseline (without one: shown as `not_measured`) | the gate fails | 001 canary "CPU utilization within expected bounds" |
//! | `thermal_throttling`, `disk_anomaly` (gate checks) | no deployed device throttled / disk-anomalous | canary gate | the gate fails | 001 canary soak |
//!
//! Trends are measured against an anchor (the first report after the device switched), which
//! moves to the newest report once it is older than `trend_window` (30 min, 001's memory-leak
//! window), so a trend is always judged over the last 30 minutes at most.

use crate::{MINUTE, Millis};
use serde::{Deserialize, Serialize};

/// Trigger limits and windows. Every field has the default above; a stored plan without them
/// gets the defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TriggerConfig {
    /// `memory_high`: memory in use (percent of the device's total) above which the current
    /// wave is rolled back (003: 90 %).
    pub memory_high_percent: f64,
    /// `thermal_escalation`: the thermal limit, °C (a Raspberry Pi's firmware throttles hard
    /// at 85 °C; floed's own `temperature_unhealthy_celsius` default is the same).
    pub thermal_limit_c: f64,
    /// `thermal_escalation`: how far below the limit a rising temperature starts to count, °C.
    pub thermal_margin_c: f64,
    /// `thermal_escalation`: a rising temperature fires when it would reach the limit within
    /// this time at its measured rate.
    pub thermal_horizon: Millis,
    /// `thermal_escalation`: the shortest span a temperature trend is measured over.
    pub thermal_min_span: Millis,
    /// `disk_anomaly`: free space below this many MB fires.
    pub disk_free_floor_mb: f64,
    /// `disk_anomaly`: used space at or above this percentage fires.
    pub disk_used_max_percent: f64,
    /// `disk_anomaly`: the smallest fall of free space (MB) that counts as a trend.
    pub disk_fall_min_mb: f64,
    /// `disk_anomaly`: falling free space fires when it would run out within this time.
    pub disk_exhaust_horizon: Millis,
    /// `disk_anomaly`: the shortest span a disk trend is measured over.
    pub disk_min_span: Millis,
    /// Trend anchors older than this move to the newest report (001: 30 min).
    pub trend_window: Millis,
    /// `health_unreachable_share`: share of the current wave's devices (percent) whose health
    /// is unreachable above which the wave is rolled back (003: 10 %).
    pub unreachable_wave_percent: f64,
    /// `health_unreachable_share`: how long a device's health must have been unreachable to
    /// count (one missed report is not an outage; the device itself is rolled back at 2 min).
    pub unreachable_confirm: Millis,
    /// `cpu_bounds`: how many percentage points above the group's CPU baseline a gate allows.
    pub cpu_over_baseline_points: f64,
    /// `cpu_bounds`: the highest mean CPU a gate allows, whatever the baseline.
    pub cpu_max_percent: f64,
}

impl Default for TriggerConfig {
    fn default() -> Self {
        TriggerConfig {
            memory_high_percent: 90.0,
            thermal_limit_c: 85.0,
            thermal_margin_c: 10.0,
            thermal_horizon: 15 * MINUTE,
            thermal_min_span: 2 * MINUTE,
            disk_free_floor_mb: 256.0,
            disk_used_max_percent: 95.0,
            disk_fall_min_mb: 64.0,
            disk_exhaust_horizon: 60 * MINUTE,
            disk_min_span: 10 * MINUTE,
            trend_window: 30 * MINUTE,
            unreachable_wave_percent: 10.0,
            unreachable_confirm: MINUTE,
            cpu_over_baseline_points: 20.0,
            cpu_max_percent: 90.0,
        }
    }
}

impl TriggerConfig {
    /// Whether every field has its default (a plan then leaves the config out when stored,
    /// so stored plans keep their layout).
    pub fn is_default(&self) -> bool {
        *self == TriggerConfig::default()
    }

    /// Checks every limit; the error names the field (as `triggers.<field>`) and the value.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for (field, v) in [
            ("triggers.memory_high_percent", self.memory_high_percent),
            ("triggers.disk_used_max_percent", self.disk_used_max_percent),
            (
                "triggers.unreachable_wave_percent",
                self.unreachable_wave_percent,
            ),
            (
                "triggers.cpu_over_baseline_points",
                self.cpu_over_baseline_points,
            ),
            ("triggers.cpu_max_percent", self.cpu_max_percent),
        ] {
            if !v.is_finite() || !(0.0..=100.0).contains(&v) {
                return Err((field, format!("{v} is not a percentage between 0 and 100")));
            }
        }
        for (field, v) in [
            ("triggers.thermal_limit_c", self.thermal_limit_c),
            ("triggers.thermal_margin_c", self.thermal_margin_c),
        ] {
            if !v.is_finite() || !(0.0..=200.0).contains(&v) {
                return Err((field, format!("{v} °C is outside 0..=200")));
            }
        }
        for (field, v) in [
            ("triggers.disk_free_floor_mb", self.disk_free_floor_mb),
            ("triggers.disk_fall_min_mb", self.disk_fall_min_mb),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err((field, format!("{v} MB is not a size")));
            }
        }
        for (field, v) in [
            ("triggers.thermal_horizon", self.thermal_horizon),
            ("triggers.thermal_min_span", self.thermal_min_span),
            ("triggers.disk_exhaust_horizon", self.disk_exhaust_horizon),
            ("triggers.disk_min_span", self.disk_min_span),
            ("triggers.trend_window", self.trend_window),
            ("triggers.unreachable_confirm", self.unreachable_confirm),
        ] {
            if v == 0 || v > crate::duration::MAX_DURATION {
                return Err((
                    field,
                    format!("{v} ms must be positive and at most 366 days"),
                ));
            }
        }
        if self.thermal_min_span >= self.trend_window || self.disk_min_span >= self.trend_window {
            return Err((
                "triggers.trend_window",
                format!(
                    "{} ms must be longer than the shortest trend spans ({} ms, {} ms)",
                    self.trend_window, self.thermal_min_span, self.disk_min_span
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        assert_eq!(TriggerConfig::default().validate(), Ok(()));
        let bad = TriggerConfig {
            memory_high_percent: 190.0,
            ..TriggerConfig::default()
        };
        assert_eq!(
            bad.validate().unwrap_err().0,
            "triggers.memory_high_percent"
        );
        let bad = TriggerConfig {
            disk_min_span: 0,
            ..TriggerConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().0, "triggers.disk_min_span");
        let bad = TriggerConfig {
            trend_window: MINUTE,
            ..TriggerConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().0, "triggers.trend_window");
        // A stored plan without the field gets every default.
        let c: TriggerConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, TriggerConfig::default());
    }
}
