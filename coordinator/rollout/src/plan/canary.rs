//! What the compiler knows of each target, and 001's canary selection.
//!
//! [`Fleet`] is a borrowed, column-wise view of the targets (type, region, exclusion flags,
//! monitoring) so canary selection and wave assignment read compact slices instead of the
//! REST-shaped [`TargetSpec`](super::TargetSpec)s.

use super::{PlanError, StrategyConfig};

/// The targets as the compiler reads them: one slice per column, indexed by device index.
pub(super) struct Fleet<'a> {
    pub(super) device_type: &'a [u16],
    pub(super) device_region: &'a [u16],
    pub(super) flags: &'a [u8],
    pub(super) monitoring: &'a [u8],
    pub(super) n_types: usize,
    pub(super) n_regions: usize,
}

impl Fleet<'_> {
    pub(super) fn len(&self) -> usize {
        self.device_type.len()
    }

    pub(super) fn eligible(&self, d: usize) -> bool {
        self.flags[d] == 0
    }
}

/// 001's canary sizing table: the recommended (min, max) canary size for a fleet.
pub fn canary_size_range(fleet: usize) -> (usize, usize) {
    match fleet {
        0..10 => (1, 1),
        10..50 => (2, 3),
        50..200 => (3, 5),
        200..1000 => (5, 10),
        _ => (10, 50),
    }
}

/// 001's canary selection: one eligible device per type (best monitoring), then one per region
/// not yet represented, sized by the table, capped at `max(1, floor(share × fleet))` and the
/// configured maximum, at least the configured minimum; ties go to the lower device index.
pub(super) fn select_canary(
    config: &StrategyConfig,
    fleet: &Fleet<'_>,
) -> Result<Vec<u32>, PlanError> {
    let n = fleet.len();
    let (lo, hi) = canary_size_range(n);
    let share_cap = ((config.canary_percent / 100.0 * n as f64).floor() as usize).max(1);
    let mut cap = hi.min(share_cap);
    if config.canary_max > 0 {
        cap = cap.min(config.canary_max as usize);
    }
    let min = (config.canary_min.max(1) as usize).min(n);
    let cap = cap.max(min);
    let want_fill = lo.max(min).min(cap);
    // Keep, per type, the best `cap` eligible candidates, so filling never rescans the fleet.
    let mut per_type: Vec<Vec<u32>> = vec![Vec::new(); fleet.n_types];
    let mut best_region: Vec<Option<u32>> = vec![None; fleet.n_regions];
    let better = |a: u32, b: u32| fleet.monitoring[a as usize] > fleet.monitoring[b as usize];
    for d in 0..n {
        if !fleet.eligible(d) {
            continue;
        }
        let d32 = d as u32;
        let list = &mut per_type[fleet.device_type[d] as usize];
        if list.len() < cap || list.last().is_some_and(|last| better(d32, *last)) {
            let pos = list.partition_point(|x| !better(d32, *x));
            list.insert(pos, d32);
            list.truncate(cap);
        }
        let r = fleet.device_region[d] as usize;
        if best_region[r].is_none_or(|b| better(d32, b)) {
            best_region[r] = Some(d32);
        }
    }
    // Types by population, largest first, are "most representative".
    let mut type_pop = vec![0usize; fleet.n_types];
    for t in fleet.device_type {
        type_pop[*t as usize] += 1;
    }
    let mut type_order: Vec<usize> = (0..fleet.n_types)
        .filter(|t| !per_type[*t].is_empty())
        .collect();
    type_order.sort_by(|a, b| type_pop[*b].cmp(&type_pop[*a]).then(a.cmp(b)));
    let mut chosen: Vec<u32> = Vec::new();
    let mut in_canary = std::collections::HashSet::new();
    for t in &type_order {
        let d = per_type[*t][0];
        chosen.push(d);
        in_canary.insert(d);
    }
    let mut covered = vec![false; fleet.n_regions];
    for d in &chosen {
        covered[fleet.device_region[*d as usize] as usize] = true;
    }
    for (r, best) in best_region.iter().enumerate() {
        if let Some(d) = best
            && !covered[r]
            && in_canary.insert(*d)
        {
            covered[r] = true;
            chosen.push(*d);
        }
    }
    if chosen.is_empty() {
        return Err(PlanError::NoEligibleCanary);
    }
    chosen.truncate(cap);
    // Fill up to the table's minimum, round-robin over types by population.
    let mut round = 1;
    while chosen.len() < want_fill {
        let mut added = false;
        for t in &type_order {
            if chosen.len() >= want_fill {
                break;
            }
            if let Some(d) = per_type[*t].get(round)
                && in_canary.insert(*d)
            {
                chosen.push(*d);
                added = true;
            }
        }
        if !added {
            break;
        }
        round += 1;
    }
    Ok(chosen)
}
