//! The seam between the agent and the flow engine.
//!
//! The agent only needs to start a flow from a slot (muted for the smoke test or live), feed
//! it test input, read its counters and stop it. Keeping that behind a small trait lets the
//! lifecycle be tested with scripted flows that fail to start, hang or fall over, and keeps the
//! engine's own types out of the agent's state machine.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use floe_flow::EngineError;
use floe_flow::validate::Invalid;

use crate::health::AppSnapshot;
use crate::slots::{SlotName, VersionRecord};

/// Why a flow could not be started or driven.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// Reading the slot's flow definition failed.
    #[error("loading the flow: {}: {source}", path.display())]
    Read {
        /// The flow file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The slot's flow definition is larger than the runner accepts.
    #[error("loading the flow: {} is larger than {limit} bytes", path.display())]
    TooLarge {
        /// The flow file.
        path: PathBuf,
        /// The limit, in bytes.
        limit: u64,
    },
    /// The flow definition does not compile (every problem, on one line).
    #[error("loading the flow: {}", one_line(&.0.report()))]
    Invalid(#[source] Invalid),
    /// The engine refused to start the flow.
    #[error("starting the flow: {0}")]
    Start(#[source] EngineError),
    /// Injecting a test message failed.
    #[error("injecting into node `{node}`: {source}")]
    Inject {
        /// The target node.
        node: String,
        /// The engine's error.
        source: EngineError,
    },
}

/// A multi-line report on one line, for logs and audit details.
fn one_line(text: &str) -> String {
    text.lines().collect::<Vec<_>>().join("; ")
}

/// What to start.
#[derive(Debug, Clone, Copy)]
pub struct StartSpec<'a> {
    /// The slot directory (the flow and its files live under it).
    pub slot_dir: &'a Path,
    /// The slot's verified version record.
    pub record: &'a VersionRecord,
    /// Outputs muted: nothing leaves the device (the smoke test runs this way).
    pub muted: bool,
    /// The slot the flow runs from. Each slot's flow gets its own MQTT client ids, so the
    /// smoke test of one slot never takes over the broker session of the live flow.
    pub slot: SlotName,
    /// The device id (the default MQTT client ids carry it, so two devices running the same
    /// flow on one broker do not collide either).
    pub device: &'a str,
    /// How long a node may hold a message (take no new input while input waits) before the
    /// flow counts as hung.
    pub stuck_after: Duration,
    /// The device's local values of flow variables (`[vars]` in `floed.toml`); they win over
    /// the values in the slot's record (see [`effective_vars`]).
    pub local_vars: &'a BTreeMap<String, String>,
    /// The record's secret values, opened in memory for this start (never written).
    pub secrets: &'a BTreeMap<String, String>,
}

/// The values a slot's flow runs with: the values the coordinator delivered for this device
/// (the slot record's clear ones and the opened secret ones), each replaced by the device's
/// local value of the same name. The flow's own defaults stay for every name neither sets;
/// names the flow does not declare are ignored when it is compiled.
pub fn effective_vars(
    record: &VersionRecord,
    secrets: &BTreeMap<String, String>,
    local: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    let mut all = record.vars.clone();
    all.extend(secrets.iter().map(|(k, v)| (k.clone(), v.clone())));
    all.extend(local.iter().map(|(k, v)| (k.clone(), v.clone())));
    all.into_iter().collect()
}

/// A message a sink node emitted (or would have published: the smoke test runs muted).
#[derive(Debug, Clone, PartialEq)]
pub struct SinkOutput {
    /// The sink node's id.
    pub node: String,
    /// The message payload.
    pub payload: serde_json::Value,
}

/// Starts flows.
pub trait FlowRunner {
    /// A running flow.
    type Flow: RunningFlow;

    /// Starts the flow the spec names. The agent bounds this with a timeout and catches panics.
    fn start(
        &mut self,
        spec: StartSpec<'_>,
    ) -> impl Future<Output = Result<Self::Flow, RunnerError>>;
}

/// A flow that runs.
pub trait RunningFlow {
    /// Injects a message into a node (the smoke test's input).
    fn inject(
        &self,
        node: &str,
        payload: serde_json::Value,
    ) -> impl Future<Output = Result<(), RunnerError>>;

    /// The flow's counters and state now.
    fn snapshot(&self) -> AppSnapshot;

    /// Takes up to `max` of the sink outputs seen since the last call (muted flows only; the
    /// smoke test checks its expectations with them). The default has none to give.
    fn drain_outputs(&mut self, max: usize) -> Vec<SinkOutput> {
        let _ = max;
        Vec::new()
    }

    /// Stops the flow, giving it at most `deadline` to drain.
    fn stop(self, deadline: Duration) -> impl Future<Output = ()>;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn local_values_win_over_delivered_ones() {
        let record = VersionRecord {
            version: "1.0.0".into(),
            flow: "flow.json".into(),
            files: BTreeMap::new(),
            smoke: Vec::new(),
            smoke_expect: Vec::new(),
            smoke_timeout_ms: None,
            vars: [("broker", "mqtt://coordinator"), ("topic", "t/device")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into(),
            secret_vars: BTreeMap::new(),
        };
        let local = [
            ("broker", "mqtt://local"),
            ("extra", "x"),
            ("pw", "local-pw"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into();
        let secrets = [("pw", "delivered-pw"), ("token", "t0k")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into();
        let got = effective_vars(&record, &secrets, &local);
        let want: Vec<(String, String)> = [
            ("broker", "mqtt://local"),
            ("extra", "x"),
            ("pw", "local-pw"),
            ("token", "t0k"),
            ("topic", "t/device"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into();
        assert_eq!(got, want);
    }
}
