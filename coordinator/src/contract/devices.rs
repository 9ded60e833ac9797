//! Device, enrollment and directive-queue responses.

use super::enums::HealthLevel;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What one of a device's slots holds, as the device reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Slot {
    /// Artifact name.
    pub name: String,
    /// Release number.
    pub release: u64,
    /// Semantic version.
    pub version: String,
    /// `blue` or `green`.
    pub slot: String,
}

/// A device's last health summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeviceHealth {
    /// Overall level.
    pub status: HealthLevel,
    /// Errors per message, as a fraction.
    pub error_rate: f64,
    /// p95 latency in milliseconds.
    pub p95_ms: f64,
    /// Memory in MB.
    pub memory_mb: f64,
    /// Restarts since the last switch.
    pub restarts: u32,
    /// Whether a flow runs.
    pub flow_running: bool,
    /// CPU, memory use, temperature, disk and the functional check, where the device sent
    /// them (a missing field is unknown, not zero).
    #[serde(default)]
    pub system: floe_rollout::SystemFigures,
}

/// The newest directive a device reported it accepted, and how far it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AppliedDirective {
    /// Directive generation.
    pub generation: u64,
    /// `stage`, `switch`, `commit` or `rollback`.
    pub action: String,
    /// `working`, `done`, `failed` or `rolled_back`.
    pub progress: String,
    /// Why, when it failed.
    pub detail: String,
}

/// A device in the registry (allowlisted, or enrolled).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Device {
    /// The device's own id.
    pub id: String,
    /// Hardware type.
    #[serde(rename = "type")]
    pub device_type: String,
    /// CPU architecture (empty until it reports).
    pub arch: String,
    /// Region.
    pub region: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Its ed25519 public key, hex.
    pub public_key: String,
    /// floed's version (empty until it reports).
    pub runtime_version: String,
    /// The active slot.
    pub installed: Option<Slot>,
    /// The standby slot.
    pub standby: Option<Slot>,
    /// The last committed release.
    pub last_known_good: Option<Slot>,
    /// Whether the active slot is on trial.
    pub on_trial: bool,
    /// The last health summary.
    pub health: Option<DeviceHealth>,
    /// The newest directive it accepted.
    pub applied: Option<AppliedDirective>,
    /// Whether it counts as online.
    pub online: bool,
    /// RFC 3339 of its last accepted report.
    pub last_seen: Option<String>,
    /// The generation of its current directive (0: none).
    pub generation: u64,
    /// Operator flag: left out of deployments.
    pub maintenance: bool,
    /// Operator flag (or set by a deployment's device-level trigger).
    pub quarantined: bool,
    /// RFC 3339 of its first accepted report.
    pub enrolled_at: Option<String>,
    /// Operator flag: a single point of failure at its site (never a canary).
    #[serde(default)]
    pub single_point_of_failure: bool,
    /// Known hardware issues in words; empty when none (never a canary if set).
    #[serde(default)]
    pub known_hardware_issues: String,
    /// Monitoring coverage 0-100 as the operator set it (unset ranks as 0 for canaries).
    #[serde(default)]
    pub monitoring: Option<u8>,
    /// RFC 3339 of each time the coordinator saw it go offline, oldest first (at most 16,
    /// within 24 h of the newest); one in the last 24 h keeps it out of the canary.
    #[serde(default)]
    pub offline_history: Vec<String>,
}

/// `GET /devices`: one page, ordered by id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DevicePage {
    /// The devices.
    pub devices: Vec<Device>,
    /// The cursor of the next page; null after the last.
    pub next: Option<String>,
}

/// `POST /enrollment-tokens`: a one-time token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EnrollToken {
    /// The token.
    pub token: String,
    /// RFC 3339.
    pub expires_at: String,
    /// The same instant in Unix milliseconds (0 from a coordinator that does not say).
    #[serde(default)]
    pub expires_at_ms: u64,
}

/// `GET /join-info`: what a join string carries besides its token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct JoinInfo {
    /// The coordinator's fabric addresses, each ending in `/p2p/<peer id>`.
    pub fabric: Vec<String>,
    /// The device trust store file (`trust.cbor`), hex.
    pub trust_store: String,
    /// When the REST API is served over TLS: `sha256:` and the hex SHA-256 of its leaf
    /// certificate (DER), which join strings carry so devices accept exactly that certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_pin: Option<String>,
}

/// `POST /devices/batch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BatchResult {
    /// Devices added.
    pub created: u64,
    /// Devices that were registered already with the same key.
    pub existing: u64,
}

/// A device behind its current directive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PendingDirective {
    /// The device.
    pub device_id: String,
    /// The generation of its current directive.
    pub generation: u64,
}

/// `GET /directives/pending`: one page, ordered by device id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PendingPage {
    /// The devices.
    pub devices: Vec<PendingDirective>,
    /// The device id to pass as `after` for the next page; null after the last.
    pub next: Option<String>,
}

/// One directive of `GET /directives/feed`: issued after the cursor, not yet applied by its
/// device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FeedDirective {
    /// Its place in the coordinator's issue order.
    pub seq: u64,
    /// The device it is for.
    pub device_id: String,
    /// The generation of the directive.
    pub generation: u64,
    /// The signed directive post (CBOR), in hex: the bytes the fabric pushes.
    pub post: String,
}

/// `GET /directives/feed`: one page, in issue order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FeedPage {
    /// The directives.
    pub devices: Vec<FeedDirective>,
    /// Where to continue (`EPOCH-SEQ` in hex); a cursor from before a coordinator restart
    /// starts over.
    pub cursor: String,
}

/// A device that asked to join with neither a one-time token nor an allowlist entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PendingDevice {
    /// Its id: the hex of its ed25519 key (its reports are signed by it).
    pub id: String,
    /// Hardware type, as it reported.
    #[serde(rename = "type")]
    pub device_type: String,
    /// CPU architecture, as it reported.
    pub arch: String,
    /// Region, as it reported.
    pub region: String,
    /// floed's version, as it reported.
    pub runtime_version: String,
    /// RFC 3339 of its first refused report.
    pub first_seen: String,
    /// RFC 3339 of its last refused report.
    pub last_seen: String,
    /// How many of its reports were refused.
    pub reports: u64,
}

/// `GET /devices/pending`: the enrollment requests, oldest first (at most 1 000).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PendingDeviceList {
    /// The requests.
    pub devices: Vec<PendingDevice>,
}
