//! The deployments part: the single owner of the rollout engines of unfinished deployments
//! and of every write their steps make. A deployment is created here (its plan compiled from
//! the registry's view of the targets), commanded here, and stepped here: each input runs
//! through its engine and what the step changed (the input itself in the deployment's log, the
//! targets and document head it touched, signed desired directives with store-allocated
//! generations, quarantine flags, audit lines) is written in one transaction by [`apply`].
//! The engine's whole state is written only as a periodic snapshot (every
//! `snapshot_every` inputs of [`ServiceConfig`](super::ServiceConfig), and at the end); restart is the snapshot plus the logged inputs
//! replayed, which is exact because the engine is deterministic. An input the engine
//! [ignores](floe_rollout::Rollout::ignores) writes nothing. If a step's write fails, the
//! deployment is reloaded from the store the same way, so memory never runs ahead of the disk.
//!
//! The other parts it needs for a step (the store, the registry, the directives) come in as an
//! [`Env`] of borrows, so this part never reaches into their fields and the core stays a
//! router.

mod apply;
mod capture;
pub(super) mod preflight;
mod stuck;
mod unreachable;

use super::audit::line;
use super::directives::Directives;
use super::events::EventSink;
use super::model::{ArtifactSummary, DeploymentDoc, DeploymentInput, TargetTrack};
use super::registry::Registry;
use super::strategy::{config_json, plan_error, strategy_config};
use super::{
    MAX_ACTIVE_DEPLOYMENTS, OFFLINE_CHECK, ServiceError, json_err, random_token, validation,
};
use crate::store::{ArtifactRecord, DeploymentRow, FlowRecord, SNAPSHOT_VERSION, Store};
use floe_rollout::{
    Command, DeploymentStatus, DeviceEvent, HealthReport, Input, Millis, Plan, Rollout,
    RolloutError, Strategy, TargetSpec, TargetStatus,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The other parts a step reads and updates, borrowed from the core for one call.
pub(super) struct Env<'a> {
    /// The store every write goes to.
    pub(super) store: &'a Store,
    /// The registry (targets, baselines, quarantine flags).
    pub(super) registry: &'a mut Registry,
    /// The directives (signing, the desired posts).
    pub(super) directives: &'a mut Directives,
    /// Where a step's events are staged (published after the commit).
    pub(super) events: &'a mut EventSink,
    /// The health rollups baselines are read from (with the store's).
    pub(super) rollups: &'a super::rollups::Rollups,
    /// The data key secret variable values are decrypted with (to be sealed to targets).
    pub(super) vault: &'a super::vault::Vault,
}

/// An unfinished deployment in memory.
#[derive(Debug)]
struct Active {
    doc: DeploymentDoc,
    engine: Rollout,
    /// Device id → index in the plan.
    index: HashMap<String, u32>,
    /// The last input logged.
    seq: u64,
    /// The last input the stored snapshot covers.
    snapshot_seq: u64,
    /// Targets changed since they were last written.
    dirty: BTreeSet<u32>,
    /// Whether the document head (status, times, gates) changed since it was last written.
    head_dirty: bool,
    /// Each target's status as last announced (the `from` of a `target.transition`).
    announced: Vec<TargetStatus>,
    /// The stage last announced.
    stage: u32,
    /// When the deployment last made progress (a target transition or a stage change).
    last_progress: Millis,
    /// Whether `deployment.stuck` was announced since the last progress.
    stuck_announced: bool,
    /// How long without progress makes the deployment stuck (its `config.stuck_after`).
    stuck_after: Millis,
}

impl Active {
    /// A deployment's in-memory form: its document, its engine and the engine's device index,
    /// at log position `seq` with a snapshot at `snapshot_seq`.
    fn new(doc: DeploymentDoc, engine: Rollout, seq: u64, snapshot_seq: u64) -> Self {
        let index = engine
            .plan()
            .ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), i as u32))
            .collect();
        let announced = (0..engine.plan().ids.len())
            .map(|i| {
                u32::try_from(i)
                    .ok()
                    .and_then(|i| engine.target_status(i))
                    .unwrap_or(TargetStatus::Pending)
            })
            .collect();
        let last_progress = doc.started_at.unwrap_or(doc.created_at);
        let stuck_after = stuck::parse_stuck_after(&doc.config.stuck_after);
        Self {
            stuck_after,
            stage: engine.current_stage(),
            doc,
            engine,
            index,
            seq,
            snapshot_seq,
            dirty: BTreeSet::new(),
            head_dirty: false,
            announced,
            last_progress,
            stuck_announced: false,
        }
    }
}

/// A deployment document's head as stored: everything but the targets, which have rows of
/// their own.
fn head_json(doc: &mut DeploymentDoc) -> Result<String, ServiceError> {
    let targets = std::mem::take(&mut doc.targets);
    let json = serde_json::to_string(doc).map_err(json_err("deployment"));
    doc.targets = targets;
    json
}

/// One target as stored.
fn track_json(track: &TargetTrack) -> Result<String, ServiceError> {
    serde_json::to_string(track).map_err(json_err("deployment target"))
}

/// Reads a stored deployment back: its document with its targets, and its engine as the
/// snapshot with every logged input after it replayed (the actions they produced were
/// written with them, so they are drained and dropped). Returns the log position too.
fn decode(
    store: &Store,
    row: &DeploymentRow,
) -> Result<(DeploymentDoc, Rollout, u64, u64), ServiceError> {
    let mut doc: DeploymentDoc = serde_json::from_str(&row.doc).map_err(json_err("deployment"))?;
    let targets = store.targets(&row.id)?;
    if !targets.is_empty() {
        doc.targets = targets
            .iter()
            .map(|t| serde_json::from_str(t).map_err(json_err("deployment target")))
            .collect::<Result<_, _>>()?;
    }
    let (snapshot_seq, version) = store.snapshot_position(&row.id)?.unwrap_or((0, 1));
    if !(1..=SNAPSHOT_VERSION).contains(&version) {
        return Err(ServiceError::Internal(format!(
            "deployment {} has an engine snapshot of layout {version}; this coordinator reads layouts 1 to {SNAPSHOT_VERSION}",
            row.id
        )));
    }
    let mut engine: Rollout =
        serde_json::from_str(&row.engine).map_err(json_err("engine state"))?;
    let mut seq = snapshot_seq;
    for logged in store.inputs_after(&row.id, snapshot_seq)? {
        let input: Input = serde_json::from_str(&logged.input).map_err(json_err("engine input"))?;
        engine.handle_input(logged.at, input).map_err(|e| {
            ServiceError::Internal(format!(
                "deployment {}: logged input {} no longer applies: {e}",
                row.id, logged.seq
            ))
        })?;
        while engine.poll_action().is_some() {}
        seq = logged.seq;
    }
    Ok((doc, engine, seq, snapshot_seq))
}

/// An engine's refusal of an input: a command the state does not allow is a conflict,
/// anything else a bad request.
fn rollout_error(e: RolloutError) -> ServiceError {
    match e {
        RolloutError::Command { .. } => ServiceError::Conflict(e.to_string()),
        other => ServiceError::BadRequest(other.to_string()),
    }
}

/// The deployments part of the core.
#[derive(Debug)]
pub(super) struct Deployments {
    active: BTreeMap<String, Active>,
    /// Inputs between two snapshots of an engine.
    snapshot_every: u64,
}

impl Deployments {
    /// Loads the unfinished deployments from `store`.
    pub(super) fn load(store: &Store, snapshot_every: u64) -> Result<Self, ServiceError> {
        let mut active = BTreeMap::new();
        for row in store.active_deployments()? {
            let (doc, engine, seq, snapshot_seq) = decode(store, &row)?;
            tracing::info!(deployment = %row.id, status = %row.status, replayed = seq - snapshot_seq, "resuming deployment");
            active.insert(row.id.clone(), Active::new(doc, engine, seq, snapshot_seq));
        }
        Ok(Self {
            active,
            snapshot_every: snapshot_every.max(1),
        })
    }

    /// Targets of the unfinished deployments by status (O(1) per target).
    pub(super) fn target_counts(&self) -> HashMap<&'static str, u64> {
        let mut counts = HashMap::new();
        for a in self.active.values() {
            for i in 0..a.engine.plan().ids.len() {
                if let Some(s) = u32::try_from(i)
                    .ok()
                    .and_then(|i| a.engine.target_status(i))
                {
                    *counts.entry(s.as_str()).or_insert(0) += 1;
                }
            }
        }
        counts
    }

    /// The earliest engine timeout, or the next offline check if sooner.
    pub(super) fn next_wake(&self, now: Millis) -> Millis {
        self.active
            .values()
            .filter_map(|a| a.engine.poll_timeout())
            .fold(now + OFFLINE_CHECK, Millis::min)
    }

    /// Delivers due engine timeouts.
    pub(super) fn tick(&mut self, env: &mut Env<'_>, now: Millis) {
        let due: Vec<String> = self
            .active
            .iter()
            .filter(|(_, a)| a.engine.poll_timeout().is_some_and(|t| t <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            if let Err(e) = self.step(env, &id, now, Input::Tick) {
                tracing::warn!(deployment = %id, error = %e, "engine tick failed");
            }
        }
        self.check_stuck(env.events, now);
    }

    /// The unfinished deployment a flow version is used by, if any.
    pub(super) fn flow_in_use(
        &self,
        store: &Store,
        flow_id: &str,
    ) -> Result<Option<String>, ServiceError> {
        if let Some(a) = self.active.values().find(|a| a.doc.flow_id == flow_id) {
            return Ok(Some(format!("{} ({})", a.doc.id, a.doc.status)));
        }
        if store.flow_in_use(flow_id, &["pending", "running", "paused"])? {
            return Ok(Some("an unfinished deployment".into()));
        }
        Ok(None)
    }

    /// The deployments (id and plan index) whose targets include `device`.
    fn targeting(&self, device: &str) -> Vec<(String, u32)> {
        self.active
            .iter()
            .filter_map(|(id, a)| a.index.get(device).map(|i| (id.clone(), *i)))
            .collect()
    }

    /// Feeds device events to every unfinished deployment that targets `device`; `events`
    /// sees (and may note on) the deployment's track of the device.
    pub(super) fn feed(
        &mut self,
        env: &mut Env<'_>,
        device: &str,
        now: Millis,
        events: impl Fn(&mut TargetTrack) -> Vec<DeviceEvent>,
    ) {
        for (id, index) in self.targeting(device) {
            let Some(a) = self.active.get_mut(&id) else {
                continue;
            };
            let Some(track) = a.doc.targets.get_mut(index as usize) else {
                continue;
            };
            let events = events(track);
            if !events.is_empty() {
                a.dirty.insert(index);
            }
            for event in events {
                let input = Input::Device {
                    device: index,
                    event,
                };
                if let Err(e) = self.step(env, &id, now, input) {
                    tracing::warn!(deployment = %id, device, error = %e, "engine refused a device event");
                }
            }
        }
    }

    /// Feeds a device's health report to every unfinished deployment that targets it.
    pub(super) fn health(
        &mut self,
        env: &mut Env<'_>,
        device: &str,
        report: HealthReport,
        now: Millis,
    ) {
        for (dep, index) in self.targeting(device) {
            let input = Input::Health {
                device: index,
                report,
            };
            if let Err(e) = self.step(env, &dep, now, input) {
                tracing::warn!(deployment = %dep, device, error = %e, "engine refused a health report");
            }
        }
    }

    /// Runs one input through a deployment's engine and persists what it changed (see the
    /// module documentation) in one transaction. An input the engine ignores writes nothing.
    /// On a failed write the deployment is reloaded from the store (snapshot and log), so
    /// memory matches the disk again.
    fn step(
        &mut self,
        env: &mut Env<'_>,
        id: &str,
        now: Millis,
        input: Input,
    ) -> Result<(), ServiceError> {
        let Some(active) = self.active.get_mut(id) else {
            return Err(ServiceError::NotFound {
                what: "deployment",
                id: id.to_string(),
            });
        };
        if active.engine.ignores(now, &input) {
            return Ok(());
        }
        active
            .engine
            .handle_input(now, input)
            .map_err(rollout_error)?;
        let mut actions = Vec::new();
        while let Some(action) = active.engine.poll_action() {
            actions.push(action);
        }
        match self.apply(env, id, now, input, actions) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.reload(env.store, id);
                Err(e)
            }
        }
    }

    /// Replaces a deployment's memory with what the store holds (after a failed write).
    fn reload(&mut self, store: &Store, id: &str) {
        let loaded = store
            .deployment(id)
            .map_err(ServiceError::from)
            .and_then(|row| row.map(|r| decode(store, &r)).transpose());
        match loaded {
            Ok(Some((doc, engine, seq, snapshot_seq))) if !engine.status().is_terminal() => {
                self.active
                    .insert(id.to_string(), Active::new(doc, engine, seq, snapshot_seq));
            }
            Ok(_) => {
                self.active.remove(id);
            }
            Err(e) => {
                tracing::error!(deployment = %id, error = %e, "reloading a deployment after a failed write; it stays as it was in memory");
            }
        }
    }

    /// `POST /deployments`: a pending deployment of a published `flow` with its compiled
    /// plan.
    pub(super) fn create(
        &mut self,
        env: &mut Env<'_>,
        (flow, artifact): (FlowRecord, ArtifactRecord),
        input: DeploymentInput,
        now: Millis,
    ) -> Result<String, ServiceError> {
        let strategy = Strategy::parse(&input.strategy).ok_or_else(|| {
            validation(
                "strategy",
                format!(
                    "unknown strategy {:?}; use all-at-once, rolling, canary, blue-green, canary-waves or steps",
                    input.strategy
                ),
            )
        })?;
        let config = strategy_config(strategy, &input.config)?;
        let request = serde_json::to_value(&input).map_err(json_err("deployment request"))?;
        let targets = env
            .registry
            .targets(input.target_devices.as_deref(), input.selector.as_ref())?;
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
        // Baselines per device group from the rollups: the plan preview's; captured again
        // at start.
        let groups = targets
            .iter()
            .map(|d| (d.device_type.clone(), d.region.clone()))
            .collect();
        let set = super::baselines::capture(env.store, env.rollups, &groups, &config.gates, now)?;
        let baselines = super::baselines::plan_baselines(&set);
        let specs: Vec<TargetSpec> = targets
            .iter()
            .map(|d| super::canary_facts::target_spec(d, now))
            .collect();
        let values = super::vars::for_deployment(env.store, env.vault, &flow.definition, &targets)?;
        let generations = env.store.generations()?;
        let mut tracks = Vec::with_capacity(targets.len());
        for (d, values) in targets.iter().zip(values) {
            tracks.push(TargetTrack {
                device_id: d.id.clone(),
                generation: generations.get(&d.id).copied().unwrap_or(0),
                kind: None,
                fed: Vec::new(),
                previous: Registry::rollback_target(d),
                detail: String::new(),
                vars: values.vars,
                secret_vars: values.secret_vars,
            });
        }
        let seed_hex = random_token(8)?;
        let seed = u64::from_str_radix(&seed_hex, 16).unwrap_or(1);
        let mut config_view = config_json(&config);
        config_view.stuck_after = super::strategy::stuck_after_field(&input.config)?;
        let forced = (strategy == Strategy::AllAtOnce
            && config.force
            && specs.len() > config.max_all_at_once as usize)
            .then(|| {
                format!(
                    "all-at-once to {} devices, above the limit of {}, forced (force: true)",
                    specs.len(),
                    config.max_all_at_once
                )
            });
        let plan = Plan::new(artifact.name.clone(), config, specs, &baselines, seed)
            .map_err(plan_error)?;
        let mut engine = Rollout::new(plan, now);
        engine.set_baselines(set).map_err(rollout_error)?;
        let id = format!("dep_{}", random_token(5)?);
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
            preflight: None,
        };
        let mut doc = doc;
        let row = DeploymentRow {
            id: id.clone(),
            flow_id: doc.flow_id.clone(),
            status: doc.status.clone(),
            created_at: now,
            doc: head_json(&mut doc)?,
            engine: serde_json::to_string(&engine).map_err(json_err("engine state"))?,
        };
        let tracks = doc
            .targets
            .iter()
            .map(track_json)
            .collect::<Result<Vec<_>, _>>()?;
        env.store.atomically(|s| {
            s.put_deployment(&row)?;
            s.put_targets(
                &id,
                tracks
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (i as u32, t.as_str())),
            )?;
            s.audit(&line(
                now,
                s.caller(),
                "deployment.create",
                (None, Some(&id)),
                "pending",
                format!(
                    "{} of {} release {} to {} devices",
                    doc.strategy,
                    artifact.name,
                    artifact.release,
                    doc.targets.len()
                ),
            ))?;
            if let Some(forced) = forced {
                s.audit(&line(
                    now,
                    s.caller(),
                    "deployment.force",
                    (None, Some(&id)),
                    "forced",
                    forced,
                ))?;
            }
            Ok::<(), crate::store::StoreError>(())
        })?;
        self.active
            .insert(id.clone(), Active::new(doc, engine, 0, 0));
        Ok(id)
    }

    /// Runs `f` over a deployment's document and engine (in memory when unfinished, from the
    /// store otherwise).
    pub(super) fn with_deployment<T>(
        &self,
        store: &Store,
        id: &str,
        f: impl FnOnce(&DeploymentDoc, &Rollout) -> T,
    ) -> Result<T, ServiceError> {
        if let Some(a) = self.active.get(id) {
            return Ok(f(&a.doc, &a.engine));
        }
        let row = store
            .deployment(id)?
            .ok_or_else(|| ServiceError::NotFound {
                what: "deployment",
                id: id.to_string(),
            })?;
        let (doc, engine, _, _) = decode(store, &row)?;
        Ok(f(&doc, &engine))
    }

    /// Every deployment id with its status and flow, oldest first.
    pub(super) fn ids(&self, store: &Store) -> Result<Vec<(String, String, String)>, ServiceError> {
        Ok(store
            .deployments()?
            .into_iter()
            .map(|r| (r.id, r.status, r.flow_id))
            .collect())
    }

    /// An operator command (`start`, `pause`, `resume`, `approve`, `rollback`).
    pub(super) fn command(
        &mut self,
        env: &mut Env<'_>,
        id: &str,
        command: Command,
        now: Millis,
    ) -> Result<(), ServiceError> {
        let Some(a) = self.active.get_mut(id) else {
            let row = env
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
        };
        // The rollback target of each device is what the registry says it ran when the
        // deployment starts (the device's last known good release, else its active one).
        if command == Command::Start && a.engine.status() == DeploymentStatus::Pending {
            for (i, track) in a.doc.targets.iter_mut().enumerate() {
                if let Ok(d) = env.registry.get(&track.device_id) {
                    track.previous = Registry::rollback_target(d);
                    a.dirty.insert(i as u32);
                }
            }
        }
        // Start is one transaction however many targets there are: a crash leaves the
        // deployment either not started or started, never half-way through marking its
        // offline targets.
        let store = env.store;
        let batch = store.begin()?;
        let started = self
            .recapture_baselines(env, id, command, now)
            .and_then(|()| self.command_steps(env, id, command, now));
        match started {
            Ok(()) => batch.commit().map_err(ServiceError::from),
            Err(e) => {
                drop(batch);
                env.events.discard();
                self.reload(store, id);
                Err(e)
            }
        }
    }

    /// The writes of one operator command, inside the caller's transaction.
    fn command_steps(
        &mut self,
        env: &mut Env<'_>,
        id: &str,
        command: Command,
        now: Millis,
    ) -> Result<(), ServiceError> {
        env.store.audit(&line(
            now,
            env.store.caller(),
            &format!("deployment.{command}"),
            (None, Some(id)),
            "requested",
            format!("operator asked to {command}"),
        ))?;
        if command == Command::Start {
            // The engine learns which targets are offline before it dispatches, so it counts
            // them offline (not failed) and queues them instead of waiting for a timeout.
            let offline: Vec<u32> = self
                .active
                .get(id)
                .into_iter()
                .flat_map(|a| a.doc.targets.iter().enumerate())
                .filter(|(_, t)| env.registry.is_offline(&t.device_id))
                .filter_map(|(i, _)| u32::try_from(i).ok())
                .collect();
            for device in offline {
                let input = Input::Device {
                    device,
                    event: DeviceEvent::Offline,
                };
                self.step(env, id, now, input)?;
            }
        }
        self.step(env, id, now, Input::Command(command))
    }
}
