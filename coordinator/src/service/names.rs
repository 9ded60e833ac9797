//! The API spellings of floe-rollout's enums that have no `as_str` of their own yet, and the
//! proto action each engine directive becomes. Kept in one place so a rename is one edit; when
//! floe-rollout grows `as_str` on these types, these functions give way to it.

use floe_rollout::{Command, DirectiveKind, GateKind, StageKind, Verdict};
use floe_wire::proto::{self, HealthLevel};

/// The API spelling of a directive kind (`stage`, `switch`, `commit`, `rollback`).
pub(super) fn kind_name(k: DirectiveKind) -> &'static str {
    match k {
        DirectiveKind::Stage => "stage",
        DirectiveKind::Switch => "switch",
        DirectiveKind::Commit => "commit",
        DirectiveKind::Rollback => "rollback",
    }
}

/// The API spelling of a verdict.
pub fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "pass",
        Verdict::Wait => "wait",
        Verdict::Fail => "fail",
    }
}

/// The API spelling of a gate.
pub fn gate_name(g: GateKind) -> &'static str {
    match g {
        GateKind::Canary => "canary",
        GateKind::Wave => "wave",
        GateKind::Completion => "completion",
        GateKind::Staged => "staged",
    }
}

/// The API spelling of a stage kind.
pub fn stage_name(k: StageKind) -> &'static str {
    match k {
        StageKind::Canary => "canary",
        StageKind::Wave => "wave",
        StageKind::Batch => "batch",
        StageKind::Step => "step",
        StageKind::All => "all",
        StageKind::BlueGreenStage => "blue_green_stage",
        StageKind::BlueGreenSwitch => "blue_green_switch",
    }
}

/// The registry's spelling of a device's health level (floe-wire's `HealthLevel` has no
/// `as_str` yet).
pub(super) fn health_level_name(h: HealthLevel) -> &'static str {
    match h {
        HealthLevel::Healthy => "healthy",
        HealthLevel::Degraded => "degraded",
        HealthLevel::Unhealthy => "unhealthy",
    }
}

/// The proto action a device is told to take for an engine directive.
pub(super) fn directive_action(k: DirectiveKind) -> proto::Action {
    match k {
        DirectiveKind::Stage => proto::Action::Stage,
        DirectiveKind::Switch => proto::Action::Switch,
        DirectiveKind::Commit => proto::Action::Commit,
        DirectiveKind::Rollback => proto::Action::Rollback,
    }
}

/// The operator command spelled `name` (its `Display` spelling), if there is one.
pub fn command_named(name: &str) -> Option<Command> {
    [
        Command::Start,
        Command::Pause,
        Command::Resume,
        Command::Approve,
        Command::Rollback,
        Command::Abort,
    ]
    .into_iter()
    .find(|c| c.to_string() == name)
}
