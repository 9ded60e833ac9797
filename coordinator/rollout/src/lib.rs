//! The rollout engine: which device gets what and when, and when to stop.
//!
//! The engine is a pure, deterministic state machine in the shape of quinn-proto's connection:
//! [`Rollout::new`] takes a [`Plan`] and the current time, [`Rollout::handle_input`] feeds it
//! device reports, health reports, operator commands and timeouts, [`Rollout::poll_action`]
//! drains what it decided (directives, status changes, gate verdicts, audit events) and
//! [`Rollout::poll_timeout`] says when it next wants to be woken. It does no I/O, reads no clock
//! and draws no randomness of its own: time comes in as `now` (milliseconds, see [`Millis`]) and
//! the only randomness, the order in which devices are assigned to waves, comes from the plan's
//! seed. This is what makes it provable: the same plan and the same inputs give the same actions,
//! whether the inputs come from a fleet of a million real devices or from the simulator in
//! [`sim`].
//!
//! Its whole state derives serde, so the coordinator can persist it after every input and resume
//! after a restart with the same future.
//!
//! Scale shapes the data layout: per-device state is a small fixed-size record in a `Vec` indexed
//! by a dense device index (device ids live once, in the plan), running aggregates per device
//! group are updated incrementally so a gate is evaluated in time proportional to the number of
//! groups, and directives are produced lazily by [`Rollout::poll_action`] under the strategy's
//! parallelism limit instead of being materialised for a whole wave at once.
//!
//! Module map: [`plan`] (strategies, their defaults from the reference documents, targets,
//! baselines, canary selection and wave assignment), [`engine`] (the state machine), [`report`]
//! (the "Fleet Deployment Report" and the "State Block" of reference 003), [`sim`] (the
//! virtual-time fleet simulator), [`duration`] (reference duration units such as "5m").
//!
//! Decisions worth knowing when driving it (the reference documents leave them open):
//! - A stage's devices are committed only when its gate passes; a device-level trigger (crash
//!   loop, unhealthy, memory leak, health endpoint unreachable > 2 min, deploy timeout) rolls
//!   that device back and quarantines it, and counts as a failure of its stage.
//! - A stage whose failures pass its threshold is handled by its breach policy: canary, traffic
//!   steps and blue-green roll back everything; waves and rolling batches roll back the wave and
//!   pause for a human (resume goes on with the next stage, rollback rolls back all, abort
//!   rolls back what is not committed and ends `failed`).
//! - Gates judge the reports of ALL devices on the new version received in 001's windows
//!   (per device group, against its baseline or, without one, absolute limits; see
//!   [`gates`]), need `gate_min_samples` reports per group and window, may answer CAUTION
//!   (soak extended, a bounded number of times), need a quorum (default 80 %) of reports, and
//!   pause with the reason when the quorum is missing at the progress deadline (soak +
//!   strategy timeout). Offline devices are never failures; they are caught up on return and
//!   the end of the deployment waits `offline_grace` (1 h) for them before marking them skipped.
//! - Wave percentages are shares of the post-canary pool; the last wave takes the rest.
//!
//! Benchmark (`cargo build --release -p floe-coordinator`, then
//! `target/release/floe sim --devices 1000000 --strategy canary-waves`) on the shared 2-core
//! build machine under load average 10-16: setup 1.2-1.4 s (fleet, plan, canary, shuffle),
//! then 5 000 000 device events in 3.9-5.4 s wall, 0.93-1.28 M device events/s (0.75-0.97 M/s
//! including setup; 1.9-2.9 s of user CPU in all), peak RSS 209 MiB (VmHWM). With
//! `--fail-rate 0.01 --offline-rate 0.02` the same run quarantines 1 % and skips 0.6 %.
//! Since the gates judge windows (issue 15) simulated devices report every 5 min for an hour
//! after their switch: the same run is 14 988 820 device events in 5.76 s wall (2.60 M/s,
//! load average 3), 5.73 s of user CPU, peak RSS 214 MiB; with the failure and offline rates
//! 14 838 099 events in 6.00 s, 1.0 % quarantined, 0.6 % skipped.

pub mod baseline;
pub mod duration;
pub mod engine;
pub mod gates;
pub mod incident;
mod names;
pub mod plan;
pub mod report;
pub mod rng;
pub mod rollup;
pub mod sim;

#[cfg(test)]
mod tests;

pub use baseline::{BaselineMetric, BaselineSet, GroupBaseline, Trend};
pub use duration::{DurationError, parse_duration};
pub use engine::{
    Action, Check, CheckOutcome, Command, DeploymentStatus, DeviceEvent, DirectiveKind,
    GateSummary, GateVerdict, HealthReport, HealthStatus, Input, RollbackCause, Rollout,
    RolloutError, StageResult, StatusCounts, SystemFigures, TargetStatus, Verdict,
};
pub use gates::{GateConfig, NoBaseline};
pub use names::UnknownName;
pub use plan::TriggerConfig;
pub use plan::{
    Baseline, Breach, CanaryPick, CanaryReason, GateKind, Plan, PlanError, StageKind, StageMode,
    StageSpec, Strategy, StrategyConfig, TargetFlags, TargetSpec, WaveConfig,
};
pub use report::{Report, StateBlock};

/// Time as the engine sees it: milliseconds since an epoch the caller chooses (the coordinator
/// uses milliseconds since the Unix epoch, the simulator starts at zero). The engine only ever
/// compares and adds these values; a `now` smaller than one seen before is treated as the
/// earlier value (time never runs backwards inside the engine).
pub type Millis = u64;

/// One second in [`Millis`].
pub const SECOND: Millis = 1_000;
/// One minute in [`Millis`].
pub const MINUTE: Millis = 60 * SECOND;
/// One hour in [`Millis`].
pub const HOUR: Millis = 60 * MINUTE;
