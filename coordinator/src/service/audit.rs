//! The audit part: how lines are queued during a change and written in its transaction, the
//! line every REST-initiated change leaves, and the throttle that keeps a stream of forged
//! reports from growing the append-only log without bound.

use super::ServiceError;
use crate::store::{AuditFilter, AuditRecord, Store, StoreError};
use floe_rollout::Millis;
use std::collections::HashMap;

/// Refused reports of one device are audited at most this often.
const REFUSAL_AUDIT_EVERY: Millis = 60_000;

/// Audit lines queued during a step, written in its transaction.
#[derive(Debug, Default)]
pub(super) struct AuditBatch(Vec<AuditRecord>);

impl AuditBatch {
    /// Queues one line.
    pub(super) fn push(
        &mut self,
        at: Millis,
        actor: &str,
        action: &str,
        (device, deployment): (Option<&str>, Option<&str>),
        outcome: &str,
        detail: impl Into<String>,
    ) {
        self.0.push(line(
            at,
            actor,
            action,
            (device, deployment),
            outcome,
            detail,
        ));
    }

    /// Writes every queued line (inside the caller's transaction).
    pub(super) fn write(&self, s: &Store) -> Result<(), StoreError> {
        for a in &self.0 {
            s.audit(a)?;
        }
        Ok(())
    }
}

/// One audit line.
pub(super) fn line(
    at: Millis,
    actor: &str,
    action: &str,
    (device, deployment): (Option<&str>, Option<&str>),
    outcome: &str,
    detail: impl Into<String>,
) -> AuditRecord {
    AuditRecord {
        at,
        actor: actor.into(),
        action: action.into(),
        device_id: device.map(str::to_string),
        deployment_id: deployment.map(str::to_string),
        outcome: outcome.into(),
        detail: detail.into(),
    }
}

/// The line of a change the REST layer asked for, by `caller` (`Store::caller`: the API
/// token's `token:<name>`, or `api` for a change made in-process).
pub(super) fn api_audit(
    caller: &str,
    at: Millis,
    action: &str,
    device: Option<&str>,
    outcome: &str,
    detail: String,
) -> AuditRecord {
    line(at, caller, action, (device, None), outcome, detail)
}

/// The audit part of the core: reads the log and throttles refusal lines.
#[derive(Debug, Default)]
pub(super) struct Audit {
    /// When a refused report of a registered device was last audited.
    refusals: HashMap<String, Millis>,
}

impl Audit {
    /// Records that a registered device's report was refused: one line per device per
    /// minute (the map holds registered ids only, so it is bounded by the registry).
    pub(super) fn refused(
        &mut self,
        store: &Store,
        device: &str,
        detail: &str,
        now: Millis,
    ) -> Result<(), ServiceError> {
        let last = self.refusals.get(device).copied();
        if last.is_some_and(|t| now.saturating_sub(t) < REFUSAL_AUDIT_EVERY) {
            return Ok(());
        }
        self.refusals.insert(device.to_string(), now);
        store.audit(&line(
            now,
            "device",
            "report",
            (Some(device), None),
            "refused",
            detail,
        ))?;
        Ok(())
    }

    /// `GET /audit`.
    pub(super) fn entries(
        &self,
        store: &Store,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditRecord>, ServiceError> {
        Ok(store.audit_entries(filter)?)
    }
}
