//! Read-only connections for reads that need nothing of the service actor's memory.
//!
//! Why: every REST call used to go through the one service actor, so a listing waited for
//! whatever the actor was doing (starting a 100 000-target deployment takes it more than a
//! second). In WAL mode SQLite readers never wait for the writer: a read transaction sees the
//! database as of the last commit before it began, whatever the writer does meanwhile. A
//! [`ReadPool`] holds a few such connections, opened read-only, and runs each read in one read
//! transaction, so an answer built from several queries is still one consistent snapshot.
//!
//! What a read sees is what is committed, not the actor's memory: a REST call that wrote
//! answers only after its transaction committed, so a later read sees it (read-your-writes),
//! and a read never sees a half-applied step. Nothing here assumes this process is the only
//! writer: a second coordinator writing the same database would be seen the same way.

use super::{MIGRATIONS, Store, StoreError};
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, PoisonError};

/// A bounded pool of read-only connections to one database file.
#[derive(Debug)]
pub struct ReadPool {
    path: PathBuf,
    max: usize,
    state: Mutex<PoolState>,
    freed: Condvar,
}

#[derive(Debug, Default)]
struct PoolState {
    /// Connections not in use.
    free: Vec<Store>,
    /// Connections open, in use or free.
    open: usize,
}

impl Store {
    /// A pool of at most `max` (at least one) read-only connections to this store's file, or
    /// None for an in-memory store (its data lives in this connection only).
    pub fn read_pool(&self, max: usize) -> Option<ReadPool> {
        let path = self.path.clone()?;
        Some(ReadPool {
            path,
            max: max.max(1),
            state: Mutex::new(PoolState::default()),
            freed: Condvar::new(),
        })
    }

    /// `PRAGMA integrity_check`: the problems SQLite finds, empty when the file is sound.
    pub fn integrity_check(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self.conn.prepare("PRAGMA integrity_check")?;
        let lines = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(lines.into_iter().filter(|l| l != "ok").collect())
    }
}

/// Opens one read-only connection and checks that its schema is one this code reads.
fn open_reader(path: &Path) -> Result<Store, StoreError> {
    let open_err = |source| StoreError::Open {
        path: path.display().to_string(),
        source,
    };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(open_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(open_err)?;
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(open_err)?;
    let supported = MIGRATIONS.len() as i64;
    if found > supported {
        return Err(StoreError::Schema { found, supported });
    }
    Ok(Store {
        conn,
        path: Some(path.to_path_buf()),
        caller: super::DEFAULT_CALLER.to_string(),
    })
}

impl ReadPool {
    /// The most connections the pool opens.
    pub fn capacity(&self) -> usize {
        self.max
    }

    /// Runs `f` against a read-only store in one read transaction (one consistent snapshot of
    /// the last commit). Blocks while all connections are in use; callers on an async runtime
    /// bound their concurrency to [`ReadPool::capacity`] and call it on the blocking pool. A
    /// write inside `f` fails (the connection is read-only).
    pub fn read<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, E>,
    ) -> Result<T, E> {
        let store = self.take()?;
        let out = Self::in_snapshot(&store, f);
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.free.push(store);
        drop(state);
        self.freed.notify_one();
        out
    }

    fn in_snapshot<T, E: From<StoreError>>(
        store: &Store,
        f: impl FnOnce(&Store) -> Result<T, E>,
    ) -> Result<T, E> {
        store
            .conn
            .execute_batch("BEGIN")
            .map_err(StoreError::from)?;
        let out = f(store);
        // A read transaction has nothing to keep: ending it only lets the WAL be checkpointed.
        if let Err(e) = store.conn.execute_batch("ROLLBACK") {
            tracing::warn!(error = %e, "ending a read transaction");
        }
        out
    }

    /// A free connection, a new one while fewer than `max` are open, or the next one freed.
    fn take(&self) -> Result<Store, StoreError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(s) = state.free.pop() {
                return Ok(s);
            }
            if state.open < self.max {
                state.open += 1;
                drop(state);
                return open_reader(&self.path).inspect_err(|_| {
                    let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                    state.open -= 1;
                    drop(state);
                    self.freed.notify_one();
                });
            }
            state = self
                .freed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::store::AuditRecord;

    fn line(detail: &str) -> AuditRecord {
        AuditRecord {
            at: 1,
            actor: "api".into(),
            action: "test".into(),
            device_id: None,
            deployment_id: None,
            outcome: "ok".into(),
            detail: detail.into(),
        }
    }

    fn details(s: &Store) -> Vec<String> {
        s.audit_entries(&crate::store::AuditFilter {
            limit: 100,
            ..Default::default()
        })
        .unwrap()
        .into_iter()
        .map(|a| a.detail)
        .collect()
    }

    #[test]
    fn readers_see_the_last_commit_and_never_wait_for_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("floe.db")).unwrap();
        let pool = store.read_pool(2).unwrap();
        store.audit(&line("committed")).unwrap();
        // The writer holds an open transaction with an uncommitted line: readers answer at
        // once with what was committed before it.
        let batch = store.begin().unwrap();
        store.audit(&line("pending")).unwrap();
        let seen = pool.read(|s| Ok::<_, StoreError>(details(s))).unwrap();
        assert_eq!(seen, vec!["committed".to_string()]);
        batch.commit().unwrap();
        let seen = pool.read(|s| Ok::<_, StoreError>(details(s))).unwrap();
        assert_eq!(seen, vec!["pending".to_string(), "committed".to_string()]);
    }

    #[test]
    fn a_reader_cannot_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("floe.db")).unwrap();
        let pool = store.read_pool(1).unwrap();
        let err = pool.read(|s| s.audit(&line("sneaky"))).unwrap_err();
        assert!(err.to_string().contains("readonly"), "{err}");
        assert!(details(&store).is_empty());
    }

    #[test]
    fn the_pool_opens_at_most_its_capacity_and_shares_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("floe.db")).unwrap();
        store.audit(&line("x")).unwrap();
        let pool = store.read_pool(2).unwrap();
        let in_use = std::sync::atomic::AtomicUsize::new(0);
        let most = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..5 {
                        pool.read(|s| {
                            let n = in_use.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                            most.fetch_max(n, std::sync::atomic::Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(2));
                            let d = details(s);
                            in_use.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                            Ok::<_, StoreError>(d)
                        })
                        .unwrap();
                    }
                });
            }
        });
        assert!(most.into_inner() <= 2);
        assert_eq!(pool.state.lock().unwrap().open, 2);
    }

    #[test]
    fn an_in_memory_store_has_no_pool_and_a_sound_file_checks_ok() {
        assert!(Store::in_memory().unwrap().read_pool(4).is_none());
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("floe.db")).unwrap();
        assert!(store.integrity_check().unwrap().is_empty());
    }
}
