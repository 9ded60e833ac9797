//! The VALIDATE phase and the operators' calls that go with it: a start with overrides, the
//! 003 state block, and a publish carrying a smoke test. The bodies are the contract's.

use super::error::ClientError;
use super::transport::{Client, Method, Reply, seg, to_value};
use crate::contract::{PublishInput, StartInput};

impl Client {
    /// `POST /deployments/:id/start` with the checklist items to override (a refused start is
    /// `ClientError::Api` with code `preflight_failed`, its message listing every failed item).
    pub fn start_deployment(&self, id: &str, body: &StartInput) -> Result<Reply, ClientError> {
        self.call(
            Method::Post,
            &format!("/deployments/{}/start", seg(id)),
            Some(&to_value(body)),
        )
    }

    /// `GET /deployments/:id/state`: reference 003's state block.
    pub fn deployment_state(&self, id: &str) -> Result<Reply, ClientError> {
        self.call(
            Method::Get,
            &format!("/deployments/{}/state", seg(id)),
            None,
        )
    }

    /// `POST /flows/:id/publish` with a body (a smoke test).
    pub fn publish_flow_with(&self, id: &str, body: &PublishInput) -> Result<Reply, ClientError> {
        self.call(
            Method::Post,
            &format!("/flows/{}/publish", seg(id)),
            Some(&to_value(body)),
        )
    }
}
