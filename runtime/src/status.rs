//! What `floed status` and the daemon's `GET /status` show, read from disk.
//!
//! The view is built from the state database opened read-only, the slots' files and the
//! identity file, never from the running agent. That is why it lives outside `agent`:
//! the control socket can answer while the main loop is busy inside a smoke test or an
//! install (SQLite in WAL mode lets a reader in while the daemon writes), `floed status` can
//! answer with no daemon at all, and neither `http` nor the agent has to know the
//! other to share it.

use std::path::Path;

use serde::Serialize;

use crate::health::HealthReport;
use crate::slots::{SlotName, Slots};
use crate::state::{State, StateError};
use floe_wire::identity;

/// What `floed status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct StatusView {
    /// The device id.
    pub device: String,
    /// Where `active` points.
    pub active: Option<SlotName>,
    /// The lifecycle phase.
    pub phase: &'static str,
    /// The last known good slot.
    pub last_good: Option<SlotName>,
    /// The slot on trial or being installed.
    pub target: Option<SlotName>,
    /// Restarts counted by the crash-loop guard during the current trial.
    pub trial_restarts: usize,
    /// Both slots.
    pub slots: Vec<SlotView>,
    /// The latest health report, when the daemon runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthReport>,
    /// The result of `PRAGMA integrity_check` on the state database (`ok` when sound).
    pub database: String,
    /// The newest audit entries.
    pub audit: Vec<AuditView>,
}

/// One slot in the status.
#[derive(Debug, Clone, Serialize)]
pub struct SlotView {
    /// The slot.
    pub slot: SlotName,
    /// The version recorded in the database.
    pub version: Option<String>,
    /// Whether the files match their hashes now (`ok`, or the reason they do not).
    pub verified: String,
}

/// One audit entry in the status.
#[derive(Debug, Clone, Serialize)]
pub struct AuditView {
    /// Milliseconds since the epoch.
    pub at_ms: i64,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// How it ended.
    pub outcome: String,
    /// Detail.
    pub detail: String,
}

/// Reads the status from disk without a running daemon (the database is opened read-only).
pub fn read_status(data_dir: &Path, audit_limit: usize) -> Result<StatusView, StateError> {
    read_status_with_health(data_dir, None, audit_limit)
}

/// [`read_status`] with a health report to show (the running daemon's latest), for the
/// daemon's own `GET /status`: it reads the state read-only, so it never waits for the main
/// loop.
pub fn read_status_with_health(
    data_dir: &Path,
    health: Option<HealthReport>,
    audit_limit: usize,
) -> Result<StatusView, StateError> {
    let state = State::open_read_only(data_dir)?;
    let slots = Slots::open_existing(data_dir);
    status_from(&state, &slots, device_of(data_dir), health, audit_limit)
}

fn device_of(data_dir: &Path) -> String {
    std::fs::read(data_dir.join(identity::IDENTITY_FILE))
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
        .map(|seed| identity::device_id(&ed25519_dalek::SigningKey::from_bytes(&seed)))
        .unwrap_or_else(|| "unknown".to_string())
}

fn status_from(
    state: &State,
    slots: &Slots,
    device: String,
    health: Option<HealthReport>,
    audit_limit: usize,
) -> Result<StatusView, StateError> {
    let l = state.lifecycle()?;
    let mut views = Vec::new();
    for rec in state.slots()? {
        let verified = match slots.verify(rec.slot) {
            Ok(_) => "ok".to_string(),
            Err(e) => e.to_string(),
        };
        views.push(SlotView {
            slot: rec.slot,
            version: rec.version,
            verified,
        });
    }
    let audit = state
        .audit_log(audit_limit)?
        .into_iter()
        .map(|a| AuditView {
            at_ms: a.at_ms,
            actor: a.actor,
            action: a.action,
            outcome: a.outcome,
            detail: a.detail,
        })
        .collect();
    Ok(StatusView {
        device,
        active: slots.active().ok().flatten(),
        phase: l.phase.as_str(),
        last_good: l.last_good,
        target: l.target,
        trial_restarts: l.trial_boots.len(),
        slots: views,
        health,
        database: state.integrity_check()?,
        audit,
    })
}
