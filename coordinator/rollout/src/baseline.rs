//! Baselines per device group (001 "Baseline Metrics Collection"): for each device type, and
//! each (type, region) of the deployment, the mean, P50/P95/P99, standard deviation, trend and
//! sample count of every metric over the baseline window, as captured when the deployment was
//! created and again when it started. A group with fewer samples than the configured minimum
//! has no baseline; that is a stated fact ([`GroupBaseline::statement`]), and the gates judge
//! the group by the `no_baseline` policy (absolute limits, or the start is refused). A region
//! without enough samples falls back to its type's baseline.
//!
//! The figures come from the coordinator's health rollups (it fills a [`BaselineSet`]); the
//! engine keeps the set with the deployment's state and judges against it. Pure data: no
//! dependency on the engine or the rollups.

use crate::Millis;
use serde::{Deserialize, Serialize};

/// Whether a metric was stable, rising or falling over the window.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trend {
    /// Changing by less than [`TREND_STABLE_PER_HOUR`] of its mean per hour (or not enough
    /// windows to tell).
    Stable,
    /// Rising.
    Increasing,
    /// Falling.
    Decreasing,
}

/// A baseline metric whose least-squares slope stays within this share of its mean per hour
/// (1 %) is stable.
pub const TREND_STABLE_PER_HOUR: f64 = 0.01;

impl Trend {
    /// The trend of a metric with `mean` and a slope of `per_hour` (None: too few windows).
    pub fn of(mean: f64, per_hour: Option<f64>) -> Trend {
        match per_hour {
            Some(s) if s.abs() > TREND_STABLE_PER_HOUR * mean.abs().max(f64::EPSILON) => {
                if s > 0.0 {
                    Trend::Increasing
                } else {
                    Trend::Decreasing
                }
            }
            _ => Trend::Stable,
        }
    }
}

/// One metric of a baseline, in the engine's units (error rate a fraction, latency ms, memory
/// MB, CPU percent).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BaselineMetric {
    /// Values counted.
    pub samples: u64,
    /// Mean (what the gates compare against).
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Standard deviation.
    pub stddev: f64,
    /// Least-squares slope of the windows' means, per hour.
    pub trend_per_hour: Option<f64>,
    /// Stable, increasing or decreasing.
    pub trend: Trend,
}

/// The baseline of one device group, or the fact that it has none.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupBaseline {
    /// Device type.
    pub device_type: String,
    /// Region, for a (type, region) group; None for the whole type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Reports of normal operation in the window.
    pub samples: u64,
    /// Reports needed for a baseline (`baseline_min_samples`).
    pub needed: u64,
    /// Error rate (fraction).
    pub error_rate: Option<BaselineMetric>,
    /// P95 latency (ms).
    pub p95_ms: Option<BaselineMetric>,
    /// Flow memory (MB).
    pub memory_mb: Option<BaselineMetric>,
    /// Device CPU (percent), when devices send it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<BaselineMetric>,
}

impl GroupBaseline {
    /// The group's name: `rpi4` or `rpi4/eu`.
    pub fn name(&self) -> String {
        match &self.region {
            Some(r) => format!("{}/{r}", self.device_type),
            None => self.device_type.clone(),
        }
    }

    /// Whether the group has enough samples (and figures) for a baseline.
    pub fn usable(&self) -> bool {
        self.samples >= self.needed
            && self.error_rate.is_some()
            && self.p95_ms.is_some()
            && self.memory_mb.is_some()
    }

    /// The stated fact for a group without a baseline ("no baseline for rpi4/eu: 3 samples,
    /// 100 needed"); None when it has one.
    pub fn statement(&self) -> Option<String> {
        (!self.usable()).then(|| {
            format!(
                "no baseline for {}: {} samples, {} needed",
                self.name(),
                self.samples,
                self.needed
            )
        })
    }
}

/// The baselines of a deployment's device groups.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineSet {
    /// When it was captured (the coordinator's unix ms).
    pub captured_at: Millis,
    /// How far back it reads (ms).
    pub window: Millis,
    /// Samples a group needs.
    pub min_samples: u64,
    /// Every device type of the deployment (region None), then every (type, region), sorted.
    pub groups: Vec<GroupBaseline>,
    /// Whether the source held more rows than were read (the oldest were left out).
    #[serde(default)]
    pub truncated: bool,
}

impl BaselineSet {
    /// The baseline of `device_type` as a whole.
    pub fn of_type(&self, device_type: &str) -> Option<&GroupBaseline> {
        self.groups
            .iter()
            .find(|g| g.region.is_none() && g.device_type == device_type)
    }

    /// Device types without a baseline (what the `refuse` policy names).
    pub fn types_without(&self) -> Vec<&GroupBaseline> {
        self.groups
            .iter()
            .filter(|g| g.region.is_none() && !g.usable())
            .collect()
    }

    /// The baselines as a Markdown section for the deployment report.
    pub fn to_markdown(&self, absolute: bool) -> String {
        let mut out = format!(
            "\n**Baselines** ({} h of health rollups, {} samples needed per group{}):\n\n\
             | Group | Samples | Error rate | P95 latency (ms) | Memory (MB) | CPU (%) |\n\
             |-------|---------|------------|------------------|-------------|---------|\n",
            self.window / 3_600_000,
            self.min_samples,
            if self.truncated { "; truncated" } else { "" }
        );
        let cell = |m: &Option<BaselineMetric>, scale: f64, suffix: &str| {
            m.map_or_else(
                || "-".to_string(),
                |m| {
                    format!(
                        "{:.2}{suffix} (P50 {:.2} / P95 {:.2} / P99 {:.2}, sd {:.2}, {})",
                        m.mean * scale,
                        m.p50 * scale,
                        m.p95 * scale,
                        m.p99 * scale,
                        m.stddev * scale,
                        match m.trend {
                            Trend::Stable => "stable",
                            Trend::Increasing => "increasing",
                            Trend::Decreasing => "decreasing",
                        }
                    )
                },
            )
        };
        for g in &self.groups {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                g.name(),
                g.samples,
                cell(&g.error_rate, 100.0, "%"),
                cell(&g.p95_ms, 1.0, ""),
                cell(&g.memory_mb, 1.0, ""),
                cell(&g.cpu_percent, 1.0, ""),
            ));
        }
        for s in self.statements(absolute) {
            out.push_str(&format!("\n- {s}"));
        }
        out.push('\n');
        out
    }

    /// One sentence per group without a baseline, saying what it is judged against instead.
    pub fn statements(&self, absolute: bool) -> Vec<String> {
        self.groups
            .iter()
            .filter_map(|g| {
                let s = g.statement()?;
                let instead = match &g.region {
                    Some(_)
                        if self
                            .of_type(&g.device_type)
                            .is_some_and(GroupBaseline::usable) =>
                    {
                        format!("judged against {}'s baseline", g.device_type)
                    }
                    _ if absolute => "judged against the absolute limits".to_string(),
                    _ => "the deployment cannot start (no_baseline: refuse)".to_string(),
                };
                Some(format!("{s}; {instead}"))
            })
            .collect()
    }
}

/// A metric whose every sample was `mean` (tests).
#[cfg(test)]
pub(crate) fn flat(mean: f64, samples: u64) -> BaselineMetric {
    BaselineMetric {
        samples,
        mean,
        p50: mean,
        p95: mean,
        p99: mean,
        stddev: 0.0,
        trend_per_hour: None,
        trend: Trend::Stable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(mean: f64, samples: u64) -> BaselineMetric {
        flat(mean, samples)
    }

    fn group(t: &str, region: Option<&str>, samples: u64) -> GroupBaseline {
        GroupBaseline {
            device_type: t.into(),
            region: region.map(str::to_string),
            samples,
            needed: 100,
            error_rate: Some(metric(0.01, samples)),
            p95_ms: Some(metric(10.0, samples)),
            memory_mb: Some(metric(50.0, samples)),
            cpu_percent: None,
        }
    }

    #[test]
    fn groups_without_enough_samples_are_stated_with_what_judges_them() {
        let set = BaselineSet {
            captured_at: 0,
            window: 86_400_000,
            min_samples: 100,
            groups: vec![
                group("jetson", None, 5),
                group("rpi4", None, 400),
                group("rpi4", Some("eu"), 3),
            ],
            truncated: false,
        };
        let s = set.statements(true);
        assert_eq!(
            s,
            vec![
                "no baseline for jetson: 5 samples, 100 needed; judged against the absolute limits",
                "no baseline for rpi4/eu: 3 samples, 100 needed; judged against rpi4's baseline",
            ]
        );
        assert_eq!(set.types_without().len(), 1);
        assert!(set.statements(false)[0].contains("cannot start"));
    }

    #[test]
    fn trends_are_relative_to_the_mean() {
        assert_eq!(Trend::of(100.0, Some(0.5)), Trend::Stable);
        assert_eq!(Trend::of(100.0, Some(5.0)), Trend::Increasing);
        assert_eq!(Trend::of(100.0, Some(-5.0)), Trend::Decreasing);
        assert_eq!(Trend::of(100.0, None), Trend::Stable);
        assert_eq!(Trend::of(0.0, Some(0.001)), Trend::Increasing);
    }
}
