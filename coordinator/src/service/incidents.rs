//! The incidents part: after any rollback (a device's own, a wave's, the fleet's) it verifies
//! that the rolled-back devices report healthy on their previous version (reference 001,
//! "Rollback Execution Order": verify health; for the fleet, "verify fleet health returns to
//! pre-deployment baseline"), and it generates and stores the incident report of every failed
//! or rolled-back deployment (`IncidentReport`, built in `incident_report`).
//!
//! How it learns of rollbacks: it reads the events a step staged once that step committed
//! ([`Incidents::notice`], called by the core just before it publishes them): a target moving
//! to `rolled_back` or `quarantined` starts (or extends) the deployment's verification, a
//! deployment ending `failed` or `rolled_back` has its report generated. It never reaches into
//! the engine's step; the events are the facts the store already holds.
//!
//! Verification of a device: its first report after its rollback that says healthy while it
//! runs its previous release (the deployment's rollback target) makes it `healthy`. When its
//! deadline (`rollback_verify_timeout`, default 5 min) passes: a device still on its previous
//! release whose last report says degraded (working, below its thresholds) is `degraded`; one
//! that reported since the rollback but otherwise never healthy on it is `unhealthy`; one that did not
//! report is `unverified_offline` (offline devices are not failed devices, 003). Once no device
//! is pending, the result is recorded (the store, the audit log) and a `rollback.verified`
//! event is emitted (hence webhooks). A fleet rollback also compares the rolled-back devices'
//! mean error rate, p95 and memory with the deployment's captured baselines.
//!
//! Bounds: one watch per deployment with a rolled-back device, one entry per rolled-back
//! target (so at most the deployments' targets); the stored state is the watch itself. After
//! a restart, pending watches are resumed from the store and their devices re-checked against
//! the registry's latest reports.

use super::ServiceError;
use super::audit::line;
use super::deployments::Deployments;
use super::events::EventSink;
use super::flows::Flows;
use super::incident_report::{self, Baselines, VerificationFacts};
use super::json_err;
use super::registry::Registry;
use crate::contract::{
    DeviceVerdict, EventKind, HealthLevel, IncidentReport, MAX_AFFECTED_LISTED,
    RollbackVerification, VerifiedDevice,
};
use crate::store::{DeviceRecord, Store, rfc3339};
use floe_rollout::Millis;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What a rollback covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Scope {
    /// Devices rolled back on their own account (quarantined).
    Device,
    /// A wave rolled back (targets `rolled_back`, the deployment goes on or pauses).
    Wave,
    /// The fleet (the deployment ended `rolled_back`).
    Fleet,
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Scope::Device => "device",
            Scope::Wave => "wave",
            Scope::Fleet => "fleet",
        }
    }
}

/// One rolled-back device under verification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Watched {
    pub(super) device_type: String,
    /// The release it must run again (None: unknown, health alone decides).
    pub(super) previous: Option<u64>,
    /// When its rollback settled.
    pub(super) since: Millis,
    pub(super) deadline: Millis,
    pub(super) verdict: DeviceVerdict,
    /// Whether it reported after its rollback.
    pub(super) heard: bool,
    pub(super) detail: String,
    /// Error rate (fraction), p95 (ms), memory (MB) of its verifying report.
    pub(super) metrics: Option<[f64; 3]>,
    /// CPU (percent of the device) of its verifying report, when the device sent it.
    #[serde(default)]
    pub(super) cpu_percent: Option<f64>,
}

/// A deployment's verification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Watch {
    pub(super) scope: Scope,
    pub(super) started_at: Millis,
    pub(super) finished_at: Option<Millis>,
    pub(super) timeout: Millis,
    pub(super) devices: BTreeMap<String, Watched>,
    /// The deployment's captured baselines per device type.
    pub(super) baselines: Baselines,
}

impl Watch {
    fn count(&self, v: DeviceVerdict) -> u64 {
        self.devices.values().filter(|w| w.verdict == v).count() as u64
    }

    fn pending(&self) -> bool {
        self.devices
            .values()
            .any(|w| w.verdict == DeviceVerdict::Pending)
    }

    /// The contract's view.
    pub(super) fn view(&self) -> RollbackVerification {
        let degraded = self.count(DeviceVerdict::Degraded);
        let (healthy, unhealthy, offline, pending) = (
            self.count(DeviceVerdict::Healthy),
            self.count(DeviceVerdict::Unhealthy),
            self.count(DeviceVerdict::UnverifiedOffline),
            self.count(DeviceVerdict::Pending),
        );
        let result = if pending > 0 {
            "pending"
        } else if unhealthy > 0 {
            "unhealthy"
        } else if offline > 0 {
            "unverified"
        } else if degraded > 0 {
            "degraded"
        } else {
            "healthy"
        };
        let (within, checks) = if self.scope == Scope::Fleet && pending == 0 {
            self.fleet_check()
        } else {
            (None, Vec::new())
        };
        RollbackVerification {
            result: result.to_string(),
            scope: self.scope.as_str().to_string(),
            started_at: rfc3339(self.started_at),
            finished_at: self.finished_at.map(rfc3339),
            timeout_ms: self.timeout,
            healthy,
            degraded,
            unhealthy,
            unverified_offline: offline,
            pending,
            fleet_within_baseline: within,
            baseline_checks: checks,
            devices: self
                .devices
                .iter()
                .filter(|(_, w)| w.verdict != DeviceVerdict::Healthy)
                .take(MAX_AFFECTED_LISTED)
                .map(|(id, w)| VerifiedDevice {
                    id: id.clone(),
                    verdict: w.verdict,
                    detail: w.detail.clone(),
                })
                .collect(),
        }
    }

    /// The rolled-back devices' mean metrics against the mean of their types' baselines.
    fn fleet_check(&self) -> (Option<bool>, Vec<String>) {
        let measured: Vec<(&str, [f64; 3])> = self
            .devices
            .values()
            .filter_map(|w| w.metrics.map(|m| (w.device_type.as_str(), m)))
            .collect();
        incident_report::within_baseline(&measured, &self.baselines)
    }

    /// What the incident report needs of it.
    fn facts(&self) -> VerificationFacts {
        let m: Vec<[f64; 3]> = self.devices.values().filter_map(|w| w.metrics).collect();
        let cpu: Vec<f64> = self
            .devices
            .values()
            .filter_map(|w| w.cpu_percent)
            .collect();
        VerificationFacts {
            after_cpu: (!cpu.is_empty()).then(|| cpu.iter().sum::<f64>() / cpu.len() as f64),
            view: self.view(),
            verdicts: self
                .devices
                .iter()
                .map(|(id, d)| (id.clone(), d.verdict.as_str().to_string()))
                .collect(),
            after: incident_report::mean(&m),
        }
    }
}

/// What a device's record says about its verification now (None: nothing new).
fn judge(w: &Watched, d: &DeviceRecord, now: Millis) -> Option<(DeviceVerdict, String, bool)> {
    let heard = d.last_seen.is_some_and(|t| t > w.since);
    let release = d.installed.as_ref().map(|s| s.release);
    let on_previous = w.previous.is_none() || release == w.previous;
    let health = d.health.as_ref().map(|h| h.status);
    let running = match (&d.installed, release) {
        (Some(s), _) => format!("{} {} (release {})", s.name, s.version, s.release),
        (None, _) => "nothing".to_string(),
    };
    if heard && on_previous && health == Some(HealthLevel::Healthy) {
        return Some((
            DeviceVerdict::Healthy,
            format!("healthy on {running}"),
            true,
        ));
    }
    if now < w.deadline {
        return (heard && !w.heard).then(|| (DeviceVerdict::Pending, String::new(), true));
    }
    let level = health.map_or("no health", |h| h.as_str());
    if heard && on_previous && health == Some(HealthLevel::Degraded) {
        return Some((
            DeviceVerdict::Degraded,
            format!("degraded on {running} until the deadline"),
            true,
        ));
    }
    Some(if heard {
        let want = w
            .previous
            .map_or_else(String::new, |r| format!(", expected release {r}"));
        (
            DeviceVerdict::Unhealthy,
            format!("{level} on {running}{want} by the deadline"),
            true,
        )
    } else {
        (
            DeviceVerdict::UnverifiedOffline,
            "no report since the rollback by the deadline".to_string(),
            false,
        )
    })
}

/// The other parts the incidents part reads, and where it stages its events.
pub(super) struct IncidentEnv<'a> {
    pub(super) store: &'a Store,
    pub(super) registry: &'a Registry,
    pub(super) deployments: &'a Deployments,
    pub(super) flows: &'a Flows,
    pub(super) events: &'a mut EventSink,
}

/// How often watches that gained devices are written: a watch holds every rolled-back device
/// of its deployment, so writing it on every batch of transitions cost the size of the
/// rollback per batch (quadratic over a 100 000-device rollback). Devices added since the
/// last write are not lost by a crash: the registry keeps their reports, and the deployment's
/// end adds every rolled-back target the stored watch lacks (`unwatched_rollbacks`).
const SAVE_EVERY: Millis = 2_000;

/// The incidents part of the core.
#[derive(Debug)]
pub(super) struct Incidents {
    timeout: Millis,
    watches: BTreeMap<String, Watch>,
    /// Device → the deployments whose watch waits for it.
    waiting: HashMap<String, BTreeSet<String>>,
    /// Watches changed in memory since they were last written.
    unsaved: BTreeSet<String>,
    /// When the unsaved watches were last written.
    saved_at: Millis,
}

impl Incidents {
    /// Resumes the pending verifications from `store`.
    pub(super) fn load(store: &Store, timeout: Millis) -> Result<Self, ServiceError> {
        let mut me = Self {
            timeout: timeout.max(1),
            watches: BTreeMap::new(),
            waiting: HashMap::new(),
            unsaved: BTreeSet::new(),
            saved_at: 0,
        };
        for row in store.pending_verifications()? {
            let Some(text) = row.verification else {
                continue;
            };
            let watch: Watch =
                serde_json::from_str(&text).map_err(json_err("rollback verification"))?;
            me.index(&row.deployment_id, &watch);
            me.watches.insert(row.deployment_id, watch);
        }
        Ok(me)
    }

    fn index(&mut self, dep: &str, watch: &Watch) {
        for (id, w) in &watch.devices {
            if w.verdict == DeviceVerdict::Pending {
                self.waiting
                    .entry(id.clone())
                    .or_default()
                    .insert(dep.to_string());
            }
        }
    }

    /// Whether any verification is waiting (a cheap test for the report path).
    pub(super) fn is_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// A deployment's verification: in memory while pending, else as stored.
    pub(super) fn verification(
        &self,
        store: &Store,
        dep: &str,
    ) -> Result<Option<RollbackVerification>, ServiceError> {
        if let Some(w) = self.watches.get(dep) {
            return Ok(Some(w.view()));
        }
        stored_watch(store, dep).map(|w| w.map(|w| w.view()))
    }

    /// Reads the events staged by the steps that just committed and acts on them: rollbacks
    /// start verifications, failed and rolled-back deployments get their report.
    pub(super) fn notice(&mut self, env: &mut IncidentEnv<'_>) {
        let mut rolled: BTreeMap<String, (Millis, Vec<String>)> = BTreeMap::new();
        let mut ended: Vec<(String, Millis, String)> = Vec::new();
        for (kind, at, dep, dev, data) in env.events.staged() {
            let Some(dep) = dep else { continue };
            match kind {
                EventKind::TargetTransition => {
                    let to = data.get("to").and_then(|v| v.as_str());
                    if let (Some("rolled_back" | "quarantined"), Some(dev)) = (to, dev) {
                        let e = rolled.entry(dep.to_string()).or_insert((at, Vec::new()));
                        e.0 = e.0.max(at);
                        e.1.push(dev.to_string());
                    }
                }
                EventKind::DeploymentStatus => {
                    if let Some(s @ ("failed" | "rolled_back")) =
                        data.get("status").and_then(|v| v.as_str())
                    {
                        ended.push((dep.to_string(), at, s.to_string()));
                    }
                }
                _ => {}
            }
        }
        // Too many events at once (a final sweep of a large fleet): they were dropped, so the
        // failed and rolled-back deployments without a report are looked up in the store.
        if let Some(at) = env.events.overflowed_at() {
            match unreported(env.store) {
                Ok(list) => ended.extend(list.into_iter().map(|(id, s)| (id, at, s))),
                Err(e) => {
                    tracing::warn!(error = %e, "looking for deployments without an incident report")
                }
            }
        }
        for (dep, (at, devices)) in rolled {
            if let Err(e) = self.rolled_back(env, &dep, &devices, at) {
                tracing::warn!(deployment = %dep, error = %e, "could not start the rollback verification");
            }
        }
        for (dep, at, status) in ended {
            // Rolled-back targets whose transition was not seen (dropped events) join too.
            match self.unwatched_rollbacks(env, &dep) {
                Ok(missing) if !missing.is_empty() => {
                    if let Err(e) = self.rolled_back(env, &dep, &missing, at) {
                        tracing::warn!(deployment = %dep, error = %e, "could not start the rollback verification");
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(deployment = %dep, error = %e, "reading the rolled-back targets")
                }
            }
            if status == "rolled_back"
                && let Some(w) = self.watches.get_mut(&dep)
            {
                w.scope = Scope::Fleet;
            }
            // The deployment ended: its watch is written now, whole, decided or not.
            if self.unsaved.contains(&dep)
                && let Err(e) = self.save(env, &dep, at)
            {
                tracing::warn!(deployment = %dep, error = %e, "could not write the rollback verification");
            }
            if let Err(e) = self.settle(env, &dep, at) {
                tracing::warn!(deployment = %dep, error = %e, "could not settle the rollback verification");
            }
            if let Err(e) = self.generate(env, &dep, at) {
                tracing::warn!(deployment = %dep, error = %e, "could not write the incident report");
            }
        }
    }

    /// Targets of `dep` that are rolled back or quarantined and not in its verification.
    fn unwatched_rollbacks(
        &self,
        env: &IncidentEnv<'_>,
        dep: &str,
    ) -> Result<Vec<String>, ServiceError> {
        let stored;
        let watch = match self.watches.get(dep) {
            Some(w) => Some(w),
            None => {
                stored = stored_watch(env.store, dep)?;
                stored.as_ref()
            }
        };
        env.deployments.with_deployment(env.store, dep, |doc, e| {
            doc.targets
                .iter()
                .enumerate()
                .filter(|(i, t)| {
                    let s = u32::try_from(*i).ok().and_then(|i| e.target_status(i));
                    matches!(
                        s,
                        Some(
                            floe_rollout::TargetStatus::RolledBack
                                | floe_rollout::TargetStatus::Quarantined
                        )
                    ) && !watch.is_some_and(|w| w.devices.contains_key(&t.device_id))
                })
                .map(|(_, t)| t.device_id.clone())
                .collect()
        })
    }

    /// Adds rolled-back `devices` of `dep` to its verification.
    fn rolled_back(
        &mut self,
        env: &mut IncidentEnv<'_>,
        dep: &str,
        devices: &[String],
        at: Millis,
    ) -> Result<(), ServiceError> {
        let timeout = self.timeout;
        let (targets, baselines) = env.deployments.with_deployment(env.store, dep, |doc, e| {
            let plan = e.plan();
            let wanted: BTreeSet<&str> = devices.iter().map(String::as_str).collect();
            let targets: Vec<(String, String, Option<u64>, bool)> = doc
                .targets
                .iter()
                .enumerate()
                .filter(|(_, t)| wanted.contains(t.device_id.as_str()))
                .map(|(i, t)| {
                    let ty = plan
                        .device_type
                        .get(i)
                        .and_then(|k| plan.types.get(*k as usize))
                        .cloned()
                        .unwrap_or_default();
                    let quarantined = u32::try_from(i).ok().and_then(|i| e.target_status(i))
                        == Some(floe_rollout::TargetStatus::Quarantined);
                    (
                        t.device_id.clone(),
                        ty,
                        t.previous.as_ref().map(|p| p.release),
                        quarantined,
                    )
                })
                .collect();
            (targets, incident_report::baselines_of(plan))
        })?;
        // A deployment whose earlier verification was decided continues it.
        if !self.watches.contains_key(dep)
            && let Some(w) = stored_watch(env.store, dep)?
        {
            self.watches.insert(dep.to_string(), w);
        }
        let new_watch = !self.watches.contains_key(dep);
        let watch = self
            .watches
            .entry(dep.to_string())
            .or_insert_with(|| Watch {
                scope: Scope::Device,
                started_at: at,
                finished_at: None,
                timeout,
                devices: BTreeMap::new(),
                baselines,
            });
        watch.finished_at = None;
        for (id, device_type, previous, quarantined) in targets {
            if !quarantined && watch.scope == Scope::Device {
                watch.scope = Scope::Wave;
            }
            watch.devices.insert(
                id.clone(),
                Watched {
                    device_type,
                    previous,
                    since: at,
                    deadline: at + timeout,
                    verdict: DeviceVerdict::Pending,
                    heard: false,
                    detail: String::new(),
                    metrics: None,
                    cpu_percent: None,
                },
            );
            self.waiting.entry(id).or_default().insert(dep.to_string());
        }
        if new_watch {
            // Written at once, so a restart knows the verification exists.
            self.save(env, dep, at)
        } else {
            self.unsaved.insert(dep.to_string());
            Ok(())
        }
    }

    /// Writes the watches changed since the last write, at most every [`SAVE_EVERY`].
    fn save_unsaved(&mut self, env: &mut IncidentEnv<'_>, now: Millis) {
        if self.unsaved.is_empty() || now < self.saved_at.saturating_add(SAVE_EVERY) {
            return;
        }
        for dep in std::mem::take(&mut self.unsaved) {
            if let Err(e) = self.save(env, &dep, now) {
                tracing::warn!(deployment = %dep, error = %e, "could not write the rollback verification; retrying");
                self.unsaved.insert(dep);
            }
        }
        self.saved_at = now;
    }

    /// Writes a watch (and, once it is decided, its audit line and event).
    fn save(
        &mut self,
        env: &mut IncidentEnv<'_>,
        dep: &str,
        now: Millis,
    ) -> Result<(), ServiceError> {
        let Some(watch) = self.watches.get(dep) else {
            return Ok(());
        };
        let pending = watch.pending();
        let text = serde_json::to_string(watch).map_err(json_err("rollback verification"))?;
        env.store.put_verification(dep, &text, pending, now)?;
        self.unsaved.remove(dep);
        Ok(())
    }

    /// A device reported: re-judges it in every watch waiting for it.
    pub(super) fn observe(&mut self, env: &mut IncidentEnv<'_>, device: &str, now: Millis) {
        let Some(deps) = self.waiting.get(device).cloned() else {
            return;
        };
        let registry = env.registry;
        let Ok(record) = registry.get(device) else {
            return;
        };
        for dep in deps {
            let changed = self
                .watches
                .get_mut(&dep)
                .and_then(|w| w.devices.get_mut(device))
                .is_some_and(|w| apply(w, record, now));
            if changed && let Err(e) = self.settle(env, &dep, now) {
                tracing::warn!(deployment = %dep, error = %e, "could not record the rollback verification");
            }
        }
    }

    /// Deadlines: devices past theirs are judged; finished watches are recorded.
    pub(super) fn tick(&mut self, env: &mut IncidentEnv<'_>, now: Millis) {
        self.save_unsaved(env, now);
        let due: Vec<String> = self
            .watches
            .iter()
            .filter(|(_, w)| {
                w.devices
                    .values()
                    .any(|d| d.verdict == DeviceVerdict::Pending && d.deadline <= now)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for dep in due {
            let ids: Vec<String> = self
                .watches
                .get(&dep)
                .map(|w| w.devices.keys().cloned().collect())
                .unwrap_or_default();
            let registry = env.registry;
            for id in ids {
                let Ok(record) = registry.get(&id) else {
                    if let Some(w) = self
                        .watches
                        .get_mut(&dep)
                        .and_then(|w| w.devices.get_mut(&id))
                        && w.verdict == DeviceVerdict::Pending
                        && w.deadline <= now
                    {
                        w.verdict = DeviceVerdict::UnverifiedOffline;
                        w.detail = "no longer in the registry".into();
                    }
                    continue;
                };
                if let Some(w) = self
                    .watches
                    .get_mut(&dep)
                    .and_then(|w| w.devices.get_mut(&id))
                {
                    apply(w, record, now);
                }
            }
            if let Err(e) = self.settle(env, &dep, now) {
                tracing::warn!(deployment = %dep, error = %e, "could not record the rollback verification");
            }
        }
    }

    /// When a watch has no pending device left: records it (store, audit, event), updates
    /// the incident report if there is one, and drops it from memory.
    fn settle(
        &mut self,
        env: &mut IncidentEnv<'_>,
        dep: &str,
        now: Millis,
    ) -> Result<(), ServiceError> {
        let Some(watch) = self.watches.get_mut(dep) else {
            return Ok(());
        };
        if watch.pending() {
            return Ok(());
        }
        watch.finished_at = Some(now);
        let view = watch.view();
        let watch = watch.clone();
        for id in watch.devices.keys() {
            if let Some(set) = self.waiting.get_mut(id) {
                set.remove(dep);
                if set.is_empty() {
                    self.waiting.remove(id);
                }
            }
        }
        self.save(env, dep, now)?;
        self.watches.remove(dep);
        let detail = format!(
            "{} rollback verified: {} (healthy {}, degraded {}, unhealthy {}, unverified offline {}){}",
            view.scope,
            view.result,
            view.healthy,
            view.degraded,
            view.unhealthy,
            view.unverified_offline,
            view.fleet_within_baseline
                .map_or_else(String::new, |ok| format!(
                    "; fleet {} within baseline",
                    if ok { "back" } else { "not back" }
                ))
        );
        env.store.audit(&line(
            now,
            "service",
            "rollback.verify",
            (None, Some(dep)),
            &view.result,
            detail,
        ))?;
        env.events.emit(
            EventKind::RollbackVerified,
            now,
            Some(dep),
            None,
            json!({
                "scope": view.scope,
                "result": view.result,
                "healthy": view.healthy,
                "degraded": view.degraded,
                "unhealthy": view.unhealthy,
                "unverified_offline": view.unverified_offline,
                "fleet_within_baseline": view.fleet_within_baseline,
            }),
        );
        // A report written before the verification was decided gets its final form.
        if env.store.incident(dep)?.is_some_and(|r| r.report.is_some()) {
            self.generate(env, dep, now)?;
        }
        Ok(())
    }

    /// Generates and stores the incident report of a failed or rolled-back deployment.
    fn generate(
        &mut self,
        env: &mut IncidentEnv<'_>,
        dep: &str,
        now: Millis,
    ) -> Result<IncidentReport, ServiceError> {
        let watch = match self.watches.get(dep) {
            Some(w) => Some(w.clone()),
            None => stored_watch(env.store, dep)?,
        };
        let facts = watch.as_ref().map(Watch::facts);
        let report =
            incident_report::build(env.store, env.flows, env.deployments, dep, facts, now)?;
        let text = serde_json::to_string(&report).map_err(json_err("incident report"))?;
        env.store.put_incident_report(dep, &text, now)?;
        Ok(report)
    }

    /// `GET /deployments/{id}/incident`: the stored report; generated now if the deployment
    /// failed or was rolled back and has none yet (it ended before this coordinator kept
    /// them). 404 naming the status otherwise.
    pub(super) fn report(
        &mut self,
        env: &mut IncidentEnv<'_>,
        dep: &str,
        now: Millis,
    ) -> Result<IncidentReport, ServiceError> {
        let status = env
            .deployments
            .with_deployment(env.store, dep, |doc, _| doc.status.clone())?;
        if status != "failed" && status != "rolled_back" {
            return Err(ServiceError::NotFound {
                what: "incident report",
                id: format!(
                    "{dep} (the deployment is {status}; only a failed or rolled-back deployment has one)"
                ),
            });
        }
        if let Some(text) = env.store.incident(dep)?.and_then(|r| r.report) {
            return serde_json::from_str(&text).map_err(json_err("incident report"));
        }
        self.generate(env, dep, now)
    }
}

/// Judges `w` from `record`; whether anything changed.
fn apply(w: &mut Watched, record: &DeviceRecord, now: Millis) -> bool {
    if w.verdict != DeviceVerdict::Pending {
        return false;
    }
    match judge(w, record, now) {
        None => false,
        Some((verdict, detail, heard)) => {
            w.heard |= heard;
            if verdict != DeviceVerdict::Pending {
                w.verdict = verdict;
                w.detail = detail;
                if matches!(verdict, DeviceVerdict::Healthy | DeviceVerdict::Degraded) {
                    w.metrics = record
                        .health
                        .as_ref()
                        .map(|h| [h.error_rate, h.p95_ms, h.memory_mb]);
                    w.cpu_percent = record
                        .health
                        .as_ref()
                        .and_then(|h| h.system.cpu_percent)
                        .map(f64::from);
                }
            }
            true
        }
    }
}

/// Most deployments of each ending status looked at after dropped events.
const UNREPORTED_SCAN: usize = 1000;

/// Failed and rolled-back deployments without an incident report (the newest
/// [`UNREPORTED_SCAN`] of each status).
fn unreported(store: &Store) -> Result<Vec<(String, String)>, ServiceError> {
    let mut out = Vec::new();
    for status in ["failed", "rolled_back"] {
        let total = store.deployment_ids_page(0, Some(status), None, 1_000_000)?;
        let skip = total.len().saturating_sub(UNREPORTED_SCAN);
        for (_, id) in total.into_iter().skip(skip) {
            if store.incident(&id)?.and_then(|r| r.report).is_none() {
                out.push((id, status.to_string()));
            }
        }
    }
    Ok(out)
}

fn stored_watch(store: &Store, dep: &str) -> Result<Option<Watch>, ServiceError> {
    match store.incident(dep)?.and_then(|r| r.verification) {
        Some(text) => Ok(Some(
            serde_json::from_str(&text).map_err(json_err("rollback verification"))?,
        )),
        None => Ok(None),
    }
}
