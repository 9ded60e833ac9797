//! Strategy settings and their defaults from the reference documents (quoted in the
//! [`plan`](super) module documentation). Kept apart from the compiler so the defaults can be
//! read in one place; [`StrategyConfig::validate`] is what [`Plan::new`](super::Plan::new)
//! checks before compiling anything.

use super::PlanError;
use crate::duration::MAX_DURATION;
use crate::gates::GateConfig;
use crate::names::spelled;
use crate::{HOUR, MINUTE, Millis, SECOND};
use serde::{Deserialize, Serialize};

/// The rollout strategies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Every target at once (000); small fleets only.
    AllAtOnce,
    /// Sequential batches (000).
    Rolling,
    /// A canary share, a delay, then the rest (000).
    Canary,
    /// Stage everywhere, then switch the canary, then switch in waves (003).
    BlueGreen,
    /// A selected canary, then percentage waves with soaks and gates (001, 003).
    CanaryWaves,
    /// Traffic-style cumulative steps such as 5 → 25 → 50 → 100 % (002).
    Steps,
}

spelled!(Strategy, "strategy", {
    AllAtOnce => "all-at-once",
    Rolling => "rolling",
    Canary => "canary",
    BlueGreen => "blue-green",
    CanaryWaves => "canary-waves",
    Steps => "steps",
});

impl Strategy {
    /// The CLI and REST name (the same as [`Strategy::as_str`]).
    pub fn name(self) -> &'static str {
        self.as_str()
    }

    /// Parses a CLI or REST name (`str::parse` says what was expected instead).
    pub fn parse(name: &str) -> Option<Self> {
        name.parse().ok()
    }
}

/// One percentage wave (001's YAML).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaveConfig {
    /// The wave's name ("wave-1").
    pub name: String,
    /// Share of the post-canary pool, in percent; the last wave takes the rest regardless.
    pub percentage: f64,
    /// Soak after the wave has deployed, before its gate.
    pub soak: Millis,
    /// The wave is rolled back and the deployment halted when more than this share of the
    /// wave's devices failed.
    pub failure_threshold_percent: f64,
    /// Whether a breach rolls the wave back (otherwise it only halts).
    pub auto_rollback: bool,
}

/// Strategy settings. Build with [`StrategyConfig::defaults`] and change what the request sets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StrategyConfig {
    /// The strategy.
    pub strategy: Strategy,
    /// Per-device deploy timeout (directive to switched) and how long a gate may wait for a
    /// quorum after its soak before the deployment pauses.
    pub timeout: Millis,
    /// Roll back automatically when a trigger fires (otherwise halt).
    pub auto_rollback: bool,
    /// Evaluate health gates (otherwise stages pass once their devices are verified).
    pub health_check: bool,
    /// Rolling: devices per batch.
    pub batch_size: u32,
    /// Rolling: delay (soak) after each batch.
    pub batch_delay: Millis,
    /// Failure threshold for all-at-once, rolling batches and the post-canary rest, in percent.
    pub failure_threshold_percent: f64,
    /// Canary share of the fleet, in percent: picks the size inside 001's sizing table's range
    /// (see [`canary_target`](super::canary_target)); never drops a device type or region.
    pub canary_percent: f64,
    /// Minimum canary devices.
    pub canary_min: u32,
    /// Maximum canary devices (0: none); never below the table's minimum, never dropping a
    /// device type or region.
    pub canary_max: u32,
    /// Canary soak (000's "canary delay").
    pub canary_soak: Millis,
    /// Require an operator's approve after the canary gate passes.
    pub require_approval: bool,
    /// Blue-green: delay between everything staged and the canary's switch.
    pub switch_delay: Millis,
    /// Canary+waves and blue-green: the waves (blue-green switches in them).
    pub waves: Vec<WaveConfig>,
    /// Traffic steps: cumulative percentages, the last must be 100.
    pub steps: Vec<f64>,
    /// Traffic steps: observation period after each step.
    pub step_soak: Millis,
    /// Most devices deploying (or rolling back) at once; 0 means no limit beyond the stage.
    pub max_parallel: u32,
    /// How often aggregate triggers (thresholds, trend) are checked.
    pub health_check_interval: Millis,
    /// Share of the devices a gate judges that must have reported, in percent.
    pub quorum_percent: f64,
    /// How long the end of a deployment waits for offline devices to return and catch up.
    pub offline_grace: Millis,
    /// All-at-once is refused above this many devices unless `force`.
    pub max_all_at_once: u32,
    /// Allow all-at-once above `max_all_at_once`.
    pub force: bool,
    /// The smallest rise of the fleet error rate (a fraction) that counts as "increasing" for
    /// the trend trigger, so measurement noise does not halt a deployment.
    pub trend_min_step: f64,
    /// Baselines, no-baseline policy, gate sample minimums and CAUTION extensions (issue 15).
    #[serde(default)]
    pub gates: GateConfig,
    /// Limits and windows of the triggers that fire from system figures (a stored plan
    /// without them gets the defaults).
    #[serde(default, skip_serializing_if = "super::TriggerConfig::is_default")]
    pub triggers: super::TriggerConfig,
}

/// 001's example waves: 15 % / 35 % / 100 % of the post-canary pool, soaks 15 / 10 / 10 min,
/// failure thresholds 5 / 5 / 3 %, auto-rollback on.
fn default_waves() -> Vec<WaveConfig> {
    let wave = |n: u32, p: f64, soak: u64, thr: f64| WaveConfig {
        name: format!("wave-{n}"),
        percentage: p,
        soak: soak * MINUTE,
        failure_threshold_percent: thr,
        auto_rollback: true,
    };
    vec![
        wave(1, 15.0, 15, 5.0),
        wave(2, 35.0, 10, 5.0),
        wave(3, 100.0, 10, 3.0),
    ]
}

impl StrategyConfig {
    /// The reference defaults for `strategy` (see the module documentation).
    pub fn defaults(strategy: Strategy) -> Self {
        let mut c = StrategyConfig {
            strategy,
            timeout: 30 * MINUTE,
            auto_rollback: true,
            health_check: true,
            batch_size: 10,
            batch_delay: 5 * MINUTE,
            failure_threshold_percent: 20.0,
            canary_percent: 10.0,
            canary_min: 1,
            canary_max: 0,
            canary_soak: 30 * MINUTE,
            require_approval: false,
            switch_delay: 10 * MINUTE,
            waves: Vec::new(),
            steps: Vec::new(),
            step_soak: 10 * MINUTE,
            max_parallel: 0,
            health_check_interval: 30 * SECOND,
            quorum_percent: 80.0,
            offline_grace: HOUR,
            max_all_at_once: 10,
            force: false,
            trend_min_step: 0.001,
            gates: GateConfig::default(),
            triggers: super::TriggerConfig::default(),
        };
        match strategy {
            Strategy::AllAtOnce => c.failure_threshold_percent = 0.0,
            Strategy::Rolling => c.max_parallel = c.batch_size,
            Strategy::Canary => c.timeout = 2 * HOUR,
            Strategy::BlueGreen => {
                // 003: the canary switches first, then the waves; the canary and the waves
                // take canary+waves' settings (001's canary 3 %, at most 10 within the sizing
                // table, soak 30 min; waves 15 / 35 / 100 % with soaks 15 / 10 / 10 min and
                // thresholds 5 / 5 / 3 %). No approval by default (set require_approval).
                c.timeout = HOUR;
                c.failure_threshold_percent = 0.0;
                c.canary_percent = 3.0;
                c.canary_max = 10;
                c.waves = default_waves();
            }
            Strategy::CanaryWaves => {
                c.timeout = 10 * MINUTE;
                c.canary_percent = 3.0;
                c.canary_max = 10;
                c.require_approval = true;
                c.max_parallel = 50;
                c.waves = default_waves();
            }
            Strategy::Steps => {
                c.timeout = 10 * MINUTE;
                c.steps = vec![5.0, 25.0, 50.0, 100.0];
                c.failure_threshold_percent = 0.0;
            }
        }
        c
    }

    pub(super) fn validate(&self) -> Result<(), PlanError> {
        let pct = |field: &'static str, v: f64| {
            if v.is_finite() && (0.0..=100.0).contains(&v) {
                Ok(())
            } else {
                Err(PlanError::Config {
                    field,
                    reason: format!("{v} is not a percentage between 0 and 100"),
                })
            }
        };
        for (field, v) in [
            ("timeout", self.timeout),
            ("batch_delay", self.batch_delay),
            ("canary_delay", self.canary_soak),
            ("switch_delay", self.switch_delay),
            ("step_soak", self.step_soak),
            ("health_check_interval", self.health_check_interval),
            ("offline_grace", self.offline_grace),
        ]
        .into_iter()
        .chain(self.waves.iter().map(|w| ("waves.soak", w.soak)))
        {
            if v > MAX_DURATION {
                return Err(PlanError::Config {
                    field,
                    reason: format!("{v} ms is longer than the limit of 366 days"),
                });
            }
        }
        self.gates
            .validate()
            .map_err(|(field, reason)| PlanError::Config { field, reason })?;
        self.triggers
            .validate()
            .map_err(|(field, reason)| PlanError::Config { field, reason })?;
        pct("failure_threshold", self.failure_threshold_percent)?;
        pct("canary_percentage", self.canary_percent)?;
        pct("quorum_percent", self.quorum_percent)?;
        if self.strategy == Strategy::Rolling && self.batch_size == 0 {
            return Err(PlanError::Config {
                field: "batch_size",
                reason: "must be at least 1".into(),
            });
        }
        if self.health_check_interval == 0 {
            return Err(PlanError::Config {
                field: "health_check_interval",
                reason: "must be positive".into(),
            });
        }
        if self.timeout == 0 {
            return Err(PlanError::Config {
                field: "timeout",
                reason: "must be positive".into(),
            });
        }
        if matches!(self.strategy, Strategy::CanaryWaves | Strategy::BlueGreen) {
            if self.waves.is_empty() {
                return Err(PlanError::Config {
                    field: "waves",
                    reason: format!("{} needs at least one wave", self.strategy),
                });
            }
            for w in &self.waves {
                pct("waves.percentage", w.percentage)?;
                pct(
                    "waves.failure_threshold_percent",
                    w.failure_threshold_percent,
                )?;
            }
        }
        if self.strategy == Strategy::Steps {
            let ok = !self.steps.is_empty()
                && self.steps.windows(2).all(|w| w[0] < w[1])
                && self.steps.iter().all(|s| *s > 0.0 && *s <= 100.0)
                && self.steps.last().is_some_and(|l| *l == 100.0);
            if !ok {
                return Err(PlanError::Config {
                    field: "steps",
                    reason: format!(
                        "{:?}: steps must rise strictly, lie in (0, 100] and end at 100",
                        self.steps
                    ),
                });
            }
        }
        Ok(())
    }
}
