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

//!
//! The work is split by concern: this file holds the wire-facing types and the verification
//! of a post; [`actions`] carries out each action (and resumes one a restart interrupted),
//! [`stage`] runs a Stage from its fetch to its smoke test, [`progress`] records how far the
//! applied directive got, and [`report`] builds the device's signed report.

mod actions;
mod progress;
mod report;
mod stage;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Instant;

use super::runner::FlowRunner;
use super::{Agent, AgentError, now_ms};
use crate::slots::SlotName;
use crate::state::{Phase, StateError};
use floe_fabric::index::ArtifactId;
use floe_wire::artifact::keys::{self, KeyError};
use floe_wire::proto::report::{MAX_DETAIL_BYTES, PostError};
use floe_wire::proto::{
    Action, Digest, Directive, DirectivePost, DirectiveRefusal, Envelope, Manifest, SignedError,
    TrustStore, Verified, accept_directive,
};

pub use stage::{FetchError, StageRefusal};

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
#[derive(Debug, thiserror::Error)]
pub enum PostRefusal {
    /// The post does not decode.
    #[error("directive post does not decode: {0}")]
    Decode(#[source] PostError),
    /// The directive envelope inside the post does not decode.
    #[error("directive post does not decode: {0}")]
    Envelope(#[source] SignedError),
    /// The trust store could not be loaded, so nothing can be verified.
    #[error("trust store: {}: {source}", path.display())]
    Trust {
        /// The trust directory (config key `trust_store`).
        path: PathBuf,
        /// What failed.
        source: KeyError,
    },
    /// The applied generation could not be read, so the directive cannot be ordered.
    #[error("reading the applied directive: {0}")]
    State(#[source] StateError),
    /// The directive is not signed by the coordinator key of the trust store.
    #[error("directive signature: {0}")]
    Signature(#[source] SignedError),
    /// The directive verified but is not the next one for this device.
    #[error(transparent)]
    Refused(DirectiveRefusal),
    /// The manifest does not decode or does not verify against the release keys.
    #[error("manifest: {0}")]
    Manifest(#[source] SignedError),
    /// The manifest verified but is not the one the directive pins by digest.
    #[error("manifest: manifest sha256 {found} is not the {pinned} the directive names")]
    ManifestDigest {
        /// The digest of the manifest received.
        found: Digest,
        /// The digest the directive names.
        pinned: Digest,
    },
    /// The manifest's name or release is not the one the directive names.
    #[error(
        "manifest: manifest is {found_name} release {found_release}, the directive names {name} release {release}"
    )]
    ManifestNames {
        /// The manifest's artifact name.
        found_name: String,
        /// The manifest's release.
        found_release: u64,
        /// The name the directive pins.
        name: String,
        /// The release the directive pins.
        release: u64,
    },
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
        keys::load_trust(&self.cfg.trust_store).map_err(|source| PostRefusal::Trust {
            path: self.cfg.trust_store.clone(),
            source,
        })
    }

    /// Verifies a directive post received at `now` (unix seconds) and decides whether it is
    /// the next directive for this device. Nothing is recorded; see [`Agent::audit_refusal`].
    pub fn check_post(&self, bytes: &[u8], now: u64) -> Result<AcceptedPost, PostRefusal> {
        let applied = self
            .state
            .applied_directive()
            .map_err(PostRefusal::State)?
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
        let post = DirectivePost::from_bytes(bytes).map_err(PostRefusal::Decode)?;
        let trust = self.trust()?;
        let envelope =
            Envelope::from_bytes::<Directive>(&post.directive.0).map_err(PostRefusal::Envelope)?;
        let directive: Verified<Directive> = trust
            .verify_coordinator(&envelope)
            .map_err(PostRefusal::Signature)?;
        accept_directive(&directive, &self.device, applied, now).map_err(PostRefusal::Refused)?;
        let menv =
            Envelope::from_bytes::<Manifest>(&post.manifest.0).map_err(PostRefusal::Manifest)?;
        let manifest: Verified<Manifest> =
            trust.verify_release(&menv).map_err(PostRefusal::Manifest)?;
        let pinned = &directive.value.artifact;
        if manifest.digest != pinned.manifest_sha256 {
            return Err(PostRefusal::ManifestDigest {
                found: manifest.digest,
                pinned: pinned.manifest_sha256,
            });
        }
        if manifest.value.name != pinned.name || manifest.value.release != pinned.release {
            return Err(PostRefusal::ManifestNames {
                found_name: manifest.value.name.clone(),
                found_release: manifest.value.release,
                name: pinned.name.clone(),
                release: pinned.release,
            });
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

    /// Whether `slot` holds exactly the manifest the directive pins (by the database record and
    /// by its files' hashes now).
    fn slot_holds(&self, slot: SlotName, post: &AcceptedPost) -> Result<bool, AgentError> {
        let pinned = post.directive.value.artifact.manifest_sha256.to_hex();
        let Some(rel) = self.state.slot_release(slot)? else {
            return Ok(false);
        };
        // A Stage of the same release with other values (a value changed since) stages it
        // again; the other actions carry no values and act on what is staged. Secret values
        // are compared sealed: each deployment seals afresh, so a new deployment of the same
        // release with secrets stages again (and a changed secret is never missed).
        let d = &post.directive.value;
        Ok(rel.manifest_sha256 == pinned
            && self.slots.verify(slot).is_ok_and(|record| {
                d.action != Action::Stage
                    || (record.vars == d.vars && record.secret_vars == d.secret_vars)
            }))
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
}

#[cfg(test)]
mod tests;
