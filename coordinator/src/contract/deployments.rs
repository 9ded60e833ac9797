//! Deployment responses. A deployment object counts its targets by status; the targets
//! themselves are paged (`GET /deployments/{id}/targets`), so the object's size does not grow
//! with the fleet.

use super::enums::GateVerdict;
use floe_rollout::{DeploymentStatus, StageKind, TargetStatus};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The artifact a deployment rolls out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DeploymentArtifact {
    /// Artifact name (the lineage id).
    pub name: String,
    /// Release number.
    pub release: u64,
    /// Semantic version.
    pub version: String,
    /// SHA-256 of the manifest payload, hex.
    pub manifest_sha256: String,
}

/// One wave of the effective config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WaveConfigView {
    /// Name.
    pub name: String,
    /// Share of the post-canary pool, percent.
    pub percentage: f64,
    /// Soak (`10m`).
    pub soak: String,
    /// Failure threshold, percent.
    pub failure_threshold: f64,
}

/// The config a deployment runs with: the request's settings with the strategy's defaults
/// filled in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeploymentConfig {
    /// Rolling: devices per batch.
    pub batch_size: u32,
    /// Rolling: soak after each batch.
    pub batch_delay: String,
    /// Failure threshold, percent.
    pub failure_threshold: f64,
    /// Canary share, percent.
    pub canary_percentage: f64,
    /// Canary soak.
    pub canary_delay: String,
    /// Per-device deploy timeout.
    pub timeout: String,
    /// Blue-green: delay between everything staged and the canary's switch.
    pub switch_delay: String,
    /// Whether it rolls back by itself.
    pub auto_rollback: bool,
    /// Whether health gates are evaluated.
    pub health_check: bool,
    /// Whether an operator approves after the canary.
    pub require_approval: bool,
    /// Gate quorum, percent.
    pub quorum: f64,
    /// How long the end waits for offline devices.
    pub offline_grace: String,
    /// The waves of canary-waves, and of blue-green (which switches in them).
    pub waves: Vec<WaveConfigView>,
    /// Most devices deploying at once (0: no limit).
    pub max_parallel: u32,
    /// How long without progress before a `deployment.stuck` event (stored deployments from
    /// before the field read as the default, `30m`).
    #[serde(default = "default_stuck_after")]
    pub stuck_after: String,
    /// All-at-once above the size limit was forced.
    #[serde(default)]
    pub force: bool,
    /// Steps: cumulative percentages (empty for other strategies).
    #[serde(default)]
    pub steps: Vec<f64>,
    /// Steps: observation period after each step.
    #[serde(default)]
    pub step_soak: String,
    /// Baselines and gates (stored deployments from before read the defaults).
    #[serde(default)]
    pub gates: GateSettings,
}

/// The baseline and gate settings a deployment runs with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GateSettings {
    /// Baseline window (`24h`).
    pub baseline_window: String,
    /// Reports a group needs for a baseline.
    pub baseline_min_samples: u64,
    /// `absolute` or `refuse`.
    pub no_baseline: String,
    /// Absolute error-rate limit (fraction).
    pub abs_error_rate: f64,
    /// Absolute P95 latency limit (ms).
    pub abs_p95_ms: f64,
    /// Absolute memory limit (MB).
    pub abs_memory_mb: f64,
    /// Reports per group inside a check's window.
    pub gate_min_samples: u64,
    /// CAUTION extensions before a gate fails.
    pub caution_max_extensions: u32,
}

impl Default for GateSettings {
    fn default() -> Self {
        GateSettings::of(&floe_rollout::GateConfig::default())
    }
}

impl GateSettings {
    /// The settings as the API shows them.
    pub fn of(g: &floe_rollout::GateConfig) -> Self {
        GateSettings {
            baseline_window: floe_rollout::duration::format_duration(g.baseline_window),
            baseline_min_samples: g.baseline_min_samples,
            no_baseline: g.no_baseline.as_str().to_string(),
            abs_error_rate: g.abs_error_rate,
            abs_p95_ms: g.abs_p95_ms,
            abs_memory_mb: g.abs_memory_mb,
            gate_min_samples: g.gate_min_samples,
            caution_max_extensions: g.caution_max_extensions,
        }
    }
}

fn default_stuck_after() -> String {
    "30m".into()
}

/// Targets by status; they add up to the deployment's `total_targets` (a stage's to its
/// `size`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TargetCounts {
    /// Not yet reached.
    pub pending: u64,
    /// Carrying out a directive.
    pub deploying: u64,
    /// Deployed, verified and committed.
    pub success: u64,
    /// Failed on the device.
    pub failed: u64,
    /// Offline; caught up on return.
    pub offline: u64,
    /// Never deployed.
    pub skipped: u64,
    /// Rolled back with a wave or the fleet.
    pub rolled_back: u64,
    /// Rolled back by a device-level trigger and kept out.
    pub quarantined: u64,
}

/// One stage (canary, wave, batch) of a deployment's plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Stage {
    /// Index in the plan.
    pub index: u32,
    /// Name (`Canary`, `wave-1`, `batch-3`).
    pub name: String,
    /// What kind of stage.
    pub kind: StageKind,
    /// Devices in the stage.
    pub size: u32,
    /// The stage's targets by status.
    pub counts: TargetCounts,
    /// The first devices of the stage (at most 1 000; `size` counts them all).
    pub devices: Vec<String>,
}

/// One check of a gate verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GateCheck {
    /// The check (`error_rate`, `latency_p95` …).
    pub name: String,
    /// Measured value.
    pub value: f64,
    /// The limit it is compared with.
    pub limit: f64,
    /// Whether it passed.
    pub pass: bool,
    /// How it came out: `pass`, `fail`, `caution` (degrading within its limit),
    /// `not_computable` (too few reports in its window: the gate waits) or `not_measured`
    /// (devices do not send the figure). Absent in gates recorded before outcomes existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<floe_rollout::CheckOutcome>,
}

/// A gate verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Gate {
    /// The stage it closes.
    pub stage: u32,
    /// The gate's name.
    pub gate: String,
    /// The decision.
    pub verdict: GateVerdict,
    /// Why.
    pub reason: String,
    /// The checks.
    pub checks: Vec<GateCheck>,
    /// Over the gate's window: reports, latency P50/P95/P99 across all deployed devices,
    /// healthy / degraded / failed counts, new failures, CAUTION extensions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<floe_rollout::GateSummary>,
    /// RFC 3339.
    pub at: String,
}

/// A deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Deployment {
    /// `dep_<10 hex>`.
    pub id: String,
    /// The flow version deployed.
    pub flow_id: String,
    /// What is rolled out.
    pub artifact: DeploymentArtifact,
    /// Strategy name.
    pub strategy: String,
    /// Status.
    pub status: DeploymentStatus,
    /// Why it has that status.
    pub status_reason: String,
    /// Targets in the plan.
    pub total_targets: u64,
    /// Targets deployed and committed (`target_counts.success`).
    pub completed_targets: u64,
    /// Targets failed or quarantined.
    pub failed_targets: u64,
    /// Targets offline.
    pub offline_targets: u64,
    /// Targets rolled back.
    pub rolled_back_targets: u64,
    /// Targets skipped.
    pub skipped_targets: u64,
    /// Targets pending or deploying.
    pub pending_targets: u64,
    /// Targets by status.
    pub target_counts: TargetCounts,
    /// The stage being worked on.
    pub current_stage: u32,
    /// The plan's stages.
    pub stages: Vec<Stage>,
    /// Gate verdicts, oldest first (the last 256).
    pub gates: Vec<Gate>,
    /// Whether it waits for an operator's approve.
    pub awaiting_approval: bool,
    /// The engine's phase (`PREPARE`, `CANARY`, `VERIFY`, `ROLLOUT`, `CONFIRM`, `ROLLBACK`).
    pub phase: String,
    /// Why it is paused, if it is.
    pub pause_reason: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, once started.
    pub started_at: Option<String>,
    /// RFC 3339, once finished.
    pub completed_at: Option<String>,
    /// The effective config.
    pub config: DeploymentConfig,
    /// The baselines per device group, from the health rollups: captured at creation (the
    /// plan preview) and again at start. Absent for deployments stored before baselines
    /// were captured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baselines: Option<floe_rollout::BaselineSet>,
    /// Stated facts about groups without a baseline ("no baseline for rpi4/eu: 3 samples,
    /// 100 needed; judged against rpi4's baseline").
    #[serde(default)]
    pub baseline_facts: Vec<String>,
    /// The canary picks with their reasons, and the plan's warnings.
    #[serde(default)]
    pub plan: super::DeploymentPlan,
    /// The pre-deployment checklist (003's VALIDATE): the dry run of its creation, then the
    /// start's result.
    #[serde(default)]
    pub preflight: Option<super::Preflight>,
    /// The verification of its rollbacks (001: every rolled-back device healthy on its
    /// previous version; for a fleet rollback, the fleet back within its baseline), if a
    /// device was rolled back. Filled by `GET /deployments/{id}`; null in lists.
    #[serde(default)]
    pub rollback_verification: Option<super::incidents::RollbackVerification>,
}

impl TargetCounts {
    /// Counts one more target of `status`.
    pub fn add(&mut self, status: TargetStatus) {
        let n = match status {
            TargetStatus::Pending => &mut self.pending,
            TargetStatus::Deploying => &mut self.deploying,
            TargetStatus::Success => &mut self.success,
            TargetStatus::Failed => &mut self.failed,
            TargetStatus::Offline => &mut self.offline,
            TargetStatus::Skipped => &mut self.skipped,
            TargetStatus::RolledBack => &mut self.rolled_back,
            TargetStatus::Quarantined => &mut self.quarantined,
        };
        *n += 1;
    }

    /// The count of `status`.
    pub fn get(&self, status: TargetStatus) -> u64 {
        match status {
            TargetStatus::Pending => self.pending,
            TargetStatus::Deploying => self.deploying,
            TargetStatus::Success => self.success,
            TargetStatus::Failed => self.failed,
            TargetStatus::Offline => self.offline,
            TargetStatus::Skipped => self.skipped,
            TargetStatus::RolledBack => self.rolled_back,
            TargetStatus::Quarantined => self.quarantined,
        }
    }

    /// Every target counted.
    pub fn total(&self) -> u64 {
        self.pending
            + self.deploying
            + self.success
            + self.failed
            + self.offline
            + self.skipped
            + self.rolled_back
            + self.quarantined
    }
}

impl Deployment {
    /// Whether the deployment has finished (completed, failed or rolled back).
    pub fn is_terminal(&self) -> bool {
        self.status.is_terminal()
    }
}

/// `GET /deployments`: one page, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeploymentPage {
    /// The deployments.
    pub deployments: Vec<Deployment>,
    /// The cursor of the next page; null after the last.
    pub next: Option<String>,
}

/// One target of a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Target {
    /// The device.
    pub device_id: String,
    /// Its status in this deployment.
    pub status: TargetStatus,
    /// The stage it belongs to.
    pub stage: u32,
    /// The generation of the newest directive this deployment sent it (0: none yet).
    pub generation: u64,
    /// The device's last word on a failed directive.
    pub detail: String,
}

/// `GET /deployments/{id}/targets`: one page in plan order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TargetPage {
    /// The targets.
    pub targets: Vec<Target>,
    /// The cursor of the next page; null after the last.
    pub next: Option<String>,
    /// Targets in the plan.
    pub total: u64,
}

/// One strategy and its reference defaults, as `POST /deployments` fills them in when a
/// request leaves a setting out (`GET /strategies`; the console's create form starts from it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StrategyDefaults {
    /// The strategy's name in requests (`canary-waves`).
    pub name: String,
    /// Every setting with its default.
    pub config: DeploymentConfig,
}

/// `GET /strategies`: every strategy a deployment can use, with its defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StrategyList {
    /// In the engine's order.
    pub strategies: Vec<StrategyDefaults>,
}
