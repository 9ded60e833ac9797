//! The VALIDATE phase (reference 003's pre-deployment checklist) and the operators' bodies
//! that go with it: the start request with its overrides, the checklist result a deployment
//! keeps, the refusal a failed checklist answers with, the 003 state block, and the publish
//! request that carries a flow's smoke test.

use super::misc::ErrorDetail;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `POST /deployments/{id}/start` (the body is optional; an empty body overrides nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartInput {
    /// Checklist items to start despite their failure (`disk_space`, `connectivity` …); the
    /// override is audited with the caller and the items.
    #[serde(rename = "override", default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<String>,
}

/// One item of the pre-deployment checklist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PreflightItem {
    /// `artifact_integrity`, `architecture`, `device_type`, `disk_space`, `resource_fit`,
    /// `rollback_target`, `canary_coverage`, `baselines` or `connectivity`.
    pub name: String,
    /// Whether the item holds.
    pub passed: bool,
    /// Whether it failed and an operator overrode it.
    pub overridden: bool,
    /// What was checked and found, in a sentence.
    pub detail: String,
    /// The devices (or device types, for `canary_coverage` and `baselines`) at fault, the
    /// first 20; `count` counts them all.
    pub devices: Vec<String>,
    /// How many devices (or types) are at fault.
    pub count: u64,
}

/// A deployment's checklist result: run as a dry run when it is created, and again when it
/// starts (the start's result replaces the dry run's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Preflight {
    /// `create` (dry run) or `start`.
    pub when: String,
    /// RFC 3339.
    pub at: String,
    /// Every item passed or was overridden.
    pub passed: bool,
    /// Whether a failure stops the start (`floe serve --preflight enforce`, the default) or is
    /// only recorded (`--preflight warn`).
    pub enforced: bool,
    /// The items, in the checklist's order.
    pub items: Vec<PreflightItem>,
    /// The items the operator overrode.
    pub overridden: Vec<String>,
    /// Who ran it (the API caller).
    pub actor: String,
}

impl Preflight {
    /// The failed items that were not overridden.
    pub fn blocking(&self) -> impl Iterator<Item = &PreflightItem> {
        self.items.iter().filter(|i| !i.passed && !i.overridden)
    }

    /// One sentence listing every blocking item with its count and first devices.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = self
            .blocking()
            .map(|i| {
                let shown = i.devices.iter().take(5).cloned().collect::<Vec<_>>();
                let more = i.count.saturating_sub(shown.len() as u64);
                let mut s = format!("{} ({}", i.name, i.detail);
                if !shown.is_empty() {
                    s.push_str(&format!("; {}", shown.join(", ")));
                    if more > 0 {
                        s.push_str(&format!(" and {more} more"));
                    }
                }
                s.push(')');
                s
            })
            .collect();
        if parts.is_empty() {
            "every checklist item passed".to_string()
        } else {
            format!("pre-flight failed: {}", parts.join("; "))
        }
    }
}

/// The 422 answer of a start: the checklist stopped it (`code` `preflight_failed`, its message
/// listing every failed item, and the whole checklist), or an override named no item
/// (`validation_failed`, no checklist).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PreflightRefusal {
    /// The error.
    pub error: ErrorDetail,
    /// The checklist that stopped the start (also stored with the deployment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preflight: Option<Preflight>,
}

/// `GET /deployments/{id}/state`: reference 003's state block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeploymentState {
    /// PREPARE, VALIDATE, CANARY, VERIFY, ROLLOUT, CONFIRM (ROLLBACK while rolling back).
    pub phase: String,
    /// Strategy.
    pub strategy: String,
    /// Artifact name and version.
    pub artifact: String,
    /// Targets.
    pub fleet_total: u64,
    /// Devices with the new version committed.
    pub deployed_count: u64,
    /// Devices on the new version and reporting healthy.
    pub healthy_count: u64,
    /// Quarantined or failed.
    pub quarantined_count: u64,
    /// Skipped or offline.
    pub skipped_count: u64,
    /// Whether a rollback can still be started.
    pub rollback_available: bool,
    /// `N/M` over the stages.
    pub current_wave: String,
    /// The last action.
    pub last_action: String,
    /// What comes next.
    pub next_action: String,
    /// What blocks progress (`none` when nothing does).
    pub blockers: String,
    /// The block as 003 writes it (`<fleet-deploy-state>` … `</fleet-deploy-state>`).
    pub text: String,
}

/// One message of a smoke test: the node it goes into (or must come out of) and its payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SmokeMessageInput {
    /// The node id.
    pub node: String,
    /// Any JSON. For an expectation, an object matches any output object holding every key
    /// given with a matching value.
    pub payload: serde_json::Value,
}

/// A flow's smoke test (003 layer 4, "correct output on test input"): what to inject, what
/// must come out, within how long.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SmokeTestInput {
    /// Messages injected in order.
    #[serde(default)]
    pub inject: Vec<SmokeMessageInput>,
    /// Outputs that must come out of sink nodes.
    #[serde(default)]
    pub expect: Vec<SmokeMessageInput>,
    /// Milliseconds, 1 to 20 000 (default 5 000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// `POST /flows/{id}/publish` (the body is optional).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishInput {
    /// The smoke test every device runs on the new version before switching to it; carried
    /// inside the signed manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smoke_test: Option<SmokeTestInput>,
}
