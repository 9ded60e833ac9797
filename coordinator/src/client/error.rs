//! Why a call to the coordinator failed, and how an error reply becomes one: the server's own
//! code, message and field when the body is in the contract's shape, else the status and an
//! excerpt of the text.

use serde::Deserialize;
use std::time::Duration;

/// Why a call to the coordinator failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Setup: the server URL is not an `http://` or `https://` URL.
    #[error(
        "server address `{server}` is not a URL of the form http://host:port or https://host:port"
    )]
    BadServer {
        /// The address as given.
        server: String,
    },
    /// Setup: the `--ca` file holds no usable PEM certificate.
    #[error("the CA file (--ca / FLOE_CA) is not usable: {message}")]
    BadCa {
        /// What is wrong with it.
        message: String,
    },
    /// Setup: the `--pin` fingerprint is malformed, or the server does not present the
    /// certificate it names.
    #[error("the pinned certificate (--pin / FLOE_PIN): {message}")]
    BadPin {
        /// What is wrong.
        message: String,
    },
    /// Connect: the server could not be reached (refused, unknown host, timed out connecting).
    #[error("cannot reach the coordinator at {server}: {}", transport_text(source))]
    Connect {
        /// The server address the client tried.
        server: String,
        /// What the transport said.
        #[source]
        source: ureq::Error,
    },
    /// Transfer: the connection broke or timed out during the request or reply.
    #[error("request {method} {url} failed: {}", transport_text(source))]
    Transfer {
        /// The HTTP method.
        method: &'static str,
        /// The full URL.
        url: String,
        /// What the transport said.
        #[source]
        source: ureq::Error,
    },
    /// Read: the reply body could not be read (too large, broken).
    #[error("reading the reply to {method} {url}: {source}")]
    Read {
        /// The HTTP method.
        method: &'static str,
        /// The full URL.
        url: String,
        /// What went wrong.
        #[source]
        source: ureq::Error,
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
    /// Paging: the server handed back the cursor it was given, which would loop forever.
    #[error("paging {what}: the server answered cursor {cursor:?} with the same cursor")]
    Paging {
        /// The list.
        what: String,
        /// The repeated cursor.
        cursor: String,
    },
    /// Decode: a success reply was not the JSON the contract describes.
    #[error("the reply to {what} is not the expected JSON: {source}")]
    Decode {
        /// Which reply.
        what: String,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
}

/// What the transport said, without ureq's `io:` prefix on an I/O error (the OS's sentence
/// is the useful part when a connection is refused).
/// A TLS failure, with the way out when the certificate is not trusted.
fn tls_text(e: &dyn std::fmt::Display) -> String {
    format!(
        "TLS: {e} (does the CLI trust the server's certificate? give its CA, or the \
         certificate itself, with --ca or FLOE_CA)"
    )
}

fn transport_text(e: &ureq::Error) -> String {
    match e {
        // rustls reports a failed handshake as an io error (InvalidData) carrying its error.
        ureq::Error::Io(io)
            if io.kind() == std::io::ErrorKind::InvalidData
                && io.to_string().contains("certificate") =>
        {
            tls_text(io)
        }
        ureq::Error::Io(io) => io.to_string(),
        ureq::Error::Rustls(e) => tls_text(e),
        other => other.to_string(),
    }
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
