//! The device's report about itself: what it runs, what it holds in each slot, how far the
//! applied directive got and a summary of its health, for the device identity to sign.
//!
//! The report is the only thing the coordinator learns from: it re-posts a directive until a
//! report says it was applied, so every field here is read from the persisted state (the
//! state database, the slots' records) rather than from what the agent believes in memory.

use ed25519_dalek::SigningKey;

use crate::agent::runner::FlowRunner;
use crate::agent::{Agent, AgentError};
use crate::health::{self, Status};
use crate::slots::SlotName;
use floe_wire::proto::report::{MAX_LABELS, REPORT_SCHEMA};
use floe_wire::proto::{DeviceReport, Facts, Fixed, HealthLevel, HealthSummary, Label, SlotInfo};

impl<R: FlowRunner> Agent<R>
where
    R::Flow: std::fmt::Debug,
{
    fn slot_info(&self, slot: Option<SlotName>) -> Result<Option<SlotInfo>, AgentError> {
        let Some(slot) = slot else { return Ok(None) };
        Ok(self.state.slot_release(slot)?.map(|r| SlotInfo {
            slot: slot.as_str().to_string(),
            name: r.name,
            release: r.release,
            version: r.version,
        }))
    }

    /// The device's report about itself with sequence number `seq`, for `key` (the device
    /// identity) to sign. Slots are described when they were filled from a signed manifest.
    pub fn device_report(&self, seq: u64, key: &SigningKey) -> Result<DeviceReport, AgentError> {
        let active = self.slots.active().ok().flatten();
        let standby = active.or(self.lifecycle.last_good).map(SlotName::other);
        let labels = self
            .cfg
            .labels
            .iter()
            .take(MAX_LABELS)
            .map(|(k, v)| Label {
                key: k.clone(),
                value: v.clone(),
            })
            .collect();
        let status = match self.report.status {
            Status::Healthy => HealthLevel::Healthy,
            Status::Degraded => HealthLevel::Degraded,
            Status::Unhealthy => HealthLevel::Unhealthy,
        };
        let ppm = self
            .assessment
            .worst_error_rate
            .as_ref()
            .map_or(0, |(_, rate)| (rate * 1_000_000.0).clamp(0.0, 1e6) as u32);
        let p95_us = self
            .assessment
            .p95
            .map_or(0, |d| u32::try_from(d.as_micros()).unwrap_or(u32::MAX));
        // Since the last switch: the flow's node restarts, and floed's own restarts while the
        // switched slot is on trial (each one restarted the flow too).
        let restarts = self
            .assessment
            .restarts_since_switch
            .saturating_add(self.lifecycle.trial_boots.len() as u64);
        let memory_kib =
            health::self_rss_bytes().map_or(0, |b| u32::try_from(b / 1024).unwrap_or(u32::MAX));
        Ok(DeviceReport {
            schema: REPORT_SCHEMA,
            device_id: self.device.clone(),
            public_key: Fixed(key.verifying_key().to_bytes()),
            seq,
            facts: Facts {
                device_type: self.cfg.device_type.clone(),
                arch: self.cfg.arch.clone(),
                region: self.cfg.region.clone().unwrap_or_default(),
                labels,
                runtime_version: env!("CARGO_PKG_VERSION").to_string(),
            },
            enroll_token: self.cfg.link.enroll_token.clone(),
            active: self.slot_info(active)?,
            standby: self.slot_info(standby)?,
            last_known_good: self.slot_info(self.lifecycle.last_good)?,
            on_trial: self.trial.is_some(),
            applied: self.applied()?,
            health: Some(HealthSummary {
                status,
                flow_running: self.assessment.latest.running,
                error_rate_ppm: ppm,
                p95_us,
                memory_kib,
                restarts: u32::try_from(restarts).unwrap_or(u32::MAX),
                system: health::system_summary(&self.system, &self.functional),
            }),
        })
    }
}
