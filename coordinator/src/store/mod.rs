//! The coordinator's durable state in one SQLite file.
//!
//! Why it is shaped this way:
//! - One writer. The service actor owns the only writing [`Store`]; there is no locking beyond
//!   SQLite's own, so every multi-row change is one transaction that either lands whole or not
//!   at all (WAL, `synchronous=FULL`: a committed step survives a power cut). Reads that need
//!   nothing of the actor's memory go through a [`ReadPool`] of read-only connections instead,
//!   so they never wait for the writer (WAL readers see the last commit; see `read`).
//! - Records are documents. Flows, devices and deployments are stored as JSON documents with
//!   the columns that queries filter on beside them. The shapes change with the product; a
//!   document column keeps migrations for new optional fields down to zero, while the indexed
//!   columns keep the filters cheap.
//! - The rollout engine's whole state is saved after every handled input together with the
//!   directives that input produced ([`Store::save_step`]), so after `kill -9` the engine
//!   resumes with the same future and no directive it emitted is lost.
//! - Generations only grow: the per-device directive generation lives in its own table that
//!   nothing ever lowers or deletes, across deployments.
//! - The audit log is append-only: there is no update or delete statement for it.
//!
//! Migrations are numbered; `PRAGMA user_version` records the last one applied.

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use std::path::Path;

mod api_tokens;
mod canary_facts;
mod devices;
mod hooks;
mod incidents;
mod journal;
mod read;
mod records;
mod rollups;
mod tokens;
mod vars;
pub use vars::StoredVar;

pub use api_tokens::{ApiTokenRecord, api_token_hash};
pub use canary_facts::{CanaryFacts, MAX_OFFLINE_HISTORY};
pub use hooks::HookRecord;
pub use incidents::IncidentRow;
pub use journal::{LoggedInput, SNAPSHOT_VERSION};
pub use read::ReadPool;
pub use records::{
    AppliedRecord, ArtifactInfo, ArtifactRecord, AuditFilter, AuditRecord, DeploymentRow,
    DesiredRecord, DeviceRecord, FlowRecord, HealthRecord, SlotRecord,
};
pub use rollups::RollupRow;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Opening the database or applying a migration failed.
    #[error("opening the database {path}: {source}")]
    Open {
        /// The database file.
        path: String,
        /// The SQLite error.
        source: rusqlite::Error,
    },
    /// The database file could not be made private (mode 0600).
    #[error("making {path} private (mode 0600): {source}")]
    Private {
        /// The database file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The database was written by a newer coordinator.
    #[error("the database is at schema {found}, newer than this coordinator's {supported}")]
    Schema {
        /// The schema version found.
        found: i64,
        /// The newest schema this code knows.
        supported: i64,
    },
    /// A query or write failed.
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    /// A stored document did not decode (or a record did not encode).
    #[error("stored {what} does not decode: {source}")]
    Document {
        /// Which record.
        what: &'static str,
        /// The JSON error.
        source: serde_json::Error,
    },
}

/// The audit actor of a change made in-process, not by an API token.
pub const DEFAULT_CALLER: &str = "api";

/// The migrations, in order; `user_version` is the count applied.
const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    "CREATE TABLE flows (
        id TEXT PRIMARY KEY,
        lineage TEXT NOT NULL,
        version INTEGER NOT NULL,
        state TEXT NOT NULL,
        doc TEXT NOT NULL
     );
     CREATE INDEX flows_lineage ON flows(lineage, version);
     CREATE TABLE artifacts (
        flow_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        release INTEGER NOT NULL,
        version TEXT NOT NULL,
        manifest_sha256 TEXT NOT NULL,
        size INTEGER NOT NULL,
        chunk_size INTEGER NOT NULL,
        bundle_path TEXT NOT NULL,
        manifest BLOB NOT NULL,
        payload BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        UNIQUE (name, release)
     );
     CREATE TABLE devices (
        id TEXT PRIMARY KEY,
        public_key TEXT NOT NULL,
        doc TEXT NOT NULL
     );
     CREATE TABLE enroll_tokens (
        token TEXT PRIMARY KEY,
        expires_at INTEGER NOT NULL,
        used_by TEXT
     );
     CREATE TABLE generations (
        device_id TEXT PRIMARY KEY,
        generation INTEGER NOT NULL
     );
     CREATE TABLE desired (
        device_id TEXT PRIMARY KEY,
        generation INTEGER NOT NULL,
        deployment_id TEXT NOT NULL,
        directive TEXT NOT NULL,
        post BLOB NOT NULL,
        issued_at INTEGER NOT NULL
     );
     CREATE TABLE deployments (
        id TEXT PRIMARY KEY,
        flow_id TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        doc TEXT NOT NULL,
        engine TEXT NOT NULL
     );
     CREATE INDEX deployments_flow ON deployments(flow_id);
     CREATE TABLE audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        at INTEGER NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        device_id TEXT,
        deployment_id TEXT,
        outcome TEXT NOT NULL,
        detail TEXT NOT NULL
     );
     CREATE INDEX audit_deployment ON audit(deployment_id);
     CREATE INDEX audit_device ON audit(device_id);",
    // 2: a deployment's engine is persisted as a snapshot plus the inputs fed since, and its
    // targets one row each, so a step writes what it changed (see `journal`).
    "CREATE TABLE deployment_inputs (
        deployment_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        at INTEGER NOT NULL,
        input TEXT NOT NULL,
        PRIMARY KEY (deployment_id, seq)
     ) WITHOUT ROWID;
     CREATE TABLE deployment_targets (
        deployment_id TEXT NOT NULL,
        idx INTEGER NOT NULL,
        track TEXT NOT NULL,
        PRIMARY KEY (deployment_id, idx)
     ) WITHOUT ROWID;
     ALTER TABLE deployments ADD COLUMN snapshot_seq INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE deployments ADD COLUMN snapshot_version INTEGER NOT NULL DEFAULT 1;",
    // 3: the highest version each lineage (artifact name) ever had, kept across deletes, so a
    // release number is never issued twice for different content.
    "CREATE TABLE lineage_highest (
        lineage TEXT PRIMARY KEY,
        version INTEGER NOT NULL
     ) WITHOUT ROWID;
     INSERT INTO lineage_highest (lineage, version)
        SELECT lineage, MAX(version) FROM flows GROUP BY lineage;",
    // 4: values of flow variables per device and per group (see `vars`).
    "CREATE TABLE variables (
        scope TEXT NOT NULL,
        name TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (scope, name)
     ) WITHOUT ROWID;",
    // 5: health rollups per device group and window (see `rollups`).
    "CREATE TABLE health_rollups (
        device_type TEXT NOT NULL,
        region TEXT NOT NULL,
        start_ms INTEGER NOT NULL,
        window_ms INTEGER NOT NULL,
        reports INTEGER NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (start_ms, device_type, region)
     ) WITHOUT ROWID;",
    // 6: named API tokens with a role, stored as the SHA-256 of the secret (`api_tokens`).
    "CREATE TABLE api_tokens (
        name TEXT PRIMARY KEY,
        hash TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER,
        last_used_at INTEGER
     ) WITHOUT ROWID;",
    // 7: webhooks (see `hooks`): where events are POSTed, their filters and signing secret.
    "CREATE TABLE hooks (
        id TEXT PRIMARY KEY,
        url TEXT NOT NULL,
        kinds TEXT NOT NULL,
        deployment_id TEXT,
        secret TEXT NOT NULL,
        created_at INTEGER NOT NULL
     );",
    // 8: incident reports and rollback verification, one row per deployment (see
    // `incidents`): the report of a failed or rolled-back deployment, and the verification
    // state of its rolled-back devices.
    "CREATE TABLE incidents (
        deployment_id TEXT PRIMARY KEY,
        report TEXT,
        verification TEXT,
        verification_pending INTEGER NOT NULL DEFAULT 0,
        updated_at INTEGER NOT NULL
     ) WITHOUT ROWID;",
    // 9: secret variable values: `value` holds the value encrypted with the data key
    // (`service::vault`) when `secret` is 1.
    "ALTER TABLE variables ADD COLUMN secret INTEGER NOT NULL DEFAULT 0;",
];

fn to_json<T: Serialize>(what: &'static str, value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|source| StoreError::Document { what, source })
}

fn from_json<T: for<'de> Deserialize<'de>>(
    what: &'static str,
    text: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|source| StoreError::Document { what, source })
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// An open transaction or savepoint ([`Store::begin`]): committed by [`Batch::commit`],
/// rolled back when dropped without it.
#[derive(Debug)]
pub struct Batch<'a> {
    conn: &'a Connection,
    nested: bool,
    done: bool,
}

impl Batch<'_> {
    /// Makes everything written since [`Store::begin`] land (with the outer transaction's
    /// commit, for a savepoint).
    pub fn commit(mut self) -> Result<(), StoreError> {
        self.done = true;
        self.conn.execute_batch(if self.nested {
            "RELEASE batch"
        } else {
            "COMMIT"
        })?;
        Ok(())
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        if !self.done {
            let undo = if self.nested {
                "ROLLBACK TO batch; RELEASE batch"
            } else {
                "ROLLBACK"
            };
            if let Err(e) = self.conn.execute_batch(undo) {
                tracing::error!(error = %e, "rolling back a transaction");
            }
        }
    }
}

/// The coordinator's database. See the module documentation.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    /// The database file (None: in memory), for the read-only connections of a [`ReadPool`].
    path: Option<std::path::PathBuf>,
    /// Who asked for the change being made: the audit actor of API-initiated lines.
    caller: String,
}

impl Store {
    /// Opens (creating if missing) the database at `path`, sets WAL and `synchronous=FULL`,
    /// and applies pending migrations.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        floe_wire::fsutil::private_database(path).map_err(|source| StoreError::Private {
            path: path.display().to_string(),
            source,
        })?;
        let conn = Connection::open(path).map_err(open_err)?;
        let mut store = Self::init(conn).map_err(|e| match e {
            StoreError::Sql(source) => open_err(source),
            other => other,
        })?;
        store.path = Some(path.to_path_buf());
        Ok(store)
    }

    /// An in-memory database (tests).
    pub fn in_memory() -> Result<Store, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Store, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Every statement of the per-report path stays prepared (rusqlite keeps 16 by default).
        conn.set_prepared_statement_cache_capacity(64);
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let supported = MIGRATIONS.len() as i64;
        if found > supported {
            return Err(StoreError::Schema { found, supported });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(to_u64(found) as usize) {
            let tx = conn.unchecked_transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        let store = Store {
            conn,
            path: None,
            caller: DEFAULT_CALLER.to_string(),
        };
        store.hash_clear_tokens()?;
        Ok(store)
    }

    /// Who asked for the change being made (the audit actor of every line a REST-initiated
    /// change writes): `token:<name>` while the service runs an API caller's job,
    /// [`DEFAULT_CALLER`] otherwise.
    pub fn caller(&self) -> &str {
        &self.caller
    }

    /// Sets [`Store::caller`] (the service sets it around each job it runs).
    pub fn set_caller(&mut self, caller: &str) {
        if self.caller != caller {
            caller.clone_into(&mut self.caller);
        }
    }

    /// The schema version applied.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    /// Runs `f` in one transaction: everything it writes lands, or nothing does. Called
    /// inside another transaction (a batch of reports applied together, a deployment start),
    /// it runs in a savepoint instead: its writes are undone alone if it fails, and land with
    /// the outer transaction's commit.
    pub fn atomically<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, E>,
    ) -> Result<T, E> {
        let batch = self.begin()?;
        let out = f(self)?;
        batch.commit()?;
        Ok(out)
    }

    /// Opens a transaction that spans several calls ([`Store::close_batch`] commits it,
    /// [`Store::abandon_batch`] rolls it back); `atomically` inside it uses savepoints. For a
    /// caller that cannot hold a [`Batch`] guard across the calls it makes.
    pub fn open_batch(&self) -> Result<(), StoreError> {
        self.conn.execute_batch("BEGIN")?;
        Ok(())
    }

    /// Commits the transaction [`Store::open_batch`] opened.
    pub fn close_batch(&self) -> Result<(), StoreError> {
        self.conn.execute_batch("COMMIT")?;
        Ok(())
    }

    /// Rolls back the transaction [`Store::open_batch`] opened, if it is still open.
    pub fn abandon_batch(&self) {
        if !self.conn.is_autocommit()
            && let Err(e) = self.conn.execute_batch("ROLLBACK")
        {
            tracing::error!(error = %e, "rolling back a batch");
        }
    }

    /// Opens a transaction (a savepoint when one is open already) that the returned guard
    /// commits, or rolls back when dropped uncommitted.
    pub fn begin(&self) -> Result<Batch<'_>, StoreError> {
        let nested = !self.conn.is_autocommit();
        self.conn
            .execute_batch(if nested { "SAVEPOINT batch" } else { "BEGIN" })?;
        Ok(Batch {
            conn: &self.conn,
            nested,
            done: false,
        })
    }

    // Flows.

    /// Inserts or replaces a flow version.
    pub fn put_flow(&self, flow: &FlowRecord) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO flows (id, lineage, version, state, doc) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(id) DO UPDATE SET state = excluded.state, doc = excluded.doc",
            params![
                flow.id,
                flow.lineage,
                to_i64(flow.version),
                flow.state.as_str(),
                to_json("flow", flow)?
            ],
        )?;
        self.conn.execute(
            "INSERT INTO lineage_highest (lineage, version) VALUES (?1, ?2)
             ON CONFLICT(lineage) DO UPDATE SET version = MAX(version, excluded.version)",
            params![flow.lineage, to_i64(flow.version)],
        )?;
        Ok(())
    }

    /// A flow version by id.
    pub fn flow(&self, id: &str) -> Result<Option<FlowRecord>, StoreError> {
        let doc: Option<String> = self
            .conn
            .query_row("SELECT doc FROM flows WHERE id = ?1", [id], |r| r.get(0))
            .optional()?;
        doc.map(|d| from_json("flow", &d)).transpose()
    }

    /// Every flow version, oldest first.
    pub fn flows(&self) -> Result<Vec<FlowRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT doc FROM flows ORDER BY lineage, version")?;
        let docs = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        docs.iter().map(|d| from_json("flow", d)).collect()
    }

    /// The highest version a lineage ever had, deleted versions included: the next version
    /// (and so the next release of the artifact) is above it.
    pub fn latest_version(&self, lineage: &str) -> Result<u64, StoreError> {
        let v: Option<i64> = self.conn.query_row(
            "SELECT MAX(v) FROM (
                SELECT MAX(version) AS v FROM flows WHERE lineage = ?1
                UNION ALL SELECT version FROM lineage_highest WHERE lineage = ?1)",
            [lineage],
            |r| r.get(0),
        )?;
        Ok(v.map(to_u64).unwrap_or(0))
    }

    /// Deletes a flow version (its artifact row goes with it).
    pub fn delete_flow(&self, id: &str) -> Result<bool, StoreError> {
        self.conn
            .execute("DELETE FROM artifacts WHERE flow_id = ?1", [id])?;
        Ok(self.conn.execute("DELETE FROM flows WHERE id = ?1", [id])? > 0)
    }

    // Artifacts.

    /// Inserts an artifact.
    pub fn put_artifact(&self, a: &ArtifactRecord) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO artifacts (flow_id, name, release, version, manifest_sha256, size,
                chunk_size, bundle_path, manifest, payload, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                a.flow_id,
                a.name,
                to_i64(a.release),
                a.version,
                a.manifest_sha256,
                to_i64(a.size),
                a.chunk_size,
                a.bundle_path,
                a.manifest,
                a.payload,
                to_i64(a.created_at)
            ],
        )?;
        Ok(())
    }

    fn artifact_where(
        &self,
        clause: &str,
        p: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<ArtifactRecord>, StoreError> {
        let sql = format!(
            "SELECT flow_id, name, release, version, manifest_sha256, size, chunk_size,
                bundle_path, manifest, payload, created_at FROM artifacts {clause}"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt
            .query_map(p, |r| {
                Ok(ArtifactRecord {
                    flow_id: r.get(0)?,
                    name: r.get(1)?,
                    release: to_u64(r.get(2)?),
                    version: r.get(3)?,
                    manifest_sha256: r.get(4)?,
                    size: to_u64(r.get(5)?),
                    chunk_size: r.get(6)?,
                    bundle_path: r.get(7)?,
                    manifest: r.get(8)?,
                    payload: r.get(9)?,
                    created_at: to_u64(r.get(10)?),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The artifact built from a flow version.
    pub fn artifact(&self, flow_id: &str) -> Result<Option<ArtifactRecord>, StoreError> {
        Ok(self
            .artifact_where("WHERE flow_id = ?1", &[&flow_id])?
            .into_iter()
            .next())
    }

    /// The description of the artifact built from a flow version, without its bytes.
    pub fn artifact_info(&self, flow_id: &str) -> Result<Option<ArtifactInfo>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT name, release, version, manifest_sha256, size FROM artifacts
                 WHERE flow_id = ?1",
                [flow_id],
                |r| {
                    Ok(ArtifactInfo {
                        name: r.get(0)?,
                        release: to_u64(r.get(1)?),
                        version: r.get(2)?,
                        manifest_sha256: r.get(3)?,
                        size: to_u64(r.get(4)?),
                    })
                },
            )
            .optional()?)
    }

    /// The artifact with a name and release.
    pub fn artifact_release(
        &self,
        name: &str,
        release: u64,
    ) -> Result<Option<ArtifactRecord>, StoreError> {
        Ok(self
            .artifact_where(
                "WHERE name = ?1 AND release = ?2",
                &[&name, &to_i64(release)],
            )?
            .into_iter()
            .next())
    }

    /// Every artifact, oldest first.
    pub fn artifacts(&self) -> Result<Vec<ArtifactRecord>, StoreError> {
        self.artifact_where("ORDER BY created_at", &[])
    }

    // Devices.

    /// Inserts or replaces a device.
    pub fn put_device(&self, d: &DeviceRecord) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO devices (id, public_key, doc) VALUES (?1, ?2, ?3)
             ON CONFLICT(id) DO UPDATE SET public_key = excluded.public_key, doc = excluded.doc",
            )?
            .execute(params![d.id, d.public_key, to_json("device", d)?])?;
        Ok(())
    }

    /// Every device.
    pub fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        let mut stmt = self.conn.prepare("SELECT doc FROM devices ORDER BY id")?;
        let docs = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        docs.iter().map(|d| from_json("device", d)).collect()
    }

    // Generations and desired directives.

    /// Allocates the next directive generation of a device (the stored counter only grows).
    pub fn next_generation(&self, device: &str) -> Result<u64, StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO generations (device_id, generation) VALUES (?1, 1)
             ON CONFLICT(device_id) DO UPDATE SET generation = generation + 1",
            )?
            .execute([device])?;
        let g: i64 = self
            .conn
            .prepare_cached("SELECT generation FROM generations WHERE device_id = ?1")?
            .query_row([device], |r| r.get(0))?;
        Ok(to_u64(g))
    }

    /// The highest generation allocated for every device that has one, in one scan (creating
    /// a deployment over 100 000 targets reads them all, instead of one query per target).
    pub fn generations(&self) -> Result<std::collections::HashMap<String, u64>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT device_id, generation FROM generations")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let mut out = std::collections::HashMap::new();
        for row in rows {
            let (id, g) = row?;
            out.insert(id, to_u64(g));
        }
        Ok(out)
    }

    /// Sets a device's desired directive.
    pub fn put_desired(&self, d: &DesiredRecord) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO desired (device_id, generation, deployment_id, directive, post, issued_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(device_id) DO UPDATE SET generation = excluded.generation,
                deployment_id = excluded.deployment_id, directive = excluded.directive,
                post = excluded.post, issued_at = excluded.issued_at",
            )?
            .execute(params![
                d.device_id,
                to_i64(d.generation),
                d.deployment_id,
                d.directive,
                d.post,
                to_i64(d.issued_at)
            ])?;
        Ok(())
    }

    /// Every desired directive.
    pub fn desired(&self) -> Result<Vec<DesiredRecord>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT device_id, generation, deployment_id, directive, post, issued_at FROM desired",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok(DesiredRecord {
                    device_id: r.get(0)?,
                    generation: to_u64(r.get(1)?),
                    deployment_id: r.get(2)?,
                    directive: r.get(3)?,
                    post: r.get(4)?,
                    issued_at: to_u64(r.get(5)?),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    // Deployments.

    /// Inserts or replaces a deployment.
    pub fn put_deployment(&self, d: &DeploymentRow) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO deployments (id, flow_id, status, created_at, doc, engine)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(id) DO UPDATE SET status = excluded.status, doc = excluded.doc,
                engine = excluded.engine",
            params![
                d.id,
                d.flow_id,
                d.status,
                to_i64(d.created_at),
                d.doc,
                d.engine
            ],
        )?;
        Ok(())
    }

    fn deployments_where(
        &self,
        clause: &str,
        p: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<DeploymentRow>, StoreError> {
        let sql = format!(
            "SELECT id, flow_id, status, created_at, doc, engine FROM deployments {clause}"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt
            .query_map(p, |r| {
                Ok(DeploymentRow {
                    id: r.get(0)?,
                    flow_id: r.get(1)?,
                    status: r.get(2)?,
                    created_at: to_u64(r.get(3)?),
                    doc: r.get(4)?,
                    engine: r.get(5)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// A deployment by id.
    pub fn deployment(&self, id: &str) -> Result<Option<DeploymentRow>, StoreError> {
        Ok(self
            .deployments_where("WHERE id = ?1", &[&id])?
            .into_iter()
            .next())
    }

    /// Deployments that are not finished (pending, running, paused).
    pub fn active_deployments(&self) -> Result<Vec<DeploymentRow>, StoreError> {
        self.deployments_where(
            "WHERE status IN ('pending', 'running', 'paused') ORDER BY created_at",
            &[],
        )
    }

    /// Every deployment, oldest first.
    pub fn deployments(&self) -> Result<Vec<DeploymentRow>, StoreError> {
        self.deployments_where("ORDER BY created_at, id", &[])
    }

    /// Up to `limit` deployment ids in creation order after position `after` (0: from the
    /// first), matching a status and a flow when given, each with its position. Positions
    /// are the table's row ids: they only grow, so a deployment created while a client pages
    /// lands after every page it has seen.
    pub fn deployment_ids_page(
        &self,
        after: u64,
        status: Option<&str>,
        flow_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT rowid, id FROM deployments
             WHERE rowid > ?1 AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR flow_id = ?3)
             ORDER BY rowid LIMIT ?4",
        )?;
        let rows = stmt
            .query_map(
                params![to_i64(after), status, flow_id, to_i64(limit as u64)],
                |r| Ok((to_u64(r.get(0)?), r.get(1)?)),
            )?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Whether any deployment of `flow_id` is in one of `statuses`.
    pub fn flow_in_use(&self, flow_id: &str, statuses: &[&str]) -> Result<bool, StoreError> {
        let rows = self.deployments_where("WHERE flow_id = ?1", &[&flow_id])?;
        Ok(rows.iter().any(|r| statuses.contains(&r.status.as_str())))
    }

    // Audit.

    /// Appends an audit line.
    pub fn audit(&self, a: &AuditRecord) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO audit (at, actor, action, device_id, deployment_id, outcome, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                to_i64(a.at),
                a.actor,
                a.action,
                a.device_id,
                a.deployment_id,
                a.outcome,
                a.detail
            ])?;
        Ok(())
    }

    /// Audit lines matching `filter`, newest first.
    pub fn audit_entries(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        Ok(self
            .audit_page(filter)?
            .into_iter()
            .map(|(_, a)| a)
            .collect())
    }

    /// Audit lines matching `filter`, newest first, each with its position in the log (it
    /// only grows, so a page that ends at position `p` continues with `before: Some(p)` and
    /// lines appended meanwhile never shift it).
    pub fn audit_page(&self, filter: &AuditFilter) -> Result<Vec<(u64, AuditRecord)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, at, actor, action, device_id, deployment_id, outcome, detail FROM audit
             WHERE (?1 IS NULL OR deployment_id = ?1) AND (?2 IS NULL OR device_id = ?2)
               AND (?4 IS NULL OR seq < ?4)
             ORDER BY seq DESC LIMIT ?3",
        )?;
        let before = filter.before.map(to_i64);
        let rows = stmt
            .query_map(
                params![filter.deployment_id, filter.device_id, filter.limit, before],
                |r| {
                    Ok((
                        to_u64(r.get(0)?),
                        AuditRecord {
                            at: to_u64(r.get(1)?),
                            actor: r.get(2)?,
                            action: r.get(3)?,
                            device_id: r.get(4)?,
                            deployment_id: r.get(5)?,
                            outcome: r.get(6)?,
                            detail: r.get(7)?,
                        },
                    ))
                },
            )?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

/// Formats unix milliseconds as an RFC 3339 UTC timestamp (`2026-11-22T03:04:05.678Z`).
pub use floe_rollout::duration::rfc3339;

#[cfg(test)]
mod tests;
