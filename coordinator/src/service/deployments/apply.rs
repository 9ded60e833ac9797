//! Applying a step's drained engine actions: the deployment document follows the engine
//! (statuses, gate history, per-target directive state), directives are issued and signed with
//! generations the store allocates, quarantines reach the registry, and all of it is written
//! in one transaction. Kept apart from the step itself so the write set of one input is in one
//! place (the next issue batches it).

use super::{Deployments, Env, ServiceError, json_err};
use crate::service::MAX_GATES;
use crate::service::audit::AuditBatch;
use crate::service::model::GateRecord;
use crate::store::DeploymentRow;
use floe_rollout::{Action, DeploymentStatus, DirectiveKind, Millis, TargetStatus};

impl Deployments {
    /// Applies drained engine actions to the document and writes everything in one
    /// transaction. Finished deployments leave memory afterwards.
    pub(super) fn apply(
        &mut self,
        env: &mut Env<'_>,
        id: &str,
        now: Millis,
        actions: Vec<Action>,
    ) -> Result<(), ServiceError> {
        let Some(active) = self.active.get(id) else {
            return Ok(());
        };
        let mut doc = active.doc.clone();
        let plan_ids = active.engine.plan().ids.clone();
        let mut audit = AuditBatch::default();
        let mut quarantine = Vec::new();
        // Directives need store generations, so they are built and signed inside the
        // transaction below; a signing failure there rolls the whole step back.
        let mut directives: Vec<(usize, DirectiveKind)> = Vec::new();
        for action in actions {
            match action {
                Action::Directive { device, kind, .. } => {
                    directives.push((device as usize, kind));
                }
                Action::Target { device, status } => {
                    let dev = plan_ids.get(device as usize).map(String::as_str);
                    if matches!(
                        status,
                        TargetStatus::Failed | TargetStatus::Quarantined | TargetStatus::Skipped
                    ) {
                        audit.push(
                            now,
                            "engine",
                            "target.status",
                            (dev, Some(id)),
                            status.as_str(),
                            format!("target is {}", status.as_str()),
                        );
                    }
                    if status == TargetStatus::Quarantined
                        && let Some(d) = dev
                    {
                        quarantine.push(d.to_string());
                    }
                }
                Action::Gate(g) => {
                    audit.push(
                        now,
                        "engine",
                        "gate",
                        (None, Some(id)),
                        g.verdict.as_str(),
                        format!("stage {} {}: {}", g.stage, g.gate.as_str(), g.reason),
                    );
                    doc.gates.push(GateRecord {
                        stage: g.stage,
                        gate: g.gate.as_str().to_string(),
                        verdict: g.verdict.as_str().to_string(),
                        reason: g.reason,
                        checks: g
                            .checks
                            .into_iter()
                            .map(|c| (c.name, c.value, c.limit, c.pass))
                            .collect(),
                        at: now,
                    });
                    if doc.gates.len() > MAX_GATES {
                        let excess = doc.gates.len() - MAX_GATES;
                        doc.gates.drain(..excess);
                    }
                }
                Action::Deployment { status, reason } => {
                    audit.push(
                        now,
                        "engine",
                        "deployment.status",
                        (None, Some(id)),
                        status.as_str(),
                        reason.clone(),
                    );
                    if status == DeploymentStatus::Running && doc.started_at.is_none() {
                        doc.started_at = Some(now);
                    }
                    if status.is_terminal() {
                        doc.completed_at = Some(now);
                    }
                    doc.status = status.as_str().to_string();
                    doc.status_reason = reason;
                }
                Action::ApprovalRequired { stage } => audit.push(
                    now,
                    "engine",
                    "approval.required",
                    (None, Some(id)),
                    "waiting",
                    format!("stage {stage} passed its gate and waits for approve"),
                ),
                Action::Audit { at, event } => {
                    audit.push(at, "engine", "rollout", (None, Some(id)), "ok", event)
                }
            }
        }
        let mut new_desired = Vec::with_capacity(directives.len());
        let devices_changed = env.registry.to_quarantine(&quarantine);
        let Some(active) = self.active.get(id) else {
            return Ok(());
        };
        let status = active.engine.status();
        doc.status = status.as_str().to_string();
        let engine_json =
            serde_json::to_string(&active.engine).map_err(json_err("engine state"))?;
        // One transaction: generations, signed desired directives, the document, the engine
        // state, device flags and audit lines land together or not at all.
        env.store.atomically(|s| -> Result<(), ServiceError> {
            for (device, kind) in &directives {
                let Some(track) = doc.targets.get(*device) else {
                    continue;
                };
                let generation = s.next_generation(&track.device_id)?;
                let record = env
                    .directives
                    .issue(s, &doc, track, *kind, generation, now)?;
                s.put_desired(&record)?;
                new_desired.push(record);
                if let Some(track) = doc.targets.get_mut(*device) {
                    track.generation = generation;
                    track.kind = Some(kind.as_str().to_string());
                    track.fed.clear();
                    track.detail.clear();
                }
            }
            let row = DeploymentRow {
                id: id.to_string(),
                flow_id: doc.flow_id.clone(),
                status: doc.status.clone(),
                created_at: doc.created_at,
                doc: serde_json::to_string(&doc).map_err(json_err("deployment"))?,
                engine: engine_json,
            };
            for d in &devices_changed {
                s.put_device(d)?;
            }
            audit.write(s)?;
            s.put_deployment(&row)?;
            Ok(())
        })?;
        for d in new_desired {
            env.directives.install(d);
        }
        for d in devices_changed {
            env.registry.install(d);
        }
        if status.is_terminal() {
            self.active.remove(id);
            tracing::info!(deployment = %id, status = %status, "deployment finished");
        } else if let Some(active) = self.active.get_mut(id) {
            active.doc = doc;
        }
        Ok(())
    }
}
