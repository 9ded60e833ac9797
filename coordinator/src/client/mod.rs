//! A blocking HTTP client for the coordinator's REST API (`/api/v1`), as the `floe` CLI, the
//! demo and end-to-end tests use it.
//!
//! The client is deliberately thin: every call returns the server's reply text as received, so
//! `floe … --json` can print exactly what the server said, and typed views (`Flow`,
//! `Deployment`, `Device` …) are parsed from it on demand. The views are lenient (unknown fields
//! ignored, missing ones defaulted) because the server may grow fields the CLI does not know
//! yet; the server is the one that validates.
//!
//! Errors keep what the server said: a 4xx/5xx reply with the contract's
//! `{"error":{"code","message","field"}}` body becomes [`ClientError::Api`] with those three
//! values untouched. A connection that cannot be made names the server address, so a user who
//! forgot `--server` sees where the CLI tried to go.
//!
//! The transport (one request, its bounds and its error mapping) is in `transport`; each
//! resource (flows, deployments, devices, audit) has its own file with its calls, request
//! bodies and typed views; `error` holds [`ClientError`].
//!
//! Bounds: every reply body is read with a cap ([`MAX_REPLY_BYTES`]); a larger one is an error,
//! never an unbounded allocation. Every request has a connect timeout and an overall timeout.

mod audit;
mod deployments;
mod devices;
mod error;
mod flows;
mod transport;

pub use audit::{AuditEntry, AuditList};
pub use deployments::{
    ArtifactRef, Deployment, DeploymentAction, DeploymentList, Gate, GateCheck, ReportFormat,
    Stage, Target,
};
pub use devices::{
    AllowDevice, Device, DeviceFilter, DeviceHealth, DeviceList, EnrollToken, Installed, JoinInfo,
};
pub use error::{ClientError, error_from_reply};
pub use flows::{Flow, FlowArtifact, FlowList, NewFlow};
pub use transport::{
    BASE_PATH, CONNECT_TIMEOUT, Client, MAX_REPLY_BYTES, Method, REQUEST_TIMEOUT, Reply,
    encode_component,
};

#[cfg(test)]
mod tests;
