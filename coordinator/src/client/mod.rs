//! A blocking HTTP client for the coordinator's REST API (`/api/v1`), as the `floe` CLI, the
//! demo and end-to-end tests use it.
//!
//! The client is deliberately thin: every call returns the server's reply text as received, so
//! `floe … --json` can print exactly what the server said, and the contract's types
//! (`crate::contract`: `Flow`, `Deployment`, `Device` …, the same the server answers with) are
//! parsed from it on demand. Unknown fields are ignored, so a newer server that added one
//! still reads; a missing field is a decode error, not a silent default.
//!
//! Lists are paged: `list_*` returns the first page as sent; `devices`, `deployments`,
//! `targets` and `audit_entries` return a [`Pages`] iterator that follows the cursors
//! (`.all()` collects every item).
//!
//! Errors keep what the server said: a 4xx/5xx reply with the contract's
//! `{"error":{"code","message","field"}}` body becomes [`ClientError::Api`] with those three
//! values untouched. A connection that cannot be made names the server address, so a user who
//! forgot `--server` sees where the CLI tried to go.
//!
//! The transport (one request, its bounds and its error mapping) is in `transport`; each
//! resource (flows, deployments, devices, audit) has its own file with its calls; `paging`
//! follows cursors; `error` holds [`ClientError`].
//!
//! Bounds: every reply body is read with a cap ([`MAX_REPLY_BYTES`]); a larger one is an error,
//! never an unbounded allocation. Every request has a connect timeout and an overall timeout.

mod audit;
mod deployments;
mod devices;
mod error;
mod events;
mod flows;
mod paging;
mod tokens;
mod transport;
mod vars;

pub use crate::contract::{
    ApiToken, ApiTokenCreated, ApiTokenList, AuditEntry, AuditPage, Deployment, DeploymentInput,
    DeploymentPage, Device, DeviceHealth, DeviceInput, DevicePage, DeviceVars, EnrollToken, Flow,
    FlowArtifact, FlowInput, FlowList, Gate, GateCheck, GroupVars, GroupVarsChange, GroupVarsList,
    JoinInfo, PendingDevice, PendingDeviceList, ResolvedVar, Role, Slot, Stage, Target, TargetPage,
    VarGroup, VarSource, VarsChange, WhoAmI,
};
pub use deployments::{DeploymentAction, ReportFormat};
pub use devices::DeviceFilter;
pub use error::{ClientError, error_from_reply};
pub use events::{EventStream, SseParser};
pub use paging::{Page, Pages};
pub use transport::{
    BASE_PATH, CONNECT_TIMEOUT, Client, MAX_REPLY_BYTES, Method, REQUEST_TIMEOUT, Reply,
    encode_component,
};

#[cfg(test)]
mod tests;
