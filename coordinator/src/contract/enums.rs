//! The API's enums that the service keeps too (flow state, health level, gate verdict), typed
//! instead of strings and spelled on the wire exactly as before (`snake_case`). The engine's
//! own enums (deployment and target status, stage kind) come from `floe-rollout`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A name that is not one of an enum's spellings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} must be {expected}, not {given:?}")]
pub struct UnknownName {
    /// Which enum.
    pub what: &'static str,
    /// The spellings it knows, as a phrase.
    pub expected: &'static str,
    /// What was given.
    pub given: String,
}

macro_rules! spelled {
    ($ty:ident, $what:literal, $expected:literal, { $($v:ident => $s:literal),+ $(,)? }) => {
        impl $ty {
            /// Every value, in order.
            pub const ALL: &'static [$ty] = &[$($ty::$v),+];

            /// The wire spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$v => $s),+
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = UnknownName;

            fn from_str(s: &str) -> Result<Self, UnknownName> {
                match s {
                    $($s => Ok($ty::$v),)+
                    _ => Err(UnknownName {
                        what: $what,
                        expected: $expected,
                        given: s.to_string(),
                    }),
                }
            }
        }
    };
}

/// A flow version's lifecycle: only drafts are edited, only published versions deploy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FlowState {
    /// Editable.
    Draft,
    /// Frozen, with a signed artifact.
    Published,
    /// Hidden from listings unless asked for; cannot deploy.
    Archived,
}

spelled!(FlowState, "state", "draft, published or archived", {
    Draft => "draft",
    Published => "published",
    Archived => "archived",
});

/// A device's overall health as it last reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthLevel {
    /// Healthy.
    Healthy,
    /// Working but degraded.
    Degraded,
    /// Unhealthy.
    Unhealthy,
}

spelled!(HealthLevel, "health", "healthy, degraded or unhealthy", {
    Healthy => "healthy",
    Degraded => "degraded",
    Unhealthy => "unhealthy",
});

impl From<floe_wire::proto::HealthLevel> for HealthLevel {
    fn from(h: floe_wire::proto::HealthLevel) -> Self {
        match h {
            floe_wire::proto::HealthLevel::Healthy => HealthLevel::Healthy,
            floe_wire::proto::HealthLevel::Degraded => HealthLevel::Degraded,
            floe_wire::proto::HealthLevel::Unhealthy => HealthLevel::Unhealthy,
        }
    }
}

/// A health gate's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GateVerdict {
    /// Every check passes.
    Pass,
    /// Not enough reports yet (quorum); the gate waits.
    Wait,
    /// A check failed.
    Fail,
    /// A check is degrading within its limit: the soak is extended and the gate rechecks
    /// (a bounded number of times, then it fails).
    Caution,
}

spelled!(GateVerdict, "verdict", "pass, wait, fail or caution", {
    Pass => "pass",
    Wait => "wait",
    Fail => "fail",
    Caution => "caution",
});

impl From<floe_rollout::Verdict> for GateVerdict {
    fn from(v: floe_rollout::Verdict) -> Self {
        match v {
            floe_rollout::Verdict::Pass => GateVerdict::Pass,
            floe_rollout::Verdict::Wait => GateVerdict::Wait,
            floe_rollout::Verdict::Fail => GateVerdict::Fail,
            floe_rollout::Verdict::Caution => GateVerdict::Caution,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn each_enum_spells_itself_the_same_in_json_and_as_str() {
        for s in FlowState::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
            assert_eq!(s.as_str().parse::<FlowState>().unwrap(), *s);
        }
        for h in HealthLevel::ALL {
            assert_eq!(serde_json::to_value(h).unwrap(), h.as_str());
            assert_eq!(h.as_str().parse::<HealthLevel>().unwrap(), *h);
        }
        for v in GateVerdict::ALL {
            assert_eq!(serde_json::to_value(v).unwrap(), v.as_str());
            assert_eq!(v.as_str().parse::<GateVerdict>().unwrap(), *v);
        }
        let e = "drafty".parse::<FlowState>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "state must be draft, published or archived, not \"drafty\""
        );
    }
}

/// What an API token may do (SECURITY.md, "Roles"): `admin` everything, token management
/// included; `operator` everything but token management; `viewer` reads only; `enroller`
/// only creates enrollment tokens and reads the join information.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, API tokens included.
    Admin,
    /// Flows, deployments, devices, variables, enrollment; not API tokens.
    Operator,
    /// Reads (GET) only, API tokens excluded.
    Viewer,
    /// Enrollment tokens and the join information only.
    Enroller,
}

spelled!(Role, "role", "admin, operator, viewer or enroller", {
    Admin => "admin",
    Operator => "operator",
    Viewer => "viewer",
    Enroller => "enroller",
});
