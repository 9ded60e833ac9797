//! Flows: creating, editing, publishing and archiving flow versions, the request body of a
//! flow, and the lenient views of the server's flow objects.

use super::error::ClientError;
use super::transport::{Client, Method, Reply, query, seg, to_value};
use serde::Deserialize;
use serde_json::Value;

impl Client {
    /// `POST /flows`: creates a draft.
    pub fn create_flow(&self, body: &NewFlow) -> Result<Reply, ClientError> {
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
    pub fn update_flow(&self, id: &str, body: &NewFlow) -> Result<Reply, ClientError> {
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

/// The body of `POST /flows` and `PUT /flows/:id`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NewFlow {
    /// The flow's name.
    pub name: String,
    /// A description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// The flow JSON.
    pub definition: Value,
}

/// A flow's artifact.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct FlowArtifact {
    /// The artifact name (the lineage id).
    pub name: String,
    /// The release number.
    pub release: u64,
    /// The version string.
    pub version: Option<String>,
    /// The manifest digest.
    pub manifest_sha256: String,
    /// Bundle size in bytes.
    pub size: u64,
}

/// A flow as the server returns it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Flow {
    /// `flow_<10 hex>`.
    pub id: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// `draft`, `published` or `archived`.
    pub state: String,
    /// Version number in its lineage.
    pub version: u64,
    /// Lineage id.
    pub lineage: String,
    /// The flow this draft was made from.
    pub parent_id: Option<String>,
    /// The flow JSON.
    pub definition: Value,
    /// Set once published.
    pub artifact: Option<FlowArtifact>,
    /// Created.
    pub created_at: String,
    /// Updated.
    pub updated_at: String,
    /// Published.
    pub published_at: Option<String>,
    /// Archived.
    pub archived_at: Option<String>,
}

/// `{"flows":[…]}`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct FlowList {
    /// The flows.
    pub flows: Vec<Flow>,
}
