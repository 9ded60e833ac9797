//! `delay`: holds each message for a fixed time (`mode: delay`) or lets at most `rate` messages
//! through per `period` (`mode: rate`).
//!
//! The node's queue is bounded by `queue`. At the bound it either stops reading its input, so
//! backpressure travels upstream (`drop: false`), or drops the newest messages and counts them
//! in the node's `dropped` metric (`drop: true`). Besides the queue it holds at most one input
//! batch while it waits for room, so its memory is bounded either way.

use crate::msg::Msg;
use crate::task::NodeIo;
use serde::Deserialize;
use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
enum Mode {
    #[default]
    Delay,
    Rate,
}

#[derive(Debug, Deserialize)]
pub(crate) struct DelayConfig {
    #[serde(default)]
    mode: Mode,
    /// Milliseconds (compiled).
    #[serde(default = "second")]
    delay: u64,
    #[serde(default = "one")]
    rate: f64,
    /// Milliseconds (compiled).
    #[serde(default = "second")]
    period: u64,
    #[serde(default = "hundred")]
    queue: usize,
    #[serde(default)]
    drop: bool,
}

fn second() -> u64 {
    1000
}
fn one() -> f64 {
    1.0
}
fn hundred() -> usize {
    100
}

/// The running delay node.
#[derive(Debug)]
pub(crate) struct DelayNode {
    mode: Mode,
    delay: Duration,
    spacing: Duration,
    cap: usize,
    drop: bool,
}

impl DelayNode {
    pub(crate) fn new(cfg: DelayConfig) -> Result<Self, String> {
        if !(1..=100_000).contains(&cfg.queue) {
            return Err(format!("queue: {} is outside 1..=100000", cfg.queue));
        }
        if !(cfg.rate.is_finite() && cfg.rate > 0.0) {
            return Err(format!("rate: {} must be a number above 0", cfg.rate));
        }
        if cfg.mode == Mode::Rate && cfg.period == 0 {
            return Err("period: must be above 0 ms".to_string());
        }
        let spacing = Duration::from_secs_f64((cfg.period as f64 / 1000.0) / cfg.rate);
        Ok(DelayNode {
            mode: cfg.mode,
            delay: Duration::from_millis(cfg.delay),
            spacing,
            cap: cfg.queue,
            drop: cfg.drop,
        })
    }

    pub(crate) async fn run(self, mut io: NodeIo) {
        let Some(mut rx) = io.input.take() else {
            return;
        };
        let mut queue: VecDeque<(Instant, Msg)> = VecDeque::with_capacity(self.cap.min(1024));
        let mut staging: VecDeque<Msg> = VecDeque::new();
        let mut open = true;
        let mut next_release = Instant::now();
        loop {
            let now = Instant::now();
            while queue.len() < self.cap {
                let Some(m) = staging.pop_front() else { break };
                queue.push_back((now + self.delay, m));
            }
            if self.drop && !staging.is_empty() {
                let n = staging.len() as u64;
                staging.clear();
                io.metrics.dropped.fetch_add(n, Relaxed);
                tracing::debug!(node = %io.id, dropped = n, "delay queue full; dropped");
            }
            let mut sent = false;
            match self.mode {
                Mode::Delay => {
                    while queue.front().is_some_and(|(due, _)| *due <= now) {
                        if let Some((_, m)) = queue.pop_front() {
                            io.out.push(0, m);
                            sent = true;
                        }
                    }
                }
                Mode::Rate => {
                    while !queue.is_empty() && next_release <= now {
                        if let Some((_, m)) = queue.pop_front() {
                            io.out.push(0, m);
                            sent = true;
                            next_release = next_release.max(now) + self.spacing;
                        }
                    }
                }
            }
            if sent {
                io.out.flush().await;
            }
            if !open && queue.is_empty() && staging.is_empty() {
                break;
            }
            let wake = match self.mode {
                Mode::Delay => queue.front().map(|(due, _)| *due),
                Mode::Rate => (!queue.is_empty()).then_some(next_release),
            };
            let accept = open && staging.is_empty();
            tokio::select! {
                biased;
                b = rx.recv(), if accept => match b {
                    Some(b) => {
                        io.metrics.msgs_in.fetch_add(b.len() as u64, Relaxed);
                        staging.extend(b);
                    }
                    None => open = false,
                },
                _ = sleep_until_opt(wake) => {}
            }
        }
        io.out.flush().await;
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use crate::compiled::{CompiledFlow, CompiledNode, Edge};
    use crate::engine::{Engine, EngineOptions, TapEvent};
    use crate::msg::Msg;
    use serde_json::{Value, json};
    use std::time::Duration;
    use tokio::sync::mpsc;
    use tokio::time::Instant;

    fn flow(delay_cfg: Value) -> CompiledFlow {
        let Value::Object(cfg) = delay_cfg else {
            panic!()
        };
        let Value::Object(dbg) = json!({"active": false}) else {
            panic!()
        };
        CompiledFlow {
            nodes: vec![
                CompiledNode {
                    id: "d".into(),
                    kind: "delay".into(),
                    name: String::new(),
                    config: cfg,
                    outputs: 1,
                    inputs: 1,
                },
                CompiledNode {
                    id: "s".into(),
                    kind: "debug".into(),
                    name: String::new(),
                    config: dbg,
                    outputs: 0,
                    inputs: 1,
                },
            ],
            edges: vec![Edge {
                from: 0,
                output: 0,
                to: 1,
                input: 0,
            }],
        }
    }

    async fn start(cfg: Value) -> (crate::engine::RunningFlow, mpsc::Receiver<TapEvent>) {
        let (tx, rx) = mpsc::channel(1000);
        let opts = EngineOptions {
            tap: Some(tx),
            ..Default::default()
        };
        (Engine::start(flow(cfg), opts).unwrap(), rx)
    }

    #[tokio::test(start_paused = true)]
    async fn fixed_delay_holds_each_message() {
        let (f, mut tap) = start(json!({"mode": "delay", "delay": 250})).await;
        let t0 = Instant::now();
        f.inject("d", Msg::new(json!(1))).await.unwrap();
        let ev = tap.recv().await.unwrap();
        let waited = Instant::now() - t0;
        assert_eq!(*ev.msg.payload, json!(1));
        assert!(
            waited >= Duration::from_millis(250) && waited < Duration::from_millis(260),
            "{waited:?}"
        );
        f.stop(Duration::from_secs(1)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_spaces_messages() {
        let (f, mut tap) =
            start(json!({"mode": "rate", "rate": 2, "period": 1000, "queue": 10})).await;
        let t0 = Instant::now();
        f.inject_batch("d", (0..5).map(|i| Msg::new(json!(i))).collect())
            .await
            .unwrap();
        let mut times = Vec::new();
        for i in 0..5 {
            let ev = tap.recv().await.unwrap();
            assert_eq!(*ev.msg.payload, json!(i));
            times.push((Instant::now() - t0).as_millis());
        }
        // Two per second: one every 500 ms, the first at once.
        for (i, t) in times.iter().enumerate() {
            let want = 500 * i as u128;
            assert!(
                *t >= want && *t < want + 20,
                "message {i} at {t} ms, want {want}"
            );
        }
        f.stop(Duration::from_secs(1)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn drop_mode_counts_what_does_not_fit() {
        let (f, mut tap) =
            start(json!({"mode": "rate", "rate": 1, "period": 1000, "queue": 3, "drop": true}))
                .await;
        f.inject_batch("d", (0..10).map(|i| Msg::new(json!(i))).collect())
            .await
            .unwrap();
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(tap.recv().await.unwrap().msg.payload.as_i64().unwrap());
        }
        assert_eq!(got, vec![0, 1, 2]);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(
            tap.try_recv().is_err(),
            "dropped messages must not come out"
        );
        let m = f.metrics();
        let d = m.node("d").unwrap();
        assert_eq!((d.msgs_in, d.dropped, d.msgs_out), (10, 7, 3));
        f.stop(Duration::from_secs(1)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn backpressure_mode_loses_nothing() {
        let (f, mut tap) =
            start(json!({"mode": "rate", "rate": 100, "period": 1000, "queue": 2})).await;
        let input = f.input("d").unwrap();
        let feeder = tokio::spawn(async move {
            for i in 0..50 {
                input.send(vec![Msg::new(json!(i))]).await.unwrap();
            }
        });
        for i in 0..50 {
            assert_eq!(*tap.recv().await.unwrap().msg.payload, json!(i));
        }
        feeder.await.unwrap();
        assert_eq!(f.metrics().node("d").unwrap().dropped, 0);
        f.stop(Duration::from_secs(1)).await;
    }

    #[test]
    fn config_bounds() {
        let cfg = |v: Value| serde_json::from_value::<super::DelayConfig>(v).unwrap();
        assert!(
            super::DelayNode::new(cfg(json!({"queue": 0})))
                .unwrap_err()
                .contains("queue")
        );
        assert!(
            super::DelayNode::new(cfg(json!({"rate": 0})))
                .unwrap_err()
                .contains("rate")
        );
        assert!(serde_json::from_value::<super::DelayConfig>(json!({"mode": "slow"})).is_err());
    }
}
