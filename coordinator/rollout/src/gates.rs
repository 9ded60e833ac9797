//! Gate settings (issue 15): where baselines come from, what a group without one is judged
//! against, how many reports a gate's window needs, and how often a CAUTION verdict may extend
//! a soak. Part of every [`StrategyConfig`](crate::StrategyConfig) (`gates`), with defaults so
//! plans stored before these settings existed load unchanged.
//!
//! Defaults and why:
//! - `baseline_window` 24 h: 001 "Baseline Metrics Collection", "last 24 hours of normal
//!   operation".
//! - `baseline_min_samples` 100 reports per group: below 100 samples the P99 of a baseline is
//!   its maximum (one sample in a hundred above it needs a hundred), and 001 asks for P99.
//!   A device reporting every 30 s gives that in under an hour; a group of 10 in 5 minutes.
//! - `no_baseline` `absolute`: a fleet that just came up has no history, and refusing would
//!   block every first deployment; the group is judged against absolute limits instead, and
//!   the plan says so.
//! - `abs_error_rate` 5 %: 001's wave failure threshold and 003's "error rate increases > 5 %
//!   above baseline → roll back the wave" (with no baseline, read against zero).
//! - `abs_p95_ms` 500 ms: deliberately loose, catching only gross regressions: a flow node
//!   taking half a second per message is broken on any edge pipeline we run.
//! - `abs_memory_mb` 1024 MB: half the RAM of the smallest boards we target (Raspberry Pi 4
//!   2 GB, Jetson Nano 2 GB); 003 rolls back at 90 % of a device's memory, which leaves the
//!   flow far less than that.
//! - `gate_min_samples` 3 reports per group in the gate's window: 001's
//!   `health_check_retries: 3` / `success_threshold: 3`, the fewest observations the reference
//!   trusts to call a state.
//! - `caution_max_extensions` 2: each extension is the gate's own window (canary 15 m, wave
//!   10 m, completion 30 m), so a canary soak of 30 min extended twice ends at 60 min, the top
//!   of 001's "Soak (30-60 minutes)"; then a trend that persists fails the gate.

use crate::duration::MAX_DURATION;
use crate::names::spelled;
use crate::{HOUR, Millis};
use serde::{Deserialize, Serialize};

/// What a gate does for a device group without enough baseline samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum NoBaseline {
    /// Judge the group against the absolute limits (`abs_*`).
    #[default]
    Absolute,
    /// Refuse to start the deployment, naming the groups.
    Refuse,
}

spelled!(NoBaseline, "no_baseline policy", {
    Absolute => "absolute",
    Refuse => "refuse",
});

/// Gate and baseline settings (see the module documentation for the defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GateConfig {
    /// How far back baselines are read from the health rollups.
    pub baseline_window: Millis,
    /// Reports a group needs in that window to have a baseline.
    pub baseline_min_samples: u64,
    /// What a group without a baseline is judged against.
    pub no_baseline: NoBaseline,
    /// Absolute error-rate limit (fraction) for groups without a baseline.
    pub abs_error_rate: f64,
    /// Absolute P95 latency limit (ms) for groups without a baseline.
    pub abs_p95_ms: f64,
    /// Absolute memory limit (MB) for groups without a baseline.
    pub abs_memory_mb: f64,
    /// Reports each group needs inside a check's window before the check is computed.
    pub gate_min_samples: u64,
    /// How many times a CAUTION verdict extends a soak before the gate fails.
    pub caution_max_extensions: u32,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            baseline_window: 24 * HOUR,
            baseline_min_samples: 100,
            no_baseline: NoBaseline::Absolute,
            abs_error_rate: 0.05,
            abs_p95_ms: 500.0,
            abs_memory_mb: 1024.0,
            gate_min_samples: 3,
            caution_max_extensions: 2,
        }
    }
}

impl GateConfig {
    /// Checks the ranges; the error is the setting as the REST API spells it and what is
    /// wrong with it (the plan turns it into its `Config` error).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let bad = |field: &'static str, reason: String| Err((field, reason));
        if self.baseline_window == 0 || self.baseline_window > MAX_DURATION {
            return bad(
                "baseline_window",
                format!(
                    "{} ms: must be positive and at most 366 days",
                    self.baseline_window
                ),
            );
        }
        if self.baseline_min_samples == 0 {
            return bad("baseline_min_samples", "must be at least 1".into());
        }
        if !(self.abs_error_rate.is_finite() && (0.0..=1.0).contains(&self.abs_error_rate)) {
            return bad(
                "abs_error_rate",
                format!("{} is not a fraction between 0 and 1", self.abs_error_rate),
            );
        }
        for (field, v) in [
            ("abs_p95_ms", self.abs_p95_ms),
            ("abs_memory_mb", self.abs_memory_mb),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return bad(field, format!("{v} is not a positive number"));
            }
        }
        if self.gate_min_samples == 0 {
            return bad("gate_min_samples", "must be at least 1".into());
        }
        if self.caution_max_extensions > 100 {
            return bad(
                "caution_max_extensions",
                format!("{} is more than 100", self.caution_max_extensions),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_name_their_field() {
        assert!(GateConfig::default().validate().is_ok());
        let mut c = GateConfig {
            abs_error_rate: 2.0,
            ..GateConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().0, "abs_error_rate");
        c.abs_error_rate = 0.05;
        c.gate_min_samples = 0;
        assert_eq!(c.validate().unwrap_err().0, "gate_min_samples");
        c.gate_min_samples = 3;
        c.abs_p95_ms = f64::NAN;
        assert_eq!(c.validate().unwrap_err().0, "abs_p95_ms");
    }

    #[test]
    fn a_stored_config_without_the_settings_reads_the_defaults() {
        let c: GateConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, GateConfig::default());
        assert_eq!("refuse".parse::<NoBaseline>(), Ok(NoBaseline::Refuse));
    }
}
