//! Health aggregation: per-group running aggregates of the active devices' reports (kept
//! incrementally, so a gate costs time in the number of groups, not devices), the fleet-wide
//! threshold and trend triggers, and gate evaluation.

use super::gate_record::{CheckOutcome, GateSummary};
use super::window::{F_DEGRADED, GateState};
use super::window::{FIXED, fixed};
use super::*;
use crate::gates::NoBaseline;

/// Running sums over the reporting, active devices of one device group, in fixed point
/// (see [`fixed`]) so adding and removing a device's report is exact: floating-point sums
/// would drift with the order of updates and break "same state, same future" after a restore.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct GroupAgg {
    pub(super) n: u64,
    pub(super) error_rate: u128,
    pub(super) p95_ms: u128,
    pub(super) memory_mb: u128,
}

/// A device group's index and its mean error rate, p95 and memory.
pub(super) type GroupMeans = (usize, f64, f64, f64);

/// What a fleet-wide trigger asks for.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Trigger {
    /// Roll every device back (001 `error_rate_spike` with auto-rollback on).
    RollbackAll(String),
    /// Halt for a human to assess.
    Halt(String),
}

/// Upper bounds of accepted metrics: an error rate is a fraction; a day of latency and a
/// petabyte of memory are beyond any device.
const METRIC_LIMITS: [f32; 3] = [1.0, 86_400_000.0, 1e9];

/// Refuses a health report whose metrics are not finite numbers in their range: one bad
/// report would otherwise poison its group's running sums.
pub(super) fn check_report(device: u32, report: &HealthReport) -> Result<(), RolloutError> {
    for ((field, value), limit) in [
        ("error_rate", report.error_rate),
        ("p95_ms", report.p95_ms),
        ("memory_mb", report.memory_mb),
    ]
    .into_iter()
    .zip(METRIC_LIMITS)
    {
        if !value.is_finite() || !(0.0..=limit).contains(&value) {
            return Err(RolloutError::Metric {
                device,
                field,
                value,
            });
        }
    }
    Ok(())
}

/// Health aggregation: the per-group aggregates of active, reporting devices, the counts the
/// gates read (active devices, devices with a memory-trend warning), recent restarts for the
/// crash-count check, the error-rate trend, and the deltas measured at the last gate.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Health {
    pub(super) groups: Vec<GroupAgg>,
    pub(super) restarts_recent: VecDeque<(u32, Millis)>,
    pub(super) trend_last: Option<f64>,
    pub(super) trend_rises: u8,
    pub(super) active: u64,
    pub(super) mem_warn: u64,
    pub(super) health_delta: Option<[f64; 3]>,
    /// The gates' windows, baselines and bookkeeping.
    pub(super) gates: GateState,
}

impl Health {
    /// Takes `dev`'s last report out of its group's aggregate, if it is in (`group`: its
    /// type and its judging group).
    pub(super) fn remove(&mut self, (group, judge): (usize, usize), dev: &mut Dev) {
        if dev.flags & F_REPORTED != 0 {
            dev.flags &= !F_REPORTED;
            self.gates.reporting_changed(judge, false);
            if dev.flags & F_DEGRADED != 0 {
                self.gates.degraded -= 1;
            }
            let g = &mut self.groups[group];
            g.n -= 1;
            g.error_rate -= fixed(dev.error_rate);
            g.p95_ms -= fixed(dev.p95_ms);
            g.memory_mb -= fixed(dev.memory_mb);
        }
    }

    /// Puts `dev`'s last report into its group's aggregate.
    pub(super) fn add(&mut self, (group, judge): (usize, usize), dev: &mut Dev) {
        dev.flags |= F_REPORTED;
        self.gates.reporting_changed(judge, true);
        if dev.flags & F_DEGRADED != 0 {
            self.gates.degraded += 1;
        }
        let g = &mut self.groups[group];
        g.n += 1;
        g.error_rate += fixed(dev.error_rate);
        g.p95_ms += fixed(dev.p95_ms);
        g.memory_mb += fixed(dev.memory_mb);
    }

    /// Per-group mean metrics over reporting active devices, and the fleet's mean deltas.
    pub(super) fn aggregates(&self, plan: &Plan) -> (Vec<GroupMeans>, Option<[f64; 3]>) {
        let mut out = Vec::new();
        let mut n = 0.0;
        let mut sum = [0.0f64; 3];
        for (i, g) in self.groups.iter().enumerate() {
            if g.n == 0 {
                continue;
            }
            let k = g.n as f64;
            let mean = |sum: u128| sum as f64 / FIXED / k;
            let (e, p, m) = (mean(g.error_rate), mean(g.p95_ms), mean(g.memory_mb));
            out.push((i, e, p, m));
            let b = &plan.baselines[i];
            sum[0] += (e - b.error_rate) * k;
            sum[1] += if b.p95_ms > 0.0 {
                (p / b.p95_ms - 1.0) * k
            } else {
                0.0
            };
            sum[2] += if b.memory_mb > 0.0 {
                (m / b.memory_mb - 1.0) * k
            } else {
                0.0
            };
            n += k;
        }
        let delta = (n > 0.0).then(|| [sum[0] / n, sum[1] / n, sum[2] / n]);
        (out, delta)
    }

    /// 001 threshold and trend triggers over all deployed devices, each health-check tick.
    pub(super) fn fleet_triggers(&mut self, plan: &Plan, trend: bool) -> Option<Trigger> {
        if !plan.config.health_check {
            return None;
        }
        let (groups, delta) = self.aggregates(plan);
        for (i, e, p, _) in &groups {
            let b = plan.baselines[*i];
            if *e > b.error_rate + ERROR_SPIKE {
                let reason = format!(
                    "error_rate_spike: {} error rate {:.2}% > baseline {:.2}% + 10%",
                    plan.types[*i],
                    e * 100.0,
                    b.error_rate * 100.0
                );
                return Some(if plan.config.auto_rollback {
                    Trigger::RollbackAll(reason)
                } else {
                    Trigger::Halt(reason)
                });
            }
            if b.p95_ms > 0.0 && *p > latency_limit(b.p95_ms, LATENCY_SPIKE) {
                let reason = format!(
                    "latency_spike: {} p95 {:.0} ms > 2 x baseline {:.0} ms; halt and assess",
                    plan.types[*i], p, b.p95_ms
                );
                return Some(Trigger::Halt(reason));
            }
        }
        if let Some([e, _, _]) = delta
            && trend
        {
            if let Some(last) = self.trend_last {
                if e > last + plan.config.trend_min_step {
                    self.trend_rises += 1;
                } else {
                    self.trend_rises = 0;
                }
            }
            self.trend_last = Some(e);
            if self.trend_rises >= TREND_CHECKS {
                self.trend_rises = 0;
                return Some(Trigger::Halt(format!(
                    "gradual_degradation: error rate rose {TREND_CHECKS} checks in a row to {:+.2}% over \
                     baseline; halt and assess",
                    e * 100.0
                )));
            }
        }
        None
    }

    /// Evaluates `gate`, closing `stage`, over ALL devices deployed so far and the reports
    /// received in the gate's windows (001 "Health Gate Criteria"): per judging group the
    /// error rate and P95 latency against the group's baseline (or the absolute limits when
    /// it has none), each needing `gate_min_samples` reports in its window; memory trend and
    /// application health (canary), device health and "no new failed devices" (waves,
    /// completion), crash count, fleet coverage (completion); P50/P95/P99 latency and the
    /// healthy / degraded / failed counts in the summary. A check it cannot compute makes it
    /// wait; a check degrading within its limit makes it CAUTION.
    pub(super) fn evaluate(
        &mut self,
        plan: &Plan,
        devs: &[Dev],
        (stage, gate): (u32, GateKind),
        now: Millis,
        stages: &[StageResult],
    ) -> GateVerdict {
        let verdict = |verdict, checks, reason, summary| GateVerdict {
            stage,
            gate,
            verdict,
            checks,
            reason,
            summary,
        };
        // With health checks off (000 allows it) gates only wait for devices to settle.
        if gate == GateKind::Staged || !plan.config.health_check {
            return verdict(Verdict::Pass, Vec::new(), "devices settled".into(), None);
        }
        let failed: u64 = stages.iter().map(|s| u64::from(s.failed)).sum();
        let judged = self.active;
        let reported: u64 = self.groups.iter().map(|g| g.n).sum();
        let need = ((judged as f64) * plan.config.quorum_percent / 100.0).ceil() as u64;
        if judged == 0 || reported < need {
            let reason = format!(
                "quorum: {reported} of {judged} deployed devices reported, {need} needed ({}%)",
                plan.config.quorum_percent
            );
            return verdict(Verdict::Wait, Vec::new(), reason, None);
        }
        let (_, delta) = self.aggregates(plan);
        self.health_delta = delta;
        let cfg = &plan.config.gates;
        let w = GateWindows::of(gate);
        let absolute = cfg.no_baseline == NoBaseline::Absolute;
        let mut checks = Vec::new();
        let mut samples = 0u64;
        let mut no_baseline = Vec::new();
        let mut cpu_seen = false;
        // (Σ (window CPU − baseline CPU) × reports, Σ reports) over groups with both.
        let mut cpu_delta = (0.0f64, 0u64);
        for (g, judge) in self.gates.judges.iter().enumerate() {
            let series = &self.gates.series[g];
            let win = series.sum(now, w.error);
            // A group with reporting devices but nothing in the window is judged too (and
            // cannot be computed); a group with neither has nothing deployed.
            let reporting = self.gates.reporting.get(g).copied().unwrap_or(0);
            if win.n == 0 && reporting == 0 {
                continue;
            }
            samples += win.n;
            let name = &judge.name;
            if judge.baseline.is_none() {
                no_baseline.push(name.clone());
            }
            let base = judge.baseline;
            let (e_lim, p_lim) = match base {
                Some((e, p, _)) => (e + w.err_add, latency_limit(p, w.p95_mul)),
                None => (cfg.abs_error_rate, cfg.abs_p95_ms),
            };
            let suffix = if base.is_none() { " (absolute)" } else { "" };
            let (early, late) = series.halves(now, w.error);
            let enough = win.n >= cfg.gate_min_samples;
            let (e, p, m) = win.means().unwrap_or((0.0, 0.0, 0.0));
            checks.push(if !enough {
                not_computable(format!("error_rate[{name}]"), win.n, cfg.gate_min_samples)
            } else {
                let degrading = match (early.means(), late.means()) {
                    (Some(a), Some(b)) => b.0 - a.0 > plan.config.trend_min_step,
                    _ => false,
                };
                judged_check(format!("error_rate[{name}]{suffix}"), e, e_lim, degrading)
            });
            if let Some(lat_window) = w.latency {
                let lw = series.sum(now, lat_window);
                checks.push(if lw.n < cfg.gate_min_samples {
                    not_computable(format!("latency_p95[{name}]"), lw.n, cfg.gate_min_samples)
                } else {
                    let (early, late) = series.halves(now, lat_window);
                    let degrading = match (early.means(), late.means()) {
                        (Some(a), Some(b)) => b.1 > a.1 * 1.1 && b.1 - a.1 > LATENCY_SLACK_MS,
                        _ => false,
                    };
                    let p = lw.means().map_or(p, |x| x.1);
                    judged_check(format!("latency_p95[{name}]{suffix}"), p, p_lim, degrading)
                });
            }
            if base.is_none() && absolute {
                checks.push(if enough {
                    judged_check(
                        format!("memory[{name}] (absolute)"),
                        m,
                        cfg.abs_memory_mb,
                        false,
                    )
                } else {
                    not_computable(format!("memory[{name}]"), win.n, cfg.gate_min_samples)
                });
            }
            // A trend per 10 minutes needs 10 minutes of reports; a soak the operator set
            // shorter than that cannot give them, and the check says so without blocking.
            let short_soak = plan
                .stages
                .get(stage as usize)
                .is_some_and(|s| s.soak < MEMORY_TREND_SPAN);
            if w.memory_trend.is_some() && short_soak {
                checks.push(Check {
                    name: format!("memory_trend[{name}] (soak under 10 min)"),
                    value: 0.0,
                    limit: MEMORY_TREND_PER_10M,
                    pass: true,
                    outcome: Some(CheckOutcome::NotMeasured),
                });
            } else if let Some(mem_window) = w.memory_trend {
                let reference = base.map_or(0.0, |b| b.2);
                checks.push(match series.memory_growth(now, mem_window, reference) {
                    None => Check {
                        name: format!("memory_trend[{name}]"),
                        value: 0.0,
                        limit: MEMORY_TREND_PER_10M,
                        pass: false,
                        outcome: Some(CheckOutcome::NotComputable),
                    },
                    // 001: "growth < 1 % per 10 minutes"; more is a degradation trend.
                    Some(growth) => Check {
                        name: format!("memory_trend[{name}]"),
                        value: growth,
                        limit: MEMORY_TREND_PER_10M,
                        pass: growth < MEMORY_TREND_PER_10M,
                        outcome: Some(if growth < MEMORY_TREND_PER_10M {
                            CheckOutcome::Pass
                        } else {
                            CheckOutcome::Caution
                        }),
                    },
                });
            }
            if let Some(cpu) = win.cpu_mean() {
                cpu_seen = true;
                // 001 "CPU utilization is within expected bounds": the group's baseline mean
                // plus `cpu_over_baseline_points`, never above `cpu_max_percent`. Without a
                // CPU baseline nothing says what is expected (and a busy host is no failing
                // version): shown, not judged.
                checks.push(match judge.cpu {
                    Some((mean, _)) => {
                        cpu_delta.0 += (cpu - mean) * win.cpu_n as f64;
                        cpu_delta.1 += win.cpu_n;
                        super::triggers::cpu_check(name, cpu, Some(mean), &plan.config.triggers)
                    }
                    None => Check {
                        name: format!("cpu[{name}]"),
                        value: cpu,
                        limit: super::triggers::cpu_limit(None, &plan.config.triggers),
                        pass: true,
                        outcome: Some(CheckOutcome::NotMeasured),
                    },
                });
            }
        }
        self.gates.cpu_delta = (cpu_delta.1 > 0).then(|| cpu_delta.0 / cpu_delta.1 as f64);
        if w.cpu && !cpu_seen {
            checks.push(Check {
                name: "cpu".into(),
                value: 0.0,
                limit: 0.0,
                pass: true,
                outcome: Some(CheckOutcome::NotMeasured),
            });
        }
        let healthy = reported.saturating_sub(self.gates.degraded);
        // The healthy share is over the devices there is news from: reporting devices and
        // failures so far. Offline devices are not failures; the quorum covers silence.
        let healthy_share = healthy as f64 / (reported + failed).max(1) as f64;
        // 001 inter-wave: "no new failed devices since last check" among the devices of the
        // stages that passed their gates (canary and completed waves): their failures now,
        // against their failures when the last gate decided.
        let prior: u64 = stages
            .iter()
            .enumerate()
            .filter(|(s, r)| r.verdict == Some(Verdict::Pass) && (*s as u32) != stage)
            .map(|(_, r)| u64::from(r.failed))
            .sum();
        let new_failed = prior.saturating_sub(self.gates.checked_failed);
        match gate {
            // 001 "all_healthy": every canary device. One that has not sent its metrics yet
            // (past the quorum) is not unhealthy: the check cannot be computed and the gate
            // waits for it, up to the stage's deadline; a failed or degraded one fails it.
            GateKind::Canary if failed == 0 && self.gates.degraded == 0 && reported < judged => {
                checks.push(not_computable(
                    "application_health".into(),
                    reported,
                    judged,
                ));
            }
            GateKind::Canary => checks.push(
                judged_check("application_health".into(), healthy_share, 1.0, false)
                    .with_pass(failed == 0 && healthy == judged),
            ),
            GateKind::Wave => checks.push(floor_check("device_health", healthy_share, 0.95)),
            GateKind::Completion | GateKind::Staged => {
                let coverage = self.active as f64 / plan.len() as f64;
                checks.push(floor_check("fleet_coverage", coverage, 0.95));
                checks.push(floor_check("device_health", healthy_share, 0.98));
            }
        }
        if gate != GateKind::Canary {
            checks.push(judged_check(
                "new_failed_devices".into(),
                new_failed as f64,
                0.0,
                false,
            ));
        }
        if let Some(crash_window) = w.crash {
            while self
                .restarts_recent
                .front()
                .is_some_and(|(_, t)| *t + crash_window < now)
            {
                self.restarts_recent.pop_front();
            }
            let crashes = self
                .restarts_recent
                .iter()
                .filter(|(d, _)| devs[*d as usize].phase.active())
                .count();
            checks.push(judged_check(
                "crash_count".into(),
                crashes as f64,
                0.0,
                false,
            ));
        }
        let named = |o: CheckOutcome| -> Vec<&str> {
            checks
                .iter()
                .filter(|c| c.outcome == Some(o))
                .map(|c| c.name.as_str())
                .collect()
        };
        let (fail, wait, caution) = (
            named(CheckOutcome::Fail),
            named(CheckOutcome::NotComputable),
            named(CheckOutcome::Caution),
        );
        let (v, reason) = if !fail.is_empty() {
            (Verdict::Fail, format!("failing: {}", fail.join(", ")))
        } else if !wait.is_empty() {
            (
                Verdict::Wait,
                format!(
                    "not computable yet (fewer than {} reports in the window): {}",
                    cfg.gate_min_samples,
                    wait.join(", ")
                ),
            )
        } else if !caution.is_empty() {
            (
                Verdict::Caution,
                format!("degrading: {}", caution.join(", ")),
            )
        } else {
            (Verdict::Pass, "all checks pass".to_string())
        };
        if v != Verdict::Wait {
            // A passing gate makes its own stage one of the checked ones.
            let own = stages
                .get(stage as usize)
                .filter(|r| v == Verdict::Pass && r.verdict != Some(Verdict::Pass))
                .map_or(0, |r| u64::from(r.failed));
            self.gates.checked_failed = prior + own;
        }
        let lat = self.gates.latency_percentiles(now, w.error);
        let summary = GateSummary {
            window_ms: w.error,
            samples,
            latency_p50_ms: lat.map(|l| l[0]),
            latency_p95_ms: lat.map(|l| l[1]),
            latency_p99_ms: lat.map(|l| l[2]),
            deployed: judged,
            healthy,
            degraded: self.gates.degraded,
            failed,
            new_failed,
            extensions: self.gates.extensions(stage, gate),
            absolute: if absolute { no_baseline } else { Vec::new() },
        };
        verdict(v, checks, reason, Some(summary))
    }
}

/// The span of reports a memory trend needs (it is growth per 10 minutes).
const MEMORY_TREND_SPAN: Millis = 10 * MINUTE;

/// The windows and margins of one gate (001 "Health Gate Criteria").
struct GateWindows {
    /// error_rate window.
    error: Millis,
    /// latency_p95 window (None: the gate has no latency check).
    latency: Option<Millis>,
    /// memory_trend window.
    memory_trend: Option<Millis>,
    /// crash_count window.
    crash: Option<Millis>,
    /// Error rate allowed over baseline (absolute).
    err_add: f64,
    /// P95 allowed as a multiple of baseline.
    p95_mul: f64,
    /// Whether 001 lists CPU for this gate (canary short-term checks).
    cpu: bool,
}

impl GateWindows {
    fn of(gate: GateKind) -> GateWindows {
        match gate {
            GateKind::Canary => GateWindows {
                error: 15 * MINUTE,
                latency: Some(15 * MINUTE),
                memory_trend: Some(30 * MINUTE),
                crash: Some(30 * MINUTE),
                err_add: 0.02,
                p95_mul: 1.2,
                cpu: true,
            },
            GateKind::Wave => GateWindows {
                error: 10 * MINUTE,
                latency: Some(10 * MINUTE),
                memory_trend: None,
                crash: Some(10 * MINUTE),
                err_add: 0.05,
                p95_mul: 1.3,
                cpu: false,
            },
            GateKind::Completion | GateKind::Staged => GateWindows {
                error: 30 * MINUTE,
                latency: None,
                memory_trend: None,
                crash: None,
                err_add: 0.02,
                p95_mul: f64::INFINITY,
                cpu: false,
            },
        }
    }
}

/// How long a CAUTION verdict extends the soak of `gate`: its error window.
pub(super) fn caution_extension(gate: GateKind) -> Millis {
    GateWindows::of(gate).error
}

/// A check of `value` against an upper `limit`; `degrading` turns a pass into CAUTION.
fn judged_check(name: String, value: f64, limit: f64, degrading: bool) -> Check {
    let pass = value <= limit;
    Check {
        name,
        value,
        limit,
        pass,
        outcome: Some(match (pass, degrading) {
            (false, _) => CheckOutcome::Fail,
            (true, true) => CheckOutcome::Caution,
            (true, false) => CheckOutcome::Pass,
        }),
    }
}

/// A check of `value` against a lower `limit` (shares that must stay above it).
fn floor_check(name: &str, value: f64, limit: f64) -> Check {
    judged_check(name.into(), value, limit, false).with_pass(value >= limit)
}

/// A check that lacks reports: `have` of the `need` in its window.
fn not_computable(name: String, have: u64, need: u64) -> Check {
    Check {
        name,
        value: have as f64,
        limit: need as f64,
        pass: false,
        outcome: Some(CheckOutcome::NotComputable),
    }
}

impl Check {
    fn with_pass(mut self, pass: bool) -> Check {
        self.pass = pass;
        self.outcome = Some(if pass {
            CheckOutcome::Pass
        } else {
            CheckOutcome::Fail
        });
        self
    }
}

impl Rollout {
    /// A CAUTION verdict once the gate has used its `caution_max_extensions` is a failure:
    /// the trend persisted (001: "if degradation continues: rollback").
    pub(super) fn caution_or_fail(&self, mut v: GateVerdict) -> GateVerdict {
        if v.verdict != Verdict::Caution {
            return v;
        }
        let used = self.health.gates.extensions(v.stage, v.gate);
        let max = self.plan.config.gates.caution_max_extensions;
        if used >= max {
            v.verdict = Verdict::Fail;
            v.reason = format!(
                "CAUTION persisted after {used} extension(s) of the soak: {}",
                v.reason
            );
        }
        v
    }

    /// Extends the soak after a CAUTION verdict by the gate's window; returns when to
    /// recheck. The verdict was emitted; the recheck's is emitted too, whatever it is.
    pub(super) fn extend_for_caution(&mut self, v: &GateVerdict, name: &str) -> Millis {
        let used = self.health.gates.extensions(v.stage, v.gate) + 1;
        self.health.gates.caution = Some((v.stage, v.gate, used));
        let ext = caution_extension(v.gate);
        let until = self.now.saturating_add(ext);
        self.audit(format!(
            "{name} gate CAUTION: soak extended by {} min ({used} of {}), recheck then: {}",
            ext / MINUTE,
            self.plan.config.gates.caution_max_extensions,
            v.reason
        ));
        self.machine.last_gate = None;
        until
    }
}
