//! The engine-backed [`FlowRunner`]: reads the slot's flow definition, compiles it with the
//! same validator the coordinator uses, and runs it on the floe-flow engine.
//!
//! Node panics are caught by the engine and counted; they reach the health layer both as
//! errors (so the error rate sees them) and as restarts (so a node that keeps falling over
//! reads as a crash loop).

use std::io::Read;
use std::time::Duration;

use floe_flow::engine::{Engine, EngineOptions, RunningFlow as EngineRunning, TapEvent};
use floe_flow::msg::Msg;
use tokio::sync::mpsc;

use super::runner::{FlowRunner, RunnerError, RunningFlow, StartSpec};
use crate::health::{AppSnapshot, NodeCounters};

/// The largest flow definition read from a slot (bytes).
pub const MAX_FLOW_BYTES: u64 = 4 << 20;

/// Starts slot flows on the floe-flow engine.
#[derive(Debug, Clone, Default)]
pub struct EngineRunner {
    /// Receives what sink nodes emit (the switch benchmark measures gaps with it). Bounded by
    /// its creator; the engine drops and counts events when it is full.
    pub tap: Option<mpsc::Sender<TapEvent>>,
}

/// A flow running on the engine.
#[derive(Debug)]
pub struct EngineFlow {
    running: EngineRunning,
    version: String,
}

impl FlowRunner for EngineRunner {
    type Flow = EngineFlow;

    async fn start(&mut self, spec: StartSpec<'_>) -> Result<EngineFlow, RunnerError> {
        let path = spec.slot_dir.join(&spec.record.flow);
        let mut bytes = Vec::new();
        std::fs::File::open(&path)
            .and_then(|f| f.take(MAX_FLOW_BYTES + 1).read_to_end(&mut bytes))
            .map_err(|e| RunnerError::Load(format!("{}: {e}", path.display())))?;
        if bytes.len() as u64 > MAX_FLOW_BYTES {
            return Err(RunnerError::Load(format!(
                "{} is larger than {MAX_FLOW_BYTES} bytes",
                path.display()
            )));
        }
        let compiled = floe_flow::validate::compile(&bytes, &[])
            .map_err(|e| RunnerError::Load(e.to_string()))?;
        let opts = EngineOptions {
            mute_outputs: spec.muted,
            tap: self.tap.clone(),
            ..EngineOptions::default()
        };
        let running =
            Engine::start(compiled, opts).map_err(|e| RunnerError::Start(e.to_string()))?;
        Ok(EngineFlow {
            running,
            version: spec.record.version.clone(),
        })
    }
}

impl RunningFlow for EngineFlow {
    async fn inject(&self, node: &str, payload: serde_json::Value) -> Result<(), RunnerError> {
        self.running
            .inject(node, Msg::new(payload))
            .await
            .map_err(|e| RunnerError::Inject {
                node: node.to_string(),
                message: e.to_string(),
            })
    }

    fn snapshot(&self) -> AppSnapshot {
        let health = self.running.health();
        let metrics = self.running.metrics();
        let stopped_reason = (!health.running).then(|| {
            let ended: Vec<&str> = health
                .nodes
                .iter()
                .filter(|n| n.state != floe_flow::engine::NodeState::Running)
                .map(|n| n.id.as_str())
                .collect();
            format!("node task(s) ended: {}", ended.join(", "))
        });
        AppSnapshot {
            running: health.running,
            stopped_reason,
            version: Some(self.version.clone()),
            nodes: metrics
                .nodes
                .iter()
                .map(|n| NodeCounters {
                    id: n.id.clone(),
                    received: n.msgs_in.max(n.msgs_out),
                    errors: n.errors + n.panics,
                    restarts: n.panics,
                })
                .collect(),
        }
    }

    async fn stop(self, deadline: Duration) {
        let report = self.running.stop(deadline).await;
        if !report.drained {
            tracing::warn!(aborted = ?report.aborted, "flow did not drain before the deadline");
        }
    }
}
