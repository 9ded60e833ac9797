//! The node kinds at run time: each kind's config as a typed struct (field names and defaults
//! from NODES.md), and the task or per-message function that runs it.
//!
//! Configs arrive compiled ([`crate::compiled`]): defaults applied, variables substituted and
//! durations already turned into integer milliseconds. The structs below still carry the
//! NODES.md defaults, so a hand-built flow (tests, benchmarks) may leave fields out; a field of
//! the wrong type or shape is a clear [`EngineError::Config`] that names the node and field,
//! never a panic.

mod change;
mod debug;
mod delay;
mod dht;
#[cfg(feature = "fault-nodes")]
mod fault;
mod inject;
mod mqtt;
mod sensor;
mod switch;

pub use change::ChangeNode;
pub use dht::{DhtModel, DhtReading, simulated_reading};
pub use switch::SwitchNode;

pub use crate::task::{FsReader, NodeError, SysfsReader};

use crate::compiled::CompiledNode;
use crate::task::{EngineError, NodeIo, Process, run_process};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;

/// A node ready to run.
pub(crate) enum Built {
    Process(Box<dyn Process>),
    Inject(inject::InjectNode),
    Dht(dht::DhtNode),
    Sensor(sensor::SensorNode),
    Delay(delay::DelayNode),
    MqttOut(mqtt::MqttOutNode),
    MqttIn(mqtt::MqttInNode),
    #[cfg(feature = "fault-nodes")]
    Hang(fault::HangNode),
}

impl Built {
    pub(crate) async fn run(self, io: NodeIo) {
        match self {
            Built::Process(p) => run_process(p, io).await,
            Built::Inject(n) => n.run(io).await,
            Built::Dht(n) => n.run(io).await,
            Built::Sensor(n) => n.run(io).await,
            Built::Delay(n) => n.run(io).await,
            Built::MqttOut(n) => n.run(io).await,
            Built::MqttIn(n) => n.run(io).await,
            #[cfg(feature = "fault-nodes")]
            Built::Hang(n) => n.run(io).await,
        }
    }
}

/// Builds a built-in node kind from its compiled config. `muted` is the smoke-test mode.
pub(crate) fn build(
    node: &CompiledNode,
    variables: &BTreeMap<String, serde_json::Value>,
    #[cfg_attr(not(feature = "fault-nodes"), allow(unused_variables))] muted: bool,
) -> Result<Built, EngineError> {
    let cfg_err = |message: String| EngineError::Config {
        node: node.id.clone(),
        kind: node.kind.clone(),
        message,
    };
    Ok(match node.kind.as_str() {
        "inject" => Built::Inject(inject::InjectNode::new(parse(node)?).map_err(cfg_err)?),
        "dht" => Built::Dht(dht::DhtNode::new(parse(node)?).map_err(cfg_err)?),
        "sensor" => Built::Sensor(sensor::SensorNode::new(parse(node)?).map_err(cfg_err)?),
        "switch" => Built::Process(Box::new(
            switch::SwitchNode::new(parse(node)?).map_err(cfg_err)?,
        )),
        "change" => Built::Process(Box::new(
            change::ChangeNode::new(parse(node)?, variables).map_err(cfg_err)?,
        )),
        "delay" => Built::Delay(delay::DelayNode::new(parse(node)?).map_err(cfg_err)?),
        "debug" => Built::Process(Box::new(
            debug::DebugNode::new(&node.id, parse(node)?).map_err(cfg_err)?,
        )),
        "mqtt_out" => {
            Built::MqttOut(mqtt::MqttOutNode::new(&node.id, parse(node)?).map_err(cfg_err)?)
        }
        "mqtt_in" => Built::MqttIn(mqtt::MqttInNode::new(&node.id, parse(node)?).map_err(cfg_err)?),
        #[cfg(feature = "fault-nodes")]
        "fault" => fault::build(node, muted)?,
        other => {
            return Err(EngineError::UnknownKind {
                node: node.id.clone(),
                kind: other.to_string(),
            });
        }
    })
}

/// Deserializes a node's config into its kind's struct.
pub(crate) fn parse<T: DeserializeOwned>(node: &CompiledNode) -> Result<T, EngineError> {
    serde_json::from_value(serde_json::Value::Object(node.config.clone())).map_err(|e| {
        EngineError::Config {
            node: node.id.clone(),
            kind: node.kind.clone(),
            message: e.to_string(),
        }
    })
}

/// Checks a duration in milliseconds against a lower bound.
pub(crate) fn at_least(field: &str, ms: u64, min: u64) -> Result<(), String> {
    if ms < min {
        Err(format!("{field}: {ms} ms is below the minimum of {min} ms"))
    } else {
        Ok(())
    }
}
