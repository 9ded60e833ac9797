//! The flows part: flow versions from draft to published to archived, and publishing, which
//! validates a definition completely, builds the signed bundle and records the artifact. It
//! owns the release key and the bundle directory; whether a flow is still in use by a
//! deployment is asked of the caller, since deployments are another part's.

use super::audit::api_audit;
use super::hygiene;
use super::model::{ArtifactBlob, FlowInput};
use super::{ServiceError, json_err, random_token, reads, validation};
use crate::contract::FlowState;
use crate::store::{ArtifactInfo, ArtifactRecord, FlowRecord, Store};
use ed25519_dalek::SigningKey;
use floe_rollout::Millis;
use floe_wire::artifact::{BuildSpec, BundleReader, build};
use floe_wire::proto::Digest;
use std::path::PathBuf;
use tokio::sync::watch;

/// The flows part of the core.
#[derive(Debug)]
pub(super) struct Flows {
    /// Bundles go to `data_dir/artifacts/`.
    data_dir: PathBuf,
    /// How long a published artifact's manifest stays valid, in days.
    artifact_ttl_days: u64,
    /// Signs artifact manifests.
    release_key: SigningKey,
    /// Grows with every publish.
    published: watch::Sender<u64>,
}

impl Flows {
    /// The part with its settings.
    pub(super) fn new(data_dir: PathBuf, artifact_ttl_days: u64, release_key: SigningKey) -> Self {
        let (published, _) = watch::channel(0);
        Self {
            data_dir,
            artifact_ttl_days,
            release_key,
            published,
        }
    }

    /// The public half of the release key (the checklist re-verifies artifacts with it when
    /// the data directory holds no trust store).
    pub(super) fn release_public(&self) -> ed25519_dalek::VerifyingKey {
        self.release_key.verifying_key()
    }

    /// A receiver whose value grows with every publish.
    pub(super) fn published_receiver(&self) -> watch::Receiver<u64> {
        self.published.subscribe()
    }

    /// `POST /flows`.
    pub(super) fn create(
        &self,
        store: &Store,
        input: FlowInput,
        now: Millis,
    ) -> Result<FlowRecord, ServiceError> {
        check_flow_input(&input)?;
        check_definition(&input.definition, floe_flow::Level::Draft)?;
        let id = format!("flow_{}", random_token(5)?);
        let flow = FlowRecord {
            id: id.clone(),
            name: input.name.trim().to_string(),
            description: input.description,
            tags: input.tags,
            state: FlowState::Draft,
            version: 1,
            lineage: id.clone(),
            parent_id: None,
            definition: input.definition,
            created_at: now,
            updated_at: now,
            published_at: None,
            archived_at: None,
        };
        store.atomically(|s| {
            s.put_flow(&flow)?;
            s.audit(&api_audit(
                s.caller(),
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
    pub(super) fn get(&self, store: &Store, id: &str) -> Result<FlowRecord, ServiceError> {
        reads::flow(store, id)
    }

    /// Flows matching a state (archived hidden unless asked) and a tag.
    pub(super) fn list(
        &self,
        store: &Store,
        state: Option<FlowState>,
        tag: Option<&str>,
    ) -> Result<Vec<FlowRecord>, ServiceError> {
        reads::flows(store, state, tag)
    }

    /// The artifact of a flow version, if published.
    pub(super) fn artifact_of(
        &self,
        store: &Store,
        flow_id: &str,
    ) -> Result<Option<ArtifactInfo>, ServiceError> {
        Ok(store.artifact_info(flow_id)?)
    }

    /// `PUT /flows/:id`.
    pub(super) fn update(
        &self,
        store: &Store,
        id: &str,
        input: FlowInput,
        now: Millis,
    ) -> Result<FlowRecord, ServiceError> {
        let mut flow = self.get(store, id)?;
        if flow.state != FlowState::Draft {
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
        store.atomically(|s| {
            s.put_flow(&flow)?;
            s.audit(&api_audit(
                s.caller(),
                now,
                "flow.update",
                None,
                "ok",
                format!("edited {id}"),
            ))
        })?;
        Ok(flow)
    }

    /// `DELETE /flows/:id`; `in_use` names an unfinished deployment of the flow, if any.
    pub(super) fn delete(
        &self,
        store: &Store,
        id: &str,
        in_use: impl FnOnce() -> Result<Option<String>, ServiceError>,
        now: Millis,
    ) -> Result<(), ServiceError> {
        let flow = self.get(store, id)?;
        if let Some(dep) = in_use()? {
            return Err(ServiceError::Conflict(format!(
                "flow {id} is used by deployment {dep}; finish or roll it back first"
            )));
        }
        let artifact = store.artifact(id)?;
        store.atomically(|s| {
            s.delete_flow(&flow.id)?;
            s.audit(&api_audit(
                s.caller(),
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
    pub(super) fn publish(
        &self,
        store: &Store,
        id: &str,
        smoke: Option<&crate::contract::SmokeTestInput>,
        now: Millis,
    ) -> Result<FlowRecord, ServiceError> {
        let mut flow = self.get(store, id)?;
        if flow.state != FlowState::Draft {
            return Err(ServiceError::Conflict(format!(
                "flow {id} is {}; only drafts can be published",
                flow.state
            )));
        }
        let bytes = check_definition(&flow.definition, floe_flow::Level::Complete)?;
        let smoke_test = smoke
            .map(|s| super::smoke::smoke_test(s, &flow.definition))
            .transpose()?;
        let dir = self.data_dir.join("artifacts");
        std::fs::create_dir_all(&dir).map_err(|source| ServiceError::Io {
            what: format!("creating {}", dir.display()),
            source,
        })?;
        let release = flow.version;
        let version = format!("1.{release}.0");
        let path = dir.join(format!("{}-{release}.floe", flow.lineage));
        // A bundle left by a publish that crashed before its database write is stale: the
        // flow is still a draft, so nothing refers to it.
        if path.exists() {
            let _ = std::fs::remove_file(&path);
        }
        let created = now / 1000;
        let expires = created + self.artifact_ttl_days.saturating_mul(86_400);
        let mut spec = BuildSpec::new(&flow.lineage, &version, release, created, expires);
        let with_smoke = if smoke_test.is_some() {
            ", with a smoke test"
        } else {
            ""
        };
        spec.smoke_test = smoke_test;
        let manifest =
            build(&spec, &bytes, None, &[&self.release_key], &path).map_err(|source| {
                ServiceError::Bundle {
                    what: "building the bundle",
                    source,
                }
            })?;
        let reader = BundleReader::open(&path).map_err(|source| ServiceError::Bundle {
            what: "reading the bundle back",
            source,
        })?;
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
        flow.state = FlowState::Published;
        flow.published_at = Some(now);
        flow.updated_at = now;
        let result = store.atomically(|s| {
            s.put_artifact(&artifact)?;
            s.put_flow(&flow)?;
            s.audit(&api_audit(
                s.caller(),
                now,
                "flow.publish",
                None,
                "ok",
                format!(
                    "published {id} as {} release {release} ({}){with_smoke}",
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

    /// `POST /flows/:id/archive`; `in_use` names an unfinished deployment of the flow, if any.
    pub(super) fn archive(
        &self,
        store: &Store,
        id: &str,
        in_use: impl FnOnce() -> Result<Option<String>, ServiceError>,
        now: Millis,
    ) -> Result<FlowRecord, ServiceError> {
        let mut flow = self.get(store, id)?;
        if flow.state == FlowState::Archived {
            return Err(ServiceError::Conflict(format!(
                "flow {id} is archived already"
            )));
        }
        if let Some(dep) = in_use()? {
            return Err(ServiceError::Conflict(format!(
                "flow {id} is used by deployment {dep}; it cannot be archived until that finishes"
            )));
        }
        flow.state = FlowState::Archived;
        flow.archived_at = Some(now);
        flow.updated_at = now;
        store.atomically(|s| {
            s.put_flow(&flow)?;
            s.audit(&api_audit(
                s.caller(),
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
    pub(super) fn new_version(
        &self,
        store: &Store,
        id: &str,
        now: Millis,
    ) -> Result<FlowRecord, ServiceError> {
        let source = self.get(store, id)?;
        if source.state == FlowState::Draft {
            return Err(ServiceError::Conflict(format!(
                "flow {id} is a draft; edit it instead of making a new version"
            )));
        }
        let version = store.latest_version(&source.lineage)? + 1;
        let new_id = format!("flow_{}", random_token(5)?);
        let flow = FlowRecord {
            id: new_id.clone(),
            state: FlowState::Draft,
            version,
            parent_id: Some(source.id.clone()),
            created_at: now,
            updated_at: now,
            published_at: None,
            archived_at: None,
            ..source
        };
        store.atomically(|s| {
            s.put_flow(&flow)?;
            s.audit(&api_audit(
                s.caller(),
                now,
                "flow.version",
                None,
                "ok",
                format!("{new_id} is version {version} of {}", flow.lineage),
            ))
        })?;
        Ok(flow)
    }

    /// A published flow version and its artifact, for a deployment of it.
    pub(super) fn deployable(
        &self,
        store: &Store,
        flow_id: &str,
    ) -> Result<(FlowRecord, ArtifactRecord), ServiceError> {
        let flow = self.get(store, flow_id)?;
        if flow.state != FlowState::Published {
            return Err(ServiceError::Conflict(format!(
                "flow {} is {}; only published flows can be deployed",
                flow.id, flow.state
            )));
        }
        let artifact = store.artifact(&flow.id)?.ok_or_else(|| {
            ServiceError::Internal(format!("published flow {} has no artifact", flow.id))
        })?;
        Ok((flow, artifact))
    }

    /// Every published artifact.
    pub(super) fn blobs(&self, store: &Store) -> Result<Vec<ArtifactBlob>, ServiceError> {
        Ok(store
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
    hygiene::required("name", &input.name, hygiene::MAX_NAME_BYTES)?;
    hygiene::text(
        "description",
        &input.description,
        floe_wire::text::MAX_DESCRIPTION_BYTES,
    )?;
    if input.tags.len() > hygiene::MAX_TAGS {
        return Err(validation(
            "tags",
            format!("at most {} tags", hygiene::MAX_TAGS),
        ));
    }
    for (i, tag) in input.tags.iter().enumerate() {
        hygiene::required(&format!("tags[{i}]"), tag, hygiene::MAX_TAG_BYTES)?;
    }
    Ok(())
}
