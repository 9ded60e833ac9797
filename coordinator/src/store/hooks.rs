//! Webhooks: where events are POSTed, with their kind and deployment filters and the secret
//! their deliveries are signed with. The secret is stored as is: the coordinator must sign with
//! it (unlike an enrollment token, a hash would not do).

use rusqlite::params;

use super::{Store, StoreError, to_i64, to_u64};

/// A stored webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookRecord {
    /// `hook_<hex>`.
    pub id: String,
    /// Where deliveries go.
    pub url: String,
    /// Kind filter entries (empty: every kind).
    pub kinds: Vec<String>,
    /// Deployment filter.
    pub deployment_id: Option<String>,
    /// HMAC-SHA256 key, hex.
    pub secret: String,
    /// Unix ms.
    pub created_at: u64,
}

impl Store {
    /// Stores a new hook.
    pub fn put_hook(&self, h: &HookRecord) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO hooks (id, url, kinds, deployment_id, secret, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                h.id,
                h.url,
                h.kinds.join(","),
                h.deployment_id,
                h.secret,
                to_i64(h.created_at)
            ],
        )?;
        Ok(())
    }

    /// Deletes a hook; false when there was none.
    pub fn delete_hook(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.conn.execute("DELETE FROM hooks WHERE id = ?1", [id])? == 1)
    }

    /// Every hook, oldest first.
    pub fn hooks(&self) -> Result<Vec<HookRecord>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, url, kinds, deployment_id, secret, created_at FROM hooks
             ORDER BY created_at, id",
        )?;
        let rows = stmt.query_map([], |r| {
            let kinds: String = r.get(2)?;
            Ok(HookRecord {
                id: r.get(0)?,
                url: r.get(1)?,
                kinds: kinds
                    .split(',')
                    .filter(|k| !k.is_empty())
                    .map(str::to_string)
                    .collect(),
                deployment_id: r.get(3)?,
                secret: r.get(4)?,
                created_at: to_u64(r.get(5)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Counts of deployments by status (for `/metrics`).
    pub fn deployment_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT status, COUNT(*) FROM deployments GROUP BY status ORDER BY status")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, to_u64(r.get(1)?))))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_round_trip_and_delete() {
        let store = Store::in_memory().unwrap();
        let h = HookRecord {
            id: "hook_1".into(),
            url: "http://127.0.0.1:9/x".into(),
            kinds: vec!["deployment.".into(), "gate.verdict".into()],
            deployment_id: Some("dep_1".into()),
            secret: "ab".into(),
            created_at: 5,
        };
        store.put_hook(&h).unwrap();
        let mut none = h.clone();
        none.id = "hook_2".into();
        none.kinds.clear();
        none.deployment_id = None;
        none.created_at = 6;
        store.put_hook(&none).unwrap();
        assert_eq!(store.hooks().unwrap(), vec![h, none]);
        assert!(store.delete_hook("hook_1").unwrap());
        assert!(!store.delete_hook("hook_1").unwrap());
        assert_eq!(store.hooks().unwrap().len(), 1);
    }
}
