//! The JSON the API returns, built from the service's records (the contract's shapes).

use crate::service::DeploymentDoc;
use crate::store::{ArtifactInfo, AuditRecord, DeviceRecord, FlowRecord, SlotRecord, rfc3339};
use floe_rollout::Rollout;
use serde_json::{Value, json};

/// Most device ids listed per stage in a deployment object (the rest are counted).
pub const MAX_STAGE_DEVICES: usize = 1000;
/// Most targets a deployment object embeds, and most in one page of
/// `GET /deployments/{id}/targets`; the object names where the next page starts.
pub const MAX_TARGETS_PAGE: usize = 1000;

/// The stage of each device of a plan: its position in the plan's order falls in one stage's
/// range.
fn stages_of(engine: &Rollout) -> Vec<u32> {
    let plan = engine.plan();
    let mut stage_of = vec![0u32; plan.ids.len()];
    for (si, s) in plan.stages.iter().enumerate() {
        for pos in s.start..s.end {
            if let Some(d) = plan.order.get(pos as usize)
                && let Some(slot) = stage_of.get_mut(*d as usize)
            {
                *slot = si as u32;
            }
        }
    }
    stage_of
}

/// The targets of a deployment from plan index `cursor`, at most `limit` (capped at
/// [`MAX_TARGETS_PAGE`]), and the index the next page starts at (`None` after the last).
fn target_page(
    doc: &DeploymentDoc,
    engine: &Rollout,
    cursor: usize,
    limit: usize,
) -> (Vec<Value>, Option<usize>) {
    let stage_of = stages_of(engine);
    let limit = limit.clamp(1, MAX_TARGETS_PAGE);
    let targets = doc
        .targets
        .iter()
        .enumerate()
        .skip(cursor)
        .take(limit)
        .map(|(i, t)| {
            json!({
                "device_id": t.device_id,
                "status": engine.target_status(i as u32).map(|s| s.as_str()).unwrap_or("pending"),
                "stage": stage_of.get(i).copied().unwrap_or(0),
                "generation": t.generation,
                "detail": t.detail,
            })
        })
        .collect();
    let end = cursor.saturating_add(limit);
    (targets, (end < doc.targets.len()).then_some(end))
}

/// `GET /deployments/{id}/targets?cursor=&limit=`: one page of targets in plan order.
pub fn targets(doc: &DeploymentDoc, engine: &Rollout, cursor: usize, limit: usize) -> Value {
    let (targets, next) = target_page(doc, engine, cursor, limit);
    json!({"targets": targets, "next": next, "total": doc.targets.len()})
}

fn time(ms: Option<u64>) -> Value {
    ms.map(|t| Value::String(rfc3339(t))).unwrap_or(Value::Null)
}

/// A flow object.
pub fn flow(f: &FlowRecord, artifact: Option<&ArtifactInfo>) -> Value {
    json!({
        "id": f.id,
        "name": f.name,
        "description": f.description,
        "tags": f.tags,
        "state": f.state,
        "version": f.version,
        "lineage": f.lineage,
        "parent_id": f.parent_id,
        "definition": f.definition,
        "artifact": artifact.map(|a| json!({
            "name": a.name,
            "release": a.release,
            "version": a.version,
            "manifest_sha256": a.manifest_sha256,
            "size": a.size,
        })),
        "created_at": rfc3339(f.created_at),
        "updated_at": rfc3339(f.updated_at),
        "published_at": time(f.published_at),
        "archived_at": time(f.archived_at),
    })
}

fn slot(s: &Option<SlotRecord>) -> Value {
    match s {
        Some(s) => {
            json!({"name": s.name, "release": s.release, "version": s.version, "slot": s.slot})
        }
        None => Value::Null,
    }
}

/// A device object.
pub fn device(d: &DeviceRecord, online: bool, generation: u64) -> Value {
    json!({
        "id": d.id,
        "type": d.device_type,
        "arch": d.arch,
        "region": d.region,
        "labels": d.labels,
        "public_key": d.public_key,
        "runtime_version": d.runtime_version,
        "installed": slot(&d.installed),
        "standby": slot(&d.standby),
        "last_known_good": slot(&d.last_known_good),
        "on_trial": d.on_trial,
        "health": d.health.as_ref().map(|h| json!({
            "status": h.status,
            "error_rate": h.error_rate,
            "p95_ms": h.p95_ms,
            "memory_mb": h.memory_mb,
            "restarts": h.restarts,
            "flow_running": h.flow_running,
        })),
        "applied": d.applied.as_ref().map(|a| json!({
            "generation": a.generation, "action": a.action, "progress": a.progress, "detail": a.detail,
        })),
        "online": online,
        "last_seen": time(d.last_seen),
        "generation": generation,
        "maintenance": d.maintenance,
        "quarantined": d.quarantined,
        "enrolled_at": time(d.enrolled_at),
    })
}

/// A deployment object. It embeds the first [`MAX_TARGETS_PAGE`] targets; `targets_next`
/// names the cursor of the rest (`GET /deployments/{id}/targets`).
pub fn deployment(doc: &DeploymentDoc, engine: &Rollout) -> Value {
    let plan = engine.plan();
    let counts = engine.counts();
    let (targets, targets_next) = target_page(doc, engine, 0, MAX_TARGETS_PAGE);
    let stages: Vec<Value> = plan
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let devices: Vec<&str> = (s.start..s.end)
                .take(MAX_STAGE_DEVICES)
                .filter_map(|pos| plan.order.get(pos as usize))
                .filter_map(|d| plan.ids.get(*d as usize).map(String::as_str))
                .collect();
            json!({
                "index": i,
                "name": s.name,
                "kind": s.kind.as_str(),
                "size": s.len(),
                "devices": devices,
            })
        })
        .collect();
    let gates: Vec<Value> = doc
        .gates
        .iter()
        .map(|g| {
            json!({
                "stage": g.stage,
                "gate": g.gate,
                "verdict": g.verdict,
                "reason": g.reason,
                "checks": g.checks.iter().map(|(name, value, limit, pass)| json!({
                    "name": name, "value": value, "limit": limit, "pass": pass,
                })).collect::<Vec<_>>(),
                "at": rfc3339(g.at),
            })
        })
        .collect();
    let status = engine.status();
    let reason = if doc.status_reason.is_empty() {
        engine.status_reason().to_string()
    } else {
        doc.status_reason.clone()
    };
    json!({
        "id": doc.id,
        "flow_id": doc.flow_id,
        "artifact": {
            "name": doc.artifact.name,
            "release": doc.artifact.release,
            "version": doc.artifact.version,
            "manifest_sha256": doc.artifact.manifest_sha256,
        },
        "strategy": doc.strategy,
        "status": status.as_str(),
        "status_reason": reason,
        "total_targets": plan.ids.len(),
        "completed_targets": counts.success,
        "failed_targets": counts.failed + counts.quarantined,
        "offline_targets": counts.offline,
        "rolled_back_targets": counts.rolled_back,
        "skipped_targets": counts.skipped,
        "pending_targets": counts.pending + counts.deploying,
        "targets": targets,
        "targets_next": targets_next,
        "current_stage": engine.current_stage(),
        "stages": stages,
        "gates": gates,
        "awaiting_approval": engine.awaiting_approval(),
        "phase": engine.phase_name(),
        "pause_reason": engine.pause_reason(),
        "created_at": rfc3339(doc.created_at),
        "started_at": time(doc.started_at),
        "completed_at": time(doc.completed_at),
        "config": doc.config,
    })
}

/// An audit entry.
pub fn audit(a: &AuditRecord) -> Value {
    json!({
        "at": rfc3339(a.at),
        "actor": a.actor,
        "action": a.action,
        "device_id": a.device_id,
        "deployment_id": a.deployment_id,
        "outcome": a.outcome,
        "detail": a.detail,
    })
}
