//! Stuck deployments: a running deployment that makes no progress (no target transition, no
//! directive issued, no stage or status change) for longer than its `config.stuck_after` is announced once with a
//! `deployment.stuck` event, and again only after its next progress and a new stall. Time is
//! the tick's `now`, so this is tested in virtual time.

use super::Deployments;
use crate::contract::EventKind;
use crate::service::events::EventSink;
use crate::service::strategy::DEFAULT_STUCK_AFTER;
use crate::store::rfc3339;
use floe_rollout::duration::format_duration;
use floe_rollout::{DeploymentStatus, Millis, parse_duration};
use serde_json::json;

/// A stored deployment's `stuck_after` (the default when it is missing or unreadable: one
/// stored before the field existed).
pub(super) fn parse_stuck_after(value: &str) -> Millis {
    parse_duration(value)
        .ok()
        .filter(|&ms| ms > 0)
        .unwrap_or(DEFAULT_STUCK_AFTER)
}

impl Deployments {
    /// Announces every running deployment that has made no progress for longer than its
    /// `stuck_after` and was not announced since its last progress.
    pub(super) fn check_stuck(&mut self, events: &mut EventSink, now: Millis) {
        for (id, a) in &mut self.active {
            if a.stuck_announced || a.engine.status() != DeploymentStatus::Running {
                continue;
            }
            let stalled = now.saturating_sub(a.last_progress);
            if stalled <= a.stuck_after {
                continue;
            }
            a.stuck_announced = true;
            tracing::warn!(deployment = %id, stalled_ms = stalled, "deployment makes no progress");
            events.emit(
                EventKind::DeploymentStuck,
                now,
                Some(id),
                None,
                json!({
                    "stuck_after": format_duration(a.stuck_after),
                    "since": rfc3339(a.last_progress),
                    "stage": a.engine.current_stage(),
                }),
            );
        }
    }
}
