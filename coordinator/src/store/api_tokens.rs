//! Named API tokens, stored only as the SHA-256 of their secret: a copy of the database does
//! not give anyone a token the API would accept.

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError, to_i64, to_u64};

/// One named API token as the table keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTokenRecord {
    /// Its name (unique).
    pub name: String,
    /// `sha256:<hex>` of the secret.
    pub hash: String,
    /// Its role, as the contract spells it.
    pub role: String,
    /// When it was made (ms).
    pub created_at: u64,
    /// When it stops working (ms), if it does.
    pub expires_at: Option<u64>,
    /// When it was last used (ms, written at most once a minute), if ever.
    pub last_used_at: Option<u64>,
}

/// What the table keeps of a secret: `sha256:<hex>`.
pub fn api_token_hash(secret: &str) -> String {
    format!(
        "sha256:{}",
        floe_wire::proto::Digest::of(secret.as_bytes()).to_hex()
    )
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ApiTokenRecord> {
    Ok(ApiTokenRecord {
        name: r.get(0)?,
        hash: r.get(1)?,
        role: r.get(2)?,
        created_at: to_u64(r.get(3)?),
        expires_at: r.get::<_, Option<i64>>(4)?.map(to_u64),
        last_used_at: r.get::<_, Option<i64>>(5)?.map(to_u64),
    })
}

const COLUMNS: &str = "name, hash, role, created_at, expires_at, last_used_at";

impl Store {
    /// Stores a new token; `false` when the name is taken.
    pub fn put_api_token(&self, t: &ApiTokenRecord) -> Result<bool, StoreError> {
        Ok(self.conn.execute(
            "INSERT OR IGNORE INTO api_tokens (name, hash, role, created_at, expires_at, last_used_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                t.name,
                t.hash,
                t.role,
                to_i64(t.created_at),
                t.expires_at.map(to_i64),
                t.last_used_at.map(to_i64)
            ],
        )? == 1)
    }

    /// Every token, by name.
    pub fn api_tokens(&self) -> Result<Vec<ApiTokenRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {COLUMNS} FROM api_tokens ORDER BY name"))?;
        let rows = stmt.query_map([], row)?.collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// One token by name.
    pub fn api_token(&self, name: &str) -> Result<Option<ApiTokenRecord>, StoreError> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM api_tokens WHERE name = ?1"),
                [name],
                row,
            )
            .optional()?)
    }

    /// How many tokens there are.
    pub fn api_token_count(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM api_tokens", [], |r| r.get(0))?;
        Ok(to_u64(n))
    }

    /// Deletes a token; whether it existed.
    pub fn delete_api_token(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .execute("DELETE FROM api_tokens WHERE name = ?1", [name])?
            == 1)
    }

    /// Records that a token was used at `at` (never moves the time back).
    pub fn touch_api_token(&self, name: &str, at: u64) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE api_tokens SET last_used_at = ?2
             WHERE name = ?1 AND (last_used_at IS NULL OR last_used_at < ?2)",
            params![name, to_i64(at)],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn record(name: &str, secret: &str) -> ApiTokenRecord {
        ApiTokenRecord {
            name: name.into(),
            hash: api_token_hash(secret),
            role: "viewer".into(),
            created_at: 1_000,
            expires_at: Some(5_000),
            last_used_at: None,
        }
    }

    #[test]
    fn tokens_are_kept_hashed_by_name_and_deleted() {
        let store = Store::in_memory().unwrap();
        assert!(store.put_api_token(&record("ci", "secret-ci")).unwrap());
        assert!(!store.put_api_token(&record("ci", "other")).unwrap());
        assert!(store.put_api_token(&record("alice", "secret-a")).unwrap());
        let all = store.api_tokens().unwrap();
        assert_eq!(
            all.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            ["alice", "ci"]
        );
        let raw: String = store
            .conn
            .query_row("SELECT hash FROM api_tokens WHERE name = 'ci'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert!(!raw.contains("secret-ci"), "{raw}");
        assert_eq!(raw, api_token_hash("secret-ci"));
        store.touch_api_token("ci", 3_000).unwrap();
        store.touch_api_token("ci", 2_000).unwrap();
        assert_eq!(
            store.api_token("ci").unwrap().unwrap().last_used_at,
            Some(3_000)
        );
        assert_eq!(store.api_token_count().unwrap(), 2);
        assert!(store.delete_api_token("ci").unwrap());
        assert!(!store.delete_api_token("ci").unwrap());
        assert_eq!(store.api_token("ci").unwrap(), None);
    }
}
