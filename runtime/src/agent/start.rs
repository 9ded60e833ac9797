//! Starting and stopping the flow of a slot, bounded in time and shielded from panics.
//!
//! Every path that runs a flow (recovery, the smoke test, the switch, a rollback) starts it
//! here, so a new version that hangs or panics while starting, or panics while stopping,
//! cannot take floed down: the start is bounded by the trial's start timeout and both ends run
//! under `catch_unwind`. A failure is a typed [`StartError`]; the callers turn it into a
//! rollback or an audit record.

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::time::Duration;

use futures::FutureExt;

use super::Agent;
use super::runner::{FlowRunner, RunnerError, RunningFlow, StartSpec};
use crate::slots::{SlotError, SlotName, VersionRecord};

/// Why a slot's flow did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The slot's files do not match their version record.
    #[error(transparent)]
    Verify(#[from] SlotError),
    /// The start did not finish within the start timeout.
    #[error("did not start within {ms} ms (hung)")]
    Hung {
        /// The start timeout, in milliseconds.
        ms: u128,
    },
    /// The runner panicked while starting.
    #[error("panicked while starting: {message}")]
    Panicked {
        /// The panic's message.
        message: String,
    },
    /// The runner refused to start the flow.
    #[error(transparent)]
    Runner(#[from] RunnerError),
    /// A secret value of the slot's record does not open with this device's key.
    #[error(transparent)]
    Secret(#[from] super::secrets::SecretError),
    /// The runner refused to start a flow that has secret values; its report, with every
    /// secret value replaced by `<secret>` (the error itself could quote one).
    #[error("{0}")]
    Redacted(String),
}

impl<R: FlowRunner> Agent<R>
where
    R::Flow: std::fmt::Debug,
{
    /// Verifies and starts a slot's flow, bounding the start with a timeout and catching a
    /// panic, so a new version that hangs or panics while starting cannot take floed down.
    pub(super) async fn start_slot(
        &mut self,
        slot: SlotName,
        muted: bool,
    ) -> Result<(R::Flow, VersionRecord), StartError> {
        let record = self.slots.verify(slot)?;
        let dir = self.slots.dir(slot);
        let flow = self.start_verified(slot, &dir, &record, muted).await?;
        Ok((flow, record))
    }

    /// Starts a verified slot's flow. The start timeout is also the bound after which a node
    /// that holds a message without taking the next one counts as hung: both say how long a
    /// step of a new version may take before floed gives up on it.
    pub(super) async fn start_verified(
        &mut self,
        slot: SlotName,
        dir: &Path,
        record: &VersionRecord,
        muted: bool,
    ) -> Result<R::Flow, StartError> {
        let limit = self.cfg.trial.start_timeout;
        let secrets = self.opener.open_all(&record.secret_vars)?;
        let spec = StartSpec {
            slot_dir: dir,
            record,
            muted,
            slot,
            device: &self.device,
            stuck_after: limit,
            local_vars: &self.cfg.vars,
            secrets: &secrets,
        };
        let fut = AssertUnwindSafe(self.runner.start(spec)).catch_unwind();
        match tokio::time::timeout(limit, fut).await {
            Err(_) => Err(StartError::Hung {
                ms: limit.as_millis(),
            }),
            Ok(Err(panic)) => Err(StartError::Panicked {
                message: super::secrets::redact(&panic_message(&*panic), &secrets),
            }),
            Ok(Ok(Err(e))) if !secrets.is_empty() => Err(StartError::Redacted(
                super::secrets::redact(&e.to_string(), &secrets),
            )),
            Ok(Ok(Err(e))) => Err(e.into()),
            Ok(Ok(Ok(flow))) => Ok(flow),
        }
    }

    /// Stops the running flow, if any, within the stop timeout; a panic while stopping is
    /// logged and otherwise ignored (the flow is gone either way).
    pub(super) async fn stop_flow(&mut self) {
        if let Some(flow) = self.flow.take() {
            stop_guarded(flow, self.cfg.trial.stop_timeout, "the flow").await;
        }
        self.running_version = None;
    }
}

/// Stops `flow` within `deadline`; a panic while stopping is logged (naming `what`) and
/// otherwise ignored, since the flow is gone either way.
pub(super) async fn stop_guarded<F: RunningFlow>(flow: F, deadline: Duration, what: &str) {
    if AssertUnwindSafe(flow.stop(deadline))
        .catch_unwind()
        .await
        .is_err()
    {
        tracing::warn!("{what} panicked while stopping");
    }
}

/// The message a panic carried, for the audit log.
pub(super) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}
