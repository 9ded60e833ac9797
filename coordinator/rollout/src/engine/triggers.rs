//! Triggers that fire from the devices' system figures (001 "Automatic Rollback Triggers",
//! 003's), beside the flow-level ones in `events` (crash loop, memory leak, unhealthy, health
//! unreachable) and `health` (error-rate spike, latency spike, gradual degradation). The
//! limits, windows, scopes and actions are in [`TriggerConfig`](crate::plan::TriggerConfig)'s
//! documentation; in short:
//!
//! - per report of a deployed device: `functional_check` (rolls the device back),
//!   `memory_high` (rolls the current wave back), `thermal_escalation` and `disk_anomaly`
//!   (halt and assess, naming the affected devices);
//! - per health-check tick: `health_unreachable_share` (rolls the current wave back);
//! - per gate: on the canary gate `thermal_throttling` and `disk_anomaly` (001's soak: "no
//!   thermal throttling events", "no disk space consumption anomalies"). CPU (001 canary:
//!   "CPU utilization is within expected bounds") is a check of every gate, judged from the
//!   gate's window against [`cpu_limit`] for groups whose baseline has CPU figures; without
//!   one it is shown as not judged: there is no "expected" then, and a busy host (a CI runner
//!   at 100 % while it compiles) would fail healthy versions.
//!
//! Without auto-rollback every "roll back" above halts instead. The state kept per device
//! (trend anchors, the last CPU figure) lives here, only for deployed devices that sent
//! figures, and is dropped when a device stops running the new version.

use super::*;
use crate::plan::TriggerConfig;
use std::collections::{BTreeMap, BTreeSet};

/// Devices named in a halt reason at most (the rest are counted).
const NAMED: usize = 10;

/// A trend anchor: a value and when it was reported, in whole seconds of engine time (u32:
/// 136 years of Unix seconds), so the per-device record stays at 36 bytes.
type Anchor = Option<(f32, u32)>;

/// Engine time in whole seconds, saturated to the anchor's width.
fn secs(now: Millis) -> u32 {
    u32::try_from(now / 1000).unwrap_or(u32::MAX)
}

/// What is kept per deployed device that reports system figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct SigDev {
    /// Temperature anchor, °C.
    temp0: Anchor,
    /// Free-disk anchor, MB.
    free0: Anchor,
}

/// The triggers' state: per-device anchors, the devices each halt-and-assess trigger currently
/// finds affected, and the throttled devices. (CPU is judged by the gates from their windows,
/// `health::evaluate`, against [`cpu_limit`].)
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Signals {
    devs: BTreeMap<u32, SigDev>,
    thermal: BTreeSet<u32>,
    disk: BTreeSet<u32>,
    throttled: BTreeSet<u32>,
}

impl Signals {
    /// Whether nothing is kept (the persisted layout then leaves it out).
    pub(super) fn is_empty_ref(s: &&Signals) -> bool {
        **s == Signals::default()
    }

    /// Forgets `d` (it no longer runs the new version).
    pub(super) fn forget(&mut self, d: u32) {
        self.devs.remove(&d);
        self.thermal.remove(&d);
        self.disk.remove(&d);
        self.throttled.remove(&d);
    }
}

/// The highest mean CPU a gate allows (001 canary: "CPU utilization is within expected
/// bounds"): the group's baseline plus `cpu_over_baseline_points`, never above
/// `cpu_max_percent`; without a baseline, `cpu_max_percent`.
pub fn cpu_limit(baseline_percent: Option<f64>, cfg: &TriggerConfig) -> f64 {
    match baseline_percent {
        Some(b) if b.is_finite() => (b + cfg.cpu_over_baseline_points).min(cfg.cpu_max_percent),
        _ => cfg.cpu_max_percent,
    }
}

/// The `cpu[group]` check of a gate: the group's mean CPU against [`cpu_limit`].
pub fn cpu_check(
    group: &str,
    mean_percent: f64,
    baseline_percent: Option<f64>,
    cfg: &TriggerConfig,
) -> Check {
    let limit = cpu_limit(baseline_percent, cfg);
    let pass = mean_percent <= limit;
    Check {
        name: format!("cpu[{group}]"),
        value: mean_percent,
        limit,
        pass,
        outcome: Some(if pass {
            CheckOutcome::Pass
        } else {
            CheckOutcome::Fail
        }),
    }
}

/// Moves `anchor` forward and measures against it: returns (value − anchor value, span) when
/// there was an anchor. The anchor is set by the first value and moves to the newest once it
/// is `window` old, so a trend is judged over at most the last window.
fn trend(anchor: &mut Anchor, value: f32, now: Millis, window: Millis) -> Option<(f64, Millis)> {
    let Some((v0, at)) = *anchor else {
        *anchor = Some((value, secs(now)));
        return None;
    };
    let span = (now / 1000).saturating_sub(u64::from(at)) * 1000;
    if span >= window {
        *anchor = Some((value, secs(now)));
    }
    Some((f64::from(value) - f64::from(v0), span))
}

/// `thermal_escalation` for one temperature: why it fires, if it does.
fn thermal(cfg: &TriggerConfig, sig: &mut SigDev, t: f32, now: Millis) -> Option<String> {
    let measured = trend(&mut sig.temp0, t, now, cfg.trend_window);
    let t = f64::from(t);
    if t >= cfg.thermal_limit_c {
        return Some(format!("{t:.1} C >= limit {:.1} C", cfg.thermal_limit_c));
    }
    let (rise, span) = measured?;
    if t < cfg.thermal_limit_c - cfg.thermal_margin_c || span < cfg.thermal_min_span || rise <= 0.0
    {
        return None;
    }
    let per_ms = rise / span as f64;
    let eta = (cfg.thermal_limit_c - t) / per_ms;
    (eta <= cfg.thermal_horizon as f64).then(|| {
        format!(
            "{t:.1} C rising {:.2} C/min, reaches {:.1} C in about {:.0} min",
            per_ms * MINUTE as f64,
            cfg.thermal_limit_c,
            eta / MINUTE as f64
        )
    })
}

/// `disk_anomaly` for one device's disk figures: why it fires, if it does.
fn disk(
    cfg: &TriggerConfig,
    sig: &mut SigDev,
    free_mb: Option<f32>,
    used_percent: Option<f32>,
    now: Millis,
) -> Option<String> {
    if let Some(u) = used_percent
        && f64::from(u) >= cfg.disk_used_max_percent
    {
        return Some(format!(
            "disk {u:.1}% used >= {:.1}%",
            cfg.disk_used_max_percent
        ));
    }
    let free = free_mb?;
    let measured = trend(&mut sig.free0, free, now, cfg.trend_window);
    let free = f64::from(free);
    if free < cfg.disk_free_floor_mb {
        return Some(format!(
            "{free:.0} MB free < floor {:.0} MB",
            cfg.disk_free_floor_mb
        ));
    }
    let (change, span) = measured?;
    let fall = -change;
    if span < cfg.disk_min_span || fall < cfg.disk_fall_min_mb {
        return None;
    }
    let per_ms = fall / span as f64;
    let eta = free / per_ms;
    (eta <= cfg.disk_exhaust_horizon as f64).then(|| {
        format!(
            "free space falling {:.1} MB/min, {free:.0} MB left, empty in about {:.0} min",
            per_ms * MINUTE as f64,
            eta / MINUTE as f64
        )
    })
}

impl Rollout {
    /// The system-figure triggers for `d`'s report (called from `on_health` once the
    /// flow-level triggers passed). Returns whether the report was answered with a rollback,
    /// so it is not counted as a healthy report.
    pub(super) fn system_triggers(&mut self, d: u32, s: &SystemFigures) -> bool {
        if *s == SystemFigures::default() && !self.signals.devs.contains_key(&d) {
            return false;
        }
        if s.functional_ok == Some(false) {
            self.device_rollback(d, RollbackCause::FunctionalCheck);
            return true;
        }
        let now = self.now;
        let cfg = &self.plan.config.triggers;
        let sig = self.signals.devs.entry(d).or_default();
        let hot = s.temperature_c.and_then(|t| thermal(cfg, sig, t, now));
        let full = disk(cfg, sig, s.disk_free_mb, s.disk_used_percent, now);
        let memory = s
            .memory_used_percent
            .filter(|m| f64::from(*m) > cfg.memory_high_percent)
            .map(|m| (m, cfg.memory_high_percent));
        if s.throttled == Some(true) {
            self.signals.throttled.insert(d);
        } else {
            self.signals.throttled.remove(&d);
        }
        let id = &self.plan.ids[d as usize];
        if let Some((m, limit)) = memory {
            let reason = format!(
                "memory_high: device {id} memory in use {m:.1}% > {limit:.0}% (003: roll back \
                 the current wave)"
            );
            return self.wave_trigger(reason);
        }
        let mut halt = None;
        for (set, why, name) in [
            (&mut self.signals.thermal, hot, "thermal_escalation"),
            (&mut self.signals.disk, full, "disk_anomaly"),
        ] {
            match why {
                Some(why) => {
                    set.insert(d);
                    if halt.is_none() {
                        halt = Some(named(name, set, &self.plan.ids, id, &why));
                    }
                }
                None => {
                    set.remove(&d);
                }
            }
        }
        if let Some(reason) = halt {
            self.halt(reason);
        }
        false
    }

    /// A trigger whose scope is the current wave: the wave is rolled back (halted without
    /// auto-rollback). Only while running and not already rolling back. Returns whether it
    /// acted.
    fn wave_trigger(&mut self, reason: String) -> bool {
        if self.machine.status != DeploymentStatus::Running || self.sweeps.rollback.is_some() {
            return false;
        }
        if self.plan.config.auto_rollback {
            self.start_rollback(Scope::Stage(self.machine.stage), reason);
        } else {
            self.halt(reason);
        }
        true
    }

    /// Fleet-wide system triggers on a health-check tick: `health_unreachable_share` (003:
    /// health endpoint unreachable on > 10 % of the wave's devices). Returns whether it acted.
    pub(super) fn fleet_system_triggers(&mut self) -> bool {
        let s = self.machine.stage;
        let Some(spec) = self.plan.stages.get(s as usize) else {
            return false;
        };
        let size = spec.len();
        if size == 0 {
            return false;
        }
        let confirm = self.plan.config.triggers.unreachable_confirm;
        let now = self.now;
        let unreachable = self.plan.order[spec.start as usize..spec.end as usize]
            .iter()
            .filter(|&&d| {
                let dev = &self.devs[d as usize];
                dev.stage == s
                    && dev.phase.active()
                    && dev.flags & F_UNREACHABLE != 0
                    && now.saturating_sub(dev.unreachable_since) >= confirm
            })
            .count();
        let share = unreachable as f64 * 100.0 / f64::from(size);
        let limit = self.plan.config.triggers.unreachable_wave_percent;
        if unreachable == 0 || share <= limit {
            return false;
        }
        let reason = format!(
            "health_unreachable_share: {unreachable} of {size} devices of {} ({share:.1}%) have \
             had an unreachable health endpoint for {} s or more, > {limit:.0}% (003: roll back \
             the current wave)",
            spec.name,
            confirm / 1000
        );
        self.wave_trigger(reason)
    }

    /// The gate checks from system figures, appended to `v` (a passing verdict with a failing
    /// check fails): on the canary gate, `thermal_throttling` and `disk_anomaly` over all
    /// deployed devices.
    pub(super) fn system_checks(&self, v: &mut GateVerdict) {
        if v.verdict == Verdict::Wait
            || v.gate != GateKind::Canary
            || !self.plan.config.health_check
        {
            return;
        }
        let mut checks = Vec::new();
        for (name, set) in [
            ("thermal_throttling", &self.signals.throttled),
            ("disk_anomaly", &self.signals.disk),
        ] {
            checks.push(Check {
                name: name.into(),
                value: set.len() as f64,
                limit: 0.0,
                pass: set.is_empty(),
                outcome: Some(if set.is_empty() {
                    CheckOutcome::Pass
                } else {
                    CheckOutcome::Fail
                }),
            });
        }
        let failing: Vec<String> = checks
            .iter()
            .filter(|c| !c.pass)
            .map(|c| c.name.clone())
            .collect();
        v.checks.extend(checks);
        if failing.is_empty() {
            return;
        }
        if v.verdict == Verdict::Fail {
            v.reason = format!("{}, {}", v.reason, failing.join(", "));
        } else {
            // A failing check fails the gate whatever else was pending (a CAUTION too).
            v.verdict = Verdict::Fail;
            v.reason = format!("failing: {}", failing.join(", "));
        }
    }
}

/// A halt-and-assess reason naming the affected devices (`set`, at most [`NAMED`] of them),
/// with why the newest one (`id`) fires.
fn named(trigger: &str, set: &BTreeSet<u32>, ids: &[String], id: &str, why: &str) -> String {
    let others: Vec<&str> = set
        .iter()
        .map(|&d| ids[d as usize].as_str())
        .filter(|o| *o != id)
        .take(NAMED - 1)
        .collect();
    let mut text = format!("{trigger} on {} device(s): {id} ({why})", set.len().max(1));
    if !others.is_empty() {
        text.push_str(&format!(", {}", others.join(", ")));
    }
    let named = others.len() + 1;
    if set.len() > named {
        text.push_str(&format!(" and {} more", set.len() - named));
    }
    text.push_str("; halt and assess");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One is kept per deployed device that sends figures: a million of them must stay small.
    #[test]
    fn the_per_device_record_stays_small() {
        assert!(
            std::mem::size_of::<SigDev>() <= 36,
            "{}",
            std::mem::size_of::<SigDev>()
        );
    }

    #[test]
    fn a_trend_moves_its_anchor_once_it_is_a_window_old() {
        let mut a: Anchor = None;
        assert_eq!(trend(&mut a, 10.0, 60_000, 30 * MINUTE), None);
        assert_eq!(
            trend(&mut a, 12.0, 60_000 + 10 * MINUTE, 30 * MINUTE),
            Some((2.0, 10 * MINUTE))
        );
        assert_eq!(
            trend(&mut a, 16.0, 60_000 + 30 * MINUTE, 30 * MINUTE),
            Some((6.0, 30 * MINUTE))
        );
        // The anchor is now the 16.0 of minute 31.
        assert_eq!(
            trend(&mut a, 17.0, 60_000 + 35 * MINUTE, 30 * MINUTE),
            Some((1.0, 5 * MINUTE))
        );
    }
}
