//! Tests of the client against one-shot HTTP servers on loopback: requests as sent, replies
//! and errors as mapped.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::transport::{query, seg};
use super::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

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
        Client::new("https://", None),
        Err(ClientError::BadServer { .. })
    ));
    assert!(matches!(
        Client::new("ftp://coordinator:7300", None),
        Err(ClientError::BadServer { .. })
    ));
    // https is spoken now (TLS: `server::tls_tests`).
    let c = Client::new("https://coordinator:7300/", None).unwrap();
    assert_eq!(c.server(), "https://coordinator:7300");
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
    let body = FlowInput {
        name: "T".into(),
        description: String::new(),
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
        serde_json::json!({"name": "T", "description": "", "tags": ["a"], "definition": {"nodes": []}}),
        "the contract's body as given"
    );
}

#[test]
fn success_replies_keep_the_text_as_received() {
    let text = r#"{"flows":[{"id":"flow_aaaaaaaaaa","name":"T","description":"","tags":[],"state":"draft",
        "version":1,"lineage":"flow_aaaaaaaaaa","parent_id":null,"definition":{},"artifact":null,
        "created_at":"2026-11-22T03:00:00Z","updated_at":"2026-11-22T03:00:00Z","published_at":null,
        "archived_at":null,"extra":true}]}"#;
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

/// A deployment object in the contract's shape, leaked for the one-shot server.
fn deployment_json(id: &str, status: &str) -> &'static str {
    let zero = serde_json::json!({"pending": 0, "deploying": 0, "success": 0, "failed": 0,
        "offline": 0, "skipped": 0, "rolled_back": 0, "quarantined": 0});
    let v = serde_json::json!({
        "id": id, "flow_id": "flow_1",
        "artifact": {"name": "flow_1", "release": 1, "version": "1.0.0", "manifest_sha256": "00"},
        "strategy": "rolling", "status": status, "status_reason": "",
        "total_targets": 0, "completed_targets": 0, "failed_targets": 0, "offline_targets": 0,
        "rolled_back_targets": 0, "skipped_targets": 0, "pending_targets": 0,
        "target_counts": zero, "current_stage": 0, "stages": [], "gates": [],
        "awaiting_approval": false, "phase": "PREPARE", "pause_reason": null,
        "created_at": "2026-11-22T03:00:00Z", "started_at": null, "completed_at": null,
        "config": {"batch_size": 1, "batch_delay": "0s", "failure_threshold": 5.0,
            "canary_percentage": 10.0, "canary_delay": "0s", "timeout": "10m", "switch_delay": "0s",
            "auto_rollback": true, "health_check": true, "require_approval": false, "quorum": 80.0,
            "offline_grace": "1h", "waves": [], "max_parallel": 0}
    });
    Box::leak(v.to_string().into_boxed_str())
}

#[test]
fn waiting_for_a_deployment_ends_at_a_terminal_status_or_the_limit() {
    let (server, _seen) = one_shot(200, deployment_json("dep_1", "rolled_back"));
    let c = Client::new(&server, None).unwrap();
    let d = c
        .wait_for_deployment("dep_1", Duration::from_millis(10), Duration::from_secs(5))
        .unwrap();
    assert_eq!(d.status.as_str(), "rolled_back");

    // A reply missing a field the contract requires is a decode error, not a default.
    let (server, _seen) = one_shot(200, r#"{"id":"dep_1","status":"rolled_back"}"#);
    let c = Client::new(&server, None).unwrap();
    let err = c
        .wait_for_deployment("dep_1", Duration::from_millis(10), Duration::from_secs(5))
        .unwrap_err();
    assert!(matches!(err, ClientError::Decode { .. }), "{err:?}");

    let (server, _seen) = one_shot(200, deployment_json("dep_2", "running"));
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
