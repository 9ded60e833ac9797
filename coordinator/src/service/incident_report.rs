//! Building a deployment's incident report (`IncidentReport`) from what the coordinator
//! holds: the deployment's document and engine (targets, types, regions, statuses, captured
//! baselines, the health delta at the last gate), its audit lines (the timeline, in absolute
//! UTC times) and its rollback verification. Pure reads; `incidents` stores the result.
//!
//! The timeline keeps every deployment-level line (creation, commands, status changes, gate
//! verdicts, the engine's halts and rollbacks, the verification) and the first
//! [`DEVICE_LINES`] per-device lines, oldest first, at most `MAX_TIMELINE` in all; the audit
//! log is read newest first in pages of [`AUDIT_PAGE`], at most [`AUDIT_PAGES`] pages.

use super::ServiceError;
use super::deployments::Deployments;
use super::flows::Flows;
use crate::contract::{
    AffectedDevice, AffectedDevices, IncidentReport, MAX_AFFECTED_LISTED, MAX_TIMELINE,
    MetricDelta, RollbackVerification, TimelineEntry,
};
use crate::store::{AuditFilter, AuditRecord, Store, rfc3339};
use floe_rollout::engine::latency_limit;
use floe_rollout::incident::{Outcome, classify};
use floe_rollout::{Millis, Plan, TargetStatus};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Per-device audit lines kept in a timeline.
const DEVICE_LINES: usize = 20;
/// Audit lines read per page.
const AUDIT_PAGE: u32 = 1000;
/// Pages read at most (the newest 20 000 lines of the deployment).
const AUDIT_PAGES: usize = 20;

/// Error rate above baseline (absolute, a fraction) still "within baseline" after a rollback.
pub(super) const WITHIN_ERROR: f64 = 0.01;
/// P95 multiple of baseline still within it (with the engine's latency slack).
pub(super) const WITHIN_P95: f64 = 1.2;
/// Memory multiple of baseline still within it.
pub(super) const WITHIN_MEMORY: f64 = 1.2;
/// Error rate above baseline (absolute) at which a device's last report on the new version
/// counts it as failing, for the failure pattern (003: "error rate increases >5% above
/// baseline").
const FAILING_ERROR: f64 = 0.05;
/// P95 multiple of baseline at which it counts as failing (003: "P95 latency increases >50%").
const FAILING_P95: f64 = 1.5;

/// Whether a device's last report on the new version breached its baseline (003's wave
/// triggers: error rate more than 5 points above it, p95 more than 50 % above it).
fn breached(m: [f64; 3], b: Option<&TypeBaseline>) -> bool {
    b.is_some_and(|b| {
        m[0] > b.error_rate + FAILING_ERROR
            || (b.p95_ms > 0.0 && m[1] > latency_limit(b.p95_ms, FAILING_P95))
    })
}

/// One device type's captured baseline: error rate (fraction), p95 (ms), memory (MB).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(super) struct TypeBaseline {
    pub(super) error_rate: f64,
    pub(super) p95_ms: f64,
    pub(super) memory_mb: f64,
}

/// Baselines by device type.
pub(super) type Baselines = BTreeMap<String, TypeBaseline>;

/// What a report needs of a deployment's rollback verification.
#[derive(Debug, Clone)]
pub(super) struct VerificationFacts {
    /// The contract's view.
    pub(super) view: RollbackVerification,
    /// Each rolled-back device's verdict.
    pub(super) verdicts: BTreeMap<String, String>,
    /// The verified devices' mean error rate, p95 and memory after the rollback.
    pub(super) after: Option<[f64; 3]>,
    /// Their mean CPU (percent), over those that sent it.
    pub(super) after_cpu: Option<f64>,
}

/// The baselines a plan captured, by device type.
pub(super) fn baselines_of(plan: &Plan) -> Baselines {
    plan.types
        .iter()
        .zip(&plan.baselines)
        .map(|(t, b)| {
            (
                t.clone(),
                TypeBaseline {
                    error_rate: b.error_rate,
                    p95_ms: b.p95_ms,
                    memory_mb: b.memory_mb,
                },
            )
        })
        .collect()
}

/// The element-wise mean (None when empty).
pub(super) fn mean(values: &[[f64; 3]]) -> Option<[f64; 3]> {
    if values.is_empty() {
        return None;
    }
    let n = values.len() as f64;
    let mut sum = [0.0; 3];
    for v in values {
        for (s, x) in sum.iter_mut().zip(v) {
            *s += x;
        }
    }
    Some(sum.map(|s| s / n))
}

/// Whether devices' mean metrics are within the mean of their types' baselines: error rate
/// at most [`WITHIN_ERROR`] above, p95 within `latency_limit(baseline, WITHIN_P95)`, memory at
/// most [`WITHIN_MEMORY`] times. `measured`: (device type, [error, p95, memory]).
pub(super) fn within_baseline(
    measured: &[(&str, [f64; 3])],
    baselines: &Baselines,
) -> (Option<bool>, Vec<String>) {
    let pairs: Vec<([f64; 3], [f64; 3])> = measured
        .iter()
        .filter_map(|(t, m)| {
            baselines
                .get(*t)
                .filter(|b| b.p95_ms > 0.0 || b.memory_mb > 0.0 || b.error_rate > 0.0)
                .map(|b| (*m, [b.error_rate, b.p95_ms, b.memory_mb]))
        })
        .collect();
    let (Some(after), Some(base)) = (
        mean(&pairs.iter().map(|p| p.0).collect::<Vec<_>>()),
        mean(&pairs.iter().map(|p| p.1).collect::<Vec<_>>()),
    ) else {
        return (
            None,
            vec!["no baseline or no post-rollback metrics to compare".to_string()],
        );
    };
    let limits = [
        base[0] + WITHIN_ERROR,
        latency_limit(base[1], WITHIN_P95),
        base[2] * WITHIN_MEMORY,
    ];
    let mut ok = true;
    let mut lines = Vec::new();
    for (i, (name, scale, unit)) in [
        ("error rate", 100.0, "%"),
        ("p95", 1.0, " ms"),
        ("memory", 1.0, " MB"),
    ]
    .into_iter()
    .enumerate()
    {
        let pass = after[i] <= limits[i];
        ok &= pass;
        lines.push(format!(
            "{name} {:.2}{unit} after vs baseline {:.2}{unit} (limit {:.2}{unit}): {}",
            after[i] * scale,
            base[i] * scale,
            limits[i] * scale,
            if pass { "within" } else { "above" }
        ));
    }
    (Some(ok), lines)
}

/// What a timeline line is, from its audit action and detail.
fn timeline_kind(a: &AuditRecord) -> String {
    match a.action.as_str() {
        "rollout" => {
            let d = a.detail.as_str();
            if d.starts_with("halt:") {
                "trigger"
            } else if d.starts_with("full fleet rollback:")
                || d.starts_with("wave rollback:")
                || d.starts_with("abort: rolling back")
            {
                "rollback.start"
            } else if d.contains("rollback complete") || d.contains("rolled back; halted") {
                "rollback.end"
            } else {
                "rollout"
            }
        }
        other => other,
    }
    .to_string()
}

/// The deployment's timeline (see the module documentation).
fn timeline(store: &Store, dep: &str) -> Result<(Vec<TimelineEntry>, u64), ServiceError> {
    let mut lines: Vec<AuditRecord> = Vec::new();
    let mut before = None;
    for _ in 0..AUDIT_PAGES {
        let page = store.audit_page(&AuditFilter {
            limit: AUDIT_PAGE,
            deployment_id: Some(dep.to_string()),
            device_id: None,
            before,
        })?;
        let full = page.len() == AUDIT_PAGE as usize;
        before = page.last().map(|(seq, _)| *seq);
        lines.extend(page.into_iter().map(|(_, a)| a));
        if !full {
            break;
        }
    }
    lines.reverse();
    let mut out = Vec::new();
    let mut omitted = 0u64;
    let mut device_lines = 0usize;
    for a in lines {
        let keep = if a.device_id.is_some() {
            device_lines += 1;
            device_lines <= DEVICE_LINES
        } else {
            true
        };
        if !keep || out.len() >= MAX_TIMELINE {
            omitted += 1;
            continue;
        }
        let detail = match &a.device_id {
            Some(d) => format!("{d}: {}", a.detail),
            None if a.outcome.is_empty() || a.outcome == "ok" => a.detail.clone(),
            None => format!("{} ({})", a.detail, a.outcome),
        };
        out.push(TimelineEntry {
            at: rfc3339(a.at),
            what: timeline_kind(&a),
            detail,
        });
    }
    Ok((out, omitted))
}

/// Builds the incident report of deployment `dep`.
pub(super) fn build(
    store: &Store,
    flows: &Flows,
    deployments: &Deployments,
    dep: &str,
    verification: Option<VerificationFacts>,
    now: Millis,
) -> Result<IncidentReport, ServiceError> {
    let (timeline, timeline_omitted) = timeline(store, dep)?;
    let mut report = deployments.with_deployment(store, dep, |doc, e| {
        let plan = e.plan();
        let no_verdicts = BTreeMap::new();
        let verdicts = verification.as_ref().map_or(&no_verdicts, |v| &v.verdicts);
        let mut affected = AffectedDevices {
            targets: plan.len() as u64,
            failed: 0,
            quarantined: 0,
            rolled_back: 0,
            skipped_unreachable: 0,
            not_started: 0,
            kept_new_version: 0,
            devices: Vec::new(),
            not_listed: 0,
        };
        let mut listed: Vec<(u8, AffectedDevice)> = Vec::new();
        let mut outcomes = Vec::new();
        let mut new_version: Vec<[f64; 3]> = Vec::new();
        let base = baselines_of(plan);
        for (i, t) in doc.targets.iter().enumerate() {
            let Ok(ix) = u32::try_from(i) else { continue };
            let Some(status) = e.target_status(ix) else {
                continue;
            };
            let ty = plan
                .device_type
                .get(i)
                .and_then(|k| plan.types.get(*k as usize))
                .map_or("", String::as_str);
            let region = plan
                .device_region
                .get(i)
                .and_then(|k| plan.regions.get(*k as usize))
                .map_or("", String::as_str);
            let last = e.last_new_version_health(ix).map(|m| m.map(f64::from));
            let seen = last.map_or_else(String::new, |m| {
                format!(
                    "; last on the new version: error rate {:.2}%, p95 {:.0} ms, memory {:.0} MB",
                    m[0] * 100.0,
                    m[1],
                    m[2]
                )
            });
            let (rank, what) = match status {
                TargetStatus::Failed => {
                    affected.failed += 1;
                    let word = if t.detail.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", t.detail)
                    };
                    (0, format!("the deployment failed on it{word}"))
                }
                TargetStatus::Quarantined => {
                    affected.quarantined += 1;
                    (
                        1,
                        "rolled back on its own account (device-level trigger) and quarantined"
                            .to_string(),
                    )
                }
                TargetStatus::RolledBack => {
                    affected.rolled_back += 1;
                    (2, "rolled back with its wave or the fleet".to_string())
                }
                TargetStatus::Skipped if e.target_unreachable(ix) => {
                    affected.skipped_unreachable += 1;
                    (3, String::new())
                }
                TargetStatus::Skipped | TargetStatus::Pending => {
                    affected.not_started += 1;
                    (3, String::new())
                }
                TargetStatus::Success => {
                    affected.kept_new_version += 1;
                    (3, String::new())
                }
                TargetStatus::Deploying | TargetStatus::Offline => (3, String::new()),
            };
            // The deployed set: every device that was sent the new version.
            let deployed = !matches!(status, TargetStatus::Skipped | TargetStatus::Pending)
                || t.kind.is_some();
            if deployed {
                new_version.extend(last);
                outcomes.push(Outcome {
                    device_type: ty,
                    region,
                    failed: matches!(status, TargetStatus::Failed | TargetStatus::Quarantined)
                        || last.is_some_and(|m| breached(m, base.get(ty))),
                });
            }
            if rank < 3 {
                let what = format!("{what}{seen}");
                listed.push((
                    rank,
                    AffectedDevice {
                        id: t.device_id.clone(),
                        device_type: ty.to_string(),
                        region: region.to_string(),
                        status: status.as_str().to_string(),
                        what_happened: what,
                        verification: verdicts.get(&t.device_id).cloned(),
                    },
                ));
            }
        }
        listed.sort_by_key(|(rank, _)| *rank);
        affected.not_listed = listed.len().saturating_sub(MAX_AFFECTED_LISTED) as u64;
        affected.devices = listed
            .into_iter()
            .take(MAX_AFFECTED_LISTED)
            .map(|(_, d)| d)
            .collect();
        let pattern = classify(&outcomes);
        // Before: the deployed devices' baselines (their types' means); during: their last
        // reports on the new version, else the baseline moved by the engine's health delta
        // at its last gate.
        let before = mean(
            &outcomes
                .iter()
                .filter_map(|o| base.get(o.device_type))
                .map(|b| [b.error_rate, b.p95_ms, b.memory_mb])
                .collect::<Vec<_>>(),
        );
        let during = mean(&new_version).or(match (before, e.health_delta()) {
            (Some(b), Some([de, dp, dm])) => {
                Some([b[0] + de, b[1] * (1.0 + dp), b[2] * (1.0 + dm)])
            }
            _ => None,
        });
        let after = verification.as_ref().and_then(|v| v.after);
        let pick = |v: Option<[f64; 3]>, i: usize, scale: f64| v.map(|v| v[i] * scale);
        let health = vec![
            MetricDelta {
                metric: "error_rate".into(),
                before: pick(before, 0, 100.0),
                during: pick(during, 0, 100.0),
                after: pick(after, 0, 100.0),
            },
            MetricDelta {
                metric: "p95_ms".into(),
                before: pick(before, 1, 1.0),
                during: pick(during, 1, 1.0),
                after: pick(after, 1, 1.0),
            },
            MetricDelta {
                metric: "memory_mb".into(),
                before: pick(before, 2, 1.0),
                during: pick(during, 2, 1.0),
                after: pick(after, 2, 1.0),
            },
            // Neither the baselines nor the engine hold a CPU figure yet; after the rollback,
            // the devices' own reports do when they send it.
            MetricDelta {
                metric: "cpu_percent".into(),
                before: None,
                during: None,
                after: verification.as_ref().and_then(|v| v.after_cpu),
            },
        ];
        IncidentReport {
            deployment_id: doc.id.clone(),
            title: String::new(),
            flow_id: doc.flow_id.clone(),
            strategy: doc.strategy.clone(),
            status: doc.status.clone(),
            reason: doc.status_reason.clone(),
            generated_at: rfc3339(now),
            created_at: rfc3339(doc.created_at),
            started_at: doc.started_at.map(rfc3339),
            ended_at: doc.completed_at.map(rfc3339),
            timeline: Vec::new(),
            timeline_omitted: 0,
            affected,
            pattern,
            health,
            verification: verification.as_ref().map(|v| v.view.clone()),
        }
    })?;
    let version = deployments.with_deployment(store, dep, |doc, _| doc.artifact.version.clone())?;
    let name = flows
        .get(store, &report.flow_id)
        .map(|f| f.name)
        .unwrap_or_else(|_| report.flow_id.clone());
    report.title = format!("Incident: {name} v{version}");
    report.timeline = timeline;
    report.timeline_omitted = timeline_omitted;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(t: &str) -> Baselines {
        [(
            t.to_string(),
            TypeBaseline {
                error_rate: 0.01,
                p95_ms: 100.0,
                memory_mb: 200.0,
            },
        )]
        .into_iter()
        .collect()
    }

    #[test]
    fn devices_back_at_their_baseline_are_within_it() {
        let (ok, lines) = within_baseline(&[("pi", [0.012, 105.0, 210.0])], &base("pi"));
        assert_eq!(ok, Some(true), "{lines:?}");
        assert_eq!(lines.len(), 3);
    }

    #[test]
    fn a_metric_above_its_limit_is_not_within_baseline() {
        let (ok, lines) = within_baseline(
            &[("pi", [0.01, 100.0, 300.0]), ("pi", [0.01, 100.0, 260.0])],
            &base("pi"),
        );
        assert_eq!(ok, Some(false));
        assert!(lines[2].contains("above"), "{lines:?}");
    }

    #[test]
    fn no_baseline_or_no_metrics_is_unknown() {
        assert_eq!(within_baseline(&[], &base("pi")).0, None);
        assert_eq!(
            within_baseline(&[("jetson", [0.0, 1.0, 1.0])], &base("pi")).0,
            None
        );
    }
}
