//! The fleet simulator: the engine against N simulated devices in virtual time.
//!
//! The harness follows quinn-proto's test shape: deliver the earliest pending event (a device's
//! reply, an operator's command, or the engine's own timeout), drain every action, react to the
//! actions by scheduling replies, repeat. Time jumps straight to the next event, so hours of
//! soak take microseconds. It fails on livelock (too many steps without time moving) and on
//! runaway (virtual time past a bound).
//!
//! Devices are simulated, the engine is not: every decision in the run is the real engine's.
//! Each device's fate (good, fails to stage, crash loop, unhealthy, memory leak, offline for a
//! while or for good) is drawn once from the seed, so the same seed gives the same action log.
//! Like the engine, this module reads no clock; the CLI measures wall time around [`run`].

use super::engine::{
    Action, Command, DeploymentStatus, DeviceEvent, DirectiveKind, HealthReport, HealthStatus,
    Input, Rollout, RolloutError, SystemFigures, TargetStatus,
};
use super::plan::{Baseline, Plan, PlanError, Strategy, StrategyConfig, TargetFlags, TargetSpec};
use super::report::Report;
use super::rng::SplitMix64;
use super::{HOUR, MINUTE, Millis, SECOND};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// Why a simulation failed.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The plan was refused.
    #[error("plan: {0}")]
    Plan(#[from] PlanError),
    /// The engine refused an input the simulator sent.
    #[error("engine: {0}")]
    Engine(#[from] RolloutError),
    /// Too many steps without virtual time moving.
    #[error("livelock: {steps} steps at t={at}ms without time moving")]
    Livelock {
        /// Steps taken at the same instant.
        steps: u64,
        /// The instant.
        at: Millis,
    },
    /// Virtual time passed the bound.
    #[error("runaway: virtual time passed {0} ms without the deployment ending")]
    Runaway(Millis),
    /// A settings value is invalid.
    #[error("invalid simulator setting: {0}")]
    Config(String),
}

/// How the simulated operator answers approval requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approval {
    /// Approve one minute after the request.
    Auto,
    /// Never approve: the run stops at the first approval request.
    Manual,
}

/// Simulator settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Fleet size.
    pub devices: usize,
    /// Strategy settings (use [`StrategyConfig::defaults`]).
    pub strategy: StrategyConfig,
    /// Device type names; devices are spread over them.
    pub device_types: Vec<String>,
    /// Region names.
    pub regions: Vec<String>,
    /// Share of devices on which the new version fails (stage failure, crash loop, unhealthy
    /// or memory leak, in equal parts).
    pub fail_rate: f64,
    /// Share of devices that go offline (some before the start, some mid-deploy; 70 % return
    /// within three hours).
    pub offline_rate: f64,
    /// Seed for the fleet, the fates and the plan's wave shuffle.
    pub seed: u64,
    /// Approval policy.
    pub approval: Approval,
    /// How often the simulated operator resumes after a halt before rolling back.
    pub max_resumes: u32,
    /// Keep every action in [`SimOutcome::log`] (tests; memory grows with the fleet).
    pub record: bool,
    /// Make every device's error rate this much (absolute) worse after switching.
    pub bad_release_error: f64,
}

impl SimConfig {
    /// Defaults: 3 device types, 3 regions, no failures, no offline devices, seed 1.
    pub fn new(devices: usize, strategy: Strategy) -> Self {
        SimConfig {
            devices,
            strategy: StrategyConfig::defaults(strategy),
            device_types: vec!["rpi4".into(), "jetson-nano".into(), "gateway".into()],
            regions: vec!["eu-west".into(), "us-east".into(), "ap-south".into()],
            fail_rate: 0.0,
            offline_rate: 0.0,
            seed: 1,
            approval: Approval::Auto,
            max_resumes: 3,
            record: false,
            bad_release_error: 0.0,
        }
    }
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct SimOutcome {
    /// The final report.
    pub report: Report,
    /// The engine at the end (for state blocks and inspection).
    pub rollout: Rollout,
    /// Inputs from simulated devices delivered to the engine.
    pub device_events: u64,
    /// Actions drained from the engine.
    pub actions: u64,
    /// FNV-1a digest of the action log (same seed, same digest).
    pub action_digest: u64,
    /// Virtual time at the end.
    pub virtual_ms: Millis,
    /// Most devices deploying at once.
    pub max_in_flight: u32,
    /// Whether a failed canary ever let a later stage begin.
    pub stage_after_failed_canary: bool,
    /// The action log, when recording.
    pub log: Vec<(Millis, Action)>,
    /// Why the deployment halted, each time it did (at most `max_resumes + 1` entries).
    pub halts: Vec<String>,
}

// Device fates.
const GOOD: u8 = 0;
const FAIL_STAGE: u8 = 1;
const CRASH_LOOP: u8 = 2;
const UNHEALTHY: u8 = 3;
const MEM_LEAK: u8 = 4;
// Offline behaviour (second nibble).
const OFF_NONE: u8 = 0;
const OFF_BEFORE: u8 = 1 << 4;
const OFF_DURING: u8 = 2 << 4;
const OFF_FOREVER: u8 = 1 << 6;

// Event kinds in the heap.
const E_STAGED: u8 = 0;
const E_SWITCHED: u8 = 1;
const E_HEALTH: u8 = 2;
const E_FAILED: u8 = 3;
const E_ROLLED_BACK: u8 = 4;
const E_OFFLINE: u8 = 5;
const E_ONLINE: u8 = 6;
const E_APPROVE: u8 = 7;
const E_RESUME: u8 = 8;
const E_ROLLBACK: u8 = 9;

/// The longest a run may take in virtual time.
pub const MAX_VIRTUAL: Millis = 400 * 24 * HOUR;

#[derive(Debug)]
struct Fleet {
    fate: Vec<u8>,
    online: Vec<bool>,
    generation: Vec<u32>,
    health_seq: Vec<u8>,
    baselines: Vec<Baseline>,
    device_type: Vec<u16>,
    seed: u64,
    bad_release_error: f64,
}

fn mix(seed: u64, d: u64, salt: u64) -> u64 {
    let mut r =
        SplitMix64::new(seed ^ d.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt.rotate_left(17));
    r.next_u64()
}

fn unit(seed: u64, d: u64, salt: u64) -> f64 {
    (mix(seed, d, salt) >> 11) as f64 / (1u64 << 53) as f64
}

struct Digest(u64);

impl Digest {
    /// FNV-1a over whole 64-bit words (eight times fewer steps than bytes; the digest only
    /// has to be stable and sensitive, not standard).
    fn eat(&mut self, v: u64) {
        self.0 ^= v;
        self.0 = self.0.wrapping_mul(0x100_0000_01b3).rotate_left(29);
    }

    fn eat_str(&mut self, s: &str) {
        for b in s.bytes() {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x100_0000_01b3);
        }
    }

    fn action(&mut self, now: Millis, a: &Action) {
        self.eat(now);
        match a {
            Action::Directive {
                device,
                generation,
                kind,
                ..
            } => {
                self.eat(1);
                self.eat(u64::from(*device));
                self.eat(u64::from(*generation));
                self.eat(*kind as u64);
            }
            Action::Target { device, status } => {
                self.eat(2);
                self.eat(u64::from(*device));
                self.eat(*status as u64);
            }
            Action::Gate(v) => {
                self.eat(3);
                self.eat(u64::from(v.stage));
                self.eat(v.verdict as u64);
                self.eat_str(&v.reason);
            }
            Action::Deployment { status, reason } => {
                self.eat(4);
                self.eat(*status as u64);
                self.eat_str(reason);
            }
            Action::ApprovalRequired { stage } => {
                self.eat(5);
                self.eat(u64::from(*stage));
            }
            Action::Audit { at, event } => {
                self.eat(6);
                self.eat(*at);
                self.eat_str(event);
            }
        }
    }
}

/// Builds the simulated fleet's targets and baselines.
pub fn fleet_targets(cfg: &SimConfig) -> (Vec<TargetSpec>, HashMap<String, Baseline>) {
    let types = cfg.device_types.len().max(1) as u64;
    let regions = cfg.regions.len().max(1) as u64;
    let targets = (0..cfg.devices as u64)
        .map(|d| {
            let r = unit(cfg.seed, d, 11);
            TargetSpec {
                id: format!("dev-{d:07}"),
                device_type: cfg
                    .device_types
                    .get((mix(cfg.seed, d, 1) % types) as usize)
                    .cloned()
                    .unwrap_or_default(),
                region: cfg
                    .regions
                    .get((mix(cfg.seed, d, 2) % regions) as usize)
                    .cloned()
                    .unwrap_or_default(),
                flags: TargetFlags {
                    maintenance: r < 0.005,
                    flaky_24h: (0.005..0.015).contains(&r),
                    known_issues: (0.015..0.02).contains(&r),
                    ..TargetFlags::default()
                },
                monitoring: (mix(cfg.seed, d, 3) % 100) as u8,
            }
        })
        .collect();
    let baselines = cfg
        .device_types
        .iter()
        .enumerate()
        .map(|(i, t)| {
            (
                t.clone(),
                Baseline {
                    error_rate: 0.01 + 0.005 * i as f64,
                    p95_ms: 80.0 + 40.0 * i as f64,
                    memory_mb: 180.0 + 60.0 * i as f64,
                },
            )
        })
        .collect();
    (targets, baselines)
}

type Heap = BinaryHeap<Reverse<(Millis, u64, u32, u8)>>;

struct Sim {
    heap: Heap,
    seq: u64,
}

impl Sim {
    fn push(&mut self, at: Millis, device: u32, kind: u8) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, device, kind)));
    }
}

/// Runs a simulation to its end (or to a manual approval request).
pub fn run(cfg: &SimConfig) -> Result<SimOutcome, SimError> {
    prepare(cfg)?.run()
}

/// A fleet and an engine ready to run: the plan is compiled and every device's fate drawn.
/// Splitting this from [`Prepared::run`] lets the CLI time plan compilation apart from event
/// processing.
#[derive(Debug)]
pub struct Prepared {
    cfg: SimConfig,
    fleet: Fleet,
    rollout: Rollout,
}

/// Builds the fleet, compiles the plan and draws the fates.
pub fn prepare(cfg: &SimConfig) -> Result<Prepared, SimError> {
    if !(0.0..=1.0).contains(&cfg.fail_rate) || !(0.0..=1.0).contains(&cfg.offline_rate) {
        return Err(SimError::Config(
            "fail and offline rates must lie in [0, 1]".into(),
        ));
    }
    if cfg.device_types.is_empty() || cfg.regions.is_empty() {
        return Err(SimError::Config(
            "at least one device type and one region".into(),
        ));
    }
    let (targets, baselines) = fleet_targets(cfg);
    let plan = Plan::new(
        "flow-sim v2",
        cfg.strategy.clone(),
        targets,
        &baselines,
        cfg.seed,
    )?;
    let n = plan.len();
    let mut fleet = Fleet {
        fate: Vec::with_capacity(n),
        online: vec![true; n],
        generation: vec![0; n],
        health_seq: vec![0; n],
        baselines: plan.baselines.clone(),
        device_type: plan.device_type.clone(),
        seed: cfg.seed,
        bad_release_error: cfg.bad_release_error,
    };
    for d in 0..n as u64 {
        let f = unit(cfg.seed, d, 21);
        let mut fate = if f < cfg.fail_rate {
            [FAIL_STAGE, CRASH_LOOP, UNHEALTHY, MEM_LEAK][(mix(cfg.seed, d, 22) % 4) as usize]
        } else {
            GOOD
        };
        let o = unit(cfg.seed, d, 23);
        if o < cfg.offline_rate {
            fate |= if mix(cfg.seed, d, 24) % 2 == 0 {
                OFF_BEFORE
            } else {
                OFF_DURING
            };
            if unit(cfg.seed, d, 25) < 0.3 {
                fate |= OFF_FOREVER;
            }
        } else {
            fate |= OFF_NONE;
        }
        fleet.fate.push(fate);
    }
    Ok(Prepared {
        cfg: cfg.clone(),
        fleet,
        rollout: Rollout::new(plan, 0),
    })
}

impl Prepared {
    /// Runs `plan` instead of the one [`prepare`] compiled (a stored deployment's, say); it
    /// must name the simulated fleet's devices in the same order.
    pub fn with_plan(mut self, plan: Plan) -> Result<Self, SimError> {
        if plan.ids != self.rollout.plan().ids || plan.device_type != self.fleet.device_type {
            return Err(SimError::Config(
                "the plan's devices are not the simulated fleet's".into(),
            ));
        }
        self.fleet.baselines = plan.baselines.clone();
        self.rollout = Rollout::new(plan, 0);
        Ok(self)
    }

    /// Runs the simulation to its end (or to a manual approval request).
    pub fn run(self) -> Result<SimOutcome, SimError> {
        let Prepared {
            cfg,
            mut fleet,
            mut rollout,
        } = self;
        let cfg = &cfg;
        let n = rollout.plan().len();
        let st = run_inner(cfg, &mut fleet, &mut rollout, n)?;
        Ok(SimOutcome {
            report: Report::from_rollout(&rollout),
            rollout,
            device_events: st.device_events,
            actions: st.actions,
            action_digest: st.action_digest,
            virtual_ms: st.virtual_ms,
            max_in_flight: st.max_in_flight,
            stage_after_failed_canary: st.stage_after_failed_canary,
            log: st.log,
            halts: st.halts,
        })
    }
}

/// The counters of one run, before the outcome takes the engine.
struct RunStats {
    device_events: u64,
    actions: u64,
    action_digest: u64,
    virtual_ms: Millis,
    max_in_flight: u32,
    stage_after_failed_canary: bool,
    log: Vec<(Millis, Action)>,
    halts: Vec<String>,
}

fn run_inner(
    cfg: &SimConfig,
    fleet: &mut Fleet,
    rollout: &mut Rollout,
    n: usize,
) -> Result<RunStats, SimError> {
    let mut sim = Sim {
        heap: BinaryHeap::new(),
        seq: 0,
    };
    // The outcome is assembled at the end; `rollout` is moved into it, never cloned (a
    // million-device state is worth not copying).
    let mut device_events = 0u64;
    let mut actions = 0u64;
    let mut max_in_flight = 0u32;
    let mut stage_after_failed_canary = false;
    let mut log = Vec::new();
    let mut halts = Vec::new();
    let mut digest = Digest(0xcbf2_9ce4_8422_2325);
    // Devices offline before the start report so first.
    for d in 0..n as u32 {
        if fleet.fate[d as usize] & 0x30 == OFF_BEFORE {
            fleet.online[d as usize] = false;
            rollout.handle_input(
                0,
                Input::Device {
                    device: d,
                    event: DeviceEvent::Offline,
                },
            )?;
            device_events += 1;
            if fleet.fate[d as usize] & OFF_FOREVER == 0 {
                let back = 10 * MINUTE + (mix(cfg.seed, u64::from(d), 26) % (3 * HOUR));
                sim.push(back, d, E_ONLINE);
            }
        }
    }
    rollout.handle_input(0, Input::Command(Command::Start))?;
    let mut now: Millis = 0;
    let mut resumes = 0u32;
    let mut same_instant_steps = 0u64;
    let mut canary_failed = false;
    // The canary's stage: the first in canary strategies, after the staging in blue-green.
    let canary_stage = rollout
        .plan()
        .stages
        .iter()
        .position(|s| s.kind == super::StageKind::Canary)
        .map(|i| i as u32);
    let step_limit = 64 * n as u64 + 100_000;
    let mut stop = false;
    loop {
        // Drain and react.
        while let Some(a) = rollout.poll_action() {
            actions += 1;
            digest.action(now, &a);
            match &a {
                Action::Directive {
                    device,
                    generation,
                    kind,
                    ..
                } => {
                    // After a failed canary no other device is staged or switched (in
                    // blue-green everything was staged before the canary switched).
                    if canary_failed
                        && (*kind == DirectiveKind::Stage || *kind == DirectiveKind::Switch)
                        && !rollout.plan().canary.contains(device)
                    {
                        stage_after_failed_canary = true;
                    }
                    react(fleet, &mut sim, now, *device, *generation, *kind);
                }
                Action::ApprovalRequired { .. } => match cfg.approval {
                    Approval::Auto => sim.push(now + MINUTE, u32::MAX, E_APPROVE),
                    Approval::Manual => stop = true,
                },
                Action::Deployment { status, reason } if *status == DeploymentStatus::Paused => {
                    halts.push(reason.clone());
                    if resumes < cfg.max_resumes {
                        resumes += 1;
                        sim.push(now + 15 * MINUTE, u32::MAX, E_RESUME);
                    } else {
                        sim.push(now + 15 * MINUTE, u32::MAX, E_ROLLBACK);
                    }
                }
                Action::Gate(v)
                    if Some(v.stage) == canary_stage && v.verdict == super::Verdict::Fail =>
                {
                    canary_failed = true;
                }
                _ => {}
            }
            if cfg.record {
                log.push((now, a));
            }
        }
        if let Some(c) = canary_stage
            && rollout.current_stage() == c
            && rollout
                .stage_results()
                .get(c as usize)
                .is_some_and(|r| r.rolled_back)
        {
            canary_failed = true;
        }
        if canary_failed && canary_stage.is_some_and(|c| rollout.current_stage() > c) {
            stage_after_failed_canary = true;
        }
        max_in_flight = max_in_flight.max(rollout.in_flight());
        if stop || rollout.status().is_terminal() && rollout.poll_timeout().is_none() {
            break;
        }
        let next_event = sim.heap.peek().map(|Reverse((t, ..))| *t);
        let next_timer = rollout.poll_timeout();
        let next = match (next_event, next_timer) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => break,
        };
        if next > MAX_VIRTUAL {
            return Err(SimError::Runaway(MAX_VIRTUAL));
        }
        if next <= now {
            same_instant_steps += 1;
            if same_instant_steps > step_limit {
                return Err(SimError::Livelock {
                    steps: same_instant_steps,
                    at: now,
                });
            }
        } else {
            same_instant_steps = 0;
        }
        now = now.max(next);
        if next_event == Some(next) {
            let Some(Reverse((_, _, d, kind))) = sim.heap.pop() else {
                break;
            };
            let input = deliver(fleet, &mut sim, now, d, kind, rollout);
            if let Some(input) = input {
                if !matches!(input, Input::Command(_)) {
                    device_events += 1;
                }
                match rollout.handle_input(now, input) {
                    Ok(()) => {}
                    // A simulated operator may act on a state that just changed (a resume
                    // scheduled before a rollback finished); the engine's refusal is the answer.
                    Err(RolloutError::Command { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        } else {
            rollout.handle_input(now, Input::Tick)?;
        }
    }
    Ok(RunStats {
        device_events,
        actions,
        action_digest: digest.0,
        virtual_ms: now,
        max_in_flight,
        stage_after_failed_canary,
        log,
        halts,
    })
}

fn react(
    fleet: &mut Fleet,
    sim: &mut Sim,
    now: Millis,
    d: u32,
    generation: u32,
    kind: DirectiveKind,
) {
    let i = d as usize;
    fleet.generation[i] = fleet.generation[i].max(generation);
    if !fleet.online[i] {
        // An offline device does not hear the directive; the engine re-sends it on return.
        return;
    }
    let fate = fleet.fate[i];
    let jitter = |salt: u64, span: Millis| {
        mix(fleet.seed, u64::from(d) ^ u64::from(generation) << 32, salt) % span
    };
    match kind {
        DirectiveKind::Stage => {
            if fate & 0x0f == FAIL_STAGE {
                sim.push(now + 20 * SECOND + jitter(31, 20 * SECOND), d, E_FAILED);
            } else if fate & 0x30 == OFF_DURING && generation == 1 {
                sim.push(now + 10 * SECOND, d, E_OFFLINE);
            } else {
                sim.push(now + 10 * SECOND + jitter(32, 50 * SECOND), d, E_STAGED);
            }
        }
        DirectiveKind::Switch => {
            fleet.health_seq[i] = 0;
            sim.push(now + 5 * SECOND + jitter(33, 5 * SECOND), d, E_SWITCHED);
        }
        DirectiveKind::Rollback => sim.push(now + 5 * SECOND, d, E_ROLLED_BACK),
        DirectiveKind::Commit => {}
    }
}

/// Health reports a simulated device sends after its switch, 5 min apart.
const SIM_REPORTS: u8 = 12;

fn deliver(
    fleet: &mut Fleet,
    sim: &mut Sim,
    now: Millis,
    d: u32,
    kind: u8,
    rollout: &Rollout,
) -> Option<Input> {
    let i = d as usize;
    let dev = |event| Some(Input::Device { device: d, event });
    match kind {
        E_APPROVE => return Some(Input::Command(Command::Approve)),
        E_RESUME => return Some(Input::Command(Command::Resume)),
        E_ROLLBACK => return Some(Input::Command(Command::Rollback)),
        _ => {}
    }
    if !fleet.online[i] && kind != E_ONLINE {
        // An offline device's reporting resumes when it is back.
        if kind == E_HEALTH && !rollout.status().is_terminal() && fleet.health_seq[i] < SIM_REPORTS
        {
            fleet.health_seq[i] += 1;
            sim.push(now + 5 * MINUTE, d, E_HEALTH);
        }
        return None;
    }
    match kind {
        E_STAGED => dev(DeviceEvent::Staged),
        E_FAILED => dev(DeviceEvent::Failed),
        E_ROLLED_BACK => dev(DeviceEvent::RolledBack),
        E_SWITCHED => {
            sim.push(now + 30 * SECOND, d, E_HEALTH);
            dev(DeviceEvent::Switched)
        }
        E_OFFLINE => {
            fleet.online[i] = false;
            if fleet.fate[i] & OFF_FOREVER == 0 {
                sim.push(
                    now + 10 * MINUTE + mix(fleet.seed, u64::from(d), 27) % (2 * HOUR),
                    d,
                    E_ONLINE,
                );
            }
            dev(DeviceEvent::Offline)
        }
        E_ONLINE => {
            fleet.online[i] = true;
            // It will not go offline again.
            fleet.fate[i] &= 0x0f;
            dev(DeviceEvent::Online)
        }
        E_HEALTH => {
            // Reports only while the device runs the new version.
            let status = rollout.target_status(d);
            if matches!(
                status,
                Some(
                    TargetStatus::RolledBack
                        | TargetStatus::Quarantined
                        | TargetStatus::Failed
                        | TargetStatus::Skipped
                )
            ) {
                return None;
            }
            let seq = fleet.health_seq[i];
            fleet.health_seq[i] = seq.saturating_add(1);
            let b = fleet.baselines[fleet.device_type[i] as usize];
            let noise = |salt| unit(fleet.seed, u64::from(d), salt) * 2.0 - 1.0;
            let fate = fleet.fate[i] & 0x0f;
            let mut report = HealthReport {
                status: HealthStatus::Healthy,
                error_rate: (b.error_rate + fleet.bad_release_error + 0.0005 * noise(41)).max(0.0)
                    as f32,
                p95_ms: (b.p95_ms * (1.0 + 0.05 * noise(42))) as f32,
                memory_mb: (b.memory_mb * (1.0 + 0.05 * noise(43))) as f32,
                restarts: 0,
                system: SystemFigures::default(),
            };
            let next = match fate {
                CRASH_LOOP => {
                    report.restarts = u32::from(seq) + 1;
                    report.status = HealthStatus::Degraded;
                    Some(now + MINUTE)
                }
                UNHEALTHY => {
                    report.status = HealthStatus::Unhealthy;
                    report.error_rate = 0.3;
                    None
                }
                MEM_LEAK => {
                    report.memory_mb *= 1.0 + 0.04 * f32::from(seq);
                    Some(now + 5 * MINUTE)
                }
                _ => Some(now + 5 * MINUTE),
            };
            // Devices keep reporting while they run the new version, as floed does: the
            // gates judge the reports received in their windows. Each reports for an hour
            // after its switch (12 reports: its own stage's soak, gate and CAUTION
            // extensions, and the completion gate's 30 min window), which bounds a run's
            // events by 12 per device whatever the virtual time; crash-looping devices report
            // three times (they are rolled back by then).
            if (seq < 2 || (fate != CRASH_LOOP && seq < SIM_REPORTS))
                && !rollout.status().is_terminal()
                && let Some(t) = next
            {
                sim.push(t, d, E_HEALTH);
            }
            Some(Input::Health { device: d, report })
        }
        _ => None,
    }
}
