//! The one translation between the engine's vocabulary and the wire's: the proto action each
//! engine directive becomes. Both crates' enums spell themselves (`as_str`, `Display`,
//! `FromStr`); floe-rollout does not depend on floe-wire, so the mapping lives here.

use floe_rollout::DirectiveKind;
use floe_wire::proto;

/// The proto action a device is told to take for an engine directive.
pub(super) fn directive_action(k: DirectiveKind) -> proto::Action {
    match k {
        DirectiveKind::Stage => proto::Action::Stage,
        DirectiveKind::Switch => proto::Action::Switch,
        DirectiveKind::Commit => proto::Action::Commit,
        DirectiveKind::Rollback => proto::Action::Rollback,
    }
}
