//! A complete, validated flow in the form the engine runs: node configs with every default
//! applied and every `${variable}` substituted, and edges resolved to node indices.
//!
//! [`crate::validate::compile`] is the only producer; the engine is the consumer.
//!
//! The contract for [`CompiledNode::config`] (also written in NODES.md, "Compiled config"):
//! - every field NODES.md documents for the kind is present, with the value given or its
//!   default; optional fields with no default (`inject.payload`, `inject.interval`,
//!   `username`, `password`, `ca_file`) are absent when not given;
//! - every duration is an integer number of **milliseconds** (a JSON `u64`) under the field's
//!   own name, so the engine never parses duration strings;
//! - `${variables}` are substituted with typed values, integers are JSON integers, and `change`
//!   rules carry `value_type` `literal` or `property` only (`variable` and `json` are resolved).
//!
//! So the engine can deserialize each config straight into a typed struct with the NODES.md
//! field names and treat a deserialization failure as a bug, not as user error.

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
    /// Every field documented in NODES.md, defaults applied, variables substituted,
    /// durations as integer milliseconds.
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

impl CompiledNode {
    /// A node written by hand instead of compiled, for the engine's tests and the pipeline
    /// benchmark, which build graphs without going through the validator. The name is the id;
    /// a config that is not a JSON object counts as empty.
    #[doc(hidden)]
    pub fn by_hand(id: &str, kind: &str, config: Value, inputs: u32, outputs: u32) -> Self {
        let config = match config {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        CompiledNode {
            id: id.into(),
            kind: kind.into(),
            name: id.into(),
            config,
            outputs,
            inputs,
        }
    }
}

impl Edge {
    /// An edge from the first output port of `from` to the first input port of `to`, the only
    /// ports most hand-written graphs use (tests and benchmarks).
    #[doc(hidden)]
    pub fn first_ports(from: usize, to: usize) -> Self {
        Edge {
            from,
            output: 0,
            to,
            input: 0,
        }
    }
}
