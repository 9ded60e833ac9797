//! One-time enrollment tokens, stored only as their SHA-256: a copy of the database (a backup,
//! a leaked file) does not give anyone a token a device could enroll with.

use floe_wire::proto::Digest;
use rusqlite::params;

use super::{Store, StoreError, to_i64, to_u64};

/// What the table keeps of a token: `sha256:<hex>`.
fn stored(token: &str) -> String {
    format!("sha256:{}", Digest::of(token.as_bytes()).to_hex())
}

impl Store {
    /// Stores a one-time token (its hash).
    pub fn put_token(&self, token: &str, expires_at: u64) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO enroll_tokens (token, expires_at) VALUES (?1, ?2)",
            params![stored(token), to_i64(expires_at)],
        )?;
        Ok(())
    }

    /// How many tokens are unused and not expired at `now`.
    pub fn open_tokens(&self, now: u64) -> Result<u64, StoreError> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM enroll_tokens WHERE used_by IS NULL AND expires_at > ?1",
            [to_i64(now)],
            |r| r.get(0),
        )?;
        Ok(to_u64(n))
    }

    /// Marks a token used by `device` if it exists, is unused and has not expired at `now`.
    pub fn take_token(&self, token: &str, device: &str, now: u64) -> Result<bool, StoreError> {
        Ok(self.conn.execute(
            "UPDATE enroll_tokens SET used_by = ?2
             WHERE token = ?1 AND used_by IS NULL AND expires_at > ?3",
            params![stored(token), device, to_i64(now)],
        )? == 1)
    }

    /// Replaces tokens an earlier coordinator stored in clear with their hashes (at open).
    pub(super) fn hash_clear_tokens(&self) -> Result<(), StoreError> {
        let clear: Vec<String> = self
            .conn
            .prepare("SELECT token FROM enroll_tokens WHERE token NOT LIKE 'sha256:%'")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for token in clear {
            self.conn.execute(
                "UPDATE enroll_tokens SET token = ?2 WHERE token = ?1",
                params![token, stored(&token)],
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tokens_are_stored_hashed_and_still_work_once() {
        let store = Store::in_memory().unwrap();
        store.put_token("tok-secret-1", 1_000).unwrap();
        let kept: String = store
            .conn
            .query_row("SELECT token FROM enroll_tokens", [], |r| r.get(0))
            .unwrap();
        assert!(!kept.contains("tok-secret-1"), "{kept}");
        assert!(kept.starts_with("sha256:"), "{kept}");
        assert_eq!(store.open_tokens(500).unwrap(), 1);
        assert!(!store.take_token("tok-secret-2", "d", 500).unwrap());
        assert!(store.take_token("tok-secret-1", "d", 500).unwrap());
        assert!(!store.take_token("tok-secret-1", "e", 500).unwrap());
    }

    #[test]
    fn tokens_an_older_coordinator_kept_in_clear_are_hashed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("floe.db");
        {
            let store = Store::open(&path).unwrap();
            store
                .conn
                .execute(
                    "INSERT INTO enroll_tokens (token, expires_at) VALUES ('old-clear', 1000)",
                    [],
                )
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let kept: String = store
            .conn
            .query_row("SELECT token FROM enroll_tokens", [], |r| r.get(0))
            .unwrap();
        assert_eq!(kept, stored("old-clear"));
        assert!(store.take_token("old-clear", "d", 500).unwrap());
    }
}
