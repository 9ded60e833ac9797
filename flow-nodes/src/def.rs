//! The flow definition model, exactly the reference's shape:
//! `{"nodes":[{"id","type","name","config","x","y"}], "connections":[{"source","target"}],
//! "variables":[{"name","type","value"}]}`, with optional `output` / `input` port numbers on a
//! connection for nodes with several outputs or inputs.

use serde::{Deserialize, Serialize};

/// A whole flow definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Flow {
    /// The nodes of the graph, in the order they were written.
    #[serde(default)]
    pub nodes: Vec<Node>,
    /// The edges of the graph.
    #[serde(default)]
    pub connections: Vec<Connection>,
    /// Typed variables that config values refer to as `${name}`.
    #[serde(default)]
    pub variables: Vec<Variable>,
}

/// One node of the graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Unique within the flow.
    pub id: String,
    /// The node kind (`dht`, `switch`, `mqtt_out` …).
    #[serde(rename = "type")]
    pub kind: String,
    /// A human label.
    #[serde(default)]
    pub name: String,
    /// Kind-specific settings; may be empty in a draft.
    #[serde(default = "empty_object")]
    pub config: serde_json::Value,
    /// Editor position, kept so that a round trip through Floe does not move the node.
    #[serde(default)]
    pub x: f64,
    /// Editor position.
    #[serde(default)]
    pub y: f64,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

/// A directed edge from one node's output port to another node's input port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Connection {
    /// Id of the sending node.
    pub source: String,
    /// Id of the receiving node.
    pub target: String,
    /// Output port of the source (0 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<u32>,
    /// Input port of the target (0 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<u32>,
}

/// The declared type of a variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VarType {
    /// A JSON number; the value is its decimal text.
    Number,
    /// Any text.
    String,
    /// `true` or `false`.
    Boolean,
    /// A JSON document.
    Json,
}

/// A flow variable. The reference writes every value as a string (`"value": "30"`); the value
/// must parse as the declared type. A variable declared `"secret": true` has no value in the
/// flow (the flow is hashed into the artifact that every peer may fetch): each device gets its
/// value sealed to its own key, or from its own `floed.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Variable {
    /// The name used in `${name}` references.
    pub name: String,
    /// The declared type.
    #[serde(rename = "type")]
    pub var_type: VarType,
    /// The value as text; absent for a secret variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Whether the value is a secret, delivered to each device apart from the flow.
    #[serde(default, skip_serializing_if = "is_false")]
    pub secret: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}
