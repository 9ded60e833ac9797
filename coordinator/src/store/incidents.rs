//! Incident reports and rollback verifications: one row per deployment, each part a JSON
//! document (the contract's `IncidentReport` and the service's verification state), written
//! by `service::incidents`. `verification_pending` indexes the verifications a restart must
//! resume.

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError, to_i64};

/// One deployment's incident row.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IncidentRow {
    /// The deployment.
    pub deployment_id: String,
    /// The incident report (JSON), when the deployment failed or was rolled back.
    pub report: Option<String>,
    /// The verification state (JSON), when a device was rolled back.
    pub verification: Option<String>,
    /// Whether the verification still waits for devices.
    pub verification_pending: bool,
}

impl Store {
    /// Writes a deployment's incident report (keeps its verification).
    pub fn put_incident_report(
        &self,
        deployment_id: &str,
        report: &str,
        now: u64,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO incidents (deployment_id, report, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (deployment_id) DO UPDATE SET
                    report = excluded.report, updated_at = excluded.updated_at",
            )?
            .execute(params![deployment_id, report, to_i64(now)])?;
        Ok(())
    }

    /// Writes a deployment's verification state (keeps its report).
    pub fn put_verification(
        &self,
        deployment_id: &str,
        verification: &str,
        pending: bool,
        now: u64,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO incidents (deployment_id, verification, verification_pending, updated_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (deployment_id) DO UPDATE SET
                    verification = excluded.verification,
                    verification_pending = excluded.verification_pending,
                    updated_at = excluded.updated_at",
            )?
            .execute(params![
                deployment_id,
                verification,
                i64::from(pending),
                to_i64(now)
            ])?;
        Ok(())
    }

    /// A deployment's incident row.
    pub fn incident(&self, deployment_id: &str) -> Result<Option<IncidentRow>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT deployment_id, report, verification, verification_pending
                 FROM incidents WHERE deployment_id = ?1",
            )?
            .query_row([deployment_id], |r| {
                Ok(IncidentRow {
                    deployment_id: r.get(0)?,
                    report: r.get(1)?,
                    verification: r.get(2)?,
                    verification_pending: r.get::<_, i64>(3)? != 0,
                })
            })
            .optional()?)
    }

    /// The rows whose verification still waits for devices (a restart resumes them).
    pub fn pending_verifications(&self) -> Result<Vec<IncidentRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT deployment_id, report, verification, verification_pending
             FROM incidents WHERE verification_pending = 1",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(IncidentRow {
                deployment_id: r.get(0)?,
                report: r.get(1)?,
                verification: r.get(2)?,
                verification_pending: r.get::<_, i64>(3)? != 0,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_and_verification_are_written_apart() {
        let store = Store::in_memory().unwrap();
        assert_eq!(store.incident("dep_1").unwrap(), None);
        store
            .put_verification("dep_1", "{\"v\":1}", true, 5)
            .unwrap();
        store.put_incident_report("dep_1", "{\"r\":1}", 6).unwrap();
        let row = store.incident("dep_1").unwrap().unwrap();
        assert_eq!(row.report.as_deref(), Some("{\"r\":1}"));
        assert_eq!(row.verification.as_deref(), Some("{\"v\":1}"));
        assert!(row.verification_pending);
        assert_eq!(store.pending_verifications().unwrap().len(), 1);
        store
            .put_verification("dep_1", "{\"v\":2}", false, 7)
            .unwrap();
        let row = store.incident("dep_1").unwrap().unwrap();
        assert_eq!(row.report.as_deref(), Some("{\"r\":1}"));
        assert!(!row.verification_pending);
        assert!(store.pending_verifications().unwrap().is_empty());
    }
}
