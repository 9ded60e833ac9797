//! The role matrix: every route of the OpenAPI document against every role (and no token, an
//! unknown, a revoked and an expired token), with the expected answer written here from the
//! role definitions in SECURITY.md, independently of `auth::POLICY`. A route added to the
//! document without a rule in the policy fails `every_documented_route_has_a_rule`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::auth::{POLICY, Rule, rule_for};
use super::contract_tests::{TestServer, published_flow};
use super::ratelimit::RateLimit;
use crate::client::{Client, ClientError, Method};
use crate::contract::{ApiTokenCreated, AuditPage, Role};
use serde_json::json;

/// What SECURITY.md's role matrix says about `method path` (template under /api/v1): `None`
/// for an open route, else the roles allowed.
fn expected(method: &str, path: &str) -> Option<Vec<Role>> {
    use Role::{Admin, Enroller, Operator, Viewer};
    let open = matches!(
        (method, path),
        ("get", "/healthz")
            | ("get", "/openapi.json")
            | ("post", "/devices/{id}/report")
            | ("get", "/devices/{id}/directive")
    );
    if open {
        return None;
    }
    Some(match (method, path) {
        (_, p) if p.starts_with("/tokens") => vec![Admin],
        ("get", "/whoami") => vec![Admin, Operator, Viewer, Enroller],
        ("post", "/enrollment-tokens") => vec![Admin, Operator, Enroller],
        ("post", "/devices/pending/{id}/accept") | ("delete", "/devices/pending/{id}") => {
            vec![Admin, Operator, Enroller]
        }
        ("get", "/join-info") => vec![Admin, Operator, Viewer, Enroller],
        ("get", _) => vec![Admin, Operator, Viewer],
        _ => vec![Admin, Operator],
    })
}

fn method_of(m: &str) -> Method {
    match m {
        "get" => Method::Get,
        "post" => Method::Post,
        "put" => Method::Put,
        "patch" => Method::Patch,
        "delete" => Method::Delete,
        other => panic!("method {other}"),
    }
}

/// The status and error message of a call.
fn status(
    c: &Client,
    method: Method,
    url: &str,
    body: Option<&serde_json::Value>,
) -> (u16, String) {
    match c.call(method, url, body) {
        Ok(r) => (r.status, String::new()),
        Err(ClientError::Api {
            status, message, ..
        }) => (status, message),
        Err(e) => panic!("{url}: {e}"),
    }
}

fn token(admin: &Client, name: &str, role: Role, expires: Option<&str>) -> String {
    let t: ApiTokenCreated = admin
        .create_api_token(name, role, expires)
        .unwrap()
        .json()
        .unwrap();
    t.token
}

#[test]
fn every_documented_route_has_a_rule_and_every_rule_a_route() {
    for (path, methods) in crate::openapi::PATHS {
        for m in *methods {
            let method = m.to_uppercase();
            assert!(
                POLICY.iter().any(|(pm, pp, _)| *pm == method && pp == path),
                "{method} {path} has no role rule in auth::POLICY"
            );
        }
    }
    for (m, path, _) in POLICY {
        let lower = m.to_lowercase();
        assert!(
            crate::openapi::PATHS
                .iter()
                .any(|(p, ms)| p == path && ms.contains(&lower.as_str())),
            "auth::POLICY names {m} {path}, which the OpenAPI document does not"
        );
    }
}

#[test]
fn the_policy_agrees_with_the_role_matrix() {
    for (path, methods) in crate::openapi::PATHS {
        for m in *methods {
            let concrete = path.replace("{id}", "x").replace("{name}", "x");
            let method = m.to_uppercase().parse().unwrap();
            let rule = rule_for(&method, &format!("/api/v1{concrete}")).unwrap();
            let want = expected(m, path);
            match (rule, want) {
                (Rule::Open, None) => {}
                (Rule::Anyone, Some(roles)) => assert_eq!(roles.len(), Role::ALL.len()),
                (Rule::Roles(got), Some(roles)) => {
                    let mut got = got.to_vec();
                    got.sort_by_key(|r| r.as_str());
                    let mut roles = roles;
                    roles.sort_by_key(|r| r.as_str());
                    assert_eq!(got, roles, "{m} {path}");
                }
                (rule, want) => panic!("{m} {path}: policy {rule:?}, matrix {want:?}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_against_every_role() {
    // Hundreds of deliberate bad-token calls from one address: the address's allowance of
    // failures (tested on its own below) is off here.
    let server = TestServer::start_with(super::ApiOptions {
        auth_failures: RateLimit {
            per_sec: 0,
            burst: 0,
        },
        ..super::ApiOptions::default()
    })
    .await;
    let url = server.url.clone();
    tokio::task::spawn_blocking(move || {
        let admin = Client::new(&url, Some("secret".into())).unwrap();
        let flow = published_flow(&admin);
        let mut clients = vec![(Role::Admin, admin.clone())];
        for role in [Role::Operator, Role::Viewer, Role::Enroller] {
            let secret = token(&admin, &format!("t-{role}"), role, None);
            clients.push((role, Client::new(&url, Some(secret)).unwrap()));
        }
        let anonymous = Client::new(&url, None).unwrap();
        let stranger = Client::new(&url, Some("floe_not_a_token".into())).unwrap();
        let mut checked = 0;
        for (path, methods) in crate::openapi::PATHS {
            for m in *methods {
                // Ids that exist where it matters, and names that do not: every allowed call
                // gets past authorization (its answer may still be 404, 409 or 422).
                let mut concrete = path.replace("{id}", &flow).replace("{name}", "nobody");
                if *path == "/events" {
                    // The stream does not end: a bad filter answers at once (400) once the
                    // caller is authorized.
                    concrete.push_str("?kind=nope");
                }
                let body = (*m != "get" && *m != "delete").then(|| json!({}));
                let want = expected(m, path);
                for (role, c) in &clients {
                    let (code, message) = status(c, method_of(m), &concrete, body.as_ref());
                    let allowed = want.as_ref().is_none_or(|r| r.contains(role));
                    if want.is_none() {
                        // An open route answers on its own terms (a device route checks the
                        // device's signature), never about the bearer token.
                        assert!(
                            code != 403 && !message.to_lowercase().contains("bearer"),
                            "{role} {m} {path}: {code} {message}"
                        );
                    } else if allowed {
                        assert!(
                            code != 401 && code != 403,
                            "{role} {m} {path}: {code} {message}"
                        );
                    } else {
                        assert_eq!(code, 403, "{role} {m} {path}: {message}");
                        assert!(
                            message.contains(&format!("has role {role}"))
                                && message.contains("needs"),
                            "{role} {m} {path}: {message}"
                        );
                    }
                    checked += 1;
                }
                for (who, c) in [("no token", &anonymous), ("an unknown token", &stranger)] {
                    let (code, message) = status(c, method_of(m), &concrete, body.as_ref());
                    if want.is_some() {
                        assert_eq!(code, 401, "{who} {m} {path}: {message}");
                        assert!(message.contains("token"), "{who} {m} {path}: {message}");
                    } else {
                        assert!(
                            code != 403 && !message.to_lowercase().contains("bearer"),
                            "{who} {m} {path}: {code} {message}"
                        );
                    }
                }
            }
        }
        assert!(checked > 150, "{checked}");
    })
    .await
    .unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_and_expired_tokens_get_401_and_the_audit_names_the_token() {
    let server = TestServer::start().await;
    let url = server.url.clone();
    tokio::task::spawn_blocking(move || {
        let admin = Client::new(&url, Some("secret".into())).unwrap();
        let ops = Client::new(&url, Some(token(&admin, "ops", Role::Operator, None))).unwrap();
        let flow = published_flow(&ops);
        let audit: AuditPage = admin.audit(Some(50), None, None).unwrap().json().unwrap();
        let mine: Vec<_> = audit
            .entries
            .iter()
            .filter(|e| e.action.starts_with("flow."))
            .collect();
        assert!(!mine.is_empty());
        assert!(mine.iter().all(|e| e.actor == "token:ops"), "{mine:?}");
        assert!(
            audit
                .entries
                .iter()
                .any(|e| e.action == "token.create" && e.actor == "token:bootstrap"),
            "{:?}",
            audit.entries
        );
        // Revoked: the very next request is refused.
        admin.revoke_api_token("ops").unwrap();
        let (code, message) = status(&ops, Method::Get, &format!("/flows/{flow}"), None);
        assert_eq!(code, 401, "{message}");
        assert!(message.contains("unknown or revoked"), "{message}");
        // The bootstrap token cannot be revoked through the API, nor its name taken.
        let (code, _) = status(&admin, Method::Delete, "/tokens/bootstrap", None);
        assert_eq!(code, 409);
        let (code, message) = status(
            &admin,
            Method::Post,
            "/tokens",
            Some(&json!({"name": "bootstrap", "role": "viewer"})),
        );
        assert_eq!(code, 422, "{message}");
        // Expired: 401 naming the token.
        let brief = Client::new(
            &url,
            Some(token(&admin, "brief", Role::Viewer, Some("1ms"))),
        )
        .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let (code, message) = status(&brief, Method::Get, "/flows", None);
        assert_eq!(code, 401, "{message}");
        assert!(message.contains("\"brief\" expired"), "{message}");
        // A name in use is a conflict; a bad name or lifetime a 422 naming the field.
        let (code, _) = status(
            &admin,
            Method::Post,
            "/tokens",
            Some(&json!({"name": "brief", "role": "viewer"})),
        );
        assert_eq!(code, 409);
        for bad in [
            json!({"name": "a b", "role": "viewer"}),
            json!({"name": "x", "role": "viewer", "expires": "367d"}),
        ] {
            let (code, message) = status(&admin, Method::Post, "/tokens", Some(&bad));
            assert_eq!(code, 422, "{bad}: {message}");
        }
        let (code, _) = status(
            &admin,
            Method::Post,
            "/tokens",
            Some(&json!({"name": "x", "role": "root"})),
        );
        assert_eq!(code, 400);
    })
    .await
    .unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_over_its_rate_gets_429_with_retry_after_and_others_do_not() {
    let options = super::ApiOptions {
        rate: RateLimit {
            per_sec: 1,
            burst: 3,
        },
        ..super::ApiOptions::default()
    };
    let server = TestServer::start_with(options).await;
    let url = server.url.clone();
    tokio::task::spawn_blocking(move || {
        let admin = Client::new(&url, Some("secret".into())).unwrap();
        // The admin spends one request creating the viewer's token.
        let secret = token(&admin, "busy", Role::Viewer, None);
        let secret_again = secret.clone();
        let busy = Client::new(&url, Some(secret)).unwrap();
        for _ in 0..3 {
            assert_eq!(status(&busy, Method::Get, "/whoami", None).0, 200);
        }
        let (code, message) = status(&busy, Method::Get, "/whoami", None);
        assert_eq!(code, 429, "{message}");
        assert!(message.contains("\"busy\""), "{message}");
        // The raw answer carries Retry-After (whole seconds, at least 1).
        let addr = url.strip_prefix("http://").unwrap();
        use std::io::{Read, Write};
        // A slow machine may have refilled one request meanwhile: at most a few tries.
        let raw = (0..5)
            .map(|_| {
                let mut s = std::net::TcpStream::connect(addr).unwrap();
                write!(
                    s,
                    "GET /api/v1/whoami HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {secret_again}\r\nConnection: close\r\n\r\n"
                )
                .unwrap();
                let mut raw = String::new();
                s.read_to_string(&mut raw).unwrap();
                raw
            })
            .find(|raw| raw.starts_with("HTTP/1.1 429"))
            .expect("no 429 in five quick requests at 1 per second");
        assert!(raw.to_lowercase().contains("\r\nretry-after: 1\r\n"), "{raw}");
        // Device routes and other tokens are not throttled by it.
        assert_eq!(status(&admin, Method::Get, "/whoami", None).0, 200);
        assert_eq!(status(&busy, Method::Get, "/healthz", None).0, 200);
        let st: serde_json::Value = admin
            .call(Method::Get, "/status", None)
            .unwrap()
            .json()
            .unwrap();
        assert!(st["rate_limit"]["throttled"].as_u64().unwrap() >= 1, "{st}");
    })
    .await
    .unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_that_keeps_sending_bad_tokens_gets_429_before_its_token_is_checked() {
    let options = super::ApiOptions {
        auth_failures: RateLimit {
            per_sec: 1,
            burst: 4,
        },
        ..super::ApiOptions::default()
    };
    let server = TestServer::start_with(options).await;
    let url = server.url.clone();
    tokio::task::spawn_blocking(move || {
        let admin = Client::new(&url, Some("secret".into())).unwrap();
        let guesser = Client::new(&url, Some("not-a-token".into())).unwrap();
        // The burst of failures is answered 401, as before.
        for _ in 0..4 {
            assert_eq!(status(&guesser, Method::Get, "/whoami", None).0, 401);
        }
        // Then the address is refused with 429 (a slow machine may have refilled one
        // failure meanwhile: a few tries at most).
        let (code, message) = (0..4)
            .map(|_| status(&guesser, Method::Get, "/flows", None))
            .find(|(code, _)| *code == 429)
            .expect("no 429 after the burst of failed authentications");
        assert_eq!(code, 429);
        assert!(
            message.contains("invalid token from 127.0.0.1"),
            "{message}"
        );
        // While the address is over its allowance even a valid token waits: the limit is
        // the address's, and the guesser and the admin share 127.0.0.1 here.
        let (code, _) = status(&admin, Method::Get, "/whoami", None);
        assert_eq!(code, 429);
        // After the refill, valid tokens pass and failures are counted in /status.
        std::thread::sleep(std::time::Duration::from_millis(2100));
        assert_eq!(status(&admin, Method::Get, "/whoami", None).0, 200);
        let st: serde_json::Value = admin
            .call(Method::Get, "/status", None)
            .unwrap()
            .json()
            .unwrap();
        assert!(
            st["rate_limit"]["failed_auth_throttled"].as_u64().unwrap() >= 2,
            "{st}"
        );
    })
    .await
    .unwrap();
    server.stop().await;
}
