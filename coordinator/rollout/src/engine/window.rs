//! The gates' memory of recent reports (issue 15): per judging group (a device type, or a
//! (type, region) that has a baseline of its own) a ring of one-minute buckets of the health
//! reports received, and one fleet-wide ring of latency histograms, enough for 001's longest
//! gate window (30 min). Memory is O(groups × buckets), never O(reports); sums are fixed point
//! (see `health::fixed`) so the same reports in the same order give the same state, and the
//! whole of it is persisted with the engine.
//!
//! Also here: each judging group's effective baseline (from the captured [`BaselineSet`], or
//! the plan's per-type figures when none was captured), the degraded-device count, and the
//! bookkeeping of CAUTION extensions and of "no new failed devices since the last check".

use super::*;
use crate::baseline::BaselineSet;
use std::collections::{BTreeMap, HashMap};

/// Fixed-point scale of the aggregates: a millionth of a unit.
pub(super) const FIXED: f64 = 1e6;

/// A metric in fixed point (metrics are validated finite and bounded on input).
pub(super) fn fixed(x: f32) -> u128 {
    (f64::from(x) * FIXED).round() as u128
}

/// Length of one bucket.
pub(super) const BUCKET: Millis = MINUTE;
/// Buckets kept: 001's longest window (30 min) and the bucket in progress.
pub(super) const KEEP: usize = 31;
/// Device flag: its last report said degraded. The top bit, clear of the flags the device
/// record defines.
pub(super) const F_DEGRADED: u16 = 1 << 15;
/// Latency histogram resolution: bins grow by 5 %, so a percentile is within 2.5 %.
const BIN_RATIO: f64 = 1.05;
/// The smallest latency a bin tells apart (1 µs in ms).
const BIN_FLOOR_MS: f64 = 0.001;
/// Bins: from 1 µs to beyond a day (1.05^520 > 8.64e10).
const BINS: u16 = 540;

/// One minute of one group's reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Bucket {
    pub(super) start: Millis,
    pub(super) n: u64,
    pub(super) err: u128,
    pub(super) p95: u128,
    pub(super) mem: u128,
    pub(super) cpu_n: u64,
    pub(super) cpu: u128,
}

impl Bucket {
    fn add(&mut self, o: &Bucket) {
        self.n += o.n;
        self.err += o.err;
        self.p95 += o.p95;
        self.mem += o.mem;
        self.cpu_n += o.cpu_n;
        self.cpu += o.cpu;
    }

    /// Mean error rate, p95 and memory; None without reports.
    pub(super) fn means(&self) -> Option<(f64, f64, f64)> {
        (self.n > 0).then(|| {
            let k = self.n as f64 * FIXED;
            (
                self.err as f64 / k,
                self.p95 as f64 / k,
                self.mem as f64 / k,
            )
        })
    }

    /// Mean CPU percent; None without CPU figures.
    pub(super) fn cpu_mean(&self) -> Option<f64> {
        (self.cpu_n > 0).then(|| self.cpu as f64 / FIXED / self.cpu_n as f64)
    }
}

/// The buckets of one judging group, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Series {
    pub(super) buckets: VecDeque<Bucket>,
}

/// Whether a bucket starting at `start` overlaps the window of `window` ms ending at `now`.
fn in_window(start: Millis, now: Millis, window: Millis) -> bool {
    start + BUCKET > now.saturating_sub(window) && start <= now
}

impl Series {
    fn bucket(&mut self, now: Millis) -> &mut Bucket {
        let start = now - now % BUCKET;
        if self.buckets.back().is_none_or(|b| b.start != start) {
            if self.buckets.len() >= KEEP {
                self.buckets.pop_front();
            }
            self.buckets.push_back(Bucket {
                start,
                ..Bucket::default()
            });
        }
        // Just pushed or found: never empty here.
        let last = self.buckets.len() - 1;
        &mut self.buckets[last]
    }

    fn record(&mut self, now: Millis, r: &HealthReport) {
        let b = self.bucket(now);
        b.n += 1;
        b.err += fixed(r.error_rate);
        b.p95 += fixed(r.p95_ms);
        b.mem += fixed(r.memory_mb);
        if let Some(c) = r.system.cpu_percent.filter(|c| c.is_finite() && *c >= 0.0) {
            b.cpu_n += 1;
            b.cpu += fixed(c.min(100.0));
        }
    }

    /// The sum of the buckets overlapping `[now - window, now]`.
    pub(super) fn sum(&self, now: Millis, window: Millis) -> Bucket {
        let mut out = Bucket::default();
        for b in self
            .buckets
            .iter()
            .filter(|b| in_window(b.start, now, window))
        {
            out.add(b);
        }
        out
    }

    /// The window's earlier and later halves: split at the middle of the span its reports
    /// cover, from the start of the oldest bucket with reports (or of the window, if that is
    /// later) to `now`. A window full of reports splits at its own middle; a soak shorter
    /// than half the window (an operator's 4-minute canary soak against 001's 15-minute
    /// window) splits its own minutes, where splitting at the window's middle would put every
    /// report in the later half and no trend could ever be seen. One bucket of reports has
    /// no earlier half.
    pub(super) fn halves(&self, now: Millis, window: Millis) -> (Bucket, Bucket) {
        let from = now.saturating_sub(window);
        let first = self
            .buckets
            .iter()
            .find(|b| b.n > 0 && in_window(b.start, now, window))
            .map_or(from, |b| b.start.max(from));
        let mid = first + (now - first) / 2;
        let (mut early, mut late) = (Bucket::default(), Bucket::default());
        for b in self
            .buckets
            .iter()
            .filter(|b| in_window(b.start, now, window))
        {
            if b.start + BUCKET / 2 < mid {
                early.add(b);
            } else {
                late.add(b);
            }
        }
        (early, late)
    }

    /// Memory growth per 10 minutes as a fraction of `reference` (least-squares slope of the
    /// buckets' mean memory over the window); None when the reports span less than 10 minutes.
    pub(super) fn memory_growth(&self, now: Millis, window: Millis, reference: f64) -> Option<f64> {
        let points: Vec<(f64, f64)> = self
            .buckets
            .iter()
            .filter(|b| in_window(b.start, now, window))
            .filter_map(|b| b.means().map(|(_, _, m)| (b.start as f64, m)))
            .collect();
        let (first, last) = (points.first()?, points.last()?);
        if last.0 - first.0 < (10 * MINUTE) as f64 {
            return None;
        }
        let reference = if reference > 0.0 { reference } else { first.1 };
        if reference <= 0.0 {
            return Some(0.0);
        }
        let n = points.len() as f64;
        let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
        let my = points.iter().map(|p| p.1).sum::<f64>() / n;
        let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
        let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        (sxx > 0.0).then(|| sxy / sxx * (10 * MINUTE) as f64 / reference)
    }
}

/// One minute of the fleet's reported P95 latencies, as a sparse log histogram.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct LatencyBucket {
    pub(super) start: Millis,
    pub(super) bins: BTreeMap<u16, u64>,
}

fn bin_of(ms: f64) -> u16 {
    if ms <= BIN_FLOOR_MS {
        return 0;
    }
    let b = ((ms / BIN_FLOOR_MS).ln() / BIN_RATIO.ln()).floor() as i64 + 1;
    b.clamp(0, i64::from(BINS)) as u16
}

fn value_of(bin: u16) -> f64 {
    if bin == 0 {
        return 0.0;
    }
    // The bin's geometric middle.
    BIN_FLOOR_MS * BIN_RATIO.powf(f64::from(bin) - 0.5)
}

/// What a judging group is judged against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Judge {
    /// `rpi4` or `rpi4/eu`.
    pub(super) name: String,
    /// Error rate, p95 and memory means; None: no baseline (the policy applies).
    pub(super) baseline: Option<(f64, f64, f64)>,
    /// CPU mean and P99, when the baseline has CPU figures.
    pub(super) cpu: Option<(f64, f64)>,
}

/// The gates' state (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(super) struct GateState {
    /// The captured baselines, if the caller gave any.
    pub(super) set: Option<BaselineSet>,
    /// (type, region) pairs judged on their own, sorted; their group is `types + position`.
    pub(super) regional: Vec<(u16, u16)>,
    /// Judging groups: every type, then `regional`.
    pub(super) judges: Vec<Judge>,
    pub(super) series: Vec<Series>,
    /// Active devices with a report in the running aggregates, per judging group.
    pub(super) reporting: Vec<u64>,
    pub(super) latency: VecDeque<LatencyBucket>,
    /// Reporting active devices whose last report was degraded.
    pub(super) degraded: u64,
    /// CAUTION extensions of the gate being judged: (stage, gate, extensions).
    pub(super) caution: Option<(u32, GateKind, u32)>,
    /// Failures of the stages gated so far, at the last gate that decided.
    pub(super) checked_failed: u64,
    /// A CAUTION recheck of the completion gate waits until then.
    pub(super) recheck_at: Option<Millis>,
    /// CPU against baseline at the last judged gate, percentage points: the mean over the
    /// groups whose window and baseline both have CPU figures, weighted by their reports
    /// (None when no group has both).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) cpu_delta: Option<f64>,
}

impl GateState {
    /// Judges from the plan's per-type baselines (every type has one: the caller gave them).
    pub(super) fn for_plan(plan: &Plan) -> GateState {
        let mut g = GateState::default();
        g.rebuild(plan);
        g
    }

    /// Sets the judging groups from `set` (or the plan's baselines without one), keeping the
    /// series of groups that stay.
    pub(super) fn rebuild(&mut self, plan: &Plan) {
        let n_types = plan.types.len();
        let mut judges = Vec::with_capacity(n_types);
        let mut regional = Vec::new();
        for (t, name) in plan.types.iter().enumerate() {
            let given = plan.baselines.get(t).copied();
            let baseline = match &self.set {
                None => given.map(|b| (b.error_rate, b.p95_ms, b.memory_mb)),
                Some(set) => set
                    .of_type(name)
                    .filter(|g| g.usable())
                    .and_then(|g| means(g.error_rate, g.p95_ms, g.memory_mb)),
            };
            let cpu = self
                .set
                .as_ref()
                .and_then(|s| s.of_type(name))
                .filter(|g| g.usable())
                .and_then(|g| g.cpu_percent)
                .map(|c| (c.mean, c.p99));
            judges.push(Judge {
                name: name.clone(),
                baseline,
                cpu,
            });
        }
        if let Some(set) = &self.set {
            let type_ix: HashMap<&str, u16> = plan
                .types
                .iter()
                .enumerate()
                .map(|(i, t)| (t.as_str(), i as u16))
                .collect();
            let region_ix: HashMap<&str, u16> = plan
                .regions
                .iter()
                .enumerate()
                .map(|(i, r)| (r.as_str(), i as u16))
                .collect();
            let mut found: Vec<((u16, u16), Judge)> = set
                .groups
                .iter()
                .filter(|g| g.usable())
                .filter_map(|g| {
                    let t = *type_ix.get(g.device_type.as_str())?;
                    let r = *region_ix.get(g.region.as_deref()?)?;
                    Some((
                        (t, r),
                        Judge {
                            name: g.name(),
                            baseline: means(g.error_rate, g.p95_ms, g.memory_mb),
                            cpu: g.cpu_percent.map(|c| (c.mean, c.p99)),
                        },
                    ))
                })
                .collect();
            found.sort_by_key(|(k, _)| *k);
            found.dedup_by_key(|(k, _)| *k);
            for (k, j) in found {
                regional.push(k);
                judges.push(j);
            }
        }
        if self
            .judges
            .iter()
            .map(|j| &j.name)
            .ne(judges.iter().map(|j| &j.name))
        {
            self.series = vec![Series::default(); judges.len()];
        }
        self.series.resize(judges.len(), Series::default());
        self.reporting = vec![0; judges.len()];
        self.judges = judges;
        self.regional = regional;
    }

    /// A device of judging group `g` entered (or left) the running aggregates.
    pub(super) fn reporting_changed(&mut self, g: usize, entered: bool) {
        if let Some(n) = self.reporting.get_mut(g) {
            if entered {
                *n += 1;
            } else {
                *n = n.saturating_sub(1);
            }
        }
    }

    /// The judging group of a device of type `t` in region `r`.
    pub(super) fn group_of(&self, t: u16, r: u16) -> usize {
        match self.regional.binary_search(&(t, r)) {
            Ok(i) => self.judges.len() - self.regional.len() + i,
            Err(_) => usize::from(t),
        }
    }

    /// Counts a report received at `now` into its group's bucket and the latency histogram.
    pub(super) fn record(&mut self, group: usize, now: Millis, r: &HealthReport) {
        if let Some(s) = self.series.get_mut(group) {
            s.record(now, r);
        }
        let start = now - now % BUCKET;
        if self.latency.back().is_none_or(|b| b.start != start) {
            if self.latency.len() >= KEEP {
                self.latency.pop_front();
            }
            self.latency.push_back(LatencyBucket {
                start,
                bins: BTreeMap::new(),
            });
        }
        if let Some(b) = self.latency.back_mut() {
            *b.bins.entry(bin_of(f64::from(r.p95_ms))).or_insert(0) += 1;
        }
    }

    /// P50, P95 and P99 of the reported P95 latencies in the window; None without reports.
    pub(super) fn latency_percentiles(&self, now: Millis, window: Millis) -> Option<[f64; 3]> {
        let mut all: BTreeMap<u16, u64> = BTreeMap::new();
        for b in self
            .latency
            .iter()
            .filter(|b| in_window(b.start, now, window))
        {
            for (bin, n) in &b.bins {
                *all.entry(*bin).or_insert(0) += n;
            }
        }
        let total: u64 = all.values().sum();
        if total == 0 {
            return None;
        }
        let at = |q: f64| {
            let rank = ((q * total as f64).ceil() as u64).max(1);
            let mut seen = 0;
            for (bin, n) in &all {
                seen += n;
                if seen >= rank {
                    return value_of(*bin);
                }
            }
            0.0
        };
        Some([at(0.50), at(0.95), at(0.99)])
    }

    /// The CAUTION extensions used by `gate` closing `stage`.
    pub(super) fn extensions(&self, stage: u32, gate: GateKind) -> u32 {
        match self.caution {
            Some((s, g, n)) if s == stage && g == gate => n,
            _ => 0,
        }
    }
}

fn means(
    e: Option<crate::baseline::BaselineMetric>,
    p: Option<crate::baseline::BaselineMetric>,
    m: Option<crate::baseline::BaselineMetric>,
) -> Option<(f64, f64, f64)> {
    Some((e?.mean, p?.mean, m?.mean))
}

impl Rollout {
    /// `d`'s device type and judging group.
    pub(super) fn judged_as(&self, d: u32) -> (usize, usize) {
        let t = self.plan.device_type[d as usize];
        let r = self.plan.device_region[d as usize];
        (usize::from(t), self.health.gates.group_of(t, r))
    }

    /// Records a report of `d` (active, not rolled back by it) for the gates, and whether it
    /// said degraded. Called before the report enters the running aggregates.
    pub(super) fn record_for_gates(&mut self, d: u32, r: &HealthReport) {
        let dev = &mut self.devs[d as usize];
        if r.status == HealthStatus::Degraded {
            dev.flags |= F_DEGRADED;
        } else {
            dev.flags &= !F_DEGRADED;
        }
        let (_, group) = self.judged_as(d);
        self.health.gates.record(group, self.now, r);
    }

    /// Sets the deployment's baselines (a pending deployment only: gates must judge against
    /// what was captured before anything changed). Groups without enough samples are judged
    /// by the `no_baseline` policy.
    pub fn set_baselines(&mut self, set: BaselineSet) -> Result<(), RolloutError> {
        if self.machine.status != DeploymentStatus::Pending {
            return Err(RolloutError::Command {
                command: Command::Start,
                status: self.machine.status,
                reason: "baselines are captured before the deployment starts".into(),
            });
        }
        self.health.gates.set = Some(set);
        self.health.gates.rebuild(&self.plan);
        Ok(())
    }

    /// The baselines captured for this deployment, if any.
    pub fn baselines(&self) -> Option<&BaselineSet> {
        self.health.gates.set.as_ref()
    }

    /// CPU against baseline at the last judged gate, in percentage points (None when no
    /// device group had CPU figures both in its window and in its baseline).
    pub fn cpu_delta_pp(&self) -> Option<f64> {
        self.health.gates.cpu_delta
    }

    /// Why the `refuse` policy stops the start, naming every device group without a
    /// baseline; None when the policy is `absolute`, health checks are off, or every group
    /// has one.
    pub(super) fn baseline_refusal(&self) -> Option<String> {
        let cfg = &self.plan.config;
        if !cfg.health_check || cfg.gates.no_baseline != crate::gates::NoBaseline::Refuse {
            return None;
        }
        let missing: Vec<String> = match &self.health.gates.set {
            Some(set) => set
                .types_without()
                .iter()
                .filter_map(|g| g.statement())
                .collect(),
            None => Vec::new(),
        };
        (!missing.is_empty()).then(|| {
            format!(
                "no_baseline is refuse and {} device group(s) have no baseline: {}",
                missing.len(),
                missing.join("; ")
            )
        })
    }

    /// Groups judged against the absolute limits, for want of a baseline.
    pub fn groups_without_baseline(&self) -> Vec<&str> {
        self.health
            .gates
            .judges
            .iter()
            .filter(|j| j.baseline.is_none())
            .map(|j| j.name.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_are_within_two_and_a_half_percent() {
        for ms in [0.01, 0.5, 1.0, 7.3, 100.0, 2500.0, 86_400_000.0] {
            let v = value_of(bin_of(ms));
            assert!((v - ms).abs() / ms <= 0.026, "{ms} -> {v}");
        }
        assert_eq!(value_of(bin_of(0.0)), 0.0);
    }

    #[test]
    fn buckets_roll_and_windows_cover_what_they_say() {
        let mut s = Series::default();
        let r = |mem: f32| HealthReport {
            status: HealthStatus::Healthy,
            error_rate: 0.01,
            p95_ms: 10.0,
            memory_mb: mem,
            restarts: 0,
            system: SystemFigures::default(),
        };
        for m in 0..40u64 {
            s.record(m * MINUTE, &r(100.0 + m as f32));
        }
        assert_eq!(s.buckets.len(), KEEP);
        let now = 39 * MINUTE;
        assert_eq!(s.sum(now, 10 * MINUTE).n, 11);
        assert_eq!(s.sum(now, 30 * MINUTE).n, 31);
        // 1 MB a minute on 100 MB: 10 % per 10 minutes.
        let g = s.memory_growth(now, 30 * MINUTE, 100.0).unwrap();
        assert!((g - 0.10).abs() < 1e-9, "{g}");
        assert!(s.memory_growth(now, 5 * MINUTE, 100.0).is_none());
        let (early, late) = s.halves(now, 10 * MINUTE);
        assert_eq!(early.n + late.n, 11);
        assert!(late.means().unwrap().2 > early.means().unwrap().2);
    }
}
