//! Live events (`GET /api/v1/events`, Server-Sent Events) and webhooks (`/api/v1/hooks`).
//!
//! One event shape serves the stream, the webhook deliveries and the console:
//! `{"id","kind","at","deployment_id","device_id","data"}`. `id` grows by one per event
//! within one coordinator process; `data` is kind-specific (see [`EventKind`]).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

use super::UnknownName;

/// What an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum EventKind {
    /// A deployment's status changed. `data`: `{"status","reason"}`.
    #[serde(rename = "deployment.status")]
    DeploymentStatus,
    /// A deployment entered another stage. `data`: `{"stage","name","kind"}`.
    #[serde(rename = "deployment.stage")]
    DeploymentStage,
    /// A gate decided. `data`: `{"stage","gate","verdict","reason","checks":[{"name","value","limit","pass","outcome"}],"summary"}`
    /// (`verdict` `pass`, `wait`, `fail` or `caution`; `summary` as in a deployment's gates).
    #[serde(rename = "gate.verdict")]
    GateVerdict,
    /// A target's status changed. `data`: `{"from","to","stage"}`.
    #[serde(rename = "target.transition")]
    TargetTransition,
    /// A device reports again (or for the first time). `data`: `{}`.
    #[serde(rename = "device.online")]
    DeviceOnline,
    /// A device was marked offline. `data`: `{"silent_ms"}`.
    #[serde(rename = "device.offline")]
    DeviceOffline,
    /// A device's reported health level changed. `data`: `{"from","to"}` (`from` null at first).
    #[serde(rename = "device.health")]
    DeviceHealth,
    /// A running deployment made no progress for longer than its `stuck_after`.
    /// `data`: `{"stuck_after","since"}` (`since`: RFC 3339 time of the last progress).
    #[serde(rename = "deployment.stuck")]
    DeploymentStuck,
    /// The devices a rollback returned to their previous version were verified (each healthy
    /// on it, unhealthy, or not heard from by the deadline). `data`:
    /// `{"scope","result","healthy","degraded","unhealthy","unverified_offline","fleet_within_baseline"}`.
    #[serde(rename = "rollback.verified")]
    RollbackVerified,
    /// The stream cannot continue from where the client asked (events it missed are gone, or
    /// more happened at once than are kept): reload state. `data`: `{"reason"}`.
    #[serde(rename = "reset")]
    Reset,
}

impl EventKind {
    /// Every kind, in order.
    pub const ALL: &'static [EventKind] = &[
        EventKind::DeploymentStatus,
        EventKind::DeploymentStage,
        EventKind::GateVerdict,
        EventKind::TargetTransition,
        EventKind::DeviceOnline,
        EventKind::DeviceOffline,
        EventKind::DeviceHealth,
        EventKind::DeploymentStuck,
        EventKind::RollbackVerified,
        EventKind::Reset,
    ];

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::DeploymentStatus => "deployment.status",
            EventKind::DeploymentStage => "deployment.stage",
            EventKind::GateVerdict => "gate.verdict",
            EventKind::TargetTransition => "target.transition",
            EventKind::DeviceOnline => "device.online",
            EventKind::DeviceOffline => "device.offline",
            EventKind::DeviceHealth => "device.health",
            EventKind::DeploymentStuck => "deployment.stuck",
            EventKind::RollbackVerified => "rollback.verified",
            EventKind::Reset => "reset",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventKind {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, UnknownName> {
        EventKind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownName {
                what: "event kind",
                expected: "deployment.status, deployment.stage, gate.verdict, target.transition, \
                           device.online, device.offline, device.health, deployment.stuck, \
                           rollback.verified or reset",
                given: s.to_string(),
            })
    }
}

/// A kind filter: each entry a kind's full name or a prefix ending in `.` (`deployment.`).
/// Empty matches every kind. `reset` always passes (a client must always hear it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KindFilter(Vec<String>);

impl KindFilter {
    /// Parses `a,b,prefix.`; an entry that is neither a kind nor a prefix of one is refused.
    pub fn parse(list: &str) -> Result<Self, UnknownName> {
        let mut out = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let known = if entry.ends_with('.') {
                EventKind::ALL.iter().any(|k| k.as_str().starts_with(entry))
            } else {
                entry.parse::<EventKind>().is_ok()
            };
            if !known {
                return Err(UnknownName {
                    what: "event kind",
                    expected: "a kind (deployment.status, target.transition, ...) or a prefix \
                               of one ending in '.' (deployment.)",
                    given: entry.to_string(),
                });
            }
            out.push(entry.to_string());
        }
        Ok(Self(out))
    }

    /// The entries, as given.
    pub fn entries(&self) -> &[String] {
        &self.0
    }

    /// Whether `kind` passes.
    pub fn matches(&self, kind: EventKind) -> bool {
        if self.0.is_empty() || kind == EventKind::Reset {
            return true;
        }
        let name = kind.as_str();
        self.0.iter().any(|e| {
            if e.ends_with('.') {
                name.starts_with(e.as_str())
            } else {
                name == e
            }
        })
    }
}

/// One event, as the stream's `data:` line and a webhook's body carry it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Event {
    /// Grows by one per event within one coordinator process (the SSE `id:`).
    pub id: u64,
    /// What it is about (the SSE `event:`).
    pub kind: EventKind,
    /// When, RFC 3339 UTC (the service's clock at the step that caused it).
    pub at: String,
    /// The deployment it concerns, if any.
    pub deployment_id: Option<String>,
    /// The device it concerns, if any.
    pub device_id: Option<String>,
    /// Kind-specific details (see [`EventKind`]).
    pub data: serde_json::Value,
}

/// `POST /api/v1/hooks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HookInput {
    /// Where deliveries are POSTed (`http://` or `https://`).
    pub url: String,
    /// Kinds (or prefixes ending in `.`) to deliver; empty: every kind.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Only events of this deployment (device events, which name none, are then not sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
}

/// A registered webhook (the secret is shown once, at creation: [`HookCreated`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Hook {
    /// `hook_<hex>`.
    pub id: String,
    /// Where deliveries go.
    pub url: String,
    /// Kind filter; empty: every kind.
    pub kinds: Vec<String>,
    /// Deployment filter.
    pub deployment_id: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// Events waiting in its queue now.
    pub queued: u64,
    /// Events dropped from its full queue since start.
    pub dropped: u64,
}

/// `POST /api/v1/hooks`' answer: the hook and its signing secret, shown only here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HookCreated {
    /// The hook.
    pub hook: Hook,
    /// Hex; deliveries carry `X-Floe-Signature: sha256=<hex HMAC-SHA256(secret, body)>`.
    pub secret: String,
}

/// `GET /api/v1/hooks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HookList {
    /// Every hook, oldest first.
    pub hooks: Vec<Hook>,
}

/// One delivery attempt (or a drop) in a hook's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Delivery {
    /// `X-Floe-Delivery`: the event id and attempt (`<event>-<attempt>`).
    pub delivery: String,
    /// The event.
    pub event_id: u64,
    /// Its kind.
    pub kind: EventKind,
    /// 1 for the first try (0 for an event dropped from a full queue, never tried).
    pub attempt: u32,
    /// RFC 3339.
    pub at: String,
    /// `delivered`, `failed` (will retry), `gave_up` or `dropped` (queue full).
    pub outcome: String,
    /// The receiver's HTTP status, if it answered.
    pub status: Option<u16>,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

/// `GET /api/v1/hooks/{id}/deliveries`: the most recent first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeliveryLog {
    /// The hook.
    pub hook_id: String,
    /// The last entries kept (at most 200), newest first.
    pub deliveries: Vec<Delivery>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_spell_themselves_and_filters_match_prefixes() {
        for k in EventKind::ALL {
            assert_eq!(k.as_str().parse::<EventKind>().unwrap(), *k);
            let json = serde_json::to_string(k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
        }
        let f = KindFilter::parse("deployment.,device.online").unwrap();
        assert!(f.matches(EventKind::DeploymentStatus));
        assert!(f.matches(EventKind::DeploymentStuck));
        assert!(f.matches(EventKind::DeviceOnline));
        assert!(!f.matches(EventKind::DeviceOffline));
        assert!(!f.matches(EventKind::GateVerdict));
        assert!(f.matches(EventKind::Reset));
        assert!(
            KindFilter::parse("")
                .unwrap()
                .matches(EventKind::GateVerdict)
        );
        let e = KindFilter::parse("deploy.status").unwrap_err();
        assert!(e.to_string().contains("deploy.status"));
        assert!(KindFilter::parse("nothing.").is_err());
    }
}
