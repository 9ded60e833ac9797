//! What the registry knows about a device for choosing canaries (001 "Canary Selection
//! Algorithm"): the operator's facts (single point of failure, known hardware issues,
//! monitoring coverage) and the coordinator's own connectivity history. Kept in the device's
//! JSON document (`#[serde(default)]`), so devices stored before these fields load with none
//! set and no table changes: the store's rule for new optional document fields.

use serde::{Deserialize, Serialize};

/// The most offline transitions a device record keeps (the newest; older ones and those more
/// than 24 h old are dropped when one is added).
pub const MAX_OFFLINE_HISTORY: usize = 16;

/// A device's canary facts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CanaryFacts {
    /// Operator: the device is a single point of failure at its site (never a canary).
    pub single_point_of_failure: bool,
    /// Operator: known hardware issues, in words; empty when none (never a canary if set).
    pub known_hardware_issues: String,
    /// Operator: monitoring coverage 0-100 (higher is better; unset ranks as 0).
    pub monitoring: Option<u8>,
    /// Coordinator: when (unix ms) the device went from online to offline, oldest first; at
    /// most [`MAX_OFFLINE_HISTORY`], none older than 24 h before the newest.
    pub offline_at: Vec<u64>,
}
