//! Health aggregation: per-group running aggregates of the active devices' reports (kept
//! incrementally, so a gate costs time in the number of groups, not devices), the fleet-wide
//! threshold and trend triggers, and gate evaluation.

use super::*;

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

/// Fixed-point scale of the aggregates: a millionth of a unit.
pub(super) const FIXED: f64 = 1e6;

/// A metric in fixed point (metrics are validated finite and bounded on input).
pub(super) fn fixed(x: f32) -> u128 {
    (f64::from(x) * FIXED).round() as u128
}

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
}

impl Health {
    /// Takes `dev`'s last report out of its group's aggregate, if it is in.
    pub(super) fn remove(&mut self, group: usize, dev: &mut Dev) {
        if dev.flags & F_REPORTED != 0 {
            dev.flags &= !F_REPORTED;
            let g = &mut self.groups[group];
            g.n -= 1;
            g.error_rate -= fixed(dev.error_rate);
            g.p95_ms -= fixed(dev.p95_ms);
            g.memory_mb -= fixed(dev.memory_mb);
        }
    }

    /// Puts `dev`'s last report into its group's aggregate.
    pub(super) fn add(&mut self, group: usize, dev: &mut Dev) {
        dev.flags |= F_REPORTED;
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

    /// Evaluates `gate`, closing `stage`, over all devices deployed so far; `failed` is the
    /// number of failures of all stages.
    pub(super) fn evaluate(
        &mut self,
        plan: &Plan,
        devs: &[Dev],
        (stage, gate): (u32, GateKind),
        now: Millis,
        failed: u64,
    ) -> GateVerdict {
        // With health checks off (000 allows it) gates only wait for devices to settle.
        if gate == GateKind::Staged || !plan.config.health_check {
            return GateVerdict {
                stage,
                gate,
                verdict: Verdict::Pass,
                checks: Vec::new(),
                reason: "devices settled".into(),
            };
        }
        let judged = self.active;
        let reported: u64 = self.groups.iter().map(|g| g.n).sum();
        let need = ((judged as f64) * plan.config.quorum_percent / 100.0).ceil() as u64;
        if judged == 0 || reported < need {
            return GateVerdict {
                stage,
                gate,
                verdict: Verdict::Wait,
                checks: Vec::new(),
                reason: format!(
                    "quorum: {reported} of {judged} deployed devices reported, {need} needed ({}%)",
                    plan.config.quorum_percent
                ),
            };
        }
        let (groups, delta) = self.aggregates(plan);
        self.health_delta = delta;
        let (err_add, p95_mul, crash_window) = match gate {
            GateKind::Canary => (0.02, 1.2, 30 * MINUTE),
            GateKind::Wave => (0.05, 1.3, 10 * MINUTE),
            GateKind::Completion | GateKind::Staged => (0.02, f64::INFINITY, 0),
        };
        let mut checks = Vec::new();
        for (i, e, p, _) in &groups {
            let b = plan.baselines[*i];
            let t = &plan.types[*i];
            checks.push(Check {
                name: format!("error_rate[{t}]"),
                value: *e,
                limit: b.error_rate + err_add,
                pass: *e <= b.error_rate + err_add,
            });
            if p95_mul.is_finite() && b.p95_ms > 0.0 {
                checks.push(Check {
                    name: format!("latency_p95[{t}]"),
                    value: *p,
                    limit: latency_limit(b.p95_ms, p95_mul),
                    pass: *p <= latency_limit(b.p95_ms, p95_mul),
                });
            }
        }
        // The healthy share is over the devices there is news from: reporting devices and
        // failures so far. Offline devices are not failures; the quorum covers silence.
        let healthy_share = reported as f64 / (reported + failed) as f64;
        match gate {
            GateKind::Canary => {
                checks.push(Check {
                    name: "memory_trend".into(),
                    value: self.mem_warn as f64,
                    limit: 0.0,
                    pass: self.mem_warn == 0,
                });
                checks.push(Check {
                    name: "application_health".into(),
                    value: healthy_share,
                    limit: 1.0,
                    pass: failed == 0 && reported == judged,
                });
            }
            GateKind::Wave => checks.push(Check {
                name: "device_health".into(),
                value: healthy_share,
                limit: 0.95,
                pass: healthy_share >= 0.95,
            }),
            GateKind::Completion | GateKind::Staged => {
                let coverage = self.active as f64 / plan.len() as f64;
                checks.push(Check {
                    name: "fleet_coverage".into(),
                    value: coverage,
                    limit: 0.95,
                    pass: coverage >= 0.95,
                });
                checks.push(Check {
                    name: "device_health".into(),
                    value: healthy_share,
                    limit: 0.98,
                    pass: healthy_share >= 0.98,
                });
            }
        }
        if crash_window > 0 {
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
            checks.push(Check {
                name: "crash_count".into(),
                value: crashes as f64,
                limit: 0.0,
                pass: crashes == 0,
            });
        }
        let failing: Vec<&str> = checks
            .iter()
            .filter(|c| !c.pass)
            .map(|c| c.name.as_str())
            .collect();
        let (verdict, reason) = if failing.is_empty() {
            (Verdict::Pass, "all checks pass".to_string())
        } else {
            (Verdict::Fail, format!("failing: {}", failing.join(", ")))
        };
        GateVerdict {
            stage,
            gate,
            verdict,
            checks,
            reason,
        }
    }
}
