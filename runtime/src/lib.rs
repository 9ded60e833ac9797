//! The Floe device: everything `floed` is beyond the wire and the fabric.
//!
//! - [`agent`]: the lifecycle stage → smoke → switch → trial → commit | rollback, the device
//!   side of coordinator directives, and the main loop.
//! - [`slots`], [`state`], [`releases`]: the blue/green slots on disk, the state database and
//!   the anti-rollback table.
//! - [`health`], [`http`], [`config`]: the four health layers, the local HTTP endpoints and the
//!   control socket, the TOML configuration.
//! - [`control`], [`status`]: what the control surfaces and the agent share (commands,
//!   outcomes, the published report) and the status view read from disk, so that neither
//!   [`http`] nor [`agent`] depends on the other.
//! - [`join`]: what `floed join` makes of a join string (the edited config, the fleet check,
//!   the enrolling report).
//! - [`crash`]: the crash-point hook of the crash tests (a no-op without its feature); the
//!   slots and the agent both call it, so it sits below both.
//!
//! Architecture invariant: this crate is the top of the device stack. It depends on
//! `floe-wire` (wire types, bundles, trust), `floe-fabric` (the libp2p swarm) and `floe-flow`;
//! none of them, and not the coordinator, depends on it, so Cargo refuses any arrow back.

pub mod agent;
pub mod config;
pub mod control;
pub mod crash;
pub mod health;
pub mod health_listener;
pub mod http;
pub mod join;
pub mod join_tls;
pub mod peer;
pub mod releases;
pub mod slots;
pub mod state;
pub mod status;
