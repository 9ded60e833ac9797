//! The transport: one blocking HTTP request to the coordinator with a connect and an overall
//! timeout and a capped reply body, and the mapping of what can go wrong on the way to
//! [`ClientError`]. The resource files build on [`Client::call`] and the path helpers here.

use super::error::{ClientError, error_from_reply};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::time::Duration;

/// The largest reply body the client reads. Lists are paged (at most 1 000 items a page) and
/// a deployment object counts its targets, so replies stay far below it; beyond it the call
/// fails with [`ClientError::Read`].
pub const MAX_REPLY_BYTES: u64 = 64 * 1024 * 1024;
/// How long connecting to the server may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one request may take from start to the last byte of the reply.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The API's base path.
pub const BASE_PATH: &str = "/api/v1";

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
        serde_json::from_str(&self.text).map_err(|source| ClientError::Decode {
            what: self.what.clone(),
            source,
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

/// `server` without trailing slashes, if it is an http:// or https:// URL with a host.
fn checked_server(server: &str) -> Result<String, ClientError> {
    let server = server.trim_end_matches('/').to_string();
    let host = server
        .strip_prefix("http://")
        .or_else(|| server.strip_prefix("https://"));
    match host {
        Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => Ok(server),
        _ => Err(ClientError::BadServer { server }),
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
        Client::with_ca(server, token, None)
    }

    /// [`Client::new`] for `http://` or `https://` servers; an `https://` server's
    /// certificate must chain to `ca_pem` (PEM: a private CA or the server's own certificate)
    /// when given, else to the system's roots.
    pub fn with_ca(
        server: &str,
        token: Option<String>,
        ca_pem: Option<&[u8]>,
    ) -> Result<Client, ClientError> {
        let server = checked_server(server)?;
        let roots = match ca_pem {
            Some(pem) => {
                crate::tls::ca_roots(pem).map_err(|message| ClientError::BadCa { message })?
            }
            // The system's roots are read only for an https server (plain HTTP needs none).
            None if server.starts_with("https://") => crate::tls::system_roots(),
            None => Vec::new(),
        };
        Ok(Client::build(server, token, roots))
    }

    /// [`Client::new`] for an `https://` server whose certificate has the SHA-256 fingerprint
    /// `pin` (`sha256:…`, as `floe serve --tls-self-signed` prints it): the certificate is
    /// fetched once with a handshake that accepts only that fingerprint, then trusted as the
    /// only root, so the usual name checks still apply to every request.
    pub fn with_pin(server: &str, token: Option<String>, pin: &str) -> Result<Client, ClientError> {
        let server = checked_server(server)?;
        let bad = |message| ClientError::BadPin { message };
        let pin = crate::tls::pin::parse_pin(pin).map_err(bad)?;
        let cert = crate::tls::pin::fetch_pinned(&server, pin).map_err(bad)?;
        let roots = vec![ureq::tls::Certificate::from_der(cert.as_ref()).to_owned()];
        Ok(Client::build(server, token, roots))
    }

    fn build(
        server: String,
        token: Option<String>,
        roots: Vec<ureq::tls::Certificate<'static>>,
    ) -> Client {
        let tls = crate::tls::config(roots);
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(REQUEST_TIMEOUT))
            .tls_config(tls)
            .build();
        Client {
            server,
            token: token.filter(|t| !t.is_empty()),
            agent: config.into(),
        }
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
            .map_err(|source| ClientError::Read {
                method: method.as_str(),
                url: url.clone(),
                source,
            })?;
        if status >= 400 {
            return Err(error_from_reply(status, &text));
        }
        Ok(Reply { status, text, what })
    }

    /// Opens a long-lived `GET` of `BASE_PATH + path` (a Server-Sent Events stream) with the
    /// extra headers given: no overall timeout (only the connect timeout), the body left to
    /// the caller to read as it arrives. An error status is read and mapped as [`call`] does.
    ///
    /// [`call`]: Client::call
    pub fn open_stream(
        &self,
        path: &str,
        headers: &[(&str, String)],
    ) -> Result<ureq::Body, ClientError> {
        let url = format!("{}{BASE_PATH}{path}", self.server);
        let mut req = self
            .agent
            .get(&url)
            .config()
            .timeout_global(None)
            .build()
            .header("Accept", "text/event-stream");
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        let mut response = req
            .call()
            .map_err(|e| self.transport_error(Method::Get, &url, e))?;
        let status = response.status().as_u16();
        if status >= 400 {
            let text = response
                .body_mut()
                .with_config()
                .limit(MAX_REPLY_BYTES)
                .lossy_utf8(true)
                .read_to_string()
                .unwrap_or_default();
            return Err(error_from_reply(status, &text));
        }
        Ok(response.into_body())
    }

    /// Maps a failed request: one that never reached the server (refused, unknown host,
    /// timed out connecting) names the server; anything later names the request.
    fn transport_error(&self, method: Method, url: &str, e: ureq::Error) -> ClientError {
        let unreachable = match &e {
            ureq::Error::ConnectionFailed
            | ureq::Error::HostNotFound
            | ureq::Error::Timeout(ureq::Timeout::Connect | ureq::Timeout::Resolve) => true,
            ureq::Error::Io(io) => matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::AddrNotAvailable
                    | std::io::ErrorKind::NotFound
            ),
            _ => false,
        };
        match e {
            _ if unreachable => ClientError::Connect {
                server: self.server.clone(),
                source: e,
            },
            ureq::Error::BadUri(u) => ClientError::BadServer { server: u },
            other => ClientError::Transfer {
                method: method.as_str(),
                url: url.to_string(),
                source: other,
            },
        }
    }

    /// `GET /healthz` (no token needed).
    pub fn healthz(&self) -> Result<Reply, ClientError> {
        self.call(Method::Get, "/healthz", None)
    }
}

pub(super) fn to_value<T: serde::Serialize>(v: &T) -> Value {
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

pub(super) fn seg(id: &str) -> String {
    encode_component(id)
}

/// Builds `?k=v&…` from the pairs that have a value (empty string when none do).
pub(super) fn query(pairs: &[(&str, Option<&str>)]) -> String {
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
