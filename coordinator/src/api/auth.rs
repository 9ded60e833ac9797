//! Who may call what: bearer authentication, the role of each route, and the per-token rate
//! limit, in one middleware in front of every route.
//!
//! - **Open routes** need no token: the health check, the OpenAPI document, and the two
//!   device routes (`POST /devices/{id}/report`, signed by the device; `GET
//!   /devices/{id}/directive`, which carries the device's signature).
//! - Every other route needs `Authorization: Bearer <token>`: the bootstrap token of
//!   `DATA_DIR/api-token` (role admin) or a named token (`/tokens`). Unknown, revoked and
//!   expired tokens get 401.
//! - [`POLICY`] gives every route the roles that may call it (SECURITY.md, "Roles"); another
//!   role gets 403 naming its role and what the route needs. A route of the router missing
//!   from the policy is for admins only (fail closed), and a test checks every route of the
//!   OpenAPI document has a rule.
//! - Each token's requests pass its token bucket ([`super::ratelimit`]) or get 429 with
//!   `Retry-After`. Failed authentications (unknown, revoked, expired tokens) take from a
//!   bucket of the client's address; an address whose bucket is empty gets 429 before its
//!   token is looked at.
//! - The handler runs with the caller's identity as a request extension and as the audit
//!   actor of every service call it makes (`token:<name>`, [`crate::service::with_caller`]).

use super::tokens::{Identity, Refusal};
use super::types::Role;
use super::{ApiError, AppState, MAX_BODY, too_large};
use crate::store::rfc3339;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use std::sync::Arc;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// No token needed (health, the OpenAPI document, the device routes).
    Open,
    /// Any valid token.
    Anyone,
    /// A valid token of one of these roles.
    Roles(&'static [Role]),
}

use Role::{Admin, Enroller, Operator, Viewer};

/// Reads of the fleet's state.
const READ: Rule = Rule::Roles(&[Admin, Operator, Viewer]);
/// Changes to flows, deployments, devices and variables.
const WRITE: Rule = Rule::Roles(&[Admin, Operator]);
/// Making enrollment tokens.
const ENROLL: Rule = Rule::Roles(&[Admin, Operator, Enroller]);
/// Reading what a join string holds besides its token.
const JOIN: Rule = Rule::Roles(&[Admin, Operator, Viewer, Enroller]);
/// API token management.
const ADMIN: Rule = Rule::Roles(&[Admin]);

/// Every route under `/api/v1` (as `crate::openapi::PATHS` spells it) with its method and
/// rule. SECURITY.md's role matrix is this table.
pub const POLICY: &[(&str, &str, Rule)] = &[
    ("GET", "/healthz", Rule::Open),
    ("GET", "/openapi.json", Rule::Open),
    ("GET", "/whoami", Rule::Anyone),
    ("GET", "/flows", READ),
    ("POST", "/flows", WRITE),
    ("GET", "/flows/{id}", READ),
    ("PUT", "/flows/{id}", WRITE),
    ("DELETE", "/flows/{id}", WRITE),
    ("POST", "/flows/{id}/publish", WRITE),
    ("POST", "/flows/{id}/archive", WRITE),
    ("POST", "/flows/{id}/versions", WRITE),
    ("GET", "/deployments", READ),
    ("POST", "/deployments", WRITE),
    ("GET", "/deployments/{id}", READ),
    ("POST", "/deployments/{id}/start", WRITE),
    ("POST", "/deployments/{id}/pause", WRITE),
    ("POST", "/deployments/{id}/resume", WRITE),
    ("POST", "/deployments/{id}/approve", WRITE),
    ("POST", "/deployments/{id}/rollback", WRITE),
    ("POST", "/deployments/{id}/abort", WRITE),
    ("GET", "/deployments/{id}/report", READ),
    ("GET", "/deployments/{id}/targets", READ),
    ("GET", "/devices", READ),
    ("POST", "/devices", WRITE),
    ("GET", "/devices/{id}", READ),
    ("PATCH", "/devices/{id}", WRITE),
    ("POST", "/devices/batch", WRITE),
    ("GET", "/devices/pending", READ),
    ("POST", "/devices/pending/{id}/accept", ENROLL),
    ("DELETE", "/devices/pending/{id}", ENROLL),
    ("POST", "/devices/{id}/report", Rule::Open),
    ("GET", "/devices/{id}/directive", Rule::Open),
    ("GET", "/devices/{id}/vars", READ),
    ("PUT", "/devices/{id}/vars", WRITE),
    ("GET", "/group-vars", READ),
    ("PUT", "/group-vars", WRITE),
    ("GET", "/directives/pending", READ),
    ("GET", "/directives/feed", READ),
    ("POST", "/enrollment-tokens", ENROLL),
    ("GET", "/join-info", JOIN),
    ("GET", "/audit", READ),
    ("GET", "/status", READ),
    ("GET", "/health/groups", READ),
    ("GET", "/strategies", READ),
    ("GET", "/tokens", ADMIN),
    ("POST", "/tokens", ADMIN),
    ("DELETE", "/tokens/{name}", ADMIN),
    ("GET", "/events", READ),
    ("GET", "/hooks", READ),
    ("POST", "/hooks", WRITE),
    ("DELETE", "/hooks/{id}", WRITE),
    ("GET", "/hooks/{id}/deliveries", READ),
];

/// Routes outside `/api/v1` (exact paths) with their method and rule. Anything else outside
/// `/api/v1` needs a token (and is admin-only when the router serves it).
pub const ROOT_POLICY: &[(&str, &str, Rule)] = &[
    ("GET", "/healthz", Rule::Open),
    // Prometheus scrapes with a viewer token.
    ("GET", "/metrics", READ),
];

/// Whether `template` (`/flows/{id}`) matches `path`; how many of its segments are literal
/// (a literal match wins over a parameter: `/devices/batch` over `/devices/{id}`).
fn matches(template: &str, path: &str) -> Option<usize> {
    let (mut t, mut p) = (template.split('/'), path.split('/'));
    let mut literal = 0;
    loop {
        match (t.next(), p.next()) {
            (None, None) => return Some(literal),
            (Some(ts), Some(ps)) if ts.starts_with('{') && !ps.is_empty() => {}
            (Some(ts), Some(ps)) if ts == ps => literal += 1,
            _ => return None,
        }
    }
}

/// The rule of `method path` (the full path, `/api/v1/...` or `/healthz`); `None` when no
/// entry of [`POLICY`] covers it.
pub fn rule_for(method: &Method, path: &str) -> Option<Rule> {
    // The console's page and assets hold no data; everything they fetch needs a token.
    if crate::console::serves(method, path) {
        return Some(Rule::Open);
    }
    let path = match path.trim_end_matches('/') {
        "" => "/",
        trimmed => trimmed,
    };
    if let Some((_, _, rule)) = ROOT_POLICY.iter().find(|(m, p, _)| {
        *p == path && (*m == method.as_str() || (*m == "GET" && method == Method::HEAD))
    }) {
        return Some(*rule);
    }
    let rest = path.strip_prefix("/api/v1")?;
    // HEAD is a GET without the body, and axum answers it with the GET handler.
    let method = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    POLICY
        .iter()
        .filter(|(m, _, _)| *m == method.as_str())
        .filter_map(|(_, t, rule)| matches(t, rest).map(|lit| (lit, *rule)))
        .max_by_key(|(lit, _)| *lit)
        .map(|(_, rule)| rule)
}

/// The roles a rule admits, as a phrase (`admin or operator`).
fn phrase(roles: &[Role]) -> String {
    let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
    match names.split_last() {
        Some((last, [])) => (*last).to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => "no role".into(),
    }
}

fn forbidden(who: &Identity, method: &Method, path: &str, roles: &[Role]) -> Response {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!(
            "token {:?} has role {}, which may not {method} {path}: that needs {}",
            who.name,
            who.role,
            phrase(roles)
        ),
    )
    .into_response()
}

fn throttled(who: &Identity, retry_after: u64) -> Response {
    let mut resp = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!(
            "token {:?} is over its rate limit; retry after {retry_after} s",
            who.name
        ),
    )
    .into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    resp
}

fn too_many_failures(addr: &str, retry_after: u64) -> Response {
    let mut resp = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many requests with an invalid token from {addr}; retry after {retry_after} s"),
    )
    .into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    resp
}

pub(super) async fn auth(State(st): State<AppState>, req: Request, next: Next) -> Response {
    // A declared length over the cap is refused before any of the body is read.
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return too_large().into_response();
    }
    let path = req.uri().path().to_string();
    let rule = rule_for(req.method(), &path);
    if rule == Some(Rule::Open) {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(given) = given else {
        return ApiError::unauthorized(
            "missing Authorization: Bearer <token> header (the first admin token is in \
             DATA_DIR/api-token; `floe token create` makes more)",
        )
        .into_response();
    };
    let now = floe_wire::clock::unix_ms();
    // Failed authentications are counted per client address (without one, in-process
    // callers are not limited): past the allowance the token is not even looked at.
    let address = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| Arc::<str>::from(c.0.ip().to_string()));
    if let Some(addr) = &address
        && let Some(retry_after) = st.failures.exhausted(addr, now)
    {
        st.failures.count_refusal();
        return too_many_failures(addr, retry_after);
    }
    if let Err(e) = st.tokens.ensure_loaded(&st.handle).await {
        return ApiError::from(e).into_response();
    }
    let (who, persist) = match st.tokens.authenticate(given, now) {
        Ok(x) => x,
        Err(refusal) => {
            if let Some(addr) = &address {
                // Taking from the bucket; the refusal that empties it is still a 401.
                let _ = st.failures.check(addr, now);
            }
            return match refusal {
                Refusal::Unknown => {
                    ApiError::unauthorized("the bearer token is not valid (unknown or revoked)")
                }
                Refusal::Expired { name, at } => ApiError::unauthorized(format!(
                    "the bearer token {name:?} expired at {}",
                    rfc3339(at)
                )),
            }
            .into_response();
        }
    };
    if let Some(name) = persist {
        // At most once a minute per token: the write waits for the actor, the request does not.
        let handle = st.handle.clone();
        tokio::spawn(async move {
            if let Err(e) = handle
                .call(move |core, now| core.touch_api_token(&name, now))
                .await
            {
                tracing::debug!(error = %e, "recording a token's last use failed");
            }
        });
    }
    if let Err(retry_after) = st.limiter.check(&who.name, now) {
        return throttled(&who, retry_after);
    }
    // A path the router does not serve falls through to its 404; a served route the policy
    // does not name is for admins only.
    let routed = req.extensions().get::<MatchedPath>().is_some();
    let allowed: &[Role] = match rule {
        Some(Rule::Roles(roles)) => roles,
        Some(Rule::Open | Rule::Anyone) => Role::ALL,
        None if !routed => Role::ALL,
        None => &[Role::Admin],
    };
    if !allowed.contains(&who.role) {
        return forbidden(&who, req.method(), &path, allowed);
    }
    let caller: Arc<str> = Arc::from(who.actor());
    let mut req = req;
    req.extensions_mut().insert(who);
    crate::service::with_caller(caller, next.run(req)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_whole_segments_and_literals_win() {
        let m = |method: &str, path: &str| rule_for(&method.parse().unwrap_or(Method::GET), path);
        assert_eq!(m("GET", "/healthz"), Some(Rule::Open));
        assert_eq!(m("GET", "/api/v1/healthz/"), Some(Rule::Open));
        assert_eq!(m("POST", "/api/v1/devices/batch"), Some(WRITE));
        assert_eq!(m("POST", "/api/v1/devices/abc/report"), Some(Rule::Open));
        assert_eq!(m("GET", "/api/v1/devices/abc/report"), None);
        assert_eq!(m("GET", "/api/v1/devices/abc/directive"), Some(Rule::Open));
        assert_eq!(m("GET", "/api/v1/devices/abc/directive/x"), None);
        assert_eq!(m("GET", "/api/v1/devices//directive"), None);
        assert_eq!(m("DELETE", "/api/v1/tokens/ci"), Some(ADMIN));
        assert_eq!(m("POST", "/api/v1/deployments/d/bogus"), None);
        assert_eq!(m("GET", "/devices/abc/directive"), None);
        assert_eq!(m("HEAD", "/api/v1/flows"), Some(READ));
        assert_eq!(m("HEAD", "/healthz"), Some(Rule::Open));
        // The console's page and assets (crate::console) are open; nothing else at the root.
        assert_eq!(m("GET", "/"), Some(Rule::Open));
        assert_eq!(m("GET", "/assets/index-abc.js"), Some(Rule::Open));
        assert_eq!(m("POST", "/"), None);
        assert_eq!(m("GET", "/metrics-not-served"), None);
        assert_eq!(m("POST", "/healthz"), None);
    }

    #[test]
    fn the_phrase_names_every_role() {
        assert_eq!(phrase(&[Admin]), "admin");
        assert_eq!(
            phrase(&[Admin, Operator, Viewer]),
            "admin, operator or viewer"
        );
    }
}
