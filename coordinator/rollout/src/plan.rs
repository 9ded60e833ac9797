//! The deployment plan: strategy settings with the reference documents' defaults, the targets,
//! their baselines, and the compiled stages (canary, waves, batches, steps).
//!
//! Every strategy compiles to the same thing, an ordered list of [`StageSpec`]s over a
//! permutation of the devices, so the engine has one code path for all of them. The compiling
//! is done once, at plan time, from the plan's seed, which is why a persisted deployment keeps
//! its wave assignment across restarts.
//!
//! Defaults (quoted from the references):
//! - 000 all-at-once: timeout 30 min, auto-rollback and health check on. Refused above
//!   `max_all_at_once` devices (default 10, reference README) unless `force`.
//! - 000 rolling: batch 10 devices, batch delay 5 min, failure threshold 20 %, timeout 30 min.
//! - 000 canary: canary 10 %, canary delay 30 min, timeout 2 h; any canary failure rolls back
//!   everything.
//! - 000 blue-green: switch delay 10 min, timeout 1 h; rollback is switching back.
//! - 001 canary+waves: canary 3 %, min 1, max 10 devices, soak 30 min, human approval after;
//!   waves 15 % / 35 % / 100 % with soaks 15 / 10 / 10 min and failure thresholds 5 / 5 / 3 %;
//!   `max_parallel_deploys` 50, `deploy_timeout_minutes` 10, `health_check_interval_seconds` 30,
//!   `offline_device_policy: skip_and_queue`.
//! - 002 traffic steps: 5 → 25 → 50 → 100 % with a health decision between steps; any "no"
//!   rolls back.

use super::rng::SplitMix64;
use super::{HOUR, MINUTE, Millis, SECOND};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The most device types or regions a plan may name; ids are stored as `u16`.
pub const MAX_GROUPS: usize = 4096;
/// The most targets a plan may hold (device indices are `u32`).
pub const MAX_TARGETS: usize = 16_000_000;

/// Why a plan was refused. Every variant names what is wrong so the REST layer can return it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// The plan names no targets.
    #[error("the deployment has no target devices")]
    EmptyFleet,
    /// More targets than the engine addresses.
    #[error("the deployment has {0} targets; the limit is {MAX_TARGETS}")]
    TooManyTargets(usize),
    /// More distinct device types or regions than the engine addresses.
    #[error("the deployment names more than {MAX_GROUPS} distinct {0}")]
    TooManyGroups(&'static str),
    /// A device id appears twice.
    #[error("device {0:?} is listed twice in the targets")]
    DuplicateDevice(String),
    /// All-at-once on a fleet larger than `max_all_at_once` without `force`.
    #[error(
        "all-at-once to {devices} devices refused: it is allowed only for fleets of at most {max} \
         devices, because one bad version would reach every device before any health check could \
         stop it (reference 003: never deploy to the whole fleet at once); use canary-waves or \
         rolling, or set force: true"
    )]
    AllAtOnceTooLarge {
        /// Devices in the request.
        devices: usize,
        /// The configured maximum.
        max: u32,
    },
    /// The canary strategies need at least one eligible device.
    #[error(
        "no device is eligible as a canary: every target is in maintenance or quarantine, has \
         known issues, is a single point of failure or was flaky in the last 24 h"
    )]
    NoEligibleCanary,
    /// Health checks are on but a device type has no baseline.
    #[error("no baseline for device group {0:?}: capture baselines before the deployment starts")]
    MissingBaseline(String),
    /// A setting is out of range.
    #[error("invalid setting {field}: {reason}")]
    Config {
        /// The setting's name as the REST API spells it.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

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
    /// Stage everywhere, verify, switch everywhere (000, 001).
    BlueGreen,
    /// A selected canary, then percentage waves with soaks and gates (001, 003).
    CanaryWaves,
    /// Traffic-style cumulative steps such as 5 → 25 → 50 → 100 % (002).
    Steps,
}

impl Strategy {
    /// The CLI and REST name.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::AllAtOnce => "all-at-once",
            Strategy::Rolling => "rolling",
            Strategy::Canary => "canary",
            Strategy::BlueGreen => "blue-green",
            Strategy::CanaryWaves => "canary-waves",
            Strategy::Steps => "steps",
        }
    }

    /// Parses a CLI or REST name.
    pub fn parse(name: &str) -> Option<Self> {
        [
            Strategy::AllAtOnce,
            Strategy::Rolling,
            Strategy::Canary,
            Strategy::BlueGreen,
            Strategy::CanaryWaves,
            Strategy::Steps,
        ]
        .into_iter()
        .find(|s| s.name() == name)
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
    /// Canary share of the fleet, in percent (the maximum canary size).
    pub canary_percent: f64,
    /// Minimum canary devices.
    pub canary_min: u32,
    /// Maximum canary devices (0 means only the share limits it).
    pub canary_max: u32,
    /// Canary soak (000's "canary delay").
    pub canary_soak: Millis,
    /// Require an operator's approve after the canary gate passes.
    pub require_approval: bool,
    /// Blue-green: delay between everything staged and the switch.
    pub switch_delay: Millis,
    /// Canary+waves: the waves.
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
        };
        match strategy {
            Strategy::AllAtOnce => c.failure_threshold_percent = 0.0,
            Strategy::Rolling => c.max_parallel = c.batch_size,
            Strategy::Canary => c.timeout = 2 * HOUR,
            Strategy::BlueGreen => {
                c.timeout = HOUR;
                c.failure_threshold_percent = 0.0;
            }
            Strategy::CanaryWaves => {
                c.timeout = 10 * MINUTE;
                c.canary_percent = 3.0;
                c.canary_max = 10;
                c.require_approval = true;
                c.max_parallel = 50;
                let wave = |n: u32, p: f64, soak: u64, thr: f64| WaveConfig {
                    name: format!("wave-{n}"),
                    percentage: p,
                    soak: soak * MINUTE,
                    failure_threshold_percent: thr,
                    auto_rollback: true,
                };
                c.waves = vec![
                    wave(1, 15.0, 15, 5.0),
                    wave(2, 35.0, 10, 5.0),
                    wave(3, 100.0, 10, 3.0),
                ];
            }
            Strategy::Steps => {
                c.timeout = 10 * MINUTE;
                c.steps = vec![5.0, 25.0, 50.0, 100.0];
                c.failure_threshold_percent = 0.0;
            }
        }
        c
    }

    fn validate(&self) -> Result<(), PlanError> {
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
        if self.strategy == Strategy::CanaryWaves {
            if self.waves.is_empty() {
                return Err(PlanError::Config {
                    field: "waves",
                    reason: "canary-waves needs at least one wave".into(),
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

/// Per-target flags that keep a device out of the canary (001 step 3).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetFlags {
    /// In maintenance.
    pub maintenance: bool,
    /// Quarantined by an earlier deployment or an operator.
    pub quarantined: bool,
    /// Known hardware issues.
    pub known_issues: bool,
    /// Connectivity problems in the last 24 h.
    pub flaky_24h: bool,
    /// A single point of failure at its site.
    pub single_point_of_failure: bool,
}

impl TargetFlags {
    fn bits(self) -> u8 {
        u8::from(self.maintenance)
            | u8::from(self.quarantined) << 1
            | u8::from(self.known_issues) << 2
            | u8::from(self.flaky_24h) << 3
            | u8::from(self.single_point_of_failure) << 4
    }
}

/// A target as the REST body describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetSpec {
    /// The device id.
    pub id: String,
    /// Hardware type (also the baseline group).
    pub device_type: String,
    /// Deployment region.
    pub region: String,
    /// Canary exclusion flags.
    pub flags: TargetFlags,
    /// Monitoring coverage, higher is better (001: "best monitoring coverage").
    pub monitoring: u8,
}

/// Pre-deployment baseline of one device group (001: "store baseline per device group").
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// Error rate as a fraction (0.01 is 1 %).
    pub error_rate: f64,
    /// P95 latency in milliseconds.
    pub p95_ms: f64,
    /// Memory in MB.
    pub memory_mb: f64,
}

/// What a stage is, for gates and the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageKind {
    /// The canary.
    Canary,
    /// A percentage wave.
    Wave,
    /// A rolling batch.
    Batch,
    /// A traffic step.
    Step,
    /// All-at-once, or the rest after a 000 canary.
    All,
    /// Blue-green: stage the new version on every target.
    BlueGreenStage,
    /// Blue-green: switch every target.
    BlueGreenSwitch,
}

/// What happens when a stage's failures pass its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Breach {
    /// Roll back every deployed device (canary failure, blue-green, traffic steps).
    RollbackAll,
    /// Roll back the stage and halt for a human (001 wave rollback).
    RollbackStageAndHalt,
    /// Only halt for a human (auto-rollback off).
    Halt,
}

/// Which directives a stage sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageMode {
    /// Stage, then switch as soon as staged.
    Full,
    /// Stage only (blue-green's first stage).
    StageOnly,
    /// Switch only (blue-green's second stage; devices are already staged).
    SwitchOnly,
}

/// Which health gate closes a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateKind {
    /// 001 `canary_gate`.
    Canary,
    /// 001 `wave_gate`.
    Wave,
    /// 001 `completion_gate`.
    Completion,
    /// No health gate: the stage passes when its devices are staged (blue-green staging).
    Staged,
}

/// One compiled stage: a range of the plan's device order and how to run it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageSpec {
    /// What the stage is.
    pub kind: StageKind,
    /// Its name in the report ("Canary", "wave-1", "batch-3", "step 25%").
    pub name: String,
    /// First position in [`Plan::order`].
    pub start: u32,
    /// One past the last position in [`Plan::order`].
    pub end: u32,
    /// Soak after the stage has deployed, before its gate.
    pub soak: Millis,
    /// Failure threshold as a fraction of the stage's devices; a breach is `failed > threshold`.
    pub failure_threshold: f64,
    /// What a breach does.
    pub on_breach: Breach,
    /// The gate that closes the stage.
    pub gate: GateKind,
    /// Whether an operator must approve before the next stage.
    pub approval_after: bool,
    /// Which directives the stage sends.
    pub mode: StageMode,
}

impl StageSpec {
    /// Devices in the stage.
    pub fn len(&self) -> u32 {
        self.end - self.start
    }

    /// Whether the stage is empty.
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// A compiled deployment plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The artifact ("name v1.2.3" or its hash), for the report.
    pub artifact: String,
    /// The deployment's seed (wave shuffle).
    pub seed: u64,
    /// The strategy settings.
    pub config: StrategyConfig,
    /// Device ids, indexed by device index.
    pub ids: Vec<String>,
    /// Device type names.
    pub types: Vec<String>,
    /// Region names.
    pub regions: Vec<String>,
    /// Device type per device.
    pub device_type: Vec<u16>,
    /// Region per device.
    pub device_region: Vec<u16>,
    /// Baseline per device type, indexed like `types`.
    pub baselines: Vec<Baseline>,
    /// The order devices are deployed in (a permutation of device indices).
    pub order: Vec<u32>,
    /// The stages, over ranges of `order`.
    pub stages: Vec<StageSpec>,
    /// The canary's device indices (empty for strategies without a canary).
    pub canary: Vec<u32>,
}

struct Interner {
    names: Vec<String>,
    index: HashMap<String, u16>,
    what: &'static str,
}

impl Interner {
    fn new(what: &'static str) -> Self {
        Self {
            names: Vec::new(),
            index: HashMap::new(),
            what,
        }
    }

    fn get(&mut self, name: String) -> Result<u16, PlanError> {
        if let Some(ix) = self.index.get(&name) {
            return Ok(*ix);
        }
        if self.names.len() >= MAX_GROUPS {
            return Err(PlanError::TooManyGroups(self.what));
        }
        let ix = self.names.len() as u16;
        self.names.push(name.clone());
        self.index.insert(name, ix);
        Ok(ix)
    }
}

impl Plan {
    /// Compiles a plan: validates the settings, interns types and regions, checks baselines,
    /// selects the canary, shuffles and assigns waves with `seed`, and lays out the stages.
    /// `baselines` maps a device type to its baseline; every type needs one when health
    /// checks are on.
    pub fn new(
        artifact: impl Into<String>,
        config: StrategyConfig,
        targets: impl IntoIterator<Item = TargetSpec>,
        baselines: &HashMap<String, Baseline>,
        seed: u64,
    ) -> Result<Plan, PlanError> {
        config.validate()?;
        let mut types = Interner::new("device types");
        let mut regions = Interner::new("regions");
        let mut ids = Vec::new();
        let mut device_type = Vec::new();
        let mut device_region = Vec::new();
        let mut flags = Vec::new();
        let mut monitoring = Vec::new();
        for t in targets {
            if ids.len() >= MAX_TARGETS {
                return Err(PlanError::TooManyTargets(ids.len() + 1));
            }
            device_type.push(types.get(t.device_type)?);
            device_region.push(regions.get(t.region)?);
            flags.push(t.flags.bits());
            monitoring.push(t.monitoring);
            ids.push(t.id);
        }
        let n = ids.len();
        if n == 0 {
            return Err(PlanError::EmptyFleet);
        }
        {
            let mut seen = std::collections::HashSet::with_capacity(n);
            for id in &ids {
                if !seen.insert(id.as_str()) {
                    return Err(PlanError::DuplicateDevice(id.clone()));
                }
            }
        }
        let mut base = Vec::with_capacity(types.names.len());
        for name in &types.names {
            match baselines.get(name) {
                Some(b) => base.push(*b),
                None if !config.health_check => base.push(Baseline {
                    error_rate: 0.0,
                    p95_ms: 0.0,
                    memory_mb: 0.0,
                }),
                None => return Err(PlanError::MissingBaseline(name.clone())),
            }
        }
        if config.strategy == Strategy::AllAtOnce
            && n > config.max_all_at_once as usize
            && !config.force
        {
            return Err(PlanError::AllAtOnceTooLarge {
                devices: n,
                max: config.max_all_at_once,
            });
        }
        let fleet = Fleet {
            device_type: &device_type,
            device_region: &device_region,
            flags: &flags,
            monitoring: &monitoring,
            n_types: types.names.len(),
            n_regions: regions.names.len(),
        };
        let mut rng = SplitMix64::new(seed);
        let (order, stages, canary) = compile(&config, &fleet, &mut rng)?;
        Ok(Plan {
            artifact: artifact.into(),
            seed,
            config,
            ids,
            types: types.names,
            regions: regions.names,
            device_type,
            device_region,
            baselines: base,
            order,
            stages,
            canary,
        })
    }

    /// Number of targets.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the plan has no targets (never true for a compiled plan).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The device index of `id`, by linear search (for tests and small tools; the service keeps
    /// its own map).
    pub fn index_of(&self, id: &str) -> Option<u32> {
        self.ids.iter().position(|d| d == id).map(|i| i as u32)
    }
}

struct Fleet<'a> {
    device_type: &'a [u16],
    device_region: &'a [u16],
    flags: &'a [u8],
    monitoring: &'a [u8],
    n_types: usize,
    n_regions: usize,
}

impl Fleet<'_> {
    fn len(&self) -> usize {
        self.device_type.len()
    }

    fn eligible(&self, d: usize) -> bool {
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
fn select_canary(config: &StrategyConfig, fleet: &Fleet<'_>) -> Result<Vec<u32>, PlanError> {
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

/// 001's wave assignment over the shuffled post-canary pool: wave size
/// `ceil(pool × percentage / 100)`, at least one device per type where possible, the last wave
/// takes the rest. Returns the end position (exclusive, relative to `pool`) of each wave.
fn assign_waves(waves: &[WaveConfig], pool: &mut [u32], fleet: &Fleet<'_>) -> Vec<usize> {
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

type Compiled = (Vec<u32>, Vec<StageSpec>, Vec<u32>);

fn compile(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet_specs(n: usize, types: &[&str], regions: &[&str]) -> Vec<TargetSpec> {
        (0..n)
            .map(|i| TargetSpec {
                id: format!("dev-{i:04}"),
                device_type: types[i % types.len()].to_string(),
                region: regions[(i / types.len()) % regions.len()].to_string(),
                flags: TargetFlags::default(),
                monitoring: (i % 7) as u8,
            })
            .collect()
    }

    fn baselines(types: &[&str]) -> HashMap<String, Baseline> {
        types
            .iter()
            .map(|t| {
                (
                    t.to_string(),
                    Baseline {
                        error_rate: 0.01,
                        p95_ms: 100.0,
                        memory_mb: 200.0,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn all_at_once_is_refused_above_the_limit_unless_forced() {
        let types = ["pi"];
        let specs = fleet_specs(11, &types, &["eu"]);
        let cfg = StrategyConfig::defaults(Strategy::AllAtOnce);
        let err = Plan::new("a", cfg.clone(), specs.clone(), &baselines(&types), 1);
        let msg = err.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            msg.contains("11 devices refused") && msg.contains("at most 10"),
            "{msg}"
        );
        let mut forced = cfg;
        forced.force = true;
        assert!(Plan::new("a", forced, specs, &baselines(&types), 1).is_ok());
    }

    #[test]
    fn canary_covers_every_type_and_region_and_skips_ineligible_devices() {
        let types = ["pi", "jetson", "gw"];
        let regions = ["eu", "us", "ap"];
        let mut specs = fleet_specs(300, &types, &regions);
        // The best-monitored pi is flaky, so it must not be chosen.
        specs[6].monitoring = 200;
        specs[6].flags.flaky_24h = true;
        let plan = Plan::new(
            "a",
            StrategyConfig::defaults(Strategy::CanaryWaves),
            specs,
            &baselines(&types),
            9,
        );
        let plan = match plan {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        // 300 devices: the table says 5-10, the share (3 %) caps at 9, the config at 10.
        assert!(
            (5..=9).contains(&plan.canary.len()),
            "{}",
            plan.canary.len()
        );
        assert!(!plan.canary.contains(&6));
        for t in 0..3u16 {
            assert!(
                plan.canary
                    .iter()
                    .any(|d| plan.device_type[*d as usize] == t)
            );
        }
        for r in 0..3u16 {
            assert!(
                plan.canary
                    .iter()
                    .any(|d| plan.device_region[*d as usize] == r)
            );
        }
        // Waves: ceil(15 % and 35 % of the pool), the last takes the rest.
        let pool = 300 - plan.canary.len();
        let sizes: Vec<u32> = plan.stages.iter().map(StageSpec::len).collect();
        assert_eq!(sizes[1] as usize, (pool as f64 * 0.15).ceil() as usize);
        assert_eq!(sizes[2] as usize, (pool as f64 * 0.35).ceil() as usize);
        assert_eq!(sizes.iter().sum::<u32>() as usize, 300);
        let mut all = plan.order.clone();
        all.sort_unstable();
        assert_eq!(all, (0..300).collect::<Vec<u32>>());
    }

    #[test]
    fn canary_sizing_follows_the_table() {
        assert_eq!(canary_size_range(5), (1, 1));
        assert_eq!(canary_size_range(30), (2, 3));
        assert_eq!(canary_size_range(100), (3, 5));
        assert_eq!(canary_size_range(500), (5, 10));
        assert_eq!(canary_size_range(5000), (10, 50));
        let types = ["pi"];
        let plan = Plan::new(
            "a",
            StrategyConfig::defaults(Strategy::CanaryWaves),
            fleet_specs(5000, &types, &["eu"]),
            &baselines(&types),
            1,
        );
        assert_eq!(plan.map(|p| p.canary.len()).ok(), Some(10));
    }

    #[test]
    fn no_eligible_canary_is_an_error() {
        let types = ["pi"];
        let mut specs = fleet_specs(4, &types, &["eu"]);
        for s in &mut specs {
            s.flags.maintenance = true;
        }
        let r = Plan::new(
            "a",
            StrategyConfig::defaults(Strategy::Canary),
            specs,
            &baselines(&types),
            1,
        );
        assert_eq!(r.err(), Some(PlanError::NoEligibleCanary));
    }

    #[test]
    fn each_wave_gets_every_type_where_possible() {
        let types = ["pi", "jetson", "gw", "rare"];
        let mut specs = fleet_specs(400, &types[..3], &["eu"]);
        for s in specs.iter_mut().skip(50).take(3) {
            s.device_type = "rare".into();
        }
        let plan = Plan::new(
            "a",
            StrategyConfig::defaults(Strategy::CanaryWaves),
            specs,
            &baselines(&types),
            3,
        );
        let plan = match plan {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        let rare = plan.types.iter().position(|t| t == "rare").unwrap_or(99) as u16;
        for s in &plan.stages[1..] {
            let has = plan.order[s.start as usize..s.end as usize]
                .iter()
                .any(|d| plan.device_type[*d as usize] == rare);
            // Three rare devices; one may be in the canary, so waves 1 and 2 need one each.
            if s.name != "wave-3" {
                assert!(has, "{} lacks the rare type", s.name);
            }
        }
    }

    #[test]
    fn missing_baseline_and_bad_steps_are_refused() {
        let types = ["pi"];
        let r = Plan::new(
            "a",
            StrategyConfig::defaults(Strategy::Rolling),
            fleet_specs(3, &types, &["eu"]),
            &HashMap::new(),
            1,
        );
        assert_eq!(r.err(), Some(PlanError::MissingBaseline("pi".into())));
        let mut cfg = StrategyConfig::defaults(Strategy::Steps);
        cfg.steps = vec![5.0, 50.0, 25.0, 100.0];
        let r = Plan::new(
            "a",
            cfg,
            fleet_specs(3, &types, &["eu"]),
            &baselines(&types),
            1,
        );
        assert!(matches!(r, Err(PlanError::Config { field: "steps", .. })));
    }
}
