//! Validation of flow definitions at two levels: draft (structure only) and complete (what it
//! takes to publish or run).
//!
//! Work in progress: the full rule set lands with the foundation issue. Until then [`check`]
//! refuses every input, so nothing can mistake it for a working validator.

use crate::def::Flow;
use serde::Serialize;

/// How much a flow must satisfy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Structure only: node types known, ids unique, connections resolve, variables parse.
    Draft,
    /// Everything needed to publish or run: every node's config complete or defaulted.
    Complete,
}

/// One problem found in a flow, naming where it is and which field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// What the problem is about: `node n2`, `connection 3`, `variable threshold`, `flow`.
    pub subject: String,
    /// The field at fault (`config.topic`, `target`, `value` …), empty when it is the subject.
    pub field: String,
    /// A sentence that says what is wrong.
    pub message: String,
}

/// Why a flow was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum Invalid {
    /// The bytes are not a flow document at all (not JSON, too large, too deep, wrong shape).
    #[error("{0}")]
    Input(String),
    /// The document parsed but has problems; all of them are listed.
    #[error("{} problem(s) in the flow", .0.len())]
    Problems(Vec<Problem>),
}

/// Parses and validates a flow document.
pub fn check(_bytes: &[u8], _level: Level) -> Result<Flow, Invalid> {
    Err(Invalid::Input("flow validation is not built yet".to_string()))
}

/// Parses, validates at the complete level, and resolves a flow for the engine. `overrides`
/// replace variable values by name (as `floed run --var name=value` does) before validation.
pub fn compile(
    _bytes: &[u8],
    _overrides: &[(String, String)],
) -> Result<crate::compiled::CompiledFlow, Invalid> {
    Err(Invalid::Input("flow compilation is not built yet".to_string()))
}
