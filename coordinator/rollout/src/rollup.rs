//! Health rollups: fixed-size summaries of many devices' health reports per device group and
//! time window, from which baselines and fleet health are read without keeping every report.
//!
//! Why: reference 001 asks for a baseline per device group over 24 h of normal operation (mean,
//! P50/P95/P99, standard deviation, trend). Keeping every report of a 100 000-device fleet for
//! 24 h is 288 M rows; a rollup keeps, per group and window (one minute by default), the report
//! count, the health-level counts and one sparse log-linear histogram per metric, so a day of a
//! group is 1 440 small rows however large the group, and windows merge exactly (counts add).
//!
//! Values are the wire's integers (error rate in ppm, P95 latency in µs, memory in KiB), kept in
//! HDR histograms (the `hdrhistogram` crate) with two significant digits, so a percentile read
//! from a rollup is within 1 % of the true value; mean and standard deviation are exact (sums
//! are kept). Summaries convert to the engine's units (fraction, ms, MB).
//!
//! Pure: no clock, no I/O. Callers pass window start times and say which reports count (the
//! coordinator leaves out devices on trial, rolling back or quarantined, per 001's "normal
//! operation").

use crate::engine::HealthStatus;
use serde::{Deserialize, Serialize};

/// Significant decimal digits each histogram keeps: a percentile read from it is within 1 %.
const SIGFIGS: u8 = 2;

/// One metric's values in integer units (ppm, µs, KiB, as the wire carries them), kept as an
/// auto-resizing HDR histogram (created at the first value); exact count, sum and sum of
/// squares beside it, so mean and standard deviation are exact. Serialised sparse: only the
/// counted values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    hist: Option<hdrhistogram::Histogram<u64>>,
    sum: f64,
    sum_sq: f64,
    /// Values the histogram could not take (none in practice: it resizes to any u64).
    rejected: u64,
}

/// The stored form of a [`Histogram`].
#[derive(Serialize, Deserialize)]
struct HistogramRepr {
    /// (value at the bucket's highest equivalent, count), ascending.
    values: Vec<(u64, u64)>,
    sum: f64,
    sum_sq: f64,
    rejected: u64,
}

fn new_hist() -> Option<hdrhistogram::Histogram<u64>> {
    let mut h = hdrhistogram::Histogram::new(SIGFIGS).ok()?;
    h.auto(true);
    Some(h)
}

impl Serialize for Histogram {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        HistogramRepr {
            values: self
                .hist
                .iter()
                .flat_map(|h| h.iter_recorded())
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
            sum: self.sum,
            sum_sq: self.sum_sq,
            rejected: self.rejected,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Histogram {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = HistogramRepr::deserialize(d)?;
        let mut out = Histogram {
            hist: None,
            sum: r.sum,
            sum_sq: r.sum_sq,
            rejected: r.rejected,
        };
        for (v, c) in r.values {
            let h = match out.hist.as_mut() {
                Some(h) => h,
                None => out
                    .hist
                    .insert(new_hist().ok_or_else(|| serde::de::Error::custom("histogram"))?),
            };
            h.record_n(v, c).map_err(serde::de::Error::custom)?;
        }
        Ok(out)
    }
}

impl Histogram {
    /// Adds one value.
    pub fn record(&mut self, v: u64) {
        if self.hist.is_none() {
            self.hist = new_hist();
        }
        match self.hist.as_mut().map(|h| h.record(v)) {
            Some(Ok(())) => {
                let f = v as f64;
                self.sum += f;
                self.sum_sq += f * f;
            }
            _ => self.rejected += 1,
        }
    }

    /// Adds every value `other` has seen.
    pub fn merge(&mut self, other: &Histogram) {
        self.rejected = self.rejected.saturating_add(other.rejected);
        let Some(theirs) = &other.hist else {
            return;
        };
        match &mut self.hist {
            None => {
                self.hist = Some(theirs.clone());
            }
            Some(mine) => {
                if mine.add(theirs).is_err() {
                    self.rejected = self.rejected.saturating_add(theirs.len());
                    return;
                }
            }
        }
        self.sum += other.sum;
        self.sum_sq += other.sum_sq;
    }

    /// How many values.
    pub fn count(&self) -> u64 {
        self.hist.as_ref().map_or(0, |h| h.len())
    }

    /// Values that could not be counted.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// The mean, if any value was seen.
    pub fn mean(&self) -> Option<f64> {
        let n = self.count();
        (n > 0).then(|| self.sum / n as f64)
    }

    /// The population standard deviation, if any value was seen.
    pub fn stddev(&self) -> Option<f64> {
        let mean = self.mean()?;
        let var = (self.sum_sq / self.count() as f64 - mean * mean).max(0.0);
        Some(var.sqrt())
    }

    /// The `q` quantile (0 ≤ q ≤ 1), within 1 %; None when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let h = self.hist.as_ref().filter(|h| !h.is_empty())?;
        let q = if q.is_finite() {
            q.clamp(0.0, 1.0)
        } else {
            1.0
        };
        Some(h.value_at_quantile(q) as f64)
    }
}

/// One device group's reports in one window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rollup {
    /// Reports counted.
    pub reports: u64,
    /// Reports whose device said it was healthy.
    pub healthy: u64,
    /// … degraded.
    pub degraded: u64,
    /// … unhealthy.
    pub unhealthy: u64,
    /// Error rate, parts per million of messages.
    pub error_ppm: Histogram,
    /// P95 latency, microseconds.
    pub p95_us: Histogram,
    /// Memory, KiB.
    pub memory_kib: Histogram,
    /// Device CPU, tenths of a percent (only reports that carry it; empty in rollups
    /// written before devices sent CPU).
    #[serde(default)]
    pub cpu_permille: Histogram,
}

impl Rollup {
    /// Counts one report: its level and its figures in the wire's units.
    pub fn observe(&mut self, status: HealthStatus, error_ppm: u32, p95_us: u32, memory_kib: u32) {
        self.reports += 1;
        match status {
            HealthStatus::Healthy => self.healthy += 1,
            HealthStatus::Degraded => self.degraded += 1,
            HealthStatus::Unhealthy => self.unhealthy += 1,
        }
        self.error_ppm.record(u64::from(error_ppm));
        self.p95_us.record(u64::from(p95_us));
        self.memory_kib.record(u64::from(memory_kib));
    }

    /// Counts one report's CPU figure (percent, clamped to 0–100).
    pub fn observe_cpu(&mut self, percent: f32) {
        if percent.is_finite() {
            self.cpu_permille
                .record((f64::from(percent).clamp(0.0, 100.0) * 10.0).round() as u64);
        }
    }

    /// Adds another window's (or replica's) counts.
    pub fn merge(&mut self, other: &Rollup) {
        self.reports = self.reports.saturating_add(other.reports);
        self.healthy = self.healthy.saturating_add(other.healthy);
        self.degraded = self.degraded.saturating_add(other.degraded);
        self.unhealthy = self.unhealthy.saturating_add(other.unhealthy);
        self.error_ppm.merge(&other.error_ppm);
        self.p95_us.merge(&other.p95_us);
        self.memory_kib.merge(&other.memory_kib);
        self.cpu_permille.merge(&other.cpu_permille);
    }
}

/// One metric over a span of windows.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MetricSummary {
    /// Values counted.
    pub samples: u64,
    /// Mean.
    pub mean: f64,
    /// Median (within 1 %).
    pub p50: f64,
    /// 95th percentile (within 1 %).
    pub p95: f64,
    /// 99th percentile (within 1 %).
    pub p99: f64,
    /// Population standard deviation.
    pub stddev: f64,
    /// Least-squares slope of the windows' means against time, per hour; None with fewer
    /// than two windows holding values.
    pub trend_per_hour: Option<f64>,
}

/// A metric of a rollup, in the engine's units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Error rate as a fraction (0.01 is 1 %).
    ErrorRate,
    /// P95 latency in milliseconds.
    P95Ms,
    /// Memory in MB.
    MemoryMb,
    /// Device CPU in percent.
    CpuPercent,
}

impl Metric {
    fn of(self, r: &Rollup) -> &Histogram {
        match self {
            Metric::ErrorRate => &r.error_ppm,
            Metric::P95Ms => &r.p95_us,
            Metric::MemoryMb => &r.memory_kib,
            Metric::CpuPercent => &r.cpu_permille,
        }
    }

    /// Engine units per stored unit.
    fn scale(self) -> f64 {
        match self {
            Metric::ErrorRate => 1e-6,
            Metric::P95Ms => 1e-3,
            Metric::MemoryMb => 1.0 / 1024.0,
            Metric::CpuPercent => 0.1,
        }
    }
}

/// Summarises one metric of `windows` (each `(window start ms, rollup)`) in the engine's
/// units; None when no window holds a value.
pub fn summarize(windows: &[(u64, Rollup)], metric: Metric) -> Option<MetricSummary> {
    let mut all = Histogram::default();
    let mut points: Vec<(f64, f64)> = Vec::new();
    let k = metric.scale();
    for (start, r) in windows {
        let h = metric.of(r);
        all.merge(h);
        if let Some(m) = h.mean() {
            points.push((*start as f64 / 3_600_000.0, m * k));
        }
    }
    Some(MetricSummary {
        samples: all.count(),
        mean: all.mean()? * k,
        p50: all.quantile(0.50)? * k,
        p95: all.quantile(0.95)? * k,
        p99: all.quantile(0.99)? * k,
        stddev: all.stddev()? * k,
        trend_per_hour: slope(&points),
    })
}

/// Least-squares slope of y against x; None with fewer than two distinct x.
fn slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    Some(sxy / sxx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_one_percent_and_moments_exact() {
        let mut h = Histogram::default();
        let values: Vec<u64> = (1..=10_000).map(|i| i * 37).collect();
        for v in &values {
            h.record(*v);
        }
        for q in [0.5, 0.95, 0.99] {
            let exact = values[((q * values.len() as f64).ceil() as usize) - 1] as f64;
            let got = h.quantile(q).unwrap();
            assert!(
                (got - exact).abs() / exact <= 0.01,
                "q{q}: {got} against {exact}"
            );
        }
        let mean = values.iter().sum::<u64>() as f64 / values.len() as f64;
        assert!((h.mean().unwrap() - mean).abs() < 1e-6);
        let var = values
            .iter()
            .map(|v| (*v as f64 - mean).powi(2))
            .sum::<f64>()
            / values.len() as f64;
        assert!((h.stddev().unwrap() - var.sqrt()).abs() / var.sqrt() < 1e-9);
    }

    #[test]
    fn zeros_extremes_and_empty() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile(0.5), None);
        assert_eq!(h.mean(), None);
        h.record(0);
        h.record(u64::from(u32::MAX));
        h.record(u64::MAX >> 2);
        assert_eq!(h.count(), 3);
        assert_eq!(h.rejected(), 0);
        assert_eq!(h.quantile(0.0), Some(0.0));
        let top = h.quantile(1.0).unwrap();
        assert!((top - (u64::MAX >> 2) as f64).abs() / top < 0.01);
        assert_eq!(h.quantile(f64::NAN), h.quantile(1.0));
    }

    #[test]
    fn merging_windows_equals_recording_once_and_survives_cbor() {
        let mut a = Rollup::default();
        let mut b = Rollup::default();
        let mut both = Rollup::default();
        for i in 0..500u32 {
            let status = if i % 10 == 0 {
                HealthStatus::Degraded
            } else {
                HealthStatus::Healthy
            };
            let r = (
                status,
                (i % 7) * 1000,
                10_000 + i * 100,
                40_960 + (i % 13) * 1024,
            );
            if i % 2 == 0 { &mut a } else { &mut b }.observe(r.0, r.1, r.2, r.3);
            both.observe(r.0, r.1, r.2, r.3);
        }
        a.merge(&b);
        assert_eq!(a.reports, both.reports);
        assert_eq!(a.degraded, 50);
        assert_eq!(a, both);
        let json = serde_json::to_string(&a).unwrap();
        let back: Rollup = serde_json::from_str(&json).unwrap();
        assert_eq!(back, a);
        assert_eq!(back.p95_us.quantile(0.99), both.p95_us.quantile(0.99));
    }

    #[test]
    fn cpu_is_kept_in_tenths_of_a_percent_only_when_sent() {
        let mut r = Rollup::default();
        r.observe(HealthStatus::Healthy, 0, 1_000, 1_024);
        assert_eq!(r.cpu_permille.count(), 0);
        for c in [10.0f32, 20.0, 30.0, 250.0, f32::NAN] {
            r.observe_cpu(c);
        }
        // NaN is left out; 250 % is clamped to 100.
        assert_eq!(r.cpu_permille.count(), 4);
        let s = summarize(&[(0, r.clone())], Metric::CpuPercent).unwrap();
        assert!((s.mean - 40.0).abs() < 1e-9, "{s:?}");
        // A rollup stored before CPU existed reads with none.
        let mut v = serde_json::to_value(&r).unwrap();
        v.as_object_mut().unwrap().remove("cpu_permille");
        let old: Rollup = serde_json::from_value(v).unwrap();
        assert_eq!(old.cpu_permille.count(), 0);
        assert_eq!(old.reports, 1);
    }

    #[test]
    fn summaries_are_in_engine_units_with_a_trend_per_hour() {
        // Memory grows 6 MB per 10-minute window: 36 MB per hour.
        let windows: Vec<(u64, Rollup)> = (0..6u32)
            .map(|w| {
                let mut r = Rollup::default();
                for _ in 0..10 {
                    r.observe(HealthStatus::Healthy, 5_000, 20_000, (100 + 6 * w) * 1024);
                }
                (u64::from(w) * 600_000, r)
            })
            .collect();
        let m = summarize(&windows, Metric::MemoryMb).unwrap();
        assert_eq!(m.samples, 60);
        assert!((m.trend_per_hour.unwrap() - 36.0).abs() < 1e-6, "{m:?}");
        assert!((m.mean - 115.0).abs() < 1e-9);
        let e = summarize(&windows, Metric::ErrorRate).unwrap();
        assert!((e.mean - 0.005).abs() < 1e-12 && (e.p99 - 0.005).abs() < 0.005 * 0.01);
        let p = summarize(&windows, Metric::P95Ms).unwrap();
        assert_eq!(p.trend_per_hour, Some(0.0));
        assert!((p.p50 - 20.0).abs() < 0.2);
        assert!(
            summarize(&windows[..1], Metric::P95Ms)
                .unwrap()
                .trend_per_hour
                .is_none()
        );
        assert!(summarize(&[], Metric::P95Ms).is_none());
    }
}
