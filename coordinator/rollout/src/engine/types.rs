//! The engine's public vocabulary: its inputs, its actions, the statuses it reports and why it
//! refuses an input. Kept apart from the state machine so the coordinator, the simulator and
//! the report read one small file to learn what goes in and out; every enum that the REST API
//! or the audit log spells as a string gets its spelling here, from one table each.

use super::gate_record::{CheckOutcome, GateSummary};
use crate::Millis;
use crate::names::spelled;
use crate::plan::GateKind;
use serde::{Deserialize, Serialize};

/// Why an input was refused. A failed gate is not an error: it is a [`GateVerdict`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RolloutError {
    /// An operator command that does not fit the deployment's state.
    #[error("cannot {command} a {status} deployment: {reason}")]
    Command {
        /// The command.
        command: Command,
        /// The deployment's status.
        status: DeploymentStatus,
        /// Why, and what would fit.
        reason: String,
    },
    /// A report named a device index outside the plan.
    #[error("device index {0} is not a target of this deployment")]
    UnknownDevice(u32),
    /// A health report carried a metric that is not a finite number in its range (error rate
    /// 0..=1, p95 up to a day in ms, memory up to 1e9 MB).
    #[error("health report from device {device}: {field} is {value}, outside its valid range")]
    Metric {
        /// The device index.
        device: u32,
        /// The metric.
        field: &'static str,
        /// The value received.
        value: f32,
    },
    /// The output queue is full; drain `poll_action` and retry the input.
    #[error("{0} actions are waiting; drain poll_action before sending more input")]
    Backlog(usize),
}

/// Deployment status (000).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentStatus {
    /// Created, awaiting start.
    Pending,
    /// Actively deploying (or rolling back).
    Running,
    /// Halted by an operator or a trigger; waits for resume, approve, rollback or abort.
    Paused,
    /// All target devices updated successfully.
    Completed,
    /// Failed (aborted, or a trigger fired with auto-rollback off and was aborted).
    Failed,
    /// Rolled back to the previous version.
    RolledBack,
}

impl DeploymentStatus {
    /// Whether no further change can happen.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            DeploymentStatus::Completed | DeploymentStatus::Failed | DeploymentStatus::RolledBack
        )
    }
}

/// Target status (000, DESIGN.md).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetStatus {
    /// Not yet reached.
    Pending,
    /// A directive is being carried out.
    Deploying,
    /// Deployed, verified and committed.
    Success,
    /// The deployment failed on this device (staging failed, timed out).
    Failed,
    /// Offline; tracked apart, caught up on return.
    Offline,
    /// Never deployed (unreachable until the end, or its wave was cancelled).
    Skipped,
    /// Rolled back with its wave or the fleet.
    RolledBack,
    /// Rolled back on its own by a device-level trigger and kept out of the rollout.
    Quarantined,
}

impl TargetStatus {
    /// Whether the status is final for this deployment.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TargetStatus::Success
                | TargetStatus::Failed
                | TargetStatus::Skipped
                | TargetStatus::RolledBack
                | TargetStatus::Quarantined
        )
    }
}

/// Operator commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Start a pending deployment.
    Start,
    /// Stop sending new directives; reports are still processed and triggers still fire.
    Pause,
    /// Continue a paused deployment.
    Resume,
    /// Let a deployment waiting for approval go on to its next stage.
    Approve,
    /// Roll back every device that has the new version.
    Rollback,
    /// Stop: roll back what is not committed, keep what is, end as failed.
    Abort,
}

/// What a device reports about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceEvent {
    /// The new version is in the standby slot, verified and smoke-tested.
    Staged,
    /// The device switched to the new slot.
    Switched,
    /// Its health endpoint says healthy.
    Healthy,
    /// Its health endpoint says unhealthy.
    Unhealthy,
    /// The directive failed on the device (fetch, verify, smoke test).
    Failed,
    /// The device is back on its previous slot.
    RolledBack,
    /// The device stopped answering (it is not failed).
    Offline,
    /// The device answers again.
    Online,
    /// The agent answers but the flow engine's health endpoint does not.
    HealthUnreachable,
}

/// Health status in a report (003 health response shape).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Healthy.
    Healthy,
    /// Working but degraded; counts as reported, not as healthy.
    Degraded,
    /// Unhealthy: the device is rolled back.
    Unhealthy,
}

/// A health report with metrics.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HealthReport {
    /// The device's overall status.
    pub status: HealthStatus,
    /// Error rate as a fraction.
    pub error_rate: f32,
    /// P95 latency in milliseconds.
    pub p95_ms: f32,
    /// Memory in MB.
    pub memory_mb: f32,
    /// Restarts since the switch (a counter that only grows).
    pub restarts: u32,
    /// The device's own figures beside the flow's (003's health response, "system" block).
    #[serde(default)]
    pub system: SystemFigures,
}

/// A device's system figures (003 health response: cpu, memory, temperature, disk; layer 4's
/// functional check). Every field is optional: older devices, and devices without a sensor for
/// it (no thermal zone, say), do not send it, and a missing figure is "unknown", never zero.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SystemFigures {
    /// CPU use of the whole device, percent of all cores (0–100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f32>,
    /// Memory in use on the whole device, percent of its total (0–100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_used_percent: Option<f32>,
    /// Hottest thermal zone, degrees Celsius.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_c: Option<f32>,
    /// Whether the device throttled for heat (or under-voltage) since its last report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttled: Option<bool>,
    /// Free space on the data partition, MB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_free_mb: Option<f32>,
    /// Used space on the data partition, percent (0–100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_used_percent: Option<f32>,
    /// The functional check's result (003 layer 4: correct output on test input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub functional_ok: Option<bool>,
}

/// An input to the engine.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Input {
    /// A device status report.
    Device {
        /// The device index in the plan.
        device: u32,
        /// What it reported.
        event: DeviceEvent,
    },
    /// A health report with metrics.
    Health {
        /// The device index in the plan.
        device: u32,
        /// The report.
        report: HealthReport,
    },
    /// An operator command.
    Command(Command),
    /// The time from `poll_timeout` has come.
    Tick,
}

/// What a directive tells a device to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DirectiveKind {
    /// Fetch the artifact into the standby slot, verify and smoke-test it.
    Stage,
    /// Switch to the standby slot.
    Switch,
    /// Keep the new slot.
    Commit,
    /// Switch back to the previous slot (no transfer).
    Rollback,
}

/// Why a single device was rolled back and quarantined (001 "Automatic Rollback Triggers" at
/// device level, and the deploy timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RollbackCause {
    /// Its health endpoint or a health report said unhealthy.
    Unhealthy,
    /// The device reported a failure after it had switched.
    FailedAfterSwitch,
    /// Restarts above the crash-loop limit within its window.
    CrashLoop,
    /// Memory grew faster than the leak limit.
    MemoryLeak,
    /// The health endpoint stayed unreachable past its limit.
    HealthUnreachable,
    /// The directive was not carried out within the strategy's timeout.
    DeployTimeout,
    /// The device's functional check (003 layer 4) failed.
    FunctionalCheck,
}

/// A gate's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// All checks pass.
    Pass,
    /// Not enough reports yet (quorum), the gate waits.
    Wait,
    /// A check failed.
    Fail,
    /// A check is degrading within its limit (001 CAUTION): the soak is extended and the gate
    /// rechecks, a bounded number of times, then fails.
    Caution,
}

/// One check of a gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// The check's name as 001 spells it (`error_rate`, `latency_p95`, ...).
    pub name: String,
    /// Measured value.
    pub value: f64,
    /// The limit it is compared with.
    pub limit: f64,
    /// Whether it passed.
    pub pass: bool,
    /// How it came out (None in records written before outcomes existed: `pass` says).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<CheckOutcome>,
}

/// A gate verdict, emitted when it changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateVerdict {
    /// The stage it closes.
    pub stage: u32,
    /// Which gate.
    pub gate: GateKind,
    /// The verdict.
    pub verdict: Verdict,
    /// The checks (empty while waiting for a quorum).
    pub checks: Vec<Check>,
    /// A sentence saying why.
    pub reason: String,
    /// Counts and percentiles over the gate's window (None while waiting for a quorum, and
    /// in records written before summaries existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<GateSummary>,
}

/// A decision of the engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Action {
    /// Send a directive to a device.
    Directive {
        /// The device index.
        device: u32,
        /// Its per-device generation (only grows).
        generation: u32,
        /// What to do.
        kind: DirectiveKind,
        /// Why the device is rolled back on its own account, for a rollback directive that a
        /// device-level trigger or a deploy timeout sent (`None` for every other directive, a
        /// fleet or wave rollback included: those are explained by the deployment's audit
        /// events). Devices are never audited one by one by the engine; this lets the caller
        /// write the one line per device it wants.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cause: Option<RollbackCause>,
    },
    /// A target's status changed.
    Target {
        /// The device index.
        device: u32,
        /// The new status.
        status: TargetStatus,
    },
    /// A gate decided.
    Gate(GateVerdict),
    /// The deployment's status changed.
    Deployment {
        /// The new status.
        status: DeploymentStatus,
        /// Why.
        reason: String,
    },
    /// A stage passed its gate and waits for an operator's approve.
    ApprovalRequired {
        /// The stage that passed.
        stage: u32,
    },
    /// Something worth an audit-log line (deployment-level, never per device).
    Audit {
        /// When.
        at: Millis,
        /// What happened.
        event: String,
    },
}

/// What a stage did, for gates and the report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageResult {
    /// Devices in the stage.
    pub devices: u32,
    /// Devices of the stage that failed, were quarantined or timed out.
    pub failed: u32,
    /// When dispatch began.
    pub started_at: Option<Millis>,
    /// When its devices had settled and the soak began.
    pub soak_started_at: Option<Millis>,
    /// When its gate decided.
    pub ended_at: Option<Millis>,
    /// The final verdict, if any.
    pub verdict: Option<Verdict>,
    /// Whether the stage was rolled back.
    pub rolled_back: bool,
}

/// Targets by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCounts {
    /// Pending.
    pub pending: u64,
    /// Deploying.
    pub deploying: u64,
    /// Success.
    pub success: u64,
    /// Failed.
    pub failed: u64,
    /// Offline.
    pub offline: u64,
    /// Skipped.
    pub skipped: u64,
    /// Rolled back.
    pub rolled_back: u64,
    /// Quarantined.
    pub quarantined: u64,
    /// Active and reporting.
    pub healthy: u64,
}

spelled!(DeploymentStatus, "deployment status", {
    Pending => "pending",
    Running => "running",
    Paused => "paused",
    Completed => "completed",
    Failed => "failed",
    RolledBack => "rolled_back",
});

spelled!(TargetStatus, "target status", {
    Pending => "pending",
    Deploying => "deploying",
    Success => "success",
    Failed => "failed",
    Offline => "offline",
    Skipped => "skipped",
    RolledBack => "rolled_back",
    Quarantined => "quarantined",
});

spelled!(Command, "command", {
    Start => "start",
    Pause => "pause",
    Resume => "resume",
    Approve => "approve",
    Rollback => "rollback",
    Abort => "abort",
});

spelled!(DeviceEvent, "device event", {
    Staged => "staged",
    Switched => "switched",
    Healthy => "healthy",
    Unhealthy => "unhealthy",
    Failed => "failed",
    RolledBack => "rolled_back",
    Offline => "offline",
    Online => "online",
    HealthUnreachable => "health_unreachable",
});

spelled!(HealthStatus, "health status", {
    Healthy => "healthy",
    Degraded => "degraded",
    Unhealthy => "unhealthy",
});

spelled!(DirectiveKind, "directive kind", {
    Stage => "stage",
    Switch => "switch",
    Commit => "commit",
    Rollback => "rollback",
});

spelled!(Verdict, "verdict", {
    Pass => "pass",
    Wait => "wait",
    Fail => "fail",
    Caution => "caution",
});

spelled!(RollbackCause, "rollback cause", {
    Unhealthy => "unhealthy",
    FailedAfterSwitch => "failed_after_switch",
    CrashLoop => "crash_loop",
    MemoryLeak => "memory_leak",
    HealthUnreachable => "health_unreachable",
    DeployTimeout => "deploy_timeout",
    FunctionalCheck => "functional_check",
});
