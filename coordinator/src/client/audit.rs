//! The audit log: reading it with filters, a page or every page.

use super::error::ClientError;
use super::paging::Pages;
use super::transport::{Client, Method, Reply, query};
use crate::contract::AuditPage;

impl Client {
    /// `GET /audit?limit=&deployment_id=&device_id=`: the first page (newest first).
    pub fn audit(
        &self,
        limit: Option<u32>,
        deployment_id: Option<&str>,
        device_id: Option<&str>,
    ) -> Result<Reply, ClientError> {
        let limit = limit.map(|l| l.to_string());
        let q = query(&[
            ("limit", limit.as_deref()),
            ("deployment_id", deployment_id),
            ("device_id", device_id),
        ]);
        self.call(Method::Get, &format!("/audit{q}"), None)
    }

    /// Every audit entry matching the filters, newest first, page by page (`limit` per page;
    /// the server's default when `None`). `.take(n)` stops after n entries; `.all()` collects
    /// them all.
    pub fn audit_entries(
        &self,
        deployment_id: Option<&str>,
        device_id: Option<&str>,
        limit: Option<usize>,
    ) -> Pages<'_, AuditPage> {
        let q = query(&[("deployment_id", deployment_id), ("device_id", device_id)]);
        Pages::new(self, format!("/audit{q}"), limit)
    }
}
