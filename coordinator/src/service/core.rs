//! The state the service actor owns and the synchronous handlers that change it.

use super::{
    MAX_ACTIVE_DEPLOYMENTS, MAX_DEVICES, MAX_GATES, MAX_OPEN_TOKENS, OFFLINE_CHECK, ServiceError,
};
use crate::api::types::{ConfigInput, DeploymentInput, DeviceInput, DevicePatch, FlowInput};
use crate::store::{
    AppliedRecord, ArtifactInfo, ArtifactRecord, AuditFilter, AuditRecord, DeploymentRow,
    DesiredRecord, DeviceRecord, FlowRecord, HealthRecord, SlotRecord, Store, StoreError,
};
use ed25519_dalek::SigningKey;
use floe_rollout::duration::format_duration;
use floe_rollout::{
    Action, Baseline, Command, DeploymentStatus, DeviceEvent, DirectiveKind, GateKind,
    HealthReport, HealthStatus, Input, Millis, Plan, PlanError, Rollout, RolloutError, Strategy,
    StrategyConfig, TargetFlags, TargetSpec, TargetStatus, WaveConfig, parse_duration,
};
use floe_wire::artifact::{BuildSpec, BundleReader, build};
use floe_wire::proto::directive::DIRECTIVE_SCHEMA;
use floe_wire::proto::report::POST_SCHEMA;
use floe_wire::proto::{
    self, ArtifactRef, ByteBuf, DeviceReport, Digest, Directive, DirectivePost, Envelope, Fixed,
    HealthLevel, Progress, PublicKeyBytes, SlotInfo, TrustedKey,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use tokio::sync::watch;

/// Settings of the service.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The data directory (bundles go to `DIR/artifacts/`).
    pub data_dir: PathBuf,
    /// A device that has not reported for this long counts as offline (default 30 s).
    pub offline_after: Millis,
    /// How long a signed directive stays valid, in seconds (default 1 h); it is re-signed
    /// when older than half of this.
    pub directive_ttl_secs: u64,
    /// How long a published artifact's manifest stays valid, in days (default 365).
    pub artifact_ttl_days: u64,
}

impl ServiceConfig {
    /// The defaults for a data directory.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            offline_after: 30_000,
            directive_ttl_secs: 3600,
            artifact_ttl_days: 365,
        }
    }
}

/// One directive post a device still has to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The device.
    pub device_id: String,
    /// The directive's generation.
    pub generation: u64,
    /// The encoded [`DirectivePost`].
    pub post: Vec<u8>,
}

/// A published artifact, for seeding into the fabric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactBlob {
    /// Artifact name (the lineage id).
    pub name: String,
    /// Release number.
    pub release: u64,
    /// The signed manifest envelope's bytes.
    pub manifest: Vec<u8>,
    /// The payload the chunks cover.
    pub payload: Vec<u8>,
    /// The manifest's chunk size.
    pub chunk_size: u32,
}

/// A gate verdict as kept in a deployment's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateRecord {
    /// Stage index.
    pub stage: u32,
    /// Gate name.
    pub gate: String,
    /// `pass`, `wait`, `fail`.
    pub verdict: String,
    /// Why.
    pub reason: String,
    /// The checks: (name, value, limit, pass).
    pub checks: Vec<(String, f64, f64, bool)>,
    /// Unix ms.
    pub at: Millis,
}

/// The service's view of one target of a deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetTrack {
    /// The device.
    pub device_id: String,
    /// The generation of the newest directive this deployment issued to it (0: none yet).
    pub generation: u64,
    /// Its kind (`stage`, `switch`, `commit`, `rollback`).
    pub kind: Option<String>,
    /// Events already fed to the engine for `generation`.
    pub fed: Vec<DeviceEvent>,
    /// What the device ran before the deployment (the rollback target).
    pub previous: Option<SlotRecord>,
    /// The device's last word on the directive, when it failed.
    pub detail: String,
}

/// The artifact a deployment rolls out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactSummary {
    /// Name.
    pub name: String,
    /// Release.
    pub release: u64,
    /// Semantic version.
    pub version: String,
    /// Manifest digest, hex.
    pub manifest_sha256: String,
}

/// The service's document of a deployment (the engine's state is stored beside it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentDoc {
    /// `dep_<10 hex>`.
    pub id: String,
    /// The flow version.
    pub flow_id: String,
    /// What is rolled out.
    pub artifact: ArtifactSummary,
    /// Strategy name.
    pub strategy: String,
    /// The request as it was posted.
    pub request: serde_json::Value,
    /// The config with defaults filled in, as the API shows it.
    pub config: serde_json::Value,
    /// Status (mirrors the engine).
    pub status: String,
    /// Why.
    pub status_reason: String,
    /// Unix ms.
    pub created_at: Millis,
    /// Unix ms.
    pub started_at: Option<Millis>,
    /// Unix ms.
    pub completed_at: Option<Millis>,
    /// Gate verdicts, oldest first (the last [`MAX_GATES`]).
    pub gates: Vec<GateRecord>,
    /// Per target, in plan order.
    pub targets: Vec<TargetTrack>,
}

/// An unfinished deployment in memory.
#[derive(Debug)]
struct Active {
    doc: DeploymentDoc,
    engine: Rollout,
    index: HashMap<String, u32>,
}

/// The state the actor owns. See the module documentation of [`crate::service`].
#[derive(Debug)]
pub struct Core {
    store: Store,
    config: ServiceConfig,
    release_key: SigningKey,
    coordinator_key: SigningKey,
    devices: BTreeMap<String, DeviceRecord>,
    active: BTreeMap<String, Active>,
    desired: HashMap<String, DesiredRecord>,
    published: watch::Sender<u64>,
    /// When a refused report of a registered device was last audited.
    refusals: HashMap<String, Millis>,
}

/// Refused reports of one device are audited at most this often.
const REFUSAL_AUDIT_EVERY: Millis = 60_000;

fn random_hex(bytes: usize) -> Result<String, ServiceError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf)
        .map_err(|e| ServiceError::Internal(format!("the OS random source failed: {e}")))?;
    Ok(hex::encode(buf))
}

/// A random hex string of `bytes` bytes (ids, tokens).
pub fn random_token(bytes: usize) -> Result<String, ServiceError> {
    random_hex(bytes)
}

fn validation(field: impl Into<String>, message: impl Into<String>) -> ServiceError {
    ServiceError::Validation {
        field: field.into(),
        message: message.into(),
    }
}

fn json_err(what: &'static str) -> impl FnOnce(serde_json::Error) -> ServiceError {
    move |source| ServiceError::Store(StoreError::Document { what, source })
}

fn kind_name(k: DirectiveKind) -> &'static str {
    match k {
        DirectiveKind::Stage => "stage",
        DirectiveKind::Switch => "switch",
        DirectiveKind::Commit => "commit",
        DirectiveKind::Rollback => "rollback",
    }
}

fn slot_record(s: &SlotInfo) -> SlotRecord {
    SlotRecord {
        name: s.name.clone(),
        release: s.release,
        version: s.version.clone(),
        slot: s.slot.clone(),
    }
}

/// The engine events a device's report of `(action, progress)` stands for, in order.
pub fn events_for(action: proto::Action, progress: Progress) -> Vec<DeviceEvent> {
    match (action, progress) {
        (_, Progress::Failed) => vec![DeviceEvent::Failed],
        (_, Progress::RolledBack) => vec![DeviceEvent::RolledBack],
        (proto::Action::Stage, Progress::Done) => vec![DeviceEvent::Staged],
        (proto::Action::Switch, Progress::Working) => vec![DeviceEvent::Switched],
        (proto::Action::Switch, Progress::Done) => {
            vec![DeviceEvent::Switched, DeviceEvent::Healthy]
        }
        (proto::Action::Rollback, Progress::Done) => vec![DeviceEvent::RolledBack],
        _ => Vec::new(),
    }
}

/// The engine's health input for a device's summary (ppm → fraction, µs → ms, KiB → MB).
pub fn health_input(h: &proto::HealthSummary) -> HealthReport {
    HealthReport {
        status: match h.status {
            HealthLevel::Healthy => HealthStatus::Healthy,
            HealthLevel::Degraded => HealthStatus::Degraded,
            HealthLevel::Unhealthy => HealthStatus::Unhealthy,
        },
        error_rate: h.error_rate_ppm as f32 / 1e6,
        p95_ms: h.p95_us as f32 / 1000.0,
        memory_mb: h.memory_kib as f32 / 1024.0,
        restarts: h.restarts,
    }
}

/// Where in a posted definition a validator problem is: `definition.nodes[n2].config.rules`.
fn problem_path(p: &floe_flow::Problem) -> String {
    let mut path = String::from("definition");
    let mut words = p.subject.splitn(2, ' ');
    match (words.next(), words.next()) {
        (Some("node"), Some(id)) => path.push_str(&format!(".nodes[{id}]")),
        (Some("connection"), Some(i)) => path.push_str(&format!(".connections[{i}]")),
        (Some("variable"), Some(n)) => path.push_str(&format!(".variables[{n}]")),
        _ => {}
    }
    if !p.field.is_empty() {
        path.push('.');
        path.push_str(&p.field);
    }
    path
}

/// Validates a definition at `level`, returning the bytes the validator accepted.
fn check_definition(
    definition: &serde_json::Value,
    level: floe_flow::Level,
) -> Result<Vec<u8>, ServiceError> {
    if !definition.is_object() {
        return Err(validation(
            "definition",
            "the definition must be a JSON object",
        ));
    }
    let bytes = serde_json::to_vec(definition).map_err(json_err("definition"))?;
    match floe_flow::validate::check(&bytes, level) {
        Ok(_) => Ok(bytes),
        Err(invalid) => {
            let field = invalid
                .problems()
                .first()
                .map(problem_path)
                .unwrap_or_else(|| "definition".to_string());
            Err(validation(field, invalid.report().replace('\n', "; ")))
        }
    }
}

fn check_flow_input(input: &FlowInput) -> Result<(), ServiceError> {
    let name = input.name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(validation("name", "the name must be 1 to 200 characters"));
    }
    if input.description.len() > 4096 {
        return Err(validation("description", "at most 4096 bytes"));
    }
    if input.tags.len() > 32 {
        return Err(validation("tags", "at most 32 tags"));
    }
    for (i, tag) in input.tags.iter().enumerate() {
        if tag.is_empty() || tag.len() > 64 || tag.chars().any(char::is_control) {
            return Err(validation(
                format!("tags[{i}]"),
                "a tag is 1 to 64 printable characters",
            ));
        }
    }
    Ok(())
}

fn duration_field(field: &str, value: &Option<String>) -> Result<Option<Millis>, ServiceError> {
    value
        .as_deref()
        .map(|v| {
            parse_duration(v).map_err(|e| validation(format!("config.{field}"), e.to_string()))
        })
        .transpose()
}

/// The engine settings for a request: the strategy's defaults, then what the request sets.
pub fn strategy_config(
    strategy: Strategy,
    input: &ConfigInput,
) -> Result<StrategyConfig, ServiceError> {
    let mut c = StrategyConfig::defaults(strategy);
    if let Some(v) = input.batch_size {
        c.batch_size = v;
        if strategy == Strategy::Rolling {
            c.max_parallel = v;
        }
    }
    if let Some(v) = duration_field("batch_delay", &input.batch_delay)? {
        c.batch_delay = v;
    }
    if let Some(v) = input.failure_threshold {
        c.failure_threshold_percent = v;
    }
    if let Some(v) = input.canary_percentage {
        c.canary_percent = v;
    }
    if let Some(v) = duration_field("canary_delay", &input.canary_delay)? {
        c.canary_soak = v;
    }
    if let Some(v) = duration_field("timeout", &input.timeout)? {
        c.timeout = v;
    }
    if let Some(v) = duration_field("switch_delay", &input.switch_delay)? {
        c.switch_delay = v;
    }
    if let Some(v) = input.auto_rollback {
        c.auto_rollback = v;
    }
    if let Some(v) = input.health_check {
        c.health_check = v;
    }
    if let Some(v) = input.require_approval {
        c.require_approval = v;
    }
    if let Some(v) = input.quorum {
        c.quorum_percent = v;
    }
    if let Some(v) = duration_field("offline_grace", &input.offline_grace)? {
        c.offline_grace = v;
    }
    if let Some(v) = input.max_parallel {
        c.max_parallel = v;
    }
    if let Some(waves) = &input.waves {
        if waves.len() > 64 {
            return Err(validation("config.waves", "at most 64 waves"));
        }
        c.waves = waves
            .iter()
            .enumerate()
            .map(|(i, w)| {
                Ok(WaveConfig {
                    name: w.name.clone().unwrap_or_else(|| format!("wave-{}", i + 1)),
                    percentage: w.percentage,
                    soak: duration_field(&format!("waves[{i}].soak"), &w.soak)?
                        .unwrap_or(10 * floe_rollout::MINUTE),
                    failure_threshold_percent: w.failure_threshold.unwrap_or(5.0),
                    auto_rollback: c.auto_rollback,
                })
            })
            .collect::<Result<_, ServiceError>>()?;
    }
    Ok(c)
}

/// The config as the API shows it (the request's names and units, defaults filled in).
pub fn config_json(c: &StrategyConfig) -> serde_json::Value {
    serde_json::json!({
        "batch_size": c.batch_size,
        "batch_delay": format_duration(c.batch_delay),
        "failure_threshold": c.failure_threshold_percent,
        "canary_percentage": c.canary_percent,
        "canary_delay": format_duration(c.canary_soak),
        "timeout": format_duration(c.timeout),
        "switch_delay": format_duration(c.switch_delay),
        "auto_rollback": c.auto_rollback,
        "health_check": c.health_check,
        "require_approval": c.require_approval,
        "quorum": c.quorum_percent,
        "offline_grace": format_duration(c.offline_grace),
        "waves": c.waves.iter().map(|w| serde_json::json!({
            "name": w.name,
            "percentage": w.percentage,
            "soak": format_duration(w.soak),
            "failure_threshold": w.failure_threshold_percent,
        })).collect::<Vec<_>>(),
        "max_parallel": c.max_parallel,
    })
}

fn plan_error(e: PlanError) -> ServiceError {
    match e {
        PlanError::Config { field, reason } => validation(format!("config.{field}"), reason),
        PlanError::AllAtOnceTooLarge { .. } => validation("strategy", e.to_string()),
        other => validation("target_devices", other.to_string()),
    }
}

fn rollout_error(e: RolloutError) -> ServiceError {
    match e {
        RolloutError::Command { .. } => ServiceError::Conflict(e.to_string()),
        other => ServiceError::BadRequest(other.to_string()),
    }
}

/// Audit lines queued during a step, written in its transaction.
#[derive(Debug, Default)]
struct Audit(Vec<AuditRecord>);

impl Audit {
    fn push(
        &mut self,
        at: Millis,
        actor: &str,
        action: &str,
        (device, deployment): (Option<&str>, Option<&str>),
        outcome: &str,
        detail: impl Into<String>,
    ) {
        self.0.push(AuditRecord {
            at,
            actor: actor.into(),
            action: action.into(),
            device_id: device.map(str::to_string),
            deployment_id: deployment.map(str::to_string),
            outcome: outcome.into(),
            detail: detail.into(),
        });
    }
}

impl Core {
    /// Loads the registry, desired directives and unfinished deployments from `store`.
    pub fn new(
        store: Store,
        config: ServiceConfig,
        release_key: SigningKey,
        coordinator_key: SigningKey,
    ) -> Result<Core, ServiceError> {
        let devices = store
            .devices()?
            .into_iter()
            .map(|d| (d.id.clone(), d))
            .collect();
        let desired = store
            .desired()?
            .into_iter()
            .map(|d| (d.device_id.clone(), d))
            .collect();
        let mut active = BTreeMap::new();
        for row in store.active_deployments()? {
            let doc: DeploymentDoc =
                serde_json::from_str(&row.doc).map_err(json_err("deployment"))?;
            let engine: Rollout =
                serde_json::from_str(&row.engine).map_err(json_err("engine state"))?;
            let index = engine
                .plan()
                .ids
                .iter()
                .enumerate()
                .map(|(i, id)| (id.clone(), i as u32))
                .collect();
            tracing::info!(deployment = %row.id, status = %row.status, "resuming deployment");
            active.insert(row.id.clone(), Active { doc, engine, index });
        }
        let (published, _) = watch::channel(0);
        Ok(Core {
            store,
            config,
            release_key,
            coordinator_key,
            devices,
            active,
            desired,
            published,
            refusals: HashMap::new(),
        })
    }

    /// A receiver whose value grows with every publish.
    pub fn published_receiver(&self) -> watch::Receiver<u64> {
        self.published.subscribe()
    }

    /// When the actor should wake next: the earliest engine timeout or the next offline check.
    pub fn next_wake(&self, now: Millis) -> Millis {
        self.active
            .values()
            .filter_map(|a| a.engine.poll_timeout())
            .fold(now + OFFLINE_CHECK, Millis::min)
    }

    /// Marks silent devices offline and delivers due engine timeouts.
    pub fn tick(&mut self, now: Millis) {
        let silent: Vec<String> = self
            .devices
            .values()
            .filter(|d| {
                !d.offline
                    && d.last_seen
                        .is_some_and(|t| now.saturating_sub(t) > self.config.offline_after)
            })
            .map(|d| d.id.clone())
            .collect();
        for id in silent {
            if let Err(e) = self.mark_offline(&id, now) {
                tracing::warn!(device = %id, error = %e, "could not mark the device offline");
            }
        }
        let due: Vec<String> = self
            .active
            .iter()
            .filter(|(_, a)| a.engine.poll_timeout().is_some_and(|t| t <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            if let Err(e) = self.step(&id, now, Input::Tick) {
                tracing::warn!(deployment = %id, error = %e, "engine tick failed");
            }
        }
    }

    fn mark_offline(&mut self, id: &str, now: Millis) -> Result<(), ServiceError> {
        let Some(mut dev) = self.devices.get(id).cloned() else {
            return Ok(());
        };
        dev.offline = true;
        let silent = dev.last_seen.map(|t| now.saturating_sub(t)).unwrap_or(0);
        self.store.atomically(|s| {
            s.put_device(&dev)?;
            s.audit(&AuditRecord {
                at: now,
                actor: "service".into(),
                action: "device.offline".into(),
                device_id: Some(id.to_string()),
                deployment_id: None,
                outcome: "offline".into(),
                detail: format!("no report for {}", format_duration(silent)),
            })
        })?;
        self.devices.insert(id.to_string(), dev);
        self.feed_all(id, now, |_| vec![DeviceEvent::Offline]);
        Ok(())
    }

    /// Feeds device events to every unfinished deployment that targets `device`.
    fn feed_all(
        &mut self,
        device: &str,
        now: Millis,
        events: impl Fn(&mut TargetTrack) -> Vec<DeviceEvent>,
    ) {
        let ids: Vec<(String, u32)> = self
            .active
            .iter()
            .filter_map(|(id, a)| a.index.get(device).map(|i| (id.clone(), *i)))
            .collect();
        for (id, index) in ids {
            let Some(a) = self.active.get_mut(&id) else {
                continue;
            };
            let Some(track) = a.doc.targets.get_mut(index as usize) else {
                continue;
            };
            for event in events(track) {
                if let Err(e) = self.step(
                    &id,
                    now,
                    Input::Device {
                        device: index,
                        event,
                    },
                ) {
                    tracing::warn!(deployment = %id, device, error = %e, "engine refused a device event");
                }
            }
        }
    }

    /// Runs one input through a deployment's engine and persists the result (engine state,
    /// directives, gates, audit) in one transaction; on a failed write the engine and the
    /// document are restored to their state before the input.
    fn step(&mut self, id: &str, now: Millis, input: Input) -> Result<(), ServiceError> {
        let Some(active) = self.active.get_mut(id) else {
            return Err(ServiceError::NotFound {
                what: "deployment",
                id: id.to_string(),
            });
        };
        let engine_before = active.engine.clone();
        let doc_before = active.doc.clone();
        active
            .engine
            .handle_input(now, input)
            .map_err(rollout_error)?;
        let mut actions = Vec::new();
        while let Some(action) = active.engine.poll_action() {
            actions.push(action);
        }
        match self.apply(id, now, actions) {
            Ok(()) => Ok(()),
            Err(e) => {
                if let Some(active) = self.active.get_mut(id) {
                    active.engine = engine_before;
                    active.doc = doc_before;
                }
                Err(e)
            }
        }
    }

    /// The directive post for one engine directive: the proto directive signed with the
    /// coordinator key and the manifest of the artifact it names.
    fn build_directive(
        &self,
        doc: &DeploymentDoc,
        track: &TargetTrack,
        kind: DirectiveKind,
        generation: u64,
        now: Millis,
    ) -> Result<(Directive, Vec<u8>), ServiceError> {
        let current = self
            .store
            .artifact_release(&doc.artifact.name, doc.artifact.release)?
            .ok_or_else(|| {
                ServiceError::Internal(format!(
                    "the artifact {} release {} of deployment {} is gone",
                    doc.artifact.name, doc.artifact.release, doc.id
                ))
            })?;
        let digest = |hex: &str| {
            Digest::from_hex(hex)
                .map_err(|e| ServiceError::Internal(format!("stored manifest digest: {e}")))
        };
        let (action, artifact, manifest) = match kind {
            DirectiveKind::Rollback => {
                // Roll back to what the device ran before the deployment. If that release is
                // not one this coordinator published, the device rolls back to its own last
                // known good slot: the ref names the release and carries no digest.
                match &track.previous {
                    Some(prev) => match self.store.artifact_release(&prev.name, prev.release)? {
                        Some(a) => (
                            proto::Action::Rollback,
                            ArtifactRef {
                                name: a.name.clone(),
                                release: a.release,
                                manifest_sha256: digest(&a.manifest_sha256)?,
                            },
                            a.manifest,
                        ),
                        None => (
                            proto::Action::Rollback,
                            ArtifactRef {
                                name: prev.name.clone(),
                                release: prev.release,
                                manifest_sha256: Fixed([0u8; 32]),
                            },
                            current.manifest.clone(),
                        ),
                    },
                    None => (
                        proto::Action::Rollback,
                        ArtifactRef {
                            name: current.name.clone(),
                            release: current.release,
                            manifest_sha256: digest(&current.manifest_sha256)?,
                        },
                        current.manifest.clone(),
                    ),
                }
            }
            other => (
                match other {
                    DirectiveKind::Stage => proto::Action::Stage,
                    DirectiveKind::Switch => proto::Action::Switch,
                    _ => proto::Action::Commit,
                },
                ArtifactRef {
                    name: current.name.clone(),
                    release: current.release,
                    manifest_sha256: digest(&current.manifest_sha256)?,
                },
                current.manifest.clone(),
            ),
        };
        let issued_at = now / 1000;
        let directive = Directive {
            schema: DIRECTIVE_SCHEMA,
            device_id: track.device_id.clone(),
            generation,
            action,
            artifact,
            issued_at,
            expires: issued_at + self.config.directive_ttl_secs.max(2),
        };
        Ok((directive, manifest))
    }

    fn sign_post(&self, directive: &Directive, manifest: &[u8]) -> Result<Vec<u8>, ServiceError> {
        let envelope = Envelope::sign(directive, &[&self.coordinator_key])
            .map_err(|e| ServiceError::Internal(format!("signing a directive: {e}")))?;
        let bytes = envelope
            .to_bytes()
            .map_err(|e| ServiceError::Internal(format!("encoding a directive: {e}")))?;
        DirectivePost {
            schema: POST_SCHEMA,
            directive: ByteBuf(bytes),
            manifest: ByteBuf(manifest.to_vec()),
        }
        .to_bytes()
        .map_err(|e| ServiceError::Internal(format!("encoding a directive post: {e}")))
    }

    /// Applies drained engine actions to the document and writes everything in one
    /// transaction. Finished deployments leave memory afterwards.
    fn apply(&mut self, id: &str, now: Millis, actions: Vec<Action>) -> Result<(), ServiceError> {
        let Some(active) = self.active.get(id) else {
            return Ok(());
        };
        let mut doc = active.doc.clone();
        let plan_ids = active.engine.plan().ids.clone();
        let mut audit = Audit::default();
        let mut quarantine = Vec::new();
        // Directives need store generations, so they are built and signed inside the
        // transaction below; a signing failure there rolls the whole step back.
        let mut directives: Vec<(usize, DirectiveKind)> = Vec::new();
        for action in actions {
            match action {
                Action::Directive { device, kind, .. } => {
                    directives.push((device as usize, kind));
                }
                Action::Target { device, status } => {
                    let dev = plan_ids.get(device as usize).map(String::as_str);
                    if matches!(
                        status,
                        TargetStatus::Failed | TargetStatus::Quarantined | TargetStatus::Skipped
                    ) {
                        audit.push(
                            now,
                            "engine",
                            "target.status",
                            (dev, Some(id)),
                            status.as_str(),
                            format!("target is {}", status.as_str()),
                        );
                    }
                    if status == TargetStatus::Quarantined
                        && let Some(d) = dev
                    {
                        quarantine.push(d.to_string());
                    }
                }
                Action::Gate(g) => {
                    audit.push(
                        now,
                        "engine",
                        "gate",
                        (None, Some(id)),
                        verdict_name(g.verdict),
                        format!("stage {} {}: {}", g.stage, gate_name(g.gate), g.reason),
                    );
                    doc.gates.push(GateRecord {
                        stage: g.stage,
                        gate: gate_name(g.gate).to_string(),
                        verdict: verdict_name(g.verdict).to_string(),
                        reason: g.reason,
                        checks: g
                            .checks
                            .into_iter()
                            .map(|c| (c.name, c.value, c.limit, c.pass))
                            .collect(),
                        at: now,
                    });
                    if doc.gates.len() > MAX_GATES {
                        let excess = doc.gates.len() - MAX_GATES;
                        doc.gates.drain(..excess);
                    }
                }
                Action::Deployment { status, reason } => {
                    audit.push(
                        now,
                        "engine",
                        "deployment.status",
                        (None, Some(id)),
                        status.as_str(),
                        reason.clone(),
                    );
                    if status == DeploymentStatus::Running && doc.started_at.is_none() {
                        doc.started_at = Some(now);
                    }
                    if status.is_terminal() {
                        doc.completed_at = Some(now);
                    }
                    doc.status = status.as_str().to_string();
                    doc.status_reason = reason;
                }
                Action::ApprovalRequired { stage } => audit.push(
                    now,
                    "engine",
                    "approval.required",
                    (None, Some(id)),
                    "waiting",
                    format!("stage {stage} passed its gate and waits for approve"),
                ),
                Action::Audit { at, event } => {
                    audit.push(at, "engine", "rollout", (None, Some(id)), "ok", event)
                }
            }
        }
        let mut new_desired = Vec::with_capacity(directives.len());
        let mut devices_changed = Vec::new();
        for d in &quarantine {
            if let Some(dev) = self.devices.get(d)
                && !dev.quarantined
            {
                let mut dev = dev.clone();
                dev.quarantined = true;
                devices_changed.push(dev);
            }
        }
        let Some(active) = self.active.get(id) else {
            return Ok(());
        };
        let status = active.engine.status();
        doc.status = status.as_str().to_string();
        let engine_json =
            serde_json::to_string(&active.engine).map_err(json_err("engine state"))?;
        // One transaction: generations, signed desired directives, the document, the engine
        // state, device flags and audit lines land together or not at all.
        self.store.atomically(|s| -> Result<(), ServiceError> {
            for (device, kind) in &directives {
                let Some(track) = doc.targets.get(*device) else {
                    continue;
                };
                let generation = s.next_generation(&track.device_id)?;
                let (directive, manifest) =
                    self.build_directive(&doc, track, *kind, generation, now)?;
                let post = self.sign_post(&directive, &manifest)?;
                let record = DesiredRecord {
                    device_id: track.device_id.clone(),
                    generation,
                    deployment_id: id.to_string(),
                    directive: format!(
                        "{} {} release {}",
                        kind_name(*kind),
                        directive.artifact.name,
                        directive.artifact.release
                    ),
                    post,
                    issued_at: directive.issued_at,
                };
                s.put_desired(&record)?;
                new_desired.push(record);
                if let Some(track) = doc.targets.get_mut(*device) {
                    track.generation = generation;
                    track.kind = Some(kind_name(*kind).to_string());
                    track.fed.clear();
                    track.detail.clear();
                }
            }
            let row = DeploymentRow {
                id: id.to_string(),
                flow_id: doc.flow_id.clone(),
                status: doc.status.clone(),
                created_at: doc.created_at,
                doc: serde_json::to_string(&doc).map_err(json_err("deployment"))?,
                engine: engine_json,
            };
            for d in &devices_changed {
                s.put_device(d)?;
            }
            for a in &audit.0 {
                s.audit(a)?;
            }
            s.put_deployment(&row)?;
            Ok(())
        })?;
        for d in new_desired {
            self.desired.insert(d.device_id.clone(), d);
        }
        for d in devices_changed {
            self.devices.insert(d.id.clone(), d);
        }
        if status.is_terminal() {
            self.active.remove(id);
            tracing::info!(deployment = %id, status = %status, "deployment finished");
        } else if let Some(active) = self.active.get_mut(id) {
            active.doc = doc;
        }
        Ok(())
    }

    // Flows.

    /// `POST /flows`.
    pub fn create_flow(
        &mut self,
        input: FlowInput,
        now: Millis,
    ) -> Result<FlowRecord, ServiceError> {
        check_flow_input(&input)?;
        check_definition(&input.definition, floe_flow::Level::Draft)?;
        let id = format!("flow_{}", random_hex(5)?);
        let flow = FlowRecord {
            id: id.clone(),
            name: input.name.trim().to_string(),
            description: input.description,
            tags: input.tags,
            state: "draft".into(),
            version: 1,
            lineage: id.clone(),
            parent_id: None,
            definition: input.definition,
            created_at: now,
            updated_at: now,
            published_at: None,
            archived_at: None,
        };
        self.store.atomically(|s| {
            s.put_flow(&flow)?;
            s.audit(&api_audit(
                now,
                "flow.create",
                None,
                "ok",
                format!("created {id}"),
            ))
        })?;
        Ok(flow)
    }

    /// A flow by id.
    pub fn flow(&self, id: &str) -> Result<FlowRecord, ServiceError> {
        self.store.flow(id)?.ok_or_else(|| ServiceError::NotFound {
            what: "flow",
            id: id.to_string(),
        })
    }

    /// Flows matching a state (archived hidden unless asked) and a tag.
    pub fn flows(
        &self,
        state: Option<&str>,
        tag: Option<&str>,
    ) -> Result<Vec<FlowRecord>, ServiceError> {
        Ok(self
            .store
            .flows()?
            .into_iter()
            .filter(|f| match state {
                Some(s) => f.state == s,
                None => f.state != "archived",
            })
            .filter(|f| tag.is_none_or(|t| f.tags.iter().any(|x| x == t)))
            .collect())
    }

    /// The artifact of a flow version, if published.
    pub fn artifact_of(&self, flow_id: &str) -> Result<Option<ArtifactInfo>, ServiceError> {
        Ok(self.store.artifact_info(flow_id)?)
    }

    /// `PUT /flows/:id`.
    pub fn update_flow(
        &mut self,
        id: &str,
        input: FlowInput,
        now: Millis,
    ) -> Result<FlowRecord, ServiceError> {
        let mut flow = self.flow(id)?;
        if flow.state != "draft" {
            return Err(ServiceError::Conflict(format!(
                "flow {id} is {}; only drafts can be edited (make a new draft with POST /api/v1/flows/{id}/versions)",
                flow.state
            )));
        }
        check_flow_input(&input)?;
        check_definition(&input.definition, floe_flow::Level::Draft)?;
        flow.name = input.name.trim().to_string();
        flow.description = input.description;
        flow.tags = input.tags;
        flow.definition = input.definition;
        flow.updated_at = now;
        self.store.atomically(|s| {
            s.put_flow(&flow)?;
            s.audit(&api_audit(
                now,
                "flow.update",
                None,
                "ok",
                format!("edited {id}"),
            ))
        })?;
        Ok(flow)
    }

    fn flow_in_use(&self, id: &str) -> Result<Option<String>, ServiceError> {
        if let Some(a) = self.active.values().find(|a| a.doc.flow_id == id) {
            return Ok(Some(format!("{} ({})", a.doc.id, a.doc.status)));
        }
        if self
            .store
            .flow_in_use(id, &["pending", "running", "paused"])?
        {
            return Ok(Some("an unfinished deployment".into()));
        }
        Ok(None)
    }

    /// `DELETE /flows/:id`.
    pub fn delete_flow(&mut self, id: &str, now: Millis) -> Result<(), ServiceError> {
        let flow = self.flow(id)?;
        if let Some(dep) = self.flow_in_use(id)? {
            return Err(ServiceError::Conflict(format!(
                "flow {id} is used by deployment {dep}; finish or roll it back first"
            )));
        }
        let artifact = self.store.artifact(id)?;
        self.store.atomically(|s| {
            s.delete_flow(&flow.id)?;
            s.audit(&api_audit(
                now,
                "flow.delete",
                None,
                "ok",
                format!("deleted {id}"),
            ))
        })?;
        if let Some(a) = artifact {
            let _ = std::fs::remove_file(&a.bundle_path);
        }
        Ok(())
    }

    /// `POST /flows/:id/publish`: complete validation, then the signed bundle.
    pub fn publish_flow(&mut self, id: &str, now: Millis) -> Result<FlowRecord, ServiceError> {
        let mut flow = self.flow(id)?;
        if flow.state != "draft" {
            return Err(ServiceError::Conflict(format!(
                "flow {id} is {}; only drafts can be published",
                flow.state
            )));
        }
        let bytes = check_definition(&flow.definition, floe_flow::Level::Complete)?;
        let dir = self.config.data_dir.join("artifacts");
        std::fs::create_dir_all(&dir)
            .map_err(|e| ServiceError::Internal(format!("creating {}: {e}", dir.display())))?;
        let release = flow.version;
        let version = format!("1.{release}.0");
        let path = dir.join(format!("{}-{release}.floe", flow.lineage));
        // A bundle left by a publish that crashed before its database write is stale: the
        // flow is still a draft, so nothing refers to it.
        if path.exists() {
            let _ = std::fs::remove_file(&path);
        }
        let created = now / 1000;
        let expires = created + self.config.artifact_ttl_days.saturating_mul(86_400);
        let spec = BuildSpec::new(&flow.lineage, &version, release, created, expires);
        let manifest = build(&spec, &bytes, None, &[&self.release_key], &path)
            .map_err(|e| ServiceError::Internal(format!("building the bundle: {e}")))?;
        let reader = BundleReader::open(&path)
            .map_err(|e| ServiceError::Internal(format!("reading the bundle back: {e}")))?;
        let artifact = ArtifactRecord {
            flow_id: flow.id.clone(),
            name: flow.lineage.clone(),
            release,
            version,
            manifest_sha256: Digest::of(&reader.envelope.payload.0).to_hex(),
            size: manifest.size,
            chunk_size: manifest.chunk_size,
            bundle_path: path.display().to_string(),
            manifest: reader.envelope_bytes.clone(),
            payload: bytes,
            created_at: now,
        };
        flow.state = "published".into();
        flow.published_at = Some(now);
        flow.updated_at = now;
        let result = self.store.atomically(|s| {
            s.put_artifact(&artifact)?;
            s.put_flow(&flow)?;
            s.audit(&api_audit(
                now,
                "flow.publish",
                None,
                "ok",
                format!(
                    "published {id} as {} release {release} ({})",
                    artifact.name, artifact.manifest_sha256
                ),
            ))
        });
        if let Err(e) = result {
            let _ = std::fs::remove_file(&path);
            return Err(e.into());
        }
        self.published.send_modify(|n| *n += 1);
        Ok(flow)
    }

    /// `POST /flows/:id/archive`.
    pub fn archive_flow(&mut self, id: &str, now: Millis) -> Result<FlowRecord, ServiceError> {
        let mut flow = self.flow(id)?;
        if flow.state == "archived" {
            return Err(ServiceError::Conflict(format!(
                "flow {id} is archived already"
            )));
        }
        if let Some(dep) = self.flow_in_use(id)? {
            return Err(ServiceError::Conflict(format!(
                "flow {id} is used by deployment {dep}; it cannot be archived until that finishes"
            )));
        }
        flow.state = "archived".into();
        flow.archived_at = Some(now);
        flow.updated_at = now;
        self.store.atomically(|s| {
            s.put_flow(&flow)?;
            s.audit(&api_audit(
                now,
                "flow.archive",
                None,
                "ok",
                format!("archived {id}"),
            ))
        })?;
        Ok(flow)
    }

    /// `POST /flows/:id/versions`: a new draft after the lineage's newest version.
    pub fn new_version(&mut self, id: &str, now: Millis) -> Result<FlowRecord, ServiceError> {
        let source = self.flow(id)?;
        if source.state == "draft" {
            return Err(ServiceError::Conflict(format!(
                "flow {id} is a draft; edit it instead of making a new version"
            )));
        }
        let version = self.store.latest_version(&source.lineage)? + 1;
        let new_id = format!("flow_{}", random_hex(5)?);
        let flow = FlowRecord {
            id: new_id.clone(),
            state: "draft".into(),
            version,
            parent_id: Some(source.id.clone()),
            created_at: now,
            updated_at: now,
            published_at: None,
            archived_at: None,
            ..source
        };
        self.store.atomically(|s| {
            s.put_flow(&flow)?;
            s.audit(&api_audit(
                now,
                "flow.version",
                None,
                "ok",
                format!("{new_id} is version {version} of {}", flow.lineage),
            ))
        })?;
        Ok(flow)
    }

    // Deployments.

    /// `POST /deployments`: a pending deployment with its compiled plan.
    pub fn create_deployment(
        &mut self,
        input: DeploymentInput,
        now: Millis,
    ) -> Result<String, ServiceError> {
        let flow = self.flow(&input.flow_id)?;
        if flow.state != "published" {
            return Err(ServiceError::Conflict(format!(
                "flow {} is {}; only published flows can be deployed",
                flow.id, flow.state
            )));
        }
        let artifact = self.store.artifact(&flow.id)?.ok_or_else(|| {
            ServiceError::Internal(format!("published flow {} has no artifact", flow.id))
        })?;
        let strategy = Strategy::parse(&input.strategy).ok_or_else(|| {
            validation(
                "strategy",
                format!(
                    "unknown strategy {:?}; use all-at-once, rolling, canary, blue-green or canary-waves",
                    input.strategy
                ),
            )
        })?;
        let config = strategy_config(strategy, &input.config)?;
        let request = serde_json::to_value(&input).map_err(json_err("deployment request"))?;
        let targets: Vec<&DeviceRecord> = match (&input.target_devices, &input.selector) {
            (Some(_), Some(_)) => {
                return Err(validation(
                    "selector",
                    "give target_devices or a selector, not both",
                ));
            }
            (None, None) => {
                return Err(validation(
                    "target_devices",
                    "give target_devices or a selector",
                ));
            }
            (Some(list), None) => list
                .iter()
                .map(|id| {
                    self.devices.get(id).ok_or_else(|| ServiceError::NotFound {
                        what: "device",
                        id: id.clone(),
                    })
                })
                .collect::<Result<_, _>>()?,
            (None, Some(sel)) => self
                .devices
                .values()
                .filter(|d| sel.device_type.as_ref().is_none_or(|t| *t == d.device_type))
                .filter(|d| sel.region.as_ref().is_none_or(|r| *r == d.region))
                .filter(|d| sel.labels.iter().all(|(k, v)| d.labels.get(k) == Some(v)))
                .collect(),
        };
        if targets.is_empty() {
            return Err(validation("target_devices", "the target set is empty"));
        }
        // One device follows one deployment at a time: its desired directive is one slot.
        for d in &targets {
            if let Some(a) = self.active.values().find(|a| a.index.contains_key(&d.id)) {
                return Err(ServiceError::Conflict(format!(
                    "device {} is a target of unfinished deployment {} ({}); finish it first",
                    d.id, a.doc.id, a.doc.status
                )));
            }
        }
        if self.active.len() >= MAX_ACTIVE_DEPLOYMENTS {
            return Err(ServiceError::Conflict(format!(
                "{MAX_ACTIVE_DEPLOYMENTS} deployments are unfinished; finish one before creating another"
            )));
        }
        // Baselines per device type: the mean of the registry's last health reports of that
        // type, or zeros (error rate 0, no latency or memory reference) when none reported.
        let mut sums: HashMap<String, (f64, f64, f64, f64)> = HashMap::new();
        for d in self.devices.values() {
            let entry = sums.entry(d.device_type.clone()).or_default();
            if let Some(h) = &d.health {
                entry.0 += h.error_rate;
                entry.1 += h.p95_ms;
                entry.2 += h.memory_mb;
                entry.3 += 1.0;
            }
        }
        let baselines: HashMap<String, Baseline> = sums
            .into_iter()
            .map(|(t, (e, p, m, n))| {
                let b = if n > 0.0 {
                    Baseline {
                        error_rate: e / n,
                        p95_ms: p / n,
                        memory_mb: m / n,
                    }
                } else {
                    Baseline {
                        error_rate: 0.0,
                        p95_ms: 0.0,
                        memory_mb: 0.0,
                    }
                };
                (t, b)
            })
            .collect();
        let specs: Vec<TargetSpec> = targets
            .iter()
            .map(|d| TargetSpec {
                id: d.id.clone(),
                device_type: d.device_type.clone(),
                region: d.region.clone(),
                flags: TargetFlags {
                    maintenance: d.maintenance,
                    quarantined: d.quarantined,
                    ..TargetFlags::default()
                },
                monitoring: 0,
            })
            .collect();
        let mut tracks = Vec::with_capacity(targets.len());
        for d in &targets {
            tracks.push(TargetTrack {
                device_id: d.id.clone(),
                generation: self.store.generation(&d.id)?,
                kind: None,
                fed: Vec::new(),
                previous: d.last_known_good.clone().or_else(|| d.installed.clone()),
                detail: String::new(),
            });
        }
        let seed_hex = random_hex(8)?;
        let seed = u64::from_str_radix(&seed_hex, 16).unwrap_or(1);
        let config_view = config_json(&config);
        let plan = Plan::new(artifact.name.clone(), config, specs, &baselines, seed)
            .map_err(plan_error)?;
        let engine = Rollout::new(plan, now);
        let id = format!("dep_{}", random_hex(5)?);
        let doc = DeploymentDoc {
            id: id.clone(),
            flow_id: flow.id.clone(),
            artifact: ArtifactSummary {
                name: artifact.name.clone(),
                release: artifact.release,
                version: artifact.version.clone(),
                manifest_sha256: artifact.manifest_sha256.clone(),
            },
            strategy: strategy.name().to_string(),
            request,
            config: config_view,
            status: engine.status().as_str().to_string(),
            status_reason: String::new(),
            created_at: now,
            started_at: None,
            completed_at: None,
            gates: Vec::new(),
            targets: tracks,
        };
        let index = engine
            .plan()
            .ids
            .iter()
            .enumerate()
            .map(|(i, d)| (d.clone(), i as u32))
            .collect();
        let row = DeploymentRow {
            id: id.clone(),
            flow_id: doc.flow_id.clone(),
            status: doc.status.clone(),
            created_at: now,
            doc: serde_json::to_string(&doc).map_err(json_err("deployment"))?,
            engine: serde_json::to_string(&engine).map_err(json_err("engine state"))?,
        };
        self.store.atomically(|s| {
            s.put_deployment(&row)?;
            s.audit(&AuditRecord {
                at: now,
                actor: "api".into(),
                action: "deployment.create".into(),
                device_id: None,
                deployment_id: Some(id.clone()),
                outcome: "pending".into(),
                detail: format!(
                    "{} of {} release {} to {} devices",
                    doc.strategy,
                    artifact.name,
                    artifact.release,
                    doc.targets.len()
                ),
            })
        })?;
        self.active
            .insert(id.clone(), Active { doc, engine, index });
        Ok(id)
    }

    /// Runs `f` over a deployment's document and engine (in memory when unfinished, from the
    /// store otherwise).
    pub fn with_deployment<T>(
        &self,
        id: &str,
        f: impl FnOnce(&DeploymentDoc, &Rollout) -> T,
    ) -> Result<T, ServiceError> {
        if let Some(a) = self.active.get(id) {
            return Ok(f(&a.doc, &a.engine));
        }
        let row = self
            .store
            .deployment(id)?
            .ok_or_else(|| ServiceError::NotFound {
                what: "deployment",
                id: id.to_string(),
            })?;
        let doc: DeploymentDoc = serde_json::from_str(&row.doc).map_err(json_err("deployment"))?;
        let engine: Rollout =
            serde_json::from_str(&row.engine).map_err(json_err("engine state"))?;
        Ok(f(&doc, &engine))
    }

    /// Every deployment id with its status and flow, oldest first.
    pub fn deployment_ids(&self) -> Result<Vec<(String, String, String)>, ServiceError> {
        Ok(self
            .store
            .deployments()?
            .into_iter()
            .map(|r| (r.id, r.status, r.flow_id))
            .collect())
    }

    /// An operator command (`start`, `pause`, `resume`, `approve`, `rollback`).
    pub fn command(&mut self, id: &str, command: Command, now: Millis) -> Result<(), ServiceError> {
        if !self.active.contains_key(id) {
            let row = self
                .store
                .deployment(id)?
                .ok_or_else(|| ServiceError::NotFound {
                    what: "deployment",
                    id: id.to_string(),
                })?;
            return Err(ServiceError::Conflict(format!(
                "deployment {id} is {}; a finished deployment cannot {command}",
                row.status
            )));
        }
        // The rollback target of each device is what the registry says it ran when the
        // deployment starts (the device's last known good release, else its active one).
        if command == Command::Start
            && let Some(a) = self.active.get_mut(id)
            && a.engine.status() == DeploymentStatus::Pending
        {
            for track in &mut a.doc.targets {
                if let Some(d) = self.devices.get(&track.device_id) {
                    track.previous = d.last_known_good.clone().or_else(|| d.installed.clone());
                }
            }
        }
        self.store.audit(&AuditRecord {
            at: now,
            actor: "api".into(),
            action: format!("deployment.{command}"),
            device_id: None,
            deployment_id: Some(id.to_string()),
            outcome: "requested".into(),
            detail: format!("operator asked to {command}"),
        })?;
        if command == Command::Start {
            // The engine learns which targets are offline before it dispatches, so it counts
            // them offline (not failed) and queues them instead of waiting for a timeout.
            let offline: Vec<u32> = self
                .active
                .get(id)
                .map(|a| {
                    a.doc
                        .targets
                        .iter()
                        .enumerate()
                        .filter(|(_, t)| {
                            self.devices
                                .get(&t.device_id)
                                .is_some_and(|d| !self.online(d))
                        })
                        .filter_map(|(i, _)| u32::try_from(i).ok())
                        .collect()
                })
                .unwrap_or_default();
            for device in offline {
                self.step(
                    id,
                    now,
                    Input::Device {
                        device,
                        event: DeviceEvent::Offline,
                    },
                )?;
            }
        }
        self.step(id, now, Input::Command(command))
    }

    // Devices.

    /// Every registered device.
    pub fn devices(&self) -> impl Iterator<Item = &DeviceRecord> {
        self.devices.values()
    }

    /// A device by id.
    pub fn device(&self, id: &str) -> Result<&DeviceRecord, ServiceError> {
        self.devices.get(id).ok_or_else(|| ServiceError::NotFound {
            what: "device",
            id: id.to_string(),
        })
    }

    /// Whether a device counts as online at `now`.
    pub fn online(&self, d: &DeviceRecord) -> bool {
        !d.offline && d.last_seen.is_some()
    }

    /// The current directive generation of a device.
    pub fn desired_generation(&self, id: &str) -> u64 {
        self.desired.get(id).map(|d| d.generation).unwrap_or(0)
    }

    /// `PATCH /devices/:id`.
    pub fn patch_device(
        &mut self,
        id: &str,
        patch: DevicePatch,
        now: Millis,
    ) -> Result<DeviceRecord, ServiceError> {
        let mut dev = self.device(id)?.clone();
        if let Some(m) = patch.maintenance {
            dev.maintenance = m;
        }
        if let Some(q) = patch.quarantined {
            dev.quarantined = q;
        }
        self.store.atomically(|s| {
            s.put_device(&dev)?;
            s.audit(&api_audit(
                now,
                "device.flags",
                Some(id),
                "ok",
                format!(
                    "maintenance={} quarantined={}",
                    dev.maintenance, dev.quarantined
                ),
            ))
        })?;
        self.devices.insert(id.to_string(), dev.clone());
        Ok(dev)
    }

    /// `POST /devices`: puts a device's key on the enrollment allowlist.
    pub fn allow_device(
        &mut self,
        input: DeviceInput,
        now: Millis,
    ) -> Result<DeviceRecord, ServiceError> {
        if input.id.is_empty() || input.id.len() > 128 || input.id.chars().any(char::is_control) {
            return Err(validation("id", "a device id is 1 to 128 printable bytes"));
        }
        PublicKeyBytes::from_hex(&input.public_key).map_err(|e| {
            validation(
                "public_key",
                format!("not a 32-byte ed25519 public key in hex: {e}"),
            )
        })?;
        if self.devices.contains_key(&input.id) {
            return Err(ServiceError::Conflict(format!(
                "device {} is registered already",
                input.id
            )));
        }
        if self.devices.len() >= MAX_DEVICES {
            return Err(ServiceError::Conflict(format!(
                "the registry holds {MAX_DEVICES} devices, its limit"
            )));
        }
        let dev = DeviceRecord {
            id: input.id.clone(),
            public_key: input.public_key.to_lowercase(),
            device_type: input.device_type.unwrap_or_else(|| "unknown".into()),
            arch: String::new(),
            region: input.region.unwrap_or_default(),
            labels: input.labels,
            runtime_version: String::new(),
            installed: None,
            standby: None,
            last_known_good: None,
            on_trial: false,
            health: None,
            applied: None,
            last_seen: None,
            last_seq: 0,
            offline: false,
            maintenance: false,
            quarantined: false,
            added_at: now,
            enrolled_at: None,
        };
        self.store.atomically(|s| {
            s.put_device(&dev)?;
            s.audit(&api_audit(
                now,
                "device.allow",
                Some(&dev.id),
                "ok",
                format!("key {} allowlisted", dev.public_key),
            ))
        })?;
        self.devices.insert(dev.id.clone(), dev.clone());
        Ok(dev)
    }

    /// `POST /enrollment-tokens`: a one-time token valid for `ttl`.
    pub fn create_token(
        &mut self,
        ttl: Millis,
        now: Millis,
    ) -> Result<(String, Millis), ServiceError> {
        if self.store.open_tokens(now)? >= MAX_OPEN_TOKENS {
            return Err(ServiceError::Conflict(format!(
                "{MAX_OPEN_TOKENS} enrollment tokens are open; use or let some expire first"
            )));
        }
        let token = random_hex(16)?;
        let expires = now.saturating_add(ttl);
        self.store.atomically(|s| {
            s.put_token(&token, expires)?;
            s.audit(&api_audit(
                now,
                "enrollment.token",
                None,
                "ok",
                format!("token valid for {}", format_duration(ttl)),
            ))
        })?;
        Ok((token, expires))
    }

    /// `GET /audit`.
    pub fn audit_entries(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, ServiceError> {
        Ok(self.store.audit_entries(filter)?)
    }

    // The fabric side.

    /// A device's report (its signature already checked against the key it names): enrolls
    /// an unknown device that presents a valid unused token (or is allowlisted), refuses a
    /// known device whose key differs, ignores a report not newer than the last, updates the
    /// registry from the report (the device wins; disagreements are audited), and feeds the
    /// engines of the deployments that target it.
    pub fn device_report(&mut self, r: DeviceReport, now: Millis) -> Result<(), ServiceError> {
        let key = r.public_key.to_hex();
        let mut audit = Audit::default();
        let existing = self.devices.get(&r.device_id).cloned();
        let use_token;
        let mut dev = match existing {
            Some(d) => {
                if d.public_key != key {
                    let detail = format!(
                        "device {} is enrolled with key {}, but the report is signed by {key}",
                        r.device_id, d.public_key
                    );
                    // One audit line per device per minute, so a stream of forged reports
                    // cannot grow the log without bound (the map holds registered ids only).
                    let last = self.refusals.get(&r.device_id).copied();
                    if last.is_some_and(|t| now.saturating_sub(t) < REFUSAL_AUDIT_EVERY) {
                        return Err(ServiceError::Refused(detail));
                    }
                    self.refusals.insert(r.device_id.clone(), now);
                    self.store.audit(&AuditRecord {
                        at: now,
                        actor: "device".into(),
                        action: "report".into(),
                        device_id: Some(r.device_id.clone()),
                        deployment_id: None,
                        outcome: "refused".into(),
                        detail: detail.clone(),
                    })?;
                    return Err(ServiceError::Refused(detail));
                }
                if d.enrolled_at.is_none() {
                    audit.push(
                        now,
                        "device",
                        "enroll",
                        (Some(&d.id), None),
                        "ok",
                        "enrolled from the allowlist",
                    );
                }
                use_token = None;
                d
            }
            None => {
                let Some(token) = &r.enroll_token else {
                    return Err(ServiceError::Refused(format!(
                        "device {} is not enrolled: its key is not on the allowlist and the report carries no enrollment token",
                        r.device_id
                    )));
                };
                if self.devices.len() >= MAX_DEVICES {
                    return Err(ServiceError::Refused(format!(
                        "the registry holds {MAX_DEVICES} devices, its limit"
                    )));
                }
                audit.push(
                    now,
                    "device",
                    "enroll",
                    (Some(&r.device_id), None),
                    "ok",
                    "enrolled with a one-time token",
                );
                use_token = Some(token.clone());
                DeviceRecord {
                    id: r.device_id.clone(),
                    public_key: key.clone(),
                    device_type: r.facts.device_type.clone(),
                    arch: r.facts.arch.clone(),
                    region: r.facts.region.clone(),
                    labels: BTreeMap::new(),
                    runtime_version: String::new(),
                    installed: None,
                    standby: None,
                    last_known_good: None,
                    on_trial: false,
                    health: None,
                    applied: None,
                    last_seen: None,
                    last_seq: 0,
                    offline: false,
                    maintenance: false,
                    quarantined: false,
                    added_at: now,
                    enrolled_at: None,
                }
            }
        };
        if dev.enrolled_at.is_some() && r.seq <= dev.last_seq {
            tracing::debug!(device = %dev.id, seq = r.seq, last = dev.last_seq, "stale report ignored");
            return Ok(());
        }
        // The device is the source of truth about itself; where the registry said otherwise
        // (an operator's allowlist entry, or a stale record), the device wins and it is logged.
        let labels: BTreeMap<String, String> = r
            .facts
            .labels
            .iter()
            .map(|l| (l.key.clone(), l.value.clone()))
            .collect();
        let mut disagree = Vec::new();
        if dev.enrolled_at.is_some() || dev.device_type != "unknown" {
            if dev.device_type != r.facts.device_type {
                disagree.push(format!(
                    "type {:?} -> {:?}",
                    dev.device_type, r.facts.device_type
                ));
            }
            if !dev.region.is_empty() && dev.region != r.facts.region {
                disagree.push(format!("region {:?} -> {:?}", dev.region, r.facts.region));
            }
        }
        if !dev.labels.is_empty() && dev.labels != labels {
            disagree.push(format!("labels {:?} -> {:?}", dev.labels, labels));
        }
        let installed = r.active.as_ref().map(slot_record);
        if dev.enrolled_at.is_some() && dev.installed != installed {
            disagree.push(format!(
                "installed {} -> {}",
                dev.installed
                    .as_ref()
                    .map(|s| format!("{} r{}", s.name, s.release))
                    .unwrap_or_else(|| "nothing".into()),
                installed
                    .as_ref()
                    .map(|s| format!("{} r{}", s.name, s.release))
                    .unwrap_or_else(|| "nothing".into()),
            ));
        }
        if !disagree.is_empty() {
            audit.push(
                now,
                "device",
                "registry.update",
                (Some(&dev.id), None),
                "device wins",
                disagree.join("; "),
            );
        }
        let was_offline = dev.offline;
        if was_offline {
            audit.push(
                now,
                "device",
                "device.online",
                (Some(&dev.id), None),
                "online",
                "reporting again",
            );
        }
        dev.device_type = r.facts.device_type.clone();
        dev.arch = r.facts.arch.clone();
        dev.region = r.facts.region.clone();
        dev.labels = labels;
        dev.runtime_version = r.facts.runtime_version.clone();
        dev.installed = installed;
        dev.standby = r.standby.as_ref().map(slot_record);
        dev.last_known_good = r.last_known_good.as_ref().map(slot_record);
        dev.on_trial = r.on_trial;
        if let Some(h) = &r.health {
            let hr = health_input(h);
            dev.health = Some(HealthRecord {
                status: match h.status {
                    HealthLevel::Healthy => "healthy",
                    HealthLevel::Degraded => "degraded",
                    HealthLevel::Unhealthy => "unhealthy",
                }
                .into(),
                error_rate: f64::from(hr.error_rate),
                p95_ms: f64::from(hr.p95_ms),
                memory_mb: f64::from(hr.memory_mb),
                restarts: h.restarts,
                flow_running: h.flow_running,
            });
        }
        dev.applied = r.applied.as_ref().map(|a| AppliedRecord {
            generation: a.generation,
            action: a.action.to_string(),
            progress: a.progress.to_string(),
            detail: a.detail.clone(),
        });
        dev.last_seen = Some(now);
        dev.last_seq = r.seq;
        dev.offline = false;
        dev.enrolled_at.get_or_insert(now);
        let refused = self.store.atomically(|s| -> Result<bool, StoreError> {
            if let Some(token) = &use_token
                && !s.take_token(token, &dev.id, now)?
            {
                return Ok(true);
            }
            s.put_device(&dev)?;
            for a in &audit.0 {
                s.audit(a)?;
            }
            Ok(false)
        })?;
        if refused {
            return Err(ServiceError::Refused(format!(
                "device {} is not enrolled: its enrollment token is unknown, used or expired",
                dev.id
            )));
        }
        let id = dev.id.clone();
        self.devices.insert(id.clone(), dev);
        if was_offline {
            self.feed_all(&id, now, |_| vec![DeviceEvent::Online]);
        }
        if let Some(applied) = &r.applied {
            let detail = applied.detail.clone();
            self.feed_all(&id, now, |track| {
                if track.generation != applied.generation || track.kind.is_none() {
                    return Vec::new();
                }
                if !detail.is_empty() {
                    track.detail = detail.clone();
                }
                let events: Vec<DeviceEvent> = events_for(applied.action, applied.progress)
                    .into_iter()
                    .filter(|e| !track.fed.contains(e))
                    .collect();
                track.fed.extend(events.iter().copied());
                events
            });
        }
        if let Some(h) = &r.health {
            let report = health_input(h);
            let ids: Vec<(String, u32)> = self
                .active
                .iter()
                .filter_map(|(d, a)| a.index.get(&id).map(|i| (d.clone(), *i)))
                .collect();
            for (dep, index) in ids {
                if let Err(e) = self.step(
                    &dep,
                    now,
                    Input::Health {
                        device: index,
                        report,
                    },
                ) {
                    tracing::warn!(deployment = %dep, device = %id, error = %e, "engine refused a health report");
                }
            }
        }
        Ok(())
    }

    /// The current post of a device, re-signed with a fresh `issued_at` when the signed one
    /// is older than half its lifetime.
    pub fn directive_post(
        &mut self,
        device: &str,
        now: Millis,
    ) -> Result<Option<(u64, Vec<u8>)>, ServiceError> {
        let Some(rec) = self.desired.get(device).cloned() else {
            return Ok(None);
        };
        let age = (now / 1000).saturating_sub(rec.issued_at);
        if age <= self.config.directive_ttl_secs / 2 {
            return Ok(Some((rec.generation, rec.post)));
        }
        let post = DirectivePost::from_bytes(&rec.post)
            .map_err(|e| ServiceError::Internal(format!("stored directive post: {e}")))?;
        let public: PublicKeyBytes = Fixed(self.coordinator_key.verifying_key().to_bytes());
        let verified = proto::open::<Directive>(&post.directive.0, &[TrustedKey::new(public)], 1)
            .map_err(|e| ServiceError::Internal(format!("stored directive: {e}")))?;
        let mut directive = verified.value;
        directive.issued_at = now / 1000;
        directive.expires = directive.issued_at + self.config.directive_ttl_secs.max(2);
        let bytes = self.sign_post(&directive, &post.manifest.0)?;
        let fresh = DesiredRecord {
            post: bytes.clone(),
            issued_at: directive.issued_at,
            ..rec
        };
        self.store.put_desired(&fresh)?;
        self.desired.insert(device.to_string(), fresh);
        Ok(Some((directive.generation, bytes)))
    }

    /// Whether `device_id` has a desired directive whose generation is above the one it last
    /// reported applied (the rule [`Core::outbox`] and [`Core::post_for`] share).
    fn is_behind(&self, device_id: &str) -> bool {
        let Some(desired) = self.desired.get(device_id) else {
            return false;
        };
        let applied = self
            .devices
            .get(device_id)
            .and_then(|dev| dev.applied.as_ref())
            .map(|a| a.generation)
            .unwrap_or(0);
        applied < desired.generation
    }

    /// One device's current directive post when it is behind (the answer to a device that
    /// reports directly), or None when it has nothing left to apply.
    pub fn post_for(
        &mut self,
        device_id: &str,
        now: Millis,
    ) -> Result<Option<Vec<u8>>, ServiceError> {
        if !self.is_behind(device_id) {
            return Ok(None);
        }
        Ok(self.directive_post(device_id, now)?.map(|(_, post)| post))
    }

    /// Every device whose reported applied generation is below its desired directive's.
    pub fn outbox(&mut self, now: Millis) -> Result<Vec<Outgoing>, ServiceError> {
        let behind: Vec<String> = self
            .desired
            .values()
            .filter(|d| self.is_behind(&d.device_id))
            .map(|d| d.device_id.clone())
            .collect();
        let mut out = Vec::with_capacity(behind.len());
        for device in behind {
            if let Some((generation, post)) = self.directive_post(&device, now)? {
                out.push(Outgoing {
                    device_id: device,
                    generation,
                    post,
                });
            }
        }
        out.sort_by(|a, b| a.device_id.cmp(&b.device_id));
        Ok(out)
    }

    /// Every published artifact.
    pub fn artifact_blobs(&self) -> Result<Vec<ArtifactBlob>, ServiceError> {
        Ok(self
            .store
            .artifacts()?
            .into_iter()
            .map(|a| ArtifactBlob {
                name: a.name,
                release: a.release,
                manifest: a.manifest,
                payload: a.payload,
                chunk_size: a.chunk_size,
            })
            .collect())
    }
}

fn api_audit(
    at: Millis,
    action: &str,
    device: Option<&str>,
    outcome: &str,
    detail: String,
) -> AuditRecord {
    AuditRecord {
        at,
        actor: "api".into(),
        action: action.into(),
        device_id: device.map(str::to_string),
        deployment_id: None,
        outcome: outcome.into(),
        detail,
    }
}

/// The API spelling of a verdict.
pub fn verdict_name(v: floe_rollout::Verdict) -> &'static str {
    match v {
        floe_rollout::Verdict::Pass => "pass",
        floe_rollout::Verdict::Wait => "wait",
        floe_rollout::Verdict::Fail => "fail",
    }
}

/// The API spelling of a gate.
pub fn gate_name(g: GateKind) -> &'static str {
    match g {
        GateKind::Canary => "canary",
        GateKind::Wave => "wave",
        GateKind::Completion => "completion",
        GateKind::Staged => "staged",
    }
}
