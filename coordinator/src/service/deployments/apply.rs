//! Applying a step's drained engine actions: the deployment document follows the engine
//! (statuses, gate history, per-target directive state), directives are issued and signed with
//! generations the store allocates, quarantines reach the registry, and what changed is written
//! in one transaction: the input in the deployment's log, the targets and the document head it
//! touched, and a snapshot of the engine when one is due. Kept apart from the step itself so
//! the write set of one input is in one place.

use super::{Deployments, Env, ServiceError, head_json, json_err, track_json};
use crate::contract::EventKind;
use crate::service::MAX_GATES;
use crate::service::audit::AuditBatch;
use crate::service::model::GateRecord;
use floe_rollout::{Action, DeploymentStatus, DirectiveKind, Input, Millis, TargetStatus};
use serde_json::{Value, json};

impl Deployments {
    /// Applies drained engine actions to the document and writes what changed in one
    /// transaction. On an error the caller reloads the deployment from the store. Finished
    /// deployments leave memory afterwards.
    pub(super) fn apply(
        &mut self,
        env: &mut Env<'_>,
        id: &str,
        now: Millis,
        input: Input,
        actions: Vec<Action>,
    ) -> Result<(), ServiceError> {
        let snapshot_every = self.snapshot_every;
        let Some(active) = self.active.get_mut(id) else {
            return Ok(());
        };
        let doc = &mut active.doc;
        let plan_ids = &active.engine.plan().ids;
        let mut audit = AuditBatch::default();
        let mut quarantine = Vec::new();
        // Directives need store generations, so they are built and signed inside the
        // transaction below; a signing failure there rolls the whole step back.
        let mut directives: Vec<(usize, DirectiveKind)> = Vec::new();
        // Events of this step, staged once its transaction committed.
        let mut events: Vec<(EventKind, Option<String>, Value)> = Vec::new();
        let mut progressed = false;
        for action in actions {
            match action {
                Action::Directive { device, kind, .. } => {
                    // A device handed its next step (stage, switch, commit) is progress too,
                    // though its target status stays `deploying`.
                    progressed = true;
                    directives.push((device as usize, kind));
                }
                Action::Target { device, status } => {
                    let dev = plan_ids.get(device as usize).map(String::as_str);
                    if let Some(from) = active.announced.get_mut(device as usize)
                        && *from != status
                    {
                        events.push((
                            EventKind::TargetTransition,
                            dev.map(str::to_string),
                            json!({
                                "from": from.as_str(),
                                "to": status.as_str(),
                                "stage": active.engine.target_stage(device),
                            }),
                        ));
                        *from = status;
                        progressed = true;
                    }
                    // Every device's outcome is audited, its success included (003: "every
                    // deployment action … with timestamp, device ID, actor, and outcome").
                    if matches!(
                        status,
                        TargetStatus::Failed
                            | TargetStatus::Quarantined
                            | TargetStatus::Skipped
                            | TargetStatus::Success
                            | TargetStatus::RolledBack
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
                    active.head_dirty = true;
                    events.push((
                        EventKind::GateVerdict,
                        None,
                        json!({
                            "stage": g.stage,
                            "gate": g.gate.as_str(),
                            "verdict": g.verdict.as_str(),
                            "reason": g.reason,
                            "checks": g.checks.iter().map(|c| json!({
                                "name": c.name,
                                "value": c.value,
                                "limit": c.limit,
                                "pass": c.pass,
                                "outcome": c.outcome,
                            })).collect::<Vec<_>>(),
                            "summary": g.summary,
                        }),
                    ));
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
                        verdict: g.verdict.into(),
                        reason: g.reason,
                        outcomes: g.checks.iter().map(|c| c.outcome).collect(),
                        checks: g
                            .checks
                            .into_iter()
                            .map(|c| (c.name, c.value, c.limit, c.pass))
                            .collect(),
                        summary: g.summary,
                        at: now,
                    });
                    if doc.gates.len() > MAX_GATES {
                        let excess = doc.gates.len() - MAX_GATES;
                        doc.gates.drain(..excess);
                    }
                }
                Action::Deployment { status, reason } => {
                    active.head_dirty = true;
                    events.push((
                        EventKind::DeploymentStatus,
                        None,
                        json!({"status": status.as_str(), "reason": reason}),
                    ));
                    // Starting and resuming restart the stall clock too.
                    progressed = true;
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
        let stage = active.engine.current_stage();
        if stage != active.stage {
            active.stage = stage;
            progressed = true;
            let spec = active.engine.plan().stages.get(stage as usize);
            events.push((
                EventKind::DeploymentStage,
                None,
                json!({
                    "stage": stage,
                    "name": spec.map(|s| s.name.as_str()),
                    "kind": spec.map(|s| s.kind),
                }),
            ));
        }
        let mut new_desired = Vec::with_capacity(directives.len());
        let devices_changed = env.registry.to_quarantine(&quarantine);
        let status = active.engine.status();
        if doc.status != status.as_str() {
            doc.status = status.as_str().to_string();
            active.head_dirty = true;
        }
        let seq = active.seq + 1;
        // A snapshot costs in proportion to the deployment's size, so it is taken at most once
        // per two inputs per target: its cost per input stays constant at any fleet size, and
        // a restart replays at most that many inputs.
        let interval = snapshot_every.max(2 * doc.targets.len() as u64);
        let snapshot = status.is_terminal() || seq - active.snapshot_seq >= interval;
        let input_json = serde_json::to_string(&input).map_err(json_err("engine input"))?;
        let engine_json = if snapshot {
            Some(serde_json::to_string(&active.engine).map_err(json_err("engine state"))?)
        } else {
            None
        };
        // One transaction: the input, generations, signed desired directives, the targets and
        // head that changed, a snapshot when due, device flags and audit lines land together
        // or not at all.
        env.store.atomically(|s| -> Result<(), ServiceError> {
            for (device, kind) in &directives {
                let Some(track) = doc.targets.get(*device) else {
                    continue;
                };
                let generation = s.next_generation(&track.device_id)?;
                let record = env
                    .directives
                    .issue(s, doc, track, *kind, generation, now)?;
                s.put_desired(&record)?;
                // Every directive sent is audited: one line, its kind and generation.
                s.audit(&crate::service::audit::line(
                    now,
                    "engine",
                    "directive",
                    (Some(&track.device_id), Some(id)),
                    kind.as_str(),
                    format!("generation {generation}"),
                ))?;
                new_desired.push(record);
                if let Some(track) = doc.targets.get_mut(*device) {
                    track.generation = generation;
                    track.kind = Some(kind.as_str().to_string());
                    track.fed.clear();
                    track.detail.clear();
                    active.dirty.insert(*device as u32);
                }
            }
            s.append_input(id, seq, now, &input_json)?;
            let tracks = active
                .dirty
                .iter()
                .filter_map(|&i| doc.targets.get(i as usize).map(|t| (i, t)))
                .map(|(i, t)| track_json(t).map(|j| (i, j)))
                .collect::<Result<Vec<_>, _>>()?;
            s.put_targets(id, tracks.iter().map(|(i, j)| (*i, j.as_str())))?;
            if active.head_dirty || snapshot {
                let head = head_json(doc)?;
                s.put_deployment_head(id, &doc.status, &head)?;
            }
            if let Some(engine) = &engine_json {
                s.put_snapshot(id, seq, engine)?;
            }
            for d in &devices_changed {
                s.put_device(d)?;
            }
            audit.write(s)?;
            Ok(())
        })?;
        if progressed {
            active.last_progress = now;
            active.stuck_announced = false;
        }
        for (kind, device, data) in events {
            env.events
                .emit(kind, now, Some(id), device.as_deref(), data);
        }
        active.seq = seq;
        active.dirty.clear();
        active.head_dirty = false;
        if snapshot {
            active.snapshot_seq = seq;
        }
        for d in new_desired {
            env.directives.install(d);
        }
        for d in devices_changed {
            env.registry.install(d);
        }
        if status.is_terminal() {
            self.active.remove(id);
            tracing::info!(deployment = %id, status = %status, "deployment finished");
        }
        Ok(())
    }
}
