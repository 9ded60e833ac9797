//! Baselines from the health rollups (issue 15, 001 "Baseline Metrics Collection"): for every
//! device type of a deployment's targets and every (type, region) among them, the reports of
//! normal operation over the baseline window (the rollups already leave out devices on trial,
//! rolling back, quarantined or in maintenance), summarised per metric as mean, P50/P95/P99,
//! standard deviation, trend and sample count. Captured when a deployment is created (the plan
//! preview) and again when it starts; the engine judges its gates against what was captured at
//! start.
//!
//! Bounds: the stored windows are read an hour at a time (at most [`PAGE_ROWS`] rows a page;
//! a page that fills up marks the set `truncated`), folded into one running rollup per group,
//! so memory is per group, not per window; at most [`MAX_REGIONAL`] (type, region) groups get
//! a baseline of their own (the others are judged against their type's).

use super::rollups::Rollups;
use super::{ServiceError, validation};
use crate::contract::ConfigInput;
use crate::store::{RollupRow, Store};
use floe_rollout::rollup::{Metric, MetricSummary, Rollup, summarize};
use floe_rollout::{
    Baseline, BaselineMetric, BaselineSet, GateConfig, GroupBaseline, HOUR, Millis, NoBaseline,
    Trend, parse_duration,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Stored rollup rows read per hour of the window at most.
const PAGE_ROWS: usize = 50_000;
/// (type, region) groups with a baseline of their own at most.
pub(super) const MAX_REGIONAL: usize = 1024;

/// Overlays the request's gate settings on `g` (errors name the field).
pub(super) fn apply_gate_input(
    g: &mut GateConfig,
    input: &ConfigInput,
) -> Result<(), ServiceError> {
    if let Some(v) = input.baseline_window.as_deref() {
        g.baseline_window =
            parse_duration(v).map_err(|e| validation("config.baseline_window", e.to_string()))?;
    }
    if let Some(v) = input.baseline_min_samples {
        g.baseline_min_samples = v;
    }
    if let Some(v) = input.no_baseline.as_deref() {
        g.no_baseline = v.parse::<NoBaseline>().map_err(|_| {
            validation(
                "config.no_baseline",
                format!("{v:?} is not a policy; use absolute or refuse"),
            )
        })?;
    }
    if let Some(v) = input.abs_error_rate {
        g.abs_error_rate = v;
    }
    if let Some(v) = input.abs_p95_ms {
        g.abs_p95_ms = v;
    }
    if let Some(v) = input.abs_memory_mb {
        g.abs_memory_mb = v;
    }
    if let Some(v) = input.gate_min_samples {
        g.gate_min_samples = v;
    }
    if let Some(v) = input.caution_max_extensions {
        g.caution_max_extensions = v;
    }
    g.validate()
        .map_err(|(field, reason)| validation(format!("config.{field}"), reason))
}

/// One group's windows folded together: the merged rollup and, per metric, each window's
/// (sum, count) for the trend.
#[derive(Default)]
struct Acc {
    merged: Rollup,
    points: [BTreeMap<u64, (f64, u64)>; 4],
}

const METRICS: [Metric; 4] = [
    Metric::ErrorRate,
    Metric::P95Ms,
    Metric::MemoryMb,
    Metric::CpuPercent,
];

impl Acc {
    fn add(&mut self, row: &RollupRow) {
        for (i, m) in METRICS.iter().enumerate() {
            let h = match m {
                Metric::ErrorRate => &row.rollup.error_ppm,
                Metric::P95Ms => &row.rollup.p95_us,
                Metric::MemoryMb => &row.rollup.memory_kib,
                Metric::CpuPercent => &row.rollup.cpu_permille,
            };
            if let Some(mean) = h.mean() {
                let p = self.points[i].entry(row.start_ms).or_insert((0.0, 0));
                p.0 += mean * h.count() as f64;
                p.1 += h.count();
            }
        }
        self.merged.merge(&row.rollup);
    }

    fn baseline(&self, device_type: &str, region: Option<&str>, needed: u64) -> GroupBaseline {
        let merged = [(0u64, self.merged.clone())];
        let metric = |i: usize| {
            let s = summarize(&merged, METRICS[i])?;
            let scale = s.mean / self.raw_mean(i).filter(|m| *m != 0.0).unwrap_or(1.0);
            // Trend: least-squares slope of the windows' means per hour (engine units).
            let points: Vec<(f64, f64)> = self.points[i]
                .iter()
                .filter(|(_, (_, n))| *n > 0)
                .map(|(t, (sum, n))| (*t as f64 / HOUR as f64, sum / *n as f64 * scale))
                .collect();
            Some(to_metric(s, slope(&points)))
        };
        GroupBaseline {
            device_type: device_type.to_string(),
            region: region.map(str::to_string),
            samples: self.merged.reports,
            needed,
            error_rate: metric(0),
            p95_ms: metric(1),
            memory_mb: metric(2),
            cpu_percent: metric(3),
        }
    }

    /// The merged mean of metric `i` in stored units (to convert window means).
    fn raw_mean(&self, i: usize) -> Option<f64> {
        let (sum, n) = self.points[i]
            .values()
            .fold((0.0, 0u64), |(s, c), (ps, pn)| (s + ps, c + pn));
        (n > 0).then(|| sum / n as f64)
    }
}

fn to_metric(s: MetricSummary, trend_per_hour: Option<f64>) -> BaselineMetric {
    BaselineMetric {
        samples: s.samples,
        mean: s.mean,
        p50: s.p50,
        p95: s.p95,
        p99: s.p99,
        stddev: s.stddev,
        trend_per_hour,
        trend: Trend::of(s.mean, trend_per_hour),
    }
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
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// Captures the baselines of `groups` ((device type, region) of the targets) at `now`.
pub(super) fn capture(
    store: &Store,
    rollups: &Rollups,
    groups: &BTreeSet<(String, String)>,
    cfg: &GateConfig,
    now: Millis,
) -> Result<BaselineSet, ServiceError> {
    let from = now.saturating_sub(cfg.baseline_window);
    let types: BTreeSet<&str> = groups.iter().map(|(t, _)| t.as_str()).collect();
    let regional: BTreeSet<(&str, &str)> = groups
        .iter()
        .take(MAX_REGIONAL)
        .map(|(t, r)| (t.as_str(), r.as_str()))
        .collect();
    let mut truncated = groups.len() > MAX_REGIONAL;
    let mut by_type: HashMap<String, Acc> = HashMap::new();
    let mut by_group: HashMap<(String, String), Acc> = HashMap::new();
    let mut fold = |row: &RollupRow| {
        if !types.contains(row.device_type.as_str()) {
            return;
        }
        by_type.entry(row.device_type.clone()).or_default().add(row);
        if regional.contains(&(row.device_type.as_str(), row.region.as_str())) {
            by_group
                .entry((row.device_type.clone(), row.region.clone()))
                .or_default()
                .add(row);
        }
    };
    let mut page = from;
    while page <= now {
        let end = page.saturating_add(HOUR).min(now.saturating_add(1));
        let rows = store.rollups(page, end, PAGE_ROWS)?;
        truncated |= rows.len() >= PAGE_ROWS;
        for row in &rows {
            fold(row);
        }
        page = end;
    }
    for row in rollups.unwritten() {
        if row.start_ms >= from {
            fold(&row);
        }
    }
    let needed = cfg.baseline_min_samples;
    let empty = Acc::default();
    let mut out: Vec<GroupBaseline> = types
        .iter()
        .map(|t| by_type.get(*t).unwrap_or(&empty).baseline(t, None, needed))
        .collect();
    out.extend(regional.iter().map(|(t, r)| {
        by_group
            .get(&(t.to_string(), r.to_string()))
            .unwrap_or(&empty)
            .baseline(t, Some(r), needed)
    }));
    Ok(BaselineSet {
        captured_at: now,
        window: cfg.baseline_window,
        min_samples: needed,
        groups: out,
        truncated,
    })
}

/// The per-type figures the plan carries (the means of the types with a baseline; zeros for
/// the others, which the engine judges by the `no_baseline` policy, never against zeros).
pub(super) fn plan_baselines(set: &BaselineSet) -> HashMap<String, Baseline> {
    set.groups
        .iter()
        .filter(|g| g.region.is_none())
        .map(|g| {
            let mean = |m: Option<BaselineMetric>| m.map_or(0.0, |m| m.mean);
            let b = if g.usable() {
                Baseline {
                    error_rate: mean(g.error_rate),
                    p95_ms: mean(g.p95_ms),
                    memory_mb: mean(g.memory_mb),
                }
            } else {
                Baseline {
                    error_rate: 0.0,
                    p95_ms: 0.0,
                    memory_mb: 0.0,
                }
            };
            (g.device_type.clone(), b)
        })
        .collect()
}
