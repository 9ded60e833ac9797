//! The fleet's health, aggregated in memory per device group (type × region) and window, and
//! persisted once per window (on the actor's tick), not per report: what a report costs here is
//! three histogram increments, whatever the fleet's size.
//!
//! Only reports of normal operation count (reference 001: baselines from "normal operation",
//! anomalies excluded): a device on trial, in the middle of a rollback, quarantined or in
//! maintenance is left out, and counted as excluded.
//!
//! Bounds: at most [`MAX_GROUPS`] groups in one window (beyond, reports are counted as
//! excluded: groups come from admitted devices' facts, so this needs that many distinct
//! types × regions); at most [`MAX_PENDING`] closed windows wait for the tick (older ones are
//! dropped with a warning and counted). Stored windows older than the retention are pruned.

use std::collections::HashMap;

use floe_rollout::Millis;
use floe_rollout::rollup::Rollup;
use floe_wire::proto::{Action, DeviceReport, Progress};

use super::ServiceError;
use super::ingest::health_input;
use crate::store::{DeviceRecord, RollupRow, Store};

/// Groups one window holds at most.
pub(super) const MAX_GROUPS: usize = 4096;
/// Closed windows waiting to be written at most.
const MAX_PENDING: usize = 16;
/// How often stored windows past the retention are pruned.
const PRUNE_EVERY: Millis = 600_000;

/// Counters of the rollups since start.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RollupCounters {
    /// Reports counted into a window.
    pub counted: u64,
    /// Reports left out (not normal operation, or no room for their group).
    pub excluded: u64,
    /// Windows dropped before they could be written.
    pub dropped_windows: u64,
}

/// One window's rollups by (device type, region).
type Window = HashMap<(String, String), Rollup>;

/// The open window and the closed ones not yet written.
#[derive(Debug)]
pub(super) struct Rollups {
    window: Millis,
    retention: Millis,
    open_start: Millis,
    open: Window,
    pending: Vec<(Millis, Window)>,
    last_prune: Millis,
    counters: RollupCounters,
}

impl Rollups {
    /// Windows of `window` ms (at least 1 s), kept for `retention` ms.
    pub(super) fn new(window: Millis, retention: Millis) -> Self {
        Rollups {
            window: window.max(1_000),
            retention,
            open_start: 0,
            open: HashMap::new(),
            pending: Vec::new(),
            last_prune: 0,
            counters: RollupCounters::default(),
        }
    }

    /// Length of one window (ms).
    pub(super) fn window(&self) -> Millis {
        self.window
    }

    /// What was counted, left out and dropped since start.
    pub(super) fn counters(&self) -> RollupCounters {
        self.counters
    }

    /// Counts `report` (from the device `record` describes, after admission) into the window
    /// of `now`, if it carries health and was taken in normal operation.
    pub(super) fn observe(&mut self, record: &DeviceRecord, report: &DeviceReport, now: Millis) {
        let Some(h) = &report.health else {
            return;
        };
        let rolling_back = report
            .applied
            .as_ref()
            .is_some_and(|a| a.action == Action::Rollback && !matches!(a.progress, Progress::Done));
        if report.on_trial || rolling_back || record.quarantined || record.maintenance {
            self.counters.excluded += 1;
            return;
        }
        let start = now - now % self.window;
        if start != self.open_start {
            self.close(start);
        }
        let key = (record.device_type.clone(), record.region.clone());
        if !self.open.contains_key(&key) && self.open.len() >= MAX_GROUPS {
            self.counters.excluded += 1;
            return;
        }
        let input = health_input(h);
        let rollup = self.open.entry(key).or_default();
        rollup.observe(input.status, h.error_rate_ppm, h.p95_us, h.memory_kib);
        if let Some(cpu) = input.system.cpu_percent {
            rollup.observe_cpu(cpu);
        }
        self.counters.counted += 1;
    }

    /// The windows not yet written (the closed ones waiting for the tick, and the open one),
    /// as rows: baselines read them beside the stored ones.
    pub(super) fn unwritten(&self) -> Vec<RollupRow> {
        let open = std::iter::once((self.open_start, &self.open));
        self.pending
            .iter()
            .map(|(s, w)| (*s, w))
            .chain(open)
            .flat_map(|(start, groups)| {
                groups.iter().map(move |((t, r), rollup)| RollupRow {
                    device_type: t.clone(),
                    region: r.clone(),
                    start_ms: start,
                    window_ms: self.window,
                    rollup: rollup.clone(),
                })
            })
            .collect()
    }

    /// Moves the open window to the pending ones and opens the one starting at `start`.
    fn close(&mut self, start: Millis) {
        let closed = std::mem::take(&mut self.open);
        if !closed.is_empty() {
            if self.pending.len() >= MAX_PENDING {
                self.pending.remove(0);
                self.counters.dropped_windows += 1;
                tracing::warn!("a health rollup window was dropped before it could be written");
            }
            self.pending.push((self.open_start, closed));
        }
        self.open_start = start;
    }

    /// Writes the windows that ended by `now` in one transaction and prunes stored windows
    /// older than the retention (every 10 min). On a failed write the windows stay pending and
    /// are tried again at the next tick.
    pub(super) fn flush(&mut self, store: &Store, now: Millis) -> Result<(), ServiceError> {
        if !self.open.is_empty() && now >= self.open_start + self.window {
            self.close(now - now % self.window);
        }
        let prune = now.saturating_sub(self.last_prune) >= PRUNE_EVERY;
        if self.pending.is_empty() && !prune {
            return Ok(());
        }
        let rows: Vec<RollupRow> = self
            .pending
            .iter()
            .flat_map(|(start, groups)| {
                groups.iter().map(|((t, r), rollup)| RollupRow {
                    device_type: t.clone(),
                    region: r.clone(),
                    start_ms: *start,
                    window_ms: self.window,
                    rollup: rollup.clone(),
                })
            })
            .collect();
        let batch = store.begin()?;
        store.save_rollups(&rows)?;
        if prune {
            store.prune_rollups(now.saturating_sub(self.retention))?;
        }
        batch.commit()?;
        self.pending.clear();
        if prune {
            self.last_prune = now;
        }
        Ok(())
    }
}
