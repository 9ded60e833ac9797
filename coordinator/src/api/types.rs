//! The REST layer's JSON request types (the contract in docs: /api/v1). The ones the service
//! consumes are defined in [`crate::service::model`] and re-exported here, so the service never
//! depends on the REST layer; only what the REST layer alone reads (the token request) lives
//! here. Unknown fields are refused so a typo in a request is a 400 naming the field, not a
//! silently ignored setting.

pub use crate::service::model::{
    ConfigInput, DeploymentInput, DeviceInput, DevicePatch, FlowInput, Selector, WaveInput,
};
use serde::{Deserialize, Serialize};

/// `POST /enrollment-tokens`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenInput {
    /// Lifetime ("1h" default).
    pub ttl: Option<String>,
}
