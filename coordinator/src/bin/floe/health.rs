//! `floe device health`: the fleet's health per device group as a table.

use floe_coordinator::contract::HealthGroups;
use floe_rollout::rollup::MetricSummary;

fn metric(m: Option<&MetricSummary>, scale: f64, unit: &str) -> String {
    match m {
        Some(m) => format!(
            "{:.2}/{:.2}/{:.2}{unit}",
            m.p50 * scale,
            m.p95 * scale,
            m.p99 * scale
        ),
        None => "-".into(),
    }
}

/// One line per group: type, region (`*`: all), reports, health levels, and P50/P95/P99 of
/// error rate (%), latency (ms) and memory (MB), plus the memory trend per hour.
pub(crate) fn render(h: &HealthGroups) -> String {
    let mut out = format!(
        "{:<16} {:<8} {:>9} {:>16} {:>20} {:>22} {:>22} {:>10}\n",
        "TYPE",
        "REGION",
        "REPORTS",
        "OK/DEGR/UNHLTHY",
        "ERR% p50/p95/p99",
        "P95 MS p50/p95/p99",
        "MEM MB p50/p95/p99",
        "MEM MB/H"
    );
    if h.groups.is_empty() {
        out.push_str(&format!(
            "no health rollups in the last {} min (one is written per {} s window of reports)\n",
            (h.to_ms - h.from_ms) / 60_000,
            h.window_ms / 1000
        ));
    }
    for g in &h.groups {
        let trend = g
            .memory_mb
            .and_then(|m| m.trend_per_hour)
            .map_or("-".to_string(), |t| format!("{t:+.2}"));
        out.push_str(&format!(
            "{:<16} {:<8} {:>9} {:>16} {:>20} {:>22} {:>22} {:>10}\n",
            g.device_type,
            g.region.as_deref().unwrap_or("*"),
            g.reports,
            format!("{}/{}/{}", g.healthy, g.degraded, g.unhealthy),
            metric(g.error_rate.as_ref(), 100.0, ""),
            metric(g.p95_ms.as_ref(), 1.0, ""),
            metric(g.memory_mb.as_ref(), 1.0, ""),
            trend
        ));
    }
    if h.truncated {
        out.push_str("(truncated: the span held more rollups than one answer reads)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use floe_coordinator::contract::GroupHealth;

    #[test]
    fn groups_render_one_line_each_with_percentiles_and_trend() {
        let m = |p50, trend| MetricSummary {
            samples: 10,
            mean: p50,
            p50,
            p95: p50 * 2.0,
            p99: p50 * 3.0,
            stddev: 0.1,
            trend_per_hour: trend,
        };
        let h = HealthGroups {
            from_ms: 0,
            to_ms: 3_600_000,
            window_ms: 60_000,
            groups: vec![GroupHealth {
                device_type: "rpi4".into(),
                region: None,
                windows: 60,
                reports: 1200,
                healthy: 1190,
                degraded: 10,
                unhealthy: 0,
                error_rate: Some(m(0.001, None)),
                p95_ms: Some(m(12.0, None)),
                memory_mb: Some(m(48.0, Some(1.5))),
            }],
            truncated: false,
        };
        let text = render(&h);
        let line = text.lines().nth(1).unwrap();
        assert!(line.starts_with("rpi4"), "{text}");
        for part in [
            "*",
            "1200",
            "1190/10/0",
            "0.10/0.20/0.30",
            "12.00/24.00/36.00",
            "+1.50",
        ] {
            assert!(line.contains(part), "{part} missing: {line}");
        }
        let empty = render(&HealthGroups {
            groups: vec![],
            ..h
        });
        assert!(
            empty.contains("no health rollups in the last 60 min"),
            "{empty}"
        );
    }
}
