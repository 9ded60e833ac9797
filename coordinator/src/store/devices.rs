//! Device reads for the read path: the registry's rows by id with each device's current
//! directive generation, streamed so a page costs the rows it reads.

use rusqlite::OptionalExtension;

use super::{DeviceRecord, Store, StoreError, from_json, to_u64};

impl Store {
    /// Calls `visit` with every device whose id sorts after `after` (all when `None`), by id,
    /// with the generation of its current directive (0: none), until `visit` returns false.
    /// Rows are read one at a time: memory does not grow with the registry.
    pub fn scan_devices(
        &self,
        after: Option<&str>,
        mut visit: impl FnMut(DeviceRecord, u64) -> bool,
    ) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT d.doc, COALESCE(x.generation, 0) FROM devices d
             LEFT JOIN desired x ON x.device_id = d.id
             WHERE d.id > ?1 ORDER BY d.id",
        )?;
        let mut rows = stmt.query([after.unwrap_or("")])?;
        while let Some(row) = rows.next()? {
            let doc: String = row.get(0)?;
            let generation: i64 = row.get(1)?;
            if !visit(from_json("device", &doc)?, to_u64(generation)) {
                break;
            }
        }
        Ok(())
    }

    /// One device by id with its current directive generation.
    pub fn device_with_generation(
        &self,
        id: &str,
    ) -> Result<Option<(DeviceRecord, u64)>, StoreError> {
        let row: Option<(String, i64)> = self
            .conn
            .prepare_cached(
                "SELECT d.doc, COALESCE(x.generation, 0) FROM devices d
                 LEFT JOIN desired x ON x.device_id = d.id WHERE d.id = ?1",
            )?
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        row.map(|(doc, g)| Ok((from_json("device", &doc)?, to_u64(g))))
            .transpose()
    }
}
