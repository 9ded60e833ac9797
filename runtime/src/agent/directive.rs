//! Carrying out the coordinator's directives, and the device's signed report about itself.
//!
//! Directives are desired state (DESIGN.md "Protocol principles"): each names this device, a
//! generation that only grows, an action and an artifact pinned by manifest digest. A post on
//! `floe/directive/1` carries the coordinator-signed directive and the release-signed manifest,
//! so a device needs nothing else to verify it. The checks run in a fixed order, each over the
//! exact bytes received: the coordinator's signature (trust store), [`accept_directive`] (this
//! device, newer generation, not expired), the release signatures over the manifest, and the
//! directive's manifest digest. Only then is the directive recorded as applied (progress
//! `working`) in the same transaction as its audit entry, so a restart neither applies it twice
//! nor forgets how far it got.
//!
//! The actions reuse the agent's own lifecycle steps, so a coordinator-driven deployment has
//! the same crash safety as `floed install`:
//! - Stage: the chunks are fetched by the fabric (the caller runs the fetch as its own task and
//!   calls [`Agent::finish_stage`] when it ends), assembled into the standby slot and
//!   smoke-tested. The device stays on its current slot.
//! - Switch: the staged slot becomes active and its trial runs; the trial's end (commit or the
//!   agent's own rollback) is reported through [`Agent::on_trial_end`].
//! - Commit: ends a running trial early as a commit, or confirms one that already committed.
//! - Rollback: returns to the slot that holds the named earlier release, using only what is on
//!   the device, and keeps the directive as the permit that lifts anti-rollback for exactly
//!   that release.

use std::collections::VecDeque;
use std::time::Instant;

use ed25519_dalek::SigningKey;

use super::runner::FlowRunner;
use super::{Agent, AgentError, Outcome, bundle, crash::crash_point, now_ms};
use crate::health::{self, Status};
use crate::releases::ReleaseStore;
use crate::slots::{SlotError, SlotName};
use crate::state::{AppliedDirective, DB_FILE, Lifecycle, Phase, SlotRelease};
use floe_fabric::index::ArtifactId;
use floe_fabric::signed::{SignedStore, index_of};
use floe_fabric::store::FabricStore;
use floe_wire::artifact::{self, ChunkStore, DeviceFacts, keys};
use floe_wire::clock::unix_secs;
use floe_wire::proto::report::{MAX_DETAIL_BYTES, MAX_LABELS, REPORT_SCHEMA};
use floe_wire::proto::{
    Action, Applied, DeviceReport, Directive, DirectivePost, DirectiveRefusal, Envelope, Facts,
    Fixed, HealthLevel, HealthSummary, Label, Manifest, Progress, SlotInfo, TrustStore, Verified,
    accept_directive,
};

/// The actor recorded for what the coordinator asked.
pub const ACTOR_COORDINATOR: &str = "coordinator";

/// How many refused directives are remembered so that a re-sent one is audited only once.
pub const REFUSALS_REMEMBERED: usize = 64;

/// A post whose directive and manifest both verified and whose directive this device applies
/// next.
#[derive(Debug, Clone)]
pub struct AcceptedPost {
    /// The verified directive.
    pub directive: Verified<Directive>,
    /// The directive envelope's exact bytes (kept as the rollback permit).
    pub directive_envelope: Vec<u8>,
    /// The verified manifest the directive names.
    pub manifest: Verified<Manifest>,
    /// The post's exact bytes (kept with the applied directive for resuming).
    pub post: Vec<u8>,
}

/// Why a directive post is not carried out.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PostRefusal {
    /// The post or the directive envelope does not decode.
    #[error("directive post does not decode: {0}")]
    Decode(String),
    /// The trust store could not be loaded, so nothing can be verified.
    #[error("trust store: {0}")]
    Trust(String),
    /// The directive is not signed by the coordinator key of the trust store.
    #[error("directive signature: {0}")]
    Signature(String),
    /// The directive verified but is not the next one for this device.
    #[error(transparent)]
    Refused(DirectiveRefusal),
    /// The manifest does not verify or is not the one the directive pins.
    #[error("manifest: {0}")]
    Manifest(String),
}

impl PostRefusal {
    /// Refusals that are ordinary traffic rather than events worth an audit record: directives
    /// for other devices (the topic is shared by the fleet) and re-sent copies of the directive
    /// already applied (the coordinator re-posts until it sees the report).
    pub fn is_routine(&self) -> bool {
        match self {
            PostRefusal::Refused(DirectiveRefusal::Device { .. }) => true,
            PostRefusal::Refused(DirectiveRefusal::Stale { expected, found }) => expected == found,
            _ => false,
        }
    }
}

/// What the caller does next after [`Agent::begin_directive`].
#[derive(Debug)]
pub enum DirectiveStep {
    /// Nothing: the directive is done or failed, or a trial now runs.
    Settled,
    /// Fetch this artifact with the fabric, then call [`Agent::finish_stage`].
    Fetch {
        /// The fabric's artifact id (from the manifest's chunk list).
        id: ArtifactId,
        /// The directive being carried out.
        post: Box<AcceptedPost>,
    },
}

/// A bounded memory of refused directives (by the digest of their signed bytes), so that the
/// same refused directive re-sent by gossip is audited once. At the bound the oldest is
/// forgotten.
#[derive(Debug, Default)]
pub struct RefusalMemory {
    seen: VecDeque<[u8; 32]>,
}

impl RefusalMemory {
    /// Remembers `bytes`; returns false when they were already remembered.
    pub fn first_time(&mut self, bytes: &[u8]) -> bool {
        let digest: [u8; 32] = floe_wire::proto::Digest::of(bytes).0;
        if self.seen.contains(&digest) {
            return false;
        }
        if self.seen.len() >= REFUSALS_REMEMBERED {
            self.seen.pop_front();
        }
        self.seen.push_back(digest);
        true
    }
}

/// Cuts a detail to the report's cap on a character boundary, without control characters.
fn clip(detail: &str) -> String {
    let mut out = String::new();
    for c in detail.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if out.len() + c.len_utf8() > MAX_DETAIL_BYTES {
            break;
        }
        out.push(c);
    }
    out
}

impl<R: FlowRunner> Agent<R>
where
    R::Flow: std::fmt::Debug,
{
    fn trust(&self) -> Result<TrustStore, PostRefusal> {
        keys::load_trust(&self.cfg.trust_store)
            .map_err(|e| PostRefusal::Trust(format!("{}: {e}", self.cfg.trust_store.display())))
    }

    /// Verifies a directive post received at `now` (unix seconds) and decides whether it is
    /// the next directive for this device. Nothing is recorded; see [`Agent::audit_refusal`].
    pub fn check_post(&self, bytes: &[u8], now: u64) -> Result<AcceptedPost, PostRefusal> {
        let applied = self
            .state
            .applied_directive()
            .map_err(|e| PostRefusal::Trust(format!("reading the applied directive: {e}")))?
            .map(|a| a.generation);
        self.verify_post(bytes, now, applied)
    }

    /// The checks of [`Agent::check_post`] against a given applied generation (None when a
    /// stored post is verified again to resume it).
    fn verify_post(
        &self,
        bytes: &[u8],
        now: u64,
        applied: Option<u64>,
    ) -> Result<AcceptedPost, PostRefusal> {
        let post =
            DirectivePost::from_bytes(bytes).map_err(|e| PostRefusal::Decode(e.to_string()))?;
        let trust = self.trust()?;
        let envelope = Envelope::from_bytes::<Directive>(&post.directive.0)
            .map_err(|e| PostRefusal::Decode(e.to_string()))?;
        let directive: Verified<Directive> = trust
            .verify_coordinator(&envelope)
            .map_err(|e| PostRefusal::Signature(e.to_string()))?;
        accept_directive(&directive, &self.device, applied, now).map_err(PostRefusal::Refused)?;
        let menv = Envelope::from_bytes::<Manifest>(&post.manifest.0)
            .map_err(|e| PostRefusal::Manifest(e.to_string()))?;
        let manifest: Verified<Manifest> = trust
            .verify_release(&menv)
            .map_err(|e| PostRefusal::Manifest(e.to_string()))?;
        let pinned = &directive.value.artifact;
        if manifest.digest != pinned.manifest_sha256 {
            return Err(PostRefusal::Manifest(format!(
                "manifest sha256 {} is not the {} the directive names",
                manifest.digest, pinned.manifest_sha256
            )));
        }
        if manifest.value.name != pinned.name || manifest.value.release != pinned.release {
            return Err(PostRefusal::Manifest(format!(
                "manifest is {} release {}, the directive names {} release {}",
                manifest.value.name, manifest.value.release, pinned.name, pinned.release
            )));
        }
        Ok(AcceptedPost {
            directive,
            directive_envelope: post.directive.0,
            manifest,
            post: bytes.to_vec(),
        })
    }

    /// Records a refused directive in the audit log (actor `coordinator`, outcome `refused`).
    pub fn audit_refusal(&mut self, refusal: &PostRefusal) -> Result<(), AgentError> {
        tracing::warn!(%refusal, "directive refused");
        let e = self.audit(
            now_ms(),
            ACTOR_COORDINATOR,
            "directive",
            "refused",
            &refusal.to_string(),
        );
        self.state.audit(&e)?;
        Ok(())
    }

    /// Records that the coordinator was heard from at `at` (a post carrying its signature),
    /// for the connectivity layer of health.
    pub fn note_coordinator(&mut self, at: Instant) {
        self.last_heartbeat = Some(at);
    }

    /// Records how many peers the fabric is connected to, for the connectivity layer.
    pub fn note_peers(&mut self, peers: usize) {
        self.peers = peers;
    }

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

    fn set_progress(
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

    /// Whether `slot` holds exactly the manifest the directive pins (by the database record and
    /// by its files' hashes now).
    fn slot_holds(&self, slot: SlotName, post: &AcceptedPost) -> Result<bool, AgentError> {
        let pinned = post.directive.value.artifact.manifest_sha256.to_hex();
        let Some(rel) = self.state.slot_release(slot)? else {
            return Ok(false);
        };
        Ok(rel.manifest_sha256 == pinned && self.slots.verify(slot).is_ok())
    }

    /// The slot a Stage fills and a Switch activates: the one that is not the last known good.
    fn standby_slot(&self) -> SlotName {
        self.lifecycle
            .last_good
            .map_or(SlotName::Blue, SlotName::other)
    }

    /// Whether a verified directive must wait: a Stage or Switch that arrives while a trial
    /// (or a switch) is still running would replace the slot the device may have to roll back
    /// to, so it is left unapplied (not recorded) and taken when the coordinator posts it again
    /// after the trial. Commit and Rollback are never deferred: they end a trial.
    pub fn defers(&self, post: &AcceptedPost) -> bool {
        matches!(post.directive.value.action, Action::Stage | Action::Switch)
            && matches!(self.lifecycle.phase, Phase::Trial | Phase::Switching)
    }

    /// Whether no installation, switch or trial is in progress.
    pub fn is_idle(&self) -> bool {
        self.lifecycle.phase == Phase::Idle
    }

    /// The lifecycle phase, for logs.
    pub fn lifecycle_phase(&self) -> &'static str {
        self.lifecycle.phase.as_str()
    }

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
                if let Err(e) = bundle::record_committed(&self.cfg, &d.name, d.release) {
                    tracing::error!(error = %e, "could not record the committed release");
                }
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

    fn begin_stage(&mut self, post: AcceptedPost) -> Result<DirectiveStep, AgentError> {
        if self.lifecycle.phase != Phase::Idle {
            let why = format!("busy: phase {}", self.lifecycle.phase.as_str());
            self.set_progress(&post, Progress::Failed, &why)?;
            return Ok(DirectiveStep::Settled);
        }
        if let Err(why) = self.install_allowed(&post) {
            self.set_progress(&post, Progress::Failed, &why)?;
            return Ok(DirectiveStep::Settled);
        }
        let target = self.standby_slot();
        if self.slot_holds(target, &post)? {
            self.set_progress(
                &post,
                Progress::Done,
                &format!("already staged in {target}"),
            )?;
            return Ok(DirectiveStep::Settled);
        }
        let index = match index_of(&post.manifest.value) {
            Ok(i) => i,
            Err(e) => {
                self.set_progress(&post, Progress::Failed, &format!("chunk index: {e}"))?;
                return Ok(DirectiveStep::Settled);
            }
        };
        // The index comes from the verified manifest, so the fabric need not ask peers for it.
        let stored = SignedStore::open(&self.cfg.data_dir)
            .and_then(|s| s.put_index(&index))
            .map_err(|e| e.to_string());
        if let Err(e) = stored {
            self.set_progress(&post, Progress::Failed, &format!("storing the index: {e}"))?;
            return Ok(DirectiveStep::Settled);
        }
        let e = self.audit(
            now_ms(),
            ACTOR_COORDINATOR,
            "fetch",
            "started",
            &format!(
                "{} release {}: {} chunks",
                post.manifest.value.name,
                post.manifest.value.release,
                index.chunks.len()
            ),
        );
        self.state.audit(&e)?;
        Ok(DirectiveStep::Fetch {
            id: index.id(),
            post: Box::new(post),
        })
    }

    /// The install decision for a staged release: expiry, architecture, device type, runtime,
    /// disk, and anti-rollback (lifted only by a kept rollback permit naming exactly it).
    fn install_allowed(&self, post: &AcceptedPost) -> Result<(), String> {
        let releases =
            ReleaseStore::open(&self.cfg.data_dir.join(DB_FILE)).map_err(|e| e.to_string())?;
        let highest = releases
            .highest(&post.manifest.value.name)
            .map_err(|e| e.to_string())?;
        let trust = self.trust().map_err(|e| e.to_string())?;
        let permit: Option<Verified<Directive>> = self
            .state
            .rollback_permit()
            .map_err(|e| e.to_string())?
            .and_then(|bytes| Envelope::from_bytes::<Directive>(&bytes).ok())
            .and_then(|env| trust.verify_coordinator(&env).ok());
        let facts = DeviceFacts {
            device_id: self.device.clone(),
            arch: self.cfg.arch.clone(),
            device_type: self.cfg.device_type.clone(),
            runtime_version: env!("CARGO_PKG_VERSION").to_string(),
            free_disk: free_bytes(&self.cfg.data_dir),
            now: unix_secs(),
        };
        artifact::install_decision(&post.manifest, &facts, highest, permit.as_ref())
            .map_err(|e| e.to_string())
    }

    /// Ends a Stage once its fetch has ended: assembles the fetched chunks into the standby
    /// slot and smoke-tests it. A directive superseded while the fetch ran is left alone.
    pub async fn finish_stage(
        &mut self,
        post: &AcceptedPost,
        fetched: Result<(), String>,
    ) -> Result<(), AgentError> {
        let current = self.state.applied_directive()?.map(|a| a.generation);
        if current != Some(post.directive.value.generation) {
            tracing::info!(
                generation = post.directive.value.generation,
                "a newer directive superseded this stage"
            );
            return Ok(());
        }
        if let Err(why) = fetched {
            return self.set_progress(post, Progress::Failed, &format!("fetch: {why}"));
        }
        if self.lifecycle.phase != Phase::Idle {
            let why = format!("busy: phase {}", self.lifecycle.phase.as_str());
            return self.set_progress(post, Progress::Failed, &why);
        }
        let m = &post.manifest.value;
        let record = match super::bundle::record_of(m) {
            Ok(r) => r,
            Err(e) => return self.set_progress(post, Progress::Failed, &e.to_string()),
        };
        let target = self.standby_slot();
        let version = m.version.clone();
        // The slot's old content is about to be replaced: it no longer holds any release.
        self.state.set_slot_release(target, None)?;
        let now = now_ms();
        let mut l = self.lifecycle.clone();
        l.phase = Phase::Staging;
        l.target = Some(target);
        l.target_version = Some(version.clone());
        l.since_ms = now;
        let e = self.audit(
            now,
            ACTOR_COORDINATOR,
            "stage",
            "started",
            &format!("{version} into {target}"),
        );
        self.state.transition(&l, &[e])?;
        self.lifecycle = l;
        crash_point("stage:persisted");
        let store = match ChunkStore::open(&self.cfg.data_dir) {
            Ok(s) => s,
            Err(e) => {
                let why = format!("opening the chunk store: {e}");
                self.abort_install(ACTOR_COORDINATOR, "stage", &why, true)?;
                return self.set_progress(post, Progress::Failed, &why);
            }
        };
        let manifest = m.clone();
        let staged = self.slots.stage_with(target, &record, |staging| {
            let io = |source| SlotError::Io {
                op: "assembling the artifact into",
                path: staging.to_path_buf(),
                source,
            };
            // The artifact layer assembles into a directory that must not exist yet.
            std::fs::remove_dir(staging).map_err(io)?;
            artifact::assemble(&manifest, &store, staging)
                .map_err(|e| io(std::io::Error::other(e.to_string())))
        });
        if let Err(err) = staged {
            let why = err.to_string();
            self.abort_install(ACTOR_COORDINATOR, "stage", &why, true)?;
            return self.set_progress(post, Progress::Failed, &why);
        }
        crash_point("stage:done");
        if let Err(reason) = self
            .record_staged_and_smoke(ACTOR_COORDINATOR, target, &version)
            .await?
        {
            return self.set_progress(post, Progress::Failed, &format!("smoke test: {reason}"));
        }
        let now = now_ms();
        let idle = Lifecycle {
            phase: Phase::Idle,
            last_good: self.lifecycle.last_good,
            target: None,
            target_version: None,
            since_ms: now,
            trial_boots: Vec::new(),
        };
        let e = self.audit(
            now,
            ACTOR_COORDINATOR,
            "smoke",
            "ok",
            &format!("{version} in {target}; staged, waiting for the switch"),
        );
        self.state.transition(&idle, &[e])?;
        self.lifecycle = idle;
        self.state.set_slot_release(
            target,
            Some(&SlotRelease {
                name: m.name.clone(),
                release: m.release,
                version,
                manifest_sha256: post.directive.value.artifact.manifest_sha256.to_hex(),
            }),
        )?;
        self.set_progress(post, Progress::Done, &format!("staged in {target}"))
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
        let record = match self.slots.verify(target) {
            Ok(r) => r,
            Err(e) => return Err(e.into()),
        };
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
                if let Err(e) = bundle::record_committed(&self.cfg, &a.name, a.release) {
                    tracing::error!(error = %e, "could not record the committed release");
                }
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

    async fn directive_commit(&mut self, post: &AcceptedPost) -> Result<(), AgentError> {
        match self.lifecycle.phase {
            Phase::Trial if self.lifecycle.target.is_some_and(|t| {
                self.slot_holds(t, post).unwrap_or(false)
            }) =>
            {
                let out = self.commit().await?;
                let d = &post.directive.value.artifact;
                if let Err(e) = bundle::record_committed(&self.cfg, &d.name, d.release) {
                    tracing::error!(error = %e, "could not record the committed release");
                }
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
                restarts: u32::try_from(self.assessment.restarts).unwrap_or(u32::MAX),
            }),
        })
    }
}

// The statvfs field types are 32-bit on armv7, so the conversions are needed there.
#[allow(clippy::useless_conversion)]
fn free_bytes(dir: &std::path::Path) -> u64 {
    nix::sys::statvfs::statvfs(dir)
        .map(|s| u64::from(s.blocks_available()).saturating_mul(u64::from(s.fragment_size())))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::agent::engine::EngineRunner;
    use crate::config::Config;
    use floe_wire::artifact::{BuildSpec, BundleReader, build};
    use floe_wire::proto::directive::DIRECTIVE_SCHEMA;
    use floe_wire::proto::report::POST_SCHEMA;
    use floe_wire::proto::{ArtifactRef, ByteBuf, Digest, TrustedKey, open_report};

    struct Keys {
        release: SigningKey,
        coordinator: SigningKey,
        rogue: SigningKey,
    }

    fn keys() -> Keys {
        Keys {
            release: SigningKey::from_bytes(&[1; 32]),
            coordinator: SigningKey::from_bytes(&[2; 32]),
            rogue: SigningKey::from_bytes(&[3; 32]),
        }
    }

    fn public(k: &SigningKey) -> TrustedKey {
        TrustedKey::new(Fixed(k.verifying_key().to_bytes()))
    }

    /// A signed manifest envelope and its digest, signed by `key`.
    fn manifest(dir: &std::path::Path, key: &SigningKey, release: u64) -> (Vec<u8>, Digest) {
        let now = unix_secs();
        let spec = BuildSpec::new("temp", "1.0.0", release, now, now + 3600);
        let out = dir.join(format!(
            "m{release}-{}.floe",
            key.verifying_key().as_bytes()[0]
        ));
        build(
            &spec,
            b"{\"nodes\":[],\"connections\":[]}",
            None,
            &[key],
            &out,
        )
        .unwrap();
        let env = BundleReader::open(&out).unwrap().envelope_bytes;
        let digest = Digest::of(&Envelope::from_bytes::<Manifest>(&env).unwrap().payload.0);
        (env, digest)
    }

    #[allow(clippy::too_many_arguments)]
    fn post(
        key: &SigningKey,
        device: &str,
        generation: u64,
        action: Action,
        digest: Digest,
        manifest: &[u8],
        expires_in: i64,
    ) -> Vec<u8> {
        let now = unix_secs();
        let d = Directive {
            schema: DIRECTIVE_SCHEMA,
            device_id: device.into(),
            generation,
            action,
            artifact: ArtifactRef {
                name: "temp".into(),
                release: 1,
                manifest_sha256: digest,
            },
            issued_at: now - 10,
            expires: now.saturating_add_signed(expires_in),
        };
        DirectivePost {
            schema: POST_SCHEMA,
            directive: ByteBuf(Envelope::sign(&d, &[key]).unwrap().to_bytes().unwrap()),
            manifest: ByteBuf(manifest.to_vec()),
        }
        .to_bytes()
        .unwrap()
    }

    async fn agent(dir: &std::path::Path, k: &Keys) -> Agent<EngineRunner> {
        let cfg = Config::minimal(&dir.join("data"));
        let trust = TrustStore::new(vec![public(&k.release)], public(&k.coordinator));
        keys::write_trust(&cfg.trust_store, &trust).unwrap();
        Agent::open(cfg, EngineRunner::default()).await.unwrap()
    }

    #[tokio::test]
    async fn posts_are_verified_in_order_and_refusals_name_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let k = keys();
        let mut a = agent(dir.path(), &k).await;
        let me = a.device().to_string();
        let now = unix_secs();
        let (env, digest) = manifest(dir.path(), &k.release, 1);
        let good = post(&k.coordinator, &me, 1, Action::Commit, digest, &env, 60);
        let accepted = a.check_post(&good, now).unwrap();
        assert_eq!(accepted.directive.value.generation, 1);
        assert_eq!(accepted.manifest.digest, digest);

        let garbage = a.check_post(b"not a post", now).unwrap_err();
        assert!(matches!(garbage, PostRefusal::Decode(_)), "{garbage}");
        let forged = post(&k.rogue, &me, 1, Action::Commit, digest, &env, 60);
        let err = a.check_post(&forged, now).unwrap_err();
        assert!(matches!(err, PostRefusal::Signature(_)), "{err}");
        assert!(!err.is_routine());
        let other = post(
            &k.coordinator,
            "someone-else",
            1,
            Action::Commit,
            digest,
            &env,
            60,
        );
        let err = a.check_post(&other, now).unwrap_err();
        assert!(err.is_routine(), "{err}");
        let expired = post(&k.coordinator, &me, 1, Action::Commit, digest, &env, -1);
        let err = a.check_post(&expired, now).unwrap_err();
        assert!(err.to_string().contains("expired"), "{err}");
        assert!(!err.is_routine());
        let wrong_digest = post(
            &k.coordinator,
            &me,
            1,
            Action::Commit,
            Digest::of(b"x"),
            &env,
            60,
        );
        let err = a.check_post(&wrong_digest, now).unwrap_err();
        assert!(matches!(err, PostRefusal::Manifest(_)), "{err}");
        let (rogue_env, rogue_digest) = manifest(dir.path(), &k.rogue, 1);
        let rogue_manifest = post(
            &k.coordinator,
            &me,
            1,
            Action::Commit,
            rogue_digest,
            &rogue_env,
            60,
        );
        let err = a.check_post(&rogue_manifest, now).unwrap_err();
        assert!(matches!(err, PostRefusal::Manifest(_)), "{err}");

        // Refusals that are not routine are audited, by the coordinator actor.
        a.audit_refusal(&a.check_post(&forged, now).unwrap_err())
            .unwrap();
        let log = a.state.audit_log(5).unwrap();
        let last = log.last().unwrap();
        assert_eq!(
            (last.actor.as_str(), last.outcome.as_str()),
            ("coordinator", "refused")
        );
        assert!(last.detail.contains("signature"), "{}", last.detail);

        // Nothing was committed, so the commit fails; the generation is still applied and
        // survives a reopen, after which the same generation is routine and an older one is
        // a refusal worth auditing.
        let step = a.begin_directive(accepted).await.unwrap();
        assert!(matches!(step, DirectiveStep::Settled));
        let applied = a.applied().unwrap().unwrap();
        assert_eq!(
            (applied.generation, applied.action, applied.progress),
            (1, Action::Commit, Progress::Failed)
        );
        a.shutdown().await;
        let a = agent_reopen(dir.path()).await;
        let err = a.check_post(&good, now).unwrap_err();
        assert!(err.is_routine(), "{err}");
        let newer = post(&k.coordinator, &me, 2, Action::Commit, digest, &env, 60);
        assert!(a.check_post(&newer, now).is_ok());
        let older = post(&k.coordinator, &me, 0, Action::Commit, digest, &env, 60);
        let err = a.check_post(&older, now).unwrap_err();
        assert!(!err.is_routine(), "{err}");
    }

    async fn agent_reopen(dir: &std::path::Path) -> Agent<EngineRunner> {
        Agent::open(Config::minimal(&dir.join("data")), EngineRunner::default())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn rollback_with_nothing_to_return_to_fails_and_keeps_the_permit() {
        let dir = tempfile::tempdir().unwrap();
        let k = keys();
        let mut a = agent(dir.path(), &k).await;
        let me = a.device().to_string();
        let (env, digest) = manifest(dir.path(), &k.release, 1);
        let bytes = post(&k.coordinator, &me, 3, Action::Rollback, digest, &env, 60);
        let accepted = a.check_post(&bytes, unix_secs()).unwrap();
        let permit = accepted.directive_envelope.clone();
        a.begin_directive(accepted).await.unwrap();
        let applied = a.applied().unwrap().unwrap();
        assert_eq!(applied.progress, Progress::Failed);
        assert!(applied.detail.contains("no slot"), "{}", applied.detail);
        assert_eq!(a.state.rollback_permit().unwrap(), Some(permit));
    }

    #[tokio::test]
    async fn the_report_is_self_signed_and_carries_the_applied_directive() {
        let dir = tempfile::tempdir().unwrap();
        let k = keys();
        let mut a = agent(dir.path(), &k).await;
        let me = a.device().to_string();
        let (env, digest) = manifest(dir.path(), &k.release, 1);
        let bytes = post(&k.coordinator, &me, 4, Action::Switch, digest, &env, 60);
        let accepted = a.check_post(&bytes, unix_secs()).unwrap();
        a.begin_directive(accepted).await.unwrap();
        let key = floe_wire::identity::load_or_generate(&a.config().data_dir).unwrap();
        let report = a.device_report(42, &key).unwrap();
        let signed = Envelope::sign(&report, &[&key])
            .unwrap()
            .to_bytes()
            .unwrap();
        let opened = open_report(&signed).unwrap();
        assert_eq!(opened.device_id, me);
        assert_eq!(opened.seq, 42);
        assert_eq!(opened.active, None);
        let applied = opened.applied.unwrap();
        assert_eq!((applied.generation, applied.action), (4, Action::Switch));
        // Nothing was staged, so the switch failed and says why.
        assert_eq!(applied.progress, Progress::Failed);
        assert!(
            applied.detail.contains("stage it first"),
            "{}",
            applied.detail
        );
    }

    #[tokio::test]
    async fn a_stage_interrupted_by_a_restart_resumes_its_fetch() {
        let dir = tempfile::tempdir().unwrap();
        let k = keys();
        let mut a = agent(dir.path(), &k).await;
        let me = a.device().to_string();
        let (env, digest) = manifest(dir.path(), &k.release, 1);
        let bytes = post(&k.coordinator, &me, 5, Action::Stage, digest, &env, 60);
        let accepted = a.check_post(&bytes, unix_secs()).unwrap();
        let DirectiveStep::Fetch { id, .. } = a.begin_directive(accepted).await.unwrap() else {
            panic!("a stage of an artifact the device lacks must fetch");
        };
        let applied = a.applied().unwrap().unwrap();
        assert_eq!(applied.progress, Progress::Working);
        a.shutdown().await;
        // After the restart the same generation is routine traffic, so only resuming it from
        // the stored post gets the fetch going again.
        let mut a = agent_reopen(dir.path()).await;
        assert!(a.check_post(&bytes, unix_secs()).unwrap_err().is_routine());
        let DirectiveStep::Fetch { id: again, post } = a.resume_directive().await.unwrap() else {
            panic!("the interrupted stage was not resumed");
        };
        assert_eq!(again, id);
        assert_eq!(post.directive.value.generation, 5);
        // A fetch that fails ends the stage as failed, with the reason.
        a.finish_stage(&post, Err("no peer holds it".into()))
            .await
            .unwrap();
        let applied = a.applied().unwrap().unwrap();
        assert_eq!(applied.progress, Progress::Failed);
        assert!(
            applied.detail.contains("no peer holds it"),
            "{}",
            applied.detail
        );
        assert!(matches!(
            a.resume_directive().await.unwrap(),
            DirectiveStep::Settled
        ));
    }

    #[test]
    fn refusal_memory_is_bounded_and_forgets_the_oldest() {
        let mut m = RefusalMemory::default();
        assert!(m.first_time(b"a"));
        assert!(!m.first_time(b"a"));
        for i in 0..REFUSALS_REMEMBERED {
            assert!(m.first_time(&i.to_le_bytes()));
        }
        assert_eq!(m.seen.len(), REFUSALS_REMEMBERED);
        assert!(m.first_time(b"a"), "the oldest entry was forgotten");
    }

    #[test]
    fn details_are_clipped_to_the_report_cap_without_control_characters() {
        let long = "é\n".repeat(MAX_DETAIL_BYTES);
        let c = clip(&long);
        assert!(c.len() <= MAX_DETAIL_BYTES);
        assert!(!c.chars().any(char::is_control));
    }
}
