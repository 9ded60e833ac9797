//! Everything a node of the Floe network is.
//!
//! The network-facing modules (`proto`, `artifact`, `p2p`) are shared with the coordinator; the
//! device-only parts (`slots`, `health`, `agent`) build on them.
//!
//! Architecture invariant: `proto`, `artifact` and `p2p` never import `agent`, `slots` or
//! `health`, so the coordinator uses them without pulling in the device.

pub mod agent;
pub mod artifact;
pub mod broker;
pub mod config;
pub mod health;
pub mod http;
pub mod identity;
pub mod p2p;
pub mod proto;
pub mod slots;
pub mod state;
