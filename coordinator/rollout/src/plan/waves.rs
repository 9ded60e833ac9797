//! 001's wave assignment: sizes from the wave percentages, every device type represented in
//! each wave where the pool allows it.

use super::WaveConfig;
use super::canary::Fleet;

/// 001's wave assignment over the shuffled post-canary pool: wave size
/// `ceil(pool × percentage / 100)`, at least one device per type where possible, the last wave
/// takes the rest. Returns the end position (exclusive, relative to `pool`) of each wave.
pub(super) fn assign_waves(
    waves: &[WaveConfig],
    pool: &mut [u32],
    fleet: &Fleet<'_>,
) -> Vec<usize> {
    let total = pool.len();
    let mut ends = Vec::with_capacity(waves.len());
    let mut start = 0usize;
    for (i, w) in waves.iter().enumerate() {
        let last = i + 1 == waves.len();
        let size = if last {
            total - start
        } else {
            (((total as f64) * w.percentage / 100.0).ceil() as usize).min(total - start)
        };
        let end = start + size;
        if !last && size > 0 {
            // Types in this wave, and where each type is over-represented.
            let mut count = vec![0usize; fleet.n_types];
            for d in &pool[start..end] {
                count[fleet.device_type[*d as usize] as usize] += 1;
            }
            let mut missing: Vec<usize> = Vec::new();
            let mut present_later = vec![false; fleet.n_types];
            for d in &pool[end..] {
                present_later[fleet.device_type[*d as usize] as usize] = true;
            }
            for t in 0..fleet.n_types {
                if count[t] == 0 && present_later[t] {
                    missing.push(t);
                }
            }
            for t in missing {
                // A donor: the last device in the wave whose type has more than one device.
                let donor = (start..end)
                    .rev()
                    .find(|p| count[fleet.device_type[pool[*p] as usize] as usize] > 1);
                let taker =
                    (end..total).find(|p| fleet.device_type[pool[*p] as usize] as usize == t);
                if let (Some(dp), Some(tp)) = (donor, taker) {
                    count[fleet.device_type[pool[dp] as usize] as usize] -= 1;
                    count[t] += 1;
                    pool.swap(dp, tp);
                }
            }
        }
        ends.push(end);
        start = end;
    }
    ends
}
