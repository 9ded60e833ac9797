//! What a load test counts: reports by outcome, directives carried out, report latency.
//!
//! Latency goes into one HDR histogram of fixed size (1 µs to 60 s, three significant digits),
//! so memory does not grow with the run; counters are atomics, read at any time by
//! [`LoadStats::snapshot`].

use floe_wire::proto::Action;
use hdrhistogram::Histogram;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The most distinct error messages kept (the rest are only counted).
const MAX_ERROR_KINDS: usize = 16;

/// Counters of one run.
#[derive(Debug)]
pub struct LoadStats {
    accepted: AtomicU64,
    refused_busy: AtomicU64,
    refused_other: AtomicU64,
    errors: AtomicU64,
    directives: [AtomicU64; 4],
    latency: Mutex<Option<Histogram<u64>>>,
    error_kinds: Mutex<Vec<(String, u64)>>,
    elapsed: Mutex<Duration>,
}

/// The figures at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Time since the run started.
    pub elapsed: Duration,
    /// Reports the coordinator accepted (2xx).
    pub accepted: u64,
    /// Reports refused with 503 (ingest full).
    pub refused_busy: u64,
    /// Reports refused otherwise (4xx, other 5xx).
    pub refused_other: u64,
    /// Requests that did not get an answer.
    pub errors: u64,
    /// Directives carried out: stage, switch, commit, rollback.
    pub directives: [u64; 4],
    /// Report latency percentiles in ms: p50, p99, max.
    pub latency_ms: (f64, f64, f64),
}

impl Snapshot {
    /// Accepted reports per second.
    pub fn rate(&self) -> f64 {
        self.accepted as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl std::fmt::Display for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "t={:.0}s reports={} ({:.0}/s) refused_503={} refused_other={} errors={} \
             directives stage={} switch={} commit={} rollback={} \
             report_ms p50={:.1} p99={:.1} max={:.1}",
            self.elapsed.as_secs_f64(),
            self.accepted,
            self.rate(),
            self.refused_busy,
            self.refused_other,
            self.errors,
            self.directives[0],
            self.directives[1],
            self.directives[2],
            self.directives[3],
            self.latency_ms.0,
            self.latency_ms.1,
            self.latency_ms.2,
        )
    }
}

impl Default for LoadStats {
    fn default() -> Self {
        Self::new()
    }
}

impl LoadStats {
    /// Empty counters.
    pub fn new() -> LoadStats {
        LoadStats {
            accepted: AtomicU64::new(0),
            refused_busy: AtomicU64::new(0),
            refused_other: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            directives: Default::default(),
            latency: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3).ok()),
            error_kinds: Mutex::new(Vec::new()),
            elapsed: Mutex::new(Duration::ZERO),
        }
    }

    pub(crate) fn report(&self, status: u16, took: Duration) {
        let counter = match status {
            200..=299 => &self.accepted,
            503 => &self.refused_busy,
            _ => &self.refused_other,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if (200..300).contains(&status)
            && let Ok(mut h) = self.latency.lock()
            && let Some(h) = h.as_mut()
        {
            h.saturating_record(took.as_micros().max(1) as u64);
        }
        if !(200..300).contains(&status) {
            self.note(&format!("report refused with HTTP {status}"));
        }
    }

    pub(crate) fn error(&self, what: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.note(what);
    }

    pub(crate) fn directive(&self, action: Action) {
        let i = match action {
            Action::Stage => 0,
            Action::Switch => 1,
            Action::Commit => 2,
            Action::Rollback => 3,
        };
        self.directives[i].fetch_add(1, Ordering::Relaxed);
    }

    fn note(&self, what: &str) {
        let Ok(mut kinds) = self.error_kinds.lock() else {
            return;
        };
        if let Some(k) = kinds.iter_mut().find(|(m, _)| m == what) {
            k.1 += 1;
        } else if kinds.len() < MAX_ERROR_KINDS {
            kinds.push((what.chars().take(200).collect(), 1));
        }
    }

    pub(crate) fn finish(&self, elapsed: Duration) {
        if let Ok(mut e) = self.elapsed.lock() {
            *e = elapsed;
        }
    }

    /// The figures now.
    pub fn snapshot(&self, elapsed: Duration) -> Snapshot {
        let ms = |v: u64| v as f64 / 1000.0;
        let latency_ms = self
            .latency
            .lock()
            .ok()
            .and_then(|h| {
                h.as_ref().map(|h| {
                    (
                        ms(h.value_at_quantile(0.5)),
                        ms(h.value_at_quantile(0.99)),
                        ms(h.max()),
                    )
                })
            })
            .unwrap_or_default();
        Snapshot {
            elapsed,
            accepted: self.accepted.load(Ordering::Relaxed),
            refused_busy: self.refused_busy.load(Ordering::Relaxed),
            refused_other: self.refused_other.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            directives: std::array::from_fn(|i| self.directives[i].load(Ordering::Relaxed)),
            latency_ms,
        }
    }

    /// The figures of the finished run.
    pub fn summary(&self) -> Snapshot {
        let elapsed = self.elapsed.lock().map(|e| *e).unwrap_or_default();
        self.snapshot(elapsed)
    }

    /// The distinct errors seen, with their counts.
    pub fn error_kinds(&self) -> Vec<(String, u64)> {
        self.error_kinds
            .lock()
            .map(|k| k.clone())
            .unwrap_or_default()
    }
}
