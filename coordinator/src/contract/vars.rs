//! Values of flow variables per device and per group (`/devices/{id}/vars`, `/group-vars`).
//!
//! A value is text (parsed as the variable's declared type when a flow is deployed); a name
//! follows the flow language's rule. What a device receives is resolved per deployment: its
//! own value over a label group's over a device-type group's; the flow's default otherwise.
//!
//! A value set under `secret` is kept encrypted on the coordinator and delivered sealed to
//! each device's key; it is never shown again: reads show [`SECRET_SHOWN`] in its place and
//! list its name under `secret`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a read shows in place of a secret value.
pub const SECRET_SHOWN: &str = "<secret>";

/// `PUT /devices/{id}/vars` and the change half of `PUT /group-vars`: values to set (or
/// replace) and names to remove, in one change. A name may not be in both.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VarsChange {
    /// Name → value to set.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Names whose value is removed (a name without a value is not an error).
    #[serde(default)]
    pub unset: Vec<String>,
    /// Name → secret value to set: stored encrypted, delivered sealed to each device's key,
    /// never shown again. A name may be in one of `set`, `secret` and `unset` only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret: BTreeMap<String, String>,
}

/// A group of devices that values can be set for: exactly one of `label` (`key=value`: the
/// devices with that label) or `device_type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VarGroup {
    /// `key=value`: every device with this label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Every device of this type (`rpi4`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_type: Option<String>,
}

/// `PUT /group-vars`: a change of one group's values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupVarsChange {
    /// The group.
    pub group: VarGroup,
    /// Values to set.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Names to remove.
    #[serde(default)]
    pub unset: Vec<String>,
    /// Secret values to set (see [`VarsChange::secret`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret: BTreeMap<String, String>,
}

/// One group's values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GroupVars {
    /// The group.
    pub group: VarGroup,
    /// Name → value ([`SECRET_SHOWN`] for a secret one).
    pub values: BTreeMap<String, String>,
    /// The names whose value is secret.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret: Vec<String>,
}

/// `GET /group-vars`: every group that holds a value (label groups first, each kind by
/// selector). Not paged: the number of groups is bounded (`MAX_VAR_GROUPS`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GroupVarsList {
    /// The groups.
    pub groups: Vec<GroupVars>,
}

/// Where a resolved value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VarSource {
    /// The device's own value.
    Device,
    /// A label group's value.
    Label,
    /// A device-type group's value.
    DeviceType,
}

/// A value a device receives with its next deployment, and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ResolvedVar {
    /// The value ([`SECRET_SHOWN`] for a secret one).
    pub value: String,
    /// Whether the value is secret (delivered sealed, never shown).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub secret: bool,
    /// Its source.
    pub source: VarSource,
    /// The group it comes from (`site=plant-3`, `rpi4`); absent for the device's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// `GET`/`PUT /devices/{id}/vars`: a device's own values and what it resolves to now.
/// A deployment delivers only the names its flow declares; `floed.toml` `[vars]` on the
/// device overrides any of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DeviceVars {
    /// The device.
    pub device_id: String,
    /// Its own values ([`SECRET_SHOWN`] for a secret one).
    pub values: BTreeMap<String, String>,
    /// The names of its own values that are secret.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret: Vec<String>,
    /// Every name with a value from any source, resolved by precedence.
    pub resolved: BTreeMap<String, ResolvedVar>,
}
