//! The device's durable state: one SQLite file (`<data>/floed.db`, shared with the artifact
//! layer's release table) in WAL mode with `synchronous=FULL`.
//!
//! Three things live here. The slot table says what version each slot holds. The lifecycle row
//! is the single source of truth for where an installation stands (staging, smoke test,
//! switching, trial, commit or rollback) and which slot is the last known good; it is written
//! before every step so a crash at any point can be resumed or undone at the next start. The
//! audit log records who did what to the device and how it ended; triggers make it
//! append-only, so not even a bug in this crate can rewrite history.
//!
//! A step and its audit record are written in one transaction, so the log never claims a step
//! the lifecycle row does not show, and the other way round. Time is an input (milliseconds
//! since the Unix epoch): the caller reads the clock, which keeps this module testable.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::slots::SlotName;

/// The database file's name inside the data directory.
pub const DB_FILE: &str = "floed.db";

/// At most this many restart times are kept for the crash-loop guard; older ones are dropped.
pub const MAX_TRIAL_BOOTS: usize = 16;

/// Why the state database failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Opening the database file or setting its pragmas failed.
    #[error("opening state database {path}: {source}")]
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
    /// Creating or upgrading the schema failed.
    #[error("creating state schema: {0}")]
    Schema(rusqlite::Error),
    /// Reading state failed.
    #[error("reading state: {0}")]
    Read(rusqlite::Error),
    /// Writing state failed (for example because the disk is full or read-only).
    #[error("writing state: {0}")]
    Write(rusqlite::Error),
    /// A stored value is not one this version understands.
    #[error("state database holds an unknown {what} `{value}`")]
    Corrupt {
        /// Which column.
        what: &'static str,
        /// The value found.
        value: String,
    },
}

/// Where an installation stands. Every variant except `Idle` names a step that was started
/// and not yet finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Nothing in progress; the active slot is the last known good.
    Idle,
    /// Files are being written into the standby slot.
    Staging,
    /// The standby slot holds a verified version that is being smoke-tested.
    Smoke,
    /// The switch to the target slot is in progress; the trial boot counter is persisted.
    Switching,
    /// The target slot is active and must stay healthy for `min_ready`.
    Trial,
    /// The target failed; the last known good is being reactivated.
    RollingBack,
}

impl Phase {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Staging => "staging",
            Phase::Smoke => "smoke",
            Phase::Switching => "switching",
            Phase::Trial => "trial",
            Phase::RollingBack => "rolling_back",
        }
    }

    fn parse(s: &str) -> Result<Phase, StateError> {
        Ok(match s {
            "idle" => Phase::Idle,
            "staging" => Phase::Staging,
            "smoke" => Phase::Smoke,
            "switching" => Phase::Switching,
            "trial" => Phase::Trial,
            "rolling_back" => Phase::RollingBack,
            other => {
                return Err(StateError::Corrupt {
                    what: "phase",
                    value: other.to_string(),
                });
            }
        })
    }
}

/// The persisted lifecycle row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifecycle {
    /// The step in progress.
    pub phase: Phase,
    /// The slot that last passed a trial (or was installed first); rollback goes here.
    pub last_good: Option<SlotName>,
    /// The slot being installed, switched to or tried, when a step is in progress.
    pub target: Option<SlotName>,
    /// The version in the target slot.
    pub target_version: Option<String>,
    /// When the current phase began (ms since the epoch).
    pub since_ms: i64,
    /// Start times (ms since the epoch) of floed while the target was on trial; the crash-loop
    /// guard counts them. Bounded by [`MAX_TRIAL_BOOTS`].
    pub trial_boots: Vec<i64>,
}

impl Lifecycle {
    /// The row of a device that has never installed anything.
    pub fn fresh(now_ms: i64) -> Lifecycle {
        Lifecycle::idle(None, now_ms)
    }

    /// The row of a device at rest on `last_good` since `now_ms`: every step (an installation,
    /// a switch, a trial, a rollback, a recovery) ends in it.
    pub fn idle(last_good: Option<SlotName>, now_ms: i64) -> Lifecycle {
        Lifecycle {
            phase: Phase::Idle,
            last_good,
            target: None,
            target_version: None,
            since_ms: now_ms,
            trial_boots: Vec::new(),
        }
    }
}

/// What a slot holds according to the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRecord {
    /// The slot.
    pub slot: SlotName,
    /// The version staged there, if any.
    pub version: Option<String>,
    /// When it was staged (ms since the epoch).
    pub staged_ms: Option<i64>,
}

/// One audit log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Row id (assigned by the database; 0 before insertion).
    pub id: i64,
    /// When it happened (ms since the epoch).
    pub at_ms: i64,
    /// Who caused it: `local:<user>`, `coordinator`, `floed` (automatic).
    pub actor: String,
    /// What was done: `stage`, `smoke`, `switch`, `commit`, `rollback`, `recover` …
    pub action: String,
    /// The device id.
    pub device: String,
    /// How it ended: `ok`, `failed`, `started`, `interrupted` ….
    pub outcome: String,
    /// Free-form detail (versions, slots, the reason).
    pub detail: String,
}

impl AuditEntry {
    /// A new entry to append.
    pub fn new(
        at_ms: i64,
        actor: &str,
        action: &str,
        device: &str,
        outcome: &str,
        detail: &str,
    ) -> Self {
        AuditEntry {
            id: 0,
            at_ms,
            actor: actor.to_string(),
            action: action.to_string(),
            device: device.to_string(),
            outcome: outcome.to_string(),
            detail: detail.to_string(),
        }
    }
}

/// The newest coordinator directive this device accepted, and how carrying it out went. It is
/// written when the directive is accepted (progress `working`) and again when it ends, so a
/// restart neither applies it twice nor forgets how far it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedDirective {
    /// The directive's generation.
    pub generation: u64,
    /// `stage`, `switch`, `commit` or `rollback`.
    pub action: String,
    /// The artifact name.
    pub name: String,
    /// The artifact release.
    pub release: u64,
    /// Hex SHA-256 of the manifest the directive pins.
    pub manifest_sha256: String,
    /// `working`, `done`, `failed` or `rolled_back`.
    pub progress: String,
    /// Why, when it failed or rolled back.
    pub detail: String,
    /// When it was last updated (ms since the epoch).
    pub at_ms: i64,
    /// The post's exact bytes, so a directive interrupted by a restart can be verified again
    /// and resumed.
    pub post: Vec<u8>,
}

/// Which signed release a slot holds, when it was filled from a signed manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRelease {
    /// The artifact name.
    pub name: String,
    /// The release number.
    pub release: u64,
    /// The semantic version.
    pub version: String,
    /// Hex SHA-256 of the manifest.
    pub manifest_sha256: String,
}

/// The open state database.
#[derive(Debug)]
pub struct State {
    conn: Connection,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS agent_slots (
    name TEXT PRIMARY KEY CHECK (name IN ('blue', 'green')),
    version TEXT,
    staged_ms INTEGER
);
CREATE TABLE IF NOT EXISTS agent_lifecycle (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    phase TEXT NOT NULL,
    last_good TEXT,
    target TEXT,
    target_version TEXT,
    since_ms INTEGER NOT NULL,
    trial_boots TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS agent_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    device TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS agent_audit_no_update BEFORE UPDATE ON agent_audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS agent_audit_no_delete BEFORE DELETE ON agent_audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
INSERT OR IGNORE INTO agent_slots (name) VALUES ('blue'), ('green');
CREATE TABLE IF NOT EXISTS agent_directive (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    generation INTEGER NOT NULL,
    action TEXT NOT NULL,
    name TEXT NOT NULL,
    release INTEGER NOT NULL,
    manifest_sha256 TEXT NOT NULL,
    progress TEXT NOT NULL,
    detail TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    post BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS agent_slot_release (
    slot TEXT PRIMARY KEY CHECK (slot IN ('blue', 'green')),
    name TEXT NOT NULL,
    release INTEGER NOT NULL,
    version TEXT NOT NULL,
    manifest_sha256 TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS agent_rollback_permit (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    envelope BLOB NOT NULL
);
";

impl State {
    /// Opens (creating if needed) `<data_dir>/floed.db` for reading and writing.
    pub fn open(data_dir: &Path, now_ms: i64) -> Result<State, StateError> {
        let path = data_dir.join(DB_FILE);
        let open_err = |source| StateError::Open {
            path: path.display().to_string(),
            source,
        };
        floe_wire::fsutil::private_database(&path).map_err(|source| StateError::Private {
            path: path.display().to_string(),
            source,
        })?;
        let conn = Connection::open(&path).map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        conn.execute_batch(SCHEMA).map_err(StateError::Schema)?;
        conn.execute(
            "INSERT OR IGNORE INTO agent_lifecycle (id, phase, since_ms) VALUES (1, 'idle', ?1)",
            params![now_ms],
        )
        .map_err(StateError::Schema)?;
        Ok(State { conn })
    }

    /// Opens an existing database read-only (for `floed status` on a read-only or busy device).
    pub fn open_read_only(data_dir: &Path) -> Result<State, StateError> {
        let path = data_dir.join(DB_FILE);
        let open_err = |source| StateError::Open {
            path: path.display().to_string(),
            source,
        };
        if !path.exists() {
            return Err(open_err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                Some("no state database; floed has never run with this data directory".into()),
            )));
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&path, flags).map_err(open_err)?;
        // On a read-only file system a WAL database cannot create its shared-memory file; the
        // immutable mode reads it without one, which is safe because nothing can write it.
        if conn
            .query_row("SELECT count(*) FROM agent_lifecycle", [], |_| Ok(()))
            .is_err()
        {
            let uri = format!("file:{}?immutable=1", path.display());
            let conn = Connection::open_with_flags(&uri, flags | OpenFlags::SQLITE_OPEN_URI)
                .map_err(open_err)?;
            return Ok(State { conn });
        }
        Ok(State { conn })
    }

    /// The lifecycle row.
    pub fn lifecycle(&self) -> Result<Lifecycle, StateError> {
        let row = self
            .conn
            .query_row(
                "SELECT phase, last_good, target, target_version, since_ms, trial_boots
                 FROM agent_lifecycle WHERE id = 1",
                [],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, String>(5)?,
                    ))
                },
            )
            .optional()
            .map_err(StateError::Read)?;
        let Some((phase, last_good, target, target_version, since_ms, boots)) = row else {
            return Ok(Lifecycle::fresh(0));
        };
        let mut trial_boots = Vec::new();
        for part in boots.split(',').filter(|p| !p.is_empty()) {
            let t = part.parse::<i64>().map_err(|_| StateError::Corrupt {
                what: "trial boot time",
                value: part.to_string(),
            })?;
            trial_boots.push(t);
        }
        Ok(Lifecycle {
            phase: Phase::parse(&phase)?,
            last_good: parse_slot(last_good)?,
            target: parse_slot(target)?,
            target_version,
            since_ms,
            trial_boots,
        })
    }

    /// Persists a lifecycle step and, in the same transaction, its audit entries.
    pub fn transition(
        &mut self,
        lifecycle: &Lifecycle,
        audit: &[AuditEntry],
    ) -> Result<(), StateError> {
        let tx = self.conn.transaction().map_err(StateError::Write)?;
        write_lifecycle(&tx, lifecycle)?;
        for entry in audit {
            insert_audit(&tx, entry)?;
        }
        tx.commit().map_err(StateError::Write)
    }

    /// Records what a slot holds (None when it was emptied), with an optional audit entry.
    pub fn set_slot(
        &mut self,
        slot: SlotName,
        version: Option<&str>,
        now_ms: i64,
        audit: Option<&AuditEntry>,
    ) -> Result<(), StateError> {
        let tx = self.conn.transaction().map_err(StateError::Write)?;
        tx.execute(
            "UPDATE agent_slots SET version = ?2, staged_ms = ?3 WHERE name = ?1",
            params![slot.as_str(), version, version.map(|_| now_ms)],
        )
        .map_err(StateError::Write)?;
        if let Some(entry) = audit {
            insert_audit(&tx, entry)?;
        }
        tx.commit().map_err(StateError::Write)
    }

    /// What both slots hold, blue first.
    pub fn slots(&self) -> Result<Vec<SlotRecord>, StateError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, version, staged_ms FROM agent_slots ORDER BY name")
            .map_err(StateError::Read)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                ))
            })
            .map_err(StateError::Read)?;
        let mut out = Vec::with_capacity(2);
        for row in rows {
            let (name, version, staged_ms) = row.map_err(StateError::Read)?;
            let slot = SlotName::parse(&name).ok_or(StateError::Corrupt {
                what: "slot name",
                value: name.clone(),
            })?;
            out.push(SlotRecord {
                slot,
                version,
                staged_ms,
            });
        }
        Ok(out)
    }

    /// Appends one audit entry on its own.
    pub fn audit(&mut self, entry: &AuditEntry) -> Result<(), StateError> {
        insert_audit(&self.conn, entry)
    }

    /// The newest `limit` audit entries, oldest first.
    pub fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>, StateError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, at_ms, actor, action, device, outcome, detail FROM
                 (SELECT * FROM agent_audit ORDER BY id DESC LIMIT ?1) ORDER BY id",
            )
            .map_err(StateError::Read)?;
        let rows = stmt
            .query_map(params![limit], |r| {
                Ok(AuditEntry {
                    id: r.get(0)?,
                    at_ms: r.get(1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    device: r.get(4)?,
                    outcome: r.get(5)?,
                    detail: r.get(6)?,
                })
            })
            .map_err(StateError::Read)?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(StateError::Read)
    }

    /// Runs `PRAGMA integrity_check` and returns its first line (`ok` when sound).
    pub fn integrity_check(&self) -> Result<String, StateError> {
        self.conn
            .query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))
            .map_err(StateError::Read)
    }

    /// The newest accepted directive, if any.
    pub fn applied_directive(&self) -> Result<Option<AppliedDirective>, StateError> {
        self.conn
            .query_row(
                "SELECT generation, action, name, release, manifest_sha256, progress, detail, at_ms,
                     post
                 FROM agent_directive WHERE id = 1",
                [],
                |r| {
                    Ok(AppliedDirective {
                        generation: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                        action: r.get(1)?,
                        name: r.get(2)?,
                        release: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
                        manifest_sha256: r.get(4)?,
                        progress: r.get(5)?,
                        detail: r.get(6)?,
                        at_ms: r.get(7)?,
                        post: r.get(8)?,
                    })
                },
            )
            .optional()
            .map_err(StateError::Read)
    }

    /// Records the newest accepted directive and its progress, with its audit entries, in one
    /// transaction.
    pub fn set_applied_directive(
        &mut self,
        applied: &AppliedDirective,
        audit: &[AuditEntry],
    ) -> Result<(), StateError> {
        let generation = i64::try_from(applied.generation).map_err(|_| StateError::Corrupt {
            what: "directive generation",
            value: applied.generation.to_string(),
        })?;
        let release = i64::try_from(applied.release).map_err(|_| StateError::Corrupt {
            what: "directive release",
            value: applied.release.to_string(),
        })?;
        let tx = self.conn.transaction().map_err(StateError::Write)?;
        tx.execute(
            "INSERT INTO agent_directive (id, generation, action, name, release, manifest_sha256,
                 progress, detail, at_ms, post)
             VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (id) DO UPDATE SET generation = ?1, action = ?2, name = ?3, release = ?4,
                 manifest_sha256 = ?5, progress = ?6, detail = ?7, at_ms = ?8, post = ?9",
            params![
                generation,
                applied.action,
                applied.name,
                release,
                applied.manifest_sha256,
                applied.progress,
                applied.detail,
                applied.at_ms,
                applied.post
            ],
        )
        .map_err(StateError::Write)?;
        for entry in audit {
            insert_audit(&tx, entry)?;
        }
        tx.commit().map_err(StateError::Write)
    }

    /// The signed release a slot holds, if it was filled from a signed manifest.
    pub fn slot_release(&self, slot: SlotName) -> Result<Option<SlotRelease>, StateError> {
        self.conn
            .query_row(
                "SELECT name, release, version, manifest_sha256 FROM agent_slot_release
                 WHERE slot = ?1",
                params![slot.as_str()],
                |r| {
                    Ok(SlotRelease {
                        name: r.get(0)?,
                        release: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                        version: r.get(2)?,
                        manifest_sha256: r.get(3)?,
                    })
                },
            )
            .optional()
            .map_err(StateError::Read)
    }

    /// Records (or forgets, with None) the signed release a slot holds.
    pub fn set_slot_release(
        &mut self,
        slot: SlotName,
        release: Option<&SlotRelease>,
    ) -> Result<(), StateError> {
        match release {
            None => self
                .conn
                .execute(
                    "DELETE FROM agent_slot_release WHERE slot = ?1",
                    params![slot.as_str()],
                )
                .map(|_| ())
                .map_err(StateError::Write),
            Some(r) => {
                let number = i64::try_from(r.release).map_err(|_| StateError::Corrupt {
                    what: "slot release",
                    value: r.release.to_string(),
                })?;
                self.conn
                    .execute(
                        "INSERT INTO agent_slot_release (slot, name, release, version, manifest_sha256)
                         VALUES (?1, ?2, ?3, ?4, ?5)
                         ON CONFLICT (slot) DO UPDATE SET name = ?2, release = ?3, version = ?4,
                             manifest_sha256 = ?5",
                        params![slot.as_str(), r.name, number, r.version, r.manifest_sha256],
                    )
                    .map(|_| ())
                    .map_err(StateError::Write)
            }
        }
    }

    /// The envelope of the coordinator's newest rollback directive: it lifts anti-rollback for
    /// exactly the release it names, and only that one.
    pub fn rollback_permit(&self) -> Result<Option<Vec<u8>>, StateError> {
        self.conn
            .query_row(
                "SELECT envelope FROM agent_rollback_permit WHERE id = 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(StateError::Read)
    }

    /// Keeps `envelope` as the rollback permit, replacing any earlier one.
    pub fn set_rollback_permit(&mut self, envelope: &[u8]) -> Result<(), StateError> {
        self.conn
            .execute(
                "INSERT INTO agent_rollback_permit (id, envelope) VALUES (1, ?1)
                 ON CONFLICT (id) DO UPDATE SET envelope = ?1",
                params![envelope],
            )
            .map(|_| ())
            .map_err(StateError::Write)
    }

    /// The underlying connection, for the artifact layer's tables in the same file.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

fn parse_slot(value: Option<String>) -> Result<Option<SlotName>, StateError> {
    match value {
        None => Ok(None),
        Some(s) => SlotName::parse(&s).map(Some).ok_or(StateError::Corrupt {
            what: "slot name",
            value: s,
        }),
    }
}

fn write_lifecycle(conn: &Connection, l: &Lifecycle) -> Result<(), StateError> {
    let start = l.trial_boots.len().saturating_sub(MAX_TRIAL_BOOTS);
    let boots = l.trial_boots[start..]
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    conn.execute(
        "INSERT INTO agent_lifecycle (id, phase, last_good, target, target_version, since_ms, trial_boots)
         VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (id) DO UPDATE SET phase = ?1, last_good = ?2, target = ?3,
             target_version = ?4, since_ms = ?5, trial_boots = ?6",
        params![
            l.phase.as_str(),
            l.last_good.map(SlotName::as_str),
            l.target.map(SlotName::as_str),
            l.target_version,
            l.since_ms,
            boots
        ],
    )
    .map_err(StateError::Write)?;
    Ok(())
}

fn insert_audit(conn: &Connection, e: &AuditEntry) -> Result<(), StateError> {
    conn.execute(
        "INSERT INTO agent_audit (at_ms, actor, action, device, outcome, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![e.at_ms, e.actor, e.action, e.device, e.outcome, e.detail],
    )
    .map_err(StateError::Write)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_round_trips_and_starts_idle() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = State::open(dir.path(), 5).unwrap();
        assert_eq!(st.lifecycle().unwrap(), Lifecycle::fresh(5));
        let l = Lifecycle {
            phase: Phase::Trial,
            last_good: Some(SlotName::Blue),
            target: Some(SlotName::Green),
            target_version: Some("1.2.0".into()),
            since_ms: 99,
            trial_boots: vec![100, 200],
        };
        let a = AuditEntry::new(99, "local:root", "switch", "dev", "ok", "blue -> green");
        st.transition(&l, &[a]).unwrap();
        drop(st);
        let st = State::open(dir.path(), 7).unwrap();
        assert_eq!(st.lifecycle().unwrap(), l);
        let log = st.audit_log(10).unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].action, "switch");
        assert_eq!(st.integrity_check().unwrap(), "ok");
        let mode: String = st
            .connection()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn audit_log_is_append_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = State::open(dir.path(), 0).unwrap();
        st.audit(&AuditEntry::new(1, "floed", "recover", "dev", "ok", ""))
            .unwrap();
        let upd = st
            .connection()
            .execute("UPDATE agent_audit SET outcome = 'failed'", []);
        assert!(upd.is_err());
        let del = st.connection().execute("DELETE FROM agent_audit", []);
        assert!(del.is_err());
        assert_eq!(st.audit_log(10).unwrap()[0].outcome, "ok");
    }

    #[test]
    fn applied_directive_slot_releases_and_permit_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = State::open(dir.path(), 0).unwrap();
        assert_eq!(st.applied_directive().unwrap(), None);
        let applied = AppliedDirective {
            generation: 7,
            action: "stage".into(),
            name: "temp".into(),
            release: 2,
            manifest_sha256: "ab".into(),
            progress: "working".into(),
            detail: String::new(),
            at_ms: 5,
            post: vec![1, 2, 3],
        };
        let a = AuditEntry::new(5, "coordinator", "stage", "dev", "accepted", "generation 7");
        st.set_applied_directive(&applied, &[a]).unwrap();
        let done = AppliedDirective {
            progress: "done".into(),
            ..applied.clone()
        };
        st.set_applied_directive(&done, &[]).unwrap();
        let rel = SlotRelease {
            name: "temp".into(),
            release: 2,
            version: "2.0.0".into(),
            manifest_sha256: "ab".into(),
        };
        st.set_slot_release(SlotName::Green, Some(&rel)).unwrap();
        st.set_rollback_permit(b"env").unwrap();
        drop(st);
        let mut st = State::open(dir.path(), 9).unwrap();
        assert_eq!(st.applied_directive().unwrap(), Some(done));
        assert_eq!(st.slot_release(SlotName::Green).unwrap(), Some(rel));
        assert_eq!(st.slot_release(SlotName::Blue).unwrap(), None);
        assert_eq!(st.rollback_permit().unwrap().as_deref(), Some(&b"env"[..]));
        st.set_slot_release(SlotName::Green, None).unwrap();
        assert_eq!(st.slot_release(SlotName::Green).unwrap(), None);
        assert_eq!(st.audit_log(10).unwrap()[0].actor, "coordinator");
    }

    #[test]
    fn slot_records_and_bounded_boot_list() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = State::open(dir.path(), 0).unwrap();
        st.set_slot(SlotName::Green, Some("2.0"), 42, None).unwrap();
        let slots = st.slots().unwrap();
        assert_eq!(slots[1].slot, SlotName::Green);
        assert_eq!(slots[1].version.as_deref(), Some("2.0"));
        assert_eq!(slots[0].version, None);
        let mut l = Lifecycle::fresh(0);
        l.trial_boots = (0..40).collect();
        st.transition(&l, &[]).unwrap();
        assert_eq!(st.lifecycle().unwrap().trial_boots.len(), MAX_TRIAL_BOOTS);
        assert_eq!(*st.lifecycle().unwrap().trial_boots.last().unwrap(), 39);
    }
}
