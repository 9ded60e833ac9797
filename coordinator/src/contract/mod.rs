//! The REST API's contract: every request and response body of `/api/v1`, defined once.
//!
//! The server's handlers parse requests into these types and answer with them, the Rust
//! client (`crate::client`) and the CLI read answers into them, and the OpenAPI document
//! (`crate::openapi`) derives its schemas from them, so a field added here is added
//! everywhere (a test validates every route's real answer against the document).
//!
//! Why it is shaped this way:
//! - Pure data: serde and schemars derives, no I/O and nothing of the service, so the
//!   service, the store, the server and the client all import it and it imports none of them.
//! - Requests refuse unknown fields (a typo is a 400 naming the field, not a silently ignored
//!   setting). Responses do not: a client built against this contract reads the answer of a
//!   newer server that added fields.
//! - Enums are typed and spell themselves exactly as the wire always did (`snake_case`).
//! - Every list that grows with the fleet is paged (`paging`): bounded pages, an opaque
//!   cursor, `next` in the answer (null after the last page), a stable order.

mod audit;
mod deployments;
mod devices;
mod enums;
mod events;
mod flows;
mod health;
mod incidents;
mod misc;
pub mod paging;
mod plan;
mod preflight;
mod requests;
mod tokens;
mod triggers;
mod vars;

pub use audit::{AuditEntry, AuditPage};
pub use deployments::{
    Deployment, DeploymentArtifact, DeploymentConfig, DeploymentPage, Gate, GateCheck,
    GateSettings, Stage, StrategyDefaults, StrategyList, Target, TargetCounts, TargetPage,
    WaveConfigView,
};
pub use devices::{
    AppliedDirective, BatchResult, Device, DeviceHealth, DevicePage, EnrollToken, FeedDirective,
    FeedPage, JoinInfo, PendingDevice, PendingDeviceList, PendingDirective, PendingPage, Slot,
};
pub use enums::{FlowState, GateVerdict, HealthLevel, Role, UnknownName};
pub use events::{
    Delivery, DeliveryLog, Event, EventKind, Hook, HookCreated, HookInput, HookList, KindFilter,
};
pub use floe_rollout::{DeploymentStatus, Report, StageKind, TargetStatus};
pub use flows::{Flow, FlowArtifact, FlowList};
pub use health::{GroupHealth, HealthGroups};
pub use incidents::{
    AffectedDevice, AffectedDevices, DeviceVerdict, FailurePattern, IncidentReport,
    MAX_AFFECTED_LISTED, MAX_TIMELINE, MetricDelta, PatternFinding, RollbackVerification,
    TimelineEntry, VerifiedDevice,
};
pub use misc::{
    ConnectionStatus, ErrorBody, ErrorDetail, Healthz, IngestStatus, RateLimitStatus, Status,
};
pub use plan::{CanaryPickView, DeploymentPlan};
pub use preflight::{
    DeploymentState, Preflight, PreflightItem, PreflightRefusal, PublishInput, SmokeMessageInput,
    SmokeTestInput, StartInput,
};
pub use requests::{
    ConfigInput, DeploymentInput, DeviceBatch, DeviceInput, DevicePatch, FlowInput, Selector,
    TokenInput, WaveInput,
};
pub use tokens::{ApiToken, ApiTokenCreated, ApiTokenInput, ApiTokenList, WhoAmI};
pub use triggers::TriggerInput;
pub use vars::{
    DeviceVars, GroupVars, GroupVarsChange, GroupVarsList, ResolvedVar, SECRET_SHOWN, VarGroup,
    VarSource, VarsChange,
};
