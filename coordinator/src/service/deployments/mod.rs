//! The deployments part: the single owner of the rollout engines of unfinished deployments
//! and of every write their steps make. A deployment is created here (its plan compiled from
//! the registry's view of the targets), commanded here, and stepped here: each input runs
//! through its engine and the result (engine state, the document, signed desired directives
//! with store-allocated generations, quarantine flags, audit lines) is written in one
//! transaction by [`apply`]. If that write fails the engine and the document are restored, so
//! memory never runs ahead of the disk.
//!
//! The other parts it needs for a step (the store, the registry, the directives) come in as an
//! [`Env`] of borrows, so this part never reaches into their fields and the core stays a
//! router.

mod apply;

use super::audit::line;
use super::directives::Directives;
use super::model::{ArtifactSummary, DeploymentDoc, DeploymentInput, TargetTrack};
use super::registry::Registry;
use super::strategy::{config_json, plan_error, strategy_config};
use super::{
    MAX_ACTIVE_DEPLOYMENTS, OFFLINE_CHECK, ServiceError, json_err, random_token, validation,
};
use crate::store::{ArtifactRecord, DeploymentRow, FlowRecord, Store};
use floe_rollout::{
    Command, DeploymentStatus, DeviceEvent, HealthReport, Input, Millis, Plan, Rollout,
    RolloutError, Strategy, TargetFlags, TargetSpec,
};
use std::collections::{BTreeMap, HashMap};

/// The other parts a step reads and updates, borrowed from the core for one call.
pub(super) struct Env<'a> {
    /// The store every write goes to.
    pub(super) store: &'a Store,
    /// The registry (targets, baselines, quarantine flags).
    pub(super) registry: &'a mut Registry,
    /// The directives (signing, the desired posts).
    pub(super) directives: &'a mut Directives,
}

/// An unfinished deployment in memory.
#[derive(Debug)]
struct Active {
    doc: DeploymentDoc,
    engine: Rollout,
    /// Device id → index in the plan.
    index: HashMap<String, u32>,
}

impl Active {
    /// A deployment's in-memory form: its document, its engine and the engine's device index.
    fn new(doc: DeploymentDoc, engine: Rollout) -> Self {
        let index = engine
            .plan()
            .ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), i as u32))
            .collect();
        Self { doc, engine, index }
    }
}

/// Decodes a stored deployment's document and engine state.
fn decode(row: &DeploymentRow) -> Result<(DeploymentDoc, Rollout), ServiceError> {
    let doc: DeploymentDoc = serde_json::from_str(&row.doc).map_err(json_err("deployment"))?;
    let engine: Rollout = serde_json::from_str(&row.engine).map_err(json_err("engine state"))?;
    Ok((doc, engine))
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
}

impl Deployments {
    /// Loads the unfinished deployments from `store`.
    pub(super) fn load(store: &Store) -> Result<Self, ServiceError> {
        let mut active = BTreeMap::new();
        for row in store.active_deployments()? {
            let (doc, engine) = decode(&row)?;
            tracing::info!(deployment = %row.id, status = %row.status, "resuming deployment");
            active.insert(row.id.clone(), Active::new(doc, engine));
        }
        Ok(Self { active })
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
            for event in events(track) {
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

    /// Runs one input through a deployment's engine and persists the result (engine state,
    /// directives, gates, audit) in one transaction; on a failed write the engine and the
    /// document are restored to their state before the input.
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
        match self.apply(env, id, now, actions) {
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
                    "unknown strategy {:?}; use all-at-once, rolling, canary, blue-green or canary-waves",
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
        let baselines = env.registry.baselines();
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
                generation: env.store.generation(&d.id)?,
                kind: None,
                fed: Vec::new(),
                previous: Registry::rollback_target(d),
                detail: String::new(),
            });
        }
        let seed_hex = random_token(8)?;
        let seed = u64::from_str_radix(&seed_hex, 16).unwrap_or(1);
        let config_view = config_json(&config);
        let plan = Plan::new(artifact.name.clone(), config, specs, &baselines, seed)
            .map_err(plan_error)?;
        let engine = Rollout::new(plan, now);
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
        };
        let row = DeploymentRow {
            id: id.clone(),
            flow_id: doc.flow_id.clone(),
            status: doc.status.clone(),
            created_at: now,
            doc: serde_json::to_string(&doc).map_err(json_err("deployment"))?,
            engine: serde_json::to_string(&engine).map_err(json_err("engine state"))?,
        };
        env.store.atomically(|s| {
            s.put_deployment(&row)?;
            s.audit(&line(
                now,
                "api",
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
            ))
        })?;
        self.active.insert(id.clone(), Active::new(doc, engine));
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
        let (doc, engine) = decode(&row)?;
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
            for track in &mut a.doc.targets {
                if let Ok(d) = env.registry.get(&track.device_id) {
                    track.previous = Registry::rollback_target(d);
                }
            }
        }
        env.store.audit(&line(
            now,
            "api",
            &format!("deployment.{command}"),
            (None, Some(id)),
            "requested",
            format!("operator asked to {command}"),
        ))?;
        if command == Command::Start {
            // The engine learns which targets are offline before it dispatches, so it counts
            // them offline (not failed) and queues them instead of waiting for a timeout.
            let offline: Vec<u32> = a
                .doc
                .targets
                .iter()
                .enumerate()
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
