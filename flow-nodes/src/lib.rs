//! The Floe flow language.
//!
//! A flow is a graph of nodes (sensor → switch → mqtt_out …) written as JSON in the shape the
//! reference documents use for `POST /api/v1/flows`. This crate holds everything about flows and
//! nothing about how they reach a device: the definition model ([`def`]), validation at the
//! draft and complete levels ([`validate`]), and the engine that runs a complete graph.
//!
//! Architecture invariant: this crate knows nothing of slots, networks or deployments.

pub mod compiled;
pub mod def;
pub mod engine;
pub mod kinds;
pub mod msg;
pub mod nodes;
mod task;
pub mod validate;

pub use compiled::{CompiledFlow, CompiledNode, Edge};
pub use def::{Connection, Flow, Node, VarType, Variable};
pub use engine::{Engine, EngineError, EngineOptions, RunningFlow, StopReport, TapEvent};
pub use msg::Msg;
pub use validate::{Invalid, Level, Problem, check};
