//! Carrying out each action of an accepted directive, and resuming one a restart interrupted.
//!
//! Every action first records the directive as applied (`working`), then reuses the agent's
//! own persisted lifecycle steps: a Switch goes through the same switch and trial as
//! `floed install`, a Commit ends a running trial early, a Rollback returns to the slot that
//! holds the named release and keeps the directive as the permit that lifts anti-rollback for
//! exactly that release. The outcome is recorded as the directive's progress.

use super::{ACTOR_COORDINATOR, AcceptedPost, DirectiveStep, clip};
use crate::agent::runner::FlowRunner;
use crate::agent::{Agent, AgentError, now_ms};
use crate::control::Outcome;
use crate::crash::crash_point;
use crate::slots::SlotName;
use crate::state::{AppliedDirective, Phase};
use floe_wire::clock::unix_secs;
use floe_wire::proto::{Action, Progress};

impl<R: FlowRunner> Agent<R>
where
    R::Flow: std::fmt::Debug,
{
    /// Records an accepted directive as applied (`working`) and starts carrying it out.
    pub async fn begin_directive(
        &mut self,
        post: AcceptedPost,
    ) -> Result<DirectiveStep, AgentError> {
        self.set_progress(&post, Progress::Working, "")?;
        match post.directive.value.action {
            Action::Stage => self.begin_stage(post),
            Action::Switch => {
                self.directive_switch(&post).await?;
                Ok(DirectiveStep::Settled)
            }
            Action::Commit => {
                self.directive_commit(&post).await?;
                Ok(DirectiveStep::Settled)
            }
            Action::Rollback => {
                self.directive_rollback(&post).await?;
                Ok(DirectiveStep::Settled)
            }
        }
    }

    /// Picks up a directive that a restart interrupted (its progress is still `working`): a
    /// Stage is verified again from its stored post and its fetch restarts (chunks already
    /// held are not fetched again); a Switch whose trial no longer runs ended while floed was
    /// down, and the last known good slot says how; a Commit or Rollback is judged by where
    /// the device stands now.
    pub async fn resume_directive(&mut self) -> Result<DirectiveStep, AgentError> {
        let Some(a) = self.state.applied_directive()? else {
            return Ok(DirectiveStep::Settled);
        };
        if a.progress != "working" {
            return Ok(DirectiveStep::Settled);
        }
        let post = match self.verify_post(&a.post, unix_secs(), None) {
            Ok(p) => p,
            Err(why) => {
                let next = AppliedDirective {
                    progress: "failed".to_string(),
                    detail: clip(&format!(
                        "interrupted by a restart and not resumable: {why}"
                    )),
                    at_ms: now_ms(),
                    ..a.clone()
                };
                let e = self.audit(
                    now_ms(),
                    ACTOR_COORDINATOR,
                    &a.action,
                    "failed",
                    &next.detail,
                );
                self.state.set_applied_directive(&next, &[e])?;
                return Ok(DirectiveStep::Settled);
            }
        };
        tracing::info!(generation = a.generation, action = %a.action, "resuming a directive");
        let good_holds = match self.lifecycle.last_good {
            Some(g) => self.slot_holds(g, &post)?,
            None => false,
        };
        match post.directive.value.action {
            Action::Stage => return self.begin_stage(post),
            Action::Switch if self.trial.is_some() => {}
            Action::Switch if good_holds => {
                let d = &post.directive.value.artifact;
                self.record_release(&d.name, d.release);
                self.set_progress(&post, Progress::Done, "committed across a restart")?;
            }
            Action::Switch => self.set_progress(
                &post,
                Progress::RolledBack,
                "the device went back to its last known good slot while restarting",
            )?,
            Action::Commit | Action::Rollback if good_holds && self.flow.is_some() => {
                self.set_progress(&post, Progress::Done, "finished across a restart")?;
            }
            Action::Commit | Action::Rollback => {
                self.set_progress(&post, Progress::Failed, "interrupted by a restart")?;
            }
        }
        Ok(DirectiveStep::Settled)
    }

    async fn directive_switch(&mut self, post: &AcceptedPost) -> Result<(), AgentError> {
        if self.lifecycle.phase != Phase::Idle {
            let why = format!("busy: phase {}", self.lifecycle.phase.as_str());
            return self.set_progress(post, Progress::Failed, &why);
        }
        if let Some(good) = self.lifecycle.last_good
            && self.slot_holds(good, post)?
            && self.flow.is_some()
        {
            return self.set_progress(post, Progress::Done, &format!("already running in {good}"));
        }
        let target = self.standby_slot();
        if !self.slot_holds(target, post)? {
            return self.set_progress(
                post,
                Progress::Failed,
                &format!("{target} does not hold this release; stage it first"),
            );
        }
        match self.switch_to_staged(target, ACTOR_COORDINATOR).await? {
            None => Ok(()),
            Some(Outcome::RolledBack { reason, .. }) => {
                self.set_progress(post, Progress::RolledBack, &reason)
            }
            Some(Outcome::Committed { slot, .. }) => {
                self.set_progress(post, Progress::Done, &format!("committed in {slot}"))
            }
        }
    }

    /// Switches to a slot staged and smoke-tested earlier and starts its trial, in the same
    /// persisted steps as an installation. Returns the outcome when the new flow failed to
    /// start and the agent rolled back at once; None while the trial runs.
    async fn switch_to_staged(
        &mut self,
        target: SlotName,
        actor: &str,
    ) -> Result<Option<Outcome>, AgentError> {
        let current = self.lifecycle.last_good;
        let record = self.slots.verify(target)?;
        let version = record.version.clone();
        let now = now_ms();
        let mut l = self.lifecycle.clone();
        l.phase = Phase::Switching;
        l.target = Some(target);
        l.target_version = Some(version.clone());
        l.since_ms = now;
        l.trial_boots = Vec::new();
        let detail = format!(
            "{} -> {target} ({version})",
            current.map_or("nothing", SlotName::as_str)
        );
        let e = self.audit(now, actor, "switch", "started", &detail);
        self.state.transition(&l, &[e])?;
        self.lifecycle = l;
        crash_point("switch:persisted");
        self.switch_and_start_trial(actor, target, &record, &version, &detail)
            .await
    }

    async fn directive_commit(&mut self, post: &AcceptedPost) -> Result<(), AgentError> {
        match self.lifecycle.phase {
            Phase::Trial if self.lifecycle.target.is_some_and(|t| {
                self.slot_holds(t, post).unwrap_or(false)
            }) =>
            {
                let out = self.commit().await?;
                let d = &post.directive.value.artifact;
                self.record_release(&d.name, d.release);
                let detail = match out {
                    Outcome::Committed { slot, .. } => format!("committed {slot} early"),
                    Outcome::RolledBack { reason, .. } => reason,
                };
                self.set_progress(post, Progress::Done, &detail)
            }
            Phase::Idle
                if self
                    .lifecycle
                    .last_good
                    .is_some_and(|g| self.slot_holds(g, post).unwrap_or(false)) =>
            {
                self.set_progress(post, Progress::Done, "already committed")
            }
            phase => self.set_progress(
                post,
                Progress::Failed,
                &format!(
                    "nothing to commit: phase {} and the last known good does not hold this release",
                    phase.as_str()
                ),
            ),
        }
    }

    async fn directive_rollback(&mut self, post: &AcceptedPost) -> Result<(), AgentError> {
        // The permit lifts anti-rollback for exactly this release, should it be staged again.
        self.state.set_rollback_permit(&post.directive_envelope)?;
        let d = &post.directive.value.artifact;
        let reason = format!("coordinator rollback to {} release {}", d.name, d.release);
        let good = self.lifecycle.last_good;
        let good_holds = match good {
            Some(g) => self.slot_holds(g, post)?,
            None => false,
        };
        match self.lifecycle.phase {
            Phase::Idle if good_holds && self.flow.is_some() => {
                self.set_progress(post, Progress::Done, "already running it")
            }
            Phase::Trial | Phase::Switching if good_holds => {
                self.rollback(ACTOR_COORDINATOR, &reason).await?;
                self.finish_rollback(post)
            }
            Phase::Idle => {
                let Some(g) = good else {
                    return self.set_progress(post, Progress::Failed, "no slot holds it");
                };
                if !self.slot_holds(g.other(), post)? {
                    return self.set_progress(
                        post,
                        Progress::Failed,
                        &format!("neither slot holds {} release {}", d.name, d.release),
                    );
                }
                match self.rollback(ACTOR_COORDINATOR, &reason).await {
                    Ok(_) => self.finish_rollback(post),
                    Err(e) => self.set_progress(post, Progress::Failed, &e.to_string()),
                }
            }
            phase => self.set_progress(
                post,
                Progress::Failed,
                &format!("busy: phase {}", phase.as_str()),
            ),
        }
    }

    fn finish_rollback(&mut self, post: &AcceptedPost) -> Result<(), AgentError> {
        match self.lifecycle.last_good {
            Some(g) if self.flow.is_some() && self.slot_holds(g, post)? => {
                self.set_progress(post, Progress::Done, &format!("running {g}"))
            }
            other => self.set_progress(
                post,
                Progress::Failed,
                &format!(
                    "the rollback ended on {} without a running flow of this release",
                    other.map_or("nothing", SlotName::as_str)
                ),
            ),
        }
    }
}
