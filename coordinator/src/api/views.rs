//! The contract's response types built from the service's records. These run on the service
//! actor (they read the engines) and hand back typed values; the handlers serialise them.

use crate::contract::{
    self, AuditEntry, DeploymentArtifact, Device, DeviceHealth, Flow, FlowArtifact, GateCheck,
    Slot, Stage, Target, TargetCounts,
};
use crate::service::DeploymentDoc;
use crate::store::{ArtifactInfo, AuditRecord, DeviceRecord, FlowRecord, SlotRecord, rfc3339};
use floe_rollout::{Rollout, TargetStatus};

/// Most device ids listed per stage in a deployment object (the rest are counted).
pub const MAX_STAGE_DEVICES: usize = 1000;

/// The targets of a deployment from plan index `from`, at most `limit`, and whether more
/// follow. O(limit): each target's status and stage are the engine's, read by index.
pub fn targets(
    doc: &DeploymentDoc,
    engine: &Rollout,
    from: usize,
    limit: usize,
) -> (Vec<Target>, bool) {
    let targets = doc
        .targets
        .iter()
        .enumerate()
        .skip(from)
        .take(limit)
        .map(|(i, t)| {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            Target {
                device_id: t.device_id.clone(),
                status: engine.target_status(i).unwrap_or(TargetStatus::Pending),
                stage: engine.target_stage(i).unwrap_or(0),
                generation: t.generation,
                detail: t.detail.clone(),
            }
        })
        .collect();
    (targets, from.saturating_add(limit) < doc.targets.len())
}

fn time(ms: Option<u64>) -> Option<String> {
    ms.map(rfc3339)
}

/// A flow object.
pub fn flow(f: &FlowRecord, artifact: Option<&ArtifactInfo>) -> Flow {
    Flow {
        id: f.id.clone(),
        name: f.name.clone(),
        description: f.description.clone(),
        tags: f.tags.clone(),
        state: f.state,
        version: f.version,
        lineage: f.lineage.clone(),
        parent_id: f.parent_id.clone(),
        definition: f.definition.clone(),
        artifact: artifact.map(|a| FlowArtifact {
            name: a.name.clone(),
            release: a.release,
            version: a.version.clone(),
            manifest_sha256: a.manifest_sha256.clone(),
            size: a.size,
        }),
        created_at: rfc3339(f.created_at),
        updated_at: rfc3339(f.updated_at),
        published_at: time(f.published_at),
        archived_at: time(f.archived_at),
    }
}

fn slot(s: &Option<SlotRecord>) -> Option<Slot> {
    s.as_ref().map(|s| Slot {
        name: s.name.clone(),
        release: s.release,
        version: s.version.clone(),
        slot: s.slot.clone(),
    })
}

/// A device object.
pub fn device(d: &DeviceRecord, online: bool, generation: u64) -> Device {
    Device {
        id: d.id.clone(),
        device_type: d.device_type.clone(),
        arch: d.arch.clone(),
        region: d.region.clone(),
        labels: d.labels.clone(),
        public_key: d.public_key.clone(),
        runtime_version: d.runtime_version.clone(),
        installed: slot(&d.installed),
        standby: slot(&d.standby),
        last_known_good: slot(&d.last_known_good),
        on_trial: d.on_trial,
        health: d.health.as_ref().map(|h| DeviceHealth {
            status: h.status,
            error_rate: h.error_rate,
            p95_ms: h.p95_ms,
            memory_mb: h.memory_mb,
            restarts: h.restarts,
            flow_running: h.flow_running,
            system: h.system,
        }),
        applied: d.applied.as_ref().map(|a| contract::AppliedDirective {
            generation: a.generation,
            action: a.action.clone(),
            progress: a.progress.clone(),
            detail: a.detail.clone(),
        }),
        online,
        last_seen: time(d.last_seen),
        generation,
        maintenance: d.maintenance,
        quarantined: d.quarantined,
        enrolled_at: time(d.enrolled_at),
        single_point_of_failure: d.canary.single_point_of_failure,
        known_hardware_issues: d.canary.known_hardware_issues.clone(),
        monitoring: d.canary.monitoring,
        offline_history: d.canary.offline_at.iter().map(|t| rfc3339(*t)).collect(),
    }
}

/// A deployment object: its targets counted by status, not listed (they are paged by
/// `GET /deployments/{id}/targets`).
pub fn deployment(doc: &DeploymentDoc, engine: &Rollout) -> contract::Deployment {
    let plan = engine.plan();
    // One pass over the targets counts them overall and per stage.
    let mut c = TargetCounts::default();
    let mut per_stage = vec![TargetCounts::default(); plan.stages.len()];
    for i in 0..u32::try_from(plan.ids.len()).unwrap_or(u32::MAX) {
        let status = engine.target_status(i).unwrap_or(TargetStatus::Pending);
        c.add(status);
        if let Some(s) = engine
            .target_stage(i)
            .and_then(|s| per_stage.get_mut(s as usize))
        {
            s.add(status);
        }
    }
    let stages = plan
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| Stage {
            index: u32::try_from(i).unwrap_or(u32::MAX),
            name: s.name.clone(),
            kind: s.kind,
            size: s.len(),
            counts: per_stage.get(i).copied().unwrap_or_default(),
            devices: (s.start..s.end)
                .take(MAX_STAGE_DEVICES)
                .filter_map(|pos| plan.order.get(pos as usize))
                .filter_map(|d| plan.ids.get(*d as usize).cloned())
                .collect(),
        })
        .collect();
    let gates = doc
        .gates
        .iter()
        .map(|g| contract::Gate {
            stage: g.stage,
            gate: g.gate.clone(),
            verdict: g.verdict,
            reason: g.reason.clone(),
            checks: g
                .checks
                .iter()
                .enumerate()
                .map(|(i, (name, value, limit, pass))| GateCheck {
                    name: name.clone(),
                    value: *value,
                    limit: *limit,
                    pass: *pass,
                    outcome: g.outcomes.get(i).copied().flatten(),
                })
                .collect(),
            summary: g.summary.clone(),
            at: rfc3339(g.at),
        })
        .collect();
    let status_reason = if doc.status_reason.is_empty() {
        engine.status_reason().to_string()
    } else {
        doc.status_reason.clone()
    };
    contract::Deployment {
        id: doc.id.clone(),
        flow_id: doc.flow_id.clone(),
        artifact: DeploymentArtifact {
            name: doc.artifact.name.clone(),
            release: doc.artifact.release,
            version: doc.artifact.version.clone(),
            manifest_sha256: doc.artifact.manifest_sha256.clone(),
        },
        strategy: doc.strategy.clone(),
        status: engine.status(),
        status_reason,
        total_targets: plan.ids.len() as u64,
        completed_targets: c.success,
        failed_targets: c.failed + c.quarantined,
        offline_targets: c.offline,
        rolled_back_targets: c.rolled_back,
        skipped_targets: c.skipped,
        pending_targets: c.pending + c.deploying,
        target_counts: c,
        current_stage: engine.current_stage(),
        stages,
        gates,
        awaiting_approval: engine.awaiting_approval(),
        phase: crate::service::phase_name(doc, engine),
        pause_reason: engine.pause_reason().map(str::to_string),
        created_at: rfc3339(doc.created_at),
        started_at: time(doc.started_at),
        completed_at: time(doc.completed_at),
        config: doc.config.clone(),
        baselines: engine.baselines().cloned(),
        baseline_facts: engine.baselines().map_or_else(Vec::new, |b| {
            b.statements(plan.config.gates.no_baseline == floe_rollout::NoBaseline::Absolute)
        }),
        plan: contract::DeploymentPlan::of(plan, MAX_STAGE_DEVICES),
        preflight: doc.preflight.clone(),
        rollback_verification: None,
    }
}

/// A deployment's report and, for its Markdown form, its baselines section ("" when none
/// were captured).
pub fn report_with_baselines(engine: &Rollout) -> (floe_rollout::Report, String) {
    let absolute = engine.plan().config.gates.no_baseline == floe_rollout::NoBaseline::Absolute;
    (
        floe_rollout::Report::from_rollout(engine),
        engine
            .baselines()
            .map_or_else(String::new, |b| b.to_markdown(absolute)),
    )
}

/// An audit entry.
pub fn audit(a: &AuditRecord) -> AuditEntry {
    AuditEntry {
        at: rfc3339(a.at),
        actor: a.actor.clone(),
        action: a.action.clone(),
        device_id: a.device_id.clone(),
        deployment_id: a.deployment_id.clone(),
        outcome: a.outcome.clone(),
        detail: a.detail.clone(),
    }
}
