//! Where the stage machine is, and what a rollback covers: the two small enums that the
//! stage machine, dispatch, the sweeps and the timers all read, in a file of their own so
//! that none of those depends on another for them.

use super::device::DevPhase;
use crate::Millis;
use serde::{Deserialize, Serialize};

/// Where the current stage is.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(super) enum Phase {
    /// Not started.
    Prepare,
    /// Sending directives for the current stage.
    Dispatching,
    /// All devices settled; soaking until the given time.
    Soaking { until: Millis },
    /// Evaluating the gate; pause at `deadline` if still without quorum.
    Gating { deadline: Millis },
    /// Committing the stage's devices after its gate passed.
    Committing,
    /// Waiting for an operator's approve.
    AwaitingApproval,
    /// The stage is done (or cancelled); resume or the next step moves to the next stage.
    StageDone,
    /// After the last stage: waiting for offline devices until `deadline`.
    CatchUp { deadline: Millis },
    /// Evaluating the completion gate.
    Completing { deadline: Millis },
    /// Rolling back (see `RollbackSweep`).
    RollingBack,
    /// Writing final target statuses.
    Finalizing,
    /// Nothing left to do.
    Done,
}

impl Phase {
    /// The phase's own deadline, if it has one: the end of a soak, or a progress deadline.
    pub(super) fn deadline(self) -> Option<Millis> {
        match self {
            Phase::Soaking { until } => Some(until),
            Phase::Gating { deadline }
            | Phase::CatchUp { deadline }
            | Phase::Completing { deadline } => Some(deadline),
            Phase::Prepare
            | Phase::Dispatching
            | Phase::Committing
            | Phase::AwaitingApproval
            | Phase::StageDone
            | Phase::RollingBack
            | Phase::Finalizing
            | Phase::Done => None,
        }
    }
}

/// What a rollback covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum Scope {
    /// Every device with the new version: ends `rolled_back`.
    All,
    /// One stage: ends paused for a human.
    Stage(u32),
    /// Every uncommitted device (abort): ends `failed`.
    Uncommitted,
}

impl Scope {
    /// Whether a device in phase `p` is sent a rollback directive by a sweep of this scope.
    pub(super) fn covers(self, p: DevPhase) -> bool {
        match self {
            Scope::All | Scope::Stage(_) => p.in_flight() || p.active() || p == DevPhase::Staged,
            Scope::Uncommitted => p.in_flight() || p == DevPhase::Verified,
        }
    }
}
