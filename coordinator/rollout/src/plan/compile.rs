//! Lays out the stages of each strategy over a permutation of the devices: the one shape the
//! engine runs, whatever the strategy.

use super::canary::{Fleet, select_canary};
use super::waves::assign_waves;
use super::{
    Breach, GateKind, PlanError, StageKind, StageMode, StageSpec, Strategy, StrategyConfig,
};
use crate::rng::SplitMix64;

type Compiled = (Vec<u32>, Vec<StageSpec>, Vec<u32>);

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
            canary = select_canary(config, fleet)?;
            let mut is_canary = vec![false; n];
            for d in &canary {
                is_canary[*d as usize] = true;
            }
            order = canary.clone();
            let mut pool: Vec<u32> = (0..n as u32).filter(|d| !is_canary[*d as usize]).collect();
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
                rng.shuffle(&mut pool);
                let ends = assign_waves(&config.waves, &mut pool, fleet);
                let mut start = 0;
                for (w, end) in config.waves.iter().zip(ends) {
                    if end > start {
                        let on_breach = if w.auto_rollback {
                            Breach::RollbackStageAndHalt
                        } else {
                            Breach::Halt
                        };
                        stages.push(stage(
                            StageKind::Wave,
                            w.name.clone(),
                            c + start,
                            c + end,
                            w.soak,
                            w.failure_threshold_percent / 100.0,
                            on_breach,
                            GateKind::Wave,
                        ));
                    }
                    start = end;
                }
                order.extend(pool);
            }
        }
        Strategy::BlueGreen => {
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
            let mut w = stage(
                StageKind::BlueGreenSwitch,
                "Switch".into(),
                0,
                n,
                0,
                fail,
                breach_all,
                GateKind::Wave,
            );
            w.mode = StageMode::SwitchOnly;
            stages.push(w);
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
    Ok((order, stages, canary))
}
