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
//! - 000 blue-green: switch delay 10 min, timeout 1 h; rollback is switching back. Laid out as
//!   003's flow: stage every device in its standby slot, then (after the switch delay) switch
//!   the canary (selected as below, canary soak and gate), then switch the rest in 001's waves
//!   with their soaks, thresholds and gates; never every device in one step. Above 500
//!   devices the plan carries 001's "When Blue-Green is Not Feasible" warning. Staging keeps
//!   the strategy's failure threshold (0 % by default): a device failing to stage stops the
//!   deployment before anything switches, which costs nothing to undo (every device still
//!   runs its old slot).
//! - 001 canary sizing and selection (all canary strategies): the table first, the share
//!   inside its range, one device per type then per region never dropped (`canary`).
//! - 001 canary+waves: canary 3 %, min 1, max 10 devices, soak 30 min, human approval after;
//!   waves 15 % / 35 % / 100 % with soaks 15 / 10 / 10 min and failure thresholds 5 / 5 / 3 %;
//!   `max_parallel_deploys` 50, `deploy_timeout_minutes` 10, `health_check_interval_seconds` 30,
//!   `offline_device_policy: skip_and_queue`.
//! - 002 traffic steps: 5 → 25 → 50 → 100 % with a health decision between steps; any "no"
//!   rolls back.
//!
//! Files: this one holds the plan's types and [`Plan::new`], which validates, interns and
//! hands the compiling to `compile`; `strategy` the strategy settings and their defaults;
//! `canary` the per-target facts the compiler reads and 001's canary selection; `waves`
//! 001's wave assignment; `compile` the lay-out of stages for each strategy.

mod canary;
mod compile;
mod strategy;
mod triggers;
mod waves;

#[cfg(test)]
mod canary_tests;
#[cfg(test)]
mod tests;

pub use canary::{CanaryPick, CanaryReason, canary_size_range, canary_target};
pub use compile::BLUE_GREEN_MAX_DEVICES;
pub use strategy::{Strategy, StrategyConfig, WaveConfig};
pub use triggers::TriggerConfig;

use super::Millis;
use super::names::spelled;
use super::rng::SplitMix64;
use canary::Fleet;
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
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
    /// Blue-green: switch every target (plans compiled before blue-green switched in waves;
    /// new plans switch in a canary and waves).
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
    /// Switch only (blue-green's canary and waves; devices are already staged).
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

spelled!(StageKind, "stage kind", {
    Canary => "canary",
    Wave => "wave",
    Batch => "batch",
    Step => "step",
    All => "all",
    BlueGreenStage => "blue_green_stage",
    BlueGreenSwitch => "blue_green_switch",
});

spelled!(GateKind, "gate kind", {
    Canary => "canary",
    Wave => "wave",
    Completion => "completion",
    Staged => "staged",
});

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
    /// Why each canary device was picked, indexed like `canary` (empty in plans compiled
    /// before reasons were kept).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub canary_picks: Vec<CanaryPick>,
    /// Facts the plan states about itself: devices excluded from the canary, types or regions
    /// it cannot cover, a canary larger than the table recommends, blue-green above 500
    /// devices.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
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
            type_names: &types.names,
            region_names: &regions.names,
        };
        let mut rng = SplitMix64::new(seed);
        let compiled = compile::compile(&config, &fleet, &mut rng)?;
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
            order: compiled.order,
            stages: compiled.stages,
            canary: compiled.canary,
            canary_picks: compiled.picks,
            warnings: compiled.warnings,
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

    /// The device types and regions of the plan with no device in its canary (empty lists for
    /// a canary that covers everything; every type and region for strategies without one).
    /// For pre-flight's "canary devices selected with coverage across device types" (003).
    pub fn canary_gaps(&self) -> (Vec<&str>, Vec<&str>) {
        let mut types = vec![false; self.types.len()];
        let mut regions = vec![false; self.regions.len()];
        for d in &self.canary {
            if let Some(t) = self.device_type.get(*d as usize) {
                types[*t as usize] = true;
            }
            if let Some(r) = self.device_region.get(*d as usize) {
                regions[*r as usize] = true;
            }
        }
        fn gaps(names: &[String], covered: Vec<bool>) -> Vec<&str> {
            names
                .iter()
                .zip(covered)
                .filter(|(_, c)| !c)
                .map(|(n, _)| n.as_str())
                .collect()
        }
        (gaps(&self.types, types), gaps(&self.regions, regions))
    }

    /// The device index of `id`, by linear search (for tests and small tools; the service keeps
    /// its own map).
    pub fn index_of(&self, id: &str) -> Option<u32> {
        self.ids.iter().position(|d| d == id).map(|i| i as u32)
    }
}
