//! The smoke test: the staged version runs beside the live one, muted, before anything is
//! switched.
//!
//! The staged flow is started with its outputs muted, the manifest's test input is injected,
//! every declared output must be seen within the manifest's timeout (capped so the main loop
//! never outlives the systemd watchdog), and the flow must then run for a settle time without
//! errors or restarts. A failure is a typed [`SmokeError`]; the old flow keeps serving
//! throughout, so a failed smoke test leaves the device exactly where it was.

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use futures::FutureExt;

use super::Agent;
use super::runner::{FlowRunner, RunnerError, RunningFlow, SinkOutput};
use super::start::{StartError, panic_message, stop_guarded};
use crate::health::{AppWindow, Functional};
use crate::slots::{SlotName, SmokeInput, VersionRecord};

/// How many sink outputs the smoke test takes from the flow per look.
const SMOKE_DRAIN_BATCH: usize = 256;

/// How many characters of a payload a smoke failure quotes.
const QUOTED_PAYLOAD: usize = 200;

/// Why a smoke test failed.
#[derive(Debug, thiserror::Error)]
pub enum SmokeError {
    /// The staged flow did not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// Injecting a test input did not finish within the expectation timeout.
    #[error("injecting into {node} timed out")]
    InjectTimedOut {
        /// The node fed.
        node: String,
    },
    /// The flow panicked on a test input.
    #[error("panicked on test input: {message}")]
    InjectPanicked {
        /// The panic's message.
        message: String,
    },
    /// The flow refused a test input.
    #[error(transparent)]
    Inject(RunnerError),
    /// The flow stopped during the test.
    #[error("{reason}")]
    Stopped {
        /// Why, as the flow reports it.
        reason: String,
    },
    /// A node failed on part of its messages.
    #[error("node {node} failed on {percent:.0}% of its messages")]
    Errors {
        /// The node with the worst error rate.
        node: String,
        /// Its error rate, in percent.
        percent: f64,
    },
    /// Nodes restarted during the test.
    #[error("{0} node restarts")]
    Restarts(u64),
    /// An expected output was not seen in time.
    #[error(
        "expected output {payload} from node {node} not seen within {ms} ms ({unmet} of {expected} expectations unmet; {seen} outputs seen, last: {last})"
    )]
    Missing {
        /// The first expectation unmet (payload quoted, truncated).
        payload: String,
        /// Its node.
        node: String,
        /// The time allowed, in milliseconds.
        ms: u128,
        /// How many expectations are unmet.
        unmet: usize,
        /// How many the manifest declares.
        expected: usize,
        /// How many outputs the flow emitted.
        seen: usize,
        /// The last output seen (or `none`), quoted and truncated.
        last: String,
    },
}

impl<R: FlowRunner> Agent<R>
where
    R::Flow: std::fmt::Debug,
{
    /// The smoke test: start the staged flow with outputs muted, inject the declared test
    /// input, require every declared output within the manifest's timeout, and require the
    /// flow to run without errors or restarts for the settle time.
    pub(super) async fn smoke(&mut self, target: SlotName) -> Result<(), SmokeError> {
        let (mut flow, record) = self.start_slot(target, true).await?;
        let result = self.observe_smoke(&mut flow, &record).await;
        stop_guarded(flow, self.cfg.trial.stop_timeout, "the smoke-tested flow").await;
        self.functional = match &result {
            Ok(()) if record.smoke.is_empty() && record.smoke_expect.is_empty() => {
                Functional::NoTestInput
            }
            Ok(()) => Functional::Passed,
            Err(e) => Functional::Failed(e.to_string()),
        };
        result
    }

    async fn observe_smoke(
        &self,
        flow: &mut R::Flow,
        record: &VersionRecord,
    ) -> Result<(), SmokeError> {
        // The manifest's timeout bounds the wait for expected outputs. It is capped (20 s) so
        // that a manifest cannot hold the main loop past the systemd watchdog.
        let expect_limit = record
            .smoke_timeout_ms
            .map_or(self.cfg.trial.smoke_timeout, Duration::from_millis)
            .min(Duration::from_millis(
                floe_wire::proto::manifest::MAX_SMOKE_TIMEOUT_MS,
            ));
        let start = Instant::now();
        for input in &record.smoke {
            let inject =
                AssertUnwindSafe(flow.inject(&input.node, input.payload.clone())).catch_unwind();
            match tokio::time::timeout(expect_limit, inject).await {
                Err(_) => {
                    return Err(SmokeError::InjectTimedOut {
                        node: input.node.clone(),
                    });
                }
                Ok(Err(p)) => {
                    return Err(SmokeError::InjectPanicked {
                        message: panic_message(&*p),
                    });
                }
                Ok(Ok(Err(e))) => return Err(SmokeError::Inject(e)),
                Ok(Ok(Ok(()))) => {}
            }
        }
        let settle = self.cfg.trial.smoke_timeout.min(Duration::from_millis(500));
        let mut pending: Vec<&SmokeInput> = record.smoke_expect.iter().collect();
        let mut seen = 0usize;
        let mut last_seen: Option<SinkOutput> = None;
        let mut window = AppWindow::default();
        loop {
            for out in flow.drain_outputs(SMOKE_DRAIN_BATCH) {
                seen += 1;
                pending.retain(|want| {
                    !(want.node == out.node && payload_matches(&want.payload, &out.payload))
                });
                last_seen = Some(out);
            }
            let a = window.push(flow.snapshot());
            if !a.latest.running {
                return Err(SmokeError::Stopped {
                    reason: a
                        .latest
                        .stopped_reason
                        .unwrap_or_else(|| "the flow stopped".into()),
                });
            }
            if let Some((node, rate)) = &a.worst_error_rate {
                return Err(SmokeError::Errors {
                    node: node.clone(),
                    percent: rate * 100.0,
                });
            }
            if a.restarts > 0 {
                return Err(SmokeError::Restarts(a.restarts));
            }
            let elapsed = start.elapsed();
            if let Some(want) = pending.first()
                && elapsed >= expect_limit
            {
                let last = last_seen.as_ref().map_or_else(
                    || "none".to_string(),
                    |o| {
                        format!(
                            "{} from {}",
                            truncate(&o.payload.to_string(), QUOTED_PAYLOAD),
                            o.node
                        )
                    },
                );
                return Err(SmokeError::Missing {
                    payload: truncate(&want.payload.to_string(), QUOTED_PAYLOAD),
                    node: want.node.clone(),
                    ms: expect_limit.as_millis(),
                    unmet: pending.len(),
                    expected: record.smoke_expect.len(),
                    seen,
                    last,
                });
            }
            if pending.is_empty() && elapsed >= settle {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Whether an output payload satisfies a smoke-test expectation: an expected object matches
/// an object that has every key given with a matching value (extra keys allowed, recursively);
/// any other expected value must be equal.
pub fn payload_matches(want: &serde_json::Value, got: &serde_json::Value) -> bool {
    match (want, got) {
        (serde_json::Value::Object(w), serde_json::Value::Object(g)) => w
            .iter()
            .all(|(k, wv)| g.get(k).is_some_and(|gv| payload_matches(wv, gv))),
        (serde_json::Value::Number(w), serde_json::Value::Number(g)) => w.as_f64() == g.as_f64(),
        _ => want == got,
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::payload_matches;
    use serde_json::json;

    #[test]
    fn expected_objects_match_supersets_and_other_values_match_exactly() {
        let got = json!({"x": 21, "checked": "yes", "meta": {"a": 1, "b": 2}});
        assert!(payload_matches(&json!({"checked": "yes"}), &got));
        assert!(payload_matches(&json!({"x": 21.0, "meta": {"b": 2}}), &got));
        assert!(payload_matches(&json!({}), &got));
        assert!(!payload_matches(&json!({"checked": "no"}), &got));
        assert!(!payload_matches(&json!({"missing": null}), &got));
        assert!(!payload_matches(&json!({"meta": {"c": 3}}), &got));
        assert!(payload_matches(&json!([1, 2]), &json!([1, 2])));
        assert!(!payload_matches(&json!([1]), &json!([1, 2])));
        assert!(!payload_matches(&json!("21"), &json!(21)));
        assert!(payload_matches(&json!(2), &json!(2.0)));
    }
}
