//! Lays out the stages of each strategy over a permutation of the devices: the one shape the
//! engine runs, whatever the strategy.

use super::canary::{CanaryPick, Fleet, select_canary};
use super::waves::assign_waves;
use super::{
    Breach, GateKind, PlanError, StageKind, StageMode, StageSpec, Strategy, StrategyConfig,
};
use crate::rng::SplitMix64;

/// Above this many devices a blue-green plan carries 001's warning.
pub const BLUE_GREEN_MAX_DEVICES: usize = 500;

/// A compiled layout: the device order, the stages over it, the canary and what the plan
/// says about itself.
pub(super) struct Compiled {
    pub(super) order: Vec<u32>,
    pub(super) stages: Vec<StageSpec>,
    pub(super) canary: Vec<u32>,
    pub(super) picks: Vec<CanaryPick>,
    pub(super) warnings: Vec<String>,
}

pub(super) fn compile(
    config: &StrategyConfig,
    fleet: &Fleet<'_>,
    rng: &mut SplitMix64,
) -> Result<Compiled, PlanError> {
    let n = fleet.len();
    let fail = config.failure_threshold_percent / 100.0;
    let breach_wave = if config.auto_rollback {
        Breach::RollbackStageAndHalt
    } else {
        Breach::Halt
    };
    let breach_all = if config.auto_rollback {
        Breach::RollbackAll
    } else {
        Breach::Halt
    };
    let stage =
        |kind, name: String, start: usize, end: usize, soak, thr, on_breach, gate| StageSpec {
            kind,
            name,
            start: start as u32,
            end: end as u32,
            soak,
            failure_threshold: thr,
            on_breach,
            gate,
            approval_after: false,
            mode: StageMode::Full,
        };
    let mut order: Vec<u32> = (0..n as u32).collect();
    let mut stages = Vec::new();
    let mut canary = Vec::new();
    let mut picks = Vec::new();
    let mut warnings = Vec::new();
    match config.strategy {
        Strategy::AllAtOnce => {
            stages.push(stage(
                StageKind::All,
                "All".into(),
                0,
                n,
                0,
                fail,
                breach_all,
                GateKind::Wave,
            ));
        }
        Strategy::Rolling => {
            let b = config.batch_size as usize;
            let mut start = 0;
            let mut i = 1;
            while start < n {
                let end = (start + b).min(n);
                stages.push(stage(
                    StageKind::Batch,
                    format!("batch-{i}"),
                    start,
                    end,
                    config.batch_delay,
                    fail,
                    breach_wave,
                    GateKind::Wave,
                ));
                start = end;
                i += 1;
            }
        }
        Strategy::Canary | Strategy::CanaryWaves => {
            let selection = select_canary(config, fleet)?;
            canary = selection.devices;
            picks = selection.picks;
            warnings = selection.warnings;
            let c = canary.len();
            let mut can = stage(
                StageKind::Canary,
                "Canary".into(),
                0,
                c,
                config.canary_soak,
                0.0,
                breach_all,
                GateKind::Canary,
            );
            can.approval_after = config.require_approval;
            stages.push(can);
            let pool = pool_after(&canary, n);
            order = canary.clone();
            if config.strategy == Strategy::Canary {
                if !pool.is_empty() {
                    stages.push(stage(
                        StageKind::All,
                        "Rest".into(),
                        c,
                        n,
                        0,
                        fail,
                        breach_wave,
                        GateKind::Wave,
                    ));
                }
                order.extend(pool);
            } else {
                let (pool, waves) = wave_stages(config, fleet, rng, pool, c, StageMode::Full, "");
                stages.extend(waves);
                order.extend(pool);
            }
        }
        Strategy::BlueGreen => {
            // 003: stage everything in the standby slots, switch the canary first, then switch
            // in waves with gates between them; never the whole fleet in one step.
            let selection = select_canary(config, fleet)?;
            canary = selection.devices;
            picks = selection.picks;
            warnings = selection.warnings;
            if n > BLUE_GREEN_MAX_DEVICES {
                warnings.push(format!(
                    "blue-green to {n} devices: 001 lists \"Fleets larger than 500 devices \
                     (coordination overhead)\" under \"When Blue-Green is Not Feasible\", and \
                     every device needs room for a second slot (\"Total: 2x application \
                     size\"); canary-waves is the strategy 003 recommends for most edge fleets"
                ));
            }
            let c = canary.len();
            let mut s = stage(
                StageKind::BlueGreenStage,
                "Stage (green)".into(),
                0,
                n,
                config.switch_delay,
                fail,
                breach_all,
                GateKind::Staged,
            );
            s.mode = StageMode::StageOnly;
            stages.push(s);
            let mut can = stage(
                StageKind::Canary,
                "Canary (switch)".into(),
                0,
                c,
                config.canary_soak,
                0.0,
                breach_all,
                GateKind::Canary,
            );
            can.mode = StageMode::SwitchOnly;
            can.approval_after = config.require_approval;
            stages.push(can);
            let pool = pool_after(&canary, n);
            order = canary.clone();
            let (pool, waves) = wave_stages(
                config,
                fleet,
                rng,
                pool,
                c,
                StageMode::SwitchOnly,
                " (switch)",
            );
            stages.extend(waves);
            order.extend(pool);
        }
        Strategy::Steps => {
            rng.shuffle(&mut order);
            let mut start = 0;
            for (i, p) in config.steps.iter().enumerate() {
                let end = if *p >= 100.0 {
                    n
                } else {
                    (((n as f64) * p / 100.0).ceil() as usize).clamp(start.max(1), n)
                };
                if end > start {
                    let gate = if i == 0 {
                        GateKind::Canary
                    } else {
                        GateKind::Wave
                    };
                    let kind = StageKind::Step;
                    stages.push(stage(
                        kind,
                        format!("step {p}%"),
                        start,
                        end,
                        config.step_soak,
                        fail,
                        breach_all,
                        gate,
                    ));
                }
                start = end;
            }
        }
    }
    Ok(Compiled {
        order,
        stages,
        canary,
        picks,
        warnings,
    })
}

/// The devices not in `canary`, by index.
fn pool_after(canary: &[u32], n: usize) -> Vec<u32> {
    let mut is_canary = vec![false; n];
    for d in canary {
        is_canary[*d as usize] = true;
    }
    (0..n as u32).filter(|d| !is_canary[*d as usize]).collect()
}

/// 001's waves over the post-canary `pool` (shuffled with the plan's seed), placed after the
/// `c` canary positions: the pool in wave order and one stage per non-empty wave, each with
/// its soak, failure threshold and breach policy, sending `mode`'s directives and named
/// after the wave with `suffix`.
fn wave_stages(
    config: &StrategyConfig,
    fleet: &Fleet<'_>,
    rng: &mut SplitMix64,
    mut pool: Vec<u32>,
    c: usize,
    mode: StageMode,
    suffix: &str,
) -> (Vec<u32>, Vec<StageSpec>) {
    rng.shuffle(&mut pool);
    let ends = assign_waves(&config.waves, &mut pool, fleet);
    let mut stages = Vec::with_capacity(ends.len());
    let mut start = 0;
    for (w, end) in config.waves.iter().zip(ends) {
        if end > start {
            let on_breach = if w.auto_rollback {
                Breach::RollbackStageAndHalt
            } else {
                Breach::Halt
            };
            stages.push(StageSpec {
                kind: StageKind::Wave,
                name: format!("{}{suffix}", w.name),
                start: (c + start) as u32,
                end: (c + end) as u32,
                soak: w.soak,
                failure_threshold: w.failure_threshold_percent / 100.0,
                on_breach,
                gate: GateKind::Wave,
                approval_after: false,
                mode,
            });
        }
        start = end;
    }
    (pool, stages)
}
