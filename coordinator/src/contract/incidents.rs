//! Incident reports and rollback verification (`GET /deployments/{id}/incident`).
//!
//! An incident report exists for every deployment that ended failed or rolled back: its
//! timeline in absolute UTC times, the devices it affected (a bounded list plus counts), the
//! failure pattern (`floe_rollout::incident`), the health before, during and after, and the
//! verification that the rolled-back devices are healthy on their previous version again
//! (reference 001, "Rollback Execution Order").

pub use floe_rollout::incident::{FailurePattern, PatternFinding};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// One line of the timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TimelineEntry {
    /// RFC 3339 UTC.
    pub at: String,
    /// What happened (`deployment.create`, `gate`, `trigger`, `rollback.start`,
    /// `rollback.verify`, ...).
    pub what: String,
    /// A sentence.
    pub detail: String,
}

/// One affected device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AffectedDevice {
    /// Device id.
    pub id: String,
    /// Hardware type.
    pub device_type: String,
    /// Region.
    pub region: String,
    /// Its final target status (`failed`, `quarantined`, `rolled_back`, `skipped`, ...).
    pub status: String,
    /// What happened to it, as a sentence (with the device's last word when it failed).
    pub what_happened: String,
    /// Its rollback verification (`healthy`, `unhealthy`, `unverified_offline`, `pending`),
    /// when it was rolled back.
    pub verification: Option<String>,
}

/// Affected devices: counts over all targets and a bounded list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AffectedDevices {
    /// Targets of the deployment.
    pub targets: u64,
    /// Failed (staging failed, timed out, rollback failed).
    pub failed: u64,
    /// Rolled back on their own account and quarantined.
    pub quarantined: u64,
    /// Rolled back with their wave or the fleet.
    pub rolled_back: u64,
    /// Skipped while unreachable.
    pub skipped_unreachable: u64,
    /// Never started because the deployment stopped.
    pub not_started: u64,
    /// Kept the new version (committed before the stop).
    pub kept_new_version: u64,
    /// The affected devices (failed, quarantined, rolled back; the failed first), at most
    /// [`MAX_AFFECTED_LISTED`].
    pub devices: Vec<AffectedDevice>,
    /// Affected devices not listed.
    pub not_listed: u64,
}

/// Affected devices listed at most in a report.
pub const MAX_AFFECTED_LISTED: usize = 100;

/// One metric before (the deployment's captured baseline), during (the new version, at the
/// last gate) and after the rollback (the rolled-back devices' reports). `None`: unknown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MetricDelta {
    /// `error_rate` (percent), `p95_ms`, `memory_mb`, `cpu_percent`.
    pub metric: String,
    /// Baseline.
    pub before: Option<f64>,
    /// On the new version: the deployed devices' last reports on it (else the baseline moved
    /// by the engine's health delta at its last gate).
    pub during: Option<f64>,
    /// The rolled-back devices after the rollback.
    pub after: Option<f64>,
}

/// What one rolled-back device's verification found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeviceVerdict {
    /// No report after the rollback yet, deadline not passed.
    Pending,
    /// Reported healthy on its previous version after the rollback.
    Healthy,
    /// Runs its previous version and reported after the rollback, but "degraded" (working,
    /// below its health thresholds) until the deadline.
    Degraded,
    /// Reported after the rollback, but unhealthy (or not on its previous version) by the
    /// deadline.
    Unhealthy,
    /// No report after the rollback by the deadline (offline): not a failure.
    UnverifiedOffline,
}

impl DeviceVerdict {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceVerdict::Pending => "pending",
            DeviceVerdict::Healthy => "healthy",
            DeviceVerdict::Degraded => "degraded",
            DeviceVerdict::Unhealthy => "unhealthy",
            DeviceVerdict::UnverifiedOffline => "unverified_offline",
        }
    }
}

/// A device whose verification is not `healthy`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct VerifiedDevice {
    /// Device id.
    pub id: String,
    /// The verdict.
    pub verdict: DeviceVerdict,
    /// What was seen (health level, running version).
    pub detail: String,
}

/// The verification of a deployment's rollbacks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RollbackVerification {
    /// `pending` (devices still to be heard), `healthy` (every rolled-back device healthy on
    /// its previous version), `degraded` (none unhealthy or silent, some degraded on it),
    /// `unverified` (none unhealthy, some offline), `unhealthy`.
    pub result: String,
    /// `device` (devices rolled back on their own), `wave` or `fleet`.
    pub scope: String,
    /// When the first device of it was rolled back (RFC 3339 UTC).
    pub started_at: String,
    /// When it was decided (RFC 3339 UTC), while not pending.
    pub finished_at: Option<String>,
    /// How long a device has to report healthy after its rollback (ms).
    pub timeout_ms: u64,
    /// Devices verified healthy.
    pub healthy: u64,
    /// Devices on their previous version but degraded by the deadline.
    #[serde(default)]
    pub degraded: u64,
    /// Devices that reported but not healthy on their previous version.
    pub unhealthy: u64,
    /// Devices not heard from by the deadline.
    pub unverified_offline: u64,
    /// Devices still awaited.
    pub pending: u64,
    /// For a fleet rollback: whether the rolled-back devices' mean error rate, p95 and memory
    /// are back within the baseline (`None`: not a fleet rollback, or no metrics yet).
    pub fleet_within_baseline: Option<bool>,
    /// The fleet check's sentences, one per metric.
    pub baseline_checks: Vec<String>,
    /// Devices that are not (yet) healthy, at most [`MAX_AFFECTED_LISTED`].
    pub devices: Vec<VerifiedDevice>,
}

/// The incident report of a failed or rolled-back deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct IncidentReport {
    /// The deployment.
    pub deployment_id: String,
    /// "Incident: FLOW vVERSION".
    pub title: String,
    /// The flow version deployed.
    pub flow_id: String,
    /// Strategy.
    pub strategy: String,
    /// `failed` or `rolled_back`.
    pub status: String,
    /// Why it ended so.
    pub reason: String,
    /// When this report was (re)generated, RFC 3339 UTC.
    pub generated_at: String,
    /// The deployment's times, RFC 3339 UTC.
    pub created_at: String,
    /// Start.
    pub started_at: Option<String>,
    /// End.
    pub ended_at: Option<String>,
    /// What happened, oldest first (at most [`MAX_TIMELINE`] entries).
    pub timeline: Vec<TimelineEntry>,
    /// Entries of the timeline left out.
    pub timeline_omitted: u64,
    /// The devices.
    pub affected: AffectedDevices,
    /// The failure pattern.
    pub pattern: PatternFinding,
    /// Health before, during and after.
    pub health: Vec<MetricDelta>,
    /// The rollback verification, if any device was rolled back.
    pub verification: Option<RollbackVerification>,
}

/// Timeline entries kept at most.
pub const MAX_TIMELINE: usize = 200;

fn num(v: Option<f64>, unit: &str) -> String {
    v.map_or_else(|| "unknown".to_string(), |v| format!("{v:.2}{unit}"))
}

impl IncidentReport {
    /// Renders the report as markdown (for `floe deploy report` and `?format=markdown`).
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "## {}", self.title);
        let _ = writeln!(
            s,
            "**Deployment**: {} | **Strategy**: {} | **Status**: {} | **From** {} **to** {}",
            self.deployment_id,
            self.strategy,
            self.status,
            self.started_at.as_deref().unwrap_or(&self.created_at),
            self.ended_at.as_deref().unwrap_or("-")
        );
        let _ = writeln!(s, "**Reason**: {}", self.reason);
        let p = &self.pattern;
        let _ = writeln!(
            s,
            "**Failure pattern**: {}{} — {}",
            p.pattern.as_str(),
            p.group
                .as_ref()
                .map_or_else(String::new, |g| format!(" ({g})")),
            p.explanation
        );
        let _ = writeln!(s);
        let _ = writeln!(s, "### Timeline (UTC)");
        for e in &self.timeline {
            let _ = writeln!(s, "- {} {} — {}", e.at, e.what, e.detail);
        }
        if self.timeline_omitted > 0 {
            let _ = writeln!(s, "- ... {} more entries", self.timeline_omitted);
        }
        let _ = writeln!(s);
        let a = &self.affected;
        let _ = writeln!(s, "### Affected devices ({} targets)", a.targets);
        let _ = writeln!(
            s,
            "failed {} | quarantined {} | rolled back {} | skipped (unreachable) {} | not started {} | kept new version {}",
            a.failed,
            a.quarantined,
            a.rolled_back,
            a.skipped_unreachable,
            a.not_started,
            a.kept_new_version
        );
        if !a.devices.is_empty() {
            let _ = writeln!(s);
            let _ = writeln!(
                s,
                "| Device | Type | Region | Status | What happened | Verification |"
            );
            let _ = writeln!(s, "|---|---|---|---|---|---|");
            for d in &a.devices {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} |",
                    d.id,
                    d.device_type,
                    d.region,
                    d.status,
                    d.what_happened,
                    d.verification.as_deref().unwrap_or("-")
                );
            }
            if a.not_listed > 0 {
                let _ = writeln!(s, "| ... {} more | | | | | |", a.not_listed);
            }
        }
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "### Health (before = baseline, during = last reports on the new version, after = rolled-back devices)"
        );
        let _ = writeln!(s, "| Metric | Before | During | After |");
        let _ = writeln!(s, "|---|---|---|---|");
        for m in &self.health {
            let unit = match m.metric.as_str() {
                "error_rate" | "cpu_percent" => "%",
                "p95_ms" => " ms",
                "memory_mb" => " MB",
                _ => "",
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                m.metric,
                num(m.before, unit),
                num(m.during, unit),
                num(m.after, unit)
            );
        }
        let _ = writeln!(s);
        match &self.verification {
            None => {
                let _ = writeln!(s, "**Rollback verification**: no device was rolled back");
            }
            Some(v) => {
                let _ = writeln!(
                    s,
                    "**Rollback verification** ({} rollback, since {}): {} — healthy {}, degraded {}, unhealthy {}, unverified (offline) {}, pending {}{}",
                    v.scope,
                    v.started_at,
                    v.result,
                    v.healthy,
                    v.degraded,
                    v.unhealthy,
                    v.unverified_offline,
                    v.pending,
                    v.finished_at
                        .as_ref()
                        .map_or_else(String::new, |f| format!("; decided {f}"))
                );
                if let Some(ok) = v.fleet_within_baseline {
                    let _ = writeln!(
                        s,
                        "**Fleet back within baseline**: {}",
                        if ok { "yes" } else { "no" }
                    );
                }
                for c in &v.baseline_checks {
                    let _ = writeln!(s, "- {c}");
                }
                for d in &v.devices {
                    let _ = writeln!(s, "- {} {}: {}", d.id, d.verdict.as_str(), d.detail);
                }
            }
        }
        s
    }
}
