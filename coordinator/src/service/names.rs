//! Translations between the engine's vocabulary and the wire's: the proto action each engine
//! directive becomes, and the registry's spelling of a reported health level. The engine's
//! own enums spell themselves (`as_str`, `Display`, `FromStr` in floe-rollout).

use floe_rollout::DirectiveKind;
use floe_wire::proto::{self, HealthLevel};

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
