//! Anti-rollback state: the highest release installed per artifact name, and the manifest
//! digest of every release seen (so one release number never names two contents), in SQLite.
//!
//! The table is this module's own (`artifact_releases`) so the device agent can keep its
//! state in the same database file. The connection runs in WAL mode with
//! `synchronous=FULL`: a recorded release survives power loss the moment the call returns,
//! which is what makes the counter a counter.

use floe_wire::artifact::decide::{Refusal, check_rollback_directive};
use floe_wire::proto::{Directive, Verified};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;

/// Why the release store failed or refused.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// Opening, migrating or querying the database failed.
    #[error("release store: {0}")]
    Db(#[from] rusqlite::Error),
    /// The release is refused (lower than installed and no matching rollback directive).
    #[error(transparent)]
    Refused(Refusal),
    /// A release number too large for the store (above 2^63 - 1).
    #[error("release {0} is too large to record")]
    Range(u64),
}

/// The per-name highest installed release.
#[derive(Debug)]
pub struct ReleaseStore {
    conn: Connection,
}

impl ReleaseStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, ReleaseError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS artifact_releases (
                name TEXT PRIMARY KEY NOT NULL,
                release INTEGER NOT NULL CHECK (release >= 0),
                recorded_at INTEGER NOT NULL
            ) STRICT;
            CREATE TABLE IF NOT EXISTS release_digests (
                name TEXT NOT NULL,
                release INTEGER NOT NULL CHECK (release >= 0),
                manifest_sha256 TEXT NOT NULL,
                PRIMARY KEY (name, release)
            ) STRICT, WITHOUT ROWID;",
        )?;
        Ok(Self { conn })
    }

    /// Checks that `release` of `name` is the content this device saw under that number before
    /// (if any), then remembers it. A signed manifest is accepted for installation only after
    /// this: a coordinator (or a key holder) that reissues a release number with other content
    /// is refused, whatever the signatures say.
    pub fn remember_content(
        &self,
        name: &str,
        release: u64,
        manifest_sha256: &str,
    ) -> Result<(), ReleaseError> {
        let stored = i64::try_from(release).map_err(|_| ReleaseError::Range(release))?;
        let seen: Option<String> = self
            .conn
            .query_row(
                "SELECT manifest_sha256 FROM release_digests WHERE name = ?1 AND release = ?2",
                params![name, stored],
                |row| row.get(0),
            )
            .optional()?;
        match seen {
            Some(seen) if seen != manifest_sha256 => {
                Err(ReleaseError::Refused(Refusal::ReleaseReused {
                    name: name.to_string(),
                    release,
                    seen,
                    found: manifest_sha256.to_string(),
                }))
            }
            Some(_) => Ok(()),
            None => {
                self.conn.execute(
                    "INSERT INTO release_digests (name, release, manifest_sha256)
                     VALUES (?1, ?2, ?3)",
                    params![name, stored, manifest_sha256],
                )?;
                Ok(())
            }
        }
    }

    /// The highest release recorded for `name`.
    pub fn highest(&self, name: &str) -> Result<Option<u64>, ReleaseError> {
        let value: Option<i64> = self
            .conn
            .query_row(
                "SELECT release FROM artifact_releases WHERE name = ?1",
                [name],
                |row| row.get(0),
            )
            .optional()?;
        Ok(value.map(|v| v as u64))
    }

    /// Refuses a release lower than the highest installed unless `rollback` is a rollback
    /// directive naming exactly this name and release. (Freshness and device checks of the
    /// directive are [`install_decision`](super::decide::install_decision)'s.)
    pub fn check_release(
        &self,
        name: &str,
        release: u64,
        rollback: Option<&Verified<Directive>>,
    ) -> Result<(), ReleaseError> {
        let Some(highest) = self.highest(name)? else {
            return Ok(());
        };
        if release >= highest {
            return Ok(());
        }
        match rollback {
            None => Err(ReleaseError::Refused(Refusal::Rollback {
                name: name.to_string(),
                expected: highest,
                found: release,
            })),
            Some(directive) => check_rollback_directive(directive, name, release, None, None, None)
                .map_err(ReleaseError::Refused),
        }
    }

    /// Records that `release` of `name` is installed. The stored value only grows: recording
    /// a rollback to a lower release keeps the higher number.
    pub fn record_installed(&self, name: &str, release: u64, now: u64) -> Result<(), ReleaseError> {
        let release = i64::try_from(release).map_err(|_| ReleaseError::Range(release))?;
        let now = i64::try_from(now).unwrap_or(i64::MAX);
        self.conn.execute(
            "INSERT INTO artifact_releases (name, release, recorded_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET release = max(release, excluded.release),
                recorded_at = excluded.recorded_at",
            params![name, release, now],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use floe_wire::proto::{Action, ArtifactRef, Digest, Envelope, Fixed, TrustStore, TrustedKey};

    const NOW: u64 = 1_750_000_000;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn trusted(k: &SigningKey) -> TrustedKey {
        TrustedKey::new(Fixed(k.verifying_key().to_bytes()))
    }

    fn trust() -> TrustStore {
        TrustStore::new(vec![trusted(&key(1)), trusted(&key(2))], trusted(&key(9)))
    }

    fn rollback_directive(release: u64, digest: Digest, action: Action) -> Verified<Directive> {
        let directive = Directive {
            schema: 1,
            device_id: "pi-01".into(),
            generation: 9,
            action,
            artifact: ArtifactRef {
                name: "temperature-alert".into(),
                release,
                manifest_sha256: digest,
            },
            issued_at: NOW - 10,
            expires: NOW + 600,
            vars: Default::default(),
            secret_vars: Default::default(),
        };
        let envelope = Envelope::sign(&directive, &[&key(9)]).unwrap();
        trust().verify_coordinator(&envelope).unwrap()
    }

    #[test]
    fn a_release_number_names_one_content_per_artifact_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = ReleaseStore::open(&dir.path().join("state.db")).unwrap();
        let a = "aa".repeat(32);
        let b = "bb".repeat(32);
        store.remember_content("alerts", 2, &a).unwrap();
        store.remember_content("alerts", 2, &a).unwrap();
        let err = store.remember_content("alerts", 2, &b).unwrap_err();
        assert!(
            matches!(
                err,
                ReleaseError::Refused(Refusal::ReleaseReused { release: 2, .. })
            ),
            "{err}"
        );
        assert!(err.to_string().contains("seen before"), "{err}");
        // Another name, or another release, is another content.
        store.remember_content("pumps", 2, &b).unwrap();
        store.remember_content("alerts", 3, &b).unwrap();
        // The memory survives a reopen.
        drop(store);
        let store = ReleaseStore::open(&dir.path().join("state.db")).unwrap();
        assert!(store.remember_content("alerts", 2, &b).is_err());
    }

    #[test]
    fn release_store_enforces_anti_rollback() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        {
            let store = ReleaseStore::open(&db).unwrap();
            assert_eq!(store.highest("temperature-alert").unwrap(), None);
            store.check_release("temperature-alert", 1, None).unwrap();
            store.record_installed("temperature-alert", 5, NOW).unwrap();
            store.record_installed("temperature-alert", 3, NOW).unwrap();
            assert_eq!(store.highest("temperature-alert").unwrap(), Some(5));
        }
        let store = ReleaseStore::open(&db).unwrap();
        let mode: String = rusqlite::Connection::open(&db)
            .unwrap()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        store.check_release("temperature-alert", 5, None).unwrap();
        store.check_release("temperature-alert", 6, None).unwrap();
        let err = store
            .check_release("temperature-alert", 4, None)
            .unwrap_err();
        assert!(
            matches!(
                err,
                ReleaseError::Refused(Refusal::Rollback {
                    expected: 5,
                    found: 4,
                    ..
                })
            ),
            "{err}"
        );
        store.check_release("other-flow", 1, None).unwrap();
        let digest = Digest::of(b"m");
        store
            .check_release(
                "temperature-alert",
                4,
                Some(&rollback_directive(4, digest, Action::Rollback)),
            )
            .unwrap();
        let err = store
            .check_release(
                "temperature-alert",
                4,
                Some(&rollback_directive(3, digest, Action::Rollback)),
            )
            .unwrap_err();
        assert!(
            err.to_string().contains(
                "expected temperature-alert release 4, found temperature-alert release 3"
            ),
            "{err}"
        );
        let err = store
            .check_release(
                "temperature-alert",
                4,
                Some(&rollback_directive(4, digest, Action::Stage)),
            )
            .unwrap_err();
        assert!(err.to_string().contains("action rollback"), "{err}");
    }
}
