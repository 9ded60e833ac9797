//! Flows: creating, editing, publishing and archiving flow versions. The bodies are the
//! contract's.

use super::error::ClientError;
use super::transport::{Client, Method, Reply, query, seg, to_value};
use crate::contract::FlowInput;

impl Client {
    /// `POST /flows`: creates a draft.
    pub fn create_flow(&self, body: &FlowInput) -> Result<Reply, ClientError> {
        self.call(Method::Post, "/flows", Some(&to_value(body)))
    }

    /// `GET /flows?state=&tag=`.
    pub fn list_flows(&self, state: Option<&str>, tag: Option<&str>) -> Result<Reply, ClientError> {
        let q = query(&[("state", state), ("tag", tag)]);
        self.call(Method::Get, &format!("/flows{q}"), None)
    }

    /// `GET /flows/:id`.
    pub fn get_flow(&self, id: &str) -> Result<Reply, ClientError> {
        self.call(Method::Get, &format!("/flows/{}", seg(id)), None)
    }

    /// `PUT /flows/:id`: replaces a draft.
    pub fn update_flow(&self, id: &str, body: &FlowInput) -> Result<Reply, ClientError> {
        self.call(
            Method::Put,
            &format!("/flows/{}", seg(id)),
            Some(&to_value(body)),
        )
    }

    /// `DELETE /flows/:id`.
    pub fn delete_flow(&self, id: &str) -> Result<Reply, ClientError> {
        self.call(Method::Delete, &format!("/flows/{}", seg(id)), None)
    }

    /// `POST /flows/:id/publish`.
    pub fn publish_flow(&self, id: &str) -> Result<Reply, ClientError> {
        self.call(Method::Post, &format!("/flows/{}/publish", seg(id)), None)
    }

    /// `POST /flows/:id/archive`.
    pub fn archive_flow(&self, id: &str) -> Result<Reply, ClientError> {
        self.call(Method::Post, &format!("/flows/{}/archive", seg(id)), None)
    }

    /// `POST /flows/:id/versions`: a new draft from a published or archived flow.
    pub fn new_flow_version(&self, id: &str) -> Result<Reply, ClientError> {
        self.call(Method::Post, &format!("/flows/{}/versions", seg(id)), None)
    }
}
