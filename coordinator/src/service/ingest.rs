//! Ingest: what a device's report means to the engines. Pure translations from the wire's
//! report (proto) into engine inputs and registry records, kept apart from the parts that own
//! state so that batching reports later changes only who calls them.

use super::model::TargetTrack;
use crate::store::{HealthRecord, SlotRecord};
use floe_rollout::{DeviceEvent, HealthReport, HealthStatus, SystemFigures};
use floe_wire::proto::{self, Applied, HealthLevel, Progress, SlotInfo};

/// The engine events a device's report of `(action, progress)` stands for, in order.
pub fn events_for(action: proto::Action, progress: Progress) -> Vec<DeviceEvent> {
    match (action, progress) {
        (_, Progress::Failed) => vec![DeviceEvent::Failed],
        (_, Progress::RolledBack) => vec![DeviceEvent::RolledBack],
        (proto::Action::Stage, Progress::Done) => vec![DeviceEvent::Staged],
        (proto::Action::Switch, Progress::Working) => vec![DeviceEvent::Switched],
        (proto::Action::Switch, Progress::Done) => {
            vec![DeviceEvent::Switched, DeviceEvent::Healthy]
        }
        (proto::Action::Rollback, Progress::Done) => vec![DeviceEvent::RolledBack],
        _ => Vec::new(),
    }
}

/// The engine's health input for a device's summary (ppm → fraction, µs → ms, KiB → MB).
pub fn health_input(h: &proto::HealthSummary) -> HealthReport {
    HealthReport {
        status: match h.status {
            HealthLevel::Healthy => HealthStatus::Healthy,
            HealthLevel::Degraded => HealthStatus::Degraded,
            HealthLevel::Unhealthy => HealthStatus::Unhealthy,
        },
        error_rate: h.error_rate_ppm as f32 / 1e6,
        p95_ms: h.p95_us as f32 / 1000.0,
        memory_mb: h.memory_kib as f32 / 1024.0,
        restarts: h.restarts,
        system: h.system.as_ref().map(system_figures).unwrap_or_default(),
    }
}

/// The engine's system figures for a report's integers (permille → percent, millidegrees →
/// degrees); what the device did not send stays unknown.
pub(super) fn system_figures(s: &proto::SystemSummary) -> SystemFigures {
    let percent = |p: Option<u16>| p.map(|v| f32::from(v) / 10.0);
    SystemFigures {
        cpu_percent: percent(s.cpu_permille),
        memory_used_percent: percent(s.memory_permille),
        temperature_c: s.temperature_mc.map(|t| t as f32 / 1000.0),
        throttled: s.throttled,
        disk_free_mb: s.disk_free_mb.map(|mb| mb as f32),
        disk_used_percent: percent(s.disk_used_permille),
        functional_ok: s.functional_ok,
    }
}

/// The registry's record of a device's health summary, in the engine's units.
pub(super) fn health_record(h: &proto::HealthSummary) -> HealthRecord {
    let hr = health_input(h);
    HealthRecord {
        status: h.status.into(),
        error_rate: f64::from(hr.error_rate),
        p95_ms: f64::from(hr.p95_ms),
        memory_mb: f64::from(hr.memory_mb),
        restarts: h.restarts,
        flow_running: h.flow_running,
        system: hr.system,
    }
}

/// The registry's record of a reported slot.
pub(super) fn slot_record(s: &SlotInfo) -> SlotRecord {
    SlotRecord {
        name: s.name.clone(),
        release: s.release,
        version: s.version.clone(),
        slot: s.slot.clone(),
    }
}

/// The events a device's applied report feeds to one deployment's track: none unless it
/// answers the track's current directive, and each event at most once per directive (the
/// track remembers what was fed). A failure's detail is kept on the track.
pub(super) fn applied_events(track: &mut TargetTrack, applied: &Applied) -> Vec<DeviceEvent> {
    if track.generation != applied.generation || track.kind.is_none() {
        return Vec::new();
    }
    if !applied.detail.is_empty() {
        track.detail = applied.detail.clone();
    }
    let events: Vec<DeviceEvent> = events_for(applied.action, applied.progress)
        .into_iter()
        .filter(|e| !track.fed.contains(e))
        .collect();
    track.fed.extend(events.iter().copied());
    events
}
