//! The per-device record and the device phase.
//!
//! A million devices live in one `Vec<Dev>`, so the record stays small and fixed-size: the
//! phase is a one-byte enum, the booleans are bits of one `u16`, and the last reported status
//! is kept as its one-byte code. Everything else about a device (its id, type and region)
//! lives once, in the plan.
//!
//! The phase is what the engine believes the device is doing; [`DevPhase::status`] maps it
//! (with the offline bit) to the [`TargetStatus`] the caller sees. Matches over phases list
//! every phase, so a new phase cannot slip through a catch-all arm unnoticed.

use super::types::{DirectiveKind, TargetStatus};
use super::{CRASH_LOOP_RESTARTS, Millis};
use serde::{Deserialize, Serialize};

/// Where one device is in this deployment. Persisted as its `u8` value, as before it was an
/// enum, so stored engine states keep loading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "u8", try_from = "u8")]
#[repr(u8)]
pub(super) enum DevPhase {
    /// Not reached yet.
    #[default]
    Idle = 0,
    /// A stage directive was sent.
    Staging = 1,
    /// The new version is in the standby slot.
    Staged = 2,
    /// A switch directive was sent.
    Switching = 3,
    /// Switched, waiting for a healthy report.
    Switched = 4,
    /// Switched and healthy; committed when its stage's gate passes.
    Verified = 5,
    /// Committed: keeps the new version.
    Committed = 6,
    /// The deployment failed on the device.
    Failed = 7,
    /// A rollback directive was sent.
    RollingBack = 8,
    /// Back on its previous version with its wave or the fleet.
    RolledBack = 9,
    /// Rolled back on its own account and kept out of the rollout.
    Quarantined = 10,
    /// Never deployed.
    Skipped = 11,
}

/// A stored device phase outside the enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("device phase {0} is not a known phase")]
pub(super) struct UnknownPhase(u8);

impl From<DevPhase> for u8 {
    fn from(p: DevPhase) -> u8 {
        p as u8
    }
}

impl TryFrom<u8> for DevPhase {
    type Error = UnknownPhase;

    fn try_from(v: u8) -> Result<Self, UnknownPhase> {
        use DevPhase::*;
        [
            Idle,
            Staging,
            Staged,
            Switching,
            Switched,
            Verified,
            Committed,
            Failed,
            RollingBack,
            RolledBack,
            Quarantined,
            Skipped,
        ]
        .get(usize::from(v))
        .copied()
        .ok_or(UnknownPhase(v))
    }
}

impl DevPhase {
    /// A directive is out and the device holds a parallelism slot for it.
    pub(super) fn in_flight(self) -> bool {
        use DevPhase::*;
        match self {
            Staging | Staged | Switching | Switched => true,
            Idle | Verified | Committed | Failed | RollingBack | RolledBack | Quarantined
            | Skipped => false,
        }
    }

    /// The device runs the new version (its reports count in the health aggregates).
    pub(super) fn active(self) -> bool {
        use DevPhase::*;
        match self {
            Switched | Verified | Committed => true,
            Idle | Staging | Staged | Switching | Failed | RollingBack | RolledBack
            | Quarantined | Skipped => false,
        }
    }

    /// The target status of a device in this phase, online.
    pub(super) fn status(self) -> TargetStatus {
        use DevPhase::*;
        match self {
            Idle => TargetStatus::Pending,
            Staging | Staged | Switching | Switched | Verified | RollingBack => {
                TargetStatus::Deploying
            }
            Committed => TargetStatus::Success,
            Failed => TargetStatus::Failed,
            RolledBack => TargetStatus::RolledBack,
            Quarantined => TargetStatus::Quarantined,
            Skipped => TargetStatus::Skipped,
        }
    }

    /// The directive that is current for a device in this phase, to send again when it
    /// returns; `None` when nothing is outstanding.
    pub(super) fn current_directive(self) -> Option<DirectiveKind> {
        use DevPhase::*;
        match self {
            Staging => Some(DirectiveKind::Stage),
            Staged | Switching | Switched => Some(DirectiveKind::Switch),
            RollingBack => Some(DirectiveKind::Rollback),
            Idle | Verified | Committed | Failed | RolledBack | Quarantined | Skipped => None,
        }
    }
}

// Device flag bits.
pub(super) const F_OFFLINE: u16 = 1;
pub(super) const F_REPORTED: u16 = 2;
pub(super) const F_CATCHUP_QUEUED: u16 = 4;
pub(super) const F_QUARANTINE_ON_ROLLBACK: u16 = 8;
pub(super) const F_UNREACHABLE: u16 = 16;
pub(super) const F_MEM_WARN: u16 = 32;
pub(super) const F_INFLIGHT: u16 = 64;
pub(super) const F_COMMIT_QUEUED: u16 = 128;
/// The running rollback sweep waits for this device's rollback to settle (counted once in
/// the sweep's `waiting`, uncounted once when it settles).
pub(super) const F_SWEEP_WAIT: u16 = 256;
/// Skipped while it was offline (unreachable), as opposed to never started because the
/// deployment stopped before reaching it (the report counts the two apart).
pub(super) const F_SKIPPED_OFFLINE: u16 = 1 << 15;

/// The target status of a device in phase `p` with flags `flags`.
pub(super) fn status_of(p: DevPhase, flags: u16) -> TargetStatus {
    let s = p.status();
    if flags & F_OFFLINE != 0 && !s.is_terminal() {
        TargetStatus::Offline
    } else {
        s
    }
}

/// The one-byte code of a target status, as kept in [`Dev::status`].
pub(super) fn status_code(s: TargetStatus) -> u8 {
    s as u8
}

/// Per-device state: 80 bytes (a test keeps it there), so a million devices need 80 MB.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Dev {
    pub(super) phase: DevPhase,
    pub(super) flags: u16,
    pub(super) status: u8,
    pub(super) generation: u32,
    pub(super) stage: u32,
    pub(super) deadline: Millis,
    pub(super) error_rate: f32,
    pub(super) p95_ms: f32,
    pub(super) memory_mb: f32,
    pub(super) memory0: f32,
    pub(super) memory0_at: Millis,
    pub(super) restarts: u32,
    pub(super) restart_at: [Millis; CRASH_LOOP_RESTARTS],
    pub(super) unreachable_since: Millis,
}

impl Dev {
    /// An offline device that still has work in this deployment (it is waited for at the end).
    pub(super) fn pending_offline(&self) -> bool {
        self.flags & F_OFFLINE != 0 && !self.phase.status().is_terminal()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A million of these live in memory: the phase enum must not make the record grow.
    #[test]
    fn the_device_record_stays_small() {
        assert_eq!(std::mem::size_of::<DevPhase>(), 1);
        assert!(
            std::mem::size_of::<Dev>() <= 80,
            "{}",
            std::mem::size_of::<Dev>()
        );
    }

    #[test]
    fn every_phase_round_trips_through_its_byte() {
        for v in 0..=u8::MAX {
            match DevPhase::try_from(v) {
                Ok(p) => assert_eq!(u8::from(p), v),
                Err(UnknownPhase(b)) => assert!(b > DevPhase::Skipped as u8),
            }
        }
    }
}
