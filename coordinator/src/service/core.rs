//! The state the service actor owns, as owned parts, and the router over them. [`Core`] holds
//! the store and one value per concern (registry, flows, deployments, directives, audit) and
//! only routes each call to the part that owns it, lending the store and, for an engine step,
//! the registry and directives (see [`super::deployments::Env`]). Each part's file explains
//! what it owns; none reaches into another's fields.

use super::audit::Audit;
use super::deployments::{Deployments, Env};
use super::directives::Directives;
use super::events::{EventBus, EventSink};
use super::flows::Flows;
use super::incidents::{IncidentEnv, Incidents};
use super::ingest::{applied_events, health_input};
use super::model::{
    ArtifactBlob, DeploymentDoc, DeploymentInput, DeviceInput, DevicePatch, FlowInput, Outgoing,
    ServiceConfig,
};
use super::registry::{Admission, Registry};
use super::rollups::{RollupCounters, Rollups};
use super::vars;
use super::{OFFLINE_BATCH, ServiceError};
use crate::contract::{
    DeviceVars, EventKind, FlowState, GroupVars, GroupVarsChange, GroupVarsList, VarsChange,
};
use crate::store::{ArtifactInfo, AuditFilter, AuditRecord, DeviceRecord, FlowRecord, Store};
use ed25519_dalek::SigningKey;
use floe_rollout::{Command, DeviceEvent, Millis, Rollout};
use floe_wire::proto::DeviceReport;
use serde_json::json;
use tokio::sync::watch;

/// The state the actor owns. See the module documentation of [`crate::service`].
#[derive(Debug)]
pub struct Core {
    settings: ServiceConfig,
    coordinator_key: SigningKey,
    /// The data key of secret variable values (`DATA_DIR/secrets.key`).
    vault: super::vault::Vault,
    store: Store,
    registry: Registry,
    flows: Flows,
    deployments: Deployments,
    directives: Directives,
    audit: Audit,
    events: EventSink,
    rollups: Rollups,
    incidents: Incidents,
}

impl Core {
    /// Loads the registry, desired directives and unfinished deployments from `store`.
    pub fn new(
        store: Store,
        config: ServiceConfig,
        release_key: SigningKey,
        coordinator_key: SigningKey,
    ) -> Result<Core, ServiceError> {
        let registry = Registry::load(&store, config.offline_after)?;
        let directives =
            Directives::load(&store, coordinator_key.clone(), config.directive_ttl_secs)?;
        let deployments = Deployments::load(&store, config.snapshot_every)?;
        let flows = Flows::new(
            config.data_dir.clone(),
            config.artifact_ttl_days,
            release_key,
        );
        let rollups = Rollups::new(config.health_window, config.health_retention);
        let incidents = Incidents::load(&store, config.rollback_verify_timeout)?;
        let vault = super::vault::Vault::open(&config.data_dir)?;
        Ok(Core {
            vault,
            incidents,
            rollups,
            coordinator_key,
            store,
            registry,
            flows,
            deployments,
            directives,
            audit: Audit::default(),
            // Ids start at the start time in ms × 1000, so they keep growing across restarts
            // and a client's Last-Event-ID from before one is recognised as lost.
            events: EventSink::new(EventBus::new(
                config.event_ring,
                floe_wire::clock::unix_ms().saturating_mul(1000),
            )),
            settings: config,
        })
    }

    /// How webhook deliveries are made (attempts from the settings).
    pub fn delivery_settings(&self) -> super::webhooks::DeliverySettings {
        super::webhooks::DeliverySettings {
            max_attempts: self.settings.hook_attempts.max(1),
            roots: self.settings.hook_roots.clone(),
            ..super::webhooks::DeliverySettings::default()
        }
    }

    /// The event bus (subscribers, counters).
    pub fn event_bus(&self) -> std::sync::Arc<EventBus> {
        std::sync::Arc::clone(self.events.bus())
    }

    /// Publishes the events staged since the last call (the actor calls this after each job,
    /// batch and tick, once their writes are committed).
    pub fn flush_events(&mut self) {
        let (incidents, mut env) = self.incident_env();
        incidents.notice(&mut env);
        self.events.flush();
    }

    /// The incidents part with the parts it reads.
    fn incident_env(&mut self) -> (&mut Incidents, IncidentEnv<'_>) {
        (
            &mut self.incidents,
            IncidentEnv {
                store: &self.store,
                registry: &self.registry,
                deployments: &self.deployments,
                flows: &self.flows,
                events: &mut self.events,
            },
        )
    }

    /// `GET /deployments/{id}/incident`.
    pub fn incident_report(
        &mut self,
        id: &str,
        now: Millis,
    ) -> Result<crate::contract::IncidentReport, ServiceError> {
        let (incidents, mut env) = self.incident_env();
        incidents.report(&mut env, id, now)
    }

    /// A deployment's rollback verification, if a device of it was rolled back.
    pub fn rollback_verification(
        &self,
        id: &str,
    ) -> Result<Option<crate::contract::RollbackVerification>, ServiceError> {
        self.incidents.verification(&self.store, id)
    }

    /// The deployments part with the other parts an engine step needs.
    fn engines(&mut self) -> (&mut Deployments, Env<'_>) {
        (
            &mut self.deployments,
            Env {
                store: &self.store,
                registry: &mut self.registry,
                directives: &mut self.directives,
                events: &mut self.events,
                rollups: &self.rollups,
                vault: &self.vault,
            },
        )
    }

    /// A receiver whose value grows with every publish.
    pub fn published_receiver(&self) -> watch::Receiver<u64> {
        self.flows.published_receiver()
    }

    /// When the actor should wake next: the earliest engine timeout or the next offline check.
    pub fn next_wake(&self, now: Millis) -> Millis {
        self.deployments.next_wake(now)
    }

    /// Marks silent devices offline (at most [`OFFLINE_BATCH`] a tick, in one transaction) and
    /// delivers due engine timeouts.
    pub fn tick(&mut self, now: Millis) {
        let silent = self.registry.silent(now, OFFLINE_BATCH);
        if !silent.is_empty() {
            let n = silent.len();
            if let Err(e) = self.mark_offline(&silent, now) {
                tracing::warn!(devices = n, error = %e, "could not mark silent devices offline");
            }
        }
        if let Err(e) = self.rollups.flush(&self.store, now) {
            tracing::warn!(error = %e, "could not write the health rollups; retrying next tick");
        }
        let (deployments, mut env) = self.engines();
        deployments.tick(&mut env, now);
        let (incidents, mut env) = self.incident_env();
        incidents.tick(&mut env, now);
    }

    /// Length of one health rollup window (ms).
    pub fn health_window(&self) -> Millis {
        self.rollups.window()
    }

    /// What the health rollups counted, left out and dropped since start.
    pub fn rollup_counters(&self) -> RollupCounters {
        self.rollups.counters()
    }

    /// The store, for reads ([`super::ServiceHandle::read`] without a read pool).
    pub(super) fn store(&self) -> &Store {
        &self.store
    }

    /// Sets the audit actor of the job about to run (`Store::caller`).
    pub(super) fn set_caller(&mut self, caller: &str) {
        self.store.set_caller(caller);
    }

    /// Marks `ids` offline in one transaction: each device's record and audit line, and the
    /// `Offline` input of each deployment that targets it (each in a savepoint, as a report in
    /// a batch is). A device's cost is its rows, not a transaction and its fsync. If the commit
    /// fails nothing of it is on disk and the state is reloaded from the store; the devices are
    /// still silent, so the next tick tries again.
    fn mark_offline(&mut self, ids: &[String], now: Millis) -> Result<(), ServiceError> {
        self.store.open_batch()?;
        let mut failed = None;
        for id in ids {
            let silent = self
                .registry
                .get(id)
                .ok()
                .and_then(|d| d.last_seen)
                .map(|t| now.saturating_sub(t));
            match self.registry.mark_offline(&self.store, id, now) {
                Ok(true) => {
                    self.events.emit(
                        EventKind::DeviceOffline,
                        now,
                        None,
                        Some(id),
                        json!({ "silent_ms": silent }),
                    );
                    let (deployments, mut env) = self.engines();
                    deployments.feed(&mut env, id, now, |_| vec![DeviceEvent::Offline]);
                }
                Ok(false) => {}
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let outcome = match failed {
            Some(e) => Err(e),
            None => self.store.close_batch().map_err(ServiceError::from),
        };
        if outcome.is_err() {
            self.store.abandon_batch();
            if let Err(reload) = self.reload() {
                tracing::error!(error = %reload, "reloading the service state after a failed commit");
            }
        }
        outcome
    }

    // Flows.

    /// `POST /flows`.
    pub fn create_flow(
        &mut self,
        input: FlowInput,
        now: Millis,
    ) -> Result<FlowRecord, ServiceError> {
        self.flows.create(&self.store, input, now)
    }

    /// A flow by id.
    pub fn flow(&self, id: &str) -> Result<FlowRecord, ServiceError> {
        self.flows.get(&self.store, id)
    }

    /// Flows matching a state (archived hidden unless asked) and a tag.
    pub fn flows(
        &self,
        state: Option<FlowState>,
        tag: Option<&str>,
    ) -> Result<Vec<FlowRecord>, ServiceError> {
        self.flows.list(&self.store, state, tag)
    }

    /// The artifact of a flow version, if published.
    pub fn artifact_of(&self, flow_id: &str) -> Result<Option<ArtifactInfo>, ServiceError> {
        self.flows.artifact_of(&self.store, flow_id)
    }

    /// `PUT /flows/:id`.
    pub fn update_flow(
        &mut self,
        id: &str,
        input: FlowInput,
        now: Millis,
    ) -> Result<FlowRecord, ServiceError> {
        self.flows.update(&self.store, id, input, now)
    }

    /// `DELETE /flows/:id`.
    pub fn delete_flow(&mut self, id: &str, now: Millis) -> Result<(), ServiceError> {
        let in_use = || self.deployments.flow_in_use(&self.store, id);
        self.flows.delete(&self.store, id, in_use, now)
    }

    /// `POST /flows/:id/publish`: complete validation, then the signed bundle.
    pub fn publish_flow(&mut self, id: &str, now: Millis) -> Result<FlowRecord, ServiceError> {
        self.publish_flow_with(id, None, now)
    }

    /// `POST /flows/:id/publish` with the flow's smoke test, carried in the signed manifest.
    pub fn publish_flow_with(
        &mut self,
        id: &str,
        smoke: Option<&crate::contract::SmokeTestInput>,
        now: Millis,
    ) -> Result<FlowRecord, ServiceError> {
        self.flows.publish(&self.store, id, smoke, now)
    }

    /// `POST /flows/:id/archive`.
    pub fn archive_flow(&mut self, id: &str, now: Millis) -> Result<FlowRecord, ServiceError> {
        let in_use = || self.deployments.flow_in_use(&self.store, id);
        self.flows.archive(&self.store, id, in_use, now)
    }

    /// `POST /flows/:id/versions`: a new draft after the lineage's newest version.
    pub fn new_version(&mut self, id: &str, now: Millis) -> Result<FlowRecord, ServiceError> {
        self.flows.new_version(&self.store, id, now)
    }

    /// Every published artifact.
    pub fn artifact_blobs(&self) -> Result<Vec<ArtifactBlob>, ServiceError> {
        self.flows.blobs(&self.store)
    }

    // Deployments.

    /// `POST /deployments`: a pending deployment with its compiled plan.
    pub fn create_deployment(
        &mut self,
        input: DeploymentInput,
        now: Millis,
    ) -> Result<String, ServiceError> {
        let published = self.flows.deployable(&self.store, &input.flow_id)?;
        let artifact = self.preflight_artifact(&published.0.id);
        let settings = self.settings.preflight;
        let (deployments, mut env) = self.engines();
        let id = deployments.create(&mut env, published, input, now)?;
        if let Err(e) = deployments.preflight_dry_run(&mut env, &id, &artifact, &settings, now) {
            tracing::warn!(deployment = %id, error = %e, "storing the pre-flight dry run");
        }
        Ok(id)
    }

    /// `POST /deployments/:id/start`: the pre-deployment checklist, then the start
    /// (`deployments::preflight`); `overrides` names failed items to start despite.
    pub fn start(
        &mut self,
        id: &str,
        overrides: &[String],
        now: Millis,
    ) -> Result<super::StartOutcome, ServiceError> {
        let flow = self
            .deployments
            .with_deployment(&self.store, id, |d, _| d.flow_id.clone())?;
        let artifact = self.preflight_artifact(&flow);
        let settings = self.settings.preflight;
        let (deployments, mut env) = self.engines();
        deployments.start(&mut env, id, overrides, &artifact, &settings, now)
    }

    /// The stored artifact of a flow version, re-verified for the checklist.
    fn preflight_artifact(&self, flow_id: &str) -> super::deployments::preflight::ArtifactCheck {
        use super::deployments::preflight::{artifact_check, trust_store};
        let trust = trust_store(
            &self.settings.data_dir,
            self.flows.release_public(),
            self.coordinator_key.verifying_key(),
        );
        artifact_check(&self.store, flow_id, &trust)
    }

    /// Runs `f` over a deployment's document and engine (in memory when unfinished, from the
    /// store otherwise).
    pub fn with_deployment<T>(
        &self,
        id: &str,
        f: impl FnOnce(&DeploymentDoc, &Rollout) -> T,
    ) -> Result<T, ServiceError> {
        self.deployments.with_deployment(&self.store, id, f)
    }

    /// Targets of the unfinished deployments by status (`/metrics`).
    pub fn target_counts(&self) -> std::collections::HashMap<&'static str, u64> {
        self.deployments.target_counts()
    }

    /// Every deployment id with its status and flow, oldest first.
    pub fn deployment_ids(&self) -> Result<Vec<(String, String, String)>, ServiceError> {
        self.deployments.ids(&self.store)
    }

    /// Up to `limit` deployment ids in creation order after position `after` (0: from the
    /// first), matching a status and a flow when given, each with its position (see
    /// [`Store::deployment_ids_page`]).
    pub fn deployment_ids_page(
        &self,
        after: u64,
        status: Option<&str>,
        flow_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, ServiceError> {
        Ok(self
            .store
            .deployment_ids_page(after, status, flow_id, limit)?)
    }

    /// An operator command (`start`, `pause`, `resume`, `approve`, `rollback`).
    pub fn command(&mut self, id: &str, command: Command, now: Millis) -> Result<(), ServiceError> {
        if command == Command::Start {
            // Every start passes the checklist; a refusal is a validation error naming it all.
            return match self.start(id, &[], now)? {
                super::StartOutcome::Started => Ok(()),
                super::StartOutcome::Refused(p) => Err(super::validation("preflight", p.summary())),
            };
        }
        let (deployments, mut env) = self.engines();
        deployments.command(&mut env, id, command, now)
    }

    // Devices.

    /// Every registered device.
    pub fn devices(&self) -> impl Iterator<Item = &DeviceRecord> {
        self.registry.all()
    }

    /// The registered devices with ids after `after` (every one without it), by id.
    pub fn devices_after(&self, after: Option<&str>) -> impl Iterator<Item = &DeviceRecord> {
        self.registry.after(after)
    }

    /// A device by id.
    pub fn device(&self, id: &str) -> Result<&DeviceRecord, ServiceError> {
        self.registry.get(id)
    }

    /// Whether a device counts as online at `now`.
    pub fn online(&self, d: &DeviceRecord) -> bool {
        Registry::online(d)
    }

    /// The current directive generation of a device.
    pub fn desired_generation(&self, id: &str) -> u64 {
        self.directives.generation(id)
    }

    /// `GET /devices/:id/vars`: the device's own values and what it resolves to now.
    pub fn device_vars(&self, id: &str) -> Result<DeviceVars, ServiceError> {
        let dev = self.registry.get(id)?;
        let own = vars::own(&self.store, id)?;
        let groups = vars::Groups::load(&self.store)?;
        let (values, secret) = vars::shown(&own);
        Ok(DeviceVars {
            device_id: id.to_string(),
            resolved: vars::resolve(&groups, dev, &own),
            values,
            secret,
        })
    }

    /// `PUT /devices/:id/vars`: sets and unsets a registered device's own values (audited).
    pub fn set_device_vars(
        &mut self,
        id: &str,
        change: VarsChange,
        now: Millis,
    ) -> Result<DeviceVars, ServiceError> {
        self.registry.get(id)?;
        vars::apply(
            &self.store,
            &self.vault,
            &vars::Scope::Device(id.to_string()),
            &change,
            now,
        )?;
        self.device_vars(id)
    }

    /// `PUT /group-vars`: sets and unsets one group's values (audited).
    pub fn set_group_vars(
        &mut self,
        change: GroupVarsChange,
        now: Millis,
    ) -> Result<GroupVars, ServiceError> {
        vars::apply_group(&self.store, &self.vault, change, now)
    }

    /// `GET /group-vars`.
    pub fn group_vars(&self) -> Result<GroupVarsList, ServiceError> {
        Ok(GroupVarsList {
            groups: vars::groups(&self.store)?,
        })
    }

    /// `PATCH /devices/:id`.
    pub fn patch_device(
        &mut self,
        id: &str,
        patch: DevicePatch,
        now: Millis,
    ) -> Result<DeviceRecord, ServiceError> {
        self.registry.patch(&self.store, id, patch, now)
    }

    /// `GET /devices/pending`: the devices that asked to join, oldest first.
    pub fn pending_devices(&self) -> Vec<super::pending::PendingDevice> {
        self.registry.pending()
    }

    /// `POST /devices/pending/{id}/accept`.
    pub fn accept_device(&mut self, id: &str, now: Millis) -> Result<DeviceRecord, ServiceError> {
        self.registry.accept(&self.store, id, now)
    }

    /// `DELETE /devices/pending/{id}`.
    pub fn reject_device(&mut self, id: &str, now: Millis) -> Result<(), ServiceError> {
        self.registry.reject(&self.store, id, now)
    }

    /// `POST /devices`: puts a device's key on the enrollment allowlist.
    pub fn allow_device(
        &mut self,
        input: DeviceInput,
        now: Millis,
    ) -> Result<DeviceRecord, ServiceError> {
        self.registry.allow(&self.store, input, now)
    }

    /// Replaces a device's registry record in memory (tests set figures devices do not send
    /// yet).
    #[cfg(test)]
    pub(super) fn install_device(&mut self, d: DeviceRecord) {
        self.registry.install(d);
    }

    /// `POST /devices/batch`: puts many devices' keys on the allowlist in one transaction.
    /// Devices registered already with the same key count as existing; any other refusal
    /// (a bad id or key, another key under a registered id, the registry's limit) refuses
    /// the whole batch, naming the device, and nothing is written. Returns (created,
    /// existing).
    pub fn allow_devices(
        &mut self,
        inputs: Vec<DeviceInput>,
        now: Millis,
    ) -> Result<(usize, usize), ServiceError> {
        let batch = self.store.begin()?;
        let (mut created, mut existing) = (0, 0);
        let mut added = Vec::new();
        for (i, input) in inputs.into_iter().enumerate() {
            if let Ok(d) = self.registry.get(&input.id)
                && d.public_key == input.public_key.to_lowercase()
            {
                existing += 1;
                continue;
            }
            let id = input.id.clone();
            match self.registry.allow(&self.store, input, now) {
                Ok(_) => {
                    created += 1;
                    added.push(id);
                }
                Err(e) => {
                    drop(batch);
                    self.registry.forget(&added);
                    return Err(match e {
                        ServiceError::Validation { field, message } => ServiceError::Validation {
                            field: format!("devices[{i}].{field}"),
                            message,
                        },
                        ServiceError::Conflict(m) => {
                            ServiceError::Conflict(format!("devices[{i}]: {m}"))
                        }
                        other => other,
                    });
                }
            }
        }
        if let Err(e) = batch.commit() {
            self.registry.forget(&added);
            return Err(e.into());
        }
        Ok((created, existing))
    }

    /// `POST /enrollment-tokens`: a one-time token valid for `ttl`.
    pub fn create_token(
        &mut self,
        ttl: Millis,
        now: Millis,
    ) -> Result<(String, Millis), ServiceError> {
        self.registry.create_token(&self.store, ttl, now)
    }

    /// `GET /audit`.
    pub fn audit_entries(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, ServiceError> {
        self.audit.entries(&self.store, filter)
    }

    /// `GET /audit`, one page: the entries with their log positions, newest first.
    pub fn audit_page(
        &self,
        filter: &AuditFilter,
    ) -> Result<Vec<(u64, AuditRecord)>, ServiceError> {
        Ok(self.store.audit_page(filter)?)
    }

    // The fabric side.

    /// A fabric membership certificate for the peer whose ed25519 key is `public_key`
    /// (`floe_wire::proto::membership`): a coordinator's own (`role` coordinator) is signed at
    /// once; a device's only while the registry holds an enrolled device whose id and key are
    /// that key's hex, so a device removed from the registry gets no new certificate and
    /// leaves the fabric when its current one expires.
    pub fn membership(
        &self,
        public_key: [u8; 32],
        role: floe_wire::proto::Role,
        now: Millis,
    ) -> Result<Vec<u8>, ServiceError> {
        let hex_key = hex::encode(public_key);
        if role == floe_wire::proto::Role::Device {
            let enrolled = self
                .registry
                .get(&hex_key)
                .is_ok_and(|d| d.public_key == hex_key && d.enrolled_at.is_some());
            if !enrolled {
                return Err(ServiceError::Refused(format!(
                    "device {hex_key} is not enrolled"
                )));
            }
        }
        floe_wire::proto::membership::issue(
            &self.coordinator_key,
            floe_wire::proto::Fixed(public_key),
            role,
            now / 1000,
            floe_wire::proto::membership::DEFAULT_LIFETIME_SECS,
        )
        .map_err(|e| ServiceError::Refused(format!("signing a membership certificate: {e}")))
    }

    /// A device's report (its signature already checked against the key it names): the
    /// registry admits it (enrollment, key check, record update; see `Registry::admit`), then
    /// its meaning is fed to the engines of the deployments that target the device: back
    /// online, the applied directive's progress, and its health.
    pub fn device_report(&mut self, r: DeviceReport, now: Millis) -> Result<(), ServiceError> {
        let health_before = self
            .registry
            .get(&r.device_id)
            .ok()
            .and_then(|d| d.health.as_ref().map(|h| h.status));
        let was_offline = match self.registry.admit(&self.store, &r, now)? {
            Admission::KeyMismatch(detail) => {
                self.audit
                    .refused(&self.store, &r.device_id, &detail, now)?;
                return Err(ServiceError::Refused(detail));
            }
            Admission::Stale => return Ok(()),
            Admission::Accepted { was_offline } => was_offline,
        };
        let id = r.device_id.as_str();
        if was_offline {
            self.events
                .emit(EventKind::DeviceOnline, now, None, Some(id), json!({}));
        }
        let health_now = self
            .registry
            .get(id)
            .ok()
            .and_then(|d| d.health.as_ref().map(|h| h.status));
        if let Some(to) = health_now
            && health_before != Some(to)
        {
            self.events.emit(
                EventKind::DeviceHealth,
                now,
                None,
                Some(id),
                json!({ "from": health_before.map(|h| h.as_str()), "to": to.as_str() }),
            );
        }
        if let Ok(record) = self.registry.get(id) {
            self.rollups.observe(record, &r, now);
        }
        let (deployments, mut env) = self.engines();
        if was_offline {
            deployments.feed(&mut env, id, now, |_| vec![DeviceEvent::Online]);
        }
        if let Some(applied) = &r.applied {
            deployments.feed(&mut env, id, now, |track| applied_events(track, applied));
        }
        match &r.health {
            Some(h) => deployments.health(&mut env, id, health_input(h), now),
            None => deployments.health_missing(&mut env, id, now),
        }
        if self.incidents.is_waiting() {
            let (incidents, mut env) = self.incident_env();
            incidents.observe(&mut env, id, now);
        }
        Ok(())
    }

    /// Applies a batch of reports in one transaction (each report in a savepoint of its own,
    /// so a refused one undoes only itself) and returns each report's outcome: the generation
    /// of the device's current directive (0 when it has none), so a device that reports over
    /// HTTP fetches its directive only when it is behind. If the commit
    /// fails, nothing of the batch is on disk: the registry, directives and deployments are
    /// reloaded from the store so memory does not run ahead of it, and the error is returned
    /// for every report.
    pub fn ingest(
        &mut self,
        reports: Vec<DeviceReport>,
        now: Millis,
    ) -> Result<Vec<Result<u64, ServiceError>>, ServiceError> {
        self.store.open_batch()?;
        let outcomes = reports
            .into_iter()
            .map(|r| {
                let id = r.device_id.clone();
                self.device_report(r, now)
                    .map(|()| self.desired_generation(&id))
            })
            .collect();
        if let Err(e) = self.store.close_batch() {
            self.store.abandon_batch();
            if let Err(reload) = self.reload() {
                tracing::error!(error = %reload, "reloading the service state after a failed commit");
            }
            return Err(e.into());
        }
        Ok(outcomes)
    }

    /// Reads the registry, the desired directives and the unfinished deployments back from
    /// the store.
    fn reload(&mut self) -> Result<(), ServiceError> {
        // Nothing staged since the last flush was committed.
        self.events.discard();
        self.registry = Registry::load(&self.store, self.settings.offline_after)?;
        self.directives = Directives::load(
            &self.store,
            self.coordinator_key.clone(),
            self.settings.directive_ttl_secs,
        )?;
        self.deployments = Deployments::load(&self.store, self.settings.snapshot_every)?;
        Ok(())
    }

    /// The current post of a device, re-signed with a fresh `issued_at` when the signed one
    /// is older than half its lifetime.
    pub fn directive_post(
        &mut self,
        device: &str,
        now: Millis,
    ) -> Result<Option<(u64, Vec<u8>)>, ServiceError> {
        self.directives.post(&self.store, device, now)
    }

    /// `GET /devices/{id}/directive`: the device's current directive post, for the device
    /// itself only: `proof` must be its fresh signature over the request
    /// (`floe_wire::proto::device_auth`), checked against the key it enrolled with.
    pub fn device_directive(
        &mut self,
        device: &str,
        proof: Option<&str>,
        now: Millis,
    ) -> Result<Option<(u64, Vec<u8>)>, ServiceError> {
        use floe_wire::proto::device_auth::{directive_path, verify_request};
        let unknown = || ServiceError::Unauthenticated(format!("no enrolled device {device:?}"));
        let record = self.registry.get(device).map_err(|_| unknown())?;
        if record.enrolled_at.is_none() {
            return Err(unknown());
        }
        let key = floe_wire::proto::PublicKeyBytes::from_hex(&record.public_key)
            .map_err(|_| ServiceError::Internal(format!("device {device} has a malformed key")))?;
        verify_request(proof, &key, "GET", &directive_path(device), now / 1000)
            .map_err(|e| ServiceError::Unauthenticated(e.to_string()))?;
        self.directive_post(device, now)
    }

    /// One device's current directive post when it is behind (the answer to a device that
    /// reports directly), or None when it has nothing left to apply.
    pub fn post_for(
        &mut self,
        device_id: &str,
        now: Millis,
    ) -> Result<Option<Vec<u8>>, ServiceError> {
        let applied = self.registry.applied_generation(device_id);
        if !self.directives.is_behind(device_id, applied) {
            return Ok(None);
        }
        Ok(self.directive_post(device_id, now)?.map(|(_, post)| post))
    }

    /// Every device whose reported applied generation is below its desired directive's.
    /// `GET /directives/pending`: up to `limit` devices (ordered by id, after `after`) that
    /// are behind their current directive, with its generation.
    pub fn pending_directives(&self, after: Option<&str>, limit: usize) -> Vec<(String, u64)> {
        let registry = &self.registry;
        self.directives
            .behind(|d| registry.applied_generation(d), after, limit)
    }

    /// `GET /directives/feed`: the feed's epoch and up to `limit` devices whose directive was
    /// issued after `since` and is not applied yet, in issue order, each with its sequence
    /// number and current post. A `since` from another epoch (before a restart) starts over.
    #[allow(clippy::type_complexity)]
    pub fn directive_feed(
        &mut self,
        epoch: u64,
        since: u64,
        limit: usize,
        now: Millis,
    ) -> Result<(u64, Vec<(u64, String, u64, Vec<u8>)>), ServiceError> {
        let current = self.directives.feed_epoch();
        let since = if epoch == current { since } else { 0 };
        let registry = &self.registry;
        let page = self
            .directives
            .issued_since(|d| registry.applied_generation(d), since, limit);
        let mut out = Vec::with_capacity(page.len());
        for (seq, id, generation) in page {
            if let Some((_, post)) = self.directives.post(&self.store, &id, now)? {
                out.push((seq, id, generation, post));
            }
        }
        Ok((current, out))
    }

    /// The directive posts devices still have to apply (see `Directives::outbox`).
    pub fn outbox(&mut self, now: Millis) -> Result<Vec<Outgoing>, ServiceError> {
        let registry = &self.registry;
        self.directives
            .outbox(&self.store, |d| registry.applied_generation(d), now)
    }
}
