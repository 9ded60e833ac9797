//! What a deployment's plan says about itself: the canary picks with the device type or
//! region each covers (001 "Canary Selection Algorithm") and the plan's warnings (devices
//! excluded from the canary, types or regions it cannot cover, a canary larger than 001's
//! sizing table recommends, blue-green above 500 devices).

use floe_rollout::{CanaryReason, Plan};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One canary device and why it was picked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CanaryPickView {
    /// The device.
    pub device_id: String,
    /// Its device type.
    #[serde(rename = "type")]
    pub device_type: String,
    /// Its region.
    pub region: String,
    /// `device_type`: the best-monitored eligible device of its type; `region`: of a region
    /// no earlier pick covered; `size`: added to reach the canary's size.
    pub reason: CanaryReason,
    /// Its monitoring coverage when picked.
    pub monitoring: u8,
    /// The reason in words ("covers device type rpi4").
    pub covers: String,
}

/// A deployment plan's canary and warnings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DeploymentPlan {
    /// The canary devices in dispatch order, with why each was picked (empty for strategies
    /// without a canary; reasons are absent for plans made before they were kept).
    pub canary: Vec<CanaryPickView>,
    /// Facts the plan states about itself, as sentences.
    pub warnings: Vec<String>,
}

impl DeploymentPlan {
    /// The view of `plan` (at most `limit` canary picks; the canary is at most 2 % of the
    /// fleet, so this only bounds a pathological plan).
    pub fn of(plan: &Plan, limit: usize) -> Self {
        let canary = plan
            .canary
            .iter()
            .zip(&plan.canary_picks)
            .take(limit)
            .map(|(d, pick)| {
                let d = *d as usize;
                let device_type = plan
                    .device_type
                    .get(d)
                    .and_then(|t| plan.types.get(*t as usize))
                    .cloned()
                    .unwrap_or_default();
                let region = plan
                    .device_region
                    .get(d)
                    .and_then(|r| plan.regions.get(*r as usize))
                    .cloned()
                    .unwrap_or_default();
                let covers = match pick.reason {
                    CanaryReason::DeviceType => format!("covers device type {device_type}"),
                    CanaryReason::Region => format!("covers region {region}"),
                    CanaryReason::Size => "fills the canary to its size".to_string(),
                };
                CanaryPickView {
                    device_id: plan.ids.get(d).cloned().unwrap_or_default(),
                    device_type,
                    region,
                    reason: pick.reason,
                    monitoring: pick.monitoring,
                    covers,
                }
            })
            .collect();
        DeploymentPlan {
            canary,
            warnings: plan.warnings.clone(),
        }
    }
}
