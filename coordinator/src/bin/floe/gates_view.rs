//! How `floe deploy status` / `create` show what issue 15 adds: the baselines per device group
//! captured for the deployment (with the stated facts about groups without one), each check's
//! outcome and each gate's summary over its window (reports, latency P50/P95/P99, healthy /
//! degraded / failed devices, CAUTION extensions).

use floe_coordinator::client::{Deployment, Gate};
use floe_coordinator::contract::GateCheck;
use floe_rollout::{BaselineMetric, CheckOutcome};

use crate::config::table;

/// A check's word in a gate line: `ok`, `FAIL`, `CAUTION`, `n/c` (not computable: too few
/// reports) or `n/m` (not measured).
pub(crate) fn check_word(c: &GateCheck) -> &'static str {
    match c.outcome {
        Some(CheckOutcome::Pass) => "ok",
        Some(CheckOutcome::Fail) => "FAIL",
        Some(CheckOutcome::Caution) => "CAUTION",
        Some(CheckOutcome::NotComputable) => "n/c",
        Some(CheckOutcome::NotMeasured) => "n/m",
        None if c.pass => "ok",
        None => "FAIL",
    }
}

/// The gate's summary as one clause, if it has one.
pub(crate) fn summary_text(g: &Gate) -> Option<String> {
    let s = g.summary.as_ref()?;
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"));
    let mut text = format!(
        "{} min window, {} reports · latency p50/p95/p99 {}/{}/{} ms · {} deployed: {} healthy, {} degraded, {} failed, {} new failed",
        s.window_ms / 60_000,
        s.samples,
        ms(s.latency_p50_ms),
        ms(s.latency_p95_ms),
        ms(s.latency_p99_ms),
        s.deployed,
        s.healthy,
        s.degraded,
        s.failed,
        s.new_failed
    );
    if s.extensions > 0 {
        text.push_str(&format!(" · soak extended {}x (CAUTION)", s.extensions));
    }
    if !s.absolute.is_empty() {
        text.push_str(&format!(" · absolute limits for {}", s.absolute.join(", ")));
    }
    Some(text)
}

/// The baselines table and the facts about groups without one ("" when none were captured).
pub(crate) fn render_baselines(d: &Deployment) -> String {
    let Some(set) = &d.baselines else {
        return String::new();
    };
    let m = |x: &Option<BaselineMetric>, scale: f64, digits: usize| {
        x.map_or_else(
            || "-".to_string(),
            |x| {
                format!(
                    "{:.digits$} (p50 {:.digits$} p95 {:.digits$} p99 {:.digits$} sd {:.digits$}, {})",
                    x.mean * scale,
                    x.p50 * scale,
                    x.p95 * scale,
                    x.p99 * scale,
                    x.stddev * scale,
                    trend_word(&x),
                )
            },
        )
    };
    let rows: Vec<Vec<String>> = set
        .groups
        .iter()
        .map(|g| {
            vec![
                g.name(),
                format!("{}/{}", g.samples, g.needed),
                m(&g.error_rate, 100.0, 2),
                m(&g.p95_ms, 1.0, 1),
                m(&g.memory_mb, 1.0, 1),
                m(&g.cpu_percent, 1.0, 1),
            ]
        })
        .collect();
    let mut out = format!(
        "baselines ({} h of health rollups{}):\n",
        set.window / 3_600_000,
        if set.truncated { ", truncated" } else { "" }
    );
    out.push_str(&table(
        &[
            "GROUP",
            "SAMPLES",
            "ERROR %",
            "P95 MS",
            "MEMORY MB",
            "CPU %",
        ],
        &rows,
    ));
    for f in &d.baseline_facts {
        out.push_str(f);
        out.push('\n');
    }
    out
}

fn trend_word(m: &BaselineMetric) -> &'static str {
    match m.trend {
        floe_rollout::Trend::Stable => "stable",
        floe_rollout::Trend::Increasing => "increasing",
        floe_rollout::Trend::Decreasing => "decreasing",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn words_and_summaries() {
        let g: Gate = serde_json::from_value(serde_json::json!({
            "stage": 0, "gate": "canary", "verdict": "caution", "reason": "degrading: error_rate[pi]",
            "checks": [
                {"name": "error_rate[pi]", "value": 0.02, "limit": 0.03, "pass": true, "outcome": "caution"},
                {"name": "latency_p95[pi]", "value": 1.0, "limit": 3.0, "pass": false, "outcome": "not_computable"},
                {"name": "old", "value": 1.0, "limit": 0.0, "pass": false}
            ],
            "summary": {"window_ms": 900000, "samples": 42, "latency_p50_ms": 100.0,
                "latency_p95_ms": 105.0, "latency_p99_ms": 110.0, "deployed": 5, "healthy": 4,
                "degraded": 1, "failed": 0, "new_failed": 0, "extensions": 1},
            "at": "2026-12-07T19:00:00Z"
        }))
        .unwrap();
        let words: Vec<&str> = g.checks.iter().map(check_word).collect();
        assert_eq!(words, vec!["CAUTION", "n/c", "FAIL"]);
        assert_eq!(
            summary_text(&g).unwrap(),
            "15 min window, 42 reports · latency p50/p95/p99 100.0/105.0/110.0 ms · 5 deployed: 4 healthy, 1 degraded, 0 failed, 0 new failed · soak extended 1x (CAUTION)"
        );
    }
}
