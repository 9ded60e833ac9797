//! The document's words for the VALIDATE phase and its routes: the start with its optional
//! overrides and its 422 refusal listing every failed checklist item, the 003 state block,
//! and the publish with its optional smoke test.

use super::{Schemas, op};
use crate::contract::{
    Deployment, DeploymentState, Flow, PreflightRefusal, PublishInput, StartInput,
};
use serde_json::{Value, json};

/// An optional JSON request body.
fn optional_body(schema: Value) -> Value {
    json!({"required": false, "content": {"application/json": {"schema": schema}}})
}

/// `POST /deployments/{id}/start`.
pub(super) fn start(s: &mut Schemas) -> Value {
    let body = s.request::<StartInput>();
    let mut o = op::<Deployment>(
        s,
        "Start a deployment: the pre-deployment checklist (003's VALIDATE) runs first; a failed item that is not overridden leaves it pending and answers 422 with every failed item (409 when its state does not allow a start)",
        None,
        "200",
        "the started deployment",
        vec![],
    );
    o["requestBody"] = optional_body(body);
    let refusal = s.response::<PreflightRefusal>();
    o["responses"]["422"] = json!({
        "description": "the checklist failed (`preflight_failed`, with the checklist), or an override names no checklist item (`validation_failed`)",
        "content": {"application/json": {"schema": refusal}}
    });
    o
}

/// `GET /deployments/{id}/state`.
pub(super) fn state(s: &mut Schemas) -> Value {
    op::<DeploymentState>(
        s,
        "Reference 003's state block of a deployment (also as text)",
        None,
        "200",
        "the state block",
        vec![],
    )
}

/// `POST /flows/{id}/publish`.
pub(super) fn publish(s: &mut Schemas) -> Value {
    let body = s.request::<PublishInput>();
    let mut o = op::<Flow>(
        s,
        "Complete validation, then build and sign the artifact; an optional smoke test (test input and expected output) travels in the signed manifest and every device runs it before switching",
        None,
        "200",
        "the flow",
        vec![],
    );
    o["requestBody"] = optional_body(body);
    o
}
