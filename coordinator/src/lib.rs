//! The Floe coordinator: the rollout engine and its fleet simulator, and (as they land) the
//! store, the REST API and the driver that connects them to the network.
//!
//! Architecture invariant: `rollout` does no I/O, reads no clock and draws no randomness of its
//! own; time and a seed come in as inputs and everything it decides comes out as actions.

pub mod client;
pub mod link;
pub mod rollout;
