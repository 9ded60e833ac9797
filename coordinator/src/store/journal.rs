//! How a deployment's engine and targets are kept: a snapshot plus the inputs fed since, and
//! one row per target.
//!
//! Why: writing the whole engine (and every target) after every input made each device report
//! cost in proportion to the fleet, and a rollout in proportion to its square. The engine is
//! deterministic, so its state is exactly the last snapshot with the inputs fed since replayed
//! in order; a step appends one small row (the input) and rewrites only the targets it changed.
//! A snapshot is taken every so many inputs and when the deployment ends, and it drops the
//! inputs it covers, so a restart replays a bounded log.
//!
//! The snapshot is the engine's persisted form (floe-rollout's explicit flat record, serialised
//! as JSON) under a version number ([`SNAPSHOT_VERSION`]); a coordinator refuses a snapshot of a
//! version it does not know rather than guessing. Inputs are floe-rollout's `Input` as JSON.
//!
//! Nothing here assumes one process owns the database for ever: every read goes to SQLite, the
//! sequence numbers are the log's own (`(deployment_id, seq)` is the key, so two writers of the
//! same deployment would collide instead of interleaving), and a second backend needs only
//! these operations (append, read after, snapshot-and-trim, upsert targets) in transactions.

use super::{Store, StoreError, to_i64, to_u64};
use rusqlite::{OptionalExtension, params};

/// The snapshot layout this coordinator writes; it reads this one and every older one (the
/// engine loads its older layouts). 2: the engine's gate windows and captured baselines
/// (issue 15); a coordinator that knows only 1 refuses it rather than drop them.
pub const SNAPSHOT_VERSION: i64 = 2;

/// One logged engine input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedInput {
    /// Its place in the deployment's log (from 1).
    pub seq: u64,
    /// The time it was fed at (unix ms).
    pub at: u64,
    /// The input (JSON).
    pub input: String,
}

impl Store {
    /// Appends one input to a deployment's log.
    pub fn append_input(
        &self,
        deployment: &str,
        seq: u64,
        at: u64,
        input: &str,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO deployment_inputs (deployment_id, seq, at, input)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![deployment, to_i64(seq), to_i64(at), input])?;
        Ok(())
    }

    /// The inputs logged after `seq`, in order.
    pub fn inputs_after(&self, deployment: &str, seq: u64) -> Result<Vec<LoggedInput>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, at, input FROM deployment_inputs
             WHERE deployment_id = ?1 AND seq > ?2 ORDER BY seq",
        )?;
        let rows = stmt
            .query_map(params![deployment, to_i64(seq)], |r| {
                Ok(LoggedInput {
                    seq: to_u64(r.get(0)?),
                    at: to_u64(r.get(1)?),
                    input: r.get(2)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The snapshot's place in the log and its layout version.
    pub fn snapshot_position(&self, deployment: &str) -> Result<Option<(u64, i64)>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT snapshot_seq, snapshot_version FROM deployments WHERE id = ?1",
                [deployment],
                |r| Ok((to_u64(r.get(0)?), r.get(1)?)),
            )
            .optional()?)
    }

    /// Replaces a deployment's snapshot with `engine` (covering the log up to `seq`) and drops
    /// the inputs it covers.
    pub fn put_snapshot(&self, deployment: &str, seq: u64, engine: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE deployments SET engine = ?2, snapshot_seq = ?3, snapshot_version = ?4
             WHERE id = ?1",
            params![deployment, engine, to_i64(seq), SNAPSHOT_VERSION],
        )?;
        self.conn.execute(
            "DELETE FROM deployment_inputs WHERE deployment_id = ?1 AND seq <= ?2",
            params![deployment, to_i64(seq)],
        )?;
        Ok(())
    }

    /// Rewrites a deployment's status and document (its head: the targets live apart).
    pub fn put_deployment_head(
        &self,
        deployment: &str,
        status: &str,
        doc: &str,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("UPDATE deployments SET status = ?2, doc = ?3 WHERE id = ?1")?
            .execute(params![deployment, status, doc])?;
        Ok(())
    }

    /// Inserts or replaces targets of a deployment by their index in the plan.
    pub fn put_targets<'a>(
        &self,
        deployment: &str,
        targets: impl IntoIterator<Item = (u32, &'a str)>,
    ) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO deployment_targets (deployment_id, idx, track) VALUES (?1, ?2, ?3)
             ON CONFLICT(deployment_id, idx) DO UPDATE SET track = excluded.track",
        )?;
        for (idx, track) in targets {
            stmt.execute(params![deployment, i64::from(idx), track])?;
        }
        Ok(())
    }

    /// A deployment's targets in plan order (empty for a deployment stored before targets
    /// had rows of their own: its document holds them).
    pub fn targets(&self, deployment: &str) -> Result<Vec<String>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT track FROM deployment_targets WHERE deployment_id = ?1 ORDER BY idx",
        )?;
        let rows = stmt
            .query_map([deployment], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::DeploymentRow;

    fn store_with_deployment() -> Store {
        let s = Store::in_memory().unwrap();
        s.put_deployment(&DeploymentRow {
            id: "dep_1".into(),
            flow_id: "flow_1".into(),
            status: "pending".into(),
            created_at: 1,
            doc: "{}".into(),
            engine: "{\"v\":0}".into(),
        })
        .unwrap();
        s
    }

    #[test]
    fn a_snapshot_drops_the_inputs_it_covers_and_later_ones_stay() {
        let s = store_with_deployment();
        for seq in 1..=5 {
            s.append_input("dep_1", seq, 100 + seq, &format!("\"i{seq}\""))
                .unwrap();
        }
        assert_eq!(s.snapshot_position("dep_1").unwrap(), Some((0, 1)));
        assert_eq!(s.inputs_after("dep_1", 0).unwrap().len(), 5);
        s.put_snapshot("dep_1", 3, "{\"v\":3}").unwrap();
        assert_eq!(
            s.snapshot_position("dep_1").unwrap(),
            Some((3, SNAPSHOT_VERSION))
        );
        let rest = s.inputs_after("dep_1", 3).unwrap();
        assert_eq!(
            rest.iter().map(|i| (i.seq, i.at)).collect::<Vec<_>>(),
            vec![(4, 104), (5, 105)]
        );
        assert_eq!(s.deployment("dep_1").unwrap().unwrap().engine, "{\"v\":3}");
        // A sequence number is written once: a second writer would collide, not interleave.
        assert!(s.append_input("dep_1", 5, 200, "\"again\"").is_err());
    }

    #[test]
    fn targets_are_upserted_by_index_and_read_in_plan_order() {
        let s = store_with_deployment();
        s.put_targets("dep_1", [(2, "c"), (0, "a"), (1, "b")])
            .unwrap();
        s.put_targets("dep_1", [(1, "B")]).unwrap();
        assert_eq!(s.targets("dep_1").unwrap(), vec!["a", "B", "c"]);
        assert!(s.targets("dep_2").unwrap().is_empty());
    }

    #[test]
    fn a_failed_step_inside_a_batch_undoes_only_itself() {
        let s = store_with_deployment();
        s.atomically(|s| -> Result<(), StoreError> {
            s.append_input("dep_1", 1, 1, "\"kept\"")?;
            let failed: Result<(), StoreError> = s.atomically(|s| {
                s.append_input("dep_1", 2, 2, "\"undone\"")?;
                s.append_input("dep_1", 2, 2, "\"collides\"")
            });
            assert!(failed.is_err());
            s.append_input("dep_1", 3, 3, "\"kept too\"")
        })
        .unwrap();
        let seqs: Vec<u64> = s
            .inputs_after("dep_1", 0)
            .unwrap()
            .iter()
            .map(|i| i.seq)
            .collect();
        assert_eq!(seqs, vec![1, 3]);
    }
}
