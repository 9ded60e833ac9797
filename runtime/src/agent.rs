//! The device agent.

pub mod crash;
