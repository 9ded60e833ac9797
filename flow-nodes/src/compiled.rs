//! A complete, validated flow in the form the engine runs: node configs with every default
//! applied and every `${variable}` substituted, and edges resolved to node indices.
//!
//! [`crate::validate::compile`] is the only producer; the engine is the consumer.

use serde_json::{Map, Value};

/// A flow ready to run.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledFlow {
    /// Nodes in definition order; [`Edge`] refers to them by index.
    pub nodes: Vec<CompiledNode>,
    /// Resolved connections.
    pub edges: Vec<Edge>,
}

/// One node with its resolved configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledNode {
    /// The node id from the definition.
    pub id: String,
    /// The node kind (`dht`, `switch` …).
    pub kind: String,
    /// The human label.
    pub name: String,
    /// Every field documented in NODES.md, defaults applied, variables substituted.
    pub config: Map<String, Value>,
    /// How many output ports the node has (0 for sinks, one per rule for `switch`).
    pub outputs: u32,
    /// How many input ports the node has (0 for sources).
    pub inputs: u32,
}

/// A connection between two nodes by index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    /// Index of the sending node.
    pub from: usize,
    /// Output port of the sender.
    pub output: u32,
    /// Index of the receiving node.
    pub to: usize,
    /// Input port of the receiver.
    pub input: u32,
}
