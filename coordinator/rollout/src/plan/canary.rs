//! What the compiler knows of each target, and 001's canary selection.
//!
//! [`Fleet`] is a borrowed, column-wise view of the targets (type, region, exclusion flags,
//! monitoring) so canary selection and wave assignment read compact slices instead of the
//! REST-shaped [`TargetSpec`](super::TargetSpec)s.
//!
//! Selection, in 001's order ("Canary Sizing", "Canary Selection Algorithm"):
//! 1. The size comes from the table first ([`canary_size_range`]); the configured share
//!    (`canary_percent`) picks a size inside the table's range, `canary_min` raises it and
//!    `canary_max` lowers it, but never below the table's minimum (see [`canary_target`]).
//! 2. Exclusions (step 3): single points of failure, maintenance or quarantine, known hardware
//!    issues, connectivity problems in the last 24 h. Excluded devices are never picked.
//! 3. One device per device type, the best monitoring coverage first (step 1), then one per
//!    region not yet represented (step 2). These picks are never dropped, whatever the size or
//!    the configured share and maximum: when they are more than the table's maximum, the plan
//!    says so in a warning instead (001 step 5 would reduce them; 003 asks for "at least one
//!    device per hardware type and geographic region", which wins here).
//! 4. The rest up to the size, shared among the types in proportion to their population
//!    (D'Hondt), best monitoring first within each type.
//! 5. Never the whole fleet (003: "Never deploy to the entire fleet at once"): when the picks
//!    would take every device of a fleet of two or more, the last one stays out, with a
//!    warning naming what the canary then does not cover.
//!
//! Everything is O(n): one counting sort of the eligible devices by monitoring coverage (a
//! byte, so 256 buckets; ties go to the lower device index), then walks over that order.

use super::{PlanError, StrategyConfig};
use serde::{Deserialize, Serialize};

/// The targets as the compiler reads them: one slice per column, indexed by device index.
pub(super) struct Fleet<'a> {
    pub(super) device_type: &'a [u16],
    pub(super) device_region: &'a [u16],
    pub(super) flags: &'a [u8],
    pub(super) monitoring: &'a [u8],
    pub(super) n_types: usize,
    pub(super) n_regions: usize,
    /// Type names, indexed like `device_type`'s values (for warnings).
    pub(super) type_names: &'a [String],
    /// Region names, indexed like `device_region`'s values (for warnings).
    pub(super) region_names: &'a [String],
}

impl Fleet<'_> {
    pub(super) fn len(&self) -> usize {
        self.device_type.len()
    }

    pub(super) fn eligible(&self, d: usize) -> bool {
        self.flags[d] == 0
    }
}

/// Why a device is in the canary.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CanaryReason {
    /// The best-monitored eligible device of its device type (001 step 1).
    DeviceType,
    /// The best-monitored eligible device of a region no earlier pick covered (001 step 2).
    Region,
    /// Added to reach the size the table and the configured share ask for.
    Size,
}

crate::names::spelled!(CanaryReason, "canary reason", {
    DeviceType => "device_type",
    Region => "region",
    Size => "size",
});

/// One canary device's reason, kept beside [`Plan::canary`](super::Plan::canary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryPick {
    /// Why it was picked.
    pub reason: CanaryReason,
    /// Its monitoring coverage when it was picked (0-255, higher is better).
    pub monitoring: u8,
}

/// 001's canary sizing table: the recommended (min, max) canary size for a fleet of `fleet`.
///
/// The table's rows are `< 10 → 1`, `10-50 → 2-3`, `50-200 → 3-5`, `200-1000 → 5-10` and
/// `1000+ → 10-50 devices (1-2 %)`. Its last row gives both counts and percentages; they agree
/// at the ends of 1 000-5 000 devices (1 % of 1 000 is 10, 1 % of 5 000 is 50), so this reads
/// it as 10-50 devices up to 5 000 and 1-2 % of the fleet above (`ceil(1 %)` to `floor(2 %)`:
/// 51-100 at 5 001, 1 000-2 000 at 100 000). A boundary value belongs to the larger row.
pub fn canary_size_range(fleet: usize) -> (usize, usize) {
    match fleet {
        0..10 => (1, 1),
        10..50 => (2, 3),
        50..200 => (3, 5),
        200..1000 => (5, 10),
        1000..=5000 => (10, 50),
        _ => (fleet.div_ceil(100), fleet / 50),
    }
}

/// The canary size asked for before coverage: the configured share of the fleet
/// (`ceil(canary_percent × fleet)`) clamped to the table's range, raised to `canary_min`,
/// lowered to `canary_max` when it is set (not 0) but never below the table's minimum (the
/// table comes first, 001), and never more than the fleet.
pub fn canary_target(config: &StrategyConfig, fleet: usize) -> usize {
    let (lo, hi) = canary_size_range(fleet);
    let share = (config.canary_percent / 100.0 * fleet as f64).ceil() as usize;
    let mut target = share.clamp(lo, hi);
    target = target.max(config.canary_min as usize);
    if config.canary_max > 0 {
        target = target.min((config.canary_max as usize).max(lo));
    }
    target.min(fleet).max(1)
}

/// What [`select_canary`] chose, and what the plan must say about it.
pub(super) struct Selection {
    pub(super) devices: Vec<u32>,
    pub(super) picks: Vec<CanaryPick>,
    pub(super) warnings: Vec<String>,
}

/// The canary under construction: a device is picked once, with its reason.
struct Chooser<'f, 'a> {
    fleet: &'f Fleet<'a>,
    devices: Vec<u32>,
    picks: Vec<CanaryPick>,
    in_canary: std::collections::HashSet<u32>,
    covered: Vec<bool>,
    type_count: Vec<usize>,
}

impl Chooser<'_, '_> {
    fn pick(&mut self, d: u32, reason: CanaryReason) {
        if self.in_canary.insert(d) {
            self.covered[self.fleet.device_region[d as usize] as usize] = true;
            self.type_count[self.fleet.device_type[d as usize] as usize] += 1;
            self.devices.push(d);
            self.picks.push(CanaryPick {
                reason,
                monitoring: self.fleet.monitoring[d as usize],
            });
        }
    }
}

/// Names of the exclusion flags, in [`TargetFlags::bits`](super::TargetFlags) order.
const EXCLUSIONS: [&str; 5] = [
    "in maintenance",
    "quarantined",
    "with known hardware issues",
    "with connectivity problems in the last 24 h",
    "single points of failure",
];

/// 001's canary selection (see the module documentation).
pub(super) fn select_canary(
    config: &StrategyConfig,
    fleet: &Fleet<'_>,
) -> Result<Selection, PlanError> {
    let n = fleet.len();
    let (lo, hi) = canary_size_range(n);
    let target = canary_target(config, n);
    let mut warnings = Vec::new();

    // Eligible devices by monitoring coverage, best first, ties by device index (stable
    // counting sort); exclusions counted per reason.
    let mut bucket = vec![0usize; 257];
    let mut excluded = [0usize; EXCLUSIONS.len()];
    let mut type_pop = vec![0usize; fleet.n_types];
    let mut region_pop = vec![0usize; fleet.n_regions];
    for d in 0..n {
        type_pop[fleet.device_type[d] as usize] += 1;
        region_pop[fleet.device_region[d] as usize] += 1;
        if fleet.eligible(d) {
            bucket[255 - fleet.monitoring[d] as usize + 1] += 1;
        } else {
            for (i, count) in excluded.iter_mut().enumerate() {
                *count += usize::from(fleet.flags[d] >> i & 1 == 1);
            }
        }
    }
    for i in 1..bucket.len() {
        bucket[i] += bucket[i - 1];
    }
    let mut sorted = vec![0u32; bucket[256]];
    for d in 0..n {
        if fleet.eligible(d) {
            let slot = &mut bucket[255 - fleet.monitoring[d] as usize];
            sorted[*slot] = d as u32;
            *slot += 1;
        }
    }
    if sorted.is_empty() {
        return Err(PlanError::NoEligibleCanary);
    }
    if excluded.iter().any(|c| *c > 0) {
        let parts: Vec<String> = excluded
            .iter()
            .zip(EXCLUSIONS)
            .filter(|(c, _)| **c > 0)
            .map(|(c, what)| format!("{c} {what}"))
            .collect();
        warnings.push(format!(
            "{} of {n} devices are not eligible as canaries (001 step 3): {}",
            n - sorted.len(),
            parts.join(", ")
        ));
    }

    // Per type, its best eligible devices (enough for any fill: the target, plus the type
    // pick and the region picks that may take some of them); per region, its best one.
    let keep = target + fleet.n_regions + 1;
    let mut per_type: Vec<Vec<u32>> = vec![Vec::new(); fleet.n_types];
    let mut best_region: Vec<Option<u32>> = vec![None; fleet.n_regions];
    for d in &sorted {
        let list = &mut per_type[fleet.device_type[*d as usize] as usize];
        if list.len() < keep {
            list.push(*d);
        }
        best_region[fleet.device_region[*d as usize] as usize].get_or_insert(*d);
    }
    // Types by population, largest first, are the "most representative".
    let mut type_order: Vec<usize> = (0..fleet.n_types).collect();
    type_order.sort_by(|a, b| type_pop[*b].cmp(&type_pop[*a]).then(a.cmp(b)));

    let mut c = Chooser {
        fleet,
        devices: Vec::with_capacity(target.max(fleet.n_types)),
        picks: Vec::with_capacity(target.max(fleet.n_types)),
        in_canary: std::collections::HashSet::new(),
        covered: vec![false; fleet.n_regions],
        type_count: vec![0; fleet.n_types],
    };
    for t in &type_order {
        match per_type[*t].first() {
            Some(d) => c.pick(*d, CanaryReason::DeviceType),
            None => warnings.push(format!(
                "device type {:?} has no eligible canary device (all {} of its devices are \
                 excluded): the canary does not cover it",
                fleet.type_names.get(*t).map_or("", String::as_str),
                type_pop[*t]
            )),
        }
    }
    for (r, best) in best_region.iter().enumerate() {
        match best {
            Some(d) if !c.covered[r] => c.pick(*d, CanaryReason::Region),
            Some(_) => {}
            None => warnings.push(format!(
                "region {:?} has no eligible canary device (all {} of its devices are \
                 excluded): the canary does not cover it",
                fleet.region_names.get(r).map_or("", String::as_str),
                region_pop[r]
            )),
        }
    }
    let coverage = c.devices.len();
    // Fill up to the target by type in proportion to population (D'Hondt: the next device
    // goes to the type with the most devices per canary seat), best monitoring first.
    let mut cursor = vec![0usize; fleet.n_types];
    while c.devices.len() < target {
        let mut best: Option<(usize, u32)> = None;
        for t in &type_order {
            let list = &per_type[*t];
            while cursor[*t] < list.len() && c.in_canary.contains(&list[cursor[*t]]) {
                cursor[*t] += 1;
            }
            if cursor[*t] >= list.len() {
                continue;
            }
            let better = best.is_none_or(|(b, _)| {
                type_pop[*t] * (c.type_count[b] + 1) > type_pop[b] * (c.type_count[*t] + 1)
            });
            if better {
                best = Some((*t, list[cursor[*t]]));
            }
        }
        match best {
            Some((_, d)) => c.pick(d, CanaryReason::Size),
            None => break,
        }
    }
    let Chooser {
        devices: mut chosen,
        picks: mut reasons,
        ..
    } = c;
    // 003: "Never deploy to the entire fleet at once". When covering every type and region
    // takes every device, the last pick (the least needed) stays out, and the plan says so.
    let whole_fleet = n > 1 && chosen.len() == n;
    if whole_fleet {
        if let (Some(d), Some(p)) = (chosen.pop(), reasons.pop()) {
            let d = d as usize;
            let name = |names: &[String], i: u16| {
                names.get(i as usize).map_or(String::new(), String::clone)
            };
            let what = match p.reason {
                CanaryReason::DeviceType => format!(
                    "the pick for device type {:?} stays out, and the canary does not cover it",
                    name(fleet.type_names, fleet.device_type[d])
                ),
                CanaryReason::Region => format!(
                    "the pick for region {:?} stays out, and the canary does not cover it",
                    name(fleet.region_names, fleet.device_region[d])
                ),
                CanaryReason::Size => "one device stays out".to_string(),
            };
            warnings.push(format!(
                "the canary would take all {n} devices; {what}, so the fleet is never deployed \
                 at once (003)"
            ));
        }
    }
    let coverage = coverage.min(chosen.len());
    if coverage > hi {
        warnings.push(format!(
            "the canary has {coverage} devices, more than the {hi} 001's sizing table \
             recommends for {n} devices, because it keeps one device per device type and one \
             per region not covered by those{}",
            if whole_fleet {
                ""
            } else {
                "; no type or region was dropped"
            }
        ));
    } else if coverage > target {
        warnings.push(format!(
            "the canary has {coverage} devices, more than the {target} the configured share \
             asks for, because it keeps one device per device type and per region"
        ));
    }
    if chosen.len() < lo {
        warnings.push(format!(
            "only {} eligible devices could be picked; 001's sizing table recommends at least \
             {lo} for {n} devices",
            chosen.len()
        ));
    }
    if config.canary_max > 0 && (config.canary_max as usize) < lo {
        warnings.push(format!(
            "canary_max {} is below the {lo} devices 001's sizing table recommends at least for \
             {n} devices; the table wins",
            config.canary_max
        ));
    }
    Ok(Selection {
        devices: chosen,
        picks: reasons,
        warnings,
    })
}
