//! Deployments: creating, listing, commanding and reporting on deployments, paging through
//! them and their targets, and waiting for one to finish. The bodies are the contract's.

use super::error::ClientError;
use super::paging::Pages;
use super::transport::{Client, Method, Reply, query, seg, to_value};
use crate::contract::{Deployment, DeploymentInput, DeploymentPage, TargetPage};
use std::time::Duration;

impl Client {
    // ---- Deployments -------------------------------------------------------------------

    /// `POST /deployments`.
    pub fn create_deployment(&self, body: &DeploymentInput) -> Result<Reply, ClientError> {
        self.call(Method::Post, "/deployments", Some(&to_value(body)))
    }

    /// `GET /deployments?status=&flow_id=`: the first page (oldest first).
    pub fn list_deployments(
        &self,
        status: Option<&str>,
        flow_id: Option<&str>,
    ) -> Result<Reply, ClientError> {
        let q = query(&[("status", status), ("flow_id", flow_id)]);
        self.call(Method::Get, &format!("/deployments{q}"), None)
    }

    /// Every deployment matching the filters, page by page (`limit` per page; the server's
    /// default when `None`). `.all()` collects them.
    pub fn deployments(
        &self,
        status: Option<&str>,
        flow_id: Option<&str>,
        limit: Option<usize>,
    ) -> Pages<'_, DeploymentPage> {
        let q = query(&[("status", status), ("flow_id", flow_id)]);
        Pages::new(self, format!("/deployments{q}"), limit)
    }

    /// Every target of a deployment in plan order, page by page. `.all()` collects them.
    pub fn targets(&self, id: &str, limit: Option<usize>) -> Pages<'_, TargetPage> {
        Pages::new(self, format!("/deployments/{}/targets", seg(id)), limit)
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

    /// `GET /deployments/:id/incident`: the incident report of a failed or rolled-back
    /// deployment (404 for any other).
    pub fn deployment_incident(
        &self,
        id: &str,
        format: ReportFormat,
    ) -> Result<Reply, ClientError> {
        self.call(
            Method::Get,
            &format!(
                "/deployments/{}/incident?format={}",
                seg(id),
                format.as_str()
            ),
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
            if d.status.is_terminal() {
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
    /// `abort`.
    Abort,
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
            DeploymentAction::Abort => "abort",
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
