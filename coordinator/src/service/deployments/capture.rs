//! Baselines captured again when a deployment starts (issue 15): the gates judge against the
//! fleet as it was right before the first directive, not as it was at creation. The engine
//! takes the new set while still pending, and its state is written as a snapshot in the start's
//! transaction, so a restart replays the start against the same baselines.

use super::{Deployments, Env, ServiceError, json_err, rollout_error};
use crate::service::audit::line;
use floe_rollout::{Command, DeploymentStatus, Millis};
use std::collections::BTreeSet;

impl Deployments {
    /// On `start` of a pending deployment: captures its baselines from the rollups, hands
    /// them to the engine, snapshots the engine and audits the groups without a baseline.
    /// Runs inside the caller's transaction.
    pub(super) fn recapture_baselines(
        &mut self,
        env: &mut Env<'_>,
        id: &str,
        command: Command,
        now: Millis,
    ) -> Result<(), ServiceError> {
        let Some(a) = self.active.get_mut(id) else {
            return Ok(());
        };
        if command != Command::Start || a.engine.status() != DeploymentStatus::Pending {
            return Ok(());
        }
        let plan = a.engine.plan();
        let groups: BTreeSet<(String, String)> = plan
            .device_type
            .iter()
            .zip(&plan.device_region)
            .filter_map(|(t, r)| {
                Some((
                    plan.types.get(usize::from(*t))?.clone(),
                    plan.regions.get(usize::from(*r))?.clone(),
                ))
            })
            .collect();
        let gates = plan.config.gates.clone();
        let set = crate::service::baselines::capture(env.store, env.rollups, &groups, &gates, now)?;
        let facts = set.statements(gates.no_baseline == floe_rollout::NoBaseline::Absolute);
        let with = set.groups.iter().filter(|g| g.usable()).count();
        let total = set.groups.len();
        a.engine.set_baselines(set).map_err(rollout_error)?;
        let engine = serde_json::to_string(&a.engine).map_err(json_err("engine state"))?;
        env.store.put_snapshot(id, a.seq, &engine)?;
        a.snapshot_seq = a.seq;
        let mut detail = format!("{with} of {total} device groups have a baseline");
        if !facts.is_empty() {
            detail.push_str(": ");
            detail.push_str(&facts.join("; "));
        }
        env.store.audit(&line(
            now,
            env.store.caller(),
            "deployment.baselines",
            (None, Some(id)),
            "captured",
            detail,
        ))?;
        Ok(())
    }
}
