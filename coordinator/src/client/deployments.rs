//! Deployments: creating, listing, commanding and reporting on deployments, waiting for one
//! to finish, and the lenient views of the server's deployment objects.

use super::error::ClientError;
use super::transport::{Client, Method, Reply, query, seg};
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;

impl Client {
    // ---- Deployments -------------------------------------------------------------------

    /// `POST /deployments`: the body as the contract gives it.
    pub fn create_deployment(&self, body: &Value) -> Result<Reply, ClientError> {
        self.call(Method::Post, "/deployments", Some(body))
    }

    /// `GET /deployments?status=&flow_id=`.
    pub fn list_deployments(
        &self,
        status: Option<&str>,
        flow_id: Option<&str>,
    ) -> Result<Reply, ClientError> {
        let q = query(&[("status", status), ("flow_id", flow_id)]);
        self.call(Method::Get, &format!("/deployments{q}"), None)
    }

    /// `GET /deployments/:id`.
    pub fn get_deployment(&self, id: &str) -> Result<Reply, ClientError> {
        self.call(Method::Get, &format!("/deployments/{}", seg(id)), None)
    }

    /// `POST /deployments/:id/<action>`.
    pub fn deployment_action(
        &self,
        id: &str,
        action: DeploymentAction,
    ) -> Result<Reply, ClientError> {
        self.call(
            Method::Post,
            &format!("/deployments/{}/{}", seg(id), action.as_str()),
            None,
        )
    }

    /// `GET /deployments/:id/report?format=json|markdown`.
    pub fn deployment_report(&self, id: &str, format: ReportFormat) -> Result<Reply, ClientError> {
        self.call(
            Method::Get,
            &format!("/deployments/{}/report?format={}", seg(id), format.as_str()),
            None,
        )
    }

    /// Polls `GET /deployments/:id` every `interval` until the deployment is terminal
    /// (completed, failed, rolled back) and returns it; [`ClientError::Wait`] after `limit`.
    /// Errors other than the wait are returned at once. End-to-end tests and scripts use this
    /// where the CLI would use `floe deploy status ID --watch`.
    pub fn wait_for_deployment(
        &self,
        id: &str,
        interval: Duration,
        limit: Duration,
    ) -> Result<Deployment, ClientError> {
        let until = std::time::Instant::now() + limit;
        loop {
            let d: Deployment = self.get_deployment(id)?.json()?;
            if d.is_terminal() {
                return Ok(d);
            }
            if std::time::Instant::now() >= until {
                return Err(ClientError::Wait {
                    what: format!("deployment {id} finishing (last status {})", d.status),
                    limit,
                });
            }
            std::thread::sleep(interval);
        }
    }
}

/// The lifecycle actions on a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeploymentAction {
    /// `start`.
    Start,
    /// `pause`.
    Pause,
    /// `resume`.
    Resume,
    /// `approve`.
    Approve,
    /// `rollback`.
    Rollback,
}

impl DeploymentAction {
    /// The path segment.
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentAction::Start => "start",
            DeploymentAction::Pause => "pause",
            DeploymentAction::Resume => "resume",
            DeploymentAction::Approve => "approve",
            DeploymentAction::Rollback => "rollback",
        }
    }
}

/// The report formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    /// The report object.
    Json,
    /// The rollout engine's markdown.
    Markdown,
}

impl ReportFormat {
    /// The query value.
    pub fn as_str(self) -> &'static str {
        match self {
            ReportFormat::Json => "json",
            ReportFormat::Markdown => "markdown",
        }
    }
}

/// The artifact a deployment rolls out.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ArtifactRef {
    /// Name.
    pub name: String,
    /// Release number.
    pub release: u64,
    /// Version string.
    pub version: Option<String>,
}

/// One target of a deployment.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Target {
    /// Device id.
    pub device_id: String,
    /// `pending`, `deploying`, `success`, `failed`, `offline`, `skipped`, `rolled_back` or
    /// `quarantined`.
    pub status: String,
    /// Stage index.
    pub stage: Option<u32>,
    /// The directive generation sent to it.
    pub generation: Option<u64>,
    /// Detail text.
    pub detail: String,
}

/// One stage (canary, wave, batch) of a deployment.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Stage {
    /// Index.
    pub index: u32,
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: String,
    /// Device ids in the stage.
    pub devices: Vec<String>,
}

/// One check of a gate verdict.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct GateCheck {
    /// Name.
    pub name: String,
    /// Measured value.
    pub value: Option<f64>,
    /// Limit.
    pub limit: Option<f64>,
    /// Whether it passed.
    pub pass: bool,
}

/// A gate verdict.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Gate {
    /// The stage it closes.
    pub stage: u32,
    /// The gate's name.
    pub gate: String,
    /// `pass`, `wait` or `fail`.
    pub verdict: String,
    /// Why.
    pub reason: String,
    /// The checks.
    pub checks: Vec<GateCheck>,
    /// When.
    pub at: String,
}

/// A deployment as the server returns it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Deployment {
    /// `dep_<10 hex>`.
    pub id: String,
    /// The flow.
    pub flow_id: String,
    /// The artifact.
    pub artifact: Option<ArtifactRef>,
    /// Strategy.
    pub strategy: String,
    /// `pending`, `running`, `paused`, `completed`, `failed` or `rolled_back`.
    pub status: String,
    /// Why it is in that status.
    pub status_reason: Option<String>,
    /// Totals.
    pub total_targets: u64,
    /// Targets done and healthy.
    pub completed_targets: u64,
    /// Targets failed.
    pub failed_targets: u64,
    /// Targets offline.
    pub offline_targets: u64,
    /// Targets rolled back.
    pub rolled_back_targets: u64,
    /// Targets not yet reached.
    pub pending_targets: u64,
    /// Every target.
    pub targets: Vec<Target>,
    /// The stage being worked on.
    pub current_stage: Option<u32>,
    /// The stages.
    pub stages: Vec<Stage>,
    /// Gate verdicts so far.
    pub gates: Vec<Gate>,
    /// Whether the operator must approve.
    pub awaiting_approval: bool,
    /// The engine's phase (`soaking` …).
    pub phase: Option<String>,
    /// Created.
    pub created_at: String,
    /// Started.
    pub started_at: Option<String>,
    /// Completed.
    pub completed_at: Option<String>,
}

impl Deployment {
    /// Whether the deployment has finished (completed, failed or rolled back).
    pub fn is_terminal(&self) -> bool {
        matches!(self.status.as_str(), "completed" | "failed" | "rolled_back")
    }
}

/// `{"deployments":[…]}`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct DeploymentList {
    /// The deployments.
    pub deployments: Vec<Deployment>,
}
