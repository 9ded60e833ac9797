//! How far the applied directive got: its progress (`working`, `done`, `failed`,
//! `rolled_back`) is persisted with its audit entry in one transaction, so the device's report
//! says the same as the audit log, and a restart knows whether there is work to resume.

use super::{ACTOR_COORDINATOR, AcceptedPost, clip};
use crate::agent::runner::FlowRunner;
use crate::agent::{Agent, AgentError, now_ms};
use crate::control::Outcome;
use crate::state::AppliedDirective;
use floe_wire::proto::{Action, Applied, Progress};

impl<R: FlowRunner> Agent<R>
where
    R::Flow: std::fmt::Debug,
{
    /// The newest directive accepted, as the report carries it.
    pub fn applied(&self) -> Result<Option<Applied>, AgentError> {
        let Some(a) = self.state.applied_directive()? else {
            return Ok(None);
        };
        let (Some(action), Some(progress)) = (
            a.action.parse::<Action>().ok(),
            a.progress.parse::<Progress>().ok(),
        ) else {
            return Ok(None);
        };
        Ok(Some(Applied {
            generation: a.generation,
            action,
            name: a.name,
            release: a.release,
            progress,
            detail: clip(&a.detail),
        }))
    }

    pub(super) fn set_progress(
        &mut self,
        post: &AcceptedPost,
        progress: Progress,
        detail: &str,
    ) -> Result<(), AgentError> {
        let d = &post.directive.value;
        let action = d.action.as_str();
        let now = now_ms();
        let applied = AppliedDirective {
            generation: d.generation,
            action: action.to_string(),
            name: d.artifact.name.clone(),
            release: d.artifact.release,
            manifest_sha256: d.artifact.manifest_sha256.to_hex(),
            progress: progress.as_str().to_string(),
            detail: clip(detail),
            at_ms: now,
            post: post.post.clone(),
        };
        let outcome = match progress {
            Progress::Working => "accepted",
            Progress::Done => "done",
            Progress::Failed => "failed",
            Progress::RolledBack => "rolled_back",
        };
        let text = if detail.is_empty() {
            format!(
                "generation {}: {} release {}",
                d.generation, d.artifact.name, d.artifact.release
            )
        } else {
            format!(
                "generation {}: {} release {}: {detail}",
                d.generation, d.artifact.name, d.artifact.release
            )
        };
        let e = self.audit(now, ACTOR_COORDINATOR, action, outcome, &text);
        self.state.set_applied_directive(&applied, &[e])?;
        Ok(())
    }

    /// Called with every trial outcome the agent reaches by itself (from [`Agent::tick`]): a
    /// Switch directive still working is done (committed) or rolled back. The committed
    /// release is recorded for anti-rollback here, from the database, so a trial that ends
    /// after a restart records it too.
    pub fn on_trial_end(&mut self, outcome: &Outcome) -> Result<(), AgentError> {
        let Some(a) = self.state.applied_directive()? else {
            return Ok(());
        };
        if a.action != "switch" || a.progress != "working" {
            return Ok(());
        }
        let (progress, detail) = match outcome {
            Outcome::Committed { slot, .. } => {
                self.record_release(&a.name, a.release);
                (Progress::Done, format!("committed in {slot}"))
            }
            Outcome::RolledBack { reason, .. } => (Progress::RolledBack, reason.clone()),
        };
        let now = now_ms();
        let action = a.action.clone();
        let text = format!("generation {}: {detail}", a.generation);
        let next = AppliedDirective {
            progress: progress.as_str().to_string(),
            detail: clip(&detail),
            at_ms: now,
            ..a
        };
        let e = self.audit(now, ACTOR_COORDINATOR, &action, progress.as_str(), &text);
        self.state.set_applied_directive(&next, &[e])?;
        Ok(())
    }
}
