//! A blocking HTTP client for the coordinator's REST API (`/api/v1`), as the `floe` CLI, the
//! demo and end-to-end tests use it.
//!
//! The client is deliberately thin: every call returns the server's reply text as received, so
//! `floe … --json` can print exactly what the server said, and typed views (`Flow`,
//! `Deployment`, `Device` …) are parsed from it on demand. The views are lenient (unknown fields
//! ignored, missing ones defaulted) because the server may grow fields the CLI does not know
//! yet; the server is the one that validates.
//!
//! Errors keep what the server said: a 4xx/5xx reply with the contract's
//! `{"error":{"code","message","field"}}` body becomes [`ClientError::Api`] with those three
//! values untouched. A connection that cannot be made names the server address, so a user who
//! forgot `--server` sees where the CLI tried to go.
//!
//! Bounds: every reply body is read with a cap ([`MAX_REPLY_BYTES`]); a larger one is an error,
//! never an unbounded allocation. Every request has a connect timeout and an overall timeout.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The largest reply body the client reads. A deployment object for a very large fleet lists
/// every target, so the cap is generous; beyond it the call fails with [`ClientError::Read`].
pub const MAX_REPLY_BYTES: u64 = 64 * 1024 * 1024;
/// How long connecting to the server may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one request may take from start to the last byte of the reply.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The API's base path.
pub const BASE_PATH: &str = "/api/v1";

/// Why a call to the coordinator failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Setup: the server URL is not an `http://` URL (this client speaks plain HTTP only).
    #[error("server address `{server}` is not a URL of the form http://host:port")]
    BadServer {
        /// The address as given.
        server: String,
    },
    /// Connect: the server could not be reached (refused, unknown host, timed out connecting).
    #[error("cannot reach the coordinator at {server}: {message}")]
    Connect {
        /// The server address the client tried.
        server: String,
        /// What the transport said.
        message: String,
    },
    /// Transfer: the connection broke or timed out during the request or reply.
    #[error("request {method} {url} failed: {message}")]
    Transfer {
        /// The HTTP method.
        method: &'static str,
        /// The full URL.
        url: String,
        /// What the transport said.
        message: String,
    },
    /// Read: the reply body could not be read (too large, broken).
    #[error("reading the reply to {method} {url}: {message}")]
    Read {
        /// The HTTP method.
        method: &'static str,
        /// The full URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// Api: the server answered with an error status. `code`, `message` and `field` are the
    /// server's own; a reply that is not in the contract's error shape keeps its status and a
    /// bounded excerpt of its text.
    #[error("{}", api_error_text(*.status, code, message, field.as_deref()))]
    Api {
        /// The HTTP status.
        status: u16,
        /// The error code (`not_found`, `conflict`, `validation_failed` …).
        code: String,
        /// The server's sentence naming what is wrong.
        message: String,
        /// The path at fault, when the server named one.
        field: Option<String>,
    },
    /// Wait: a polled condition did not come true in time.
    #[error("{what} did not happen within {limit:?}")]
    Wait {
        /// What was waited for.
        what: String,
        /// How long.
        limit: Duration,
    },
    /// Decode: a success reply was not the JSON the contract describes.
    #[error("the reply to {what} is not the expected JSON: {message}")]
    Decode {
        /// Which reply.
        what: String,
        /// The parser's message.
        message: String,
    },
}

fn api_error_text(status: u16, code: &str, message: &str, field: Option<&str>) -> String {
    match field {
        Some(f) => format!("{code} ({status}): {message} [field: {f}]"),
        None => format!("{code} ({status}): {message}"),
    }
}

impl ClientError {
    /// The server's error code, when the server answered with an error.
    pub fn api_code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status, when the server answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The longest excerpt of a non-contract error body kept in [`ClientError::Api`].
const EXCERPT: usize = 300;

/// Maps an error reply (status ≥ 400) to [`ClientError::Api`]: the contract's error object when
/// the body holds one, else the status with a code derived from it and an excerpt of the text.
pub fn error_from_reply(status: u16, body: &str) -> ClientError {
    #[derive(Deserialize)]
    struct Envelope {
        error: ErrorBody,
    }
    #[derive(Deserialize)]
    struct ErrorBody {
        code: String,
        message: String,
        #[serde(default)]
        field: Option<String>,
    }
    if let Ok(env) = serde_json::from_str::<Envelope>(body) {
        return ClientError::Api {
            status,
            code: env.error.code,
            message: env.error.message,
            field: env.error.field,
        };
    }
    let code = match status {
        400 => "bad_request",
        401 => "unauthorized",
        404 => "not_found",
        409 => "conflict",
        413 => "payload_too_large",
        422 => "validation_failed",
        500 => "internal",
        _ => "http_error",
    };
    let text = body.trim();
    let message = if text.is_empty() {
        format!("the server answered HTTP {status} with no error body")
    } else {
        let mut end = text.len().min(EXCERPT);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let more = if end < text.len() { " …" } else { "" };
        format!("the server answered HTTP {status}: {}{more}", &text[..end])
    };
    ClientError::Api {
        status,
        code: code.to_string(),
        message,
        field: None,
    }
}

/// A success reply as the server sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The HTTP status (200, 201, 204).
    pub status: u16,
    /// The body text as received (empty for 204).
    pub text: String,
    /// Which call this answers, for error messages (`GET /deployments/dep_…`).
    pub what: String,
}

impl Reply {
    /// Parses the body into a typed view.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        serde_json::from_str(&self.text).map_err(|e| ClientError::Decode {
            what: self.what.clone(),
            message: e.to_string(),
        })
    }
}

/// HTTP methods the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// PATCH.
    Patch,
    /// DELETE.
    Delete,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

/// A client for one coordinator.
#[derive(Debug, Clone)]
pub struct Client {
    server: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    /// A client for `server` (`http://host:port`, with or without a trailing slash) that sends
    /// `token` as a bearer token when given.
    pub fn new(server: &str, token: Option<String>) -> Result<Client, ClientError> {
        let server = server.trim_end_matches('/').to_string();
        // This build speaks plain HTTP only (no TLS stack in the CLI): reach a remote
        // coordinator over a trusted network or a tunnel.
        match server.strip_prefix("http://") {
            Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => {}
            _ => return Err(ClientError::BadServer { server }),
        }
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(REQUEST_TIMEOUT))
            .build();
        Ok(Client {
            server,
            token: token.filter(|t| !t.is_empty()),
            agent: config.into(),
        })
    }

    /// The server address the client talks to.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Whether a token will be sent.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Sends one request to `BASE_PATH + path` (path starts with `/`, query included) with an
    /// optional JSON body, and returns the success reply or the mapped error.
    pub fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply, ClientError> {
        let url = format!("{}{BASE_PATH}{path}", self.server);
        let what = format!("{} {path}", method.as_str());
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let result = match method {
            Method::Get | Method::Delete => {
                let mut req = if method == Method::Get {
                    self.agent.get(&url)
                } else {
                    self.agent.delete(&url)
                };
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                req.header("Accept", "application/json").call()
            }
            Method::Post | Method::Put | Method::Patch => {
                let mut req = match method {
                    Method::Post => self.agent.post(&url),
                    Method::Put => self.agent.put(&url),
                    _ => self.agent.patch(&url),
                };
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                let req = req.header("Accept", "application/json");
                match body {
                    // Compact JSON: ureq's send_json pretty-prints, which wastes bytes of the
                    // server's 1 MiB body cap on indentation.
                    Some(b) => req
                        .content_type("application/json")
                        .send(b.to_string().as_bytes()),
                    None => req.send_empty(),
                }
            }
        };
        let mut response = result.map_err(|e| self.transport_error(method, &url, e))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_REPLY_BYTES)
            .lossy_utf8(true)
            .read_to_string()
            .map_err(|e| ClientError::Read {
                method: method.as_str(),
                url: url.clone(),
                message: e.to_string(),
            })?;
        if status >= 400 {
            return Err(error_from_reply(status, &text));
        }
        Ok(Reply { status, text, what })
    }

    fn transport_error(&self, method: Method, url: &str, e: ureq::Error) -> ClientError {
        match e {
            ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => ClientError::Connect {
                server: self.server.clone(),
                message: e.to_string(),
            },
            ureq::Error::Io(io)
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::ConnectionRefused
                        | std::io::ErrorKind::AddrNotAvailable
                        | std::io::ErrorKind::NotFound
                ) =>
            {
                ClientError::Connect {
                    server: self.server.clone(),
                    message: io.to_string(),
                }
            }
            ureq::Error::Timeout(ureq::Timeout::Connect | ureq::Timeout::Resolve) => {
                ClientError::Connect {
                    server: self.server.clone(),
                    message: e.to_string(),
                }
            }
            ureq::Error::BadUri(u) => ClientError::BadServer { server: u },
            other => ClientError::Transfer {
                method: method.as_str(),
                url: url.to_string(),
                message: other.to_string(),
            },
        }
    }

    // ---- Flows -------------------------------------------------------------------------

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

    // ---- Deployments -------------------------------------------------------------------

    /// `POST /deployments`: the body as the contract gives it.
    pub fn create_deployment(&self, body: &Value) -> Result<Reply, ClientError> {
        self.call(Method::Post, "/deployments", Some(body))
    }

    /// `GET /deployments?status=&flow_id=`.
    pub fn list_deployments(
        &self,
        status: Option<&str>,
        flow_id: Option<&str>,
    ) -> Result<Reply, ClientError> {
        let q = query(&[("status", status), ("flow_id", flow_id)]);
        self.call(Method::Get, &format!("/deployments{q}"), None)
    }

    /// `GET /deployments/:id`.
    pub fn get_deployment(&self, id: &str) -> Result<Reply, ClientError> {
        self.call(Method::Get, &format!("/deployments/{}", seg(id)), None)
    }

    /// `POST /deployments/:id/<action>`.
    pub fn deployment_action(
        &self,
        id: &str,
        action: DeploymentAction,
    ) -> Result<Reply, ClientError> {
        self.call(
            Method::Post,
            &format!("/deployments/{}/{}", seg(id), action.as_str()),
            None,
        )
    }

    /// `GET /deployments/:id/report?format=json|markdown`.
    pub fn deployment_report(&self, id: &str, format: ReportFormat) -> Result<Reply, ClientError> {
        self.call(
            Method::Get,
            &format!("/deployments/{}/report?format={}", seg(id), format.as_str()),
            None,
        )
    }

    // ---- Devices, enrollment, audit ----------------------------------------------------

    /// `GET /devices?region=&type=&label=k=v&online=`.
    pub fn list_devices(&self, filter: &DeviceFilter) -> Result<Reply, ClientError> {
        let online = filter.online.map(|b| if b { "true" } else { "false" });
        let mut pairs: Vec<(&str, Option<&str>)> = vec![
            ("region", filter.region.as_deref()),
            ("type", filter.device_type.as_deref()),
        ];
        for l in &filter.labels {
            pairs.push(("label", Some(l.as_str())));
        }
        pairs.push(("online", online));
        let q = query(&pairs);
        self.call(Method::Get, &format!("/devices{q}"), None)
    }

    /// `GET /devices/:id`.
    pub fn get_device(&self, id: &str) -> Result<Reply, ClientError> {
        self.call(Method::Get, &format!("/devices/{}", seg(id)), None)
    }

    /// `PATCH /devices/:id` with the flags to change (`None` leaves a flag alone).
    pub fn set_device_flags(
        &self,
        id: &str,
        maintenance: Option<bool>,
        quarantined: Option<bool>,
    ) -> Result<Reply, ClientError> {
        let mut body = serde_json::Map::new();
        if let Some(m) = maintenance {
            body.insert("maintenance".into(), Value::Bool(m));
        }
        if let Some(q) = quarantined {
            body.insert("quarantined".into(), Value::Bool(q));
        }
        self.call(
            Method::Patch,
            &format!("/devices/{}", seg(id)),
            Some(&Value::Object(body)),
        )
    }

    /// `POST /devices`: adds a device key to the enrollment allowlist.
    pub fn allow_device(&self, body: &AllowDevice) -> Result<Reply, ClientError> {
        self.call(Method::Post, "/devices", Some(&to_value(body)))
    }

    /// `POST /enrollment-tokens`.
    pub fn create_enroll_token(&self, ttl: Option<&str>) -> Result<Reply, ClientError> {
        let mut body = serde_json::Map::new();
        if let Some(t) = ttl {
            body.insert("ttl".into(), Value::String(t.to_string()));
        }
        self.call(
            Method::Post,
            "/enrollment-tokens",
            Some(&Value::Object(body)),
        )
    }

    /// `GET /audit?limit=&deployment_id=&device_id=`.
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

    /// Polls `GET /deployments/:id` every `interval` until the deployment is terminal
    /// (completed, failed, rolled back) and returns it; [`ClientError::Wait`] after `limit`.
    /// Errors other than the wait are returned at once. End-to-end tests and scripts use this
    /// where the CLI would use `floe deploy status ID --watch`.
    pub fn wait_for_deployment(
        &self,
        id: &str,
        interval: Duration,
        limit: Duration,
    ) -> Result<Deployment, ClientError> {
        let until = std::time::Instant::now() + limit;
        loop {
            let d: Deployment = self.get_deployment(id)?.json()?;
            if d.is_terminal() {
                return Ok(d);
            }
            if std::time::Instant::now() >= until {
                return Err(ClientError::Wait {
                    what: format!("deployment {id} finishing (last status {})", d.status),
                    limit,
                });
            }
            std::thread::sleep(interval);
        }
    }

    /// `GET /healthz` (no token needed).
    pub fn healthz(&self) -> Result<Reply, ClientError> {
        self.call(Method::Get, "/healthz", None)
    }
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    // The request types below serialise to JSON objects with string keys only, which cannot
    // fail; Null is a safe fallback the server would refuse with a clear 400.
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Percent-encodes one path segment or query value (RFC 3986 unreserved characters pass).
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn seg(id: &str) -> String {
    encode_component(id)
}

/// Builds `?k=v&…` from the pairs that have a value (empty string when none do).
fn query(pairs: &[(&str, Option<&str>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", encode_component(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// The lifecycle actions on a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeploymentAction {
    /// `start`.
    Start,
    /// `pause`.
    Pause,
    /// `resume`.
    Resume,
    /// `approve`.
    Approve,
    /// `rollback`.
    Rollback,
}

impl DeploymentAction {
    /// The path segment.
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentAction::Start => "start",
            DeploymentAction::Pause => "pause",
            DeploymentAction::Resume => "resume",
            DeploymentAction::Approve => "approve",
            DeploymentAction::Rollback => "rollback",
        }
    }
}

/// The report formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    /// The report object.
    Json,
    /// The rollout engine's markdown.
    Markdown,
}

impl ReportFormat {
    /// The query value.
    pub fn as_str(self) -> &'static str {
        match self {
            ReportFormat::Json => "json",
            ReportFormat::Markdown => "markdown",
        }
    }
}

/// Filters of `GET /devices`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceFilter {
    /// Region.
    pub region: Option<String>,
    /// Device type.
    pub device_type: Option<String>,
    /// Labels as `key=value`.
    pub labels: Vec<String>,
    /// Online or offline only.
    pub online: Option<bool>,
}

// ---- Request bodies ------------------------------------------------------------------------

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

/// The body of `POST /devices`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AllowDevice {
    /// The device id.
    pub id: String,
    /// The device's public key, hex.
    pub public_key: String,
    /// Device type.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub device_type: Option<String>,
    /// Region.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Labels.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

// ---- Typed views of replies (lenient) ------------------------------------------------------

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

/// The artifact a deployment rolls out.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ArtifactRef {
    /// Name.
    pub name: String,
    /// Release number.
    pub release: u64,
    /// Version string.
    pub version: Option<String>,
}

/// One target of a deployment.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Target {
    /// Device id.
    pub device_id: String,
    /// `pending`, `deploying`, `success`, `failed`, `offline`, `skipped`, `rolled_back` or
    /// `quarantined`.
    pub status: String,
    /// Stage index.
    pub stage: Option<u32>,
    /// The directive generation sent to it.
    pub generation: Option<u64>,
    /// Detail text.
    pub detail: String,
}

/// One stage (canary, wave, batch) of a deployment.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Stage {
    /// Index.
    pub index: u32,
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: String,
    /// Device ids in the stage.
    pub devices: Vec<String>,
}

/// One check of a gate verdict.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct GateCheck {
    /// Name.
    pub name: String,
    /// Measured value.
    pub value: Option<f64>,
    /// Limit.
    pub limit: Option<f64>,
    /// Whether it passed.
    pub pass: bool,
}

/// A gate verdict.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Gate {
    /// The stage it closes.
    pub stage: u32,
    /// The gate's name.
    pub gate: String,
    /// `pass`, `wait` or `fail`.
    pub verdict: String,
    /// Why.
    pub reason: String,
    /// The checks.
    pub checks: Vec<GateCheck>,
    /// When.
    pub at: String,
}

/// A deployment as the server returns it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Deployment {
    /// `dep_<10 hex>`.
    pub id: String,
    /// The flow.
    pub flow_id: String,
    /// The artifact.
    pub artifact: Option<ArtifactRef>,
    /// Strategy.
    pub strategy: String,
    /// `pending`, `running`, `paused`, `completed`, `failed` or `rolled_back`.
    pub status: String,
    /// Why it is in that status.
    pub status_reason: Option<String>,
    /// Totals.
    pub total_targets: u64,
    /// Targets done and healthy.
    pub completed_targets: u64,
    /// Targets failed.
    pub failed_targets: u64,
    /// Targets offline.
    pub offline_targets: u64,
    /// Targets rolled back.
    pub rolled_back_targets: u64,
    /// Targets not yet reached.
    pub pending_targets: u64,
    /// Every target.
    pub targets: Vec<Target>,
    /// The stage being worked on.
    pub current_stage: Option<u32>,
    /// The stages.
    pub stages: Vec<Stage>,
    /// Gate verdicts so far.
    pub gates: Vec<Gate>,
    /// Whether the operator must approve.
    pub awaiting_approval: bool,
    /// The engine's phase (`soaking` …).
    pub phase: Option<String>,
    /// Created.
    pub created_at: String,
    /// Started.
    pub started_at: Option<String>,
    /// Completed.
    pub completed_at: Option<String>,
}

impl Deployment {
    /// Whether the deployment has finished (completed, failed or rolled back).
    pub fn is_terminal(&self) -> bool {
        matches!(self.status.as_str(), "completed" | "failed" | "rolled_back")
    }
}

/// `{"deployments":[…]}`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct DeploymentList {
    /// The deployments.
    pub deployments: Vec<Deployment>,
}

/// An installed or standby release on a device.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Installed {
    /// Artifact name.
    pub name: String,
    /// Release number.
    pub release: u64,
    /// Version string.
    pub version: Option<String>,
    /// `blue` or `green`.
    pub slot: Option<String>,
}

/// A device's health summary.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct DeviceHealth {
    /// `healthy`, `degraded` or `unhealthy`.
    pub status: String,
    /// Errors per message.
    pub error_rate: Option<f64>,
    /// p95 latency.
    pub p95_ms: Option<f64>,
    /// Memory.
    pub memory_mb: Option<f64>,
    /// Restarts.
    pub restarts: Option<u64>,
    /// Whether the flow runs.
    pub flow_running: Option<bool>,
}

/// A device as the server returns it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Device {
    /// Id.
    pub id: String,
    /// Type.
    #[serde(rename = "type")]
    pub device_type: Option<String>,
    /// Arch.
    pub arch: Option<String>,
    /// Region.
    pub region: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Public key hex.
    pub public_key: Option<String>,
    /// Runtime version.
    pub runtime_version: Option<String>,
    /// The running release.
    pub installed: Option<Installed>,
    /// The standby release.
    pub standby: Option<Installed>,
    /// The last known good release.
    pub last_known_good: Option<Installed>,
    /// Whether the running release is on trial.
    pub on_trial: bool,
    /// Health.
    pub health: Option<DeviceHealth>,
    /// Online.
    pub online: bool,
    /// Last report.
    pub last_seen: Option<String>,
    /// Directive generation reached.
    pub generation: Option<u64>,
    /// Maintenance flag.
    pub maintenance: bool,
    /// Quarantine flag.
    pub quarantined: bool,
    /// Enrolled.
    pub enrolled_at: Option<String>,
}

/// `{"devices":[…]}`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct DeviceList {
    /// The devices.
    pub devices: Vec<Device>,
}

/// A one-time enrollment token.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct EnrollToken {
    /// The token.
    pub token: String,
    /// When it expires.
    pub expires_at: String,
}

/// One audit entry.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct AuditEntry {
    /// When.
    pub at: String,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// Device concerned.
    pub device_id: Option<String>,
    /// Deployment concerned.
    pub deployment_id: Option<String>,
    /// Outcome.
    pub outcome: String,
    /// Detail.
    pub detail: String,
}

/// `{"entries":[…]}`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct AuditList {
    /// The entries.
    pub entries: Vec<AuditEntry>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::mpsc;

    /// A one-shot HTTP server on loopback: answers one request with `status` and `body` and
    /// sends back the request it received (head and body).
    fn one_shot(status: u16, body: &'static str) -> (String, mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::sync_channel(1);
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                head.push_str(&line);
            }
            let mut body_in = vec![0u8; len];
            reader.read_exact(&mut body_in).unwrap();
            head.push_str(&String::from_utf8_lossy(&body_in));
            let mut stream = stream;
            write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            tx.send(head).unwrap();
        });
        (format!("http://{addr}"), rx)
    }

    #[test]
    fn contract_error_body_is_kept_as_the_server_said_it() {
        let err = error_from_reply(
            422,
            r#"{"error":{"code":"validation_failed","message":"config.batch_delay: `5x` is not a duration","field":"config.batch_delay"}}"#,
        );
        match &err {
            ClientError::Api {
                status,
                code,
                message,
                field,
            } => {
                assert_eq!(*status, 422);
                assert_eq!(code, "validation_failed");
                assert_eq!(message, "config.batch_delay: `5x` is not a duration");
                assert_eq!(field.as_deref(), Some("config.batch_delay"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            err.to_string(),
            "validation_failed (422): config.batch_delay: `5x` is not a duration [field: config.batch_delay]"
        );
        let null_field = error_from_reply(
            409,
            r#"{"error":{"code":"conflict","message":"flow flow_1 is published","field":null}}"#,
        );
        assert_eq!(
            null_field.to_string(),
            "conflict (409): flow flow_1 is published"
        );
    }

    #[test]
    fn a_non_contract_error_body_keeps_status_and_a_bounded_excerpt() {
        let err = error_from_reply(502, "<html>bad gateway</html>");
        assert_eq!(err.status(), Some(502));
        assert_eq!(err.api_code(), Some("http_error"));
        assert!(err.to_string().contains("<html>bad gateway</html>"));
        let long = "é".repeat(1000);
        let err = error_from_reply(500, &long);
        assert_eq!(err.api_code(), Some("internal"));
        let text = err.to_string();
        assert!(text.len() < 400, "excerpt not bounded: {}", text.len());
        assert!(text.ends_with('…'));
        let empty = error_from_reply(401, "");
        assert_eq!(empty.api_code(), Some("unauthorized"));
        assert!(empty.to_string().contains("no error body"));
    }

    #[test]
    fn server_urls_are_checked() {
        assert!(matches!(
            Client::new("127.0.0.1:7300", None),
            Err(ClientError::BadServer { .. })
        ));
        assert!(matches!(
            Client::new("http://", None),
            Err(ClientError::BadServer { .. })
        ));
        assert!(matches!(
            Client::new("https://coordinator:7300", None),
            Err(ClientError::BadServer { .. })
        ));
        let c = Client::new("http://127.0.0.1:7300/", Some(String::new())).unwrap();
        assert_eq!(c.server(), "http://127.0.0.1:7300");
        assert!(!c.has_token(), "an empty token is no token");
    }

    #[test]
    fn queries_and_ids_are_encoded() {
        assert_eq!(
            query(&[("state", Some("draft")), ("tag", None)]),
            "?state=draft"
        );
        assert_eq!(query(&[("tag", None)]), "");
        assert_eq!(
            query(&[("label", Some("site=north")), ("x", Some("a b&c"))]),
            "?label=site%3Dnorth&x=a%20b%26c"
        );
        assert_eq!(seg("../x"), "..%2Fx");
    }

    #[test]
    fn a_refused_connection_names_the_server() {
        // Bind and drop to get a port that is (very likely) closed.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = Client::new(&format!("http://127.0.0.1:{port}"), None).unwrap();
        let err = c.list_flows(None, None).unwrap_err();
        assert!(
            matches!(err, ClientError::Connect { .. }),
            "expected Connect, got {err:?}"
        );
        assert!(
            err.to_string().contains(&format!("127.0.0.1:{port}")),
            "{err}"
        );
    }

    #[test]
    fn requests_carry_the_token_and_the_body_and_errors_come_back_mapped() {
        let (server, seen) = one_shot(
            409,
            r#"{"error":{"code":"conflict","message":"flow flow_0123456789 is not a draft","field":null}}"#,
        );
        let c = Client::new(&server, Some("s3cret".into())).unwrap();
        let body = NewFlow {
            name: "T".into(),
            description: None,
            tags: vec!["a".into()],
            definition: serde_json::json!({"nodes": []}),
        };
        let err = c.update_flow("flow_0123456789", &body).unwrap_err();
        assert_eq!(err.status(), Some(409));
        assert_eq!(err.api_code(), Some("conflict"));
        let req = seen.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(
            req.starts_with("PUT /api/v1/flows/flow_0123456789 HTTP/1.1"),
            "{req}"
        );
        assert!(
            req.to_ascii_lowercase()
                .contains("authorization: bearer s3cret"),
            "{req}"
        );
        let sent: Value = serde_json::from_str(req.lines().last().unwrap()).unwrap();
        assert_eq!(
            sent,
            serde_json::json!({"name": "T", "tags": ["a"], "definition": {"nodes": []}}),
            "no description key when none is given"
        );
    }

    #[test]
    fn success_replies_keep_the_text_as_received() {
        let text = r#"{"flows":[{"id":"flow_aaaaaaaaaa","name":"T","state":"draft","version":1,"extra":true}]}"#;
        let (server, seen) = one_shot(200, text);
        let c = Client::new(&server, None).unwrap();
        let reply = c.list_flows(Some("draft"), Some("t")).unwrap();
        assert_eq!(reply.text, text);
        let list: FlowList = reply.json().unwrap();
        assert_eq!(list.flows[0].id, "flow_aaaaaaaaaa");
        assert_eq!(list.flows[0].version, 1);
        let req = seen.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(
            req.starts_with("GET /api/v1/flows?state=draft&tag=t "),
            "{req}"
        );
        assert!(!req.to_ascii_lowercase().contains("authorization"), "{req}");
    }

    #[test]
    fn waiting_for_a_deployment_ends_at_a_terminal_status_or_the_limit() {
        let (server, _seen) = one_shot(200, r#"{"id":"dep_1","status":"rolled_back"}"#);
        let c = Client::new(&server, None).unwrap();
        let d = c
            .wait_for_deployment("dep_1", Duration::from_millis(10), Duration::from_secs(5))
            .unwrap();
        assert_eq!(d.status, "rolled_back");

        let (server, _seen) = one_shot(200, r#"{"id":"dep_2","status":"running"}"#);
        let c = Client::new(&server, None).unwrap();
        let err = c
            .wait_for_deployment("dep_2", Duration::from_millis(10), Duration::ZERO)
            .unwrap_err();
        assert!(matches!(err, ClientError::Wait { .. }), "{err:?}");
        assert!(err.to_string().contains("last status running"), "{err}");
    }

    #[test]
    fn a_success_reply_that_is_not_json_is_a_decode_error() {
        let (server, _seen) = one_shot(200, "not json");
        let c = Client::new(&server, None).unwrap();
        let err = c
            .get_deployment("dep_0000000000")
            .unwrap()
            .json::<Deployment>()
            .unwrap_err();
        assert!(matches!(err, ClientError::Decode { .. }));
        assert!(err.to_string().contains("GET /deployments/dep_0000000000"));
    }
}
