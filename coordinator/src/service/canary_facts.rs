//! The registry's canary facts (001 "Canary Selection Algorithm", step 3 and step 1's
//! "best monitoring coverage"): the operator sets single point of failure, known hardware
//! issues and monitoring coverage through `PATCH /devices/{id}`; the coordinator records each
//! online → offline transition it sees itself (bounded: the newest
//! [`MAX_OFFLINE_HISTORY`], none older than 24 h before the newest); and at deployment
//! creation every target's facts become its plan flags and monitoring.

use super::model::DevicePatch;
use super::{ServiceError, hygiene, validation};
use crate::store::{CanaryFacts, DeviceRecord, MAX_OFFLINE_HISTORY};
use floe_rollout::{HOUR, Millis, TargetFlags, TargetSpec};

/// How far back connectivity problems keep a device out of the canary (001: "connectivity
/// problems in the last 24 hours").
pub(super) const CONNECTIVITY_WINDOW: Millis = 24 * HOUR;

/// Longest `known_hardware_issues` text.
pub(super) const MAX_KNOWN_ISSUES_BYTES: usize = 500;

/// Records that the device went offline at `now`: appended, then the history is cut to the
/// last 24 h and to its newest [`MAX_OFFLINE_HISTORY`] entries.
pub(super) fn record_offline(facts: &mut CanaryFacts, now: Millis) {
    facts.offline_at.push(now);
    let from = now.saturating_sub(CONNECTIVITY_WINDOW);
    facts.offline_at.retain(|t| *t >= from);
    let extra = facts.offline_at.len().saturating_sub(MAX_OFFLINE_HISTORY);
    facts.offline_at.drain(..extra);
}

/// Whether the coordinator saw connectivity problems in the 24 h before `now`: the device is
/// offline now, or went offline within the window.
pub(super) fn connectivity_problems(d: &DeviceRecord, now: Millis) -> bool {
    let from = now.saturating_sub(CONNECTIVITY_WINDOW);
    d.offline || d.canary.offline_at.iter().any(|t| *t >= from)
}

/// A device as a deployment target at `now`: every exclusion flag and its monitoring.
pub(super) fn target_spec(d: &DeviceRecord, now: Millis) -> TargetSpec {
    TargetSpec {
        id: d.id.clone(),
        device_type: d.device_type.clone(),
        region: d.region.clone(),
        flags: TargetFlags {
            maintenance: d.maintenance,
            quarantined: d.quarantined,
            known_issues: !d.canary.known_hardware_issues.trim().is_empty(),
            flaky_24h: connectivity_problems(d, now),
            single_point_of_failure: d.canary.single_point_of_failure,
        },
        monitoring: d.canary.monitoring.unwrap_or(0),
    }
}

/// Applies a patch's canary facts to `dev`, refusing bad values with the field named.
pub(super) fn apply_patch(dev: &mut DeviceRecord, patch: &DevicePatch) -> Result<(), ServiceError> {
    if let Some(m) = patch.monitoring {
        if m > 100 {
            return Err(validation(
                "monitoring",
                format!("{m} is not a coverage between 0 and 100"),
            ));
        }
        dev.canary.monitoring = Some(m);
    }
    if let Some(text) = &patch.known_hardware_issues {
        hygiene::text("known_hardware_issues", text, MAX_KNOWN_ISSUES_BYTES)?;
        dev.canary.known_hardware_issues = text.trim().to_string();
    }
    if let Some(spof) = patch.single_point_of_failure {
        dev.canary.single_point_of_failure = spof;
    }
    Ok(())
}

/// The canary facts for the audit line of a patch.
pub(super) fn describe(facts: &CanaryFacts) -> String {
    format!(
        "single_point_of_failure={} known_hardware_issues={:?} monitoring={}",
        facts.single_point_of_failure,
        facts.known_hardware_issues,
        facts
            .monitoring
            .map_or_else(|| "unset".to_string(), |m| m.to_string())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offline_history_is_bounded_in_count_and_time() {
        let mut f = CanaryFacts::default();
        for i in 0..40u64 {
            record_offline(&mut f, 1_000_000 + i * 1000);
        }
        assert_eq!(f.offline_at.len(), MAX_OFFLINE_HISTORY);
        assert_eq!(f.offline_at.last(), Some(&(1_000_000 + 39_000)));
        record_offline(&mut f, 1_000_000 + 39_000 + CONNECTIVITY_WINDOW + 1);
        assert_eq!(f.offline_at.len(), 1, "older than 24 h: dropped");
    }
}
