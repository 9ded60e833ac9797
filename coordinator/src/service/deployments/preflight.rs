//! The VALIDATE phase: reference 003's pre-deployment checklist ("If ANY item is unchecked —
//! STOP. Resolve before deploying.") run against the registry before a deployment's first
//! directive, and as a dry run when it is created.
//!
//! The items, each with the devices at fault (the first [`MAX_LISTED`], all counted):
//! - `artifact_integrity`: the stored bundle re-verified against its manifest and the device
//!   trust store (signatures, every chunk, the payload digest), and the manifest and payload
//!   the coordinator seeds equal to the bundle's.
//! - `architecture`, `device_type`: every target against the manifest's declared
//!   architectures and device types (no declared device types is a pass that says so).
//! - `disk_space`: [`DISK_FACTOR`] × the artifact's size free, from each device's last report
//!   (`system.disk_free_mb`); a device that never sent the figure fails: unknown is not enough.
//! - `resource_fit`: memory in use below [`MEMORY_LIMIT_PERCENT`] (003's rollback trigger),
//!   from the last report; unknown fails likewise.
//! - `rollback_target`: every device has a release to return to.
//! - `canary_coverage`: the canary stage holds every device type of the targets.
//! - `baselines`: every device type of the targets has devices that reported health.
//! - `connectivity`: a report within [`PreflightSettings::heartbeat_within`] (default 5 min).
//!
//! A failure stops the start (the deployment stays pending, the result is stored with it and
//! audited) unless the operator overrides the item by name; an override is audited with the
//! caller and the items. `floe serve --preflight warn` records the result without stopping.

use super::{Deployments, Env, head_json};
use crate::contract::{DeploymentState, Preflight, PreflightItem};
use crate::service::ServiceError;
use crate::service::audit::line;
use crate::service::model::DeploymentDoc;
use crate::service::registry::Registry;
use crate::service::validation;
use crate::store::{ArtifactRecord, Store, rfc3339};
use ed25519_dalek::VerifyingKey;
use floe_rollout::baseline::BaselineSet;
use floe_rollout::{
    Command, DeploymentStatus, MINUTE, Millis, Plan, Rollout, StageKind, StateBlock,
};
use floe_wire::artifact::{BundleReader, keys};
use floe_wire::proto::manifest::Manifest;
use floe_wire::proto::{Digest, Fixed, TrustStore, TrustedKey};
use std::collections::BTreeSet;
use std::path::Path;

/// The checklist's items, in order.
pub const ITEMS: [&str; 9] = [
    "artifact_integrity",
    "architecture",
    "device_type",
    "disk_space",
    "resource_fit",
    "rollback_target",
    "canary_coverage",
    "baselines",
    "connectivity",
];
/// Devices listed per item (the rest are counted).
pub(crate) const MAX_LISTED: usize = 20;
/// Memory in use at or above this share fails `resource_fit` (003: "Memory usage exceeds 90%
/// on any deployed device → rollback current wave").
pub(crate) const MEMORY_LIMIT_PERCENT: f32 = 90.0;
/// Free disk needed, in multiples of the artifact's size (the new slot and room to unpack).
pub(crate) const DISK_FACTOR: f64 = 2.0;
/// How recent a device's last report must be, by default.
pub(crate) const DEFAULT_HEARTBEAT_WITHIN: Millis = 5 * MINUTE;

/// The checklist's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreflightSettings {
    /// A failed item stops the start (otherwise it is recorded and audited only).
    pub enforce: bool,
    /// A target whose last report is older than this fails `connectivity`.
    pub heartbeat_within: Millis,
}

impl Default for PreflightSettings {
    fn default() -> Self {
        Self {
            enforce: true,
            heartbeat_within: DEFAULT_HEARTBEAT_WITHIN,
        }
    }
}

/// What a start came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartOutcome {
    /// The deployment started (its checklist passed, was overridden, or is not enforced).
    Started,
    /// The checklist stopped it; the deployment stays pending with this result stored.
    Refused(Box<Preflight>),
}

/// The artifact's re-verification, done once per checklist run.
#[derive(Debug, Clone)]
pub(crate) struct ArtifactCheck {
    /// The verified manifest, or why the artifact does not verify.
    pub manifest: Result<Manifest, String>,
    /// The payload's size in bytes.
    pub size: u64,
}

/// The trust store devices verify with: the data directory's `trust/trust.cbor` when there
/// is one, else one made of the service's own release and coordinator keys (an in-process
/// service without a data directory's keys).
pub(crate) fn trust_store(
    data_dir: &Path,
    release: VerifyingKey,
    coordinator: VerifyingKey,
) -> TrustStore {
    let dir = data_dir.join("trust");
    if dir.join(keys::TRUST_FILE).exists() {
        match keys::load_trust(&dir) {
            Ok(t) => return t,
            Err(e) => {
                tracing::warn!(error = %e, "reading the trust store for the pre-flight; using the service's own keys")
            }
        }
    }
    TrustStore::new(
        vec![TrustedKey::new(Fixed(release.to_bytes()))],
        TrustedKey::new(Fixed(coordinator.to_bytes())),
    )
}

/// Re-verifies a flow version's stored artifact: the bundle file against `trust` (signatures,
/// chunks, payload digest), and the manifest and payload the database holds (what the
/// coordinator seeds to the fabric) against the bundle's.
pub(crate) fn artifact_check(store: &Store, flow_id: &str, trust: &TrustStore) -> ArtifactCheck {
    let record = match store.artifact(flow_id) {
        Ok(Some(r)) => r,
        Ok(None) => {
            return ArtifactCheck {
                manifest: Err(format!("flow {flow_id} has no stored artifact")),
                size: 0,
            };
        }
        Err(e) => {
            return ArtifactCheck {
                manifest: Err(format!("reading the artifact record: {e}")),
                size: 0,
            };
        }
    };
    ArtifactCheck {
        size: record.size,
        manifest: verify_record(&record, trust),
    }
}

fn verify_record(record: &ArtifactRecord, trust: &TrustStore) -> Result<Manifest, String> {
    let path = Path::new(&record.bundle_path);
    let reader = BundleReader::open(path).map_err(|e| format!("bundle {}: {e}", path.display()))?;
    if reader.envelope_bytes != record.manifest {
        return Err(format!(
            "the manifest stored for seeding differs from the one in bundle {}",
            path.display()
        ));
    }
    let digest = Digest::of(&reader.envelope.payload.0).to_hex();
    if digest != record.manifest_sha256 {
        return Err(format!(
            "manifest checksum {digest} differs from the recorded {}",
            record.manifest_sha256
        ));
    }
    let verified = reader
        .verify(trust, |_, _, _| Ok(()))
        .map_err(|e| format!("bundle {} does not verify: {e}", path.display()))?;
    if Digest::of(&record.payload) != verified.value.sha256 {
        return Err("the payload stored for seeding differs from the manifest's checksum".into());
    }
    Ok(verified.value)
}

/// Devices (or types) at fault for one item.
struct Faults {
    listed: Vec<String>,
    count: u64,
}

impl Faults {
    fn new() -> Self {
        Self {
            listed: Vec::new(),
            count: 0,
        }
    }

    fn add(&mut self, who: impl FnOnce() -> String) {
        self.count += 1;
        if self.listed.len() < MAX_LISTED {
            self.listed.push(who());
        }
    }

    fn item(self, name: &str, pass: String, fail: impl FnOnce(u64) -> String) -> PreflightItem {
        let passed = self.count == 0;
        PreflightItem {
            name: name.to_string(),
            passed,
            overridden: false,
            detail: if passed { pass } else { fail(self.count) },
            devices: self.listed,
            count: self.count,
        }
    }
}

fn failed(name: &str, detail: String) -> PreflightItem {
    PreflightItem {
        name: name.to_string(),
        passed: false,
        overridden: false,
        detail,
        devices: Vec::new(),
        count: 0,
    }
}

/// Runs the checklist over a plan's targets (O(targets + registry)).
pub(crate) fn checklist(
    plan: &Plan,
    captured: Option<&BaselineSet>,
    registry: &Registry,
    artifact: &ArtifactCheck,
    settings: &PreflightSettings,
    now: Millis,
) -> Vec<PreflightItem> {
    let total = plan.ids.len();
    let manifest = artifact.manifest.as_ref();
    let mut arch = Faults::new();
    let mut dtype = Faults::new();
    let mut disk = Faults::new();
    let mut memory = Faults::new();
    let mut rollback = Faults::new();
    let mut offline = Faults::new();
    let need_mb = artifact.size as f64 * DISK_FACTOR / 1_000_000.0;
    for id in &plan.ids {
        let Ok(d) = registry.get(id) else {
            offline.add(|| format!("{id} (no longer registered)"));
            for f in [&mut arch, &mut disk, &mut memory, &mut rollback] {
                f.add(|| format!("{id} (no longer registered)"));
            }
            continue;
        };
        if let Ok(m) = manifest {
            if d.arch.is_empty() {
                arch.add(|| format!("{id} (never reported its architecture)"));
            } else if !m.archs.contains(&d.arch) {
                arch.add(|| format!("{id} ({})", d.arch));
            }
            if !m.device_types.is_empty() && !m.device_types.contains(&d.device_type) {
                dtype.add(|| format!("{id} ({})", d.device_type));
            }
        }
        let system = d.health.as_ref().map(|h| h.system);
        match system.and_then(|s| s.disk_free_mb) {
            None => disk.add(|| format!("{id} (free space unknown)")),
            Some(free) if f64::from(free) < need_mb => {
                disk.add(|| format!("{id} ({free:.1} MB free)"))
            }
            Some(_) => {}
        }
        match system.and_then(|s| s.memory_used_percent) {
            None => memory.add(|| format!("{id} (memory use unknown)")),
            Some(used) if used >= MEMORY_LIMIT_PERCENT => {
                memory.add(|| format!("{id} ({used:.0}% memory in use)"))
            }
            Some(_) => {}
        }
        if Registry::rollback_target(d).is_none() {
            rollback.add(|| id.clone());
        }
        match d.last_seen {
            None => offline.add(|| format!("{id} (never reported)")),
            Some(t) if d.offline || now.saturating_sub(t) > settings.heartbeat_within => {
                let silent = floe_rollout::duration::format_duration(now.saturating_sub(t));
                offline.add(|| format!("{id} (silent {silent})"))
            }
            Some(_) => {}
        }
    }
    let mut items = Vec::with_capacity(ITEMS.len());
    items.push(match manifest {
        Ok(m) => PreflightItem {
            name: "artifact_integrity".into(),
            passed: true,
            overridden: false,
            detail: format!(
                "{} v{} release {}: signatures verified against the device trust store, {} chunks and the payload checksum {} match",
                m.name,
                m.version,
                m.release,
                m.chunks.len(),
                m.sha256.to_hex()
            ),
            devices: Vec::new(),
            count: 0,
        },
        Err(e) => failed("artifact_integrity", e.clone()),
    });
    match manifest {
        Ok(m) => {
            let archs = m.archs.join(", ");
            items.push(arch.item(
                "architecture",
                format!("all {total} targets run a declared architecture ({archs})"),
                |n| format!("{n} of {total} targets run an architecture the artifact does not declare ({archs}) or never reported one"),
            ));
            let pass = if m.device_types.is_empty() {
                "no constraint declared (the manifest allows any device type)".to_string()
            } else {
                format!(
                    "all {total} targets are of a declared type ({})",
                    m.device_types.join(", ")
                )
            };
            let types = m.device_types.join(", ");
            items.push(dtype.item("device_type", pass, |n| {
                format!(
                    "{n} of {total} targets are of a type the artifact does not declare ({types})"
                )
            }));
        }
        Err(_) => {
            let why = "not checked: the artifact did not verify".to_string();
            items.push(failed("architecture", why.clone()));
            items.push(failed("device_type", why));
        }
    }
    items.push(disk.item(
        "disk_space",
        format!("every target reported at least {need_mb:.3} MB free ({DISK_FACTOR}× the artifact's {} bytes)", artifact.size),
        |n| format!("{n} of {total} targets have less than {need_mb:.3} MB free ({DISK_FACTOR}× the artifact's {} bytes) or never reported their free space", artifact.size),
    ));
    items.push(memory.item(
        "resource_fit",
        format!("every target reported memory use below {MEMORY_LIMIT_PERCENT}%"),
        |n| format!("{n} of {total} targets use {MEMORY_LIMIT_PERCENT}% of their memory or more, or never reported it"),
    ));
    items.push(rollback.item(
        "rollback_target",
        format!("all {total} targets have a release to roll back to"),
        |n| format!("{n} of {total} targets have nothing to return to (no installed or last known good release)"),
    ));
    items.push(canary_coverage(plan));
    items.push(baselines(plan, captured));
    let within = floe_rollout::duration::format_duration(settings.heartbeat_within);
    items.push(offline.item(
        "connectivity",
        format!("all {total} targets reported within {within}"),
        |n| format!("{n} of {total} targets have not reported within {within}"),
    ));
    items
}

/// The device types of the targets, by index in `plan.types`.
fn target_types(plan: &Plan) -> BTreeSet<u16> {
    plan.device_type.iter().copied().collect()
}

fn type_name(plan: &Plan, t: u16) -> String {
    plan.types
        .get(t as usize)
        .cloned()
        .unwrap_or_else(|| format!("type #{t}"))
}

fn canary_coverage(plan: &Plan) -> PreflightItem {
    let canary: Vec<u32> = plan
        .stages
        .iter()
        .filter(|s| s.kind == StageKind::Canary)
        .flat_map(|s| plan.order[s.start as usize..s.end as usize].iter().copied())
        .collect();
    if canary.is_empty() {
        return PreflightItem {
            name: "canary_coverage".into(),
            passed: true,
            overridden: false,
            detail: format!(
                "not applicable: the {} strategy has no canary stage",
                plan.config.strategy.name()
            ),
            devices: Vec::new(),
            count: 0,
        };
    }
    let covered: BTreeSet<u16> = canary
        .iter()
        .filter_map(|&i| plan.device_type.get(i as usize).copied())
        .collect();
    let mut missing = Faults::new();
    let all = target_types(plan);
    for t in all.difference(&covered) {
        missing.add(|| type_name(plan, *t));
    }
    let n = canary.len();
    let types = all.len();
    missing.item(
        "canary_coverage",
        format!("the canary's {n} devices cover all {types} device types of the targets"),
        |m| format!("the canary's {n} devices leave {m} of {types} device types uncovered"),
    )
}

/// Every device type of the targets has a baseline among those the deployment captured from
/// the health rollups (enough samples of normal operation in the baseline window); a type
/// without one is listed with its sample count. (The gates still judge such a type, against
/// the absolute limits or by the `no_baseline` policy; the checklist says so before the start.)
fn baselines(plan: &Plan, captured: Option<&BaselineSet>) -> PreflightItem {
    let all = target_types(plan);
    let mut missing = Faults::new();
    for t in &all {
        let name = type_name(plan, *t);
        match captured.and_then(|set| set.of_type(&name)) {
            Some(g) if g.usable() => {}
            Some(g) => {
                missing.add(|| format!("{name} ({} samples, {} needed)", g.samples, g.needed))
            }
            None => missing.add(|| format!("{name} (no reports of normal operation)")),
        }
    }
    let types = all.len();
    missing.item(
        "baselines",
        format!("all {types} device types of the targets have a baseline from the health rollups"),
        |m| format!("{m} of {types} device types have no baseline (too few reports of normal operation in the baseline window)"),
    )
}

/// Checks the names an operator overrides: each must be a checklist item.
pub(crate) fn check_overrides(overrides: &[String]) -> Result<(), ServiceError> {
    if overrides.len() > ITEMS.len() {
        return Err(validation(
            "override",
            format!("at most {} items can be overridden", ITEMS.len()),
        ));
    }
    for o in overrides {
        if !ITEMS.contains(&o.as_str()) {
            return Err(validation(
                "override",
                format!(
                    "{:?} is not a checklist item; the items are {}",
                    floe_wire::text::for_terminal(o),
                    ITEMS.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// A checklist run as the deployment keeps it, with `overrides` applied to failed items.
fn record(
    when: &str,
    mut items: Vec<PreflightItem>,
    overrides: &[String],
    settings: &PreflightSettings,
    actor: &str,
    now: Millis,
) -> Preflight {
    let mut overridden = Vec::new();
    for item in &mut items {
        if !item.passed && overrides.contains(&item.name) {
            item.overridden = true;
            overridden.push(item.name.clone());
        }
    }
    Preflight {
        when: when.to_string(),
        at: rfc3339(now),
        passed: items.iter().all(|i| i.passed || i.overridden),
        enforced: settings.enforce,
        items,
        overridden,
        actor: actor.to_string(),
    }
}

impl Deployments {
    /// The checklist as a dry run for a pending deployment just created: stored with it (so
    /// `GET /deployments/{id}` shows what a start would meet), nothing else.
    pub(in crate::service) fn preflight_dry_run(
        &mut self,
        env: &mut Env<'_>,
        id: &str,
        artifact: &ArtifactCheck,
        settings: &PreflightSettings,
        now: Millis,
    ) -> Result<(), ServiceError> {
        let Some(a) = self.active.get_mut(id) else {
            return Ok(());
        };
        let items = checklist(
            a.engine.plan(),
            a.engine.baselines(),
            env.registry,
            artifact,
            settings,
            now,
        );
        a.doc.preflight = Some(record(
            "create",
            items,
            &[],
            settings,
            env.store.caller(),
            now,
        ));
        let head = head_json(&mut a.doc)?;
        env.store
            .put_deployment_head(id, &a.doc.status, &head)
            .map_err(ServiceError::from)
    }

    /// `POST /deployments/{id}/start`: the checklist, then the engine's start. A failure
    /// that is not overridden (and enforced) leaves the deployment pending with the result
    /// stored and audited; otherwise the result, the override (if any) and the start land in
    /// one transaction. A deployment that is not pending goes straight to the engine, which
    /// says why it cannot start.
    pub(in crate::service) fn start(
        &mut self,
        env: &mut Env<'_>,
        id: &str,
        overrides: &[String],
        artifact: &ArtifactCheck,
        settings: &PreflightSettings,
        now: Millis,
    ) -> Result<StartOutcome, ServiceError> {
        check_overrides(overrides)?;
        let pending = self
            .active
            .get(id)
            .is_some_and(|a| a.engine.status() == DeploymentStatus::Pending);
        if !pending {
            self.command(env, id, Command::Start, now)?;
            return Ok(StartOutcome::Started);
        }
        let Some(a) = self.active.get_mut(id) else {
            return Err(ServiceError::NotFound {
                what: "deployment",
                id: id.to_string(),
            });
        };
        let items = checklist(
            a.engine.plan(),
            a.engine.baselines(),
            env.registry,
            artifact,
            settings,
            now,
        );
        let actor = env.store.caller().to_string();
        let result = record("start", items, overrides, settings, &actor, now);
        let previous = a.doc.preflight.replace(result.clone());
        if !result.passed && settings.enforce {
            let head = head_json(&mut a.doc)?;
            let status = a.doc.status.clone();
            let written = env.store.atomically(|s| -> Result<(), ServiceError> {
                s.put_deployment_head(id, &status, &head)?;
                s.audit(&line(
                    now,
                    &actor,
                    "deployment.preflight",
                    (None, Some(id)),
                    "refused",
                    result.summary(),
                ))?;
                Ok(())
            });
            if let Err(e) = written {
                a.doc.preflight = previous;
                return Err(e);
            }
            return Ok(StartOutcome::Refused(Box::new(result)));
        }
        a.head_dirty = true;
        let outcome = if result.passed {
            if result.overridden.is_empty() {
                "passed"
            } else {
                "overridden"
            }
        } else {
            "failed (not enforced)"
        };
        let mut detail = result.summary();
        if !result.overridden.is_empty() {
            detail = format!(
                "{detail}; {actor} overrode {}",
                result.overridden.join(", ")
            );
        }
        let batch = match env.store.begin() {
            Ok(b) => b,
            Err(e) => {
                self.reload(env.store, id);
                return Err(e.into());
            }
        };
        let started = env
            .store
            .audit(&line(
                now,
                &actor,
                "deployment.preflight",
                (None, Some(id)),
                outcome,
                detail,
            ))
            .map_err(ServiceError::from)
            .and_then(|()| self.command(env, id, Command::Start, now));
        match started.and_then(|()| batch.commit().map_err(ServiceError::from)) {
            Ok(()) => Ok(StartOutcome::Started),
            Err(e) => {
                self.reload(env.store, id);
                Err(e)
            }
        }
    }
}

/// The phase a deployment is in: the engine's, except `VALIDATE` for a pending deployment
/// whose start the checklist stopped.
pub fn phase_name(doc: &DeploymentDoc, engine: &Rollout) -> String {
    let stopped = engine.status() == DeploymentStatus::Pending
        && doc
            .preflight
            .as_ref()
            .is_some_and(|p| p.when == "start" && !p.passed);
    if stopped {
        "VALIDATE".to_string()
    } else {
        engine.phase_name().to_string()
    }
}

/// Reference 003's state block of a deployment: the engine's, with the artifact's name and
/// version, the VALIDATE phase and the checklist's blockers of a stopped start.
pub fn state_block(doc: &DeploymentDoc, engine: &Rollout) -> DeploymentState {
    let mut b = StateBlock::from_rollout(engine);
    b.artifact = format!(
        "{} v{} (release {})",
        doc.artifact.name, doc.artifact.version, doc.artifact.release
    );
    b.phase = phase_name(doc, engine);
    if b.phase == "VALIDATE"
        && let Some(p) = &doc.preflight
    {
        let failed: Vec<String> = p
            .blocking()
            .map(|i| {
                if i.count > 0 {
                    format!("{} ({})", i.name, i.count)
                } else {
                    i.name.clone()
                }
            })
            .collect();
        b.blockers = format!("pre-flight failed: {}", failed.join(", "));
        b.next_action = format!(
            "resolve the failed items, or start with --override {}",
            p.blocking()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>()
                .join(",")
        );
    }
    DeploymentState {
        text: b.to_text(),
        phase: b.phase,
        strategy: b.strategy,
        artifact: b.artifact,
        fleet_total: b.fleet_total,
        deployed_count: b.deployed_count,
        healthy_count: b.healthy_count,
        quarantined_count: b.quarantined_count,
        skipped_count: b.skipped_count,
        rollback_available: b.rollback_available,
        current_wave: b.current_wave,
        last_action: b.last_action,
        next_action: b.next_action,
        blockers: b.blockers,
    }
}
