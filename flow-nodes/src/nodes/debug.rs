//! `debug`: logs a property of each message through `tracing` and reports it to the tap. The
//! engine counts what it receives, so an inactive debug node is a plain counting sink.

use crate::msg::{Msg, PropPath};
use crate::task::NodeError;
use crate::task::{Emit, Process};
use serde::Deserialize;
use std::sync::Arc;

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
enum Level {
    Debug,
    #[default]
    Info,
    Warn,
}

#[derive(Debug, Deserialize)]
pub(crate) struct DebugConfig {
    #[serde(default)]
    level: Level,
    #[serde(default = "default_property")]
    property: String,
    #[serde(default = "yes")]
    active: bool,
}

fn default_property() -> String {
    "payload".to_string()
}

fn yes() -> bool {
    true
}

/// The running debug node.
#[derive(Debug)]
pub(crate) struct DebugNode {
    id: Arc<str>,
    level: Level,
    property: PropPath,
    active: bool,
}

impl DebugNode {
    pub(crate) fn new(id: &str, cfg: DebugConfig) -> Result<Self, String> {
        Ok(DebugNode {
            id: Arc::from(id),
            level: cfg.level,
            property: PropPath::parse(&cfg.property).map_err(|e| format!("property: {e}"))?,
            active: cfg.active,
        })
    }
}

impl Process for DebugNode {
    fn process(&mut self, msg: Msg, out: &mut Emit<'_>) -> Result<(), NodeError> {
        if self.active {
            let shown = msg
                .get(&self.property)
                .map(|v| v.to_string())
                .unwrap_or_else(|| "(absent)".to_string());
            let node = &*self.id;
            let topic = &*msg.topic;
            match self.level {
                Level::Debug => tracing::debug!(node, topic, value = %shown, "debug"),
                Level::Info => tracing::info!(node, topic, value = %shown, "debug"),
                Level::Warn => tracing::warn!(node, topic, value = %shown, "debug"),
            }
        }
        out.tap(&msg);
        Ok(())
    }
}
