//! The deployment report and the state block, in reference 003's templates.
//!
//! Both are built from a [`Rollout`] and render to markdown (for operators and incident
//! reports) and derive serde (for the REST API and `floe sim --json`). Times are rendered
//! relative to the deployment's creation ("T+1h30m") unless the caller says the engine's clock
//! was the wall clock ([`Report::at_wall_clock`]: the coordinator feeds its engines unix ms),
//! then as absolute RFC 3339 UTC times as 003's template asks; the engine itself never reads a
//! clock. The title names the flow and its version when the caller knows them
//! ([`Report::for_flow`]), else the artifact.

use super::duration::{format_duration, rfc3339};
use super::engine::{DeploymentStatus, Rollout, Verdict};
use super::{Millis, StageKind};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// Most stage rows printed in markdown (a rolling deployment to many devices has thousands of
/// batches); the JSON has them all.
pub const MARKDOWN_MAX_ROWS: usize = 40;

/// One row of the wave table.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRow {
    /// Stage name ("Canary", "wave-1", ...).
    pub name: String,
    /// Devices in the stage.
    pub devices: u32,
    /// Devices that failed or were quarantined.
    pub failed: u32,
    /// Soak actually observed, in milliseconds (from settled to verdict).
    pub soak_ms: Option<Millis>,
    /// PASS, FAIL, ROLLED BACK, or "-" when the stage was not reached.
    pub verdict: String,
}

/// Status counts with the template's three rows and the rest.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportCounts {
    /// Deployed (healthy): success.
    pub deployed: u64,
    /// Skipped (unreachable): skipped while offline.
    pub skipped: u64,
    /// Never started because the deployment stopped (failed, rolled back or aborted) before
    /// reaching them; not unreachable.
    #[serde(default)]
    pub not_started: u64,
    /// Quarantined (failed): quarantined and failed targets.
    pub quarantined: u64,
    /// Rolled back with a wave or the fleet.
    pub rolled_back: u64,
    /// Not yet terminal (pending, deploying, offline).
    pub in_progress: u64,
}

/// Health delta against baseline at the last gate.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HealthDelta {
    /// Error rate, percentage points.
    pub error_rate_pp: f64,
    /// P95 latency, percent.
    pub p95_pct: f64,
    /// Memory, percent.
    pub memory_pct: f64,
    /// CPU, percentage points; `None` when no device group had CPU figures both in its gate
    /// window and in its baseline (devices did not send them), rendered "unknown".
    #[serde(default)]
    pub cpu_pp: Option<f64>,
}

/// 003's "Fleet Deployment Report".
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// "NAME vVERSION" of the flow when known (see [`Report::for_flow`]), else the artifact.
    #[serde(default)]
    pub title: String,
    /// The artifact.
    pub artifact: String,
    /// Strategy name.
    pub strategy: String,
    /// Deployment status.
    pub status: DeploymentStatus,
    /// Why it is paused, if it is.
    pub pause_reason: Option<String>,
    /// Why it has its status (the reason of the last status change).
    pub reason: String,
    /// Start, relative to creation.
    pub started_at: Option<Millis>,
    /// End, relative to creation.
    pub ended_at: Option<Millis>,
    /// End minus start.
    pub duration_ms: Option<Millis>,
    /// Start as an RFC 3339 UTC time, when the engine ran on the wall clock.
    #[serde(default)]
    pub started_at_utc: Option<String>,
    /// End as an RFC 3339 UTC time, when the engine ran on the wall clock.
    #[serde(default)]
    pub ended_at_utc: Option<String>,
    /// Targets.
    pub fleet_total: u64,
    /// Counts.
    pub counts: ReportCounts,
    /// The wave table.
    pub stages: Vec<StageRow>,
    /// Health delta, if any device reported.
    pub health_delta: Option<HealthDelta>,
}

fn pct(n: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        n as f64 * 100.0 / total as f64
    }
}

impl Report {
    /// Builds the report from the engine's current state (O(fleet)).
    pub fn from_rollout(r: &Rollout) -> Report {
        let c = r.counts();
        let (created, started, ended) = r.times();
        let plan = r.plan();
        let stages = plan
            .stages
            .iter()
            .zip(r.stage_results())
            .map(|(spec, res)| {
                let verdict = match (res.rolled_back, res.verdict) {
                    (true, _) => "ROLLED BACK",
                    (false, Some(Verdict::Pass)) => "PASS",
                    (false, Some(Verdict::Fail)) => "FAIL",
                    (false, _) if res.started_at.is_some() => "IN PROGRESS",
                    _ => "-",
                };
                StageRow {
                    name: spec.name.clone(),
                    devices: res.devices,
                    failed: res.failed,
                    soak_ms: match (res.soak_started_at, res.ended_at) {
                        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
                        _ => None,
                    },
                    verdict: verdict.to_string(),
                }
            })
            .collect();
        let unreachable = r.skipped_unreachable().min(c.skipped);
        Report {
            title: plan.artifact.clone(),
            artifact: plan.artifact.clone(),
            strategy: plan.config.strategy.name().to_string(),
            status: r.status(),
            pause_reason: r.pause_reason().map(str::to_string),
            reason: r.status_reason().to_string(),
            started_at: started.map(|s| s - created),
            ended_at: ended.map(|e| e - created),
            duration_ms: match (started, ended) {
                (Some(s), Some(e)) => Some(e - s),
                _ => None,
            },
            started_at_utc: None,
            ended_at_utc: None,
            fleet_total: plan.len() as u64,
            counts: ReportCounts {
                deployed: c.success,
                skipped: unreachable,
                not_started: c.skipped - unreachable,
                quarantined: c.quarantined + c.failed,
                rolled_back: c.rolled_back,
                in_progress: c.pending + c.deploying + c.offline,
            },
            stages,
            health_delta: r.health_delta().map(|[e, p, m]| HealthDelta {
                error_rate_pp: e * 100.0,
                p95_pct: p * 100.0,
                memory_pct: m * 100.0,
                // From the gates' windows against the captured baselines, where both have
                // CPU figures (devices send it in `HealthReport.system`).
                cpu_pp: r.cpu_delta_pp(),
            }),
        }
    }

    /// Titles the report with the flow's name and version (003: "[Artifact] v[version]").
    pub fn for_flow(mut self, name: &str, version: &str) -> Report {
        self.title = format!("{name} v{version}");
        self
    }

    /// Says the engine's clock was the wall clock (unix ms): start and end get absolute
    /// RFC 3339 UTC times, which the markdown prints instead of "T+".
    pub fn at_wall_clock(mut self, created_at: Millis) -> Report {
        self.started_at_utc = self.started_at.map(|t| rfc3339(created_at + t));
        self.ended_at_utc = self.ended_at.map(|t| rfc3339(created_at + t));
        self
    }

    /// Renders the report as 003's markdown template.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let t = |m: Option<Millis>| {
            m.map_or_else(|| "-".to_string(), |m| format!("T+{}", format_duration(m)))
        };
        let title = if self.title.is_empty() {
            &self.artifact
        } else {
            &self.title
        };
        let _ = writeln!(s, "## Fleet Deployment Report: {title}");
        let start = match &self.started_at_utc {
            Some(u) => u.clone(),
            None => t(self.started_at),
        };
        let end = match (&self.ended_at_utc, self.ended_at) {
            (Some(u), _) => u.clone(),
            (None, Some(e)) => t(Some(e)),
            (None, None) => "now".to_string(),
        };
        let _ = writeln!(
            s,
            "**Strategy**: {} | **Duration**: {start} to {end} ({}) | **Status**: {}",
            self.strategy,
            self.duration_ms
                .map_or_else(|| "running".to_string(), format_duration),
            self.status
        );
        if let Some(r) = &self.pause_reason {
            let _ = writeln!(s, "**Paused**: {r}");
        } else if self.status.is_terminal() {
            let _ = writeln!(s, "**Reason**: {}", self.reason);
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "| Status | Count | % |");
        let _ = writeln!(s, "|--------|-------|---|");
        let n = self.fleet_total;
        for (label, v) in [
            ("Deployed (healthy)", self.counts.deployed),
            ("Skipped (unreachable)", self.counts.skipped),
            ("Not started (deployment stopped)", self.counts.not_started),
            ("Quarantined (failed)", self.counts.quarantined),
            ("Rolled back", self.counts.rolled_back),
            ("In progress", self.counts.in_progress),
        ] {
            let _ = writeln!(s, "| {label} | {v} | {:.1}% |", pct(v, n));
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "| Wave | Devices | Failed | Soak | Verdict |");
        let _ = writeln!(s, "|------|---------|--------|------|---------|");
        for row in self.stages.iter().take(MARKDOWN_MAX_ROWS) {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} |",
                row.name,
                row.devices,
                row.failed,
                row.soak_ms.map_or_else(|| "-".to_string(), format_duration),
                row.verdict
            );
        }
        if self.stages.len() > MARKDOWN_MAX_ROWS {
            let more = &self.stages[MARKDOWN_MAX_ROWS..];
            let failed: u32 = more.iter().map(|r| r.failed).sum();
            let _ = writeln!(
                s,
                "| ... {} more stages | {} | {} | - | {} PASS |",
                more.len(),
                more.iter().map(|r| u64::from(r.devices)).sum::<u64>(),
                failed,
                more.iter().filter(|r| r.verdict == "PASS").count()
            );
        }
        let _ = writeln!(s);
        match &self.health_delta {
            Some(h) => {
                let cpu = h.cpu_pp.map_or_else(
                    || "unknown (not reported)".to_string(),
                    |c| format!("{c:+.1} pp"),
                );
                let _ = writeln!(
                    s,
                    "**Health Delta**: Error rate {:+.2} pp, P95 latency {:+.1}%, CPU {cpu}, Memory {:+.1}%",
                    h.error_rate_pp, h.p95_pct, h.memory_pct
                );
            }
            None => {
                let _ = writeln!(s, "**Health Delta**: no health reports evaluated");
            }
        }
        s
    }
}

/// 003's "State Block" for a running deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateBlock {
    /// PREPARE | CANARY | VERIFY | ROLLOUT | CONFIRM (and ROLLBACK while rolling back).
    pub phase: String,
    /// Strategy name.
    pub strategy: String,
    /// Artifact.
    pub artifact: String,
    /// Targets.
    pub fleet_total: u64,
    /// Devices with the new version committed.
    pub deployed_count: u64,
    /// Devices on the new version and reporting.
    pub healthy_count: u64,
    /// Quarantined or failed.
    pub quarantined_count: u64,
    /// Skipped or currently offline.
    pub skipped_count: u64,
    /// Whether a rollback can still be started.
    pub rollback_available: bool,
    /// "N/M" over the stages.
    pub current_wave: String,
    /// The last action.
    pub last_action: String,
    /// What comes next.
    pub next_action: String,
    /// What blocks progress.
    pub blockers: String,
}

impl StateBlock {
    /// Builds the block from the engine's current state (O(fleet)).
    pub fn from_rollout(r: &Rollout) -> StateBlock {
        let c = r.counts();
        let plan = r.plan();
        let status = r.status();
        let blockers = if let Some(p) = r.pause_reason() {
            p.to_string()
        } else if r.awaiting_approval() {
            "awaiting operator approval".to_string()
        } else {
            "none".to_string()
        };
        let stage = r.current_stage() as usize;
        let wave_of = plan
            .stages
            .iter()
            .filter(|s| matches!(s.kind, StageKind::Wave | StageKind::Batch | StageKind::Step))
            .count();
        let current = plan
            .stages
            .get(stage)
            .map_or("-".to_string(), |s| s.name.clone());
        StateBlock {
            phase: r.phase_name().to_string(),
            strategy: plan.config.strategy.name().to_string(),
            artifact: plan.artifact.clone(),
            fleet_total: plan.len() as u64,
            deployed_count: c.success,
            healthy_count: c.healthy,
            quarantined_count: c.quarantined + c.failed,
            skipped_count: c.skipped + c.offline,
            rollback_available: !status.is_terminal()
                && status != DeploymentStatus::Pending
                && !r.rolling_back(),
            current_wave: format!(
                "{}/{} ({current}; {wave_of} waves)",
                stage + 1,
                plan.stages.len()
            ),
            last_action: r.last_action().to_string(),
            next_action: r.next_action(),
            blockers,
        }
    }

    /// Renders the `<fleet-deploy-state>` block.
    pub fn to_text(&self) -> String {
        format!(
            "<fleet-deploy-state>\nphase: {}\nstrategy: {}\nartifact: {}\nfleet_total: {}\n\
             deployed_count: {}\nhealthy_count: {}\nquarantined_count: {}\nskipped_count: {}\n\
             rollback_available: {}\ncurrent_wave: {}\nlast_action: {}\nnext_action: {}\n\
             blockers: {}\n</fleet-deploy-state>\n",
            self.phase,
            self.strategy,
            self.artifact,
            self.fleet_total,
            self.deployed_count,
            self.healthy_count,
            self.quarantined_count,
            self.skipped_count,
            self.rollback_available,
            self.current_wave,
            self.last_action,
            self.next_action,
            self.blockers
        )
    }
}
