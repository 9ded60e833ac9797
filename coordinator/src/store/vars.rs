//! Values of flow variables, one row per (scope, name). A scope is `device:<id>`,
//! `label:<key>=<value>` or `type:<device type>` (spelled by `service::vars`); the store only
//! keeps and returns the rows. A secret row's value is the text `service::vault` encrypted;
//! the store never sees a secret in clear.

use rusqlite::params;
use std::collections::BTreeMap;

use super::{Store, StoreError};

/// One stored value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredVar {
    /// The value, or for a secret the encrypted text.
    pub value: String,
    /// Whether it is a secret (encrypted with the data key).
    pub secret: bool,
}

impl Store {
    /// Sets (`Some`) or removes (`None`) the clear value of `name` in `scope`.
    pub fn put_var(&self, scope: &str, name: &str, value: Option<&str>) -> Result<(), StoreError> {
        self.put_var_as(scope, name, value, false)
    }

    /// Sets the value of `name` in `scope`, a secret when `secret` (then `value` is the
    /// encrypted text), or removes it (`None`).
    pub fn put_var_as(
        &self,
        scope: &str,
        name: &str,
        value: Option<&str>,
        secret: bool,
    ) -> Result<(), StoreError> {
        match value {
            Some(v) => self.conn.execute(
                "INSERT INTO variables (scope, name, value, secret) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (scope, name) DO UPDATE SET value = excluded.value,
                 secret = excluded.secret",
                params![scope, name, v, secret],
            )?,
            None => self.conn.execute(
                "DELETE FROM variables WHERE scope = ?1 AND name = ?2",
                params![scope, name],
            )?,
        };
        Ok(())
    }

    /// The values of one scope, by name.
    pub fn vars_of(&self, scope: &str) -> Result<BTreeMap<String, StoredVar>, StoreError> {
        let rows = self
            .conn
            .prepare_cached("SELECT name, value, secret FROM variables WHERE scope = ?1")?
            .query_map([scope], |r| {
                Ok((
                    r.get(0)?,
                    StoredVar {
                        value: r.get(1)?,
                        secret: r.get(2)?,
                    },
                ))
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Every scope whose name starts with `prefix`, with its values, ordered by scope.
    pub fn vars_with_prefix(
        &self,
        prefix: &str,
    ) -> Result<BTreeMap<String, BTreeMap<String, StoredVar>>, StoreError> {
        let mut out: BTreeMap<String, BTreeMap<String, StoredVar>> = BTreeMap::new();
        let mut stmt = self.conn.prepare_cached(
            "SELECT scope, name, value, secret FROM variables
             WHERE substr(scope, 1, length(?1)) = ?1 ORDER BY scope, name",
        )?;
        let rows = stmt.query_map([prefix], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                StoredVar {
                    value: r.get(2)?,
                    secret: r.get(3)?,
                },
            ))
        })?;
        for row in rows {
            let (scope, name, value) = row?;
            out.entry(scope).or_default().insert(name, value);
        }
        Ok(out)
    }

    /// How many distinct scopes starting with `prefix` hold a value.
    pub fn var_scopes(&self, prefix: &str) -> Result<u64, StoreError> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(DISTINCT scope) FROM variables WHERE substr(scope, 1, length(?1)) = ?1",
            [prefix],
            |r| r.get(0),
        )?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn values_are_set_replaced_removed_and_listed_by_scope() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("c.db")).unwrap();
        store
            .put_var("device:a", "broker", Some("mqtt://x"))
            .unwrap();
        store
            .put_var("device:a", "broker", Some("mqtt://y"))
            .unwrap();
        store.put_var("device:a", "topic", Some("t/a")).unwrap();
        store
            .put_var("label:site=p3", "topic", Some("t/p3"))
            .unwrap();
        store.put_var("type:rpi4", "topic", Some("t/rpi")).unwrap();
        let a = store.vars_of("device:a").unwrap();
        assert_eq!(a.get("broker").map(|v| v.value.as_str()), Some("mqtt://y"));
        assert!(!a["broker"].secret);
        store
            .put_var_as("device:a", "broker", Some("v1:sealed"), true)
            .unwrap();
        assert!(store.vars_of("device:a").unwrap()["broker"].secret);
        // Set in clear again, it is no longer secret.
        store
            .put_var("device:a", "broker", Some("mqtt://y"))
            .unwrap();
        assert!(!store.vars_of("device:a").unwrap()["broker"].secret);
        assert_eq!(a.len(), 2);
        store.put_var("device:a", "broker", None).unwrap();
        assert_eq!(store.vars_of("device:a").unwrap().len(), 1);
        let groups = store.vars_with_prefix("label:").unwrap();
        assert_eq!(groups.keys().collect::<Vec<_>>(), vec!["label:site=p3"]);
        assert_eq!(store.var_scopes("type:").unwrap(), 1);
        assert_eq!(store.var_scopes("device:").unwrap(), 1);
        // A prefix is literal text, not a LIKE pattern.
        assert_eq!(store.var_scopes("label%").unwrap(), 0);
    }
}
