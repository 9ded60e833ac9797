//! `inject`: a source that sends a message once at start (after `once_delay`) and/or every
//! `interval`. Without a configured payload it sends the current time in milliseconds since the
//! epoch, as Node-RED's inject does.

use super::at_least;
use crate::msg::Msg;
use crate::task::NodeIo;
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::{Instant, MissedTickBehavior};

#[derive(Debug, Deserialize)]
pub(crate) struct InjectConfig {
    #[serde(default)]
    payload: Option<Value>,
    #[serde(default)]
    topic: String,
    #[serde(default = "yes")]
    once: bool,
    /// Milliseconds (compiled).
    #[serde(default)]
    once_delay: u64,
    /// Milliseconds (compiled); absent means no repeat.
    #[serde(default)]
    interval: Option<u64>,
}

fn yes() -> bool {
    true
}

/// The running inject node.
#[derive(Debug)]
pub(crate) struct InjectNode {
    payload: Option<Arc<Value>>,
    topic: Arc<str>,
    once: bool,
    once_delay: Duration,
    interval: Option<Duration>,
}

impl InjectNode {
    pub(crate) fn new(cfg: InjectConfig) -> Result<Self, String> {
        if let Some(iv) = cfg.interval {
            at_least("interval", iv, 10)?;
        }
        if !cfg.once && cfg.interval.is_none() {
            return Err(
                "once is false and no interval is set, so the node would never fire".into(),
            );
        }
        Ok(InjectNode {
            payload: cfg.payload.map(Arc::new),
            topic: Arc::from(cfg.topic),
            once: cfg.once,
            once_delay: Duration::from_millis(cfg.once_delay),
            interval: cfg.interval.map(Duration::from_millis),
        })
    }

    fn message(&self) -> Msg {
        let payload = match &self.payload {
            Some(p) => p.clone(),
            None => {
                let ms = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                Arc::new(Value::from(ms))
            }
        };
        Msg {
            payload,
            topic: self.topic.clone(),
            props: None,
        }
    }

    async fn fire(&self, io: &mut NodeIo) {
        io.out.push(0, self.message());
        io.out.flush().await;
    }

    pub(crate) async fn run(self, mut io: NodeIo) {
        let cancel = io.cancel.clone();
        let start = Instant::now();
        if self.once {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(self.once_delay) => {}
            }
            self.fire(&mut io).await;
        }
        let Some(every) = self.interval else { return };
        let first = if self.once {
            Instant::now() + every
        } else {
            start + every
        };
        let mut ticker = tokio::time::interval_at(first, every);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                _ = ticker.tick() => self.fire(&mut io).await,
            }
        }
    }
}
