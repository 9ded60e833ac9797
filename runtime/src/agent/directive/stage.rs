//! A Stage directive, from the decision to fetch to the smoke-tested standby slot.
//!
//! [`Agent::begin_stage`] decides whether the release may be installed here at all (the same
//! install decision as a bundle on disk, with a kept rollback permit as the only way past
//! anti-rollback), stores the chunk index taken from the verified manifest and hands the
//! fetch to the caller, so the main loop never waits on the network. [`Agent::finish_stage`]
//! takes over when the fetch ends: it assembles the chunks into the standby slot and runs the
//! same persisted stage and smoke steps as `floed install`. The device stays on its current
//! slot throughout; the switch is a directive of its own.

use super::{ACTOR_COORDINATOR, AcceptedPost, DirectiveStep, PostRefusal};
use crate::agent::runner::FlowRunner;
use crate::agent::{Agent, AgentError, bundle, now_ms};
use crate::crash::crash_point;
use crate::releases::{ReleaseError, ReleaseStore};
use crate::slots::VersionRecord;
use crate::state::{DB_FILE, Lifecycle, Phase, SlotRelease, StateError};
use floe_fabric::FabricError;
use floe_fabric::signed::{SignedStore, index_of};
use floe_fabric::store::FabricStore;
use floe_wire::artifact::{self, ChunkStore, Refusal};
use floe_wire::proto::{Directive, Envelope, Progress, Verified};

/// Why a staged release may not be installed on this device.
#[derive(Debug, thiserror::Error)]
pub enum StageRefusal {
    /// The anti-rollback table could not be read.
    #[error(transparent)]
    Releases(#[from] ReleaseError),
    /// The trust store (needed to check a kept rollback permit) could not be loaded.
    #[error(transparent)]
    Trust(#[from] PostRefusal),
    /// The kept rollback permit could not be read.
    #[error(transparent)]
    State(#[from] StateError),
    /// The install decision refused the release.
    #[error(transparent)]
    Refused(#[from] Refusal),
}

/// Why the fetch of a staged artifact did not bring every chunk.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The fabric refused or failed the fetch.
    #[error(transparent)]
    Fabric(#[from] FabricError),
    /// No complete copy arrived within the fetch timeout.
    #[error("no complete copy within {secs} s")]
    TimedOut {
        /// The fetch timeout, in seconds.
        secs: u64,
    },
}

impl<R: FlowRunner> Agent<R>
where
    R::Flow: std::fmt::Debug,
{
    pub(super) fn begin_stage(&mut self, post: AcceptedPost) -> Result<DirectiveStep, AgentError> {
        if self.lifecycle.phase != Phase::Idle {
            let why = format!("busy: phase {}", self.lifecycle.phase.as_str());
            self.set_progress(&post, Progress::Failed, &why)?;
            return Ok(DirectiveStep::Settled);
        }
        if let Err(why) = self.install_allowed(&post) {
            self.set_progress(&post, Progress::Failed, &why.to_string())?;
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
        let stored = SignedStore::open(&self.cfg.data_dir).and_then(|s| s.put_index(&index));
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
    fn install_allowed(&self, post: &AcceptedPost) -> Result<(), StageRefusal> {
        let releases = ReleaseStore::open(&self.cfg.data_dir.join(DB_FILE))?;
        let highest = releases.highest(&post.manifest.value.name)?;
        let trust = self.trust()?;
        let permit: Option<Verified<Directive>> = self
            .state
            .rollback_permit()?
            .and_then(|bytes| Envelope::from_bytes::<Directive>(&bytes).ok())
            .and_then(|env| trust.verify_coordinator(&env).ok());
        let facts = bundle::device_facts(&self.cfg, &self.device);
        artifact::install_decision(&post.manifest, &facts, highest, permit.as_ref())?;
        releases.remember_content(
            &post.manifest.value.name,
            post.manifest.value.release,
            &post.manifest.digest.to_hex(),
        )?;
        Ok(())
    }

    /// Ends a Stage once its fetch has ended: assembles the fetched chunks into the standby
    /// slot and smoke-tests it. A directive superseded while the fetch ran is left alone.
    pub async fn finish_stage(
        &mut self,
        post: &AcceptedPost,
        fetched: Result<(), FetchError>,
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
        // A secret this device cannot open fails the Stage now, by name (the values are
        // dropped at once; they are opened again, in memory, when the flow starts).
        if let Err(e) = self.opener.open_all(&post.directive.value.secret_vars) {
            return self.set_progress(post, Progress::Failed, &e.to_string());
        }
        let m = &post.manifest.value;
        let record = match bundle::record_of(m) {
            // The flow runs with the values the signed directive carries for this device.
            Ok(r) => VersionRecord {
                vars: post.directive.value.vars.clone(),
                secret_vars: post.directive.value.secret_vars.clone(),
                ..r
            },
            Err(e) => return self.set_progress(post, Progress::Failed, &e.to_string()),
        };
        let target = self.standby_slot();
        let version = m.version.clone();
        // The slot's old content is about to be replaced: it no longer holds any release.
        self.state.set_slot_release(target, None)?;
        self.persist_staging(ACTOR_COORDINATOR, target, &version)?;
        let store = match ChunkStore::open(&self.cfg.data_dir) {
            Ok(s) => s,
            Err(e) => {
                let why = format!("opening the chunk store: {e}");
                self.abort_install(ACTOR_COORDINATOR, "stage", &why, true)?;
                return self.set_progress(post, Progress::Failed, &why);
            }
        };
        let staged = self.slots.stage_with(target, &record, |staging| {
            bundle::assemble_into(m, &store, staging)
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
        let idle = Lifecycle::idle(self.lifecycle.last_good, now);
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
}
