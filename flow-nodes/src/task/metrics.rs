//! Per-node counters and a small fixed-size latency histogram, readable while a flow runs.
//!
//! Nodes update these on the hot path, so every field is a relaxed atomic: no lock is taken
//! per message. The only lock guards the last error text, and it is touched only when a node
//! fails. Latency is recorded once per batch (the batch's processing time divided by its
//! length), which keeps the cost of measuring far below the cost of the work measured.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Four sub-buckets per power of two: quantiles are accurate to about 19 %.
const SUB_BITS: u32 = 2;
const BUCKETS: usize = 64 << SUB_BITS;

/// A log-linear histogram of nanosecond values with a fixed number of buckets.
#[derive(Debug)]
pub(crate) struct Histogram {
    counts: Box<[AtomicU64]>,
}

impl Histogram {
    pub(crate) fn new() -> Self {
        Histogram {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn index(ns: u64) -> usize {
        if ns < (1 << SUB_BITS) {
            return ns as usize;
        }
        let log = 63 - ns.leading_zeros();
        let sub = (ns >> (log - SUB_BITS)) & ((1 << SUB_BITS) - 1);
        (((log - SUB_BITS + 1) as usize) << SUB_BITS) + sub as usize
    }

    /// The upper bound (exclusive) of the values that land in bucket `i`.
    fn upper(i: usize) -> u64 {
        let sub_count = 1usize << SUB_BITS;
        if i < sub_count {
            return i as u64 + 1;
        }
        let group = (i >> SUB_BITS) as u32 - 1 + SUB_BITS;
        let sub = (i & (sub_count - 1)) as u64;
        let base = 1u64 << group;
        let step = base >> SUB_BITS;
        base.saturating_add(step.saturating_mul(sub + 1))
    }

    /// Records `count` samples of `ns` nanoseconds each.
    pub(crate) fn record_n(&self, ns: u64, count: u64) {
        let i = Self::index(ns).min(BUCKETS - 1);
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(count, Relaxed);
        }
    }

    /// The value below which fraction `q` of the samples fall, or `None` when empty.
    pub(crate) fn quantile(&self, q: f64) -> Option<Duration> {
        let counts: Vec<u64> = self.counts.iter().map(|c| c.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Duration::from_nanos(Self::upper(i)));
            }
        }
        None
    }
}

/// Live counters of one node.
#[derive(Debug)]
pub(crate) struct NodeMetrics {
    pub(crate) msgs_in: AtomicU64,
    pub(crate) msgs_out: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) panics: AtomicU64,
    pub(crate) dropped: AtomicU64,
    /// 0: not a connected node, 1: connected, 2: disconnected.
    pub(crate) link: AtomicU8,
    last_error: Mutex<Option<String>>,
    pub(crate) latency: Histogram,
}

impl NodeMetrics {
    pub(crate) fn new() -> Self {
        NodeMetrics {
            msgs_in: AtomicU64::new(0),
            msgs_out: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            link: AtomicU8::new(0),
            last_error: Mutex::new(None),
            latency: Histogram::new(),
        }
    }

    /// Counts an error and remembers its text.
    pub(crate) fn error(&self, text: String) {
        self.errors.fetch_add(1, Relaxed);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(text);
    }

    /// Counts a panic and remembers its message as the last error.
    pub(crate) fn panic(&self, text: String) {
        self.panics.fetch_add(1, Relaxed);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!("panic: {text}"));
    }

    pub(crate) fn set_connected(&self, up: bool) {
        self.link.store(if up { 1 } else { 2 }, Relaxed);
    }

    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A snapshot of one node's counters.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeStats {
    /// The node id.
    pub id: String,
    /// The node kind.
    pub kind: String,
    /// Messages the node received.
    pub msgs_in: u64,
    /// Messages the node sent (counted once per output port, not per target).
    pub msgs_out: u64,
    /// Messages the node failed to process, and failed device reads or publishes.
    pub errors: u64,
    /// Panics caught while the node processed a message (the node keeps running).
    pub panics: u64,
    /// Messages dropped on purpose at a bound (delay queue with `drop`, MQTT buffer overflow).
    pub dropped: u64,
    /// For MQTT nodes: whether the broker connection is up.
    pub connected: Option<bool>,
    /// The text of the most recent error or panic.
    pub last_error: Option<String>,
    /// Median processing time per message.
    pub p50: Option<Duration>,
    /// 95th percentile processing time per message.
    pub p95: Option<Duration>,
    /// 99th percentile processing time per message.
    pub p99: Option<Duration>,
}

impl NodeStats {
    pub(crate) fn read(id: &str, kind: &str, m: &NodeMetrics) -> Self {
        NodeStats {
            id: id.to_string(),
            kind: kind.to_string(),
            msgs_in: m.msgs_in.load(Relaxed),
            msgs_out: m.msgs_out.load(Relaxed),
            errors: m.errors.load(Relaxed),
            panics: m.panics.load(Relaxed),
            dropped: m.dropped.load(Relaxed),
            connected: match m.link.load(Relaxed) {
                1 => Some(true),
                2 => Some(false),
                _ => None,
            },
            last_error: m.last_error(),
            p50: m.latency.quantile(0.50),
            p95: m.latency.quantile(0.95),
            p99: m.latency.quantile(0.99),
        }
    }
}

/// A snapshot of every node's counters.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowMetrics {
    /// One entry per node, in definition order.
    pub nodes: Vec<NodeStats>,
    /// Tap events dropped because the tap channel was full.
    pub tap_dropped: u64,
}

impl FlowMetrics {
    /// The entry of one node.
    pub fn node(&self, id: &str) -> Option<&NodeStats> {
        self.nodes.iter().find(|n| n.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_bounds_contain_their_values() {
        for ns in [
            0u64,
            1,
            3,
            4,
            5,
            7,
            8,
            100,
            1000,
            12345,
            1 << 40,
            u64::MAX / 2,
        ] {
            let i = Histogram::index(ns);
            assert!(i < BUCKETS, "{ns}");
            assert!(Histogram::upper(i) > ns, "{ns} -> bucket {i}");
            if i > 0 {
                assert!(Histogram::upper(i - 1) <= ns, "{ns} -> bucket {i}");
            }
        }
    }

    #[test]
    fn quantiles_follow_the_distribution() {
        let h = Histogram::new();
        assert_eq!(h.quantile(0.5), None);
        h.record_n(1_000, 90);
        h.record_n(100_000, 10);
        let p50 = h.quantile(0.5).unwrap().as_nanos() as u64;
        let p99 = h.quantile(0.99).unwrap().as_nanos() as u64;
        assert!((1_000..1_300).contains(&p50), "{p50}");
        assert!((100_000..130_000).contains(&p99), "{p99}");
    }
}
