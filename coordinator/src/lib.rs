//! The Floe coordinator: the rollout engine and its fleet simulator, the SQLite store, the
//! service actor that drives engines with the clock, and the REST API.
//!
//! Architecture invariant: `rollout` does no I/O, reads no clock and draws no randomness of its
//! own; time and a seed come in as inputs and everything it decides comes out as actions. The
//! `service` is the only place that passes time in and the only owner of the `store`.

pub mod admission;
pub mod api;
pub mod bridge;
pub mod client;
pub mod console;
pub mod contract;
pub mod link;
pub mod loadtest;
pub mod openapi;
pub mod server;
pub mod service;
pub mod store;
pub mod tls;
