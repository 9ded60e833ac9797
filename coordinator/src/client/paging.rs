//! Following cursors: [`Pages`] walks a paged list one request at a time and yields its items,
//! and [`Pages::all`] collects them. The cursor is passed back exactly as the server gave it.

use super::error::ClientError;
use super::transport::{Client, Method, encode_component};
use crate::contract::{AuditEntry, AuditPage, Deployment, DeploymentPage, Device, DevicePage};
use crate::contract::{Target, TargetPage};
use serde::de::DeserializeOwned;
use std::collections::VecDeque;

/// A page of a list: its items and the cursor of the next page.
pub trait Page: DeserializeOwned {
    /// The list's item.
    type Item;
    /// Splits the page.
    fn into_parts(self) -> (Vec<Self::Item>, Option<String>);
}

impl Page for DevicePage {
    type Item = Device;
    fn into_parts(self) -> (Vec<Device>, Option<String>) {
        (self.devices, self.next)
    }
}

impl Page for DeploymentPage {
    type Item = Deployment;
    fn into_parts(self) -> (Vec<Deployment>, Option<String>) {
        (self.deployments, self.next)
    }
}

impl Page for AuditPage {
    type Item = AuditEntry;
    fn into_parts(self) -> (Vec<AuditEntry>, Option<String>) {
        (self.entries, self.next)
    }
}

impl Page for TargetPage {
    type Item = Target;
    fn into_parts(self) -> (Vec<Target>, Option<String>) {
        (self.targets, self.next)
    }
}

/// An iterator over every item of a paged list, fetching a page when the last one is used up.
/// It stops at the first error (yielded once) and refuses a server that hands back the same
/// cursor twice, so it cannot loop forever.
#[derive(Debug)]
pub struct Pages<'a, P: Page> {
    client: &'a Client,
    /// The list's path with its filters, without cursor and limit.
    path: String,
    limit: Option<usize>,
    /// The cursor of the next page: `None` before the first, `Some(None)` after the last.
    next: Option<Option<String>>,
    buffered: VecDeque<P::Item>,
    failed: bool,
}

impl<'a, P: Page> Pages<'a, P> {
    pub(super) fn new(client: &'a Client, path: String, limit: Option<usize>) -> Self {
        Self {
            client,
            path,
            limit,
            next: None,
            buffered: VecDeque::new(),
            failed: false,
        }
    }

    /// One page at `cursor` (the first without one): its items and the next page's cursor.
    pub fn page(
        &self,
        cursor: Option<&str>,
    ) -> Result<(Vec<P::Item>, Option<String>), ClientError> {
        let mut params = Vec::new();
        if let Some(c) = cursor {
            params.push(format!("cursor={}", encode_component(c)));
        }
        if let Some(l) = self.limit {
            params.push(format!("limit={l}"));
        }
        let sep = if self.path.contains('?') { '&' } else { '?' };
        let path = if params.is_empty() {
            self.path.clone()
        } else {
            format!("{}{sep}{}", self.path, params.join("&"))
        };
        let page: P = self.client.call(Method::Get, &path, None)?.json()?;
        Ok(page.into_parts())
    }

    /// Every item of the list, following the cursors to the last page.
    pub fn all(self) -> Result<Vec<P::Item>, ClientError> {
        self.collect()
    }

    fn fetch(&mut self) -> Result<(), ClientError> {
        let cursor = match &self.next {
            None => None,
            Some(None) => return Ok(()),
            Some(Some(c)) => Some(c.clone()),
        };
        let (items, next) = self.page(cursor.as_deref())?;
        if next.is_some() && next == cursor {
            return Err(ClientError::Paging {
                what: self.path.clone(),
                cursor: next.unwrap_or_default(),
            });
        }
        self.buffered.extend(items);
        self.next = Some(next);
        Ok(())
    }
}

impl<P: Page> Iterator for Pages<'_, P> {
    type Item = Result<P::Item, ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.buffered.is_empty() {
            if self.failed || matches!(self.next, Some(None)) {
                return None;
            }
            if let Err(e) = self.fetch() {
                self.failed = true;
                return Some(Err(e));
            }
        }
        self.buffered.pop_front().map(Ok)
    }
}
