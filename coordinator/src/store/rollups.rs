//! Health rollups: one row per (window start, device type, region), its body the
//! [`Rollup`] as JSON. Saving merges into a row that exists already (a window flushed twice,
//! or by two coordinators sharing a database), so rows only ever gain counts.

use floe_rollout::rollup::Rollup;
use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError, from_json, to_i64, to_json, to_u64};

/// One stored rollup.
#[derive(Debug, Clone, PartialEq)]
pub struct RollupRow {
    /// Device type of the group.
    pub device_type: String,
    /// Region of the group.
    pub region: String,
    /// Start of the window (unix ms).
    pub start_ms: u64,
    /// Length of the window (ms).
    pub window_ms: u64,
    /// The counts.
    pub rollup: Rollup,
}

impl Store {
    /// Merges `rows` into the stored rollups (one statement pair per row; the caller's
    /// transaction makes them one commit).
    pub fn save_rollups(&self, rows: &[RollupRow]) -> Result<(), StoreError> {
        for row in rows {
            let existing: Option<String> = self
                .conn
                .prepare_cached(
                    "SELECT body FROM health_rollups
                     WHERE start_ms = ?1 AND device_type = ?2 AND region = ?3",
                )?
                .query_row(
                    params![to_i64(row.start_ms), row.device_type, row.region],
                    |r| r.get(0),
                )
                .optional()?;
            let mut merged = match existing {
                Some(text) => from_json::<Rollup>("health rollup", &text)?,
                None => Rollup::default(),
            };
            merged.merge(&row.rollup);
            self.conn
                .prepare_cached(
                    "INSERT INTO health_rollups
                        (device_type, region, start_ms, window_ms, reports, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (start_ms, device_type, region) DO UPDATE SET
                        reports = excluded.reports, body = excluded.body",
                )?
                .execute(params![
                    row.device_type,
                    row.region,
                    to_i64(row.start_ms),
                    to_i64(row.window_ms),
                    to_i64(merged.reports),
                    to_json("health rollup", &merged)?
                ])?;
        }
        Ok(())
    }

    /// Deletes rollups of windows that started before `before_ms`; returns how many.
    pub fn prune_rollups(&self, before_ms: u64) -> Result<usize, StoreError> {
        Ok(self
            .conn
            .prepare_cached("DELETE FROM health_rollups WHERE start_ms < ?1")?
            .execute([to_i64(before_ms)])?)
    }

    /// Rollups of windows starting in `[from_ms, to_ms)`, at most `limit` rows, by start.
    pub fn rollups(
        &self,
        from_ms: u64,
        to_ms: u64,
        limit: usize,
    ) -> Result<Vec<RollupRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT device_type, region, start_ms, window_ms, body FROM health_rollups
             WHERE start_ms >= ?1 AND start_ms < ?2 ORDER BY start_ms, device_type, region
             LIMIT ?3",
        )?;
        let rows = stmt.query_map(
            params![to_i64(from_ms), to_i64(to_ms), to_i64(limit as u64)],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, String>(4)?,
                ))
            },
        )?;
        let mut out = Vec::new();
        for row in rows {
            let (device_type, region, start, window, body) = row?;
            out.push(RollupRow {
                device_type,
                region,
                start_ms: to_u64(start),
                window_ms: to_u64(window),
                rollup: from_json("health rollup", &body)?,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use floe_rollout::HealthStatus;

    fn row(start_ms: u64, region: &str, reports: u32) -> RollupRow {
        let mut rollup = Rollup::default();
        for i in 0..reports {
            rollup.observe(HealthStatus::Healthy, 0, 10_000 + i, 50_000);
        }
        RollupRow {
            device_type: "rpi4".into(),
            region: region.into(),
            start_ms,
            window_ms: 60_000,
            rollup,
        }
    }

    #[test]
    fn saving_twice_merges_and_pruning_drops_old_windows() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("c.db")).unwrap();
        store
            .save_rollups(&[row(0, "eu", 3), row(0, "us", 1)])
            .unwrap();
        store
            .save_rollups(&[row(0, "eu", 2), row(60_000, "eu", 5)])
            .unwrap();
        let all = store.rollups(0, u64::MAX >> 1, 100).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!((all[0].region.as_str(), all[0].rollup.reports), ("eu", 5));
        assert_eq!(all[0].rollup.p95_us.count(), 5);
        assert_eq!(store.rollups(60_000, 120_000, 100).unwrap().len(), 1);
        assert_eq!(store.rollups(0, u64::MAX >> 1, 2).unwrap().len(), 2);
        assert_eq!(store.prune_rollups(60_000).unwrap(), 2);
        let left = store.rollups(0, u64::MAX >> 1, 100).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].start_ms, 60_000);
    }
}
