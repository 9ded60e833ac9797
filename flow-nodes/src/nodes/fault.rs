//! `fault`: a test-only pass-through node that misbehaves on purpose, so that the device agent's
//! rollback paths can be proven end to end with a real engine and a real daemon.
//!
//! The built-in kinds cannot hang or panic, and a bad sensor only shows as read errors. Real
//! field failures are worse: a driver that blocks forever, a node that panics on some input, a
//! node whose error rate climbs under live traffic (at once, `error_rate`, or slowly, `error_ramp`:
//! the slow degradation a canary soak must catch), a device port that is only claimed when the
//! outputs are live (so the muted smoke test passes and the switch fails). This kind models each
//! of them. It exists only with the cargo feature `fault-nodes`, which release builds never
//! enable: without it the validator refuses `fault` as an unknown node type and the engine
//! does not know it.
//!
//! Every mode except `fail_start_live` behaves as a plain pass-through until `after` has passed
//! since the node started, and only then starts to misbehave.
//!
//! The validator's description of the kind ([`crate::kinds`]) lives with the other kinds' specs,
//! so this file only runs the kind and the spec does not reach into the node kinds.

use super::{Built, parse};
use crate::compiled::CompiledNode;
use crate::msg::Msg;
use crate::task::{Emit, EngineError, NodeError, NodeIo, Process};
use serde::Deserialize;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Mode {
    PanicAfter,
    HangAfter,
    ErrorRate,
    ErrorRamp,
    FailStartLive,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FaultConfig {
    mode: Mode,
    /// Milliseconds (compiled).
    #[serde(default)]
    after: u64,
    #[serde(default = "half")]
    rate: f64,
    /// Milliseconds (compiled): `error_ramp` climbs from 0 at `after` to `rate` over this.
    #[serde(default)]
    ramp: u64,
}

fn half() -> f64 {
    0.5
}

/// Builds a fault node from its compiled config. `muted` is the engine's smoke-test mode:
/// `fail_start_live` fails here, at start, only when outputs are live. Per-message modes run
/// as a [`Process`] (so a panic goes through the engine's own `catch_unwind`); the hang runs as
/// its own task.
pub(crate) fn build(node: &CompiledNode, muted: bool) -> Result<Built, EngineError> {
    let cfg: FaultConfig = parse(node)?;
    if !(0.0..=1.0).contains(&cfg.rate) {
        return Err(EngineError::Config {
            node: node.id.clone(),
            kind: node.kind.clone(),
            message: format!("rate: {} is not a fraction between 0 and 1", cfg.rate),
        });
    }
    if cfg.mode == Mode::ErrorRamp && cfg.ramp == 0 {
        return Err(EngineError::Config {
            node: node.id.clone(),
            kind: node.kind.clone(),
            message: "ramp: mode error_ramp needs a ramp longer than 0 ms (\"2m\"); for a \
                      rate that starts at once use mode error_rate"
                .to_string(),
        });
    }
    let after = Duration::from_millis(cfg.after);
    let started = Instant::now();
    let id = node.id.clone();
    Ok(match cfg.mode {
        Mode::FailStartLive if !muted => {
            return Err(EngineError::Start {
                node: id,
                message:
                    "could not claim its device: outputs are live (fault mode fail_start_live)"
                        .to_string(),
            });
        }
        Mode::FailStartLive => Built::Process(Box::new(PassThrough)),
        Mode::HangAfter => Built::Hang(HangNode { after, started }),
        Mode::PanicAfter => Built::Process(Box::new(PanicNode { id, after, started })),
        Mode::ErrorRate => Built::Process(Box::new(ErrorNode {
            after,
            started,
            rate: cfg.rate,
            seen: 0,
        })),
        Mode::ErrorRamp => Built::Process(Box::new(RampNode {
            started,
            ramp: Ramp {
                after,
                ramp: Duration::from_millis(cfg.ramp),
                rate: cfg.rate,
                due: 0.0,
                seen: 0,
            },
        })),
    })
}

struct PassThrough;

impl Process for PassThrough {
    fn process(&mut self, msg: Msg, out: &mut Emit<'_>) -> Result<(), NodeError> {
        out.emit(0, msg);
        Ok(())
    }
}

struct PanicNode {
    id: String,
    after: Duration,
    started: Instant,
}

impl Process for PanicNode {
    // Panicking is this mode's whole purpose; the engine catches it per message.
    #[allow(clippy::panic)]
    fn process(&mut self, msg: Msg, out: &mut Emit<'_>) -> Result<(), NodeError> {
        if self.started.elapsed() >= self.after {
            panic!("fault node {}: injected panic (mode panic_after)", self.id);
        }
        out.emit(0, msg);
        Ok(())
    }
}

struct ErrorNode {
    after: Duration,
    started: Instant,
    rate: f64,
    /// Messages seen since the errors began.
    seen: u64,
}

impl Process for ErrorNode {
    fn process(&mut self, msg: Msg, out: &mut Emit<'_>) -> Result<(), NodeError> {
        if self.started.elapsed() < self.after {
            out.emit(0, msg);
            return Ok(());
        }
        // Deterministic: the n-th message fails when floor(n * rate) steps up, so exactly
        // `rate` of the messages fail over any long run, without a random number generator.
        let before = (self.seen as f64 * self.rate).floor();
        self.seen += 1;
        let now = (self.seen as f64 * self.rate).floor();
        if now > before {
            return Err(NodeError::Message(format!(
                "injected error on message {} (mode error_rate, rate {})",
                self.seen, self.rate
            )));
        }
        out.emit(0, msg);
        Ok(())
    }
}

/// `error_ramp`'s arithmetic, with the time since the node started as input: the error rate
/// is 0 until `after`, then climbs linearly to `rate` over `ramp`, then stays there.
/// Deterministic like `error_rate`: each message adds the current rate to the errors due, and
/// a message fails when the whole number of errors due steps up, so the errors are spread
/// evenly (never two in a row below a rate of 1/2) and add up to the ramp's integral.
#[derive(Debug)]
struct Ramp {
    after: Duration,
    ramp: Duration,
    rate: f64,
    /// Errors due so far (the sum of the rates the messages met).
    due: f64,
    /// Messages seen since the ramp began.
    seen: u64,
}

impl Ramp {
    /// The error rate at `elapsed` since the node started.
    fn rate_at(&self, elapsed: Duration) -> f64 {
        let Some(into) = elapsed.checked_sub(self.after) else {
            return 0.0;
        };
        let share = (into.as_secs_f64() / self.ramp.as_secs_f64()).min(1.0);
        self.rate * share
    }

    /// Whether the message met at `elapsed` fails, and the rate it met.
    fn fails(&mut self, elapsed: Duration) -> Option<f64> {
        let rate = self.rate_at(elapsed);
        if elapsed < self.after {
            return None;
        }
        self.seen += 1;
        let before = self.due.floor();
        self.due += rate;
        (self.due.floor() > before).then_some(rate)
    }
}

struct RampNode {
    started: Instant,
    ramp: Ramp,
}

impl Process for RampNode {
    fn process(&mut self, msg: Msg, out: &mut Emit<'_>) -> Result<(), NodeError> {
        if let Some(rate) = self.ramp.fails(self.started.elapsed()) {
            return Err(NodeError::Message(format!(
                "injected error on message {} (mode error_ramp, rate now {:.4})",
                self.ramp.seen, rate
            )));
        }
        out.emit(0, msg);
        Ok(())
    }
}

/// `hang_after`: once `after` has passed, the next batch it takes is held forever, the way a
/// driver stuck in a call that never returns holds the message it was handling. The task
/// ignores cancellation, so only an abort ends it.
pub(crate) struct HangNode {
    after: Duration,
    started: Instant,
}

impl HangNode {
    pub(crate) async fn run(self, mut io: NodeIo) {
        let Some(mut rx) = io.input.take() else {
            return;
        };
        while let Some(batch) = rx.recv().await {
            io.metrics.msgs_in.fetch_add(batch.len() as u64, Relaxed);
            if self.started.elapsed() >= self.after {
                tracing::warn!(node = %io.id, held = batch.len(), "fault node hangs (mode hang_after)");
                std::future::pending::<()>().await;
            }
            for msg in batch {
                io.out.push(0, msg);
            }
            io.out.flush().await;
        }
        io.out.flush().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Engine, EngineError, EngineOptions, NodeState};
    use crate::validate;
    use serde_json::json;

    fn flow(config: serde_json::Value) -> Vec<u8> {
        json!({
            "nodes": [
                {"id": "f", "type": "fault", "name": "F", "config": config},
                {"id": "out", "type": "debug", "name": "Out", "config": {"level": "debug"}}
            ],
            "connections": [{"source": "f", "target": "out"}]
        })
        .to_string()
        .into_bytes()
    }

    fn start(
        config: serde_json::Value,
        muted: bool,
    ) -> Result<crate::engine::RunningFlow, EngineError> {
        let compiled = validate::compile(&flow(config), &[]).unwrap();
        Engine::start(
            compiled,
            EngineOptions {
                mute_outputs: muted,
                ..EngineOptions::default()
            },
        )
    }

    async fn feed(f: &crate::engine::RunningFlow, n: usize) {
        for i in 0..n {
            f.inject("f", Msg::new(json!(i))).await.unwrap();
        }
    }

    #[test]
    fn validation_knows_the_kind_and_its_fields() {
        assert!(
            validate::compile(&flow(json!({"mode": "panic_after", "after": "300ms"})), &[]).is_ok()
        );
        let bad = validate::compile(&flow(json!({"mode": "explode"})), &[]).unwrap_err();
        assert!(bad.report().contains("mode"), "{}", bad.report());
        let compiled = validate::compile(&flow(json!({"mode": "error_rate"})), &[]).unwrap();
        assert_eq!(compiled.nodes[0].config["after"], json!(0));
        assert_eq!(compiled.nodes[0].config["rate"], json!(0.5));
    }

    #[tokio::test]
    async fn fail_start_live_fails_only_when_outputs_are_live() {
        let cfg = json!({"mode": "fail_start_live"});
        let err = start(cfg.clone(), false).unwrap_err();
        assert!(err.to_string().contains("could not claim"), "{err}");
        let f = start(cfg, true).unwrap();
        feed(&f, 3).await;
        let report = f.stop(Duration::from_secs(1)).await;
        assert_eq!(report.metrics.node("out").unwrap().msgs_in, 3);
    }

    #[tokio::test]
    async fn panics_are_caught_and_counted_after_the_delay() {
        let f = start(json!({"mode": "panic_after", "after": "0ms"}), false).unwrap();
        feed(&f, 4).await;
        let report = f.stop(Duration::from_secs(1)).await;
        let stats = report.metrics.node("f").unwrap();
        assert_eq!(stats.panics, 4);
        assert!(
            stats
                .last_error
                .as_deref()
                .unwrap()
                .contains("injected panic")
        );
        assert_eq!(report.metrics.node("out").unwrap().msgs_in, 0);

        let f = start(json!({"mode": "panic_after", "after": "1h"}), false).unwrap();
        feed(&f, 4).await;
        let report = f.stop(Duration::from_secs(1)).await;
        assert_eq!(report.metrics.node("f").unwrap().panics, 0);
        assert_eq!(report.metrics.node("out").unwrap().msgs_in, 4);
    }

    #[tokio::test]
    async fn error_rate_fails_that_fraction_of_messages() {
        let f = start(json!({"mode": "error_rate", "rate": 0.25}), false).unwrap();
        feed(&f, 100).await;
        let report = f.stop(Duration::from_secs(1)).await;
        assert_eq!(report.metrics.node("f").unwrap().errors, 25);
        assert_eq!(report.metrics.node("out").unwrap().msgs_in, 75);
    }

    #[test]
    fn error_ramp_climbs_linearly_from_after_to_its_rate() {
        let mut r = Ramp {
            after: Duration::from_secs(10),
            ramp: Duration::from_secs(100),
            rate: 0.04,
            due: 0.0,
            seen: 0,
        };
        let at = |ms: u64| Duration::from_millis(ms);
        assert_eq!(r.rate_at(at(5_000)), 0.0);
        assert_eq!(r.rate_at(at(10_000)), 0.0);
        assert!((r.rate_at(at(60_000)) - 0.02).abs() < 1e-12);
        assert!((r.rate_at(at(110_000)) - 0.04).abs() < 1e-12);
        assert!((r.rate_at(at(500_000)) - 0.04).abs() < 1e-12);
        // 100 messages a second: none fail before `after`; over the ramp the errors add up to
        // its integral (100 s at a mean of 2 %: 200 of 10 000), and they grow from one span
        // to the next; then they stay at 4 %.
        let mut errors_per_span = Vec::new();
        for span in 0..12u64 {
            let mut n = 0;
            for i in 0..1_000u64 {
                if r.fails(at(span * 10_000 + i * 10)).is_some() {
                    n += 1;
                }
            }
            errors_per_span.push(n);
        }
        assert_eq!(errors_per_span[0], 0, "{errors_per_span:?}");
        let ramp_total: u32 = errors_per_span[1..11].iter().sum();
        assert!((199..=201).contains(&ramp_total), "{errors_per_span:?}");
        assert!(
            errors_per_span[1..11].windows(2).all(|w| w[1] >= w[0]),
            "{errors_per_span:?}"
        );
        assert!(
            errors_per_span[10] > 3 * errors_per_span[2],
            "{errors_per_span:?}"
        );
        assert_eq!(errors_per_span[11], 40, "{errors_per_span:?}");
    }

    #[tokio::test]
    async fn error_ramp_runs_in_the_engine_and_needs_a_ramp() {
        let err = start(json!({"mode": "error_ramp", "rate": 0.1}), false).unwrap_err();
        assert!(err.to_string().contains("ramp"), "{err}");
        let compiled =
            validate::compile(&flow(json!({"mode": "error_ramp", "ramp": "2m"})), &[]).unwrap();
        assert_eq!(compiled.nodes[0].config["ramp"], json!(120_000));
        let bad = validate::compile(&flow(json!({"mode": "error_ramp", "ramp": "soon"})), &[])
            .unwrap_err();
        assert!(bad.report().contains("ramp"), "{}", bad.report());
        // A ramp of 1 ms to a rate of 1: every message after the first millisecond fails.
        let f = start(
            json!({"mode": "error_ramp", "rate": 1.0, "ramp": "1ms"}),
            false,
        )
        .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        feed(&f, 10).await;
        let report = f.stop(Duration::from_secs(1)).await;
        assert_eq!(report.metrics.node("f").unwrap().errors, 10);
        assert_eq!(report.metrics.node("out").unwrap().msgs_in, 0);
    }

    #[tokio::test]
    async fn hang_holds_its_input_and_is_aborted_at_stop() {
        let f = start(json!({"mode": "hang_after", "after": "0ms"}), false).unwrap();
        f.inject("f", Msg::new(json!(1))).await.unwrap();
        // The node takes the batch and never asks for the next one: its input fills up while
        // the task stays alive.
        let tx = f.input("f").unwrap();
        let cap = tx.max_capacity();
        for i in 0..cap {
            f.inject("f", Msg::new(json!(i))).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(tx.capacity(), 0);
        drop(tx);
        let h = f.health();
        assert_eq!(h.nodes[0].state, NodeState::Running);
        let report = f.stop(Duration::from_millis(100)).await;
        assert!(
            report.aborted.contains(&"f".to_string()),
            "{:?}",
            report.aborted
        );
        assert!(!report.drained);
        assert_eq!(report.metrics.node("out").unwrap().msgs_in, 0);
    }
}
