//! The queries the REST layer answers from committed data alone, without the actor: they take
//! any [`Store`], the actor's own or a read-only connection of a [`crate::store::ReadPool`]
//! (see [`super::ServiceHandle::read`]), and the flows part answers its own calls with them, so
//! both paths give the same answer.

use super::ServiceError;
use crate::contract::FlowState;
use crate::store::{AuditFilter, AuditRecord, FlowRecord, Store};

/// A flow by id.
pub fn flow(store: &Store, id: &str) -> Result<FlowRecord, ServiceError> {
    store.flow(id)?.ok_or_else(|| ServiceError::NotFound {
        what: "flow",
        id: id.to_string(),
    })
}

/// Flows matching a state (archived hidden unless asked) and a tag, by lineage and version.
pub fn flows(
    store: &Store,
    state: Option<FlowState>,
    tag: Option<&str>,
) -> Result<Vec<FlowRecord>, ServiceError> {
    Ok(store
        .flows()?
        .into_iter()
        .filter(|f| match state {
            Some(s) => f.state == s,
            None => f.state != FlowState::Archived,
        })
        .filter(|f| tag.is_none_or(|t| f.tags.iter().any(|x| x == t)))
        .collect())
}

/// Audit lines matching `filter`, newest first, each with its log position (the cursor).
pub fn audit(store: &Store, filter: &AuditFilter) -> Result<Vec<(u64, AuditRecord)>, ServiceError> {
    Ok(store.audit_page(filter)?)
}
