//! Devices and enrollment: listing and flagging devices, allowlisting a key, one-time
//! enrollment tokens, and the lenient views of the server's device objects.

use super::error::ClientError;
use super::transport::{Client, Method, Reply, query, seg, to_value};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

impl Client {
    // ---- Devices, enrollment, audit ----------------------------------------------------

    /// `GET /devices?region=&type=&label=k=v&online=`.
    pub fn list_devices(&self, filter: &DeviceFilter) -> Result<Reply, ClientError> {
        let online = filter.online.map(|b| if b { "true" } else { "false" });
        let mut pairs: Vec<(&str, Option<&str>)> = vec![
            ("region", filter.region.as_deref()),
            ("type", filter.device_type.as_deref()),
        ];
        for l in &filter.labels {
            pairs.push(("label", Some(l.as_str())));
        }
        pairs.push(("online", online));
        let q = query(&pairs);
        self.call(Method::Get, &format!("/devices{q}"), None)
    }

    /// `GET /devices/:id`.
    pub fn get_device(&self, id: &str) -> Result<Reply, ClientError> {
        self.call(Method::Get, &format!("/devices/{}", seg(id)), None)
    }

    /// `PATCH /devices/:id` with the flags to change (`None` leaves a flag alone).
    pub fn set_device_flags(
        &self,
        id: &str,
        maintenance: Option<bool>,
        quarantined: Option<bool>,
    ) -> Result<Reply, ClientError> {
        let mut body = serde_json::Map::new();
        if let Some(m) = maintenance {
            body.insert("maintenance".into(), Value::Bool(m));
        }
        if let Some(q) = quarantined {
            body.insert("quarantined".into(), Value::Bool(q));
        }
        self.call(
            Method::Patch,
            &format!("/devices/{}", seg(id)),
            Some(&Value::Object(body)),
        )
    }

    /// `POST /devices`: adds a device key to the enrollment allowlist.
    pub fn allow_device(&self, body: &AllowDevice) -> Result<Reply, ClientError> {
        self.call(Method::Post, "/devices", Some(&to_value(body)))
    }

    /// `POST /enrollment-tokens`.
    pub fn create_enroll_token(&self, ttl: Option<&str>) -> Result<Reply, ClientError> {
        let mut body = serde_json::Map::new();
        if let Some(t) = ttl {
            body.insert("ttl".into(), Value::String(t.to_string()));
        }
        self.call(
            Method::Post,
            "/enrollment-tokens",
            Some(&Value::Object(body)),
        )
    }

    /// `GET /join-info`: the fabric addresses and trust store a join string carries.
    pub fn join_info(&self) -> Result<Reply, ClientError> {
        self.call(Method::Get, "/join-info", None)
    }
}

/// Filters of `GET /devices`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceFilter {
    /// Region.
    pub region: Option<String>,
    /// Device type.
    pub device_type: Option<String>,
    /// Labels as `key=value`.
    pub labels: Vec<String>,
    /// Online or offline only.
    pub online: Option<bool>,
}

/// The body of `POST /devices`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AllowDevice {
    /// The device id.
    pub id: String,
    /// The device's public key, hex.
    pub public_key: String,
    /// Device type.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub device_type: Option<String>,
    /// Region.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Labels.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// An installed or standby release on a device.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Installed {
    /// Artifact name.
    pub name: String,
    /// Release number.
    pub release: u64,
    /// Version string.
    pub version: Option<String>,
    /// `blue` or `green`.
    pub slot: Option<String>,
}

/// A device's health summary.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct DeviceHealth {
    /// `healthy`, `degraded` or `unhealthy`.
    pub status: String,
    /// Errors per message.
    pub error_rate: Option<f64>,
    /// p95 latency.
    pub p95_ms: Option<f64>,
    /// Memory.
    pub memory_mb: Option<f64>,
    /// Restarts.
    pub restarts: Option<u64>,
    /// Whether the flow runs.
    pub flow_running: Option<bool>,
}

/// A device as the server returns it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Device {
    /// Id.
    pub id: String,
    /// Type.
    #[serde(rename = "type")]
    pub device_type: Option<String>,
    /// Arch.
    pub arch: Option<String>,
    /// Region.
    pub region: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Public key hex.
    pub public_key: Option<String>,
    /// Runtime version.
    pub runtime_version: Option<String>,
    /// The running release.
    pub installed: Option<Installed>,
    /// The standby release.
    pub standby: Option<Installed>,
    /// The last known good release.
    pub last_known_good: Option<Installed>,
    /// Whether the running release is on trial.
    pub on_trial: bool,
    /// Health.
    pub health: Option<DeviceHealth>,
    /// Online.
    pub online: bool,
    /// Last report.
    pub last_seen: Option<String>,
    /// Directive generation reached.
    pub generation: Option<u64>,
    /// Maintenance flag.
    pub maintenance: bool,
    /// Quarantine flag.
    pub quarantined: bool,
    /// Enrolled.
    pub enrolled_at: Option<String>,
}

/// `{"devices":[…]}`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct DeviceList {
    /// The devices.
    pub devices: Vec<Device>,
}

/// A one-time enrollment token.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct EnrollToken {
    /// The token.
    pub token: String,
    /// When it expires.
    pub expires_at: String,
    /// When it expires, in Unix milliseconds (0 from a coordinator that does not say).
    pub expires_at_ms: u64,
}

/// What `GET /join-info` answers.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct JoinInfo {
    /// The coordinator's fabric addresses, each ending in `/p2p/<peer id>`.
    pub fabric: Vec<String>,
    /// The device trust store file (`trust.cbor`), hex.
    pub trust_store: String,
}
